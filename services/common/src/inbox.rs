//! Inbox: remembers handled message ids inside the handler's transaction.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Records the message; `false` means it was handled before (a duplicate).
pub async fn first_delivery(conn: &mut PgConnection, message_id: Uuid, message_type: &str) -> sqlx::Result<bool> {
    let inserted = sqlx::query("INSERT INTO inbox (message_id, message_type) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(message_id)
        .bind(message_type)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Records a batch of messages in one statement; returns the ids seen for
/// the first time (the others are duplicates).
pub async fn first_deliveries(conn: &mut PgConnection, messages: &[(Uuid, &str)]) -> sqlx::Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = messages.iter().map(|(id, _)| *id).collect();
    let types: Vec<&str> = messages.iter().map(|(_, kind)| *kind).collect();
    let fresh: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO inbox (message_id, message_type) SELECT * FROM UNNEST($1::uuid[], $2::text[])
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(ids)
    .bind(types)
    .fetch_all(conn)
    .await?;
    Ok(fresh.into_iter().collect())
}

/// Forgets ids older than `keep`: far longer than any redelivery or redrive window.
pub async fn prune(pool: &PgPool, keep: Duration) -> sqlx::Result<u64> {
    let result = sqlx::query("DELETE FROM inbox WHERE handled_at < now() - make_interval(secs => $1)")
        .bind(keep.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
