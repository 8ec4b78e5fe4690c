//! What the fleet keeps in etcd and the transactions that change it.
//!
//! Keys under `/switchyard/<name>/`:
//! - `decision`: the fleet's [`Decision`] (active color, epoch, switch phase, who runs it).
//!   It changes only by a compare-and-swap on its mod revision, so two members that decide
//!   at once cannot both win: one transaction succeeds, the other sees the new record.
//! - `members/<id>`: each live member's [`MemberRecord`], attached to its lease, so a dead
//!   member's record disappears by itself once the lease expires.
//! - `roster/<id>`: every member ever seen (no lease), so `members=2/3` can say one is gone.
//!
//! This module owns the record formats and the etcd calls (each with a deadline: a paused
//! or partitioned etcd must never hang the caller); it decides nothing.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};

use crate::color::Color;
use crate::verdict::Counts;

/// How long one etcd call may take before the fleet counts etcd as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd: {}", short(.0))]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Closed(String),
    #[error("{key} in etcd is not a switchyard record: {err}")]
    Format { key: String, err: String },
}

/// The gist of an etcd client error, for an admin line: gRPC statuses say their message,
/// transport errors drop tonic's nested source chain.
fn short(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) if !s.message().is_empty() => s.message().to_string(),
        e => {
            let full = e.to_string();
            full.split(", source:").next().unwrap_or(&full).to_string()
        }
    }
}

/// The fleet's switch phase, as recorded in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetPhase {
    /// No switch runs.
    Idle,
    /// A member holds the switch and waits for the fleet gate; traffic has not moved.
    Gate,
    /// Traffic moved to `color`; the member `by` watches it and commits or rolls back.
    Watch,
}

impl FleetPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetPhase::Idle => "idle",
            FleetPhase::Gate => "gate",
            FleetPhase::Watch => "watch",
        }
    }
}

/// The fleet's one decision: which color serves, and whether a switch runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Bumped on every change of `color`; members report the epoch they applied.
    pub epoch: u64,
    pub color: Color,
    pub phase: FleetPhase,
    /// The member running the switch (Gate, Watch).
    #[serde(default)]
    pub by: Option<String>,
    /// Its lease: a member that restarted under the same id is not the one that switched.
    #[serde(default)]
    pub by_lease: i64,
    /// Gate: the color the switch goes to.
    #[serde(default)]
    pub target: Option<Color>,
    /// Wall-clock milliseconds of the decision (for the decision-to-swap histogram).
    #[serde(default)]
    pub at_ms: u64,
    /// Why, for humans: "switch by edge-1", "rolled back: edge-1's lease expired".
    #[serde(default)]
    pub note: String,
}

/// A decision as read from etcd, with the revision a compare-and-swap must compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub decision: Decision,
    pub mod_revision: i64,
}

/// Health of one color as one member sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColorHealth {
    pub healthy: u32,
    pub total: u32,
}

impl ColorHealth {
    pub fn all_healthy(self) -> bool {
        self.total > 0 && self.healthy == self.total
    }
}

/// What a live member publishes about itself, attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    /// The color its routing table sends traffic to.
    pub serving: Color,
    /// The decision epoch it applied last.
    pub epoch: u64,
    /// The etcd revision of the last decision it had seen when it wrote this record: the
    /// gate trusts only records written after the switch began.
    #[serde(default)]
    pub seen_rev: i64,
    /// Per color, indexed by `Color::idx`.
    pub health: [ColorHealth; 2],
    /// Requests and counted errors per color since the process started.
    pub counters: [Counts; 2],
    /// The color it serves, over one watch window just before now (the `baseline` rule).
    #[serde(default)]
    pub baseline: Counts,
    /// Cumulative request-duration buckets per color (metrics::DURATION_BUCKETS, then the
    /// total), published only when `max_p99` is set: the fleet's p99 is computed from them.
    #[serde(default)]
    pub buckets: [Vec<u64>; 2],
    /// Wall-clock milliseconds of this record.
    pub seen_ms: u64,
    /// The process start (wall-clock ms): a restart resets counters.
    pub started_ms: u64,
}

pub use crate::clock::now_ms;

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Keys {
        Keys {
            prefix: format!("/switchyard/{fleet}/"),
        }
    }
    pub fn decision(&self) -> String {
        format!("{}decision", self.prefix)
    }
    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }
    pub fn member(&self, id: &str) -> String {
        format!("{}members/{id}", self.prefix)
    }
    pub fn roster(&self) -> String {
        format!("{}roster/", self.prefix)
    }
}

/// What one key of the fleet's prefix holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Decision(Versioned),
    /// A live member's record, with the lease it is attached to.
    Member(MemberRecord, i64),
    Roster(String),
    Other,
}

fn parse<T: for<'de> Deserialize<'de>>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Format {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        err: e.to_string(),
    })
}

impl Keys {
    /// Classifies a key-value pair of the prefix.
    pub fn entry(&self, kv: &KeyValue) -> Result<Entry, StoreError> {
        let key = String::from_utf8_lossy(kv.key());
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return Ok(Entry::Other);
        };
        if rest == "decision" {
            return Ok(Entry::Decision(Versioned {
                decision: parse(kv)?,
                mod_revision: kv.mod_revision(),
            }));
        }
        if rest.starts_with("members/") {
            return Ok(Entry::Member(parse(kv)?, kv.lease()));
        }
        if let Some(id) = rest.strip_prefix("roster/") {
            return Ok(Entry::Roster(id.to_string()));
        }
        Ok(Entry::Other)
    }

    /// The id a deleted key named, for delete events (which carry no value).
    pub fn deleted(&self, key: &[u8]) -> Option<Deleted> {
        let key = String::from_utf8_lossy(key);
        let rest = key.strip_prefix(&self.prefix)?;
        if rest == "decision" {
            return Some(Deleted::Decision);
        }
        rest.strip_prefix("members/")
            .map(|id| Deleted::Member(id.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Decision,
    Member(String),
}

/// Runs one etcd call under [`CALL_TIMEOUT`].
pub async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout(CALL_TIMEOUT)),
    }
}

/// A client on one endpoint. One endpoint at a time, rotated by the caller on failure:
/// with a balanced channel a paused etcd member keeps its connection and silently eats
/// requests; HTTP/2 keep-alive pings notice it within two seconds.
pub async fn connect(endpoint: &str) -> Result<Client, StoreError> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
        .with_keep_alive_while_idle(true)
        // A member cut off from the leader cancels our watch instead of going quiet.
        .with_require_leader(true);
    timed(Client::connect([endpoint], Some(opts))).await
}

/// Everything under the prefix, and the revision it was read at.
pub async fn read_all(
    client: &mut Client,
    keys: &Keys,
) -> Result<(Vec<KeyValue>, i64), StoreError> {
    let resp =
        timed(client.get(keys.prefix.as_str(), Some(GetOptions::new().with_prefix()))).await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().to_vec(), rev))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The outcome of a compare-and-swap on the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// Written; the new mod revision.
    Won(i64),
    /// Someone changed it first; what is there now (None: no decision key).
    Lost(Option<Versioned>),
}

/// Writes `next` if the decision is still at `expected` (0: if there is none yet).
pub async fn cas_decision(
    client: &mut Client,
    keys: &Keys,
    expected: i64,
    next: &Decision,
) -> Result<Cas, StoreError> {
    let key = keys.decision();
    let cmp = if expected == 0 {
        Compare::version(key.as_str(), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key.as_str(), CompareOp::Equal, expected)
    };
    let txn = Txn::new()
        .when([cmp])
        .and_then([TxnOp::put(key.as_str(), json(next), None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let resp = timed(client.txn(txn)).await?;
    if resp.succeeded() {
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        return Ok(Cas::Won(rev));
    }
    for op in resp.op_responses() {
        if let etcd_client::TxnOpResponse::Get(g) = op {
            if let Some(kv) = g.kvs().first() {
                return Ok(Cas::Lost(Some(Versioned {
                    decision: parse(kv)?,
                    mod_revision: kv.mod_revision(),
                })));
            }
        }
    }
    Ok(Cas::Lost(None))
}

/// Publishes this member's record under its lease; the revision of the write.
pub async fn put_member(
    client: &mut Client,
    keys: &Keys,
    rec: &MemberRecord,
    lease: i64,
) -> Result<i64, StoreError> {
    let resp = timed(client.put(
        keys.member(&rec.id),
        json(rec),
        Some(PutOptions::new().with_lease(lease)),
    ))
    .await?;
    Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
}

/// Records the member in the roster (no lease: the roster remembers who is missing).
pub async fn put_roster(client: &mut Client, keys: &Keys, id: &str) -> Result<(), StoreError> {
    let key = format!("{}{id}", keys.roster());
    timed(client.put(key, now_ms().to_string(), None)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_round_trips_and_old_records_read() {
        let d = Decision {
            epoch: 7,
            color: Color::Green,
            phase: FleetPhase::Watch,
            by: Some("edge-1".into()),
            by_lease: 42,
            target: None,
            at_ms: 1,
            note: "switch by edge-1".into(),
        };
        let back: Decision = serde_json::from_slice(&json(&d)).expect("json");
        assert_eq!(back, d);
        // Fields added later default, so an older member's record still reads.
        let min: Decision =
            serde_json::from_str(r#"{"epoch":1,"color":"blue","phase":"idle"}"#).expect("min");
        assert_eq!(min.by, None);
        assert_eq!(min.phase, FleetPhase::Idle);
    }

    #[test]
    fn keys_live_under_the_fleet_prefix() {
        let k = Keys::new("fx");
        assert_eq!(k.decision(), "/switchyard/fx/decision");
        assert_eq!(k.member("edge-1"), "/switchyard/fx/members/edge-1");
        assert_eq!(
            k.deleted(b"/switchyard/fx/members/edge-2"),
            Some(Deleted::Member("edge-2".into()))
        );
        assert_eq!(k.deleted(b"/switchyard/other/members/edge-2"), None);
        // "fx" must not match "fx2"'s keys.
        assert_eq!(k.deleted(b"/switchyard/fx2/decision"), None);
    }
}
