//! Load client for `benches/run.sh` (issue 5). Not a criterion bench: `harness = false`, run by
//! the script as a plain program (`cargo bench --bench loadgen -- <mode> ...` works too).
//!
//! Modes:
//! - `ports N`: prints N free loopback TCP ports.
//! - `backend --name blue --addr 127.0.0.1:P`: one built-in demo app (HTTP + WebSocket echo)
//!   until killed; prints `ready` once listening.
//! - `http --url http://127.0.0.1:P/ --conns K --duration S`: K keep-alive HTTP/1.1
//!   connections hammer GET; every response is checked (status 200, `x-color` header, body equal
//!   to the color). With `--switches N` it also drives N blue-green switches while the load runs,
//!   either through switchyard's admin socket (`--admin SOCK`, `switch <color> force`) or by
//!   running a command (`--switch-exec CMD`, with `SWITCH_TO=<color>` in its environment; used
//!   for nginx's upstream rewrite + `nginx -s reload`). Per switch it measures the time from the
//!   command to the first response from the new color.
//! - `ws --url ws://127.0.0.1:P/ws --conns N`: opens N idle WebSockets, samples the proxy's RSS
//!   and CPU (`--pids`), runs a message round-trip test, and with `--admin SOCK` switches and
//!   times until every socket has been closed by the proxy and reconnected to the new color.
//! - `idle --url http://127.0.0.1:P/ --conns N --pids PID,...`: opens N HTTP/1.1 keep-alive
//!   connections in `--steps` equal steps (default 4); each sends one GET and reads the whole
//!   response (200 expected), then stays open and idle. Samples the proxy's RSS and open fds
//!   before the first step and after each (`--settle` seconds after the step's last response),
//!   reports bytes per idle connection at every step, then closes all and watches the RSS for
//!   up to `--release-wait` seconds until it is back near the baseline.
//! - `rate --url http://127.0.0.1:P/ --rate R --duration S`: GET at a constant R requests/s on
//!   a fixed timetable, latency measured from each request's scheduled send time (corrected for
//!   coordinated omission, like wrk2); see `loadgen/rate.rs`.
//! - `count --url http://127.0.0.1:P/ --requests N --on CMD --off CMD`: exactly N requests
//!   over warmed-up keep-alive connections between two commands (the callgrind window of
//!   `benches/profile.sh`); see `loadgen/count.rs`.
//!
//! Results are printed for humans and, with `--out FILE`, written as `key=value` lines.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

// A bench target's root looks for modules beside it, where cargo would take them for benches.
#[path = "loadgen/blocking_http.rs"]
mod blocking_http;
#[path = "loadgen/count.rs"]
mod count;
#[path = "loadgen/rate.rs"]
mod rate;

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

const COLORS: [&str; 2] = ["blue", "green"];

fn color_index(name: &[u8]) -> Option<usize> {
    COLORS.iter().position(|c| c.as_bytes() == name)
}

// ---------------------------------------------------------------------------------------------
// Arguments and output

struct Args {
    mode: String,
    opts: HashMap<String, String>,
}

impl Args {
    fn parse() -> Res<Args> {
        // `cargo bench` appends `--bench`; ignore it.
        let raw: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let mut it = raw.into_iter();
        let mode = it
            .next()
            .ok_or("usage: loadgen <ports|backend|http|ws|idle|rate|count> [--key value]...")?;
        let mut opts = HashMap::new();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                return Err(format!("unexpected argument {k:?}").into());
            };
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            opts.insert(key.to_string(), v);
        }
        Ok(Args { mode, opts })
    }

    fn get<T: FromStr>(&self, key: &str, default: T) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.opts.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("--{key} {v:?}: {e}").into()),
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.opts.get(key).map(|s| s.as_str())
    }

    fn need(&self, key: &str) -> Res<&str> {
        self.str(key)
            .ok_or_else(|| format!("--{key} is required").into())
    }
}

/// `--url`'s address, host:port and path. Resolved with the blocking resolver: the URLs
/// are loopback literals given on the command line, so there is nothing to wait for.
pub fn target(url: &str) -> Res<(SocketAddr, String, String)> {
    let url: http::Uri = url.parse()?;
    let authority = url.authority().ok_or("--url needs host:port")?.to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority.as_str())?
        .next()
        .ok_or("--url: cannot resolve")?;
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Ok((addr, authority, path.to_string()))
}

/// `key=value` results, written to `--out` and echoed.
#[derive(Default)]
struct Report(BTreeMap<String, String>);

impl Report {
    fn set(&mut self, k: &str, v: impl std::fmt::Display) {
        self.0.insert(k.to_string(), v.to_string());
    }

    fn write(&self, path: Option<&str>) -> Res<()> {
        let mut text = String::new();
        for (k, v) in &self.0 {
            let _ = writeln!(text, "{k}={v}");
        }
        if let Some(p) = path {
            std::fs::write(p, &text)?;
        }
        Ok(())
    }
}

/// Percentile of a sorted slice (nearest rank); 0 when empty.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    // Blocking threads, no runtime: precise sleeps (loadgen/rate.rs), exact windows
    // (loadgen/count.rs).
    let blocking = match args.mode.as_str() {
        "rate" => Some(rate::rate_mode as fn(&Args) -> Res<()>),
        "count" => Some(count::count_mode as fn(&Args) -> Res<()>),
        _ => None,
    };
    if let Some(mode) = blocking {
        if let Err(e) = mode(&args) {
            eprintln!("loadgen {}: {e}", args.mode);
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.get("threads", 1usize).unwrap_or(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = rt.block_on(async {
        match args.mode.as_str() {
            "ports" => ports(&args),
            "backend" => backend(&args).await,
            "http" => http_mode(&args).await,
            "ws" => ws_mode(&args).await,
            "idle" => idle_mode(&args).await,
            m => Err(format!("unknown mode {m:?}").into()),
        }
    });
    if let Err(e) = res {
        eprintln!("loadgen {}: {e}", args.mode);
        std::process::exit(1);
    }
    // Thousands of open sockets and tasks: let the kernel close them.
    std::process::exit(0);
}

fn ports(args: &Args) -> Res<()> {
    let n: usize = args.get("n", 1)?;
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let list: Vec<String> = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port().to_string()))
        .collect::<Result<_, _>>()?;
    println!("{}", list.join(" "));
    Ok(())
}

async fn backend(args: &Args) -> Res<()> {
    let name = args.need("name")?;
    let addr: SocketAddr = args.need("addr")?.parse()?;
    let h = switchyard::demo::DemoApp::start(name, addr).await?;
    println!("ready {name} {}", h.addr());
    std::future::pending::<()>().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP load with optional switches

struct Shared {
    epoch: Instant,
    stop: AtomicBool,
    ok: [AtomicU64; 2],
    non200: AtomicU64,
    bad_body: AtomicU64,
    send_errors: AtomicU64,
    idle_closes: AtomicU64,
    connect_errors: AtomicU64,
    connects: AtomicU64,
    /// Nanoseconds since `epoch` (+1, so 0 means "not yet") of the first response of each color
    /// since the last reset; the switch loop resets the target's before each command.
    first_seen: [AtomicU64; 2],
    /// Nanoseconds since `epoch` of the latest response of each color.
    last_seen: [AtomicU64; 2],
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn error(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *e.entry(what).or_default() += 1;
    }
}

fn short_error(e: &dyn Error) -> String {
    // hyper's Display is terse ("connection closed before message completed"); keep the first
    // source too, truncated, so different causes stay distinguishable.
    let mut s = e.to_string();
    if let Some(src) = e.source() {
        let _ = write!(s, ": {src}");
    }
    s.chars().take(100).collect()
}

async fn http_worker(sh: Arc<Shared>, addr: SocketAddr, host: String, path: String) {
    while !sh.stop.load(Ordering::Relaxed) {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                sh.error(&sh.connect_errors, format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(x) => x,
                Err(e) => {
                    sh.error(
                        &sh.connect_errors,
                        format!("handshake: {}", short_error(&e)),
                    );
                    continue;
                }
            };
        sh.connects.fetch_add(1, Ordering::Relaxed);
        let conn = tokio::spawn(conn);
        while !sh.stop.load(Ordering::Relaxed) {
            if sender.ready().await.is_err() {
                // Closed while idle, before a request was written: nothing lost, a client
                // simply reconnects. Counted apart from failures.
                sh.idle_closes.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let req = http::Request::get(path.as_str())
                .header(http::header::HOST, host.as_str())
                .body(Empty::<Bytes>::new())
                .expect("static request");
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    sh.error(&sh.send_errors, short_error(&e));
                    break;
                }
            };
            let status = resp.status();
            let color = resp
                .headers()
                .get("x-color")
                .and_then(|v| color_index(v.as_bytes()));
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    sh.error(&sh.send_errors, format!("body: {}", short_error(&e)));
                    break;
                }
            };
            if status != http::StatusCode::OK {
                sh.error(&sh.non200, format!("status {}", status.as_u16()));
                continue;
            }
            let Some(c) = color.filter(|&c| body.trim_ascii() == COLORS[c].as_bytes()) else {
                sh.error(
                    &sh.bad_body,
                    "200 without a matching x-color and body".into(),
                );
                continue;
            };
            sh.ok[c].fetch_add(1, Ordering::Relaxed);
            let now = sh.now();
            if sh.first_seen[c].load(Ordering::Relaxed) == 0 {
                let _ =
                    sh.first_seen[c].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
            sh.last_seen[c].fetch_max(now, Ordering::Relaxed);
        }
        conn.abort();
    }
}

#[derive(Default)]
struct SwitchStats {
    /// Command sent → first response from the new color.
    latency_ns: Vec<u64>,
    /// Command sent → final `ok` (switchyard: includes the watch window) or command exit.
    command_ns: Vec<u64>,
    /// In-process swap, from `swap: ... in NNus`.
    swap_us: Vec<u64>,
    /// Command sent → last response from the old color seen before the next switch.
    old_until_ns: Vec<u64>,
    errors: u64,
    timeouts: u64,
    done: u64,
}

enum Switcher {
    Admin(
        BufReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
    ),
    Exec(String),
}

fn parse_active(line: &str) -> Option<usize> {
    let rest = line.split("active=").nth(1)?;
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    color_index(word.as_bytes())
}

/// `swap: active=green (was blue) in 12us` → 12.
fn parse_swap_us(line: &str) -> Option<u64> {
    let rest = line.rsplit(" in ").next()?;
    rest.trim().strip_suffix("us")?.trim().parse().ok()
}

impl Switcher {
    async fn admin_command(&mut self, cmd: &str, progress: &mut Vec<String>) -> Res<String> {
        let Switcher::Admin(r, w) = self else {
            return Err("not an admin switcher".into());
        };
        w.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Err("admin socket closed".into());
            }
            let l = line.trim_end().to_string();
            if l == "ok" || l.starts_with("ok ") || l.starts_with("error:") {
                return Ok(l);
            }
            progress.push(l);
        }
    }

    /// Runs one switch to `to`; `Ok(Some(swap_us))`, or `Err` when it failed.
    async fn switch(&mut self, to: usize) -> Res<Option<u64>> {
        match self {
            Switcher::Admin(..) => {
                let mut progress = Vec::new();
                let last = self
                    .admin_command(&format!("switch {} force", COLORS[to]), &mut progress)
                    .await?;
                if last.starts_with("error:") {
                    return Err(last.into());
                }
                Ok(progress
                    .iter()
                    .find_map(|l| l.starts_with("swap:").then(|| parse_swap_us(l)).flatten()))
            }
            Switcher::Exec(cmd) => {
                let out = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd.as_str())
                    .env("SWITCH_TO", COLORS[to])
                    .output()
                    .await?;
                if !out.status.success() {
                    return Err(format!(
                        "switch command failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                    .into());
                }
                Ok(None)
            }
        }
    }

    async fn active(&mut self, fallback: usize) -> usize {
        if let Switcher::Admin(..) = self {
            let mut progress = Vec::new();
            if let Ok(l) = self.admin_command("status", &mut progress).await {
                return parse_active(&l).unwrap_or(fallback);
            }
        }
        fallback
    }
}

async fn run_switches(
    sh: Arc<Shared>,
    mut sw: Switcher,
    n: u64,
    initial: usize,
    pause: Duration,
) -> SwitchStats {
    let mut st = SwitchStats::default();
    let mut current = sw.active(initial).await;
    for i in 0..n {
        let to = 1 - current;
        sh.first_seen[to].store(0, Ordering::SeqCst);
        let t0 = sh.now();
        match sw.switch(to).await {
            Ok(swap) => {
                st.command_ns.push(sh.now() - t0);
                if let Some(us) = swap {
                    st.swap_us.push(us);
                }
            }
            Err(e) => {
                eprintln!("  switch {} to {}: {e}", i + 1, COLORS[to]);
                st.errors += 1;
                current = sw.active(current).await;
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            let s = sh.first_seen[to].load(Ordering::SeqCst);
            if s != 0 || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        if seen == 0 {
            st.timeouts += 1;
            eprintln!(
                "  switch {}: no response from {} within 5s",
                i + 1,
                COLORS[to]
            );
        } else {
            st.latency_ns.push(seen.saturating_sub(t0));
        }
        current = to;
        st.done += 1;
        tokio::time::sleep(pause).await;
        let old_last = sh.last_seen[1 - to].load(Ordering::SeqCst);
        st.old_until_ns.push(old_last.saturating_sub(t0));
    }
    st
}

async fn http_mode(args: &Args) -> Res<()> {
    let (addr, authority, path) = target(args.need("url")?)?;
    let conns: usize = args.get("conns", 32)?;
    let duration = Duration::from_secs_f64(args.get("duration", 10.0)?);
    let switches: u64 = args.get("switches", 0)?;
    let pause = Duration::from_millis(args.get("pause-ms", 100)?);
    let initial = color_index(args.str("initial").unwrap_or("blue").as_bytes())
        .ok_or("--initial must be blue or green")?;
    let label = args.str("label").unwrap_or("load").to_string();

    let sh = Arc::new(Shared {
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
        ok: Default::default(),
        non200: AtomicU64::new(0),
        bad_body: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        idle_closes: AtomicU64::new(0),
        connect_errors: AtomicU64::new(0),
        connects: AtomicU64::new(0),
        first_seen: Default::default(),
        last_seen: Default::default(),
        errors: Mutex::new(BTreeMap::new()),
    });
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(http_worker(
                sh.clone(),
                addr,
                authority.clone(),
                path.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let stats = if switches > 0 {
        let sw = if let Some(sock) = args.str("admin") {
            let (r, w) = UnixStream::connect(sock).await?.into_split();
            Switcher::Admin(BufReader::new(r), w)
        } else if let Some(cmd) = args.str("switch-exec") {
            Switcher::Exec(cmd.to_string())
        } else {
            return Err("--switches needs --admin SOCK or --switch-exec CMD".into());
        };
        // Warm up so every connection is established before the first switch.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = run_switches(sh.clone(), sw, switches, initial, pause).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some(st)
    } else {
        tokio::time::sleep(duration).await;
        None
    };
    sh.stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    for w in workers {
        // Workers finish their current request; one stuck on a dead connection is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }

    let mut rep = Report::default();
    let ok: Vec<u64> = sh.ok.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let total_ok = ok[0] + ok[1];
    let non200 = sh.non200.load(Ordering::SeqCst);
    let bad_body = sh.bad_body.load(Ordering::SeqCst);
    let send_errors = sh.send_errors.load(Ordering::SeqCst);
    let failed = non200 + bad_body + send_errors;
    rep.set("ok", total_ok);
    rep.set("ok_blue", ok[0]);
    rep.set("ok_green", ok[1]);
    rep.set("non200", non200);
    rep.set("bad_body", bad_body);
    rep.set("send_errors", send_errors);
    rep.set("failed", failed);
    rep.set("idle_closes", sh.idle_closes.load(Ordering::SeqCst));
    rep.set("connect_errors", sh.connect_errors.load(Ordering::SeqCst));
    rep.set("connects", sh.connects.load(Ordering::SeqCst));
    rep.set("seconds", format!("{:.2}", elapsed.as_secs_f64()));
    rep.set(
        "rps",
        format!("{:.0}", total_ok as f64 / elapsed.as_secs_f64()),
    );
    println!(
        "{label}: {total_ok} ok (blue {}, green {}) in {:.1}s = {:.0} req/s; failed {failed} \
         (transport {send_errors}, non-200 {non200}, bad body {bad_body}); \
         {} connections opened, {} closed while idle",
        ok[0],
        ok[1],
        elapsed.as_secs_f64(),
        total_ok as f64 / elapsed.as_secs_f64(),
        sh.connects.load(Ordering::SeqCst),
        sh.idle_closes.load(Ordering::SeqCst)
    );
    for (what, n) in sh.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("  {n} x {what}");
    }
    if let Some(mut st) = stats {
        st.latency_ns.sort_unstable();
        st.command_ns.sort_unstable();
        st.swap_us.sort_unstable();
        st.old_until_ns.sort_unstable();
        rep.set("switches", st.done);
        rep.set("switch_errors", st.errors);
        rep.set("switch_timeouts", st.timeouts);
        for (k, v) in [
            ("latency", &st.latency_ns),
            ("command", &st.command_ns),
            ("old_until", &st.old_until_ns),
        ] {
            rep.set(&format!("{k}_min_ms"), ms(v.first().copied().unwrap_or(0)));
            rep.set(&format!("{k}_p50_ms"), ms(pct(v, 50.0)));
            rep.set(&format!("{k}_p99_ms"), ms(pct(v, 99.0)));
            rep.set(&format!("{k}_max_ms"), ms(v.last().copied().unwrap_or(0)));
        }
        if !st.swap_us.is_empty() {
            rep.set("swap_us_p50", pct(&st.swap_us, 50.0));
            rep.set("swap_us_max", st.swap_us.last().copied().unwrap_or(0));
        }
        println!(
            "  {} switches ({} errors, {} timeouts); command -> first new-color response: \
             min {} / p50 {} / max {} ms; command -> reply: p50 {} ms; \
             last old-color response p50 {} / max {} ms after the command{}",
            st.done,
            st.errors,
            st.timeouts,
            ms(st.latency_ns.first().copied().unwrap_or(0)),
            ms(pct(&st.latency_ns, 50.0)),
            ms(st.latency_ns.last().copied().unwrap_or(0)),
            ms(pct(&st.command_ns, 50.0)),
            ms(pct(&st.old_until_ns, 50.0)),
            ms(st.old_until_ns.last().copied().unwrap_or(0)),
            if st.swap_us.is_empty() {
                String::new()
            } else {
                format!(
                    "; in-process swap p50 {} us, max {} us",
                    pct(&st.swap_us, 50.0),
                    st.swap_us.last().copied().unwrap_or(0)
                )
            }
        );
    }
    rep.write(args.str("out"))
}

// ---------------------------------------------------------------------------------------------
// WebSocket scale

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Idle,
    Rtt,
    Switch,
}

struct WsShared {
    epoch: Instant,
    url: String,
    addr: SocketAddr,
    connect_gate: Semaphore,
    opened: AtomicUsize,
    open_failed: AtomicUsize,
    rtt_done: AtomicUsize,
    rtt_ns: Mutex<Vec<u64>>,
    unexpected_closes: AtomicUsize,
    /// During the switch: close frames received, by code (1006 = no close frame).
    close_codes: Mutex<BTreeMap<u16, u64>>,
    first_close_ns: AtomicU64,
    last_close_ns: AtomicU64,
    handed: AtomicUsize,
    handed_old: AtomicUsize,
    last_handover_ns: AtomicU64,
    reconnect_failed: AtomicUsize,
    target: AtomicUsize,
}

impl WsShared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Connects and reads the greeting; the color the socket landed on.
async fn ws_open(sh: &WsShared) -> Res<(Ws, usize)> {
    let mut last: Option<BoxError> = None;
    for attempt in 0..5u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        let permit = sh.connect_gate.acquire().await?;
        let res: Res<(Ws, usize)> = async {
            let tcp = TcpStream::connect(sh.addr).await?;
            let _ = tcp.set_nodelay(true);
            let (mut ws, _) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::client_async(sh.url.as_str(), tcp),
            )
            .await??;
            let greeting = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await?
                .ok_or("closed before the greeting")??;
            let text = greeting.into_text()?;
            let color = text
                .strip_prefix("hello from ")
                .and_then(|c| color_index(c.as_bytes()))
                .ok_or_else(|| format!("unexpected greeting {text:?}"))?;
            Ok((ws, color))
        }
        .await;
        drop(permit);
        match res {
            Ok(x) => return Ok(x),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| "no attempt".into()))
}

async fn ws_task(sh: Arc<WsShared>, id: usize, mut phase: watch::Receiver<Phase>) {
    let Ok((mut ws, _)) = ws_open(&sh).await else {
        sh.open_failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    sh.opened.fetch_add(1, Ordering::SeqCst);
    let mut rtt_sent = false;
    loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase >= Phase::Rtt && !rtt_sent {
            rtt_sent = true;
            let msg = format!("rtt {id}");
            let t = Instant::now();
            if ws.send(Message::Text(msg.clone())).await.is_ok() {
                // The echo is the next data message.
                if let Some(Ok(Message::Text(echo))) = ws.next().await {
                    if echo == msg {
                        let d = t.elapsed().as_nanos() as u64;
                        sh.rtt_ns.lock().unwrap_or_else(|p| p.into_inner()).push(d);
                    }
                }
            }
            sh.rtt_done.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let code = match msg {
                    Some(Ok(Message::Close(frame))) => frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => 1006,
                };
                if *phase.borrow() != Phase::Switch {
                    sh.unexpected_closes.fetch_add(1, Ordering::SeqCst);
                } else {
                    let now = sh.now();
                    let _ = sh.first_close_ns.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
                    sh.last_close_ns.fetch_max(now, Ordering::SeqCst);
                    *sh.close_codes.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
                }
                // Like a real client: reconnect at once.
                drop(ws);
                match ws_open(&sh).await {
                    Ok((new, color)) => {
                        ws = new;
                        if *phase.borrow() == Phase::Switch {
                            if color == sh.target.load(Ordering::SeqCst) {
                                sh.handed.fetch_add(1, Ordering::SeqCst);
                                sh.last_handover_ns.fetch_max(sh.now(), Ordering::SeqCst);
                            } else {
                                sh.handed_old.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Err(_) => {
                        sh.reconnect_failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    }
}

/// (VmRSS kB, utime+stime ticks) of one process, all threads.
fn proc_sample(pid: u32) -> Res<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Ok((rss, ticks))
}

fn procs_sample(pids: &[u32]) -> Res<(u64, u64)> {
    let mut total = (0, 0);
    for &p in pids {
        let (r, t) = proc_sample(p)?;
        total.0 += r;
        total.1 += t;
    }
    Ok(total)
}

async fn ws_mode(args: &Args) -> Res<()> {
    let url = args.need("url")?.to_string();
    let (addr, _, _) = target(&url)?;
    let n: usize = args.get("conns", 1000)?;
    let idle = Duration::from_secs_f64(args.get("idle", 5.0)?);
    let label = args.str("label").unwrap_or("ws").to_string();
    let pids: Vec<u32> = args
        .str("pids")
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let clk_tck = {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    };

    let sh = Arc::new(WsShared {
        epoch: Instant::now(),
        url,
        addr,
        connect_gate: Semaphore::new(args.get("connect-concurrency", 128)?),
        opened: AtomicUsize::new(0),
        open_failed: AtomicUsize::new(0),
        rtt_done: AtomicUsize::new(0),
        rtt_ns: Mutex::new(Vec::with_capacity(n)),
        unexpected_closes: AtomicUsize::new(0),
        close_codes: Mutex::new(BTreeMap::new()),
        first_close_ns: AtomicU64::new(0),
        last_close_ns: AtomicU64::new(0),
        handed: AtomicUsize::new(0),
        handed_old: AtomicUsize::new(0),
        last_handover_ns: AtomicU64::new(0),
        reconnect_failed: AtomicUsize::new(0),
        target: AtomicUsize::new(1),
    });
    let mut rep = Report::default();
    rep.set("conns", n);

    let base = if pids.is_empty() {
        None
    } else {
        Some(procs_sample(&pids)?)
    };
    let fds0 = procs_fds(&pids);
    if let Some((rss, _)) = base {
        rep.set("rss_before_kb", rss);
        rep.set("fds_before", fds0);
    }

    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let t_open = Instant::now();
    for id in 0..n {
        tokio::spawn(ws_task(sh.clone(), id, phase_rx.clone()));
    }
    // Wait until every socket is open or has given up; stop waiting when nothing has moved
    // for 15 s (a proxy out of file descriptors) and go on with what is open.
    let (mut last_done, mut last_move) = (0, Instant::now());
    loop {
        let done = sh.opened.load(Ordering::SeqCst) + sh.open_failed.load(Ordering::SeqCst);
        if done >= n {
            break;
        }
        if done != last_done {
            (last_done, last_move) = (done, Instant::now());
        } else if last_move.elapsed() > Duration::from_secs(15) {
            eprintln!("{label}: only {done}/{n} WebSockets settled; going on with the open ones");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened = sh.opened.load(Ordering::SeqCst);
    if opened == 0 {
        return Err("no WebSocket could be opened".into());
    }
    let open_s = t_open.elapsed().as_secs_f64();
    rep.set("opened", opened);
    rep.set("open_failed", sh.open_failed.load(Ordering::SeqCst));
    rep.set("open_seconds", format!("{open_s:.2}"));
    println!(
        "{label}: {opened}/{n} WebSockets open in {open_s:.1}s ({} failed)",
        sh.open_failed.load(Ordering::SeqCst)
    );

    // At rest: let the open burst settle, then measure over an idle window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some((rss0, _)) = base {
        let (_, t1) = procs_sample(&pids)?;
        tokio::time::sleep(idle).await;
        let (rss, t2) = procs_sample(&pids)?;
        let cpu = (t2 - t1) as f64 / clk_tck / idle.as_secs_f64() * 100.0;
        let per = (rss.saturating_sub(rss0) as f64 * 1024.0) / opened.max(1) as f64;
        let fds = procs_fds(&pids);
        let fds_per = (fds as f64 - fds0 as f64) / opened.max(1) as f64;
        rep.set("rss_kb", rss);
        rep.set("rss_mb", format!("{:.1}", rss as f64 / 1024.0));
        rep.set("bytes_per_ws", format!("{per:.0}"));
        rep.set("fds", fds);
        rep.set("fds_per_ws", format!("{fds_per:.2}"));
        rep.set("idle_cpu_pct", format!("{cpu:.2}"));
        println!(
            "  proxy at rest: RSS {:.1} MB ({:.1} MB before, {per:.0} bytes per WebSocket), \
             {fds} fds ({fds_per:.2} per WebSocket), CPU {cpu:.2}% over {:.0}s",
            rss as f64 / 1024.0,
            rss0 as f64 / 1024.0,
            idle.as_secs_f64()
        );
    }

    // Round trip: every socket sends one message at once; then one socket 1000 times in a row.
    let t_rtt = Instant::now();
    phase_tx.send_replace(Phase::Rtt);
    while sh.rtt_done.load(Ordering::SeqCst) < opened && t_rtt.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let burst_s = t_rtt.elapsed().as_secs_f64();
    let mut rtts = std::mem::take(&mut *sh.rtt_ns.lock().unwrap_or_else(|p| p.into_inner()));
    rtts.sort_unstable();
    rep.set("rtt_ok", rtts.len());
    rep.set("burst_seconds", format!("{burst_s:.3}"));
    rep.set("burst_p50_ms", ms(pct(&rtts, 50.0)));
    rep.set("burst_p99_ms", ms(pct(&rtts, 99.0)));
    let (mut one, _) = ws_open(&sh).await?;
    let mut serial = Vec::with_capacity(1000);
    for i in 0..1000 {
        let t = Instant::now();
        one.send(Message::Text(format!("serial {i}"))).await?;
        match one.next().await {
            Some(Ok(Message::Text(_))) => serial.push(t.elapsed().as_nanos() as u64),
            other => return Err(format!("serial round trip {i}: {other:?}").into()),
        }
    }
    drop(one);
    serial.sort_unstable();
    rep.set("serial_p50_ms", ms(pct(&serial, 50.0)));
    rep.set("serial_p99_ms", ms(pct(&serial, 99.0)));
    println!(
        "  round trip: {}/{opened} echoed in a burst of all sockets at once in {burst_s:.2}s \
         (p50 {} ms, p99 {} ms); one socket, 1000 in a row: p50 {} ms, p99 {} ms",
        rtts.len(),
        ms(pct(&rtts, 50.0)),
        ms(pct(&rtts, 99.0)),
        ms(pct(&serial, 50.0)),
        ms(pct(&serial, 99.0))
    );
    if let Some(pids0) = pids.first() {
        let (rss, _) = proc_sample(*pids0).unwrap_or((0, 0));
        let total = procs_sample(&pids).map(|x| x.0).unwrap_or(rss);
        rep.set("rss_after_rtt_kb", total);
    }
    rep.set(
        "unexpected_closes",
        sh.unexpected_closes.load(Ordering::SeqCst),
    );

    if let Some(sock) = args.str("admin") {
        let to = color_index(args.str("to").unwrap_or("green").as_bytes())
            .ok_or("--to must be blue or green")?;
        let timeout = Duration::from_secs_f64(args.get("handover-timeout", 60.0)?);
        sh.target.store(to, Ordering::SeqCst);
        let (r, w) = UnixStream::connect(sock).await?.into_split();
        let mut sw = Switcher::Admin(BufReader::new(r), w);
        phase_tx.send_replace(Phase::Switch);
        let t0 = sh.now();
        let reply = tokio::spawn(async move {
            let mut progress = Vec::new();
            let last = sw
                .admin_command(&format!("switch {} force", COLORS[to]), &mut progress)
                .await;
            (last, progress, Instant::now())
        });
        let start = Instant::now();
        while sh.handed.load(Ordering::SeqCst) < opened && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let handed = sh.handed.load(Ordering::SeqCst);
        let first_close = sh.first_close_ns.load(Ordering::SeqCst);
        let last = sh.last_handover_ns.load(Ordering::SeqCst);
        let codes = sh
            .close_codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect::<Vec<_>>()
            .join(",");
        rep.set("handed_over", handed);
        rep.set("handed_to_old", sh.handed_old.load(Ordering::SeqCst));
        rep.set(
            "reconnect_failed",
            sh.reconnect_failed.load(Ordering::SeqCst),
        );
        rep.set(
            "close_codes",
            if codes.is_empty() {
                "none".into()
            } else {
                codes.clone()
            },
        );
        if first_close > 0 {
            let last_close = sh.last_close_ns.load(Ordering::SeqCst);
            rep.set(
                "close_spread_ms",
                ms(last_close.saturating_sub(first_close)),
            );
            rep.set(
                "first_close_s",
                format!("{:.3}", (first_close - t0) as f64 / 1e9),
            );
        }
        if handed > 0 {
            rep.set("handover_all_s", format!("{:.3}", (last - t0) as f64 / 1e9));
            if first_close > 0 {
                rep.set(
                    "handover_after_first_close_s",
                    format!("{:.3}", (last.saturating_sub(first_close)) as f64 / 1e9),
                );
            }
        }
        let reply = tokio::time::timeout(Duration::from_secs(30), reply).await;
        let mut swap = String::new();
        match reply {
            Ok(Ok((Ok(last_line), progress, _))) => {
                if let Some(us) = progress
                    .iter()
                    .find(|l| l.starts_with("swap:"))
                    .and_then(|l| parse_swap_us(l))
                {
                    rep.set("swap_us", us);
                    swap = format!(", in-process swap {us} us");
                }
                rep.set("switch_reply", last_line.replace(' ', "_"));
            }
            Ok(Ok((Err(e), _, _))) => {
                rep.set("switch_reply", format!("error:{e}").replace(' ', "_"))
            }
            _ => rep.set("switch_reply", "no_reply_within_30s"),
        }
        println!(
            "  switch to {} with {opened} open: {handed}/{opened} handed over (closed by the \
             proxy and reconnected to {}) {}; first close after {}; close codes {}{swap}",
            COLORS[to],
            COLORS[to],
            if handed > 0 {
                format!("in {:.3}s", (last - t0) as f64 / 1e9)
            } else {
                format!("within {:.0}s", timeout.as_secs_f64())
            },
            if first_close > 0 {
                format!("{:.3}s", (first_close - t0) as f64 / 1e9)
            } else {
                "never".into()
            },
            if codes.is_empty() { "none" } else { &codes }
        );
    }
    rep.write(args.str("out"))
}

// ---------------------------------------------------------------------------------------------
// Idle keep-alive connections

/// Open file descriptors of the processes (entries of /proc/PID/fd).
fn procs_fds(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .map(|d| d.count() as u64)
        .sum()
}

/// One open keep-alive connection: the request sender (dropping it closes the connection)
/// and the task driving the connection, which ends if the proxy closes it.
struct IdleConn {
    _sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

/// Connects, sends one GET and reads the whole response; the connection, left open, when the
/// status is 200; otherwise a short description of what went wrong.
async fn idle_open(addr: SocketAddr, host: &str, path: &str) -> Result<IdleConn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {}", short_error(&e)))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = async {
        let req = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| short_error(&e))?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {}", short_error(&e)))?;
        if status != http::StatusCode::OK {
            return Err(format!("status {}", status.as_u16()));
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => Ok(IdleConn {
            _sender: sender,
            conn,
        }),
        Err(e) => {
            conn.abort();
            Err(e)
        }
    }
}

async fn idle_mode(args: &Args) -> Res<()> {
    let (addr, authority, path) = target(args.need("url")?)?;
    let n: usize = args.get("conns", 10_000)?;
    let steps: usize = args.get("steps", 4)?;
    if steps == 0 || n < steps {
        return Err("--conns must be at least --steps, and --steps at least 1".into());
    }
    let settle = Duration::from_secs_f64(args.get("settle", 1.0)?);
    let open_timeout = Duration::from_secs_f64(args.get("timeout", 10.0)?);
    let gate = Arc::new(Semaphore::new(args.get("connect-concurrency", 128)?));
    let label = args.str("label").unwrap_or("idle").to_string();
    let pids: Vec<u32> = args
        .need("pids")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    if pids.is_empty() {
        return Err("--pids needs at least one process id".into());
    }

    let mut rep = Report::default();
    rep.set("conns", n);
    rep.set("steps", steps);
    let (rss0, _) = procs_sample(&pids)?;
    let fds0 = procs_fds(&pids);
    rep.set("baseline_rss_kb", rss0);
    rep.set("baseline_rss_mb", format!("{:.1}", rss0 as f64 / 1024.0));
    rep.set("baseline_fds", fds0);
    println!(
        "{label}: baseline RSS {:.1} MB, {fds0} fds; opening {n} keep-alive connections in \
         {steps} steps",
        rss0 as f64 / 1024.0
    );

    let host = Arc::new(authority);
    let path = Arc::new(path);
    let mut held: Vec<IdleConn> = Vec::with_capacity(n);
    let mut failed = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut open_time = Duration::ZERO;
    let (mut prev_rss, mut prev_conns) = (rss0, 0usize);
    let mut per_conn = Vec::with_capacity(steps);
    for step in 1..=steps {
        let target = n * step / steps;
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in held.len() + failed as usize..target {
            let (gate, host, path) = (gate.clone(), host.clone(), path.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                tokio::time::timeout(open_timeout, idle_open(addr, &host, &path))
                    .await
                    .unwrap_or_else(|_| Err(format!("no response within {open_timeout:?}")))
            });
        }
        while let Some(r) = set.join_next().await {
            let e = match r {
                Ok(Ok(c)) => {
                    held.push(c);
                    continue;
                }
                Ok(Err(e)) => e,
                Err(e) => format!("task: {e}"),
            };
            failed += 1;
            *errors.entry(e).or_default() += 1;
        }
        open_time += t.elapsed();
        // Let the proxy finish with the step's last requests (upstream connection back to
        // the pool, buffers released) before reading its memory.
        tokio::time::sleep(settle).await;
        let (rss, _) = procs_sample(&pids)?;
        let fds = procs_fds(&pids);
        let conns = held.len();
        let per = rss.saturating_sub(rss0) as f64 * 1024.0 / conns.max(1) as f64;
        let marginal = (rss as f64 - prev_rss as f64) * 1024.0 / (conns - prev_conns).max(1) as f64;
        let fds_per = (fds as f64 - fds0 as f64) / conns.max(1) as f64;
        per_conn.push(per);
        rep.set(&format!("step{step}_conns"), conns);
        rep.set(&format!("step{step}_rss_kb"), rss);
        rep.set(
            &format!("step{step}_rss_mb"),
            format!("{:.1}", rss as f64 / 1024.0),
        );
        rep.set(&format!("step{step}_bytes_per_conn"), format!("{per:.0}"));
        rep.set(
            &format!("step{step}_marginal_bytes"),
            format!("{marginal:.0}"),
        );
        rep.set(&format!("step{step}_fds"), fds);
        rep.set(&format!("step{step}_fds_per_conn"), format!("{fds_per:.2}"));
        println!(
            "  {conns:>6} open ({failed} failed): RSS {:.1} MB = {per:.0} bytes per connection \
             over the baseline ({marginal:.0} per connection of this step); {fds} fds \
             ({fds_per:.2} per connection)",
            rss as f64 / 1024.0
        );
        (prev_rss, prev_conns) = (rss, conns);
    }
    let ok = held.len();
    if ok == 0 {
        return Err("no connection got a 200".into());
    }
    let open_at_end = held.iter().filter(|c| !c.conn.is_finished()).count();
    let first = per_conn.first().copied().unwrap_or(0.0);
    let last = per_conn.last().copied().unwrap_or(0.0);
    rep.set("ok", ok);
    rep.set("failed", failed);
    rep.set("open_at_end", open_at_end);
    rep.set("open_seconds", format!("{:.2}", open_time.as_secs_f64()));
    rep.set(
        "flat_ratio",
        if first > 0.0 {
            format!("{:.2}", last / first)
        } else {
            "-".into()
        },
    );
    println!(
        "  {ok}/{n} got a 200 ({failed} failed) in {:.1}s of opening; {open_at_end} still open \
         after the last sample; bytes per connection last step / first step: {}",
        open_time.as_secs_f64(),
        if first > 0.0 {
            format!("{:.2}", last / first)
        } else {
            "-".into()
        }
    );
    for (what, k) in &errors {
        println!("  {k} x {what}");
    }

    // Close everything and wait until the proxy has let go of the sockets. Then watch its RSS
    // for up to `--release-wait` seconds, until it is back within a tenth of the growth over
    // the baseline: an allocator may hand freed memory back to the kernel only after a delay.
    for c in &held {
        c.conn.abort();
    }
    drop(held);
    let t = Instant::now();
    let mut fds = procs_fds(&pids);
    while fds > fds0 + 200 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds = procs_fds(&pids);
    }
    let closed_s = t.elapsed().as_secs_f64();
    let release_wait = Duration::from_secs_f64(args.get("release-wait", 5.0)?);
    let near = rss0 + prev_rss.saturating_sub(rss0) / 10;
    let (mut rss, _) = procs_sample(&pids)?;
    while rss > near && t.elapsed() < release_wait {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = procs_sample(&pids)?.0;
    }
    let rss_s = t.elapsed().as_secs_f64();
    let fds = procs_fds(&pids);
    rep.set("closed_rss_kb", rss);
    rep.set("closed_rss_mb", format!("{:.1}", rss as f64 / 1024.0));
    rep.set("closed_rss_after_s", format!("{rss_s:.1}"));
    rep.set("closed_fds", fds);
    println!(
        "  all closed: {fds} fds {closed_s:.1}s after the close; RSS {:.1} MB {rss_s:.1}s after \
         the close ({})",
        rss as f64 / 1024.0,
        if rss <= near {
            "back within a tenth of the growth over the baseline"
        } else {
            "still above a tenth of the growth over the baseline at the end of --release-wait"
        }
    );
    rep.write(args.str("out"))
}
