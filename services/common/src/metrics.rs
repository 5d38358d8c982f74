//! Prometheus metrics shared by the services; each service may register more.
//!
//! Names follow the Prometheus conventions: one `saga_` prefix (never
//! `saga_saga_`), `_total` on counters (prometheus-client appends it),
//! base units in the name (`_seconds`, `_bytes`). Gauges sampled from the
//! database or the broker are refreshed by [`every`] on a slow interval, so
//! a scrape never waits on a query. docs/operations.md lists every series.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::runtime::Shutdown;

type Labels = Vec<(&'static str, String)>;

/// A gauge of seconds (an age, a setting).
pub type Seconds = Gauge<f64, AtomicU64>;

/// How often the gauges read from the database or the broker are refreshed.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub messages_published: Counter,
    /// Outbox rows that could never be published, moved to `outbox_dead_letters`.
    pub outbox_set_aside: Counter,
    consumed: Family<Labels, Counter>,
    /// First deliveries a consumer handled together in one batch.
    consumer_batch: Histogram,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram>,
    /// Outbox rows not yet published, and the age of the oldest, by service.
    outbox_backlog: Family<Labels, Gauge>,
    outbox_oldest_age: Family<Labels, Seconds>,
    /// 1 while `/readyz` says ready, by service.
    ready: Family<Labels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("saga");
        let messages_published = Counter::default();
        registry.register(
            "messages_published",
            "Messages published from the outbox (confirmed)",
            messages_published.clone(),
        );
        let outbox_set_aside = Counter::default();
        registry.register(
            "outbox_set_aside",
            "Outbox rows that can never be published, moved to outbox_dead_letters",
            outbox_set_aside.clone(),
        );
        let consumed = Family::<Labels, Counter>::default();
        registry.register("messages_consumed", "Messages consumed, by queue and outcome", consumed.clone());
        let consumer_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "consumer_batch_size",
            "First deliveries handled together in one transaction",
            consumer_batch.clone(),
        );
        let http_requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests, by route and status", http_requests.clone());
        let http_duration = Family::<Labels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        let outbox_backlog = Family::<Labels, Gauge>::default();
        registry.register(
            "outbox_backlog",
            "Outbox rows not yet published (deleted once the broker confirmed them), by service",
            outbox_backlog.clone(),
        );
        let outbox_oldest_age = Family::<Labels, Seconds>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest outbox row not yet published (0 when none), by service",
            outbox_oldest_age.clone(),
        );
        let ready = Family::<Labels, Gauge>::default();
        registry.register("ready", "1 while the service is ready (/readyz), 0 otherwise, by service", ready.clone());
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            messages_published,
            outbox_set_aside,
            consumed,
            consumer_batch,
            http_requests,
            http_duration,
            outbox_backlog,
            outbox_oldest_age,
            ready,
        }
    }

    /// Adds a service-specific metric to the same registry.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().expect("metrics registry poisoned").register(name, help, metric);
    }

    pub fn messages_consumed(&self, queue: &str, outcome: &'static str) {
        self.consumed.get_or_create(&vec![("queue", queue.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    /// The outbox of `service` as last sampled: rows waiting, age of the oldest.
    pub fn outbox(&self, service: &str, rows: i64, oldest_age_seconds: f64) {
        let labels = vec![("service", service.to_owned())];
        self.outbox_backlog.get_or_create(&labels).set(rows);
        self.outbox_oldest_age.get_or_create(&labels).set(oldest_age_seconds);
    }

    /// Whether `service` is ready, as `/readyz` last said.
    pub fn ready(&self, service: &str, ready: bool) {
        self.ready.get_or_create(&vec![("service", service.to_owned())]).set(i64::from(ready));
    }

    pub fn consumer_batch(&self, size: usize) {
        self.consumer_batch.observe(size as f64);
    }

    /// `route` must be a route template (or `unmatched`), never a raw path;
    /// the method is reduced to the standard ones (anything else is
    /// `other`), so no request can add series of its own.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = vec![
            ("method", method_label(method).to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels[..2].to_vec()).observe(seconds);
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry.lock().expect("metrics registry poisoned")).expect("writing to a String");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metric label of an HTTP method: one of the standard methods, or `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method).unwrap_or("other")
}

/// Runs `sample` now and then every `period` until shutdown: how the
/// gauges read from the database or the broker are kept fresh. A failed
/// sample keeps the last values (the sampler logs why).
pub async fn every<F, Fut>(period: Duration, mut shutdown: Shutdown, mut sample: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        sample().await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// 1 ms to ~16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label("X1M"), "other");
        let metrics = Metrics::new();
        for i in 0..100 {
            metrics.http_request(&format!("X{i}M"), "unmatched", 405, 0.001);
        }
        let series = metrics.render().lines().filter(|l| l.contains("method=")).count();
        assert!(series < 30, "{series} series");
    }
}
