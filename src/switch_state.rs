//! The record of the switch that is running, if any: what `status`, the status page and
//! `abort`/`rollback` see of it. The driver (controller.rs) fills it; this module knows
//! nothing of the application state, so app.rs can hold it without importing the driver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::color::Color;
use crate::drain::OpenCounts;
use crate::status::feed::Feed;
use crate::switch::Phase;
use crate::sync::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    Abort,
    Rollback,
}

pub(crate) struct Stop {
    pub(crate) kind: StopKind,
    pub(crate) reply: oneshot::Sender<String>,
}

/// What `status` and the status page show about a running switch.
#[derive(Debug, Clone)]
pub struct SwitchInfo {
    pub from: Color,
    pub to: Color,
    pub phase: Phase,
    pub force: bool,
    pub started: SystemTime,
    /// Time left in the gate or the watch window, and that phase's whole length.
    pub phase_left: Option<Duration>,
    pub phase_total: Option<Duration>,
    /// The gate: servers of the target color healthy, out of how many.
    pub healthy: usize,
    pub servers: usize,
    /// The watch: the new color's own faults since the swap, and the rule that judges them.
    pub errors: u64,
    pub requests: u64,
    pub rule: String,
    /// `max_errors`, when that rule is on: the count at which the watch rolls back at once.
    pub max_errors: Option<u64>,
    pub drain: Option<DrainInfo>,
}

/// The old color's drain during the watch.
#[derive(Debug, Clone, Copy)]
pub struct DrainInfo {
    pub color: Color,
    pub open: OpenCounts,
    /// Until its WebSockets are handed over (drain_timeout after the swap).
    pub left: Duration,
    pub total: Duration,
}

pub(crate) struct Running {
    pub(crate) info: SwitchInfo,
    pub(crate) stop: mpsc::UnboundedSender<Stop>,
}

#[derive(Default)]
pub struct Controller {
    pub(crate) running: Mutex<Option<Running>>,
    /// Every switch's progress for watchers other than the client that asked (the status
    /// page), and the last switches' outcomes.
    pub feed: Arc<Feed>,
}

impl Controller {
    pub fn current(&self) -> Option<SwitchInfo> {
        lock(&self.running).as_ref().map(|r| r.info.clone())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SwitchInfo)) {
        if let Some(r) = lock(&self.running).as_mut() {
            f(&mut r.info);
        }
    }

    /// Marks a fleet switch driven from this member as running (for `status`, and so that
    /// this member runs one at a time); `false` when one already runs.
    pub(crate) fn begin(&self, info: SwitchInfo) -> bool {
        let mut running = lock(&self.running);
        if running.is_some() {
            return false;
        }
        // Fleet switches are stopped through etcd (fleet/switch.rs `stop`), not this channel.
        let (stop, _) = mpsc::unbounded_channel();
        *running = Some(Running { info, stop });
        true
    }

    pub(crate) fn end(&self) {
        *lock(&self.running) = None;
    }

    /// `abort` or `rollback` while a switch runs: the switch answers once it has put traffic
    /// back. `None` when no switch runs.
    pub fn interrupt(&self, kind: StopKind) -> Option<oneshot::Receiver<String>> {
        let running = lock(&self.running);
        let r = running.as_ref()?;
        let (reply, rx) = oneshot::channel();
        r.stop.send(Stop { kind, reply }).ok()?;
        Some(rx)
    }
}
