//! Table-driven tests of the transition function, and a property test that
//! runs the saga against models of inventory and payment through a network
//! that duplicates, reorders and delays messages and fires timeouts, cancels
//! and operator actions (retry, forced compensation) at will.

use proptest::prelude::*;
use saga_common::contracts::{DeclineReason, Message, OrderLine, PricedLine, RejectReason};
use saga_common::events::OrderEventType;
use uuid::Uuid;

use super::*;

fn order() -> SagaOrder {
    SagaOrder {
        id: Uuid::nil(),
        customer_id: "alice".into(),
        items: vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }],
        total_cents: Some(100),
    }
}

fn operator() -> Operator {
    Operator { actor: "ops".into(), reason: Some("participant was frozen".into()) }
}

fn retry() -> Event {
    Event::RetryRequested(operator())
}

fn force() -> Event {
    Event::CompensateRequested(operator())
}

fn reserved() -> Event {
    Event::Reply(Message::StockReserved {
        order_id: Uuid::nil(),
        lines: vec![PricedLine { sku: "SKU-1".into(), quantity: 2, unit_price_cents: 50 }],
        total_cents: 100,
    })
}

fn reply(message: Message) -> Event {
    Event::Reply(message)
}

const ID: Uuid = Uuid::nil();

fn compensating(outcome: Outcome, awaiting_release: bool, awaiting_refund: bool) -> SagaState {
    SagaState::Compensating { outcome, awaiting_release, awaiting_refund, resends: 0 }
}

fn resent(state: SagaState) -> SagaState {
    match state {
        SagaState::Compensating { outcome, awaiting_release, awaiting_refund, resends } => {
            SagaState::Compensating { outcome, awaiting_release, awaiting_refund, resends: resends + 1 }
        }
        other => other,
    }
}

#[test]
fn transition_table() {
    use SagaState::*;
    let release = Message::ReleaseStock { order_id: ID };
    let refund = Message::RefundPayment { order_id: ID };
    let timeout = Outcome::Failed(FailureReason::Timeout);
    let cases: Vec<(SagaState, Event, SagaState, Vec<Message>)> = vec![
        (
            Reserving,
            reserved(),
            Charging,
            vec![Message::ChargePayment { order_id: ID, customer_id: "alice".into(), amount_cents: 100 }],
        ),
        (
            Reserving,
            reply(Message::StockRejected { order_id: ID, reason: RejectReason::OutOfStock, sku: "SKU-1".into() }),
            Failed { reason: FailureReason::OutOfStock },
            vec![],
        ),
        (
            Reserving,
            reply(Message::StockRejected { order_id: ID, reason: RejectReason::UnknownSku, sku: "X".into() }),
            Failed { reason: FailureReason::UnknownSku },
            vec![],
        ),
        (
            Charging,
            reply(Message::PaymentCaptured { order_id: ID, amount_cents: 100 }),
            Confirming,
            vec![Message::ConfirmReservation { order_id: ID }],
        ),
        (
            Charging,
            reply(Message::PaymentDeclined { order_id: ID, reason: DeclineReason::InsufficientFunds }),
            compensating(Outcome::Failed(FailureReason::InsufficientFunds), true, false),
            vec![release.clone()],
        ),
        (Confirming, reply(Message::ReservationConfirmed { order_id: ID }), Completed, vec![]),
        (Reserving, Event::StepTimedOut, compensating(timeout, true, false), vec![release.clone()]),
        (Charging, Event::StepTimedOut, compensating(timeout, true, true), vec![refund.clone(), release.clone()]),
        (Confirming, Event::StepTimedOut, compensating(timeout, true, true), vec![refund.clone(), release.clone()]),
        // A compensation without a reply is sent again.
        (
            compensating(timeout, true, true),
            Event::StepTimedOut,
            resent(compensating(timeout, true, true)),
            vec![refund.clone(), release.clone()],
        ),
        (
            compensating(timeout, true, true),
            reply(Message::StockReleased { order_id: ID }),
            compensating(timeout, false, true),
            vec![],
        ),
        (
            compensating(timeout, false, true),
            reply(Message::PaymentRefunded { order_id: ID }),
            Failed { reason: FailureReason::Timeout },
            vec![],
        ),
        (
            compensating(Outcome::Cancelled, true, false),
            reply(Message::StockReleased { order_id: ID }),
            Cancelled,
            vec![],
        ),
        (Reserving, Event::CancelRequested, compensating(Outcome::Cancelled, true, false), vec![release.clone()]),
        (
            Charging,
            Event::CancelRequested,
            compensating(Outcome::Cancelled, true, true),
            vec![refund.clone(), release.clone()],
        ),
        (
            Completed,
            Event::CancelRequested,
            compensating(Outcome::Cancelled, true, true),
            vec![refund.clone(), release.clone()],
        ),
    ];
    for (from, event, to, commands) in cases {
        let transition = step(&from, &order(), &event);
        assert_eq!(transition.state, to, "{from:?} + {event:?}");
        assert_eq!(transition.commands, commands, "{from:?} + {event:?}");
        assert_eq!(transition.effect, Effect::Applied, "{from:?} + {event:?}");
        // The table's transitions into a final status announce it; the rest announce nothing.
        let announced = match to {
            Completed => Some(OrderEventType::Completed),
            Failed { .. } => Some(OrderEventType::Failed),
            Cancelled => Some(OrderEventType::Cancelled),
            _ => None,
        };
        assert_eq!(transition.event, announced, "{from:?} + {event:?}");
    }
}

#[test]
fn compensation_resends_back_off_exponentially() {
    let mut state = compensating(Outcome::Cancelled, true, false);
    let mut factors = Vec::new();
    for _ in 0..8 {
        factors.push(state.timeout_factor());
        state = step(&state, &order(), &Event::StepTimedOut).state;
    }
    assert_eq!(factors, vec![1, 2, 4, 8, 16, 32, 32, 32]);
}

#[test]
fn operator_actions_table() {
    use SagaState::*;
    let release = Message::ReleaseStock { order_id: ID };
    let refund = Message::RefundPayment { order_id: ID };
    let by_operator = Outcome::Failed(FailureReason::CompensatedByOperator);
    let backed_off =
        |outcome| SagaState::Compensating { outcome, awaiting_release: true, awaiting_refund: true, resends: 4 };
    let cases: Vec<(SagaState, Event, SagaState, Vec<Message>)> = vec![
        // A retry sends the current step's command again and stays in the step.
        (Reserving, retry(), Reserving, begin(&order()).1),
        (
            Charging,
            retry(),
            Charging,
            vec![Message::ChargePayment { order_id: ID, customer_id: "alice".into(), amount_cents: 100 }],
        ),
        (Confirming, retry(), Confirming, vec![Message::ConfirmReservation { order_id: ID }]),
        // While compensating: what is still awaited, and the backoff starts over.
        (
            backed_off(Outcome::Cancelled),
            retry(),
            compensating(Outcome::Cancelled, true, true),
            vec![refund.clone(), release.clone()],
        ),
        (compensating(by_operator, false, true), retry(), compensating(by_operator, false, true), vec![refund.clone()]),
        // Forced compensation undoes what may have been done, like a timeout.
        (Reserving, force(), compensating(by_operator, true, false), vec![release.clone()]),
        (Charging, force(), compensating(by_operator, true, true), vec![refund.clone(), release.clone()]),
        (Confirming, force(), compensating(by_operator, true, true), vec![refund.clone(), release.clone()]),
        (
            compensating(by_operator, true, true),
            reply(Message::StockReleased { order_id: ID }),
            compensating(by_operator, false, true),
            vec![],
        ),
        (
            compensating(by_operator, false, true),
            reply(Message::PaymentRefunded { order_id: ID }),
            Failed { reason: FailureReason::CompensatedByOperator },
            vec![],
        ),
    ];
    for (from, event, to, commands) in cases {
        let transition = step(&from, &order(), &event);
        assert_eq!(transition.state, to, "{from:?} + {event:?}");
        assert_eq!(transition.commands, commands, "{from:?} + {event:?}");
        assert_eq!(transition.effect, Effect::Applied, "{from:?} + {event:?}");
        if matches!(event, Event::RetryRequested(_) | Event::CompensateRequested(_)) {
            // It awaits a reply, so the orchestrator restarts the step's timeout.
            assert!(transition.state.awaits_reply(), "{from:?} + {event:?}");
        }
    }
    assert_eq!(step(&backed_off(Outcome::Cancelled), &order(), &retry()).state.timeout_factor(), 1);
}

#[test]
fn operator_actions_are_refused_where_they_do_not_apply() {
    use SagaState::*;
    let by_operator = Outcome::Failed(FailureReason::CompensatedByOperator);
    let cases = vec![
        (Completed, retry()),
        (Failed { reason: FailureReason::Timeout }, retry()),
        (Cancelled, retry()),
        (Completed, force()),
        (Failed { reason: FailureReason::CompensatedByOperator }, force()),
        (Cancelled, force()),
        (compensating(Outcome::Cancelled, true, true), force()),
        (compensating(by_operator, true, false), force()),
    ];
    for (state, event) in cases {
        let transition = step(&state, &order(), &event);
        assert_eq!(transition.state, state, "{event:?}");
        assert!(transition.commands.is_empty(), "{state:?} + {event:?}");
        assert!(matches!(transition.effect, Effect::Refused(_)), "{state:?} + {event:?}");
    }
    // A charge cannot be sent again without the priced total.
    let unpriced = SagaOrder { total_cents: None, ..order() };
    assert!(matches!(step(&Charging, &unpriced, &retry()).effect, Effect::Refused(_)));
}

#[test]
fn late_and_duplicate_replies_are_ignored() {
    use SagaState::*;
    let cases = vec![
        (Charging, reserved()),
        (Completed, reply(Message::ReservationConfirmed { order_id: ID })),
        (Failed { reason: FailureReason::OutOfStock }, reserved()),
        (Cancelled, reply(Message::PaymentCaptured { order_id: ID, amount_cents: 100 })),
        (
            compensating(Outcome::Cancelled, true, false),
            reply(Message::PaymentCaptured { order_id: ID, amount_cents: 1 }),
        ),
        (compensating(Outcome::Cancelled, false, true), reply(Message::StockReleased { order_id: ID })),
        (Completed, Event::StepTimedOut),
        (Cancelled, Event::StepTimedOut),
    ];
    for (state, event) in cases {
        let transition = step(&state, &order(), &event);
        assert_eq!(transition.state, state, "{event:?}");
        assert!(transition.commands.is_empty());
        assert!(matches!(transition.effect, Effect::Ignored(_)), "{state:?} + {event:?}");
    }
}

#[test]
fn cancel_is_refused_once_finished_or_failing() {
    for state in [
        SagaState::Failed { reason: FailureReason::Timeout },
        SagaState::Cancelled,
        compensating(Outcome::Failed(FailureReason::InsufficientFunds), true, false),
    ] {
        let transition = step(&state, &order(), &Event::CancelRequested);
        assert!(matches!(transition.effect, Effect::Refused(_)), "{state:?}");
        assert_eq!(transition.state, state);
    }
}

// ---- Property test: the saga against participant models ----

const PRICE: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reservation {
    Reserved,
    Confirmed,
    Released,
    Rejected(RejectReason),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Payment {
    Captured(i64),
    Refunded,
    Declined,
    Voided,
}

/// Inventory and payment as the participants behave (one SKU, one account).
#[derive(Debug)]
struct Participants {
    on_hand: i32,
    reserved: i32,
    known_sku: bool,
    reservation: Option<(Reservation, i32)>,
    balance: i64,
    payment: Option<Payment>,
}

impl Participants {
    /// Applies a command; returns the reply, if any.
    fn handle(&mut self, command: &Message) -> Option<Message> {
        match command {
            Message::ReserveStock { order_id, items } => {
                let quantity: i32 = items.iter().map(|l| l.quantity).sum();
                let priced = |q| Message::StockReserved {
                    order_id: *order_id,
                    lines: vec![PricedLine { sku: "SKU-1".into(), quantity: q, unit_price_cents: PRICE }],
                    total_cents: PRICE * q as i64,
                };
                let rejected = |reason| Message::StockRejected { order_id: *order_id, reason, sku: "SKU-1".into() };
                match self.reservation {
                    Some((Reservation::Reserved | Reservation::Confirmed, q)) => Some(priced(q)),
                    Some((Reservation::Rejected(reason), _)) => Some(rejected(reason)),
                    Some((Reservation::Released, _)) => None,
                    None if !self.known_sku => {
                        self.reservation = Some((Reservation::Rejected(RejectReason::UnknownSku), 0));
                        Some(rejected(RejectReason::UnknownSku))
                    }
                    None if self.on_hand < quantity => {
                        self.reservation = Some((Reservation::Rejected(RejectReason::OutOfStock), 0));
                        Some(rejected(RejectReason::OutOfStock))
                    }
                    None => {
                        self.on_hand -= quantity;
                        self.reserved += quantity;
                        self.reservation = Some((Reservation::Reserved, quantity));
                        Some(priced(quantity))
                    }
                }
            }
            Message::ConfirmReservation { order_id } => match self.reservation {
                Some((Reservation::Reserved, q)) => {
                    self.reserved -= q;
                    self.reservation = Some((Reservation::Confirmed, q));
                    Some(Message::ReservationConfirmed { order_id: *order_id })
                }
                Some((Reservation::Confirmed, _)) => Some(Message::ReservationConfirmed { order_id: *order_id }),
                _ => None,
            },
            Message::ReleaseStock { order_id } => {
                match self.reservation {
                    Some((Reservation::Reserved, q)) => {
                        self.reserved -= q;
                        self.on_hand += q;
                    }
                    Some((Reservation::Confirmed, q)) => self.on_hand += q,
                    _ => {}
                }
                self.reservation = Some((Reservation::Released, 0));
                Some(Message::StockReleased { order_id: *order_id })
            }
            Message::ChargePayment { order_id, amount_cents, .. } => match self.payment {
                Some(Payment::Captured(amount)) => {
                    Some(Message::PaymentCaptured { order_id: *order_id, amount_cents: amount })
                }
                Some(Payment::Declined) => {
                    Some(Message::PaymentDeclined { order_id: *order_id, reason: DeclineReason::InsufficientFunds })
                }
                Some(Payment::Voided) => {
                    Some(Message::PaymentDeclined { order_id: *order_id, reason: DeclineReason::Voided })
                }
                Some(Payment::Refunded) => None,
                None if self.balance < *amount_cents => {
                    self.payment = Some(Payment::Declined);
                    Some(Message::PaymentDeclined { order_id: *order_id, reason: DeclineReason::InsufficientFunds })
                }
                None => {
                    self.balance -= amount_cents;
                    self.payment = Some(Payment::Captured(*amount_cents));
                    Some(Message::PaymentCaptured { order_id: *order_id, amount_cents: *amount_cents })
                }
            },
            Message::RefundPayment { order_id } => {
                match self.payment {
                    Some(Payment::Captured(amount)) => {
                        self.balance += amount;
                        self.payment = Some(Payment::Refunded);
                    }
                    None => self.payment = Some(Payment::Voided),
                    _ => {}
                }
                Some(Message::PaymentRefunded { order_id: *order_id })
            }
            other => panic!("not a command: {other:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Action {
    /// Deliver the in-flight message at this index; keep a copy (a duplicate) if `duplicate`.
    Deliver {
        index: usize,
        duplicate: bool,
    },
    Timeout,
    Cancel,
    Retry,
    ForceCompensation,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(index, duplicate)| Action::Deliver { index, duplicate }),
        1 => Just(Action::Timeout),
        1 => Just(Action::Cancel),
        1 => Just(Action::Retry),
        1 => Just(Action::ForceCompensation),
    ]
}

struct World {
    order: SagaOrder,
    state: SagaState,
    participants: Participants,
    in_flight: Vec<Message>,
    /// The order events the transitions announced, with the status they left.
    published: Vec<(OrderEventType, SagaState)>,
    /// Every state the saga was in, in order.
    visited: Vec<SagaState>,
}

impl World {
    fn apply(&mut self, event: Event) {
        let transition = step(&self.state, &self.order, &event);
        if let Some(kind) = transition.event {
            assert_eq!(transition.effect, Effect::Applied, "an event from a transition not applied: {event:?}");
            self.published.push((kind, transition.state.clone()));
        }
        if transition.state != self.state {
            self.visited.push(transition.state.clone());
        }
        // As the orchestrator stores it on the order row.
        if let Some((_, total)) = transition.priced {
            self.order.total_cents = Some(total);
        }
        self.state = transition.state;
        self.in_flight.extend(transition.commands);
    }

    fn deliver(&mut self, index: usize, duplicate: bool) {
        if self.in_flight.is_empty() {
            return;
        }
        let index = index % self.in_flight.len();
        let message = if duplicate { self.in_flight[index].clone() } else { self.in_flight.remove(index) };
        if message.destination() == saga_common::topology::Destination::Order {
            self.apply(Event::Reply(message));
        } else if let Some(reply) = self.participants.handle(&message) {
            self.in_flight.push(reply);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_interleaving_ends_terminal_and_conserves_money_and_stock(
        initial_stock in 0i32..4,
        quantity in 1i32..3,
        initial_balance in 0i64..400,
        known_sku in prop::bool::weighted(0.9),
        actions in prop::collection::vec(action(), 0..40),
    ) {
        let order = SagaOrder {
            id: ID,
            customer_id: "alice".into(),
            items: vec![OrderLine { sku: "SKU-1".into(), quantity }],
            total_cents: None,
        };
        let (state, commands) = begin(&order);
        let participants = Participants {
            on_hand: initial_stock, reserved: 0, known_sku, reservation: None,
            balance: initial_balance, payment: None,
        };
        let mut world = World {
            order, state: state.clone(), participants, in_flight: commands, published: Vec::new(), visited: vec![state],
        };
        for action in actions {
            match action {
                Action::Deliver { index, duplicate } => world.deliver(index, duplicate),
                Action::Timeout => world.apply(Event::StepTimedOut),
                Action::Cancel => world.apply(Event::CancelRequested),
                Action::Retry => world.apply(retry()),
                Action::ForceCompensation => world.apply(force()),
            }
        }
        // Quiet period: every message arrives; steps still waiting time out.
        for _ in 0..200 {
            if !world.in_flight.is_empty() {
                world.deliver(0, false);
            } else if world.state.awaits_reply() {
                world.apply(Event::StepTimedOut);
            } else {
                break;
            }
        }
        let p = &world.participants;
        prop_assert!(world.in_flight.is_empty());
        prop_assert_ne!(world.state.status(), OrderStatus::Pending, "not terminal: {:?}", world.state);
        prop_assert_eq!(p.reserved, 0);
        if world.state == SagaState::Completed {
            let total = PRICE * quantity as i64;
            prop_assert_eq!(p.on_hand, initial_stock - quantity);
            prop_assert_eq!(p.balance, initial_balance - total);
            prop_assert_eq!(p.payment, Some(Payment::Captured(total)));
        } else {
            prop_assert_eq!(p.on_hand, initial_stock);
            prop_assert_eq!(p.balance, initial_balance);
            prop_assert!(!matches!(p.payment, Some(Payment::Captured(_))));
        }
        // Every terminal order announced exactly one final event for its
        // final status, as the transition into it; and one more before it
        // only if it was COMPLETED and then cancelled.
        let kinds: Vec<OrderEventType> = world.published.iter().map(|(kind, _)| *kind).collect();
        let final_kind = match world.state.status() {
            OrderStatus::Completed => OrderEventType::Completed,
            OrderStatus::Failed => OrderEventType::Failed,
            OrderStatus::Cancelled => OrderEventType::Cancelled,
            OrderStatus::Pending => unreachable!("checked terminal above"),
        };
        let was_completed = world.visited.contains(&SagaState::Completed);
        let expected = if was_completed && final_kind != OrderEventType::Completed {
            vec![OrderEventType::Completed, final_kind]
        } else {
            vec![final_kind]
        };
        prop_assert_eq!(&kinds, &expected, "states visited: {:?}", world.visited);
        let (_, announced) = world.published.last().unwrap();
        prop_assert_eq!(announced, &world.state);
    }
}
