//! Transactional outbox. A state change writes its messages with `enqueue`
//! in the same transaction, inside `collecting`, which keeps a copy of each;
//! after the commit the caller hands the copies to the relay
//! (`OutboxSignal::committed`), which publishes them at once, without reading
//! them back (pipelined confirms), and deletes their rows afterwards, in one
//! statement per round. A crash or a broker failure between commit and
//! publish leaves rows behind that the relay's periodic sweep publishes once
//! they are older than `FRESH_GRACE`, in this replica or another; a crash
//! between publish and delete publishes again with the same message id,
//! which the receiver's inbox drops.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

use crate::amqp::{Backoff, Broker, OutgoingMessage, publish_batch};
use crate::envelope::{Envelope, valid_correlation_id};
use crate::metrics::Metrics;
use crate::runtime::Shutdown;
use crate::topology::{Destination, Topology};

/// Rows younger than this are left to the relay of the transaction that
/// wrote them (published from memory); the sweep takes older ones.
pub const FRESH_GRACE: Duration = Duration::from_secs(3);

tokio::task_local! {
    /// Copies of the messages enqueued by the current unit of work.
    static COLLECTED: RefCell<Vec<Envelope>>;
}

/// Runs `work`, keeping a copy of every message it enqueues. Hand the copies
/// to `OutboxSignal::committed` once the transaction that wrote them has
/// committed; drop them if it did not.
pub async fn collecting<F: Future>(work: F) -> (F::Output, Vec<Envelope>) {
    COLLECTED
        .scope(RefCell::new(Vec::new()), async {
            let output = work.await;
            (output, COLLECTED.with(RefCell::take))
        })
        .await
}

/// Writes messages to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, envelopes: &[Envelope]) -> sqlx::Result<()> {
    if envelopes.is_empty() {
        return Ok(());
    }
    // Outside `collecting` the rows are still published, by the sweep.
    let _ = COLLECTED.try_with(|collected| collected.borrow_mut().extend(envelopes.iter().cloned()));
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

/// Hands the relay the messages of committed transactions.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Fresh>);

#[derive(Default)]
struct Fresh {
    wake: Notify,
    messages: Mutex<Vec<Envelope>>,
}

impl OutboxSignal {
    /// After a commit: the copies `collecting` kept of the rows it wrote.
    pub fn committed(&self, messages: Vec<Envelope>) {
        if messages.is_empty() {
            return;
        }
        self.0.messages.lock().expect("outbox signal poisoned").extend(messages);
        self.0.wake.notify_one();
    }

    fn take(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.0.messages.lock().expect("outbox signal poisoned"))
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
        // A fresh relay sweeps first: rows a crashed process left behind.
        let mut last_sweep: Option<Instant> = None;
        loop {
            if last_sweep.is_some() {
                tokio::select! {
                    _ = self.signal.0.wake.notified() => {}
                    _ = tokio::time::sleep(self.sweep_interval) => {}
                    _ = shutdown.wait() => return,
                }
            }
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
                        continue;
                    }
                },
            };
            match self.round(&open, &mut last_sweep).await {
                Ok(()) => {
                    backoff = Backoff::new();
                    channel = Some(open);
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; the sweep will publish what is left");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Publishes what committed transactions handed over, until none is
    /// waiting; sweeps when a sweep is due.
    async fn round(&self, channel: &lapin::Channel, last_sweep: &mut Option<Instant>) -> Result<(), RelayError> {
        loop {
            let fresh = self.signal.take();
            if !fresh.is_empty() {
                self.publish_fresh(channel, fresh).await?;
            }
            if last_sweep.is_none_or(|at| at.elapsed() >= self.sweep_interval) {
                while self.relay_batch(channel).await? == self.batch_size as usize {}
                *last_sweep = Some(Instant::now());
            }
            if self.signal.0.messages.lock().expect("outbox signal poisoned").is_empty() {
                return Ok(());
            }
        }
    }

    /// Publishes committed messages from memory (their rows stay until
    /// confirmed), then deletes their rows in one statement. A row that can
    /// never be published is left to the sweep, which sets it aside.
    async fn publish_fresh(&self, channel: &lapin::Channel, fresh: Vec<Envelope>) -> Result<(), RelayError> {
        let messages: Vec<OutgoingMessage> = fresh
            .iter()
            .map(|envelope| OutgoingMessage::from_envelope(&self.topology, envelope))
            .filter(|message| unpublishable(message).is_none())
            .collect();
        for chunk in messages.chunks(self.batch_size as usize) {
            publish_batch(channel, chunk).await?;
            self.metrics.messages_published.inc_by(chunk.len() as u64);
        }
        let ids: Vec<uuid::Uuid> = fresh.iter().map(|envelope| envelope.message_id).collect();
        if let Err(error) =
            sqlx::query("DELETE FROM outbox WHERE message_id = ANY($1)").bind(ids).execute(&self.pool).await
        {
            // Published already: the sweep publishes them again later (the
            // receivers' inboxes drop the copies) and deletes them.
            tracing::warn!(%error, "cannot delete published outbox rows yet");
        }
        Ok(())
    }

    /// Claims and deletes up to one batch of rows older than `FRESH_GRACE`
    /// in one statement (rows another replica holds are skipped), publishes it, and commits the delete only
    /// once the broker has confirmed every message; any failure rolls the
    /// rows back for the next attempt. A row that can never be published
    /// (it cannot be framed, or names no destination) is moved to
    /// `outbox_dead_letters` with the reason in the same transaction, so it
    /// cannot hold up the rows behind it.
    async fn relay_batch(&self, channel: &lapin::Channel) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let mut rows = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox WHERE created_at < now() - make_interval(secs => $2)
                 ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING seq, message_id, message_type, routing_key, correlation_id, traceparent, payload, created_at",
        )
        .bind(self.batch_size)
        .bind(FRESH_GRACE.as_secs_f64())
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
