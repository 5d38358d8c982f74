//! Topology declaration and verification against the real local RabbitMQ.

use lapin::ExchangeKind;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use saga_common::amqp::Broker;
use saga_common::topology::{QueueType, RetryPolicy, Topology, TopologyError, TopologySpec, reply_code};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn topology(queue_type: QueueType) -> Topology {
    let platform = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Topology::new(TopologySpec { platform, queue_type, retry: RetryPolicy::default() })
}

#[tokio::test]
async fn declared_topology_verifies_and_drift_is_reported() {
    for queue_type in [QueueType::Quorum, QueueType::Classic] {
        let connection = Broker::new(amqp_url(), "topology-test").connect_once().await.unwrap();
        let topology = topology(queue_type);

        let missing = topology.verify(&connection).await.unwrap_err();
        assert!(matches!(missing, TopologyError::Missing { .. }), "{missing}");

        topology.declare(&connection).await.unwrap();
        topology.verify(&connection).await.unwrap();
        // Declaring again is harmless.
        topology.declare(&connection).await.unwrap();

        // A queue deleted by hand is reported, then restored by declare.
        let channel = connection.create_channel().await.unwrap();
        let dlq = format!("{}.payment.commands.dlq", topology.spec.platform);
        channel.queue_delete(dlq.as_str().into(), Default::default()).await.unwrap();
        match topology.verify(&connection).await.unwrap_err() {
            TopologyError::Missing { what } => assert!(what.contains(&dlq), "{what}"),
            other => panic!("expected Missing, got {other}"),
        }
        topology.declare(&connection).await.unwrap();
        topology.verify(&connection).await.unwrap();

        // The events exchange: missing, then of another kind, is reported;
        // declare restores it.
        let events = topology.events_exchange();
        channel.exchange_delete(events.as_str().into(), Default::default()).await.unwrap();
        match topology.verify(&connection).await.unwrap_err() {
            TopologyError::Missing { what } => assert_eq!(what, format!("exchange {events}")),
            other => panic!("expected Missing, got {other}"),
        }
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(events.as_str().into(), ExchangeKind::Direct, durable, FieldTable::default())
            .await
            .unwrap();
        match topology.verify(&connection).await.unwrap_err() {
            TopologyError::Different { what, .. } => assert_eq!(what, format!("exchange {events}")),
            other => panic!("expected Different, got {other}"),
        }
        channel.exchange_delete(events.as_str().into(), Default::default()).await.unwrap();
        topology.declare(&connection).await.unwrap();
        topology.verify(&connection).await.unwrap();
        // A subscriber's own queue bound to it.
        let subscriber = format!("{}.subscriber", topology.spec.platform);
        channel.queue_declare(subscriber.as_str().into(), Default::default(), FieldTable::default()).await.unwrap();
        channel
            .queue_bind(
                subscriber.as_str().into(),
                events.as_str().into(),
                "order.*".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();

        // The same names with other settings are reported as different.
        let other_type = match queue_type {
            QueueType::Quorum => QueueType::Classic,
            QueueType::Classic => QueueType::Quorum,
        };
        let mut other = Topology::new(TopologySpec { queue_type: other_type, ..topology.spec.clone() });
        other.spec.platform = topology.spec.platform.clone();
        match other.verify(&connection).await.unwrap_err() {
            TopologyError::Different { what, .. } => assert!(what.contains("queue"), "{what}"),
            e => panic!("expected Different, got {e}"),
        }

        topology.delete(&connection).await.unwrap();
        assert!(matches!(topology.verify(&connection).await, Err(TopologyError::Missing { .. })));
        // Delete removed the events exchange too (and with it the subscriber's
        // binding; the subscriber's queue is its own).
        let probe = connection.create_channel().await.unwrap();
        let passive = ExchangeDeclareOptions { passive: true, durable: true, ..Default::default() };
        let gone =
            probe.exchange_declare(events.as_str().into(), ExchangeKind::Topic, passive, FieldTable::default()).await;
        assert_eq!(gone.as_ref().err().and_then(reply_code), Some(404), "{gone:?}");
        channel.queue_delete(subscriber.as_str().into(), Default::default()).await.unwrap();
    }
}
