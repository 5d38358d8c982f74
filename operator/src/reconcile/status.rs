//! Status from what was applied and observed. Pure: the caller passes the
//! time, so transition-time rules are unit-tested.

use crate::crd::Condition;

pub const READY: &str = "Ready";
pub const TOPOLOGY_READY: &str = "TopologyReady";
pub const SERVICES_AVAILABLE: &str = "ServicesAvailable";
/// False while the autoscaler holds replica counts because queue depth cannot be read.
pub const AUTOSCALING_ACTIVE: &str = "AutoscalingActive";
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

/// `Ready` summarises the others: true only when all of them are
/// (`ScalingLimited` aside: it informs, True or False).
pub fn ready(observed: &[Observation]) -> Observation {
    match observed.iter().filter(|o| o.type_ != SCALING_LIMITED).find(|o| !o.status) {
        None => Observation::new(READY, true, "Available", "topology declared and every service available"),
        Some(failing) => Observation::new(READY, false, failing.reason.clone(), failing.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
