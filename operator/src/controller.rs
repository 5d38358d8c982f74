//! Wires the reconcile into a kube-runtime `Controller`: it watches
//! `SagaPlatform`s and the Deployments they own, resyncs periodically through
//! the reconcile's requeue, and stops on the given shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::hash::{DefaultHasher, Hash, Hasher};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DeserializeGuard;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::SagaPlatform;
use crate::reconcile::{self, Context, build};

/// Runs until `shutdown` resolves and in-flight reconciles finish. `synced`
/// turns true once the initial list of `SagaPlatform`s has been read.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    context: Arc<Context>,
    synced: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (platforms, deployments) = match namespace {
        Some(namespace) => (
            Api::<DeserializeGuard<SagaPlatform>>::namespaced(client.clone(), namespace),
            Api::<Deployment>::namespaced(client, namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let managed = format!("app.kubernetes.io/managed-by={}", build::MANAGER);
    // Our own status writes must not trigger reconciles (queue depth changes
    // would make that a hot loop); only spec and lifecycle changes do. Owned
    // Deployments and the requeue after each reconcile cover the rest.
    let (store, writer) = reflector::store();
    let triggers = watcher(platforms, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, PredicateConfig::default());
    let controller = Controller::for_stream(triggers, store.clone())
        .owns(deployments, watcher::Config::default().labels(&managed))
        .graceful_shutdown_on(shutdown);
    tokio::spawn(async move {
        // The store's readiness wakes only its latest waiter (the controller
        // waits too), so poll it instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
        tracing::info!("watches synced");
        synced.store(true, Ordering::SeqCst);
    });
    controller
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(resource = %object, "reconcile finished"),
                // error_policy has logged a failed reconcile at warn already.
                Err(error @ kube::runtime::controller::Error::ReconcilerFailed(..)) => {
                    tracing::debug!(%error, "reconcile did not finish")
                }
                // Watch errors (an RBAC 403 included) and queue errors.
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

/// Changes when the spec (generation), the finalizers, the deletion request
/// or the pause annotation do.
fn spec_or_lifecycle(platform: &DeserializeGuard<SagaPlatform>) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    platform.meta().generation.hash(&mut hasher);
    platform.annotations().get(reconcile::PAUSED_ANNOTATION).hash(&mut hasher);
    platform.finalizers().hash(&mut hasher);
    platform.meta().deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}
