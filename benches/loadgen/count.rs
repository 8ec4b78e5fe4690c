//! `loadgen count`: an exact number of requests inside a measurement window, for callgrind.
//!
//! Instructions per request = instructions in the window / requests in the window, and both
//! must be exact for the number to judge a hot-path change. wrk cannot give that: its
//! connections are opened inside the window (32 accepts and upstream connects charged to a
//! few hundred requests under valgrind), requests are in flight at both edges, and how many
//! fit depends on how loaded the machine is. Here `--conns` keep-alive connections are opened
//! and warmed up (`--warmup` requests each) first; then, with nothing in flight, `--on` runs
//! (e.g. `callgrind_control --instr=on PID`); every connection sends its share of
//! `--requests` back to back; when the last response is in, `--off` runs. The window holds
//! exactly `--requests` requests and no connection setup. `--header "Name: value"` adds one
//! field to every request.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::blocking_http::{connect, exchange, get_request};
use super::{target, Args, Report, Res};

pub fn count_mode(args: &Args) -> Res<()> {
    let (addr, authority, path) = target(args.need("url")?)?;
    let conns: usize = args.get("conns", 32)?;
    let requests: usize = args.get("requests", 10_000)?;
    let warmup: usize = args.get("warmup", 20)?;
    if conns == 0 || requests < conns {
        return Err("--conns must be at least 1 and --requests at least --conns".into());
    }
    let mut request = get_request(&path, &authority);
    if let Some(h) = args.str("header") {
        // `--header "Name: value"`: one more field (what a route's policies look at).
        request.truncate(request.len() - 2);
        request.push_str(h);
        request.push_str("\r\n\r\n");
    }
    let request = Arc::new(request);
    // Three meeting points: everyone warmed up (then --on runs), window open, all done.
    let gate = Arc::new(Barrier::new(conns + 1));
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let (request, gate) = (request.clone(), gate.clone());
            let share = requests / conns + usize::from(c < requests % conns);
            std::thread::spawn(move || -> Result<(), String> {
                let mut met = 0;
                let res = conn_share(addr, &request, warmup, share, &gate, &mut met);
                // A failed connection still meets the others, so none waits forever.
                for _ in met..3 {
                    gate.wait();
                }
                res.map_err(|e| e.to_string())
            })
        })
        .collect();
    gate.wait();
    let on = run_hook(args.str("on"));
    gate.wait();
    let t = Instant::now();
    gate.wait();
    let secs = t.elapsed().as_secs_f64();
    let off = run_hook(args.str("off"));
    let mut failed = Vec::new();
    for th in threads {
        if let Err(e) = th
            .join()
            .map_err(|_| "thread panicked".to_string())
            .and_then(|r| r)
        {
            failed.push(e);
        }
    }
    on?;
    off?;
    if let Some(e) = failed.first() {
        return Err(format!("{} of {conns} connections failed: {e}", failed.len()).into());
    }
    println!(
        "{}: {requests} requests over {conns} keep-alive connections in {secs:.2}s \
         ({:.0} req/s) inside the window",
        args.str("label").unwrap_or("count"),
        requests as f64 / secs
    );
    let mut rep = Report::default();
    rep.set("requests", requests);
    rep.set("seconds", format!("{secs:.2}"));
    rep.write(args.str("out"))
}

/// One connection: warm up, meet, wait for the window, send `share` requests, meet.
/// `met` counts the meeting points passed.
fn conn_share(
    addr: std::net::SocketAddr,
    request: &str,
    warmup: usize,
    share: usize,
    gate: &Barrier,
    met: &mut usize,
) -> Res<()> {
    let mut s = connect(addr)?;
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..warmup {
        if !exchange(&mut s, request.as_bytes(), &mut buf)? {
            s = connect(addr)?;
        }
    }
    for _ in 0..2 {
        gate.wait();
        *met += 1;
    }
    for _ in 0..share {
        if !exchange(&mut s, request.as_bytes(), &mut buf)? {
            return Err("the proxy closed a keep-alive connection".into());
        }
    }
    gate.wait();
    *met += 1;
    Ok(())
}

fn run_hook(cmd: Option<&str>) -> Res<()> {
    let Some(cmd) = cmd else { return Ok(()) };
    let status = Command::new("sh").arg("-c").arg(cmd).status()?;
    if !status.success() {
        return Err(format!("`{cmd}` failed ({status})").into());
    }
    Ok(())
}
