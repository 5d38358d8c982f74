//! What the consumer does with a delivery before any handler sees it:
//! `saga_common::consumer::decode` (body size limit, message id, `Message`
//! JSON, `type` property, correlation id header or property, traceparent,
//! `x-attempt` clamped to the retry ladder), then the payment handler's
//! `CustomerId::parse` of a charge's customer id.
//!
//! Input: header lines, an empty line, then the body (bytes, as delivered):
//!
//! ```text
//! message-id: 0196b9a4-3c1e-7000-8000-000000000001   (AMQP message_id property)
//! type: inventory.reserve                            (AMQP type property)
//! correlation-id: abc                                (AMQP correlation_id property)
//! max-body: 65536                                    (MAX_MESSAGE_BYTES, default 1 MiB)
//! max-attempts: 5                                    (the retry ladder, default 5)
//! h-x-attempt: u32:3                                 (a header: h-NAME: TYPE:VALUE)
//!
//! {"type":"inventory.reserve",...}
//! ```
//!
//! Header types: `s` (long string, the raw bytes, maybe not UTF-8), `ss`
//! (short string), `bool`, `i8` `u8` `i16` `u16` `i32` `u32` `i64`, `f32`,
//! `f64`, `ts` (timestamp), `dec`, `bytes`, `array`, `table`, `void`.

#![no_main]

use lapin::message::Delivery;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use libfuzzer_sys::fuzz_target;
use saga_common::consumer::decode;
use saga_common::contracts::Message;
use saga_common::customer::CustomerId;
use saga_common::envelope::{headers, valid_correlation_id};
use saga_common::trace_context::TraceContext;
use uuid::Uuid;

struct Input {
    properties: lapin::BasicProperties,
    max_body: usize,
    max_attempts: u32,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<Input> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (&[][..], data),
    };
    let mut properties = lapin::BasicProperties::default();
    let mut table = FieldTable::default();
    let (mut max_body, mut max_attempts) = (1024 * 1024, 5);
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]));
        let text = || std::str::from_utf8(value).ok();
        // A short string longer than 255 bytes cannot come off the wire.
        let short = || text().and_then(|t| ShortString::try_new(t).ok());
        match name {
            b"message-id" => properties = properties.with_message_id(short()?),
            b"type" => properties = properties.with_type(short()?),
            b"correlation-id" => properties = properties.with_correlation_id(short()?),
            b"max-body" => max_body = text()?.parse().ok()?,
            b"max-attempts" => max_attempts = text()?.parse().ok()?,
            _ => {
                let name = ShortString::try_new(std::str::from_utf8(name.strip_prefix(b"h-")?).ok()?).ok()?;
                let colon = value.iter().position(|&b| b == b':')?;
                let (kind, raw) = (&value[..colon], &value[colon + 1..]);
                let raw_text = || std::str::from_utf8(raw).ok();
                let number = || raw_text()?.parse::<i128>().ok();
                let value = match kind {
                    b"s" => AMQPValue::LongString(LongString::from(raw.to_vec())),
                    b"ss" => AMQPValue::ShortString(ShortString::try_new(raw_text()?).ok()?),
                    b"bool" => AMQPValue::Boolean(raw == b"true"),
                    b"i8" => AMQPValue::ShortShortInt(number()?.try_into().ok()?),
                    b"u8" => AMQPValue::ShortShortUInt(number()?.try_into().ok()?),
                    b"i16" => AMQPValue::ShortInt(number()?.try_into().ok()?),
                    b"u16" => AMQPValue::ShortUInt(number()?.try_into().ok()?),
                    b"i32" => AMQPValue::LongInt(number()?.try_into().ok()?),
                    b"u32" => AMQPValue::LongUInt(number()?.try_into().ok()?),
                    b"i64" => AMQPValue::LongLongInt(number()?.try_into().ok()?),
                    b"f32" => AMQPValue::Float(raw_text()?.parse().ok()?),
                    b"f64" => AMQPValue::Double(raw_text()?.parse().ok()?),
                    b"ts" => AMQPValue::Timestamp(number()?.try_into().ok()?),
                    b"dec" => AMQPValue::DecimalValue(DecimalValue { scale: 2, value: number()?.try_into().ok()? }),
                    b"bytes" => AMQPValue::ByteArray(ByteArray::from(raw.to_vec())),
                    b"array" => AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
                    b"table" => AMQPValue::FieldTable(FieldTable::default()),
                    b"void" => AMQPValue::Void,
                    _ => return None,
                };
                table.insert(name, value);
            }
        }
    }
    properties = properties.with_headers(table);
    Some(Input { properties, max_body, max_attempts, body: body.to_vec() })
}

/// A header as the consumer reads a string: UTF-8 long string or short string.
fn string_header(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => String::from_utf8(value.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

/// The integer an `x-attempt` header claims, of any AMQP integer type.
fn claimed_attempt(properties: &lapin::BasicProperties) -> Option<i128> {
    Some(match properties.headers().as_ref()?.inner().get(headers::ATTEMPT)? {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = parse(data) else { return };
    let Input { properties, max_body, max_attempts, body } = input;
    let mut delivery = Delivery::mock(1, "".into(), "saga.inventory".into(), false, body.clone());
    delivery.properties = properties.clone();
    let received = decode::<Message>(delivery, max_body, max_attempts);

    // The attempt always lies on the ladder (so a retry goes to a delay
    // queue that exists), and an in-range claim is taken as is.
    let ladder = 1..=max_attempts.max(1);
    assert!(ladder.contains(&received.attempt), "attempt {} off the ladder {ladder:?}", received.attempt);
    match claimed_attempt(&properties) {
        Some(n) if (1..=i128::from(max_attempts)).contains(&n) => assert_eq!(i128::from(received.attempt), n),
        Some(n) if n > i128::from(max_attempts) => assert_eq!(received.attempt, max_attempts.max(1)),
        _ => assert_eq!(received.attempt, 1),
    }

    match &received.decoded {
        Ok(envelope) => {
            assert!(body.len() <= max_body);
            let id = properties.message_id().as_ref().expect("accepted without a message id");
            assert_eq!(id.as_str().parse::<Uuid>().ok(), Some(envelope.message_id));
            // The correlation id is copied into every reply's property and headers.
            assert!(valid_correlation_id(&envelope.correlation_id), "{:?}", envelope.correlation_id);
            // The trace context went through the propagator: empty or canonical.
            let trace = &envelope.trace;
            assert_eq!(&TraceContext::read(Some(&trace.traceparent), Some(&trace.tracestate)), trace);
            if let Some(parent) = string_header(&properties, headers::TRACEPARENT)
                && TraceContext::read(Some(&parent), None).traceparent == parent
            {
                assert_eq!(trace.traceparent, parent, "a canonical traceparent is kept");
            }
            if let Some(kind) = properties.kind() {
                assert_eq!(kind.as_str(), envelope.message.type_name());
            }
            // The message the handler gets is what the body says: it
            // serializes with the same tag and reads back the same.
            let json = serde_json::to_value(&envelope.message).expect("a message serializes");
            assert_eq!(json["type"], envelope.message.type_name());
            let again: Message = serde_json::from_value(json).expect("a serialized message reads back");
            assert_eq!(again, envelope.message);
            // Replies keep the correlation id and the trace.
            let reply = envelope.follow_up(envelope.message.clone());
            assert_eq!(reply.correlation_id, envelope.correlation_id);
            assert_eq!(reply.trace, envelope.trace);
            // The payment handler's first step with a charge.
            if let Message::ChargePayment { customer_id, .. } = &envelope.message
                && let Ok(parsed) = CustomerId::parse(customer_id)
            {
                assert_eq!(parsed.as_str(), customer_id);
                assert_eq!(CustomerId::parse(&format!("{parsed}")), Ok(parsed));
            }
        }
        Err(reason) => {
            // Reasons about headers and sizes state sizes and kinds, never
            // the offending value (which may be huge or hold control
            // characters); a body's JSON error may quote part of it.
            if !reason.starts_with("invalid body:") {
                assert!(reason.len() <= 300, "reason of {} bytes: {reason:?}", reason.len());
                assert!(reason.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "reason quotes input: {reason:?}");
            }
        }
    }
});
