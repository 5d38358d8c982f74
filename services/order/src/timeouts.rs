//! The step-timeout worker. It runs in every replica; `FOR UPDATE SKIP
//! LOCKED` hands each overdue order to exactly one of them, and the row lock
//! also serialises it with replies arriving at the same moment.
//!
//! A step timeout means "the participant did not answer". While this
//! replica cannot reach the broker or its database, no answer can be
//! received, so the worker stands still; once both are back, every running
//! step gets a fresh timeout. Without this, a broker or database restart
//! would fail every saga in flight and flood the queues with compensations.

use std::sync::Arc;
use std::time::Duration;

use saga_common::amqp::Broker;
use saga_common::outbox::OutboxSignal;
use saga_common::runtime::Shutdown;
use sqlx::PgPool;

use crate::orchestrator::Orchestrator;
use crate::saga::Event;
use crate::store;

const BATCH: i64 = 200;

pub struct TimeoutWorker {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub step_timeout: Duration,
    pub orchestrator: Arc<Orchestrator>,
    pub signal: OutboxSignal,
    pub scan_interval: Duration,
}

impl TimeoutWorker {
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut outage = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.scan_interval) => {}
                _ = shutdown.wait() => return,
            }
            if self.broker.current().is_none() {
                outage = true;
                continue;
            }
            if outage {
                match store::restart_step_clocks(&self.pool, self.step_timeout).await {
                    Ok(restarted) => {
                        tracing::info!(
                            restarted,
                            "broker and database reachable again; running steps get a fresh timeout"
                        );
                        outage = false;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot restart the step clocks");
                        continue;
                    }
                }
            }
            loop {
                match self.expire_batch().await {
                    Ok(n) if n == BATCH as usize => continue,
                    Ok(_) => break,
                    Err(error) => {
                        outage |= saga_common::db::is_unavailable(&error);
                        tracing::warn!(%error, "timeout scan failed");
                        break;
                    }
                }
            }
        }
    }

    async fn expire_batch(&self) -> Result<usize, sqlx::Error> {
        self.signal.transaction(self.expire_and_commit()).await
    }

    async fn expire_and_commit(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let overdue = store::lock_overdue(&mut tx, BATCH).await?;
        let expired = overdue.len();
        if expired == 0 {
            return Ok(0);
        }
        for order in &overdue {
            let span = tracing::info_span!("timeout", correlation_id = %order.correlation_id, order_id = %order.id);
            span.in_scope(|| tracing::warn!(step = order.saga.0.name(), "step timed out"));
        }
        let events: Vec<_> = overdue.iter().map(|order| (order.id, Event::StepTimedOut, None)).collect();
        self.orchestrator.advance_all(&mut tx, overdue, &events).await?;
        tx.commit().await?;
        Ok(expired)
    }
}
