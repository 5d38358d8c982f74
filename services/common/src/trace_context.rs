//! W3C Trace Context (`traceparent` + `tracestate`): the one definition of
//! how a trace crosses a process boundary. HTTP requests in, the outbox
//! rows, AMQP publish and AMQP consume all carry a [`TraceContext`] and read
//! or write it only through OpenTelemetry's standard `TraceContextPropagator`,
//! so the caller's sampling decision and `tracestate` travel unchanged.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A `tracestate` longer than this is dropped (the `traceparent` is kept):
/// W3C asks to propagate at least 512 characters and allows dropping the rest.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A span's context in its wire form, as the propagator writes it: an
/// empty `traceparent` means "no trace" (the next span starts one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl TraceContext {
    /// Header values as they arrived (from an HTTP request or an AMQP
    /// message), read by the propagator and written back in canonical form.
    /// Anything invalid reads as no trace, as W3C Trace Context asks; a
    /// `tracestate` that is invalid or too long is dropped.
    pub fn read(traceparent: Option<&str>, tracestate: Option<&str>) -> TraceContext {
        let raw = TraceContext {
            traceparent: traceparent.unwrap_or_default().to_owned(),
            tracestate: tracestate.filter(|s| s.len() <= MAX_TRACESTATE_LEN).unwrap_or_default().to_owned(),
        };
        TraceContext::of(&raw.parent())
    }

    /// The context of `cx`'s span in wire form (empty if it has none).
    pub fn of(cx: &Context) -> TraceContext {
        let mut carrier = TraceContext::default();
        TraceContextPropagator::new().inject_context(cx, &mut carrier);
        carrier
    }

    /// The remote parent this wire form names (an empty context if none).
    pub fn parent(&self) -> Context {
        // The propagator reads ids of any length ("00-1-2-01"); W3C's
        // version 00 is exactly 2-32-16-2 hex digits.
        if !well_formed(&self.traceparent) {
            return Context::new();
        }
        TraceContextPropagator::new().extract(self)
    }

    /// The trace id, if this names a trace.
    pub fn trace_id(&self) -> Option<TraceId> {
        let cx = self.parent();
        let span = cx.span();
        let span_context: &SpanContext = span.span_context();
        span_context.is_valid().then(|| span_context.trace_id())
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_empty()
    }
}

fn well_formed(traceparent: &str) -> bool {
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut parts = traceparent.split('-');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(version), Some(trace), Some(span), Some(flags)) => {
            hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
        }
        _ => false,
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent.as_str()),
            TRACESTATE if !self.tracestate.is_empty() => Some(self.tracestate.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE => self.tracestate = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_standard_form() {
        let read = TraceContext::read(Some(PARENT), Some("vendor=a,other=b"));
        assert_eq!(read, TraceContext { traceparent: PARENT.into(), tracestate: "vendor=a,other=b".into() });
        assert_eq!(read.trace_id().unwrap().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled = PARENT.replace("-01", "-00");
        assert_eq!(TraceContext::read(Some(&unsampled), None).traceparent, unsampled);
    }

    #[test]
    fn invalid_input_reads_as_no_trace() {
        for bad in [
            "",
            "garbage",
            "00-1-2-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-\u{1b}[31m-01",
            &"0".repeat(100_000),
        ] {
            let read = TraceContext::read(Some(bad), Some("vendor=a"));
            assert!(read.is_empty() && read.trace_id().is_none(), "{bad:?}: {read:?}");
        }
        let long_state = format!("v={}", "a".repeat(MAX_TRACESTATE_LEN));
        assert_eq!(TraceContext::read(Some(PARENT), Some(&long_state)).tracestate, "");
        assert_eq!(TraceContext::read(Some(PARENT), Some("not a tracestate")).tracestate, "");
    }

    /// What one hop costs when no exporter is installed: read the incoming
    /// context, draw a child span id, write the outgoing context (the
    /// consumer, the relay and the HTTP layer each do this once per message
    /// or request). A measurement, not a check (docs/operations.md).
    #[test]
    #[ignore = "measurement: cargo test -p saga-common --lib per_hop_cost -- --ignored --nocapture"]
    fn per_hop_cost() {
        use opentelemetry::trace::TraceContextExt;
        let incoming = TraceContext::read(Some(PARENT), Some("vendor=a,other=b"));
        let hops = 200_000;
        let started = std::time::Instant::now();
        for _ in 0..hops {
            let child = crate::telemetry::child_of(&incoming.parent());
            std::hint::black_box(TraceContext::of(&Context::new().with_remote_span_context(child)));
        }
        let per_hop = started.elapsed() / hops;
        eprintln!("per hop (read + child + write): {per_hop:?}");
    }
}
