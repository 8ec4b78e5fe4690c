//! The switch state machine, pure: no clock, no sockets, no files.
//!
//! `Idle → Gate → Swapped → Watch → Committed | RolledBack`, with `Refused` (the gate did
//! not pass, a pre-switch hook said no, the state file could not be written) and `Aborted`
//! (an operator stopped it). The driver in controller.rs feeds events and does the I/O each
//! transition asks for; the gate verdict below decides from numbers the driver measured
//! (the watch's verdict is verdict.rs's). Keeping all of this pure is what makes every
//! transition testable without a proxy.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// Waiting for every server of the target color to be healthy.
    Gate,
    /// Traffic moved; the old color drains.
    Swapped,
    /// The new color is watched for errors.
    Watch,
    Committed,
    RolledBack,
    Refused,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Gate => "gate",
            Phase::Swapped => "swapped",
            Phase::Watch => "watch",
            Phase::Committed => "committed",
            Phase::RolledBack => "rolled_back",
            Phase::Refused => "refused",
            Phase::Aborted => "aborted",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Committed | Phase::RolledBack | Phase::Refused | Phase::Aborted
        )
    }

    /// Whether live traffic is on the target color in this phase.
    pub fn traffic_moved(self) -> bool {
        matches!(self, Phase::Swapped | Phase::Watch | Phase::Committed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `switch <color>`: start gating (a forced switch passes the gate at once).
    Start,
    /// Every target server healthy, pre-switch hook passed.
    GatePassed,
    /// The gate timed out, the pre-switch hook failed, or persisting failed.
    Refuse,
    /// The routing table now points at the target and the state file says so.
    SwapDone,
    /// Watch window started.
    WatchStarted,
    /// Watch window ended clean.
    WatchClean,
    /// A watch rule failed on the new color (verdict.rs).
    TooManyErrors,
    /// An operator's `abort` (or `rollback`) while the switch runs.
    Abort,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot go from phase {from} on {event:?}")]
pub struct BadTransition {
    pub from: Phase,
    pub event: Event,
}

/// The whole transition table.
pub fn transition(from: Phase, event: Event) -> Result<Phase, BadTransition> {
    use Event as E;
    use Phase as P;
    let to = match (from, event) {
        (P::Idle, E::Start) => P::Gate,
        (P::Gate, E::GatePassed) => P::Swapped,
        (P::Gate, E::Refuse) => P::Refused,
        (P::Gate, E::Abort) => P::Aborted,
        // The swap itself failed to persist: traffic went back, nothing moved for good.
        (P::Swapped, E::Refuse) => P::Refused,
        (P::Swapped, E::SwapDone) => P::Swapped,
        (P::Swapped, E::WatchStarted) => P::Watch,
        (P::Swapped, E::Abort) => P::Aborted,
        (P::Watch, E::WatchClean) => P::Committed,
        (P::Watch, E::TooManyErrors) => P::RolledBack,
        (P::Watch, E::Abort) => P::Aborted,
        _ => return Err(BadTransition { from, event }),
    };
    Ok(to)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    Pass,
    Wait,
    Refuse,
}

/// The gate: pass when every target server is healthy (a color with no servers never
/// passes), refuse when the time is up, else wait. A forced switch passes at once.
pub fn gate_verdict(
    healthy: usize,
    total: usize,
    elapsed: Duration,
    timeout: Duration,
    force: bool,
) -> GateVerdict {
    if force || (total > 0 && healthy == total) {
        GateVerdict::Pass
    } else if elapsed >= timeout {
        GateVerdict::Refuse
    } else {
        GateVerdict::Wait
    }
}

/// The `switchyard_switches_total` result label of a terminal phase.
pub fn result_label(p: Phase) -> Option<&'static str> {
    match p {
        Phase::Committed => Some("committed"),
        Phase::RolledBack => Some("rolled_back"),
        Phase::Refused => Some("refused"),
        Phase::Aborted => Some("aborted"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use Phase as P;

    #[test]
    fn happy_path() {
        let mut p = P::Idle;
        for e in [
            E::Start,
            E::GatePassed,
            E::SwapDone,
            E::WatchStarted,
            E::WatchClean,
        ] {
            p = transition(p, e).expect("valid");
        }
        assert_eq!(p, P::Committed);
        assert!(p.is_terminal());
    }

    #[test]
    fn every_exit() {
        assert_eq!(transition(P::Gate, E::Refuse), Ok(P::Refused));
        assert_eq!(transition(P::Gate, E::Abort), Ok(P::Aborted));
        assert_eq!(transition(P::Swapped, E::Refuse), Ok(P::Refused));
        assert_eq!(transition(P::Swapped, E::Abort), Ok(P::Aborted));
        assert_eq!(transition(P::Watch, E::TooManyErrors), Ok(P::RolledBack));
        assert_eq!(transition(P::Watch, E::Abort), Ok(P::Aborted));
    }

    #[test]
    fn invalid_transitions_are_refused() {
        for terminal in [P::Committed, P::RolledBack, P::Refused, P::Aborted] {
            for e in [E::Start, E::Abort, E::GatePassed, E::WatchClean] {
                assert!(transition(terminal, e).is_err(), "{terminal} on {e:?}");
            }
        }
        assert!(transition(P::Idle, E::Abort).is_err());
        assert!(transition(P::Idle, E::GatePassed).is_err());
        assert!(transition(P::Gate, E::WatchClean).is_err());
        assert!(transition(P::Watch, E::Start).is_err());
        assert!(transition(P::Gate, E::TooManyErrors).is_err());
    }

    #[test]
    fn traffic_moved_only_after_the_swap() {
        assert!(!P::Gate.traffic_moved());
        assert!(P::Swapped.traffic_moved());
        assert!(P::Watch.traffic_moved());
        assert!(!P::RolledBack.traffic_moved());
    }

    #[test]
    fn gate() {
        let t = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert_eq!(gate_verdict(2, 2, s(0), t, false), GateVerdict::Pass);
        assert_eq!(gate_verdict(1, 2, s(3), t, false), GateVerdict::Wait);
        assert_eq!(gate_verdict(1, 2, s(10), t, false), GateVerdict::Refuse);
        assert_eq!(gate_verdict(0, 0, s(0), t, false), GateVerdict::Wait);
        assert_eq!(gate_verdict(0, 2, s(99), t, true), GateVerdict::Pass);
    }

    #[test]
    fn labels() {
        assert_eq!(result_label(P::RolledBack), Some("rolled_back"));
        assert_eq!(result_label(P::Watch), None);
    }
}
