//! Lets `GET /api/v1/orders/{id}?wait=N` answer the moment an order's status
//! changes, without polling the database: the transaction that changes it
//! sends a PostgreSQL NOTIFY (delivered at commit, to every replica), and
//! each replica's listener fans it out to the requests waiting there.

use std::time::Duration;

use saga_common::amqp::Backoff;
use saga_common::runtime::Shutdown;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::broadcast;
use uuid::Uuid;

const CHANNEL: &str = "order_status_changed";
/// Waiters that fall this far behind re-read their order instead.
const CAPACITY: usize = 4096;

/// Inside the transaction that changes the order's status.
pub async fn announce(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(order_id.to_string()).execute(conn).await?;
    Ok(())
}

#[derive(Clone)]
pub struct StatusChanges(broadcast::Sender<Uuid>);

impl StatusChanges {
    pub fn new() -> Self {
        StatusChanges(broadcast::channel(CAPACITY).0)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.0.subscribe()
    }

    /// Relays notifications until shutdown. Notifications sent while the
    /// listener reconnects are lost; waiters also re-read on a timer.
    pub async fn listen(self, pool: PgPool, mut shutdown: Shutdown) {
        let mut backoff = Backoff::new();
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                connected = connected => match connected {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for order status changes; retrying");
                        backoff.wait().await;
                        continue;
                    }
                },
                _ = shutdown.wait() => return,
            };
            backoff = Backoff::new();
            loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(notification) => {
                            if let Ok(id) = notification.payload().parse() {
                                // No receivers is fine: nobody is waiting.
                                let _ = self.0.send(id);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "order status listener failed; reconnecting");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                    },
                    _ = shutdown.wait() => return,
                }
            }
        }
    }
}
