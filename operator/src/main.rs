//! `saga-operator`: `run` (the default) reconciles `SagaPlatform` resources;
//! `crd` prints the CustomResourceDefinition YAML.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::{Args, Parser, Subcommand};
use futures_util::FutureExt;
use kube::{Client, CustomResourceExt};
use saga_common::config::{LogFormat, parse, parse_duration};
use saga_operator::broker::Brokers;
use saga_operator::crd::SagaPlatform;
use saga_operator::metrics::Metrics;
use saga_operator::reconcile::{Context, Settings};
use saga_operator::{controller, lease};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "saga-operator",
    version,
    about = "Reconciles SagaPlatform resources into broker topology and workloads",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run(Box<RunArgs>),
    /// Print the SagaPlatform CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Listen address of /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Periodic reconcile that repairs drift (deleted queues, hand-edited Deployments).
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    resync: Duration,
    /// Queue-depth polling period of platforms that autoscale.
    #[arg(long, env = "SCALE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    scale_interval: Duration,
    /// How long a deletion waits for the queues to drain and deletionPolicy Delete keeps trying
    /// to remove the topology before giving up (from the deletion request).
    #[arg(long, env = "CLEANUP_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    cleanup_timeout: Duration,
    /// Bound on every broker connection, declaration and depth read.
    #[arg(long, env = "BROKER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    broker_timeout: Duration,
    /// Re-reconcile period while the broker topology is not confirmed (broker down or refusing),
    /// so Ready follows the broker's return without waiting for the resync.
    #[arg(long, env = "BROKER_RETRY_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    broker_retry: Duration,
    /// Re-reconcile period while a service's rollout is not complete, so Ready follows the
    /// Deployment even when a watch event about it comes late.
    #[arg(long, env = "ROLLOUT_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    rollout_poll: Duration,
    /// Watch (metadata only) the Secrets the resources refer to, so a rotation reconciles at once;
    /// needs list and watch on Secrets. false, or refused by the API: re-read every resync.
    #[arg(long, env = "WATCH_SECRETS", default_value_t = true, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    watch_secrets: bool,
    /// Act only while holding a coordination.k8s.io Lease, so several replicas never both act.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "saga-operator")]
    pod_name: String,
}

#[derive(Clone)]
struct AppState {
    synced: Arc<AtomicBool>,
    metrics: Metrics,
}

#[tokio::main]
async fn main() {
    let cli: Cli = parse();
    match cli.command {
        Some(Command::Crd) => print!("{}", serde_yaml::to_string(&SagaPlatform::crd()).expect("the CRD serializes")),
        Some(Command::Run(args)) => run(*args).await,
        None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) {
    // Logs (with trace ids); spans too if an OTLP endpoint is set for the operator itself.
    let _telemetry = saga_common::telemetry::init(args.log_format, "saga-operator", None)
        .unwrap_or_else(|error| saga_common::config::fail(&error.to_string()));
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(error) => saga_common::config::fail(&format!("no Kubernetes configuration: {error}")),
    };
    let metrics = Metrics::new();
    let synced = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = watch::channel(false);
    let shutdown = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    let listener = match tokio::net::TcpListener::bind(args.http_addr).await {
        Ok(listener) => listener,
        Err(error) => saga_common::config::fail(&format!("cannot listen on {}: {error}", args.http_addr)),
    };
    let state = AppState { synced: synced.clone(), metrics: metrics.clone() };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(state): State<AppState>| async move { state.metrics.render() }))
        .with_state(state);
    let http = tokio::spawn(axum::serve(listener, router).with_graceful_shutdown(shutdown()).into_future());

    let settings = Settings {
        resync: args.resync,
        scale_interval: args.scale_interval,
        cleanup_timeout: args.cleanup_timeout,
        broker_retry: args.broker_retry,
        rollout_poll: args.rollout_poll,
        ..Settings::default()
    };
    let context = Arc::new(Context::new(
        client.clone(),
        metrics,
        Brokers::new(args.broker_timeout),
        settings,
        args.pod_name.clone(),
    ));

    let stop = Arc::new(stop);
    let on_signal = stop.clone();
    tokio::spawn(async move {
        saga_common::runtime::termination_signal().await;
        tracing::info!("shutting down");
        let _ = on_signal.send(true);
    });

    if args.leader_election {
        let lease = lease::Lease::new(client.clone(), &args.lease_namespace, "saga-operator", &args.pod_name);
        // Only the holder reconciles.
        if lease.acquire(shutdown()).await {
            let lost = lease.hold(shutdown()).shared();
            let (lost_too, requested) = (lost.clone(), stopped.clone());
            let stepped_down = async move {
                lost_too.await;
                if *requested.borrow() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = controller::run(client, args.namespace.as_deref(), args.watch_secrets, context, synced, lost) => {}
                // Lost or stepped down: stop at once, without waiting for reconciles in flight.
                // One stuck on an API server that no longer answers could otherwise write
                // after another replica took over (SIGTERM still lets them finish).
                _ = stepped_down => {}
            }
        }
    } else {
        controller::run(client, args.namespace.as_deref(), args.watch_secrets, context, synced, shutdown()).await;
    }
    let requested = *stopped.borrow();
    let _ = stop.send(true);
    let _ = http.await;
    if !requested {
        // The lease was lost: exit so Kubernetes restarts this replica as a follower.
        saga_common::config::fail("lost the leader lease");
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.synced.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet")
    }
}
