//! *observe*: what the desired state depends on besides the resource — the
//! broker target from its Secrets; the broker side (the claim on the names,
//! the topology, surplus retry tiers, queue depth and message rates); the
//! Secret values the pods read (as hashes).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use saga_common::topology::Topology;

use super::build::{self, Component};
use super::status::{MANAGEMENT_API_AVAILABLE, Observation, TOPOLOGY_READY};
use super::{Context, Error, owner, read, validate};
use crate::broker::{self as broker_side, BrokerError, DepthSource, MessageRates, Target, TopologyOutcome};
use crate::crd::SagaPlatform;
use crate::tls::TlsClient;

/// What the broker side of one reconcile found.
pub(super) struct BrokerObservation {
    pub observed: Vec<Observation>,
    pub depths: HashMap<&'static str, u64>,
    pub rates: HashMap<&'static str, MessageRates>,
    pub depth_source: Option<DepthSource>,
    pub depth_error: Option<String>,
    /// `status.topologyMaxAttempts` after this pass.
    pub topology_max_attempts: Option<u32>,
}

/// Claims the broker names, reconciles the topology (and prunes surplus
/// retry tiers once claimed), and reads each service queue's depth and rates.
/// Problems become observations (conditions) and Warning events, not errors.
pub(super) async fn broker(
    ctx: &Context,
    platform: &SagaPlatform,
    reference: &ObjectReference,
    target: &Result<Target, TargetProblem>,
    previous_max_attempts: Option<u32>,
) -> BrokerObservation {
    let platform_name = platform.platform_name();
    let topology = Topology::new(build::topology_spec(platform));
    let mut observed = Vec::new();
    let mut depths: HashMap<&'static str, u64> = HashMap::new();
    let mut rates: HashMap<&'static str, MessageRates> = HashMap::new();
    let mut depth_source = None;
    let mut depth_error = None;
    let mut topology_ok = false;
    let mut topology_max_attempts = previous_max_attempts;
    match target {
        Err(problem) => {
            let message = problem.message.clone();
            ctx.event(reference, EventType::Warning, problem.reason, "ReadSecret", message.clone()).await;
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
                    ctx.event(reference, EventType::Warning, "Conflict", "ClaimBrokerNames", message.clone()).await;
                    observed.push(Observation::new(TOPOLOGY_READY, false, "Conflict", message));
                }
                Ok(outcome) => {
                    if let TopologyOutcome::Declared { missing } = outcome {
                        let note = format!("declared the topology of platform {platform_name} ({missing} was missing)");
                        ctx.event(reference, EventType::Normal, "TopologyDeclared", "DeclareTopology", note).await;
                    }
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
                    ctx.event(reference, EventType::Warning, reason, "DeclareTopology", message.clone()).await;
                    observed.push(Observation::new(TOPOLOGY_READY, false, reason, message));
                }
            }
            if topology_ok {
                // Claimed by this resource: its surplus retry tiers may go.
                let max_attempts = platform.spec.retry.max_attempts;
                match previous_max_attempts {
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
                                        reference,
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
                            reference,
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
    BrokerObservation { observed, depths, rates, depth_source, depth_error, topology_max_attempts }
}

/// Why a reconcile cannot reach the broker: a condition reason and a message
/// (never a credential).
#[derive(Debug, Clone)]
pub(super) struct TargetProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The broker URL (from its Secret) and, with `broker.tls`, the CA (from its
/// Secret) that verifies it. `Err` of the outer result: the API failed.
pub(super) async fn broker_target(
    ctx: &Context,
    platform: &SagaPlatform,
) -> Result<Result<Target, TargetProblem>, Error> {
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

/// Per service, the hash of the Secret values its pods read; each Secret is read once.
pub(super) async fn secret_hashes(
    ctx: &Context,
    platform: &SagaPlatform,
) -> Result<HashMap<&'static str, String>, Error> {
    let refs: Vec<_> = Component::ALL.iter().flat_map(|c| build::secret_refs(platform, *c)).collect();
    let values = read::secret_values(&ctx.client, &platform.namespace().unwrap_or_default(), &refs).await?;
    Ok(Component::ALL
        .iter()
        .zip(values.chunks(refs.len() / Component::ALL.len()))
        .map(|(c, v)| (c.name(), build::secrets_hash(v)))
        .collect())
}
