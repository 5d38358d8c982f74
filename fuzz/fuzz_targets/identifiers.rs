//! The identifier rules every edge applies, on arbitrary strings:
//! `CustomerId::parse` (token `sub`, account path, a charge's customer id),
//! `valid_correlation_id` (HTTP header, message header or property),
//! `TraceContext::read` (W3C Trace Context through the standard propagator), and
//! `consumer::attempt` (the `x-attempt` ladder) on integers read from the input.

#![no_main]

use lapin::types::AMQPValue;
use libfuzzer_sys::fuzz_target;
use saga_common::consumer::attempt;
use saga_common::customer::{CustomerId, MAX_CUSTOMER_ID_LEN};
use saga_common::envelope::{MAX_CORRELATION_ID_LEN, valid_correlation_id};
use saga_common::trace_context::{MAX_TRACESTATE_LEN, TraceContext};

fn printable(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    // Customer ids: accepted exactly when the documented rule holds, and an
    // accepted one is the input itself and parses again to itself.
    match CustomerId::parse(text) {
        Ok(id) => {
            assert!(printable(text, MAX_CUSTOMER_ID_LEN), "accepted {text:?}");
            assert_eq!(id.as_str(), text);
            assert_eq!(&*id, text);
            assert_eq!(CustomerId::parse(&format!("{id}")).as_ref(), Ok(&id));
            assert_eq!(String::from(id), text);
        }
        Err(_) => assert!(!printable(text, MAX_CUSTOMER_ID_LEN), "refused {text:?}"),
    }

    assert_eq!(valid_correlation_id(text), printable(text, MAX_CORRELATION_ID_LEN), "{text:?}");

    // A trace context read from the input as traceparent and tracestate is
    // empty or in canonical form, which reads back to itself; its trace id
    // is 32 hex digits of the input; the tracestate is bounded.
    let read = TraceContext::read(Some(text), Some(text));
    assert_eq!(TraceContext::read(Some(&read.traceparent), Some(&read.tracestate)), read, "{text:?}");
    match read.trace_id() {
        Some(trace) => assert!(text.contains(&trace.to_string()), "{text:?}"),
        None => assert!(read.is_empty() && read.tracestate.is_empty(), "{read:?}"),
    }
    assert!(read.tracestate.len() <= MAX_TRACESTATE_LEN);

    // x-attempt: any integer type, any value, any ladder length.
    if data.len() >= 12 {
        let max_attempts = u32::from_le_bytes(data[..4].try_into().unwrap());
        let n = i64::from_le_bytes(data[4..12].try_into().unwrap());
        let values = [
            AMQPValue::LongLongInt(n),
            AMQPValue::LongInt(n as i32),
            AMQPValue::LongUInt(n as u32),
            AMQPValue::ShortInt(n as i16),
            AMQPValue::ShortUInt(n as u16),
            AMQPValue::ShortShortInt(n as i8),
            AMQPValue::ShortShortUInt(n as u8),
        ];
        let top = max_attempts.max(1);
        for value in &values {
            let got = attempt(Some(value), max_attempts);
            assert!((1..=top).contains(&got), "{value:?} with {max_attempts} gave {got}");
        }
        assert_eq!(attempt(Some(&AMQPValue::LongLongInt(n)), max_attempts), n.clamp(1, i64::from(top)) as u32);
    }
});
