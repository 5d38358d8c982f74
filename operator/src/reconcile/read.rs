//! Reading what the desired state depends on besides the resource: the
//! broker URL from its Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::Error;
use crate::crd::SecretKeyRef;

/// The value of a Secret key as UTF-8 text.
pub async fn secret_value(client: &Client, namespace: &str, key: &SecretKeyRef) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let missing = |reason: &str| Error::Secret { name: key.name.clone(), key: key.key.clone(), reason: reason.into() };
    let Some(secret) = secrets.get_opt(&key.name).await? else {
        return Err(missing("the Secret does not exist"));
    };
    let bytes = secret.data.as_ref().and_then(|data| data.get(&key.key)).ok_or_else(|| missing("no such key"))?;
    String::from_utf8(bytes.0.clone()).map(|s| s.trim().to_owned()).map_err(|_| missing("the value is not UTF-8"))
}

/// The values of `keys` (`None` where unreadable), each Secret read once.
pub async fn secret_values(
    client: &Client,
    namespace: &str,
    keys: &[&SecretKeyRef],
) -> Result<Vec<Option<String>>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut read: std::collections::HashMap<&str, Option<Secret>> = std::collections::HashMap::new();
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        if !read.contains_key(key.name.as_str()) {
            read.insert(&key.name, secrets.get_opt(&key.name).await?);
        }
        let value = read[key.name.as_str()]
            .as_ref()
            .and_then(|secret| secret.data.as_ref()?.get(&key.key))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned());
        values.push(value);
    }
    Ok(values)
}
