//! The watch verdict, pure: given what the new color did since the swap (and what the old one
//! did just before it), continue, commit, or roll back, and the line that says which rule
//! decided it, with its numbers.
//!
//! Rules (each one configured can roll back on its own):
//! - `max_errors`: this many counted errors roll back at once, on any tick;
//! - `max_error_rate` (with `baseline`, over the old color's own ratio): judged on the whole
//!   window when it ends;
//! - `max_p99`: the window's p99 from the duration histogram, judged when it ends;
//! - `min_requests` / `require_traffic`: fewer requests than that and the rate and p99 rules
//!   cannot judge; the switch commits saying so, or rolls back with `require_traffic`.
//!
//! What counts as an error is fault.rs's decision; the numbers are sampled by controller.rs
//! and history.rs. Counter deltas wrap instead of panicking, so a counter that wrapped
//! around u64 still gives the right difference.

use std::fmt::Write as _;
use std::time::Duration;

use crate::color::Color;

/// The `[switch]` rules of the watch window, validated by config.rs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Absolute count; `None` when a rate rule replaced the default and none was written.
    pub max_errors: Option<u64>,
    /// Allowed error ratio (0.01 for "1%"), over the baseline when `baseline` is set.
    pub max_error_rate: Option<f64>,
    pub baseline: bool,
    pub min_requests: u64,
    pub require_traffic: bool,
    pub max_p99: Option<Duration>,
}

impl Default for Rules {
    /// The seed's smoke test: 3 errors in the window roll back.
    fn default() -> Self {
        Rules {
            max_errors: Some(3),
            max_error_rate: None,
            baseline: false,
            min_requests: 0,
            require_traffic: false,
            max_p99: None,
        }
    }
}

impl Rules {
    /// Only `max_errors`: the lines keep their original `N errors in M requests` form.
    fn count_only(&self) -> bool {
        self.max_error_rate.is_none() && self.max_p99.is_none()
    }

    /// Fewer requests than this and the window is "not enough traffic".
    fn needed(&self) -> u64 {
        self.min_requests.max(u64::from(self.require_traffic))
    }

    /// A short summary for `status`, e.g. `max_errors 3` or `max_error_rate 1% over baseline`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.max_errors {
            parts.push(format!("max_errors {m}"));
        }
        if let Some(r) = self.max_error_rate {
            let over = if self.baseline { " over baseline" } else { "" };
            parts.push(format!("max_error_rate {}{over}", pct(r)));
        }
        if let Some(p) = self.max_p99 {
            parts.push(format!("max_p99 {}", dur(p)));
        }
        if self.needed() > 0 {
            parts.push(format!("min_requests {}", self.needed()));
        }
        parts.join(", ")
    }
}

/// Requests and counted errors of one color, as totals or as a delta between two totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
}

impl Counts {
    /// `later - earlier`, right across a wrap of either counter. Errors are capped at the
    /// requests: the two counters are read one after the other, so a sample may see an
    /// error whose request it missed.
    pub fn since(later: Counts, earlier: Counts) -> Counts {
        let requests = later.requests.wrapping_sub(earlier.requests);
        let errors = later.errors.wrapping_sub(earlier.errors).min(requests);
        Counts { requests, errors }
    }

    /// The error ratio, 0 with no requests.
    pub fn ratio(self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors.min(self.requests) as f64 / self.requests as f64
        }
    }
}

/// The `q` quantile (0..1) of the observations between two readings of a histogram, with
/// linear interpolation inside a bucket as Prometheus' `histogram_quantile` does (so the
/// number matches a dashboard's). `bounds` are the upper bounds in seconds; `before` and
/// `after` the cumulative counts per bound plus a last entry for `+Inf` (the total).
/// `None` without observations; past the last bound, the last bound.
pub fn quantile(q: f64, bounds: &[f64], before: &[u64], after: &[u64]) -> Option<Duration> {
    let n = bounds.len() + 1;
    if before.len() != n || after.len() != n {
        return None;
    }
    let delta = |i: usize| after[i].wrapping_sub(before[i]);
    let total = delta(n - 1);
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, &upper) in bounds.iter().enumerate() {
        // Cumulative counts never shrink; `max` keeps a torn read from going backwards.
        let cum = delta(i).max(below).min(total);
        if cum as f64 >= rank {
            let in_bucket = (cum - below) as f64;
            let frac = if in_bucket == 0.0 {
                1.0
            } else {
                (rank - below as f64) / in_bucket
            };
            return Some(Duration::from_secs_f64(lower + (upper - lower) * frac));
        }
        below = cum;
        lower = upper;
    }
    bounds.last().map(|&b| Duration::from_secs_f64(b))
}

/// What the new color did in the window so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub color: Color,
    pub counts: Counts,
    /// `None` when not measured (no `max_p99`) or no requests finished yet.
    pub p99: Option<Duration>,
    /// The old color's counts over the same length of time just before the swap.
    pub baseline: Counts,
    pub elapsed: Duration,
    pub length: Duration,
}

/// Why the watch ended the way it did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    MaxErrors,
    ErrorRate { allowed: f64 },
    P99 { p99: Duration, max: Duration },
    NotEnoughTraffic { needed: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Continue,
    /// Commit; `Some` when the window could not be judged for lack of traffic.
    Commit(Option<Rule>),
    RollBack(Rule),
}

/// The allowed error ratio: the allowance, over the old color's ratio with `baseline`.
fn allowed(rules: &Rules, w: &Window, rate: f64) -> f64 {
    if rules.baseline {
        w.baseline.ratio() + rate
    } else {
        rate
    }
}

/// The watch: `max_errors` on any tick, the other rules when the window has ended.
pub fn judge(rules: &Rules, w: &Window) -> Verdict {
    if rules.max_errors.is_some_and(|m| w.counts.errors >= m) {
        return Verdict::RollBack(Rule::MaxErrors);
    }
    if w.elapsed < w.length {
        return Verdict::Continue;
    }
    let needed = rules.needed();
    if w.counts.requests < needed {
        let rule = Rule::NotEnoughTraffic { needed };
        return if rules.require_traffic {
            Verdict::RollBack(rule)
        } else {
            Verdict::Commit(Some(rule))
        };
    }
    if let Some(rate) = rules.max_error_rate {
        let allowed = allowed(rules, w, rate);
        if w.counts.requests > 0 && w.counts.ratio() > allowed {
            return Verdict::RollBack(Rule::ErrorRate { allowed });
        }
    }
    if let (Some(max), Some(p99)) = (rules.max_p99, w.p99) {
        if p99 > max {
            return Verdict::RollBack(Rule::P99 { p99, max });
        }
    }
    Verdict::Commit(None)
}

/// A ratio as a percentage with at most two decimals: `0.4%`, `1.25%`, `0%`.
pub fn pct(ratio: f64) -> String {
    let s = format!("{:.2}", ratio * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A latency for a progress line: `850us`, `12.5ms`, `1.2s`.
pub fn dur(d: Duration) -> String {
    let us = d.as_micros();
    let s = if us < 1000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    };
    s.replace(".0ms", "ms")
}

/// Whole seconds, rounded up: "0s left" only once the window is over.
fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The progress line of a watch tick, e.g.
/// `watch: green 0.4% errors (baseline blue 0.3%, allowed +1%) in 120331 requests, 12s left`.
pub fn progress_line(rules: &Rules, w: &Window) -> String {
    let left = secs_up(w.length.saturating_sub(w.elapsed));
    let c = w.counts;
    let mut line = format!("watch: {} ", w.color);
    if rules.count_only() {
        let _ = write!(line, "{} errors", c.errors);
    } else {
        match rules.max_error_rate {
            Some(rate) if rules.baseline => {
                let _ = write!(
                    line,
                    "{} errors (baseline {} {}, allowed +{})",
                    pct(c.ratio()),
                    w.color.other(),
                    pct(w.baseline.ratio()),
                    pct(rate)
                );
            }
            Some(rate) => {
                let _ = write!(line, "{} errors (allowed {})", pct(c.ratio()), pct(rate));
            }
            None => {
                let _ = write!(line, "{} errors", c.errors);
            }
        }
        if let Some(max) = rules.max_p99 {
            let p99 = w.p99.map(dur).unwrap_or_else(|| "-".into());
            let _ = write!(line, ", p99 {p99} (max {})", dur(max));
        }
    }
    let _ = write!(line, " in {} requests, {left}s left", c.requests);
    line
}

/// The reason a watch rolled back (after `rolled back to blue: `), or, for a commit without
/// enough traffic, the progress line that says so.
pub fn reason(rules: &Rules, w: &Window, rule: Rule) -> String {
    let c = w.counts;
    let (to, from) = (w.color, w.color.other());
    let secs = w.elapsed.as_secs();
    match rule {
        Rule::MaxErrors => format!(
            "{to} had {} errors in {} requests within {secs}s (max_errors {})",
            c.errors,
            c.requests,
            rules.max_errors.unwrap_or_default()
        ),
        Rule::ErrorRate { .. } => {
            let rate = pct(rules.max_error_rate.unwrap_or_default());
            let base = if rules.baseline {
                format!(" over baseline ({from} {})", pct(w.baseline.ratio()))
            } else {
                String::new()
            };
            format!(
                "{to} {} errors over {secs}s > max_error_rate {rate}{base}, {} of {} requests",
                pct(c.ratio()),
                c.errors,
                c.requests
            )
        }
        Rule::P99 { p99, max } => format!(
            "{to} p99 {} over {secs}s > max_p99 {} in {} requests",
            dur(p99),
            dur(max),
            c.requests
        ),
        Rule::NotEnoughTraffic { needed } => {
            let what = if rules.require_traffic {
                "rolling back (require_traffic = true)"
            } else {
                "committing unjudged (set require_traffic = true to roll back instead)"
            };
            format!(
                "not enough traffic: {to} had {} requests in {secs}s < min_requests {needed}; {what}",
                c.requests
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn window(requests: u64, errors: u64, elapsed: u64) -> Window {
        Window {
            color: Color::Green,
            counts: Counts { requests, errors },
            p99: None,
            baseline: Counts::default(),
            elapsed: Duration::from_secs(elapsed),
            length: W,
        }
    }

    fn with_baseline(mut w: Window, requests: u64, errors: u64) -> Window {
        w.baseline = Counts { requests, errors };
        w
    }

    fn rate(r: f64) -> Rules {
        Rules {
            max_errors: None,
            max_error_rate: Some(r),
            ..Rules::default()
        }
    }

    #[test]
    fn max_errors_rolls_back_on_any_tick_and_a_clean_window_commits() {
        let r = Rules::default();
        assert_eq!(judge(&r, &window(10, 2, 29)), Verdict::Continue);
        assert_eq!(
            judge(&r, &window(10, 3, 1)),
            Verdict::RollBack(Rule::MaxErrors)
        );
        assert_eq!(
            judge(&r, &window(10, 3, 30)),
            Verdict::RollBack(Rule::MaxErrors)
        );
        assert_eq!(judge(&r, &window(10, 2, 30)), Verdict::Commit(None));
    }

    #[test]
    fn zero_traffic() {
        assert_eq!(
            judge(&Rules::default(), &window(0, 0, 30)),
            Verdict::Commit(None)
        );
        assert_eq!(judge(&rate(0.01), &window(0, 0, 30)), Verdict::Commit(None));
        let mut r = rate(0.01);
        r.min_requests = 50;
        let nt = Rule::NotEnoughTraffic { needed: 50 };
        assert_eq!(judge(&r, &window(0, 0, 30)), Verdict::Commit(Some(nt)));
        assert_eq!(judge(&r, &window(49, 49, 30)), Verdict::Commit(Some(nt)));
        r.require_traffic = true;
        assert_eq!(judge(&r, &window(49, 0, 30)), Verdict::RollBack(nt));
        assert_eq!(judge(&r, &window(50, 0, 30)), Verdict::Commit(None));
        // require_traffic alone asks for at least one request.
        let r = Rules {
            require_traffic: true,
            ..Rules::default()
        };
        assert_eq!(
            judge(&r, &window(0, 0, 30)),
            Verdict::RollBack(Rule::NotEnoughTraffic { needed: 1 })
        );
    }

    #[test]
    fn error_rate_is_judged_when_the_window_ends() {
        let r = rate(0.01);
        assert_eq!(judge(&r, &window(100, 50, 10)), Verdict::Continue);
        assert_eq!(judge(&r, &window(1000, 10, 30)), Verdict::Commit(None));
        assert_eq!(
            judge(&r, &window(1000, 11, 30)),
            Verdict::RollBack(Rule::ErrorRate { allowed: 0.01 })
        );
        // All errors.
        assert_eq!(
            judge(&r, &window(7, 7, 30)),
            Verdict::RollBack(Rule::ErrorRate { allowed: 0.01 })
        );
    }

    #[test]
    fn baseline_raises_the_allowance_by_the_old_colors_ratio() {
        let mut r = rate(0.01);
        r.baseline = true;
        let mut w = with_baseline(window(1000, 25, 30), 2000, 40);
        // 2.5% against blue's 2% + 1%.
        assert_eq!(judge(&r, &w), Verdict::Commit(None));
        w.counts.errors = 31;
        assert!(matches!(
            judge(&r, &w),
            Verdict::RollBack(Rule::ErrorRate { allowed }) if (allowed - 0.03).abs() < 1e-9
        ));
        // A baseline of zero (blue clean, or no traffic before the swap): the allowance alone.
        w.baseline = Counts::default();
        w.counts.errors = 10;
        assert_eq!(judge(&r, &w), Verdict::Commit(None));
        w.counts.errors = 11;
        assert!(matches!(judge(&r, &w), Verdict::RollBack(_)));
    }

    #[test]
    fn max_errors_and_rates_both_judge() {
        let mut r = rate(0.05);
        r.max_errors = Some(100);
        assert_eq!(
            judge(&r, &window(1000, 100, 3)),
            Verdict::RollBack(Rule::MaxErrors)
        );
        assert_eq!(
            judge(&r, &window(1000, 60, 30)),
            Verdict::RollBack(Rule::ErrorRate { allowed: 0.05 })
        );
    }

    #[test]
    fn p99_rule() {
        let mut r = Rules {
            max_errors: None,
            max_p99: Some(Duration::from_millis(250)),
            ..Rules::default()
        };
        let mut w = window(100, 0, 30);
        w.p99 = Some(Duration::from_millis(250));
        assert_eq!(judge(&r, &w), Verdict::Commit(None));
        w.p99 = Some(Duration::from_millis(251));
        assert!(matches!(judge(&r, &w), Verdict::RollBack(Rule::P99 { .. })));
        w.elapsed = Duration::from_secs(29);
        assert_eq!(judge(&r, &w), Verdict::Continue);
        // Not enough traffic wins over a p99 measured on a handful of requests.
        r.min_requests = 500;
        w.elapsed = W;
        assert!(matches!(judge(&r, &w), Verdict::Commit(Some(_))));
    }

    #[test]
    fn counter_deltas_survive_a_wrap_and_torn_reads() {
        let before = Counts {
            requests: u64::MAX - 4,
            errors: u64::MAX,
        };
        let after = Counts {
            requests: 5,
            errors: 1,
        };
        assert_eq!(
            Counts::since(after, before),
            Counts {
                requests: 10,
                errors: 2
            }
        );
        let torn = Counts::since(
            Counts {
                requests: 10,
                errors: 12,
            },
            Counts::default(),
        );
        assert_eq!(torn.errors, 10);
        assert_eq!(torn.ratio(), 1.0);
        assert_eq!(Counts::default().ratio(), 0.0);
    }

    const B: [f64; 4] = [0.01, 0.1, 0.25, 1.0];

    fn secs(d: Option<Duration>) -> f64 {
        d.expect("observations").as_secs_f64()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn quantile_from_bucket_deltas() {
        // 100 observations since `before`: 90 under 10ms, 9 in (10ms, 100ms], 1 in (0.25, 1].
        let before = [5, 5, 5, 5, 5];
        let after = [95, 104, 104, 105, 105];
        let p = |q| secs(quantile(q, &B, &before, &after));
        assert!(close(p(0.5), 0.01 * 50.0 / 90.0));
        assert!(close(p(0.9), 0.01));
        assert!(close(p(0.99), 0.1));
        assert!(close(p(1.0), 1.0));
    }

    #[test]
    fn quantile_edges() {
        assert_eq!(quantile(0.99, &B, &[3; 5], &[3; 5]), None, "no traffic");
        assert_eq!(quantile(0.99, &B, &[0; 4], &[1; 5]), None, "bad shape");
        // Everything past the last bound: the last bound.
        let p = quantile(0.99, &B, &[0; 5], &[0, 0, 0, 0, 7]);
        assert_eq!(p, Some(Duration::from_secs(1)));
        // A counter that wrapped.
        let before = [u64::MAX; 5];
        let p = quantile(0.99, &B, &before, &[9, 9, 9, 9, 9]);
        assert!(close(secs(p), 0.01 * 0.99));
    }

    #[test]
    fn lines_name_the_rule_with_numbers() {
        let w = window(1834, 0, 18);
        assert_eq!(
            progress_line(&Rules::default(), &w),
            "watch: green 0 errors in 1834 requests, 12s left"
        );
        let mut r = rate(0.01);
        r.baseline = true;
        let w = with_baseline(window(120331, 481, 18), 1000, 3);
        assert_eq!(
            progress_line(&r, &w),
            "watch: green 0.4% errors (baseline blue 0.3%, allowed +1%) in 120331 requests, 12s left"
        );
        let w = with_baseline(window(1000, 28, 30), 1000, 3);
        assert_eq!(
            reason(&r, &w, Rule::ErrorRate { allowed: 0.013 }),
            "green 2.8% errors over 30s > max_error_rate 1% over baseline (blue 0.3%), 28 of 1000 requests"
        );
        let p = Rules {
            max_errors: None,
            max_p99: Some(Duration::from_millis(250)),
            ..Rules::default()
        };
        let mut w = window(10, 0, 30);
        w.p99 = Some(Duration::from_micros(12_500));
        assert_eq!(
            progress_line(&p, &w),
            "watch: green 0 errors, p99 12.5ms (max 250ms) in 10 requests, 0s left"
        );
        let mut r = rate(0.01);
        r.min_requests = 50;
        let line = reason(&r, &window(3, 0, 30), Rule::NotEnoughTraffic { needed: 50 });
        assert!(
            line.starts_with(
                "not enough traffic: green had 3 requests in 30s < min_requests 50; committing"
            ),
            "{line}"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(pct(0.0), "0%");
        assert_eq!(pct(0.01), "1%");
        assert_eq!(pct(0.0125), "1.25%");
        assert_eq!(pct(1.0), "100%");
        assert_eq!(dur(Duration::from_micros(850)), "850us");
        assert_eq!(dur(Duration::from_millis(250)), "250ms");
        assert_eq!(dur(Duration::from_millis(1200)), "1.20s");
        assert_eq!(Rules::default().summary(), "max_errors 3".to_string());
    }
}
