//! The dead-letter queues of a platform: browse, replay, purge. One
//! definition, used by `sagactl dlq` and the order service's admin API
//! (the explorer's dead-letter view).
//!
//! - `browse` reads without consuming: messages are taken unacknowledged
//!   and handed back when the channel closes.
//! - `replay` moves selected (or all) messages back to the queue they failed
//!   on: each is published to the platform's exchange with its original
//!   message id, confirmed by the broker, and only then removed from the
//!   DLQ. The failure headers are dropped, so the message gets its full
//!   number of attempts again. Should the caller die between the confirm and
//!   the removal, a second replay delivers the same message id again and the
//!   consumer's inbox ignores it: a replay takes effect exactly once, and a
//!   replayed message whose saga has already finished changes nothing.
//! - `purge` deletes a DLQ's messages.

use std::collections::BTreeSet;

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Confirmation, Connection};
use serde::Serialize;

use crate::envelope::headers;
use crate::topology::{Destination, dlq_name};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("dead-letter queue {queue}: {source} (is the platform name right?)")]
    Missing { queue: String, source: lapin::Error },
    #[error("the broker did not accept message {id} for {exchange}; it stays in {queue}")]
    NotAccepted { id: String, exchange: String, queue: String },
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// A dead-lettered message as a person reads it: its properties and the
/// failure headers the consumer added. Values come from messages: callers
/// that print them escape them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// AMQP `message_id` ("" if it had none).
    pub message_id: String,
    /// AMQP `type` ("" if it had none).
    #[serde(rename = "type")]
    pub kind: String,
    pub correlation_id: String,
    /// Deliveries tried before it was dead-lettered ("" if not recorded).
    pub attempts: String,
    pub dead_lettered_at: String,
    /// Why it failed, as the consumer recorded it.
    pub reason: String,
    /// Size of the body in bytes.
    pub body_bytes: usize,
}

/// The dead-letter queue of `destination` on `platform`.
pub fn queue(platform: &str, destination: Destination) -> String {
    dlq_name(platform, destination)
}

/// Messages in `queue` now (a passive declare: fails if it does not exist).
pub async fn depth(channel: &Channel, queue: &str) -> Result<u32, DlqError> {
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map(|declared| declared.message_count())
        .map_err(|source| DlqError::Missing { queue: queue.to_owned(), source })
}

/// Takes up to `max` messages unacknowledged (so nothing is lost if we stop).
async fn take(channel: &Channel, queue: &str, max: u32) -> Result<Vec<BasicGetMessage>, DlqError> {
    let mut taken = Vec::new();
    while taken.len() < max as usize {
        match channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? {
            Some(message) => taken.push(message),
            None => break,
        }
    }
    Ok(taken)
}

fn header(table: &FieldTable, name: &str) -> String {
    match table.inner().get(name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        Some(AMQPValue::LongUInt(n)) => n.to_string(),
        Some(AMQPValue::LongInt(n)) => n.to_string(),
        Some(AMQPValue::LongLongInt(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn message_id(message: &BasicGetMessage) -> String {
    message.delivery.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default()
}

fn describe(message: &BasicGetMessage) -> DeadLetter {
    let properties = &message.delivery.properties;
    let headers = properties.headers().clone().unwrap_or_default();
    DeadLetter {
        message_id: message_id(message),
        kind: properties.kind().as_ref().map(|t| t.to_string()).unwrap_or_default(),
        correlation_id: header(&headers, headers::CORRELATION_ID),
        attempts: header(&headers, headers::ATTEMPT),
        dead_lettered_at: header(&headers, headers::DEAD_LETTERED_AT),
        reason: header(&headers, headers::FAILURE_REASON),
        body_bytes: message.delivery.data.len(),
    }
}

/// A queue's depth and up to `limit` of its messages, oldest first, left in the queue.
pub async fn browse(connection: &Connection, queue: &str, limit: u32) -> Result<(u32, Vec<DeadLetter>), DlqError> {
    let channel = connection.create_channel().await?;
    let total = depth(&channel, queue).await?;
    let messages = take(&channel, queue, limit).await?.iter().map(describe).collect();
    // Closing the channel hands every browsed message back to the queue.
    channel.close(200, "browsed".into()).await?;
    Ok((total, messages))
}

/// Which messages `replay` sends back.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    /// These message ids; each one found is removed from the set, so what
    /// is left afterwards was not found.
    Ids(BTreeSet<String>),
}

/// Sends the selected messages of `destination`'s DLQ back to its queue,
/// each exactly once; returns the ids replayed, in order. Only what is
/// there when it starts: replayed messages that fail again come back to
/// the DLQ and are not taken a second time.
pub async fn replay(
    connection: &Connection,
    platform: &str,
    destination: Destination,
    selection: &mut Selection,
) -> Result<Vec<String>, DlqError> {
    let exchange = format!("{platform}.saga");
    let queue = dlq_name(platform, destination);
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let present = depth(&channel, &queue).await?;
    let mut replayed = Vec::new();
    for message in take(&channel, &queue, present).await? {
        let id = message_id(&message);
        let wanted = match selection {
            Selection::All => true,
            Selection::Ids(ids) => ids.remove(&id),
        };
        if !wanted {
            continue; // handed back when the channel closes
        }
        let delivery = &message.delivery;
        let failure_headers =
            [headers::ATTEMPT, headers::FAILURE_REASON, headers::ORIGINAL_QUEUE, headers::DEAD_LETTERED_AT];
        let mut table = FieldTable::default();
        for (name, value) in delivery.properties.headers().clone().unwrap_or_default().inner() {
            if !failure_headers.contains(&name.as_str()) {
                table.insert(name.clone(), value.clone());
            }
        }
        let properties = delivery.properties.clone().with_headers(table);
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                destination.queue().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
            return Err(DlqError::NotAccepted { id, exchange, queue });
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed.push(id);
    }
    channel.close(200, "replayed".into()).await?;
    Ok(replayed)
}

/// Deletes every message of `queue`; returns how many.
pub async fn purge(connection: &Connection, queue: &str) -> Result<u32, DlqError> {
    let channel = connection.create_channel().await?;
    depth(&channel, queue).await?;
    let purged = channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await?;
    let _ = channel.close(200, "purged".into()).await;
    Ok(purged)
}
