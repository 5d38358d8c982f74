//! The inventory side of the saga: reserve, confirm and release stock. Each
//! command runs inside the consumer's transaction; its replies go to the
//! outbox through the same connection.

use std::collections::{BTreeMap, HashMap};

use saga_common::consumer::{Handler, HandlerError, reply};
use saga_common::contracts::{Message, OrderLine, PricedLine, RejectReason};
use saga_common::envelope::Envelope;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, ReservationStatus, Stock};

/// Handles the commands of the `inventory.commands` queue.
pub struct InventoryHandler;

impl Handler for InventoryHandler {
    async fn handle<'a>(&'a self, conn: &'a mut PgConnection, envelope: &'a Envelope) -> Result<(), HandlerError> {
        match &envelope.message {
            Message::ReserveStock { order_id, items } => reserve(conn, envelope, *order_id, items).await,
            Message::ConfirmReservation { order_id } => confirm(conn, envelope, *order_id).await,
            Message::ReleaseStock { order_id } => release(conn, envelope, *order_id).await,
            other => {
                Err(HandlerError::Rejected(format!("{} does not belong on the inventory queue", other.type_name())))
            }
        }
    }
}

async fn reserve(
    conn: &mut PgConnection,
    envelope: &Envelope,
    order_id: Uuid,
    items: &[OrderLine],
) -> Result<(), HandlerError> {
    if let Some(existing) = store::lock_reservation(conn, order_id).await? {
        // A re-sent command gets the answer the first one got.
        return match existing.status {
            ReservationStatus::Reserved | ReservationStatus::Confirmed => {
                let total_cents = total_cents(&existing.lines)
                    .ok_or_else(|| HandlerError::Transient("stored reservation total overflows".into()))?;
                tracing::info!(status = existing.status.as_str(), "reservation exists; answering again");
                reply(conn, envelope, Message::StockReserved { order_id, lines: existing.lines, total_cents }).await
            }
            ReservationStatus::Rejected => {
                let (reason, sku) = existing
                    .rejection
                    .ok_or_else(|| HandlerError::Transient("rejected reservation without a reason".into()))?;
                tracing::info!(?reason, sku, "reservation was rejected; answering again");
                reply(conn, envelope, Message::StockRejected { order_id, reason, sku }).await
            }
            ReservationStatus::Released => {
                tracing::info!("reservation already released (saga compensated first); holding nothing, no reply");
                Ok(())
            }
        };
    }

    let requested = merge_lines(items).map_err(HandlerError::Rejected)?;
    let skus: Vec<String> = requested.keys().cloned().collect();
    let stock = store::lock_products(conn, &skus).await?;
    match decide(&requested, &stock).map_err(HandlerError::Rejected)? {
        Decision::Reject { reason, sku } => {
            tracing::info!(?reason, sku, "reservation rejected");
            store::insert_reservation(conn, order_id, ReservationStatus::Rejected, &[], Some((reason, &sku))).await?;
            reply(conn, envelope, Message::StockRejected { order_id, reason, sku }).await
        }
        Decision::Reserve { lines, total_cents } => {
            let (skus, quantities) = split(&lines);
            let negated: Vec<i32> = quantities.iter().map(|q| -q).collect();
            store::adjust_stock(conn, &skus, &negated, &quantities).await?;
            store::insert_reservation(conn, order_id, ReservationStatus::Reserved, &lines, None).await?;
            tracing::info!(lines = lines.len(), total_cents, "stock reserved");
            reply(conn, envelope, Message::StockReserved { order_id, lines, total_cents }).await
        }
    }
}

async fn confirm(conn: &mut PgConnection, envelope: &Envelope, order_id: Uuid) -> Result<(), HandlerError> {
    let Some(reservation) = store::lock_reservation(conn, order_id).await? else {
        tracing::warn!("confirm for an order with no reservation; ignored");
        return Ok(());
    };
    match reservation.status {
        ReservationStatus::Reserved => {
            let (skus, quantities) = split(&reservation.lines);
            store::lock_products(conn, &skus).await?;
            let negated: Vec<i32> = quantities.iter().map(|q| -q).collect();
            let zeros = vec![0; skus.len()];
            let changed = store::adjust_stock(conn, &skus, &zeros, &negated).await?;
            warn_if_missing(changed, &skus);
            store::set_reservation_status(conn, order_id, ReservationStatus::Confirmed).await?;
            tracing::info!("reservation confirmed");
        }
        ReservationStatus::Confirmed => {
            tracing::info!("reservation already confirmed; answering again");
        }
        status => {
            tracing::warn!(status = status.as_str(), "confirm for a reservation that is not held; ignored");
            return Ok(());
        }
    }
    reply(conn, envelope, Message::ReservationConfirmed { order_id }).await
}

/// Compensation: always succeeds and always answers.
async fn release(conn: &mut PgConnection, envelope: &Envelope, order_id: Uuid) -> Result<(), HandlerError> {
    match store::lock_reservation(conn, order_id).await? {
        None => {
            // The reserve command has not arrived (or never will): leave a
            // tombstone so that a late one holds nothing.
            store::insert_reservation(conn, order_id, ReservationStatus::Released, &[], None).await?;
            tracing::info!("release before any reservation; tombstone written");
        }
        Some(reservation) => {
            let (skus, quantities) = split(&reservation.lines);
            let zeros = vec![0; skus.len()];
            let negated: Vec<i32> = quantities.iter().map(|q| -q).collect();
            match reservation.status {
                ReservationStatus::Reserved => {
                    store::lock_products(conn, &skus).await?;
                    let changed = store::adjust_stock(conn, &skus, &quantities, &negated).await?;
                    warn_if_missing(changed, &skus);
                    tracing::info!("reserved stock returned");
                }
                ReservationStatus::Confirmed => {
                    store::lock_products(conn, &skus).await?;
                    let changed = store::adjust_stock(conn, &skus, &quantities, &zeros).await?;
                    warn_if_missing(changed, &skus);
                    tracing::info!("sold stock returned");
                }
                ReservationStatus::Rejected | ReservationStatus::Released => {
                    tracing::info!(status = reservation.status.as_str(), "nothing held; release has no stock effect");
                }
            }
            if reservation.status != ReservationStatus::Released {
                store::set_reservation_status(conn, order_id, ReservationStatus::Released).await?;
            }
        }
    }
    reply(conn, envelope, Message::StockReleased { order_id }).await
}

/// Products are never deleted, so this should not happen; if it does, the
/// command still completes (a compensation must) and the log says what is off.
fn warn_if_missing(changed: u64, skus: &[String]) {
    if changed != skus.len() as u64 {
        tracing::error!(
            changed,
            expected = skus.len(),
            ?skus,
            "some reserved products no longer exist; their stock was not adjusted"
        );
    }
}

/// SKUs and quantities of priced lines, as the columns `adjust_stock` takes.
fn split(lines: &[PricedLine]) -> (Vec<String>, Vec<i32>) {
    lines.iter().map(|line| (line.sku.clone(), line.quantity)).unzip()
}

/// One quantity per SKU, sorted by SKU. `Err` for content that can never be
/// reserved (the order service validates orders, so this is a broken sender).
pub fn merge_lines(items: &[OrderLine]) -> Result<BTreeMap<String, i32>, String> {
    if items.is_empty() {
        return Err("reserve command without items".into());
    }
    let mut merged = BTreeMap::<String, i32>::new();
    for line in items {
        if line.quantity < 1 {
            return Err(format!("quantity {} for {} is not positive", line.quantity, line.sku));
        }
        let quantity = merged.entry(line.sku.clone()).or_insert(0);
        *quantity =
            quantity.checked_add(line.quantity).ok_or_else(|| format!("total quantity for {} overflows", line.sku))?;
    }
    Ok(merged)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reserve { lines: Vec<PricedLine>, total_cents: i64 },
    Reject { reason: RejectReason, sku: String },
}

/// Whether the requested quantities can be held, given the locked stock.
/// Unknown SKUs are reported before shortages; within each, the first SKU in
/// order. `Err` only if the total price overflows.
pub fn decide(requested: &BTreeMap<String, i32>, stock: &[Stock]) -> Result<Decision, String> {
    let stock: HashMap<&str, &Stock> = stock.iter().map(|s| (s.sku.as_str(), s)).collect();
    if let Some(sku) = requested.keys().find(|sku| !stock.contains_key(sku.as_str())) {
        return Ok(Decision::Reject { reason: RejectReason::UnknownSku, sku: sku.clone() });
    }
    if let Some((sku, _)) = requested.iter().find(|(sku, quantity)| stock[sku.as_str()].on_hand < **quantity) {
        return Ok(Decision::Reject { reason: RejectReason::OutOfStock, sku: sku.clone() });
    }
    let lines: Vec<PricedLine> = requested
        .iter()
        .map(|(sku, quantity)| PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price_cents: stock[sku.as_str()].unit_price_cents,
        })
        .collect();
    let total_cents = total_cents(&lines).ok_or("order total overflows")?;
    Ok(Decision::Reserve { lines, total_cents })
}

/// Σ quantity × unit price, or `None` on overflow.
pub fn total_cents(lines: &[PricedLine]) -> Option<i64> {
    lines.iter().try_fold(0i64, |total, line| {
        i64::from(line.quantity).checked_mul(line.unit_price_cents).and_then(|amount| total.checked_add(amount))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i32) -> OrderLine {
        OrderLine { sku: sku.into(), quantity }
    }

    fn stock(sku: &str, price: i64, on_hand: i32) -> Stock {
        Stock { sku: sku.into(), unit_price_cents: price, on_hand }
    }

    #[test]
    fn duplicate_skus_are_merged_and_sorted() {
        let merged = merge_lines(&[line("B", 1), line("A", 2), line("B", 3)]).unwrap();
        assert_eq!(merged.into_iter().collect::<Vec<_>>(), vec![("A".to_string(), 2), ("B".to_string(), 4)]);
    }

    #[test]
    fn broken_commands_are_refused() {
        assert!(merge_lines(&[]).is_err());
        assert!(merge_lines(&[line("A", 0)]).is_err());
        assert!(merge_lines(&[line("A", -3)]).is_err());
        assert!(merge_lines(&[line("A", i32::MAX), line("A", 1)]).is_err());
    }

    #[test]
    fn unknown_sku_wins_over_shortage() {
        let requested = merge_lines(&[line("A", 5), line("Z", 1)]).unwrap();
        let decision = decide(&requested, &[stock("A", 100, 1)]).unwrap();
        assert_eq!(decision, Decision::Reject { reason: RejectReason::UnknownSku, sku: "Z".into() });
    }

    #[test]
    fn shortage_is_rejected_and_exact_stock_is_enough() {
        let requested = merge_lines(&[line("A", 2), line("A", 1), line("B", 1)]).unwrap();
        let short = decide(&requested, &[stock("A", 100, 2), stock("B", 50, 9)]).unwrap();
        assert_eq!(short, Decision::Reject { reason: RejectReason::OutOfStock, sku: "A".into() });
        let enough = decide(&requested, &[stock("A", 100, 3), stock("B", 50, 9)]).unwrap();
        assert_eq!(
            enough,
            Decision::Reserve {
                lines: vec![
                    PricedLine { sku: "A".into(), quantity: 3, unit_price_cents: 100 },
                    PricedLine { sku: "B".into(), quantity: 1, unit_price_cents: 50 },
                ],
                total_cents: 350,
            }
        );
    }

    #[test]
    fn overflowing_total_is_an_error() {
        let requested = merge_lines(&[line("A", 10), line("B", 10)]).unwrap();
        let result = decide(&requested, &[stock("A", i64::MAX / 10, 100), stock("B", 1, 100)]);
        assert!(result.is_err());
    }
}
