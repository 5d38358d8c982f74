//! The `SagaPlatform` custom resource (`saga.dev/v1alpha1`): one saga platform
//! (broker topology + order, payment and inventory services) per resource.
//!
//! Schema rules are CEL (`x-kubernetes-validations`) with messages written for
//! the person running `kubectl apply`; `SagaPlatform::validate_cel` and
//! `validate_cel_update` evaluate the same rules in tests.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state of a saga platform.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "saga.dev",
    version = "v1alpha1",
    kind = "SagaPlatform",
    namespaced,
    shortname = "sp",
    category = "saga",
    status = "SagaPlatformStatus",
    cel,
    validation = Rule::new("has(self.spec.platform) == has(oldSelf.spec.platform)").message("spec.platform cannot be added or removed after creation; create a new SagaPlatform instead"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Order", type_ = "string", description = "ready/desired", json_path = ".status.order.replicas"),
    printcolumn(
        name = "Payment",
        type_ = "string",
        description = "ready/desired",
        json_path = ".status.payment.replicas"
    ),
    printcolumn(
        name = "Inventory",
        type_ = "string",
        description = "ready/desired",
        json_path = ".status.inventory.replicas"
    ),
    printcolumn(
        name = "Notification",
        type_ = "string",
        description = "ready/desired",
        json_path = ".status.notification.replicas",
        priority = 1
    ),
    printcolumn(
        name = "Depth",
        type_ = "integer",
        description = "messages waiting in the three service queues",
        json_path = ".status.queueDepth"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SagaPlatformSpec {
    /// Prefix of every exchange and queue (`{platform}.…`). Defaults to the
    /// resource name. Cannot be changed: the old topology would be orphaned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("platform cannot be changed after creation; create a new SagaPlatform instead"))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9-]{0,62}$')").message("platform must be 1-63 lowercase letters, digits or '-', not starting with '-'"))]
    pub platform: Option<String>,
    pub broker: BrokerSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub saga: SagaSpec,
    pub auth: AuthSpec,
    /// Settings the services' PostgreSQL connections share (TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,
    /// What happens to the broker topology when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Traces of every service, exported with OTLP. Without it no span is
    /// exported (the services still propagate W3C trace context and log trace ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    pub order: ServiceSpec,
    pub payment: ServiceSpec,
    pub inventory: ServiceSpec,
    /// The notification service: order events to customers' webhooks and e-mail.
    pub notification: NotificationSpec,
}

/// The notification service: a service like the others, and where it sends e-mail.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpec {
    #[serde(flatten)]
    pub service: ServiceSpec,
    /// The SMTP server for e-mail notifications. Without it customers cannot
    /// register e-mail addresses (webhooks work either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailSpec {
    /// Secret key holding the SMTP URL (`smtp://user:password@host:587`,
    /// `smtps://…` for implicit TLS); `SMTP_URL` in the service.
    pub url_secret: SecretKeyRef,
    /// The sender address (`SMTP_FROM`), e.g. `Shop <orders@example.com>`.
    #[x_kube(validation = Rule::new("self != ''").message("email.from must not be empty"))]
    pub from: String,
}

/// The RabbitMQ the platform uses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Secret key holding the AMQP URL (`amqp://user:password@host:5672/%2f`).
    pub url_secret: SecretKeyRef,
    /// RabbitMQ management API base URL (`http://rabbitmq:15672`, or
    /// `https://…` verified like the broker, see `tls`), used with the AMQP
    /// URL's credentials to read queue depth including unacknowledged
    /// messages. Without it the depth comes from AMQP (ready messages only).
    /// The credentials are sent only when its host is the AMQP URL's host
    /// (see `allowCredentialsToManagementHost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_url: Option<String>,
    /// Explicit opt-in: the host of `managementUrl` that may receive the
    /// broker credentials although it is not the AMQP URL's host (e.g. a
    /// separate management endpoint of the same RabbitMQ). Must equal the
    /// management URL's host. Without it such a host gets no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("broker.allowCredentialsToManagementHost must not be empty"))]
    pub allow_credentials_to_management_host: Option<String>,
    /// TLS to the broker: the AMQP URL must then be `amqps://`, and the CA
    /// verifies it, for the operator and the services, and an `https://`
    /// management URL. Without it `amqps://` and `https://` are verified with
    /// the system trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BrokerTlsSpec>,
    /// Queue type of every queue. Fixed at creation: RabbitMQ cannot convert a queue.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("queueType cannot be changed after creation: RabbitMQ cannot convert existing queues"))]
    pub queue_type: QueueTypeSpec,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueTypeSpec {
    #[default]
    Quorum,
    Classic,
}

/// TLS to the broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerTlsSpec {
    /// Secret key holding the CA certificate(s), PEM, that signed the broker's
    /// certificate; the only trust anchor used. Mounted into the services at
    /// `/etc/saga/tls/broker-ca.pem` (`AMQP_TLS_CA_FILE`).
    pub ca_secret: SecretKeyRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// TLS to PostgreSQL, for every service (libpq's `PGSSLMODE` and
    /// `PGSSLROOTCERT`, which the services' driver reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DatabaseTlsSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTlsSpec {
    /// Secret key holding the CA certificate(s), PEM, of the PostgreSQL
    /// server; mounted at `/etc/saga/tls/db-ca.pem` (`PGSSLROOTCERT`).
    pub ca_secret: SecretKeyRef,
    /// `PGSSLMODE`: `verify-full` (default: CA and host name checked),
    /// `verify-ca` (CA only) or `require` (encrypted; libpq then also checks
    /// the CA because a root certificate is given).
    #[serde(default)]
    pub ssl_mode: SslMode,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Require,
    VerifyCa,
    #[default]
    VerifyFull,
}

impl SslMode {
    /// The `PGSSLMODE` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    #[x_kube(validation = Rule::new("self != ''").message("secret name must not be empty"))]
    pub name: String,
    #[x_kube(validation = Rule::new("self != ''").message("secret key must not be empty"))]
    pub key: String,
}

/// Retries of a failing message (exponential backoff), then dead-lettering
/// to `{platform}.{queue}.dlq`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Deliveries in all, the first one included, before a message is dead-lettered.
    #[serde(default = "default_max_attempts")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 20").message("retry.maxAttempts must be between 1 and 20"))]
    pub max_attempts: u32,
    /// Delay before the second delivery, in milliseconds.
    #[serde(default = "default_initial_delay_ms")]
    #[x_kube(validation = Rule::new("self > 0").message("retry.initialDelayMs must be greater than 0"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("retry.initialDelayMs cannot be changed after creation: the retry queues' delays are fixed on RabbitMQ; create a SagaPlatform with a new platform name instead"))]
    pub initial_delay_ms: u64,
    /// Factor by which each further delay grows.
    #[serde(default = "default_multiplier")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10").message("retry.multiplier must be between 1 and 10"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("retry.multiplier cannot be changed after creation: the retry queues' delays are fixed on RabbitMQ; create a SagaPlatform with a new platform name instead"))]
    pub multiplier: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_max_attempts(),
            initial_delay_ms: default_initial_delay_ms(),
            multiplier: default_multiplier(),
        }
    }
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_delay_ms() -> u64 {
    500
}
fn default_multiplier() -> u32 {
    4
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SagaSpec {
    /// A saga step with no reply within this many seconds is compensated (FAILED `timeout`).
    #[serde(default = "default_step_timeout")]
    #[x_kube(validation = Rule::new("self > 0").message("saga.stepTimeoutSeconds must be greater than 0"))]
    pub step_timeout_seconds: u64,
}

impl Default for SagaSpec {
    fn default() -> Self {
        SagaSpec { step_timeout_seconds: default_step_timeout() }
    }
}

fn default_step_timeout() -> u64 {
    10
}

/// OTLP trace export of the services (the `OTEL_*` environment variables).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// OTLP/HTTP endpoint of a collector or Jaeger (`http://jaeger-collector:4318`);
    /// spans go to `<endpoint>/v1/traces` (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s]+$')").message("tracing.otlpEndpoint must be an http:// or https:// URL"))]
    pub otlp_endpoint: String,
    /// Fraction of new traces recorded, 0 to 1 (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`).
    /// A caller's sampling decision (the `traceparent` flag) is always followed.
    /// Without it every new trace is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("tracing.samplerRatio must be between 0 and 1"))]
    pub sampler_ratio: Option<f64>,
    /// Extra resource attributes of every span (`OTEL_RESOURCE_ATTRIBUTES`),
    /// e.g. `deployment.environment: prod`. `service.name` is the service's
    /// binary and `service.namespace` the platform.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_attributes: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret key holding the HS256 token secret (at least 32 bytes).
    pub jwt_secret: SecretKeyRef,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Leave exchanges, queues and their messages on the broker.
    #[default]
    Retain,
    /// Delete the platform's exchanges and queues (and their messages).
    Delete,
}

/// One of the three services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Container image.
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,
    /// Replicas when autoscaling is not set.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must not be negative"))]
    pub replicas: i32,
    /// Secret key holding the service's PostgreSQL URL.
    pub database_url_secret: SecretKeyRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Seconds a rollout may make no progress before the Deployment reports
    /// `ProgressDeadlineExceeded` (and `ServicesAvailable` turns False with
    /// that reason). Kubernetes' default (600) when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("progressDeadlineSeconds must be at least 1"))]
    pub progress_deadline_seconds: Option<i32>,
    /// A PodDisruptionBudget for the service's pods (removed again when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,
    /// A NetworkPolicy for the service's pods: ingress only to the HTTP port,
    /// only from the listed peers (removed again when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// Scale on the depth of the service's queue; owns the replica count when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// Exactly one of `minAvailable` and `maxUnavailable` (pods).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.minAvailable) != has(self.maxUnavailable)").message("disruptionBudget needs exactly one of minAvailable and maxUnavailable"))]
pub struct DisruptionBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("disruptionBudget.minAvailable must not be negative"))]
    pub min_available: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("disruptionBudget.maxUnavailable must not be negative"))]
    pub max_unavailable: Option<i32>,
}

/// Who may reach the service's HTTP port. An empty list admits nobody.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub allow_from: Vec<NetworkPeerSpec>,
}

/// Pods with `podLabels` (all pods when empty) in this namespace, or, with
/// `namespaceLabels`, in the namespaces carrying those labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPeerSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

fn default_replicas() -> i32 {
    1
}

/// Container resources, as in a Pod spec (`cpu: 100m`, `memory: 128Mi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// Autoscaling as the Horizontal Pod Autoscaler v2 does it, on a RabbitMQ
/// metric of the service queue: desired = ceil(value / target), stabilized
/// per direction, limited by the scaling policies, then bounded by
/// [minReplicas, maxReplicas].
///
/// `metric: QueueLength` (default): value = ready + unacknowledged messages,
/// target `targetQueueDepthPerReplica`. `metric: MessageRate`: value = the
/// queue's publish rate (messages/s, management API `message_stats`), target
/// `targetMessageRatePerReplica`.
///
/// `behavior.scaleUp` / `behavior.scaleDown` are HPA's scaling rules. Without
/// them the older fields apply: scale-up at most `maxScaleUpStep` pods per
/// `stepPeriodSeconds` (no window), scale-down at most `maxScaleDownStep`
/// pods per `stepPeriodSeconds` after `stabilizationWindowSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("(has(self.metric) && self.metric == 'MessageRate') || has(self.targetQueueDepthPerReplica)").message("autoscaling.targetQueueDepthPerReplica is required with metric QueueLength"))]
#[x_kube(validation = Rule::new("!has(self.metric) || self.metric != 'MessageRate' || has(self.targetMessageRatePerReplica)").message("autoscaling.targetMessageRatePerReplica is required with metric MessageRate"))]
pub struct AutoscalingSpec {
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.minReplicas must be at least 1"))]
    pub min_replicas: i32,
    #[x_kube(validation = Rule::new("self <= 100").message("autoscaling.maxReplicas must be at most 100"))]
    pub max_replicas: i32,
    /// What to scale on: `QueueLength` (default) or `MessageRate`.
    #[serde(default)]
    pub metric: ScalingMetric,
    /// Messages one replica is expected to keep up with (metric `QueueLength`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("autoscaling.targetQueueDepthPerReplica must be greater than 0"))]
    pub target_queue_depth_per_replica: Option<u64>,
    /// Messages per second one replica is expected to handle (metric
    /// `MessageRate`; the queue's publish rate from the management API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("autoscaling.targetMessageRatePerReplica must be greater than 0"))]
    pub target_message_rate_per_replica: Option<f64>,
    /// Relative deviation from the target that causes no change (0.1 = ±10 %).
    #[serde(default = "default_tolerance")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self < 1.0").message("autoscaling.tolerance must be at least 0 and below 1"))]
    pub tolerance: f64,
    /// Scale-down waits until the highest recommendation of this window allows
    /// it (used when `behavior.scaleDown` is not set).
    #[serde(default = "default_stabilization")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("autoscaling.stabilizationWindowSeconds must be between 0 and 3600"))]
    pub stabilization_window_seconds: u32,
    /// Most replicas added per `stepPeriodSeconds` (used when `behavior.scaleUp` is not set).
    #[serde(default = "default_scale_up_step")]
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.maxScaleUpStep must be at least 1"))]
    pub max_scale_up_step: i32,
    /// Most replicas removed per `stepPeriodSeconds` (used when `behavior.scaleDown` is not set).
    #[serde(default = "default_scale_down_step")]
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.maxScaleDownStep must be at least 1"))]
    pub max_scale_down_step: i32,
    /// The period of `maxScaleUpStep` and `maxScaleDownStep`.
    #[serde(default = "default_step_period")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("autoscaling.stepPeriodSeconds must be between 1 and 3600"))]
    pub step_period_seconds: u32,
    /// HPA v2 scaling rules per direction; each replaces the older fields of its direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<ScalingBehavior>,
}

/// The metric autoscaling follows.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScalingMetric {
    /// Ready + unacknowledged messages of the service queue.
    #[default]
    QueueLength,
    /// Messages published to the service queue per second (management API).
    MessageRate,
}

/// Scaling rules for both directions, as `HorizontalPodAutoscalerBehavior`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// One direction's rules, as `HPAScalingRules`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.selectPolicy) && self.selectPolicy == 'Disabled') || size(self.policies) > 0").message("autoscaling.behavior: a direction needs at least one policy unless selectPolicy is Disabled"))]
pub struct ScalingRules {
    /// Recommendations of this many seconds count: scale-up goes only to the
    /// lowest of them, scale-down only to the highest.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("autoscaling.behavior stabilizationWindowSeconds must be between 0 and 3600"))]
    pub stabilization_window_seconds: u32,
    /// Which policy wins when there are several: `Max` (the largest change,
    /// default), `Min` (the smallest), or `Disabled` (no change in this direction).
    #[serde(default)]
    pub select_policy: SelectPolicy,
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub policies: Vec<ScalingPolicy>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SelectPolicy {
    #[default]
    Max,
    Min,
    Disabled,
}

/// At most `value` pods (`Pods`) or `value` percent of the count at the start
/// of the period (`Percent`) changed per `periodSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub type_: PolicyType,
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.behavior policy value must be at least 1"))]
    pub value: i32,
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1800").message("autoscaling.behavior policy periodSeconds must be between 1 and 1800"))]
    pub period_seconds: u32,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyType {
    Pods,
    Percent,
}

fn default_step_period() -> u32 {
    15
}

fn default_tolerance() -> f64 {
    0.1
}
fn default_stabilization() -> u32 {
    300
}
fn default_scale_up_step() -> i32 {
    4
}
fn default_scale_down_step() -> i32 {
    1
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaPlatformStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Messages waiting (ready + unacknowledged) in the three service queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Where the queue depth came from: `management-api` or `amqp` (ready messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth_source: Option<String>,
    /// `retry.maxAttempts` the broker's retry queues were last reconciled to;
    /// when the spec lowers it, the surplus retry queues are removed once the
    /// services' rollout completed (no pod of the old value runs), each once empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_max_attempts: Option<u32>,
    #[serde(default)]
    pub order: ServiceStatus,
    #[serde(default)]
    pub payment: ServiceStatus,
    #[serde(default)]
    pub inventory: ServiceStatus,
    #[serde(default)]
    pub notification: ServiceStatus,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get sp`.
    pub replicas: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Autoscaling recommendations inside the stabilization window; kept here
    /// so a restarted operator does not scale down early.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<Recommendation>,
    /// Scale events of the longest policy period (the policies count them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_events: Vec<ScaleEvent>,
    /// The autoscaler's last decision and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
}

/// What the autoscaler saw and decided, as an HPA reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// `QueueLength` or `MessageRate`.
    pub metric: String,
    /// The metric's value (messages, or messages/s), as read.
    pub value: String,
    /// The target per replica.
    pub target: String,
    /// Replicas the metric alone asks for.
    pub recommended_replicas: i32,
    /// After the stabilization windows.
    pub stabilized_replicas: i32,
    /// After the policies and min/max: what the Deployment gets.
    pub replicas: i32,
    /// `DesiredWithinRange`, `ScaleUpLimit`, `ScaleDownLimit`,
    /// `TooManyReplicas` or `TooFewReplicas` (HPA's `ScalingLimited` reasons).
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct ScaleEvent {
    /// Unix time in seconds.
    pub at: i64,
    /// Replicas added (positive) or removed (negative).
    pub change: i32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct Recommendation {
    /// Unix time in seconds.
    pub at: i64,
    pub replicas: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339; changes only when `status` flips.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl SagaPlatform {
    /// The platform name: `spec.platform`, else the resource name.
    pub fn platform_name(&self) -> String {
        self.spec.platform.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
