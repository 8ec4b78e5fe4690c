//! `ctl`'s view of a switch on a terminal: the repeating gate, drain and watch lines become
//! one bar line redrawn in place (with the time left), everything else is printed as it comes.
//!
//! It reads the admin protocol's progress lines, loosely on purpose: it needs only the phase
//! word at the start and the numbers it can find (`12s left`, `waiting up to 50s`, `4
//! requests, 2 websockets`), and shows the rest of the line as the server wrote it, so a
//! reworded line still shows. Everything here is pure; main.rs decides whether stdout is a
//! terminal (when it is not, lines are printed plainly and nothing here is used).

/// A number followed by `s`, as the progress lines write seconds.
fn seconds(word: &str) -> Option<u64> {
    word.trim_end_matches([',', ')', '.'])
        .strip_suffix('s')?
        .parse()
        .ok()
}

/// The number written right before `unit` (e.g. `4 requests`), if any.
fn count_before(line: &str, unit: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let u = w[1].trim_end_matches([',', ')', '.', ';']);
        (u == unit).then(|| w[0].parse().ok()).flatten()
    })
}

/// Seconds left in a line: `12s left` or `waiting up to 12s`.
fn left_in(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find_map(|w| match (seconds(w[0]), seconds(w[1])) {
            (Some(n), _) if w[1].starts_with("left") => Some(n),
            (_, Some(n)) if w[0] == "to" => Some(n),
            _ => None,
        })
}

/// One phase's latest line and the numbers read from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Track {
    line: String,
    left: Option<u64>,
    /// The longest time left seen: the phase's length as far as `ctl` can tell.
    total: u64,
}

impl Track {
    fn update(&mut self, line: &str) {
        self.line = line.to_string();
        self.left = left_in(line);
        if let Some(l) = self.left {
            self.total = self.total.max(l);
        }
    }

    /// Done fraction of the phase's time, 0.0 to 1.0.
    fn done(&self) -> f64 {
        match self.left {
            Some(l) if self.total > 0 => 1.0 - l as f64 / self.total as f64,
            _ => 0.0,
        }
    }
}

/// What the bar line shows, built from the lines seen so far.
#[derive(Debug, Default)]
pub struct Bar {
    gate: Option<Track>,
    watch: Option<Track>,
    drain: Option<Track>,
    /// The most requests + websockets the old color had open, for the drain's progress.
    drain_peak: u64,
}

const WIDTH: usize = 20;

fn bar(done: f64) -> String {
    let full = ((done.clamp(0.0, 1.0)) * WIDTH as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), "-".repeat(WIDTH - full))
}

/// The line without its `phase:` word.
fn rest(line: &str) -> &str {
    line.split_once(':').map_or(line, |(_, r)| r.trim())
}

impl Bar {
    /// Takes a line into the bar; `false` when the line is not one the bar shows (then it is
    /// printed as it is). The gate's verdict (`gate: green 2/2 servers healthy`, no time
    /// left) is not absorbed: it is a step worth keeping on screen.
    pub fn absorb(&mut self, line: &str) -> bool {
        let phase = line.split([':', ' ']).next().unwrap_or("");
        let slot = match phase {
            "gate" if left_in(line).is_some() => &mut self.gate,
            "watch" => &mut self.watch,
            "drain" => {
                let open = count_before(line, "requests").unwrap_or(0)
                    + count_before(line, "websockets").unwrap_or(0);
                self.drain_peak = self.drain_peak.max(open);
                &mut self.drain
            }
            _ => return false,
        };
        slot.get_or_insert_with(Track::default).update(line);
        true
    }

    fn drain_done(&self, d: &Track) -> f64 {
        let open = count_before(&d.line, "requests").unwrap_or(0)
            + count_before(&d.line, "websockets").unwrap_or(0);
        match self.drain_peak {
            0 => 1.0,
            peak => 1.0 - open as f64 / peak as f64,
        }
    }

    /// The bar line, at most `width` characters: the watch (or, before the swap, the gate)
    /// with its time bar, then the drain.
    pub fn render(&self, width: usize) -> String {
        let mut parts = Vec::new();
        if let Some(w) = &self.watch {
            parts.push(format!("watch {} {}", bar(w.done()), rest(&w.line)));
        } else if let Some(g) = &self.gate {
            parts.push(format!("gate  {} {}", bar(g.done()), rest(&g.line)));
        }
        if let Some(d) = &self.drain {
            parts.push(format!(
                "drain {} {}",
                bar(self.drain_done(d)),
                rest(&d.line)
            ));
        }
        parts.join("  |  ").chars().take(width).collect()
    }

    /// The last watch and drain lines, to print plainly when the reply ends: the final
    /// numbers stay on screen (the gate's verdict line was printed when it came).
    pub fn last_lines(&self) -> Vec<&str> {
        [&self.watch, &self.drain]
            .into_iter()
            .flatten()
            .filter(|t| !t.line.is_empty())
            .map(|t| t.line.as_str())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.gate.is_none() && self.watch.is_none() && self.drain.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_lines() {
        assert_eq!(
            left_in("watch: green 0 errors in 12 requests, 3s left"),
            Some(3)
        );
        assert_eq!(
            left_in("gate: green 1/2 servers healthy, waiting up to 48s"),
            Some(48)
        );
        assert_eq!(left_in("gate: green 2/2 servers healthy"), None);
        assert_eq!(
            count_before("drain: blue has 4 requests, 2 websockets", "websockets"),
            Some(2)
        );
        assert_eq!(
            count_before("drain: blue has 4 requests, 2 websockets", "requests"),
            Some(4)
        );
        assert_eq!(count_before("drain: blue drained", "requests"), None);
    }

    #[test]
    fn the_watch_bar_fills_as_time_runs_out() {
        let mut b = Bar::default();
        assert!(b.absorb("gate: green 0/1 servers healthy, waiting up to 10s"));
        assert!(b
            .render(200)
            .starts_with("gate  [--------------------] green 0/1"));
        assert!(
            !b.absorb("gate: green 1/1 servers healthy"),
            "the verdict prints"
        );
        assert!(!b.absorb("swap: active=green (was blue) in 4us"));
        assert!(b.absorb("watch: green 0 errors in 0 requests, 10s left"));
        assert!(b.absorb("drain: blue has 4 requests, 0 websockets"));
        assert!(b.absorb("watch: green 1 errors in 1834 requests, 5s left"));
        assert!(b.absorb("drain: blue has 1 requests, 0 websockets"));
        let r = b.render(200);
        assert!(
            r.starts_with("watch [##########----------] green 1 errors in 1834 requests, 5s left"),
            "{r}"
        );
        assert!(
            r.ends_with("drain [###############-----] blue has 1 requests, 0 websockets"),
            "{r}"
        );
        assert_eq!(b.render(12).chars().count(), 12);
        assert_eq!(
            b.last_lines(),
            vec![
                "watch: green 1 errors in 1834 requests, 5s left",
                "drain: blue has 1 requests, 0 websockets"
            ]
        );
    }

    #[test]
    fn other_lines_pass_through() {
        let mut b = Bar::default();
        for l in [
            "hook pre_switch: backing up",
            "warning: on_rollback hook failed",
            "ok active=green",
            "error: refused: green not healthy",
        ] {
            assert!(!b.absorb(l), "{l}");
        }
        assert!(b.is_empty());
    }
}
