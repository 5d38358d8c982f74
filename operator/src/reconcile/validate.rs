//! Checks the CRD schema cannot make (or that an older CRD may have let
//! through), with messages that say what to change.

use lapin::uri::{AMQPScheme, AMQPUri};

use super::build::{Component, PlatformComponent};
use crate::crd::{SagaPlatform, ScalingMetric, SelectPolicy};

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
    let broker = &platform.spec.broker;
    let management_host = match &broker.management_url {
        Some(url) => match management_url(url) {
            Ok(host) => Some(host),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
        None => None,
    };
    if let Some(allowed) = &broker.allow_credentials_to_management_host {
        match (&broker.management_url, &management_host) {
            (None, _) => problems.push("broker.allowCredentialsToManagementHost is set but broker.managementUrl is not".into()),
            (Some(_), Some(host)) if !host.eq_ignore_ascii_case(allowed.trim_end_matches('.')) => problems.push(format!(
                "broker.allowCredentialsToManagementHost {allowed:?} is not the host of broker.managementUrl ({host:?})"
            )),
            _ => {}
        }
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
            match scaling.metric {
                ScalingMetric::QueueLength if scaling.target_queue_depth_per_replica.unwrap_or(0) == 0 => {
                    problems.push(format!("{service}.autoscaling.targetQueueDepthPerReplica must be greater than 0"));
                }
                ScalingMetric::MessageRate
                    if !scaling.target_message_rate_per_replica.is_some_and(|t| t.is_finite() && t > 0.0) =>
                {
                    problems.push(format!("{service}.autoscaling.targetMessageRatePerReplica must be greater than 0"));
                }
                _ => {}
            }
            let behavior = scaling.behavior.clone().unwrap_or_default();
            for (direction, rules) in [("scaleUp", &behavior.scale_up), ("scaleDown", &behavior.scale_down)] {
                let Some(rules) = rules else { continue };
                if rules.select_policy != SelectPolicy::Disabled && rules.policies.is_empty() {
                    problems.push(format!(
                        "{service}.autoscaling.behavior.{direction} needs at least one policy unless selectPolicy is Disabled"
                    ));
                }
                if rules.policies.iter().any(|p| p.value < 1 || p.period_seconds < 1) {
                    problems.push(format!(
                        "{service}.autoscaling.behavior.{direction}: every policy needs value and periodSeconds of at least 1"
                    ));
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The management URL: `http://` or `https://`, a host, no user info (the
/// credentials come from the broker URL, and only to an allowed host). Returns its host.
fn management_url(url: &str) -> Result<String, String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
        _ => return Err(format!("broker.managementUrl {url:?} must be an http:// or https:// URL")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Do not echo it: it holds credentials.
        return Err(
            "broker.managementUrl must not contain credentials (user:password@); the broker URL's are used".into()
        );
    }
    match parsed.host_str() {
        Some(host) => Ok(host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_owned()),
        None => Err(format!("broker.managementUrl {url:?} has no host")),
    }
}

/// The broker URL read from the Secret must be an AMQP URL, and `amqps://`
/// when `broker.tls` is set (a CA for a plain connection would be a silent
/// downgrade).
pub fn broker_url(url: &str, tls: bool) -> Result<(), String> {
    let uri = url
        .parse::<AMQPUri>()
        .map_err(|reason| format!("the broker URL in the Secret is not an AMQP URL: {reason}"))?;
    if tls && uri.scheme != AMQPScheme::AMQPS {
        return Err("broker.tls is set but the broker URL in the Secret is amqp://, not amqps://".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AutoscalingSpec, ScalingMetric};

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
        platform.spec.broker.management_url = Some("ftp://rabbit:15671".into());
        platform.spec.broker.allow_credentials_to_management_host = Some("rabbit".into());
        platform.spec.order.image = " ".into();
        platform.spec.payment.autoscaling = Some(AutoscalingSpec {
            min_replicas: 3,
            max_replicas: 2,
            metric: ScalingMetric::QueueLength,
            target_queue_depth_per_replica: Some(0),
            target_message_rate_per_replica: None,
            behavior: None,
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
                r#"broker.managementUrl "ftp://rabbit:15671" must be an http:// or https:// URL"#.to_owned(),
                "order.image must not be empty".to_owned(),
                "payment.autoscaling.minReplicas (3) must be less than or equal to maxReplicas (2)".to_owned(),
                "payment.autoscaling.targetQueueDepthPerReplica must be greater than 0".to_owned(),
            ])
        );
    }

    #[test]
    fn broker_url_must_be_amqp_and_amqps_with_tls() {
        assert_eq!(broker_url("amqp://guest:guest@rabbitmq:5672/%2f", false), Ok(()));
        assert_eq!(broker_url("amqps://guest:guest@rabbitmq:5671/%2f", false), Ok(()));
        assert_eq!(broker_url("amqps://guest:guest@rabbitmq:5671/%2f", true), Ok(()));
        assert!(broker_url("amqp://guest:guest@rabbitmq:5672/%2f", true).unwrap_err().contains("amqps://"));
        assert!(broker_url("http://rabbitmq:15672", false).is_err());
    }

    #[test]
    fn management_url_and_the_credentials_opt_in() {
        let with = |url: &str, allowed: Option<&str>| {
            let mut platform = example();
            platform.spec.broker.management_url = Some(url.into());
            platform.spec.broker.allow_credentials_to_management_host = allowed.map(str::to_owned);
            validate(&platform)
        };
        assert_eq!(with("https://rabbitmq:15671", None), Ok(()));
        assert_eq!(with("https://rabbitmq-admin.example", Some("rabbitmq-admin.example")), Ok(()));
        let secret = with("http://admin:hunter2@rabbitmq:15672", None).unwrap_err();
        assert_eq!(
            secret,
            ["broker.managementUrl must not contain credentials (user:password@); the broker URL's are used"]
        );
        assert_eq!(
            with("https://rabbitmq-admin.example", Some("other.example")).unwrap_err(),
            [
                r#"broker.allowCredentialsToManagementHost "other.example" is not the host of broker.managementUrl ("rabbitmq-admin.example")"#
            ]
        );
        let mut platform = example();
        platform.spec.broker.management_url = None;
        platform.spec.broker.allow_credentials_to_management_host = Some("x".into());
        assert_eq!(
            validate(&platform).unwrap_err(),
            ["broker.allowCredentialsToManagementHost is set but broker.managementUrl is not"]
        );
    }
}
