//! Checks the CRD schema cannot make (or that an older CRD may have let
//! through), with messages that say what to change.

use lapin::uri::AMQPUri;

use super::build::Component;
use crate::crd::SagaPlatform;

/// Every problem of the spec, in one list.
pub fn validate(platform: &SagaPlatform) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let name = platform.platform_name();
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        problems.push(format!("platform name {name:?} must be 1-63 lowercase letters, digits or '-'"));
    }
    if let Some(url) = &platform.spec.broker.management_url
        && !url.starts_with("http://")
    {
        problems.push(format!("broker.managementUrl {url:?} must be an http:// URL"));
    }
    if platform.spec.saga.step_timeout_seconds == 0 {
        problems.push("saga.stepTimeoutSeconds must be greater than 0".into());
    }
    if platform.spec.retry.initial_delay_ms == 0 {
        problems.push("retry.initialDelayMs must be greater than 0".into());
    }
    for component in Component::ALL {
        let spec = component.spec(platform);
        let service = component.name();
        if spec.image.trim().is_empty() {
            problems.push(format!("{service}.image must not be empty"));
        }
        if let Some(scaling) = &spec.autoscaling {
            if scaling.min_replicas < 1 {
                problems.push(format!("{service}.autoscaling.minReplicas must be at least 1"));
            }
            if scaling.min_replicas > scaling.max_replicas {
                problems.push(format!(
                    "{service}.autoscaling.minReplicas ({}) must be less than or equal to maxReplicas ({})",
                    scaling.min_replicas, scaling.max_replicas
                ));
            }
            if scaling.target_queue_depth_per_replica == 0 {
                problems.push(format!("{service}.autoscaling.targetQueueDepthPerReplica must be greater than 0"));
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The broker URL read from the Secret must be an AMQP URL.
pub fn broker_url(url: &str) -> Result<(), String> {
    url.parse::<AMQPUri>()
        .map(|_| ())
        .map_err(|reason| format!("the broker URL in the Secret is not an AMQP URL: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AutoscalingSpec;

    fn example() -> SagaPlatform {
        let text = include_str!("../../../examples/sagaplatform.yaml");
        serde_yaml::from_str(text).expect("the example parses")
    }

    #[test]
    fn the_example_is_valid() {
        assert_eq!(validate(&example()), Ok(()));
    }

    #[test]
    fn every_problem_is_named() {
        let mut platform = example();
        platform.spec.platform = Some("Not_Valid".into());
        platform.spec.broker.management_url = Some("https://rabbit:15671".into());
        platform.spec.order.image = " ".into();
        platform.spec.payment.autoscaling = Some(AutoscalingSpec {
            min_replicas: 3,
            max_replicas: 2,
            target_queue_depth_per_replica: 0,
            tolerance: 0.1,
            stabilization_window_seconds: 300,
            max_scale_up_step: 4,
            max_scale_down_step: 1,
            step_period_seconds: 15,
        });
        assert_eq!(
            validate(&platform),
            Err(vec![
                r#"platform name "Not_Valid" must be 1-63 lowercase letters, digits or '-'"#.to_owned(),
                r#"broker.managementUrl "https://rabbit:15671" must be an http:// URL"#.to_owned(),
                "order.image must not be empty".to_owned(),
                "payment.autoscaling.minReplicas (3) must be less than or equal to maxReplicas (2)".to_owned(),
                "payment.autoscaling.targetQueueDepthPerReplica must be greater than 0".to_owned(),
            ])
        );
    }

    #[test]
    fn broker_url_must_be_amqp() {
        assert_eq!(broker_url("amqp://guest:guest@rabbitmq:5672/%2f"), Ok(()));
        assert!(broker_url("http://rabbitmq:15672").is_err());
    }
}
