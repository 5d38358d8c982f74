//! Leader election with a `coordination.k8s.io` Lease: only the holder
//! reconciles, so two operator replicas never both act. Updates go through
//! `replace` with the read `resourceVersion`, so of two replicas racing for
//! an expired lease exactly one wins (the other gets 409).
//!
//! Time is judged as client-go does, never by comparing another host's clock
//! with ours: a lease held by another is expired once its record (holder,
//! renewTime, transitions) has not changed for its duration as observed
//! locally; the holder steps down when it could not renew within the renew
//! deadline (2/3 of the duration) on a monotonic clock, before anyone else
//! may take over.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// The other holder's record as last seen, and when (locally) it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl Lease {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Lease {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration: DURATION,
            renew_every: RENEW_EVERY,
            observed: Mutex::new(None),
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
        self.hold_while(shutdown, || Ok(()))
    }

    /// [`Lease::hold`], renewing only while `healthy` is Ok: a leader whose
    /// controller is stalled stops renewing, steps down at the renew deadline
    /// (and exits), so another replica takes over instead of a wedged one
    /// keeping the lease forever.
    pub fn hold_while(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        healthy: impl Fn() -> Result<(), String> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + Sync {
        let (lost_tx, mut lost) = watch::channel(false);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let deadline = self.renew_deadline();
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.renew_every) => {}
                    _ = &mut shutdown => break,
                }
                // An API that does not answer counts against the deadline too.
                let left = deadline.saturating_sub(renewed.elapsed());
                if let Err(stall) = healthy() {
                    tracing::warn!(lease = %self.name, %stall, "the controller is stalled: not renewing the lease");
                } else {
                    match tokio::time::timeout(left, self.try_acquire()).await {
                        Ok(Ok(true)) => renewed = Instant::now(),
                        Ok(Ok(false)) => {
                            tracing::error!(lease = %self.name, "lost the lease, stopping");
                            break;
                        }
                        Ok(Err(error)) => tracing::warn!(%error, "cannot renew the lease"),
                        Err(_) => tracing::warn!(lease = %self.name, waited = ?left, "renewing the lease timed out"),
                    }
                }
                if renewed.elapsed() >= deadline {
                    tracing::error!(lease = %self.name, ?deadline, "could not renew the lease in time, stepping down");
                    break;
                }
            }
            let _ = lost_tx.send(true);
        });
        async move {
            let _ = lost.wait_for(|l| *l).await;
        }
    }

    /// How long the holder keeps acting without a successful renewal: 2/3 of
    /// the lease duration, so it stops before another replica may take over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Whether another holder's lease expired, judged by how long its record
    /// has stood still on our own monotonic clock.
    fn expired_locally(&self, spec: &LeaseSpec) -> bool {
        let record = format!(
            "{:?}/{:?}/{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_transitions
        );
        let duration = spec.lease_duration_seconds.map_or(self.duration, |s| Duration::from_secs(s.max(0) as u64));
        let mut observed = self.observed.lock().expect("lease observation lock poisoned");
        match observed.as_ref() {
            Some((seen, since)) if *seen == record => since.elapsed() >= duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
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
        if holder != Some(self.identity.as_str()) && holder.is_some() && !self.expired_locally(&spec) {
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
