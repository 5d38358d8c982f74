//! Order persistence (sqlx, runtime-checked queries).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
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
    /// The trace of the request that placed the order (its span's context):
    /// a step timeout or a cancel continues it.
    pub traceparent: String,
    pub tracestate: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    /// The context of the request that placed the order.
    pub fn trace(&self) -> saga_common::trace_context::TraceContext {
        saga_common::trace_context::TraceContext {
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        }
    }
}

/// `SELECT <every OrderRow column> FROM orders <rest>` as one literal.
macro_rules! select_orders {
    ($rest:literal) => {
        concat!(
            "SELECT id, customer_id, status, saga, items, total_cents, failure_reason, correlation_id, ",
            "traceparent, tracestate, created_at, updated_at FROM orders ",
            $rest
        )
    };
}

/// Inserts new orders in one statement; each one's first step awaits a
/// reply within `step_timeout_secs`.
pub async fn insert_all(conn: &mut PgConnection, orders: &[&OrderRow], step_timeout_secs: f64) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let customers: Vec<&str> = orders.iter().map(|o| o.customer_id.as_str()).collect();
    let statuses: Vec<&str> = orders.iter().map(|o| o.status.as_str()).collect();
    let sagas: Vec<Value> = orders.iter().map(|o| serde_json::to_value(&o.saga.0).expect("saga serializes")).collect();
    let items: Vec<Value> = orders.iter().map(|o| serde_json::to_value(&o.items.0).expect("items serialize")).collect();
    let correlations: Vec<&str> = orders.iter().map(|o| o.correlation_id.as_str()).collect();
    let traces: Vec<&str> = orders.iter().map(|o| o.traceparent.as_str()).collect();
    let states: Vec<&str> = orders.iter().map(|o| o.tracestate.as_str()).collect();
    let created: Vec<DateTime<Utc>> = orders.iter().map(|o| o.created_at).collect();
    sqlx::query(
        "INSERT INTO orders (id, customer_id, status, saga, items, correlation_id, traceparent, tracestate, deadline,
                             created_at, updated_at)
         SELECT id, customer_id, status, saga, items, correlation_id, traceparent, tracestate,
                now() + make_interval(secs => $9), created_at, created_at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::text[], $7::text[], $8::timestamptz[],
                     $10::text[])
              AS o(id, customer_id, status, saga, items, correlation_id, traceparent, created_at, tracestate)",
    )
    .bind(ids)
    .bind(customers)
    .bind(statuses)
    .bind(sagas)
    .bind(items)
    .bind(correlations)
    .bind(traces)
    .bind(created)
    .bind(step_timeout_secs)
    .bind(states)
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

/// Loads and locks the orders of a batch, in id order (so that concurrent
/// batches wait for each other instead of deadlocking); unknown ids are
/// left out.
pub async fn lock_all(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(select_orders!("WHERE id = ANY($1) ORDER BY id FOR UPDATE")).bind(ids).fetch_all(conn).await
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

/// Running sagas by step (`saga.step`): how many, and the age in seconds of
/// the oldest (since its order was placed). Steps with none are left out.
pub async fn running_by_step(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, f64)>> {
    sqlx::query_as(
        "SELECT saga->>'step', count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8 \
         FROM orders WHERE status = 'PENDING' GROUP BY 1",
    )
    .fetch_all(pool)
    .await
}

/// Orders whose awaited reply is overdue, locked; rows another replica holds are skipped.
pub async fn lock_overdue(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(select_orders!("WHERE deadline <= now() ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED"))
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// An order's new saga state, as the row now holds it; `deadline_secs`
/// restarts the step timer (`None` stops it).
pub struct SagaUpdate<'a> {
    pub row: &'a OrderRow,
    pub deadline_secs: Option<f64>,
}

/// Stores the new state of many orders in one statement; returns each one's
/// `updated_at`: the moment of this change (`clock_timestamp()`), not the
/// start of the batch's transaction (`now()`), so latencies read from it are
/// not understated by the batch.
pub async fn update_all(
    conn: &mut PgConnection,
    updates: &[SagaUpdate<'_>],
) -> sqlx::Result<HashMap<Uuid, DateTime<Utc>>> {
    if updates.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = updates.iter().map(|u| u.row.id).collect();
    let sagas: Vec<Value> =
        updates.iter().map(|u| serde_json::to_value(&u.row.saga.0).expect("saga serializes")).collect();
    let statuses: Vec<&str> = updates.iter().map(|u| u.row.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = updates.iter().map(|u| u.row.failure_reason.as_deref()).collect();
    let items: Vec<Value> =
        updates.iter().map(|u| serde_json::to_value(&u.row.items.0).expect("items serialize")).collect();
    let totals: Vec<Option<i64>> = updates.iter().map(|u| u.row.total_cents).collect();
    let deadlines: Vec<Option<f64>> = updates.iter().map(|u| u.deadline_secs).collect();
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE orders o SET saga = u.saga, status = u.status, failure_reason = u.reason, items = u.items,
                total_cents = u.total, deadline = now() + make_interval(secs => u.deadline),
                updated_at = clock_timestamp()
         FROM UNNEST($1::uuid[], $2::jsonb[], $3::text[], $4::text[], $5::jsonb[], $6::int8[], $7::float8[])
              AS u(id, saga, status, reason, items, total, deadline)
         WHERE o.id = u.id
         RETURNING o.id, o.updated_at",
    )
    .bind(ids)
    .bind(sagas)
    .bind(statuses)
    .bind(reasons)
    .bind(items)
    .bind(totals)
    .bind(deadlines)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Timeline entries: what happened (`order.placed`, `reply.received`, ...)
/// and its detail.
pub type Entry = (&'static str, Value);

/// Stores the timeline of many steps in one statement: one row per step
/// (the event, with what it caused in `follow`), expanded again by `events`.
pub async fn record_steps(conn: &mut PgConnection, steps: &[(Uuid, Vec<Entry>)]) -> sqlx::Result<()> {
    let steps: Vec<&(Uuid, Vec<Entry>)> = steps.iter().filter(|(_, entries)| !entries.is_empty()).collect();
    if steps.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = steps.iter().map(|(id, _)| *id).collect();
    let kinds: Vec<&str> = steps.iter().map(|(_, entries)| entries[0].0).collect();
    let details: Vec<&Value> = steps.iter().map(|(_, entries)| &entries[0].1).collect();
    let follows: Vec<Option<Value>> = steps
        .iter()
        .map(|(_, entries)| {
            (entries.len() > 1).then(|| {
                Value::Array(
                    entries[1..].iter().map(|(kind, detail)| json!({"kind": kind, "detail": detail})).collect(),
                )
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO saga_events (order_id, kind, detail, follow)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[])",
    )
    .bind(ids)
    .bind(kinds)
    .bind(details)
    .bind(follows)
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

/// An order's timeline, one entry per fact: a stored step row stands for its
/// event and each entry in its `follow` (same time).
pub async fn events<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> sqlx::Result<Vec<EventRow>> {
    Ok(events_after(db, order_id, 0).await?.1)
}

/// An order and the timeline entries stored after step `after` (as
/// [`events_after`]), read from one snapshot: the order is exactly as of its
/// newest entry — never older (a step's row and the order's update commit
/// together), never newer (a final order comes with its final steps).
pub async fn find_with_events_after(
    pool: &PgPool,
    order_id: Uuid,
    after: i64,
) -> sqlx::Result<Option<(OrderRow, i64, Vec<EventRow>)>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let Some(order) = find(&mut *tx, order_id).await? else { return Ok(None) };
    let (last, entries) = events_after(&mut *tx, order_id, after).await?;
    tx.commit().await?;
    Ok(Some((order, last, entries)))
}

/// A stored step: number, time, kind, detail, follow.
type StepRow = (i64, DateTime<Utc>, String, Value, Option<Value>);

/// The timeline entries of steps stored after step `after` (0: all), and
/// the last step's number (`after` when there is none): pass it as `after`
/// next time to get only what is new.
pub async fn events_after<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
    after: i64,
) -> sqlx::Result<(i64, Vec<EventRow>)> {
    let rows: Vec<StepRow> = sqlx::query_as(
        "SELECT seq, at, kind, detail, follow FROM saga_events WHERE order_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(order_id)
    .bind(after)
    .fetch_all(db)
    .await?;
    let last = rows.last().map_or(after, |row| row.0);
    let mut events = Vec::with_capacity(rows.len() * 2);
    for (_, at, kind, detail, follow) in rows {
        events.push(EventRow { at, kind, detail });
        if let Some(Value::Array(follow)) = follow {
            for mut entry in follow {
                let kind = entry["kind"].as_str().unwrap_or_default().to_owned();
                events.push(EventRow { at, kind, detail: entry["detail"].take() });
            }
        }
    }
    Ok((last, events))
}

/// What `GET /api/v1/orders` and `GET /api/v1/orders/counts` select; every
/// field is optional (`None`: no condition). Each condition has an index
/// (migrations 0001 and 0003) or narrows the primary key's range.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    pub failure_reason: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub correlation_id: Option<String>,
    /// Ids in this range, both ends inclusive (an id prefix, as a range of the primary key).
    pub id_range: Option<(Uuid, Uuid)>,
}

pub struct ListFilter<'a> {
    pub filter: &'a OrderFilter,
    /// Only orders older than this one (ids are time-ordered).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// The conditions of `OrderFilter` on parameters $1..=$8 (bind with `bind_filter`).
const FILTER_WHERE: &str = "($1::text IS NULL OR customer_id = $1) AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR failure_reason = $3)
   AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)
   AND ($6::text IS NULL OR correlation_id = $6)
   AND ($7::uuid IS NULL OR id >= $7) AND ($8::uuid IS NULL OR id <= $8)";

type PgQuery<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

fn bind_filter<'q, O>(query: PgQuery<'q, O>, filter: &'q OrderFilter) -> PgQuery<'q, O> {
    query
        .bind(filter.customer_id.as_deref())
        .bind(filter.status.as_deref())
        .bind(filter.failure_reason.as_deref())
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(filter.correlation_id.as_deref())
        .bind(filter.id_range.map(|(low, _)| low))
        .bind(filter.id_range.map(|(_, high)| high))
}

pub async fn list<'e>(db: impl PgExecutor<'e>, list: ListFilter<'_>) -> sqlx::Result<Vec<OrderRow>> {
    let sql = format!(
        "{} WHERE {FILTER_WHERE} AND ($9::uuid IS NULL OR id < $9) ORDER BY id DESC LIMIT $10",
        select_orders!("")
    );
    bind_filter(sqlx::query_as(sqlx::AssertSqlSafe(sql)), list.filter)
        .bind(list.before)
        .bind(list.limit)
        .fetch_all(db)
        .await
}

/// Orders matching `filter`, counted by status (statuses without orders are left out).
pub async fn count_by_status<'e>(db: impl PgExecutor<'e>, filter: &OrderFilter) -> sqlx::Result<Vec<(String, i64)>> {
    let sql = format!("SELECT status, count(*) FROM orders WHERE {FILTER_WHERE} GROUP BY status");
    bind_filter(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter).fetch_all(db).await
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
