//! Server-side apply with one field manager: the operator owns exactly the
//! fields it sets, and forcing takes them back after a hand edit.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::MANAGER;

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
