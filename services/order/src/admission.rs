//! Admission control at the HTTP edge.
//!
//! **Running sagas.** While more sagas are running than the platform is set to
//! carry, `POST /api/v1/orders` answers 503 `overloaded` instead of accepting.
//! Above its capacity a saga platform can only grow its backlog until sagas
//! hit their step timeout, and the compensations that follow add load;
//! refusing at the edge keeps the sagas it did accept on time. Before that
//! global limit, fairness: once the platform runs half its limit, a customer
//! running more than their share (the limit ÷ the customers with running
//! sagas) gets 429 `over-share`, so one heavy client cannot take the capacity
//! the others need.
//!
//! **Long-poll waiters.** `GET /api/v1/orders/{id}?wait=` holds a request
//! open; the waiters are bounded per customer (429 `too-many-waiters`) and
//! overall (503 `overloaded`), so long polls cannot pile up without end.
//!
//! Every refusal carries `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use saga_common::customer::CustomerId;
use saga_common::metrics::Metrics;
use saga_common::problem::Problem;
use saga_common::runtime::Shutdown;
use sqlx::PgPool;

/// How often the counts of running sagas are refreshed (shared by all
/// replicas through the database, so the limit holds for the platform).
const REFRESH: Duration = Duration::from_millis(250);

/// Running sagas, overall and per customer: the database's count at the
/// last refresh plus the sagas admitted here that it could not have seen.
#[derive(Debug, Default)]
struct Running {
    total: i64,
    by_customer: HashMap<String, i64>,
    /// Sagas admitted here: customer, and when their order committed (None
    /// while it is being stored).
    local: HashMap<u64, (String, Option<Instant>)>,
    next: u64,
    /// `total`, as `saga_admission_running_sagas`.
    gauge: Gauge,
}

impl Running {
    fn add(&mut self, customer: &str, n: i64) {
        self.total += n;
        *self.by_customer.entry(customer.to_owned()).or_default() += n;
        self.gauge.set(self.total);
    }

    /// The database counted `rows` in a query that started at `started`:
    /// orders committed before then are in it; those still being stored, or
    /// committed since, are added on top.
    fn refreshed(&mut self, rows: Vec<(String, i64)>, started: Instant) {
        self.local.retain(|_, (_, committed)| committed.is_none_or(|at| at >= started));
        self.total = 0;
        self.gauge.set(0);
        self.by_customer.clear();
        for (customer, n) in rows {
            self.add(&customer, n);
        }
        let unseen: Vec<String> = self.local.values().map(|(customer, _)| customer.clone()).collect();
        for customer in unseen {
            self.add(&customer, 1);
        }
    }
}

/// A saga admitted by `Admission::admit`: call `committed` with the moment
/// its order's transaction committed (taken right after the commit, not when
/// the request hears of it, or a refresh in between counts it twice);
/// dropped without that, the admission is taken back.
pub struct Admitted {
    running: Option<(Arc<Mutex<Running>>, u64)>,
}

impl Admitted {
    pub fn committed(mut self, at: Instant) {
        if let Some((running, id)) = self.running.take()
            && let Some(entry) = running.lock().expect("admission lock poisoned").local.get_mut(&id)
        {
            entry.1 = Some(at);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((running, id)) = self.running.take() {
            let mut running = running.lock().expect("admission lock poisoned");
            if let Some((customer, _)) = running.local.remove(&id) {
                running.add(&customer, -1);
            }
        }
    }
}

/// Why a request was refused at the edge (the `reason` label of
/// `saga_admission_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    over_share,
    overloaded,
    too_many_waiters,
    waiters_overloaded,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    reason: Refusal,
}

/// Refusals by reason, shared by `Admission` and `Waiters`.
#[derive(Clone, Default)]
pub struct Refusals(Family<RefusalLabels, Counter>);

impl Refusals {
    pub fn new(metrics: &Metrics) -> Self {
        let refusals = Refusals::default();
        metrics.register("admission_refusals", "Requests refused at the edge, by reason", refusals.0.clone());
        // Every reason's series exists from the start, at 0.
        for reason in [Refusal::over_share, Refusal::overloaded, Refusal::too_many_waiters, Refusal::waiters_overloaded]
        {
            let _ = refusals.0.get_or_create(&RefusalLabels { reason });
        }
        refusals
    }

    fn count(&self, reason: Refusal) {
        self.0.get_or_create(&RefusalLabels { reason }).inc();
    }
}

#[derive(Clone)]
pub struct Admission {
    /// 0: no limit.
    limit: i64,
    running: Arc<Mutex<Running>>,
    refusals: Refusals,
}

impl Admission {
    pub fn new(limit: u32, refusals: Refusals) -> Self {
        Admission { limit: limit.into(), running: Arc::default(), refusals }
    }

    /// Publishes the running count this replica admits against as
    /// `saga_admission_running_sagas` (`saga_running_sagas{step}` is the
    /// database's count, sampled every few seconds). It may count an order committed during a
    /// refresh twice, until the next refresh (`REFRESH`) corrects it.
    pub fn register(&self, metrics: &Metrics) {
        let gauge = self.running.lock().expect("admission lock poisoned").gauge.clone();
        metrics.register("admission_running_sagas", "Running sagas as this replica's admission counts them", gauge);
    }

    /// Admits one new saga of `customer`, or says why not.
    pub fn admit(&self, customer: &CustomerId) -> Result<Admitted, Problem> {
        if self.limit == 0 {
            return Ok(Admitted { running: None });
        }
        let mut running = self.running.lock().expect("admission lock poisoned");
        let mine = running.by_customer.get(customer.as_str()).copied().unwrap_or(0);
        let customers = running.by_customer.len() as i64 + i64::from(mine == 0);
        let share = (self.limit / customers.max(1)).max(1);
        // Alone, a customer's share is the whole limit: the global answer holds.
        if customers > 1 && running.total * 2 >= self.limit && mine >= share {
            self.refusals.count(Refusal::over_share);
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "over-share",
                format!(
                    "you have {mine} sagas running, your share is {share} while the platform is busy; try again shortly"
                ),
            ));
        }
        if running.total >= self.limit {
            self.refusals.count(Refusal::overloaded);
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{} sagas are running (limit {}); try again shortly", running.total, self.limit),
            ));
        }
        running.add(customer.as_str(), 1);
        let id = running.next;
        running.next += 1;
        running.local.insert(id, (customer.as_str().to_owned(), None));
        Ok(Admitted { running: Some((self.running.clone(), id)) })
    }

    /// Keeps the counts fresh until shutdown; a failed count keeps the last one.
    pub async fn refresh(self, pool: PgPool, mut shutdown: Shutdown) {
        if self.limit == 0 {
            return;
        }
        loop {
            let started = Instant::now();
            match sqlx::query_as::<_, (String, i64)>(
                "SELECT customer_id, count(*) FROM orders WHERE status = 'PENDING' GROUP BY customer_id",
            )
            .fetch_all(&pool)
            .await
            {
                Ok(rows) => self.running.lock().expect("admission lock poisoned").refreshed(rows, started),
                Err(error) => tracing::debug!(%error, "cannot count running sagas"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// Bounds on open long polls, overall and per customer.
#[derive(Clone)]
pub struct Waiters {
    max: u32,
    per_customer: u32,
    open: Arc<Mutex<(u32, HashMap<String, u32>)>>,
    gauge: Gauge,
    refusals: Refusals,
}

impl Waiters {
    pub fn new(max: u32, per_customer: u32, metrics: &Metrics, refusals: Refusals) -> Self {
        let gauge = Gauge::default();
        metrics.register("long_polls_open", "Long polls (GET /api/v1/orders/{id}?wait=) open now", gauge.clone());
        Waiters { max, per_customer, open: Arc::default(), gauge, refusals }
    }

    /// A slot for one long poll of `customer`, held until the guard drops.
    pub fn enter(&self, customer: &CustomerId) -> Result<WaiterGuard, Problem> {
        let mut open = self.open.lock().expect("waiters lock poisoned");
        let mine = open.1.get(customer.as_str()).copied().unwrap_or(0);
        if mine >= self.per_customer {
            self.refusals.count(Refusal::too_many_waiters);
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-waiters",
                format!("you already have {mine} long polls open (limit {})", self.per_customer),
            ));
        }
        if open.0 >= self.max {
            self.refusals.count(Refusal::waiters_overloaded);
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{} long polls are open (limit {}); try again shortly", open.0, self.max),
            ));
        }
        open.0 += 1;
        self.waiters_gauge_set(open.0);
        *open.1.entry(customer.as_str().to_owned()).or_default() += 1;
        Ok(WaiterGuard { waiters: self.clone(), customer: customer.as_str().to_owned() })
    }
}

impl Waiters {
    fn waiters_gauge_set(&self, open: u32) {
        self.gauge.set(open.into());
    }
}

/// Frees its long-poll slot when dropped (answered, timed out or cancelled).
pub struct WaiterGuard {
    waiters: Waiters,
    customer: String,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut open = self.waiters.open.lock().expect("waiters lock poisoned");
        open.0 -= 1;
        self.waiters.waiters_gauge_set(open.0);
        if let Some(mine) = open.1.get_mut(&self.customer) {
            *mine -= 1;
            if *mine == 0 {
                open.1.remove(&self.customer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(name: &str) -> CustomerId {
        CustomerId::parse(name).unwrap()
    }

    #[test]
    fn a_customer_over_their_share_is_refused_before_the_platform_is_full() {
        let admission = Admission::new(10, Refusals::default());
        let (heavy, light) = (customer("heavy"), customer("light"));
        let mut admitted: Vec<Admitted> = (0..8).map(|_| admission.admit(&heavy).unwrap()).collect();
        // Alone, heavy's share was the whole limit; with light running too,
        // the share is 5 each: heavy is over it, light is not.
        admitted.push(admission.admit(&light).unwrap());
        assert_eq!(admission.admit(&heavy).err().unwrap().status, 429);
        admitted.push(admission.admit(&light).unwrap());
        // Full: everyone waits.
        assert_eq!(admission.admit(&light).err().unwrap().status, 503);
        assert_eq!(admission.admit(&customer("third")).err().unwrap().status, 503);
        // An admission whose order was not stored is taken back.
        admitted.pop();
        assert!(admission.admit(&light).is_ok());
    }

    #[test]
    fn a_refresh_keeps_what_the_database_could_not_have_seen() {
        let admission = Admission::new(100, Refusals::default());
        let a = customer("a");
        let before = Instant::now();
        let stored = admission.admit(&a).unwrap();
        stored.committed(Instant::now());
        let storing = admission.admit(&a).unwrap();
        let started = Instant::now();
        let late = admission.admit(&a).unwrap();
        late.committed(Instant::now());
        // The query saw the first order only (committed before it started).
        admission.running.lock().unwrap().refreshed(vec![("a".into(), 1)], started);
        assert_eq!(admission.running.lock().unwrap().total, 3);
        drop(storing);
        assert_eq!(admission.running.lock().unwrap().total, 2);
        // A later refresh that sees the late one counts it once.
        admission.running.lock().unwrap().refreshed(vec![("a".into(), 2)], Instant::now());
        assert_eq!(admission.running.lock().unwrap().total, 2);
        assert!(before < started);
    }

    #[test]
    fn one_customer_alone_may_use_the_whole_limit() {
        let admission = Admission::new(4, Refusals::default());
        let alone = customer("alone");
        let _admitted: Vec<Admitted> = (0..4).map(|_| admission.admit(&alone).unwrap()).collect();
        assert_eq!(admission.admit(&alone).err().unwrap().status, 503);
        assert!(Admission::new(0, Refusals::default()).admit(&alone).is_ok());
    }

    #[test]
    fn waiters_are_bounded_per_customer_and_overall_and_freed_on_drop() {
        let waiters = Waiters::new(3, 2, &Metrics::new(), Refusals::default());
        let (a, b) = (customer("a"), customer("b"));
        let first = waiters.enter(&a).unwrap();
        let _second = waiters.enter(&a).unwrap();
        assert_eq!(waiters.enter(&a).err().unwrap().status, 429);
        let _third = waiters.enter(&b).unwrap();
        assert_eq!(waiters.enter(&b).err().unwrap().status, 503);
        drop(first);
        waiters.enter(&b).unwrap();
    }
}
