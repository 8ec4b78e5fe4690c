//! Whose fault a finished exchange was: the one decision that keeps the watch window honest.
//!
//! The watch after a switch must judge only what the new color did wrong, or any client can
//! roll a deploy back (open WebSockets and break the protocol, hang up mid-download). This
//! module turns "where a failure came from, how far the exchange had got, what the backend
//! answered" into "counts against the color or not" and "which metric shows it". It is pure
//! and knows nothing of pingora or of switchyard's own engine: each engine maps its own error
//! type onto [`Failure`] in a few lines and calls [`classify`] once per finished exchange.
//! It does not record anything (metrics.rs) nor judge the window (verdict.rs).

/// Who broke the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The color's server: refused, timed out, reset, or answered garbage.
    Upstream,
    /// The client: hung up, stalled, or sent something that is not HTTP.
    Client,
    /// switchyard itself (an internal error, a refusal of its own).
    Proxy,
}

/// How far the exchange had got when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No response head from the backend reached the client yet.
    BeforeHead,
    /// A response head (not a 101) was passed on; the body was under way.
    AfterHead,
    /// The backend answered 101: the connection is a WebSocket (or other upgraded) session.
    Upgraded,
}

/// What went wrong, as far as the metrics tell it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Timeout,
    Reset,
    Protocol,
    Other,
}

impl Kind {
    /// The `kind` label of `switchyard_upstream_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Timeout => "timeout",
            Kind::Reset => "reset",
            Kind::Protocol => "protocol",
            Kind::Other => "other",
        }
    }
}

/// The failure an exchange ended with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub origin: Origin,
    pub kind: Kind,
}

/// Which metric makes a failure visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Nothing beyond the request counters (a clean exchange, a client's malformed request
    /// that is already counted as its 4xx answer, switchyard's own errors, which it logs).
    None,
    /// `switchyard_upstream_errors_total{color,kind}`.
    UpstreamError(Kind),
    /// `switchyard_client_aborts_total{color}`.
    ClientAbort,
}

/// What one finished exchange means for the watch and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// Counts as an error of the color in the watch window.
    pub counts: bool,
    pub metric: Metric,
}

/// Classifies one finished exchange. `backend_status` is the status of the response head the
/// color's server sent (0 when none arrived); an answer switchyard wrote itself (its 404s,
/// refusals, the 502 after a failed connect) is not a backend status.
///
/// Counted: a 5xx from the color's servers, and any failure of theirs before a response head
/// reached the client. Not counted: anything after a 101 (a WebSocket ends however its peers
/// decide, a reset included: a client that breaks the protocol makes a correct backend drop
/// the connection), a backend failure after the head (a client that stalls or leaves can
/// provoke it, and the client already got its status), client failures, 4xx, switchyard's own.
pub fn classify(stage: Stage, backend_status: u16, failure: Option<Failure>) -> Classification {
    let server_error = (500..600).contains(&backend_status) && stage != Stage::Upgraded;
    let (failed_before_head, metric) = match failure {
        None => (false, Metric::None),
        Some(Failure {
            origin: Origin::Upstream,
            kind,
        }) => (stage == Stage::BeforeHead, Metric::UpstreamError(kind)),
        Some(Failure {
            origin: Origin::Client,
            kind: Kind::Protocol,
        }) => (false, Metric::None),
        Some(Failure {
            origin: Origin::Client,
            ..
        }) => (false, Metric::ClientAbort),
        Some(Failure {
            origin: Origin::Proxy,
            ..
        }) => (false, Metric::None),
    };
    Classification {
        counts: server_error || failed_before_head,
        metric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::*;
    use Origin::*;
    use Stage::*;

    fn f(origin: Origin, kind: Kind) -> Option<Failure> {
        Some(Failure { origin, kind })
    }

    fn counts(stage: Stage, status: u16, failure: Option<Failure>) -> bool {
        classify(stage, status, failure).counts
    }

    #[test]
    fn backend_5xx_counts_4xx_and_2xx_do_not() {
        assert!(counts(AfterHead, 500, None));
        assert!(counts(AfterHead, 503, None));
        assert!(counts(AfterHead, 599, None));
        assert!(!counts(AfterHead, 200, None));
        assert!(!counts(AfterHead, 404, None));
        assert!(!counts(AfterHead, 499, None));
        assert!(!counts(AfterHead, 600, None));
        assert_eq!(classify(AfterHead, 500, None).metric, Metric::None);
    }

    #[test]
    fn upstream_failures_before_the_head_count() {
        for kind in [Connect, Timeout, Reset, Protocol, Other] {
            let c = classify(BeforeHead, 0, f(Upstream, kind));
            assert!(c.counts, "{kind:?}");
            assert_eq!(c.metric, Metric::UpstreamError(kind));
        }
    }

    #[test]
    fn nothing_after_a_101_counts_but_stays_visible() {
        let c = classify(Upgraded, 101, f(Upstream, Reset));
        assert!(!c.counts);
        assert_eq!(c.metric, Metric::UpstreamError(Reset));
        assert!(!counts(Upgraded, 101, f(Upstream, Protocol)));
        assert!(!counts(Upgraded, 101, f(Upstream, Timeout)));
        assert!(!counts(Upgraded, 101, f(Client, Reset)));
        assert!(!counts(Upgraded, 101, None));
    }

    #[test]
    fn upstream_failure_after_the_head_is_visible_not_counted() {
        let c = classify(AfterHead, 200, f(Upstream, Reset));
        assert_eq!((c.counts, c.metric), (false, Metric::UpstreamError(Reset)));
        // ...unless the head itself was a 5xx: that one the backend chose to send.
        assert!(counts(AfterHead, 502, f(Upstream, Reset)));
    }

    #[test]
    fn client_failures_never_count() {
        for stage in [BeforeHead, AfterHead, Upgraded] {
            for kind in [Connect, Timeout, Reset, Other] {
                let c = classify(stage, 200, f(Client, kind));
                assert_eq!((c.counts, c.metric), (false, Metric::ClientAbort));
            }
            let c = classify(stage, 0, f(Client, Protocol));
            assert_eq!((c.counts, c.metric), (false, Metric::None));
        }
    }

    #[test]
    fn switchyards_own_errors_never_count() {
        let c = classify(BeforeHead, 0, f(Proxy, Other));
        assert_eq!((c.counts, c.metric), (false, Metric::None));
        // Its own refusals carry no backend status at all.
        assert!(!counts(BeforeHead, 0, None));
    }

    #[test]
    fn labels() {
        assert_eq!(Connect.label(), "connect");
        assert_eq!(Reset.label(), "reset");
        assert_eq!(Protocol.label(), "protocol");
    }
}
