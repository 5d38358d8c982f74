//! Request and response bodies, and request validation.

use chrono::{DateTime, Utc};
use saga_common::customer::CustomerId;
use saga_common::openapi::integer;
use saga_common::page::PageLimit;
use saga_common::problem::Problem;
use saga_common::sku::Sku;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use saga_common::auth::Caller;
use saga_common::envelope::{MAX_CORRELATION_ID_LEN, valid_correlation_id};

use crate::saga::{FailureReason, OrderStatus};
use crate::store::{EventRow, OrderFilter, OrderRow};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// `Idempotency-Key`: 1-255 visible ASCII characters (`u8::is_ascii_graphic`).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";
/// An operator's reason for an incident action: at most this many characters.
pub const MAX_REASON_LEN: usize = 500;
/// `limit` of the order list.
pub const PAGE: PageLimit = PageLimit::new(20, 100);

/// An order to place: 1 to 100 lines.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"items": [{"sku": "SKU-1", "quantity": 2}]}))]
pub struct PlaceOrder {
    /// 1 to 100 lines.
    #[schema(schema_with = lines_schema)]
    pub items: Vec<LineRequest>,
}

fn lines_schema() -> Schema {
    ArrayBuilder::new().items(Ref::from_schema_name("LineRequest")).min_items(Some(1)).max_items(Some(MAX_LINES)).into()
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(value_type = Sku)]
    pub sku: String,
    /// 1 to 10000.
    #[serde(deserialize_with = "saga_common::openapi::deserialize_integer")]
    #[schema(schema_with = quantity_schema)]
    pub quantity: i64,
}

fn quantity_schema() -> Schema {
    integer(1, MAX_QUANTITY)
}

/// `status` of an order as the API shows it.
fn status_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(OrderStatus::ALL.map(OrderStatus::as_str))).into()
}

fn failure_reason_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .enum_values(Some(FailureReason::ALL.map(|r| Some(r.as_str())).into_iter().chain([None])))
        .into()
}

/// The optional body of an operator's action on an order (retry, compensate).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "payment-service was frozen; resumed at 10:42"}))]
pub struct IncidentRequest {
    /// Why: 1-500 characters, not blank, no control characters. Recorded on
    /// the order's timeline with the caller's `sub`.
    #[schema(schema_with = reason_schema)]
    pub reason: Option<String>,
}

fn reason_schema() -> Schema {
    let mut schema = saga_common::text::schema(MAX_REASON_LEN, "payment-service was frozen; resumed");
    if let Schema::Object(object) = &mut schema {
        object.schema_type = SchemaType::Array(vec![Type::String, Type::Null]);
    }
    schema
}

impl IncidentRequest {
    pub fn validate(&self) -> Result<(), Problem> {
        match &self.reason {
            Some(reason) => saga_common::text::check("reason", reason, MAX_REASON_LEN).map_err(Problem::validation),
            None => Ok(()),
        }
    }
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
            if let Err(e) = Sku::parse(&line.sku) {
                return Err(Problem::validation(format!("items[{i}].{e}")));
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
    Sku::valid(sku)
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

/// An order and where its saga stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0190b8f1-3c1e-7000-8000-000000000000",
    "customer_id": "alice",
    "status": "COMPLETED",
    "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1500}],
    "total_cents": 3000,
    "failure_reason": null,
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-01T12:00:01Z"
}))]
pub struct OrderView {
    pub id: Uuid,
    #[schema(value_type = CustomerId)]
    pub customer_id: String,
    /// PENDING while the saga runs, then COMPLETED, FAILED or CANCELLED.
    #[schema(schema_with = status_schema)]
    pub status: String,
    pub items: Vec<ItemView>,
    /// Known once inventory has priced the order.
    #[schema(required = true)]
    pub total_cents: Option<i64>,
    /// out_of_stock, unknown_sku, insufficient_funds, timeout or
    /// compensated_by_operator when FAILED.
    #[schema(schema_with = failure_reason_schema, required = true)]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    #[schema(value_type = Sku)]
    pub sku: String,
    #[schema(schema_with = quantity_schema)]
    pub quantity: i32,
    /// Known once inventory has priced the order.
    #[schema(required = true)]
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

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    #[schema(value_type = Option<Uuid>, required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// Seconds (1 to 30) to wait for the order to reach a final status
    /// before answering; without it the answer is immediate.
    pub wait: Option<u64>,
}

pub const MAX_WAIT_SECONDS: u64 = 30;

/// The `Idempotency-Key` header of `POST /api/v1/orders`, as
/// `validate_idempotency_key` checks it.
pub struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_IDEMPOTENCY_KEY))
            .pattern(Some(IDEMPOTENCY_KEY_PATTERN));
        vec![
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The same key with the same body returns the first response (the same order); with another body: 422",
                ))
                .schema(Some(schema))
                .example(Some("3f1c2a9e-order-1".into()))
                .build(),
        ]
    }
}

fn query(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

impl IntoParams for GetQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![query(
            "wait",
            "Seconds (1 to 30) to wait for a PENDING order to reach a final status before answering; without it the answer is immediate",
            integer(1, MAX_WAIT_SECONDS as i64),
        )]
    }
}

/// The search conditions `GET /api/v1/orders` and `GET /api/v1/orders/counts`
/// share, as received (checked by `FilterQuery::filter`).
#[derive(Debug, Default, Deserialize)]
pub struct FilterQuery {
    pub customer_id: Option<String>,
    pub failure_reason: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub correlation_id: Option<String>,
    pub id_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// PENDING, COMPLETED, FAILED or CANCELLED.
    pub status: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub customer_id: Option<String>,
    pub failure_reason: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub correlation_id: Option<String>,
    pub id_prefix: Option<String>,
}

impl ListQuery {
    pub fn filter_query(&self) -> FilterQuery {
        FilterQuery {
            customer_id: self.customer_id.clone(),
            failure_reason: self.failure_reason.clone(),
            created_after: self.created_after.clone(),
            created_before: self.created_before.clone(),
            correlation_id: self.correlation_id.clone(),
            id_prefix: self.id_prefix.clone(),
        }
    }
}

/// `GET /api/v1/orders/counts`: the list's conditions but status and paging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsQuery {
    pub customer_id: Option<String>,
    pub failure_reason: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub correlation_id: Option<String>,
    pub id_prefix: Option<String>,
}

impl CountsQuery {
    pub fn filter_query(&self) -> FilterQuery {
        FilterQuery {
            customer_id: self.customer_id.clone(),
            failure_reason: self.failure_reason.clone(),
            created_after: self.created_after.clone(),
            created_before: self.created_before.clone(),
            correlation_id: self.correlation_id.clone(),
            id_prefix: self.id_prefix.clone(),
        }
    }
}

/// `id_prefix`: the start of an order id as written (lowercase or uppercase
/// hex, dashes where a UUID has them), 1 to 36 characters.
pub const ID_PREFIX_PATTERN: &str = "^([0-9a-fA-F]{1,8}|[0-9a-fA-F]{8}-[0-9a-fA-F]{0,4}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{0,4}|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){2}-[0-9a-fA-F]{0,4}|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{0,12})$";

/// `correlation_id`, as `valid_correlation_id` checks it.
pub const CORRELATION_ID_PATTERN: &str = "^[!-~]{1,128}$";

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid-query", detail)
}

/// The ids that start with `prefix`, as a range of the primary key (both
/// ends inclusive); `None` if `prefix` is not the start of a UUID.
pub fn id_prefix_range(prefix: &str) -> Option<(Uuid, Uuid)> {
    if prefix.is_empty() || prefix.len() > 36 {
        return None;
    }
    let mut hex = String::with_capacity(32);
    for (i, c) in prefix.chars().enumerate() {
        match (i, c) {
            (8 | 13 | 18 | 23, '-') => {}
            (8 | 13 | 18 | 23, _) => return None,
            (_, c) if c.is_ascii_hexdigit() => hex.push(c.to_ascii_lowercase()),
            _ => return None,
        }
    }
    let low = format!("{hex:0<32}");
    let high = format!("{hex:f<32}");
    Some((Uuid::parse_str(&low).ok()?, Uuid::parse_str(&high).ok()?))
}

fn timestamp(name: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, Problem> {
    value
        .as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| invalid(format!("{name} must be an RFC 3339 date-time (2026-01-31T12:00:00Z): {e}")))
        })
        .transpose()
}

impl FilterQuery {
    /// The checked conditions. A customer's search is always of their own
    /// orders: naming another customer is refused (403), naming themself
    /// changes nothing; an admin may name anyone or no one.
    pub fn filter(&self, caller: &Caller) -> Result<OrderFilter, Problem> {
        if let Some(customer) = &self.customer_id {
            CustomerId::parse(customer).map_err(|e| invalid(format!("customer_id: {e}")))?;
            if !caller.may_access(customer) {
                return Err(Problem::forbidden("only an admin may search other customers' orders"));
            }
        }
        if let Some(reason) = &self.failure_reason
            && !FailureReason::ALL.iter().any(|r| r.as_str() == reason)
        {
            let all: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
            return Err(invalid(format!("failure_reason must be one of {}", all.join(", "))));
        }
        if let Some(id) = &self.correlation_id
            && !valid_correlation_id(id)
        {
            return Err(invalid(format!("correlation_id must be 1-{MAX_CORRELATION_ID_LEN} visible ASCII characters")));
        }
        let id_range = match &self.id_prefix {
            None => None,
            Some(prefix) => Some(id_prefix_range(prefix).ok_or_else(|| {
                invalid("id_prefix must be the start of an order id (hex digits, dashes where a UUID has them), 1-36 characters")
            })?),
        };
        Ok(OrderFilter {
            customer_id: if caller.admin { self.customer_id.clone() } else { Some(caller.customer_id.to_string()) },
            status: None,
            failure_reason: self.failure_reason.clone(),
            created_after: timestamp("created_after", &self.created_after)?,
            created_before: timestamp("created_before", &self.created_before)?,
            correlation_id: self.correlation_id.clone(),
            id_range,
        })
    }
}

fn date_time_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into()
}

/// The parameters of `FilterQuery`, documented once for both operations.
fn filter_params() -> Vec<Parameter> {
    let reason =
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(FailureReason::ALL.map(|r| r.as_str())));
    let correlation = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_CORRELATION_ID_LEN))
        .pattern(Some(CORRELATION_ID_PATTERN));
    let prefix = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(36))
        .pattern(Some(ID_PREFIX_PATTERN));
    vec![
        query(
            "customer_id",
            "Only this customer's orders. Admin only: a customer naming another customer gets 403 (their own id changes nothing)",
            Ref::from_schema_name("CustomerId"),
        ),
        query("failure_reason", "Only FAILED orders with this reason", reason),
        query("created_after", "Only orders created at or after this instant (RFC 3339)", date_time_schema()),
        query("created_before", "Only orders created before this instant (RFC 3339)", date_time_schema()),
        query("correlation_id", "Only the order placed with this `x-correlation-id`", correlation),
        query("id_prefix", "Only orders whose id starts with this (as the id is written, with its dashes)", prefix),
    ]
}

impl IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let limit = PAGE.schema();
        let cursor =
            ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
        let mut params = vec![
            query("status", "Only orders with this status", status_schema()),
            query("limit", "Orders per page", limit),
            query("cursor", "The `next_cursor` of the previous page", cursor),
        ];
        params.extend(filter_params());
        params
    }
}

impl IntoParams for CountsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        filter_params()
    }
}

/// How many orders match, by status (every status is present, 0 if none).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"PENDING": 2, "COMPLETED": 40, "FAILED": 3, "CANCELLED": 1, "total": 46}))]
pub struct OrderCounts {
    #[serde(rename = "PENDING")]
    pub pending: i64,
    #[serde(rename = "COMPLETED")]
    pub completed: i64,
    #[serde(rename = "FAILED")]
    pub failed: i64,
    #[serde(rename = "CANCELLED")]
    pub cancelled: i64,
    pub total: i64,
}

impl OrderCounts {
    pub fn from_rows(rows: &[(String, i64)]) -> Self {
        let count = |status: OrderStatus| rows.iter().filter(|(s, _)| s == status.as_str()).map(|(_, n)| n).sum();
        OrderCounts {
            pending: count(OrderStatus::Pending),
            completed: count(OrderStatus::Completed),
            failed: count(OrderStatus::Failed),
            cancelled: count(OrderStatus::Cancelled),
            total: rows.iter().map(|(_, n)| n).sum(),
        }
    }
}

pub const STATUSES: [&str; 4] = OrderStatus::ALL_STR;

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// order.placed, command.sent, reply.received, state.changed, step.timed_out,
    /// cancel.requested, compensation.sent, retry.requested or
    /// compensate.requested (the last two: `detail.by` is the operator's
    /// `sub`, `detail.reason` their reason or null).
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

    #[test]
    fn an_id_prefix_is_a_range_of_ids() {
        let id = Uuid::parse_str("0190b8f1-3c1e-7000-8000-00000000abcd").unwrap();
        for prefix in ["0", "0190b8f1", "0190b8f1-", "0190B8F1-3c", "0190b8f1-3c1e-7000-8000-00000000abcd"] {
            let (low, high) = id_prefix_range(prefix).unwrap_or_else(|| panic!("{prefix}"));
            assert!(low <= id && id <= high, "{prefix}");
        }
        let (low, high) = id_prefix_range("0190b8f2").unwrap();
        assert!(!(low <= id && id <= high));
        for bad in ["", "g", "0190b8f1x", "0190b8f13", "0190b8f1--", "0190b8f1-3c1e-7000-8000-00000000abcde", " 0"] {
            assert!(id_prefix_range(bad).is_none(), "{bad:?}");
        }
        let pattern = ID_PREFIX_PATTERN;
        assert!(pattern.starts_with('^') && pattern.ends_with('$'));
    }

    fn order(lines: usize, sku: &str, quantity: i64) -> PlaceOrder {
        PlaceOrder { items: (0..lines).map(|_| LineRequest { sku: sku.into(), quantity }).collect() }
    }

    /// The document says `type: integer`; JSON Schema counts 2.0 as one
    /// (schemathesis sent it and got 422): accepted, as 2. 2.5 is not.
    #[test]
    fn a_quantity_written_as_a_whole_number_is_accepted() {
        let parse = |quantity: &str| {
            serde_json::from_str::<PlaceOrder>(&format!(r#"{{"items":[{{"sku":"SKU-1","quantity":{quantity}}}]}}"#))
        };
        let order = parse("2.0").unwrap();
        assert_eq!(order.items[0].quantity, 2);
        assert!(order.validate().is_ok());
        // The idempotency hash sees the same request either way.
        assert_eq!(serde_json::to_vec(&order).unwrap(), serde_json::to_vec(&parse("2").unwrap()).unwrap());
        for bad in ["2.5", "\"2\"", "1e19", "null"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
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
