//! What `/healthz` judges: the reconciles in flight (since when, and what each
//! is waiting on), the controller loop's heartbeat, and the last success.
//!
//! An operator can go silent while its process is fine: a reconcile waiting
//! on a call that never returns holds every later trigger of its resource,
//! and a task that blocks its thread stops the controller loop altogether.
//! Both are seen here: a reconcile in flight past its deadline plus
//! [`GRACE`] (the deadline should have abandoned it), or a heartbeat older
//! than [`HEARTBEAT_STALE`] (the loop that drives the reconciles is not polled).
//! The verdict ([`verdict`]) is a pure function of a [`Snapshot`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long past its deadline a reconcile may still be in flight before the
/// operator counts as stalled (the deadline abandons it; this is the margin
/// for the abandonment itself under load).
pub const GRACE: Duration = Duration::from_secs(30);
/// The controller loop stamps its heartbeat this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A heartbeat older than this means the controller loop is not being polled.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

struct InFlight {
    started: Instant,
    /// What the reconcile is doing (so waiting on) now.
    step: &'static str,
}

#[derive(Default)]
struct State {
    in_flight: HashMap<String, InFlight>,
    heartbeat: Option<Instant>,
    last_success: Option<SystemTime>,
}

/// Shared by the reconciles, the controller loop, the lease and the HTTP server.
pub struct Health {
    reconcile_timeout: Duration,
    state: Mutex<State>,
}

/// The oldest reconcile in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oldest {
    pub resource: String,
    pub age: Duration,
    pub step: &'static str,
}

/// What [`Health`] knows at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub in_flight: usize,
    pub oldest: Option<Oldest>,
    /// Age of the controller loop's last heartbeat; `None` before the loop runs
    /// (a follower waiting for the lease has no loop yet).
    pub heartbeat_age: Option<Duration>,
    pub last_success: Option<SystemTime>,
}

impl Health {
    pub fn new(reconcile_timeout: Duration) -> Self {
        Health { reconcile_timeout, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("health lock poisoned")
    }

    /// A reconcile of `resource` starts; it is in flight until [`Health::end`].
    pub fn begin(&self, resource: &str) {
        let entry = InFlight { started: Instant::now(), step: "starting" };
        self.state().in_flight.insert(resource.to_owned(), entry);
    }

    /// The reconcile of `resource` moves on to `step` (what it waits on next).
    pub fn step(&self, resource: &str, step: &'static str) {
        if let Some(entry) = self.state().in_flight.get_mut(resource) {
            entry.step = step;
        }
    }

    /// What the reconcile of `resource` is doing now ("unknown" if not in flight).
    pub fn current_step(&self, resource: &str) -> &'static str {
        self.state().in_flight.get(resource).map_or("unknown", |entry| entry.step)
    }

    /// The reconcile of `resource` ended (finished, failed or abandoned).
    pub fn end(&self, resource: &str, succeeded: bool) {
        let mut state = self.state();
        state.in_flight.remove(resource);
        if succeeded {
            state.last_success = Some(SystemTime::now());
        }
    }

    /// The controller loop is alive.
    pub fn beat(&self) {
        self.state().heartbeat = Some(Instant::now());
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        let oldest = state
            .in_flight
            .iter()
            .max_by_key(|(_, entry)| entry.started.elapsed())
            .map(|(key, entry)| Oldest { resource: key.clone(), age: entry.started.elapsed(), step: entry.step });
        Snapshot {
            in_flight: state.in_flight.len(),
            oldest,
            heartbeat_age: state.heartbeat.map(|beat| beat.elapsed()),
            last_success: state.last_success,
        }
    }

    /// Ok, or why the operator is stalled ([`verdict`] of a fresh snapshot).
    pub fn check(&self) -> Result<(), String> {
        verdict(&self.snapshot(), self.reconcile_timeout)
    }
}

/// Healthy unless a reconcile has been in flight past `reconcile_timeout` +
/// [`GRACE`], or the controller loop's heartbeat is older than [`HEARTBEAT_STALE`].
pub fn verdict(snapshot: &Snapshot, reconcile_timeout: Duration) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Some(oldest) = &snapshot.oldest
        && oldest.age > reconcile_timeout + GRACE
    {
        problems.push(format!(
            "the reconcile of {} has run {:?} (deadline {reconcile_timeout:?} + grace {GRACE:?}), waiting on {}",
            oldest.resource, oldest.age, oldest.step
        ));
    }
    if let Some(age) = snapshot.heartbeat_age
        && age > HEARTBEAT_STALE
    {
        problems.push(format!("the controller loop's heartbeat is {age:?} old (stale after {HEARTBEAT_STALE:?})"));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(60);

    fn snapshot(oldest_age: Option<u64>, heartbeat_age: Option<u64>) -> Snapshot {
        Snapshot {
            in_flight: usize::from(oldest_age.is_some()),
            oldest: oldest_age.map(|secs| Oldest {
                resource: "shop/a".into(),
                age: Duration::from_secs(secs),
                step: "apply order",
            }),
            heartbeat_age: heartbeat_age.map(Duration::from_secs),
            last_success: None,
        }
    }

    #[test]
    fn idle_or_busy_within_the_deadline_is_healthy() {
        assert_eq!(verdict(&snapshot(None, None), DEADLINE), Ok(()), "a follower before its loop runs");
        assert_eq!(verdict(&snapshot(None, Some(1)), DEADLINE), Ok(()));
        assert_eq!(verdict(&snapshot(Some(89), Some(1)), DEADLINE), Ok(()), "within deadline + grace");
    }

    #[test]
    fn a_reconcile_past_deadline_and_grace_is_a_stall() {
        let problem = verdict(&snapshot(Some(91), Some(1)), DEADLINE).unwrap_err();
        assert!(problem.contains("shop/a") && problem.contains("apply order"), "{problem}");
    }

    #[test]
    fn a_stale_heartbeat_is_a_stall() {
        let problem = verdict(&snapshot(None, Some(31)), DEADLINE).unwrap_err();
        assert!(problem.contains("heartbeat"), "{problem}");
        let both = verdict(&snapshot(Some(200), Some(31)), DEADLINE).unwrap_err();
        assert!(both.contains("heartbeat") && both.contains("shop/a"), "{both}");
    }

    #[test]
    fn in_flight_reconciles_are_tracked_by_resource() {
        let health = Health::new(DEADLINE);
        health.begin("shop/a");
        health.step("shop/a", "broker");
        health.begin("shop/b");
        assert_eq!(health.current_step("shop/a"), "broker");
        assert_eq!(health.snapshot().in_flight, 2);
        health.end("shop/a", true);
        health.end("shop/b", false);
        let snapshot = health.snapshot();
        assert_eq!((snapshot.in_flight, snapshot.oldest), (0, None));
        assert!(snapshot.last_success.is_some());
        assert_eq!(health.current_step("shop/a"), "unknown");
    }
}
