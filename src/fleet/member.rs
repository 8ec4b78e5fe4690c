//! This member as the fleet sees it, and the fleet's members as this one sees them.
//!
//! The record a member publishes (colors' health, color served, epoch applied, request
//! counters, last seen) is gathered here; the rules about other members are pure
//! functions: who is live, whether a switch lost the member running it, which member acts
//! on that, and what the fleet goes back to. The etcd calls live in store.rs, the loop that
//! calls these in watch.rs.

use std::collections::BTreeMap;

use crate::app::App;
use crate::color::Color;
use crate::routing::Health;

use crate::history::Sample;

use super::store::{now_ms, ColorHealth, Decision, FleetPhase, MemberRecord};

/// Live members (their lease holds their record), by id, with the lease of each.
pub type Live = BTreeMap<String, (MemberRecord, i64)>;

/// This process's record, from its routing table, health view and counters.
pub fn own_record(
    app: &App,
    id: &str,
    (epoch, seen_rev): (u64, i64),
    started_ms: u64,
) -> MemberRecord {
    let health = Color::ALL.map(|c| {
        let (healthy, total) = app.router.backends_of(c).fold((0, 0), |(h, t), b| {
            (h + u32::from(b.health() == Health::Healthy), t + 1)
        });
        ColorHealth { healthy, total }
    });
    let now = Sample::now(&app.metrics);
    let serving = app.router.active();
    let (baseline, _) = app.history.baseline(serving, now, app.cfg.switch.watch);
    let buckets = match app.cfg.switch.rules.max_p99 {
        Some(_) => Color::ALL.map(|c| app.metrics.duration_buckets(c)),
        None => Default::default(),
    };
    MemberRecord {
        id: id.to_string(),
        serving,
        epoch,
        seen_rev,
        health,
        counters: now.counts,
        baseline,
        buckets,
        seen_ms: now_ms(),
        started_ms,
    }
}

/// Whether a running switch lost the member that runs it: its record is gone (lease
/// expired) or belongs to a newer lease (it restarted, and its switch died with the old
/// process).
pub fn orphaned(d: &Decision, live: &Live) -> bool {
    if d.phase == FleetPhase::Idle {
        return false;
    }
    match d.by.as_deref().and_then(|by| live.get(by)) {
        Some((_, lease)) => *lease != d.by_lease,
        None => true,
    }
}

/// Which member cleans up an orphaned switch: the live one with the lowest id. The others
/// stand by; the compare-and-swap makes a second attempt harmless anyway.
pub fn recovery_actor<'a>(live: &'a Live, dead: Option<&str>) -> Option<&'a str> {
    live.keys().map(String::as_str).find(|id| Some(*id) != dead)
}

/// What the fleet goes back to when the member running a switch is gone: before the swap,
/// nothing moved (the switch is just released); after it, the previous color, as a new
/// epoch.
pub fn recovered(d: &Decision, actor: &str, at_ms: u64) -> Decision {
    let by = d.by.clone().unwrap_or_else(|| "?".into());
    let mut next = Decision {
        epoch: d.epoch,
        color: d.color,
        phase: FleetPhase::Idle,
        by: Some(actor.to_string()),
        by_lease: 0,
        target: None,
        at_ms,
        note: String::new(),
    };
    match d.phase {
        FleetPhase::Idle => next.note = d.note.clone(),
        FleetPhase::Gate => {
            next.note = format!("switch released by {actor}: {by} went away during the gate");
        }
        FleetPhase::Watch => {
            next.epoch = d.epoch + 1;
            next.color = d.color.other();
            next.note = format!("rolled back by {actor}: {by} went away during the watch");
        }
    }
    next
}

/// Members whose record, written after the switch began (`since`: the revision of the gate
/// decision), shows the target color healthy, and the others with why.
pub fn gate_view(live: &Live, to: Color, since: i64) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut bad = Vec::new();
    for (id, (rec, _)) in live {
        let h = rec.health[to.idx()];
        if rec.seen_rev < since {
            bad.push(format!("{id}: no report since the switch began"));
        } else if h.all_healthy() {
            ok += 1;
        } else {
            bad.push(format!("{id}: {}/{} servers healthy", h.healthy, h.total));
        }
    }
    (ok, bad)
}

/// Members that serve `color` at `epoch` or later, and the ones that do not yet.
pub fn swapped(live: &Live, color: Color, epoch: u64) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut behind = Vec::new();
    for (id, (rec, _)) in live {
        if rec.epoch >= epoch && rec.serving == color {
            ok += 1;
        } else {
            behind.push(format!("{id} on {} (epoch {})", rec.serving, rec.epoch));
        }
    }
    (ok, behind)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verdict::Counts;

    pub fn rec(id: &str, serving: Color, epoch: u64, green: (u32, u32)) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            serving,
            epoch,
            seen_rev: 0,
            health: [
                ColorHealth {
                    healthy: 1,
                    total: 1,
                },
                ColorHealth {
                    healthy: green.0,
                    total: green.1,
                },
            ],
            counters: [Counts::default(); 2],
            baseline: Counts::default(),
            buckets: Default::default(),
            seen_ms: 0,
            started_ms: 0,
        }
    }

    pub fn live(members: &[(&str, i64)]) -> Live {
        members
            .iter()
            .map(|(id, lease)| (id.to_string(), (rec(id, Color::Blue, 1, (1, 1)), *lease)))
            .collect()
    }

    fn watching(by: &str, lease: i64) -> Decision {
        Decision {
            epoch: 5,
            color: Color::Green,
            phase: FleetPhase::Watch,
            by: Some(by.into()),
            by_lease: lease,
            target: None,
            at_ms: 0,
            note: String::new(),
        }
    }

    #[test]
    fn a_switch_is_orphaned_when_its_member_or_its_lease_is_gone() {
        let d = watching("edge-1", 10);
        assert!(!orphaned(&d, &live(&[("edge-1", 10), ("edge-2", 11)])));
        assert!(orphaned(&d, &live(&[("edge-2", 11)])), "lease expired");
        assert!(orphaned(&d, &live(&[("edge-1", 12)])), "restarted");
        let idle = Decision {
            phase: FleetPhase::Idle,
            ..d
        };
        assert!(!orphaned(&idle, &live(&[])));
    }

    #[test]
    fn the_lowest_live_id_recovers() {
        let l = live(&[("edge-3", 1), ("edge-2", 2)]);
        assert_eq!(recovery_actor(&l, Some("edge-1")), Some("edge-2"));
        // A restarted switcher under the same id does not recover its own old switch.
        let l = live(&[("edge-1", 9), ("edge-2", 2)]);
        assert_eq!(recovery_actor(&l, Some("edge-1")), Some("edge-2"));
        assert_eq!(recovery_actor(&live(&[]), None), None);
    }

    #[test]
    fn recovery_rolls_back_after_the_swap_and_releases_before_it() {
        let d = watching("edge-1", 10);
        let r = recovered(&d, "edge-2", 99);
        assert_eq!(
            (r.color, r.epoch, r.phase),
            (Color::Blue, 6, FleetPhase::Idle)
        );
        assert!(r.note.contains("rolled back by edge-2"), "{}", r.note);
        let gate = Decision {
            phase: FleetPhase::Gate,
            color: Color::Blue,
            target: Some(Color::Green),
            ..d
        };
        let r = recovered(&gate, "edge-2", 99);
        assert_eq!(
            (r.color, r.epoch, r.phase),
            (Color::Blue, 5, FleetPhase::Idle)
        );
    }

    #[test]
    fn gate_and_swap_views_name_the_members_behind() {
        let mut l = live(&[]);
        l.insert("a".into(), (rec("a", Color::Green, 6, (2, 2)), 1));
        l.insert("b".into(), (rec("b", Color::Blue, 5, (1, 2)), 2));
        assert_eq!(
            gate_view(&l, Color::Green, 0),
            (1, vec!["b: 1/2 servers healthy".into()])
        );
        let stale = vec![
            "a: no report since the switch began".to_string(),
            "b: no report since the switch began".to_string(),
        ];
        assert_eq!(gate_view(&l, Color::Green, 1), (0, stale));
        assert_eq!(
            swapped(&l, Color::Green, 6),
            (1, vec!["b on blue (epoch 5)".into()])
        );
    }
}
