//! Transactional outbox. A state change writes its messages with `enqueue`
//! in the same transaction, inside `OutboxSignal::transaction` (or
//! `collecting`), which keeps a copy of each; once the transaction has
//! committed the copies go to the relay, which publishes them at once,
//! without reading them back (pipelined confirms). Their rows are deleted
//! later, by the next transaction of this service that writes to the
//! outbox (its `enqueue` statement deletes them too: no statement or commit
//! of its own), or by the relay when no such transaction comes within
//! `DELETE_AFTER`. A crash or a broker failure between commit and publish
//! leaves rows behind that the relay's periodic sweep publishes once they
//! are older than `FRESH_GRACE`, in this replica or another; a crash
//! between publish and delete publishes again with the same message id,
//! which the receiver's inbox drops.
//!
//! A row is a saga message (`Envelope`, to a service queue through
//! `{platform}.saga`) or an order event (`crate::events`, to
//! `{platform}.events`): `Topology::route` tells them apart by routing key.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::amqp::{Backoff, Broker, OutgoingMessage, publish_batch};
use crate::envelope::{Envelope, valid_correlation_id};
use crate::events::OrderEvent;
use crate::metrics::Metrics;
use crate::runtime::Shutdown;
use crate::telemetry;
use crate::topology::Topology;
use crate::trace_context::TraceContext;

/// Rows younger than this are left to the relay of the transaction that
/// wrote them (published from memory); the sweep takes older ones.
pub const FRESH_GRACE: Duration = Duration::from_secs(3);

/// Published rows no transaction has deleted within this time are deleted
/// by the relay (well before `FRESH_GRACE`, so the sweep never sees them).
pub const DELETE_AFTER: Duration = Duration::from_millis(200);

tokio::task_local! {
    /// What the current unit of work enqueued, and the published rows it deletes.
    static COLLECTED: RefCell<Collected>;
}

/// One outbox row: what to publish, where and in which trace.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub message_id: Uuid,
    /// AMQP `type`.
    pub message_type: &'static str,
    /// A service queue's routing key or an order event's type (`Topology::route`).
    pub routing_key: &'static str,
    pub correlation_id: String,
    pub trace: TraceContext,
    pub payload: Vec<u8>,
}

impl From<&Envelope> for OutboxMessage {
    fn from(envelope: &Envelope) -> Self {
        OutboxMessage {
            message_id: envelope.message_id,
            message_type: envelope.message.type_name(),
            routing_key: envelope.message.destination().queue(),
            correlation_id: envelope.correlation_id.clone(),
            trace: envelope.trace.clone(),
            payload: serde_json::to_vec(&envelope.message).expect("messages always serialize"),
        }
    }
}

impl OutboxMessage {
    /// An order event: its id is the message id (the same on every
    /// publish of the row), its type the routing key.
    pub fn event(event: &OrderEvent, correlation_id: &str, trace: TraceContext) -> Self {
        OutboxMessage {
            message_id: event.event_id,
            message_type: event.event_type.as_str(),
            routing_key: event.event_type.as_str(),
            correlation_id: correlation_id.to_owned(),
            trace,
            payload: serde_json::to_vec(event).expect("events always serialize"),
        }
    }

    /// The message on the wire, routed by `topology`; `None` if its routing
    /// key goes nowhere.
    fn outgoing(&self, topology: &Topology) -> Option<OutgoingMessage> {
        let route = topology.route(self.routing_key)?;
        Some(OutgoingMessage {
            exchange: route.exchange,
            routing_key: self.routing_key.to_owned(),
            message_id: self.message_id.to_string(),
            message_type: self.message_type.to_owned(),
            correlation_id: self.correlation_id.clone(),
            trace: self.trace.clone(),
            payload: self.payload.clone(),
            headers: Vec::new(),
            mandatory: route.mandatory,
        })
    }
}

#[derive(Default)]
struct Collected {
    messages: Vec<OutboxMessage>,
    /// Published rows the first `enqueue` of this unit of work deletes.
    published: Vec<Uuid>,
    /// Those it did delete: done once the work commits, back to the relay if not.
    deleting: Vec<Uuid>,
}

/// Runs `work`, keeping a copy of every message it enqueues (for a savepoint
/// inside a larger transaction; it deletes no published rows). Hand the
/// copies on once the transaction that wrote them has committed; drop them
/// if it did not.
pub async fn collecting<F: Future>(work: F) -> (F::Output, Vec<OutboxMessage>) {
    COLLECTED
        .scope(RefCell::new(Collected::default()), async {
            let output = work.await;
            (output, COLLECTED.with(RefCell::take).messages)
        })
        .await
}

/// Writes saga messages to the outbox inside the caller's transaction; the
/// same statement deletes the rows published since the unit of work began.
pub async fn enqueue(conn: &mut PgConnection, envelopes: &[Envelope]) -> sqlx::Result<()> {
    let messages: Vec<OutboxMessage> = envelopes.iter().map(OutboxMessage::from).collect();
    enqueue_messages(conn, &messages).await
}

/// `enqueue` for any outbox rows: saga messages and order events.
pub async fn enqueue_messages(conn: &mut PgConnection, messages: &[OutboxMessage]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    // Outside `collecting` the rows are still published, by the sweep.
    let published = COLLECTED
        .try_with(|collected| {
            let mut collected = collected.borrow_mut();
            collected.messages.extend(messages.iter().cloned());
            let published = std::mem::take(&mut collected.published);
            collected.deleting.extend(published.iter().copied());
            published
        })
        .unwrap_or_default();
    let mut ids = Vec::with_capacity(messages.len());
    let mut types = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut correlations = Vec::with_capacity(messages.len());
    let mut traces = Vec::with_capacity(messages.len());
    let mut states = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    for message in messages {
        ids.push(message.message_id);
        types.push(message.message_type);
        keys.push(message.routing_key);
        correlations.push(message.correlation_id.as_str());
        traces.push(message.trace.traceparent.as_str());
        states.push(message.trace.tracestate.as_str());
        payloads.push(message.payload.as_slice());
    }
    sqlx::query(
        "WITH published AS (DELETE FROM outbox WHERE message_id = ANY($7::uuid[]))
         INSERT INTO outbox (message_id, message_type, routing_key, correlation_id, traceparent, payload, tracestate)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $8::text[])",
    )
    .bind(ids)
    .bind(types)
    .bind(keys)
    .bind(correlations)
    .bind(traces)
    .bind(payloads)
    .bind(published)
    .bind(states)
    .execute(conn)
    .await?;
    Ok(())
}

/// Hands the relay the messages of committed transactions, and the relay's
/// published rows to the next transaction that writes to the outbox.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Fresh>);

#[derive(Default)]
struct Fresh {
    wake: Notify,
    messages: Mutex<Vec<OutboxMessage>>,
    published: Mutex<Published>,
}

/// Rows published and not deleted yet.
#[derive(Default)]
struct Published {
    ids: Vec<Uuid>,
    /// When the oldest of them was handed over.
    since: Option<Instant>,
}

/// The messages a unit of work enqueued and the published rows it deleted:
/// `committed` hands both on; dropped instead (the transaction did not
/// commit), the rows go back to the relay to be deleted again.
#[must_use = "call committed() once the transaction has committed"]
pub struct Outgoing {
    signal: OutboxSignal,
    messages: Vec<OutboxMessage>,
    deleting: Vec<Uuid>,
}

impl Outgoing {
    pub fn committed(mut self) {
        self.deleting.clear();
        self.signal.committed(std::mem::take(&mut self.messages));
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.signal.give_back(std::mem::take(&mut self.deleting));
    }
}

impl OutboxSignal {
    /// Runs `work` (which begins and commits its own transaction) and, if it
    /// succeeds, hands what it enqueued to the relay.
    pub async fn transaction<T, E>(&self, work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let (result, outgoing) = self.collecting(work).await;
        if result.is_ok() {
            outgoing.committed();
        }
        result
    }

    /// Runs `work`, keeping a copy of every message it enqueues; its first
    /// `enqueue` also deletes the rows published so far. Call
    /// `Outgoing::committed` once the transaction has committed.
    pub async fn collecting<F: Future>(&self, work: F) -> (F::Output, Outgoing) {
        let published = self.take_published();
        COLLECTED
            .scope(RefCell::new(Collected { published, ..Collected::default() }), async {
                let output = work.await;
                let collected = COLLECTED.with(RefCell::take);
                // Nothing was enqueued: the rows were not deleted.
                self.give_back(collected.published);
                (output, Outgoing { signal: self.clone(), messages: collected.messages, deleting: collected.deleting })
            })
            .await
    }

    /// After a commit: the copies `collecting` kept of the rows it wrote.
    pub fn committed(&self, messages: Vec<OutboxMessage>) {
        if messages.is_empty() {
            return;
        }
        self.0.messages.lock().expect("outbox signal poisoned").extend(messages);
        self.0.wake.notify_one();
    }

    fn take(&self) -> Vec<OutboxMessage> {
        std::mem::take(&mut *self.0.messages.lock().expect("outbox signal poisoned"))
    }

    /// Rows published (or not deleted after all) that are still to be deleted.
    fn give_back(&self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        let mut published = self.0.published.lock().expect("outbox signal poisoned");
        published.ids.extend(ids);
        published.since.get_or_insert_with(Instant::now);
    }

    /// How long until the relay deletes the published rows itself (`None`: none wait).
    fn delete_due_in(&self) -> Option<Duration> {
        let published = self.0.published.lock().expect("outbox signal poisoned");
        published.since.map(|since| DELETE_AFTER.saturating_sub(since.elapsed()))
    }

    fn take_published(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.0.published.lock().expect("outbox signal poisoned")).ids
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
                let delete_due = self.signal.delete_due_in();
                tokio::select! {
                    _ = self.signal.0.wake.notified() => {}
                    _ = tokio::time::sleep(self.sweep_interval) => {}
                    _ = tokio::time::sleep(delete_due.unwrap_or_default()), if delete_due.is_some() => {
                        self.delete_published().await;
                        continue;
                    }
                    _ = shutdown.wait() => {
                        self.delete_published().await;
                        return;
                    }
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
    /// confirmed), then hands their rows over to be deleted by the next
    /// transaction that writes to the outbox. A row that can never be
    /// published is left to the sweep, which sets it aside.
    async fn publish_fresh(&self, channel: &lapin::Channel, fresh: Vec<OutboxMessage>) -> Result<(), RelayError> {
        let mut messages: Vec<OutgoingMessage> = fresh
            .iter()
            .filter_map(|message| message.outgoing(&self.topology))
            .filter(|message| unpublishable(message).is_none())
            .collect();
        for chunk in messages.chunks_mut(self.batch_size as usize) {
            let spans = trace_publishes(chunk);
            publish_batch(channel, chunk).await.inspect_err(|error| failed(&spans, error))?;
            self.metrics.messages_published.inc_by(chunk.len() as u64);
        }
        self.signal.give_back(fresh.iter().map(|message| message.message_id).collect());
        Ok(())
    }

    /// Deletes the published rows no transaction took along, in one statement.
    async fn delete_published(&self) {
        let ids = self.signal.take_published();
        if ids.is_empty() {
            return;
        }
        if let Err(error) =
            sqlx::query("DELETE FROM outbox WHERE message_id = ANY($1)").bind(&ids).execute(&self.pool).await
        {
            // Tried again after `DELETE_AFTER`; if they outlive `FRESH_GRACE`
            // the sweep publishes them again (the receivers' inboxes drop the
            // copies) and deletes them.
            tracing::warn!(%error, "cannot delete published outbox rows yet");
            self.signal.give_back(ids);
        }
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
             RETURNING seq, message_id, message_type, routing_key, correlation_id, traceparent, tracestate, payload,
                       created_at",
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
            let routing_key: String = row.get("routing_key");
            let route = self.topology.route(&routing_key);
            let message = OutgoingMessage {
                // A key `route` does not know is set aside below.
                exchange: route.as_ref().map(|route| route.exchange.clone()).unwrap_or_default(),
                mandatory: route.as_ref().is_none_or(|route| route.mandatory),
                routing_key,
                message_id: row.get::<uuid::Uuid, _>("message_id").to_string(),
                message_type: row.get("message_type"),
                correlation_id: row.get("correlation_id"),
                trace: TraceContext { traceparent: row.get("traceparent"), tracestate: row.get("tracestate") },
                payload: row.get("payload"),
                headers: Vec::new(),
            };
            let reason = match route {
                None => Some(format!(
                    "routing key of {} bytes names no service queue or event type",
                    message.routing_key.len()
                )),
                Some(_) => unpublishable(&message),
            };
            match reason {
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
        let spans = trace_publishes(&mut messages);
        publish_batch(channel, &messages).await.inspect_err(|error| failed(&spans, error))?;
        tx.commit().await?;
        self.metrics.messages_published.inc_by(messages.len() as u64);
        self.metrics.outbox_set_aside.inc_by(set_aside);
        Ok(claimed)
    }
}

/// Gives each message the trace context of its publish: a child of the
/// context it was written in (the span that caused it). With an exporter
/// each publish is a span (`producer`), returned to be dropped once the
/// broker has confirmed it; without one only the context is made.
fn trace_publishes(messages: &mut [OutgoingMessage]) -> Vec<tracing::Span> {
    if !telemetry::exporting() {
        for message in messages {
            let context = telemetry::child_of(&message.trace.parent());
            message.trace = TraceContext::of(&Context::new().with_remote_span_context(context));
        }
        return Vec::new();
    }
    messages
        .iter_mut()
        .map(|message| {
            let span = tracing::info_span!(
                "publish",
                otel.name = format!("publish {}", message.message_type),
                otel.kind = "producer",
                messaging.system = "rabbitmq",
                messaging.destination.name = message.routing_key,
                messaging.message.id = message.message_id,
                correlation_id = message.correlation_id,
            );
            message.trace = TraceContext::of(&telemetry::start(&span, &message.trace.parent()));
            span
        })
        .collect()
}

/// Marks the publish spans of a batch the broker did not take.
fn failed(spans: &[tracing::Span], error: &crate::amqp::PublishError) {
    for span in spans {
        span.in_scope(|| tracing::warn!(%error, "publish failed"));
    }
}

/// Why a routed outbox row can never be published, if it cannot: it does
/// not fit in an AMQP frame, or its correlation id is not valid.
fn unpublishable(message: &OutgoingMessage) -> Option<String> {
    if let Err(reason) = message.wire() {
        return Some(reason);
    }
    if !valid_correlation_id(&message.correlation_id) {
        return Some(format!("correlation id of {} bytes is not valid", message.correlation_id.len()));
    }
    None
}

async fn set_aside_row(conn: &mut PgConnection, row: &sqlx::postgres::PgRow, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbox_dead_letters
             (message_id, message_type, routing_key, correlation_id, traceparent, payload, created_at, reason, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.get::<uuid::Uuid, _>("message_id"))
    .bind(row.get::<String, _>("message_type"))
    .bind(row.get::<String, _>("routing_key"))
    .bind(row.get::<String, _>("correlation_id"))
    .bind(row.get::<String, _>("traceparent"))
    .bind(row.get::<Vec<u8>, _>("payload"))
    .bind(row.get::<chrono::DateTime<chrono::Utc>, _>("created_at"))
    .bind(reason)
    .bind(row.get::<String, _>("tracestate"))
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

/// Rows still waiting to be published, and the age in seconds of the oldest
/// (0 when none): `saga_outbox_backlog` and `saga_outbox_oldest_age_seconds`.
pub async fn backlog(pool: &PgPool) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float8 FROM outbox",
    )
    .fetch_one(pool)
    .await
}
