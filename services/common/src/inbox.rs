//! Inbox: remembers handled message ids inside the handler's transaction.

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

/// Forgets ids older than `keep`: far longer than any redelivery or redrive window.
pub async fn prune(pool: &PgPool, keep: Duration) -> sqlx::Result<u64> {
    let result = sqlx::query("DELETE FROM inbox WHERE handled_at < now() - make_interval(secs => $1)")
        .bind(keep.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
