//! *plan*: each service's replica count — the spec's, or the autoscaler's
//! decision — as a pure function of the spec, the last status, the metrics
//! and the clock.

use crate::crd::{AutoscalerStatus, Recommendation, ScaleEvent, ScalingMetric, ServiceSpec, ServiceStatus};
use crate::scaling;

/// One service's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub replicas: i32,
    pub recommendations: Vec<Recommendation>,
    pub scale_events: Vec<ScaleEvent>,
    pub autoscaler: Option<AutoscalerStatus>,
    pub autoscaling: bool,
    /// The count before and a note, when the autoscaler changed it.
    pub scaled: Option<(i32, String)>,
    /// HPA's `ScalingLimited` reason and the message, when a policy or a bound held the count.
    pub limited: Option<(&'static str, String)>,
    /// `metric: MessageRate` without the management API's rates: the count is held.
    pub rate_unknown: bool,
}

/// The plan at `now` (unix seconds) from the queue's depth and publish rate
/// (`None`: unreadable; the count is then held).
pub fn plan(
    spec: &ServiceSpec,
    before: &ServiceStatus,
    depth: Option<u64>,
    publish_rate: Option<f64>,
    now: i64,
) -> Plan {
    let Some(scaling_spec) = &spec.autoscaling else {
        return Plan {
            replicas: spec.replicas,
            recommendations: Vec::new(),
            scale_events: Vec::new(),
            autoscaler: None,
            autoscaling: false,
            scaled: None,
            limited: None,
            rate_unknown: false,
        };
    };
    let policy = scaling::Policy::from(scaling_spec);
    let current = if before.desired_replicas > 0 { before.desired_replicas } else { policy.min };
    let value = match scaling_spec.metric {
        ScalingMetric::QueueLength => depth.map(|d| d as f64),
        ScalingMetric::MessageRate => publish_rate,
    };
    let Some(value) = value else {
        return Plan {
            replicas: current.clamp(policy.min, policy.max),
            recommendations: before.recommendations.clone(),
            scale_events: before.scale_events.clone(),
            autoscaler: before.autoscaler.clone(),
            autoscaling: true,
            scaled: None,
            limited: None,
            rate_unknown: scaling_spec.metric == ScalingMetric::MessageRate && depth.is_some(),
        };
    };
    let decision = scaling::decide(&policy, current, value, now, &before.recommendations, &before.scale_events);
    let message = decision.message(&policy, current);
    let scaled = (decision.replicas != current).then(|| {
        let note =
            format!("{current} -> {} replicas ({:?} {value:.2}; {message})", decision.replicas, scaling_spec.metric);
        (current, note)
    });
    let limited = decision.limit.limited().then(|| (decision.limit.as_str(), message.clone()));
    let autoscaler = AutoscalerStatus {
        metric: format!("{:?}", scaling_spec.metric),
        value: format!("{value:.2}"),
        target: format!("{}", policy.target_per_replica),
        recommended_replicas: decision.recommended,
        stabilized_replicas: decision.stabilized,
        replicas: decision.replicas,
        reason: decision.limit.as_str().into(),
        message,
    };
    Plan {
        replicas: decision.replicas,
        recommendations: decision.recommendations,
        scale_events: decision.events,
        autoscaler: Some(autoscaler),
        autoscaling: true,
        scaled,
        limited,
        rate_unknown: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AutoscalingSpec, SecretKeyRef};

    fn spec(autoscaling: Option<AutoscalingSpec>) -> ServiceSpec {
        ServiceSpec {
            image: "i".into(),
            replicas: 2,
            database_url_secret: SecretKeyRef { name: "s".into(), key: "k".into() },
            resources: None,
            progress_deadline_seconds: None,
            disruption_budget: None,
            network_policy: None,
            autoscaling,
        }
    }

    fn scaling(metric: ScalingMetric) -> AutoscalingSpec {
        serde_json::from_value(serde_json::json!({"minReplicas": 1, "maxReplicas": 5, "metric": metric,
            "targetQueueDepthPerReplica": 10, "targetMessageRatePerReplica": 2.0}))
        .unwrap()
    }

    #[test]
    fn without_autoscaling_the_spec_decides() {
        let plan = plan(&spec(None), &ServiceStatus::default(), Some(1000), Some(100.0), 0);
        assert_eq!((plan.replicas, plan.autoscaling, plan.autoscaler), (2, false, None));
    }

    #[test]
    fn each_metric_scales_on_its_value() {
        let before = ServiceStatus { desired_replicas: 1, ..ServiceStatus::default() };
        let by_depth = plan(&spec(Some(scaling(ScalingMetric::QueueLength))), &before, Some(30), Some(0.0), 0);
        assert_eq!((by_depth.replicas, by_depth.scaled.map(|s| s.0)), (3, Some(1)));
        let by_rate = plan(&spec(Some(scaling(ScalingMetric::MessageRate))), &before, Some(0), Some(7.0), 0);
        assert_eq!(by_rate.replicas, 4, "ceil(7 / 2)");
        let autoscaler = by_rate.autoscaler.unwrap();
        assert_eq!((autoscaler.metric.as_str(), autoscaler.value.as_str()), ("MessageRate", "7.00"));
        let bounded = plan(&spec(Some(scaling(ScalingMetric::QueueLength))), &before, Some(0), None, 0);
        assert_eq!(bounded.limited.map(|l| l.0), Some("TooFewReplicas"));
    }

    #[test]
    fn an_unreadable_metric_holds_the_count() {
        let before = ServiceStatus { desired_replicas: 3, ..ServiceStatus::default() };
        let held = plan(&spec(Some(scaling(ScalingMetric::MessageRate))), &before, Some(10), None, 0);
        assert_eq!((held.replicas, held.rate_unknown, held.scaled), (3, true, None));
        let held = plan(&spec(Some(scaling(ScalingMetric::QueueLength))), &before, None, None, 0);
        assert_eq!((held.replicas, held.rate_unknown), (3, false));
    }
}
