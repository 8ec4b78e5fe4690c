//! Poison-tolerant locking for the few short critical sections outside the request path (the
//! running switch, the WebSocket registry, demo backend state). It does not decide what a
//! lock protects; each caller's data is written whole under its lock, so a panic elsewhere
//! cannot leave it half-updated and a poisoned lock is still safe to use.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data back from a poisoned lock instead of panicking in turn.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
