//! `notification-service`: tells customers what became of their orders.
//! Consumes the order events (`{platform}.events` → its queue), records one
//! delivery per interested endpoint in the consumer's transaction, and a
//! dispatcher sends them: signed webhooks (Standard Webhooks) and e-mail.
//! docs/notifications.md describes the API, the signatures and the guarantees.

mod api;
mod dispatch;
mod email;
mod handler;
mod metrics;
mod ssrf;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use saga_common::config::{ServiceArgs, fail, parse_duration};
use saga_common::runtime::supervise;
use saga_common::service::Service;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Webhooks and e-mail telling customers what became of their orders.
#[derive(Debug, Parser)]
#[command(name = "notification-service", version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// HTTP listen address.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8083")]
    http_addr: SocketAddr,
    #[command(flatten)]
    notify: NotifyArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct NotifyArgs {
    /// Ceiling of the wait before the first retry; each later ceiling
    /// doubles (full jitter: the wait is uniform between 0 and the ceiling).
    #[arg(long, env = "DELIVERY_RETRY_INITIAL_DELAY", default_value = "30s", value_parser = parse_duration)]
    delivery_retry_initial_delay: Duration,
    /// The largest ceiling of a wait between two attempts.
    #[arg(long, env = "DELIVERY_RETRY_MAX_DELAY", default_value = "6h", value_parser = parse_duration)]
    delivery_retry_max_delay: Duration,
    /// Attempts of a delivery (the first included) before it fails for good.
    #[arg(long, env = "DELIVERY_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=50))]
    delivery_max_attempts: u32,
    /// Each webhook request (connect, send, response) ends after this.
    #[arg(long, env = "DELIVERY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    delivery_timeout: Duration,
    /// How long a claimed delivery is left to its dispatcher before
    /// another may send it again (after a crash mid-send). At least twice
    /// DELIVERY_TIMEOUT, so that a slow but live send is not duplicated.
    #[arg(long, env = "DELIVERY_LEASE", default_value = "2m", value_parser = parse_duration)]
    delivery_lease: Duration,
    /// Deliveries sent at the same time by this replica.
    #[arg(long, env = "DELIVERY_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    delivery_concurrency: u32,
    /// How often an idle dispatcher looks for due deliveries.
    #[arg(long, env = "DELIVERY_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    delivery_poll_interval: Duration,
    /// Response bytes read at most (the first 1024 are kept in the attempt log).
    #[arg(long, env = "DELIVERY_MAX_RESPONSE_BYTES", default_value_t = 64 * 1024)]
    delivery_max_response_bytes: usize,
    /// An endpoint is disabled after this many failed attempts in a row...
    #[arg(long, env = "ENDPOINT_DISABLE_AFTER_FAILURES", default_value_t = 50, value_parser = clap::value_parser!(i32).range(1..))]
    endpoint_disable_after_failures: i32,
    /// ...or when it has been failing (no success) for this long.
    #[arg(long, env = "ENDPOINT_DISABLE_AFTER", default_value = "5days", value_parser = parse_duration)]
    endpoint_disable_after: Duration,
    /// Endpoints one customer may register.
    #[arg(long, env = "MAX_ENDPOINTS_PER_CUSTOMER", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
    max_endpoints_per_customer: i64,
    /// After a rotation, the previous secret keeps signing for this long.
    #[arg(long, env = "WEBHOOK_SECRET_OVERLAP", default_value = "24h", value_parser = parse_duration)]
    webhook_secret_overlap: Duration,
    /// Development only: CIDRs webhooks may reach even in a blocked range
    /// (loopback, private, ...), comma-separated, e.g. `127.0.0.1/32`.
    #[arg(long, env = "WEBHOOK_ALLOW_CIDRS", default_value = "", value_parser = ssrf::AllowList::parse)]
    webhook_allow_cidrs: ssrf::AllowList,
    /// SMTP server for e-mail endpoints: `smtp://host:port` (plain),
    /// `smtp://host:port?tls=required` (STARTTLS), `smtps://host:port`.
    /// Without it e-mail endpoints cannot be registered.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The From of e-mails.
    #[arg(long, env = "SMTP_FROM", default_value = "Saga Platform <notifications@saga.invalid>")]
    smtp_from: String,
}

#[tokio::main]
async fn main() {
    let args = saga_common::config::parse::<Args>();
    let notify = args.notify;
    let mailer = notify
        .smtp_url
        .as_deref()
        .map(|url| email::Mailer::new(url, &notify.smtp_from, notify.delivery_timeout))
        .transpose()
        .unwrap_or_else(|e| fail(&e));
    if notify.delivery_lease < notify.delivery_timeout * 2 {
        fail("DELIVERY_LEASE must be at least twice DELIVERY_TIMEOUT");
    }
    let mut service = Service::start("notification-service", args.service, &MIGRATOR).await;
    let metrics = metrics::NotificationMetrics::register(&service.metrics);
    handler::consume(&mut service);
    let retry = dispatch::RetryPolicy {
        initial_delay: notify.delivery_retry_initial_delay,
        max_delay: notify.delivery_retry_max_delay,
        max_attempts: notify.delivery_max_attempts,
    };
    tracing::info!(horizon_secs = retry.horizon().as_secs(), "delivery retry horizon");
    let dispatcher = Arc::new(dispatch::Dispatcher {
        pool: service.pool.clone(),
        retry,
        disable: store::DisablePolicy {
            after_failures: notify.endpoint_disable_after_failures,
            after: notify.endpoint_disable_after,
        },
        concurrency: notify.delivery_concurrency as usize,
        poll_interval: notify.delivery_poll_interval,
        request_timeout: notify.delivery_timeout,
        max_response_bytes: notify.delivery_max_response_bytes,
        lease: notify.delivery_lease,
        allow: notify.webhook_allow_cidrs.clone(),
        mailer: mailer.clone(),
        metrics: metrics.clone(),
    });
    let (shutdown, health) = (service.shutdown.clone(), service.health.clone());
    service.spawn(supervise("dispatcher", health, shutdown.clone(), move || dispatcher.clone().run(shutdown.clone())));
    let pool = service.pool.clone();
    let shutdown = service.shutdown.clone();
    service.spawn(saga_common::metrics::every(saga_common::metrics::SAMPLE_INTERVAL, shutdown, move || {
        let (pool, metrics) = (pool.clone(), metrics.clone());
        async move {
            match store::backlog(&pool).await {
                Ok(rows) => {
                    metrics.backlog.set(rows);
                }
                Err(error) => tracing::debug!(%error, "cannot sample the delivery backlog"),
            }
        }
    }));
    let state = api::ApiState(Arc::new(api::NotificationApi {
        pool: service.pool.clone(),
        auth: service.auth.clone(),
        allow: notify.webhook_allow_cidrs,
        email_enabled: mailer.is_some(),
        max_endpoints_per_customer: notify.max_endpoints_per_customer,
        rotation_overlap: notify.webhook_secret_overlap,
    }));
    let (router, openapi) = api::router(state);
    service.run(args.http_addr, router, openapi).await;
}
