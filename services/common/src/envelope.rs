//! A message plus the metadata that travels with it on every hop.

use uuid::Uuid;

use crate::contracts::Message;

/// Header names used on every AMQP message.
pub mod headers {
    pub const CORRELATION_ID: &str = "x-correlation-id";
    pub const TRACEPARENT: &str = "traceparent";
    /// Delivery attempt of this copy (1 for the first delivery).
    pub const ATTEMPT: &str = "x-attempt";
    /// Why the message was retried or dead-lettered.
    pub const FAILURE_REASON: &str = "x-failure-reason";
    /// The queue a dead-lettered message came from.
    pub const ORIGINAL_QUEUE: &str = "x-original-queue";
    pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
}

/// The longest correlation id accepted, from an HTTP request or a message.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// A correlation id is 1-128 printable ASCII characters (no spaces or
/// control characters): it goes into logs, headers and the AMQP
/// `correlation_id` property (at most 255 bytes), so it is bounded here once.
pub fn valid_correlation_id(id: &str) -> bool {
    (1..=MAX_CORRELATION_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub message_id: Uuid,
    pub correlation_id: String,
    pub traceparent: String,
    pub message: Message,
}

impl Envelope {
    /// A message that starts a new causal chain (for example from an HTTP request).
    pub fn new(message: Message, correlation_id: &str, traceparent: &str) -> Self {
        Envelope {
            message_id: Uuid::now_v7(),
            correlation_id: correlation_id.to_owned(),
            traceparent: traceparent.to_owned(),
            message,
        }
    }

    /// A message caused by this one: same correlation id and trace, new span.
    pub fn follow_up(&self, message: Message) -> Self {
        Envelope {
            message_id: Uuid::now_v7(),
            correlation_id: self.correlation_id.clone(),
            traceparent: child_traceparent(&self.traceparent),
            message,
        }
    }
}

/// A fresh W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", new_span_id())
}

/// Keep the trace id, replace the parent span id. An invalid input starts a new trace.
pub fn child_traceparent(parent: &str) -> String {
    match parse_traceparent(parent) {
        Some(trace_id) => format!("00-{trace_id}-{}-01", new_span_id()),
        None => new_traceparent(),
    }
}

/// Returns the trace id of a valid `traceparent`.
pub fn parse_traceparent(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, span, flags] if hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2) => {
            Some(trace)
        }
        _ => None,
    }
}

fn new_span_id() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keeps_trace_and_changes_span() {
        let parent = new_traceparent();
        let child = child_traceparent(&parent);
        assert_eq!(parse_traceparent(&parent), parse_traceparent(&child));
        assert_ne!(parent, child);
        assert!(parse_traceparent("garbage").is_none());
        assert!(parse_traceparent(&child_traceparent("garbage")).is_some());
    }

    #[test]
    fn correlation_id_rules() {
        assert!(valid_correlation_id("order-42_x.y:z"));
        assert!(valid_correlation_id(&"v".repeat(MAX_CORRELATION_ID_LEN)));
        for bad in ["", "has space", "tab\t", "nul\0", "é", &"v".repeat(MAX_CORRELATION_ID_LEN + 1)] {
            assert!(!valid_correlation_id(bad), "{bad:?}");
        }
    }
}
