//! The broker side of a reconcile: declaring the shared topology definition
//! (`saga_common::topology`) and reading queue depth. Every call is bounded by
//! a timeout so a dead broker never blocks a reconcile.
//!
//! `amqps://` and `https://` are verified with [`crate::tls`]: the CA of the
//! resource when it names one, else the system trust store; never unverified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use saga_common::amqp::redact;
use saga_common::topology::{Destination, QueueType, Topology, TopologyError, reply_code, retry_queue_name};
use serde::Deserialize;

use crate::tls::{TlsClient, TlsError, tls_failure};

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
    /// The CA (or the system trust store) cannot verify anything.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The TLS handshake failed: the server's certificate was refused (not
    /// signed by the CA, wrong host name, expired) or TLS was not spoken.
    #[error("TLS with {endpoint} failed: {reason}")]
    TlsHandshake { endpoint: String, reason: String },
}

impl BrokerError {
    /// The condition reason for this error (`prefix` + kind, e.g. `BrokerTlsHandshakeFailed`).
    pub fn tls_reason(&self) -> Option<&'static str> {
        match self {
            BrokerError::Tls(_) => Some("CaInvalid"),
            BrokerError::TlsHandshake { .. } => Some("TlsHandshakeFailed"),
            _ => None,
        }
    }

    /// True when the broker answered that the queue does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BrokerError::Amqp(error) if reply_code(error) == Some(404))
    }
}

/// Where and how to reach one broker: its AMQP URL and, for `amqps://` and an
/// `https://` management API, the TLS client that verifies it.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    tls: Option<TlsClient>,
}

impl Target {
    /// Verified with the system trust store when TLS is used.
    pub fn new(url: impl Into<String>) -> Target {
        Target { url: url.into(), tls: None }
    }

    /// Verified with `ca` only.
    pub fn with_ca(url: impl Into<String>, ca: TlsClient) -> Target {
        Target { url: url.into(), tls: Some(ca) }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TLS client: the CA's, else the system trust store's.
    fn tls(&self) -> Result<TlsClient, BrokerError> {
        match &self.tls {
            Some(tls) => Ok(tls.clone()),
            None => Ok(TlsClient::system()?),
        }
    }

    /// Cache key: the URL and the trust anchors (another CA, another connection).
    fn key(&self) -> String {
        format!("{}#{}", self.url, self.tls.as_ref().map(TlsClient::fingerprint).unwrap_or("system"))
    }
}

impl From<&str> for Target {
    fn from(url: &str) -> Target {
        Target::new(url)
    }
}

/// Whether the broker credentials (the AMQP URL's user and password) may be
/// sent to `management_url`: only when its host is the AMQP URL's host, or
/// the host the resource explicitly allows (`allowed_host`,
/// `spec.broker.allowCredentialsToManagementHost`). The error says why not,
/// naming hosts only.
pub fn management_credentials_allowed(
    amqp_url: &str,
    management_url: &str,
    allowed_host: Option<&str>,
) -> Result<(), String> {
    let amqp: AMQPUri = amqp_url.parse().map_err(|reason| format!("the AMQP URL is invalid: {reason}"))?;
    let management =
        reqwest::Url::parse(management_url).map_err(|error| format!("broker.managementUrl is not a URL: {error}"))?;
    let Some(management_host) = management.host_str() else {
        return Err("broker.managementUrl has no host".into());
    };
    let (amqp_host, management_host) = (normalize_host(&amqp.authority.host), normalize_host(management_host));
    if management_host == amqp_host || allowed_host.map(normalize_host).as_deref() == Some(management_host.as_str()) {
        return Ok(());
    }
    Err(format!(
        "not sending the broker credentials to the management API: its host {management_host} is not the AMQP URL's host {amqp_host}; set broker.allowCredentialsToManagementHost: {management_host} if that host may have them"
    ))
}

/// Lowercase, without IPv6 brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
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

/// The highest `retry.maxAttempts` the CRD allows: retry tiers go up to `maxAttempts - 1`.
pub const MAX_RETRY_TIERS: u32 = 19;

/// What pruning surplus retry queues did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryPrune {
    pub removed: Vec<String>,
    /// Not empty yet (name and message count): left for a later reconcile.
    pub kept: Vec<String>,
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

/// What a depth read found: the depth and where it came from (or why it
/// could not be read), and why the management API was not used when it was
/// configured (reported even when the AMQP fallback fails too).
#[derive(Debug)]
pub struct QueueDepth {
    pub depth: Result<(u64, DepthSource), BrokerError>,
    /// Publish and deliver rates, from the management API only.
    pub rates: Option<MessageRates>,
    pub management_error: Option<BrokerError>,
}

/// A queue's message rates (messages/s) as the management API reports them
/// (`message_stats.publish_details.rate`, `deliver_get_details.rate`); 0
/// when the queue has seen no traffic.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MessageRates {
    pub publish: f64,
    pub deliver: f64,
}

/// One AMQP connection per broker (URL and trust anchors), shared by every reconcile.
pub struct Brokers {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// HTTP clients per trust anchors (`plain` for http://).
    http: Mutex<HashMap<String, reqwest::Client>>,
    timeout: Duration,
}

impl Brokers {
    pub fn new(timeout: Duration) -> Self {
        Brokers { connections: Mutex::new(HashMap::new()), http: Mutex::new(HashMap::new()), timeout }
    }

    /// The bound of each broker call (`BROKER_TIMEOUT`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn connection(&self, target: &Target) -> Result<Arc<Connection>, BrokerError> {
        let key = target.key();
        let cached = self.connections.lock().expect("broker cache poisoned").get(&key).cloned();
        if let Some(connection) = cached.filter(|c| c.status().connected()) {
            return Ok(connection);
        }
        let connection = match tokio::time::timeout(self.timeout, connect(target)).await {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                let broker = redact(target.url());
                tracing::warn!(%broker, timeout = ?self.timeout, "broker call timed out: connecting (BROKER_TIMEOUT)");
                return Err(BrokerError::Timeout(self.timeout));
            }
        };
        self.connections.lock().expect("broker cache poisoned").insert(key, connection.clone());
        Ok(connection)
    }

    /// Drops the cached connection of `target` (closing it in the background).
    /// After a timed-out operation its channels are in an unknown state, so
    /// the next reconcile connects afresh rather than reuse it (defensive: the
    /// timeouts seen on the real control plane came from a broker out of file
    /// handles, not from a wedged connection).
    pub(crate) fn forget(&self, target: &Target) {
        let removed = self.connections.lock().expect("broker cache poisoned").remove(&target.key());
        if let Some(connection) = removed {
            tokio::spawn(async move {
                let _ = connection.close(200, "operation timed out".into()).await;
            });
        }
    }

    /// `bounded`, forgetting the connection of `target` when the bound passes;
    /// a timeout is logged at warn naming `what` was waited on.
    async fn bounded_on<T>(
        &self,
        target: &Target,
        what: &'static str,
        future: impl std::future::Future<Output = T>,
    ) -> Result<T, BrokerError> {
        let result = self.bounded(future).await;
        if result.is_err() {
            let broker = redact(target.url());
            tracing::warn!(%broker, timeout = ?self.timeout, "broker call timed out: {what} (BROKER_TIMEOUT)");
            self.forget(target);
        }
        result
    }

    /// Verifies the topology and declares it if anything is missing, so a
    /// queue deleted by hand comes back on the next reconcile.
    pub async fn ensure_topology(&self, target: &Target, topology: &Topology) -> Result<TopologyOutcome, BrokerError> {
        let connection = self.connection(target).await?;
        let verified = self.bounded_on(target, "verifying the topology", topology.verify(&connection)).await?;
        let missing = match verified {
            Ok(()) => return Ok(TopologyOutcome::Unchanged),
            Err(TopologyError::Missing { what }) => what,
            // Different settings cannot be repaired by declaring; report them.
            Err(error) => return Err(error.into()),
        };
        self.bounded_on(target, "declaring the topology", topology.declare(&connection)).await??;
        Ok(TopologyOutcome::Declared { missing })
    }

    /// Claims the broker names of `platform` for `owner`, or fails with
    /// `Claimed` when another resource holds them. Idempotent for the owner.
    pub async fn claim(&self, target: &Target, platform: &str, owner: &str) -> Result<(), BrokerError> {
        let connection = self.connection(target).await?;
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
        match self.bounded_on(target, "claiming the broker names", declare).await? {
            Ok(()) => Ok(()),
            Err(error) if reply_code(&error) == Some(406) => {
                Err(BrokerError::Claimed { platform: platform.to_owned(), detail: error.to_string() })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the platform's queues and exchanges (deletionPolicy: Delete),
    /// the owner marker last.
    pub async fn delete_topology(&self, target: &Target, topology: &Topology) -> Result<(), BrokerError> {
        let connection = self.connection(target).await?;
        self.bounded_on(target, "deleting the topology", topology.delete(&connection)).await??;
        let marker = async {
            let channel = connection.create_channel().await?;
            let name = owner_exchange(&topology.spec.platform);
            channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await?;
            let _ = channel.close(200, "owner released".into()).await;
            Ok::<(), lapin::Error>(())
        };
        self.bounded_on(target, "releasing the broker names", marker).await??;
        Ok(())
    }

    /// Removes the retry queues `retry.{n}` of every service queue for `n` from
    /// `from` up (the tiers a lowered `retry.maxAttempts` no longer uses),
    /// through `to` when given, else until the first tier that does not
    /// exist. A tier still holding messages is kept (its messages go back to
    /// the service queue when their TTL ends) and named in `kept`; the next
    /// reconcile tries again. Call only for names this resource has claimed.
    /// Without `remove_empty` nothing is deleted: every surplus tier found is
    /// named in `kept` (pods of an older template may still publish into it).
    pub async fn prune_retry_queues(
        &self,
        target: &Target,
        topology: &Topology,
        from: u32,
        to: Option<u32>,
        remove_empty: bool,
    ) -> Result<RetryPrune, BrokerError> {
        let connection = self.connection(target).await?;
        let platform = topology.spec.platform.clone();
        let classic = topology.spec.queue_type == QueueType::Classic;
        let prune = async move {
            let mut outcome = RetryPrune::default();
            for destination in Destination::ALL {
                let mut attempt = from.max(1);
                while to.is_none_or(|to| attempt <= to) && attempt <= MAX_RETRY_TIERS {
                    let name = retry_queue_name(&platform, destination, attempt);
                    attempt += 1;
                    // A passive declare answers 404 (closing the channel) when it is not there.
                    let channel = connection.create_channel().await?;
                    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
                    let found = channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await;
                    let count = match found {
                        Ok(queue) => queue.message_count(),
                        Err(error) if reply_code(&error) == Some(404) => {
                            if to.is_none() {
                                break;
                            }
                            continue;
                        }
                        Err(error) => return Err(error),
                    };
                    if count > 0 {
                        outcome.kept.push(format!("{name} ({count} messages)"));
                    } else if !remove_empty {
                        outcome.kept.push(name);
                    } else {
                        // Classic queues re-check emptiness on delete; quorum queues
                        // refuse `if-empty` (540, closing the connection), so for them the
                        // count just read is the check.
                        let options = QueueDeleteOptions { if_empty: classic, ..QueueDeleteOptions::default() };
                        match channel.queue_delete(name.as_str().into(), options).await {
                            Ok(_) => outcome.removed.push(name),
                            // A message arrived in between: kept for now.
                            Err(error) if reply_code(&error) == Some(406) => outcome.kept.push(name),
                            Err(error) => return Err(error),
                        }
                    }
                    if channel.status().connected() {
                        let _ = channel.close(200, "retry tiers pruned".into()).await;
                    }
                }
            }
            Ok::<RetryPrune, lapin::Error>(outcome)
        };
        Ok(self.bounded_on(target, "pruning retry queues", prune).await??)
    }

    /// Messages waiting in `queue`: ready + unacknowledged from the management
    /// API when `management_url` is set and answers, else ready messages from
    /// an AMQP passive declare. The caller decides whether the management API
    /// may have the credentials ([`management_credentials_allowed`]): given a
    /// URL, this sends them.
    pub async fn queue_depth(&self, target: &Target, management_url: Option<&str>, queue: &str) -> QueueDepth {
        let mut management_error = None;
        if let Some(management_url) = management_url {
            match self.management_depth(target, management_url, queue).await {
                Ok((depth, rates)) => {
                    return QueueDepth {
                        depth: Ok((depth, DepthSource::ManagementApi)),
                        rates: Some(rates),
                        management_error,
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, queue, "management API unavailable, reading depth over AMQP");
                    management_error = Some(error);
                }
            }
        }
        let depth = self.passive_depth(target, queue).await.map(|depth| (depth, DepthSource::Amqp));
        QueueDepth { depth, rates: None, management_error }
    }

    /// The HTTP client for `management_url`: plain for http://, verifying with
    /// the target's trust anchors for https://.
    fn http_client(&self, target: &Target, management_url: &reqwest::Url) -> Result<reqwest::Client, BrokerError> {
        let tls = match management_url.scheme() {
            "https" => Some(target.tls()?),
            _ => None,
        };
        let key = tls.as_ref().map(|t| t.fingerprint().to_owned()).unwrap_or_else(|| "plain".into());
        if let Some(client) = self.http.lock().expect("http cache poisoned").get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder().timeout(self.timeout);
        if let Some(tls) = &tls {
            builder = builder.use_preconfigured_tls(tls.http_config());
        }
        let client = builder.build().map_err(|e| BrokerError::Management(format!("building the HTTP client: {e}")))?;
        self.http.lock().expect("http cache poisoned").insert(key, client.clone());
        Ok(client)
    }

    async fn management_depth(
        &self,
        target: &Target,
        management_url: &str,
        queue: &str,
    ) -> Result<(u64, MessageRates), BrokerError> {
        #[derive(Deserialize, Default)]
        struct Rate {
            #[serde(default)]
            rate: f64,
        }
        #[derive(Deserialize, Default)]
        struct Stats {
            #[serde(default)]
            publish_details: Rate,
            #[serde(default)]
            deliver_get_details: Rate,
        }
        #[derive(Deserialize)]
        struct QueueInfo {
            #[serde(default)]
            messages_ready: u64,
            #[serde(default)]
            messages_unacknowledged: u64,
            #[serde(default)]
            message_stats: Stats,
        }
        let uri: AMQPUri = target
            .url
            .parse()
            .map_err(|reason: String| BrokerError::InvalidUrl { url: redact(&target.url), reason })?;
        let base = reqwest::Url::parse(management_url)
            .map_err(|e| BrokerError::Management(format!("broker.managementUrl is not a URL: {e}")))?;
        let client = self.http_client(target, &base)?;
        let endpoint = format!(
            "{}/api/queues/{}/{}",
            management_url.trim_end_matches('/'),
            percent_encode(&uri.vhost),
            percent_encode(queue)
        );
        let response = client
            .get(&endpoint)
            .basic_auth(&uri.authority.userinfo.username, Some(&uri.authority.userinfo.password))
            .send()
            .await
            .map_err(|error| match tls_failure(&error) {
                Some(reason) => BrokerError::TlsHandshake { endpoint: origin(&base), reason },
                None => BrokerError::Management(format!("{}: {}", origin(&base), error.without_url())),
            })?;
        if !response.status().is_success() {
            return Err(BrokerError::Management(format!("{endpoint}: HTTP {}", response.status())));
        }
        let info: QueueInfo =
            response.json().await.map_err(|e| BrokerError::Management(e.without_url().to_string()))?;
        let rates = MessageRates {
            publish: info.message_stats.publish_details.rate,
            deliver: info.message_stats.deliver_get_details.rate,
        };
        Ok((info.messages_ready + info.messages_unacknowledged, rates))
    }

    async fn passive_depth(&self, target: &Target, queue: &str) -> Result<u64, BrokerError> {
        let connection = self.connection(target).await?;
        let read = async {
            let channel = connection.create_channel().await?;
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await;
            if channel.status().connected() {
                let _ = channel.close(200, "depth read".into()).await;
            }
            declared.map(|q| u64::from(q.message_count()))
        };
        Ok(self.bounded_on(target, "reading a queue depth", read).await??)
    }

    async fn bounded<T>(&self, future: impl std::future::Future<Output = T>) -> Result<T, BrokerError> {
        tokio::time::timeout(self.timeout, future).await.map_err(|_| BrokerError::Timeout(self.timeout))
    }
}

/// `scheme://host:port` of a URL (no user info, path or query), for messages.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// Opens an AMQP connection to `target`: plain for `amqp://`; for `amqps://`
/// over rustls, verified with the target's CA (or the system trust store).
async fn connect(target: &Target) -> Result<Connection, BrokerError> {
    let redacted = redact(&target.url);
    let uri: AMQPUri =
        target.url.parse().map_err(|reason: String| BrokerError::InvalidUrl { url: redacted.clone(), reason })?;
    let properties = ConnectionProperties::default().with_connection_name(LongString::from("saga-operator"));
    let connected = match uri.scheme {
        AMQPScheme::AMQP => Connection::connect_uri(uri, properties).await,
        AMQPScheme::AMQPS => {
            let connector = RustlsConnector::from(target.tls()?.amqp_config());
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connector(
                uri,
                runtime,
                async move |uri, runtime| {
                    let host = uri.authority.host.clone();
                    let addresses: Vec<_> =
                        tokio::net::lookup_host((host.as_str(), uri.authority.port)).await?.collect();
                    let stream = AsyncTcpStream::connect(&runtime, addresses).await?;
                    Ok(stream.into_rustls(&connector, &host).await?)
                },
                properties,
            )
            .await
        }
    };
    connected.map_err(|source| match tls_failure(&source) {
        Some(reason) => BrokerError::TlsHandshake { endpoint: redacted.clone(), reason },
        None => BrokerError::Connect { url: redacted, source },
    })
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
    use super::*;

    #[test]
    fn encodes_vhost_for_the_management_api() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("p.order.replies"), "p.order.replies");
    }

    #[test]
    fn credentials_go_only_to_the_brokers_host_or_an_explicitly_allowed_one() {
        let amqp = "amqp://saga:s3cret@rabbitmq.messaging.svc:5672/%2f";
        let allowed = |management: &str, host: Option<&str>| management_credentials_allowed(amqp, management, host);
        assert_eq!(allowed("http://rabbitmq.messaging.svc:15672", None), Ok(()));
        assert_eq!(allowed("https://RabbitMQ.Messaging.svc.:15671/", None), Ok(()), "host names are case-insensitive");
        let refused = allowed("http://attacker.example:15672", None).unwrap_err();
        assert!(refused.contains("attacker.example") && refused.contains("rabbitmq.messaging.svc"), "{refused}");
        assert!(!refused.contains("s3cret") && !refused.contains("saga:"), "no credentials in: {refused}");
        // Same host name in another place of the URL does not count.
        assert!(allowed("http://attacker.example/rabbitmq.messaging.svc", None).is_err());
        assert!(allowed("http://rabbitmq.messaging.svc.attacker.example", None).is_err());
        assert!(allowed("http://rabbitmq.messaging.svc@attacker.example", None).is_err());
        // The opt-in names one host, the one the management URL has.
        assert_eq!(allowed("https://rabbitmq-admin.example", Some("rabbitmq-admin.example")), Ok(()));
        assert!(allowed("https://attacker.example", Some("rabbitmq-admin.example")).is_err());
        // Another address of the same machine is another host.
        assert!(management_credentials_allowed("amqp://u:p@127.0.0.1/%2f", "http://localhost:15672", None).is_err());
        // The host compared is the one lapin connects to (its URL parser has
        // no IPv6 literals: `[::1]` reads as localhost), so this is refused.
        assert!(management_credentials_allowed("amqps://u:p@[::1]:5671/%2f", "https://[::1]:15671", None).is_err());
        assert!(allowed("not a url", None).is_err());
    }
}
