//! *cleanup*: the deletion path, behind the finalizer: what happens to the
//! broker topology follows `deletionPolicy`, bounded by `CLEANUP_TIMEOUT`.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use saga_common::topology::Topology;

use super::observe::broker_target;
use super::{Context, Error, build, owner};
use crate::broker::BrokerError;
use crate::crd::{DeletionPolicy, SagaPlatform};

/// The deletion path: what happens to the topology follows `deletionPolicy`.
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
