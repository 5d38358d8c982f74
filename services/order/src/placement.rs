//! Writes new orders: the order row, its first timeline step and its first
//! commands (outbox), in one transaction, published from memory once
//! committed.
//!
//! Requests without an `Idempotency-Key` are written in batches ("group
//! commit"): one writer takes every request that arrived while its previous
//! transaction committed and writes them together, with one statement per
//! table whatever the batch size. Under load this turns one transaction
//! (five round trips and one WAL flush) per order into one per batch; an
//! idle platform writes a lone order at once, as before. If a batch fails,
//! each of its orders is written again on its own, so one bad order cannot
//! fail the others. A request with an `Idempotency-Key` writes in its own
//! transaction, which holds the key's lock (`stage` is the same code).

use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use saga_common::envelope::Envelope;
use saga_common::metrics::Metrics;
use saga_common::outbox::{self, OutboxSignal};
use saga_common::runtime::Shutdown;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, Entry, OrderRow};

/// An order about to be placed: its row, its first timeline step and the
/// commands that start its saga.
pub struct NewOrder {
    pub row: OrderRow,
    pub timeline: Vec<Entry>,
    pub commands: Vec<Envelope>,
}

/// Writes orders inside the caller's transaction: one statement per table
/// for the whole slice.
pub async fn stage(conn: &mut PgConnection, orders: &[&NewOrder], step_timeout: Duration) -> sqlx::Result<()> {
    let rows: Vec<&OrderRow> = orders.iter().map(|o| &o.row).collect();
    store::insert_all(conn, &rows, step_timeout.as_secs_f64()).await?;
    let steps: Vec<(uuid::Uuid, Vec<Entry>)> = orders.iter().map(|o| (o.row.id, o.timeline.clone())).collect();
    store::record_steps(conn, &steps).await?;
    let commands: Vec<Envelope> = orders.iter().flat_map(|o| o.commands.iter().cloned()).collect();
    outbox::enqueue(conn, &commands).await
}

/// Why an order was not written.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("the order writer has stopped")]
    Stopped,
}

/// An order waiting for the writer, and where to send the moment its transaction committed.
type Pending = (NewOrder, oneshot::Sender<Result<Instant, PlaceError>>);

/// The handle requests use to have their order written by the batch writer.
#[derive(Clone)]
pub struct Placements {
    queue: mpsc::Sender<Pending>,
}

/// The batch writer: runs until shutdown (then the requests still queued get
/// `PlaceError::Stopped`).
pub struct Writer {
    pool: PgPool,
    signal: OutboxSignal,
    step_timeout: Duration,
    max_batch: usize,
    queue: mpsc::Receiver<Pending>,
    batch_size: Histogram,
}

impl Placements {
    /// `max_batch` bounds a batch; `max_batch` × 4 requests may wait for the
    /// writer (more wait for room in the queue, which admission bounds).
    pub fn new(
        pool: PgPool,
        signal: OutboxSignal,
        step_timeout: Duration,
        max_batch: usize,
        metrics: &Metrics,
    ) -> (Self, Writer) {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        metrics.register(
            "order_write_batch_size",
            "New orders written together in one transaction",
            batch_size.clone(),
        );
        (Placements { queue: tx }, Writer { pool, signal, step_timeout, max_batch, queue: rx, batch_size })
    }

    /// Writes the order (with others that arrive meanwhile) and returns once
    /// it is committed, with the moment it was; its commands are then
    /// published from memory.
    pub async fn place(&self, order: NewOrder) -> Result<Instant, PlaceError> {
        let (done, written) = oneshot::channel();
        self.queue.send((order, done)).await.map_err(|_| PlaceError::Stopped)?;
        written.await.unwrap_or(Err(PlaceError::Stopped))
    }
}

impl Writer {
    pub async fn run(mut self, mut shutdown: Shutdown) {
        loop {
            let first = tokio::select! {
                next = self.queue.recv() => match next {
                    Some(pending) => pending,
                    None => return,
                },
                _ = shutdown.wait() => return,
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            self.write_batch(batch).await;
        }
    }

    #[tracing::instrument(name = "place orders", skip_all, fields(batch = batch.len()))]
    async fn write_batch(&self, batch: Vec<Pending>) {
        self.batch_size.observe(batch.len() as f64);
        let orders: Vec<&NewOrder> = batch.iter().map(|(order, _)| order).collect();
        let result = self.write(&orders).await;
        match result {
            Ok(at) => {
                for (_, done) in batch {
                    let _ = done.send(Ok(at));
                }
            }
            Err(error) if batch.len() == 1 => {
                let (_, done) = batch.into_iter().next().expect("one order");
                let _ = done.send(Err(error.into()));
            }
            Err(error) => {
                tracing::debug!(%error, "order batch failed; writing its orders one by one");
                for (order, done) in batch {
                    let _ = done.send(self.write(&[&order]).await.map_err(PlaceError::from));
                }
            }
        }
    }

    /// One transaction; the commands are handed to the relay once committed.
    /// Returns the moment of the commit.
    async fn write(&self, orders: &[&NewOrder]) -> sqlx::Result<Instant> {
        self.signal
            .transaction(async {
                let mut tx = self.pool.begin().await?;
                stage(&mut tx, orders, self.step_timeout).await?;
                tx.commit().await?;
                Ok(Instant::now())
            })
            .await
    }
}
