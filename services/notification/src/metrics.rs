//! The service's own series (docs/operations.md conventions: `saga_` prefix,
//! `_total` on counters): deliveries by channel and outcome, attempts by
//! channel and result, and the backlog of due deliveries.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use saga_common::metrics::Metrics;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct NotificationMetrics {
    deliveries: Family<Labels, Counter>,
    attempts: Family<Labels, Counter>,
    pub backlog: Gauge,
}

impl NotificationMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = NotificationMetrics {
            deliveries: Family::default(),
            attempts: Family::default(),
            backlog: Gauge::default(),
        };
        metrics.register(
            "notification_deliveries",
            "Notification deliveries finished, by channel (webhook, email) and outcome (delivered, failed)",
            this.deliveries.clone(),
        );
        metrics.register(
            "notification_attempts",
            "Notification delivery attempts, by channel and result (success, failure)",
            this.attempts.clone(),
        );
        metrics.register("notification_backlog", "Deliveries due now and not yet sent (sampled)", this.backlog.clone());
        // Every label value is known in advance: the series exist at 0.
        for channel in [crate::store::WEBHOOK, crate::store::EMAIL] {
            for outcome in ["delivered", "failed"] {
                let _ = this
                    .deliveries
                    .get_or_create(&vec![("channel", channel.to_owned()), ("outcome", outcome.to_owned())]);
            }
            for succeeded in [true, false] {
                let _ = this.attempts.get_or_create(&labels(channel, succeeded));
            }
        }
        this
    }

    pub fn delivery(&self, channel: &str, outcome: &'static str) {
        self.deliveries.get_or_create(&vec![("channel", channel.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    pub fn attempt(&self, channel: &str, succeeded: bool) {
        self.attempts.get_or_create(&labels(channel, succeeded)).inc();
    }
}

fn labels(channel: &str, succeeded: bool) -> Labels {
    let result = if succeeded { "success" } else { "failure" };
    vec![("channel", channel.to_owned()), ("result", result.to_owned())]
}
