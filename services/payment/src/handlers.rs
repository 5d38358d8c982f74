//! The payment side of the saga: charge and refund. Each command runs inside
//! the consumer's transaction; its replies go to the outbox through the same
//! connection.

use saga_common::consumer::{Handler, HandlerError, reply};
use saga_common::contracts::{DeclineReason, Message};
use saga_common::customer::CustomerId;
use saga_common::envelope::Envelope;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, INSUFFICIENT_FUNDS, PaymentStatus};

/// Handles the commands of the `payment.commands` queue.
pub struct PaymentHandler;

impl Handler for PaymentHandler {
    async fn handle<'a>(&'a self, conn: &'a mut PgConnection, envelope: &'a Envelope) -> Result<(), HandlerError> {
        match &envelope.message {
            Message::ChargePayment { order_id, customer_id, amount_cents } => {
                charge(conn, envelope, *order_id, customer_id, *amount_cents).await
            }
            Message::RefundPayment { order_id } => refund(conn, envelope, *order_id).await,
            other => Err(HandlerError::Rejected(format!("{} does not belong on the payment queue", other.type_name()))),
        }
    }
}

async fn charge(
    conn: &mut PgConnection,
    envelope: &Envelope,
    order_id: Uuid,
    customer_id: &str,
    amount_cents: i64,
) -> Result<(), HandlerError> {
    if CustomerId::parse(customer_id).is_err() {
        return Err(HandlerError::Rejected(format!("charge for an invalid customer id ({} bytes)", customer_id.len())));
    }
    if amount_cents < 0 {
        return Err(HandlerError::Rejected(format!("charge of a negative amount ({amount_cents} cents)")));
    }
    if let Some(existing) = store::lock_payment(conn, order_id).await? {
        // A re-sent command gets the answer the first one got.
        let answer = match existing.status {
            PaymentStatus::Captured => Message::PaymentCaptured { order_id, amount_cents: existing.amount_cents },
            PaymentStatus::Declined => Message::PaymentDeclined { order_id, reason: DeclineReason::InsufficientFunds },
            PaymentStatus::Voided => {
                tracing::info!("charge after the saga voided it; declined, nothing charged");
                Message::PaymentDeclined { order_id, reason: DeclineReason::Voided }
            }
            PaymentStatus::Refunded => {
                tracing::info!("charge for a payment already refunded; ignored, no reply");
                return Ok(());
            }
        };
        tracing::info!(status = existing.status.as_str(), "payment exists; answering again");
        return reply(conn, envelope, answer).await;
    }

    let balance = store::lock_balance(conn, customer_id).await?;
    if can_charge(balance, amount_cents) {
        store::debit(conn, customer_id, amount_cents).await?;
        store::insert_payment(conn, order_id, Some(customer_id), amount_cents, PaymentStatus::Captured, None).await?;
        tracing::info!(customer_id, amount_cents, "payment captured");
        reply(conn, envelope, Message::PaymentCaptured { order_id, amount_cents }).await
    } else {
        store::insert_payment(
            conn,
            order_id,
            Some(customer_id),
            amount_cents,
            PaymentStatus::Declined,
            Some(INSUFFICIENT_FUNDS),
        )
        .await?;
        tracing::info!(customer_id, amount_cents, balance_cents = balance, "payment declined: insufficient funds");
        reply(conn, envelope, Message::PaymentDeclined { order_id, reason: DeclineReason::InsufficientFunds }).await
    }
}

/// Compensation: always succeeds and always answers.
async fn refund(conn: &mut PgConnection, envelope: &Envelope, order_id: Uuid) -> Result<(), HandlerError> {
    match store::lock_payment(conn, order_id).await? {
        None => {
            // The charge has not arrived (or never will): leave a tombstone
            // so that a late one is declined instead of captured.
            store::insert_payment(conn, order_id, None, 0, PaymentStatus::Voided, None).await?;
            tracing::info!("refund before any charge; payment voided");
        }
        Some(payment) => match (payment.status, payment.customer_id.as_deref()) {
            (PaymentStatus::Captured, Some(customer_id)) => {
                store::credit(conn, customer_id, payment.amount_cents).await?;
                store::set_payment_status(conn, order_id, PaymentStatus::Refunded).await?;
                tracing::info!(customer_id, amount_cents = payment.amount_cents, "payment refunded");
            }
            (status, _) => {
                tracing::info!(status = status.as_str(), "nothing captured; refund has no effect");
            }
        },
    }
    reply(conn, envelope, Message::PaymentRefunded { order_id }).await
}

/// A charge is captured only if the account exists and the balance covers it.
pub fn can_charge(balance_cents: Option<i64>, amount_cents: i64) -> bool {
    amount_cents >= 0 && balance_cents.is_some_and(|balance| balance >= amount_cents)
}

#[cfg(test)]
mod tests {
    use super::*;

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
