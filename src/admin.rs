//! The admin Unix socket: one command per line, progress lines, then `ok ...` or `error: ...`.
//!
//! parse → apply → reply, as in mini-redis: [`Command::parse`] is pure, `apply` asks the
//! controller and formats, the connection loop only moves lines. A bad line (unknown, empty,
//! over 4 KiB, not UTF-8) gets `error: ...` and the connection stays usable. This module does
//! not decide anything about switches; controller.rs does.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::app::App;
use crate::controller::{Controller, StopKind};
use crate::fleet;
use crate::routing::{Color, Health};

/// The longest command line accepted, newline excluded.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Status,
    Switch { to: Color, force: bool },
    Rollback,
    Abort,
    Health,
    Members,
    Help,
    ReloadTls,
}

pub const HELP: &[&str] = &[
    "status                 active color, switch phase, per-color health, open requests and websockets",
    "switch <color>         gate on <color>'s health, swap, drain, watch, then commit or roll back",
    "switch <color> force   the same without the health gate (emergency)",
    "rollback               back to the previous color at once",
    "abort                  stop the switch in progress and return to where it started",
    "health                 one line per server: color, address, healthy or not, last result",
    "members                fleet mode: one line per member: color served, epoch applied, health, last seen",
    "reload-tls             re-read every [listen] certificate and key; new handshakes get them",
    "help                   this list",
];

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let mut words = line.split_whitespace();
        let Some(verb) = words.next() else {
            return Err("empty command; try `help`".into());
        };
        let args: Vec<&str> = words.collect();
        let no_args = |c: Command| {
            if args.is_empty() {
                Ok(c)
            } else {
                Err(format!("`{verb}` takes no arguments"))
            }
        };
        match verb.to_ascii_lowercase().as_str() {
            "status" => no_args(Command::Status),
            "rollback" => no_args(Command::Rollback),
            "abort" => no_args(Command::Abort),
            "health" => no_args(Command::Health),
            "members" => no_args(Command::Members),
            "help" => no_args(Command::Help),
            "reload-tls" => no_args(Command::ReloadTls),
            "switch" => match args.as_slice() {
                [color] => Ok(Command::Switch {
                    to: color.parse().map_err(|e| format!("{e}"))?,
                    force: false,
                }),
                [color, force] if force.eq_ignore_ascii_case("force") => Ok(Command::Switch {
                    to: color.parse().map_err(|e| format!("{e}"))?,
                    force: true,
                }),
                _ => Err("usage: switch <blue|green> [force]".into()),
            },
            _ => Err(format!(
                "unknown command `{}`; try `help`",
                verb.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// One line read from a client, or why it is not a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

/// Reads up to the next `\n` without ever buffering more than `max` bytes of it; `None` at
/// end of stream. An over-long line is consumed to its end and reported, so the next line
/// starts clean.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            if buf.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let room = (max + 2).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            if buf.len() > max + 1 || (buf.len() > max && !buf.ends_with(b"\n")) {
                too_long = true;
                buf.clear();
            }
        }
        r.consume(take);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Some(Line::TooLong));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(match String::from_utf8(buf) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::NotUtf8,
    }))
}

fn status_lines(app: &App) -> Vec<String> {
    let mut lines = Vec::new();
    for c in Color::ALL {
        let (healthy, total) = app.router.backends_of(c).fold((0, 0), |(h, t), b| {
            (h + usize::from(b.health() == Health::Healthy), t + 1)
        });
        let open = app.tracker.open(c);
        lines.push(format!(
            "{c}: {healthy}/{total} servers healthy, {} requests in flight, {} websockets",
            open.requests.max(0),
            open.websockets.max(0)
        ));
    }
    if app.leaving() {
        lines.push("process: shutting down or handing over; switches are refused".into());
    }
    let active = app.router.active();
    if let Some(f) = &app.fleet {
        lines.push(fleet::status_line(f));
        if let Some(line) = fleet::switch_line(f) {
            lines.push(line);
        }
    }
    let phase = match app.controller.current() {
        Some(s) => {
            let left = s
                .phase_left
                .map(|l| format!(", {}s left", l.as_secs()))
                .unwrap_or_default();
            lines.push(format!(
                "switch: {} -> {}{}, phase={}{left}, {} errors in {} requests ({})",
                s.from,
                s.to,
                if s.force { " (force)" } else { "" },
                s.phase,
                s.errors,
                s.requests,
                app.cfg.switch.rules.summary()
            ));
            s.phase.as_str()
        }
        None => app
            .fleet
            .as_ref()
            .and_then(|f| f.view().decision)
            .map(|d| d.decision.phase.as_str())
            .unwrap_or("idle"),
    };
    lines.push(format!("ok active={active} phase={phase}"));
    lines
}

fn health_lines(app: &App) -> Vec<String> {
    let mut lines: Vec<String> = app
        .router
        .backends()
        .iter()
        .map(|b| {
            let h = match b.health() {
                Health::Healthy => "healthy",
                Health::Unhealthy => "unhealthy",
                Health::Unknown => "unknown",
            };
            format!(
                "{} {} {h} {}: {}",
                b.color,
                b.addr,
                b.health_path,
                b.detail()
            )
        })
        .collect();
    lines.push("ok".into());
    lines
}

/// Re-reads the certificate and key; on failure the pair in use stays and the reply names
/// the file at fault.
fn reload_tls(app: &App) -> String {
    let Some(tls) = app.tls.as_ref() else {
        return "error: no [listen] https in the config: nothing to reload".into();
    };
    match tls.reload() {
        Ok(n) => {
            tracing::info!(cert = %tls.cert_path().display(), pairs = n, "reload-tls: new certificates in use");
            "ok".into()
        }
        Err(e) => {
            tracing::warn!("reload-tls failed, the previous certificates stay in use: {e}");
            format!("error: {e}; the previous certificates stay in use")
        }
    }
}

/// Applies one command; every line it produces goes to `out`, the last one final.
pub async fn apply(app: &Arc<App>, cmd: Command, out: &mpsc::UnboundedSender<String>) {
    let send = |l: String| {
        let _ = out.send(l);
    };
    match cmd {
        Command::Status => status_lines(app).into_iter().for_each(send),
        Command::Health => health_lines(app).into_iter().for_each(send),
        Command::Help => {
            HELP.iter().map(|s| s.to_string()).for_each(send);
            send("ok".into());
        }
        Command::ReloadTls => send(reload_tls(app)),
        Command::Switch { to, force } => match Controller::switch(app, to, force) {
            Err(e) => send(format!("error: {e}")),
            Ok(mut lines) => {
                while let Some(l) = lines.recv().await {
                    send(l);
                }
            }
        },
        Command::Members => match &app.fleet {
            None => send("error: not in fleet mode: the config has no [fleet] section".into()),
            Some(f) => {
                fleet::member_lines(f).into_iter().for_each(send);
                send("ok".into());
            }
        },
        Command::Abort | Command::Rollback => {
            let kind = if cmd == Command::Abort {
                StopKind::Abort
            } else {
                StopKind::Rollback
            };
            if let Some(f) = &app.fleet {
                send(fleet::switch::stop(app, f, kind).await);
                return;
            }
            match app.controller.interrupt(kind) {
                Some(reply) => send(reply.await.unwrap_or_else(|_| {
                    "error: the switch ended before it could be stopped".into()
                })),
                None if kind == StopKind::Abort => send("error: no switch in progress".into()),
                None => send(Controller::rollback_now(app, out).await),
            }
        }
    }
}

async fn serve_conn(app: Arc<App>, stream: UnixStream) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    while let Some(line) = read_line(&mut r, MAX_LINE).await? {
        let cmd = match line {
            Line::TooLong => Err(format!("line too long (max {MAX_LINE} bytes)")),
            Line::NotUtf8 => Err("command is not valid UTF-8".into()),
            Line::Text(t) => Command::parse(&t),
        };
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => {
                w.write_all(format!("error: {e}\n").as_bytes()).await?;
                continue;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The command runs in its own task: a client that goes away mid-switch must not
        // cancel the switch.
        let app2 = app.clone();
        tokio::spawn(async move { apply(&app2, cmd, &tx).await });
        while let Some(l) = rx.recv().await {
            w.write_all(l.as_bytes()).await?;
            w.write_all(b"\n").await?;
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {0}: another switchyard is already listening there; stop it first or set [admin] socket to another path")]
    InUse(PathBuf),
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Creates the socket with mode 0600. A stale file (nobody listening) is replaced; a live
/// one is refused unless `take_over` (a binary upgrade, where the old process is meant to
/// hand over).
pub fn bind(path: &Path, take_over: bool) -> Result<StdUnixListener, AdminError> {
    let io_err = |source| AdminError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() && !take_over {
            return Err(AdminError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    // Created with 0600 from the start (umask) so there is no moment another user could
    // connect; the chmod after is belt and braces for odd filesystems.
    // SAFETY: umask only swaps a process-wide integer; it is called before any other thread
    // creates files.
    let old = unsafe { libc::umask(0o177) };
    let l = StdUnixListener::bind(path);
    unsafe { libc::umask(old) };
    let l = l.map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    l.set_nonblocking(true).map_err(io_err)?;
    Ok(l)
}

/// The admin socket as a pingora background service.
pub struct AdminService {
    pub app: Arc<App>,
    pub listener: Mutex<Option<StdUnixListener>>,
}

#[async_trait]
impl BackgroundService for AdminService {
    /// Serves until the process exits, past pingora's shutdown signal: during a graceful
    /// stop, `status` is how an operator watches the drain.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let std = self.listener.lock().ok().and_then(|mut l| l.take());
        let Some(listener) = std.and_then(|l| UnixListener::from_std(l).ok()) else {
            tracing::error!("admin socket listener missing; admin commands are unavailable");
            return;
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let app = self.app.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_conn(app, stream).await {
                            tracing::debug!("admin connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("admin socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol() {
        assert_eq!(Command::parse("status"), Ok(Command::Status));
        assert_eq!(Command::parse("  STATUS  "), Ok(Command::Status));
        assert_eq!(
            Command::parse("switch green"),
            Ok(Command::Switch {
                to: Color::Green,
                force: false
            })
        );
        assert_eq!(
            Command::parse("switch blue force"),
            Ok(Command::Switch {
                to: Color::Blue,
                force: true
            })
        );
        assert!(Command::parse("switch red")
            .unwrap_err()
            .contains("unknown color"));
        assert!(Command::parse("switch").unwrap_err().starts_with("usage"));
        assert!(Command::parse("switch green now").is_err());
        assert!(Command::parse("").unwrap_err().contains("empty"));
        assert!(Command::parse("status now").is_err());
        assert_eq!(Command::parse("reload-tls"), Ok(Command::ReloadTls));
        assert_eq!(Command::parse("members"), Ok(Command::Members));
        assert!(Command::parse("members all").is_err());
        assert!(Command::parse("reload-tls now").is_err());
        assert!(Command::parse("reboot")
            .unwrap_err()
            .contains("unknown command"));
    }

    async fn lines(input: &[u8]) -> Vec<Line> {
        let mut r = BufReader::with_capacity(64, input);
        let mut out = Vec::new();
        while let Some(l) = read_line(&mut r, 16).await.expect("read") {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn bounded_lines() {
        let long = [b'a'; 100];
        let mut input = b"status\r\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\n\xff\xfe\nhelp\n0123456789abcdef\nlast");
        assert_eq!(
            lines(&input).await,
            vec![
                Line::Text("status".into()),
                Line::TooLong,
                Line::NotUtf8,
                Line::Text("help".into()),
                Line::Text("0123456789abcdef".into()),
                Line::Text("last".into()),
            ]
        );
    }

    #[test]
    fn socket_is_private_and_stale_files_are_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/admin.sock");
        let l = bind(&p, false).expect("bind");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&p, false), Err(AdminError::InUse(_))));
        drop(l);
        bind(&p, false).expect("stale socket replaced");
    }
}
