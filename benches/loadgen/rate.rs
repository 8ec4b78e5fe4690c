//! `loadgen rate`: latency at a constant request rate, corrected for coordinated omission.
//!
//! A closed-loop client (wrk) sends the next request only when the previous answer is back, so
//! a stall delays the requests that would have been sent during it, and their waiting is never
//! measured: one 10 ms stall costs one slow sample instead of the hundreds a real client
//! population would see. Here every request has a send time fixed in advance on a timetable
//! (request i at `start + i / rate`, dealt round-robin over `--conns` keep-alive connections,
//! like wrk2), and its latency is measured from that scheduled time, so a request held up
//! behind a slow one is charged the wait. The rate must stay below saturation; the report says
//! how late sends were (`send_lag_*`) so an overloaded run shows itself.
//!
//! Blocking sockets on one OS thread per connection, not tokio: tokio's timer wheel rounds
//! every sleep up to the next millisecond, which would add up to 1 ms to each sample. Threads
//! sleep with a timer slack of 1 ns instead and, where allowed (root, or CAP_SYS_NICE), at
//! real-time priority (SCHED_FIFO 1), so that on a busy machine a due request is sent when it
//! is due rather than when the scheduler gets round to the client: without it, the client's
//! own wake-up delay on a loaded 2-core machine reaches milliseconds and is charged to the
//! proxy. The threads block almost all the time, so they take little from the proxy. What
//! remains of the client's delay is the same for every target (the backend direct is the
//! floor); `--realtime 0` turns the priority off, and the report says whether it was had.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::blocking_http::{connect, exchange, get_request};
use super::{ms, pct, target, Args, Report, Res};

/// What each connection thread hands back.
#[derive(Default)]
struct ConnResult {
    latency_ns: Vec<u64>,
    send_lag_ns: Vec<u64>,
    errors: u64,
    reconnects: u64,
    /// The thread ran at real-time priority.
    realtime: bool,
}

/// The fixed timetable: request `i` is due at `start + i * period`.
#[derive(Clone, Copy)]
struct Timetable {
    start: Instant,
    period_ns: f64,
    total: u64,
    /// Requests before this index are sent on time but not recorded (warm-up).
    first_recorded: u64,
    /// Ask for real-time priority (see the module comment).
    realtime: bool,
}

impl Timetable {
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.period_ns) as u64)
    }
}

pub fn rate_mode(args: &Args) -> Res<()> {
    let (addr, authority, path) = target(args.need("url")?)?;
    let rate: f64 = args.get("rate", 1000.0)?;
    let duration: f64 = args.get("duration", 5.0)?;
    let warmup: f64 = args.get("warmup", 0.5)?;
    let conns: usize = args.get("conns", 16)?;
    let label = args.str("label").unwrap_or("rate").to_string();
    if rate <= 0.0 || duration <= 0.0 || conns == 0 {
        return Err("--rate, --duration and --conns must be positive".into());
    }
    let request = get_request(&path, &authority);

    // Connect everything before the clock starts, so no sample pays for a handshake.
    let streams: Vec<TcpStream> = (0..conns)
        .map(|_| connect(addr))
        .collect::<Result<_, _>>()?;
    let table = Timetable {
        start: Instant::now() + Duration::from_millis(50),
        period_ns: 1e9 / rate,
        total: (rate * (warmup + duration)).round() as u64,
        first_recorded: (rate * warmup).round() as u64,
        realtime: args.get("realtime", 1u8)? != 0,
    };
    let results = Arc::new(Mutex::new(Vec::with_capacity(conns)));
    let threads: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, stream)| {
            let (request, results) = (request.clone(), results.clone());
            std::thread::spawn(move || {
                let r = run_conn(
                    stream,
                    addr,
                    request.as_bytes(),
                    table,
                    c as u64,
                    conns as u64,
                );
                results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a connection thread panicked")?;
    }
    let wall = table.start.elapsed().as_secs_f64() - warmup;
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    report(args, &label, rate, duration, wall, results)
}

/// Lets `sleep` wake within about a microsecond of its deadline instead of the default 50 µs
/// slack and, with `realtime`, runs the thread at SCHED_FIFO priority 1; whether it got that.
/// Both apply to the calling thread only.
fn precise_wakeups(realtime: bool) -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches only this thread;
    // sched_setscheduler(0, ..) reads the parameter struct and changes only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param { sched_priority: 1 };
        realtime && libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
}

/// Connection `c` of `n` sends requests c, c+n, c+2n, ... of the timetable.
fn run_conn(
    stream: TcpStream,
    addr: SocketAddr,
    request: &[u8],
    table: Timetable,
    c: u64,
    n: u64,
) -> ConnResult {
    let mut out = ConnResult {
        realtime: precise_wakeups(table.realtime),
        ..ConnResult::default()
    };
    let mut stream = Some(stream);
    let mut buf = vec![0u8; 16 * 1024];
    let mut i = c;
    while i < table.total {
        let due = table.due(i);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        let ok = match stream.as_mut() {
            Some(s) => exchange(s, request, &mut buf),
            None => Err("not connected".into()),
        };
        let done = Instant::now();
        let recorded = i >= table.first_recorded;
        match ok {
            Ok(keep_alive) => {
                if recorded {
                    out.latency_ns.push((done - due).as_nanos() as u64);
                    out.send_lag_ns.push((sent - due).as_nanos() as u64);
                }
                if !keep_alive {
                    stream = None;
                }
            }
            Err(_) => {
                out.errors += u64::from(recorded);
                stream = None;
            }
        }
        if stream.is_none() {
            out.reconnects += 1;
            stream = connect(addr).ok();
        }
        i += n;
    }
    out
}

fn report(
    args: &Args,
    label: &str,
    rate: f64,
    duration: f64,
    wall: f64,
    results: Vec<ConnResult>,
) -> Res<()> {
    let mut lat: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latency_ns.iter().copied())
        .collect();
    let mut lag: Vec<u64> = results
        .iter()
        .flat_map(|r| r.send_lag_ns.iter().copied())
        .collect();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let reconnects: u64 = results.iter().map(|r| r.reconnects).sum();
    let realtime = !results.is_empty() && results.iter().all(|r| r.realtime);
    lat.sort_unstable();
    lag.sort_unstable();
    let mut rep = Report::default();
    rep.set("rate", format!("{rate:.0}"));
    rep.set("seconds", format!("{duration:.1}"));
    rep.set("ok", lat.len());
    rep.set("errors", errors);
    rep.set("reconnects", reconnects);
    rep.set("client_realtime", if realtime { "yes" } else { "no" });
    rep.set(
        "achieved_rps",
        format!("{:.0}", lat.len() as f64 / wall.max(1e-9)),
    );
    for (k, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        rep.set(&format!("{k}_ms"), ms(pct(&lat, p)));
    }
    rep.set("max_ms", ms(lat.last().copied().unwrap_or(0)));
    rep.set("send_lag_p99_ms", ms(pct(&lag, 99.0)));
    rep.set("send_lag_max_ms", ms(lag.last().copied().unwrap_or(0)));
    println!(
        "{label}: {} ok at {rate:.0} req/s scheduled over {duration:.1}s ({errors} errors, \
         {reconnects} reconnects); latency from the scheduled send: p50 {} / p90 {} / p99 {} / \
         p99.9 {} / max {} ms; sends late by p99 {} / max {} ms; client at real-time priority: \
         {}",
        lat.len(),
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 90.0)),
        ms(pct(&lat, 99.0)),
        ms(pct(&lat, 99.9)),
        ms(lat.last().copied().unwrap_or(0)),
        ms(pct(&lag, 99.0)),
        ms(lag.last().copied().unwrap_or(0)),
        if realtime { "yes" } else { "no" },
    );
    if lat.is_empty() {
        return Err("no request succeeded".into());
    }
    rep.write(args.str("out"))
}
