//! Leader election with a `coordination.k8s.io` Lease: only the holder
//! reconciles, so two operator replicas never both act. Updates go through
//! `replace` with the read `resourceVersion`, so of two replicas racing for
//! an expired lease exactly one wins (the other gets 409).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

const DURATION: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(5);

pub struct Lease {
    api: Api<LeaseObject>,
    name: String,
    identity: String,
    duration: Duration,
    renew_every: Duration,
}

impl Lease {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Lease {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration: DURATION,
            renew_every: RENEW_EVERY,
        }
    }

    /// Shorter timings, for tests.
    pub fn with_timing(mut self, duration: Duration, renew_every: Duration) -> Self {
        self.duration = duration;
        self.renew_every = renew_every;
        self
    }

    /// Waits until this replica holds the lease; false if `shutdown` came first.
    pub async fn acquire(&self, shutdown: impl Future<Output = ()>) -> bool {
        tokio::pin!(shutdown);
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return true;
                }
                Ok(false) => tracing::debug!(lease = %self.name, "another replica leads"),
                Err(error) => tracing::warn!(%error, "cannot read the lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every) => {}
                _ = &mut shutdown => return false,
            }
        }
    }

    /// Keeps renewing in the background; the returned future resolves when
    /// the lease is lost or `shutdown` resolves, and is the controller's stop signal.
    pub fn hold(self, shutdown: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = ()> + Send + Sync {
        let (lost_tx, mut lost) = watch::channel(false);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.renew_every) => {}
                    _ = &mut shutdown => break,
                }
                match self.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(lease = %self.name, "lost the lease, stopping");
                        break;
                    }
                    // Keep acting while the lease may still be ours; stop once it surely expired.
                    Err(error) => tracing::warn!(%error, "cannot renew the lease"),
                }
            }
            let _ = lost_tx.send(true);
        });
        async move {
            let _ = lost.wait_for(|l| *l).await;
        }
    }

    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = LeaseObject {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(now, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(self.duration.as_secs() as i32));
            renewed.0.as_second() + duration < now.as_second()
        });
        if holder != Some(self.identity.as_str()) && holder.is_some() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != Some(self.identity.as_str()));
        let mut renewed = self.spec(now, transitions);
        if holder == Some(self.identity.as_str()) {
            renewed.acquire_time = spec.acquire_time;
        }
        lease.spec = Some(renewed);
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }

    fn spec(&self, now: jiff::Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// A 409 means another replica wrote the lease first.
fn conflict_is_false(result: Result<LeaseObject, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
