//! Broker connection with reconnect-and-backoff, and the confirming publisher.

use std::sync::Arc;
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionBuilder, ConnectionProperties};
use tokio::sync::Mutex;

use crate::envelope::headers;
use crate::trace_context::TraceContext;

/// Backoff between reconnect attempts: 100 ms doubling up to 5 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff { next: Duration::from_millis(100) }
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(5));
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// One shared AMQP connection per process, re-opened on demand after a failure.
pub struct Broker {
    url: String,
    name: String,
    /// PEM certificates trusted for an `amqps://` broker (system roots if none).
    ca: Option<String>,
    /// Held while (re)connecting, so only one task reconnects at a time.
    reconnecting: Mutex<()>,
    /// The latest connection, readable without waiting for a reconnect.
    current: std::sync::RwLock<Option<Arc<Connection>>>,
}

impl Broker {
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Broker {
            url: url.into(),
            name: name.into(),
            ca: None,
            reconnecting: Mutex::new(()),
            current: Default::default(),
        }
    }

    /// Trusts the certificate authorities of `pem` (the content of
    /// `AMQP_TLS_CA_FILE`) for an `amqps://` URL. `Err` if the PEM holds no
    /// certificate or the URL is not `amqps://`: a CA given for a plain
    /// connection would silently not be used.
    pub fn with_ca(mut self, pem: String) -> Result<Self, String> {
        if !self.url.starts_with("amqps://") {
            return Err("AMQP_TLS_CA_FILE is set but AMQP_URL does not use amqps://".into());
        }
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err("AMQP_TLS_CA_FILE holds no PEM certificate".into());
        }
        self.ca = Some(pem);
        Ok(self)
    }

    /// The open connection, if there is one; never waits.
    pub fn current(&self) -> Option<Arc<Connection>> {
        let current = self.current.read().expect("broker lock poisoned");
        current.as_ref().filter(|c| c.status().connected()).cloned()
    }

    /// The open connection, reconnecting (with backoff, forever) if needed.
    pub async fn connection(&self) -> Arc<Connection> {
        if let Some(connection) = self.current() {
            return connection;
        }
        let _reconnecting = self.reconnecting.lock().await;
        // Another task may have reconnected while this one waited.
        if let Some(connection) = self.current() {
            return connection;
        }
        let mut backoff = Backoff::new();
        loop {
            match self.connect_once().await {
                Ok(connection) => {
                    tracing::info!(broker = %redact(&self.url), "connected to RabbitMQ");
                    let connection = Arc::new(connection);
                    *self.current.write().expect("broker lock poisoned") = Some(connection.clone());
                    return connection;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to RabbitMQ, retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    pub async fn connect_once(&self) -> Result<Connection, lapin::Error> {
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(self.name.as_str()));
        let tls = OwnedTLSConfig { identity: None, cert_chain: self.ca.clone() };
        let builder =
            ConnectionBuilder::new()?.with_uri_str(self.url.clone()).with_properties(properties).with_tls_config(tls);
        tokio::time::timeout(Duration::from_secs(10), builder.connect())
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
    }

    /// A new channel with publisher confirms on.
    pub async fn confirming_channel(&self) -> Result<Channel, lapin::Error> {
        let channel = self.connection().await.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(channel)
    }
}

/// Hides the password of an AMQP URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused message {0} (nack)")]
    Nacked(String),
    #[error("message {0} was unroutable")]
    Unroutable(String),
    #[error("message {0} cannot be framed: {1}")]
    Invalid(String, String),
}

/// A message ready for the wire: where it goes and what it carries.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub message_type: String,
    pub correlation_id: String,
    /// The context of this publish (see `outbox::trace_publishes`).
    pub trace: TraceContext,
    pub payload: Vec<u8>,
    /// Extra headers (attempt counts, failure reasons).
    pub headers: Vec<(&'static str, AMQPValue)>,
    /// Published `mandatory`: a message no queue takes is an error
    /// (`PublishError::Unroutable`). Off for order events, which the events
    /// exchange drops when nobody subscribes.
    pub mandatory: bool,
}

impl OutgoingMessage {
    /// What goes on the wire: exchange, routing key and properties. `Err`
    /// says why the message cannot be framed at all: AMQP short strings
    /// (names, ids, type) hold at most 255 bytes. Checked here instead of
    /// letting the protocol library panic on a value that came from outside.
    pub fn wire(&self) -> Result<(ShortString, ShortString, BasicProperties), String> {
        let short = |field: &str, value: &str| {
            ShortString::try_new(value)
                .map_err(|_| format!("{field} of {} bytes exceeds the AMQP limit of 255", value.len()))
        };
        let exchange = short("exchange", &self.exchange)?;
        let routing_key = short("routing key", &self.routing_key)?;
        let mut table = FieldTable::default();
        table.insert(headers::CORRELATION_ID.into(), AMQPValue::LongString(self.correlation_id.as_str().into()));
        if !self.trace.is_empty() {
            table.insert(headers::TRACEPARENT.into(), AMQPValue::LongString(self.trace.traceparent.as_str().into()));
        }
        if !self.trace.tracestate.is_empty() {
            table.insert(headers::TRACESTATE.into(), AMQPValue::LongString(self.trace.tracestate.as_str().into()));
        }
        for (name, value) in &self.headers {
            table.insert(short("header name", name)?, value.clone());
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(short("message id", &self.message_id)?)
            .with_correlation_id(short("correlation id", &self.correlation_id)?)
            .with_type(short("message type", &self.message_type)?)
            .with_timestamp(chrono::Utc::now().timestamp() as u64)
            .with_headers(table);
        Ok((exchange, routing_key, properties))
    }
}

/// Publishes a batch on a confirming channel: all messages are sent back to
/// back, then every confirm is awaited, so a batch costs one round trip.
/// `mandatory` turns an unroutable message (missing binding) into an error
/// instead of a silent drop.
pub async fn publish_batch(channel: &Channel, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let (exchange, routing_key, properties) =
            message.wire().map_err(|reason| PublishError::Invalid(message.message_id.clone(), reason))?;
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions { mandatory: message.mandatory, ..Default::default() },
                &message.payload,
                properties,
            )
            .await?;
        confirms.push((message, confirm));
    }
    for (message, confirm) in confirms {
        match confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) => {
                return Err(PublishError::Unroutable(message.message_id.clone()));
            }
            Confirmation::Nack(_) => return Err(PublishError::Nacked(message.message_id.clone())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_password() {
        assert_eq!(super::redact("amqp://guest:secret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(super::redact("amqp://host"), "amqp://host");
    }

    #[test]
    fn over_long_short_strings_are_an_error_not_a_panic() {
        let message = super::OutgoingMessage {
            exchange: "saga.saga".into(),
            routing_key: "order.replies".into(),
            message_id: "id".into(),
            message_type: "inventory.released".into(),
            correlation_id: "c".repeat(255),
            trace: Default::default(),
            payload: Vec::new(),
            headers: Vec::new(),
            mandatory: true,
        };
        assert!(message.wire().is_ok());
        let long = super::OutgoingMessage { correlation_id: "c".repeat(256), ..message.clone() };
        assert!(long.wire().unwrap_err().contains("correlation id of 256 bytes"));
        let long = super::OutgoingMessage { message_type: "t".repeat(300), ..message.clone() };
        assert!(long.wire().is_err());
        let long = super::OutgoingMessage { routing_key: "r".repeat(300), ..message };
        assert!(long.wire().is_err());
    }
}
