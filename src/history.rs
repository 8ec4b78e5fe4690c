//! A short memory of each color's request and error totals: one sample a second, as many as
//! one watch window needs, so a switch can tell how the old color did over the same length of
//! time just before the swap (the `baseline` of verdict.rs).
//!
//! A background task (server.rs's `Sampler`) samples the `ColorStats` atomics; the request path never sees this
//! module and takes no lock for it. The ring's lock is taken once a second by the sampler
//! and once per switch by the controller. It does not judge anything (verdict.rs does).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::color::Color;
use crate::metrics::Metrics;
use crate::sync::lock;
use crate::verdict::Counts;

/// How often the sampler looks.
pub const EVERY: Duration = Duration::from_secs(1);

/// Both colors' totals at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub counts: [Counts; 2],
}

impl Sample {
    pub fn now(metrics: &Metrics) -> Sample {
        Sample {
            at: Instant::now(),
            counts: Color::ALL.map(|c| {
                let (requests, errors) = metrics.color_stats(c).snapshot();
                Counts { requests, errors }
            }),
        }
    }
}

/// The last samples, oldest first, enough to look one watch window back.
pub struct History {
    ring: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl History {
    pub fn new(window: Duration) -> History {
        // One sample a second over the window, plus one each side so the oldest one kept is
        // at least a whole window old.
        let capacity = (window.as_secs() as usize).saturating_add(3).min(24 * 3600);
        History {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    pub fn push(&self, s: Sample) {
        let mut ring = lock(&self.ring);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// `color`'s counts over `length` before `now`, and the time they actually cover.
    pub fn baseline(&self, color: Color, now: Sample, length: Duration) -> (Counts, Duration) {
        let ring = lock(&self.ring);
        baseline(ring.iter(), color, now, length)
    }
}

/// From the newest sample at least `length` older than `now` (or, when the process has not
/// run that long, the oldest there is) to `now`.
pub fn baseline<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    color: Color,
    now: Sample,
    length: Duration,
) -> (Counts, Duration) {
    let mut chosen: Option<&Sample> = None;
    for s in samples {
        let old_enough = now.at.saturating_duration_since(s.at) >= length;
        if chosen.is_none() || old_enough {
            chosen = Some(s);
        }
    }
    match chosen {
        Some(s) => (
            Counts::since(now.counts[color.idx()], s.counts[color.idx()]),
            now.at.saturating_duration_since(s.at),
        ),
        None => (Counts::default(), Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, blue: u64, blue_err: u64) -> Sample {
        let c = Counts {
            requests: blue,
            errors: blue_err,
        };
        Sample {
            at,
            counts: [c, Counts::default()],
        }
    }

    #[test]
    fn looks_one_window_back() {
        let t0 = Instant::now();
        let s = |secs: u64, n: u64, e: u64| sample(t0 + Duration::from_secs(secs), n, e);
        let ring = [s(0, 0, 0), s(1, 100, 1), s(2, 200, 2), s(3, 300, 9)];
        let now = s(4, 400, 10);
        let w = Duration::from_secs(2);
        let (c, covered) = baseline(ring.iter(), Color::Blue, now, w);
        assert_eq!((c.requests, c.errors, covered), (200, 8, w));
        // The process has not run a whole window: the oldest sample there is.
        let (c, covered) = baseline(ring.iter(), Color::Blue, now, Duration::from_secs(60));
        assert_eq!((c.requests, covered), (400, Duration::from_secs(4)));
        let (c, covered) = baseline([].iter(), Color::Blue, now, w);
        assert_eq!((c, covered), (Counts::default(), Duration::ZERO));
    }

    #[test]
    fn the_ring_keeps_a_window_and_a_bit() {
        let h = History::new(Duration::from_secs(2));
        let t0 = Instant::now();
        for i in 0..10 {
            h.push(sample(t0 + Duration::from_secs(i), i * 10, 0));
        }
        assert_eq!(lock(&h.ring).len(), 5);
        let now = sample(t0 + Duration::from_secs(10), 100, 0);
        let (c, _) = h.baseline(Color::Blue, now, Duration::from_secs(2));
        assert_eq!(c.requests, 20);
    }
}
