//! The order service's sampled gauges: running sagas by step and the age of
//! the oldest in each (from the database), the step timeout they are judged
//! against, and the depth of every dead-letter queue of the platform (from
//! the broker). Refreshed by `saga_common::metrics::every`, never on a scrape.
//!
//! The DLQ depth is reported here, by every order replica, rather than by
//! the operator: it then exists wherever the platform runs (`sagactl up`,
//! a plain Helm install without the operator's broker access, Kubernetes),
//! needs only the AMQP connection the service already holds (passive
//! declares, no management API), and the topology, a pure function of the
//! platform name, names every DLQ. Alerts take `max` over the replicas.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use saga_common::amqp::Broker;
use saga_common::metrics::{Metrics, Seconds};
use saga_common::runtime::Shutdown;
use saga_common::topology::Topology;
use sqlx::PgPool;

type Labels = Vec<(&'static str, String)>;

/// The steps a running saga can be in (`SagaState::name` of the states that
/// await a reply); each has a series, at 0 when no saga is there.
pub const RUNNING_STEPS: [&str; 4] = ["reserving", "charging", "confirming", "compensating"];

/// How often the DLQ depths are read: a round of passive declares.
pub const DLQ_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct SagaGauges {
    running: Family<Labels, Gauge>,
    oldest_age: Family<Labels, Seconds>,
}

impl SagaGauges {
    pub fn new(metrics: &Metrics, step_timeout: Duration) -> Self {
        let running = Family::<Labels, Gauge>::default();
        metrics.register(
            "running_sagas",
            "Running sagas, by the step they are in (from the database)",
            running.clone(),
        );
        let oldest_age = Family::<Labels, Seconds>::default();
        metrics.register(
            "running_oldest_age_seconds",
            "Age of the oldest running saga (since its order was placed), by step; 0 when none",
            oldest_age.clone(),
        );
        let timeout = Seconds::default();
        timeout.set(step_timeout.as_secs_f64());
        metrics.register("step_timeout_seconds", "SAGA_STEP_TIMEOUT: how long a step waits for its reply", timeout);
        let gauges = SagaGauges { running, oldest_age };
        gauges.set(&[]);
        gauges
    }

    /// Sets every step from `rows` (step, count, oldest age); steps not in it are 0.
    fn set(&self, rows: &[(String, i64, f64)]) {
        for step in RUNNING_STEPS {
            let (count, age) =
                rows.iter().find(|(s, ..)| s == step).map(|(_, count, age)| (*count, *age)).unwrap_or((0, 0.0));
            let labels = vec![("step", step.to_owned())];
            self.running.get_or_create(&labels).set(count);
            self.oldest_age.get_or_create(&labels).set(age);
        }
    }

    /// Refreshes from the database every `SAMPLE_INTERVAL` until shutdown.
    pub async fn run(self, pool: PgPool, shutdown: Shutdown) {
        saga_common::metrics::every(saga_common::metrics::SAMPLE_INTERVAL, shutdown, || async {
            match crate::store::running_by_step(&pool).await {
                Ok(rows) => self.set(&rows),
                Err(error) => tracing::debug!(%error, "cannot count running sagas by step"),
            }
        })
        .await;
    }
}

/// `saga_dlq_messages{queue}`: refreshed every `DLQ_INTERVAL` until shutdown.
pub async fn dead_letter_depths(metrics: Metrics, broker: Arc<Broker>, topology: Arc<Topology>, shutdown: Shutdown) {
    let depths = Family::<Labels, Gauge>::default();
    metrics.register(
        "dlq_messages",
        "Messages in each dead-letter queue of the platform (from the broker)",
        depths.clone(),
    );
    saga_common::metrics::every(DLQ_INTERVAL, shutdown, || async {
        let Some(connection) = broker.current() else { return };
        match tokio::time::timeout(Duration::from_secs(5), topology.dead_letter_depths(&connection)).await {
            Ok(Ok(read)) => {
                for (queue, depth) in read {
                    depths.get_or_create(&vec![("queue", queue)]).set(i64::from(depth));
                }
            }
            Ok(Err(error)) => tracing::debug!(%error, "cannot read the DLQ depths"),
            Err(_) => tracing::debug!("the broker did not answer the DLQ depth reads within 5 s"),
        }
    })
    .await;
}
