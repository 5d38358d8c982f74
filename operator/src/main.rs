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
use kube::CustomResourceExt;
use saga_common::config::{LogFormat, parse, parse_duration};
use saga_operator::api_client::{self, ApiTimeouts};
use saga_operator::broker::Brokers;
use saga_operator::crd::SagaPlatform;
use saga_operator::health::Health;
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
    /// A reconcile still running after this is abandoned (counted with reason="timeout", logged
    /// at warn with what it waited on) and retried with the error backoff.
    #[arg(long, env = "RECONCILE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    reconcile_timeout: Duration,
    /// Bound on connecting to the Kubernetes API (TCP and TLS).
    #[arg(long, env = "API_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    api_connect_timeout: Duration,
    /// Bound on the wait for the Kubernetes API's answer to a request (not on watches).
    #[arg(long, env = "API_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    api_read_timeout: Duration,
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
    health: Arc<Health>,
}

fn main() {
    let cli: Cli = parse();
    let args = match cli.command {
        Some(Command::Crd) => {
            print!("{}", serde_yaml::to_string(&SagaPlatform::crd()).expect("the CRD serializes"));
            return;
        }
        Some(Command::Run(args)) => *args,
        None => cli.run,
    };
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    // SAFETY: no other thread exists yet (the runtime is built below), so
    // nothing reads the environment concurrently.
    unsafe { std::env::set_var("RUST_LOG", filter) };
    let runtime = tokio::runtime::Runtime::new()
        .unwrap_or_else(|error| saga_common::config::fail(&format!("cannot start the async runtime: {error}")));
    runtime.block_on(run(args));
}

/// The log filter: `RUST_LOG` (default `info`), with lapin's channel-close
/// lines off unless `RUST_LOG` names lapin. lapin logs every channel the broker
/// closes with an error code at ERROR ("Channel closed"), expected answers
/// included: a passive declare that finds no queue (404), a claim refused
/// (406). The operator gets each of those as a result, and reports the ones
/// that matter itself (conditions, Events, warn lines).
fn log_filter(rust_log: Option<&str>) -> String {
    let base = rust_log.filter(|filter| !filter.trim().is_empty()).unwrap_or("info");
    if base.contains("lapin") { base.to_owned() } else { format!("{base},lapin::channel=off") }
}

async fn run(args: RunArgs) {
    // Logs (with trace ids); spans too if an OTLP endpoint is set for the operator itself.
    let _telemetry = saga_common::telemetry::init(args.log_format, "saga-operator", None)
        .unwrap_or_else(|error| saga_common::config::fail(&error.to_string()));
    let timeouts = ApiTimeouts { connect: args.api_connect_timeout, read: args.api_read_timeout };
    let (client, watch_client) = match api_client::clients(timeouts).await {
        Ok(clients) => clients,
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
    let settings = Settings {
        resync: args.resync,
        scale_interval: args.scale_interval,
        cleanup_timeout: args.cleanup_timeout,
        broker_retry: args.broker_retry,
        rollout_poll: args.rollout_poll,
        reconcile_timeout: args.reconcile_timeout,
        ..Settings::default()
    };
    let context = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Brokers::new(args.broker_timeout),
        settings,
        args.pod_name.clone(),
    ));
    let health = context.health.clone();

    let state = AppState { synced: synced.clone(), metrics, health: health.clone() };
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let http = tokio::spawn(axum::serve(listener, router).with_graceful_shutdown(shutdown()).into_future());

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
            let lost = lease.hold_while(shutdown(), move || health.check()).shared();
            let (lost_too, requested) = (lost.clone(), stopped.clone());
            let stepped_down = async move {
                lost_too.await;
                if *requested.borrow() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = controller::run(watch_client, args.namespace.as_deref(), args.watch_secrets, context, synced, lost) => {}
                // Lost or stepped down: stop at once, without waiting for reconciles in flight.
                // One stuck on an API server that no longer answers could otherwise write
                // after another replica took over (SIGTERM still lets them finish).
                _ = stepped_down => {}
            }
        }
    } else {
        controller::run(watch_client, args.namespace.as_deref(), args.watch_secrets, context, synced, shutdown()).await;
    }
    let requested = *stopped.borrow();
    let _ = stop.send(true);
    let _ = http.await;
    if !requested {
        // The lease was lost: exit so Kubernetes restarts this replica as a follower.
        saga_common::config::fail("lost the leader lease");
    }
}

/// 503 naming the stall when a reconcile has run past its deadline plus grace
/// or the controller loop's heartbeat is stale (`health::verdict`), so the
/// kubelet restarts an operator that went silent.
async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.health.check() {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(stall) => {
            tracing::warn!(%stall, "liveness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, stall)
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> String {
    state.metrics.health(&state.health.snapshot());
    state.metrics.render()
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.synced.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet")
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn expected_broker_answers_are_not_logged_as_errors() {
        assert_eq!(log_filter(None), "info,lapin::channel=off");
        assert_eq!(log_filter(Some("")), "info,lapin::channel=off");
        assert_eq!(log_filter(Some("debug,kube=info")), "debug,kube=info,lapin::channel=off");
        assert_eq!(log_filter(Some("info,lapin=debug")), "info,lapin=debug", "asked for: kept");
    }
}
