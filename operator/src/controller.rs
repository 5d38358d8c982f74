//! Wires the reconcile into a kube-runtime `Controller`: it watches
//! `SagaPlatform`s, the Deployments they own and (metadata only) the Secrets
//! they refer to, resyncs periodically through the reconcile's requeue, and
//! stops on the given shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::hash::{DefaultHasher, Hash, Hasher};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api_client::WATCH_TIMEOUT_SECS;
use crate::crd::SagaPlatform;
use crate::health;
use crate::reconcile::{self, Context, build};

/// Runs until `shutdown` resolves and in-flight reconciles finish. `synced`
/// turns true once the initial list of `SagaPlatform`s has been read.
/// `client` serves the watches only (the reconciles use the context's), so it
/// needs no read timeout: a silent watch ends after [`WATCH_TIMEOUT_SECS`] + 5 s.
/// `watch_secrets`: a change to a Secret a resource refers to reconciles it at
/// once (metadata-only list/watch of Secrets); without it, or when the API
/// refuses that watch, Secrets are re-read on every resync.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    watch_secrets: bool,
    context: Arc<Context>,
    synced: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (platforms, deployments, secrets) = match namespace {
        Some(namespace) => (
            Api::<DeserializeGuard<SagaPlatform>>::namespaced(client.clone(), namespace),
            Api::<Deployment>::namespaced(client.clone(), namespace),
            Api::<PartialObjectMeta<Secret>>::namespaced(client, namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    let managed = format!("app.kubernetes.io/managed-by={}", build::MANAGER);
    // Our own status writes must not trigger reconciles (queue depth changes
    // would make that a hot loop); only spec and lifecycle changes do. Owned
    // Deployments and the requeue after each reconcile cover the rest.
    let (store, writer) = reflector::store();
    let triggers = watcher(platforms, watch_config())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, PredicateConfig::default());
    let mut controller = Controller::for_stream(triggers, store.clone())
        .owns(deployments, watch_config().labels(&managed))
        .graceful_shutdown_on(shutdown);
    if watch_secrets {
        // Metadata only (`PartialObjectMeta`): the operator never holds Secret values it does not
        // need; the resourceVersion changes with the data all the same. A
        // refusal (403: the chart's rbac.watchSecrets=false, or RBAC managed
        // elsewhere) ends this watch once, with a warning: the resync re-reads
        // the Secrets instead, and no request is repeated against a refusal.
        let changes = watcher(secrets, watch_config())
            .take_while(|event| {
                let refused = event.as_ref().err().filter(|error| forbidden(error));
                if let Some(error) = refused {
                    tracing::warn!(
                        %error,
                        "cannot watch Secrets: a rotation is picked up by the periodic resync (RESYNC_INTERVAL), not at once"
                    );
                }
                std::future::ready(refused.is_none())
            })
            .default_backoff()
            .touched_objects();
        let platforms = store.clone();
        controller = controller
            .watches_stream(changes, move |secret: PartialObjectMeta<Secret>| reading(&secret, &platforms.state()));
    } else {
        tracing::info!("Secrets are not watched (WATCH_SECRETS=false): re-read every resync (RESYNC_INTERVAL)");
    }
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
    let health = context.health.clone();
    let results = controller.run(reconcile::reconcile, reconcile::error_policy, context);
    futures_util::pin_mut!(results);
    // The heartbeat is stamped by the same task that polls the reconciles: if
    // one of them blocks its thread, or the runtime stops polling the loop,
    // the heartbeat goes stale and /healthz says so.
    let mut heartbeat = tokio::time::interval(health::HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = results.next() => match result {
                Some(Ok((object, _))) => tracing::debug!(resource = %object, "reconcile finished"),
                // error_policy has logged a failed reconcile at warn already.
                Some(Err(error @ kube::runtime::controller::Error::ReconcilerFailed(..))) => {
                    tracing::debug!(%error, "reconcile did not finish")
                }
                // Watch errors (an RBAC 403 included) and queue errors.
                Some(Err(error)) => tracing::warn!(%error, "controller error"),
                None => break,
            },
            _ = heartbeat.tick() => health.beat(),
        }
    }
    tracing::info!("controller stopped");
}

/// Every watch ends server-side after [`WATCH_TIMEOUT_SECS`] (and resumes),
/// so kube-runtime's idle timeout (that + 5 s) finds a silent one soon.
fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(WATCH_TIMEOUT_SECS)
}

/// The resources of the Secret's namespace that refer to it (resources that
/// do not deserialize refer to nothing readable).
fn reading(
    secret: &PartialObjectMeta<Secret>,
    platforms: &[Arc<DeserializeGuard<SagaPlatform>>],
) -> Vec<ObjectRef<DeserializeGuard<SagaPlatform>>> {
    let name = secret.name_any();
    platforms
        .iter()
        .filter(|guard| guard.namespace() == secret.namespace())
        .filter(|guard| {
            guard.0.as_ref().is_ok_and(|platform| build::referenced_secret_names(platform).contains(name.as_str()))
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// True when the API refused the request (403), which retrying cannot fix.
fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.is_forbidden(),
        watcher::Error::WatchError(status) => status.is_forbidden(),
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn platform(namespace: &str, name: &str, tls: bool) -> Arc<DeserializeGuard<SagaPlatform>> {
        let service = |key: &str| json!({"image": "i", "databaseUrlSecret": {"name": "db", "key": key}});
        let mut broker = json!({"urlSecret": {"name": "broker", "key": "url"}});
        let mut notification = service("notification");
        if tls {
            broker["tls"] = json!({"caSecret": {"name": "broker-ca", "key": "ca.pem"}});
            notification["email"] = json!({"urlSecret": {"name": "smtp", "key": "url"}, "from": "shop@example.com"});
        }
        let object = json!({
            "apiVersion": "saga.dev/v1alpha1", "kind": "SagaPlatform",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"broker": broker, "auth": {"jwtSecret": {"name": "auth", "key": "jwt"}},
                     "order": service("order"), "payment": service("payment"), "inventory": service("inventory"),
                     "notification": notification},
        });
        Arc::new(serde_json::from_value(object).unwrap())
    }

    fn secret(namespace: &str, name: &str) -> PartialObjectMeta<Secret> {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}})).unwrap()
    }

    fn names(refs: Vec<ObjectRef<DeserializeGuard<SagaPlatform>>>) -> Vec<String> {
        refs.into_iter().map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name)).collect()
    }

    #[test]
    fn a_secret_maps_to_the_resources_of_its_namespace_that_refer_to_it() {
        let invalid: DeserializeGuard<SagaPlatform> = serde_json::from_value(json!({
            "apiVersion": "saga.dev/v1alpha1", "kind": "SagaPlatform",
            "metadata": {"name": "broken", "namespace": "shop"}, "spec": {"broker": 1},
        }))
        .unwrap();
        assert!(invalid.0.is_err(), "the fixture does not deserialize");
        let platforms = [
            platform("shop", "a", false),
            platform("shop", "b", true),
            platform("other", "c", true),
            Arc::new(invalid),
        ];
        for (secret_name, expected) in [
            ("db", vec!["shop/a", "shop/b"]),
            ("auth", vec!["shop/a", "shop/b"]),
            ("broker", vec!["shop/a", "shop/b"]),
            ("broker-ca", vec!["shop/b"]),
            ("smtp", vec!["shop/b"]),
            ("unrelated", vec![]),
        ] {
            assert_eq!(names(reading(&secret("shop", secret_name), &platforms)), expected, "Secret {secret_name}");
        }
        assert_eq!(names(reading(&secret("other", "broker-ca"), &platforms)), ["other/c"]);
        assert!(reading(&secret("elsewhere", "db"), &platforms).is_empty());
    }

    #[test]
    fn only_a_refusal_ends_the_secret_watch() {
        let status = |code: u16| {
            let reason = if code == 403 { "Forbidden" } else { "InternalError" };
            kube::core::Status::failure("refused", reason).with_code(code).boxed()
        };
        assert!(forbidden(&watcher::Error::InitialListFailed(kube::Error::Api(status(403)))));
        assert!(forbidden(&watcher::Error::WatchStartFailed(kube::Error::Api(status(403)))));
        assert!(forbidden(&watcher::Error::WatchError(status(403))));
        assert!(!forbidden(&watcher::Error::InitialListFailed(kube::Error::Api(status(500)))));
        assert!(!forbidden(&watcher::Error::WatchError(status(410))));
        assert!(!forbidden(&watcher::Error::NoResourceVersion));
    }
}
