//! One reconcile of a `SagaPlatform`: read → validate → build → apply → status.
//!
//! Deletion goes through a finalizer so `deletionPolicy: Delete` can remove the
//! broker topology first; that cleanup is bounded by `cleanup_timeout`
//! (counted from the deletion request), after which the finalizer is released
//! anyway, so a dead broker or a deleted Secret never blocks a deletion.

pub mod apply;
pub mod build;
pub mod read;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use saga_common::topology::{Destination, Topology};
use serde_json::json;
use tracing::Instrument;

use crate::broker::{self as broker_side, BrokerError, Brokers, DepthSource, MessageRates, Target, TopologyOutcome};
use crate::crd::{AutoscalerStatus, DeletionPolicy, SagaPlatform, SagaPlatformStatus, ScalingMetric, ServiceStatus};
use crate::metrics::Metrics;
use crate::scaling;
use crate::tls::TlsClient;
use build::Component;
use status::{AUTOSCALING_ACTIVE, MANAGEMENT_API_AVAILABLE, Observation, SCALING_LIMITED, TOPOLOGY_READY};

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
}

impl Error {
    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(_) => "kubernetes_api",
            Error::Secret { .. } => "secret",
            Error::Cleanup(_) => "cleanup",
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
    /// How long `deletionPolicy: Delete` keeps trying before releasing the finalizer.
    pub cleanup_timeout: Duration,
    /// First retry delay after a failed reconcile; doubles up to `max_backoff`.
    pub error_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(60),
            scale_interval: Duration::from_secs(15),
            cleanup_timeout: Duration::from_secs(120),
            error_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
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
/// Warning event and waits for a fix without disturbing the others.
pub async fn reconcile(object: Arc<DeserializeGuard<SagaPlatform>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any());
    // Every log line of this reconcile carries the resource's name.
    let span = tracing::info_span!("reconcile", resource = %key);
    let result = async {
        match &object.0 {
            Ok(platform) => reconcile_valid(Arc::new(platform.clone()), &ctx).await,
            Err(invalid) => reconcile_invalid(&object, &invalid.error, &ctx).await,
        }
    }
    .instrument(span)
    .await;
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
    let key = format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any());
    let attempts = {
        let mut failures = ctx.failures.lock().expect("failures lock poisoned");
        let attempts = failures.entry(key.clone()).or_insert(0);
        *attempts += 1;
        *attempts
    };
    ctx.metrics.failed(error.reason());
    let delay = ctx
        .settings
        .error_backoff
        .saturating_mul(1 << attempts.min(16).saturating_sub(1))
        .min(ctx.settings.max_backoff);
    tracing::warn!(resource = %key, %error, attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_valid(platform: Arc<SagaPlatform>, ctx: &Context) -> Result<Action, Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let api: Api<SagaPlatform> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::finalizer(&api, FINALIZER, platform, |event| async move {
        match event {
            Finalizer::Apply(platform) => apply_platform(&platform, ctx).await,
            Finalizer::Cleanup(platform) => cleanup(&platform, ctx).await,
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
    if let Err(write_error) = write_status(ctx, platform, status).await {
        tracing::warn!(%write_error, "cannot write the failure to the status");
    }
}

async fn apply_platform_steps(platform: &SagaPlatform, ctx: &Context) -> Result<Action, Error> {
    let reference = platform.object_ref(&());
    let previous = platform.status.clone().unwrap_or_default();
    let platform_name = platform.platform_name();

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
        write_status(ctx, platform, SagaPlatformStatus { conditions, ..previous }).await?;
        return Ok(Action::requeue(ctx.settings.resync));
    }

    // validate
    if let Err(problems) = validate::validate(platform) {
        let message = problems.join("; ");
        ctx.event(&reference, EventType::Warning, "InvalidSpec", "Validate", message.clone()).await;
        let observed = [Observation::new(status::READY, false, "InvalidSpec", message)];
        write_status(
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
    let target = broker_target(ctx, platform).await?;

    // broker side: topology, then queue depth
    let topology = Topology::new(build::topology_spec(platform));
    let mut observed = Vec::new();
    let mut depths: HashMap<&'static str, u64> = HashMap::new();
    let mut rates: HashMap<&'static str, MessageRates> = HashMap::new();
    let mut depth_source = None;
    let mut depth_error = None;
    let mut topology_ok = false;
    let mut topology_max_attempts = previous.topology_max_attempts;
    match &target {
        Err(problem) => {
            let message = problem.message.clone();
            ctx.event(&reference, EventType::Warning, problem.reason, "ReadSecret", message.clone()).await;
            observed.push(Observation::new(TOPOLOGY_READY, false, problem.reason, message.clone()));
            depth_error = Some(message);
        }
        Ok(target) => {
            let claimed = ctx.brokers.claim(target, &platform_name, &owner(platform)).await;
            let ensured = match claimed {
                Ok(()) => ctx.brokers.ensure_topology(target, &topology).await,
                Err(error) => Err(error),
            };
            match ensured {
                Err(error @ BrokerError::Claimed { .. }) => {
                    let message = error.to_string();
                    ctx.event(&reference, EventType::Warning, "Conflict", "ClaimBrokerNames", message.clone()).await;
                    observed.push(Observation::new(TOPOLOGY_READY, false, "Conflict", message));
                }
                Ok(TopologyOutcome::Unchanged) => {
                    topology_ok = true;
                    observed.push(Observation::new(
                        TOPOLOGY_READY,
                        true,
                        "Declared",
                        "topology matches the definition",
                    ));
                }
                Ok(TopologyOutcome::Declared { missing }) => {
                    let note = format!("declared the topology of platform {platform_name} ({missing} was missing)");
                    ctx.event(&reference, EventType::Normal, "TopologyDeclared", "DeclareTopology", note).await;
                    topology_ok = true;
                    observed.push(Observation::new(
                        TOPOLOGY_READY,
                        true,
                        "Declared",
                        "topology matches the definition",
                    ));
                }
                Err(error) => {
                    let message = error.to_string();
                    let reason = match error.tls_reason() {
                        Some("CaInvalid") => "BrokerCaInvalid",
                        Some(_) => "BrokerTlsHandshakeFailed",
                        None => "TopologyFailed",
                    };
                    ctx.event(&reference, EventType::Warning, reason, "DeclareTopology", message.clone()).await;
                    observed.push(Observation::new(TOPOLOGY_READY, false, reason, message));
                }
            }
            if topology_ok {
                // Claimed by this resource: its surplus retry tiers may go.
                let max_attempts = platform.spec.retry.max_attempts;
                match previous.topology_max_attempts {
                    Some(old) if old <= max_attempts => topology_max_attempts = Some(max_attempts),
                    old => {
                        let to = old.map(|old| old.saturating_sub(1));
                        match ctx.brokers.prune_retry_queues(target, &topology, max_attempts, to).await {
                            Ok(pruned) => {
                                if !pruned.removed.is_empty() {
                                    let note = format!(
                                        "retry.maxAttempts {max_attempts}: removed the surplus retry queues {}",
                                        pruned.removed.join(", ")
                                    );
                                    ctx.event(
                                        &reference,
                                        EventType::Normal,
                                        "RetryQueuesRemoved",
                                        "PruneTopology",
                                        note,
                                    )
                                    .await;
                                }
                                if pruned.kept.is_empty() {
                                    topology_max_attempts = Some(max_attempts);
                                } else if let Some(last) = observed.last_mut() {
                                    last.message = format!(
                                        "topology matches the definition; surplus retry queues kept until empty: {}",
                                        pruned.kept.join(", ")
                                    );
                                }
                            }
                            Err(error) => tracing::warn!(%error, "cannot prune the surplus retry queues"),
                        }
                    }
                }
            }
            // The management API gets the broker credentials only on the
            // broker's host or the one host the resource allows.
            let broker = &platform.spec.broker;
            let mut management_observation = None;
            let management_url = match broker.management_url.as_deref() {
                None => None,
                Some(management_url) => match broker_side::management_credentials_allowed(
                    target.url(),
                    management_url,
                    broker.allow_credentials_to_management_host.as_deref(),
                ) {
                    Ok(()) => Some(management_url),
                    Err(message) => {
                        ctx.event(
                            &reference,
                            EventType::Warning,
                            "CredentialsWithheld",
                            "ReadQueueDepth",
                            message.clone(),
                        )
                        .await;
                        management_observation =
                            Some(Observation::new(MANAGEMENT_API_AVAILABLE, false, "CredentialsWithheld", message));
                        None
                    }
                },
            };
            for component in Component::ALL {
                let queue = topology.queue_name(component.destination);
                let read = ctx.brokers.queue_depth(target, management_url, &queue).await;
                if let Some(error) = read.management_error
                    && management_observation.is_none()
                {
                    let reason = match error.tls_reason() {
                        Some("CaInvalid") => "CaInvalid",
                        Some(_) => "TlsHandshakeFailed",
                        None => "Unavailable",
                    };
                    let message = format!("queue depth read over AMQP (ready messages only): {error}");
                    management_observation = Some(Observation::new(MANAGEMENT_API_AVAILABLE, false, reason, message));
                }
                if let Some(rate) = read.rates {
                    rates.insert(component.name(), rate);
                }
                match read.depth {
                    Ok((depth, source)) => {
                        depths.insert(component.name(), depth);
                        depth_source = Some(source);
                    }
                    Err(error) => depth_error = Some(format!("queue {queue}: {error}")),
                }
            }
            if let Some(management_url) = management_url
                && management_observation.is_none()
                && depth_source == Some(DepthSource::ManagementApi)
            {
                let message = format!("queue depth read from {}", management_url.trim_end_matches('/'));
                management_observation =
                    Some(Observation::new(MANAGEMENT_API_AVAILABLE, true, "QueueDepthRead", message));
            }
            observed.extend(management_observation);
        }
    }

    // build + apply, per service (the Secrets the pods read, each read once)
    let secret_hashes = secret_hashes(ctx, platform).await?;
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
        let (replicas, recommendations, scale_events, autoscaler) = match &spec.autoscaling {
            None => (spec.replicas, Vec::new(), Vec::new(), None),
            Some(scaling_spec) => {
                autoscaling = true;
                let policy = scaling::Policy::from(scaling_spec);
                let current = if before.desired_replicas > 0 { before.desired_replicas } else { policy.min };
                let value = match scaling_spec.metric {
                    ScalingMetric::QueueLength => depth.map(|d| d as f64),
                    ScalingMetric::MessageRate => rates.get(component.name()).map(|r| r.publish),
                };
                match value {
                    Some(value) => {
                        let decision = scaling::decide(
                            &policy,
                            current,
                            value,
                            now,
                            &before.recommendations,
                            &before.scale_events,
                        );
                        let message = decision.message(&policy, current);
                        if decision.replicas != current {
                            let direction = if decision.replicas > current { "up" } else { "down" };
                            ctx.metrics.scaled(&platform_name, component.name(), direction);
                            let note = format!(
                                "{}: {current} -> {} replicas ({:?} {value:.2}; {message})",
                                component.name(),
                                decision.replicas,
                                scaling_spec.metric,
                            );
                            ctx.event(&reference, EventType::Normal, "Scaled", "Autoscale", note).await;
                        }
                        if decision.limit.limited() {
                            limited.push((decision.limit.as_str(), format!("{}: {message}", component.name())));
                        }
                        let autoscaler = AutoscalerStatus {
                            metric: format!("{:?}", scaling_spec.metric),
                            value: format!("{value:.2}"),
                            target: format!("{}", policy.target_per_replica),
                            recommended_replicas: decision.recommended,
                            stabilized_replicas: decision.stabilized,
                            replicas: decision.replicas,
                            reason: decision.limit.as_str().into(),
                            message,
                        };
                        (decision.replicas, decision.recommendations, decision.events, Some(autoscaler))
                    }
                    // Metric unreadable: hold the current count.
                    None => {
                        if scaling_spec.metric == ScalingMetric::MessageRate && depth.is_some() {
                            rate_unknown.push(component.name());
                        }
                        (
                            current.clamp(policy.min, policy.max),
                            before.recommendations.clone(),
                            before.scale_events.clone(),
                            before.autoscaler.clone(),
                        )
                    }
                }
            }
        };
        let deployment = apply_children(ctx, platform, component, replicas, &secret_hashes, &reference).await?;
        let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        not_ready.extend(status::rollout(component.name(), replicas, &deployment));
        ctx.metrics.service(&platform_name, component.name(), depth, replicas, ready);
        services.push(ServiceStatus {
            desired_replicas: replicas,
            ready_replicas: ready,
            replicas: format!("{ready}/{replicas}"),
            queue_depth: depth,
            recommendations,
            scale_events,
            autoscaler,
        });
    }

    apply_policies(ctx, platform, &reference).await?;

    // status
    observed.push(status::services_available(&not_ready));
    if autoscaling {
        observed.push(match &depth_error {
            Some(error) => Observation::new(
                AUTOSCALING_ACTIVE,
                false,
                "QueueDepthUnknown",
                format!("holding replica counts: {error}"),
            ),
            None if !rate_unknown.is_empty() => Observation::new(
                AUTOSCALING_ACTIVE,
                false,
                "MessageRateUnknown",
                format!(
                    "holding replica counts of {}: metric MessageRate needs the management API (broker.managementUrl)",
                    rate_unknown.join(", ")
                ),
            ),
            None => Observation::new(AUTOSCALING_ACTIVE, true, "MetricRead", "scaling on the queue metrics"),
        });
        observed.push(if limited.is_empty() {
            Observation::new(
                SCALING_LIMITED,
                false,
                "DesiredWithinRange",
                "the desired counts are within the policies and bounds",
            )
        } else {
            let message: Vec<&str> = limited.iter().map(|(_, m)| m.as_str()).collect();
            Observation::new(SCALING_LIMITED, true, limited[0].0, message.join("; "))
        });
    }
    let queue_depth = (!depths.is_empty()).then(|| depths.values().sum());
    let [order, payment, inventory]: [ServiceStatus; 3] = services.try_into().expect("three services");
    let status = SagaPlatformStatus {
        observed_generation: platform.metadata.generation,
        conditions: status_conditions(platform, &observed),
        queue_depth,
        queue_depth_source: depth_source.map(|s: DepthSource| s.as_str().to_owned()),
        topology_max_attempts,
        order,
        payment,
        inventory,
    };
    write_status(ctx, platform, status).await?;
    tracing::info!(generation = ?platform.metadata.generation, "reconciled");
    Ok(Action::requeue(if autoscaling { ctx.settings.scale_interval } else { ctx.settings.resync }))
}

/// Why a reconcile cannot reach the broker: a condition reason and a message
/// (never a credential).
#[derive(Debug, Clone)]
struct TargetProblem {
    reason: &'static str,
    message: String,
}

/// The broker URL (from its Secret) and, with `broker.tls`, the CA (from its
/// Secret) that verifies it. `Err` of the outer result: the API failed.
async fn broker_target(ctx: &Context, platform: &SagaPlatform) -> Result<Result<Target, TargetProblem>, Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let broker = &platform.spec.broker;
    let problem = |reason, message| Ok(Err(TargetProblem { reason, message }));
    let url = match read::secret_value(&ctx.client, &namespace, &broker.url_secret).await {
        Ok(url) => url,
        Err(Error::Secret { name, key, reason }) => {
            return problem("BrokerSecretInvalid", format!("Secret {name} key {key}: {reason}"));
        }
        Err(error) => return Err(error),
    };
    if let Err(message) = validate::broker_url(&url, broker.tls.is_some()) {
        return problem("BrokerSecretInvalid", message);
    }
    let Some(tls) = &broker.tls else {
        return Ok(Ok(Target::new(url)));
    };
    let ca = &tls.ca_secret;
    let pem = match read::secret_value(&ctx.client, &namespace, ca).await {
        Ok(pem) => pem,
        Err(Error::Secret { name, key, reason }) => {
            return problem("BrokerCaInvalid", format!("broker.tls.caSecret: Secret {name} key {key}: {reason}"));
        }
        Err(error) => return Err(error),
    };
    match TlsClient::from_ca_pem(&pem) {
        Ok(client) => Ok(Ok(Target::with_ca(url, client))),
        Err(error) => {
            problem("BrokerCaInvalid", format!("broker.tls.caSecret: Secret {} key {}: {error}", ca.name, ca.key))
        }
    }
}

fn previous_service(status: &SagaPlatformStatus, component: Component) -> &ServiceStatus {
    match component.destination {
        Destination::Order => &status.order,
        Destination::Payment => &status.payment,
        Destination::Inventory => &status.inventory,
    }
}

/// `Ready` first (what `kubectl get` shows), then the observations.
fn status_conditions(platform: &SagaPlatform, observed: &[Observation]) -> Vec<crate::crd::Condition> {
    let previous = platform.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut all = vec![status::ready(observed)];
    all.extend(observed.iter().filter(|o| o.type_ != status::READY).cloned());
    status::conditions(previous, &all, &now_rfc3339(), platform.metadata.generation)
}

/// Per service, the hash of the Secret values its pods read; each Secret is read once.
async fn secret_hashes(ctx: &Context, platform: &SagaPlatform) -> Result<HashMap<&'static str, String>, Error> {
    let refs: Vec<_> = Component::ALL.iter().flat_map(|c| build::secret_refs(platform, *c)).collect();
    let values = read::secret_values(&ctx.client, &platform.namespace().unwrap_or_default(), &refs).await?;
    Ok(Component::ALL
        .iter()
        .zip(values.chunks(refs.len() / Component::ALL.len()))
        .map(|(c, v)| (c.name(), build::secrets_hash(v)))
        .collect())
}

async fn apply_children(
    ctx: &Context,
    platform: &SagaPlatform,
    component: Component,
    replicas: i32,
    secret_hashes: &HashMap<&'static str, String>,
    reference: &ObjectReference,
) -> Result<Deployment, Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let config_map = apply::apply(&config_maps, &build::config_map(platform, component)).await?;
    let service = apply::apply(&services, &build::service(platform, component)).await?;
    let secrets_hash = &secret_hashes[component.name()];
    let deployment =
        apply::apply(&deployments, &build::deployment(platform, component, replicas, secrets_hash)).await?;
    for (kind, name, version) in [
        ("ConfigMap", config_map.name_any(), apply::version(&config_map)),
        ("Service", service.name_any(), apply::version(&service)),
        ("Deployment", deployment.name_any(), apply::version(&deployment)),
    ] {
        if ctx.changed(format!("{kind}/{namespace}/{name}"), version) {
            let note = format!("applied {kind} {name}");
            ctx.event(reference, EventType::Normal, "Applied", "Apply", note).await;
        }
    }
    Ok(deployment)
}

/// The optional PodDisruptionBudgets and NetworkPolicies: applied where the
/// spec asks for them, deleted where it no longer does (only objects this
/// resource controls, by owner reference).
async fn apply_policies(ctx: &Context, platform: &SagaPlatform, reference: &ObjectReference) -> Result<(), Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut kept_budgets = Vec::new();
    for budget in Component::ALL.iter().filter_map(|c| build::disruption_budget(platform, *c)) {
        let applied = apply::apply(&budgets, &budget).await?;
        kept_budgets.push(applied.name_any());
        if ctx.changed(format!("PodDisruptionBudget/{namespace}/{}", applied.name_any()), apply::version(&applied)) {
            let note = format!("applied PodDisruptionBudget {}", applied.name_any());
            ctx.event(reference, EventType::Normal, "Applied", "Apply", note).await;
        }
    }
    let mut kept_policies = Vec::new();
    for policy in Component::ALL.iter().filter_map(|c| build::network_policy(platform, *c)) {
        let applied = apply::apply(&policies, &policy).await?;
        kept_policies.push(applied.name_any());
        if ctx.changed(format!("NetworkPolicy/{namespace}/{}", applied.name_any()), apply::version(&applied)) {
            let note = format!("applied NetworkPolicy {}", applied.name_any());
            ctx.event(reference, EventType::Normal, "Applied", "Apply", note).await;
        }
    }
    prune(ctx, &budgets, platform, &kept_budgets, reference).await?;
    prune(ctx, &policies, platform, &kept_policies, reference).await?;
    Ok(())
}

/// Deletes the objects of `api` this resource controls that are not in `keep`.
async fn prune<K>(
    ctx: &Context,
    api: &Api<K>,
    platform: &SagaPlatform,
    keep: &[String],
    reference: &ObjectReference,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(uid) = platform.metadata.uid.as_deref() else { return Ok(()) };
    let selector =
        format!("app.kubernetes.io/managed-by={},app.kubernetes.io/instance={}", build::MANAGER, platform.name_any());
    for object in api.list(&ListParams::default().labels(&selector)).await? {
        let ours = object.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid);
        let name = object.name_any();
        if !ours || keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        let note = format!("deleted {} {name}: no longer in the spec", K::kind(&()));
        ctx.event(reference, EventType::Normal, "Pruned", "Apply", note).await;
    }
    Ok(())
}

async fn write_status(ctx: &Context, platform: &SagaPlatform, status: SagaPlatformStatus) -> Result<(), Error> {
    if platform.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<SagaPlatform> = Api::namespaced(ctx.client.clone(), &platform.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": SagaPlatform::api_version(&()),
        "kind": SagaPlatform::kind(&()),
        "status": status,
    });
    api.patch_status(&platform.name_any(), &apply::params(), &Patch::Apply(patch)).await?;
    Ok(())
}

/// The deletion path: what happens to the topology follows `deletionPolicy`.
async fn cleanup(platform: &SagaPlatform, ctx: &Context) -> Result<Action, Error> {
    let reference = platform.object_ref(&());
    let platform_name = platform.platform_name();
    // The finalizer goes once this returns Ok, and the object with it: forget
    // it now (a failed finalizer removal runs this again).
    let key = format!("{}/{}", platform.namespace().unwrap_or_default(), platform.name_any());
    ctx.forget(&key, Some(&platform_name), &platform.name_any());
    if platform.spec.deletion_policy == DeletionPolicy::Retain {
        let note = format!("deletionPolicy Retain: left the topology of platform {platform_name} on the broker");
        ctx.event(&reference, EventType::Normal, "TopologyRetained", "Cleanup", note).await;
        return Ok(Action::await_change());
    }
    let topology = Topology::new(build::topology_spec(platform));
    let result = match broker_target(ctx, platform).await {
        // Only what this resource owns: never another resource's queues.
        Ok(Ok(target)) => match ctx.brokers.claim(&target, &platform_name, &owner(platform)).await {
            Ok(()) => ctx.brokers.delete_topology(&target, &topology).await.map_err(Error::Cleanup),
            Err(error) => Err(Error::Cleanup(error)),
        },
        // The Secret (or the CA's) is gone or unusable: nothing to connect with.
        Ok(Err(problem)) => {
            let note = format!("cannot delete the topology of platform {platform_name}: {}", problem.message);
            ctx.event(&reference, EventType::Warning, "CleanupSkipped", "Cleanup", note).await;
            return Ok(Action::await_change());
        }
        Err(error) => Err(error),
    };
    match result {
        Err(Error::Cleanup(error @ BrokerError::Claimed { .. })) => {
            let note = format!("left the topology of platform {platform_name} alone: {error}");
            ctx.event(&reference, EventType::Warning, "CleanupSkipped", "Cleanup", note).await;
            Ok(Action::await_change())
        }
        Ok(()) => {
            let note = format!("deleted the topology of platform {platform_name}");
            ctx.event(&reference, EventType::Normal, "TopologyDeleted", "Cleanup", note).await;
            Ok(Action::await_change())
        }
        Err(error) if deleting_for(platform) >= ctx.settings.cleanup_timeout => {
            let note = format!(
                "gave up deleting the topology of platform {platform_name} after {:?}: {error}",
                ctx.settings.cleanup_timeout
            );
            ctx.event(&reference, EventType::Warning, "CleanupAbandoned", "Cleanup", note).await;
            Ok(Action::await_change())
        }
        Err(error) => {
            let note = format!("deleting the topology of platform {platform_name} failed, retrying: {error}");
            ctx.event(&reference, EventType::Warning, "CleanupFailed", "Cleanup", note).await;
            Err(error)
        }
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

/// Time since deletion was requested.
fn deleting_for(platform: &SagaPlatform) -> Duration {
    let requested = platform.metadata.deletion_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(i64::MAX);
    Duration::from_secs(chrono::Utc::now().timestamp().saturating_sub(requested).max(0) as u64)
}
