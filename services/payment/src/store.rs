//! The payment database: accounts and payments. Runtime-checked queries only,
//! so the build never needs a database.

use std::collections::HashMap;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Captured,
    Refunded,
    Declined,
    /// Tombstone: refunded before the charge arrived; a late charge is declined.
    Voided,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 4] =
        [PaymentStatus::Captured, PaymentStatus::Refunded, PaymentStatus::Declined, PaymentStatus::Voided];

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

/// The payments of these orders, locked in order-id order until the end of
/// the transaction, so that commands for one order apply one after the other
/// and concurrent batches wait instead of deadlocking.
pub async fn lock_payments(conn: &mut PgConnection, order_ids: &[Uuid]) -> sqlx::Result<Vec<Payment>> {
    let rows: Vec<PaymentRow> = sqlx::query_as(
        "SELECT order_id, customer_id, amount_cents, status, reason
         FROM payments WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Payment::try_from).collect()
}

/// The balances of these customers, locked in id order; `None` for a
/// customer without an account.
pub async fn lock_balances(
    conn: &mut PgConnection,
    customers: &[String],
) -> sqlx::Result<HashMap<String, Option<i64>>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT customer_id, balance_cents FROM accounts WHERE customer_id = ANY($1) ORDER BY customer_id FOR UPDATE",
    )
    .bind(customers)
    .fetch_all(conn)
    .await?;
    let mut balances: HashMap<String, Option<i64>> = customers.iter().map(|c| (c.clone(), None)).collect();
    balances.extend(rows.into_iter().map(|(customer, balance)| (customer, Some(balance))));
    Ok(balances)
}

/// Inserts new payment rows. A plain INSERT on purpose: if another command
/// for the same order created the row meanwhile, this fails (unique
/// violation), the transaction is undone and the command retried, and the
/// retry sees it.
pub async fn insert_payments(conn: &mut PgConnection, payments: &[&Payment]) -> sqlx::Result<()> {
    if payments.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_cents, status, reason)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[])",
    )
    .bind(payments.iter().map(|p| p.order_id).collect::<Vec<_>>())
    .bind(payments.iter().map(|p| p.customer_id.as_deref()).collect::<Vec<_>>())
    .bind(payments.iter().map(|p| p.amount_cents).collect::<Vec<_>>())
    .bind(payments.iter().map(|p| p.status.as_str()).collect::<Vec<_>>())
    .bind(payments.iter().map(|p| p.reason.as_deref()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_refunded(conn: &mut PgConnection, order_ids: &[Uuid]) -> sqlx::Result<()> {
    if order_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE payments SET status = 'REFUNDED', updated_at = now() WHERE order_id = ANY($1)")
        .bind(order_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds each delta to a balance locked with `lock_balances` (debits were
/// checked against it; the CHECK constraint is the last line of defence).
pub async fn add_to_balances(conn: &mut PgConnection, deltas: &[(String, i64)]) -> sqlx::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE accounts a SET balance_cents = a.balance_cents + d.delta, updated_at = now()
         FROM UNNEST($1::text[], $2::int8[]) AS d(customer_id, delta) WHERE a.customer_id = d.customer_id",
    )
    .bind(deltas.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>())
    .bind(deltas.iter().map(|(_, d)| *d).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives money back to customers whose account is gone: a refund must always
/// succeed, so the account is recreated (or, if created meanwhile, credited).
pub async fn credit_new_accounts(conn: &mut PgConnection, credits: &[(String, i64)]) -> sqlx::Result<()> {
    if credits.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO accounts (customer_id, balance_cents) SELECT * FROM UNNEST($1::text[], $2::int8[])
         ON CONFLICT (customer_id) DO UPDATE
            SET balance_cents = accounts.balance_cents + EXCLUDED.balance_cents, updated_at = now()",
    )
    .bind(credits.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>())
    .bind(credits.iter().map(|(_, d)| *d).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Accounts in customer id order, after `after` (exclusive), at most `limit`.
pub async fn list_accounts(pool: &PgPool, after: Option<&str>, limit: i64) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as(
        "SELECT customer_id, balance_cents FROM accounts
         WHERE ($1::text IS NULL OR customer_id > $1) ORDER BY customer_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A payment as the admin list shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentEntry {
    pub order_id: Uuid,
    pub amount_cents: i64,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A customer's payments, newest order first (order ids are time-ordered),
/// older than order `before` (exclusive), at most `limit`.
pub async fn customer_payments(
    pool: &PgPool,
    customer_id: &str,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<PaymentEntry>> {
    sqlx::query_as(
        "SELECT order_id, amount_cents, status, reason, created_at, updated_at FROM payments
         WHERE customer_id = $1 AND ($2::uuid IS NULL OR order_id < $2) ORDER BY order_id DESC LIMIT $3",
    )
    .bind(customer_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
