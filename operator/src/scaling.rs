//! Autoscaling as a pure function of the policy, the current replica count,
//! the metric's value, the time and the recent recommendations and scale
//! events — the Horizontal Pod Autoscaler v2 algorithm:
//!
//! 1. *recommend*: ceil(value / target), or the current count while the load
//!    per replica is within the tolerance of the target;
//! 2. *stabilize*: scale up only to the lowest recommendation of the scale-up
//!    window, down only to the highest of the scale-down window;
//! 3. *limit*: the policies of the direction (`Pods` or `Percent` per
//!    `periodSeconds`, combined by `selectPolicy` Max/Min, or `Disabled`),
//!    counted from the scale events kept in status, never per reconcile;
//! 4. *bound*: [min, max] win over everything (a changed min/max applies at once).
//!
//! The reason the result differs from the stabilized recommendation is HPA's
//! `ScalingLimited` reason. One difference from the HPA: replicas removed in a
//! period do not make room for more additions in it (nor additions for more
//! removals), so a period never adds (removes) more than its policies allow.

use crate::crd::{AutoscalingSpec, PolicyType, Recommendation, ScaleEvent, ScalingMetric, ScalingRules, SelectPolicy};

/// Raw recommendations are capped here (far above any `maxReplicas`).
const RECOMMENDATION_CAP: f64 = 10_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pods,
    Percent,
}

/// One rate limit: `value` pods or percent per `period` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub kind: Kind,
    pub value: i32,
    pub period: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// One direction's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window: i64,
    pub select: Select,
    pub rates: Vec<Rate>,
}

impl Rules {
    /// The longest policy period (events older than it no longer count).
    fn longest_period(&self) -> i64 {
        self.rates.iter().map(|r| r.period).max().unwrap_or(0)
    }
}

impl From<&ScalingRules> for Rules {
    fn from(rules: &ScalingRules) -> Self {
        Rules {
            window: i64::from(rules.stabilization_window_seconds),
            select: match rules.select_policy {
                SelectPolicy::Max => Select::Max,
                SelectPolicy::Min => Select::Min,
                SelectPolicy::Disabled => Select::Disabled,
            },
            rates: rules
                .policies
                .iter()
                .map(|p| Rate {
                    kind: match p.type_ {
                        PolicyType::Pods => Kind::Pods,
                        PolicyType::Percent => Kind::Percent,
                    },
                    value: p.value.max(1),
                    period: i64::from(p.period_seconds.max(1)),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    /// Metric value one replica is expected to handle.
    pub target_per_replica: f64,
    pub tolerance: f64,
    pub up: Rules,
    pub down: Rules,
}

impl From<&AutoscalingSpec> for Policy {
    fn from(spec: &AutoscalingSpec) -> Self {
        let period = i64::from(spec.step_period_seconds.max(1));
        let behavior = spec.behavior.clone().unwrap_or_default();
        let up = behavior.scale_up.as_ref().map(Rules::from).unwrap_or(Rules {
            window: 0,
            select: Select::Max,
            rates: vec![Rate { kind: Kind::Pods, value: spec.max_scale_up_step.max(1), period }],
        });
        let down = behavior.scale_down.as_ref().map(Rules::from).unwrap_or(Rules {
            window: i64::from(spec.stabilization_window_seconds),
            select: Select::Max,
            rates: vec![Rate { kind: Kind::Pods, value: spec.max_scale_down_step.max(1), period }],
        });
        let target = match spec.metric {
            ScalingMetric::QueueLength => spec.target_queue_depth_per_replica.unwrap_or(1) as f64,
            ScalingMetric::MessageRate => spec.target_message_rate_per_replica.unwrap_or(1.0),
        };
        Policy {
            min: spec.min_replicas,
            max: spec.max_replicas,
            target_per_replica: if target > 0.0 { target } else { 1.0 },
            tolerance: spec.tolerance,
            up,
            down,
        }
    }
}

/// Why the decided count differs from the stabilized recommendation (HPA's
/// `ScalingLimited` reasons), or `DesiredWithinRange` when it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    DesiredWithinRange,
    ScaleUpLimit,
    ScaleDownLimit,
    TooManyReplicas,
    TooFewReplicas,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::DesiredWithinRange => "DesiredWithinRange",
            Limit::ScaleUpLimit => "ScaleUpLimit",
            Limit::ScaleDownLimit => "ScaleDownLimit",
            Limit::TooManyReplicas => "TooManyReplicas",
            Limit::TooFewReplicas => "TooFewReplicas",
        }
    }

    /// True when a policy, min or max bound the count (`ScalingLimited=True`).
    pub fn limited(self) -> bool {
        self != Limit::DesiredWithinRange
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub replicas: i32,
    /// What the metric alone asks for.
    pub recommended: i32,
    /// After the stabilization windows.
    pub stabilized: i32,
    pub limit: Limit,
    /// Recommendations still inside the longer window, the new one included.
    pub recommendations: Vec<Recommendation>,
    /// Scale events still inside the longest policy period, this one included.
    pub events: Vec<ScaleEvent>,
}

impl Decision {
    /// One sentence for status and events.
    pub fn message(&self, policy: &Policy, current: i32) -> String {
        let base = format!(
            "recommended {}, stabilized {}, {} -> {} replicas",
            self.recommended, self.stabilized, current, self.replicas
        );
        match self.limit {
            Limit::DesiredWithinRange => base,
            Limit::ScaleUpLimit => format!("{base}: the scale-up policies allow no more in their period"),
            Limit::ScaleDownLimit => format!("{base}: the scale-down policies allow no fewer in their period"),
            Limit::TooManyReplicas => format!("{base}: bounded by maxReplicas {}", policy.max),
            Limit::TooFewReplicas => format!("{base}: bounded by minReplicas {}", policy.min),
        }
    }
}

/// The replica count the metric alone asks for: ceil(value / target), or
/// `current` while the load per replica is within the tolerance. Not bounded
/// by min/max (that comes last, and is reported).
pub fn recommend(policy: &Policy, current: i32, value: f64) -> i32 {
    let value = if value.is_finite() { value.max(0.0) } else { 0.0 };
    if current > 0 {
        let ratio = value / (f64::from(current) * policy.target_per_replica);
        if (ratio - 1.0).abs() <= policy.tolerance {
            return current;
        }
    }
    (value / policy.target_per_replica).ceil().min(RECOMMENDATION_CAP) as i32
}

/// Replicas added (`up`) or removed in the `period` seconds before `now`.
fn changed_within(events: &[ScaleEvent], now: i64, period: i64, up: bool) -> i32 {
    events
        .iter()
        .filter(|e| e.at > now - period && e.at <= now)
        .map(|e| if up { e.change.max(0) } else { (-e.change).max(0) })
        .sum()
}

/// The most replicas the scale-up rules allow now (never below `current`).
pub fn scale_up_limit(rules: &Rules, current: i32, now: i64, events: &[ScaleEvent]) -> i32 {
    if rules.select == Select::Disabled || rules.rates.is_empty() {
        return current;
    }
    let proposals = rules.rates.iter().map(|rate| {
        let base = current - changed_within(events, now, rate.period, true);
        match rate.kind {
            Kind::Pods => base.saturating_add(rate.value),
            Kind::Percent => (f64::from(base) * (1.0 + f64::from(rate.value) / 100.0)).ceil() as i32,
        }
    });
    let limit = match rules.select {
        Select::Max => proposals.max(),
        _ => proposals.min(),
    };
    limit.unwrap_or(current).max(current)
}

/// The fewest replicas the scale-down rules allow now (never above `current`).
pub fn scale_down_limit(rules: &Rules, current: i32, now: i64, events: &[ScaleEvent]) -> i32 {
    if rules.select == Select::Disabled || rules.rates.is_empty() {
        return current;
    }
    let proposals = rules.rates.iter().map(|rate| {
        let base = current.saturating_add(changed_within(events, now, rate.period, false));
        match rate.kind {
            Kind::Pods => base - rate.value,
            Kind::Percent => (f64::from(base) * (1.0 - f64::from(rate.value.min(100)) / 100.0)).floor() as i32,
        }
    });
    // Max: the policy allowing the largest change, i.e. the lowest count.
    let limit = match rules.select {
        Select::Max => proposals.min(),
        _ => proposals.max(),
    };
    limit.unwrap_or(current).min(current)
}

/// Decides the replica count at `now` (unix seconds) for a metric `value`,
/// given the recent recommendations and scale events.
pub fn decide(
    policy: &Policy,
    current: i32,
    value: f64,
    now: i64,
    history: &[Recommendation],
    events: &[ScaleEvent],
) -> Decision {
    let recommended = recommend(policy, current, value);
    let keep = policy.up.window.max(policy.down.window);
    let mut recommendations: Vec<Recommendation> =
        history.iter().copied().filter(|r| r.at > now - keep && r.at <= now).collect();
    let in_window = |window: i64| recommendations.iter().filter(move |r| r.at > now - window).map(|r| r.replicas);
    let up_recommendation = in_window(policy.up.window).fold(recommended, i32::min);
    let down_recommendation = in_window(policy.down.window).fold(recommended, i32::max);
    let stabilized = current.max(up_recommendation).min(down_recommendation);
    recommendations.push(Recommendation { at: now, replicas: recommended });

    let longest = policy.up.longest_period().max(policy.down.longest_period());
    let mut events: Vec<ScaleEvent> = events.iter().copied().filter(|e| e.at > now - longest && e.at <= now).collect();

    let (replicas, limit) = if current > policy.max {
        (policy.max, Limit::TooManyReplicas)
    } else if current < policy.min {
        (policy.min, Limit::TooFewReplicas)
    } else {
        let (mut lowest, mut highest) = (policy.min, policy.max);
        let (mut low_reason, mut high_reason) = (Limit::TooFewReplicas, Limit::TooManyReplicas);
        if stabilized > current {
            let up = scale_up_limit(&policy.up, current, now, &events);
            if up < highest {
                (highest, high_reason) = (up, Limit::ScaleUpLimit);
            }
        } else if stabilized < current {
            let down = scale_down_limit(&policy.down, current, now, &events);
            if down > lowest {
                (lowest, low_reason) = (down, Limit::ScaleDownLimit);
            }
        }
        if stabilized > highest {
            (highest, high_reason)
        } else if stabilized < lowest {
            (lowest, low_reason)
        } else {
            (stabilized, Limit::DesiredWithinRange)
        }
    };
    if replicas != current {
        events.push(ScaleEvent { at: now, change: replicas - current });
    }
    Decision { replicas, recommended, stabilized, limit, recommendations, events }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pods(value: i32, period: i64) -> Rate {
        Rate { kind: Kind::Pods, value, period }
    }

    fn percent(value: i32, period: i64) -> Rate {
        Rate { kind: Kind::Percent, value, period }
    }

    /// The defaults of the older fields: up 4 pods / 15 s, down 1 pod / 15 s after 300 s.
    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            target_per_replica: 100.0,
            tolerance: 0.1,
            up: Rules { window: 0, select: Select::Max, rates: vec![pods(4, 15)] },
            down: Rules { window: 300, select: Select::Max, rates: vec![pods(1, 15)] },
        }
    }

    fn rec(at: i64, replicas: i32) -> Recommendation {
        Recommendation { at, replicas }
    }

    #[test]
    fn recommendation_table() {
        // (current, value, expected): not bounded by min/max here.
        let cases = [
            (1, 0.0, 0),          // no load
            (1, 100.0, 1),        // exactly on target
            (1, 101.0, 1),        // 1 % over the target: inside the band
            (1, 120.0, 2),        // ceil(1.2)
            (2, 210.0, 2),        // within 10 % of 200: no change
            (2, 250.0, 3),        // outside the band
            (3, 270.0, 3),        // 270/300 = 0.9: inside the band
            (4, 100_000.0, 1000), // above max: bounded later, and reported
            (0, 0.0, 0),
            (1, f64::NAN, 0),
            (1, 1e300, 10_000), // capped
        ];
        for (current, value, expected) in cases {
            assert_eq!(recommend(&policy(), current, value), expected, "current {current}, value {value}");
        }
    }

    #[test]
    fn scales_up_at_once_within_the_policy_and_says_so() {
        let d = decide(&policy(), 2, 1_000.0, 1_000, &[], &[]);
        assert_eq!((d.replicas, d.recommended, d.limit), (6, 10, Limit::ScaleUpLimit), "2 + at most 4 per period");
        // Another reconcile in the same period (a burst of Deployment events) adds nothing.
        let again = decide(&policy(), 6, 1_000.0, 1_005, &d.recommendations, &d.events);
        assert_eq!((again.replicas, again.limit), (6, Limit::ScaleUpLimit), "one period, one step");
        let d = decide(&policy(), 6, 1_000.0, 1_015, &again.recommendations, &again.events);
        assert_eq!((d.replicas, d.limit), (10, Limit::DesiredWithinRange));
        let d = decide(&policy(), 10, 5_000.0, 1_030, &d.recommendations, &d.events);
        assert_eq!((d.replicas, d.limit), (10, Limit::TooManyReplicas));
        let d = decide(&policy(), 1, 0.0, 1_030, &[], &[]);
        assert_eq!((d.replicas, d.limit), (1, Limit::TooFewReplicas), "0 recommended, min 1");
    }

    #[test]
    fn percent_and_pods_policies_with_select_max_and_min() {
        // HPA's default scale-up: max(100 % , 4 pods) per 15 s.
        let up = |select| Rules { window: 0, select, rates: vec![percent(100, 15), pods(4, 15)] };
        let p = Policy { max: 100, up: up(Select::Max), ..policy() };
        assert_eq!(decide(&p, 2, 10_000.0, 0, &[], &[]).replicas, 6, "4 pods beat 100 % of 2");
        assert_eq!(decide(&p, 10, 10_000.0, 0, &[], &[]).replicas, 20, "100 % of 10 beats 4 pods");
        let p = Policy { max: 100, up: up(Select::Min), ..policy() };
        assert_eq!(decide(&p, 2, 10_000.0, 0, &[], &[]).replicas, 4, "the smaller change: 100 % of 2");
        assert_eq!(decide(&p, 10, 10_000.0, 0, &[], &[]).replicas, 14);
        let p = Policy { max: 100, up: up(Select::Disabled), ..policy() };
        let d = decide(&p, 2, 10_000.0, 0, &[], &[]);
        assert_eq!((d.replicas, d.limit), (2, Limit::ScaleUpLimit), "scale-up disabled");
        // Scale-down: 50 % per 60 s, no window.
        let down = Rules { window: 0, select: Select::Max, rates: vec![percent(50, 60)] };
        let p = Policy { max: 100, down, ..policy() };
        let d = decide(&p, 10, 0.0, 0, &[], &[]);
        assert_eq!((d.replicas, d.limit), (5, Limit::ScaleDownLimit));
        let d2 = decide(&p, 5, 0.0, 30, &d.recommendations, &d.events);
        assert_eq!(d2.replicas, 5, "the period started at 10: 50 % of it is spent");
        let d3 = decide(&p, 5, 0.0, 61, &d2.recommendations, &d2.events);
        assert_eq!(d3.replicas, 2, "a new period: 50 % of 5, floored");
    }

    #[test]
    fn scales_down_only_after_the_window() {
        let p = policy();
        let mut history = vec![];
        let replicas = 5;
        let d = decide(&p, replicas, 500.0, 0, &history, &[]);
        history = d.recommendations;
        assert_eq!(d.replicas, 5);
        for t in (10..300).step_by(30) {
            let d = decide(&p, replicas, 100.0, t, &history, &[]);
            assert_eq!(d.replicas, 5, "no scale-down inside the window (t={t})");
            assert_eq!((d.stabilized, d.limit), (5, Limit::DesiredWithinRange), "the window holds, not a policy");
            history = d.recommendations;
        }
        let d = decide(&p, replicas, 100.0, 300, &history, &[]);
        assert_eq!((d.replicas, d.limit), (4, Limit::ScaleDownLimit));
        let d = decide(&p, 4, 100.0, 301, &d.recommendations, &d.events);
        assert_eq!(d.replicas, 4, "the period of the last step is not over");
        let d = decide(&p, 4, 100.0, 315, &d.recommendations, &d.events);
        assert_eq!(d.replicas, 3);
    }

    #[test]
    fn a_scale_up_window_waits_for_the_lowest_recommendation() {
        let p = Policy { up: Rules { window: 60, select: Select::Max, rates: vec![pods(10, 15)] }, ..policy() };
        let d = decide(&p, 2, 200.0, 0, &[], &[]);
        let d = decide(&p, 2, 800.0, 30, &d.recommendations, &d.events);
        assert_eq!((d.recommended, d.stabilized, d.replicas), (8, 2, 2), "the spike waits for the window");
        let d = decide(&p, 2, 800.0, 61, &d.recommendations, &d.events);
        assert_eq!(d.replicas, 8, "the low recommendation left the window");
    }

    #[test]
    fn changed_bounds_apply_at_once() {
        let p = Policy { min: 3, max: 4, ..policy() };
        assert_eq!(decide(&p, 1, 0.0, 0, &[], &[]).replicas, 3);
        assert_eq!(decide(&p, 9, 0.0, 0, &[rec(0, 9)], &[]).replicas, 4);
    }

    fn arb_rate() -> impl Strategy<Value = Rate> {
        (prop::bool::ANY, 1i32..150, 1i64..90).prop_map(|(is_pods, value, period)| {
            if is_pods { pods(value.min(8), period) } else { percent(value, period) }
        })
    }

    fn arb_rules() -> impl Strategy<Value = Rules> {
        (0i64..300, 0u8..5, prop::collection::vec(arb_rate(), 1..4)).prop_map(|(window, select, rates)| Rules {
            window,
            // Disabled now and then, Max and Min otherwise.
            select: match select {
                0 => Select::Disabled,
                1 | 2 => Select::Min,
                _ => Select::Max,
            },
            rates,
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (1i32..5, 0i32..30, 1u32..500, 0.0f64..0.5, arb_rules(), arb_rules()).prop_map(
            |(min, extra, target, tolerance, up, down)| Policy {
                min,
                max: min + extra,
                target_per_replica: f64::from(target),
                tolerance,
                up,
                down,
            },
        )
    }

    /// How much `rate` lets a period starting from `base` grow (`up`) or shrink.
    fn allowance(rate: &Rate, base: i32, up: bool) -> i32 {
        let (base, value) = (f64::from(base), f64::from(rate.value));
        match (rate.kind, up) {
            (Kind::Pods, _) => rate.value,
            (Kind::Percent, true) => ((base * (1.0 + value / 100.0)).ceil() - base) as i32,
            (Kind::Percent, false) => (base - (base * (1.0 - value.min(100.0) / 100.0)).floor()) as i32,
        }
    }

    /// A series of reconciles: gaps (bursts at the same second included) and
    /// metric values; what each one recommended and decided.
    struct Run {
        steps: Vec<(i64, i32, i32, i32)>, // (at, before, recommended, after)
    }

    fn run(p: &Policy, start: i32, series: &[(i64, u64)]) -> Run {
        let (mut history, mut events) = (Vec::new(), Vec::new());
        let (mut replicas, mut now, mut steps) = (start, 0, Vec::new());
        for (gap, value) in series {
            now += gap;
            let d = decide(p, replicas, *value as f64, now, &history, &events);
            steps.push((now, replicas, recommend(p, replicas, *value as f64), d.replicas));
            (replicas, history, events) = (d.replicas, d.recommendations, d.events);
        }
        Run { steps }
    }

    /// Replicas added (`up`) or removed by the steps in (`now - period`, `now`].
    fn gross(run: &Run, now: i64, period: i64, up: bool) -> i32 {
        run.steps
            .iter()
            .filter(|(at, ..)| *at > now - period && *at <= now)
            .map(|(_, before, _, after)| if up { (after - before).max(0) } else { (before - after).max(0) })
            .sum()
    }

    proptest! {
        #[test]
        fn always_within_bounds(p in arb_policy(), current in 0i32..60, value in 0u64..100_000, now in 0i64..10_000,
                                history in prop::collection::vec((0i64..10_000, 0i32..60), 0..10),
                                events in prop::collection::vec((0i64..10_000, -20i32..20), 0..10)) {
            let history: Vec<_> = history.into_iter().map(|(at, replicas)| rec(at, replicas)).collect();
            let events: Vec<_> = events.into_iter().map(|(at, change)| ScaleEvent { at, change }).collect();
            let d = decide(&p, current, value as f64, now, &history, &events);
            prop_assert!(d.replicas >= p.min && d.replicas <= p.max, "{} outside [{}, {}]", d.replicas, p.min, p.max);
            prop_assert_eq!(d.limit.limited(), d.replicas != d.stabilized || current < p.min || current > p.max);
        }

        #[test]
        fn no_change_inside_the_tolerance(p in arb_policy(), current in 1i32..20, deviation in -1.0f64..1.0) {
            prop_assume!(current >= p.min && current <= p.max);
            let value = f64::from(current) * p.target_per_replica * (1.0 + deviation * p.tolerance);
            prop_assert_eq!(decide(&p, current, value, 0, &[], &[]).replicas, current);
        }

        /// Over a generated series (bursts of reconciles at one second
        /// included), every window of every policy's period adds (removes) no
        /// more than the policies allow: all of them with `Min`, one of them
        /// with `Max`, nothing with `Disabled`; and never outside [min, max].
        #[test]
        fn policies_hold_over_every_window(p in arb_policy(), start in 0i32..30,
                                           series in prop::collection::vec((0i64..20, 0u64..20_000), 1..80)) {
            let start = start.clamp(p.min, p.max);
            let run = run(&p, start, &series);
            for &(now, before, _, after) in &run.steps {
                prop_assert!(after >= p.min && after <= p.max);
                for (up, rules, moved) in [(true, &p.up, after > before), (false, &p.down, after < before)] {
                    if !moved {
                        continue;
                    }
                    prop_assert!(rules.select != Select::Disabled, "moved {} -> {} although disabled", before, after);
                    let holds: Vec<bool> = rules.rates.iter().map(|rate| {
                        let changed = gross(&run, now, rate.period, up);
                        let base = if up { after - changed } else { after + changed };
                        changed <= allowance(rate, base, up)
                    }).collect();
                    let ok = match rules.select {
                        Select::Min => holds.iter().all(|h| *h),
                        _ => holds.iter().any(|h| *h),
                    };
                    prop_assert!(ok, "{} -> {} at {} ({}) breaks {:?}: {:?}", before, after, now,
                                 if up { "up" } else { "down" }, rules, holds);
                }
            }
        }

        /// Scale-down never goes below the highest recommendation of the
        /// scale-down window, scale-up never above the lowest of the scale-up
        /// window (both bounded by [min, max]).
        #[test]
        fn stabilization_holds(p in arb_policy(), start in 0i32..30,
                               series in prop::collection::vec((0i64..40, 0u64..20_000), 1..80)) {
            let start = start.clamp(p.min, p.max);
            let run = run(&p, start, &series);
            for (i, &(now, before, recommended, after)) in run.steps.iter().enumerate() {
                // This step's recommendation and the earlier ones inside the window.
                let window = |w: i64| {
                    run.steps[..i].iter().filter(move |(at, ..)| *at > now - w).map(|s| s.2).chain([recommended])
                };
                if after < before {
                    let highest = window(p.down.window).max().unwrap().clamp(p.min, p.max);
                    prop_assert!(after >= highest, "down to {} at {} below {} of the window", after, now, highest);
                }
                if after > before {
                    let lowest = window(p.up.window).min().unwrap().clamp(p.min, p.max);
                    prop_assert!(after <= lowest, "up to {} at {} above {} of the window", after, now, lowest);
                }
            }
        }
    }
}
