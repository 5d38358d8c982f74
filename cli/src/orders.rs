//! `sagactl orders list | show | retry | compensate` and `sagactl sagas
//! stuck`: reading orders and their saga timelines, and acting on stuck
//! sagas, through the order API as an admin (the token of the context:
//! `crate::context`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::Table;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Order};
use crate::context::Token;
use crate::demo::{money, timeline_table};
use crate::output::{Out, Render};
use crate::{GlobalArgs, Result, new_table, printable};

pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// The order API's largest page.
const PAGE: usize = 100;

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// List orders, newest first.
    List(ListArgs),
    /// Show one order and its saga timeline.
    Show(ShowArgs),
    /// Send the current step's command of a running saga again (or, while
    /// it compensates, the compensations still awaited); the step gets a
    /// fresh timeout. Harmless if the participant already did it.
    Retry(ActionArgs),
    /// Force a running saga to compensate (release the stock, refund the
    /// payment); it ends FAILED compensated_by_operator.
    Compensate(ActionArgs),
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Order id.
    id: String,
    /// Why (1-500 characters), recorded on the order's timeline with the
    /// token's subject.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SagasCommand {
    /// List sagas still running (PENDING) that started longer ago than
    /// --older-than.
    Stuck(StuckArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only orders with this status (PENDING, COMPLETED, FAILED, CANCELLED).
    #[arg(long)]
    status: Option<String>,
    /// At most this many orders.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Order id.
    id: String,
}

#[derive(Debug, Args)]
pub struct StuckArgs {
    /// How old a running saga must be to count as stuck.
    #[arg(long, default_value = "60s", value_parser = saga_common::config::parse_duration)]
    older_than: Duration,
}

#[derive(Debug, Deserialize)]
struct OrderPage {
    items: Vec<Order>,
    next_cursor: Option<String>,
}

fn admin(global: &GlobalArgs, token: &Token) -> Result<Client> {
    Ok(Client::new(&global.order_url).with_token(token.bearer(&global.auth_jwt_secret)?))
}

/// `orders list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<Order>,
}

impl Render for OrderList {
    fn text(&self) -> String {
        let count = format!("{} orders", self.orders.len());
        if self.orders.is_empty() { count } else { format!("{}\n{count}", orders_table(&self.orders)) }
    }
}

/// A timeline entry as `orders show` prints it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// order.placed, command.sent, reply.received, state.changed, ...
    pub kind: String,
    /// What the entry says; its shape depends on `kind`.
    pub detail: serde_json::Value,
}

/// `orders show`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderDetail {
    pub order: Order,
    /// Oldest first.
    pub timeline: Vec<TimelineEntry>,
}

impl Render for OrderDetail {
    fn text(&self) -> String {
        let timeline = serde_json::to_value(&self.timeline).expect("entries serialize");
        format!("{}\n{}", orders_table(std::slice::from_ref(&self.order)), timeline_table(&timeline))
    }
}

/// `orders retry` and `orders compensate`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IncidentResult {
    /// retry or compensate.
    pub action: String,
    pub reason: Option<String>,
    /// The order once the action was recorded.
    pub order: Order,
}

impl Render for IncidentResult {
    fn text(&self) -> String {
        let done = match self.action.as_str() {
            "retry" => "the current step's command was sent again",
            _ => "compensation is under way",
        };
        format!(
            "{}\n{}: {done}; follow it with `sagactl orders show {}`",
            orders_table(std::slice::from_ref(&self.order)),
            printable(&self.order.id, 64),
            printable(&self.order.id, 64)
        )
    }
}

/// `sagas stuck`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StuckSagas {
    /// The threshold: running for longer than this many milliseconds.
    pub older_than_ms: u64,
    /// Oldest last.
    pub sagas: Vec<Order>,
}

impl Render for StuckSagas {
    fn text(&self) -> String {
        let count = format!(
            "{} sagas running for longer than {}",
            self.sagas.len(),
            humantime::format_duration(Duration::from_millis(self.older_than_ms))
        );
        if self.sagas.is_empty() { count } else { format!("{}\n{count}", orders_table(&self.sagas)) }
    }
}

/// Follows the cursor until `limit` orders (or the last page) are read.
async fn fetch(client: &Client, status: Option<&str>, limit: usize) -> Result<Vec<Order>> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    while orders.len() < limit {
        let mut path = format!("/api/v1/orders?limit={}", PAGE.min(limit - orders.len()));
        if let Some(status) = status {
            path.push_str(&format!("&status={status}"));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page: OrderPage = client.get(&path).await?;
        orders.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(orders)
}

fn orders_table(orders: &[Order]) -> Table {
    let mut table = new_table(vec!["id", "customer", "status", "total", "failure", "created", "updated"]);
    for order in orders {
        table.add_row(vec![
            printable(&order.id, 64),
            printable(order.customer_id.as_deref().unwrap_or_default(), 64),
            printable(&order.status, 32),
            order.total_cents.map(money).unwrap_or_default(),
            printable(order.failure_reason.as_deref().unwrap_or_default(), 120),
            order.created_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            order.updated_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ]);
    }
    table
}

pub async fn orders(global: &GlobalArgs, token: &Token, out: Out, command: &OrdersCommand) -> Result<i32> {
    let client = admin(global, token)?;
    match command {
        OrdersCommand::List(args) => {
            let orders = fetch(&client, args.status.as_deref(), args.limit).await?;
            out.print(&OrderList { orders })?;
        }
        OrdersCommand::Show(args) => {
            let order = client.order(&args.id).await?;
            let timeline = serde_json::from_value(client.order_events(&args.id).await?)
                .map_err(|e| format!("unexpected timeline of order {}: {e}", args.id))?;
            out.print(&OrderDetail { order, timeline })?;
        }
        OrdersCommand::Retry(args) => action(&client, out, "retry", args).await?,
        OrdersCommand::Compensate(args) => action(&client, out, "compensate", args).await?,
    }
    Ok(0)
}

async fn action(client: &Client, out: Out, action: &str, args: &ActionArgs) -> Result<()> {
    let order = client.order_action(&args.id, action, args.reason.as_deref()).await?;
    out.print(&IncidentResult { action: action.to_owned(), reason: args.reason.clone(), order })
}

pub async fn sagas(global: &GlobalArgs, token: &Token, out: Out, command: &SagasCommand) -> Result<i32> {
    let SagasCommand::Stuck(args) = command;
    let client = admin(global, token)?;
    let threshold = Utc::now() - chrono::Duration::from_std(args.older_than)?;
    let running = fetch(&client, Some("PENDING"), usize::MAX).await?;
    let sagas: Vec<Order> = running.into_iter().filter(|o| o.created_at.is_some_and(|t| t < threshold)).collect();
    out.print(&StuckSagas { older_than_ms: args.older_than.as_millis() as u64, sagas })?;
    Ok(0)
}
