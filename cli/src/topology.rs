//! `sagactl topology apply`: declares the platform's broker topology (the one
//! definition in `saga_common::topology`) on a RabbitMQ, without Kubernetes,
//! from flags or from a `SagaPlatform` resource file read and validated as
//! the operator reads it.

use std::path::Path;

use saga_common::amqp::{Broker, redact};
use saga_common::topology::{Topology, TopologySpec};
use saga_operator::crd::SagaPlatform;

use crate::Result;

/// The topology settings of a SagaPlatform YAML file.
pub fn spec_from_resource(file: &Path) -> Result<TopologySpec> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let resource: SagaPlatform =
        serde_yaml::from_str(&text).map_err(|e| format!("{} is not a valid SagaPlatform: {e}", file.display()))?;
    saga_operator::reconcile::validate::validate(&resource)
        .map_err(|problems| format!("{} is not a valid SagaPlatform: {}", file.display(), problems.join("; ")))?;
    Ok(saga_operator::topology_spec(&resource))
}

/// Declares the topology and prints what was declared.
pub async fn apply(amqp_url: &str, spec: TopologySpec) -> Result<Topology> {
    let topology = declare(amqp_url, spec).await?;
    print_summary(&topology, amqp_url);
    Ok(topology)
}

/// Declares the topology (idempotent) and returns it, printing nothing.
pub async fn declare(amqp_url: &str, spec: TopologySpec) -> Result<Topology> {
    let topology = Topology::new(spec);
    let broker = Broker::new(amqp_url, "sagactl");
    let connection =
        broker.connect_once().await.map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", redact(amqp_url)))?;
    let declared = topology.declare(&connection).await;
    let _ = connection.close(200, "sagactl done".into()).await;
    declared.map_err(|e| {
        format!("declaring the topology of platform {:?} on {}: {e}", topology.spec.platform, redact(amqp_url))
    })?;
    Ok(topology)
}

/// One line per exchange, queue and binding, with counts.
pub fn print_summary(topology: &Topology, amqp_url: &str) {
    let spec = &topology.spec;
    say!(
        "Declared the topology of platform {:?} on {} (queue type {}, {} deliveries, backoff {} x{})",
        spec.platform,
        redact(amqp_url),
        format!("{:?}", spec.queue_type).to_lowercase(),
        spec.retry.max_attempts,
        humantime::format_duration(spec.retry.initial_delay),
        spec.retry.multiplier,
    );
    say!("  {} exchanges:", topology.exchanges.len());
    for exchange in &topology.exchanges {
        say!("    {} ({})", exchange.name, format!("{:?}", exchange.kind).to_lowercase());
    }
    say!("  {} queues:", topology.queues.len());
    for queue in &topology.queues {
        say!("    {}", queue.name);
    }
    say!("  {} bindings:", topology.bindings.len());
    for binding in &topology.bindings {
        say!("    {} -> {} (routing key {})", binding.exchange, binding.queue, binding.routing_key);
    }
}
