//! Status from what was applied and observed. Pure: the caller passes the
//! time, so transition-time rules are unit-tested.

use k8s_openapi::api::apps::v1::Deployment;

use crate::crd::Condition;

pub const READY: &str = "Ready";
pub const TOPOLOGY_READY: &str = "TopologyReady";
pub const SERVICES_AVAILABLE: &str = "ServicesAvailable";
/// False while the autoscaler holds replica counts because queue depth cannot be read.
pub const AUTOSCALING_ACTIVE: &str = "AutoscalingActive";
/// Present while the resource carries `saga.dev/paused: "true"` (`Ready` is
/// then False with reason `Paused`).
pub const PAUSED: &str = "Paused";
/// Present when a service autoscales: True (with HPA's reason) when a policy,
/// minReplicas or maxReplicas bound a desired count. Informational: it does
/// not count for `Ready`.
pub const SCALING_LIMITED: &str = "ScalingLimited";
/// Present when `broker.managementUrl` is set: whether the queue depth came
/// from it, else why not (credentials withheld, TLS refused, unreachable).
pub const MANAGEMENT_API_AVAILABLE: &str = "ManagementApiAvailable";

/// One condition as this reconcile sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Observation {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Observation { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// The new condition list: `lastTransitionTime` is kept unless the status flipped.
pub fn conditions(
    previous: &[Condition],
    observed: &[Observation],
    now: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = if o.status { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.to_owned());
            Condition {
                type_: o.type_.to_owned(),
                status: status.to_owned(),
                reason: o.reason.clone(),
                message: o.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The condition list to store: `Ready` first (what `kubectl get` shows),
/// then the observations; `now` is the caller's clock.
pub fn with_ready(
    previous: &[Condition],
    observed: &[Observation],
    now: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut all = vec![ready(observed)];
    all.extend(observed.iter().filter(|o| o.type_ != READY).cloned());
    conditions(previous, &all, now, generation)
}

/// `AutoscalingActive` and `ScalingLimited` when a service autoscales: why
/// counts are held (the depth, or a rate without the management API), and
/// which services a policy or bound held back (`limited`: reason, message).
pub fn autoscaling_observations(
    depth_error: Option<&str>,
    rate_unknown: &[&str],
    limited: &[(&'static str, String)],
) -> Vec<Observation> {
    let active = match depth_error {
        Some(error) => {
            Observation::new(AUTOSCALING_ACTIVE, false, "QueueDepthUnknown", format!("holding replica counts: {error}"))
        }
        None if !rate_unknown.is_empty() => Observation::new(
            AUTOSCALING_ACTIVE,
            false,
            "MessageRateUnknown",
            format!(
                "holding replica counts of {}: metric MessageRate needs the management API (broker.managementUrl)",
                rate_unknown.join(", ")
            ),
        ),
        None => Observation::new(AUTOSCALING_ACTIVE, true, "MetricRead", "scaling on the queue metrics"),
    };
    let limited = match limited.first() {
        None => Observation::new(
            SCALING_LIMITED,
            false,
            "DesiredWithinRange",
            "the desired counts are within the policies and bounds",
        ),
        Some((reason, _)) => {
            let messages: Vec<&str> = limited.iter().map(|(_, m)| m.as_str()).collect();
            Observation::new(SCALING_LIMITED, true, *reason, messages.join("; "))
        }
    };
    vec![active, limited]
}

/// `Ready` summarises the others: true only when all of them are
/// (`ScalingLimited` aside: it informs, True or False).
pub fn ready(observed: &[Observation]) -> Observation {
    match observed.iter().filter(|o| o.type_ != SCALING_LIMITED).find(|o| !o.status) {
        None => Observation::new(READY, true, "Available", "topology declared and every service available"),
        Some(failing) => Observation::new(READY, false, failing.reason.clone(), failing.message.clone()),
    }
}

/// Why a service's rollout is not complete, from its Deployment as the API
/// returned it: a condition reason and a message. `None`: every replica runs
/// the current template and is ready.
///
/// In order: the Deployment's `Progressing` condition says
/// `ProgressDeadlineExceeded`; the Deployment controller has not observed
/// the current generation yet (`RolloutPending`); fewer replicas run the
/// current template than desired, or old ones still run
/// (`RolloutInProgress`); fewer are ready than desired (`ReplicasNotReady`).
pub fn rollout(service: &str, desired: i32, deployment: &Deployment) -> Option<(&'static str, String)> {
    let status = deployment.status.clone().unwrap_or_default();
    if desired == 0 && status.replicas.unwrap_or(0) == 0 {
        // Nothing to run and nothing running.
        return None;
    }
    let progressing = status.conditions.iter().flatten().find(|c| c.type_ == "Progressing");
    if let Some(c) =
        progressing.filter(|c| c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    {
        let detail = c.message.clone().unwrap_or_default();
        return Some(("ProgressDeadlineExceeded", format!("{service}: rollout stuck: {detail}")));
    }
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        let message = format!("{service}: the Deployment controller has not observed generation {generation} yet");
        return Some(("RolloutPending", message));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    if updated < desired {
        return Some(("RolloutInProgress", format!("{service}: {updated}/{desired} replicas updated")));
    }
    let old = status.replicas.unwrap_or(0) - updated;
    if old > 0 {
        return Some(("RolloutInProgress", format!("{service}: {old} old replicas still running")));
    }
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < desired {
        return Some(("ReplicasNotReady", format!("{service}: {ready}/{desired} ready")));
    }
    None
}

/// Whether pods of an older template may still run, by the reason [`rollout`]
/// gave: every reason but `ReplicasNotReady` (then every replica runs the
/// current template; some are not ready yet). A stuck rollout counts as
/// running old pods. What a pod does depends on its template (e.g. the retry
/// tiers it publishes into), so a change that must wait until no old pod runs
/// waits for this.
pub fn old_template_may_run(reason: &str) -> bool {
    reason != "ReplicasNotReady"
}

/// `ServicesAvailable` from the services' rollouts: a stuck rollout's reason
/// first, else the first service's problem, every problem in the message.
pub fn services_available(problems: &[(&'static str, String)]) -> Observation {
    if problems.is_empty() {
        return Observation::new(SERVICES_AVAILABLE, true, "ReplicasReady", "every service has its replicas ready");
    }
    let reason =
        problems.iter().map(|(reason, _)| *reason).find(|r| *r == "ProgressDeadlineExceeded").unwrap_or(problems[0].0);
    let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
    Observation::new(SERVICES_AVAILABLE, false, reason, messages.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d", "generation": generation}, "status": status})).unwrap()
    }

    /// Deployment statuses as the Deployment controller writes them.
    #[test]
    fn rollout_follows_the_deployment_status() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3, "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
        assert_eq!(rollout("order", 3, &deployment(2, done)), None);
        // A new template, not yet seen by the controller: the old status still says 3/3.
        let seen_before = json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3});
        assert_eq!(rollout("order", 3, &deployment(2, seen_before)).unwrap().0, "RolloutPending");
        // Mid-rollout: old pods ready, one new pod not yet.
        let rolling = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "readyReplicas": 3,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]});
        assert_eq!(
            rollout("order", 3, &deployment(2, rolling)),
            Some(("RolloutInProgress", "order: 1/3 replicas updated".to_owned()))
        );
        let draining = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 4});
        assert_eq!(rollout("order", 3, &deployment(2, draining)).unwrap().0, "RolloutInProgress");
        // The deadline passed: reported as such although the old pods are ready.
        let stuck = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"d-1\" has timed out progressing."}]});
        let (reason, message) = rollout("order", 1, &deployment(2, stuck)).unwrap();
        assert_eq!(reason, "ProgressDeadlineExceeded");
        assert!(message.contains("timed out progressing"), "{message}");
        let unready = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1});
        assert_eq!(
            rollout("order", 2, &deployment(2, unready)),
            Some(("ReplicasNotReady", "order: 1/2 ready".to_owned()))
        );
        assert_eq!(rollout("order", 1, &deployment(1, json!({}))).unwrap().0, "RolloutPending", "no status yet");
        assert_eq!(rollout("order", 0, &deployment(1, json!({}))), None, "nothing to run, nothing running");
    }

    /// Only a rollout whose replicas all run the current template lets old-template work go.
    #[test]
    fn old_pods_may_run_until_every_replica_is_updated() {
        let reasons = ["ProgressDeadlineExceeded", "RolloutPending", "RolloutInProgress"];
        assert!(reasons.iter().all(|r| old_template_may_run(r)));
        assert!(!old_template_may_run("ReplicasNotReady"), "only new pods, not ready yet");
        let draining = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 4});
        assert!(old_template_may_run(rollout("order", 3, &deployment(2, draining)).unwrap().0));
    }

    #[test]
    fn ready_comes_first_and_scaling_limited_does_not_count() {
        let limited = autoscaling_observations(None, &[], &[("ScaleUpLimit", "payment: held".to_owned())]);
        let all = with_ready(&[], &limited, "t1", Some(3));
        assert_eq!(
            all.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [READY, AUTOSCALING_ACTIVE, SCALING_LIMITED]
        );
        assert_eq!((all[0].status.as_str(), all[2].status.as_str()), ("True", "True"));
        assert_eq!((all[0].last_transition_time.as_str(), all[0].observed_generation), ("t1", Some(3)));
        let held = autoscaling_observations(None, &["payment"], &[]);
        assert_eq!((held[0].reason.as_str(), held[1].reason.as_str()), ("MessageRateUnknown", "DesiredWithinRange"));
        assert!(!ready(&held).status);
    }

    #[test]
    fn a_stuck_rollout_names_services_available() {
        let problems = [
            ("ReplicasNotReady", "order: 0/1 ready".to_owned()),
            ("ProgressDeadlineExceeded", "payment: rollout stuck".to_owned()),
        ];
        let observed = services_available(&problems);
        assert_eq!((observed.status, observed.reason.as_str()), (false, "ProgressDeadlineExceeded"));
        assert_eq!(observed.message, "order: 0/1 ready, payment: rollout stuck");
        assert!(services_available(&[]).status);
    }

    #[test]
    fn transition_time_changes_only_on_flip() {
        let first = conditions(&[], &[Observation::new(READY, false, "Progressing", "a")], "t1", Some(1));
        assert_eq!(first[0].last_transition_time, "t1");
        let same = conditions(&first, &[Observation::new(READY, false, "Other", "b")], "t2", Some(2));
        assert_eq!(same[0].last_transition_time, "t1", "same status, new reason: time kept");
        assert_eq!(same[0].reason, "Other");
        let flipped = conditions(&same, &[Observation::new(READY, true, "Available", "c")], "t3", Some(2));
        assert_eq!(flipped[0].last_transition_time, "t3");
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn ready_carries_the_first_failure() {
        let observed = [
            Observation::new(TOPOLOGY_READY, true, "Declared", ""),
            Observation::new(SERVICES_AVAILABLE, false, "ReplicasNotReady", "order: 0/1 ready"),
        ];
        let ready = ready(&observed);
        assert!(!ready.status);
        assert_eq!(ready.reason, "ReplicasNotReady");
        assert_eq!(ready.message, "order: 0/1 ready");
    }
}
