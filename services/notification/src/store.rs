//! The notification database: endpoints, deliveries, attempts. Runtime-checked
//! queries, as in the other services, so the build never needs a database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub const WEBHOOK: &str = "webhook";
pub const EMAIL: &str = "email";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub owner: String,
    pub all_customers: bool,
    pub channel: String,
    pub target: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of an `Endpoint` (a macro: queries are literals).
macro_rules! endpoint_columns {
    () => {
        "id, owner, all_customers, channel, target, description, event_types, secret, \
         previous_secret_until, enabled, disabled_reason, disabled_at, consecutive_failures, \
         failing_since, created_at, updated_at"
    };
}

pub struct NewEndpoint<'a> {
    pub owner: &'a str,
    pub all_customers: bool,
    pub channel: &'a str,
    pub target: &'a str,
    pub description: &'a str,
    pub event_types: &'a [String],
    pub secret: Option<&'a str>,
}

/// Inserts the endpoint unless its owner already has `max_per_owner`
/// (`None` then). The owner's endpoints are locked for the count.
pub async fn create_endpoint(
    pool: &PgPool,
    new: NewEndpoint<'_>,
    max_per_owner: i64,
) -> sqlx::Result<Option<Endpoint>> {
    let mut tx = pool.begin().await?;
    // Serialises creations of one owner so that the count holds.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(new.owner).execute(&mut *tx).await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM endpoints WHERE owner = $1")
        .bind(new.owner)
        .fetch_one(&mut *tx)
        .await?;
    if count >= max_per_owner {
        return Ok(None);
    }
    let endpoint: Endpoint = sqlx::query_as(concat!(
        "INSERT INTO endpoints (id, owner, all_customers, channel, target, description, event_types, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
        endpoint_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(new.owner)
    .bind(new.all_customers)
    .bind(new.channel)
    .bind(new.target)
    .bind(new.description)
    .bind(new.event_types)
    .bind(new.secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(endpoint))
}

pub async fn get_endpoint(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Endpoint>> {
    sqlx::query_as(concat!("SELECT ", endpoint_columns!(), " FROM endpoints WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Endpoints in id order after `after`, of `owner` (every owner's if `None`).
pub async fn list_endpoints(
    pool: &PgPool,
    owner: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Endpoint>> {
    sqlx::query_as(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM endpoints
         WHERE ($1::text IS NULL OR owner = $1) AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(owner)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What an update may change; `None` keeps the field.
pub struct EndpointUpdate<'a> {
    pub target: Option<&'a str>,
    pub description: Option<&'a str>,
    pub event_types: Option<&'a [String]>,
    /// `Some(true)` re-enables (and forgets the failures), `Some(false)` disables.
    pub enabled: Option<bool>,
}

pub async fn update_endpoint(pool: &PgPool, id: Uuid, update: EndpointUpdate<'_>) -> sqlx::Result<Option<Endpoint>> {
    sqlx::query_as(concat!(
        "UPDATE endpoints SET
            target = COALESCE($2, target),
            description = COALESCE($3, description),
            event_types = COALESCE($4, event_types),
            enabled = COALESCE($5, enabled),
            disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason
                                   WHEN $5 THEN NULL ELSE 'disabled by its owner' END,
            disabled_at = CASE WHEN $5 IS NULL THEN disabled_at WHEN $5 THEN NULL ELSE now() END,
            consecutive_failures = CASE WHEN $5 THEN 0 ELSE consecutive_failures END,
            failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END,
            updated_at = now()
         WHERE id = $1 RETURNING ",
        endpoint_columns!()
    ))
    .bind(id)
    .bind(update.target)
    .bind(update.description)
    .bind(update.event_types)
    .bind(update.enabled)
    .fetch_optional(pool)
    .await
}

pub async fn delete_endpoint(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM endpoints WHERE id = $1").bind(id).execute(pool).await?.rows_affected();
    Ok(deleted == 1)
}

/// A new secret; the current one keeps signing for `overlap`.
pub async fn rotate_secret(pool: &PgPool, id: Uuid, secret: &str, overlap: Duration) -> sqlx::Result<Option<Endpoint>> {
    sqlx::query_as(concat!(
        "UPDATE endpoints SET previous_secret = secret, secret = $2,
            previous_secret_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND channel = 'webhook' RETURNING ",
        endpoint_columns!()
    ))
    .bind(id)
    .bind(secret)
    .bind(overlap.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// An order event, as the handler records it.
pub struct Event<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub order_id: Uuid,
    pub customer_id: &'a str,
    pub body: String,
}

/// One delivery per enabled endpoint that wants the event (the customer's,
/// and admin endpoints); an endpoint already holding a delivery of the event
/// keeps it. Returns the deliveries created.
pub async fn record_events(conn: &mut PgConnection, events: &[Event<'_>]) -> sqlx::Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let customers: Vec<&str> = events.iter().map(|e| e.customer_id).collect();
    let endpoints: Vec<(Uuid, String, bool, Vec<String>)> = sqlx::query_as(
        "SELECT id, owner, all_customers, event_types FROM endpoints
         WHERE enabled AND (all_customers OR owner = ANY($1)) ORDER BY id",
    )
    .bind(&customers)
    .fetch_all(&mut *conn)
    .await?;
    let (mut ids, mut endpoint_ids, mut event_ids, mut types, mut orders, mut owners, mut bodies) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for event in events {
        for (endpoint, owner, all, wanted) in &endpoints {
            if (*all || owner == event.customer_id) && wanted.iter().any(|t| t == event.event_type) {
                ids.push(Uuid::now_v7());
                endpoint_ids.push(*endpoint);
                event_ids.push(event.event_id);
                types.push(event.event_type);
                orders.push(event.order_id);
                owners.push(event.customer_id);
                bodies.push(event.body.as_str());
            }
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let inserted = sqlx::query(
        "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, order_id, customer_id, body)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::text[], $7::text[])
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(ids)
    .bind(endpoint_ids)
    .bind(event_ids)
    .bind(types)
    .bind(orders)
    .bind(owners)
    .bind(bodies)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted)
}

/// A delivery claimed by a dispatcher, with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub lease: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub order_id: Option<Uuid>,
    pub customer_id: String,
    pub body: String,
    pub attempts: i32,
    pub channel: String,
    pub target: String,
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// Claims up to `limit` due deliveries of enabled endpoints: each gets a new
/// lease and is not due again until `lease` has passed.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "WITH due AS (
            SELECT d.id FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.enabled
            ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED
         ), claimed AS (
            UPDATE deliveries d SET lease = gen_random_uuid(),
                next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
            FROM due WHERE d.id = due.id
            RETURNING d.id, d.lease, d.endpoint_id, d.event_type, d.order_id, d.customer_id, d.body, d.attempts
         )
         SELECT c.*, e.channel, e.target, e.secret, e.previous_secret, e.previous_secret_until
         FROM claimed c JOIN endpoints e ON e.id = c.endpoint_id",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// One attempt as it happened.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAfter(Duration),
    /// Out of attempts.
    Failed,
}

/// When an endpoint is disabled for failing.
#[derive(Debug, Clone, Copy)]
pub struct DisablePolicy {
    pub after_failures: i32,
    pub after: Duration,
}

/// The outcome of a recorded attempt.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The lease was still ours: the delivery's state was updated.
    pub current: bool,
    /// The endpoint was disabled by this attempt, and why.
    pub disabled: Option<String>,
}

/// Records the attempt, the delivery's next state and the endpoint's
/// failure streak (disabling it per `policy`), in one transaction.
pub async fn record_attempt(
    pool: &PgPool,
    claimed: &Claimed,
    attempt: &AttemptRecord,
    next: Next,
    policy: DisablePolicy,
) -> sqlx::Result<Recorded> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO attempts (delivery_id, endpoint_id, started_at, duration_ms, succeeded, status_code, error, response_excerpt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(claimed.id)
    .bind(claimed.endpoint_id)
    .bind(attempt.started_at)
    .bind(i64::try_from(attempt.duration.as_millis()).unwrap_or(i64::MAX))
    .bind(attempt.succeeded)
    .bind(attempt.status_code)
    .bind(&attempt.error)
    .bind(&attempt.response_excerpt)
    .execute(&mut *tx)
    .await?;
    let (status, delay) = match next {
        Next::Delivered => ("delivered", Duration::ZERO),
        Next::RetryAfter(delay) => ("pending", delay),
        Next::Failed => ("failed", Duration::ZERO),
    };
    let current = sqlx::query(
        "UPDATE deliveries SET status = $3, attempts = attempts + 1, lease = NULL, last_error = $4,
            next_attempt_at = now() + make_interval(secs => $5), updated_at = now()
         WHERE id = $1 AND lease = $2",
    )
    .bind(claimed.id)
    .bind(claimed.lease)
    .bind(status)
    .bind(&attempt.error)
    .bind(delay.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let disabled = if attempt.succeeded {
        sqlx::query("UPDATE endpoints SET consecutive_failures = 0, failing_since = NULL WHERE id = $1")
            .bind(claimed.endpoint_id)
            .execute(&mut *tx)
            .await?;
        None
    } else {
        // The streak, and whether it crosses the policy now (an endpoint
        // already disabled stays so, with its first reason).
        let disabled: Option<Streak> = sqlx::query_as(
            "WITH old AS (
                SELECT id, enabled, consecutive_failures + 1 AS failures, COALESCE(failing_since, $2) AS since
                FROM endpoints WHERE id = $1 FOR UPDATE
             ), verdict AS (
                SELECT *, enabled AND (failures >= $3 OR since <= now() - make_interval(secs => $4)) AS disable
                FROM old
             )
             UPDATE endpoints e SET consecutive_failures = v.failures, failing_since = v.since,
                enabled = e.enabled AND NOT v.disable,
                disabled_reason = CASE WHEN v.disable THEN format(
                    'disabled after %s failed attempts in a row, failing since %s (limits: %s attempts or %s); last error: %s',
                    v.failures, to_char(v.since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), $3, $5, $6)
                    ELSE e.disabled_reason END,
                disabled_at = CASE WHEN v.disable THEN now() ELSE e.disabled_at END,
                updated_at = CASE WHEN v.disable THEN now() ELSE e.updated_at END
             FROM verdict v WHERE e.id = v.id RETURNING v.disable, e.disabled_reason, e.owner, e.target, e.disabled_at",
        )
        .bind(claimed.endpoint_id)
        .bind(attempt.started_at)
        .bind(policy.after_failures)
        .bind(policy.after.as_secs_f64())
        .bind(humanize(policy.after))
        .bind(attempt.error.as_deref().unwrap_or("unknown"))
        .fetch_optional(&mut *tx)
        .await?;
        match disabled {
            Some(Streak { disable: true, disabled_reason: Some(reason), owner, target, disabled_at }) => {
                let at = disabled_at.unwrap_or_else(Utc::now);
                notify_owner(&mut tx, claimed.endpoint_id, &owner, &target, &reason, at).await?;
                Some(reason)
            }
            _ => None,
        }
    };
    tx.commit().await?;
    Ok(Recorded { current, disabled })
}

/// An endpoint after a failed attempt: whether this attempt disabled it.
#[derive(sqlx::FromRow)]
struct Streak {
    disable: bool,
    disabled_reason: Option<String>,
    owner: String,
    target: String,
    disabled_at: Option<DateTime<Utc>>,
}

/// The event type of the notice an owner gets when an endpoint is disabled.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// Tells the owner of a just disabled endpoint why, through their other
/// enabled e-mail endpoints (a delivery each, sent like any other).
async fn notify_owner(
    conn: &mut PgConnection,
    endpoint: Uuid,
    owner: &str,
    target: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let mailboxes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM endpoints WHERE owner = $1 AND channel = 'email' AND enabled AND id <> $2 ORDER BY id",
    )
    .bind(owner)
    .bind(endpoint)
    .fetch_all(&mut *conn)
    .await?;
    if mailboxes.is_empty() {
        return Ok(());
    }
    let body = serde_json::json!({
        "type": ENDPOINT_DISABLED,
        "timestamp": at,
        "data": {"endpoint_id": endpoint, "target": target, "reason": reason, "disabled_at": at},
    })
    .to_string();
    let event_id = Uuid::now_v7();
    let ids: Vec<Uuid> = mailboxes.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, customer_id, body)
         SELECT d.id, d.endpoint_id, $3, $4, $5, $6 FROM UNNEST($1::uuid[], $2::uuid[]) AS d(id, endpoint_id)
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(ids)
    .bind(mailboxes)
    .bind(event_id)
    .bind(ENDPOINT_DISABLED)
    .bind(owner)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s % 86_400 == 0 && s > 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        _ => format!("{:.1} s", duration.as_secs_f64()),
    }
}

/// Deliveries due now (the backlog gauge).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()")
        .fetch_one(pool)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub owner: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub order_id: Option<Uuid>,
    pub customer_id: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of a `Delivery` (`d`, joined with its endpoint `e`).
macro_rules! delivery_columns {
    () => {
        "d.id, d.endpoint_id, e.owner, d.event_id, d.event_type, d.order_id, d.customer_id, \
         d.status, d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.updated_at"
    };
}

pub async fn get_delivery(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Delivery>> {
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id WHERE d.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Deliveries newest first, before `before`, filtered by owner and endpoint.
pub async fn list_deliveries(
    pool: &PgPool,
    owner: Option<&str>,
    endpoint: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE ($1::text IS NULL OR e.owner = $1) AND ($2::uuid IS NULL OR d.endpoint_id = $2)
           AND ($3::uuid IS NULL OR d.id < $3)
         ORDER BY d.id DESC LIMIT $4"
    ))
    .bind(owner)
    .bind(endpoint)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Sends the delivery again, now, with a fresh attempt budget (and the same
/// webhook-id). If it is being sent at this moment, that send's outcome is
/// still logged as an attempt but no longer decides the delivery's state
/// (its lease is gone), and the receiver may get it twice: same webhook-id.
pub async fn redeliver(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), lease = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub delivery_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// An endpoint's attempts, newest first, before attempt `before`.
pub async fn list_attempts(
    pool: &PgPool,
    endpoint: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as(
        "SELECT id, delivery_id, started_at, duration_ms, succeeded, status_code, error, response_excerpt
         FROM attempts WHERE endpoint_id = $1 AND ($2::int8 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(endpoint)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
