//! Transactional outbox. A state change writes its messages with `enqueue`
//! in the same transaction; after commit the caller pokes the relay, which
//! publishes (with confirms) and deletes what it published. A crash between
//! commit and publish leaves rows behind that the relay's periodic sweep
//! picks up, in this replica or another.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

use crate::amqp::{Backoff, Broker, OutgoingMessage, publish_batch};
use crate::envelope::{Envelope, valid_correlation_id};
use crate::metrics::Metrics;
use crate::runtime::Shutdown;
use crate::topology::{Destination, Topology};

/// Writes messages to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, envelopes: &[Envelope]) -> sqlx::Result<()> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(envelopes.len());
    let mut types = Vec::with_capacity(envelopes.len());
    let mut keys = Vec::with_capacity(envelopes.len());
    let mut correlations = Vec::with_capacity(envelopes.len());
    let mut traces = Vec::with_capacity(envelopes.len());
    let mut payloads = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        ids.push(envelope.message_id);
        types.push(envelope.message.type_name());
        keys.push(envelope.message.destination().queue());
        correlations.push(envelope.correlation_id.as_str());
        traces.push(envelope.traceparent.as_str());
        payloads.push(serde_json::to_vec(&envelope.message).expect("messages always serialize"));
    }
    sqlx::query(
        "INSERT INTO outbox (message_id, message_type, routing_key, correlation_id, traceparent, payload)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])",
    )
    .bind(ids)
    .bind(types)
    .bind(keys)
    .bind(correlations)
    .bind(traces)
    .bind(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// Wakes the relay after a commit that wrote outbox rows.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

pub struct OutboxRelay {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub topology: Arc<Topology>,
    pub signal: OutboxSignal,
    pub metrics: Metrics,
    pub batch_size: i64,
    /// How often to sweep for rows no signal announced (crash recovery, other replicas).
    pub sweep_interval: Duration,
}

impl OutboxRelay {
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut channel = None;
        let mut backoff = Backoff::new();
        loop {
            tokio::select! {
                _ = self.signal.0.notified() => {}
                _ = tokio::time::sleep(self.sweep_interval) => {}
                _ = shutdown.wait() => return,
            }
            loop {
                let open = match channel.take() {
                    Some(open) => open,
                    None => match tokio::select! {
                        opened = self.broker.confirming_channel() => opened,
                        _ = shutdown.wait() => return,
                    } {
                        Ok(open) => open,
                        Err(error) => {
                            tracing::warn!(%error, "outbox relay cannot open a channel");
                            backoff.wait().await;
                            break;
                        }
                    },
                };
                match self.relay_batch(&open).await {
                    Ok(published) => {
                        backoff = Backoff::new();
                        channel = Some(open);
                        if published < self.batch_size as usize {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay failed; will retry");
                        backoff.wait().await;
                        break;
                    }
                }
            }
        }
    }

    /// Claims and deletes up to one batch in one statement (rows another
    /// replica holds are skipped), publishes it, and commits the delete only
    /// once the broker has confirmed every message; any failure rolls the
    /// rows back for the next attempt. A row that can never be published
    /// (it cannot be framed, or names no destination) is moved to
    /// `outbox_dead_letters` with the reason in the same transaction, so it
    /// cannot hold up the rows behind it.
    async fn relay_batch(&self, channel: &lapin::Channel) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let mut rows = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING seq, message_id, message_type, routing_key, correlation_id, traceparent, payload, created_at",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // RETURNING does not keep the subquery's order: publish in commit order.
        rows.sort_by_key(|row| row.get::<i64, _>("seq"));
        let claimed = rows.len();
        let mut messages = Vec::with_capacity(rows.len());
        let mut set_aside = 0;
        for row in rows {
            let message = OutgoingMessage {
                exchange: self.topology.exchange(),
                routing_key: row.get("routing_key"),
                message_id: row.get::<uuid::Uuid, _>("message_id").to_string(),
                message_type: row.get("message_type"),
                correlation_id: row.get("correlation_id"),
                traceparent: row.get("traceparent"),
                payload: row.get("payload"),
                headers: Vec::new(),
            };
            match unpublishable(&message) {
                None => messages.push(message),
                Some(reason) => {
                    tracing::error!(
                        message_id = message.message_id,
                        reason,
                        "outbox row cannot be published; set aside"
                    );
                    set_aside_row(&mut tx, &row, &reason).await?;
                    set_aside += 1;
                }
            }
        }
        publish_batch(channel, &messages).await?;
        tx.commit().await?;
        self.metrics.messages_published.inc_by(messages.len() as u64);
        self.metrics.outbox_set_aside.inc_by(set_aside);
        Ok(claimed)
    }
}

/// Why an outbox row can never be published, if it cannot: it does not fit
/// in an AMQP frame, or its routing key names no service queue.
fn unpublishable(message: &OutgoingMessage) -> Option<String> {
    if let Err(reason) = message.wire() {
        return Some(reason);
    }
    if !Destination::ALL.iter().any(|d| d.queue() == message.routing_key) {
        return Some(format!("routing key of {} bytes names no service queue", message.routing_key.len()));
    }
    if !valid_correlation_id(&message.correlation_id) {
        return Some(format!("correlation id of {} bytes is not valid", message.correlation_id.len()));
    }
    None
}

async fn set_aside_row(conn: &mut PgConnection, row: &sqlx::postgres::PgRow, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbox_dead_letters
             (message_id, message_type, routing_key, correlation_id, traceparent, payload, created_at, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.get::<uuid::Uuid, _>("message_id"))
    .bind(row.get::<String, _>("message_type"))
    .bind(row.get::<String, _>("routing_key"))
    .bind(row.get::<String, _>("correlation_id"))
    .bind(row.get::<String, _>("traceparent"))
    .bind(row.get::<Vec<u8>, _>("payload"))
    .bind(row.get::<chrono::DateTime<chrono::Utc>, _>("created_at"))
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] crate::amqp::PublishError),
}

/// Rows still waiting to be published (for `/metrics` and tests).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pool).await
}
