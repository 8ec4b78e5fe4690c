//! Issue 3's end-to-end checks: the health-gated switch, the watch window and automatic
//! rollback, against the real binary in front of real demo backends whose health and answers
//! the tests change.
//!
//! Covered: a refused gate (traffic never leaves blue), a gate that passes once green turns
//! healthy, automatic rollback on green's 5xx with the `on_rollback` hook and the state file,
//! a clean commit then `rollback`, `abort` during the gate and during the watch, `switch in
//! progress` and `status` phases, `switch green force`, a failing `pre_switch` hook, the
//! preview header from allowed and disallowed sources, a client that disconnects mid-switch,
//! a restart during the watch (comes back on the color persisted at the swap: the new one,
//! idle), and the `health` command with `switchyard_server_healthy`.
//!
//! No timing assertions: everything waits "eventually" with generous limits.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::task::JoinHandle;

/// A `[switch]` section with the given gate timeout and watch window.
fn switch_cfg(gate_timeout: &str, watch: &str) -> String {
    format!(
        "[switch]\ngate_timeout = \"{gate_timeout}\"\ndrain_timeout = \"1s\"\nwatch = \"{watch}\"\nmax_errors = 3\n"
    )
}

fn setup(b: &Backends, gate_timeout: &str, watch: &str) -> Setup {
    let mut s = Setup::new(b.route());
    s.switch = switch_cfg(gate_timeout, watch);
    s
}

fn state_of(p: &Proxy) -> String {
    std::fs::read_to_string(&p.state).expect("state file")
}

fn last(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or("")
}

/// Reads progress lines until one satisfies `want`; panics if the reply ends first.
async fn read_until(c: &mut AdminConn, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = c.next_line().await.expect("admin connection open");
        let hit = want(&l);
        let done = is_final(&l);
        seen.push(l);
        if hit {
            return seen;
        }
        assert!(!done, "reply ended before the expected line: {seen:?}");
    }
}

/// The value of one exact series, `None` when the series is absent.
async fn series(p: &Proxy, name: &str) -> Option<f64> {
    p.metrics().await.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .map(|v| v.trim().parse().expect("metric value"))
    })
}

/// Background traffic: one keep-alive client sending GET / until stopped; returns the
/// (status, color) of every answer.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(u16, String)>>,
}

impl Traffic {
    async fn start(p: &Proxy) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = Client::connect(p.addr()).await;
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let r = c.get("/").await;
                seen.push((r.status, r.color().to_string()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        });
        Traffic { stop, task }
    }

    async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("traffic task")
    }
}

#[tokio::test]
async fn unhealthy_green_is_refused_after_the_gate_and_traffic_never_leaves_blue() {
    let b = Backends::start().await;
    b.green.set_healthy(false);
    let p = Proxy::start(&setup(&b, "1s", "2s")).await;
    assert_eq!(state_of(&p), "blue\n");

    let traffic = Traffic::start(&p).await;
    let reply = p.ctl("switch green").await;
    let seen = traffic.finish().await;

    assert!(last(&reply).starts_with("error: refused"), "{reply:?}");
    assert!(last(&reply).contains("traffic stays on blue"), "{reply:?}");
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("gate: green 0/1 servers healthy")),
        "gate progress shown: {reply:?}"
    );
    assert!(!reply.iter().any(|l| l.starts_with("swap:")), "{reply:?}");
    assert!(!seen.is_empty(), "requests were sent during the gate");
    assert!(
        seen.iter().all(|(s, c)| *s == 200 && c == "blue"),
        "every request during the gate answered by blue: {seen:?}"
    );
    assert_eq!(b.green.app_requests(), 0, "green never got traffic");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"refused\"}")
            .await,
        1.0
    );
    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
    assert_eq!(get(&p.url("/")).await.color(), "blue");
}

#[tokio::test]
async fn green_turning_healthy_during_the_gate_lets_the_switch_proceed() {
    let b = Backends::start().await;
    b.green.set_healthy(false);
    let p = Proxy::start(&setup(&b, "10s", "1s")).await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    let mut reply = read_until(&mut c, |l| l.starts_with("gate: green 0/1")).await;
    b.green.set_healthy(true);
    reply.extend(c.read_reply().await);

    assert_eq!(last(&reply), "ok active=green", "{reply:?}");
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("gate: green 0/1 servers healthy, waiting up to")),
        "{reply:?}"
    );
    assert!(
        reply.iter().any(|l| l == "gate: green 1/1 servers healthy"),
        "{reply:?}"
    );
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("swap: active=green (was blue)")),
        "{reply:?}"
    );
    assert_eq!(get(&p.url("/")).await.color(), "green");
    assert_eq!(state_of(&p), "green\n");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"committed\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn green_answering_500_after_the_swap_rolls_back_to_blue_and_runs_on_rollback() {
    let b = Backends::start().await;
    let hook_dir = tempfile::tempdir().expect("tempdir");
    let hook_out = hook_dir.path().join("on_rollback.txt");
    let mut s = setup(&b, "5s", "10s");
    s.extra = format!(
        "[hooks]\non_rollback = \"echo $SWITCHYARD_FROM $SWITCHYARD_TO $SWITCHYARD_REASON > {}\"\n",
        hook_out.display()
    );
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    let mut reply = read_until(&mut c, |l| l == "gate: green 1/1 servers healthy").await;
    // The gate has passed on green's health endpoint; now its application answers fail.
    b.green.set_status(Some(500));
    let traffic = Traffic::start(&p).await;
    reply.extend(c.read_reply().await);
    let seen = traffic.finish().await;

    let fin = last(&reply);
    assert!(fin.starts_with("error: rolled back to blue: "), "{reply:?}");
    assert!(fin.contains("errors"), "{reply:?}");
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("swap: active=green (was blue)")),
        "{reply:?}"
    );
    assert!(
        reply.iter().any(|l| l == "swap: active=blue (was green)"),
        "{reply:?}"
    );
    assert!(
        seen.iter().any(|(s, c)| *s == 500 && c == "green"),
        "green's 500s were seen: {seen:?}"
    );

    let reason = fin.trim_start_matches("error: rolled back to blue: ");
    let hook = std::fs::read_to_string(&hook_out).expect("on_rollback hook ran");
    assert_eq!(hook.trim_end(), format!("green blue {reason}"), "{hook}");
    assert!(hook.contains("errors"), "{hook}");

    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"rolled_back\"}")
            .await,
        1.0
    );
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
    let r = get(&p.url("/")).await;
    assert_eq!((r.status, r.color()), (200, "blue"));
}

#[tokio::test]
async fn clean_watch_commits_and_rollback_returns_to_blue_at_once() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup(&b, "5s", "1s")).await;
    p.wait_healthy().await;

    let traffic = Traffic::start(&p).await;
    let reply = p.ctl("switch green").await;
    let seen = traffic.finish().await;
    assert_eq!(last(&reply), "ok active=green", "{reply:?}");
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("watch: green 0 errors in")),
        "{reply:?}"
    );
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:?}");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"committed\"}")
            .await,
        1.0
    );
    assert_eq!(get(&p.url("/")).await.color(), "green");

    let reply = p.ctl("rollback").await;
    assert_eq!(last(&reply), "ok active=blue", "{reply:?}");
    assert!(
        !reply
            .iter()
            .any(|l| l.starts_with("gate:") || l.starts_with("watch:")),
        "rollback is at once, no gate or watch: {reply:?}"
    );
    let r = get(&p.url("/")).await;
    assert_eq!((r.status, r.color()), (200, "blue"));
    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
}

#[tokio::test]
async fn abort_during_the_gate_keeps_blue() {
    let b = Backends::start().await;
    b.green.set_healthy(false);
    let p = Proxy::start(&setup(&b, "60s", "1s")).await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    read_until(&mut c, |l| l.starts_with("gate: green 0/1")).await;

    let reply = p.ctl("abort").await;
    assert_eq!(last(&reply), "ok active=blue", "{reply:?}");
    let reply = c.read_reply().await;
    assert!(last(&reply).starts_with("error: aborted"), "{reply:?}");

    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
    assert_eq!(get(&p.url("/")).await.color(), "blue");
    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"aborted\"}")
            .await,
        1.0
    );
    // The connection that ran the switch is still usable.
    assert_eq!(last(&c.send("status").await), "ok active=blue phase=idle");
}

#[tokio::test]
async fn abort_during_the_watch_puts_traffic_back_on_blue() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup(&b, "5s", "60s")).await;
    p.wait_healthy().await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    read_until(&mut c, |l| l.starts_with("watch: green")).await;
    assert_eq!(get(&p.url("/")).await.color(), "green");
    assert_eq!(state_of(&p), "green\n");

    let reply = p.ctl("abort").await;
    assert_eq!(last(&reply), "ok active=blue", "{reply:?}");
    let reply = c.read_reply().await;
    assert!(last(&reply).starts_with("error: aborted"), "{reply:?}");
    assert!(
        reply.iter().any(|l| l == "swap: active=blue (was green)"),
        "{reply:?}"
    );

    let r = get(&p.url("/")).await;
    assert_eq!((r.status, r.color()), (200, "blue"));
    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"aborted\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("switchyard_active_color{color=\"blue\"}").await,
        1.0
    );
}

#[tokio::test]
async fn second_switch_is_refused_and_status_shows_the_phase() {
    let b = Backends::start().await;
    b.green.set_healthy(false);
    let p = Proxy::start(&setup(&b, "30s", "30s")).await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    read_until(&mut c, |l| l.starts_with("gate: green 0/1")).await;

    assert_eq!(p.ctl("switch green").await, ["error: switch in progress"]);
    assert_eq!(
        p.ctl("switch blue force").await,
        ["error: switch in progress"]
    );
    let status = p.ctl("status").await;
    assert_eq!(last(&status), "ok active=blue phase=gate", "{status:?}");
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("switch: blue -> green, phase=gate")),
        "{status:?}"
    );

    b.green.set_healthy(true);
    read_until(&mut c, |l| l.starts_with("watch: green")).await;
    assert_eq!(p.ctl("switch blue").await, ["error: switch in progress"]);
    let status = p.ctl("status").await;
    assert_eq!(last(&status), "ok active=green phase=watch", "{status:?}");
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("switch: blue -> green, phase=watch")
                && l.contains("s left")
                && l.contains("errors in")),
        "status shows time left and the error count: {status:?}"
    );

    assert_eq!(p.ctl_last("abort").await, "ok active=blue");
    assert!(last(&c.read_reply().await).starts_with("error: aborted"));
    // Once it ended, a new switch is accepted again.
    assert_eq!(
        p.ctl("switch blue").await,
        ["blue is already active; nothing to do", "ok active=blue"]
    );
}

#[tokio::test]
async fn forced_switch_skips_the_gate_and_says_so() {
    let b = Backends::start().await;
    b.green.set_healthy(false);
    let p = Proxy::start(&setup(&b, "30s", "1s")).await;
    eventually("green seen unhealthy", Duration::from_secs(10), || async {
        p.ctl("health")
            .await
            .iter()
            .any(|l| l.starts_with(&format!("green {} unhealthy", b.green.addr())))
    })
    .await;

    let reply = p.ctl("switch green force").await;
    assert_eq!(last(&reply), "ok active=green", "{reply:?}");
    assert!(
        reply.iter().any(|l| l.starts_with("gate: skipped (force)")),
        "{reply:?}"
    );
    let r = get(&p.url("/")).await;
    assert_eq!((r.status, r.color()), (200, "green"));
    assert_eq!(state_of(&p), "green\n");
}

#[tokio::test]
async fn failing_pre_switch_hook_refuses_the_switch() {
    let b = Backends::start().await;
    let mut s = setup(&b, "5s", "1s");
    s.extra = "[hooks]\npre_switch = \"echo backing up $SWITCHYARD_FROM before $SWITCHYARD_TO; echo disk full >&2; exit 3\"\n".into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;

    let reply = p.ctl("switch green").await;
    assert!(last(&reply).starts_with("error: refused"), "{reply:?}");
    assert!(last(&reply).contains("pre_switch"), "{reply:?}");
    assert!(
        reply
            .iter()
            .any(|l| l == "hook pre_switch: backing up blue before green"),
        "{reply:?}"
    );
    assert!(
        reply.iter().any(|l| l == "hook pre_switch: disk full"),
        "{reply:?}"
    );
    assert!(!reply.iter().any(|l| l.starts_with("swap:")), "{reply:?}");

    let r = get(&p.url("/")).await;
    assert_eq!((r.status, r.color()), (200, "blue"));
    assert_eq!(b.green.app_requests(), 0);
    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"refused\"}")
            .await,
        1.0
    );
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
}

#[tokio::test]
async fn preview_header_from_an_allowed_source_reaches_green() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.extra = "[preview]\nheader = \"x-switchyard-color\"\nallow = [\"127.0.0.1/32\"]\n".into();
    let p = Proxy::start(&s).await;

    let r = get_with(&p.url("/smoke"), &[("x-switchyard-color", "green")]).await;
    assert_eq!((r.status, r.color()), (200, "green"));
    assert_eq!(b.green.app_requests(), 1);
    let r = get(&p.url("/")).await;
    assert_eq!(
        r.color(),
        "blue",
        "without the header traffic stays on blue"
    );
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
}

#[tokio::test]
async fn preview_header_from_a_disallowed_source_is_ignored_and_not_forwarded() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.extra = "[preview]\nheader = \"x-switchyard-color\"\nallow = [\"10.0.0.0/8\"]\n".into();
    let p = Proxy::start(&s).await;

    let r = get_with(&p.url("/smoke"), &[("x-switchyard-color", "green")]).await;
    assert_eq!((r.status, r.color()), (200, "blue"));
    assert_eq!(b.green.app_requests(), 0);
    let h = b.blue.last_headers();
    assert!(
        !h.iter().any(|(n, _)| n == "x-switchyard-color"),
        "steering header reached the backend: {h:?}"
    );
    assert!(
        h.iter().any(|(n, _)| n == "x-forwarded-proto"),
        "headers were recorded: {h:?}"
    );
}

#[tokio::test]
async fn client_disconnecting_does_not_cancel_the_switch() {
    let b = Backends::start().await;
    b.green.set_healthy(false);
    let p = Proxy::start(&setup(&b, "30s", "1s")).await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    let first = c.next_line().await.expect("a progress line");
    assert!(first.starts_with("gate: green"), "{first}");
    drop(c);

    b.green.set_healthy(true);
    eventually("switch completes", Duration::from_secs(15), || async {
        p.ctl_last("status").await == "ok active=green phase=idle"
    })
    .await;
    assert_eq!(get(&p.url("/")).await.color(), "green");
    assert_eq!(state_of(&p), "green\n");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"committed\"}")
            .await,
        1.0
    );
}

/// The state file is written at the swap, before traffic moves; a restart during the watch
/// therefore comes back on the new color, idle (the watch does not resume).
#[tokio::test]
async fn restart_during_the_watch_comes_back_on_the_persisted_new_color() {
    let b = Backends::start().await;
    let mut p = Proxy::start(&setup(&b, "5s", "30s")).await;
    p.wait_healthy().await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    read_until(&mut c, |l| l.starts_with("watch: green")).await;
    eventually("phase=watch", Duration::from_secs(10), || async {
        p.ctl_last("status").await == "ok active=green phase=watch"
    })
    .await;
    drop(c);

    p.kill();
    p.spawn(false).await;
    assert_eq!(p.ctl_last("status").await, "ok active=green phase=idle");
    assert_eq!(state_of(&p), "green\n");
    let r = get(&p.url("/")).await;
    assert_eq!((r.status, r.color()), (200, "green"));
}

#[tokio::test]
async fn health_lists_every_server_and_the_gauge_follows_it() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    p.wait_healthy().await;

    let lines = p.ctl("health").await;
    assert_eq!(lines.len(), 3, "one line per server, then ok: {lines:?}");
    assert_eq!(last(&lines), "ok");
    let blue = format!("blue {} healthy", b.blue.addr());
    let green = format!("green {} healthy", b.green.addr());
    assert!(lines.iter().any(|l| l.starts_with(&blue)), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with(&green)), "{lines:?}");

    let gauge = format!(
        "switchyard_server_healthy{{color=\"green\",server=\"{}\"}}",
        b.green.addr()
    );
    eventually("green gauge 1", Duration::from_secs(10), || async {
        series(&p, &gauge).await == Some(1.0)
    })
    .await;

    b.green.set_healthy(false);
    let down = format!("green {} unhealthy", b.green.addr());
    eventually(
        "green unhealthy in `health`",
        Duration::from_secs(10),
        || async { p.ctl("health").await.iter().any(|l| l.starts_with(&down)) },
    )
    .await;
    eventually("green gauge 0", Duration::from_secs(10), || async {
        series(&p, &gauge).await == Some(0.0)
    })
    .await;
    let blue_gauge = format!(
        "switchyard_server_healthy{{color=\"blue\",server=\"{}\"}}",
        b.blue.addr()
    );
    assert_eq!(series(&p, &blue_gauge).await, Some(1.0));
    let lines = p.ctl("health").await;
    assert!(lines.iter().any(|l| l.starts_with(&blue)), "{lines:?}");
}

#[tokio::test]
async fn rollback_during_the_watch_is_counted_as_a_rollback() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup(&b, "5s", "60s")).await;
    p.wait_healthy().await;
    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    read_until(&mut c, |l| l.starts_with("watch: green")).await;

    let reply = p.ctl("rollback").await;
    assert_eq!(last(&reply), "ok active=blue", "{reply:?}");
    let reply = c.read_reply().await;
    assert!(
        last(&reply).starts_with("error: rolled back by operator"),
        "{reply:?}"
    );
    assert_eq!(get(&p.url("/")).await.color(), "blue");
    assert_eq!(
        series(&p, "switchyard_switches_total{result=\"rolled_back\"}").await,
        Some(1.0)
    );
    assert_eq!(
        series(&p, "switchyard_switches_total{result=\"aborted\"}").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn abort_during_a_slow_pre_switch_hook_moves_nothing() {
    let b = Backends::start().await;
    let mut s = setup(&b, "5s", "1s");
    s.extra = "[hooks]\npre_switch = \"echo backing up; sleep 30\"\n".into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    read_until(&mut c, |l| l == "hook pre_switch: backing up").await;

    let reply = p.ctl("abort").await;
    assert_eq!(last(&reply), "ok active=blue", "{reply:?}");
    let reply = c.read_reply().await;
    assert!(
        last(&reply).starts_with("error: stopped by operator during the pre_switch hook"),
        "{reply:?}"
    );
    assert!(
        !reply.iter().any(|l| l.starts_with("swap:")),
        "never swapped: {reply:?}"
    );
    assert_eq!(state_of(&p), "blue\n");
    assert_eq!(get(&p.url("/")).await.color(), "blue");
    assert_eq!(
        series(&p, "switchyard_switches_total{result=\"aborted\"}").await,
        Some(1.0)
    );
}
