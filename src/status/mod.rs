//! The live status page on the `[admin] metrics` listener, and what feeds it.
//!
//! - [`feed`]: the controller's progress events (a bounded broadcast) and the history of the
//!   last switches
//! - [`snapshot`]: the whole state as one serializable value (`GET /status.json`, and the
//!   periodic `snapshot` events of `GET /events`)
//! - `page.html`: the page itself (inline CSS and JS, no external assets)
//!
//! The HTTP listener that serves all of this is admin_http.rs; `ctl`'s terminal view of the
//! same progress is progress_bar.rs. Nothing here changes state:
//! the page is read-only by construction (it has no way to send a command).

pub mod feed;
pub mod snapshot;

/// The status page, embedded in the binary so it works offline and ships with it.
pub const PAGE: &str = include_str!("page.html");

/// Every timestamp in status.json and the events (shared with the fleet's records).
pub use crate::clock::unix_ms;
