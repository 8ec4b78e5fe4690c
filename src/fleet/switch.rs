//! The fleet switch: `switch`, `rollback` and `abort` typed on any member act on the whole
//! fleet through the decision in etcd.
//!
//! `switch` takes the fleet's switch by CAS (a second one anywhere gets `switch in
//! progress (by edge-2)`), gates on every live member's view of the target's health, swaps
//! by CAS, waits for the members to report the new epoch, then watches the new color's
//! requests and errors summed over all members and commits or rolls back — each a CAS, so
//! the fleet decides once. The driver never moves this member's traffic itself: the watch
//! in watch.rs applies every decision, here as everywhere. `rollback`/`abort` are a CAS on
//! the decision too; a driver running elsewhere notices it lost the switch and ends.
//!
//! The rules (may a switch start, does the gate pass, what do the members' counters add up
//! to, what does a stop write) are pure functions at the bottom with unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::app::App;
use crate::color::Color;
use crate::controller::{Lines, StopKind};
use crate::hooks;
use crate::metrics::DURATION_BUCKETS;
use crate::switch::{GateVerdict, Phase};
use crate::verdict::{judge, progress_line, quantile, reason, Counts, Verdict, Window};

use super::member::{gate_view, swapped, Live};
use super::store::{cas_decision, now_ms, Cas, Decision, FleetPhase, StoreError, Versioned};
use super::Fleet;

const TICK: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long the swap waits for every live member to report the new epoch before it says
/// who is behind and goes on watching (the laggard catches up from its own watch).
const SWAP_WAIT: Duration = Duration::from_secs(5);

/// Starts a fleet switch in its own task (a client that disconnects does not cancel it).
pub fn start(app: &Arc<App>, fleet: &Arc<Fleet>, to: Color, force: bool) -> Result<Lines, String> {
    let active = app.router.active();
    fleet
        .attached(active)
        .map_err(|e| e.trim_start_matches("error: ").to_string())?;
    if app.leaving() {
        return Err(
            "switchyard is shutting down or handing over to a new process; switch on the new one"
                .into(),
        );
    }
    let info = crate::controller::switch_info(app, to.other(), to, force);
    if !app.controller.begin(info) {
        return Err(format!("switch in progress (by {})", fleet.cfg.member));
    }
    let (client, rx) = mpsc::unbounded_channel();
    // The status page follows a fleet switch like any other.
    let (tx, _) = app.controller.feed.tee(client);
    let (app, fleet) = (app.clone(), fleet.clone());
    tokio::spawn(async move {
        let mut d = Driver {
            app: app.clone(),
            fleet,
            to,
            force,
            out: tx,
        };
        let last = d.run().await;
        app.controller.end();
        tracing::info!(to = %to, "fleet switch ended: {last}");
        let _ = d.out.send(last);
    });
    Ok(rx)
}

/// `abort` / `rollback` on any member: one CAS on the fleet's decision.
pub async fn stop(app: &Arc<App>, fleet: &Fleet, kind: StopKind) -> String {
    let active = app.router.active();
    if let Err(e) = fleet.attached(active) {
        return e;
    }
    let Some(cur) = fleet.view().decision else {
        return format!("error: fleet detached: the fleet's decision is not read yet; traffic stays on {active}");
    };
    let next = match stop_plan(kind, &cur.decision, &fleet.cfg.member, now_ms()) {
        Ok(n) => n,
        Err(e) => return format!("error: {e}"),
    };
    match cas_retry(fleet, cur.mod_revision, &next).await {
        Err(e) => format!("error: fleet detached: {e}; traffic stays on {active}"),
        Ok(Cas::Lost(now)) => format!(
            "error: the fleet's decision changed meanwhile ({}); check `status` and try again",
            now.map(|v| v.decision.note).unwrap_or_default()
        ),
        Ok(Cas::Won(_)) => {
            wait_applied(fleet, next.epoch, SWAP_WAIT).await;
            if next.epoch != cur.decision.epoch {
                rollback_hook(app, cur.decision.color, next.color, &next.note).await;
            }
            tracing::warn!(epoch = next.epoch, "fleet: {}", next.note);
            format!("ok active={}", next.color)
        }
    }
}

/// `on_rollback` on the member that decided a rollback the driver did not (an operator's
/// `rollback`, or the fleet settling a dead member's switch); its output goes to the log.
pub async fn rollback_hook(app: &App, from: Color, to: Color, reason: &str) {
    let Some(cmd) = &app.cfg.hooks.on_rollback else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let r = hooks::run(
        "on_rollback",
        cmd,
        from,
        to,
        reason,
        app.cfg.hooks.timeout,
        &tx,
    )
    .await;
    drop(tx);
    while let Some(line) = rx.recv().await {
        tracing::info!("on_rollback: {line}");
    }
    if let Err(e) = r {
        tracing::warn!("{e}");
    }
}

/// A compare-and-swap that rides out an etcd leader change or a reconnect to another
/// endpoint: on a transport error or a missed deadline it tries again on the member's
/// current session for up to a lease TTL (at least 3 s). A retry that finds its own write
/// already there (the first attempt landed but its answer was lost) counts as won.
async fn cas_retry(fleet: &Fleet, expected: i64, next: &Decision) -> Result<Cas, StoreError> {
    let budget = fleet.cfg.lease_ttl.max(Duration::from_secs(3));
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let r = match fleet.client() {
            Some(mut c) => cas_decision(&mut c, &fleet.keys, expected, next).await,
            None => Err(StoreError::Closed("no session with etcd".into())),
        };
        match r {
            Ok(Cas::Lost(Some(now))) if tries > 1 && now.decision == *next => {
                return Ok(Cas::Won(now.mod_revision))
            }
            Err(e) if started.elapsed() < budget => {
                tracing::info!("fleet: decision write failed ({e}); retrying on the next session");
                tokio::time::sleep(TICK).await;
            }
            r => return r,
        }
    }
}

/// Waits until this member applied `epoch` (its own watch), at most `limit`.
async fn wait_applied(fleet: &Fleet, epoch: u64, limit: Duration) -> bool {
    let mut rx = fleet.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if fleet.view().applied_epoch >= epoch {
            return true;
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return false;
        }
    }
}

struct Driver {
    app: Arc<App>,
    fleet: Arc<Fleet>,
    to: Color,
    force: bool,
    out: mpsc::UnboundedSender<String>,
}

/// How a step against etcd ended when it did not go on.
type Step<T> = Result<T, String>;

impl Driver {
    fn say(&self, line: String) {
        tracing::info!("{line}");
        let _ = self.out.send(line);
    }

    fn me(&self) -> &str {
        &self.fleet.cfg.member
    }

    /// CAS `next` over `expected`; `Err(final line)` when it did not win.
    async fn cas(&self, expected: i64, next: &Decision) -> Step<i64> {
        match cas_retry(&self.fleet, expected, next).await {
            Ok(Cas::Won(rev)) => Ok(rev),
            Ok(Cas::Lost(now)) => Err(lost_line(now.as_ref())),
            Err(e) => Err(format!(
                "error: fleet detached: {e}; traffic stays on {}",
                self.app.router.active()
            )),
        }
    }

    async fn run(&mut self) -> String {
        match self.steps().await {
            Ok(last) | Err(last) => last,
        }
    }

    async fn steps(&mut self) -> Step<String> {
        let cur = self.fleet.view().decision.ok_or_else(|| {
            "error: fleet detached: the fleet's decision is not read yet; try again".to_string()
        })?;
        let from = cur.decision.color;
        match lock_plan(&cur.decision, self.to) {
            Lock::InProgress(by) => return Err(format!("error: switch in progress (by {by})")),
            Lock::Already => {
                self.say(format!(
                    "{} is already active on the fleet; nothing to do",
                    self.to
                ));
                return Ok(format!("ok active={}", self.to));
            }
            Lock::Go => {}
        }
        let gate = Decision {
            phase: FleetPhase::Gate,
            by: Some(self.me().to_string()),
            by_lease: self.fleet.lease(),
            target: Some(self.to),
            at_ms: now_ms(),
            note: format!("switch to {} by {}", self.to, self.me()),
            ..cur.decision.clone()
        };
        let rev = self.cas(cur.mod_revision, &gate).await?;
        let rev = match self.gate(rev, &gate, from).await {
            Ok(rev) => rev,
            Err(line) => return Err(line),
        };
        let swap = Decision {
            epoch: cur.decision.epoch + 1,
            color: self.to,
            phase: FleetPhase::Watch,
            target: None,
            at_ms: now_ms(),
            ..gate.clone()
        };
        let (base, baseline) = bases(&self.fleet.view().members, self.to);
        let rev = self.cas(rev, &swap).await?;
        self.app.controller.update(|i| i.phase = Phase::Watch);
        self.confirm_swap(swap.epoch).await;
        self.watch(rev, &swap, from, base, baseline).await
    }

    /// The fleet gate, then the pre-switch hook. Releases the switch when it refuses.
    async fn gate(&mut self, rev: i64, gate: &Decision, from: Color) -> Step<i64> {
        let timeout = self.app.cfg.switch.gate_timeout;
        let min = self.fleet.cfg.min_members;
        let started = Instant::now();
        // The first second is quiet: members publish fresh records within a heartbeat of
        // the switch beginning, and "no report since the switch began" is just that.
        let mut last_report = Instant::now();
        loop {
            let v = self.fleet.view();
            if ownership(v.decision.as_ref(), rev) == Ownership::Lost {
                return Err(lost_line(v.decision.as_ref()));
            }
            let (ok, bad) = gate_view(&v.members, self.to, rev);
            let live = v.members.len();
            let elapsed = started.elapsed();
            match fleet_gate(live, ok, min, elapsed, timeout, self.force) {
                GateVerdict::Pass => {
                    let skipped = if self.force && ok < live {
                        " (force: gate skipped)"
                    } else {
                        ""
                    };
                    self.say(format!(
                        "gate: {} healthy on {ok}/{live} members{skipped}",
                        self.to
                    ));
                    break;
                }
                GateVerdict::Refuse => {
                    let why = gate_refusal(live, ok, min, &bad);
                    self.release(rev, gate).await;
                    return Err(format!(
                        "error: refused: {} not ready on the fleet after {timeout:?} ({why}); traffic stays on {from}",
                        self.to
                    ));
                }
                GateVerdict::Wait => {
                    if last_report.elapsed() >= REPORT_EVERY {
                        last_report = Instant::now();
                        self.say(format!(
                            "gate: {} healthy on {ok}/{live} members (min_members {min}), waiting up to {}s{}",
                            self.to,
                            timeout.saturating_sub(elapsed).as_secs(),
                            if bad.is_empty() { String::new() } else { format!(": {}", bad.join("; ")) }
                        ));
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
        let hooks = &self.app.cfg.hooks;
        if let Err(e) = hooks::pre_switch(hooks, from, self.to, self.force, &self.out).await {
            self.release(rev, gate).await;
            return Err(format!("error: refused: {e}; traffic stays on {from}"));
        }
        Ok(rev)
    }

    /// Gives the switch back without moving anything (a refusal).
    async fn release(&self, rev: i64, gate: &Decision) {
        self.app.metrics.switch_ended("refused");
        let idle = Decision {
            phase: FleetPhase::Idle,
            by: None,
            by_lease: 0,
            target: None,
            at_ms: now_ms(),
            note: format!("switch to {} refused on {}", self.to, self.me()),
            ..gate.clone()
        };
        if let Err(e) = self.cas(rev, &idle).await {
            // Our lease expiring releases it too (member.rs recovery).
            tracing::warn!("fleet: could not release the switch: {e}");
        }
    }

    /// Reports how fast the members followed the swap.
    async fn confirm_swap(&self, epoch: u64) {
        let t = Instant::now();
        let mut rx = self.fleet.subscribe();
        let deadline = tokio::time::Instant::now() + SWAP_WAIT;
        loop {
            let v = self.fleet.view();
            let (ok, behind) = swapped(&v.members, self.to, epoch);
            if behind.is_empty() && v.applied_epoch >= epoch {
                self.say(format!(
                    "swap: {ok}/{} members on {} in {}ms (epoch {epoch})",
                    v.members.len(),
                    self.to,
                    t.elapsed().as_millis()
                ));
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                self.say(format!(
                    "swap: {ok}/{} members on {} after {}s; not yet: {} (they follow from their own watch)",
                    v.members.len(),
                    self.to,
                    SWAP_WAIT.as_secs(),
                    behind.join(", ")
                ));
                return;
            }
        }
    }

    /// The fleet watch: the new color's errors summed over every member, then commit or
    /// roll back by CAS.
    async fn watch(
        &mut self,
        rev: i64,
        swap: &Decision,
        from: Color,
        mut base: BTreeMap<String, Base>,
        baseline: Counts,
    ) -> Step<String> {
        let started = Instant::now();
        let mut last_report = Instant::now() - REPORT_EVERY;
        loop {
            let v = self.fleet.view();
            if ownership(v.decision.as_ref(), rev) == Ownership::Lost {
                return self.lost(v.decision, from).await;
            }
            let rules = &self.app.cfg.switch.rules;
            let (counts, buckets) = fleet_totals(&mut base, &v.members, self.to);
            let w = Window {
                color: self.to,
                counts,
                p99: rules.max_p99.and_then(|_| {
                    let zero = vec![0; DURATION_BUCKETS.len() + 1];
                    quantile(0.99, &DURATION_BUCKETS, &zero, &buckets)
                }),
                baseline,
                elapsed: started.elapsed(),
                length: self.app.cfg.switch.watch,
            };
            self.app.controller.update(|i| {
                i.errors = counts.errors;
                i.requests = counts.requests;
                i.phase_left = Some(w.length.saturating_sub(w.elapsed));
            });
            let verdict = judge(rules, &w);
            if last_report.elapsed() >= REPORT_EVERY || verdict != Verdict::Continue {
                last_report = Instant::now();
                let members = format!(" requests on {} members, ", v.members.len());
                self.say(progress_line(rules, &w).replacen(" requests, ", &members, 1));
            }
            let next = self.outcome(verdict, &w, swap, from, v.members.len());
            if let Some(next) = next {
                match self.cas(rev, &next).await {
                    Ok(_) => return Ok(self.ended(&next, from).await),
                    // etcd out of reach: keep trying; if this member's lease runs out first,
                    // the fleet rolls back without it.
                    Err(line) if line.contains("fleet detached") => {
                        self.say(format!("watch: {}", line.trim_start_matches("error: ")));
                    }
                    Err(line) => return Err(line),
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// The decision someone else wrote over ours: how this switch ends.
    async fn lost(&self, now: Option<Versioned>, from: Color) -> Step<String> {
        match now {
            // Our own commit or rollback whose answer etcd did not deliver in time.
            Some(d)
                if d.decision.phase == FleetPhase::Idle
                    && d.decision.by.as_deref() == Some(self.me())
                    && d.decision.note.contains(self.me()) =>
            {
                Ok(self.ended(&d.decision, from).await)
            }
            d => Err(lost_line(d.as_ref())),
        }
    }

    /// What a verdict writes: a commit keeps the color, a rollback goes back as a new epoch.
    fn outcome(
        &self,
        verdict: Verdict,
        w: &Window,
        swap: &Decision,
        from: Color,
        members: usize,
    ) -> Option<Decision> {
        let rules = &self.app.cfg.switch.rules;
        match verdict {
            Verdict::Continue => None,
            Verdict::Commit(unjudged) => {
                if let Some(rule) = unjudged {
                    self.say(format!("watch: {}", reason(rules, w, rule)));
                }
                Some(Decision {
                    phase: FleetPhase::Idle,
                    at_ms: now_ms(),
                    note: format!("switch to {} committed by {}", self.to, self.me()),
                    ..swap.clone()
                })
            }
            Verdict::RollBack(rule) => Some(Decision {
                epoch: swap.epoch + 1,
                color: from,
                phase: FleetPhase::Idle,
                at_ms: now_ms(),
                note: format!(
                    "rolled back to {from} by {}: {} on {members} members",
                    self.me(),
                    reason(rules, w, rule),
                ),
                ..swap.clone()
            }),
        }
    }

    /// After the final CAS: hooks, and the final line once this member applied it.
    async fn ended(&self, next: &Decision, from: Color) -> String {
        wait_applied(&self.fleet, next.epoch, SWAP_WAIT).await;
        let hook = if next.color == self.to {
            self.app
                .cfg
                .hooks
                .post_commit
                .clone()
                .map(|c| ("post_commit", c, from, self.to))
        } else {
            self.app
                .cfg
                .hooks
                .on_rollback
                .clone()
                .map(|c| ("on_rollback", c, self.to, from))
        };
        if let Some((name, cmd, a, b)) = hook {
            if let Err(e) = hooks::run(
                name,
                &cmd,
                a,
                b,
                &next.note,
                self.app.cfg.hooks.timeout,
                &self.out,
            )
            .await
            {
                self.say(format!("warning: {e}"));
            }
        }
        if next.color == self.to {
            self.app.metrics.switch_ended("committed");
            format!("ok active={}", self.to)
        } else {
            self.app.metrics.switch_ended("rolled_back");
            self.say(format!("swap: active={from} (was {})", self.to));
            format!("error: {}", next.note)
        }
    }
}

/// The final line of a switch whose decision someone else changed.
fn lost_line(now: Option<&Versioned>) -> String {
    match now {
        Some(v) if v.decision.phase != FleetPhase::Idle => format!(
            "error: switch in progress (by {})",
            v.decision.by.as_deref().unwrap_or("?")
        ),
        Some(v) => format!(
            "error: {}; active={}",
            if v.decision.note.is_empty() {
                "the fleet's decision changed"
            } else {
                &v.decision.note
            },
            v.decision.color
        ),
        None => "error: the fleet's decision is gone from etcd; check `status`".into(),
    }
}

/// Whether a switch may start from the fleet's current decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    Go,
    Already,
    InProgress(String),
}

pub fn lock_plan(cur: &Decision, to: Color) -> Lock {
    if cur.phase != FleetPhase::Idle {
        return Lock::InProgress(cur.by.clone().unwrap_or_else(|| "?".into()));
    }
    if cur.color == to {
        Lock::Already
    } else {
        Lock::Go
    }
}

/// Whether the driver still owns the switch it wrote at `rev`. The view may lag our own
/// write for a moment (it learns it from the watch), so an older revision is not a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Mine,
    Pending,
    Lost,
}

pub fn ownership(seen: Option<&Versioned>, rev: i64) -> Ownership {
    match seen.map(|v| v.mod_revision) {
        Some(r) if r == rev => Ownership::Mine,
        Some(r) if r > rev => Ownership::Lost,
        Some(_) => Ownership::Pending,
        None => Ownership::Lost,
    }
}

/// The fleet gate: enough live members, and every live one sees the target healthy. A
/// forced switch skips the health part, never the member count.
pub fn fleet_gate(
    live: usize,
    healthy_on: usize,
    min_members: usize,
    elapsed: Duration,
    timeout: Duration,
    force: bool,
) -> GateVerdict {
    let enough = live >= min_members.max(1);
    if enough && (force || healthy_on == live) {
        GateVerdict::Pass
    } else if elapsed >= timeout {
        GateVerdict::Refuse
    } else {
        GateVerdict::Wait
    }
}

fn gate_refusal(live: usize, ok: usize, min: usize, bad: &[String]) -> String {
    if live < min {
        format!("{live} live members, min_members is {min}")
    } else {
        format!("healthy on {ok}/{live} members: {}", bad.join("; "))
    }
}

/// One member's totals on the new color when the watch started counting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub counts: Counts,
    pub buckets: Vec<u64>,
}

/// Each live member's totals on `to` at the swap, and the fleet's baseline: the old color's
/// counts over one window just before the swap, summed over the members serving it.
pub fn bases(live: &Live, to: Color) -> (BTreeMap<String, Base>, Counts) {
    let mut baseline = Counts::default();
    let mut base = BTreeMap::new();
    for (id, (r, _)) in live {
        if r.serving != to {
            baseline.requests += r.baseline.requests;
            baseline.errors += r.baseline.errors;
        }
        base.insert(
            id.clone(),
            Base {
                counts: r.counters[to.idx()],
                buckets: r.buckets[to.idx()].clone(),
            },
        );
    }
    (base, baseline)
}

/// Requests, errors and duration buckets on `color` since `base`, summed over the live
/// members. A member seen for the first time is based where it is now; one whose
/// counters went down restarted and counts from zero.
pub fn fleet_totals(
    base: &mut BTreeMap<String, Base>,
    live: &Live,
    color: Color,
) -> (Counts, Vec<u64>) {
    let mut sum = Counts::default();
    let mut buckets = vec![0u64; DURATION_BUCKETS.len() + 1];
    for (id, (r, _)) in live {
        let now = Base {
            counts: r.counters[color.idx()],
            buckets: r.buckets[color.idx()].clone(),
        };
        let b = base.entry(id.clone()).or_insert_with(|| now.clone());
        if now.counts.requests < b.counts.requests || now.counts.errors < b.counts.errors {
            *b = Base {
                counts: Counts::default(),
                buckets: Vec::new(),
            };
        }
        let d = Counts::since(now.counts, b.counts);
        sum.requests += d.requests;
        sum.errors += d.errors;
        for (i, n) in now.buckets.iter().enumerate().take(buckets.len()) {
            buckets[i] += n.saturating_sub(b.buckets.get(i).copied().unwrap_or(0));
        }
    }
    (sum, buckets)
}

/// What `abort` or `rollback` writes over the current decision.
pub fn stop_plan(kind: StopKind, cur: &Decision, me: &str, at_ms: u64) -> Result<Decision, String> {
    let by = cur.by.as_deref().unwrap_or("?");
    let idle = |color: Color, epoch: u64, note: String| Decision {
        epoch,
        color,
        phase: FleetPhase::Idle,
        by: Some(me.to_string()),
        by_lease: 0,
        target: None,
        at_ms,
        note,
    };
    let what = if kind == StopKind::Abort {
        "aborted"
    } else {
        "rolled back"
    };
    match (kind, cur.phase) {
        (StopKind::Abort, FleetPhase::Idle) => Err("no switch in progress".into()),
        (_, FleetPhase::Gate) => Ok(idle(
            cur.color,
            cur.epoch,
            format!("{what} by operator on {me} during the gate of {by}'s switch"),
        )),
        (_, FleetPhase::Watch) => Ok(idle(
            cur.color.other(),
            cur.epoch + 1,
            format!("{what} by operator on {me} during the watch of {by}'s switch"),
        )),
        (StopKind::Rollback, FleetPhase::Idle) => Ok(idle(
            cur.color.other(),
            cur.epoch + 1,
            format!("rolled back by operator on {me}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::member::tests::{live, rec};

    fn dec(phase: FleetPhase, color: Color, by: Option<&str>) -> Decision {
        Decision {
            epoch: 4,
            color,
            phase,
            by: by.map(String::from),
            by_lease: 1,
            target: None,
            at_ms: 0,
            note: String::new(),
        }
    }

    #[test]
    fn one_switch_at_a_time() {
        let idle = dec(FleetPhase::Idle, Color::Blue, None);
        assert_eq!(lock_plan(&idle, Color::Green), Lock::Go);
        assert_eq!(lock_plan(&idle, Color::Blue), Lock::Already);
        let busy = dec(FleetPhase::Gate, Color::Blue, Some("edge-2"));
        assert_eq!(
            lock_plan(&busy, Color::Green),
            Lock::InProgress("edge-2".into())
        );
        assert_eq!(
            lost_line(Some(&Versioned {
                decision: busy,
                mod_revision: 9
            })),
            "error: switch in progress (by edge-2)"
        );
    }

    #[test]
    fn ownership_tolerates_a_lagging_view() {
        let v = |r| Versioned {
            decision: dec(FleetPhase::Watch, Color::Green, Some("a")),
            mod_revision: r,
        };
        assert_eq!(ownership(Some(&v(10)), 10), Ownership::Mine);
        assert_eq!(ownership(Some(&v(9)), 10), Ownership::Pending);
        assert_eq!(ownership(Some(&v(11)), 10), Ownership::Lost);
        assert_eq!(ownership(None, 10), Ownership::Lost);
    }

    #[test]
    fn gate_needs_min_members_and_everyone_healthy() {
        let s = Duration::from_secs;
        let t = s(10);
        assert_eq!(fleet_gate(3, 3, 2, s(0), t, false), GateVerdict::Pass);
        assert_eq!(fleet_gate(3, 2, 2, s(1), t, false), GateVerdict::Wait);
        assert_eq!(fleet_gate(3, 2, 2, s(10), t, false), GateVerdict::Refuse);
        assert_eq!(
            fleet_gate(1, 1, 2, s(1), t, false),
            GateVerdict::Wait,
            "too few members"
        );
        assert_eq!(
            fleet_gate(1, 0, 2, s(1), t, true),
            GateVerdict::Wait,
            "force keeps min_members"
        );
        assert_eq!(fleet_gate(2, 0, 2, s(0), t, true), GateVerdict::Pass);
        assert_eq!(fleet_gate(0, 0, 1, s(0), t, false), GateVerdict::Wait);
        assert!(gate_refusal(1, 1, 2, &[]).contains("min_members is 2"));
    }

    #[test]
    fn totals_sum_members_and_survive_restarts_and_joins() {
        let mut l = live(&[]);
        let put = |l: &mut Live, id: &str, req: u64, err: u64, serving: Color| {
            let mut r = rec(id, serving, 5, (1, 1));
            r.counters[Color::Green.idx()] = Counts {
                requests: req,
                errors: err,
            };
            r.baseline = Counts {
                requests: 10,
                errors: 1,
            };
            let mut b = vec![0; DURATION_BUCKETS.len() + 1];
            b[3] = req; // every request in the 5 ms bucket
            *b.last_mut().expect("total") = req;
            r.buckets[Color::Green.idx()] = b;
            l.insert(id.into(), (r, 1));
        };
        put(&mut l, "a", 100, 1, Color::Blue);
        put(&mut l, "b", 50, 0, Color::Blue);
        let (mut base, baseline) = bases(&l, Color::Green);
        assert_eq!(
            baseline,
            Counts {
                requests: 20,
                errors: 2
            }
        );
        put(&mut l, "a", 130, 2, Color::Green);
        put(&mut l, "b", 60, 0, Color::Green);
        let (c, buckets) = fleet_totals(&mut base, &l, Color::Green);
        assert_eq!(
            c,
            Counts {
                requests: 40,
                errors: 1
            }
        );
        assert_eq!((buckets[3], buckets[DURATION_BUCKETS.len()]), (40, 40));
        put(&mut l, "b", 5, 1, Color::Green); // b restarted
        put(&mut l, "c", 1000, 9, Color::Green); // c joined: counts from now on
        let (c, _) = fleet_totals(&mut base, &l, Color::Green);
        assert_eq!(
            c,
            Counts {
                requests: 35,
                errors: 2
            }
        );
        put(&mut l, "c", 1010, 10, Color::Green);
        let (c, _) = fleet_totals(&mut base, &l, Color::Green);
        assert_eq!(
            c,
            Counts {
                requests: 45,
                errors: 3
            }
        );
    }

    #[test]
    fn stops_act_on_the_fleet() {
        let idle = dec(FleetPhase::Idle, Color::Blue, None);
        assert!(stop_plan(StopKind::Abort, &idle, "e2", 0).is_err());
        let r = stop_plan(StopKind::Rollback, &idle, "e2", 0).expect("rollback");
        assert_eq!(
            (r.color, r.epoch, r.phase),
            (Color::Green, 5, FleetPhase::Idle)
        );
        let gate = dec(FleetPhase::Gate, Color::Blue, Some("e1"));
        let r = stop_plan(StopKind::Abort, &gate, "e2", 0).expect("abort");
        assert_eq!((r.color, r.epoch), (Color::Blue, 4));
        let watch = dec(FleetPhase::Watch, Color::Green, Some("e1"));
        let r = stop_plan(StopKind::Abort, &watch, "e2", 0).expect("abort");
        assert_eq!((r.color, r.epoch), (Color::Blue, 5));
        assert!(
            r.note
                .contains("aborted by operator on e2 during the watch of e1"),
            "{}",
            r.note
        );
    }
}
