//! Wires the reconcile into a kube-runtime `Controller`: it watches
//! `SagaPlatform`s and the Deployments they own, resyncs periodically through
//! the reconcile's requeue, and stops on the given shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DeserializeGuard;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};

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
    let controller = Controller::new(platforms, watcher::Config::default())
        .owns(deployments, watcher::Config::default().labels(&managed))
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            tracing::info!("watches synced");
            synced.store(true, Ordering::SeqCst);
        }
    });
    controller
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(resource = %object, "reconcile finished"),
                Err(error) => tracing::debug!(%error, "reconcile did not finish"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}
