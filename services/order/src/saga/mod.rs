//! The saga as a pure function: `(state, event) -> (new state, commands)`.
//! Everything hard — duplicates, late replies, timeouts, cancel — is decided
//! here and nowhere else; the orchestrator only loads, applies and stores.

mod state;

pub use state::{FailureReason, OrderStatus, Outcome, SagaState};

use saga_common::contracts::{DeclineReason, Message, OrderLine, PricedLine, RejectReason};
use saga_common::events::OrderEventType;
use uuid::Uuid;

/// What the saga needs to know about its order to issue commands.
#[derive(Debug, Clone)]
pub struct SagaOrder {
    pub id: Uuid,
    pub customer_id: String,
    pub items: Vec<OrderLine>,
    /// The priced total, once inventory has priced the order (what a retried
    /// charge asks for).
    pub total_cents: Option<i64>,
}

/// An operator's action on a saga: who (the token's `sub`) and why. The saga
/// does not decide on it; the timeline records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub actor: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reply from inventory or payment.
    Reply(Message),
    /// The current step got no reply within the step timeout.
    StepTimedOut,
    CancelRequested,
    /// An operator asks for the current step's command (or the compensations
    /// still awaited) to be sent again: the participants key their effects by
    /// order, so a duplicate is harmless. The step's timeout starts afresh.
    RetryRequested(Operator),
    /// An operator forces a running saga to compensate whatever it did; it
    /// ends FAILED `compensated_by_operator`.
    CompensateRequested(Operator),
}

/// How the saga took an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The event moved the saga on (or re-sent pending compensations).
    Applied,
    /// Late, duplicate or irrelevant: recorded, not applied.
    Ignored(&'static str),
    /// A cancel or an operator action the saga cannot honour in its current state.
    Refused(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: SagaState,
    pub commands: Vec<Message>,
    pub effect: Effect,
    /// Set when inventory priced the order.
    pub priced: Option<(Vec<PricedLine>, i64)>,
    /// The order event to publish with this transition: set exactly when it
    /// enters a final status (COMPLETED, FAILED, CANCELLED), the type of that
    /// status. The orchestrator writes it to the outbox in the transaction
    /// that stores the new state.
    pub event: Option<OrderEventType>,
}

impl Transition {
    fn to(state: SagaState, commands: Vec<Message>) -> Self {
        Transition { state, commands, effect: Effect::Applied, priced: None, event: None }
    }

    fn unchanged(state: &SagaState, effect: Effect) -> Self {
        Transition { state: state.clone(), commands: Vec::new(), effect, priced: None, event: None }
    }
}

/// The event of a move from `before` to `after`: the new final status's, if
/// the status changed to one (a COMPLETED order cancelled moves on to
/// CANCELLED: a second event).
fn final_event(before: &SagaState, after: &SagaState) -> Option<OrderEventType> {
    if after.status() == before.status() {
        return None;
    }
    match after.status() {
        OrderStatus::Pending => None,
        OrderStatus::Completed => Some(OrderEventType::Completed),
        OrderStatus::Failed => Some(OrderEventType::Failed),
        OrderStatus::Cancelled => Some(OrderEventType::Cancelled),
    }
}

/// The first command of a new saga.
pub fn begin(order: &SagaOrder) -> (SagaState, Vec<Message>) {
    (SagaState::Reserving, vec![Message::ReserveStock { order_id: order.id, items: order.items.clone() }])
}

pub fn step(state: &SagaState, order: &SagaOrder, event: &Event) -> Transition {
    let mut transition = decide(state, order, event);
    transition.event = final_event(state, &transition.state);
    transition
}

fn decide(state: &SagaState, order: &SagaOrder, event: &Event) -> Transition {
    use SagaState::*;
    let id = order.id;
    let release = || Message::ReleaseStock { order_id: id };
    let refund = || Message::RefundPayment { order_id: id };
    let charge =
        |amount_cents| Message::ChargePayment { order_id: id, customer_id: order.customer_id.clone(), amount_cents };
    let confirm = || Message::ConfirmReservation { order_id: id };
    // Undo everything that may have happened so far: the participants make
    // both compensations safe whether or not the original step took effect.
    let compensate_all = |outcome| {
        Transition::to(
            Compensating { outcome, awaiting_release: true, awaiting_refund: true, resends: 0 },
            vec![refund(), release()],
        )
    };
    let compensate_stock = |outcome| {
        Transition::to(
            Compensating { outcome, awaiting_release: true, awaiting_refund: false, resends: 0 },
            vec![release()],
        )
    };
    // The compensations still awaited, sent again; `resends` sets the next timeout's backoff.
    let resend_compensations = |outcome: &Outcome, awaiting_release: bool, awaiting_refund: bool, resends: u32| {
        let mut commands = Vec::new();
        if awaiting_refund {
            commands.push(refund());
        }
        if awaiting_release {
            commands.push(release());
        }
        Transition::to(Compensating { outcome: *outcome, awaiting_release, awaiting_refund, resends }, commands)
    };
    let operator_failure = Outcome::Failed(FailureReason::CompensatedByOperator);

    match (state, event) {
        (Reserving, Event::Reply(Message::StockReserved { lines, total_cents, .. })) => {
            let mut transition = Transition::to(Charging, vec![charge(*total_cents)]);
            transition.priced = Some((lines.clone(), *total_cents));
            transition
        }
        (Reserving, Event::Reply(Message::StockRejected { reason, .. })) => {
            // Nothing was reserved, so nothing to compensate.
            let reason = match reason {
                RejectReason::OutOfStock => FailureReason::OutOfStock,
                RejectReason::UnknownSku => FailureReason::UnknownSku,
            };
            Transition::to(Failed { reason }, Vec::new())
        }
        (Charging, Event::Reply(Message::PaymentCaptured { .. })) => Transition::to(Confirming, vec![confirm()]),
        (Charging, Event::Reply(Message::PaymentDeclined { reason: DeclineReason::InsufficientFunds, .. })) => {
            compensate_stock(Outcome::Failed(FailureReason::InsufficientFunds))
        }
        (Confirming, Event::Reply(Message::ReservationConfirmed { .. })) => Transition::to(Completed, Vec::new()),

        (Compensating { outcome, awaiting_release, awaiting_refund, resends }, Event::Reply(reply)) => {
            let (release_done, refund_done) = match reply {
                Message::StockReleased { .. } if *awaiting_release => (true, false),
                Message::PaymentRefunded { .. } if *awaiting_refund => (false, true),
                _ => {
                    return Transition::unchanged(state, Effect::Ignored("not awaited while compensating"));
                }
            };
            let awaiting_release = *awaiting_release && !release_done;
            let awaiting_refund = *awaiting_refund && !refund_done;
            let next = if awaiting_release || awaiting_refund {
                Compensating { outcome: *outcome, awaiting_release, awaiting_refund, resends: *resends }
            } else {
                outcome.terminal_state()
            };
            Transition::to(next, Vec::new())
        }

        (Reserving, Event::StepTimedOut) => compensate_stock(Outcome::Failed(FailureReason::Timeout)),
        (Charging | Confirming, Event::StepTimedOut) => compensate_all(Outcome::Failed(FailureReason::Timeout)),
        (Compensating { outcome, awaiting_release, awaiting_refund, resends }, Event::StepTimedOut) => {
            // Compensations are retried until they succeed.
            resend_compensations(outcome, *awaiting_release, *awaiting_refund, resends + 1)
        }

        (Reserving, Event::CancelRequested) => compensate_stock(Outcome::Cancelled),
        (Charging | Confirming | Completed, Event::CancelRequested) => compensate_all(Outcome::Cancelled),
        (Compensating { outcome: Outcome::Cancelled, .. }, Event::CancelRequested) => {
            Transition::unchanged(state, Effect::Ignored("already being cancelled"))
        }
        (Compensating { .. }, Event::CancelRequested) => {
            Transition::unchanged(state, Effect::Refused("the order is already failing and being compensated"))
        }
        (Failed { .. } | Cancelled, Event::CancelRequested) => {
            Transition::unchanged(state, Effect::Refused("the order is already finished"))
        }

        // An operator's retry sends the step's command again, in the same
        // state: the step's timeout starts afresh (the orchestrator restarts
        // it on every applied transition that awaits a reply).
        (Reserving, Event::RetryRequested(_)) => Transition::to(Reserving, begin(order).1),
        (Charging, Event::RetryRequested(_)) => match order.total_cents {
            Some(total) => Transition::to(Charging, vec![charge(total)]),
            None => Transition::unchanged(state, Effect::Refused("the order has no priced total to charge")),
        },
        (Confirming, Event::RetryRequested(_)) => Transition::to(Confirming, vec![confirm()]),
        // While compensating: the compensations still awaited, with the
        // backoff reset (the operator says the participant is back).
        (Compensating { outcome, awaiting_release, awaiting_refund, .. }, Event::RetryRequested(_)) => {
            resend_compensations(outcome, *awaiting_release, *awaiting_refund, 0)
        }
        (Completed | Failed { .. } | Cancelled, Event::RetryRequested(_)) => {
            Transition::unchanged(state, Effect::Refused("the order is finished: no step awaits a reply"))
        }

        (Reserving, Event::CompensateRequested(_)) => compensate_stock(operator_failure),
        (Charging | Confirming, Event::CompensateRequested(_)) => compensate_all(operator_failure),
        (Compensating { .. }, Event::CompensateRequested(_)) => {
            Transition::unchanged(state, Effect::Refused("the order is already being compensated"))
        }
        (Completed, Event::CompensateRequested(_)) => {
            Transition::unchanged(state, Effect::Refused("the order is completed: cancel it to refund and restock"))
        }
        (Failed { .. } | Cancelled, Event::CompensateRequested(_)) => {
            Transition::unchanged(state, Effect::Refused("the order is already finished"))
        }

        (_, Event::StepTimedOut) => Transition::unchanged(state, Effect::Ignored("no step is awaiting a reply")),
        (_, Event::Reply(_)) => Transition::unchanged(state, Effect::Ignored("late or duplicate reply")),
    }
}

#[cfg(test)]
mod tests;
