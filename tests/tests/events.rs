//! Order events on the bus: a subscriber's own queues bound to
//! `{platform}.events` (`order.*`, and `order.failed` alone) receive exactly
//! one event per final status, with the fields of the contract, each valid
//! against the payload schema of the AsyncAPI document the order service
//! serves; the events follow an operator's forced compensation too.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_tests::{Options, Platform, ReceivedEvent as Received, Svc, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}")).parse().unwrap()
}

/// The served AsyncAPI document, parsed.
async fn asyncapi(platform: &Platform) -> Value {
    let response = platform.http.get(platform.url(Svc::Order, "/api/asyncapi.yaml")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/yaml");
    serde_yaml::from_str(&response.text().await.unwrap()).expect("the AsyncAPI document is YAML")
}

/// A validator for the payload of `message` in the AsyncAPI document: the
/// message's payload schema, its `$ref`s resolved inside the document.
fn payload_validator(document: &Value, message: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$ref": format!("#/components/messages/{message}/payload"),
        "components": document["components"],
    });
    jsonschema::draft7::new(&schema).expect("the payload schema is valid draft-07")
}

fn message_of(kind: &str) -> &'static str {
    match kind {
        "order.completed" => "orderCompleted",
        "order.failed" => "orderFailed",
        "order.cancelled" => "orderCancelled",
        other => panic!("not an event type: {other}"),
    }
}

#[tokio::test]
async fn every_final_status_is_published_once_to_the_events_exchange() {
    let mut platform = Platform::start(Options { step_timeout: Duration::from_secs(30), ..Options::default() }).await;
    platform.put_product("WIDGET", 500, 10).await;
    platform.put_product("RARE", 900, 0).await;
    platform.put_account("alice", 100_000).await;
    platform.put_account("bob", 100).await;

    let all = platform.subscribe_events("order.*").await;
    let failures = platform.subscribe_events("order.failed").await;

    // completed; failed before pricing (out of stock); failed after pricing
    // (insufficient funds: stock released); completed, then cancelled.
    let completed = platform.place_order("alice", &[("WIDGET", 2)]).await;
    let out_of_stock = platform.place_order("alice", &[("RARE", 1)]).await;
    let poor = platform.place_order("bob", &[("WIDGET", 1)]).await;
    let cancelled = platform.place_order("alice", &[("WIDGET", 1)]).await;
    platform.wait_status(&completed, "COMPLETED", WAIT).await;
    platform.wait_status(&out_of_stock, "FAILED", WAIT).await;
    platform.wait_status(&poor, "FAILED", WAIT).await;
    platform.wait_status(&cancelled, "COMPLETED", WAIT).await;
    assert_eq!(platform.cancel(&cancelled).await.status(), 202);
    platform.wait_status(&cancelled, "CANCELLED", WAIT).await;

    // An operator forces a saga to compensate while payment is frozen.
    platform.pause(Svc::Payment, 0, true);
    let forced = platform.place_order("alice", &[("WIDGET", 1)]).await;
    eventually("the forced order's stock is reserved", WAIT, || async {
        (platform.product("WIDGET").await["reserved"] == 1).then_some(())
    })
    .await;
    let response = platform
        .http
        .post(platform.url(Svc::Order, &format!("/api/v1/orders/{forced}/compensate")))
        .bearer_auth(platform.admin_token())
        .json(&json!({"reason": "payment hung"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    platform.pause(Svc::Payment, 0, false);
    platform.wait_status(&forced, "FAILED", WAIT).await;

    platform.wait_outbox_drained(WAIT).await;
    let received = all.take().await;
    let failed_only = failures.take().await;
    platform.assert_running();

    // Exactly these events, one per final status reached, each order's in
    // the order they happened.
    let by_order: BTreeMap<String, Vec<&Received>> = received.iter().fold(BTreeMap::new(), |mut map, event| {
        map.entry(event.body["order_id"].as_str().unwrap().to_owned()).or_default().push(event);
        map
    });
    let types = |id: &str| -> Vec<&str> {
        by_order.get(id).map(|events| events.iter().map(|e| e.routing_key.as_str()).collect()).unwrap_or_default()
    };
    assert_eq!(types(&completed), ["order.completed"], "{received:#?}");
    assert_eq!(types(&out_of_stock), ["order.failed"]);
    assert_eq!(types(&poor), ["order.failed"]);
    assert_eq!(types(&cancelled), ["order.completed", "order.cancelled"]);
    assert_eq!(types(&forced), ["order.failed"]);
    assert_eq!(received.len(), 6, "{received:#?}");

    // The `order.failed` binding got the failures and nothing else.
    let mut failed_ids: Vec<&str> = failed_only.iter().map(|e| e.body["order_id"].as_str().unwrap()).collect();
    failed_ids.sort_unstable();
    let mut expected = vec![out_of_stock.as_str(), poor.as_str(), forced.as_str()];
    expected.sort_unstable();
    assert_eq!(failed_ids, expected, "{failed_only:#?}");
    assert!(failed_only.iter().all(|e| e.routing_key == "order.failed"));

    // The fields, against what the order API says.
    let reasons = [
        (&completed, None),
        (&out_of_stock, Some("out_of_stock")),
        (&poor, Some("insufficient_funds")),
        (&cancelled, None),
        (&forced, Some("compensated_by_operator")),
    ];
    let mut ids = std::collections::BTreeSet::new();
    for (id, reason) in reasons {
        let order = platform.order(id).await;
        let events = &by_order[id.as_str()];
        for (index, event) in events.iter().enumerate() {
            let body = &event.body;
            assert_eq!(body["schema_version"], 1, "{body}");
            assert_eq!(body["type"], event.routing_key.as_str(), "{body}");
            assert_eq!(event.message_type, event.routing_key);
            assert_eq!(body["event_id"].as_str(), Some(event.message_id.as_str()), "event id = AMQP message id");
            assert!(ids.insert(event.message_id.clone()), "event id {} used twice", event.message_id);
            assert_eq!(body["order_id"], order["id"]);
            assert_eq!(body["customer_id"], order["customer_id"]);
            assert_eq!(body["total_cents"], order["total_cents"], "{body} vs {order}");
            let expected_reason = if event.routing_key == "order.failed" { reason } else { None };
            assert_eq!(body["failure_reason"].as_str(), expected_reason, "{body}");
            assert_eq!(time(&body["order_created_at"]), time(&order["created_at"]));
            assert!(time(&body["occurred_at"]) >= time(&body["order_created_at"]), "{body}");
            if index + 1 == events.len() {
                // The last event is the order's final status, stamped when it was stored.
                assert_eq!(time(&body["occurred_at"]), time(&order["updated_at"]), "{body} vs {order}");
            } else {
                assert!(time(&body["occurred_at"]) < time(&events[index + 1].body["occurred_at"]));
            }
            assert_eq!(event.delivery_mode, Some(2), "persistent");
            assert_eq!(event.content_type.as_deref(), Some("application/json"));
            assert!(event.correlation_header.as_deref().is_some_and(|c| !c.is_empty()));
        }
    }
    assert_eq!(by_order[&poor][0].body["total_cents"], 500, "priced before payment declined");
    assert!(by_order[&out_of_stock][0].body["total_cents"].is_null(), "never priced");

    // Each event is valid against its message's payload schema in the
    // served AsyncAPI document, and not against another message's.
    let document = asyncapi(&platform).await;
    for event in &received {
        let own = message_of(&event.routing_key);
        let validator = payload_validator(&document, own);
        let errors: Vec<String> = validator.iter_errors(&event.body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{} against {own}: {errors:?}", event.body);
        for other in ["orderCompleted", "orderFailed", "orderCancelled"].into_iter().filter(|m| *m != own) {
            assert!(!payload_validator(&document, other).is_valid(&event.body), "{} is valid as {other}", event.body);
        }
    }

    all.close().await;
    failures.close().await;
    platform.shutdown().await;
}

#[tokio::test]
async fn the_asyncapi_document_is_served_next_to_openapi_and_linked_from_it() {
    let platform = Platform::start(Options::default()).await;
    // Nobody is bound to the events exchange here: the event is dropped by
    // the exchange, and the outbox (saga commands included) still drains.
    platform.put_product("WIDGET", 500, 10).await;
    platform.put_account("alice", 10_000).await;
    let first = platform.place_order("alice", &[("WIDGET", 1)]).await;
    platform.wait_status(&first, "COMPLETED", WAIT).await;
    let second = platform.place_order("alice", &[("WIDGET", 1)]).await;
    platform.wait_status(&second, "COMPLETED", WAIT).await;
    platform.wait_outbox_drained(WAIT).await;

    let document = asyncapi(&platform).await;
    assert_eq!(document["asyncapi"], "3.0.0");
    let channel = &document["channels"]["orderEvents"];
    assert_eq!(channel["address"], "{platform}.events");
    assert_eq!(channel["bindings"]["amqp"]["exchange"]["type"], "topic");
    let mut names: Vec<&str> = document["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|message| message["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["order.cancelled", "order.completed", "order.failed"]);
    for message in ["orderCompleted", "orderFailed", "orderCancelled"] {
        assert_eq!(channel["messages"][message]["$ref"], format!("#/components/messages/{message}"));
        // The document's own examples are valid payloads.
        let example = &document["components"]["messages"][message]["examples"][0]["payload"];
        let validator = payload_validator(&document, message);
        assert!(validator.is_valid(example), "{message} example: {example}");
    }
    assert_eq!(document["operations"]["publishOrderEvents"]["action"], "send");
    // The schema has the fields every subscriber relies on.
    let schema = &document["components"]["schemas"]["OrderEvent"];
    for field in ["schema_version", "event_id", "type", "order_id", "customer_id", "order_created_at", "occurred_at"] {
        assert!(schema["required"].as_array().unwrap().contains(&field.into()), "{field}: {schema}");
    }

    let openapi: Value =
        platform.http.get(platform.url(Svc::Order, "/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(openapi["externalDocs"]["url"], "/api/asyncapi.yaml");
    assert!(openapi["info"]["description"].as_str().unwrap().contains("/api/asyncapi.yaml"));
    platform.shutdown().await;
}
