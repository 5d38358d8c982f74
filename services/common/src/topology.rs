//! The one definition of the broker topology, a pure function of the platform
//! name and its settings. Services verify it, `sagactl topology apply` and the
//! operator declare it.
//!
//! For each service queue `{platform}.{queue}`:
//! - it is bound to the direct exchange `{platform}.saga` with routing key `{queue}`;
//! - rejected messages dead-letter through `{platform}.dlx` to `{platform}.{queue}.dlq`;
//! - retries wait in `{platform}.{queue}.retry.{n}` (TTL = backoff delay n) and
//!   dead-letter back to `{platform}.saga` with the original routing key.
//!
//! And the topic exchange `{platform}.events`, where the order service
//! publishes order events (routing key = event type, `crate::events`). Of the
//! platform's queues only the notification service's is bound to it (one
//! binding per event type); other subscribers bind their own.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};

use crate::events::OrderEventType;

/// The services' inbound queues, named by their service (the name an API
/// path or `sagactl dlq --queue` uses for a dead-letter queue).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Order,
    Payment,
    Inventory,
    Notification,
}

impl Destination {
    pub const ALL: [Destination; 4] =
        [Destination::Order, Destination::Payment, Destination::Inventory, Destination::Notification];

    /// Queue name without the platform prefix; also the routing key.
    pub fn queue(self) -> &'static str {
        match self {
            Destination::Order => "order.replies",
            Destination::Payment => "payment.commands",
            Destination::Inventory => "inventory.commands",
            Destination::Notification => "notification.events",
        }
    }

    /// The service's name (`order`, ...), as serialized.
    pub fn name(self) -> &'static str {
        match self {
            Destination::Order => "order",
            Destination::Payment => "payment",
            Destination::Inventory => "inventory",
            Destination::Notification => "notification",
        }
    }

    /// The destination a name (as serialized) means.
    pub fn from_name(name: &str) -> Option<Destination> {
        Destination::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Order events it takes from `{platform}.events`, besides its own key on
    /// `{platform}.saga` (where its retries come back).
    pub fn event_subscriptions(self) -> &'static [OrderEventType] {
        match self {
            Destination::Notification => &OrderEventType::ALL,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument, and the `QUEUE_TYPE` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Exponential backoff between deliveries of a failing message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Deliveries in all (the first one included) before dead-lettering.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub multiplier: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, initial_delay: Duration::from_millis(500), multiplier: 4 }
    }
}

impl RetryPolicy {
    /// Delay before delivery `attempt + 1`, for a message whose delivery `attempt` failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.initial_delay * self.multiplier.saturating_pow(attempt.saturating_sub(1))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpec {
    pub platform: String,
    pub queue_type: QueueType,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    pub name: String,
    pub kind: ExchangeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    pub name: String,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

/// Everything to declare on the broker for one platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub spec: TopologySpec,
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{what} is missing on the broker")]
    Missing { what: String },
    #[error("{what} exists with different settings: {detail}")]
    Different { what: String, detail: String },
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
}

impl Topology {
    pub fn new(spec: TopologySpec) -> Self {
        let p = &spec.platform;
        let saga = format!("{p}.saga");
        let dlx = format!("{p}.dlx");
        let exchanges = vec![
            ExchangeDef { name: saga.clone(), kind: ExchangeKind::Direct },
            ExchangeDef { name: dlx.clone(), kind: ExchangeKind::Direct },
            ExchangeDef { name: events_exchange(p), kind: ExchangeKind::Topic },
        ];
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for destination in Destination::ALL {
            let queue = destination.queue();
            let main = format!("{p}.{queue}");
            let mut args = base_arguments(spec.queue_type);
            args.insert("x-dead-letter-exchange".into(), long_string(&dlx));
            args.insert("x-dead-letter-routing-key".into(), long_string(queue));
            queues.push(QueueDef { name: main.clone(), arguments: args });
            bindings.push(BindingDef { queue: main.clone(), exchange: saga.clone(), routing_key: queue.into() });
            for kind in destination.event_subscriptions() {
                let exchange = events_exchange(p);
                bindings.push(BindingDef { queue: main.clone(), exchange, routing_key: kind.as_str().into() });
            }

            let dlq = dlq_name(p, destination);
            queues.push(QueueDef { name: dlq.clone(), arguments: base_arguments(spec.queue_type) });
            bindings.push(BindingDef { queue: dlq, exchange: dlx.clone(), routing_key: queue.into() });

            for attempt in 1..spec.retry.max_attempts {
                let mut args = base_arguments(spec.queue_type);
                let ttl = spec.retry.delay_after(attempt).as_millis() as u32;
                args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
                args.insert("x-dead-letter-exchange".into(), long_string(&saga));
                args.insert("x-dead-letter-routing-key".into(), long_string(queue));
                if spec.queue_type == QueueType::Quorum {
                    // Quorum queues drop dead letters unless told to confirm them.
                    args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
                    args.insert("x-overflow".into(), long_string("reject-publish"));
                }
                queues.push(QueueDef { name: retry_queue_name(p, destination, attempt), arguments: args });
            }
        }
        Topology { spec, exchanges, queues, bindings }
    }

    pub fn exchange(&self) -> String {
        format!("{}.saga", self.spec.platform)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.spec.platform)
    }

    /// The topic exchange of order events.
    pub fn events_exchange(&self) -> String {
        events_exchange(&self.spec.platform)
    }

    /// Where a message with this routing key is published, if anywhere: a
    /// service queue's key goes to `{platform}.saga`, mandatory (a message no
    /// queue takes is an error); an order event's type to `{platform}.events`,
    /// not mandatory (with no subscriber bound the exchange drops it: events
    /// are offered, not owed).
    pub fn route(&self, routing_key: &str) -> Option<Route> {
        if Destination::ALL.iter().any(|d| d.queue() == routing_key) {
            return Some(Route { exchange: self.exchange(), mandatory: true });
        }
        OrderEventType::from_routing_key(routing_key)
            .map(|_| Route { exchange: self.events_exchange(), mandatory: false })
    }

    pub fn queue_name(&self, destination: Destination) -> String {
        format!("{}.{}", self.spec.platform, destination.queue())
    }

    /// Declares everything (idempotent). Fails if an entity exists with other settings.
    pub async fn declare(&self, connection: &Connection) -> Result<(), TopologyError> {
        let channel = connection.create_channel().await?;
        for exchange in &self.exchanges {
            declare_exchange(&channel, exchange, false).await?;
        }
        for queue in &self.queues {
            declare_queue(&channel, queue, false).await?;
        }
        for binding in &self.bindings {
            channel
                .queue_bind(
                    binding.queue.as_str().into(),
                    binding.exchange.as_str().into(),
                    binding.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    /// Checks that every exchange and queue exists with the expected settings,
    /// without creating anything that is missing. Bindings are not inspectable
    /// over AMQP; `declare` restores them.
    pub async fn verify(&self, connection: &Connection) -> Result<(), TopologyError> {
        for exchange in &self.exchanges {
            let what = format!("exchange {}", exchange.name);
            self.check(connection, what, |ch| async move {
                declare_exchange(&ch, exchange, true).await?;
                declare_exchange(&ch, exchange, false).await
            })
            .await?;
        }
        for queue in &self.queues {
            let what = format!("queue {}", queue.name);
            self.check(connection, what, |ch| async move {
                declare_queue(&ch, queue, true).await?;
                declare_queue(&ch, queue, false).await
            })
            .await?;
        }
        Ok(())
    }

    /// Runs a passive-then-active declaration on a fresh channel (a failed
    /// declaration closes the channel) and turns broker refusals into the
    /// reason a person can act on.
    async fn check<'a, F, Fut>(&'a self, connection: &Connection, what: String, probe: F) -> Result<(), TopologyError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<(), lapin::Error>> + 'a,
    {
        let channel = connection.create_channel().await?;
        let result = probe(channel.clone()).await;
        if channel.status().connected() {
            let _ = channel.close(200, "verified".into()).await;
        }
        match result {
            Ok(()) => Ok(()),
            Err(error) => match reply_code(&error) {
                Some(404) => Err(TopologyError::Missing { what }),
                Some(406) => Err(TopologyError::Different { what, detail: error.to_string() }),
                _ => Err(TopologyError::Broker(error)),
            },
        }
    }

    /// Messages waiting in each dead-letter queue, by queue name, read with
    /// passive declares (nothing is created; a DLQ is never consumed, so its
    /// ready count is its depth). `Err` if one is missing or the broker
    /// refuses.
    pub async fn dead_letter_depths(&self, connection: &Connection) -> Result<Vec<(String, u32)>, TopologyError> {
        let mut depths = Vec::with_capacity(Destination::ALL.len());
        for destination in Destination::ALL {
            let name = dlq_name(&self.spec.platform, destination);
            let mut depth = 0;
            self.check(connection, format!("queue {name}"), |channel| {
                let name = name.clone();
                let depth = &mut depth;
                async move {
                    let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
                    let queue = channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await?;
                    *depth = queue.message_count();
                    Ok(())
                }
            })
            .await?;
            depths.push((name, depth));
        }
        Ok(depths)
    }

    /// Deletes every queue and exchange of the platform (used by `deletionPolicy: Delete`).
    pub async fn delete(&self, connection: &Connection) -> Result<(), TopologyError> {
        let channel = connection.create_channel().await?;
        for queue in &self.queues {
            channel.queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        for exchange in &self.exchanges {
            channel.exchange_delete(exchange.name.as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        let _ = channel.close(200, "topology deleted".into()).await;
        Ok(())
    }
}

/// Where `Topology::route` sends a routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub exchange: String,
    /// Published `mandatory`: a message no queue takes comes back as an error.
    pub mandatory: bool,
}

pub fn events_exchange(platform: &str) -> String {
    format!("{platform}.events")
}

pub fn dlq_name(platform: &str, destination: Destination) -> String {
    format!("{platform}.{}.dlq", destination.queue())
}

pub fn retry_queue_name(platform: &str, destination: Destination, attempt: u32) -> String {
    format!("{platform}.{}.retry.{attempt}", destination.queue())
}

fn base_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string(queue_type.as_str()));
    args
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn declare_exchange(channel: &Channel, exchange: &ExchangeDef, passive: bool) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions { passive, durable: true, ..Default::default() };
    channel
        .exchange_declare(
            ShortString::from(exchange.name.as_str()),
            exchange.kind.clone(),
            options,
            FieldTable::default(),
        )
        .await
}

async fn declare_queue(channel: &Channel, queue: &QueueDef, passive: bool) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions { passive, durable: true, ..Default::default() };
    channel.queue_declare(queue.name.as_str().into(), options, queue.arguments.clone()).await.map(|_| ())
}

/// The AMQP reply code of a channel or connection close caused by the broker.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TopologySpec {
        TopologySpec { platform: "p".into(), queue_type: QueueType::Quorum, retry: RetryPolicy::default() }
    }

    #[test]
    fn every_service_queue_has_dlq_and_retry_tiers() {
        let topology = Topology::new(spec());
        let names: Vec<&str> = topology.queues.iter().map(|q| q.name.as_str()).collect();
        for destination in Destination::ALL {
            let queue = destination.queue();
            assert!(names.contains(&format!("p.{queue}").as_str()));
            assert!(names.contains(&format!("p.{queue}.dlq").as_str()));
            for attempt in 1..5 {
                assert!(names.contains(&format!("p.{queue}.retry.{attempt}").as_str()));
            }
            assert!(!names.contains(&format!("p.{queue}.retry.5").as_str()));
        }
        assert_eq!(topology.queues.len(), 4 * (2 + 4));
        // Main and DLQ of each, and the notification queue's three event types.
        assert_eq!(topology.bindings.len(), 4 * 2 + 3);
    }

    #[test]
    fn events_go_to_a_topic_exchange_only_the_notification_queue_takes() {
        let topology = Topology::new(spec());
        let events = topology.exchanges.iter().find(|e| e.name == "p.events").expect("p.events declared");
        assert_eq!(events.kind, ExchangeKind::Topic);
        let bound: Vec<(&str, &str)> = topology
            .bindings
            .iter()
            .filter(|b| b.exchange == "p.events")
            .map(|b| (b.queue.as_str(), b.routing_key.as_str()))
            .collect();
        assert_eq!(
            bound,
            OrderEventType::ALL.map(|kind| ("p.notification.events", kind.as_str())),
            "one binding per event type, exact keys (no pattern that would take a v2 event)"
        );
        for kind in OrderEventType::ALL {
            assert_eq!(topology.route(kind.as_str()), Some(Route { exchange: "p.events".into(), mandatory: false }));
        }
        for destination in Destination::ALL {
            assert_eq!(topology.route(destination.queue()), Some(Route { exchange: "p.saga".into(), mandatory: true }));
        }
        assert_eq!(topology.route("order.shipped"), None);
        assert_eq!(topology.route("p.order.replies"), None);
    }

    #[test]
    fn backoff_is_exponential() {
        let retry = RetryPolicy { max_attempts: 4, initial_delay: Duration::from_millis(100), multiplier: 3 };
        let delays: Vec<u128> = (1..4).map(|a| retry.delay_after(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 300, 900]);
    }
}
