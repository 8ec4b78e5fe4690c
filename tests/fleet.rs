//! Fleet mode end to end: a real 3-member etcd cluster (tests/common/etcd.rs), two or three
//! real switchyard processes, real demo backends, load on every front door. Each test
//! asserts that no request fails at any front door and that the members converge on one
//! color once etcd is reachable.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::{eventually, get, AdminConn, Backends, Client, Proxy, Setup};

const SLOW: Duration = Duration::from_secs(30);

/// The lease most tests use: short, so a dead member is noticed fast.
const LEASE: &str = "2s";

/// One member's config: the shared backends, the cluster, its lease.
/// `watch` is the window, or a whole set of `[switch]` rule lines when it has a newline.
fn setup(
    b: &Backends,
    etcd: &EtcdCluster,
    (id, lease): (&str, &str),
    min: usize,
    watch: &str,
) -> Setup {
    let mut s = Setup::new(b.route());
    let rules = if watch.contains('\n') {
        watch.to_string()
    } else {
        // A gate with room for an etcd leader election and members reconnecting.
        format!("gate_timeout = \"10s\"\nwatch = \"{watch}\"\nmax_errors = 3\n")
    };
    s.switch = format!("[switch]\ndrain_timeout = \"1s\"\n{rules}");
    s.extra = format!(
        "[fleet]\netcd = {}\nname = \"t\"\nmember = \"{id}\"\nlease_ttl = \"{lease}\"\nmin_members = {min}\n",
        etcd.toml_list()
    );
    s
}

async fn start_fleet(
    b: &Backends,
    etcd: &EtcdCluster,
    n: usize,
    min: usize,
    watch: &str,
) -> Vec<Proxy> {
    start_fleet_with(b, etcd, (n, min), watch, LEASE, "").await
}

/// `extra`: more config sections for every member (e.g. `[hooks]`).
async fn start_fleet_with(
    b: &Backends,
    etcd: &EtcdCluster,
    (n, min): (usize, usize),
    watch: &str,
    lease: &str,
    extra: &str,
) -> Vec<Proxy> {
    let mut members = Vec::new();
    for i in 1..=n {
        let mut s = setup(b, etcd, (&format!("edge-{i}"), lease), min, watch);
        s.extra.push_str(extra);
        members.push(Proxy::start(&s).await);
    }
    for p in &members {
        wait_status(p, &format!("members={n}/")).await;
        wait_status(p, " connected").await;
        p.wait_healthy().await;
    }
    members
}

async fn status(p: &Proxy) -> String {
    p.ctl("status").await.join("\n")
}

async fn wait_status(p: &Proxy, want: &str) {
    let deadline = Instant::now() + SLOW;
    loop {
        let s = status(p).await;
        if s.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {want:?}:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which color the member's front door serves.
async fn serves(p: &Proxy) -> String {
    get(&p.url("/")).await.color().to_string()
}

/// Waits until every member's front door serves `color`; how long that took.
async fn converge(members: &[&Proxy], color: &str) -> Duration {
    let t = Instant::now();
    for p in members {
        eventually(&format!("{} serves {color}", p.port), SLOW, || async {
            serves(p).await == color
        })
        .await;
    }
    t.elapsed()
}

async fn ready(p: &Proxy) -> u16 {
    get(&format!("http://127.0.0.1:{}/ready", p.metrics_port))
        .await
        .status
}

/// Keep-alive GET load on front doors until stopped; counts requests and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Load {
    fn start(fronts: &[&Proxy]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for p in fronts {
            let (addr, stop, ok) = (p.addr(), stop.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .try_request("GET", "/", &[], "")
                        .await
                        .map_err(|e| format!("{addr}: {e}"))?;
                    if r.status != 200 {
                        return Err(format!("{addr}: status {}: {}", r.status, r.body));
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok(())
            }));
        }
        Load { stop, ok, tasks }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let failed = common::failures(self.tasks).await;
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        self.ok.load(Ordering::Relaxed)
    }
}

/// Reads lines of a running command until one contains `what`.
async fn until_line(c: &mut AdminConn, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = c.next_line().await.expect("admin line");
        let done = l.contains(what);
        let last = common::is_final(&l);
        seen.push(l);
        if done {
            return seen;
        }
        assert!(!last, "ended before {what:?}: {seen:?}");
    }
}

/// The fleet's decision as etcd holds it.
async fn decision(etcd: &EtcdCluster) -> serde_json::Value {
    let mut c = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd");
    let r = c.get("/switchyard/t/decision", None).await.expect("get");
    serde_json::from_slice(r.kvs()[0].value()).expect("json")
}

#[tokio::test]
async fn etcd_fixture_survives_a_leader_kill_and_a_pause() {
    let mut etcd = EtcdCluster::start(3).await;
    let leader = etcd.leader().await;
    etcd.kill(leader);
    let next = etcd.leader().await;
    assert_ne!(next, leader);
    etcd.restart(leader);
    etcd.wait_healthy(Duration::from_secs(20)).await;
    let other = (next + 1) % 3;
    etcd.pause(other);
    assert!(!etcd.healthy(other).await);
    etcd.resume(other);
    etcd.wait_healthy(Duration::from_secs(20)).await;
    assert!(etcd.compact().await > 0);
}

#[tokio::test]
async fn a_switch_on_one_member_moves_the_fleet_and_a_second_one_is_refused() {
    let etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    let m = start_fleet(&b, &etcd, 3, 2, "3s").await;
    let all: Vec<&Proxy> = m.iter().collect();
    for p in &all {
        assert_eq!(ready(p).await, 200);
        assert_eq!(
            get(&format!("http://127.0.0.1:{}/live", p.metrics_port))
                .await
                .status,
            200
        );
    }
    let load = Load::start(&all);

    let r = m[0].ctl("switch green").await;
    assert_eq!(
        r.last().map(String::as_str),
        Some("ok active=green"),
        "{r:?}"
    );
    assert!(
        r.iter().any(|l| l == "gate: green healthy on 3/3 members"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|l| l.starts_with("swap: 3/3 members on green in ")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|l| l.contains("requests on 3 members")),
        "{r:?}"
    );
    let took = converge(&all, "green").await;
    eprintln!("all members on green {took:?} after the switch's ok");

    // A second switch elsewhere while one runs.
    let mut c = AdminConn::connect(&m[1]).await;
    c.send_raw(b"switch blue\n").await;
    until_line(&mut c, "swap:").await;
    let refused = m[2].ctl_last("switch green").await;
    assert_eq!(refused, "error: switch in progress (by edge-2)");
    let s = status(&m[2]).await;
    assert!(
        s.contains("fleet switch: green -> blue by edge-2, phase=watch"),
        "{s}"
    );
    // abort on a third member stops edge-2's switch and puts the fleet back.
    assert_eq!(m[0].ctl_last("abort").await, "ok active=green");
    let rest = c.read_reply().await;
    let last = rest.last().expect("final");
    assert!(
        last.starts_with("error: aborted by operator on edge-1 during the watch of edge-2"),
        "{rest:?}"
    );
    converge(&all, "green").await;

    // Status, members and metrics say the same everywhere.
    let s = status(&m[1]).await;
    assert!(
        s.contains("fleet=t member=edge-2 members=3/3 epoch=3 connected"),
        "{s}"
    );
    let lines = m[2].ctl("members").await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("edge-1 serving=green epoch=3 health blue=1/1 green=1/1"),
        "{lines:?}"
    );
    assert_eq!(lines[3], "ok");
    assert_eq!(m[0].metric("switchyard_fleet_connected").await, 1.0);
    assert_eq!(m[0].metric("switchyard_fleet_members").await, 3.0);
    assert_eq!(m[2].metric("switchyard_fleet_epoch").await, 3.0);
    assert!(m[2].metric("switchyard_fleet_swap_seconds_count").await >= 2.0);
    let served = load.finish().await;
    assert!(served > 100, "load ran: {served}");
}

#[tokio::test]
async fn the_switching_member_paused_mid_watch_is_rolled_back_once_by_the_fleet() {
    let etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    let hooks = tempfile::tempdir().expect("tempdir");
    let log = hooks.path().join("rollbacks");
    let on_rollback = format!(
        "[hooks]\non_rollback = \"echo $SWITCHYARD_FROM $SWITCHYARD_TO >> {}\"\n",
        log.display()
    );
    let m = start_fleet_with(&b, &etcd, (3, 1), "30s", LEASE, &on_rollback).await;
    let rest: Vec<&Proxy> = m[1..].iter().collect();
    let load = Load::start(&rest);
    let mut c = AdminConn::connect(&m[0]).await;
    c.send_raw(b"switch green\n").await;
    until_line(&mut c, "swap:").await;
    converge(&rest, "green").await;
    m[0].signal(libc::SIGSTOP);
    // Its lease (2 s) runs out; the lowest live member rolls the fleet back.
    let took = converge(&rest, "blue").await;
    eprintln!("fleet back on blue {took:?} after the switching member stopped");
    let d = decision(&etcd).await;
    assert_eq!(d["epoch"], 2, "one swap and exactly one rollback: {d}");
    assert_eq!(d["color"], "blue");
    assert!(
        d["note"]
            .as_str()
            .unwrap_or("")
            .starts_with("rolled back by edge-2: edge-1 went away during the watch"),
        "{d}"
    );
    // Resumed, the paused member catches up and never flips traffic on its own.
    m[0].signal(libc::SIGCONT);
    let reply = c.read_reply().await;
    assert!(
        reply
            .last()
            .expect("final")
            .starts_with("error: rolled back by edge-2"),
        "{reply:?}"
    );
    converge(&[&m[0]], "blue").await;
    wait_status(&m[0], "members=3/3").await;
    assert_eq!(
        decision(&etcd).await["epoch"],
        2,
        "still exactly one rollback"
    );
    eventually("on_rollback ran", SLOW, || async { log.exists() }).await;
    let ran = std::fs::read_to_string(&log).expect("on_rollback log");
    assert_eq!(
        ran, "green blue\n",
        "on_rollback ran once, on the member that rolled back"
    );
    for p in &m {
        assert_eq!(serves(p).await, "blue");
    }
    load.finish().await;
}

#[tokio::test]
async fn an_etcd_leader_killed_during_gate_swap_and_watch_only_delays_the_switch() {
    let mut etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    // The default lease: a 2 s one can run out on a loaded machine while a member reconnects
    // after the leader change, and the fleet would (rightly) roll the switch back.
    let m = start_fleet_with(&b, &etcd, (3, 2), "2s", "5s", "").await;
    let all: Vec<&Proxy> = m.iter().collect();
    let load = Load::start(&all);
    // Killed right after the command (the gate), after the gate passed (the swap's CAS), and
    // once the watch runs.
    for (color, at, phase) in [
        ("green", None, "the gate"),
        ("blue", Some("gate:"), "the swap"),
        ("green", Some("watch:"), "the watch"),
    ] {
        let t = Instant::now();
        let mut c = AdminConn::connect(&m[0]).await;
        c.send_raw(format!("switch {color}\n").as_bytes()).await;
        if let Some(at) = at {
            until_line(&mut c, at).await;
        }
        let leader = etcd.leader().await;
        etcd.kill(leader);
        let r = c.read_reply().await;
        assert_eq!(
            r.last().map(String::as_str),
            Some(format!("ok active={color}").as_str()),
            "{r:?}"
        );
        converge(&all, color).await;
        eprintln!(
            "switch to {color} with the etcd leader killed during {phase} took {:?}",
            t.elapsed()
        );
        etcd.restart(leader);
        etcd.wait_healthy(SLOW).await;
    }
    load.finish().await;
}

#[tokio::test]
async fn without_quorum_members_detach_keep_serving_and_refuse_switches() {
    let mut etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    let m = start_fleet(&b, &etcd, 2, 2, "1s").await;
    let all: Vec<&Proxy> = m.iter().collect();
    let load = Load::start(&all);
    etcd.pause(0);
    etcd.pause(1);
    for p in &all {
        wait_status(p, "detached since").await;
    }
    let r = m[0].ctl_last("switch green").await;
    assert!(
        r.starts_with("error: fleet detached: ") && r.ends_with("; traffic stays on blue"),
        "{r}"
    );
    let r = m[1].ctl_last("rollback").await;
    assert!(
        r.starts_with("error: fleet detached: ") && r.ends_with("; traffic stays on blue"),
        "{r}"
    );
    let r = m[1].ctl_last("abort").await;
    assert!(
        r.starts_with("error: fleet detached: ") && r.ends_with("; traffic stays on blue"),
        "{r}"
    );
    assert_eq!(m[0].metric("switchyard_fleet_connected").await, 0.0);
    assert_eq!(
        ready(&m[0]).await,
        200,
        "a confirmed member stays ready while detached"
    );
    etcd.resume(0);
    etcd.resume(1);
    let t = Instant::now();
    for p in &all {
        wait_status(p, " connected").await;
    }
    eprintln!(
        "members connected again {:?} after quorum came back",
        t.elapsed()
    );
    assert_eq!(m[1].ctl_last("switch green").await, "ok active=green");
    converge(&all, "green").await;
    load.finish().await;
}

#[tokio::test]
async fn a_member_restarted_while_etcd_is_down_comes_back_on_the_fleet_color() {
    let mut etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    let mut m = start_fleet(&b, &etcd, 2, 1, "1s").await;
    assert_eq!(m[0].ctl_last("switch green").await, "ok active=green");
    converge(&m.iter().collect::<Vec<_>>(), "green").await;
    for i in 0..3 {
        etcd.kill(i);
    }
    m[1].kill();
    m[1].spawn(false).await;
    let s = status(&m[1]).await;
    assert!(
        s.contains("ok active=green") && s.contains("epoch=1 detached since"),
        "{s}"
    );
    assert_eq!(serves(&m[1]).await, "green");
    assert_eq!(
        ready(&m[1]).await,
        503,
        "not ready before the fleet's color is confirmed"
    );
    let other = m[0].ctl_last("switch blue").await;
    assert!(other.starts_with("error: fleet detached"), "{other}");
    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy(SLOW).await;
    wait_status(&m[1], " connected").await;
    eventually("ready once confirmed", SLOW, || async {
        ready(&m[1]).await == 200
    })
    .await;
    assert_eq!(serves(&m[1]).await, "green");
}

#[tokio::test]
async fn a_paused_member_catches_up_after_a_compaction() {
    let etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    let m = start_fleet(&b, &etcd, 2, 1, "1s").await;
    m[1].signal(libc::SIGSTOP);
    wait_status(&m[0], "members=1/2").await;
    assert_eq!(m[0].ctl_last("switch green").await, "ok active=green");
    assert_eq!(m[0].ctl_last("rollback").await, "ok active=blue");
    assert_eq!(m[0].ctl_last("switch green").await, "ok active=green");
    etcd.compact().await;
    m[1].signal(libc::SIGCONT);
    let took = converge(&[&m[1]], "green").await;
    eprintln!("paused member on the fleet's color {took:?} after it resumed (history compacted)");
    wait_status(&m[1], "epoch=3 connected").await;
    assert!(
        m[1].log_text().contains("history compacted"),
        "{}",
        m[1].log_text()
    );
}

#[tokio::test]
async fn the_fleet_gate_and_the_fleet_watch_judge_every_member() {
    let etcd = EtcdCluster::start(3).await;
    let b = Backends::start().await;
    let rules = "gate_timeout = \"2s\"\nwatch = \"2s\"\nmax_error_rate = \"10%\"\n";
    let m = start_fleet(&b, &etcd, 2, 2, rules).await;
    let all: Vec<&Proxy> = m.iter().collect();

    // Green unhealthy: the gate refuses and nothing moves.
    b.green.set_healthy(false);
    for p in &all {
        eventually("green unhealthy", SLOW, || async {
            p.ctl("health")
                .await
                .iter()
                .any(|l| l.starts_with("green ") && l.contains(" unhealthy "))
        })
        .await;
    }
    let r = m[1].ctl("switch green").await;
    let last = r.last().expect("final");
    assert!(last.starts_with("error: refused: green not ready on the fleet after 2s (healthy on 0/2 members: edge-1: 0/1 servers healthy; edge-2: 0/1 servers healthy)"), "{r:?}");
    assert!(last.ends_with("traffic stays on blue"), "{last}");
    assert!(status(&m[0]).await.contains("ok active=blue phase=idle"));

    // Healthy but answering 500: the summed error rate over both members rolls the fleet back.
    b.green.set_healthy(true);
    for p in &all {
        p.wait_healthy().await;
    }
    b.green.set_status(Some(500));
    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = Vec::new();
    for p in &all {
        let (addr, stop) = (p.addr(), stop.clone());
        traffic.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let _ = c.try_request("GET", "/", &[], "").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let r = m[0].ctl("switch green").await;
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.expect("traffic task");
    }
    let last = r.last().expect("final");
    assert!(
        last.starts_with(
            "error: rolled back to blue by edge-1: green 100% errors over 2s > max_error_rate 10%"
        ),
        "{r:?}"
    );
    assert!(last.ends_with("on 2 members"), "{last}");
    assert!(
        r.iter()
            .any(|l| l.starts_with("watch: green ") && l.contains("requests on 2 members")),
        "{r:?}"
    );
    converge(&all, "blue").await;
    let d = decision(&etcd).await;
    assert_eq!(
        (d["epoch"].as_u64(), d["color"].as_str()),
        (Some(2), Some("blue")),
        "{d}"
    );
}
