//! Lets `GET /api/v1/orders/{id}?wait=N` answer the moment an order's status
//! changes, without polling the database: the transaction that changes it
//! sends a PostgreSQL NOTIFY (delivered at commit, to every replica), and
//! each replica's listener wakes exactly the requests waiting there for
//! that order. Waking only those keeps the cost per notification constant,
//! however many requests wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use saga_common::amqp::Backoff;
use saga_common::runtime::Shutdown;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

const CHANNEL: &str = "order_status_changed";

/// Inside the transaction that changes the order's status.
pub async fn announce_all(conn: &mut PgConnection, order_ids: &[Uuid]) -> sqlx::Result<()> {
    if order_ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = order_ids.iter().map(Uuid::to_string).collect();
    sqlx::query("SELECT pg_notify($1, id) FROM UNNEST($2::text[]) AS id").bind(CHANNEL).bind(ids).execute(conn).await?;
    Ok(())
}

type Waiters = HashMap<Uuid, Vec<(u64, oneshot::Sender<()>)>>;

#[derive(Clone, Default)]
pub struct StatusChanges {
    waiters: Arc<Mutex<Waiters>>,
    next_token: Arc<AtomicU64>,
}

/// A registration for one order's next status change; unregisters on drop.
pub struct Watch {
    order_id: Uuid,
    token: u64,
    fired: oneshot::Receiver<()>,
    waiters: Arc<Mutex<Waiters>>,
}

impl Watch {
    /// Resolves when the order's status changed (or the listener lost
    /// notifications and every waiter must look again).
    pub async fn changed(&mut self) {
        let _ = (&mut self.fired).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().expect("waiters lock poisoned");
        if let Some(list) = waiters.get_mut(&self.order_id) {
            list.retain(|(token, _)| *token != self.token);
            if list.is_empty() {
                waiters.remove(&self.order_id);
            }
        }
    }
}

impl StatusChanges {
    /// Register before reading the order, so a change committed in between is not missed.
    pub fn watch(&self, order_id: Uuid) -> Watch {
        let (tx, fired) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.waiters.lock().expect("waiters lock poisoned").entry(order_id).or_default().push((token, tx));
        Watch { order_id, token, fired, waiters: self.waiters.clone() }
    }

    fn wake(&self, order_id: Uuid) {
        let woken = self.waiters.lock().expect("waiters lock poisoned").remove(&order_id);
        for (_, tx) in woken.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// After a lost connection notifications may have been missed: everyone looks again.
    fn wake_all(&self) {
        let all = std::mem::take(&mut *self.waiters.lock().expect("waiters lock poisoned"));
        for (_, tx) in all.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Relays notifications until shutdown.
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
            // Waiters registered while nobody listened must look again.
            self.wake_all();
            loop {
                tokio::select! {
                    received = listener.try_recv() => match received {
                        Ok(Some(notification)) => {
                            if let Ok(id) = notification.payload().parse() {
                                self.wake(id);
                            }
                        }
                        // The connection was lost (sqlx reconnects on the next call).
                        Ok(None) => self.wake_all(),
                        Err(error) => {
                            tracing::warn!(%error, "order status listener failed; reconnecting");
                            self.wake_all();
                            break;
                        }
                    },
                    _ = shutdown.wait() => return,
                }
            }
        }
    }
}
