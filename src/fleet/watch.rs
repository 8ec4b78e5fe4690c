//! The fleet session: keeps this member connected to etcd, publishes its record under its
//! lease, watches the fleet's keys and applies every decision to the local routing table.
//!
//! This is the only place that moves traffic in fleet mode, for every member alike, the
//! one that took the command included. A session talks to one etcd endpoint; when it
//! fails (a call misses its deadline, the watch breaks, the endpoint lost its leader) the
//! member is *detached* — traffic stays where it is — and the next endpoint is tried. A new
//! session catches up from the last revision it saw, or re-reads everything when that
//! history was compacted. The rules (what to apply, how to resume) are pure functions below.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};

use crate::app::App;
use crate::color::Color;
use crate::state::{self, Saved};

use super::member::{orphaned, own_record, recovered, recovery_actor};
use super::store::{
    self, cas_decision, now_ms, timed, Cas, Decision, Deleted, Entry, FleetPhase, StoreError,
    Versioned,
};
use super::Fleet;

/// How to pick up the fleet's history when a session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Nothing seen yet, or the history since was compacted away: read every key.
    ReadAll,
    /// Watch from this revision on: every change missed while away comes as an event.
    WatchFrom(i64),
}

pub fn resume_plan(last_revision: i64) -> Resume {
    if last_revision <= 0 {
        Resume::ReadAll
    } else {
        Resume::WatchFrom(last_revision + 1)
    }
}

/// What a decision read from etcd does to this member's routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Already there.
    Nothing,
    /// Same color, newer (or, after an etcd restore, older) epoch: just record it.
    Epoch,
    /// Move traffic.
    Swap { from: Color, to: Color },
}

/// etcd is the truth: whatever its decision says is applied, in the order the watch
/// delivers, so every member goes through the same sequence.
pub fn apply_plan(active: Color, applied_epoch: u64, d: &Decision) -> Apply {
    if d.color != active {
        Apply::Swap {
            from: active,
            to: d.color,
        }
    } else if d.epoch != applied_epoch {
        Apply::Epoch
    } else {
        Apply::Nothing
    }
}

/// The first decision of a new fleet: this member's color, as the state file kept it.
pub fn founding(active: Color, epoch: u64, me: &str) -> Decision {
    Decision {
        epoch,
        color: active,
        phase: FleetPhase::Idle,
        by: Some(me.to_string()),
        by_lease: 0,
        target: None,
        at_ms: now_ms(),
        note: format!("fleet started by {me} on {active}"),
    }
}

/// Record and publish cadence: a quarter of the lease (at most every 500 ms), so a member
/// survives a lost keep-alive or two and the switch driver's numbers are fresh.
pub fn heartbeat(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).min(Duration::from_millis(500))
}

/// Applies one decision from etcd to the routing table, the state file and the view.
pub fn apply(app: &Arc<App>, fleet: &Fleet, v: Versioned) {
    let d = &v.decision;
    let applied = fleet.view().applied_epoch;
    let plan = apply_plan(app.router.active(), applied, d);
    if let Apply::Swap { from, to } = plan {
        let t = Instant::now();
        app.router.set_active(to);
        app.metrics.set_active(to);
        crate::controller::schedule_handover(app.clone(), from, app.cfg.switch.drain_timeout);
        let lag = now_ms().saturating_sub(d.at_ms);
        app.metrics.fleet_swap_observe(Duration::from_millis(lag));
        tracing::info!(epoch = d.epoch, from = %from, to = %to, lag_ms = lag, swap_us = t.elapsed().as_micros() as u64, "fleet: applied decision ({})", d.note);
    }
    if d.epoch < applied {
        tracing::warn!(
            epoch = d.epoch,
            applied,
            "fleet: etcd's epoch went backwards (etcd restored or the fleet's keys reset?); following etcd"
        );
    }
    if plan != Apply::Nothing {
        let saved = Saved {
            color: d.color,
            epoch: Some(d.epoch),
        };
        if let Err(e) = state::store_saved(&app.cfg.state_file, saved) {
            tracing::warn!(
                "fleet: {e}; a restart while etcd is down would come back on the old color"
            );
        }
    }
    app.metrics.fleet_epoch(d.epoch);
    fleet.update(|view| {
        view.applied_epoch = d.epoch;
        view.confirmed = true;
        view.decision = Some(v.clone());
    });
    fleet.publish.notify_one();
}

/// Runs sessions forever, one endpoint after the other.
pub async fn run(app: Arc<App>, fleet: Arc<Fleet>) {
    let endpoints = fleet.cfg.etcd.clone();
    let mut i = 0usize;
    loop {
        let ep = &endpoints[i % endpoints.len()];
        let err = session(&app, &fleet, ep).await;
        let why = format!("{ep}: {err}");
        tracing::warn!("fleet: detached: {why}");
        fleet.set_client(None);
        app.metrics.fleet_connected(false);
        fleet.update(|v| {
            v.connected = false;
            if v.detached.is_none() {
                v.detached = Some((SystemTime::now(), why));
            }
        });
        i += 1;
        // Try the next endpoint at once; after a full round, breathe.
        let pause = if i.is_multiple_of(endpoints.len()) {
            500
        } else {
            20
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// One connection to one endpoint; returns why it ended.
async fn session(app: &Arc<App>, fleet: &Arc<Fleet>, endpoint: &str) -> StoreError {
    match session_inner(app, fleet, endpoint).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

async fn session_inner(
    app: &Arc<App>,
    fleet: &Arc<Fleet>,
    endpoint: &str,
) -> Result<Never, StoreError> {
    let mut client = store::connect(endpoint).await?;
    let lease = ensure_lease(&mut client, fleet).await?;
    let (mut keeper, mut alive) = timed(client.lease_keep_alive(lease)).await?;
    store::put_roster(&mut client, &fleet.keys, &fleet.cfg.member).await?;
    publish(&mut client, app, fleet).await?;
    let mut stream = catch_up(&mut client, app, fleet).await?;
    fleet.set_client(Some(client.clone()));
    if fleet.view().decision.is_none() {
        found(&mut client, app, fleet).await?;
    }
    tracing::info!(endpoint, lease, "fleet: connected");
    app.metrics.fleet_connected(true);
    fleet.update(|v| {
        v.connected = true;
        v.detached = None;
    });
    let mut tick = tokio::time::interval(heartbeat(fleet.cfg.lease_ttl));
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = msg?.ok_or_else(|| StoreError::Closed("the watch stream ended".into()))?;
                if resp.compact_revision() > 0 {
                    // The history we resume from is gone: re-read everything.
                    tracing::info!(compacted = resp.compact_revision(), "fleet: history compacted; re-reading the fleet");
                    fleet.update(|v| v.revision = 0);
                    stream = catch_up(&mut client, app, fleet).await?;
                    continue;
                }
                if resp.canceled() {
                    return Err(StoreError::Closed(format!("watch canceled: {}", resp.cancel_reason())));
                }
                if on_events(app, fleet, &resp) {
                    found(&mut client, app, fleet).await?;
                }
                recover(&mut client, app, fleet).await?;
            }
            _ = tick.tick() => {
                timed(keeper.keep_alive()).await?;
                match timed(alive.message()).await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(StoreError::Closed("this member's lease expired (was the process paused?)".into())),
                }
                publish(&mut client, app, fleet).await?;
                recover(&mut client, app, fleet).await?;
            }
            _ = fleet.publish.notified() => publish(&mut client, app, fleet).await?,
        }
    }
}

/// Keeps the lease of the previous session when it still holds, else grants a new one.
async fn ensure_lease(client: &mut Client, fleet: &Fleet) -> Result<i64, StoreError> {
    let old = fleet.lease();
    if old != 0 {
        let ttl = timed(client.lease_time_to_live(old, None)).await?;
        if ttl.ttl() > 0 {
            return Ok(old);
        }
    }
    let ttl = fleet.cfg.lease_ttl.as_secs() as i64;
    let id = timed(client.lease_grant(ttl, None)).await?.id();
    fleet.set_lease(id);
    Ok(id)
}

async fn publish(client: &mut Client, app: &App, fleet: &Fleet) -> Result<(), StoreError> {
    if app.leaving() {
        // A binary upgrade: the new process publishes under this id with its own lease; two
        // writers would flip the record between leases. This one's lease just runs out.
        return Ok(());
    }
    let v = fleet.view();
    let seen = v.decision.map(|d| d.mod_revision).unwrap_or(0);
    let rec = own_record(
        app,
        &fleet.cfg.member,
        (v.applied_epoch, seen),
        fleet.started_ms,
    );
    store::put_member(client, &fleet.keys, &rec, fleet.lease()).await?;
    Ok(())
}

/// A new fleet (no decision in etcd yet): found it on this member's color. Losing the race
/// to another founder is fine: its decision comes through the watch.
async fn found(client: &mut Client, app: &App, fleet: &Fleet) -> Result<(), StoreError> {
    let d = founding(
        app.router.active(),
        fleet.view().applied_epoch,
        &fleet.cfg.member,
    );
    if let Cas::Won(_) = cas_decision(client, &fleet.keys, 0, &d).await? {
        tracing::info!("fleet: {}", d.note);
    }
    Ok(())
}

/// Subscribes from where the view left off, re-reading everything when it must.
async fn catch_up(
    client: &mut Client,
    app: &Arc<App>,
    fleet: &Fleet,
) -> Result<WatchStream, StoreError> {
    let from = match resume_plan(fleet.view().revision) {
        Resume::WatchFrom(r) => r,
        Resume::ReadAll => {
            let (kvs, at) = store::read_all(client, &fleet.keys).await?;
            let mut decision = None;
            let mut members = super::member::Live::new();
            let mut roster = std::collections::BTreeSet::new();
            for kv in &kvs {
                match fleet.keys.entry(kv) {
                    Ok(Entry::Decision(v)) => decision = Some(v),
                    Ok(Entry::Member(rec, lease)) => {
                        members.insert(rec.id.clone(), (rec, lease));
                    }
                    Ok(Entry::Roster(id)) => {
                        roster.insert(id);
                    }
                    Ok(Entry::Other) => {}
                    Err(e) => tracing::warn!("fleet: {e}; ignored"),
                }
            }
            fleet.update(|v| {
                v.members = members;
                v.roster = roster;
                v.revision = at;
            });
            app.metrics.fleet_members(fleet.view().members.len());
            if let Some(d) = decision {
                apply(app, fleet, d);
            }
            at + 1
        }
    };
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    timed(client.watch(fleet.keys.prefix.as_str(), Some(opts))).await
}

/// Folds one watch response into the view; `true` when the decision key was deleted (the
/// fleet must be founded again).
fn on_events(app: &Arc<App>, fleet: &Fleet, resp: &WatchResponse) -> bool {
    let mut refound = false;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision();
        match ev.event_type() {
            EventType::Put => match fleet.keys.entry(kv) {
                Ok(Entry::Decision(v)) => apply(app, fleet, v),
                Ok(Entry::Member(rec, lease)) => fleet.update(|v| {
                    v.members.insert(rec.id.clone(), (rec, lease));
                }),
                Ok(Entry::Roster(id)) => fleet.update(|v| {
                    v.roster.insert(id);
                }),
                Ok(Entry::Other) => {}
                Err(e) => tracing::warn!("fleet: {e}; ignored"),
            },
            EventType::Delete => match fleet.keys.deleted(kv.key()) {
                Some(Deleted::Member(id)) => {
                    tracing::info!(member = %id, "fleet: member left (lease expired or stopped)");
                    fleet.update(|v| v.members.remove(&id));
                }
                Some(Deleted::Decision) => {
                    tracing::warn!("fleet: the decision key was deleted; founding the fleet again on this member's color");
                    fleet.update(|v| v.decision = None);
                    refound = true;
                }
                None => {}
            },
        }
        fleet.update(|v| v.revision = v.revision.max(rev));
    }
    app.metrics.fleet_members(fleet.view().members.len());
    refound
}

/// When a switch lost the member running it, the lowest live member settles it by CAS:
/// exactly one rollback, however many members notice.
async fn recover(client: &mut Client, app: &Arc<App>, fleet: &Fleet) -> Result<(), StoreError> {
    let v = fleet.view();
    let Some(cur) = v.decision else {
        return Ok(());
    };
    if !orphaned(&cur.decision, &v.members) {
        return Ok(());
    }
    let me = fleet.cfg.member.as_str();
    if recovery_actor(&v.members, cur.decision.by.as_deref()) != Some(me) {
        return Ok(());
    }
    let next = recovered(&cur.decision, me, now_ms());
    if let Cas::Won(_) = cas_decision(client, &fleet.keys, cur.mod_revision, &next).await? {
        tracing::warn!(epoch = next.epoch, "fleet: {}", next.note);
        if next.color != cur.decision.color {
            app.metrics.switch_ended("rolled_back");
            let (app, from) = (app.clone(), cur.decision.color);
            // Off the session loop: a slow hook must not stall the heartbeat.
            tokio::spawn(async move {
                super::switch::rollback_hook(&app, from, next.color, &next.note).await;
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(epoch: u64, color: Color) -> Decision {
        founding(color, epoch, "edge-1")
    }

    #[test]
    fn resume_from_the_next_revision_or_read_all() {
        assert_eq!(resume_plan(0), Resume::ReadAll);
        assert_eq!(resume_plan(41), Resume::WatchFrom(42));
    }

    #[test]
    fn etcd_decides_the_color() {
        assert_eq!(
            apply_plan(Color::Blue, 3, &d(4, Color::Green)),
            Apply::Swap {
                from: Color::Blue,
                to: Color::Green
            }
        );
        assert_eq!(
            apply_plan(Color::Green, 4, &d(4, Color::Green)),
            Apply::Nothing
        );
        assert_eq!(
            apply_plan(Color::Green, 3, &d(4, Color::Green)),
            Apply::Epoch
        );
        // A restored etcd with an older epoch still wins: one truth for the whole fleet.
        assert!(matches!(
            apply_plan(Color::Green, 9, &d(2, Color::Blue)),
            Apply::Swap { .. }
        ));
    }

    #[test]
    fn heartbeat_is_a_quarter_of_the_lease_at_most_half_a_second() {
        assert_eq!(
            heartbeat(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }
}
