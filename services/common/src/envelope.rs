//! A message plus the metadata that travels with it on every hop.

use uuid::Uuid;

use crate::contracts::Message;
use crate::trace_context::TraceContext;

/// Header names used on every AMQP message.
pub mod headers {
    pub const CORRELATION_ID: &str = "x-correlation-id";
    pub const TRACEPARENT: &str = crate::trace_context::TRACEPARENT;
    pub const TRACESTATE: &str = crate::trace_context::TRACESTATE;
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

/// What a consumer reads from a queue: the saga's messages ([`Message`]) or
/// order events (`crate::events::OrderEvent`). The `type` property of a
/// delivery must equal `type_name` of its body.
pub trait Payload: serde::de::DeserializeOwned + Send + Sync + 'static {
    /// The AMQP `type` property (the body's `type` field).
    fn type_name(&self) -> &'static str;
    /// The order it is about: batches are sorted by it, spans carry it.
    fn order_id(&self) -> Uuid;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<M = Message> {
    pub message_id: Uuid,
    pub correlation_id: String,
    /// The trace the message continues. On a message being written: the
    /// context of the span that caused it. On a message received: the
    /// sender's, until the consumer replaces it with the context of the
    /// span handling it, so that what the handler sends descends from that.
    pub trace: TraceContext,
    pub message: M,
}

impl<M> Envelope<M> {
    /// A message caused by the span whose context is `trace` (for example an HTTP request).
    pub fn new(message: M, correlation_id: &str, trace: TraceContext) -> Self {
        Envelope { message_id: Uuid::now_v7(), correlation_id: correlation_id.to_owned(), trace, message }
    }

    /// A saga message caused by this one: same correlation id, same trace
    /// context (the span handling this one is its parent).
    pub fn follow_up(&self, message: Message) -> Envelope {
        Envelope::new(message, &self.correlation_id, self.trace.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_id_rules() {
        assert!(valid_correlation_id("order-42_x.y:z"));
        assert!(valid_correlation_id(&"v".repeat(MAX_CORRELATION_ID_LEN)));
        for bad in ["", "has space", "tab\t", "nul\0", "é", &"v".repeat(MAX_CORRELATION_ID_LEN + 1)] {
            assert!(!valid_correlation_id(bad), "{bad:?}");
        }
    }
}
