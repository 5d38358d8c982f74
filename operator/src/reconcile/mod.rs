//! One reconcile of a `SagaPlatform`, a pipeline with a file per step:
//! validate (`validate.rs`) → observe (`observe.rs`: Secrets, the broker side)
//! → plan (`plan.rs`: replica counts, pure) → build (`build.rs`, pure) → apply
//! (`apply.rs`) → status (`status.rs`, pure, the clock passed in); deletion in
//! `cleanup.rs`.
//!
//! Deletion goes through a finalizer: the services drain their queues first
//! (the order API closed, then every Deployment at zero), then
//! `deletionPolicy: Delete` removes the broker topology; all of it is bounded
//! by `cleanup_timeout`
//! (counted from the deletion request), after which the finalizer is released
//! anyway, so a dead broker or a deleted Secret never blocks a deletion.

pub mod apply;
pub mod build;
mod cleanup;
mod observe;
pub mod plan;
pub mod read;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::broker::{BrokerError, Brokers, DepthSource};
use crate::crd::{SagaPlatform, SagaPlatformStatus, ServiceStatus};
use crate::health::Health;
use crate::metrics::Metrics;
use build::{Component, PlatformComponent};
use status::Observation;

pub const FINALIZER: &str = "saga.dev/topology";
/// `saga.dev/paused: "true"` stops reconciles from changing anything (children,
/// broker topology, replica counts) until it is removed; deletion still works.
pub const PAUSED_ANNOTATION: &str = "saga.dev/paused";

/// True when the resource carries `saga.dev/paused: "true"`.
pub fn paused(platform: &SagaPlatform) -> bool {
    platform.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {name} key {key}: {reason}")]
    Secret { name: String, key: String, reason: String },
    #[error("deleting the broker topology: {0}")]
    Cleanup(BrokerError),
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// Past `RECONCILE_TIMEOUT`: the reconcile was abandoned while waiting on `waiting`.
    #[error("reconcile abandoned after {deadline:?} (RECONCILE_TIMEOUT) while waiting on {waiting}")]
    Timeout { deadline: Duration, waiting: &'static str },
}

impl Error {
    /// True when a Kubernetes API call gave up waiting (a connect or read
    /// timeout of the client: an `io::ErrorKind::TimedOut` in the chain).
    pub fn api_timed_out(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = source {
            if error.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
                return true;
            }
            source = error.source();
        }
        false
    }

    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(_) => "kubernetes_api",
            Error::Secret { .. } => "secret",
            Error::Cleanup(_) => "cleanup",
            Error::Timeout { .. } => "timeout",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "finalizer",
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => "invalid_object",
            },
        }
    }
}

/// Timing knobs; tests shorten them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Periodic re-reconcile that repairs drift (topology, hand-edited children).
    pub resync: Duration,
    /// Re-reconcile period while a service autoscales (queue depth polling).
    pub scale_interval: Duration,
    /// How long a deletion drains and `deletionPolicy: Delete` keeps trying before releasing the finalizer.
    pub cleanup_timeout: Duration,
    /// First retry delay after a failed reconcile; doubles up to `max_backoff`.
    pub error_backoff: Duration,
    pub max_backoff: Duration,
    /// Re-reconcile period while the broker topology is not confirmed (the
    /// broker is unreachable, refuses, or times out): nothing in the cluster
    /// changes when the broker comes back, so only this notices it.
    pub broker_retry: Duration,
    /// Re-reconcile period while a service's rollout is not complete, so
    /// `ServicesAvailable` and `Ready` follow the Deployment even when a
    /// watch event about it arrives late or not at all.
    pub rollout_poll: Duration,
    /// A reconcile still running after this is abandoned (`Error::Timeout`)
    /// and retried with the error backoff, so one call that never returns
    /// cannot hold the resource's later triggers forever.
    pub reconcile_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(60),
            scale_interval: Duration::from_secs(15),
            cleanup_timeout: Duration::from_secs(120),
            error_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            broker_retry: Duration::from_secs(10),
            rollout_poll: Duration::from_secs(5),
            reconcile_timeout: Duration::from_secs(60),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub brokers: Brokers,
    pub settings: Settings,
    /// Reconciles in flight and the controller loop's heartbeat (`/healthz`, the lease, metrics).
    pub health: Arc<Health>,
    /// Consecutive failures per resource, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Last seen version of each child, so events name real changes only.
    versions: Mutex<HashMap<String, String>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, brokers: Brokers, settings: Settings, instance: String) -> Self {
        let reporter = Reporter { controller: build::MANAGER.into(), instance: Some(instance) };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            brokers,
            health: Arc::new(Health::new(settings.reconcile_timeout)),
            settings,
            failures: Mutex::default(),
            versions: Mutex::default(),
        }
    }

    async fn event(&self, reference: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let event =
            KubeEvent { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            // An event is a courtesy; never fail a reconcile over one.
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// Drops what is kept per resource: metric series, failure count, child versions.
    fn forget(&self, key: &str, platform: Option<&str>, name: &str) {
        self.metrics.forget(key, platform);
        self.failures.lock().expect("failures lock poisoned").remove(key);
        let namespace = key.split_once('/').map(|(ns, _)| ns).unwrap_or_default();
        let children: Vec<String> = Component::ALL
            .iter()
            .flat_map(|c| {
                let child = format!("{namespace}/{name}-{}", c.name());
                ["ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "NetworkPolicy"]
                    .map(|kind| format!("{kind}/{child}"))
            })
            .collect();
        self.versions.lock().expect("versions lock poisoned").retain(|k, _| !children.contains(k));
    }

    /// True when the child's version differs from the one last seen (or was never seen).
    fn changed(&self, key: String, version: String) -> bool {
        self.versions.lock().expect("versions lock poisoned").insert(key, version.clone()).as_ref() != Some(&version)
    }
}

/// Reconciles one resource; a resource that does not even deserialize gets a
/// Warning event and waits for a fix without disturbing the others. Past
/// `reconcile_timeout` the work is abandoned (dropped: its pending calls are
/// cancelled) and the error policy retries it with backoff.
pub async fn reconcile(object: Arc<DeserializeGuard<SagaPlatform>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = resource_key(object.meta());
    // Every log line of this reconcile carries the resource's name.
    let span = tracing::info_span!("reconcile", resource = %key);
    let work = async {
        match &object.0 {
            Ok(platform) => reconcile_valid(Arc::new(platform.clone()), &ctx).await,
            Err(invalid) => reconcile_invalid(&object, &invalid.error, &ctx).await,
        }
    }
    .instrument(span);
    ctx.health.begin(&key);
    let deadline = ctx.settings.reconcile_timeout;
    let result = match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => {
            let waiting = ctx.health.current_step(&key);
            tracing::warn!(resource = %key, ?deadline, waiting, "reconcile past its deadline: abandoned, will retry");
            Err(Error::Timeout { deadline, waiting })
        }
    };
    ctx.health.end(&key, result.is_ok());
    if object.meta().deletion_timestamp.is_some() {
        // Being deleted: the cleanup forgot it; record nothing new.
        return result;
    }
    ctx.metrics.reconciled(&key, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.lock().expect("failures lock poisoned").remove(&key);
    }
    result
}

/// Retries with exponential backoff per resource; 409 conflicts and 5xx are
/// transient and simply retried.
pub fn error_policy(object: Arc<DeserializeGuard<SagaPlatform>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = resource_key(object.meta());
    let attempts = {
        let mut failures = ctx.failures.lock().expect("failures lock poisoned");
        let attempts = failures.entry(key.clone()).or_insert(0);
        *attempts += 1;
        *attempts
    };
    ctx.metrics.failed(error.reason());
    let timed_out =
        error.api_timed_out().then_some("the Kubernetes API's answer (API_READ_TIMEOUT or API_CONNECT_TIMEOUT)");
    let delay = ctx
        .settings
        .error_backoff
        .saturating_mul(1 << attempts.min(16).saturating_sub(1))
        .min(ctx.settings.max_backoff);
    tracing::warn!(resource = %key, %error, attempts, retry_in = ?delay, timed_out_waiting_on = timed_out, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_valid(platform: Arc<SagaPlatform>, ctx: &Context) -> Result<Action, Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let api: Api<SagaPlatform> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.health.step(&resource_key(&platform.metadata), "the finalizer or the drain");
    // Being deleted: drain first; the finalizer helper drops the finalizer as
    // soon as its cleanup returns, so the waiting happens out here.
    if platform.metadata.deletion_timestamp.is_some()
        && platform.finalizers().iter().any(|f| f == FINALIZER)
        && let Some(action) = cleanup::drain(&platform, ctx).await?
    {
        return Ok(action);
    }
    finalizer::finalizer(&api, FINALIZER, platform, |event| async move {
        match event {
            Finalizer::Apply(platform) => apply_platform(&platform, ctx).await,
            Finalizer::Cleanup(platform) => cleanup::cleanup(&platform, ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

async fn reconcile_invalid(
    object: &DeserializeGuard<SagaPlatform>,
    error: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = object.meta();
    let reference = ObjectReference {
        api_version: Some(SagaPlatform::api_version(&()).into()),
        kind: Some(SagaPlatform::kind(&()).into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    tracing::warn!(resource = ?meta.name, error, "SagaPlatform does not match the operator's types");
    ctx.metrics.failed("invalid_object");
    ctx.event(
        &reference,
        EventType::Warning,
        "InvalidResource",
        "Reconcile",
        format!("cannot read the resource: {error}"),
    )
    .await;
    // Its policy is unreadable: release the finalizer so deletion is never stuck.
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some() && finalizers.iter().any(|f| f == FINALIZER) {
        let api: Api<SagaPlatform> = Api::namespaced(ctx.client.clone(), meta.namespace.as_deref().unwrap_or_default());
        let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        let patch = json!({"metadata": {"finalizers": remaining}});
        let name = meta.name.as_deref().unwrap_or_default();
        let key = format!("{}/{name}", meta.namespace.as_deref().unwrap_or_default());
        ctx.forget(&key, None, name);
        api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    Ok(Action::await_change())
}

/// `namespace/name`: how logs, metrics and [`Health`] name a resource.
fn resource_key(meta: &kube::core::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The create/update path. Whatever fails, the status says so: `Ready=False`
/// with the reason and the current `observedGeneration`, never an old `True`.
async fn apply_platform(platform: &SagaPlatform, ctx: &Context) -> Result<Action, Error> {
    let result = apply_platform_steps(platform, ctx).await;
    if let Err(error) = &result {
        report_failure(ctx, platform, error).await;
    }
    result
}

/// Best effort (the API may be what fails): `Ready=False` naming the error.
async fn report_failure(ctx: &Context, platform: &SagaPlatform, error: &Error) {
    let reason = match error.reason() {
        "conflict" => "Conflict",
        "kubernetes_api" => "KubernetesApiError",
        "secret" => "SecretUnreadable",
        _ => "ReconcileFailed",
    };
    let observed = [Observation::new(status::READY, false, reason, error.to_string())];
    let previous = platform.status.clone().unwrap_or_default();
    let mut conditions = status_conditions(platform, &observed);
    // Keep what the last successful pass observed for the other conditions.
    conditions.extend(previous.conditions.iter().filter(|c| c.type_ != status::READY).cloned());
    let status = SagaPlatformStatus { observed_generation: platform.metadata.generation, conditions, ..previous };
    if let Err(write_error) = apply::write_status(ctx, platform, status).await {
        tracing::warn!(%write_error, "cannot write the failure to the status");
    }
}

async fn apply_platform_steps(platform: &SagaPlatform, ctx: &Context) -> Result<Action, Error> {
    let reference = platform.object_ref(&());
    let previous = platform.status.clone().unwrap_or_default();
    let platform_name = platform.platform_name();
    let key = resource_key(&platform.metadata);
    let step = |what: &'static str| ctx.health.step(&key, what);

    // paused: say so, change nothing else
    if paused(platform) {
        let message = format!(
            "annotation {PAUSED_ANNOTATION}: \"true\": changes are not applied (children, broker topology, replica counts); remove it to resume"
        );
        let was_paused = previous.conditions.iter().any(|c| c.type_ == status::PAUSED && c.status == "True");
        if !was_paused {
            ctx.event(&reference, EventType::Normal, "Paused", "Reconcile", message.clone()).await;
        }
        let observed = [
            Observation::new(status::READY, false, "Paused", message.clone()),
            Observation::new(status::PAUSED, true, "Paused", message),
        ];
        let mut conditions = status_conditions(platform, &observed);
        // What the last pass before the pause observed stays, for the other conditions.
        conditions.extend(
            previous.conditions.iter().filter(|c| c.type_ != status::READY && c.type_ != status::PAUSED).cloned(),
        );
        apply::write_status(ctx, platform, SagaPlatformStatus { conditions, ..previous }).await?;
        return Ok(Action::requeue(ctx.settings.resync));
    }

    // validate
    if let Err(problems) = validate::validate(platform) {
        let message = problems.join("; ");
        ctx.event(&reference, EventType::Warning, "InvalidSpec", "Validate", message.clone()).await;
        let observed = [Observation::new(status::READY, false, "InvalidSpec", message)];
        apply::write_status(
            ctx,
            platform,
            SagaPlatformStatus {
                observed_generation: platform.metadata.generation,
                conditions: status_conditions(platform, &observed),
                ..previous
            },
        )
        .await?;
        return Ok(Action::await_change());
    }

    // read: the broker URL and its CA
    step("reading the broker Secret");
    let target = observe::broker_target(ctx, platform).await?;

    // broker side: topology, then queue depth, all under one deadline
    step("the broker (claim, topology, queue depth)");
    let deadline = broker_phase_deadline(ctx.brokers.timeout(), ctx.settings.reconcile_timeout);
    let observation = tokio::time::timeout(deadline, observe::broker(ctx, platform, &reference, &target)).await;
    let observe::BrokerObservation { mut observed, depths, rates, depth_source, depth_error, topology_ok } =
        observation.unwrap_or_else(|_| observe::broker_timed_out(ctx, &target, deadline));

    // build + apply, per service (the Secrets the pods read, each read once)
    step("reading the Secrets the pods read");
    let secret_hashes = observe::secret_hashes(ctx, platform).await?;
    let now = chrono::Utc::now().timestamp();
    let mut services = Vec::new();
    let mut not_ready = Vec::new();
    let mut autoscaling = false;
    let mut limited = Vec::new();
    let mut rate_unknown = Vec::new();
    for component in Component::ALL {
        let spec = component.spec(platform);
        let before = previous_service(&previous, component);
        let depth = depths.get(component.name()).copied();
        let plan = plan::plan(spec, before, depth, rates.get(component.name()).map(|r| r.publish), now);
        autoscaling |= plan.autoscaling;
        rate_unknown.extend(plan.rate_unknown.then_some(component.name()));
        if let Some((reason, message)) = plan.limited {
            limited.push((reason, format!("{}: {message}", component.name())));
        }
        if let Some((current, note)) = &plan.scaled {
            let direction = if plan.replicas > *current { "up" } else { "down" };
            ctx.metrics.scaled(&platform_name, component.name(), direction);
            let note = format!("{}: {note}", component.name());
            ctx.event(&reference, EventType::Normal, "Scaled", "Autoscale", note).await;
        }
        let replicas = plan.replicas;
        step(applying(component));
        let deployment = apply::apply_children(ctx, platform, component, replicas, &secret_hashes, &reference).await?;
        let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        not_ready.extend(status::rollout(component.name(), replicas, &deployment));
        ctx.metrics.service(&platform_name, component.name(), depth, replicas, ready);
        services.push(ServiceStatus {
            desired_replicas: replicas,
            ready_replicas: ready,
            replicas: format!("{ready}/{replicas}"),
            queue_depth: depth,
            recommendations: plan.recommendations,
            scale_events: plan.scale_events,
            autoscaler: plan.autoscaler,
        });
    }

    step("applying the disruption budgets and network policies");
    apply::apply_policies(ctx, platform, &reference).await?;

    // surplus retry tiers: only once no pod of an older template can publish into them
    let rolling: Vec<&str> =
        not_ready.iter().filter(|(reason, _)| status::old_template_may_run(reason)).map(|(_, m)| m.as_str()).collect();
    step("pruning surplus retry queues");
    let topology_max_attempts = match &target {
        Ok(target) if topology_ok => {
            let previous_max_attempts = previous.topology_max_attempts;
            observe::retry_tiers(ctx, platform, &reference, target, previous_max_attempts, &rolling, &mut observed)
                .await
        }
        _ => previous.topology_max_attempts,
    };

    // status
    observed.push(status::services_available(&not_ready));
    if autoscaling {
        observed.extend(status::autoscaling_observations(depth_error.as_deref(), &rate_unknown, &limited));
    }
    let queue_depth = (!depths.is_empty()).then(|| depths.values().sum());
    let [order, payment, inventory, notification]: [ServiceStatus; 4] =
        services.try_into().expect("one status per component");
    let status = SagaPlatformStatus {
        observed_generation: platform.metadata.generation,
        conditions: status_conditions(platform, &observed),
        queue_depth,
        queue_depth_source: depth_source.map(|s: DepthSource| s.as_str().to_owned()),
        topology_max_attempts,
        order,
        payment,
        inventory,
        notification,
    };
    step("writing the status");
    apply::write_status(ctx, platform, status).await?;
    tracing::info!(generation = ?platform.metadata.generation, "reconciled");
    Ok(Action::requeue(next_reconcile(&ctx.settings, autoscaling, topology_ok, not_ready.is_empty())))
}

/// When to look again: the resync (or the autoscaler's period), sooner while
/// the platform has not converged — the broker topology unconfirmed (nothing
/// in the cluster changes when the broker comes back) or a rollout not
/// complete (its watch events may come late).
fn next_reconcile(settings: &Settings, autoscaling: bool, topology_ok: bool, rolled_out: bool) -> Duration {
    let mut next = if autoscaling { settings.scale_interval } else { settings.resync };
    if !topology_ok {
        next = next.min(settings.broker_retry);
    }
    if !rolled_out {
        next = next.min(settings.rollout_poll);
    }
    next
}

/// The step of applying `component`'s children (ConfigMap, Service, Deployment).
fn applying(component: Component) -> &'static str {
    match component {
        Component::Order => "applying the order service's children",
        Component::Payment => "applying the payment service's children",
        Component::Inventory => "applying the inventory service's children",
        Component::Notification => "applying the notification service's children",
    }
}

/// The bound of a reconcile's whole broker phase (claim, topology, four depth
/// reads, each call bounded by `BROKER_TIMEOUT` already): three calls' worth,
/// and at most half the reconcile deadline, so a slow broker leaves the
/// reconcile time to apply the children and report it.
fn broker_phase_deadline(broker_timeout: Duration, reconcile_timeout: Duration) -> Duration {
    (broker_timeout * 3).min(reconcile_timeout / 2)
}

/// The conditions to store, at the wall clock's time.
fn status_conditions(platform: &SagaPlatform, observed: &[Observation]) -> Vec<crate::crd::Condition> {
    let previous = platform.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    status::with_ready(previous, observed, &now_rfc3339(), platform.metadata.generation)
}

fn previous_service(status: &SagaPlatformStatus, component: Component) -> &ServiceStatus {
    match component {
        Component::Order => &status.order,
        Component::Payment => &status.payment,
        Component::Inventory => &status.inventory,
        Component::Notification => &status.notification,
    }
}

/// Who claims the broker names: `namespace/name/uid` of the resource.
fn owner(platform: &SagaPlatform) -> String {
    let meta = &platform.metadata;
    format!(
        "{}/{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconverged_platform_is_looked_at_again_soon() {
        let settings = Settings {
            resync: Duration::from_secs(600),
            scale_interval: Duration::from_secs(15),
            broker_retry: Duration::from_secs(10),
            rollout_poll: Duration::from_secs(5),
            ..Settings::default()
        };
        let secs = |autoscaling, topology_ok, rolled_out| {
            next_reconcile(&settings, autoscaling, topology_ok, rolled_out).as_secs()
        };
        assert_eq!(secs(false, true, true), 600, "converged: the resync");
        assert_eq!(secs(true, true, true), 15, "autoscaling: its period");
        assert_eq!(secs(false, false, true), 10, "topology unconfirmed");
        assert_eq!(secs(false, true, false), 5, "a rollout in progress");
        assert_eq!(secs(true, false, false), 5, "the soonest wins");
    }

    #[test]
    fn an_api_timeout_is_told_apart() {
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(Error::Kube(kube::Error::Service(Box::new(timed_out))).api_timed_out());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!Error::Kube(kube::Error::Service(Box::new(refused))).api_timed_out());
        let deadline = Error::Timeout { deadline: Duration::from_secs(1), waiting: "x" };
        assert!(!deadline.api_timed_out());
        assert_eq!(deadline.reason(), "timeout");
    }

    #[test]
    fn the_broker_phase_fits_in_the_reconcile_deadline() {
        let secs = |broker, reconcile| {
            broker_phase_deadline(Duration::from_secs(broker), Duration::from_secs(reconcile)).as_secs()
        };
        assert_eq!(secs(5, 60), 15, "three broker calls' worth");
        assert_eq!(secs(30, 60), 30, "never more than half the reconcile deadline");
    }
}
