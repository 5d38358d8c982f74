//! The one message path of every service:
//! consume → decode → inbox → handler → commit → ack.
//!
//! Deliveries that are already waiting are handled together in one database
//! transaction (one commit for the batch). In the common case the batch is
//! recorded in the inbox with one statement and acknowledged with one frame;
//! if any message is malformed or fails, the transaction is rolled back and
//! the batch is handled again with a savepoint per message, so one failing
//! message does not undo the others. Acks are sent only after the commit. A failed message is re-published to a delay queue (exponential
//! backoff) and, once out of attempts, to the dead-letter queue with the
//! reason in a header; a malformed one goes to the dead-letter queue at once.
//! When the database itself is unreachable nothing is counted as an attempt:
//! the batch is requeued after a pause.

use std::future::Future;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::amqp::{Backoff, Broker};
use crate::contracts::Message;
use crate::envelope::{Envelope, MAX_CORRELATION_ID_LEN, Payload, headers, valid_correlation_id};
use crate::inbox;
use crate::metrics::Metrics;
use crate::outbox::OutboxSignal;
use crate::runtime::Shutdown;
use crate::telemetry;
use crate::topology::{Destination, Topology, retry_queue_name};
use crate::trace_context::TraceContext;

/// What a service does with messages, inside the consumer's transaction.
/// Outgoing messages go to the outbox through the same connection.
pub trait Handler: Send + Sync + 'static {
    /// What its queue carries.
    type Message: Payload;

    /// One message, alone in a savepoint (the path a batch takes when one of
    /// its messages fails).
    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        envelope: &'a Envelope<Self::Message>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;

    /// A batch of first deliveries, in order (messages of one order keep
    /// their delivery order). Any error undoes the whole batch, which is
    /// then handled message by message with `handle`, so the result must be
    /// the same as handling them one after the other. Handlers override this
    /// to apply the batch with a constant number of set-based statements.
    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        envelopes: &'a [&'a Envelope<Self::Message>],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        async move {
            for envelope in envelopes {
                self.handle(conn, envelope).instrument(message_span(envelope)).await?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message can never succeed here (wrong queue, invalid content): dead-letter it now.
    #[error("rejected: {0}")]
    Rejected(String),
    /// It might succeed later: retry with backoff, then dead-letter.
    #[error("{0}")]
    Transient(String),
    /// The database is unreachable: requeue without spending an attempt.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A deadlock or serialization failure with a concurrent transaction: try again now.
    #[error("conflict: {0}")]
    Conflict(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&error) {
            HandlerError::Unavailable(error.to_string())
        } else if crate::db::is_conflict(&error) {
            HandlerError::Conflict(error.to_string())
        } else {
            HandlerError::Transient(error.to_string())
        }
    }
}

/// For handlers: answers the message being handled. The reply goes to the
/// outbox in the handler's transaction and keeps the cause's correlation id
/// and trace.
pub async fn reply(conn: &mut PgConnection, cause: &Envelope, message: Message) -> Result<(), HandlerError> {
    crate::outbox::enqueue(conn, &[cause.follow_up(message)]).await?;
    Ok(())
}

pub struct ConsumerConfig {
    pub destination: Destination,
    pub prefetch: u16,
    pub max_batch: usize,
    /// Bodies larger than this are dead-lettered unread.
    pub max_message_bytes: usize,
}

pub struct Consumer<H> {
    pub config: ConsumerConfig,
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub topology: Arc<Topology>,
    pub signal: OutboxSignal,
    pub metrics: Metrics,
    pub handler: Arc<H>,
}

/// What happens to one delivery after the batch transaction.
#[derive(Debug)]
enum Verdict {
    Done,
    Duplicate,
    Retry(String),
    DeadLetter(String),
}

/// A delivery as [`decode`] read it. Public for the fuzz targets (fuzz/).
pub struct Received<M = Message> {
    pub delivery: Delivery,
    /// The attempt it claims, clamped to the retry ladder.
    pub attempt: u32,
    /// Its envelope, or why it is malformed (it is then dead-lettered).
    pub decoded: Result<Envelope<M>, String>,
    /// The span of its handling, from the batch until it is settled (see `Consumer::trace`).
    pub span: tracing::Span,
}

impl<H: Handler> Consumer<H> {
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let queue = self.topology.queue_name(self.config.destination);
        let mut backoff = Backoff::new();
        loop {
            let consumed = tokio::select! {
                result = self.consume(&queue) => result,
                _ = shutdown.wait() => return,
            };
            if let Err(error) = consumed {
                tracing::warn!(%error, queue, "consumer stopped; reconnecting");
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn consume(&self, queue: &str) -> Result<(), lapin::Error> {
        let channel = self.broker.confirming_channel().await?;
        channel.basic_qos(self.config.prefetch, BasicQosOptions::default()).await?;
        let mut deliveries = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        tracing::info!(queue, "consuming");
        let mut pause = Backoff::new();
        while let Some(first) = deliveries.next().await {
            let mut batch = vec![first?];
            while batch.len() < self.config.max_batch {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    Some(Some(Err(error))) => return Err(error),
                    _ => break,
                }
            }
            let (max_body, max_attempts) = (self.config.max_message_bytes, self.topology.spec.retry.max_attempts);
            let mut received: Vec<Received<H::Message>> =
                batch.into_iter().map(|delivery| decode(delivery, max_body, max_attempts)).collect();
            // Concurrent batches then lock rows in the same (order id) order and
            // wait for each other instead of deadlocking. The sort is stable:
            // messages of one order keep their delivery order.
            received.sort_by_key(|r| r.decoded.as_ref().map(|e| e.message.order_id()).ok());
            let batch = trace(&mut received, queue);
            let settled = async {
                match self.handle_batch(&received).await {
                    Ok(verdicts) => {
                        pause = Backoff::new();
                        self.settle(&channel, received, verdicts, queue).await
                    }
                    Err(reason) => {
                        tracing::warn!(reason, queue, "database unavailable; requeueing batch");
                        pause.wait().await;
                        for r in received {
                            r.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                        }
                        Ok(())
                    }
                }
            };
            settled.instrument(batch).await?;
        }
        Ok(())
    }

    /// One transaction for the batch; `Err` means the database is unavailable.
    async fn handle_batch(&self, batch: &[Received<H::Message>]) -> Result<Vec<Verdict>, String> {
        match self.handle_batch_at_once(batch).await? {
            Some(verdicts) => Ok(verdicts),
            None => self.handle_batch_one_by_one(batch).await,
        }
    }

    /// The common case, in few statements: the whole batch goes into the
    /// inbox in one statement and the handlers run without savepoints.
    /// `Ok(None)` when a message is malformed or a handler fails: nothing is
    /// kept and the batch is handled again message by message.
    async fn handle_batch_at_once(&self, batch: &[Received<H::Message>]) -> Result<Option<Vec<Verdict>>, String> {
        let Ok(envelopes) = batch.iter().map(|r| r.decoded.as_ref()).collect::<Result<Vec<_>, _>>() else {
            return Ok(None);
        };
        let unavailable_or_none = |error: sqlx::Error| {
            if crate::db::is_unavailable(&error) { Err(error.to_string()) } else { Ok(None) }
        };
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        let ids: Vec<(Uuid, &str)> = envelopes.iter().map(|e| (e.message_id, e.message.type_name())).collect();
        let mut fresh = match inbox::first_deliveries(&mut tx, &ids).await {
            Ok(fresh) => fresh,
            Err(error) => return unavailable_or_none(error),
        };
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut first = Vec::with_capacity(batch.len());
        for envelope in envelopes {
            // `remove`: a message delivered twice within the batch runs once.
            if fresh.remove(&envelope.message_id) {
                first.push(envelope);
                verdicts.push(Verdict::Done);
            } else {
                verdicts.push(Verdict::Duplicate);
            }
        }
        self.metrics.consumer_batch(first.len());
        let (handled, outgoing) = self.signal.collecting(self.handler.handle_batch(&mut tx, &first)).await;
        match handled {
            Ok(()) => {}
            Err(HandlerError::Unavailable(reason)) => return Err(reason),
            Err(error) => {
                tracing::debug!(%error, "batch failed; handling its messages one by one");
                return Ok(None);
            }
        }
        if let Err(error) = tx.commit().await {
            return unavailable_or_none(error);
        }
        outgoing.committed();
        Ok(Some(verdicts))
    }

    /// Each message in its own savepoint, so one failure does not undo the others.
    async fn handle_batch_one_by_one(&self, batch: &[Received<H::Message>]) -> Result<Vec<Verdict>, String> {
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut outgoing = Vec::new();
        for received in batch {
            let envelope = match &received.decoded {
                Ok(envelope) => envelope,
                Err(reason) => {
                    verdicts.push(Verdict::DeadLetter(format!("malformed message: {reason}")));
                    continue;
                }
            };
            let span = received.span.clone();
            let outcome = self.handle_one(&mut tx, envelope).instrument(span.clone()).await;
            let verdict = match outcome {
                Ok(Some(written)) => {
                    outgoing.extend(written);
                    Verdict::Done
                }
                Ok(None) => Verdict::Duplicate,
                Err(HandlerError::Rejected(reason)) => Verdict::DeadLetter(reason),
                Err(HandlerError::Transient(reason) | HandlerError::Conflict(reason)) => Verdict::Retry(reason),
                Err(HandlerError::Unavailable(reason)) => return Err(reason),
            };
            span.in_scope(|| tracing::debug!(?verdict, "handled"));
            verdicts.push(verdict);
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        self.signal.committed(outgoing);
        Ok(verdicts)
    }

    /// `Ok(None)`: a duplicate, already handled; otherwise the messages the
    /// handler enqueued (only those of the savepoint that was kept). A
    /// deadlock or serialization failure only undoes this message's
    /// savepoint; it is tried again at once, without spending one of its
    /// delivery attempts.
    async fn handle_one(
        &self,
        tx: &mut PgConnection,
        envelope: &Envelope<H::Message>,
    ) -> Result<Option<Vec<crate::outbox::OutboxMessage>>, HandlerError> {
        const CONFLICT_RETRIES: usize = 5;
        let mut conflicts = 0;
        loop {
            match self.try_once(tx, envelope).await {
                Err(HandlerError::Conflict(reason)) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(reason, conflicts, "lock conflict; trying the message again");
                }
                Err(HandlerError::Conflict(reason)) => return Err(HandlerError::Transient(reason)),
                other => return other,
            }
        }
    }

    async fn try_once(
        &self,
        tx: &mut PgConnection,
        envelope: &Envelope<H::Message>,
    ) -> Result<Option<Vec<crate::outbox::OutboxMessage>>, HandlerError> {
        let mut savepoint = tx.begin().await?;
        if !inbox::first_delivery(&mut savepoint, envelope.message_id, envelope.message.type_name()).await? {
            savepoint.commit().await?;
            return Ok(None);
        }
        let (handled, written) = crate::outbox::collecting(self.handler.handle(&mut savepoint, envelope)).await;
        match handled {
            Ok(()) => {
                savepoint.commit().await?;
                Ok(Some(written))
            }
            Err(error) => {
                savepoint.rollback().await?;
                Err(error)
            }
        }
    }

    /// After the commit: acknowledge, or hand the message to a delay queue or
    /// the dead-letter queue first (confirmed), then acknowledge.
    async fn settle(
        &self,
        channel: &Channel,
        received: Vec<Received<H::Message>>,
        verdicts: Vec<Verdict>,
        queue: &str,
    ) -> Result<(), lapin::Error> {
        if verdicts.iter().all(|v| matches!(v, Verdict::Done | Verdict::Duplicate)) {
            return self.ack_all(channel, received, verdicts, queue).await;
        }
        let platform = &self.topology.spec.platform;
        let max_attempts = self.topology.spec.retry.max_attempts;
        for (r, verdict) in received.into_iter().zip(verdicts) {
            let span = r.span.clone();
            let (outcome, dead_letter_reason) = match verdict {
                Verdict::Done => ("handled", None),
                Verdict::Duplicate => ("duplicate", None),
                Verdict::Retry(reason) if r.attempt < max_attempts => {
                    span.in_scope(|| {
                        tracing::warn!(reason, attempt = r.attempt, queue, "message failed; retrying later")
                    });
                    let retry_queue = retry_queue_name(platform, self.config.destination, r.attempt);
                    if republish(channel, &r.delivery, "", &retry_queue, r.attempt + 1, &reason, queue).await? {
                        ("retried", None)
                    } else {
                        // The delay queue is missing (topology changed under us):
                        // never requeue in a loop, dead-letter instead.
                        ("dead_lettered", Some(format!("{reason}; the delay queue {retry_queue} refused the copy")))
                    }
                }
                Verdict::Retry(reason) | Verdict::DeadLetter(reason) => ("dead_lettered", Some(reason)),
            };
            if let Some(reason) = dead_letter_reason {
                span.in_scope(|| tracing::error!(reason, attempt = r.attempt, queue, "message dead-lettered"));
                let routing_key = self.config.destination.queue();
                let dlx = self.topology.dead_letter_exchange();
                if !republish(channel, &r.delivery, &dlx, routing_key, r.attempt, &reason, queue).await? {
                    // Last resort: rejected, the queue's own dead-letter
                    // exchange takes it (without our reason headers).
                    span.in_scope(|| tracing::error!(queue, "the dead-letter queue refused the copy; rejecting"));
                    self.metrics.messages_consumed(queue, outcome);
                    r.delivery.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await?;
                    continue;
                }
            }
            self.metrics.messages_consumed(queue, outcome);
            r.delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }
}

impl<H: Handler> Consumer<H> {
    /// A batch that succeeded as a whole is acknowledged with one frame: its
    /// highest delivery tag with `multiple`. Earlier batches on this channel
    /// are settled already and later deliveries have higher tags, so this
    /// covers exactly the batch.
    async fn ack_all(
        &self,
        channel: &Channel,
        received: Vec<Received<H::Message>>,
        verdicts: Vec<Verdict>,
        queue: &str,
    ) -> Result<(), lapin::Error> {
        let Some(last) = received.iter().map(|r| r.delivery.delivery_tag).max() else { return Ok(()) };
        channel.basic_ack(last, BasicAckOptions { multiple: true }).await?;
        for verdict in verdicts {
            let outcome = if matches!(verdict, Verdict::Done) { "handled" } else { "duplicate" };
            self.metrics.messages_consumed(queue, outcome);
        }
        Ok(())
    }
}

/// The span every log line about one message carries.
fn message_span<M: Payload>(envelope: &Envelope<M>) -> tracing::Span {
    tracing::info_span!(
        "message",
        correlation_id = %envelope.correlation_id,
        message_id = %envelope.message_id,
        message_type = envelope.message.type_name(),
        order_id = %envelope.message.order_id(),
    )
}

/// Traces a batch: a span for the batch (a trace of its own), and for each
/// message a span that continues the sender's trace (a child of its
/// publish), linked to the batch and the batch to it. Each envelope's trace
/// context becomes its span's, so what its handler sends descends from it.
/// Returns the batch's span.
fn trace<M: Payload>(batch: &mut [Received<M>], queue: &str) -> tracing::Span {
    let batch_span = tracing::info_span!(
        "consume batch",
        otel.name = format!("consume batch {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = queue,
        messaging.batch.message_count = batch.len(),
    );
    let batch_context = telemetry::start(&batch_span, &opentelemetry::Context::new());
    for received in batch {
        received.span = match &mut received.decoded {
            Ok(envelope) => {
                let span = tracing::info_span!(
                    parent: &batch_span,
                    "message",
                    otel.name = format!("consume {}", envelope.message.type_name()),
                    otel.kind = "consumer",
                    messaging.system = "rabbitmq",
                    messaging.destination.name = queue,
                    messaging.message.id = %envelope.message_id,
                    correlation_id = %envelope.correlation_id,
                    message_id = %envelope.message_id,
                    message_type = envelope.message.type_name(),
                    order_id = %envelope.message.order_id(),
                );
                let context = telemetry::start(&span, &envelope.trace.parent());
                telemetry::link(&span, &batch_context);
                telemetry::link(&batch_span, &context);
                envelope.trace = TraceContext::of(&context);
                span
            }
            Err(_) => tracing::info_span!(parent: &batch_span, "malformed message"),
        };
    }
    batch_span
}

/// Copies a delivery (same message id, body and properties) to another
/// destination with updated attempt and reason headers, and waits for the
/// broker's confirm so the original can be acknowledged safely. `Ok(false)`:
/// the broker returned (no such queue) or refused the copy.
async fn republish(
    channel: &Channel,
    delivery: &Delivery,
    exchange: &str,
    routing_key: &str,
    attempt: u32,
    reason: &str,
    original_queue: &str,
) -> Result<bool, lapin::Error> {
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(attempt));
    table.insert(headers::FAILURE_REASON.into(), AMQPValue::LongString(LongString::from(truncate(reason, 1000))));
    table.insert(headers::ORIGINAL_QUEUE.into(), AMQPValue::LongString(LongString::from(original_queue)));
    table.insert(
        headers::DEAD_LETTERED_AT.into(),
        AMQPValue::LongString(LongString::from(chrono::Utc::now().to_rfc3339())),
    );
    let properties: BasicProperties = delivery.properties.clone().with_headers(table).with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &delivery.data,
            properties,
        )
        .await?
        .await?;
    Ok(matches!(confirm, Confirmation::Ack(None) | Confirmation::NotRequested))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// Reads an AMQP delivery into an envelope, or says why it cannot be read.
/// Everything taken from the delivery is checked before use: the body's
/// size, the message id, the type, the correlation id (type and length: it
/// becomes the `correlation_id` property of every reply), the trace context
/// (`traceparent` and `tracestate` through the standard propagator; an
/// invalid one starts a new trace, as W3C Trace Context asks) and the
/// attempt counter (clamped to the retry ladder). Reasons never quote the
/// offending value, which may be huge or hold control characters.
pub fn decode<M: Payload>(delivery: Delivery, max_body: usize, max_attempts: u32) -> Received<M> {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let attempt = attempt(headers.inner().get(headers::ATTEMPT), max_attempts);
    let decoded = (|| {
        if delivery.data.len() > max_body {
            return Err(format!(
                "body of {} bytes exceeds the limit of {max_body} bytes (MAX_MESSAGE_BYTES)",
                delivery.data.len()
            ));
        }
        let message_id = delivery.properties.message_id().as_ref().ok_or("no message_id property")?.as_str();
        // Not `{e}`: the parser's error quotes the character it stopped at.
        let message_id =
            message_id.parse::<Uuid>().map_err(|_| format!("message_id ({} bytes) is not a UUID", message_id.len()))?;
        let message: M = serde_json::from_slice(&delivery.data).map_err(|e| format!("invalid body: {e}"))?;
        if let Some(kind) = delivery.properties.kind()
            && kind.as_str() != message.type_name()
        {
            return Err(format!(
                "type property ({} bytes) does not match body type {}",
                kind.as_str().len(),
                message.type_name()
            ));
        }
        let correlation_id = match headers.inner().get(headers::CORRELATION_ID) {
            Some(value) => string_header(value).ok_or_else(|| {
                format!(
                    "correlation id ({} header) must be a UTF-8 string, not {}",
                    headers::CORRELATION_ID,
                    value_kind(value)
                )
            })?,
            None => match delivery.properties.correlation_id() {
                Some(property) => property.to_string(),
                None => message_id.to_string(),
            },
        };
        if !valid_correlation_id(&correlation_id) {
            return Err(format!(
                "correlation id must be 1-{MAX_CORRELATION_ID_LEN} printable ASCII characters, got {} bytes",
                correlation_id.len()
            ));
        }
        let header = |name| headers.inner().get(name).and_then(string_header);
        let trace = TraceContext::read(header(headers::TRACEPARENT).as_deref(), header(headers::TRACESTATE).as_deref());
        Ok(Envelope { message_id, correlation_id, trace, message })
    })();
    Received { delivery, attempt, decoded, span: tracing::Span::none() }
}

fn string_header(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(value) => String::from_utf8(value.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

fn value_kind(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => "a string of invalid UTF-8",
        AMQPValue::ByteArray(_) => "a byte array",
        AMQPValue::Boolean(_) => "a boolean",
        AMQPValue::FieldArray(_) => "an array",
        AMQPValue::FieldTable(_) => "a table",
        AMQPValue::Void => "void",
        _ => "a number",
    }
}

/// The delivery attempt a message claims in `x-attempt`, clamped to the
/// retry ladder `1..=max_attempts`: any AMQP integer type is read; a missing
/// header, another type (string, float, timestamp, ...) or a value below 1
/// counts as attempt 1 (the message gets the normal ladder, which is
/// finite); a value above `max_attempts` counts as the last attempt (one
/// more failure dead-letters it). So a retry always goes to a delay queue
/// that exists, and a message can never loop.
pub fn attempt(value: Option<&AMQPValue>, max_attempts: u32) -> u32 {
    let claimed: i128 = match value {
        Some(AMQPValue::ShortShortInt(n)) => (*n).into(),
        Some(AMQPValue::ShortShortUInt(n)) => (*n).into(),
        Some(AMQPValue::ShortInt(n)) => (*n).into(),
        Some(AMQPValue::ShortUInt(n)) => (*n).into(),
        Some(AMQPValue::LongInt(n)) => (*n).into(),
        Some(AMQPValue::LongUInt(n)) => (*n).into(),
        Some(AMQPValue::LongLongInt(n)) => (*n).into(),
        _ => 1,
    };
    let max_attempts = max_attempts.max(1);
    u32::try_from(claimed.clamp(1, max_attempts.into())).unwrap_or(max_attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_is_clamped_to_the_ladder() {
        let at = |value: AMQPValue| attempt(Some(&value), 5);
        assert_eq!(attempt(None, 5), 1);
        assert_eq!(at(AMQPValue::LongUInt(3)), 3);
        assert_eq!(at(AMQPValue::ShortShortUInt(2)), 2);
        assert_eq!(at(AMQPValue::ShortShortInt(4)), 4);
        assert_eq!(at(AMQPValue::ShortInt(2)), 2);
        assert_eq!(at(AMQPValue::ShortUInt(2)), 2);
        assert_eq!(at(AMQPValue::LongInt(2)), 2);
        assert_eq!(at(AMQPValue::LongLongInt(2)), 2);
        assert_eq!(at(AMQPValue::LongUInt(0)), 1);
        assert_eq!(at(AMQPValue::LongInt(-1)), 1);
        assert_eq!(at(AMQPValue::LongLongInt(i64::MIN)), 1);
        assert_eq!(at(AMQPValue::LongLongInt(1 << 32)), 5);
        assert_eq!(at(AMQPValue::LongUInt(u32::MAX)), 5);
        assert_eq!(at(AMQPValue::LongLongInt(i64::MAX)), 5);
        assert_eq!(at(AMQPValue::LongString("3".into())), 1);
        assert_eq!(at(AMQPValue::Double(3.0)), 1);
        assert_eq!(at(AMQPValue::Timestamp(3)), 1);
        assert_eq!(at(AMQPValue::Boolean(true)), 1);
        assert_eq!(attempt(Some(&AMQPValue::LongUInt(7)), 0), 1);
    }

    fn delivery(message_id: &str, body: &str) -> Delivery {
        let mut delivery = Delivery::mock(1, "".into(), "q".into(), false, body.as_bytes().to_vec());
        delivery.properties = BasicProperties::default().with_message_id(message_id.into());
        delivery
    }

    /// Found by fuzz/fuzz_targets/message_decode.rs: the reason quoted the
    /// character the UUID parser stopped at (a control character here).
    #[test]
    fn a_bad_message_id_is_not_quoted_in_the_reason() {
        let body = r#"{"type":"inventory.confirm","order_id":"0196b9a4-3c1e-7000-8000-00000000002a"}"#;
        let good = decode::<Message>(delivery("0196b9a4-3c1e-7000-8000-000000000001", body), 1 << 20, 5);
        assert!(good.decoded.is_ok());
        for bad in ["0196b9a4-3c1e-7000-8000-00000000000\u{1}", "\u{1b}[31m", "x", ""] {
            let reason = decode::<Message>(delivery(bad, body), 1 << 20, 5).decoded.unwrap_err();
            assert!(reason.starts_with("message_id (") && reason.ends_with(" is not a UUID"), "{reason}");
            assert!(reason.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{reason:?}");
        }
    }
}
