//! *cleanup*: the deletion path, behind the finalizer. First the drain
//! ([`drain`], before kube's finalizer helper, which drops the finalizer as
//! soon as its cleanup returns): the order API's Service stops selecting pods
//! (no new sagas), the services keep consuming until their queues and this
//! resource's retry queues are empty, then every Deployment goes to zero replicas; only then does `deletionPolicy`
//! decide what happens to the broker topology ([`cleanup`]). The whole is
//! bounded by `CLEANUP_TIMEOUT`, counted from the deletion request.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use saga_common::topology::{Destination, Topology, retry_queue_name};
use tracing::instrument;

use super::build::{self, Component, PlatformComponent, SECRETS_HASH_ANNOTATION};
use super::observe::broker_target;
use super::status::{self, Observation};
use super::{Context, Error, apply, owner};
use crate::broker::{self as broker_side, BrokerError, DepthSource, Target};
use crate::crd::{DeletionPolicy, SagaPlatform, SagaPlatformStatus};

/// How often a draining resource looks at its queues again.
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(2);

/// What the drain does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Messages wait (or the count is unknown): the services keep consuming.
    Wait,
    /// The service and retry queues are empty: scale every service to zero, then look again.
    StopServices,
    /// Empty, and no service runs: apply the deletion policy.
    Drained,
    /// `CLEANUP_TIMEOUT` passed: stop the services and apply the policy anyway.
    TimedOut,
}

/// The drain's decision. `queued`: messages (ready + unacknowledged) in the
/// service queues; `retrying`: messages in this resource's retry queues, which
/// come back to the service queues when their TTL ends, so the services must
/// still run then (`None`: cannot be counted); `stopped`: no service has a
/// replica; `elapsed`: since the deletion request.
pub fn drain_step(
    queued: Option<u64>,
    retrying: Option<u64>,
    stopped: bool,
    elapsed: Duration,
    timeout: Duration,
) -> DrainStep {
    match (queued, retrying) {
        _ if elapsed >= timeout => DrainStep::TimedOut,
        (Some(0), Some(0)) if stopped => DrainStep::Drained,
        (Some(0), Some(0)) => DrainStep::StopServices,
        _ => DrainStep::Wait,
    }
}

/// Runs before the deletion policy while the finalizer is on: `Some(action)`
/// while the queues drain (requeue after [`DRAIN_INTERVAL`]), `None` once the
/// policy may apply (drained, timed out, or nothing to drain with).
#[instrument(skip_all, fields(platform = %platform.platform_name()))]
pub(super) async fn drain(platform: &SagaPlatform, ctx: &Context) -> Result<Option<Action>, Error> {
    let reference = platform.object_ref(&());
    let platform_name = platform.platform_name();
    let target = match broker_target(ctx, platform).await? {
        Ok(target) => target,
        // No broker to read: nothing to wait for (cleanup says CleanupSkipped).
        Err(_) => return stop_services(ctx, platform).await.map(|()| None),
    };
    // Bounded by what is left of the timeout: a hanging broker or management
    // API never stretches one pass past the deadline.
    let budget = ctx.settings.cleanup_timeout.saturating_sub(deleting_for(platform));
    let counts = match tokio::time::timeout(budget, counts_if_owned(ctx, platform, &target)).await {
        // The queues are another resource's: not this deletion's to wait for.
        Ok(None) => return stop_services(ctx, platform).await.map(|()| None),
        Ok(Some(counts)) => counts,
        Err(_) => Err("not counted before the cleanup timeout".to_owned()),
    };
    let live = live_deployments(ctx, platform).await?;
    close_edge(ctx, platform, &live).await?;
    let queued = counts.as_ref().ok().and_then(|c| total(&c.service));
    let retrying = counts.as_ref().ok().and_then(|c| total(&c.retry));
    let stopped = services_stopped(&live);
    let elapsed = deleting_for(platform);
    let step = drain_step(queued, retrying, stopped, elapsed, ctx.settings.cleanup_timeout);
    tracing::info!(?step, ?queued, ?retrying, stopped, ?elapsed, "draining");
    let described = describe(&counts);
    match step {
        DrainStep::Wait | DrainStep::StopServices => {
            if step == DrainStep::StopServices {
                stop_services(ctx, platform).await?;
            }
            let message = draining_message(step, &described, elapsed, ctx.settings.cleanup_timeout);
            // status.queueDepth stays what the CRD says: the service queues.
            write_draining(ctx, platform, &reference, message, queued).await?;
            Ok(Some(Action::requeue(DRAIN_INTERVAL)))
        }
        DrainStep::Drained => {
            let note =
                format!("the service and retry queues of platform {platform_name} are empty and the services stopped");
            ctx.event(&reference, EventType::Normal, "Drained", "Cleanup", note).await;
            Ok(None)
        }
        DrainStep::TimedOut => {
            stop_services(ctx, platform).await?;
            let note = format!(
                "gave up waiting for the service and retry queues of platform {platform_name} to drain after {:?} ({described}); applying deletionPolicy {:?}",
                ctx.settings.cleanup_timeout, platform.spec.deletion_policy
            );
            ctx.event(&reference, EventType::Warning, "CleanupAbandoned", "Cleanup", note).await;
            Ok(None)
        }
    }
}

/// The service and retry queues' counts once this resource holds the broker
/// names (`Err`: the claim failed); `None` when another resource holds them.
async fn counts_if_owned(ctx: &Context, platform: &SagaPlatform, target: &Target) -> Option<Result<Counts, String>> {
    match ctx.brokers.claim(target, &platform.platform_name(), &owner(platform)).await {
        Err(BrokerError::Claimed { .. }) => None,
        Err(error) => Some(Err(error.to_string())),
        Ok(()) => {
            let service = queue_counts(ctx, platform, target).await;
            let retry = retry_counts(ctx, platform, target).await;
            Some(Ok(Counts { service, retry }))
        }
    }
}

/// A queue and its message count (or why it could not be read).
type QueueCount = (String, Result<u64, String>);

/// What a drain pass counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    /// The three service queues.
    pub service: Vec<QueueCount>,
    /// This resource's retry queues (every tier of every service queue).
    pub retry: Vec<QueueCount>,
}

/// The sum, `None` when any count is unknown.
fn total(counts: &[QueueCount]) -> Option<u64> {
    counts.iter().map(|(_, n)| n.as_ref().ok().copied()).sum()
}

/// Per retry queue of this resource, its ready messages (an AMQP passive
/// declare: nothing consumes a retry queue, so ready is all, and the count is
/// current where the management API's lags). The tiers of `retry.maxAttempts`,
/// and the surplus tiers of a lowered `maxAttempts` not yet removed (already
/// removed ones count 0).
async fn retry_counts(ctx: &Context, platform: &SagaPlatform, target: &Target) -> Vec<QueueCount> {
    let name = platform.platform_name();
    let spec_tiers = platform.spec.retry.max_attempts.saturating_sub(1);
    let declared_tiers = platform.status.as_ref().and_then(|s| s.topology_max_attempts).unwrap_or(0).saturating_sub(1);
    let mut counts = Vec::new();
    for destination in Destination::ALL {
        for attempt in 1..=spec_tiers.max(declared_tiers) {
            let queue = retry_queue_name(&name, destination, attempt);
            let count = match ctx.brokers.queue_depth(target, None, &queue).await.depth {
                Ok((ready, _)) => Ok(ready),
                Err(error) if attempt > spec_tiers && error.is_not_found() => Ok(0),
                Err(error) => Err(error.to_string()),
            };
            counts.push((queue, count));
        }
    }
    counts
}

/// Per service queue, its message count or why it could not be read: ready +
/// unacknowledged from the management API when configured (and allowed the
/// credentials), at least the ready messages of an AMQP passive declare.
async fn queue_counts(ctx: &Context, platform: &SagaPlatform, target: &Target) -> Vec<QueueCount> {
    let topology = Topology::new(build::topology_spec(platform));
    let broker = &platform.spec.broker;
    let management_url = broker.management_url.as_deref().filter(|url| {
        let allowed = broker.allow_credentials_to_management_host.as_deref();
        broker_side::management_credentials_allowed(target.url(), url, allowed).is_ok()
    });
    let mut counts = Vec::new();
    for component in Component::ALL {
        let queue = topology.queue_name(component.destination());
        let read = ctx.brokers.queue_depth(target, management_url, &queue).await.depth;
        // The management API's counts lag (statistics interval): a queue just
        // published to may read 0 there. The passive declare's ready count is
        // current; the larger of the two decides.
        let count = match read {
            Ok((depth, DepthSource::ManagementApi)) => {
                match ctx.brokers.queue_depth(target, None, &queue).await.depth {
                    Ok((ready, _)) => Ok(depth.max(ready)),
                    Err(error) => Err(error),
                }
            }
            other => other.map(|(depth, _)| depth),
        };
        counts.push((queue, count.map_err(|e| e.to_string())));
    }
    counts
}

/// `queue N, queue N; retry queues: queue N` (or why they could not be
/// counted): every service queue, and the retry queues that hold messages or
/// could not be read (else how many, all empty).
fn describe(counts: &Result<Counts, String>) -> String {
    let one = |(queue, count): &QueueCount| match count {
        Ok(count) => format!("{queue} {count}"),
        Err(error) => format!("{queue} unknown ({error})"),
    };
    match counts {
        Err(error) => format!("message counts unknown: {error}"),
        Ok(Counts { service, retry }) => {
            let service = service.iter().map(one).collect::<Vec<_>>().join(", ");
            let waiting: Vec<String> = retry.iter().filter(|(_, count)| count != &Ok(0)).map(one).collect();
            if waiting.is_empty() {
                format!("{service}; retry queues empty ({})", retry.len())
            } else {
                format!("{service}; retry queues: {}", waiting.join(", "))
            }
        }
    }
}

fn draining_message(step: DrainStep, described: &str, elapsed: Duration, timeout: Duration) -> String {
    let doing = match step {
        DrainStep::StopServices => "service and retry queues empty; scaling the services to zero",
        _ => {
            "waiting for the service and retry queues to drain (the order API takes no new sagas, the services still consume)"
        }
    };
    format!("deletion requested: {doing}: {described}; {}s of {}s", elapsed.as_secs(), timeout.as_secs())
}

/// `Ready=False` with reason `Draining` (other conditions kept), and a
/// `Draining` event when the drain starts.
async fn write_draining(
    ctx: &Context,
    platform: &SagaPlatform,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    message: String,
    remaining: Option<u64>,
) -> Result<(), Error> {
    let previous = platform.status.clone().unwrap_or_default();
    let was_draining = previous.conditions.iter().any(|c| c.type_ == status::READY && c.reason == "Draining");
    if !was_draining {
        ctx.event(reference, EventType::Normal, "Draining", "Cleanup", message.clone()).await;
    }
    let observed = [Observation::new(status::READY, false, "Draining", message)];
    let mut conditions = super::status_conditions(platform, &observed);
    conditions.extend(previous.conditions.iter().filter(|c| c.type_ != status::READY).cloned());
    let queue_depth = remaining.or(previous.queue_depth);
    apply::write_status(ctx, platform, SagaPlatformStatus { conditions, queue_depth, ..previous }).await
}

/// This resource's service Deployments as they are (listed: the Role has no `get`).
async fn live_deployments(ctx: &Context, platform: &SagaPlatform) -> Result<Vec<Deployment>, Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &platform.namespace().unwrap_or_default());
    let selector =
        format!("app.kubernetes.io/managed-by={},app.kubernetes.io/instance={}", build::MANAGER, platform.name_any());
    let uid = platform.metadata.uid.as_deref();
    let listed = deployments.list(&ListParams::default().labels(&selector)).await?;
    Ok(listed.items.into_iter().filter(|d| d.owner_references().iter().any(|o| Some(o.uid.as_str()) == uid)).collect())
}

/// Closes the edge: the order API's Service loses its selector (applied
/// without it, the operator owning that field), so no new saga starts while
/// the order pods go on consuming replies. Only while the order Deployment
/// is still there (children not yet collected): never recreates a Service.
#[instrument(skip_all)]
async fn close_edge(ctx: &Context, platform: &SagaPlatform, live: &[Deployment]) -> Result<(), Error> {
    let order = Component::Order;
    if !live.iter().any(|d| d.name_any() == order.object_name(platform)) {
        return Ok(());
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &platform.namespace().unwrap_or_default());
    let mut service = build::service(platform, order);
    if let Some(spec) = service.spec.as_mut() {
        spec.selector = None;
    }
    apply::apply(&services, &service).await?;
    Ok(())
}

/// Every service's Deployment applied with zero replicas (the live secrets
/// hash kept, so the template does not change); absent ones stay absent.
#[instrument(skip_all)]
async fn stop_services(ctx: &Context, platform: &SagaPlatform) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &platform.namespace().unwrap_or_default());
    let live = live_deployments(ctx, platform).await?;
    for component in Component::ALL {
        let Some(live) = live.iter().find(|d| d.name_any() == component.object_name(platform)) else { continue };
        let template = live.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
        let hash = template.and_then(|m| m.annotations.as_ref()?.get(SECRETS_HASH_ANNOTATION).cloned());
        apply::apply(&deployments, &build::deployment(platform, component, 0, &hash.unwrap_or_default())).await?;
    }
    Ok(())
}

/// True when no service's Deployment wants or has a replica (or it is gone).
fn services_stopped(live: &[Deployment]) -> bool {
    live.iter().all(|d| {
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let running = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        wanted == 0 && running == 0
    })
}

/// The deletion path, once drained: what happens to the topology follows `deletionPolicy`.
#[instrument(skip_all, fields(platform = %platform.platform_name()))]
pub(super) async fn cleanup(platform: &SagaPlatform, ctx: &Context) -> Result<Action, Error> {
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

/// Time since deletion was requested.
fn deleting_for(platform: &SagaPlatform) -> Duration {
    let requested = platform.metadata.deletion_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(i64::MAX);
    Duration::from_secs(chrono::Utc::now().timestamp().saturating_sub(requested).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(120);

    #[test]
    fn drains_while_the_services_run_then_stops_them_then_applies_the_policy() {
        let early = Duration::from_secs(5);
        // Messages wait, or cannot be counted: the consumers keep running.
        assert_eq!(drain_step(Some(3), Some(0), false, early, TIMEOUT), DrainStep::Wait);
        assert_eq!(drain_step(None, Some(0), false, early, TIMEOUT), DrainStep::Wait);
        // Empty: only now do the services go to zero.
        assert_eq!(drain_step(Some(0), Some(0), false, early, TIMEOUT), DrainStep::StopServices);
        // Empty and stopped: the policy applies.
        assert_eq!(drain_step(Some(0), Some(0), true, early, TIMEOUT), DrainStep::Drained);
        // Messages came back after the stop (nothing consumes now): wait for the timeout.
        assert_eq!(drain_step(Some(1), Some(0), true, early, TIMEOUT), DrainStep::Wait);
    }

    #[test]
    fn messages_in_retry_queues_keep_the_services_running() {
        let early = Duration::from_secs(5);
        // The service queues are empty, but retries come back to them when
        // their TTL ends: the consumers must still be there.
        assert_eq!(drain_step(Some(0), Some(2), false, early, TIMEOUT), DrainStep::Wait);
        assert_eq!(drain_step(Some(0), None, false, early, TIMEOUT), DrainStep::Wait);
        assert_eq!(drain_step(Some(0), Some(2), true, early, TIMEOUT), DrainStep::Wait);
        assert_eq!(drain_step(Some(0), Some(2), false, TIMEOUT, TIMEOUT), DrainStep::TimedOut);
    }

    #[test]
    fn the_timeout_counted_from_the_deletion_request_ends_any_wait() {
        for (queued, retrying, stopped) in
            [(Some(3), Some(0), false), (None, Some(0), false), (Some(0), Some(0), false), (Some(2), None, true)]
        {
            assert_eq!(drain_step(queued, retrying, stopped, TIMEOUT, TIMEOUT), DrainStep::TimedOut, "{queued:?}");
            let later = TIMEOUT + Duration::from_secs(1);
            assert_eq!(drain_step(queued, retrying, stopped, later, TIMEOUT), DrainStep::TimedOut);
        }
        let just_before = TIMEOUT - Duration::from_secs(1);
        assert_eq!(drain_step(Some(3), Some(0), false, just_before, TIMEOUT), DrainStep::Wait);
    }

    #[test]
    fn the_status_names_every_queue_and_its_count() {
        let service = vec![("p.order.replies".to_owned(), Ok(0)), ("p.payment.commands".to_owned(), Ok(3))];
        let empty =
            vec![("p.order.replies.retry.1".to_owned(), Ok(0)), ("p.payment.commands.retry.1".to_owned(), Ok(0))];
        let counts = Ok(Counts { service: service.clone(), retry: empty });
        assert_eq!(describe(&counts), "p.order.replies 0, p.payment.commands 3; retry queues empty (2)");
        let retrying = vec![
            ("p.order.replies.retry.1".to_owned(), Ok(0)),
            ("p.payment.commands.retry.1".to_owned(), Ok(2)),
            ("p.payment.commands.retry.2".to_owned(), Err("timeout".to_owned())),
        ];
        let counts = Ok(Counts { service, retry: retrying });
        assert_eq!(
            describe(&counts),
            "p.order.replies 0, p.payment.commands 3; retry queues: p.payment.commands.retry.1 2, p.payment.commands.retry.2 unknown (timeout)"
        );
        assert_eq!(total(&counts.as_ref().unwrap().service), Some(3));
        assert_eq!(total(&counts.as_ref().unwrap().retry), None, "one unknown count makes the sum unknown");
        let message = draining_message(DrainStep::Wait, "p.payment.commands 3", Duration::from_secs(7), TIMEOUT);
        assert!(message.contains("p.payment.commands 3; 7s of 120s"), "{message}");
    }
}
