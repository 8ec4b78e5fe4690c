//! The whole state of one switchyard as one serializable value: what `GET /status.json`
//! returns and what `GET /events` sends as its periodic `snapshot` events.
//!
//! Reading the live state (routing table, health flags, open counts, the controller) is the
//! thin [`Snapshot::of`]; turning a running switch into its view is the pure [`switch_view`].
//! Every field is documented in docs/status-page.md; scripts depend on the names. Fleet mode
//! fills [`Snapshot::fleet`] from the fleet's view ([`fleet_view`], pure); without `[fleet]` it
//! is `null`.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::feed::SwitchRecord;
use super::unix_ms;
use crate::app::App;
use crate::controller::SwitchInfo;
use crate::fleet::{Fleet, View};
use crate::routing::{Backend, Color, Health};

/// Bumped when a field changes meaning or goes away (adding fields does not bump it).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub schema: u32,
    /// When this snapshot was taken, ms since the Unix epoch.
    pub at: u64,
    pub active: &'static str,
    /// `idle`, or the running switch's phase: `gate`, `swapped`, `watch`.
    pub phase: &'static str,
    /// The process is shutting down or handing over to a new binary; switches are refused.
    pub leaving: bool,
    pub switch: Option<SwitchView>,
    pub colors: Colors,
    /// The last switches, newest first (at most 20).
    pub history: Vec<SwitchRecord>,
    pub fleet: Option<FleetView>,
}

#[derive(Debug, Serialize)]
pub struct Colors {
    pub blue: ColorView,
    pub green: ColorView,
}

#[derive(Debug, Serialize)]
pub struct ColorView {
    pub active: bool,
    pub healthy: usize,
    pub servers: usize,
    pub inflight_requests: i64,
    pub websockets: i64,
    pub server_list: Vec<ServerView>,
}

#[derive(Debug, Serialize)]
pub struct ServerView {
    pub address: String,
    pub health_path: String,
    /// `healthy`, `unhealthy`, or `unknown` (not enough checks yet).
    pub health: &'static str,
    /// The last check's result in words.
    pub detail: String,
    /// When the last check finished, ms since the Unix epoch; `null` before the first.
    pub last_check_at: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SwitchView {
    pub from: &'static str,
    pub to: &'static str,
    pub force: bool,
    pub phase: &'static str,
    pub started_at: u64,
    /// Time left in the current phase (the gate's timeout or the watch window) and its whole
    /// length, in ms; `null` until the phase has measured it.
    pub left_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub gate: GateView,
    /// `null` until traffic has moved.
    pub watch: Option<WatchView>,
    pub drain: Option<DrainView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct GateView {
    pub healthy: usize,
    pub servers: usize,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct WatchView {
    /// Requests and the new color's own faults since the swap.
    pub requests: u64,
    pub errors: u64,
    /// The rules that judge them, as the config says them (e.g. `max_errors 3` or
    /// `max_error_rate 1% over baseline, min_requests 50`).
    pub rule: String,
    /// The error count that rolls back at once; `null` when only rate/p99 rules are set.
    pub max_errors: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct DrainView {
    pub color: &'static str,
    pub requests: i64,
    pub websockets: i64,
    /// Until the old color's WebSockets are handed over (1012), and drain_timeout.
    pub left_ms: u64,
    pub total_ms: u64,
}

/// Fleet mode: the fleet as this member sees it.
#[derive(Debug, Serialize, Default)]
pub struct FleetView {
    pub name: String,
    pub member: String,
    pub epoch: u64,
    pub connected: bool,
    /// When this member lost etcd, ms since the Unix epoch; `null` while connected.
    pub detached_since: Option<u64>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize, Default)]
pub struct MemberView {
    pub id: String,
    /// The color it serves.
    pub color: String,
    pub epoch: u64,
    pub healthy: bool,
    pub connected: bool,
    pub last_seen_at: Option<u64>,
}

fn live_fleet_view(f: &Fleet) -> FleetView {
    fleet_view(&f.cfg.name, &f.cfg.member, &f.view())
}

/// The fleet as `view` shows it: every live member from its record, then each member the
/// roster knows whose lease expired (not connected, nothing else known).
pub fn fleet_view(name: &str, member: &str, view: &View) -> FleetView {
    let mut members: Vec<MemberView> = view
        .members
        .values()
        .map(|(r, _)| MemberView {
            id: r.id.clone(),
            color: r.serving.as_str().to_string(),
            epoch: r.epoch,
            healthy: r.health[r.serving.idx()].all_healthy(),
            connected: true,
            last_seen_at: Some(r.seen_ms),
        })
        .collect();
    members.extend(
        view.roster
            .iter()
            .filter(|id| !view.members.contains_key(*id))
            .map(|id| MemberView {
                id: id.clone(),
                ..MemberView::default()
            }),
    );
    FleetView {
        name: name.to_string(),
        member: member.to_string(),
        epoch: view
            .decision
            .as_ref()
            .map_or(view.applied_epoch, |d| d.decision.epoch),
        connected: view.connected && view.detached.is_none(),
        detached_since: view.detached.as_ref().map(|(t, _)| unix_ms(*t)),
        members,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A running switch as the page shows it.
pub fn switch_view(s: &SwitchInfo) -> SwitchView {
    let moved = s.phase.traffic_moved();
    SwitchView {
        from: s.from.as_str(),
        to: s.to.as_str(),
        force: s.force,
        phase: s.phase.as_str(),
        started_at: unix_ms(s.started),
        left_ms: s.phase_left.map(ms),
        total_ms: s.phase_total.map(ms),
        gate: GateView {
            healthy: s.healthy,
            servers: s.servers,
        },
        watch: moved.then(|| WatchView {
            requests: s.requests,
            errors: s.errors,
            rule: s.rule.clone(),
            max_errors: s.max_errors,
        }),
        drain: s.drain.filter(|_| moved).map(|d| DrainView {
            color: d.color.as_str(),
            requests: d.open.requests.max(0),
            websockets: d.open.websockets.max(0),
            left_ms: ms(d.left),
            total_ms: ms(d.total),
        }),
    }
}

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Unknown => "unknown",
    }
}

fn server_view(b: &Backend) -> ServerView {
    ServerView {
        address: b.addr.to_string(),
        health_path: b.health_path.clone(),
        health: health_word(b.health()),
        detail: b.detail(),
        last_check_at: b.last_check().map(unix_ms),
    }
}

fn color_view(app: &App, c: Color) -> ColorView {
    let server_list: Vec<ServerView> = app.router.backends_of(c).map(|b| server_view(b)).collect();
    let open = app.tracker.open(c);
    ColorView {
        active: app.router.active() == c,
        healthy: server_list.iter().filter(|s| s.health == "healthy").count(),
        servers: server_list.len(),
        inflight_requests: open.requests.max(0),
        websockets: open.websockets.max(0),
        server_list,
    }
}

impl Snapshot {
    pub fn of(app: &App) -> Snapshot {
        let switch = app.controller.current();
        Snapshot {
            schema: SCHEMA,
            at: unix_ms(SystemTime::now()),
            active: app.router.active().as_str(),
            phase: switch.as_ref().map_or("idle", |s| s.phase.as_str()),
            leaving: app.leaving(),
            switch: switch.as_ref().map(switch_view),
            colors: Colors {
                blue: color_view(app, Color::Blue),
                green: color_view(app, Color::Green),
            },
            history: app.controller.feed.history(),
            fleet: app.fleet.as_deref().map(live_fleet_view),
        }
    }

    pub fn to_json(&self) -> String {
        // Plain data (strings, numbers, options): serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::DrainInfo;
    use crate::drain::OpenCounts;
    use crate::fleet::store::{ColorHealth, MemberRecord};
    use crate::switch::Phase;

    fn info(phase: Phase) -> SwitchInfo {
        SwitchInfo {
            from: Color::Blue,
            to: Color::Green,
            phase,
            force: false,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            phase_left: Some(Duration::from_millis(12_500)),
            phase_total: Some(Duration::from_secs(30)),
            healthy: 2,
            servers: 2,
            errors: 1,
            requests: 1834,
            rule: "max_errors 3".into(),
            max_errors: Some(3),
            drain: Some(DrainInfo {
                color: Color::Blue,
                open: OpenCounts {
                    requests: 4,
                    websockets: -1,
                },
                left: Duration::from_secs(2),
                total: Duration::from_secs(30),
            }),
        }
    }

    #[test]
    fn the_gate_has_no_watch_or_drain_yet() {
        let v = switch_view(&info(Phase::Gate));
        assert_eq!(v.phase, "gate");
        assert_eq!(
            v.gate,
            GateView {
                healthy: 2,
                servers: 2
            }
        );
        assert!(v.watch.is_none() && v.drain.is_none());
    }

    #[test]
    fn the_watch_carries_numbers_rule_and_drain() {
        let v = switch_view(&info(Phase::Watch));
        assert_eq!(
            (v.left_ms, v.total_ms, v.started_at),
            (Some(12_500), Some(30_000), 1000)
        );
        let w = v.watch.expect("watch");
        assert_eq!(
            (w.requests, w.errors, w.rule.as_str(), w.max_errors),
            (1834, 1, "max_errors 3", Some(3))
        );
        let d = v.drain.expect("drain");
        assert_eq!(
            (d.color, d.requests, d.websockets, d.left_ms),
            ("blue", 4, 0, 2000)
        );
    }

    #[test]
    fn json_names_are_the_documented_ones() {
        let v = serde_json::to_value(switch_view(&info(Phase::Watch))).expect("json");
        for key in [
            "from",
            "to",
            "force",
            "phase",
            "started_at",
            "left_ms",
            "total_ms",
            "gate",
            "watch",
            "drain",
        ] {
            assert!(v.get(key).is_some(), "switch.{key} missing in {v}");
        }
        assert_eq!(v["watch"]["rule"], "max_errors 3");
        assert_eq!(v["drain"]["websockets"], 0);
        let fleet = serde_json::to_value(FleetView {
            members: vec![MemberView::default()],
            ..FleetView::default()
        })
        .expect("json");
        for key in [
            "name",
            "member",
            "epoch",
            "connected",
            "detached_since",
            "members",
        ] {
            assert!(fleet.get(key).is_some(), "fleet.{key} missing in {fleet}");
        }
        for key in [
            "id",
            "color",
            "epoch",
            "healthy",
            "connected",
            "last_seen_at",
        ] {
            assert!(
                fleet["members"][0].get(key).is_some(),
                "member.{key} missing"
            );
        }
    }

    #[test]
    fn fleet_rows_come_from_live_records_then_the_roster() {
        let healthy = ColorHealth {
            healthy: 2,
            total: 2,
        };
        let record = MemberRecord {
            id: "edge-1".into(),
            serving: Color::Green,
            epoch: 7,
            seen_rev: 0,
            health: [ColorHealth::default(), healthy],
            counters: Default::default(),
            baseline: Default::default(),
            buckets: Default::default(),
            seen_ms: 1_000,
            started_ms: 0,
        };
        let mut view = View {
            applied_epoch: 7,
            connected: true,
            ..View::default()
        };
        view.members.insert("edge-1".into(), (record, 0));
        view.roster = ["edge-1".to_string(), "edge-2".to_string()].into();
        let f = fleet_view("fx-prod", "edge-1", &view);
        assert_eq!((f.epoch, f.connected, f.detached_since), (7, true, None));
        assert_eq!(f.members.len(), 2);
        let live = &f.members[0];
        assert_eq!((live.id.as_str(), live.color.as_str()), ("edge-1", "green"));
        assert!(live.healthy && live.connected);
        assert_eq!(live.last_seen_at, Some(1_000));
        let gone = &f.members[1];
        assert_eq!(gone.id, "edge-2");
        assert!(!gone.connected && !gone.healthy);

        view.detached = Some((SystemTime::UNIX_EPOCH + Duration::from_secs(2), "x".into()));
        let f = fleet_view("fx-prod", "edge-1", &view);
        assert!(!f.connected);
        assert_eq!(f.detached_since, Some(2_000));
    }
}
