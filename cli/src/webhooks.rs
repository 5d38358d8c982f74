//! `sagactl webhooks list | attempts | redeliver`: the notification
//! service's endpoints (webhook and e-mail), an endpoint's attempt log, and
//! sending a delivery again (same webhook-id), through its API
//! (`--notification-url`) with the context's token (an admin's by default:
//! every customer's endpoints).

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use saga_common::component::Component;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::context::Token;
use crate::output::{Out, Render};
use crate::{GlobalArgs, Result, new_table, printable};

/// The notification API's largest page.
const PAGE: usize = 200;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List endpoints (webhooks and e-mail addresses): where they point,
    /// their events, whether they are enabled and why not.
    List(ListArgs),
    /// An endpoint's delivery attempts, newest first: when, how long, the
    /// status code or error, the start of the response.
    Attempts(AttemptsArgs),
    /// Send a delivery again now (same webhook-id, a fresh attempt budget).
    Redeliver(RedeliverArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many endpoints.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct AttemptsArgs {
    /// Endpoint id.
    endpoint: String,
    /// At most this many attempts.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct RedeliverArgs {
    /// Delivery id (the webhook-id).
    delivery: String,
}

/// An endpoint as the API shows it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct Endpoint {
    pub id: String,
    pub owner: String,
    pub all_customers: bool,
    /// webhook or email.
    pub channel: String,
    /// The URL or the address.
    pub target: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
}

/// `webhooks list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EndpointList {
    pub endpoints: Vec<Endpoint>,
}

impl Render for EndpointList {
    fn text(&self) -> String {
        let count = format!("{} endpoints", self.endpoints.len());
        if self.endpoints.is_empty() {
            return count;
        }
        let mut table =
            new_table(vec!["id", "owner", "channel", "target", "events", "enabled", "failures", "disabled because"]);
        for e in &self.endpoints {
            let owner = if e.all_customers { format!("{} (all customers)", e.owner) } else { e.owner.clone() };
            table.add_row(vec![
                printable(&e.id, 64),
                printable(&owner, 80),
                printable(&e.channel, 10),
                printable(&e.target, 120),
                printable(&e.event_types.join(" "), 80),
                e.enabled.to_string(),
                e.consecutive_failures.to_string(),
                printable(e.disabled_reason.as_deref().unwrap_or_default(), 300),
            ]);
        }
        format!("{table}\n{count}")
    }
}

/// One attempt.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct Attempt {
    pub id: i64,
    pub delivery_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub succeeded: bool,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// `webhooks attempts`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AttemptList {
    pub endpoint: String,
    /// Newest first.
    pub attempts: Vec<Attempt>,
}

impl Render for AttemptList {
    fn text(&self) -> String {
        let count = format!("{} attempts to endpoint {}", self.attempts.len(), printable(&self.endpoint, 64));
        if self.attempts.is_empty() {
            return count;
        }
        let mut table = new_table(vec!["started", "delivery", "ms", "ok", "status", "error", "response"]);
        for a in &self.attempts {
            table.add_row(vec![
                a.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                printable(&a.delivery_id, 64),
                a.duration_ms.to_string(),
                a.succeeded.to_string(),
                a.status_code.map(|c| c.to_string()).unwrap_or_default(),
                printable(a.error.as_deref().unwrap_or_default(), 200),
                printable(a.response_excerpt.as_deref().unwrap_or_default(), 80),
            ]);
        }
        format!("{table}\n{count}")
    }
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// None for an `endpoint.disabled` notice.
    pub order_id: Option<String>,
    /// pending, delivered or failed.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// `webhooks redeliver`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Redelivered {
    pub delivery: Delivery,
}

impl Render for Redelivered {
    fn text(&self) -> String {
        let d = &self.delivery;
        format!(
            "delivery {} ({} of order {}) queued again for endpoint {}; follow it with `sagactl webhooks attempts {}`",
            printable(&d.id, 64),
            printable(&d.event_type, 40),
            printable(d.order_id.as_deref().unwrap_or("-"), 64),
            printable(&d.endpoint_id, 64),
            printable(&d.endpoint_id, 64)
        )
    }
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// Follows the cursor until `limit` items (or the last page) are read.
async fn fetch<T: serde::de::DeserializeOwned>(client: &Client, path: &str, limit: usize) -> Result<Vec<T>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    while items.len() < limit {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit={}", PAGE.min(limit - items.len()));
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Page<T> = client.get(&url).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(items)
}

/// An id put into a path: a UUID, or refused before any request.
fn uuid(id: &str, what: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).map_err(|_| format!("{what} {} is not a UUID", printable(id, 64)).into())
}

pub async fn run(global: &GlobalArgs, token: &Token, out: Out, command: &WebhooksCommand) -> Result<i32> {
    let bearer = token.bearer(&global.auth_jwt_secret)?;
    let client = Client::new(global.url(Component::Notification)).with_token(bearer);
    match command {
        WebhooksCommand::List(args) => {
            let endpoints = fetch(&client, "/api/v1/endpoints", args.limit).await?;
            out.print(&EndpointList { endpoints })?;
        }
        WebhooksCommand::Attempts(args) => {
            let id = uuid(&args.endpoint, "endpoint")?;
            let attempts = fetch(&client, &format!("/api/v1/endpoints/{id}/attempts"), args.limit).await?;
            out.print(&AttemptList { endpoint: id.to_string(), attempts })?;
        }
        WebhooksCommand::Redeliver(args) => {
            let id = uuid(&args.delivery, "delivery")?;
            let delivery: Delivery =
                client.post(&format!("/api/v1/deliveries/{id}/redeliver"), &serde_json::json!({})).await?;
            out.print(&Redelivered { delivery })?;
        }
    }
    Ok(0)
}
