//! Applies saga events to stored orders: lock the row, run the pure
//! transition, store the new state, its timeline entries and its commands
//! (outbox) in the caller's transaction.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use saga_common::consumer::{Handler, HandlerError};
use saga_common::contracts::Message;
use saga_common::envelope::{Envelope, child_traceparent};
use saga_common::metrics::{Metrics, latency_histogram};
use saga_common::outbox;
use saga_common::topology::Destination;
use serde_json::json;
use sqlx::PgConnection;

use crate::finished;
use crate::saga::{self, Effect, Event, OrderStatus, SagaOrder, SagaState, Transition};
use crate::store::{self, OrderRow, SagaUpdate};

pub struct Orchestrator {
    pub step_timeout: Duration,
    finished: Family<Vec<(&'static str, String)>, Counter>,
    duration: Histogram,
}

impl Orchestrator {
    pub fn new(step_timeout: Duration, metrics: &Metrics) -> Self {
        let finished = Family::default();
        metrics.register("sagas_finished", "Sagas that reached a final status, by status and reason", finished.clone());
        let duration = latency_histogram();
        metrics.register("saga_duration_seconds", "Time from order placed to its final status", duration.clone());
        Orchestrator { step_timeout, finished, duration }
    }

    /// Applies `event` to a locked order. `cause` is the message that caused
    /// it, if any: follow-up commands keep its correlation id and trace.
    pub async fn advance(
        &self,
        conn: &mut PgConnection,
        order: &OrderRow,
        event: Event,
        cause: Option<&Envelope>,
    ) -> Result<Transition, sqlx::Error> {
        let before = &order.saga.0;
        let transition = saga::step(before, &saga_order(order), &event);
        let mut timeline = vec![describe(&event, &transition.effect)];
        if transition.effect == Effect::Applied {
            if transition.state != *before {
                timeline.push(("state.changed", json!({"from": before.name(), "to": transition.state.name()})));
            }
            let commands = envelopes(order, cause, &transition.commands);
            timeline.extend(commands.iter().map(sent));
            let deadline_secs = transition
                .state
                .awaits_reply()
                .then_some((self.step_timeout * transition.state.timeout_factor()).as_secs_f64());
            let update = SagaUpdate { saga: &transition.state, priced: transition.priced.as_ref(), deadline_secs };
            let updated_at = store::update(conn, order.id, update).await?;
            if transition.state.status() != before.status() {
                finished::announce(conn, order.id).await?;
            }
            outbox::enqueue(conn, &commands).await?;
            self.observe_finish(order, before, &transition.state, updated_at);
        }
        store::record_events(conn, order.id, &timeline).await?;
        Ok(transition)
    }

    fn observe_finish(
        &self,
        order: &OrderRow,
        before: &SagaState,
        after: &SagaState,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let status = after.status();
        if status == before.status() || status == OrderStatus::Pending {
            return;
        }
        let reason = after.failure_reason().map(|r| r.as_str()).unwrap_or("");
        self.finished.get_or_create(&vec![("status", status.as_str().to_owned()), ("reason", reason.to_owned())]).inc();
        if before.status() == OrderStatus::Pending {
            self.duration.observe((at - order.created_at).as_seconds_f64());
        }
        tracing::info!(order_id = %order.id, status = status.as_str(), reason, "saga finished");
    }
}

/// The saga's commands as messages. `cause` is the message that caused them,
/// if any; otherwise they continue the order's own correlation id and trace.
fn envelopes(order: &OrderRow, cause: Option<&Envelope>, messages: &[Message]) -> Vec<Envelope> {
    messages
        .iter()
        .map(|message| match cause {
            Some(cause) => cause.follow_up(message.clone()),
            None => Envelope::new(message.clone(), &order.correlation_id, &child_traceparent(&order.traceparent)),
        })
        .collect()
}

/// The timeline entry for a command the saga sent.
pub fn sent(command: &Envelope) -> (&'static str, serde_json::Value) {
    let kind = match command.message {
        Message::ReleaseStock { .. } | Message::RefundPayment { .. } => "compensation.sent",
        _ => "command.sent",
    };
    (kind, json!({"type": command.message.type_name(), "message_id": command.message_id}))
}

fn describe(event: &Event, effect: &Effect) -> (&'static str, serde_json::Value) {
    let effect = match effect {
        Effect::Applied => json!("applied"),
        Effect::Ignored(why) => json!({"ignored": why}),
        Effect::Refused(why) => json!({"refused": why}),
    };
    match event {
        Event::Reply(message) => ("reply.received", json!({"type": message.type_name(), "effect": effect})),
        Event::StepTimedOut => ("step.timed_out", json!({"effect": effect})),
        Event::CancelRequested => ("cancel.requested", json!({"effect": effect})),
    }
}

pub fn saga_order(order: &OrderRow) -> SagaOrder {
    SagaOrder {
        id: order.id,
        customer_id: order.customer_id.clone(),
        items: order
            .items
            .iter()
            .map(|i| saga_common::contracts::OrderLine { sku: i.sku.clone(), quantity: i.quantity })
            .collect(),
    }
}

impl Handler for Orchestrator {
    async fn handle(&self, conn: &mut PgConnection, envelope: &Envelope) -> Result<(), HandlerError> {
        if envelope.message.destination() != Destination::Order {
            let kind = envelope.message.type_name();
            return Err(HandlerError::Rejected(format!("{kind} is a command, not a reply for the orchestrator")));
        }
        let order_id = envelope.message.order_id();
        let Some(order) = store::lock(conn, order_id).await? else {
            return Err(HandlerError::Rejected(format!("no order {order_id}")));
        };
        let transition = self.advance(conn, &order, Event::Reply(envelope.message.clone()), Some(envelope)).await?;
        if let Effect::Ignored(why) = transition.effect {
            tracing::info!(why, "reply ignored");
        }
        Ok(())
    }
}
