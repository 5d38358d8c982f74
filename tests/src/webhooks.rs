//! A webhook receiver for the tests that run the whole platform (crash test,
//! fault suite): it answers 204 to everything, keeps every request, and
//! applies each `webhook-id` once (the deduplication the documentation asks
//! receivers for). `check_notified` then compares what it got with the
//! orders' final statuses and the notification service's attempt log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::{Platform, Svc, eventually};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct WebhookReceiver(Arc<Mutex<Vec<WebhookRequest>>>);

/// The settings under which the notification service may call a receiver on
/// 127.0.0.1 and retries quickly (for `Options::env`).
pub fn local_delivery_env() -> Vec<(&'static str, String)> {
    vec![
        ("WEBHOOK_ALLOW_CIDRS", "127.0.0.1/32".to_owned()),
        ("DELIVERY_POLL_INTERVAL", "100ms".to_owned()),
        ("DELIVERY_RETRY_INITIAL_DELAY", "500ms".to_owned()),
        ("DELIVERY_RETRY_MAX_DELAY", "2s".to_owned()),
        ("DELIVERY_TIMEOUT", "2s".to_owned()),
        ("DELIVERY_LEASE", "5s".to_owned()),
    ]
}

impl WebhookReceiver {
    /// Listens on 127.0.0.1; returns the receiver and its URL.
    pub async fn start() -> (WebhookReceiver, String) {
        let receiver = WebhookReceiver::default();
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    pub fn requests(&self) -> Vec<WebhookRequest> {
        self.0.lock().unwrap().clone()
    }

    /// The effect of each webhook-id, applied once: its first body.
    pub fn effects(&self) -> BTreeMap<String, Value> {
        let mut effects = BTreeMap::new();
        for request in self.requests() {
            effects.entry(request.id).or_insert_with(|| serde_json::from_slice(&request.body).unwrap_or(Value::Null));
        }
        effects
    }
}

async fn receive(State(receiver): State<WebhookReceiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    receiver.0.lock().unwrap().push(WebhookRequest {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    StatusCode::NO_CONTENT
}

/// Registers an admin endpoint that receives every customer's events; its id and secret.
pub async fn subscribe_all(platform: &Platform, url: &str) -> (String, String) {
    let response = platform
        .http
        .post(platform.url(Svc::Notification, "/api/v1/endpoints"))
        .bearer_auth(platform.admin_token())
        .json(&json!({"channel": "webhook", "url": url, "all_customers": true, "description": "test receiver"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    (endpoint["id"].as_str().unwrap().to_owned(), endpoint["secret"].as_str().unwrap().to_owned())
}

/// Every final order was notified: once all its deliveries are `delivered`,
/// the receiver applied exactly the events the order's final statuses call
/// for (one webhook-id per order and event type, each signed with `secret`),
/// none for an order that does not exist, and the attempt log shows at most
/// one successful attempt per delivery (nothing sent twice that was known to
/// have arrived). Returns (requests received, webhook-ids applied).
pub async fn check_notified(
    platform: &Platform,
    receiver: &WebhookReceiver,
    secret: &str,
    within: Duration,
) -> (usize, usize) {
    let notification = platform.pool(Svc::Notification);
    eventually("every delivery delivered", within, || async {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status <> 'delivered'")
            .fetch_one(notification)
            .await
            .ok()?;
        (open == 0).then_some(())
    })
    .await;
    let twice: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT delivery_id, count(*) FROM attempts WHERE succeeded GROUP BY delivery_id HAVING count(*) > 1",
    )
    .fetch_all(notification)
    .await
    .unwrap();
    assert!(twice.is_empty(), "deliveries with more than one successful attempt: {twice:?}");

    let now = chrono::Utc::now().timestamp();
    for request in receiver.requests() {
        saga_common::webhook_signature::verify(
            secret,
            &request.id,
            &request.timestamp,
            &request.signature,
            &request.body,
            now,
            3600,
        )
        .unwrap_or_else(|e| panic!("webhook {} refused: {e}", request.id));
    }
    // order id -> event types applied
    let mut applied: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let effects = receiver.effects();
    for (id, body) in &effects {
        let order = body["data"]["order_id"].as_str().unwrap_or_else(|| panic!("webhook {id}: {body}")).to_owned();
        let kind = body["type"].as_str().unwrap().to_owned();
        assert!(applied.entry(order).or_default().insert(kind.clone()), "two webhook-ids for one {kind}: {body}");
    }
    let orders: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM orders").fetch_all(platform.pool(Svc::Order)).await.unwrap();
    for (id, status) in &orders {
        let kinds = applied.remove(&id.to_string()).unwrap_or_default();
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        let expected: &[&[&str]] = match status.as_str() {
            "COMPLETED" => &[&["order.completed"]],
            "FAILED" => &[&["order.failed"]],
            "CANCELLED" => &[&["order.cancelled"], &["order.cancelled", "order.completed"]],
            other => panic!("order {id} is {other} at rest"),
        };
        assert!(expected.contains(&kinds.as_slice()), "order {id} ({status}): webhooks {kinds:?}");
    }
    assert!(applied.is_empty(), "webhooks for orders that do not exist: {applied:?}");
    (receiver.requests().len(), effects.len())
}
