//! The inventory side of the saga: reserve, confirm and release stock. A
//! batch of commands runs inside the consumer's transaction with a constant
//! number of statements: lock the batch's reservations, lock every product
//! they name, decide each command in memory in delivery order (the
//! `Stockroom`), then write new reservations, changed reservations, stock
//! changes and replies (outbox) with one statement each.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use saga_common::consumer::{Handler, HandlerError};
use saga_common::contracts::{Message, OrderLine, PricedLine, RejectReason};
use saga_common::envelope::Envelope;
use saga_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, Reservation, ReservationStatus, Stock};

/// Handles the commands of the `inventory.commands` queue.
pub struct InventoryHandler;

impl Handler for InventoryHandler {
    type Message = saga_common::contracts::Message;

    async fn handle<'a>(&'a self, conn: &'a mut PgConnection, envelope: &'a Envelope) -> Result<(), HandlerError> {
        self.handle_batch(conn, &[envelope]).await
    }

    async fn handle_batch(&self, conn: &mut PgConnection, envelopes: &[&Envelope]) -> Result<(), HandlerError> {
        let mut requests = HashMap::new();
        for envelope in envelopes {
            match &envelope.message {
                Message::ReserveStock { items, .. } => {
                    requests.insert(envelope.message_id, merge_lines(items).map_err(HandlerError::Rejected)?);
                }
                Message::ConfirmReservation { .. } | Message::ReleaseStock { .. } => {}
                other => {
                    let kind = other.type_name();
                    return Err(HandlerError::Rejected(format!("{kind} does not belong on the inventory queue")));
                }
            }
        }
        let order_ids: Vec<Uuid> =
            envelopes.iter().map(|e| e.message.order_id()).collect::<BTreeSet<_>>().into_iter().collect();
        let reservations = store::lock_reservations(conn, &order_ids).await?;
        let skus: Vec<String> = requests
            .values()
            .flat_map(|requested| requested.keys().cloned())
            .chain(reservations.iter().flat_map(|r| r.lines.iter().map(|l| l.sku.clone())))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let stock = store::lock_products(conn, &skus).await?;
        let mut room = Stockroom::new(reservations, stock);
        let mut replies = Vec::new();
        for envelope in envelopes {
            let answer = match &envelope.message {
                Message::ReserveStock { order_id, .. } => room.reserve(*order_id, &requests[&envelope.message_id])?,
                Message::ConfirmReservation { order_id } => room.confirm(*order_id),
                Message::ReleaseStock { order_id } => room.release(*order_id),
                _ => None,
            };
            replies.extend(answer.map(|answer| envelope.follow_up(answer)));
        }
        room.write(conn).await?;
        outbox::enqueue(conn, &replies).await?;
        Ok(())
    }
}

/// The batch's reservations and stock as the commands leave them, and what
/// must be written.
struct Stockroom {
    reservations: HashMap<Uuid, Reservation>,
    stock: BTreeMap<String, Stock>,
    /// Per SKU: change of on_hand and of reserved.
    deltas: BTreeMap<String, (i32, i32)>,
    new: Vec<Uuid>,
    changed: Vec<Uuid>,
}

impl Stockroom {
    fn new(reservations: Vec<Reservation>, stock: Vec<Stock>) -> Self {
        Stockroom {
            reservations: reservations.into_iter().map(|r| (r.order_id, r)).collect(),
            stock: stock.into_iter().map(|s| (s.sku.clone(), s)).collect(),
            deltas: BTreeMap::new(),
            new: Vec::new(),
            changed: Vec::new(),
        }
    }

    /// Moves stock: `on_hand` and `reserved` change by these amounts per line.
    fn adjust(&mut self, lines: &[PricedLine], on_hand: i32, reserved: i32) {
        for line in lines {
            let delta = self.deltas.entry(line.sku.clone()).or_default();
            delta.0 += on_hand * line.quantity;
            delta.1 += reserved * line.quantity;
            if let Some(stock) = self.stock.get_mut(&line.sku) {
                stock.on_hand += on_hand * line.quantity;
            }
        }
    }

    fn insert(&mut self, reservation: Reservation) {
        self.new.push(reservation.order_id);
        self.reservations.insert(reservation.order_id, reservation);
    }

    fn set_status(&mut self, order_id: Uuid, status: ReservationStatus) {
        if let Some(reservation) = self.reservations.get_mut(&order_id) {
            reservation.status = status;
            if !self.new.contains(&order_id) && !self.changed.contains(&order_id) {
                self.changed.push(order_id);
            }
        }
    }

    fn reserve(&mut self, order_id: Uuid, requested: &BTreeMap<String, i32>) -> Result<Option<Message>, HandlerError> {
        if let Some(existing) = self.reservations.get(&order_id) {
            // A re-sent command gets the answer the first one got.
            return match existing.status {
                ReservationStatus::Reserved | ReservationStatus::Confirmed => {
                    let total_cents = total_cents(&existing.lines)
                        .ok_or_else(|| HandlerError::Transient("stored reservation total overflows".into()))?;
                    tracing::info!(%order_id, status = existing.status.as_str(), "reservation exists; answering again");
                    Ok(Some(Message::StockReserved { order_id, lines: existing.lines.clone(), total_cents }))
                }
                ReservationStatus::Rejected => {
                    let (reason, sku) = existing
                        .rejection
                        .clone()
                        .ok_or_else(|| HandlerError::Transient("rejected reservation without a reason".into()))?;
                    tracing::info!(%order_id, ?reason, sku, "reservation was rejected; answering again");
                    Ok(Some(Message::StockRejected { order_id, reason, sku }))
                }
                ReservationStatus::Released => {
                    tracing::info!(%order_id, "reservation already released (saga compensated first); holding nothing, no reply");
                    Ok(None)
                }
            };
        }
        let stock: Vec<Stock> = requested.keys().filter_map(|sku| self.stock.get(sku).cloned()).collect();
        match decide(requested, &stock).map_err(HandlerError::Rejected)? {
            Decision::Reject { reason, sku } => {
                tracing::info!(%order_id, ?reason, sku, "reservation rejected");
                let rejection = Some((reason, sku.clone()));
                self.insert(Reservation {
                    order_id,
                    status: ReservationStatus::Rejected,
                    lines: Vec::new(),
                    rejection,
                });
                Ok(Some(Message::StockRejected { order_id, reason, sku }))
            }
            Decision::Reserve { lines, total_cents } => {
                self.adjust(&lines, -1, 1);
                tracing::info!(%order_id, lines = lines.len(), total_cents, "stock reserved");
                let status = ReservationStatus::Reserved;
                self.insert(Reservation { order_id, status, lines: lines.clone(), rejection: None });
                Ok(Some(Message::StockReserved { order_id, lines, total_cents }))
            }
        }
    }

    fn confirm(&mut self, order_id: Uuid) -> Option<Message> {
        let Some(reservation) = self.reservations.get(&order_id) else {
            tracing::warn!(%order_id, "confirm for an order with no reservation; ignored");
            return None;
        };
        match reservation.status {
            ReservationStatus::Reserved => {
                let lines = reservation.lines.clone();
                self.adjust(&lines, 0, -1);
                self.set_status(order_id, ReservationStatus::Confirmed);
                tracing::info!(%order_id, "reservation confirmed");
            }
            ReservationStatus::Confirmed => {
                tracing::info!(%order_id, "reservation already confirmed; answering again");
            }
            status => {
                tracing::warn!(%order_id, status = status.as_str(), "confirm for a reservation that is not held; ignored");
                return None;
            }
        }
        Some(Message::ReservationConfirmed { order_id })
    }

    /// Compensation: always succeeds and always answers.
    fn release(&mut self, order_id: Uuid) -> Option<Message> {
        match self.reservations.get(&order_id).map(|r| (r.status, r.lines.clone())) {
            None => {
                // The reserve command has not arrived (or never will): a
                // tombstone, so that a late one holds nothing.
                let status = ReservationStatus::Released;
                self.insert(Reservation { order_id, status, lines: Vec::new(), rejection: None });
                tracing::info!(%order_id, "release before any reservation; tombstone written");
            }
            Some((status, lines)) => {
                match status {
                    ReservationStatus::Reserved => {
                        self.adjust(&lines, 1, -1);
                        tracing::info!(%order_id, "reserved stock returned");
                    }
                    ReservationStatus::Confirmed => {
                        self.adjust(&lines, 1, 0);
                        tracing::info!(%order_id, "sold stock returned");
                    }
                    ReservationStatus::Rejected | ReservationStatus::Released => {
                        tracing::info!(%order_id, status = status.as_str(), "nothing held; release has no stock effect");
                    }
                }
                if status != ReservationStatus::Released {
                    self.set_status(order_id, ReservationStatus::Released);
                }
            }
        }
        Some(Message::StockReleased { order_id })
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        let new: Vec<&Reservation> = self.new.iter().map(|id| &self.reservations[id]).collect();
        store::insert_reservations(conn, &new).await?;
        let changed: Vec<&Reservation> = self.changed.iter().map(|id| &self.reservations[id]).collect();
        store::set_reservation_statuses(conn, &changed).await?;
        let deltas: Vec<(&String, &(i32, i32))> = self.deltas.iter().filter(|(_, d)| **d != (0, 0)).collect();
        let missing: Vec<&String> =
            deltas.iter().map(|(sku, _)| *sku).filter(|sku| !self.stock.contains_key(*sku)).collect();
        if !missing.is_empty() {
            // Products are never deleted, so this should not happen; if it
            // does, the command still completes (a compensation must).
            tracing::error!(?missing, "some reserved products no longer exist; their stock was not adjusted");
        }
        if !deltas.is_empty() {
            let skus: Vec<String> = deltas.iter().map(|(sku, _)| (*sku).clone()).collect();
            let on_hand: Vec<i32> = deltas.iter().map(|(_, d)| d.0).collect();
            let reserved: Vec<i32> = deltas.iter().map(|(_, d)| d.1).collect();
            store::adjust_stock(conn, &skus, &on_hand, &reserved).await?;
        }
        Ok(())
    }
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

    fn priced(sku: &str, quantity: i32) -> PricedLine {
        PricedLine { sku: sku.into(), quantity, unit_price_cents: 10 }
    }

    #[test]
    fn a_batch_moves_stock_as_its_commands_would_one_by_one() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut room = Stockroom::new(Vec::new(), vec![stock("A", 10, 3)]);
        let two = merge_lines(&[line("A", 2)]).unwrap();
        let reserved = room.reserve(a, &two).unwrap();
        assert_eq!(
            reserved,
            Some(Message::StockReserved { order_id: a, lines: vec![priced("A", 2)], total_cents: 20 })
        );
        // The first reservation took the stock the second needed.
        let rejected = room.reserve(b, &two).unwrap();
        assert_eq!(
            rejected,
            Some(Message::StockRejected { order_id: b, reason: RejectReason::OutOfStock, sku: "A".into() })
        );
        assert_eq!(room.confirm(a), Some(Message::ReservationConfirmed { order_id: a }));
        assert_eq!(room.deltas["A"], (-2, 0), "reserved then sold: on_hand -2, reserved back to 0");
        // Compensated after the sale: the stock comes back.
        assert_eq!(room.release(a), Some(Message::StockReleased { order_id: a }));
        assert_eq!(room.deltas["A"], (0, 0));
        // A release before the reserve leaves a tombstone; the late reserve holds nothing.
        room.release(c);
        assert_eq!(room.reserve(c, &two).unwrap(), None);
        assert_eq!(room.new, vec![a, b, c]);
        assert!(room.changed.is_empty(), "rows created in the batch are inserted in their final state");
        assert_eq!(room.reservations[&a].status, ReservationStatus::Released);
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
