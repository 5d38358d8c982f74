//! `sagactl topology apply`: declares the platform's broker topology (the one
//! definition in `saga_common::topology`) on a RabbitMQ, without Kubernetes,
//! from flags or from a `SagaPlatform` resource file read and validated as
//! the operator reads it.

use std::path::Path;

use saga_common::amqp::{Broker, redact};
use saga_common::topology::{Topology, TopologySpec};
use saga_operator::crd::SagaPlatform;

use schemars::JsonSchema;
use serde::Serialize;

use crate::Result;
use crate::output::Render;

/// The topology settings of a SagaPlatform YAML file.
pub fn spec_from_resource(file: &Path) -> Result<TopologySpec> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let resource: SagaPlatform =
        serde_yaml::from_str(&text).map_err(|e| format!("{} is not a valid SagaPlatform: {e}", file.display()))?;
    saga_operator::reconcile::validate::validate(&resource)
        .map_err(|problems| format!("{} is not a valid SagaPlatform: {}", file.display(), problems.join("; ")))?;
    Ok(saga_operator::topology_spec(&resource))
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

/// `sagactl topology apply`: what was declared, where.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TopologyView {
    pub platform: String,
    /// The broker's URL, password hidden.
    pub amqp_url: String,
    /// quorum or classic.
    pub queue_type: String,
    /// Deliveries of a failing message before it is dead-lettered.
    pub max_attempts: u32,
    pub initial_delay_ms: u64,
    pub multiplier: u32,
    pub exchanges: Vec<ExchangeView>,
    pub queues: Vec<String>,
    pub bindings: Vec<BindingView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExchangeView {
    pub name: String,
    /// direct, topic, fanout, ...
    pub kind: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BindingView {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

impl TopologyView {
    pub fn new(topology: &Topology, amqp_url: &str) -> Self {
        let spec = &topology.spec;
        TopologyView {
            platform: spec.platform.clone(),
            amqp_url: redact(amqp_url),
            queue_type: format!("{:?}", spec.queue_type).to_lowercase(),
            max_attempts: spec.retry.max_attempts,
            initial_delay_ms: spec.retry.initial_delay.as_millis() as u64,
            multiplier: spec.retry.multiplier,
            exchanges: topology
                .exchanges
                .iter()
                .map(|e| ExchangeView { name: e.name.clone(), kind: format!("{:?}", e.kind).to_lowercase() })
                .collect(),
            queues: topology.queues.iter().map(|q| q.name.clone()).collect(),
            bindings: topology
                .bindings
                .iter()
                .map(|b| BindingView {
                    exchange: b.exchange.clone(),
                    queue: b.queue.clone(),
                    routing_key: b.routing_key.clone(),
                })
                .collect(),
        }
    }
}

impl Render for TopologyView {
    /// One line per exchange, queue and binding, with counts.
    fn text(&self) -> String {
        let mut lines = vec![format!(
            "Declared the topology of platform {:?} on {} (queue type {}, {} deliveries, backoff {} x{})",
            self.platform,
            self.amqp_url,
            self.queue_type,
            self.max_attempts,
            humantime::format_duration(std::time::Duration::from_millis(self.initial_delay_ms)),
            self.multiplier,
        )];
        lines.push(format!("  {} exchanges:", self.exchanges.len()));
        lines.extend(self.exchanges.iter().map(|e| format!("    {} ({})", e.name, e.kind)));
        lines.push(format!("  {} queues:", self.queues.len()));
        lines.extend(self.queues.iter().map(|q| format!("    {q}")));
        lines.push(format!("  {} bindings:", self.bindings.len()));
        lines.extend(
            self.bindings.iter().map(|b| format!("    {} -> {} (routing key {})", b.exchange, b.queue, b.routing_key)),
        );
        lines.join("\n")
    }
}
