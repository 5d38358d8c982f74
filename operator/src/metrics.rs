//! Prometheus metrics of the operator (`/metrics`), with prometheus-client as
//! in the services.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use saga_common::component::Component;
use saga_common::metrics::latency_histogram;

use crate::health::Snapshot;

type Labels = Vec<(&'static str, String)>;

/// The `reason` label values of `saga_operator_reconcile_failures_total`
/// (`reconcile::Error::reason`, and `invalid_object` for a resource that does
/// not deserialize; `timeout` for one abandoned at `RECONCILE_TIMEOUT`).
pub const FAILURE_REASONS: [&str; 7] =
    ["conflict", "kubernetes_api", "secret", "cleanup", "finalizer", "invalid_object", "timeout"];

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    queue_depth: Family<Labels, Gauge>,
    desired_replicas: Family<Labels, Gauge>,
    ready_replicas: Family<Labels, Gauge>,
    scaling_decisions: Family<Labels, Counter>,
    in_flight: Gauge,
    oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("saga_operator");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register("reconciles", "Reconciles run, by resource", reconciles.clone());
        let failures = Family::<Labels, Counter>::default();
        registry.register("reconcile_failures", "Failed reconciles, by reason", failures.clone());
        // Every reason's series exists from the start (at 0), so an increase
        // over it is defined before the first failure.
        for reason in FAILURE_REASONS {
            let _ = failures.get_or_create(&vec![("reason", reason.to_owned())]);
        }
        let duration = latency_histogram();
        registry.register("reconcile_duration_seconds", "Duration of one reconcile", duration.clone());
        let queue_depth = Family::<Labels, Gauge>::default();
        registry.register("queue_depth", "Messages waiting in a service queue", queue_depth.clone());
        let desired_replicas = Family::<Labels, Gauge>::default();
        registry.register("desired_replicas", "Replicas the operator asks for", desired_replicas.clone());
        let ready_replicas = Family::<Labels, Gauge>::default();
        registry.register("ready_replicas", "Replicas ready, as last observed", ready_replicas.clone());
        let scaling_decisions = Family::<Labels, Counter>::default();
        registry.register("scaling_decisions", "Replica changes by the autoscaler", scaling_decisions.clone());
        let in_flight = Gauge::default();
        registry.register("reconciles_in_flight", "Reconciles running now", in_flight.clone());
        let oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "oldest_reconcile_age_seconds",
            "How long the oldest reconcile in flight has run (0 when none runs)",
            oldest_age.clone(),
        );
        let last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last reconcile that succeeded (0 before the first)",
            last_success.clone(),
        );
        Metrics {
            in_flight,
            oldest_age,
            last_success,
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            queue_depth,
            desired_replicas,
            ready_replicas,
            scaling_decisions,
        }
    }

    pub fn reconciled(&self, resource: &str, seconds: f64) {
        self.reconciles.get_or_create(&vec![("resource", resource.to_owned())]).inc();
        self.duration.observe(seconds);
    }

    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    pub fn service(&self, platform: &str, service: &str, depth: Option<u64>, desired: i32, ready: i32) {
        let labels = vec![("platform", platform.to_owned()), ("service", service.to_owned())];
        if let Some(depth) = depth {
            self.queue_depth.get_or_create(&labels).set(depth as i64);
        }
        self.desired_replicas.get_or_create(&labels).set(i64::from(desired));
        self.ready_replicas.get_or_create(&labels).set(i64::from(ready));
        for direction in ["up", "down"] {
            let mut labels = labels.clone();
            labels.push(("direction", direction.to_owned()));
            let _ = self.scaling_decisions.get_or_create(&labels);
        }
    }

    pub fn scaled(&self, platform: &str, service: &str, direction: &'static str) {
        let labels = vec![
            ("platform", platform.to_owned()),
            ("service", service.to_owned()),
            ("direction", direction.to_owned()),
        ];
        self.scaling_decisions.get_or_create(&labels).inc();
    }

    /// Removes every series of a deleted resource and of its platform.
    pub fn forget(&self, resource: &str, platform: Option<&str>) {
        self.reconciles.remove(&vec![("resource", resource.to_owned())]);
        let Some(platform) = platform else { return };
        for service in Component::ALL.map(Component::name) {
            let labels = vec![("platform", platform.to_owned()), ("service", service.to_owned())];
            self.queue_depth.remove(&labels);
            self.desired_replicas.remove(&labels);
            self.ready_replicas.remove(&labels);
            for direction in ["up", "down"] {
                let mut labels = labels.clone();
                labels.push(("direction", direction.to_owned()));
                self.scaling_decisions.remove(&labels);
            }
        }
    }

    /// Failed reconciles so far with this reason (for tests and logs).
    pub fn failures(&self, reason: &'static str) -> u64 {
        self.failures.get_or_create(&vec![("reason", reason.to_owned())]).get()
    }

    /// Sets the in-flight gauges from `snapshot` (taken at scrape time, so
    /// they move even when the controller loop does not).
    pub fn health(&self, snapshot: &Snapshot) {
        self.in_flight.set(snapshot.in_flight as i64);
        self.oldest_age.set(snapshot.oldest.as_ref().map_or(0.0, |oldest| oldest.age.as_secs_f64()));
        let since_epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_success.set(snapshot.last_success.map_or(0.0, |t| since_epoch(t).as_secs_f64()));
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
