//! The CRD's CEL rules, evaluated locally with kube's CEL interpreter: invalid
//! specs are rejected with the message a person reads in `kubectl apply`.

use kube::CustomResourceExt;
use saga_operator::crd::{QueueTypeSpec, SagaPlatform};

fn example() -> SagaPlatform {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sagaplatform.yaml"))
        .expect("examples/sagaplatform.yaml");
    serde_yaml::from_str(&text).expect("the example is a SagaPlatform")
}

fn messages(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
    result.err().map(|errors| errors.into_vec().into_iter().map(|e| e.message).collect()).unwrap_or_default()
}

#[test]
fn example_is_valid() {
    let platform = example();
    assert_eq!(messages(platform.validate_cel()), Vec::<String>::new());
    assert_eq!(messages(platform.validate_cel_update(&platform)), Vec::<String>::new());
}

#[test]
fn min_replicas_above_max_is_rejected() {
    let mut platform = example();
    let scaling = platform.spec.order.autoscaling.as_mut().unwrap();
    scaling.min_replicas = 6;
    scaling.max_replicas = 5;
    assert_eq!(
        messages(platform.validate_cel()),
        ["autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"]
    );
}

#[test]
fn zero_timeouts_and_targets_are_rejected() {
    let mut platform = example();
    platform.spec.saga.step_timeout_seconds = 0;
    platform.spec.retry.initial_delay_ms = 0;
    platform.spec.payment.autoscaling.as_mut().unwrap().target_queue_depth_per_replica = Some(0);
    let mut found = messages(platform.validate_cel());
    found.sort();
    assert_eq!(
        found,
        [
            "autoscaling.targetQueueDepthPerReplica must be greater than 0",
            "retry.initialDelayMs must be greater than 0",
            "saga.stepTimeoutSeconds must be greater than 0",
        ]
    );
}

#[test]
fn queue_type_is_immutable() {
    let old = example();
    let mut new = old.clone();
    new.spec.broker.queue_type = QueueTypeSpec::Classic;
    assert!(new.validate_cel().is_ok(), "any queue type is fine at creation");
    assert_eq!(
        messages(new.validate_cel_update(&old)),
        ["queueType cannot be changed after creation: RabbitMQ cannot convert existing queues"]
    );
}

#[test]
fn retry_delays_are_immutable_but_the_attempts_may_change() {
    let old = example();
    let mut new = old.clone();
    new.spec.retry.initial_delay_ms += 100;
    new.spec.retry.multiplier = 2;
    assert_eq!(
        messages(new.validate_cel_update(&old)),
        [
            "retry.initialDelayMs cannot be changed after creation: the retry queues' delays are fixed on RabbitMQ; create a SagaPlatform with a new platform name instead",
            "retry.multiplier cannot be changed after creation: the retry queues' delays are fixed on RabbitMQ; create a SagaPlatform with a new platform name instead",
        ]
    );
    let mut more = old.clone();
    more.spec.retry.max_attempts = 7;
    assert_eq!(messages(more.validate_cel_update(&old)), Vec::<String>::new());
}

#[test]
fn platform_name_is_immutable_and_well_formed() {
    let old = example();
    let mut renamed = old.clone();
    renamed.spec.platform = Some("other".into());
    assert_eq!(
        messages(renamed.validate_cel_update(&old)),
        ["platform cannot be changed after creation; create a new SagaPlatform instead"]
    );
    let mut removed = old.clone();
    removed.spec.platform = None;
    assert_eq!(
        messages(removed.validate_cel_update(&old)),
        ["spec.platform cannot be added or removed after creation; create a new SagaPlatform instead"]
    );
    let mut bad = old.clone();
    bad.spec.platform = Some("Bad_Name".into());
    assert_eq!(
        messages(bad.validate_cel()),
        ["platform must be 1-63 lowercase letters, digits or '-', not starting with '-'"]
    );
}

#[test]
fn crd_names_columns_and_status() {
    let crd = SagaPlatform::crd();
    assert_eq!(crd.spec.group, "saga.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["sp".to_owned()][..]));
    assert_eq!(crd.spec.names.categories.as_deref(), Some(&["saga".to_owned()][..]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> =
        version.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Ready", "Order", "Payment", "Inventory", "Notification", "Depth", "Age"]);
    // The fourth service's column only with `kubectl get -o wide` (priority 1).
    let priority = |name: &str| {
        version.additional_printer_columns.as_ref().unwrap().iter().find(|c| c.name == name).unwrap().priority
    };
    assert_eq!((priority("Inventory"), priority("Notification")), (None, Some(1)));
}

#[test]
fn crd_file_is_generated_from_the_types() {
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/sagaplatform.yaml")).unwrap();
    assert_eq!(
        file,
        serde_yaml::to_string(&SagaPlatform::crd()).unwrap(),
        "run: saga-operator crd > crds/sagaplatform.yaml"
    );
}

#[test]
fn autoscaling_metric_targets_and_behavior_are_checked() {
    use saga_operator::crd::{ScalingBehavior, ScalingMetric, ScalingRules, SelectPolicy};
    let mut platform = example();
    let scaling = platform.spec.payment.autoscaling.as_mut().unwrap();
    scaling.metric = ScalingMetric::MessageRate;
    scaling.target_message_rate_per_replica = None;
    assert_eq!(
        messages(platform.validate_cel()),
        ["autoscaling.targetMessageRatePerReplica is required with metric MessageRate"]
    );
    let scaling = platform.spec.payment.autoscaling.as_mut().unwrap();
    scaling.target_message_rate_per_replica = Some(25.0);
    assert_eq!(messages(platform.validate_cel()), Vec::<String>::new());
    let scaling = platform.spec.payment.autoscaling.as_mut().unwrap();
    scaling.metric = ScalingMetric::QueueLength;
    scaling.target_queue_depth_per_replica = None;
    assert_eq!(
        messages(platform.validate_cel()),
        ["autoscaling.targetQueueDepthPerReplica is required with metric QueueLength"]
    );
    let scaling = platform.spec.payment.autoscaling.as_mut().unwrap();
    scaling.target_queue_depth_per_replica = Some(10);
    let rules = |select_policy| ScalingRules { stabilization_window_seconds: 0, select_policy, policies: vec![] };
    scaling.behavior = Some(ScalingBehavior { scale_up: Some(rules(SelectPolicy::Max)), scale_down: None });
    assert_eq!(
        messages(platform.validate_cel()),
        ["autoscaling.behavior: a direction needs at least one policy unless selectPolicy is Disabled"]
    );
    let scaling = platform.spec.payment.autoscaling.as_mut().unwrap();
    scaling.behavior = Some(ScalingBehavior { scale_up: Some(rules(SelectPolicy::Disabled)), scale_down: None });
    assert_eq!(messages(platform.validate_cel()), Vec::<String>::new(), "Disabled needs no policy");
}
