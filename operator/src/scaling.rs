//! Autoscaling on queue depth, as a pure function of the policy, the current
//! replica count, the backlog, the time and the recent recommendations.
//!
//! Follows the Horizontal Pod Autoscaler's rules: scale up at once (at most
//! `max_scale_up_step` replicas per `step_period_seconds`), scale down only to
//! the highest recommendation of the stabilization window (at most
//! `max_scale_down_step` per period), and change nothing while the load is
//! within the tolerance. The limits count the scale events of the last period
//! (kept in status), not decisions: however many reconciles a burst of
//! Deployment events causes, a period never moves by more than one step.

use crate::crd::{AutoscalingSpec, Recommendation, ScaleEvent};

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    pub target_per_replica: u64,
    pub tolerance: f64,
    pub stabilization_seconds: i64,
    pub max_up_step: i32,
    pub max_down_step: i32,
    pub step_period_seconds: i64,
}

impl From<&AutoscalingSpec> for Policy {
    fn from(spec: &AutoscalingSpec) -> Self {
        Policy {
            min: spec.min_replicas,
            max: spec.max_replicas,
            target_per_replica: spec.target_queue_depth_per_replica.max(1),
            tolerance: spec.tolerance,
            stabilization_seconds: i64::from(spec.stabilization_window_seconds),
            max_up_step: spec.max_scale_up_step.max(1),
            max_down_step: spec.max_scale_down_step.max(1),
            step_period_seconds: i64::from(spec.step_period_seconds.max(1)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub replicas: i32,
    /// Recommendations still inside the window, the new one included.
    pub recommendations: Vec<Recommendation>,
    /// Scale events still inside the step period, this one included.
    pub events: Vec<ScaleEvent>,
}

/// The replica count the backlog alone asks for: clamp(ceil(backlog / target), min, max),
/// or `current` while the load per replica is within the tolerance of the target.
pub fn recommend(policy: &Policy, current: i32, backlog: u64) -> i32 {
    if current > 0 {
        let ratio = backlog as f64 / (current as f64 * policy.target_per_replica as f64);
        if (ratio - 1.0).abs() <= policy.tolerance {
            return current.clamp(policy.min, policy.max);
        }
    }
    let wanted = backlog.div_ceil(policy.target_per_replica).min(i32::MAX as u64) as i32;
    wanted.clamp(policy.min, policy.max)
}

/// Decides the replica count at `now` (unix seconds), given the recent
/// recommendations and scale events.
pub fn decide(
    policy: &Policy,
    current: i32,
    backlog: u64,
    now: i64,
    history: &[Recommendation],
    events: &[ScaleEvent],
) -> Decision {
    let recommended = recommend(policy, current, backlog);
    let mut recommendations: Vec<Recommendation> =
        history.iter().copied().filter(|r| r.at > now - policy.stabilization_seconds && r.at <= now).collect();
    recommendations.push(Recommendation { at: now, replicas: recommended });
    let mut events: Vec<ScaleEvent> =
        events.iter().copied().filter(|e| e.at > now - policy.step_period_seconds && e.at <= now).collect();
    let added: i32 = events.iter().map(|e| e.change.max(0)).sum();
    let removed: i32 = events.iter().map(|e| (-e.change).max(0)).sum();

    let replicas = if recommended > current {
        // At most `max_up_step` added within the period (removals do not make room).
        let ceiling = current.saturating_add((policy.max_up_step - added).max(0));
        recommended.min(ceiling).max(current)
    } else {
        // The highest recommendation of the window is the lowest safe count.
        let stable = recommendations.iter().map(|r| r.replicas).max().unwrap_or(recommended);
        let floor = current.saturating_sub((policy.max_down_step - removed).max(0));
        stable.min(current).max(floor)
    };
    // Bounds win over rate limits: a changed min/max applies at once.
    let replicas = replicas.clamp(policy.min, policy.max);
    if replicas != current {
        events.push(ScaleEvent { at: now, change: replicas - current });
    }
    Decision { replicas, recommendations, events }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            target_per_replica: 100,
            tolerance: 0.1,
            stabilization_seconds: 300,
            max_up_step: 4,
            max_down_step: 1,
            step_period_seconds: 15,
        }
    }

    fn rec(at: i64, replicas: i32) -> Recommendation {
        Recommendation { at, replicas }
    }

    #[test]
    fn recommendation_table() {
        // (current, backlog, expected)
        let cases = [
            (1, 0, 1),        // never below min
            (1, 100, 1),      // exactly on target
            (1, 101, 1),      // 1 % over the target: inside the band
            (1, 120, 2),      // ceil(1.2)
            (2, 210, 2),      // within 10 % of 200: no change
            (2, 250, 3),      // outside the band
            (3, 270, 3),      // 270/300 = 0.9: inside the band
            (3, 260, 3),      // ceil(2.6) = 3 anyway
            (4, 100_000, 10), // never above max
            (0, 0, 1),        // zero replicas is raised to min
        ];
        for (current, backlog, expected) in cases {
            assert_eq!(recommend(&policy(), current, backlog), expected, "current {current}, backlog {backlog}");
        }
    }

    #[test]
    fn scales_up_at_once_within_the_step_limit() {
        let d = decide(&policy(), 2, 1_000, 1_000, &[], &[]);
        assert_eq!(d.replicas, 6, "2 + at most 4 per step");
        // Another reconcile in the same period (a burst of Deployment events) adds nothing.
        let again = decide(&policy(), 6, 1_000, 1_005, &d.recommendations, &d.events);
        assert_eq!(again.replicas, 6, "one step per period, however many reconciles");
        let d = decide(&policy(), 6, 1_000, 1_015, &again.recommendations, &again.events);
        assert_eq!(d.replicas, 10);
    }

    #[test]
    fn scales_down_only_after_the_window() {
        let p = policy();
        let mut history = vec![];
        let mut replicas = 5;
        // Load 500: 5 replicas recommended.
        let d = decide(&p, replicas, 500, 0, &history, &[]);
        history = d.recommendations;
        assert_eq!(d.replicas, 5);
        // Load drops to 100 at t=10: the window still holds the 5.
        for t in (10..300).step_by(30) {
            let d = decide(&p, replicas, 100, t, &history, &[]);
            assert_eq!(d.replicas, 5, "no scale-down inside the window (t={t})");
            history = d.recommendations;
        }
        // t=300: the recommendation of t=0 left the window; step limit of 1 per period.
        let d = decide(&p, replicas, 100, 300, &history, &[]);
        assert_eq!(d.replicas, 4);
        replicas = d.replicas;
        history = d.recommendations;
        let events = d.events;
        let d = decide(&p, replicas, 100, 301, &history, &events);
        assert_eq!(d.replicas, 4, "the period of the last step is not over");
        let d = decide(&p, replicas, 100, 315, &d.recommendations, &d.events);
        assert_eq!(d.replicas, 3);
    }

    #[test]
    fn window_uses_the_highest_recommendation() {
        let history = [rec(100, 8), rec(200, 3)];
        let d = decide(&policy(), 8, 100, 250, &history, &[]);
        assert_eq!(d.replicas, 8);
        let d = decide(&policy(), 8, 100, 401, &history, &[]);
        assert_eq!(d.replicas, 7, "8 left the window; 3 is the highest; one step down");
        assert_eq!(d.recommendations, vec![rec(200, 3), rec(401, 1)]);
    }

    #[test]
    fn changed_bounds_apply_at_once() {
        let p = Policy { min: 3, max: 4, ..policy() };
        assert_eq!(decide(&p, 1, 0, 0, &[], &[]).replicas, 3);
        assert_eq!(decide(&p, 9, 0, 0, &[rec(0, 9)], &[]).replicas, 4);
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (1i32..5, 0i32..20, 1u64..500, 0.0f64..0.5, 0i64..600, 1i32..5, 1i32..5, 1i64..120).prop_map(
            |(min, extra, target, tolerance, window, up, down, period)| Policy {
                min,
                max: min + extra,
                target_per_replica: target,
                tolerance,
                stabilization_seconds: window,
                max_up_step: up,
                max_down_step: down,
                step_period_seconds: period,
            },
        )
    }

    proptest! {
        #[test]
        fn always_within_bounds(p in arb_policy(), current in 0i32..40, backlog in 0u64..100_000, now in 0i64..10_000,
                                history in prop::collection::vec((0i64..10_000, 0i32..40), 0..10)) {
            let history: Vec<_> = history.into_iter().map(|(at, replicas)| rec(at, replicas)).collect();
            let d = decide(&p, current, backlog, now, &history, &[]);
            prop_assert!(d.replicas >= p.min && d.replicas <= p.max);
            prop_assert!(d.recommendations.iter().all(|r| r.at <= now && (r.at == now || r.at > now - p.stabilization_seconds)));
        }

        #[test]
        fn no_change_inside_the_tolerance(p in arb_policy(), current in 1i32..20, deviation in -1.0f64..1.0) {
            prop_assume!(current >= p.min && current <= p.max);
            let load = current as f64 * p.target_per_replica as f64 * (1.0 + deviation * p.tolerance);
            let backlog = load.floor().max(0.0) as u64;
            // Flooring can leave the band by a hair; only judge loads inside it.
            let ratio = backlog as f64 / (current as f64 * p.target_per_replica as f64);
            prop_assume!((ratio - 1.0).abs() <= p.tolerance);
            prop_assert_eq!(decide(&p, current, backlog, 0, &[], &[]).replicas, current);
        }

        #[test]
        fn no_scale_down_inside_the_window(p in arb_policy(), current in 1i32..20, low in 0u64..1000,
                                           age in 0i64..600) {
            prop_assume!(current >= p.min && current <= p.max && age < p.stabilization_seconds);
            // `current` was recommended `age` seconds ago.
            let now = 10_000;
            let d = decide(&p, current, low, now, &[rec(now - age, current)], &[]);
            prop_assert!(d.replicas >= current);
        }

        #[test]
        fn steps_are_rate_limited(p in arb_policy(), current in 0i32..40, backlog in 0u64..100_000) {
            prop_assume!(current >= p.min && current <= p.max);
            let d = decide(&p, current, backlog, 0, &[], &[]);
            prop_assert!(d.replicas - current <= p.max_up_step);
            prop_assert!(current - d.replicas <= p.max_down_step);
        }

        /// Over a time series of reconciles (bursts included: several at the
        /// same second), no period ever moves by more than one step each way.
        #[test]
        fn steps_are_rate_limited_per_period(p in arb_policy(),
                                             series in prop::collection::vec((0i64..20, 0u64..100_000), 1..60)) {
            let mut replicas = p.min;
            let (mut history, mut events) = (Vec::new(), Vec::new());
            let mut log: Vec<(i64, i32)> = Vec::new();
            let mut now = 0;
            for (gap, backlog) in series {
                now += gap;
                let d = decide(&p, replicas, backlog, now, &history, &events);
                if d.replicas != replicas {
                    log.push((now, d.replicas - replicas));
                }
                replicas = d.replicas;
                history = d.recommendations;
                events = d.events;
                let in_period = log.iter().filter(|(at, _)| *at > now - p.step_period_seconds);
                let (up, down) = in_period.fold((0, 0), |(u, d), (_, c)| (u + c.max(&0), d + (-c).max(0)));
                prop_assert!(up <= p.max_up_step, "added {} in a period of {} s", up, p.step_period_seconds);
                prop_assert!(down <= p.max_down_step, "removed {} in a period of {} s", down, p.step_period_seconds);
            }
        }
    }
}
