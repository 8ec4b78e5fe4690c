//! What switchyard says to a gRPC client itself: `grpc-status: 14` (UNAVAILABLE), which
//! gRPC clients retry, when a stream is handed over at a drain deadline (or at shutdown),
//! and when no server of the color answered. The gRPC counterpart of the WebSocket 1012
//! close (engine/relay.rs).
//!
//! Builds headers only; when to send them is gateway.rs's (through pingora's `cut_off`).

use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::CutOff;

/// gRPC's UNAVAILABLE: "the service is currently unavailable; retry".
pub const UNAVAILABLE: u16 = 14;

/// Said to a stream handed over at a drain deadline or shutdown.
pub const HANDOVER: &str = "switchyard: this color is draining; retry (it goes to the live color)";

/// Whether a request is gRPC (`content-type: application/grpc[+proto|;...]`).
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        ct.len() >= 16
            && ct[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(ct.get(16), None | Some(b'+') | Some(b';'))
    })
}

/// `grpc-status` and `grpc-message` (percent-encoded as gRPC requires; ours are ASCII
/// without `%`, so only the spaces stay as they are).
fn status_fields(h: &mut HeaderMap, code: u16, message: &str) {
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(message) {
        h.insert("grpc-message", v);
    }
}

/// A trailers-only response (status 200, the gRPC status in the head, END_STREAM).
pub fn trailers_only(code: u16, message: &str) -> Box<ResponseHeader> {
    // Only an invalid status code fails to build, and 200 is valid.
    let mut head = ResponseHeader::build(200, Some(3)).expect("200 is a valid status");
    let _ = head.insert_header("content-type", "application/grpc");
    let mut fields = HeaderMap::new();
    status_fields(&mut fields, code, message);
    for (name, value) in fields {
        if let Some(name) = name {
            let _ = head.insert_header(name, value);
        }
    }
    Box::new(head)
}

/// How a stream of a draining color ends: UNAVAILABLE, as a trailers-only response if its
/// server had not answered yet, else in the trailers after what it sent.
pub fn handover() -> CutOff {
    let mut trailers = HeaderMap::new();
    status_fields(&mut trailers, UNAVAILABLE, HANDOVER);
    CutOff {
        head: trailers_only(UNAVAILABLE, HANDOVER),
        trailers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(is_grpc(Some(b"Application/GRPC; charset=x")));
        assert!(!is_grpc(Some(b"application/grpc-web")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(None));
    }

    #[test]
    fn a_handover_is_unavailable_in_head_or_trailers() {
        let c = handover();
        assert_eq!(c.head.status.as_u16(), 200);
        assert_eq!(c.head.headers["grpc-status"], "14");
        assert_eq!(c.head.headers["content-type"], "application/grpc");
        assert_eq!(c.trailers["grpc-status"], "14");
        assert!(c.trailers["grpc-message"]
            .to_str()
            .is_ok_and(|m| m.contains("draining")));
    }
}
