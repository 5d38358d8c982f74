//! The AsyncAPI 3.0 description of the order events the service publishes
//! (`saga_common::events`), served at `/api/asyncapi.yaml` next to
//! `/api/openapi.json`. The payload schema is generated from the Rust type
//! (`events::payload_schema`); each message narrows it to its own `type` and
//! to whether `failure_reason` is set.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use saga_common::contracts::FailureReason;
use saga_common::events::{self, OrderEvent, OrderEventType};
use serde_json::{Value, json};
use uuid::Uuid;

pub const PATH: &str = "/api/asyncapi.yaml";

/// The AMQP bindings' version (the AsyncAPI AMQP bindings specification).
const AMQP_BINDING_VERSION: &str = "0.3.0";

/// `GET /api/asyncapi.yaml`, public like `/api/openapi.json`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let body = yaml();
    Router::new().route(
        PATH,
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/yaml")], body).into_response() }
        }),
    )
}

/// The document as YAML.
pub fn yaml() -> String {
    serde_yaml::to_string(&document()).expect("the document serializes")
}

/// The component name of each message.
fn message_name(kind: OrderEventType) -> &'static str {
    match kind {
        OrderEventType::Completed => "orderCompleted",
        OrderEventType::Failed => "orderFailed",
        OrderEventType::Cancelled => "orderCancelled",
    }
}

fn summary(kind: OrderEventType) -> &'static str {
    match kind {
        OrderEventType::Completed => "The order is COMPLETED: stock confirmed, payment captured.",
        OrderEventType::Failed => {
            "The order is FAILED (failure_reason says why); a reservation or capture made was undone."
        }
        OrderEventType::Cancelled => {
            "The order is CANCELLED: a running saga compensated, or a COMPLETED order was refunded and restocked."
        }
    }
}

/// A plausible event of this type, for the document's examples.
fn example(kind: OrderEventType) -> OrderEvent {
    let at = |s: &str| s.parse().expect("an RFC 3339 timestamp");
    OrderEvent {
        schema_version: events::SCHEMA_VERSION,
        event_id: Uuid::from_u128(0x0193_9a3f_5b2e_7c41_9d7e_4f1a_2b3c_4d5e),
        event_type: kind,
        order_id: Uuid::from_u128(0x0193_9a3f_4a10_7b22_8c33_1d2e_3f40_5a6b),
        customer_id: "alice".into(),
        total_cents: match kind {
            OrderEventType::Failed => None,
            _ => Some(2500),
        },
        failure_reason: (kind == OrderEventType::Failed).then_some(FailureReason::OutOfStock),
        order_created_at: at("2026-12-06T12:00:00.120Z"),
        occurred_at: at("2026-12-06T12:00:00.480Z"),
    }
}

fn message(kind: OrderEventType) -> Value {
    // What this message adds to the shared schema.
    let failure_reason = if kind == OrderEventType::Failed {
        json!({"required": ["failure_reason"], "properties": {"failure_reason": {"type": "string"}}})
    } else {
        json!({"properties": {"failure_reason": {"type": "null"}}})
    };
    let mut narrowed = json!({"properties": {"type": {"const": kind.as_str()}}});
    merge(&mut narrowed, failure_reason);
    json!({
        "name": kind.as_str(),
        "title": kind.as_str(),
        "summary": summary(kind),
        "contentType": "application/json",
        "correlationId": {
            "description": "The order's correlation id (the request that placed it), also in the x-correlation-id header.",
            "location": "$message.header#/x-correlation-id"
        },
        "headers": {
            "type": "object",
            "properties": {
                "x-correlation-id": {"type": "string", "description": "The order's correlation id."},
                "traceparent": {"type": "string", "description": "W3C Trace Context of the publish."},
                "tracestate": {"type": "string"}
            },
            "required": ["x-correlation-id"]
        },
        "payload": {"allOf": [{"$ref": "#/components/schemas/OrderEvent"}, narrowed]},
        "bindings": {
            "amqp": {"messageType": kind.as_str(), "bindingVersion": AMQP_BINDING_VERSION}
        },
        "examples": [{
            "name": kind.as_str(),
            "headers": {"x-correlation-id": "req-4f1a2b3c"},
            "payload": example(kind)
        }]
    })
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

pub fn document() -> Value {
    let messages: serde_json::Map<String, Value> =
        OrderEventType::ALL.iter().map(|kind| (message_name(*kind).to_owned(), message(*kind))).collect();
    let references: serde_json::Map<String, Value> = OrderEventType::ALL
        .iter()
        .map(|kind| {
            let name = message_name(*kind);
            (name.to_owned(), json!({"$ref": format!("#/components/messages/{name}")}))
        })
        .collect();
    let operation_messages: Vec<Value> = OrderEventType::ALL
        .iter()
        .map(|kind| json!({"$ref": format!("#/channels/orderEvents/messages/{}", message_name(*kind))}))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Saga Platform — order events",
            "version": events::SCHEMA_VERSION.to_string(),
            "description": "The order service publishes an event when an order reaches a final status: \
                order.completed, order.failed, order.cancelled. Each is written to the service's \
                transactional outbox in the transaction that records the status, then published \
                persistent, with publisher confirms, to the topic exchange {platform}.events with the \
                event type as routing key. Bind your own queue with your own pattern (order.* or \
                order.failed); with no queue bound the exchange drops the event. Delivery is at least \
                once: deduplicate by event_id (also the AMQP message_id). The events of one order are \
                published in the order they happened (a COMPLETED order later cancelled: \
                order.completed, then order.cancelled). Version rule: new optional fields keep \
                schema_version 1 (ignore fields you do not know); any other change is a new version. \
                The HTTP API: /api/openapi.json. The contract in prose: docs/events.md.",
            "license": {"name": "Apache-2.0"}
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "{host}",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The platform's RabbitMQ (the services' AMQP_URL).",
                "variables": {"host": {"default": "127.0.0.1:5672"}}
            }
        },
        "channels": {
            "orderEvents": {
                "address": "{platform}.events",
                "title": "Order events",
                "description": "The topic exchange {platform}.events. Routing key = the event type \
                    (= the AMQP type property = the payload's type). The platform declares the exchange \
                    (durable) with its topology and no queue on it.",
                "parameters": {
                    "platform": {"description": "The platform name (SAGA_PLATFORM).", "default": "saga"}
                },
                "messages": references,
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": "{platform}.events",
                            "type": "topic",
                            "durable": true,
                            "autoDelete": false,
                            "vhost": "/"
                        },
                        "bindingVersion": AMQP_BINDING_VERSION
                    }
                }
            }
        },
        "operations": {
            "publishOrderEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/orderEvents"},
                "title": "The order service publishes order events",
                "summary": "One event per final status an order reaches, at least once.",
                "messages": operation_messages,
                "bindings": {
                    "amqp": {"deliveryMode": 2, "mandatory": false, "bindingVersion": AMQP_BINDING_VERSION}
                }
            }
        },
        "components": {
            "schemas": {"OrderEvent": events::payload_schema()},
            "messages": messages
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_a_message_of_the_channel_and_the_operation() {
        let doc = document();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["version"], events::SCHEMA_VERSION.to_string());
        for kind in OrderEventType::ALL {
            let name = message_name(kind);
            let message = &doc["components"]["messages"][name];
            assert_eq!(message["name"], kind.as_str());
            assert_eq!(message["bindings"]["amqp"]["messageType"], kind.as_str());
            assert_eq!(message["payload"]["allOf"][1]["properties"]["type"]["const"], kind.as_str());
            assert_eq!(
                doc["channels"]["orderEvents"]["messages"][name]["$ref"],
                format!("#/components/messages/{name}")
            );
            assert!(
                doc["operations"]["publishOrderEvents"]["messages"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"$ref": format!("#/channels/orderEvents/messages/{name}")}))
            );
            // The example is a real event of that type.
            let example: OrderEvent = serde_json::from_value(message["examples"][0]["payload"].clone()).unwrap();
            assert_eq!(example.event_type, kind);
        }
        assert_eq!(doc["channels"]["orderEvents"]["bindings"]["amqp"]["exchange"]["type"], "topic");
    }

    /// The JSON Schema of AsyncAPI 3.0.0 documents, as the AsyncAPI
    /// initiative publishes it (npm `@asyncapi/specs` 6.11.1,
    /// `schemas/3.0.0-without-$id.json`, Apache-2.0).
    const ASYNCAPI_3_0_0: &str = include_str!("../asyncapi/asyncapi-3.0.0.schema.json");

    fn spec_errors(document: &Value) -> Vec<String> {
        let schema: Value = serde_json::from_str(ASYNCAPI_3_0_0).unwrap();
        let validator = jsonschema::draft7::new(&schema).expect("the AsyncAPI schema compiles");
        validator.iter_errors(document).map(|e| format!("{} at {}", e, e.instance_path())).collect()
    }

    #[test]
    fn the_document_is_valid_asyncapi_3_0_0() {
        let errors = spec_errors(&document());
        assert!(errors.is_empty(), "{errors:#?}");
        // The check can fail: an AsyncAPI 2 operation verb is refused.
        let mut broken = document();
        broken["operations"]["publishOrderEvents"]["action"] = json!("publish");
        assert!(!spec_errors(&broken).is_empty());
    }

    /// `docs/asyncapi.yaml` is the served document, for reading and tooling
    /// without a running service. `UPDATE_ASYNCAPI=1 cargo test -p
    /// order-service --lib asyncapi` rewrites it.
    #[test]
    fn the_committed_copy_is_the_served_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/asyncapi.yaml");
        if std::env::var_os("UPDATE_ASYNCAPI").is_some() {
            std::fs::write(path, yaml()).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == yaml(),
            "docs/asyncapi.yaml differs from the served document: UPDATE_ASYNCAPI=1 cargo test -p order-service --lib asyncapi"
        );
    }

    #[test]
    fn the_yaml_reads_back_as_the_document() {
        let back: Value = serde_yaml::from_str(&yaml()).unwrap();
        assert_eq!(back, document());
    }
}
