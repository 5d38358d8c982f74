//! Order events: what the order service tells the rest of the world when an
//! order reaches a final status. They go through the order service's outbox,
//! in the transaction that records the status, to the topic exchange
//! `{platform}.events` with the event type as routing key (`order.completed`,
//! `order.failed`, `order.cancelled`); subscribers bind their own queues with
//! their own patterns (`order.*`, `order.failed`). The contract, its
//! versioning rule and its guarantees: `docs/events.md`.
//!
//! The payload type below is the one definition of the event: the AsyncAPI
//! document's payload schema is generated from it (`payload_schema`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contracts::FailureReason;

/// The version of the payload schema this code writes. Adding an optional
/// field keeps it; removing, renaming or retyping a field, or changing what
/// one means, is a new version (and a new message for the AsyncAPI document).
pub const SCHEMA_VERSION: u32 = 1;

/// The kind of an order event; also the AMQP `type` property and the routing
/// key on `{platform}.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub enum OrderEventType {
    /// The order is COMPLETED: stock confirmed, payment captured.
    #[serde(rename = "order.completed")]
    Completed,
    /// The order is FAILED (see `failure_reason`); whatever was done is undone.
    #[serde(rename = "order.failed")]
    Failed,
    /// The order is CANCELLED: a running saga compensated, or a completed
    /// order was refunded and its stock returned.
    #[serde(rename = "order.cancelled")]
    Cancelled,
}

impl OrderEventType {
    pub const ALL: [OrderEventType; 3] = [OrderEventType::Completed, OrderEventType::Failed, OrderEventType::Cancelled];

    /// The serde name: AMQP `type` and routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderEventType::Completed => "order.completed",
            OrderEventType::Failed => "order.failed",
            OrderEventType::Cancelled => "order.cancelled",
        }
    }

    pub fn from_routing_key(key: &str) -> Option<OrderEventType> {
        OrderEventType::ALL.into_iter().find(|kind| kind.as_str() == key)
    }
}

/// An order reached a final status (schema version 1).
///
/// Consumers must ignore fields they do not know: new optional fields are
/// added without a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "OrderEvent", extend("x-schema-version" = SCHEMA_VERSION))]
pub struct OrderEvent {
    /// The payload schema's version (1). A consumer that does not know the
    /// version it receives should not guess at its fields.
    #[schemars(range(min = 1))]
    pub schema_version: u32,
    /// Unique per event and the same on every delivery of it (also the AMQP
    /// `message_id`): deduplicate by it.
    pub event_id: Uuid,
    /// What happened; the same string as the routing key and the AMQP `type`.
    #[serde(rename = "type")]
    pub event_type: OrderEventType,
    pub order_id: Uuid,
    /// The customer who placed the order (the token's `sub`).
    #[schemars(length(min = 1))]
    pub customer_id: String,
    /// The order's priced total in cents, as `total_cents` in the order API;
    /// null if the order failed before inventory priced it.
    pub total_cents: Option<i64>,
    /// Why the order failed: set on `order.failed` only, null otherwise.
    pub failure_reason: Option<FailureReason>,
    /// When the order was placed.
    pub order_created_at: DateTime<Utc>,
    /// When the order reached this status (the commit of that transaction, to
    /// within the database clock).
    pub occurred_at: DateTime<Utc>,
}

impl crate::envelope::Payload for OrderEvent {
    fn type_name(&self) -> &'static str {
        self.event_type.as_str()
    }

    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

/// The JSON Schema (draft-07, which AsyncAPI 3.0's default schema format
/// extends) of `OrderEvent` as serialized, with its enums inline (no `$ref`s
/// to resolve).
pub fn payload_schema() -> serde_json::Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    // What the service writes: every field present (`null` when not set).
    settings.contract = schemars::generate::Contract::Serialize;
    let schema = settings.into_generator().into_root_schema_for::<OrderEvent>();
    let mut value = schema.to_value();
    // The document that embeds it says which dialect it is.
    if let Some(object) = value.as_object_mut() {
        object.remove("$schema");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_serde() {
        for kind in OrderEventType::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(OrderEventType::from_routing_key(kind.as_str()), Some(kind));
        }
        assert_eq!(OrderEventType::from_routing_key("order.replies"), None);
    }

    #[test]
    fn the_schema_names_every_field_and_type() {
        let schema = payload_schema();
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        // Every field is always written, `null` where not set.
        let fields: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields.len(), 9, "{fields:?}");
        for field in fields {
            assert!(required.contains(&field), "{field} not required: {required:?}");
        }
        let types = serde_json::to_string(&schema["properties"]["type"]).unwrap();
        for kind in OrderEventType::ALL {
            assert!(types.contains(&format!("\"{}\"", kind.as_str())), "{types}");
        }
        let reasons = serde_json::to_string(&schema["properties"]["failure_reason"]).unwrap();
        for reason in FailureReason::ALL {
            assert!(reasons.contains(reason.as_str()), "{reasons}");
        }
        assert!(!serde_json::to_string(&schema).unwrap().contains("$ref"));
    }
}
