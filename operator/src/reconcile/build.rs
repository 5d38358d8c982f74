//! Desired state as pure functions of the resource: the broker topology spec
//! and, per service, a ConfigMap, a Service and a Deployment. No I/O here, so
//! golden tests pin every field.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretProjection, SecurityContext, Service, ServicePort,
    ServiceSpec as K8sServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec as K8sNetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use saga_common::component::{SECRET_SETTINGS, settings_env};
use saga_common::topology::{QueueType, RetryPolicy, TopologySpec};
use sha2::{Digest, Sha256};

use crate::crd::{DatabaseTlsSpec, QueueTypeSpec, SagaPlatform, SecretKeyRef, ServiceSpec, TracingSpec};

pub const MANAGER: &str = "saga-operator";
/// Pod template annotation that changes whenever the ConfigMap does, so a
/// configuration change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "saga.dev/config-hash";
/// Hash of the Secret values the pods read; a rotation changes it and rolls the pods.
pub const SECRETS_HASH_ANNOTATION: &str = "saga.dev/secrets-hash";
/// Non-root user of the service images (distroless `nonroot`).
const RUN_AS: i64 = 65532;
/// Read-only directory of the CA files the pods verify TLS with.
pub const TLS_DIR: &str = "/etc/saga/tls";
/// The broker's CA under [`TLS_DIR`] (`AMQP_TLS_CA_FILE`).
pub const BROKER_CA_FILE: &str = "broker-ca.pem";
/// PostgreSQL's CA under [`TLS_DIR`] (`PGSSLROOTCERT`).
pub const DB_CA_FILE: &str = "db-ca.pem";
/// Name of the pod volume holding them.
const TLS_VOLUME: &str = "tls";

/// The broker topology a `SagaPlatform` asks for. Shared with `sagactl topology
/// apply -f`, so a resource file declares the same topology with or without
/// Kubernetes.
pub fn topology_spec(platform: &SagaPlatform) -> TopologySpec {
    let retry = &platform.spec.retry;
    TopologySpec {
        platform: platform.platform_name(),
        queue_type: match platform.spec.broker.queue_type {
            QueueTypeSpec::Quorum => QueueType::Quorum,
            QueueTypeSpec::Classic => QueueType::Classic,
        },
        retry: RetryPolicy {
            max_attempts: retry.max_attempts,
            initial_delay: Duration::from_millis(retry.initial_delay_ms),
            multiplier: retry.multiplier,
        },
    }
}

pub use saga_common::component::Component;

/// What a service is in a `SagaPlatform`: its section of the spec and the
/// names of its objects (what a service is anywhere: [`Component`]).
pub trait PlatformComponent {
    fn spec(self, platform: &SagaPlatform) -> &ServiceSpec;
    /// Name of the ConfigMap, Service and Deployment: `{resource}-{service}`.
    fn object_name(self, platform: &SagaPlatform) -> String;
}

impl PlatformComponent for Component {
    fn spec(self, platform: &SagaPlatform) -> &ServiceSpec {
        match self {
            Component::Order => &platform.spec.order,
            Component::Payment => &platform.spec.payment,
            Component::Inventory => &platform.spec.inventory,
            Component::Notification => &platform.spec.notification.service,
        }
    }

    fn object_name(self, platform: &SagaPlatform) -> String {
        format!("{}-{}", platform.metadata.name.as_deref().unwrap_or_default(), self.name())
    }
}

/// The labels that select a service's pods.
pub fn selector_labels(platform: &SagaPlatform, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), component.binary().to_owned()),
        ("app.kubernetes.io/instance".to_owned(), platform.metadata.name.clone().unwrap_or_default()),
    ])
}

pub fn labels(platform: &SagaPlatform, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(platform, component);
    labels.insert("app.kubernetes.io/component".into(), component.name().into());
    labels.insert("app.kubernetes.io/part-of".into(), "saga-platform".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    labels
}

fn metadata(platform: &SagaPlatform, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(component.object_name(platform)),
        namespace: platform.metadata.namespace.clone(),
        labels: Some(labels(platform, component)),
        owner_references: owner_reference(platform).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// Controller owner reference: children are garbage-collected with the
/// resource and their changes trigger its reconcile.
fn owner_reference(platform: &SagaPlatform) -> Option<OwnerReference> {
    platform.controller_owner_ref(&())
}

/// Non-secret settings of one service, as environment variables.
pub fn config_map(platform: &SagaPlatform, component: Component) -> ConfigMap {
    let topology = topology_spec(platform);
    let settings = settings_env(&topology, &format!("0.0.0.0:{}", component.port()));
    let mut data: BTreeMap<String, String> =
        settings.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    data.insert("LOG_FORMAT".into(), "json".into());
    data.insert("RUST_LOG".into(), "info".into());
    if component == Component::Order {
        data.insert("SAGA_STEP_TIMEOUT".into(), format!("{}s", platform.spec.saga.step_timeout_seconds));
    }
    if platform.spec.broker.tls.is_some() {
        data.insert("AMQP_TLS_CA_FILE".into(), format!("{TLS_DIR}/{BROKER_CA_FILE}"));
    }
    if let Some(tls) = database_tls(platform) {
        data.insert("PGSSLMODE".into(), tls.ssl_mode.as_str().into());
        data.insert("PGSSLROOTCERT".into(), format!("{TLS_DIR}/{DB_CA_FILE}"));
    }
    if let Some(tracing) = &platform.spec.tracing {
        data.extend(tracing_env(tracing, component));
    }
    if let (Component::Notification, Some(email)) = (component, &platform.spec.notification.email) {
        data.insert("SMTP_FROM".into(), email.from.clone());
    }
    ConfigMap { metadata: metadata(platform, component), data: Some(data), ..ConfigMap::default() }
}

/// The OpenTelemetry settings of a service (docs/operations.md, "Tracing").
fn tracing_env(tracing: &TracingSpec, component: Component) -> Vec<(String, String)> {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), tracing.otlp_endpoint.clone()),
        ("OTEL_SERVICE_NAME".to_owned(), component.binary().to_owned()),
    ];
    if let Some(ratio) = tracing.sampler_ratio {
        env.push(("OTEL_TRACES_SAMPLER".to_owned(), "parentbased_traceidratio".to_owned()));
        env.push(("OTEL_TRACES_SAMPLER_ARG".to_owned(), ratio.to_string()));
    }
    if !tracing.resource_attributes.is_empty() {
        // W3C Baggage form: `key=value,...`, values percent-encoded.
        let attributes: Vec<String> = tracing
            .resource_attributes
            .iter()
            .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
            .collect();
        env.push(("OTEL_RESOURCE_ATTRIBUTES".to_owned(), attributes.join(",")));
    }
    env
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A ClusterIP Service on port 80 in front of the service's pods.
pub fn service(platform: &SagaPlatform, component: Component) -> Service {
    Service {
        metadata: metadata(platform, component),
        spec: Some(K8sServiceSpec {
            selector: Some(selector_labels(platform, component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The service's Deployment with `replicas` pods (the operator decides the
/// count: the spec's, or the autoscaler's).
/// `secrets_hash` ([`secrets_hash`]) goes into the pod template, so a rotated
/// Secret value rolls the pods.
pub fn deployment(platform: &SagaPlatform, component: Component, replicas: i32, secrets_hash: &str) -> Deployment {
    let spec = component.spec(platform);
    let config = config_map(platform, component);
    let mut template_annotations = BTreeMap::new();
    template_annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash(&config));
    template_annotations.insert(SECRETS_HASH_ANNOTATION.to_owned(), secrets_hash.to_owned());
    let mut env: Vec<EnvVar> =
        SECRET_ENV.iter().zip(secret_refs(platform, component)).map(|(name, key)| secret_env(name, key)).collect();
    env.extend(email_secret(platform, component).map(|secret| secret_env("SMTP_URL", secret)));
    // The root filesystem is read-only; give the process a scratch /tmp.
    let mut volume_mounts =
        vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() }];
    let mut volumes =
        vec![Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }];
    if let Some(volume) = tls_volume(platform) {
        volume_mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(volume);
    }
    let container = Container {
        name: component.name().into(),
        image: Some(spec.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(component.port()),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource { name: component.object_name(platform), optional: None }),
            ..EnvFromSource::default()
        }]),
        env: Some(env),
        // Migrations run at start: allow up to 2 minutes before liveness counts.
        startup_probe: Some(probe("/healthz", 2, 60)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: spec.resources.as_ref().map(|r| ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(platform, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            progress_deadline_seconds: spec.progress_deadline_seconds,
            selector: LabelSelector {
                match_labels: Some(selector_labels(platform, component)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(platform, component)),
                    annotations: Some(template_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The service's PodDisruptionBudget, when the spec asks for one.
pub fn disruption_budget(platform: &SagaPlatform, component: Component) -> Option<PodDisruptionBudget> {
    let budget = component.spec(platform).disruption_budget.as_ref()?;
    Some(PodDisruptionBudget {
        metadata: metadata(platform, component),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(platform, component)),
                match_expressions: None,
            }),
            min_available: budget.min_available.map(IntOrString::Int),
            max_unavailable: budget.max_unavailable.map(IntOrString::Int),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// The service's NetworkPolicy, when the spec asks for one: ingress to the
/// HTTP port from the listed peers only (egress is not restricted).
pub fn network_policy(platform: &SagaPlatform, component: Component) -> Option<NetworkPolicy> {
    let policy = component.spec(platform).network_policy.as_ref()?;
    let selector = |labels: &BTreeMap<String, String>| LabelSelector {
        match_labels: (!labels.is_empty()).then(|| labels.clone()),
        match_expressions: None,
    };
    let from: Vec<NetworkPolicyPeer> = policy
        .allow_from
        .iter()
        .map(|peer| NetworkPolicyPeer {
            pod_selector: Some(selector(&peer.pod_labels)),
            namespace_selector: peer.namespace_labels.as_ref().map(selector),
            ip_block: None,
        })
        .collect();
    let ingress = (!from.is_empty()).then(|| {
        vec![NetworkPolicyIngressRule {
            from: Some(from),
            ports: Some(vec![NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(component.port()))),
                protocol: Some("TCP".into()),
                end_port: None,
            }]),
        }]
    });
    Some(NetworkPolicy {
        metadata: metadata(platform, component),
        spec: Some(K8sNetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(platform, component)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress,
            egress: None,
        }),
    })
}

fn database_tls(platform: &SagaPlatform) -> Option<&DatabaseTlsSpec> {
    platform.spec.database.as_ref().and_then(|d| d.tls.as_ref())
}

/// The CA files of `broker.tls` and `database.tls` as one read-only projected
/// volume (only the named keys, as fixed file names), or `None` without TLS.
fn tls_volume(platform: &SagaPlatform) -> Option<Volume> {
    let file = |secret: &SecretKeyRef, path: &str| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.name.clone(),
            items: Some(vec![KeyToPath { key: secret.key.clone(), path: path.into(), mode: None }]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    };
    let mut sources = Vec::new();
    if let Some(tls) = &platform.spec.broker.tls {
        sources.push(file(&tls.ca_secret, BROKER_CA_FILE));
    }
    if let Some(tls) = database_tls(platform) {
        sources.push(file(&tls.ca_secret, DB_CA_FILE));
    }
    (!sources.is_empty()).then(|| Volume {
        name: TLS_VOLUME.into(),
        projected: Some(ProjectedVolumeSource { sources: Some(sources), default_mode: Some(0o444) }),
        ..Volume::default()
    })
}

fn probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn quantities(values: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!values.is_empty()).then(|| values.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect())
}

/// The environment variables the Secret keys of [`secret_refs`] become, in the same order.
const SECRET_ENV: [&str; 3] = SECRET_SETTINGS;

/// The Secret keys a service's pods read, in a fixed order: its database
/// URL, the broker URL, the JWT secret (the env of [`SECRET_ENV`]), then the
/// broker's and the database's CA when TLS is configured (files), and for the
/// notification service the SMTP URL when e-mail is configured.
pub fn secret_refs(platform: &SagaPlatform, component: Component) -> Vec<&SecretKeyRef> {
    let mut refs = vec![
        &component.spec(platform).database_url_secret,
        &platform.spec.broker.url_secret,
        &platform.spec.auth.jwt_secret,
    ];
    refs.extend(platform.spec.broker.tls.as_ref().map(|tls| &tls.ca_secret));
    refs.extend(database_tls(platform).map(|tls| &tls.ca_secret));
    refs.extend(email_secret(platform, component));
    refs
}

/// The SMTP URL's Secret key, read by the notification service when e-mail is configured.
fn email_secret(platform: &SagaPlatform, component: Component) -> Option<&SecretKeyRef> {
    match component {
        Component::Notification => platform.spec.notification.email.as_ref().map(|email| &email.url_secret),
        _ => None,
    }
}

/// The names of every Secret the resource refers to (broker URL and CA, the
/// databases' URLs and CA, the JWT secret): a change to one of them is a
/// change to the desired state.
pub fn referenced_secret_names(platform: &SagaPlatform) -> std::collections::BTreeSet<&str> {
    Component::ALL.iter().flat_map(|c| secret_refs(platform, *c)).map(|r| r.name.as_str()).collect()
}

/// First 16 hex digits of the SHA-256 of those keys' values (`None`: unreadable).
/// Only a hash reaches the Deployment, never a value.
pub fn secrets_hash(values: &[Option<String>]) -> String {
    let mut hasher = Sha256::new();
    for value in values {
        match value {
            Some(value) => {
                hasher.update([1]);
                hasher.update(value.as_bytes());
            }
            None => hasher.update([0]),
        }
        hasher.update([0xff]);
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// First 16 hex digits of the SHA-256 of the ConfigMap's data.
fn config_hash(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}
