//! order-service: the public order API, the saga orchestrator and the
//! step-timeout worker, in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use saga_common::config::{ServiceArgs, parse, parse_duration};
use saga_common::runtime::supervise;
use saga_common::service::Service;
use saga_common::topology::Destination;
use sqlx::migrate::Migrator;

use order_service::admission::{Admission, Refusals, Waiters};
use order_service::api;
use order_service::finished::StatusChanges;
use order_service::gauges::{self, SagaGauges};
use order_service::orchestrator::Orchestrator;
use order_service::placement::Placements;
use order_service::timeouts::TimeoutWorker;
use order_service::{asyncapi, proxy, ui};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Parser)]
#[command(name = "order-service", version, about = "Order API, saga orchestrator and step-timeout worker")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// A saga step that gets no reply within this time is compensated (FAILED timeout).
    #[arg(long, env = "SAGA_STEP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    step_timeout: Duration,
    /// New orders are refused (503 `overloaded`) while this many sagas are
    /// running; size it to about sagas completed per second × step timeout
    /// / 2. 0 turns the limit off.
    #[arg(long, env = "MAX_RUNNING_SAGAS", default_value_t = 1000)]
    max_running_sagas: u32,
    /// Long polls (`GET /api/v1/orders/{id}?wait=`) open at once; one more is
    /// answered 503 `overloaded`.
    #[arg(long, env = "LONG_POLL_MAX_WAITERS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    long_poll_max_waiters: u32,
    /// Long polls one customer may hold open; one more is answered 429.
    #[arg(long, env = "LONG_POLL_MAX_WAITERS_PER_CUSTOMER", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    long_poll_max_waiters_per_customer: u32,
    /// New orders (without an Idempotency-Key) written in one transaction at
    /// most; under load they are written in batches of up to this many.
    #[arg(long, env = "PLACEMENT_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1000))]
    placement_batch: u32,
    /// Base URL of the inventory service: when set, this service forwards
    /// `/api/v1/products…` and `/api/v1/reservations…` to it, so the
    /// explorer (`/ui/`) reaches every API on one origin (local use; in a
    /// cluster the chart's Ingress routes them).
    #[arg(long, env = "EXPLORER_INVENTORY_URL")]
    explorer_inventory_url: Option<String>,
    /// Base URL of the payment service: when set, `/api/v1/accounts…` and
    /// `/api/v1/payments…` are forwarded to it (see EXPLORER_INVENTORY_URL).
    #[arg(long, env = "EXPLORER_PAYMENT_URL")]
    explorer_payment_url: Option<String>,
    /// A trace viewer's URL with `{trace_id}` in it (Jaeger:
    /// `http://127.0.0.1:16686/trace/{trace_id}`): the explorer links each order to its trace.
    #[arg(long, env = "EXPLORER_TRACE_URL")]
    explorer_trace_url: Option<String>,
}

#[tokio::main]
async fn main() {
    let args: Args = parse();
    let mut service = Service::start("order-service", args.service, &MIGRATOR).await;
    let orchestrator = Arc::new(Orchestrator::new(args.step_timeout, &service.metrics));
    service.consume(Destination::Order, orchestrator.clone());
    let worker = TimeoutWorker {
        pool: service.pool.clone(),
        broker: service.broker.clone(),
        step_timeout: args.step_timeout,
        orchestrator: orchestrator.clone(),
        signal: service.signal.clone(),
        // Check often enough that a timeout fires within ~10% of its nominal time.
        scan_interval: (args.step_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    };
    let shutdown = service.shutdown.clone();
    let worker = Arc::new(worker);
    let health = service.health.clone();
    service.spawn(supervise("timeout worker", health, shutdown.clone(), move || worker.clone().run(shutdown.clone())));
    let saga_gauges = SagaGauges::new(&service.metrics, args.step_timeout);
    service.spawn(saga_gauges.run(service.pool.clone(), service.shutdown.clone()));
    service.spawn(gauges::dead_letter_depths(
        service.metrics.clone(),
        service.broker.clone(),
        service.topology.clone(),
        service.shutdown.clone(),
    ));
    let refusals = Refusals::new(&service.metrics);
    let admission = Admission::new(args.max_running_sagas, refusals.clone());
    admission.register(&service.metrics);
    service.spawn(admission.clone().refresh(service.pool.clone(), service.shutdown.clone()));
    let status_changes = StatusChanges::default();
    service.spawn(status_changes.clone().listen(service.pool.clone(), service.shutdown.clone()));
    let (placements, writer) = Placements::new(
        service.pool.clone(),
        service.signal.clone(),
        args.step_timeout,
        args.placement_batch as usize,
        &service.metrics,
    );
    service.spawn(writer.run(service.shutdown.clone()));
    let state = api::AppState {
        pool: service.pool.clone(),
        placements,
        auth: service.auth.clone(),
        signal: service.signal.clone(),
        orchestrator,
        status_changes,
        admission,
        waiters: Waiters::new(
            args.long_poll_max_waiters,
            args.long_poll_max_waiters_per_customer,
            &service.metrics,
            refusals,
        ),
        shutdown: service.shutdown.clone(),
        broker: service.broker.clone(),
        platform: service.topology.spec.platform.clone(),
    };
    let forwarding = proxy::router(args.explorer_inventory_url.as_deref(), args.explorer_payment_url.as_deref())
        .unwrap_or_else(|e| saga_common::config::fail(&format!("EXPLORER_INVENTORY_URL / EXPLORER_PAYMENT_URL: {e}")));
    let (router, openapi) = api::router(state);
    let router = router
        .merge(ui::router(ui::UiConfig { trace_url: args.explorer_trace_url }))
        .merge(asyncapi::router())
        .merge(forwarding);
    service.run(args.http_addr, router, openapi).await;
}
