//! Applies saga events to stored orders: lock the row, run the pure
//! transition, store the new state, its timeline entries and its commands
//! (outbox) in the caller's transaction.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use saga_common::consumer::{Handler, HandlerError};
use saga_common::contracts::Message;
use saga_common::envelope::Envelope;
use saga_common::events::{self, OrderEvent, OrderEventType};
use saga_common::metrics::Metrics;
use saga_common::outbox::{self, OutboxMessage};
use saga_common::telemetry;
use saga_common::topology::Destination;
use saga_common::trace_context::TraceContext;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::finished;
use crate::saga::{self, Effect, Event, FailureReason, OrderStatus, SagaOrder, SagaState, Transition};
use crate::store::{self, Item, OrderRow, SagaUpdate};

pub struct Orchestrator {
    pub step_timeout: Duration,
    finished: Family<Vec<(&'static str, String)>, Counter>,
    duration: Histogram,
}

impl Orchestrator {
    pub fn new(step_timeout: Duration, metrics: &Metrics) -> Self {
        let finished: Family<Vec<(&'static str, String)>, Counter> = Family::default();
        metrics.register("finished", "Sagas that reached a final status, by status and reason", finished.clone());
        // Every outcome's series exists from the start (at 0), so a ratio or
        // an increase over it is defined before the first saga fails.
        let outcomes = [(OrderStatus::Completed, ""), (OrderStatus::Cancelled, "")]
            .into_iter()
            .chain(FailureReason::ALL.map(|reason| (OrderStatus::Failed, reason.as_str())));
        for (status, reason) in outcomes {
            let _ =
                finished.get_or_create(&vec![("status", status.as_str().to_owned()), ("reason", reason.to_owned())]);
        }
        let duration = Histogram::new(duration_buckets(step_timeout));
        metrics.register("duration_seconds", "Time from order placed to its final status", duration.clone());
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
        let mut transitions = self.advance_all(conn, vec![order.clone()], &[(order.id, event, cause)]).await?;
        Ok(transitions.pop().expect("one event, one transition"))
    }

    /// Applies events, in order, to orders locked by the caller (an order may
    /// take several): each transition is computed in memory on the state the
    /// previous one left, then the batch is stored with one statement per
    /// kind of change (orders, timeline, outbox, notifications), whatever
    /// its size.
    pub async fn advance_all(
        &self,
        conn: &mut PgConnection,
        orders: Vec<OrderRow>,
        events: &[(Uuid, Event, Option<&Envelope>)],
    ) -> Result<Vec<Transition>, sqlx::Error> {
        let mut working: HashMap<Uuid, Working> = orders.into_iter().map(|row| (row.id, Working::new(row))).collect();
        let mut steps = Vec::with_capacity(events.len());
        let mut commands = Vec::new();
        // Final statuses reached: the order events to publish with them.
        let mut finals = Vec::new();
        let mut transitions = Vec::with_capacity(events.len());
        for (order_id, event, cause) in events {
            let order = working.get_mut(order_id).expect("events name locked orders");
            let before = order.row.saga.0.clone();
            let transition = saga::step(&before, &saga_order(&order.row), event);
            // The step continues the trace of the message that caused it, or the order's own.
            let step = step_span(*order_id, event_name(event), Some(&before), &transition.state);
            step.record("saga.effect", effect_name(&transition.effect));
            let parent = cause.map(|cause| cause.trace.parent()).unwrap_or_else(|| order.row.trace().parent());
            let trace = TraceContext::of(&telemetry::start(&step, &parent));
            let mut entries = vec![describe(event, &transition.effect)];
            if transition.effect == Effect::Applied {
                if transition.state != before {
                    entries.push(("state.changed", json!({"from": before.name(), "to": transition.state.name()})));
                }
                let outgoing = envelopes(&order.row.correlation_id, &trace, &transition.commands);
                entries.extend(outgoing.iter().map(sent));
                commands.extend(outgoing);
                let deadline = transition
                    .state
                    .awaits_reply()
                    .then_some((self.step_timeout * transition.state.timeout_factor()).as_secs_f64());
                order.apply(&transition, deadline);
                if let Some(kind) = transition.event {
                    finals.push(Final { kind, row: order.row.clone(), trace: trace.clone() });
                }
            }
            steps.push((*order_id, entries));
            transitions.push(transition);
        }
        let changed: Vec<&Working> = working.values().filter(|w| w.changed).collect();
        let updates: Vec<SagaUpdate> = changed.iter().map(|w| w.update()).collect();
        let updated_at = store::update_all(conn, &updates).await?;
        let finished: Vec<Uuid> =
            changed.iter().filter(|w| w.row.saga.0.status() != w.before.status()).map(|w| w.row.id).collect();
        finished::announce_all(conn, &finished).await?;
        let mut outgoing: Vec<OutboxMessage> = commands.iter().map(OutboxMessage::from).collect();
        outgoing.extend(finals.iter().map(|f| f.message(updated_at[&f.row.id])));
        outbox::enqueue_messages(conn, &outgoing).await?;
        store::record_steps(conn, &steps).await?;
        for order in changed {
            if let Some(at) = updated_at.get(&order.row.id) {
                self.observe_finish(&order.row, &order.before, *at);
            }
        }
        Ok(transitions)
    }

    fn observe_finish(&self, order: &OrderRow, before: &SagaState, at: chrono::DateTime<chrono::Utc>) {
        let after = &order.saga.0;
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

/// Bucket bounds of `saga_duration_seconds` for a step timeout `t`:
/// doubling from 5 ms up to `t` (sagas that run normally), then `t`, `2t`,
/// `3t` (the three forward steps each up to their timeout), then every point
/// at which a timed-out saga's compensation is re-sent: the step timeout
/// times 1, 2, 4, 8, 16, 32 (`SagaState::timeout_factor`, which stops
/// doubling after the fifth resend) added up after the three steps, i.e.
/// `4t`, `6t`, `10t`, `18t`, `34t`, `66t`. Anything slower lands in `+Inf`.
pub fn duration_buckets(step_timeout: Duration) -> Vec<f64> {
    let t = step_timeout.as_secs_f64();
    let mut buckets = Vec::new();
    let mut bound = 0.005;
    while bound < t {
        buckets.push(bound);
        bound *= 2.0;
    }
    buckets.extend([t, 2.0 * t, 3.0 * t]);
    let mut resent = 0.0;
    for resend in 0..=5 {
        resent += f64::from(1u32 << resend) * t;
        buckets.push(3.0 * t + resent);
    }
    buckets
}

/// An order being advanced in memory: its row as the events leave it.
struct Working {
    row: OrderRow,
    /// The saga state when the batch began.
    before: SagaState,
    /// Seconds until the step awaiting a reply times out (`None`: no step awaits one).
    deadline_secs: Option<f64>,
    changed: bool,
}

impl Working {
    fn new(row: OrderRow) -> Self {
        Working { before: row.saga.0.clone(), row, deadline_secs: None, changed: false }
    }

    fn apply(&mut self, transition: &Transition, deadline_secs: Option<f64>) {
        let state = &transition.state;
        self.row.status = state.status().as_str().to_owned();
        self.row.failure_reason = state.failure_reason().map(|r| r.as_str().to_owned());
        if let Some((lines, total)) = &transition.priced {
            self.row.items.0 = lines
                .iter()
                .map(|l| Item { sku: l.sku.clone(), quantity: l.quantity, unit_price_cents: Some(l.unit_price_cents) })
                .collect();
            self.row.total_cents = Some(*total);
        }
        self.row.saga.0 = state.clone();
        self.deadline_secs = deadline_secs;
        self.changed = true;
    }

    fn update(&self) -> SagaUpdate<'_> {
        SagaUpdate { row: &self.row, deadline_secs: self.deadline_secs }
    }
}

/// An order that reached a final status in this batch, as it was then.
struct Final {
    kind: OrderEventType,
    row: OrderRow,
    trace: TraceContext,
}

impl Final {
    /// The order event, occurred when the order row was updated: its
    /// `updated_at`. Its id is the outbox row's message id, the same on every
    /// publish of it.
    fn message(&self, occurred_at: chrono::DateTime<chrono::Utc>) -> OutboxMessage {
        let row = &self.row;
        let event = OrderEvent {
            schema_version: events::SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            event_type: self.kind,
            order_id: row.id,
            customer_id: row.customer_id.clone(),
            total_cents: row.total_cents,
            failure_reason: row.saga.0.failure_reason(),
            order_created_at: row.created_at,
            occurred_at,
        };
        OutboxMessage::event(&event, &row.correlation_id, self.trace.clone())
    }
}

/// The saga's commands as messages: the order's correlation id, the context
/// of the step that sent them.
fn envelopes(correlation_id: &str, step: &TraceContext, messages: &[Message]) -> Vec<Envelope> {
    messages.iter().map(|message| Envelope::new(message.clone(), correlation_id, step.clone())).collect()
}

/// The span of one saga step: an event taken (or not) by an order's saga.
/// Its context is the parent of the commands the step sends.
pub fn step_span(order_id: Uuid, event: &str, from: Option<&SagaState>, to: &SagaState) -> tracing::Span {
    tracing::info_span!(
        "saga step",
        otel.name = format!("saga step {}", to.name()),
        order_id = %order_id,
        saga.event = event,
        saga.from = from.map_or("", |state| state.name()),
        saga.to = to.name(),
        saga.effect = tracing::field::Empty,
    )
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Reply(message) => message.type_name(),
        Event::StepTimedOut => "step.timed_out",
        Event::CancelRequested => "cancel.requested",
        Event::RetryRequested(_) => "retry.requested",
        Event::CompensateRequested(_) => "compensate.requested",
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::Applied => "applied",
        Effect::Ignored(_) => "ignored",
        Effect::Refused(_) => "refused",
    }
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
        Event::RetryRequested(operator) => {
            ("retry.requested", json!({"effect": effect, "by": operator.actor, "reason": operator.reason}))
        }
        Event::CompensateRequested(operator) => {
            ("compensate.requested", json!({"effect": effect, "by": operator.actor, "reason": operator.reason}))
        }
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
        total_cents: order.total_cents,
    }
}

impl Handler for Orchestrator {
    type Message = saga_common::contracts::Message;

    async fn handle(&self, conn: &mut PgConnection, envelope: &Envelope) -> Result<(), HandlerError> {
        self.handle_batch(conn, &[envelope]).await
    }

    /// Locks every order of the batch with one statement (in id order, like
    /// every batch, so concurrent batches wait instead of deadlocking), then
    /// advances them all together.
    async fn handle_batch(&self, conn: &mut PgConnection, envelopes: &[&Envelope]) -> Result<(), HandlerError> {
        if let Some(command) = envelopes.iter().find(|e| e.message.destination() != Destination::Order) {
            let kind = command.message.type_name();
            return Err(HandlerError::Rejected(format!("{kind} is a command, not a reply for the orchestrator")));
        }
        let mut ids: Vec<Uuid> = envelopes.iter().map(|e| e.message.order_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let orders = store::lock_all(conn, &ids).await?;
        if orders.len() != ids.len() {
            let missing = ids.iter().find(|id| !orders.iter().any(|o| o.id == **id)).expect("one is missing");
            return Err(HandlerError::Rejected(format!("no order {missing}")));
        }
        let events: Vec<(Uuid, Event, Option<&Envelope>)> =
            envelopes.iter().map(|e| (e.message.order_id(), Event::Reply(e.message.clone()), Some(*e))).collect();
        let transitions = self.advance_all(conn, orders, &events).await?;
        for (envelope, transition) in envelopes.iter().zip(transitions) {
            if let Effect::Ignored(why) = transition.effect {
                tracing::info!(why, order_id = %envelope.message.order_id(), message_id = %envelope.message_id, "reply ignored");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_buckets_reach_past_every_compensation_resend() {
        let t = Duration::from_secs(10);
        let buckets = duration_buckets(t);
        assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
        assert_eq!(buckets[0], 0.005);
        // the resend points: after the three steps, 1, 2, 4, 8, 16, 32 step timeouts more
        assert_eq!(&buckets[buckets.len() - 9..], &[10.0, 20.0, 30.0, 40.0, 60.0, 100.0, 180.0, 340.0, 660.0]);
        // the last resend's deadline, with the forward steps, is inside the last bucket
        let mut state = SagaState::Compensating {
            outcome: saga::Outcome::Failed(FailureReason::Timeout),
            awaiting_release: true,
            awaiting_refund: true,
            resends: 0,
        };
        let mut waited = 3.0 * t.as_secs_f64();
        for _ in 0..=5 {
            waited += (t * state.timeout_factor()).as_secs_f64();
            if let SagaState::Compensating { resends, .. } = &mut state {
                *resends += 1;
            }
            assert!(buckets.contains(&waited), "{waited} s is not a bucket bound: {buckets:?}");
        }
        // a short step timeout still starts at 5 ms
        let short = duration_buckets(Duration::from_millis(300));
        assert_eq!(&short[..7], &[0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.3]);
    }
}
