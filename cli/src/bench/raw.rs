//! `sagactl bench --raw`: the ceiling of the infrastructure, measured in the
//! same run as the load so results can be read as a ratio to the limit.
//!
//! - Broker: persistent 200-byte messages published with the platform's own
//!   pipelined-confirm path (`saga_common::amqp::publish_batch`) to a scratch
//!   queue of the platform's queue type, then consumed with manual acks.
//! - Database: concurrent small transactions (BEGIN, one INSERT, COMMIT) in a
//!   scratch database, durable as the services' commits are.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use saga_common::amqp::{Broker, OutgoingMessage, publish_batch, redact};
use saga_common::topology::QueueType;
use serde::Serialize;
use tokio::task::JoinSet;

use super::stats::{COMMITS_PER_SAGA_UNBATCHED, MESSAGES_PER_SAGA, histogram, record};
use crate::Result;

const MESSAGES: usize = 30_000;
/// Confirms in flight at once, as the outbox relay's batches.
const PUBLISH_BATCH: usize = 500;
const PREFETCH: u16 = 256;
const DB_TASKS: usize = 16;
const DB_SECONDS: u64 = 5;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RawLimits {
    pub publish_per_s: f64,
    pub consume_per_s: f64,
    pub commits_per_s: f64,
    pub commit_p99_ms: f64,
}

impl RawLimits {
    pub fn broker_saga_ceiling_per_s(&self) -> f64 {
        self.publish_per_s.min(self.consume_per_s) / MESSAGES_PER_SAGA
    }

    pub fn database_saga_ceiling_per_s(&self) -> f64 {
        self.commits_per_s / COMMITS_PER_SAGA_UNBATCHED
    }

    /// The lower of the two: what a saga platform on this machine could do at
    /// best if it did nothing but move its messages or make its commits.
    pub fn saga_ceiling_per_s(&self) -> f64 {
        self.broker_saga_ceiling_per_s().min(self.database_saga_ceiling_per_s())
    }
}

pub async fn measure(amqp_url: &str, database_url: &str, queue_type: QueueType) -> Result<RawLimits> {
    let (publish_per_s, consume_per_s) = broker(amqp_url, queue_type).await?;
    let (commits_per_s, commit_p99_ms) = database(database_url).await?;
    Ok(RawLimits { publish_per_s, consume_per_s, commits_per_s, commit_p99_ms })
}

async fn broker(amqp_url: &str, queue_type: QueueType) -> Result<(f64, f64)> {
    let broker = Broker::new(amqp_url, "sagactl-bench-raw");
    let connection =
        broker.connect_once().await.map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", redact(amqp_url)))?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let queue = format!("sagactl.bench.raw.{}", uuid::Uuid::new_v4().simple());
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(queue_type.as_str().into()));
    channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, arguments)
        .await?;

    let result = publish_and_consume(&channel, &queue).await;
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    let _ = connection.close(200, "bench done".into()).await;
    result
}

async fn publish_and_consume(channel: &lapin::Channel, queue: &str) -> Result<(f64, f64)> {
    let message = |i: usize| OutgoingMessage {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        message_id: i.to_string(),
        message_type: "bench".to_owned(),
        correlation_id: i.to_string(),
        trace: Default::default(),
        payload: vec![b'x'; 200],
        headers: Vec::new(),
        mandatory: true,
    };
    let started = Instant::now();
    for first in (0..MESSAGES).step_by(PUBLISH_BATCH) {
        let batch: Vec<OutgoingMessage> = (first..(first + PUBLISH_BATCH).min(MESSAGES)).map(message).collect();
        publish_batch(channel, &batch).await?;
    }
    let publish_per_s = MESSAGES as f64 / started.elapsed().as_secs_f64();

    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut deliveries =
        channel.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let started = Instant::now();
    for _ in 0..MESSAGES {
        let delivery = deliveries.next().await.ok_or("the scratch queue's consumer was cancelled")??;
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    let consume_per_s = MESSAGES as f64 / started.elapsed().as_secs_f64();
    Ok((publish_per_s, consume_per_s))
}

async fn database(database_url: &str) -> Result<(f64, f64)> {
    let pool = tokio::time::timeout(Duration::from_secs(15), saga_common::db::connect(database_url, DB_TASKS as u32))
        .await
        .map_err(|_| format!("cannot open the database at {database_url}"))?;
    sqlx::query("CREATE TABLE IF NOT EXISTS raw_commits (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(DB_SECONDS);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..DB_TASKS {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut latencies = histogram();
            let mut commits = 0u64;
            while Instant::now() < deadline {
                let begun = Instant::now();
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO raw_commits (payload) VALUES ($1)")
                    .bind("x".repeat(100))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                record(&mut latencies, begun.elapsed());
                commits += 1;
            }
            Ok::<_, sqlx::Error>((commits, latencies))
        });
    }
    let mut commits = 0;
    let mut latencies = histogram();
    while let Some(joined) = tasks.join_next().await {
        let (n, histogram) = joined??;
        commits += n;
        latencies.add(histogram)?;
    }
    let commits_per_s = commits as f64 / started.elapsed().as_secs_f64();
    sqlx::query("TRUNCATE raw_commits").execute(&pool).await?;
    Ok((commits_per_s, latencies.value_at_quantile(0.99) as f64 / 1000.0))
}
