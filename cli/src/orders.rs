//! `sagactl orders list | show` and `sagactl sagas stuck`: reading orders
//! and their saga timelines through the order API, as an admin.

use std::time::Duration;

use chrono::Utc;
use clap::{Args, Subcommand};
use comfy_table::Table;
use saga_common::auth::mint;
use serde::Deserialize;

use crate::client::{Client, Order};
use crate::demo::{money, timeline_table};
use crate::{GlobalArgs, Result, new_table, printable};

const TOKEN_TTL: Duration = Duration::from_secs(300);
/// The order API's largest page.
const PAGE: usize = 100;

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// List orders, newest first.
    List(ListArgs),
    /// Show one order and its saga timeline.
    Show(ShowArgs),
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

fn admin(global: &GlobalArgs) -> Client {
    Client::new(&global.order_url).with_token(mint(&global.auth_jwt_secret, "sagactl", true, TOKEN_TTL))
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

pub async fn orders(global: &GlobalArgs, command: &OrdersCommand) -> Result<i32> {
    let client = admin(global);
    match command {
        OrdersCommand::List(args) => {
            let orders = fetch(&client, args.status.as_deref(), args.limit).await?;
            if !orders.is_empty() {
                say!("{}", orders_table(&orders));
            }
            say!("{} orders", orders.len());
        }
        OrdersCommand::Show(args) => {
            let order = client.order(&args.id).await?;
            say!("{}", orders_table(std::slice::from_ref(&order)));
            say!("{}", timeline_table(&client.order_events(&args.id).await?));
        }
    }
    Ok(0)
}

pub async fn sagas(global: &GlobalArgs, command: &SagasCommand) -> Result<i32> {
    let SagasCommand::Stuck(args) = command;
    let client = admin(global);
    let threshold = Utc::now() - chrono::Duration::from_std(args.older_than)?;
    let running = fetch(&client, Some("PENDING"), usize::MAX).await?;
    let stuck: Vec<Order> = running.into_iter().filter(|o| o.created_at.is_some_and(|t| t < threshold)).collect();
    if !stuck.is_empty() {
        say!("{}", orders_table(&stuck));
    }
    say!("{} sagas running for longer than {}", stuck.len(), humantime::format_duration(args.older_than));
    Ok(0)
}
