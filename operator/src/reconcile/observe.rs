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
    /// The broker names are claimed and the topology declared: surplus retry
    /// tiers may be pruned ([`retry_tiers`]).
    pub topology_ok: bool,
}

/// Claims the broker names, reconciles the topology, and reads each service
/// queue's depth and rates (surplus retry tiers: [`retry_tiers`], after the apply).
/// Problems become observations (conditions) and Warning events, not errors.
pub(super) async fn broker(
    ctx: &Context,
    platform: &SagaPlatform,
    reference: &ObjectReference,
    target: &Result<Target, TargetProblem>,
) -> BrokerObservation {
    let platform_name = platform.platform_name();
    let topology = Topology::new(build::topology_spec(platform));
    let mut observed = Vec::new();
    let mut depths: HashMap<&'static str, u64> = HashMap::new();
    let mut rates: HashMap<&'static str, MessageRates> = HashMap::new();
    let mut depth_source = None;
    let mut depth_error = None;
    let mut topology_ok = false;
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
                let queue = topology.queue_name(component.destination());
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
    BrokerObservation { observed, depths, rates, depth_source, depth_error, topology_ok }
}

/// What the broker phase reports when it did not finish within `deadline`:
/// the topology unconfirmed (so the broker retry period applies), no depth.
/// The connection it used is dropped, its channels in an unknown state.
pub(super) fn broker_timed_out(
    ctx: &Context,
    target: &Result<Target, TargetProblem>,
    deadline: std::time::Duration,
) -> BrokerObservation {
    let message = format!("the broker did not answer within {deadline:?} (the broker phase's deadline)");
    if let Ok(target) = target {
        ctx.brokers.forget(target);
        let broker = saga_common::amqp::redact(target.url());
        tracing::warn!(%broker, ?deadline, "broker phase timed out: claim, topology and queue depth unconfirmed");
    }
    BrokerObservation {
        observed: vec![Observation::new(TOPOLOGY_READY, false, "BrokerTimeout", message.clone())],
        depths: HashMap::new(),
        rates: HashMap::new(),
        depth_source: None,
        depth_error: Some(message),
        topology_ok: false,
    }
}

/// The surplus retry tiers of a lowered `retry.maxAttempts` (call only once
/// the names are claimed: [`BrokerObservation::topology_ok`]). A service
/// publishes into tier `n` while `n < maxAttempts` of its pod's environment,
/// so the tiers are removed (each once empty) only when no pod of an older
/// template can still run: `rolling` names the services whose rollout has not
/// completed ([`super::status::old_template_may_run`]); while it is not empty every
/// surplus tier is kept. Kept tiers are named in `TopologyReady`'s message.
/// Returns `status.topologyMaxAttempts` after this pass: `maxAttempts` once no
/// surplus tier is left, else `previous_max_attempts`.
pub(super) async fn retry_tiers(
    ctx: &Context,
    platform: &SagaPlatform,
    reference: &ObjectReference,
    target: &Target,
    previous_max_attempts: Option<u32>,
    rolling: &[&str],
    observed: &mut [Observation],
) -> Option<u32> {
    let max_attempts = platform.spec.retry.max_attempts;
    let old = match previous_max_attempts {
        Some(old) if old <= max_attempts => return Some(max_attempts),
        old => old,
    };
    let topology = Topology::new(build::topology_spec(platform));
    let to = old.map(|old| old.saturating_sub(1));
    let remove = rolling.is_empty();
    let pruned = match ctx.brokers.prune_retry_queues(target, &topology, max_attempts, to, remove).await {
        Ok(pruned) => pruned,
        Err(error) => {
            tracing::warn!(%error, "cannot prune the surplus retry queues");
            return previous_max_attempts;
        }
    };
    if !pruned.removed.is_empty() {
        let note =
            format!("retry.maxAttempts {max_attempts}: removed the surplus retry queues {}", pruned.removed.join(", "));
        ctx.event(reference, EventType::Normal, "RetryQueuesRemoved", "PruneTopology", note).await;
    }
    if pruned.kept.is_empty() {
        return Some(max_attempts);
    }
    let until = if remove { "empty".to_owned() } else { format!("the rollout completes ({})", rolling.join(", ")) };
    if let Some(topology_ready) = observed.iter_mut().find(|o| o.type_ == TOPOLOGY_READY) {
        topology_ready.message = format!(
            "topology matches the definition; surplus retry queues kept until {until}: {}",
            pruned.kept.join(", ")
        );
    }
    previous_max_attempts
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
    let per_component: Vec<_> = Component::ALL.iter().map(|c| build::secret_refs(platform, *c)).collect();
    let refs: Vec<_> = per_component.iter().flatten().copied().collect();
    let mut values = read::secret_values(&ctx.client, &platform.namespace().unwrap_or_default(), &refs).await?;
    // In `refs` order: each component's values follow the previous one's.
    Ok(Component::ALL
        .iter()
        .zip(&per_component)
        .map(|(c, own)| {
            let rest = values.split_off(own.len());
            (c.name(), build::secrets_hash(&std::mem::replace(&mut values, rest)))
        })
        .collect())
}
