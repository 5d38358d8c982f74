//! The operator's broker side against the local RabbitMQ: what it declares
//! matches the shared definition, a queue deleted by hand comes back, and
//! queue depth counts unacknowledged messages. Each test uses its own
//! platform name and deletes its topology afterwards.

use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use saga_common::amqp::Broker;
use saga_common::topology::{Destination, QueueType, RetryPolicy, Topology, TopologySpec};
use saga_operator::broker::{BrokerError, Brokers, DepthSource, Target, TopologyOutcome};
use saga_operator::tls::TlsClient;
use serde_json::Value;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

fn topology(queue_type: QueueType) -> Topology {
    let platform = format!("optopo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    Topology::new(TopologySpec { platform, queue_type, retry: RetryPolicy::default() })
}

/// The management API (enabling the plugin if needed: it is off on a fresh broker).
async fn management(path: &str) -> Value {
    let http = reqwest::Client::new();
    let url = format!("{MANAGEMENT_URL}/api/{path}");
    for attempt in 0..60 {
        match http.get(&url).basic_auth("guest", Some("guest")).send().await {
            Ok(response) if response.status().is_success() => return response.json().await.unwrap(),
            Ok(response) => panic!("{url}: HTTP {}", response.status()),
            Err(_) if attempt == 0 => {
                let status = std::process::Command::new("rabbitmq-plugins")
                    .args(["enable", "rabbitmq_management"])
                    .status()
                    .expect("rabbitmq-plugins");
                assert!(status.success(), "enabling the management plugin");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    panic!("the RabbitMQ management API did not come up on {MANAGEMENT_URL}");
}

async fn cleanup(topology: &Topology) {
    let connection = Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    topology.delete(&connection).await.unwrap();
}

#[tokio::test]
async fn declared_topology_matches_the_definition() {
    let topology = topology(QueueType::Quorum);
    let brokers = Brokers::new(Duration::from_secs(5));
    let outcome = brokers.ensure_topology(&AMQP_URL.into(), &topology).await.unwrap();
    assert!(matches!(outcome, TopologyOutcome::Declared { .. }), "{outcome:?}");
    assert_eq!(brokers.ensure_topology(&AMQP_URL.into(), &topology).await.unwrap(), TopologyOutcome::Unchanged);

    for queue in &topology.queues {
        let info = management(&format!("queues/%2F/{}", queue.name)).await;
        assert_eq!(info["durable"], true, "{}", queue.name);
        for (key, value) in queue.arguments.inner() {
            let actual = &info["arguments"][key.as_str()];
            let expected = match value {
                lapin::types::AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes())),
                lapin::types::AMQPValue::LongUInt(n) => Value::from(*n),
                other => panic!("unexpected argument type {other:?}"),
            };
            assert_eq!(actual, &expected, "{} argument {key}", queue.name);
        }
    }
    for exchange in &topology.exchanges {
        let info = management(&format!("exchanges/%2F/{}", exchange.name)).await;
        // `{p}.saga` and `{p}.dlx` direct, `{p}.events` topic.
        assert_eq!(info["type"], format!("{:?}", exchange.kind).to_lowercase(), "{}", exchange.name);
        assert_eq!(info["durable"], true);
    }
    for binding in &topology.bindings {
        let bindings = management(&format!("bindings/%2F/e/{}/q/{}", binding.exchange, binding.queue)).await;
        let keys: Vec<&str> = bindings.as_array().unwrap().iter().filter_map(|b| b["routing_key"].as_str()).collect();
        assert!(keys.contains(&binding.routing_key.as_str()), "{} -> {}: {keys:?}", binding.exchange, binding.queue);
    }
    cleanup(&topology).await;
}

#[tokio::test]
async fn queue_deleted_by_hand_is_declared_again() {
    let topology = topology(QueueType::Classic);
    let brokers = Brokers::new(Duration::from_secs(5));
    brokers.ensure_topology(&AMQP_URL.into(), &topology).await.unwrap();

    let queue = topology.queue_name(Destination::Payment);
    let connection = Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    assert!(topology.verify(&connection).await.is_err(), "the queue is gone");

    let outcome = brokers.ensure_topology(&AMQP_URL.into(), &topology).await.unwrap();
    assert_eq!(outcome, TopologyOutcome::Declared { missing: format!("queue {queue}") });
    topology.verify(&connection).await.expect("declared again, with its binding");
    // The binding came back too: a mandatory publish is routed.
    let confirm_channel = connection.create_channel().await.unwrap();
    confirm_channel.confirm_select(Default::default()).await.unwrap();
    let confirmation = confirm_channel
        .basic_publish(
            topology.exchange().as_str().into(),
            Destination::Payment.queue().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"{}",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirmation, lapin::Confirmation::Ack(None)), "routed, not returned: {confirmation:?}");
    cleanup(&topology).await;
}

#[tokio::test]
async fn queue_depth_counts_unacknowledged_messages() {
    let topology = topology(QueueType::Classic);
    let brokers = Brokers::new(Duration::from_secs(5));
    brokers.ensure_topology(&AMQP_URL.into(), &topology).await.unwrap();
    let queue = topology.queue_name(Destination::Inventory);

    let connection = Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    let publisher = connection.create_channel().await.unwrap();
    for _ in 0..5 {
        publisher
            .basic_publish("".into(), queue.as_str().into(), Default::default(), b"{}", Default::default())
            .await
            .unwrap();
    }
    // A consumer holds 2 deliveries without acknowledging them.
    let consumer_channel = connection.create_channel().await.unwrap();
    consumer_channel.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consumer_channel
        .basic_consume(queue.as_str().into(), "held".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    use futures_util::StreamExt;
    for _ in 0..2 {
        consumer.next().await.unwrap().unwrap();
    }
    management("overview").await; // the plugin is up

    // AMQP sees only the 3 ready messages; the management API sees all 5
    // (its statistics refresh every few seconds, so wait for them).
    let target = Target::new(AMQP_URL);
    let read = brokers.queue_depth(&target, None, &queue).await;
    assert_eq!(read.depth.unwrap(), (3, DepthSource::Amqp));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (depth, source) = brokers.queue_depth(&target, Some(MANAGEMENT_URL), &queue).await.depth.unwrap();
        assert_eq!(source, DepthSource::ManagementApi);
        if depth == 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "management API depth stuck at {depth}, expected 5");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A management API that does not answer falls back to AMQP.
    let read = brokers.queue_depth(&target, Some("http://127.0.0.1:1"), &queue).await;
    assert_eq!(read.depth.unwrap(), (3, DepthSource::Amqp));
    assert!(matches!(read.management_error, Some(BrokerError::Management(_))), "{:?}", read.management_error);

    drop(consumer);
    cleanup(&topology).await;
}

/// The machine's TLS listeners (scripts/lib.sh): amqps on 5671 and the
/// management API over https on 15671, with a certificate for localhost and
/// 127.0.0.1 signed by this CA.
const AMQPS_URL: &str = "amqps://guest:guest@localhost:5671/%2f";
const MANAGEMENT_HTTPS_URL: &str = "https://localhost:15671";
const MACHINE_CA: &str = "/etc/saga-platform/tls/ca.pem";
/// A CA that signed nothing the broker presents.
const OTHER_CA: &str = include_str!("fixtures/tls/other-ca.pem");

fn machine_ca() -> TlsClient {
    let pem = std::fs::read_to_string(MACHINE_CA)
        .unwrap_or_else(|e| panic!("{MACHINE_CA}: {e} (the TLS listeners of scripts/lib.sh are not set up)"));
    TlsClient::from_ca_pem(&pem).unwrap()
}

#[tokio::test]
async fn amqps_and_https_are_verified_with_the_ca() {
    let topology = topology(QueueType::Classic);
    let brokers = Brokers::new(Duration::from_secs(10));
    let target = Target::with_ca(AMQPS_URL, machine_ca());
    let outcome = brokers.ensure_topology(&target, &topology).await.unwrap();
    assert!(matches!(outcome, TopologyOutcome::Declared { .. }), "{outcome:?}");
    let queue = topology.queue_name(Destination::Order);
    management("overview").await; // the plugin is up
    let read = brokers.queue_depth(&target, Some(MANAGEMENT_HTTPS_URL), &queue).await;
    assert!(read.management_error.is_none(), "{:?}", read.management_error);
    assert_eq!(read.depth.unwrap(), (0, DepthSource::ManagementApi));
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_certificate_the_ca_did_not_sign_is_refused() {
    let topology = topology(QueueType::Classic);
    let brokers = Brokers::new(Duration::from_secs(10));
    let wrong = Target::with_ca(AMQPS_URL, TlsClient::from_ca_pem(OTHER_CA).unwrap());
    match brokers.ensure_topology(&wrong, &topology).await {
        Err(BrokerError::TlsHandshake { endpoint, reason }) => {
            assert_eq!(endpoint, "amqps://guest:***@localhost:5671/%2f", "the password is redacted");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a refused certificate, got {other:?}"),
    }
    // A connection verified with the right CA is not reused for the wrong one.
    let right = Target::with_ca(AMQPS_URL, machine_ca());
    brokers.ensure_topology(&right, &topology).await.unwrap();
    assert!(matches!(brokers.ensure_topology(&wrong, &topology).await, Err(BrokerError::TlsHandshake { .. })));

    // The management API: refused too, and the depth comes from AMQP instead.
    let queue = topology.queue_name(Destination::Order);
    let wrong_management = Target::with_ca(AMQP_URL, TlsClient::from_ca_pem(OTHER_CA).unwrap());
    let read = brokers.queue_depth(&wrong_management, Some(MANAGEMENT_HTTPS_URL), &queue).await;
    assert_eq!(read.depth.unwrap(), (0, DepthSource::Amqp));
    match read.management_error {
        Some(BrokerError::TlsHandshake { endpoint, reason }) => {
            assert_eq!(endpoint, MANAGEMENT_HTTPS_URL);
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a refused certificate, got {other:?}"),
    }
    // The host name counts: 127.0.0.2 is not in the certificate.
    let by_other_name = Target::with_ca("amqps://guest:guest@127.0.0.2:5671/%2f", machine_ca());
    match brokers.ensure_topology(&by_other_name, &topology).await {
        Err(BrokerError::TlsHandshake { reason, .. }) => {
            assert!(reason.contains("not valid for name \"127.0.0.2\""), "{reason}")
        }
        other => panic!("expected a name mismatch, got {other:?}"),
    }
    cleanup(&topology).await;
}
