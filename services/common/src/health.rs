//! Readiness: the database answers, the broker is connected, the broker
//! topology is exactly the one this service was configured for, and no
//! supervised task is down after a panic. A background task re-checks and
//! logs every change, so `/readyz` is cheap: the database and the
//! connection every second (an outage shows within a second), the
//! topology, which takes a round of passive declares, every few seconds.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::amqp::Broker;
use crate::runtime::{Shutdown, TaskHealth};
use crate::topology::Topology;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub database: String,
    pub broker: String,
    pub topology: String,
    /// The supervised background tasks (outbox relay, consumers, workers).
    pub tasks: String,
}

impl ReadinessReport {
    fn starting() -> Self {
        let pending = "not checked yet".to_owned();
        ReadinessReport {
            ready: false,
            database: pending.clone(),
            broker: pending.clone(),
            topology: pending.clone(),
            tasks: pending,
        }
    }
}

#[derive(Clone)]
pub struct Readiness(Arc<RwLock<ReadinessReport>>);

impl Readiness {
    pub fn report(&self) -> ReadinessReport {
        self.0.read().expect("readiness lock poisoned").clone()
    }

    /// Starts the checker; migrations have run before this is called.
    pub fn spawn(
        pool: PgPool,
        broker: Arc<Broker>,
        topology: Arc<Topology>,
        tasks: TaskHealth,
        mut shutdown: Shutdown,
    ) -> Self {
        let readiness = Readiness(Arc::new(RwLock::new(ReadinessReport::starting())));
        let shared = readiness.clone();
        tokio::spawn(async move {
            let mut topology_checked: Option<(Instant, String)> = None;
            let mut last_database_error: Option<String> = None;
            loop {
                let report =
                    check(&pool, &broker, &topology, &tasks, &mut topology_checked, &mut last_database_error).await;
                let changed = *shared.0.read().expect("readiness lock poisoned") != report;
                if changed {
                    if report.ready {
                        tracing::info!(?report, "ready");
                    } else {
                        tracing::warn!(?report, "not ready");
                    }
                    *shared.0.write().expect("readiness lock poisoned") = report.clone();
                }
                let pause = if report.ready { Duration::from_secs(1) } else { Duration::from_millis(500) };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait() => return,
                }
            }
        });
        readiness
    }
}

const OK: &str = "ok";
/// How long a good topology verdict is trusted.
const TOPOLOGY_RECHECK: Duration = Duration::from_secs(5);

async fn check(
    pool: &PgPool,
    broker: &Broker,
    topology: &Topology,
    tasks: &TaskHealth,
    topology_checked: &mut Option<(Instant, String)>,
    last_database_error: &mut Option<String>,
) -> ReadinessReport {
    let timeout = Duration::from_secs(3);
    // Short: a healthy database answers SELECT 1 in well under a second.
    let database = match tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => {
            *last_database_error = None;
            OK.to_owned()
        }
        Ok(Err(error)) => {
            // The driver's text may name hosts and users: the log gets it,
            // `/readyz` (served to anyone who can reach the port) does not.
            let detail = error.to_string();
            if last_database_error.as_deref() != Some(detail.as_str()) {
                tracing::warn!(error = detail, "readiness: the database check failed");
                *last_database_error = Some(detail);
            }
            "down: the check query failed (see the service log)".to_owned()
        }
        Err(_) => "down: no answer within 1s".to_owned(),
    };
    let (broker_state, topology_state) = if let Some(connection) = broker.current() {
        let topology_state = match topology_checked {
            Some((at, state)) if state == OK && at.elapsed() < TOPOLOGY_RECHECK => state.clone(),
            _ => {
                let state = match tokio::time::timeout(timeout, topology.verify(&connection)).await {
                    Ok(Ok(())) => OK.to_owned(),
                    Ok(Err(error)) => {
                        format!("invalid: {error} (run `sagactl topology apply` or let the operator declare it)")
                    }
                    Err(_) => "unknown: broker did not answer within 3s".to_owned(),
                };
                *topology_checked = Some((Instant::now(), state.clone()));
                state
            }
        };
        (OK.to_owned(), topology_state)
    } else {
        *topology_checked = None;
        ("down: not connected".to_owned(), "unknown: broker down".to_owned())
    };
    let (tasks_up, tasks) = tasks.summary();
    ReadinessReport {
        ready: database == OK && broker_state == OK && topology_state == OK && tasks_up,
        database,
        broker: broker_state,
        topology: topology_state,
        tasks,
    }
}
