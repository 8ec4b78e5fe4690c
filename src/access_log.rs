//! The access log: one JSON line per request, to stdout or a file, off by default.
//!
//! The data plane emits one `tracing` event per request on the target [`TARGET`] with the
//! fields below ([`emit`]); [`AccessLayer`] is the subscriber layer that takes only those
//! events, writes each as a JSON object (serde_json escapes every string) and queues the line
//! for a writer thread. The stderr log never sees these events (main.rs filters the target
//! out of it). The request path never waits for the disk: the queue is bounded, and when it
//! is full the line is dropped and counted in `switchyard_access_log_dropped_total`.
//!
//! Fields, in this order: `time` (RFC 3339, UTC, microseconds), `client` (IP address or
//! null), `method`, `path` (the request target as received, query included), `status` (0 when
//! no response was sent), `bytes` (response body bytes sent), `duration_ms`, `route`,
//! `color` (null when no route matched), `upstream` (the server address, or null when none
//! was picked).
//!
//! This module decides nothing about requests; proxy.rs says what happened.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use pingora_prometheus::prometheus::{self, IntCounter};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The `tracing` target of access log events.
pub const TARGET: &str = "switchyard::access";

/// Lines that may wait for the writer; at about 250 bytes each, a few MiB at most.
pub const QUEUE_LINES: usize = 16 * 1024;

/// The fields that are null rather than absent when a request has no value for them.
const NULLABLE: [&str; 4] = ["client", "route", "color", "upstream"];

/// Where `[access_log] path` sends the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

/// One finished request, as proxy.rs saw it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub client: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub color: Option<&'a str>,
    pub upstream: Option<&'a str>,
}

/// Milliseconds with microsecond precision: `1.234`.
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Records one request on [`TARGET`].
pub fn emit(e: &Entry<'_>) {
    tracing::info!(
        target: TARGET,
        client = e.client,
        method = e.method,
        path = e.path,
        status = e.status,
        bytes = e.bytes,
        duration_ms = millis(e.duration),
        route = e.route,
        color = e.color,
        upstream = e.upstream,
    );
}

/// Writes an event's fields as one JSON object, in the order they were recorded.
struct JsonLine {
    buf: Vec<u8>,
    seen: [bool; NULLABLE.len()],
}

impl JsonLine {
    fn new(time: SystemTime) -> JsonLine {
        let mut buf = Vec::with_capacity(256);
        let mut t = String::with_capacity(32);
        let _ = write!(t, "{}", humantime::format_rfc3339_micros(time));
        buf.extend_from_slice(b"{\"time\":");
        Self::string(&mut buf, &t);
        JsonLine {
            buf,
            seen: [false; NULLABLE.len()],
        }
    }

    fn string(buf: &mut Vec<u8>, s: &str) {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }

    fn key(&mut self, field: &Field) {
        let name = field.name();
        if let Some(i) = NULLABLE.iter().position(|n| *n == name) {
            self.seen[i] = true;
        }
        self.buf.push(b',');
        Self::string(&mut self.buf, name);
        self.buf.push(b':');
    }

    fn finish(mut self) -> Vec<u8> {
        for (i, name) in NULLABLE.iter().enumerate() {
            if !self.seen[i] {
                self.buf.push(b',');
                Self::string(&mut self.buf, name);
                self.buf.extend_from_slice(b":null");
            }
        }
        self.buf.extend_from_slice(b"}\n");
        self.buf
    }
}

impl Visit for JsonLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        Self::string(&mut self.buf, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.buf, "{value}");
        } else {
            self.buf.extend_from_slice(b"null");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        Self::string(&mut self.buf, &format!("{value:?}"));
    }
}

/// Formats access events and hands them to the writer thread without blocking.
pub struct AccessLayer {
    tx: SyncSender<Vec<u8>>,
    dropped: IntCounter,
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = JsonLine::new(SystemTime::now());
        event.record(&mut line);
        match self.tx.try_send(line.finish()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("[access_log] path {path}: cannot open for appending: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("[access_log]: cannot start the writer thread: {0}")]
    Thread(#[source] io::Error),
}

/// Opens the destination and starts the writer thread; the returned layer is the only way
/// lines reach it. Registers `switchyard_access_log_dropped_total` in prometheus' default
/// registry, which `/metrics` serves with switchyard's own.
pub fn start(dest: &Destination) -> Result<AccessLayer, AccessLogError> {
    let out: Box<dyn Write + Send> = match dest {
        Destination::Stdout => Box::new(io::stdout()),
        Destination::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AccessLogError::Open {
                    path: path.clone(),
                    source,
                })?,
        ),
    };
    let dropped = IntCounter::new(
        "switchyard_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind.",
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"));
    // A second start in one process (tests) finds it registered; counting into the new
    // handle is then harmless.
    let _ = prometheus::default_registry().register(Box::new(dropped.clone()));
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_lines(rx, out))
        .map_err(AccessLogError::Thread)?;
    Ok(AccessLayer { tx, dropped })
}

/// Writes what is queued, then flushes, so a quiet log reaches the file at once and a busy
/// one is written in large blocks.
fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut w = BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(line) = rx.recv() {
        let mut r = w.write_all(&line);
        while let Ok(line) = rx.try_recv() {
            r = r.and_then(|_| w.write_all(&line));
        }
        r = r.and_then(|_| w.flush());
        match r {
            Err(e) if !failing => {
                failing = true;
                tracing::error!("access log: writing failed: {e}; lines are being lost");
            }
            Ok(()) if failing => {
                failing = false;
                tracing::warn!("access log: writing works again");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn line_of(e: Entry<'_>) -> serde_json::Value {
        let (tx, rx) = mpsc::sync_channel(4);
        let layer = AccessLayer {
            tx,
            dropped: IntCounter::new("t", "t").expect("counter"),
        };
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || emit(&e));
        let bytes = rx.try_recv().expect("one line");
        assert!(bytes.ends_with(b"}\n"));
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

    #[test]
    fn every_field_and_escaping() {
        let v = line_of(Entry {
            client: Some("127.0.0.1"),
            method: "GET",
            path: "/a\"b\\c\n?q=\u{7}",
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(1234),
            route: Some("web"),
            color: Some("blue"),
            upstream: Some("127.0.0.1:3000"),
        });
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a\"b\\c\n?q=\u{7}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["route"], "web");
        assert_eq!(v["color"], "blue");
        assert_eq!(v["upstream"], "127.0.0.1:3000");
        let t = v["time"].as_str().expect("time");
        assert!(
            humantime::parse_rfc3339(t).is_ok() && t.ends_with('Z'),
            "{t}"
        );
    }

    #[test]
    fn missing_values_are_null() {
        let v = line_of(Entry {
            client: None,
            method: "GET",
            path: "/nowhere",
            status: 404,
            bytes: 0,
            duration: Duration::ZERO,
            route: None,
            color: None,
            upstream: None,
        });
        for k in NULLABLE {
            assert!(v[k].is_null(), "{k}: {v}");
        }
        assert_eq!(v["status"], 404);
        assert_eq!(v.as_object().map(|o| o.len()), Some(10), "{v}");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let dropped = IntCounter::new("d", "d").expect("counter");
        let layer = AccessLayer {
            tx,
            dropped: dropped.clone(),
        };
        let sub = tracing_subscriber::registry().with(layer);
        let e = Entry {
            client: None,
            method: "GET",
            path: "/",
            status: 200,
            bytes: 0,
            duration: Duration::ZERO,
            route: None,
            color: None,
            upstream: None,
        };
        tracing::subscriber::with_default(sub, || {
            for _ in 0..3 {
                emit(&e);
            }
        });
        assert_eq!(dropped.get(), 2);
    }
}
