//! Assembles and runs one switchyard process from a validated [`Config`]: reads the persisted
//! color, checks that every address is free (pingora would otherwise retry for 30 s and keep
//! running without its listener), binds the admin socket, fills pingora's `ServerConf` from our
//! TOML, adds the proxy, metrics, admin and health services, and runs until a signal.
//!
//! Graceful shutdown (SIGTERM) is pingora's — stop accepting, let open work finish — except
//! that pingora always sleeps its whole grace period; the `Shutdown` service below ends the
//! process as soon as nothing is open any more, within `[shutdown] timeout`.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::ALPN;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::{self, AdminError, AdminService};
use crate::admin_http::AdminHttp;
use crate::app::App;
use crate::color::Color;
use crate::config::Config;
use crate::engine::Engine;
use crate::fleet::{self, Fleet};
use crate::h2::H2Front;
use crate::health::HealthChecker;
use crate::history;
use crate::proxy_protocol::ProxyProtocolHook;
use crate::state::{self, Saved, StateError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("[listen] https: {0}")]
    Tls(#[source] Box<pingora::Error>),
    #[error("{what} {addr} cannot be used: {source} (is another process listening there?)")]
    AddrInUse {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running switchyard (binary upgrade).
    pub upgrade: bool,
}

/// The color to start on: the state file's, else `[state] initial` (then persisted, so the
/// next start does not depend on the config's `initial` any more). In fleet mode the state
/// file also keeps the epoch of the fleet decision the color came from: a member restarted
/// while etcd is down comes back on the fleet's last color.
pub fn startup_color(cfg: &Config) -> Result<Saved, StartError> {
    if let Some(s) = state::load_saved(&cfg.state_file)? {
        return Ok(s);
    }
    if let Some(dir) = cfg
        .state_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = state::store(&cfg.state_file, cfg.initial) {
        tracing::warn!("{e}; switches will be refused until it can be written");
    }
    Ok(Saved {
        color: cfg.initial,
        epoch: None,
    })
}

fn ensure_free(what: &'static str, addr: SocketAddr) -> Result<(), StartError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| StartError::AddrInUse { what, addr, source })
}

fn server_conf(cfg: &Config) -> ServerConf {
    let run_dir = cfg
        .admin_socket
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| "/tmp".into());
    ServerConf {
        threads: cfg.threads,
        upgrade_sock: cfg.upgrade_sock.display().to_string(),
        pid_file: run_dir.join("switchyard.pid").display().to_string(),
        // The Shutdown service ends the process earlier when nothing is open; this is the
        // upper bound.
        grace_period_seconds: Some(cfg.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // One current-thread runtime per worker: a request's tasks, its upstream pool and
        // its buffers stay on one thread (engine/pool.rs relies on it), and the accepted
        // socket's readiness too (vendor/pingora-core/PATCHED.md, section 4).
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// Runs switchyard in the foreground until SIGTERM, SIGINT or SIGQUIT (upgrade).
pub fn run(cfg: Config, opts: RunOptions) -> Result<(), StartError> {
    let mut early = None;
    if !opts.upgrade {
        let active = startup_color(&cfg)?;
        ensure_free("[listen] http", cfg.listen_http)?;
        if let Some(t) = &cfg.tls {
            ensure_free("[listen] https", t.addr)?;
        }
        if let Some(m) = cfg.metrics {
            ensure_free("[admin] metrics", m)?;
        }
        early = Some((active, admin::bind(&cfg.admin_socket, false)?));
    }

    let conf = server_conf(&cfg);
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // On an upgrade this blocks until the old process hands its listening sockets over.
    server.bootstrap();
    let (active, admin_listener) = match early {
        Some(x) => x,
        // Only now, with the sockets in hand, take the admin socket over and read the color:
        // a new process that dies before this leaves the old one fully operable, and a
        // switch the old one made meanwhile is not lost.
        None => {
            let l = admin::bind(&cfg.admin_socket, true)?;
            (startup_color(&cfg)?, l)
        }
    };
    tracing::info!(active = %active.color, epoch = ?active.epoch, "starting: {cfg}");
    let app = App::new(cfg, active.color, active.epoch);

    // switchyard's own HTTP/1.1 engine serves every client connection (plain, or TLS after
    // pingora's handshake): see src/engine/.
    let mut engine = Engine::new(app.clone());
    if app.cfg.http2 {
        // HTTP/2 connections (ALPN h2, h2c preface) go to pingora-proxy's HTTP/2 server: see
        // src/h2/.
        engine = engine.with_http2(H2Front::new(app.clone(), &server.configuration));
    }
    let mut proxy = Service::new("proxy".to_string(), engine);
    // No L4 buffers: the engine reads into buffers it lends per read (an idle keep-alive
    // connection holds none) and writes each head in one write.
    proxy.add_listener(
        ListenerConfig::tcp(app.cfg.listen_http.to_string())
            .l4_buffer(L4BufferSettings::unbuffered()),
    );
    if let (Some(t), Some(resolver)) = (&app.cfg.tls, &app.tls) {
        // The paths here are never read: the resolver serves the pair, and reload-tls swaps it.
        let mut settings = TlsSettings::intermediate("", "").map_err(StartError::Tls)?;
        settings.set_cert_resolver(resolver.clone());
        // h2 first when HTTP/2 is on; WebSocket upgrades stay on HTTP/1.1 either way.
        settings.set_alpn(if app.cfg.http2 { ALPN::H2H1 } else { ALPN::H1 });
        proxy.add_listener(
            ListenerConfig::tcp(t.addr.to_string())
                .tls(settings)
                .l4_buffer(L4BufferSettings::unbuffered()),
        );
    }
    if app.cfg.proxy_protocol {
        // Every listener of the proxy service, plain and TLS: the header comes first.
        proxy
            .endpoints()
            .set_pre_tls_callback(Arc::new(ProxyProtocolHook::new(
                app.cfg.trusted_proxies.clone(),
                app.cfg.limits.header_timeout,
                app.metrics.clone(),
            )));
    }
    server.add_service(proxy);

    if let Some(addr) = app.cfg.metrics {
        // `/metrics`, the status page and its event stream (admin_http.rs).
        let mut metrics = Service::new("metrics".to_string(), AdminHttp::new(app.clone()));
        metrics.add_tcp(&addr.to_string());
        metrics.threads = Some(1);
        server.add_service(metrics);
    }
    server.add_service(background_service(
        "admin",
        AdminService {
            app: app.clone(),
            listener: Mutex::new(Some(admin_listener)),
        },
    ));
    server.add_service(background_service(
        "health",
        HealthChecker { app: app.clone() },
    ));
    if let Some(fleet) = app.fleet.clone() {
        server.add_service(background_service(
            "fleet",
            FleetService {
                app: app.clone(),
                fleet,
            },
        ));
    }
    server.add_service(background_service("history", Sampler { app: app.clone() }));
    // pingora announces SIGQUIT/SIGTERM on this channel seconds before it stops the services
    // (an upgrade waits 5 s for the new process to take the sockets): from then on every
    // response says `Connection: close`, so keep-alive clients move over while both
    // processes still accept, and none is cut while it sends its next request.
    let mut phases = server.watch_execution_phase();
    let leaving = app.clone();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::GracefulUpgradeTransferringFds)
            | Ok(ExecutionPhase::GracefulTerminate) => leaving.set_leaving(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            _ => {}
        }
    });
    server.add_service(background_service("shutdown", Shutdown { app }));
    server.run(RunArgs::default());
    Ok(())
}

/// The fleet session (fleet/watch.rs) as a background service: it runs until the process
/// exits, so a member that drains still follows the fleet.
struct FleetService {
    app: Arc<App>,
    fleet: Arc<Fleet>,
}

#[async_trait]
impl BackgroundService for FleetService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        fleet::watch::run(self.app.clone(), self.fleet.clone()).await;
    }
}

/// Ends the process once a graceful shutdown has nothing left open.
struct Shutdown {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Shutdown {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let deadline = Instant::now() + self.app.cfg.shutdown_timeout;
        // WebSockets never finish by themselves: hand them over now (1012) so clients
        // reconnect, to the new process on an upgrade, and the HTTP requests get the time.
        let ws: usize = Color::ALL
            .iter()
            .map(|c| self.app.tracker.close_websockets(*c))
            .sum();
        tracing::info!(
            websockets = ws,
            "graceful shutdown: waiting for open requests to finish"
        );
        loop {
            let open: i64 = Color::ALL
                .iter()
                .map(|c| self.app.metrics.inflight(*c).get())
                .sum();
            if open <= 0 {
                tracing::info!("graceful shutdown: nothing open, exiting");
                std::process::exit(0);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    open,
                    "graceful shutdown: timeout reached with work still open"
                );
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The background task that takes one sample of each color's counts a second (history.rs).
struct Sampler {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(history::EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.app.history.push(history::Sample::now(&self.app.metrics)),
                _ = shutdown.changed() => return,
            }
        }
    }
}
