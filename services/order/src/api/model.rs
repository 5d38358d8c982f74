//! Request and response bodies, and request validation.

use chrono::{DateTime, Utc};
use saga_common::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::store::{EventRow, OrderRow};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1 to 100 lines.
    pub items: Vec<LineRequest>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(example = "SKU-1")]
    pub sku: String,
    /// 1 to 10000.
    #[schema(example = 2)]
    pub quantity: i64,
}

impl PlaceOrder {
    pub fn validate(&self) -> Result<(), Problem> {
        if self.items.is_empty() {
            return Err(Problem::validation("items: at least one line is required"));
        }
        if self.items.len() > MAX_LINES {
            return Err(Problem::validation(format!("items: at most {MAX_LINES} lines, got {}", self.items.len())));
        }
        for (i, line) in self.items.iter().enumerate() {
            if !valid_sku(&line.sku) {
                return Err(Problem::validation(format!(
                    "items[{i}].sku: 1-64 characters of letters, digits, '.', '_' or '-'"
                )));
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                return Err(Problem::validation(format!(
                    "items[{i}].quantity: must be between 1 and {MAX_QUANTITY}, got {}",
                    line.quantity
                )));
            }
        }
        Ok(())
    }
}

pub fn valid_sku(sku: &str) -> bool {
    !sku.is_empty() && sku.len() <= 64 && sku.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub fn validate_idempotency_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::bad_request(
            "invalid-idempotency-key",
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: String,
    /// PENDING, COMPLETED, FAILED or CANCELLED.
    pub status: String,
    pub items: Vec<ItemView>,
    /// Known once inventory has priced the order.
    pub total_cents: Option<i64>,
    /// out_of_stock, unknown_sku, insufficient_funds or timeout when FAILED.
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: Option<i64>,
}

impl From<&OrderRow> for OrderView {
    fn from(row: &OrderRow) -> Self {
        OrderView {
            id: row.id,
            customer_id: row.customer_id.clone(),
            status: row.status.clone(),
            items: row
                .items
                .iter()
                .map(|i| ItemView { sku: i.sku.clone(), quantity: i.quantity, unit_price_cents: i.unit_price_cents })
                .collect(),
            total_cents: row.total_cents,
            failure_reason: row.failure_reason.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Seconds (1 to 30) to wait for the order to reach a final status
    /// before answering; without it the answer is immediate.
    pub wait: Option<u64>,
}

pub const MAX_WAIT_SECONDS: u64 = 30;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// PENDING, COMPLETED, FAILED or CANCELLED.
    pub status: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub const STATUSES: [&str; 4] = ["PENDING", "COMPLETED", "FAILED", "CANCELLED"];

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// order.placed, command.sent, reply.received, state.changed, step.timed_out,
    /// cancel.requested or compensation.sent.
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<EventRow> for TimelineEntry {
    fn from(row: EventRow) -> Self {
        TimelineEntry { at: row.at, kind: row.kind, detail: row.detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(lines: usize, sku: &str, quantity: i64) -> PlaceOrder {
        PlaceOrder { items: (0..lines).map(|_| LineRequest { sku: sku.into(), quantity }).collect() }
    }

    #[test]
    fn validation_limits() {
        assert!(order(1, "SKU-1", 1).validate().is_ok());
        assert!(order(100, "SKU-1", 10_000).validate().is_ok());
        assert!(order(0, "SKU-1", 1).validate().is_err());
        assert!(order(101, "SKU-1", 1).validate().is_err());
        assert!(order(1, "SKU-1", 0).validate().is_err());
        assert!(order(1, "SKU-1", 10_001).validate().is_err());
        assert!(order(1, "", 1).validate().is_err());
        assert!(order(1, "bad sku", 1).validate().is_err());
        assert!(validate_idempotency_key(&"k".repeat(255)).is_ok());
        assert!(validate_idempotency_key(&"k".repeat(256)).is_err());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
    }
}
