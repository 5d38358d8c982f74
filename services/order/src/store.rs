//! Order persistence (sqlx, runtime-checked queries).

use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_common::contracts::PricedLine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::saga::SagaState;

/// One order line as stored: priced once inventory has reserved it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub saga: Json<SagaState>,
    pub items: Json<Vec<Item>>,
    pub total_cents: Option<i64>,
    pub failure_reason: Option<String>,
    pub correlation_id: String,
    pub traceparent: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `SELECT <every OrderRow column> FROM orders <rest>` as one literal.
macro_rules! select_orders {
    ($rest:literal) => {
        concat!(
            "SELECT id, customer_id, status, saga, items, total_cents, failure_reason, correlation_id, ",
            "traceparent, created_at, updated_at FROM orders ",
            $rest
        )
    };
}

pub async fn insert(conn: &mut PgConnection, order: &OrderRow, step_timeout_secs: f64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, status, saga, items, correlation_id, traceparent, deadline, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9, $9)",
    )
    .bind(order.id)
    .bind(&order.customer_id)
    .bind(&order.status)
    .bind(&order.saga)
    .bind(&order.items)
    .bind(&order.correlation_id)
    .bind(&order.traceparent)
    .bind(step_timeout_secs)
    .bind(order.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find<'e>(db: impl PgExecutor<'e>, id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(select_orders!("WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Loads an order and locks it until the transaction ends: one saga step at a time.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(select_orders!("WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(conn).await
}

/// Gives every step that awaits a reply at least `step_timeout` from now
/// (after a broker outage). Idempotent, so every replica may run it.
pub async fn restart_step_clocks(pool: &PgPool, step_timeout: Duration) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "UPDATE orders SET deadline = GREATEST(deadline, now() + make_interval(secs => $1)) WHERE deadline IS NOT NULL",
    )
    .bind(step_timeout.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Orders whose awaited reply is overdue, locked; rows another replica holds are skipped.
pub async fn lock_overdue(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(select_orders!("WHERE deadline <= now() ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED"))
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// The new saga state; `deadline_secs` restarts the step timer (`None` stops it).
pub struct SagaUpdate<'a> {
    pub saga: &'a SagaState,
    pub priced: Option<&'a (Vec<PricedLine>, i64)>,
    pub deadline_secs: Option<f64>,
}

/// `updated_at` is the moment of this change (`clock_timestamp()`), not the
/// start of the batch's transaction (`now()`), so latencies read from it
/// are not understated by the batch.
pub async fn update(conn: &mut PgConnection, id: Uuid, update: SagaUpdate<'_>) -> sqlx::Result<DateTime<Utc>> {
    let (items, total) = match update.priced {
        Some((lines, total)) => {
            let items: Vec<Item> = lines
                .iter()
                .map(|l| Item { sku: l.sku.clone(), quantity: l.quantity, unit_price_cents: Some(l.unit_price_cents) })
                .collect();
            (Some(Json(items)), Some(*total))
        }
        None => (None, None),
    };
    sqlx::query_scalar(
        "UPDATE orders SET saga = $2, status = $3, failure_reason = $4,
                items = COALESCE($5, items), total_cents = COALESCE($6, total_cents),
                deadline = now() + make_interval(secs => $7), updated_at = clock_timestamp()
         WHERE id = $1 RETURNING updated_at",
    )
    .bind(id)
    .bind(Json(update.saga))
    .bind(update.saga.status().as_str())
    .bind(update.saga.failure_reason().map(|r| r.as_str()))
    .bind(items)
    .bind(total)
    .bind(update.deadline_secs)
    .fetch_one(conn)
    .await
}

/// Appends entries to the saga timeline.
pub async fn record_events(conn: &mut PgConnection, order_id: Uuid, events: &[(&str, Value)]) -> sqlx::Result<()> {
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| *kind).collect();
    let details: Vec<Value> = events.iter().map(|(_, detail)| detail.clone()).collect();
    sqlx::query("INSERT INTO saga_events (order_id, kind, detail) SELECT $1, * FROM UNNEST($2::text[], $3::jsonb[])")
        .bind(order_id)
        .bind(kinds)
        .bind(details)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: Value,
}

pub async fn events<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as("SELECT at, kind, detail FROM saga_events WHERE order_id = $1 ORDER BY seq")
        .bind(order_id)
        .fetch_all(db)
        .await
}

pub struct ListFilter<'a> {
    pub customer_id: Option<&'a str>,
    pub status: Option<&'a str>,
    /// Only orders older than this one (ids are time-ordered).
    pub before: Option<Uuid>,
    pub limit: i64,
}

pub async fn list<'e>(db: impl PgExecutor<'e>, filter: ListFilter<'_>) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(select_orders!(
        "WHERE ($1::text IS NULL OR customer_id = $1) AND ($2::text IS NULL OR status = $2)
           AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(filter.customer_id)
    .bind(filter.status)
    .bind(filter.before)
    .bind(filter.limit)
    .fetch_all(db)
    .await
}

pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub response: Value,
}

/// Serialises requests that carry the same idempotency key: `false` means
/// another request with this key is being handled right now.
pub async fn try_lock_idempotency_key(conn: &mut PgConnection, customer_id: &str, key: &str) -> sqlx::Result<bool> {
    // PostgreSQL text cannot hold chr(0); a space cannot occur in a key
    // (visible ASCII only), so key first, then a space, is unambiguous.
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($2 || ' ' || $1, 0))")
        .bind(customer_id)
        .bind(key)
        .fetch_one(conn)
        .await
}

pub async fn find_idempotent_response(
    conn: &mut PgConnection,
    customer_id: &str,
    key: &str,
) -> sqlx::Result<Option<StoredResponse>> {
    let row: Option<(Vec<u8>, Value)> =
        sqlx::query_as("SELECT request_hash, response FROM idempotency_keys WHERE customer_id = $1 AND key = $2")
            .bind(customer_id)
            .bind(key)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(request_hash, response)| StoredResponse { request_hash, response }))
}

pub async fn store_idempotent_response(
    conn: &mut PgConnection,
    customer_id: &str,
    key: &str,
    request_hash: &[u8],
    order_id: Uuid,
    response: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id, response) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(customer_id)
    .bind(key)
    .bind(request_hash)
    .bind(order_id)
    .bind(response)
    .execute(conn)
    .await?;
    Ok(())
}
