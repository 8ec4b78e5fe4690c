//! Fleet mode: several switchyard instances switch as one, through etcd v3.
//!
//! The active color lives in etcd (store.rs) and changes only by compare-and-swap. Every
//! member, the one that took the command included, applies the fleet's decisions from its
//! own etcd watch (watch.rs), so all follow the same sequence. Members publish their view
//! (member.rs) under a lease, so a dead one disappears by itself. The fleet switch
//! (switch.rs) gates on every live member's view, swaps by CAS and watches the fleet's
//! summed counters.
//!
//! Nothing on the request path touches etcd or this module: the data plane keeps reading
//! the routing table, which only the watch changes. When etcd is unreachable the member is
//! *detached*: traffic stays where it is and switches are refused.
//!
//! [`Fleet`] is the shared view that admin, /ready and the switch driver read.

pub mod member;
pub mod store;
pub mod switch;
pub mod watch;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

use etcd_client::Client;
use tokio::sync::{watch as chan, Notify};

use crate::color::Color;
use crate::config::FleetConfig;
use crate::sync::lock;

use member::Live;
use store::{Keys, Versioned};

/// What this member knows about the fleet.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub decision: Option<Versioned>,
    pub members: Live,
    pub roster: BTreeSet<String>,
    /// The last etcd revision applied to this view (catch-up starts after it).
    pub revision: i64,
    pub connected: bool,
    /// When and why the member lost etcd.
    pub detached: Option<(SystemTime, String)>,
    /// The fleet's color was read from etcd and applied since this process started.
    pub confirmed: bool,
    /// The epoch of the last decision applied to the routing table.
    pub applied_epoch: u64,
}

pub struct Fleet {
    pub cfg: FleetConfig,
    pub keys: Keys,
    view: Mutex<View>,
    /// Bumped on every change of the view, for drivers waiting on the fleet.
    changed: chan::Sender<u64>,
    /// The client of the current etcd session, for the switch driver's transactions.
    client: Mutex<Option<Client>>,
    /// The lease of this process's member record (0: none yet).
    lease: std::sync::atomic::AtomicI64,
    /// Publish this member's record now (a decision was applied).
    pub publish: Notify,
    pub started_ms: u64,
}

impl Fleet {
    /// `epoch` is the one the state file kept (0 without one).
    pub fn new(cfg: FleetConfig, epoch: u64) -> Fleet {
        Fleet {
            keys: Keys::new(&cfg.name),
            cfg,
            view: Mutex::new(View {
                applied_epoch: epoch,
                detached: Some((SystemTime::now(), "not connected to etcd yet".into())),
                ..View::default()
            }),
            changed: chan::channel(0).0,
            client: Mutex::new(None),
            lease: Default::default(),
            publish: Notify::new(),
            started_ms: store::now_ms(),
        }
    }

    pub fn view(&self) -> View {
        lock(&self.view).clone()
    }

    /// Changes the view and wakes whoever waits on it.
    pub fn update<T>(&self, f: impl FnOnce(&mut View) -> T) -> T {
        let r = f(&mut lock(&self.view));
        self.changed.send_modify(|n| *n += 1);
        r
    }

    pub fn subscribe(&self) -> chan::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn client(&self) -> Option<Client> {
        lock(&self.client).clone()
    }

    fn set_client(&self, c: Option<Client>) {
        *lock(&self.client) = c;
    }

    pub fn lease(&self) -> i64 {
        self.lease.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_lease(&self, id: i64) {
        self.lease.store(id, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Err(line)` when etcd is out of reach: what `switch`, `rollback` and `abort` answer.
    pub fn attached(&self, active: Color) -> Result<(), String> {
        let v = lock(&self.view);
        match (&v.detached, v.connected) {
            (None, true) => Ok(()),
            (Some((_, why)), _) => Err(format!(
                "error: fleet detached: {why}; traffic stays on {active}"
            )),
            (None, false) => Err(format!(
                "error: fleet detached: not connected to etcd; traffic stays on {active}"
            )),
        }
    }
}

/// `fleet=NAME members=L/K epoch=N connected|detached since ...` for `status`.
pub fn status_line(fleet: &Fleet) -> String {
    let v = fleet.view();
    let known = v
        .roster
        .len()
        .max(v.members.len())
        .max(fleet.cfg.min_members);
    let epoch = v
        .decision
        .as_ref()
        .map(|d| d.decision.epoch)
        .unwrap_or(v.applied_epoch);
    let conn = match &v.detached {
        None => "connected".to_string(),
        Some((since, why)) => format!("detached since {} ({why})", rfc3339(*since)),
    };
    format!(
        "fleet={} member={} members={}/{known} epoch={epoch} {conn}",
        fleet.cfg.name,
        fleet.cfg.member,
        v.members.len()
    )
}

/// `fleet switch: blue -> green by edge-2, phase=watch` while a switch runs anywhere.
pub fn switch_line(fleet: &Fleet) -> Option<String> {
    let d = fleet.view().decision?.decision;
    let (from, to) = match d.phase {
        store::FleetPhase::Idle => return None,
        store::FleetPhase::Gate => (d.color, d.target.unwrap_or(d.color.other())),
        store::FleetPhase::Watch => (d.color.other(), d.color),
    };
    Some(format!(
        "fleet switch: {from} -> {to} by {}, phase={} (epoch {})",
        d.by.as_deref().unwrap_or("?"),
        d.phase.as_str(),
        d.epoch
    ))
}

/// Seconds-precision UTC time, for humans reading admin lines.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One line per member for the `members` command, live ones first, then the roster's
/// missing ones.
pub fn member_lines(fleet: &Fleet) -> Vec<String> {
    let v = fleet.view();
    let now = store::now_ms();
    let mut lines: Vec<String> = v
        .members
        .values()
        .map(|(r, _)| {
            let h = |c: Color| {
                let x = r.health[c.idx()];
                format!("{c}={}/{}", x.healthy, x.total)
            };
            format!(
                "{} serving={} epoch={} health {} {} last_seen={}ms ago{}",
                r.id,
                r.serving,
                r.epoch,
                h(Color::Blue),
                h(Color::Green),
                now.saturating_sub(r.seen_ms),
                if r.id == fleet.cfg.member {
                    " (this one)"
                } else {
                    ""
                }
            )
        })
        .collect();
    for id in v.roster.iter().filter(|id| !v.members.contains_key(*id)) {
        lines.push(format!("{id} down (lease expired; known from the roster)"));
    }
    lines
}
