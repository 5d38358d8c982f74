//! Prometheus metrics shared by the services; each service may register more.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

type Labels = Vec<(&'static str, String)>;

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
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            messages_published,
            outbox_set_aside,
            consumed,
            consumer_batch,
            http_requests,
            http_duration,
        }
    }

    /// Adds a service-specific metric to the same registry.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().expect("metrics registry poisoned").register(name, help, metric);
    }

    pub fn messages_consumed(&self, queue: &str, outcome: &'static str) {
        self.consumed.get_or_create(&vec![("queue", queue.to_owned()), ("outcome", outcome.to_owned())]).inc();
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
