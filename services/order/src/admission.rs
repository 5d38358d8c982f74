//! Admission control: while more sagas are running than the platform is set
//! to carry, `POST /api/v1/orders` answers 503 `overloaded` instead of
//! accepting. Above its capacity a saga platform can only grow its backlog
//! until sagas hit their step timeout, and the compensations that follow add
//! load; refusing at the edge keeps the sagas it did accept on time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use saga_common::problem::Problem;
use saga_common::runtime::Shutdown;
use sqlx::PgPool;

/// How often the count of running sagas is refreshed (shared by all replicas
/// through the database, so the limit holds for the platform).
const REFRESH: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Admission {
    /// 0: no limit.
    limit: i64,
    running: Arc<AtomicI64>,
}

impl Admission {
    pub fn new(limit: u32) -> Self {
        Admission { limit: limit.into(), running: Arc::default() }
    }

    pub fn check(&self) -> Result<(), Problem> {
        let running = self.running.load(Ordering::Relaxed);
        if self.limit > 0 && running >= self.limit {
            return Err(Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{running} sagas are running (limit {}); try again shortly", self.limit),
            ));
        }
        Ok(())
    }

    /// Keeps the count fresh until shutdown; a failed count keeps the last one.
    pub async fn refresh(self, pool: PgPool, mut shutdown: Shutdown) {
        if self.limit == 0 {
            return;
        }
        loop {
            match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                .fetch_one(&pool)
                .await
            {
                Ok(running) => self.running.store(running, Ordering::Relaxed),
                Err(error) => tracing::debug!(%error, "cannot count running sagas"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}
