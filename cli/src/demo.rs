//! `sagactl demo`: places orders that walk every path of the saga against
//! running services, waits for each to settle, and prints the results and
//! each order's timeline.

use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::Cell;
use futures_util::future::join_all;
use saga_common::auth::mint;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, Order, OrderLine, ProductUpsert};
use crate::demo_notifications;
use crate::output::{Format, Out, Render};
use crate::{GlobalArgs, Result, new_table, printable};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Do not (re)set the demo products and accounts before the scenarios
    /// (by default they are set, so the demo can be repeated).
    #[arg(long)]
    pub no_seed: bool,
    /// How long to wait for each order to settle.
    #[arg(long, default_value = "30s", value_parser = saga_common::config::parse_duration)]
    pub timeout: Duration,
}

/// Demo catalogue: (sku, name, unit price in cents, on hand).
pub const PRODUCTS: [(&str, &str, i64, i64); 3] =
    [("SKU-1", "Widget", 1500, 100), ("SKU-2", "Gadget", 4200, 50), ("SKU-RARE", "Rare item", 99900, 1)];

/// Demo accounts: (customer id, balance in cents).
pub const ACCOUNTS: [(&str, i64); 2] = [("alice", 1_000_000), ("bob", 500)];

const POLL_INTERVAL: Duration = Duration::from_millis(200);
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Clients of the three services, plus the secret to mint tokens with.
#[derive(Clone)]
pub struct Platform {
    pub order: Client,
    pub payment: Client,
    pub inventory: Client,
    pub notification: Client,
    secret: String,
}

impl Platform {
    pub fn new(global: &GlobalArgs) -> Self {
        Platform {
            order: Client::new(&global.order_url),
            payment: Client::new(&global.payment_url),
            inventory: Client::new(&global.inventory_url),
            notification: Client::new(&global.notification_url),
            secret: global.auth_jwt_secret.clone(),
        }
    }

    pub fn token(&self, subject: &str, admin: bool) -> String {
        mint(&self.secret, subject, admin, TOKEN_TTL)
    }

    /// Creates or replaces the demo products and accounts (admin API).
    pub async fn seed(&self) -> Result<()> {
        let admin = self.token("sagactl", true);
        let inventory = self.inventory.with_token(admin.clone());
        let payment = self.payment.with_token(admin);
        for (sku, name, unit_price_cents, on_hand) in PRODUCTS {
            let product = ProductUpsert { name: name.to_owned(), unit_price_cents, on_hand };
            inventory.put_product(sku, &product).await.map_err(|e| format!("seeding product {sku}: {e}"))?;
        }
        for (customer, balance) in ACCOUNTS {
            payment.put_account(customer, balance).await.map_err(|e| format!("seeding account {customer}: {e}"))?;
        }
        Ok(())
    }
}

pub fn describe_seed() -> String {
    let products: Vec<String> = PRODUCTS
        .iter()
        .map(|(sku, name, price, on_hand)| format!("{sku} \"{name}\" {} on_hand {on_hand}", money(*price)))
        .collect();
    let accounts: Vec<String> =
        ACCOUNTS.iter().map(|(customer, balance)| format!("{customer} {}", money(*balance))).collect();
    format!("products: {}; accounts: {}", products.join(", "), accounts.join(", "))
}

/// `sagactl demo`: exit status 0 if every scenario ended as expected.
pub async fn run_standalone(global: &GlobalArgs, out: Out, args: &DemoArgs) -> Result<i32> {
    let platform = Platform::new(global);
    if !args.no_seed {
        platform.seed().await?;
        progress(out, &format!("Seeded demo data ({})", describe_seed()));
    }
    progress(out, &starting(&platform, args.timeout));
    let report = report(&platform, args.timeout).await;
    out.print(&report)?;
    Ok(if report.all_as_expected { 0 } else { 1 })
}

/// Progress lines: on stdout with the tables, on stderr when stdout carries data.
fn progress(out: Out, line: &str) {
    if out.format == Format::Table {
        say!("{line}");
    } else {
        eprintln!("{line}");
    }
}

fn starting(platform: &Platform, timeout: Duration) -> String {
    format!(
        "Running the demo against {} (each order may take up to {})",
        platform.order.base(),
        humantime::format_duration(timeout)
    )
}

/// `sagactl demo`: each scenario, its order and its timeline.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DemoReport {
    pub scenarios: Vec<ScenarioResult>,
    pub all_as_expected: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScenarioResult {
    pub scenario: String,
    pub customer: String,
    /// The expected final status, and failure reason if any.
    pub expected_status: String,
    pub expected_reason: Option<String>,
    /// The order as it ended (null if it could not be placed).
    pub order: Option<Order>,
    pub as_expected: bool,
    /// Why the outcome is unexpected, or remarks.
    pub notes: Vec<String>,
    /// The order's saga timeline, oldest first.
    pub timeline: Vec<crate::orders::TimelineEntry>,
    /// Set when the timeline could not be read.
    pub timeline_error: Option<String>,
}

impl Render for DemoReport {
    fn text(&self) -> String {
        let mut table = new_table(vec![
            "scenario",
            "customer",
            "order id",
            "status",
            "failure_reason",
            "total",
            "expected",
            "result",
        ]);
        for result in &self.scenarios {
            let expected = match &result.expected_reason {
                Some(reason) => format!("{} {reason}", result.expected_status),
                None => result.expected_status.clone(),
            };
            let verdict = if result.as_expected {
                "ok".to_owned()
            } else if result.notes.is_empty() {
                "UNEXPECTED".to_owned()
            } else {
                format!("UNEXPECTED: {}", result.notes.join("; "))
            };
            let order = result.order.as_ref();
            table.add_row(vec![
                Cell::new(&result.scenario),
                Cell::new(&result.customer),
                Cell::new(order.map(|o| printable(&o.id, 64)).unwrap_or_else(|| "-".to_owned())),
                Cell::new(order.map(|o| printable(&o.status, 32)).unwrap_or_else(|| "-".to_owned())),
                Cell::new(
                    order.and_then(|o| o.failure_reason.as_deref()).map(|r| printable(r, 120)).unwrap_or_default(),
                ),
                Cell::new(order.and_then(|o| o.total_cents).map(money).unwrap_or_default()),
                Cell::new(expected),
                Cell::new(verdict),
            ]);
        }
        let mut text = table.to_string();
        for result in &self.scenarios {
            let Some(order) = &result.order else {
                continue;
            };
            text.push_str(&format!(
                "\n\nTimeline of order {} ({}: {})\n",
                printable(&order.id, 64),
                result.scenario,
                printable(&order.status, 32)
            ));
            match &result.timeline_error {
                Some(error) => text.push_str(&format!("  cannot read the timeline: {}", printable(error, 300))),
                None => {
                    text.push_str(&timeline_table(&serde_json::to_value(&result.timeline).expect("entries serialize")))
                }
            }
        }
        let failed: Vec<&str> = self.scenarios.iter().filter(|r| !r.as_expected).map(|r| r.scenario.as_str()).collect();
        if failed.is_empty() {
            text.push_str(&format!("\n\nDemo: all {} scenarios ended as expected.", self.scenarios.len()));
        } else {
            text.push_str(&format!(
                "\n\nDemo: {} of {} scenarios ended unexpectedly: {}",
                failed.len(),
                self.scenarios.len(),
                failed.join(", ")
            ));
        }
        text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Just wait for the saga to finish.
    Wait,
    /// Cancel right after placing (the saga is running or has just completed).
    CancelAtOnce,
    /// Wait for COMPLETED, then cancel (refund and restock).
    CancelWhenCompleted,
}

struct Scenario {
    name: &'static str,
    customer: &'static str,
    items: Vec<(&'static str, u32)>,
    action: Action,
    expected_status: &'static str,
    expected_reason: Option<&'static str>,
}

fn scenarios() -> Vec<Scenario> {
    let scenario = |name, customer, items, action, status, reason| Scenario {
        name,
        customer,
        items,
        action,
        expected_status: status,
        expected_reason: reason,
    };
    vec![
        scenario("success", "alice", vec![("SKU-1", 2)], Action::Wait, "COMPLETED", None),
        scenario("out of stock", "alice", vec![("SKU-2", 1000)], Action::Wait, "FAILED", Some("out_of_stock")),
        scenario("unknown sku", "alice", vec![("SKU-NOPE", 1)], Action::Wait, "FAILED", Some("unknown_sku")),
        scenario("insufficient funds", "bob", vec![("SKU-2", 1)], Action::Wait, "FAILED", Some("insufficient_funds")),
        scenario("cancel at once", "alice", vec![("SKU-1", 1)], Action::CancelAtOnce, "CANCELLED", None),
        scenario("cancel completed", "alice", vec![("SKU-1", 1)], Action::CancelWhenCompleted, "CANCELLED", None),
    ]
}

struct Outcome {
    scenario: Scenario,
    client: Client,
    order: Option<Order>,
    /// Why the outcome is unexpected, or remarks.
    notes: Vec<String>,
}

impl Outcome {
    fn as_expected(&self) -> bool {
        self.notes.is_empty()
            && self.order.as_ref().is_some_and(|order| {
                order.status == self.scenario.expected_status
                    && order.failure_reason.as_deref() == self.scenario.expected_reason
            })
    }
}

/// Runs every scenario concurrently and prints the results and timelines
/// (`sagactl up --demo`). `Ok(true)` if every scenario ended as expected.
/// Alice's orders are also notified: a signed webhook to a receiver in this
/// process (and e-mail when the platform has an SMTP server).
pub async fn run(platform: &Platform, timeout: Duration) -> Result<bool> {
    say!("{}", starting(platform, timeout));
    let customer = demo_notifications::CUSTOMER;
    let notification = platform.notification.with_token(platform.token(customer, false));
    let subscription = demo_notifications::subscribe(&notification).await;
    match &subscription {
        Ok(subscription) => say!("{}", subscription.url_hint()),
        Err(error) => say!("NOT AS EXPECTED: {error}"),
    }
    let report = report(platform, timeout).await;
    say!("{}", report.text());
    let Ok(subscription) = subscription else { return Ok(false) };
    let finished: Vec<(String, String)> = report
        .scenarios
        .iter()
        .filter(|s| s.customer == customer)
        .filter_map(|s| s.order.as_ref().filter(|o| o.is_terminal()))
        .map(|o| (o.id.clone(), o.status.clone()))
        .collect();
    let notifications = subscription.collect(&finished, timeout).await;
    say!("{}", notifications.text());
    Ok(report.all_as_expected && notifications.missing.is_empty())
}

/// Runs every scenario concurrently; reads each order's timeline.
async fn report(platform: &Platform, timeout: Duration) -> DemoReport {
    let outcomes = join_all(scenarios().into_iter().map(|scenario| run_scenario(platform, scenario, timeout))).await;
    let mut scenarios = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let as_expected = outcome.as_expected();
        let (timeline, timeline_error) = match &outcome.order {
            None => (Vec::new(), None),
            Some(order) => match outcome.client.order_events(&order.id).await {
                Ok(events) => match serde_json::from_value(events) {
                    Ok(timeline) => (timeline, None),
                    Err(error) => (Vec::new(), Some(format!("unexpected timeline: {error}"))),
                },
                Err(error) => (Vec::new(), Some(error.to_string())),
            },
        };
        let scenario = &outcome.scenario;
        scenarios.push(ScenarioResult {
            scenario: scenario.name.to_owned(),
            customer: scenario.customer.to_owned(),
            expected_status: scenario.expected_status.to_owned(),
            expected_reason: scenario.expected_reason.map(str::to_owned),
            as_expected,
            notes: outcome.notes,
            order: outcome.order,
            timeline,
            timeline_error,
        });
    }
    let all_as_expected = scenarios.iter().all(|s| s.as_expected);
    DemoReport { scenarios, all_as_expected }
}

async fn run_scenario(platform: &Platform, scenario: Scenario, timeout: Duration) -> Outcome {
    let client = platform.order.with_token(platform.token(scenario.customer, false));
    let mut outcome = Outcome { client: client.clone(), order: None, notes: Vec::new(), scenario };
    let lines: Vec<OrderLine> = outcome
        .scenario
        .items
        .iter()
        .map(|(sku, quantity)| OrderLine { sku: (*sku).to_owned(), quantity: *quantity })
        .collect();
    let placed = match client.place_order(&lines).await {
        Ok(order) => order,
        Err(error) => {
            outcome.notes.push(format!("placing the order: {error}"));
            return outcome;
        }
    };
    let id = placed.id.clone();
    outcome.order = Some(placed);

    let settled = |order: &Order| order.is_terminal();
    let cancelled = |order: &Order| matches!(order.status.as_str(), "CANCELLED" | "FAILED");
    let result = match outcome.scenario.action {
        Action::Wait => wait_for(&client, &id, timeout, settled).await,
        Action::CancelAtOnce => match client.cancel_order(&id).await {
            Ok(()) => wait_for(&client, &id, timeout, cancelled).await,
            Err(error) => {
                outcome.notes.push(format!("cancel: {error}"));
                client.order(&id).await.map_err(|e| e.to_string())
            }
        },
        Action::CancelWhenCompleted => match wait_for(&client, &id, timeout, settled).await {
            Ok(order) if order.status == "COMPLETED" => match client.cancel_order(&id).await {
                Ok(()) => wait_for(&client, &id, timeout, cancelled).await,
                Err(error) => {
                    outcome.notes.push(format!("cancel: {error}"));
                    Ok(order)
                }
            },
            Ok(order) => {
                outcome.notes.push(format!("expected COMPLETED before cancelling, got {}", order.status));
                Ok(order)
            }
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(order) => outcome.order = Some(order),
        Err(error) => outcome.notes.push(error),
    }
    outcome
}

/// Polls the order until `done` holds; on timeout, the note says where it stuck.
async fn wait_for(
    client: &Client,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Order) -> bool,
) -> Result<Order, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.order(id).await {
            Ok(order) if done(&order) => return Ok(order),
            Ok(order) => format!("still {}", order.status),
            Err(error) => format!("reading the order failed: {error}"),
        };
        if Instant::now() >= deadline {
            return Err(format!("{last} after {}", humantime::format_duration(timeout)));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Prints whatever the events endpoint returned: an array of objects (or an
/// object holding one under `items`/`events`), `at`, `kind` and `detail`
/// first, then every other field in order of appearance.
pub fn timeline_table(events: &Value) -> String {
    let list = match events {
        Value::Array(list) => list.as_slice(),
        Value::Object(map) => match map.get("items").or_else(|| map.get("events")) {
            Some(Value::Array(list)) => list.as_slice(),
            _ => std::slice::from_ref(events),
        },
        _ => std::slice::from_ref(events),
    };
    if list.is_empty() {
        return "  (no events)".to_owned();
    }
    let mut columns: Vec<String> = Vec::new();
    for preferred in ["at", "kind", "detail"] {
        if list.iter().any(|e| e.get(preferred).is_some()) {
            columns.push(preferred.to_owned());
        }
    }
    for event in list {
        if let Value::Object(map) = event {
            for key in map.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    if columns.is_empty() {
        columns.push("event".to_owned());
    }
    let header: Vec<String> = columns.iter().map(|c| printable(c, 40)).collect();
    let mut table = new_table(header.iter().map(String::as_str).collect());
    for event in list {
        let row: Vec<String> = match event {
            Value::Object(map) => columns.iter().map(|c| map.get(c).map(cell_text).unwrap_or_default()).collect(),
            other => {
                let mut row = vec![cell_text(other)];
                row.resize(columns.len(), String::new());
                row
            }
        };
        table.add_row(row);
    }
    table.to_string()
}

fn cell_text(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    printable(&text, 120)
}

/// Cents as a decimal amount: 150000 -> "1500.00".
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_formats_cents() {
        assert_eq!(money(1500), "15.00");
        assert_eq!(money(99_905), "999.05");
        assert_eq!(money(-7), "-0.07");
    }

    #[test]
    fn timeline_shows_known_fields_first_and_every_other_field() {
        let events = json!([
            {"kind": "reserve_stock", "step": 1, "at": "2026-01-01T00:00:00Z", "detail": {"skus": 1}},
            {"at": "2026-01-01T00:00:01Z", "kind": "completed", "extra": null}
        ]);
        let text = timeline_table(&events);
        let header = text.lines().nth(1).unwrap();
        let positions: Vec<usize> =
            ["at", "kind", "detail", "step", "extra"].iter().map(|c| header.find(c).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{header}");
        assert!(text.contains("reserve_stock"));
        assert!(text.contains(r#"{"skus":1}"#));
    }

    #[test]
    fn timeline_accepts_wrapped_lists_and_odd_values() {
        assert!(timeline_table(&json!({"items": [{"kind": "x"}]})).contains('x'));
        assert!(timeline_table(&json!([])).contains("no events"));
        assert!(timeline_table(&json!(["plain"])).contains("plain"));
    }
}
