//! The broker side of a reconcile: declaring the shared topology definition
//! (`saga_common::topology`) and reading queue depth. Every call is bounded by
//! a timeout so a dead broker never blocks a reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Connection;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPUri;
use saga_common::amqp::{Broker, redact};
use saga_common::topology::{Topology, TopologyError, reply_code};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{0}")]
    Topology(#[from] TopologyError),
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("management API: {0}")]
    Management(String),
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker names of platform {platform} belong to another SagaPlatform ({detail})")]
    Claimed { platform: String, detail: String },
}

/// Marks which SagaPlatform owns a platform's broker names: the exchange
/// `{platform}.owner`, whose `alternate-exchange` argument holds the owner
/// (`namespace/name/uid`). RabbitMQ compares that argument when the exchange
/// is declared again and refuses a different one (406), which is how a second
/// resource claiming the same names finds out. Nothing is published to it.
pub fn owner_exchange(platform: &str) -> String {
    format!("{platform}.owner")
}

const OWNER_ARGUMENT: &str = "alternate-exchange";

/// What reconciling the topology did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyOutcome {
    /// Everything was already there as defined.
    Unchanged,
    /// Something was missing (named) and has been declared.
    Declared { missing: String },
}

/// Where a queue depth came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthSource {
    /// Ready + unacknowledged, from the management API.
    ManagementApi,
    /// Ready only, from an AMQP passive declare (management API not configured or down).
    Amqp,
}

impl DepthSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DepthSource::ManagementApi => "management-api",
            DepthSource::Amqp => "amqp (ready messages only)",
        }
    }
}

/// One AMQP connection per broker URL, shared by every reconcile.
pub struct Brokers {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    http: reqwest::Client,
    timeout: Duration,
}

impl Brokers {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build().expect("building the HTTP client");
        Brokers { connections: Mutex::new(HashMap::new()), http, timeout }
    }

    async fn connection(&self, url: &str) -> Result<Arc<Connection>, BrokerError> {
        let cached = self.connections.lock().expect("broker cache poisoned").get(url).cloned();
        if let Some(connection) = cached.filter(|c| c.status().connected()) {
            return Ok(connection);
        }
        let broker = Broker::new(url, "saga-operator");
        let connection = match tokio::time::timeout(self.timeout, broker.connect_once()).await {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(source)) => return Err(BrokerError::Connect { url: redact(url), source }),
            Err(_) => return Err(BrokerError::Timeout(self.timeout)),
        };
        self.connections.lock().expect("broker cache poisoned").insert(url.to_owned(), connection.clone());
        Ok(connection)
    }

    /// Drops the cached connection of `url` (closing it in the background).
    /// After a timed-out operation its channels are in an unknown state, so
    /// the next reconcile connects afresh rather than reuse it (defensive: the
    /// timeouts seen on the real control plane came from a broker out of file
    /// handles, not from a wedged connection).
    fn forget(&self, url: &str) {
        let removed = self.connections.lock().expect("broker cache poisoned").remove(url);
        if let Some(connection) = removed {
            tokio::spawn(async move {
                let _ = connection.close(200, "operation timed out".into()).await;
            });
        }
    }

    /// `bounded`, forgetting the connection of `url` when the bound passes.
    async fn bounded_on<T>(&self, url: &str, future: impl std::future::Future<Output = T>) -> Result<T, BrokerError> {
        let result = self.bounded(future).await;
        if result.is_err() {
            self.forget(url);
        }
        result
    }

    /// Verifies the topology and declares it if anything is missing, so a
    /// queue deleted by hand comes back on the next reconcile.
    pub async fn ensure_topology(&self, url: &str, topology: &Topology) -> Result<TopologyOutcome, BrokerError> {
        let connection = self.connection(url).await?;
        let verified = self.bounded_on(url, topology.verify(&connection)).await?;
        let missing = match verified {
            Ok(()) => return Ok(TopologyOutcome::Unchanged),
            Err(TopologyError::Missing { what }) => what,
            // Different settings cannot be repaired by declaring; report them.
            Err(error) => return Err(error.into()),
        };
        self.bounded_on(url, topology.declare(&connection)).await??;
        Ok(TopologyOutcome::Declared { missing })
    }

    /// Claims the broker names of `platform` for `owner`, or fails with
    /// `Claimed` when another resource holds them. Idempotent for the owner.
    pub async fn claim(&self, url: &str, platform: &str, owner: &str) -> Result<(), BrokerError> {
        let connection = self.connection(url).await?;
        let declare = async {
            let channel = connection.create_channel().await?;
            let mut arguments = FieldTable::default();
            arguments.insert(OWNER_ARGUMENT.into(), AMQPValue::LongString(LongString::from(owner)));
            let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
            let declared = channel
                .exchange_declare(owner_exchange(platform).as_str().into(), ExchangeKind::Fanout, options, arguments)
                .await;
            if channel.status().connected() {
                let _ = channel.close(200, "claimed".into()).await;
            }
            declared
        };
        match self.bounded_on(url, declare).await? {
            Ok(()) => Ok(()),
            Err(error) if reply_code(&error) == Some(406) => {
                Err(BrokerError::Claimed { platform: platform.to_owned(), detail: error.to_string() })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the platform's queues and exchanges (deletionPolicy: Delete),
    /// the owner marker last.
    pub async fn delete_topology(&self, url: &str, topology: &Topology) -> Result<(), BrokerError> {
        let connection = self.connection(url).await?;
        self.bounded_on(url, topology.delete(&connection)).await??;
        let marker = async {
            let channel = connection.create_channel().await?;
            let name = owner_exchange(&topology.spec.platform);
            channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await?;
            let _ = channel.close(200, "owner released".into()).await;
            Ok::<(), lapin::Error>(())
        };
        self.bounded_on(url, marker).await??;
        Ok(())
    }

    /// Messages waiting in `queue`: ready + unacknowledged from the management
    /// API when `management_url` is set and answers, else ready messages from
    /// an AMQP passive declare.
    pub async fn queue_depth(
        &self,
        url: &str,
        management_url: Option<&str>,
        queue: &str,
    ) -> Result<(u64, DepthSource), BrokerError> {
        if let Some(management_url) = management_url {
            match self.management_depth(url, management_url, queue).await {
                Ok(depth) => return Ok((depth, DepthSource::ManagementApi)),
                Err(error) => tracing::warn!(%error, queue, "management API unavailable, reading depth over AMQP"),
            }
        }
        let depth = self.passive_depth(url, queue).await?;
        Ok((depth, DepthSource::Amqp))
    }

    async fn management_depth(&self, url: &str, management_url: &str, queue: &str) -> Result<u64, BrokerError> {
        #[derive(Deserialize)]
        struct QueueInfo {
            #[serde(default)]
            messages_ready: u64,
            #[serde(default)]
            messages_unacknowledged: u64,
        }
        let uri: AMQPUri =
            url.parse().map_err(|reason: String| BrokerError::InvalidUrl { url: redact(url), reason })?;
        let endpoint = format!(
            "{}/api/queues/{}/{}",
            management_url.trim_end_matches('/'),
            percent_encode(&uri.vhost),
            percent_encode(queue)
        );
        let response = self
            .http
            .get(&endpoint)
            .basic_auth(&uri.authority.userinfo.username, Some(&uri.authority.userinfo.password))
            .send()
            .await
            .map_err(|e| BrokerError::Management(e.to_string()))?;
        if !response.status().is_success() {
            return Err(BrokerError::Management(format!("{endpoint}: HTTP {}", response.status())));
        }
        let info: QueueInfo = response.json().await.map_err(|e| BrokerError::Management(e.to_string()))?;
        Ok(info.messages_ready + info.messages_unacknowledged)
    }

    async fn passive_depth(&self, url: &str, queue: &str) -> Result<u64, BrokerError> {
        let connection = self.connection(url).await?;
        let read = async {
            let channel = connection.create_channel().await?;
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await;
            if channel.status().connected() {
                let _ = channel.close(200, "depth read".into()).await;
            }
            declared.map(|q| u64::from(q.message_count()))
        };
        Ok(self.bounded_on(url, read).await??)
    }

    async fn bounded<T>(&self, future: impl std::future::Future<Output = T>) -> Result<T, BrokerError> {
        tokio::time::timeout(self.timeout, future).await.map_err(|_| BrokerError::Timeout(self.timeout))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (vhost `/` → `%2F`).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_vhost_for_the_management_api() {
        assert_eq!(super::percent_encode("/"), "%2F");
        assert_eq!(super::percent_encode("p.order.replies"), "p.order.replies");
    }
}
