//! The order events' consumer (`{platform}.notification.events`, bound to
//! `{platform}.events`): one delivery per interested endpoint, written in
//! the consumer's transaction together with the inbox row, so the effect of
//! an event commits exactly when it is acknowledged; a redelivered event
//! (same or new message id) adds nothing (`UNIQUE (endpoint_id, event_id)`).

use std::sync::Arc;

use saga_common::consumer::{Handler, HandlerError};
use saga_common::customer::CustomerId;
use saga_common::envelope::Envelope;
use saga_common::events::{OrderEvent, SCHEMA_VERSION};
use saga_common::service::Service;
use saga_common::topology::Destination;
use serde_json::json;
use sqlx::PgConnection;

use crate::store;

pub fn consume(service: &mut Service) {
    service.consume(Destination::Notification, Arc::new(NotificationHandler));
}

pub struct NotificationHandler;

/// The webhook body (Standard Webhooks' `type`, `timestamp`, `data`): the
/// order event as published, fixed once so every attempt sends the same bytes.
pub fn body(event: &OrderEvent) -> String {
    json!({"type": event.event_type.as_str(), "timestamp": event.occurred_at, "data": event}).to_string()
}

fn validate(event: &OrderEvent) -> Result<(), HandlerError> {
    if event.schema_version != SCHEMA_VERSION {
        return Err(HandlerError::Rejected(format!(
            "schema version {} is not {SCHEMA_VERSION}, the one this service reads",
            event.schema_version
        )));
    }
    if CustomerId::parse(&event.customer_id).is_err() {
        return Err(HandlerError::Rejected(format!("invalid customer id ({} bytes)", event.customer_id.len())));
    }
    Ok(())
}

impl Handler for NotificationHandler {
    type Message = OrderEvent;

    async fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        envelope: &'a Envelope<OrderEvent>,
    ) -> Result<(), HandlerError> {
        self.handle_batch(conn, &[envelope]).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        envelopes: &[&Envelope<OrderEvent>],
    ) -> Result<(), HandlerError> {
        let mut events = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let event = &envelope.message;
            validate(event)?;
            events.push(store::Event {
                event_id: event.event_id,
                event_type: event.event_type.as_str(),
                order_id: event.order_id,
                customer_id: &event.customer_id,
                body: body(event),
            });
        }
        let created = store::record_events(conn, &events).await?;
        tracing::debug!(events = events.len(), created, "deliveries recorded");
        Ok(())
    }
}
