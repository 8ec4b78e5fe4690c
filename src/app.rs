//! The shared state of one running switchyard, wired once at start: config, routing table,
//! metrics, open-connection tracking, the switch controller and its counts history. The data
//! plane, the admin socket and the health checker each hold an `Arc<App>`; none of them owns
//! the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::drain::Tracker;
use crate::fleet::Fleet;
use crate::history::History;
use crate::metrics::Metrics;
use crate::routing::{Color, Router};
use crate::sni::CertStore;
use crate::switch_state::Controller;

pub struct App {
    pub cfg: Config,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub tracker: Tracker,
    pub controller: Controller,
    /// Per-second samples of each color's counts, for the watch's baseline.
    pub history: History,
    /// The HTTPS certificates (the default and those per host name), when `[listen] https`
    /// is set; `reload-tls` swaps them all.
    pub tls: Option<Arc<CertStore>>,
    /// Fleet mode (`[fleet]`): the fleet's view; `None` for one instance on its state file.
    pub fleet: Option<Arc<Fleet>>,
    /// Set once this process is going away (SIGTERM, or SIGQUIT for a binary upgrade).
    leaving: AtomicBool,
}

impl App {
    /// `epoch`: the fleet epoch the state file kept with `active` (fleet mode).
    pub fn new(cfg: Config, active: Color, epoch: Option<u64>) -> Arc<App> {
        let metrics = Arc::new(Metrics::new());
        metrics.set_active(active);
        let fleet = cfg.fleet.clone().map(|f| {
            metrics.enable_fleet();
            metrics.fleet_epoch(epoch.unwrap_or(0));
            Arc::new(Fleet::new(f, epoch.unwrap_or(0)))
        });
        Arc::new(App {
            fleet,
            router: Router::new(&cfg, active, &metrics),
            tracker: Tracker::new(metrics.clone()),
            controller: Controller::default(),
            history: History::new(cfg.switch.watch),
            tls: cfg.tls.as_ref().map(|t| {
                let (sources, keys) = crate::config::tls_sources(t);
                Arc::new(CertStore::new(sources, keys))
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

    /// `GET /ready`: `Err(why)` while this instance should get no new traffic.
    pub fn readiness(&self) -> Result<(), String> {
        readiness(
            self.leaving(),
            self.fleet.as_ref().map(|f| f.view().confirmed),
        )
    }
}

/// Ready while the process serves and, in fleet mode, once it has confirmed the fleet's
/// color from etcd. A member that loses etcd later stays ready: it keeps serving the last
/// color, and taking every member out of the balancer at once would be the outage.
pub fn readiness(leaving: bool, fleet_confirmed: Option<bool>) -> Result<(), String> {
    if leaving {
        return Err("shutting down or handing over to a new process".into());
    }
    if fleet_confirmed == Some(false) {
        return Err("fleet color not confirmed from etcd yet".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_unless_leaving_or_unconfirmed() {
        assert!(readiness(false, None).is_ok());
        assert!(readiness(false, Some(true)).is_ok());
        assert!(readiness(true, None).unwrap_err().contains("shutting down"));
        assert!(readiness(false, Some(false))
            .unwrap_err()
            .contains("not confirmed"));
    }
}
