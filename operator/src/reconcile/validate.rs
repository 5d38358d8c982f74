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
