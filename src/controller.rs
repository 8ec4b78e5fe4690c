//! The switch driver: runs the pure machine of switch.rs against the real world.
//!
//! It reads health flags for the gate, runs hooks, writes the state file, stores the routing
//! table, takes the old color's baseline (history.rs), samples the new color's counters during
//! the watch for verdict.rs and reports every step as a
//! progress line. A switch runs in its own task, so a client that disconnects does not cancel
//! it; `abort` and `rollback` reach it through a channel and get its answer back. Only one
//! switch runs at a time. This module does not parse admin commands (admin.rs) or probe
//! servers (health.rs).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::app::App;
use crate::drain::drain_line;
use crate::history::Sample;
use crate::hooks;
use crate::metrics::DURATION_BUCKETS;
use crate::routing::{Color, Health};
use crate::state;
use crate::status::feed::{reason_of, SwitchRecord};
use crate::switch::{gate_verdict, result_label, transition, Event, GateVerdict, Phase};
use crate::sync::lock;
use crate::verdict::{judge, progress_line, quantile, reason, Counts, Verdict, Window};

/// How often the gate and the watch look at their numbers.
const TICK: Duration = Duration::from_millis(100);
/// After drain_timeout, how long handed-over WebSockets get to close before a clean watch
/// commits anyway.
const HANDOVER_GRACE: Duration = Duration::from_secs(2);
/// How often a long phase prints a progress line.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Progress lines of one command; the last one starts with `ok` or `error:`.
pub type Lines = mpsc::UnboundedReceiver<String>;

/// The running switch's record (what `status` reads) is switch_state.rs's; the driver
/// below fills it.
pub use crate::switch_state::{Controller, DrainInfo, StopKind, SwitchInfo};
use crate::switch_state::{Running, Stop};

/// A new switch's record, before its gate.
pub(crate) fn switch_info(app: &App, from: Color, to: Color, force: bool) -> SwitchInfo {
    let rules = &app.cfg.switch.rules;
    SwitchInfo {
        from,
        to,
        phase: Phase::Gate,
        force,
        started: SystemTime::now(),
        phase_left: None,
        phase_total: None,
        healthy: 0,
        servers: app.router.backends_of(to).count(),
        errors: 0,
        requests: 0,
        rule: rules.summary(),
        max_errors: rules.max_errors,
        drain: None,
    }
}

impl Controller {
    /// Starts `switch <to> [force]`; the returned lines end with the switch's outcome. In
    /// fleet mode the switch acts on the whole fleet (fleet/switch.rs).
    pub fn switch(app: &Arc<App>, to: Color, force: bool) -> Result<Lines, String> {
        if let Some(fleet) = &app.fleet {
            return crate::fleet::switch::start(app, fleet, to, force);
        }
        let (client, rx) = mpsc::unbounded_channel();
        let from = app.router.active();
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        {
            let mut running = lock(&app.controller.running);
            if running.is_some() {
                return Err("switch in progress".into());
            }
            if app.leaving() {
                // This process is handing over (upgrade) or stopping: a switch now could be
                // lost or land after the next process read the state file.
                return Err("switchyard is shutting down or handing over to a new process; switch on the new one".into());
            }
            if from == to {
                let _ = client.send(format!("{to} is already active; nothing to do"));
                let _ = client.send(format!("ok active={to}"));
                return Ok(rx);
            }
            *running = Some(Running {
                info: switch_info(app, from, to, force),
                stop: stop_tx,
            });
        }
        let (tx, _) = app.controller.feed.tee(client);
        let app = app.clone();
        tokio::spawn(async move {
            let mut d = Driver {
                app: app.clone(),
                from,
                to,
                force,
                phase: Phase::Idle,
                out: tx,
                stop: stop_rx,
                pending: None,
                swapped: false,
                baseline: Counts::default(),
            };
            let last = d.run().await;
            let info = lock(&app.controller.running).take().map(|r| r.info);
            // An operator's `rollback` after the swap is a rollback, not an abort.
            let label = match (&d.pending, d.swapped) {
                (Some(stop), true) if stop.kind == StopKind::Rollback => Some("rolled_back"),
                _ => result_label(d.phase),
            };
            if let Some(label) = label {
                app.metrics.switch_ended(label);
                if let Some(info) = info {
                    app.controller.feed.record(SwitchRecord::new(
                        (from, to),
                        force,
                        label,
                        outcome_reason(&info, &last),
                        info.started,
                    ));
                }
            }
            if let Some(stop) = d.pending.take() {
                let _ = stop
                    .reply
                    .send(format!("ok active={}", app.router.active()));
            }
            tracing::info!(from = %from, to = %to, result = %d.phase, "switch ended: {last}");
            let _ = d.out.send(last);
        });
        Ok(rx)
    }

    /// `rollback` with no switch running: back to the other color at once, no gate (it was
    /// live a moment ago and is still warm).
    pub async fn rollback_now(app: &Arc<App>, out: &mpsc::UnboundedSender<String>) -> String {
        let started = SystemTime::now();
        let (teed, forwarding) = app.controller.feed.tee(out.clone());
        let out = &teed;
        let (from, to) = {
            // Under the switch lock, so a `switch` cannot start between reading the active
            // color and moving it.
            let running = lock(&app.controller.running);
            if running.is_some() {
                return "error: switch in progress; use abort or rollback again".into();
            }
            if app.leaving() {
                return "error: switchyard is shutting down or handing over to a new process; roll back on the new one".into();
            }
            let from = app.router.active();
            let to = from.other();
            if let Err(e) = state::store(&app.cfg.state_file, to) {
                return format!("error: {e}; traffic stays on {from}");
            }
            app.router.set_active(to);
            (from, to)
        };
        app.metrics.set_active(to);
        schedule_handover(app.clone(), from, app.cfg.switch.drain_timeout);
        app.metrics.switch_ended("rolled_back");
        let _ = out.send(format!("swap: active={to} (was {from})"));
        tracing::warn!(from = %from, to = %to, "manual rollback");
        if let Some(cmd) = &app.cfg.hooks.on_rollback {
            if let Err(e) = hooks::run(
                "on_rollback",
                cmd,
                from,
                to,
                "manual rollback",
                app.cfg.hooks.timeout,
                out,
            )
            .await
            {
                let _ = out.send(format!("warning: {e}"));
            }
        }
        let last = format!("ok active={to}");
        drop(teed);
        let _ = forwarding.await;
        app.controller.feed.record(SwitchRecord::new(
            (from, to),
            false,
            "rolled_back",
            "manual rollback (no switch in progress)".into(),
            started,
        ));
        // The caller sends the final line to its client; watchers get it from here.
        app.controller.feed.publish(&last);
        last
    }
}

/// The history's reason for how a switch ended: a commit tells the watch's numbers, anything
/// else its final line.
fn outcome_reason(info: &SwitchInfo, last: &str) -> String {
    if last.starts_with("ok") {
        let window = info.phase_total.unwrap_or_default();
        format!(
            "{} errors in {} requests on {} during the {}s watch ({})",
            info.errors,
            info.requests,
            info.to,
            window.as_secs(),
            info.rule
        )
    } else {
        reason_of(last)
    }
}

struct Driver {
    app: Arc<App>,
    from: Color,
    to: Color,
    force: bool,
    phase: Phase,
    out: mpsc::UnboundedSender<String>,
    stop: mpsc::UnboundedReceiver<Stop>,
    /// An operator's stop request, answered when the driver has finished.
    pending: Option<Stop>,
    /// Whether traffic moved to the target at some point.
    swapped: bool,
    /// The old color's counts over one watch window just before the swap.
    baseline: Counts,
}

/// The new color's totals when its watch began.
struct WatchStart {
    counts: Counts,
    /// Cumulative duration buckets, kept only when `max_p99` is set.
    buckets: Option<Vec<u64>>,
}

impl Driver {
    fn say(&self, line: String) {
        tracing::info!("{line}");
        let _ = self.out.send(line);
    }

    fn go(&mut self, e: Event) {
        match transition(self.phase, e) {
            Ok(p) => {
                self.phase = p;
                self.app.controller.update(|i| i.phase = p);
            }
            // The driver only fires events its own phase allows; this is a bug, so say it
            // loudly but keep the proxy up.
            Err(err) => tracing::error!("switch state machine: {err}"),
        }
    }

    fn target_health(&self) -> (usize, usize, Vec<String>) {
        let mut healthy = 0;
        let mut total = 0;
        let mut bad = Vec::new();
        for b in self.app.router.backends_of(self.to) {
            total += 1;
            if b.health() == Health::Healthy {
                healthy += 1;
            } else {
                bad.push(format!("{} {}", b.addr, b.detail()));
            }
        }
        (healthy, total, bad)
    }

    async fn run(&mut self) -> String {
        self.go(Event::Start);
        if let Some(last) = self.gate().await {
            return last;
        }
        if self.app.cfg.hooks.pre_switch.is_some() {
            let app = self.app.clone();
            let hook = hooks::pre_switch(&app.cfg.hooks, self.from, self.to, self.force, &self.out);
            tokio::select! {
                r = hook => if let Err(e) = r {
                    self.go(Event::Refuse);
                    return format!("error: refused: {e}; traffic stays on {}", self.from);
                },
                Some(stop) = self.stop.recv() => {
                    // Dropping the hook's future kills it; nothing has moved yet.
                    self.go(Event::Abort);
                    self.pending = Some(stop);
                    return format!(
                        "error: stopped by operator during the pre_switch hook; traffic stays on {}",
                        self.from
                    );
                }
            }
        }
        // Persist first: if the disk refuses, traffic has not moved and nothing is lost.
        if let Err(e) = state::store(&self.app.cfg.state_file, self.to) {
            self.go(Event::Refuse);
            return format!("error: refused: {e}; traffic stays on {}", self.from);
        }
        let (baseline, covered) = self.app.history.baseline(
            self.from,
            Sample::now(&self.app.metrics),
            self.app.cfg.switch.watch,
        );
        self.baseline = baseline;
        tracing::debug!(
            ?baseline,
            ?covered,
            "baseline of {} before the swap",
            self.from
        );
        let t = Instant::now();
        self.app.router.set_active(self.to);
        self.swapped = true;
        let took = t.elapsed();
        self.app.metrics.set_active(self.to);
        schedule_handover(
            self.app.clone(),
            self.from,
            self.app.cfg.switch.drain_timeout,
        );
        self.go(Event::GatePassed);
        self.go(Event::SwapDone);
        self.say(format!(
            "swap: active={} (was {}) in {}us",
            self.to,
            self.from,
            took.as_micros()
        ));
        self.watch().await
    }

    /// Waits for the target color to be healthy. `Some(final line)` when the switch ends here.
    async fn gate(&mut self) -> Option<String> {
        let started = Instant::now();
        let timeout = self.app.cfg.switch.gate_timeout;
        let mut last_report: Option<(Instant, usize)> = None;
        loop {
            let (healthy, total, bad) = self.target_health();
            let elapsed = started.elapsed();
            self.app.controller.update(|i| {
                i.healthy = healthy;
                i.servers = total;
                i.phase_left = Some(timeout.saturating_sub(elapsed));
                i.phase_total = Some(timeout);
            });
            match gate_verdict(healthy, total, elapsed, timeout, self.force) {
                GateVerdict::Pass => {
                    if self.force && healthy < total {
                        self.say(format!(
                            "gate: skipped (force): {} {healthy}/{total} servers healthy",
                            self.to
                        ));
                    } else {
                        self.say(format!(
                            "gate: {} {healthy}/{total} servers healthy",
                            self.to
                        ));
                    }
                    return None;
                }
                GateVerdict::Refuse => {
                    self.go(Event::Refuse);
                    return Some(format!(
                        "error: refused: {} not healthy after {:?} ({healthy}/{total} servers healthy: {}); traffic stays on {}",
                        self.to,
                        timeout,
                        bad.join("; "),
                        self.from
                    ));
                }
                GateVerdict::Wait => {
                    let due = match last_report {
                        None => true,
                        Some((at, n)) => n != healthy || at.elapsed() >= REPORT_EVERY,
                    };
                    if due {
                        self.say(format!(
                            "gate: {} {healthy}/{total} servers healthy, waiting up to {}s",
                            self.to,
                            timeout.saturating_sub(elapsed).as_secs()
                        ));
                        last_report = Some((Instant::now(), healthy));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                Some(stop) = self.stop.recv() => {
                    self.go(Event::Abort);
                    let what = match stop.kind { StopKind::Abort => "aborted", StopKind::Rollback => "rolled back" };
                    self.pending = Some(stop);
                    return Some(format!("error: {what} by operator during the gate; traffic stays on {}", self.from));
                }
            }
        }
    }

    /// What the new color did since `start`: counts, and p99 when a rule wants it.
    fn window(&self, start: &WatchStart, elapsed: Duration) -> Window {
        let app = &self.app;
        let (requests, errors) = app.metrics.color_stats(self.to).snapshot();
        let p99 = start.buckets.as_ref().and_then(|before| {
            let after = app.metrics.duration_buckets(self.to);
            quantile(0.99, &DURATION_BUCKETS, before, &after)
        });
        Window {
            color: self.to,
            counts: Counts::since(Counts { requests, errors }, start.counts),
            p99,
            baseline: self.baseline,
            elapsed,
            length: app.cfg.switch.watch,
        }
    }

    /// Watches the new color; commits, or swaps back when a rule fails or an operator stops.
    async fn watch(&mut self) -> String {
        let app = self.app.clone();
        let rules = app.cfg.switch.rules.clone();
        let (requests, errors) = app.metrics.color_stats(self.to).snapshot();
        let start = WatchStart {
            counts: Counts { requests, errors },
            buckets: rules.max_p99.map(|_| app.metrics.duration_buckets(self.to)),
        };
        let started = Instant::now();
        // `ok` means done: a clean window commits only once the old color has drained, or
        // once its WebSockets had their handover (drain_timeout) and a moment to close.
        let drain_until = started + app.cfg.switch.drain_timeout + HANDOVER_GRACE;
        let handover_at = started + app.cfg.switch.drain_timeout;
        let mut last_report = Instant::now() - REPORT_EVERY;
        let mut drained = false;
        self.go(Event::WatchStarted);
        loop {
            let w = self.window(&start, started.elapsed());
            let open = app.tracker.open(self.from);
            app.controller.update(|i| {
                i.errors = w.counts.errors;
                i.requests = w.counts.requests;
                i.phase_left = Some(w.length.saturating_sub(w.elapsed));
                i.phase_total = Some(w.length);
                i.drain = Some(DrainInfo {
                    color: self.from,
                    open,
                    left: handover_at.saturating_duration_since(Instant::now()),
                    total: app.cfg.switch.drain_timeout,
                });
            });
            let draining = !open.is_empty() && Instant::now() < drain_until;
            let verdict = match judge(&rules, &w) {
                Verdict::Commit(_) if draining => Verdict::Continue,
                v => v,
            };
            if last_report.elapsed() >= REPORT_EVERY || verdict != Verdict::Continue {
                last_report = Instant::now();
                if w.elapsed < w.length || verdict != Verdict::Continue {
                    self.say(progress_line(&rules, &w));
                }
                if !drained {
                    self.say(drain_line(self.from, open));
                    drained = open.is_empty();
                }
            }
            match verdict {
                Verdict::Continue => {}
                Verdict::Commit(unjudged) => {
                    if let Some(rule) = unjudged {
                        self.say(format!("watch: {}", reason(&rules, &w, rule)));
                    }
                    return self.commit().await;
                }
                Verdict::RollBack(rule) => {
                    self.go(Event::TooManyErrors);
                    let reason = reason(&rules, &w, rule);
                    self.swap_back(&reason).await;
                    return format!("error: rolled back to {}: {reason}", self.from);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                Some(stop) = self.stop.recv() => {
                    self.go(Event::Abort);
                    let (what, reason) = match stop.kind {
                        StopKind::Abort => ("aborted", "aborted by operator"),
                        StopKind::Rollback => ("rolled back", "rolled back by operator"),
                    };
                    self.swap_back(reason).await;
                    self.pending = Some(stop);
                    return format!("error: {what} by operator during the watch; active={}", self.from);
                }
            }
        }
    }

    async fn commit(&mut self) -> String {
        self.go(Event::WatchClean);
        if let Some(cmd) = self.app.cfg.hooks.post_commit.clone() {
            if let Err(e) = hooks::run(
                "post_commit",
                &cmd,
                self.from,
                self.to,
                "committed",
                self.app.cfg.hooks.timeout,
                &self.out,
            )
            .await
            {
                self.say(format!("warning: {e} (the switch stays committed)"));
            }
        }
        format!("ok active={}", self.to)
    }

    /// Traffic back to `from`. The table moves even if the state file cannot be written:
    /// serving the known-good color matters more than remembering it, and the error says
    /// what a restart would do.
    async fn swap_back(&mut self, reason: &str) {
        let app = self.app.clone();
        app.router.set_active(self.from);
        app.metrics.set_active(self.from);
        schedule_handover(app.clone(), self.to, app.cfg.switch.drain_timeout);
        self.say(format!("swap: active={} (was {})", self.from, self.to));
        if let Err(e) = state::store(&app.cfg.state_file, self.from) {
            self.say(format!(
                "warning: {e}; a restart now would come back on {}",
                self.to
            ));
        }
        if let Some(cmd) = app.cfg.hooks.on_rollback.clone() {
            if let Err(e) = hooks::run(
                "on_rollback",
                &cmd,
                self.to,
                self.from,
                reason,
                app.cfg.hooks.timeout,
                &self.out,
            )
            .await
            {
                self.say(format!("warning: {e}"));
            }
        }
    }
}

/// After a switch away from `color`: at `deadline`, unless `color` is live again by then (a
/// rollback), its WebSockets are handed over so clients reconnect to the live color.
pub(crate) fn schedule_handover(app: Arc<App>, color: Color, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if app.router.active() == color {
            return;
        }
        let n = app.tracker.close_websockets(color);
        if n > 0 {
            tracing::info!(color = %color, websockets = n, "drain deadline: closing websockets with 1012, gRPC streams with status 14");
        }
    });
}
