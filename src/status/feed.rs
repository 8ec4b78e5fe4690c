//! What the switch controller tells watchers besides the admin client that asked: every
//! progress line as an event on a bounded broadcast channel, and the outcome of the last
//! [`HISTORY`] switches.
//!
//! A broadcast channel because watchers come and go and must never slow a switch down:
//! publishing never waits, the channel keeps the last [`BACKLOG`] events, and a watcher that
//! falls further behind skips ahead (it is told how many it missed and takes a fresh
//! snapshot). This module does not serve HTTP (admin_http.rs) nor decide anything about
//! switches (switch.rs, controller.rs).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::color::Color;
use crate::sync::lock;

/// How many switch outcomes are kept for the status page.
pub const HISTORY: usize = 20;
/// How many events a slow watcher may be behind before it skips ahead.
pub const BACKLOG: usize = 256;

/// One progress line as the status page receives it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Exactly the line `ctl` prints.
    pub line: String,
    /// What the line is about: `gate`, `swap`, `drain`, `watch`, `hook`, `warning`, `ok`,
    /// `error` or `info` (see [`line_phase`]).
    pub phase: &'static str,
    /// When it was published, ms since the Unix epoch.
    pub at: u64,
    /// Whether this line ends a command (`ok ...` / `error: ...`).
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// What a progress line is about, from its first word; loose on purpose so new wording of a
/// line keeps its phase.
pub fn line_phase(line: &str) -> &'static str {
    let head = line.split([':', ' ']).next().unwrap_or("");
    match head {
        "gate" => "gate",
        "swap" => "swap",
        "drain" => "drain",
        "watch" => "watch",
        "ok" => "ok",
        "error" => "error",
        "warning" => "warning",
        "hook" => "hook",
        _ => "info",
    }
}

/// Whether a line is the final line of an admin reply.
pub fn is_final(line: &str) -> bool {
    line == "ok" || line.starts_with("ok ") || line.starts_with("error:")
}

/// How one switch ended, for the status page's history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwitchRecord {
    pub from: &'static str,
    pub to: &'static str,
    pub force: bool,
    /// `committed`, `rolled_back`, `refused` or `aborted` (the `switchyard_switches_total`
    /// labels).
    pub result: &'static str,
    /// Why, in the words of the final line (or the watch's numbers for a commit).
    pub reason: String,
    pub started_at: u64,
    pub ended_at: u64,
}

impl SwitchRecord {
    pub fn new(
        (from, to): (Color, Color),
        force: bool,
        result: &'static str,
        reason: String,
        started: SystemTime,
    ) -> SwitchRecord {
        SwitchRecord {
            from: from.as_str(),
            to: to.as_str(),
            force,
            result,
            reason,
            started_at: super::unix_ms(started),
            ended_at: super::unix_ms(SystemTime::now()),
        }
    }
}

/// The reason a history entry shows for a switch's final line: the line without its `ok` /
/// `error:` word.
pub fn reason_of(final_line: &str) -> String {
    final_line
        .strip_prefix("error:")
        .unwrap_or(final_line)
        .trim()
        .to_string()
}

pub struct Feed {
    events: broadcast::Sender<Arc<Event>>,
    history: Mutex<VecDeque<SwitchRecord>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            events: broadcast::channel(BACKLOG).0,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        }
    }
}

impl Feed {
    /// Sends a line to every current watcher; never waits (nobody listening is fine).
    pub fn publish(&self, line: &str) {
        let e = Event {
            line: line.to_string(),
            phase: line_phase(line),
            at: super::unix_ms(SystemTime::now()),
            is_final: is_final(line),
        };
        let _ = self.events.send(Arc::new(e));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    pub fn record(&self, r: SwitchRecord) {
        let mut h = lock(&self.history);
        if h.len() == HISTORY {
            h.pop_back();
        }
        h.push_front(r);
    }

    /// Newest first.
    pub fn history(&self) -> Vec<SwitchRecord> {
        lock(&self.history).iter().cloned().collect()
    }

    /// A sender whose lines go to `client` and are published on the way: one command's
    /// progress, seen both by whoever typed it and by the status page. The forwarding task
    /// ends once every sender is dropped and it has passed everything on; await it before
    /// writing to `client` directly, or a line could overtake the ones still in the tee.
    pub fn tee(
        self: &Arc<Self>,
        client: mpsc::UnboundedSender<String>,
    ) -> (mpsc::UnboundedSender<String>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let feed = self.clone();
        let forwarding = tokio::spawn(async move {
            while let Some(l) = rx.recv().await {
                feed.publish(&l);
                // The admin client may be gone; the switch goes on and watchers still see it.
                let _ = client.send(l);
            }
        });
        (tx, forwarding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_of_lines() {
        assert_eq!(
            line_phase("gate: green 1/2 servers healthy, waiting up to 4s"),
            "gate"
        );
        assert_eq!(line_phase("swap: active=green (was blue) in 3us"), "swap");
        assert_eq!(
            line_phase("drain: blue has 4 requests, 2 websockets"),
            "drain"
        );
        assert_eq!(
            line_phase("watch: green 0 errors in 12 requests, 3s left"),
            "watch"
        );
        assert_eq!(line_phase("ok active=green"), "ok");
        assert_eq!(line_phase("error: rolled back to blue: ..."), "error");
        assert_eq!(line_phase("warning: on_rollback hook failed"), "warning");
        assert_eq!(line_phase("hook pre_switch: backup done"), "hook");
        assert_eq!(line_phase("something new"), "info");
        assert!(is_final("ok") && is_final("ok active=blue") && is_final("error: x"));
        assert!(!is_final("okay") && !is_final("watch: ok"));
    }

    #[test]
    fn history_is_bounded_newest_first() {
        let f = Feed::default();
        for i in 0..(HISTORY + 5) {
            f.record(SwitchRecord::new(
                (Color::Blue, Color::Green),
                false,
                "committed",
                format!("#{i}"),
                SystemTime::now(),
            ));
        }
        let h = f.history();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].reason, format!("#{}", HISTORY + 4));
        assert_eq!(h[HISTORY - 1].reason, "#5");
        assert_eq!(
            reason_of("error: refused: green not healthy"),
            "refused: green not healthy"
        );
    }

    #[tokio::test]
    async fn a_slow_watcher_skips_ahead_and_publishing_never_waits() {
        let f = Feed::default();
        let mut slow = f.subscribe();
        for i in 0..(BACKLOG * 3) {
            f.publish(&format!("watch: green 0 errors in {i} requests, 1s left"));
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n as usize, BACKLOG * 2),
            other => panic!("expected a lag, got {other:?}"),
        }
        let next = slow.recv().await.expect("an event after the lag");
        assert!(
            next.line.contains(&format!("in {} requests", BACKLOG * 2)),
            "{}",
            next.line
        );
    }

    #[tokio::test]
    async fn tee_forwards_and_publishes() {
        let f = Arc::new(Feed::default());
        let mut watcher = f.subscribe();
        let (client, mut client_rx) = mpsc::unbounded_channel();
        let (tx, forwarding) = f.tee(client);
        tx.send("swap: active=green (was blue)".into())
            .expect("send");
        tx.send("ok active=green".into()).expect("send");
        drop(tx);
        forwarding.await.expect("forwarder");
        assert_eq!(
            client_rx.recv().await.as_deref(),
            Some("swap: active=green (was blue)")
        );
        assert_eq!(client_rx.recv().await.as_deref(), Some("ok active=green"));
        let e = watcher.recv().await.expect("event");
        assert_eq!((e.phase, e.is_final), ("swap", false));
        let e = watcher.recv().await.expect("event");
        assert_eq!((e.phase, e.is_final), ("ok", true));
    }
}
