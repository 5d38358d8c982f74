//! The inventory database: products and reservations. Runtime-checked
//! queries only, so the build never needs a database.

use saga_common::contracts::{PricedLine, RejectReason};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    pub on_hand: i32,
    pub reserved: i32,
}

macro_rules! product_columns {
    () => {
        "sku, name, unit_price_cents, on_hand, reserved"
    };
}

pub async fn list_products(pool: &PgPool) -> sqlx::Result<Vec<Product>> {
    sqlx::query_as(concat!("SELECT ", product_columns!(), " FROM products ORDER BY sku")).fetch_all(pool).await
}

pub async fn get_product(pool: &PgPool, sku: &str) -> sqlx::Result<Option<Product>> {
    sqlx::query_as(concat!("SELECT ", product_columns!(), " FROM products WHERE sku = $1"))
        .bind(sku)
        .fetch_optional(pool)
        .await
}

#[derive(Debug, sqlx::FromRow)]
struct Upserted {
    #[sqlx(flatten)]
    product: Product,
    created: bool,
}

/// Creates the product or replaces its name, price and free stock; `reserved`
/// (stock held by running sagas) is left as it is. `true` when created.
pub async fn upsert_product(
    pool: &PgPool,
    sku: &str,
    name: &str,
    unit_price_cents: i64,
    on_hand: i32,
) -> sqlx::Result<(Product, bool)> {
    let row: Upserted = sqlx::query_as(concat!(
        "INSERT INTO products (sku, name, unit_price_cents, on_hand)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (sku) DO UPDATE
            SET name = EXCLUDED.name,
                unit_price_cents = EXCLUDED.unit_price_cents,
                on_hand = EXCLUDED.on_hand,
                updated_at = now()
         RETURNING ",
        product_columns!(),
        ", (xmax = 0) AS created"
    ))
    .bind(sku)
    .bind(name)
    .bind(unit_price_cents)
    .bind(on_hand)
    .fetch_one(pool)
    .await?;
    Ok((row.product, row.created))
}

/// What the reservation step needs of a product.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Stock {
    pub sku: String,
    pub unit_price_cents: i64,
    pub on_hand: i32,
}

/// Locks the named products until the end of the transaction, in SKU order
/// so that concurrent reservations cannot deadlock each other. Unknown SKUs
/// are simply absent from the result.
pub async fn lock_products(conn: &mut PgConnection, skus: &[String]) -> sqlx::Result<Vec<Stock>> {
    sqlx::query_as(
        "SELECT sku, unit_price_cents, on_hand FROM products
         WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(conn)
    .await
}

/// Adds `on_hand_delta[i]` and `reserved_delta[i]` to product `skus[i]`.
/// Callers lock the rows first (`lock_products`). Returns the rows changed.
pub async fn adjust_stock(
    conn: &mut PgConnection,
    skus: &[String],
    on_hand_delta: &[i32],
    reserved_delta: &[i32],
) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "UPDATE products p
            SET on_hand = p.on_hand + d.on_hand,
                reserved = p.reserved + d.reserved,
                updated_at = now()
           FROM UNNEST($1::text[], $2::int[], $3::int[]) AS d(sku, on_hand, reserved)
          WHERE p.sku = d.sku",
    )
    .bind(skus)
    .bind(on_hand_delta)
    .bind(reserved_delta)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Confirmed,
    Released,
    Rejected,
}

impl ReservationStatus {
    pub const ALL: [ReservationStatus; 4] = [
        ReservationStatus::Reserved,
        ReservationStatus::Confirmed,
        ReservationStatus::Released,
        ReservationStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "RESERVED",
            ReservationStatus::Confirmed => "CONFIRMED",
            ReservationStatus::Released => "RELEASED",
            ReservationStatus::Rejected => "REJECTED",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "RESERVED" => ReservationStatus::Reserved,
            "CONFIRMED" => ReservationStatus::Confirmed,
            "RELEASED" => ReservationStatus::Released,
            "REJECTED" => ReservationStatus::Rejected,
            _ => return None,
        })
    }
}

pub fn reject_reason_str(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::OutOfStock => "out_of_stock",
        RejectReason::UnknownSku => "unknown_sku",
    }
}

fn parse_reject_reason(value: &str) -> Option<RejectReason> {
    match value {
        "out_of_stock" => Some(RejectReason::OutOfStock),
        "unknown_sku" => Some(RejectReason::UnknownSku),
        _ => None,
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ReservationRow {
    order_id: Uuid,
    status: String,
    lines: Json<Vec<PricedLine>>,
    reject_reason: Option<String>,
    reject_sku: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    pub lines: Vec<PricedLine>,
    /// Set when `status` is `Rejected` (and kept if it is later released).
    pub rejection: Option<(RejectReason, String)>,
}

impl TryFrom<ReservationRow> for Reservation {
    type Error = sqlx::Error;

    fn try_from(row: ReservationRow) -> Result<Self, Self::Error> {
        let status = ReservationStatus::parse(&row.status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown reservation status {:?}", row.status).into()))?;
        let rejection = match (row.reject_reason, row.reject_sku) {
            (Some(reason), Some(sku)) => Some((
                parse_reject_reason(&reason)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown reject reason {reason:?}").into()))?,
                sku,
            )),
            _ => None,
        };
        Ok(Reservation { order_id: row.order_id, status, lines: row.lines.0, rejection })
    }
}

macro_rules! reservation_columns {
    () => {
        "order_id, status, lines, reject_reason, reject_sku"
    };
}

/// The reservations of these orders, locked in order-id order until the end
/// of the transaction, so that commands for one order apply one after the
/// other and concurrent batches wait instead of deadlocking.
pub async fn lock_reservations(conn: &mut PgConnection, order_ids: &[Uuid]) -> sqlx::Result<Vec<Reservation>> {
    let rows: Vec<ReservationRow> = sqlx::query_as(concat!(
        "SELECT ",
        reservation_columns!(),
        " FROM reservations WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE"
    ))
    .bind(order_ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Reservation::try_from).collect()
}

pub async fn get_reservation(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Reservation>> {
    let row: Option<ReservationRow> =
        sqlx::query_as(concat!("SELECT ", reservation_columns!(), " FROM reservations WHERE order_id = $1"))
            .bind(order_id)
            .fetch_optional(pool)
            .await?;
    row.map(Reservation::try_from).transpose()
}

/// Inserts new reservation rows. A plain INSERT on purpose: if another
/// command for the same order created the row meanwhile, this fails (unique
/// violation), the transaction is undone and the command retried, and the
/// retry sees the row.
pub async fn insert_reservations(conn: &mut PgConnection, reservations: &[&Reservation]) -> sqlx::Result<()> {
    if reservations.is_empty() {
        return Ok(());
    }
    let lines: Vec<Json<&[PricedLine]>> = reservations.iter().map(|r| Json(r.lines.as_slice())).collect();
    sqlx::query(
        "INSERT INTO reservations (order_id, status, lines, reject_reason, reject_sku)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::text[])",
    )
    .bind(reservations.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(reservations.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(lines)
    .bind(
        reservations
            .iter()
            .map(|r| r.rejection.as_ref().map(|(reason, _)| reject_reason_str(*reason)))
            .collect::<Vec<_>>(),
    )
    .bind(reservations.iter().map(|r| r.rejection.as_ref().map(|(_, sku)| sku.as_str())).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_reservation_statuses(conn: &mut PgConnection, reservations: &[&Reservation]) -> sqlx::Result<()> {
    if reservations.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE reservations r SET status = u.status, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[]) AS u(order_id, status) WHERE r.order_id = u.order_id",
    )
    .bind(reservations.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(reservations.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
