//! The payment database: accounts and payments. Runtime-checked queries only,
//! so the build never needs a database.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub customer_id: String,
    pub balance_cents: i64,
}

pub async fn get_account(pool: &PgPool, customer_id: &str) -> sqlx::Result<Option<Account>> {
    sqlx::query_as("SELECT customer_id, balance_cents FROM accounts WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(pool)
        .await
}

#[derive(Debug, sqlx::FromRow)]
struct Upserted {
    #[sqlx(flatten)]
    account: Account,
    created: bool,
}

/// Creates the account or sets its balance. `true` when created.
pub async fn upsert_account(pool: &PgPool, customer_id: &str, balance_cents: i64) -> sqlx::Result<(Account, bool)> {
    let row: Upserted = sqlx::query_as(
        "INSERT INTO accounts (customer_id, balance_cents) VALUES ($1, $2)
         ON CONFLICT (customer_id) DO UPDATE
            SET balance_cents = EXCLUDED.balance_cents, updated_at = now()
         RETURNING customer_id, balance_cents, (xmax = 0) AS created",
    )
    .bind(customer_id)
    .bind(balance_cents)
    .fetch_one(pool)
    .await?;
    Ok((row.account, row.created))
}

/// The balance, locked until the end of the transaction; `None` if there is
/// no such account.
pub async fn lock_balance(conn: &mut PgConnection, customer_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT balance_cents FROM accounts WHERE customer_id = $1 FOR UPDATE")
        .bind(customer_id)
        .fetch_optional(conn)
        .await
}

/// Takes `amount_cents` from a balance locked with `lock_balance` (which
/// checked it is enough; the CHECK constraint is the last line of defence).
pub async fn debit(conn: &mut PgConnection, customer_id: &str, amount_cents: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE accounts SET balance_cents = balance_cents - $2, updated_at = now()
         WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(amount_cents)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives `amount_cents` back. Cannot fail for a missing account: a refund
/// must always succeed, so the account is recreated if it is gone.
pub async fn credit(conn: &mut PgConnection, customer_id: &str, amount_cents: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO accounts (customer_id, balance_cents) VALUES ($1, $2)
         ON CONFLICT (customer_id) DO UPDATE
            SET balance_cents = accounts.balance_cents + EXCLUDED.balance_cents,
                updated_at = now()",
    )
    .bind(customer_id)
    .bind(amount_cents)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Captured,
    Refunded,
    Declined,
    /// Tombstone: refunded before the charge arrived; a late charge is declined.
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::Voided => "VOIDED",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "CAPTURED" => PaymentStatus::Captured,
            "REFUNDED" => PaymentStatus::Refunded,
            "DECLINED" => PaymentStatus::Declined,
            "VOIDED" => PaymentStatus::Voided,
            _ => return None,
        })
    }
}

/// Reason stored on declined payments.
pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";

#[derive(Debug, sqlx::FromRow)]
struct PaymentRow {
    order_id: Uuid,
    customer_id: Option<String>,
    amount_cents: i64,
    status: String,
    reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub order_id: Uuid,
    /// `None` only on a VOIDED tombstone.
    pub customer_id: Option<String>,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    pub reason: Option<String>,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = sqlx::Error;

    fn try_from(row: PaymentRow) -> Result<Self, Self::Error> {
        let status = PaymentStatus::parse(&row.status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown payment status {:?}", row.status).into()))?;
        Ok(Payment {
            order_id: row.order_id,
            customer_id: row.customer_id,
            amount_cents: row.amount_cents,
            status,
            reason: row.reason,
        })
    }
}

/// The payment of an order, locked until the end of the transaction so that
/// commands for the same order are applied one after the other.
pub async fn lock_payment(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Option<Payment>> {
    let row: Option<PaymentRow> = sqlx::query_as(
        "SELECT order_id, customer_id, amount_cents, status, reason
         FROM payments WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    row.map(Payment::try_from).transpose()
}

pub async fn get_payment(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Payment>> {
    let row: Option<PaymentRow> = sqlx::query_as(
        "SELECT order_id, customer_id, amount_cents, status, reason
         FROM payments WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    row.map(Payment::try_from).transpose()
}

/// Inserts the payment row. A plain INSERT on purpose: if another command for
/// the same order created the row meanwhile, this fails (unique violation),
/// the transaction is undone and the command retried, and the retry sees it.
pub async fn insert_payment(
    conn: &mut PgConnection,
    order_id: Uuid,
    customer_id: Option<&str>,
    amount_cents: i64,
    status: PaymentStatus,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_cents, status, reason)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(amount_cents)
    .bind(status.as_str())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_payment_status(conn: &mut PgConnection, order_id: Uuid, status: PaymentStatus) -> sqlx::Result<()> {
    sqlx::query("UPDATE payments SET status = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(status.as_str())
        .execute(conn)
        .await?;
    Ok(())
}
