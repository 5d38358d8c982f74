//! *apply*: server-side apply with one field manager (the operator owns
//! exactly the fields it sets, and forcing takes them back after a hand
//! edit) of the children, the optional policies, and the status; pruning of
//! the optional objects the spec no longer asks for.

use std::collections::HashMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::build::{self, Component, MANAGER};
use super::{Context, Error};
use crate::crd::{SagaPlatform, SagaPlatformStatus};

pub fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Applies `object` in its namespace and returns what the API server stored.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    api.patch(&object.name_any(), &params(), &Patch::Apply(object)).await
}

/// A marker that changes when the object's desired state changes:
/// `generation` where the kind has one (status churn leaves it alone), else
/// `resourceVersion`.
pub fn version<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    match meta.generation {
        Some(generation) => format!("g{generation}"),
        None => meta.resource_version.clone().unwrap_or_default(),
    }
}

pub(super) async fn apply_children(
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
    let config_map = apply(&config_maps, &build::config_map(platform, component)).await?;
    let service = apply(&services, &build::service(platform, component)).await?;
    let secrets_hash = &secret_hashes[component.name()];
    let deployment = apply(&deployments, &build::deployment(platform, component, replicas, secrets_hash)).await?;
    for (kind, name, version) in [
        ("ConfigMap", config_map.name_any(), version(&config_map)),
        ("Service", service.name_any(), version(&service)),
        ("Deployment", deployment.name_any(), version(&deployment)),
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
pub(super) async fn apply_policies(
    ctx: &Context,
    platform: &SagaPlatform,
    reference: &ObjectReference,
) -> Result<(), Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    apply_optional(ctx, &budgets, build::disruption_budget, platform, reference).await?;
    apply_optional(ctx, &policies, build::network_policy, platform, reference).await?;
    Ok(())
}

/// Applies what `build` returns for each service (an `Applied` event for each
/// real change), then prunes the objects of that kind this resource controls
/// that are not among them.
async fn apply_optional<K>(
    ctx: &Context,
    api: &Api<K>,
    build: fn(&SagaPlatform, Component) -> Option<K>,
    platform: &SagaPlatform,
    reference: &ObjectReference,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let namespace = platform.namespace().unwrap_or_default();
    let mut kept = Vec::new();
    for object in Component::ALL.iter().filter_map(|c| build(platform, *c)) {
        let applied = apply(api, &object).await?;
        let (kind, name) = (K::kind(&()), applied.name_any());
        if ctx.changed(format!("{kind}/{namespace}/{name}"), version(&applied)) {
            let note = format!("applied {kind} {name}");
            ctx.event(reference, EventType::Normal, "Applied", "Apply", note).await;
        }
        kept.push(name);
    }
    prune(ctx, api, platform, &kept, reference).await
}

/// Deletes the objects of `api` this resource controls that are not in `keep`.
pub(super) async fn prune<K>(
    ctx: &Context,
    api: &Api<K>,
    platform: &SagaPlatform,
    keep: &[String],
    reference: &ObjectReference,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
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

pub(super) async fn write_status(
    ctx: &Context,
    platform: &SagaPlatform,
    status: SagaPlatformStatus,
) -> Result<(), Error> {
    if platform.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<SagaPlatform> = Api::namespaced(ctx.client.clone(), &platform.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": SagaPlatform::api_version(&()),
        "kind": SagaPlatform::kind(&()),
        "status": status,
    });
    api.patch_status(&platform.name_any(), &params(), &Patch::Apply(patch)).await?;
    Ok(())
}
