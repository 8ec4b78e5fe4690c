//! The shared state of one running switchyard, wired once at start: config, routing table,
//! metrics, open-connection tracking, the switch controller and its counts history. The data
//! plane, the admin socket and the health checker each hold an `Arc<App>`; none of them owns
//! the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::controller::Controller;
use crate::drain::Tracker;
use crate::history::History;
use crate::metrics::Metrics;
use crate::routing::{Color, Router};
use crate::tls::CertResolver;

pub struct App {
    pub cfg: Config,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub tracker: Tracker,
    pub controller: Controller,
    /// Per-second samples of each color's counts, for the watch's baseline.
    pub history: History,
    /// The HTTPS certificate, when `[listen] https` is set; `reload-tls` swaps it.
    pub tls: Option<Arc<CertResolver>>,
    /// Set once this process is going away (SIGTERM, or SIGQUIT for a binary upgrade).
    leaving: AtomicBool,
}

impl App {
    pub fn new(cfg: Config, active: Color) -> Arc<App> {
        let metrics = Arc::new(Metrics::new());
        metrics.set_active(active);
        Arc::new(App {
            router: Router::new(&cfg, active, &metrics),
            tracker: Tracker::new(metrics.clone()),
            controller: Controller::default(),
            history: History::new(cfg.switch.watch),
            tls: cfg.tls.as_ref().map(|t| {
                Arc::new(CertResolver::new(
                    t.cert.clone(),
                    t.key.clone(),
                    t.loaded.clone(),
                ))
            }),
            leaving: AtomicBool::new(false),
            metrics,
            cfg,
        })
    }
}

impl App {
    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::Relaxed);
    }
}
