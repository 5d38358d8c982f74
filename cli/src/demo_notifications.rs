//! The demo's notifications (`sagactl up --demo`): a webhook receiver on
//! 127.0.0.1 that checks each request's Standard Webhooks signature the way a
//! customer's receiver should (`saga_common::webhook_signature::verify`),
//! registered as alice's endpoint before the scenarios and deleted after;
//! and, when the notification service has an SMTP server (`SMTP_URL` in the
//! environment `sagactl up` passes on), an e-mail endpoint for alice whose
//! deliveries are read back from the notification API.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use comfy_table::Cell;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::Client;
use crate::new_table;

/// Who the demo's endpoints belong to (a demo account).
pub const CUSTOMER: &str = "alice";
const ADDRESS: &str = "alice@example.com";
/// A receiver accepts timestamps this close to its clock (the spec's advice: 5 minutes).
const TOLERANCE_SECONDS: i64 = 300;

/// What the receiver saw: one request.
#[derive(Debug, Clone)]
struct Request {
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Request>>>;

/// Alice's endpoints and the receiver behind her webhook.
pub struct Subscription {
    client: Client,
    webhook_id: String,
    secret: String,
    email_id: Option<String>,
    log: Log,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Deserialize)]
struct Endpoint {
    id: String,
    secret: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryPage {
    items: Vec<Delivery>,
}

#[derive(Deserialize)]
struct Delivery {
    order_id: String,
    event_type: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
}

/// One webhook as it arrived.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WebhookSeen {
    pub webhook_id: String,
    pub event_type: String,
    pub order_id: String,
    /// `ok`, or why the signature check refused it.
    pub signature: String,
}

/// One e-mail delivery as the notification API reports it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EmailSeen {
    pub order_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NotificationReport {
    pub webhooks: Vec<WebhookSeen>,
    /// Null when the notification service has no SMTP server.
    pub emails: Option<Vec<EmailSeen>>,
    /// What did not arrive in time, or arrived unsigned.
    pub missing: Vec<String>,
}

/// Starts the receiver and registers alice's endpoints.
pub async fn subscribe(notification: &Client) -> Result<Subscription, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("webhook receiver: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let log = Log::default();
    let router = Router::new().route("/webhooks", post(receive)).with_state(log.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let url = format!("http://127.0.0.1:{port}/webhooks");
    let body = json!({"channel": "webhook", "url": url, "description": "sagactl demo receiver"});
    let created: Endpoint = match notification.post("/api/v1/endpoints", &body).await {
        Ok(created) => created,
        Err(error) => {
            server.abort();
            return Err(format!("registering the demo webhook: {error}"));
        }
    };
    let secret = created.secret.ok_or("the new webhook endpoint came without its secret")?;
    let mut subscription =
        Subscription { client: notification.clone(), webhook_id: created.id, secret, email_id: None, log, server };
    if std::env::var_os("SMTP_URL").is_some() {
        let body = json!({"channel": "email", "address": ADDRESS, "description": "sagactl demo"});
        let created: Endpoint = notification
            .post("/api/v1/endpoints", &body)
            .await
            .map_err(|e| format!("registering the demo e-mail address: {e}"))?;
        subscription.email_id = Some(created.id);
    }
    Ok(subscription)
}

async fn receive(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> StatusCode {
    log.lock().expect("receiver log").push(Request { headers, body });
    StatusCode::NO_CONTENT
}

impl Subscription {
    pub fn url_hint(&self) -> String {
        let email = if self.email_id.is_some() { format!(" and e-mail to {ADDRESS}") } else { String::new() };
        format!("{CUSTOMER}'s orders are notified by a signed webhook to the demo's receiver{email}")
    }

    /// Waits until each of `orders` (id, final status) was notified, then
    /// deletes the endpoints and stops the receiver.
    pub async fn collect(self, orders: &[(String, String)], timeout: Duration) -> NotificationReport {
        let expected: Vec<(String, String)> =
            orders.iter().map(|(id, status)| (id.clone(), format!("order.{}", status.to_lowercase()))).collect();
        let deadline = Instant::now() + timeout;
        let (webhooks, emails) = loop {
            let webhooks = self.webhooks();
            let emails = self.emails().await;
            let arrived = |seen: &dyn Fn(&str, &str) -> bool| expected.iter().all(|(id, kind)| seen(id, kind));
            let webhooks_in = arrived(&|id, kind| webhooks.iter().any(|w| w.order_id == id && w.event_type == kind));
            let emails_in = emails.as_ref().is_none_or(|emails| {
                arrived(&|id, kind| {
                    emails.iter().any(|e| e.order_id == id && e.event_type == kind && e.status == "delivered")
                })
            });
            if (webhooks_in && emails_in) || Instant::now() >= deadline {
                break (webhooks, emails);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut missing = Vec::new();
        for (id, kind) in &expected {
            if !webhooks.iter().any(|w| &w.order_id == id && &w.event_type == kind) {
                missing.push(format!("no {kind} webhook for order {id}"));
            }
            if let Some(emails) = &emails
                && !emails.iter().any(|e| &e.order_id == id && &e.event_type == kind && e.status == "delivered")
            {
                missing.push(format!("no {kind} e-mail delivered for order {id}"));
            }
        }
        missing.extend(
            webhooks
                .iter()
                .filter(|w| w.signature != "ok")
                .map(|w| format!("webhook {} refused by the receiver: {}", w.webhook_id, w.signature)),
        );
        for id in [Some(&self.webhook_id), self.email_id.as_ref()].into_iter().flatten() {
            if let Err(error) = self.client.delete(&format!("/api/v1/endpoints/{id}")).await {
                missing.push(format!("deleting the demo endpoint {id}: {error}"));
            }
        }
        self.server.abort();
        NotificationReport { webhooks, emails, missing }
    }

    /// Every request so far, its signature checked.
    fn webhooks(&self) -> Vec<WebhookSeen> {
        let now = chrono::Utc::now().timestamp();
        let log = self.log.lock().expect("receiver log").clone();
        log.into_iter()
            .map(|request| {
                let header =
                    |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let webhook_id = header("webhook-id");
                let signature = saga_common::webhook_signature::verify(
                    &self.secret,
                    &webhook_id,
                    &header("webhook-timestamp"),
                    &header("webhook-signature"),
                    &request.body,
                    now,
                    TOLERANCE_SECONDS,
                )
                .map_or_else(|e| e.to_string(), |()| "ok".to_owned());
                // Standard Webhooks' envelope: `type`, `timestamp`, `data` (the order event).
                let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
                let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
                WebhookSeen {
                    webhook_id,
                    event_type: text(&body["type"]),
                    order_id: text(&body["data"]["order_id"]),
                    signature,
                }
            })
            .collect()
    }

    async fn emails(&self) -> Option<Vec<EmailSeen>> {
        let id = self.email_id.as_ref()?;
        let page: DeliveryPage =
            self.client.get(&format!("/api/v1/deliveries?endpoint_id={id}&limit=200")).await.ok()?;
        Some(
            page.items
                .into_iter()
                .map(|d| EmailSeen {
                    order_id: d.order_id,
                    event_type: d.event_type,
                    status: d.status,
                    attempts: d.attempts,
                    last_error: d.last_error,
                })
                .collect(),
        )
    }
}

impl NotificationReport {
    pub fn text(&self) -> String {
        let mut table = new_table(vec!["webhook-id", "type", "order id", "signature"]);
        for webhook in &self.webhooks {
            table.add_row(vec![
                Cell::new(crate::printable(&webhook.webhook_id, 64)),
                Cell::new(crate::printable(&webhook.event_type, 32)),
                Cell::new(crate::printable(&webhook.order_id, 64)),
                Cell::new(crate::printable(&webhook.signature, 120)),
            ]);
        }
        let mut text = format!("\n\nWebhooks received by the demo's receiver ({CUSTOMER}'s orders)\n{table}");
        if let Some(emails) = &self.emails {
            let mut table = new_table(vec!["type", "order id", "status", "attempts", "last error"]);
            for email in emails {
                table.add_row(vec![
                    Cell::new(crate::printable(&email.event_type, 32)),
                    Cell::new(crate::printable(&email.order_id, 64)),
                    Cell::new(crate::printable(&email.status, 32)),
                    Cell::new(email.attempts),
                    Cell::new(email.last_error.as_deref().map(|e| crate::printable(e, 120)).unwrap_or_default()),
                ]);
            }
            text.push_str(&format!("\n\nE-mail to {ADDRESS} (deliveries, from the notification API)\n{table}"));
        }
        for line in &self.missing {
            text.push_str(&format!("\nNOT AS EXPECTED: {line}"));
        }
        text
    }
}
