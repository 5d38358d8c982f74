//! The load itself: seeding `bench-` products and accounts, placing orders
//! at a fixed rate (open loop) or from N clients as fast as they complete
//! (closed loop), and following each order to its terminal state.
//!
//! Each order is followed with the order API's long poll (`?wait=`), one
//! request that the service answers when the saga finishes. Latency is taken
//! from the order's own `updated_at` at its terminal state minus the moment
//! the order was due to be sent, so the answer's trip back does not count,
//! and (open loop) a platform that slows the generator down cannot hide its
//! queueing delay. Both clocks must agree:
//! run the bench on the platform's host or an NTP-synced one; orders whose
//! server timestamps contradict the local clock are counted and measured on
//! the server's timestamps instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use saga_common::auth::mint;
use tokio::task::JoinSet;

use super::stats::{Recorder, record};
use crate::client::{ApiError, Client, OrderLine, ProductUpsert};
use crate::{GlobalArgs, Result};

const STOCK: i64 = 1_000_000_000;
const BALANCE_CENTS: i64 = 1_000_000_000_000;
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Within the HTTP client's 10 s timeout.
const LONG_POLL: Duration = Duration::from_secs(5);

/// Orders go out as one of `customers` (fresh accounts per run, so balances
/// never run out) buying 1-3 lines of the `skus` catalogue.
pub struct Workload {
    customers: Vec<Client>,
    skus: Vec<String>,
}

pub async fn seed(global: &GlobalArgs, skus: usize, customers: usize) -> Result<Workload> {
    let admin = mint(&global.auth_jwt_secret, "bench-admin", true, TOKEN_TTL);
    let inventory = Client::new(&global.inventory_url).with_token(admin.clone());
    let payment = Client::new(&global.payment_url).with_token(admin);
    let sku_names: Vec<String> = (0..skus).map(|i| format!("bench-sku-{i}")).collect();
    for (i, sku) in sku_names.iter().enumerate() {
        let product =
            ProductUpsert { name: format!("Bench item {i}"), unit_price_cents: 100 + i as i64, on_hand: STOCK };
        inventory.put_product(sku, &product).await?;
    }
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let order = Client::new(&global.order_url);
    let mut clients = Vec::with_capacity(customers);
    for i in 0..customers {
        let customer = format!("bench-{run}-{i}");
        payment.put_account(&customer, BALANCE_CENTS).await?;
        clients.push(order.with_token(mint(&global.auth_jwt_secret, &customer, false, TOKEN_TTL)));
    }
    Ok(Workload { customers: clients, skus: sku_names })
}

impl Workload {
    fn next_order(&self) -> (Client, Vec<OrderLine>) {
        let mut rng = rand::rng();
        let customer = self.customers.choose(&mut rng).expect("at least one customer").clone();
        let count = rng.random_range(1..=3.min(self.skus.len()));
        let lines = self
            .skus
            .choose_multiple(&mut rng, count)
            .map(|sku| OrderLine { sku: sku.clone(), quantity: rng.random_range(1..=3) })
            .collect();
        (customer, lines)
    }
}

/// How the load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Open loop: orders are due at a fixed rate whatever the platform does.
    Rate(f64),
    /// Closed loop: each client places its next order once the last one is terminal.
    Clients(usize),
}

/// The run's clock: warm-up, then the measurement window, then a drain
/// period for orders still in flight.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub measure_from: Instant,
    pub measure_until: Instant,
    pub give_up_at: Instant,
}

impl Schedule {
    fn measures(&self, at: Instant) -> bool {
        (self.measure_from..self.measure_until).contains(&at)
    }
}

/// Live counters for the progress line (all orders, warm-up included).
#[derive(Default)]
pub struct Progress {
    pub accepted: AtomicU64,
    pub finished: AtomicU64,
    pub errors: AtomicU64,
}

struct Run {
    workload: Workload,
    schedule: Schedule,
    recorder: Mutex<Recorder>,
    progress: Arc<Progress>,
}

pub async fn drive(workload: Workload, load: Load, schedule: Schedule, progress: Arc<Progress>) -> Recorder {
    let run = Arc::new(Run { workload, schedule, recorder: Mutex::new(Recorder::new()), progress });
    let mut tasks = JoinSet::new();
    match load {
        Load::Rate(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut due = schedule.start;
            while due < schedule.measure_until {
                tokio::time::sleep_until(due.into()).await;
                tasks.spawn(one_order(run.clone(), due));
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
                due += interval;
            }
        }
        Load::Clients(clients) => {
            for _ in 0..clients {
                let run = run.clone();
                tasks.spawn(async move {
                    while Instant::now() < run.schedule.measure_until {
                        one_order(run.clone(), Instant::now()).await;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let run = Arc::into_inner(run).expect("every order task has finished");
    run.recorder.into_inner().expect("no order task panicked")
}

/// Places one order due at `due`, then follows it to its terminal state.
async fn one_order(run: Arc<Run>, due: Instant) {
    let (client, lines) = run.workload.next_order();
    let measured = run.schedule.measures(due);
    // The wall-clock moment the order was due (it may be sent a little later).
    let due_wall = Utc::now() - due.elapsed();
    let sent = Instant::now();
    let placed = client.place_order(&lines).await;
    let accept_rtt = sent.elapsed();
    let answered_wall = Utc::now();
    let order = match placed {
        Ok(order) => order,
        Err(error) => {
            run.progress.errors.fetch_add(1, Ordering::Relaxed);
            if measured {
                *run.recorder.lock().unwrap().errors.entry(error_kind(&error)).or_default() += 1;
            }
            return;
        }
    };
    run.progress.accepted.fetch_add(1, Ordering::Relaxed);
    if measured {
        let mut recorder = run.recorder.lock().unwrap();
        recorder.accepted += 1;
        record(&mut recorder.accept, accept_rtt);
    }

    // Long poll: the order service answers the moment the saga finishes.
    loop {
        let left = run.schedule.give_up_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if measured {
                run.recorder.lock().unwrap().unfinished += 1;
            }
            return;
        }
        match client.wait_for_order(&order.id, left.min(LONG_POLL)).await {
            Ok(now) if now.is_terminal() => {
                let clocks = Clocks { due: due_wall, answered: answered_wall, accept_rtt };
                finish(&run, &now, clocks, measured, Instant::now());
                return;
            }
            Ok(_) => {}
            // A failed request (the platform restarting, say): ask again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// This process's wall-clock view of one order's placement.
struct Clocks {
    due: DateTime<Utc>,
    answered: DateTime<Utc>,
    accept_rtt: Duration,
}

fn finish(run: &Run, order: &crate::client::Order, clocks: Clocks, measured: bool, observed: Instant) {
    run.progress.finished.fetch_add(1, Ordering::Relaxed);
    let (Some(created), Some(terminal)) = (order.created_at, order.updated_at) else { return };
    let server_side = (terminal - created).to_std().unwrap_or_default();
    // The server stamped the order outside the time this process had the
    // request open: the clocks disagree, so use the server's own interval.
    let margin = chrono::Duration::milliseconds(5);
    let skewed = created + margin < clocks.due || created > clocks.answered + margin;
    let latency =
        if skewed { server_side + clocks.accept_rtt } else { (terminal - clocks.due).to_std().unwrap_or(server_side) };

    let mut recorder = run.recorder.lock().unwrap();
    if run.schedule.measures(observed) {
        *recorder.finished_in_window.entry(order.status.clone()).or_default() += 1;
    }
    if measured {
        record(&mut recorder.saga, latency);
        *recorder.outcomes.entry(order.status.clone()).or_default() += 1;
        if skewed {
            recorder.clock_skew += 1;
        }
    }
}

fn error_kind(error: &ApiError) -> String {
    match error {
        ApiError::Transport { .. } => "transport".to_owned(),
        ApiError::Status { status, .. } => format!("HTTP {}", status.as_u16()),
        ApiError::Decode { .. } => "undecodable answer".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_is_measured() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            measure_from: start + Duration::from_secs(1),
            measure_until: start + Duration::from_secs(2),
            give_up_at: start + Duration::from_secs(3),
        };
        assert!(!schedule.measures(start));
        assert!(schedule.measures(start + Duration::from_millis(1000)));
        assert!(schedule.measures(start + Duration::from_millis(1999)));
        assert!(!schedule.measures(start + Duration::from_secs(2)));
    }
}
