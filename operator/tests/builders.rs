//! Golden tests of the pure builders: the generated ConfigMap, Service and
//! Deployment of each service and the topology, for examples/sagaplatform.yaml.
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p saga-operator --test builders`
//! and review the diff.

use std::path::PathBuf;
use std::time::Duration;

use lapin::types::AMQPValue;
use saga_common::topology::{QueueType, RetryPolicy, Topology, TopologySpec};
use saga_operator::crd::SagaPlatform;
use saga_operator::reconcile::build::{self, Component};

fn example() -> SagaPlatform {
    example_file("sagaplatform.yaml")
}

fn example_file(file: &str) -> SagaPlatform {
    let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut platform: SagaPlatform = serde_yaml::from_str(&text).unwrap();
    platform.metadata.namespace = Some("saga".into());
    platform.metadata.uid = Some("11111111-2222-3333-4444-555555555555".into());
    platform
}

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing {}", path.display()));
    assert!(expected == actual, "{name} differs from the golden file; diff:\n{}", diff(&expected, actual));
}

fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    (0..e.len().max(a.len()))
        .filter(|&i| e.get(i) != a.get(i))
        .map(|i| format!("line {}: -{:?} +{:?}", i + 1, e.get(i), a.get(i)))
        .take(10)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn workloads_match_golden_files() {
    let platform = example();
    for component in Component::ALL {
        let mut yaml = serde_yaml::to_string(&build::config_map(&platform, component)).unwrap();
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(&build::service(&platform, component)).unwrap());
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(&build::deployment(&platform, component, 3, "0123456789abcdef")).unwrap());
        // The optional PodDisruptionBudget and NetworkPolicy, where the example asks for them.
        if let Some(budget) = build::disruption_budget(&platform, component) {
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&budget).unwrap());
        }
        if let Some(policy) = build::network_policy(&platform, component) {
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&policy).unwrap());
        }
        check_golden(&format!("{}.yaml", component.name()), &yaml);
    }
}

/// examples/sagaplatform-tls.yaml: the CA files mounted read-only under
/// /etc/saga/tls and the variables the services read (AMQP_TLS_CA_FILE,
/// PGSSLMODE, PGSSLROOTCERT) in the ConfigMap.
#[test]
fn tls_workload_matches_golden_file() {
    let platform = example_file("sagaplatform-tls.yaml");
    let component = Component::ALL[1];
    let mut yaml = serde_yaml::to_string(&build::config_map(&platform, component)).unwrap();
    yaml.push_str("---\n");
    yaml.push_str(&serde_yaml::to_string(&build::deployment(&platform, component, 1, "0123456789abcdef")).unwrap());
    check_golden("payment-tls.yaml", &yaml);
}

#[test]
fn tls_settings_reach_the_pods_and_their_rotation_rolls_them() {
    let platform = example_file("sagaplatform-tls.yaml");
    for component in Component::ALL {
        let data = build::config_map(&platform, component).data.unwrap();
        assert_eq!(data["AMQP_TLS_CA_FILE"], "/etc/saga/tls/broker-ca.pem");
        assert_eq!(data["PGSSLMODE"], "verify-full");
        assert_eq!(data["PGSSLROOTCERT"], "/etc/saga/tls/db-ca.pem");
        let pod = build::deployment(&platform, component, 1, "x").spec.unwrap().template.spec.unwrap();
        let mount = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "tls").unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/saga/tls", Some(true)));
        // The CA keys count in the secrets hash: a rotated CA rolls the pods.
        let names: Vec<(&str, &str)> =
            build::secret_refs(&platform, component).iter().map(|r| (r.name.as_str(), r.key.as_str())).collect();
        assert_eq!(&names[3..], [("saga-tls", "broker-ca.pem"), ("saga-tls", "db-ca.pem")]);
    }
    // Without TLS: none of it.
    let plain = example();
    let data = build::config_map(&plain, Component::ALL[0]).data.unwrap();
    assert!(!data.contains_key("AMQP_TLS_CA_FILE") && !data.contains_key("PGSSLMODE"));
    let pod = build::deployment(&plain, Component::ALL[0], 1, "x").spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.volumes.unwrap().len(), 1, "only /tmp");
}

#[test]
fn topology_spec_follows_the_resource() {
    let mut platform = example();
    assert_eq!(
        saga_operator::topology_spec(&platform),
        TopologySpec {
            platform: "demo".into(),
            queue_type: QueueType::Quorum,
            retry: RetryPolicy { max_attempts: 5, initial_delay: Duration::from_millis(500), multiplier: 4 },
        }
    );
    // Without spec.platform the resource name is the platform name.
    platform.spec.platform = None;
    platform.metadata.name = Some("shop".into());
    assert_eq!(saga_operator::topology_spec(&platform).platform, "shop");
}

#[test]
fn topology_matches_golden_file() {
    let topology = Topology::new(saga_operator::topology_spec(&example()));
    let mut text = String::new();
    for exchange in &topology.exchanges {
        text.push_str(&format!("exchange {} {:?}\n", exchange.name, exchange.kind));
    }
    for queue in &topology.queues {
        let mut args: Vec<String> = queue.arguments.inner().iter().map(|(k, v)| format!("{k}={}", show(v))).collect();
        args.sort();
        text.push_str(&format!("queue {} {}\n", queue.name, args.join(" ")));
    }
    for binding in &topology.bindings {
        text.push_str(&format!("binding {} -> {} key {}\n", binding.exchange, binding.queue, binding.routing_key));
    }
    check_golden("topology.txt", &text);
}

fn show(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::LongUInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn pods_are_locked_down_and_probed() {
    let platform = example();
    let deployment = build::deployment(&platform, Component::ALL[0], 2, "0123456789abcdef");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let path =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&container.startup_probe).as_deref(), Some("/healthz"));
}

#[test]
fn a_config_change_rolls_the_pods() {
    let mut platform = example();
    let hash = |p: &SagaPlatform| {
        let template = build::deployment(p, Component::ALL[0], 1, "0123456789abcdef").spec.unwrap().template;
        template.metadata.unwrap().annotations.unwrap()[build::CONFIG_HASH_ANNOTATION].clone()
    };
    let before = hash(&platform);
    platform.spec.saga.step_timeout_seconds = 30;
    assert_ne!(hash(&platform), before);
}

#[test]
fn secrets_hash_changes_with_any_value_and_only_then() {
    let values = |db: Option<&str>| vec![db.map(str::to_owned), Some("amqp://u:p@h/%2f".into()), Some("jwt".into())];
    let base = build::secrets_hash(&values(Some("postgres://a")));
    assert_eq!(base, build::secrets_hash(&values(Some("postgres://a"))));
    assert_ne!(base, build::secrets_hash(&values(Some("postgres://b"))));
    assert_ne!(build::secrets_hash(&values(None)), build::secrets_hash(&values(Some(""))));
    assert_eq!(base.len(), 16);
}

#[test]
fn tracing_settings_reach_every_service() {
    let mut platform = example();
    let plain = build::config_map(&platform, Component::ALL[0]).data.unwrap();
    assert!(plain.keys().all(|name| !name.starts_with("OTEL_")), "no tracing, no OTEL_ settings: {plain:?}");
    platform.spec.tracing = Some(
        serde_yaml::from_str(
            "otlpEndpoint: http://jaeger-collector.observability:4318
samplerRatio: 0.25
resourceAttributes: {deployment.environment: prod, team: 'a b,c=d'}",
        )
        .unwrap(),
    );
    for component in Component::ALL {
        let data = build::config_map(&platform, component).data.unwrap();
        let otel: Vec<(&str, &str)> =
            data.iter().filter(|(k, _)| k.starts_with("OTEL_")).map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = component.binary();
        assert_eq!(
            otel,
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger-collector.observability:4318"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%20b%2Cc%3Dd"),
                ("OTEL_SERVICE_NAME", service),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]
        );
    }
    // A change of the tracing settings rolls the pods (the ConfigMap is in the pod template's hash).
    let hash = |p: &SagaPlatform| {
        let template = build::deployment(p, Component::ALL[0], 1, "0123456789abcdef").spec.unwrap().template;
        template.metadata.unwrap().annotations.unwrap()[build::CONFIG_HASH_ANNOTATION].clone()
    };
    assert_ne!(hash(&platform), hash(&example()));
}
