//! The start-up and shutdown sequence every service binary shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use utoipa::openapi::OpenApi;

use crate::amqp::Broker;
use crate::auth::Auth;
use crate::config::{ServiceArgs, fail};
use crate::consumer::{Consumer, ConsumerConfig, Handler};
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::outbox::{OutboxRelay, OutboxSignal};
use crate::runtime::{Shutdown, ShutdownTrigger, TaskHealth, shutdown_pair, supervise, termination_signal};
use crate::telemetry::Telemetry;
use crate::topology::{Destination, Topology};

/// A running service's shared resources; handed to its API and handlers.
pub struct Service {
    pub name: &'static str,
    pub args: ServiceArgs,
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub topology: Arc<Topology>,
    pub signal: OutboxSignal,
    pub metrics: Metrics,
    pub auth: Auth,
    pub shutdown: Shutdown,
    /// The supervised background tasks' state, reported by `/readyz`.
    pub health: TaskHealth,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    telemetry: Telemetry,
}

impl Service {
    /// Initialises logging, opens (and if needed creates) the database, runs
    /// the migrations and prepares the broker connection.
    pub async fn start(name: &'static str, args: ServiceArgs, migrator: &Migrator) -> Service {
        let telemetry = crate::telemetry::init(args.log_format, name, Some(&args.broker.topology.platform))
            .unwrap_or_else(|e| fail(&e.to_string()));
        let auth = Auth::from_args(&args.auth).unwrap_or_else(|e| fail(&e));
        if auth.disabled() {
            tracing::warn!("authentication is disabled (AUTH_DISABLED=true): every caller is an admin");
        }
        let broker = broker(&args.broker, name).unwrap_or_else(|e| fail(&e));
        let pool = crate::db::connect(args.database_url.expose(), args.db_pool_size).await;
        if let Err(error) = crate::db::migrate(&pool, migrator).await {
            tracing::error!(%error, "migrations failed");
            std::process::exit(1);
        }
        tracing::info!(service = name, "migrations applied");
        let topology = Arc::new(Topology::new(args.broker.topology.spec()));
        let broker = Arc::new(broker);
        let (trigger, shutdown) = shutdown_pair();
        Service {
            name,
            pool,
            broker,
            topology,
            signal: OutboxSignal::default(),
            metrics: Metrics::new(),
            auth,
            shutdown,
            health: TaskHealth::default(),
            trigger,
            tasks: Vec::new(),
            telemetry,
            args,
        }
    }

    /// Runs a background task until shutdown.
    pub fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(task));
    }

    /// Starts the configured number of consumers of the service's queue.
    pub fn consume<H: Handler>(&mut self, destination: Destination, handler: Arc<H>) {
        for _ in 0..self.args.consumers.max(1) {
            let consumer = Consumer {
                config: ConsumerConfig {
                    destination,
                    prefetch: self.args.prefetch,
                    max_batch: self.args.consumer_batch.max(1),
                    max_message_bytes: self.args.max_message_bytes as usize,
                },
                pool: self.pool.clone(),
                broker: self.broker.clone(),
                topology: self.topology.clone(),
                signal: self.signal.clone(),
                metrics: self.metrics.clone(),
                handler: handler.clone(),
            };
            let shutdown = self.shutdown.clone();
            let consumer = Arc::new(consumer);
            let health = self.health.clone();
            self.spawn(supervise("consumer", health, shutdown.clone(), move || consumer.clone().run(shutdown.clone())));
        }
    }

    /// Starts the outbox relay and readiness checks, serves HTTP until
    /// SIGTERM/Ctrl-C, then stops consumers and waits for in-flight work.
    pub async fn run(mut self, addr: SocketAddr, api: Router, openapi: OpenApi) {
        let relay = OutboxRelay {
            pool: self.pool.clone(),
            broker: self.broker.clone(),
            topology: self.topology.clone(),
            signal: self.signal.clone(),
            metrics: self.metrics.clone(),
            batch_size: self.args.outbox_batch.max(1),
            sweep_interval: Duration::from_secs(1),
        };
        let shutdown = self.shutdown.clone();
        let relay = Arc::new(relay);
        let health = self.health.clone();
        self.spawn(supervise("outbox relay", health, shutdown.clone(), move || relay.clone().run(shutdown.clone())));
        let pool = self.pool.clone();
        let mut shutdown = self.shutdown.clone();
        self.spawn(async move {
            // Inbox ids are kept a week: far longer than any redelivery or redrive.
            loop {
                if let Err(error) = crate::inbox::prune(&pool, Duration::from_secs(7 * 24 * 3600)).await {
                    tracing::warn!(%error, "inbox pruning failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = shutdown.wait() => return,
                }
            }
        });
        let readiness = Readiness::spawn(
            self.pool.clone(),
            self.broker.clone(),
            self.topology.clone(),
            self.health.clone(),
            self.shutdown.clone(),
        );
        self.spawn(sample_service_gauges(
            self.name,
            self.pool.clone(),
            readiness.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        let app = crate::http::finish(api, openapi, readiness, self.metrics.clone(), self.args.http_request_timeout);
        let trigger = self.trigger;
        tokio::spawn(async move {
            termination_signal().await;
            tracing::info!("shutting down");
            trigger.trigger();
        });
        if let Err(error) = crate::http::serve(
            addr,
            app,
            self.shutdown.clone(),
            crate::http::ServerLimits {
                header_read_timeout: self.args.http_header_read_timeout,
                max_connections: self.args.http_max_connections as usize,
            },
        )
        .await
        {
            fail(&format!("cannot serve HTTP on {addr}: {error}"));
        }
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(service = self.name, "stopped");
        self.telemetry.shutdown();
    }
}

/// Keeps `saga_ready` and the outbox gauges of this service fresh.
async fn sample_service_gauges(
    name: &'static str,
    pool: PgPool,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let service = service_label(name);
    crate::metrics::every(crate::metrics::SAMPLE_INTERVAL, shutdown, || async {
        metrics.ready(service, readiness.report().ready);
        match crate::outbox::backlog(&pool).await {
            Ok((rows, oldest)) => metrics.outbox(service, rows, oldest),
            Err(error) => tracing::debug!(%error, "cannot sample the outbox backlog"),
        }
    })
    .await;
}

/// The `service` label of a binary: `order-service` → `order`.
pub fn service_label(name: &str) -> &str {
    name.strip_suffix("-service").unwrap_or(name)
}

/// The broker client the settings describe; `Err` names the bad setting.
fn broker(args: &crate::config::BrokerArgs, name: &str) -> Result<Broker, String> {
    let broker = Broker::new(args.amqp_url.expose(), name);
    match &args.amqp_tls_ca_file {
        None => Ok(broker),
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read AMQP_TLS_CA_FILE {}: {e}", path.display()))?;
            broker.with_ca(pem)
        }
    }
}
