//! The payment side of the saga: charge and refund. A batch of commands
//! runs inside the consumer's transaction with a constant number of
//! statements: lock the batch's payments, lock the accounts they touch, decide
//! every command in memory in delivery order (the `Ledger`), then write the
//! new payments, the changed payments, the balance changes and the replies
//! (outbox) with one statement each.

use std::collections::{BTreeSet, HashMap};

use saga_common::consumer::{Handler, HandlerError};
use saga_common::contracts::{DeclineReason, Message};
use saga_common::customer::CustomerId;
use saga_common::envelope::Envelope;
use saga_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, INSUFFICIENT_FUNDS, Payment, PaymentStatus};

/// Handles the commands of the `payment.commands` queue.
pub struct PaymentHandler;

impl Handler for PaymentHandler {
    type Message = saga_common::contracts::Message;

    async fn handle<'a>(&'a self, conn: &'a mut PgConnection, envelope: &'a Envelope) -> Result<(), HandlerError> {
        self.handle_batch(conn, &[envelope]).await
    }

    async fn handle_batch(&self, conn: &mut PgConnection, envelopes: &[&Envelope]) -> Result<(), HandlerError> {
        for envelope in envelopes {
            validate(&envelope.message)?;
        }
        let order_ids: Vec<Uuid> =
            envelopes.iter().map(|e| e.message.order_id()).collect::<BTreeSet<_>>().into_iter().collect();
        let payments = store::lock_payments(conn, &order_ids).await?;
        // The accounts every command may touch: charged customers and the
        // customers of captured payments a refund may give money back to.
        let customers: Vec<String> = envelopes
            .iter()
            .filter_map(|e| match &e.message {
                Message::ChargePayment { customer_id, .. } => Some(customer_id.clone()),
                _ => None,
            })
            .chain(payments.iter().filter_map(|p| p.customer_id.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let balances = store::lock_balances(conn, &customers).await?;
        let mut ledger = Ledger::new(payments, balances);
        for envelope in envelopes {
            if let Some(answer) = ledger.apply(&envelope.message) {
                ledger.replies.push(envelope.follow_up(answer));
            }
        }
        ledger.write(conn).await
    }
}

fn validate(message: &Message) -> Result<(), HandlerError> {
    match message {
        Message::ChargePayment { customer_id, .. } if CustomerId::parse(customer_id).is_err() => {
            Err(HandlerError::Rejected(format!("charge for an invalid customer id ({} bytes)", customer_id.len())))
        }
        Message::ChargePayment { amount_cents, .. } if *amount_cents < 0 => {
            Err(HandlerError::Rejected(format!("charge of a negative amount ({amount_cents} cents)")))
        }
        Message::ChargePayment { .. } | Message::RefundPayment { .. } => Ok(()),
        other => Err(HandlerError::Rejected(format!("{} does not belong on the payment queue", other.type_name()))),
    }
}

/// The batch's payments and balances as the commands leave them, and what
/// must be written.
struct Ledger {
    payments: HashMap<Uuid, Payment>,
    /// Locked balances (`None`: no such account).
    balances: HashMap<String, Option<i64>>,
    new_payments: Vec<Uuid>,
    refunded: Vec<Uuid>,
    /// Balance changes: debits (negative) of locked accounts, credits.
    deltas: HashMap<String, i64>,
    replies: Vec<Envelope>,
}

impl Ledger {
    fn new(payments: Vec<Payment>, balances: HashMap<String, Option<i64>>) -> Self {
        Ledger {
            payments: payments.into_iter().map(|p| (p.order_id, p)).collect(),
            balances,
            new_payments: Vec::new(),
            refunded: Vec::new(),
            deltas: HashMap::new(),
            replies: Vec::new(),
        }
    }

    /// Decides one command on the state the previous ones left; the answer,
    /// if any.
    fn apply(&mut self, message: &Message) -> Option<Message> {
        match message {
            Message::ChargePayment { order_id, customer_id, amount_cents } => {
                self.charge(*order_id, customer_id, *amount_cents)
            }
            Message::RefundPayment { order_id } => {
                self.refund(*order_id);
                Some(Message::PaymentRefunded { order_id: *order_id })
            }
            _ => None,
        }
    }

    fn charge(&mut self, order_id: Uuid, customer_id: &str, amount_cents: i64) -> Option<Message> {
        if let Some(existing) = self.payments.get(&order_id) {
            // A re-sent command gets the answer the first one got.
            let answer = match existing.status {
                PaymentStatus::Captured => Message::PaymentCaptured { order_id, amount_cents: existing.amount_cents },
                PaymentStatus::Declined => {
                    Message::PaymentDeclined { order_id, reason: DeclineReason::InsufficientFunds }
                }
                PaymentStatus::Voided => {
                    tracing::info!(%order_id, "charge after the saga voided it; declined, nothing charged");
                    Message::PaymentDeclined { order_id, reason: DeclineReason::Voided }
                }
                PaymentStatus::Refunded => {
                    tracing::info!(%order_id, "charge for a payment already refunded; ignored, no reply");
                    return None;
                }
            };
            tracing::info!(%order_id, status = existing.status.as_str(), "payment exists; answering again");
            return Some(answer);
        }
        let balance = self.balances.get(customer_id).copied().flatten();
        let (status, reason, answer) = if can_charge(balance, amount_cents) {
            self.balances.insert(customer_id.to_owned(), balance.map(|b| b - amount_cents));
            *self.deltas.entry(customer_id.to_owned()).or_default() -= amount_cents;
            tracing::info!(%order_id, customer_id, amount_cents, "payment captured");
            (PaymentStatus::Captured, None, Message::PaymentCaptured { order_id, amount_cents })
        } else {
            tracing::info!(%order_id, customer_id, amount_cents, balance_cents = balance, "payment declined: insufficient funds");
            let answer = Message::PaymentDeclined { order_id, reason: DeclineReason::InsufficientFunds };
            (PaymentStatus::Declined, Some(INSUFFICIENT_FUNDS.to_owned()), answer)
        };
        let customer_id = Some(customer_id.to_owned());
        self.payments.insert(order_id, Payment { order_id, customer_id, amount_cents, status, reason });
        self.new_payments.push(order_id);
        Some(answer)
    }

    /// Compensation: always succeeds (and is always answered).
    fn refund(&mut self, order_id: Uuid) {
        match self.payments.get_mut(&order_id) {
            None => {
                // The charge has not arrived (or never will): a tombstone, so
                // that a late one is declined instead of captured.
                let tombstone = Payment {
                    order_id,
                    customer_id: None,
                    amount_cents: 0,
                    status: PaymentStatus::Voided,
                    reason: None,
                };
                self.payments.insert(order_id, tombstone);
                self.new_payments.push(order_id);
                tracing::info!(%order_id, "refund before any charge; payment voided");
            }
            Some(payment) => match (payment.status, payment.customer_id.clone()) {
                (PaymentStatus::Captured, Some(customer_id)) => {
                    payment.status = PaymentStatus::Refunded;
                    if !self.new_payments.contains(&order_id) {
                        self.refunded.push(order_id);
                    }
                    *self.deltas.entry(customer_id.clone()).or_default() += payment.amount_cents;
                    if let Some(Some(balance)) = self.balances.get_mut(&customer_id) {
                        *balance += payment.amount_cents;
                    }
                    tracing::info!(%order_id, customer_id, amount_cents = payment.amount_cents, "payment refunded");
                }
                (status, _) => {
                    tracing::info!(%order_id, status = status.as_str(), "nothing captured; refund has no effect");
                }
            },
        }
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        let new: Vec<&Payment> = self.new_payments.iter().map(|id| &self.payments[id]).collect();
        store::insert_payments(conn, &new).await?;
        store::set_refunded(conn, &self.refunded).await?;
        let (existing, missing): (Vec<_>, Vec<_>) = self
            .deltas
            .into_iter()
            .filter(|(_, delta)| *delta != 0)
            .partition(|(c, _)| self.balances.get(c).is_some_and(Option::is_some));
        store::add_to_balances(conn, &existing).await?;
        // A refund to an account deleted since: recreated, so the money is not lost.
        store::credit_new_accounts(conn, &missing).await?;
        outbox::enqueue(conn, &self.replies).await?;
        Ok(())
    }
}

/// A charge is captured only if the account exists and the balance covers it.
pub fn can_charge(balance_cents: Option<i64>, amount_cents: i64) -> bool {
    amount_cents >= 0 && balance_cents.is_some_and(|balance| balance >= amount_cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(balances: &[(&str, Option<i64>)]) -> Ledger {
        Ledger::new(Vec::new(), balances.iter().map(|(c, b)| (c.to_string(), *b)).collect())
    }

    fn charge(order_id: Uuid, customer: &str, amount_cents: i64) -> Message {
        Message::ChargePayment { order_id, customer_id: customer.into(), amount_cents }
    }

    #[test]
    fn a_batch_decides_each_command_on_the_state_the_previous_left() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut ledger = ledger(&[("ann", Some(100)), ("bob", None)]);
        assert_eq!(
            ledger.apply(&charge(a, "ann", 70)),
            Some(Message::PaymentCaptured { order_id: a, amount_cents: 70 })
        );
        // The first charge took the money the second needed.
        let declined = Message::PaymentDeclined { order_id: b, reason: DeclineReason::InsufficientFunds };
        assert_eq!(ledger.apply(&charge(b, "ann", 70)), Some(declined.clone()));
        // A re-sent charge gets the first answer, and charges nothing.
        assert_eq!(ledger.apply(&charge(b, "ann", 10)), Some(declined));
        // Refunded in the same batch: the money is back, the row is new and refunded.
        assert_eq!(
            ledger.apply(&Message::RefundPayment { order_id: a }),
            Some(Message::PaymentRefunded { order_id: a })
        );
        assert_eq!(ledger.deltas["ann"], 0);
        assert_eq!(ledger.payments[&a].status, PaymentStatus::Refunded);
        assert!(ledger.refunded.is_empty(), "a new row is inserted refunded, not updated");
        // A refund before the charge leaves a tombstone; the late charge is declined.
        ledger.apply(&Message::RefundPayment { order_id: c });
        let voided = Message::PaymentDeclined { order_id: c, reason: DeclineReason::Voided };
        assert_eq!(ledger.apply(&charge(c, "bob", 1)), Some(voided));
        // After a refund, a late charge is ignored (no reply).
        assert_eq!(ledger.apply(&charge(a, "ann", 70)), None);
        assert_eq!(ledger.new_payments, vec![a, b, c]);
    }

    #[test]
    fn charge_needs_an_account_with_enough_money() {
        assert!(can_charge(Some(100), 100));
        assert!(can_charge(Some(100), 0));
        assert!(can_charge(Some(0), 0));
        assert!(!can_charge(Some(99), 100));
        assert!(!can_charge(None, 0));
        assert!(!can_charge(Some(100), -1));
    }
}
