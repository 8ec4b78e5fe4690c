//! The `switchyard` command: `run`, `check`, `ctl` and `demo`. Argument parsing and process
//! exit codes live here; everything else is in the library.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use switchyard::access_log::{self, Destination};
use switchyard::config::Config;
use switchyard::demo::DemoApp;
use switchyard::demo_tour::{self, Places};
use switchyard::progress_bar::Bar;
use switchyard::server::{self, RunOptions};

// pingora allocates dozens of small objects per request; glibc's malloc was a fifth of the
// instructions per request in the callgrind profile (benches/profile.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_SOCKET: &str = "/run/switchyard/admin.sock";

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Front-door reverse proxy with blue-green deployment built in"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy in the foreground (logs to stderr).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from a running switchyard (zero-downtime binary
        /// upgrade); send SIGQUIT to the old process right after starting this one.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config: exit 0, or print FILE:LINE:COL: what is wrong and exit 2.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send one admin command and print the reply lines as they arrive.
    Ctl {
        /// The admin socket (default: $SWITCHYARD_SOCKET or /run/switchyard/admin.sock).
        #[arg(long, short)]
        socket: Option<PathBuf>,
        /// The command, e.g. `status` or `switch green`.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Zero-setup tour: two demo apps (blue, green) and the proxy in front of them.
    Demo {
        /// Front-door port (0: any free port).
        #[arg(long, default_value_t = 8000)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        blue_port: u16,
        #[arg(long, default_value_t = 0)]
        green_port: u16,
        /// Metrics port (0: any free port).
        #[arg(long, default_value_t = 0)]
        metrics_port: u16,
        /// Where the demo keeps its config, state and admin socket (default: a temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Start only the two demo apps, no proxy (for proxies started by hand, e.g. the
        /// fleet demo, scripts/fleet-demo.sh).
        #[arg(long)]
        apps_only: bool,
    },
}

/// The stderr log (RUST_LOG, default `info`) and, when `[access_log]` is on, the access log
/// layer, which alone receives the access target's events.
fn init_logging(access: Option<&Destination>) -> Result<(), access_log::AccessLogError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            format!("{}=off", access_log::TARGET)
                .parse()
                .expect("a constant directive"),
        );
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let access = match access {
        Some(dest) => Some(
            access_log::start(dest)?.with_filter(
                // The level hint keeps the global maximum level (and so `log`'s, which pingora
                // logs through) where the stderr filter puts it.
                tracing_subscriber::filter::filter_fn(|m| m.target() == access_log::TARGET)
                    .with_max_level_hint(tracing::Level::INFO),
            ),
        ),
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(access)
        .init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: ok ({c})", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run { config, upgrade } => run(&config, RunOptions { upgrade }),
        Cmd::Ctl { socket, command } => {
            let socket = socket
                .or_else(|| std::env::var_os("SWITCHYARD_SOCKET").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
            ctl(&socket, &command.join(" "))
        }
        Cmd::Demo {
            port,
            blue_port,
            green_port,
            metrics_port,
            dir,
            apps_only,
        } => {
            if let Err(e) = init_logging(None) {
                eprintln!("switchyard demo: {e}");
                return ExitCode::FAILURE;
            }
            if apps_only {
                return demo_apps(blue_port, green_port);
            }
            demo(port, blue_port, green_port, metrics_port, dir)
        }
    }
}

fn run(config: &Path, opts: RunOptions) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(cfg.access_log.as_ref()) {
        eprintln!("switchyard: cannot start: {e}");
        return ExitCode::FAILURE;
    }
    start(cfg, opts)
}

fn start(cfg: Config, opts: RunOptions) -> ExitCode {
    match server::run(cfg, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit 0 on `ok`, 1 on `error:`, 2 when the socket cannot be reached or the reply is cut.
fn ctl(socket: &Path, command: &str) -> ExitCode {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "switchyard ctl: cannot connect to {}: {e} (is switchyard running? pass --socket)",
                socket.display()
            );
            return ExitCode::from(2);
        }
    };
    if let Err(e) = stream.write_all(format!("{command}\n").as_bytes()) {
        eprintln!("switchyard ctl: cannot send to {}: {e}", socket.display());
        return ExitCode::from(2);
    }
    let mut out = Output::new();
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                out.clear();
                eprintln!("switchyard ctl: reading the reply: {e}");
                return ExitCode::from(2);
            }
        };
        if line == "ok" || line.starts_with("ok ") {
            out.finish(&line);
            return ExitCode::SUCCESS;
        }
        if line.starts_with("error:") {
            out.finish(&line);
            return ExitCode::from(1);
        }
        out.line(&line);
    }
    out.clear();
    eprintln!("switchyard ctl: the connection closed before a final ok/error line");
    ExitCode::from(2)
}

/// Where `ctl` prints: plain lines when stdout is not a terminal (scripts parse them), else
/// the repeating gate/drain/watch lines as one bar redrawn in place (progress_bar.rs). The
/// final `ok`/`error:` line is always printed plainly, as its own line.
struct Output {
    bar: Option<Bar>,
    bar_shown: bool,
}

impl Output {
    fn new() -> Output {
        Output {
            bar: std::io::stdout().is_terminal().then(Bar::default),
            bar_shown: false,
        }
    }

    fn print(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn line(&mut self, line: &str) {
        let Some(bar) = self.bar.as_mut() else {
            return self.print(line);
        };
        if !bar.absorb(line) {
            self.clear();
            self.print(line);
        }
        self.redraw();
    }

    fn redraw(&mut self) {
        let Some(bar) = self.bar.as_ref().filter(|b| !b.is_empty()) else {
            return;
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K{}",
            bar.render(terminal_width().saturating_sub(1))
        );
        let _ = out.flush();
        self.bar_shown = true;
    }

    /// Takes the bar off the screen (before a plain line or a message on stderr).
    fn clear(&mut self) {
        if std::mem::take(&mut self.bar_shown) {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }

    fn finish(&mut self, last: &str) {
        self.clear();
        if let Some(bar) = &self.bar {
            for l in bar.last_lines() {
                self.print(l);
            }
        }
        self.print(last);
    }
}

/// The terminal's width in columns (stdout), else $COLUMNS, else 100.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; a failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return ws.ws_col as usize;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

fn free_port(port: u16) -> std::io::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", port))?;
    Ok(l.local_addr()?.port())
}

/// Starts the blue and green demo apps on a runtime of their own (pingora owns the main
/// thread of a demo); their addresses once they listen.
fn start_demo_apps(blue_port: u16, green_port: u16) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
            let apps = async {
                let blue = DemoApp::start("blue", addr(blue_port)).await?;
                let green = DemoApp::start("green", addr(green_port)).await?;
                Ok::<_, std::io::Error>((blue, green))
            };
            match apps.await {
                Ok((blue, green)) => {
                    let _ = tx.send(Ok((blue.addr(), green.addr())));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    rx.recv()
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("demo apps thread died: {e}"))))
}

/// `demo --apps-only`: the two apps until killed.
fn demo_apps(blue_port: u16, green_port: u16) -> ExitCode {
    match start_demo_apps(blue_port, green_port) {
        Ok((blue, green)) => {
            println!("demo apps: blue on {blue}, green on {green}; Ctrl-C stops them");
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("switchyard demo: cannot start the demo apps: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(
    port: u16,
    blue_port: u16,
    green_port: u16,
    metrics_port: u16,
    dir: Option<PathBuf>,
) -> ExitCode {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("switchyard demo: {what}: {e}");
        ExitCode::FAILURE
    };
    let port = match free_port(port) {
        Ok(p) => p,
        Err(e) if port == 8000 => match free_port(0) {
            Ok(p) => {
                eprintln!("switchyard demo: port 8000 is taken ({e}); using {p}");
                p
            }
            Err(e) => return fail("no free port", &e),
        },
        Err(e) => return fail(&format!("port {port} is taken"), &e),
    };
    let metrics_port = match free_port(metrics_port) {
        Ok(p) => p,
        Err(e) => return fail(&format!("metrics port {metrics_port}"), &e),
    };
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id())),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(&format!("cannot create {}", dir.display()), &e);
    }

    let (blue, green) = match start_demo_apps(blue_port, green_port) {
        Ok(a) => a,
        Err(e) => return fail("cannot start the demo apps", &e),
    };
    let socket = dir.join("admin.sock");
    let places = Places {
        port,
        metrics_port,
        blue,
        green,
        socket: socket.clone(),
        state: dir.join("state"),
    };
    let config = dir.join("switchyard.toml");
    if let Err(e) = std::fs::write(&config, demo_tour::config_text(&places)) {
        return fail(&format!("cannot write {}", config.display()), &e);
    }
    let me = std::env::args()
        .next()
        .unwrap_or_else(|| "switchyard".into());
    println!("{}", demo_tour::banner(&places, &config, &me));
    match Config::load(&config) {
        Ok(cfg) => start(cfg, RunOptions::default()),
        Err(e) => fail("the demo config does not load", &e),
    }
}
