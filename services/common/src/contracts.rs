//! The messages exchanged by the saga. The orchestrator (order service) sends
//! commands to inventory and payment; they answer with replies. The serde tag
//! is also the AMQP `type` property.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topology::Destination;

/// One line of an order as the customer placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
}

/// One line priced by the inventory service at reservation time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    OutOfStock,
    UnknownSku,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    InsufficientFunds,
    /// The charge arrived after the saga had already voided it (refund first).
    Voided,
}

/// Why an order FAILED: the order API's `failure_reason`, the saga's
/// state and the `order.failed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    OutOfStock,
    UnknownSku,
    InsufficientFunds,
    Timeout,
    // An operator forced compensation (`POST /api/v1/orders/{id}/compensate`).
    CompensatedByOperator,
}

impl FailureReason {
    pub const ALL: [FailureReason; 5] = [
        FailureReason::OutOfStock,
        FailureReason::UnknownSku,
        FailureReason::InsufficientFunds,
        FailureReason::Timeout,
        FailureReason::CompensatedByOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::OutOfStock => "out_of_stock",
            FailureReason::UnknownSku => "unknown_sku",
            FailureReason::InsufficientFunds => "insufficient_funds",
            FailureReason::Timeout => "timeout",
            FailureReason::CompensatedByOperator => "compensated_by_operator",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Message {
    // Commands to inventory.
    #[serde(rename = "inventory.reserve")]
    ReserveStock { order_id: Uuid, items: Vec<OrderLine> },
    #[serde(rename = "inventory.confirm")]
    ConfirmReservation { order_id: Uuid },
    /// Compensation: undo a reservation, or return the stock of a confirmed one.
    #[serde(rename = "inventory.release")]
    ReleaseStock { order_id: Uuid },

    // Commands to payment.
    #[serde(rename = "payment.charge")]
    ChargePayment { order_id: Uuid, customer_id: String, amount_cents: i64 },
    /// Compensation: refund a capture, or void a charge that has not arrived yet.
    #[serde(rename = "payment.refund")]
    RefundPayment { order_id: Uuid },

    // Replies to the orchestrator.
    #[serde(rename = "inventory.reserved")]
    StockReserved { order_id: Uuid, lines: Vec<PricedLine>, total_cents: i64 },
    #[serde(rename = "inventory.rejected")]
    StockRejected { order_id: Uuid, reason: RejectReason, sku: String },
    #[serde(rename = "inventory.confirmed")]
    ReservationConfirmed { order_id: Uuid },
    #[serde(rename = "inventory.released")]
    StockReleased { order_id: Uuid },
    #[serde(rename = "payment.captured")]
    PaymentCaptured { order_id: Uuid, amount_cents: i64 },
    #[serde(rename = "payment.declined")]
    PaymentDeclined { order_id: Uuid, reason: DeclineReason },
    #[serde(rename = "payment.refunded")]
    PaymentRefunded { order_id: Uuid },
}

impl crate::envelope::Payload for Message {
    fn type_name(&self) -> &'static str {
        Message::type_name(self)
    }

    fn order_id(&self) -> Uuid {
        Message::order_id(self)
    }
}

impl Message {
    /// The AMQP `type` property: the same string as the serde tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::ReserveStock { .. } => "inventory.reserve",
            Message::ConfirmReservation { .. } => "inventory.confirm",
            Message::ReleaseStock { .. } => "inventory.release",
            Message::ChargePayment { .. } => "payment.charge",
            Message::RefundPayment { .. } => "payment.refund",
            Message::StockReserved { .. } => "inventory.reserved",
            Message::StockRejected { .. } => "inventory.rejected",
            Message::ReservationConfirmed { .. } => "inventory.confirmed",
            Message::StockReleased { .. } => "inventory.released",
            Message::PaymentCaptured { .. } => "payment.captured",
            Message::PaymentDeclined { .. } => "payment.declined",
            Message::PaymentRefunded { .. } => "payment.refunded",
        }
    }

    /// Which service's queue the message goes to.
    pub fn destination(&self) -> Destination {
        match self {
            Message::ReserveStock { .. } | Message::ConfirmReservation { .. } | Message::ReleaseStock { .. } => {
                Destination::Inventory
            }
            Message::ChargePayment { .. } | Message::RefundPayment { .. } => Destination::Payment,
            _ => Destination::Order,
        }
    }

    pub fn order_id(&self) -> Uuid {
        match self {
            Message::ReserveStock { order_id, .. }
            | Message::ConfirmReservation { order_id }
            | Message::ReleaseStock { order_id }
            | Message::ChargePayment { order_id, .. }
            | Message::RefundPayment { order_id }
            | Message::StockReserved { order_id, .. }
            | Message::StockRejected { order_id, .. }
            | Message::ReservationConfirmed { order_id }
            | Message::StockReleased { order_id }
            | Message::PaymentCaptured { order_id, .. }
            | Message::PaymentDeclined { order_id, .. }
            | Message::PaymentRefunded { order_id } => *order_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reason_names_match_serde() {
        for reason in FailureReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn type_name_matches_serde_tag() {
        let id = Uuid::nil();
        let all = [
            Message::ReserveStock { order_id: id, items: vec![] },
            Message::ConfirmReservation { order_id: id },
            Message::ReleaseStock { order_id: id },
            Message::ChargePayment { order_id: id, customer_id: "c".into(), amount_cents: 1 },
            Message::RefundPayment { order_id: id },
            Message::StockReserved { order_id: id, lines: vec![], total_cents: 0 },
            Message::StockRejected { order_id: id, reason: RejectReason::OutOfStock, sku: "s".into() },
            Message::ReservationConfirmed { order_id: id },
            Message::StockReleased { order_id: id },
            Message::PaymentCaptured { order_id: id, amount_cents: 1 },
            Message::PaymentDeclined { order_id: id, reason: DeclineReason::InsufficientFunds },
            Message::PaymentRefunded { order_id: id },
        ];
        for message in all {
            let json = serde_json::to_value(&message).unwrap();
            assert_eq!(json["type"], message.type_name());
            assert_eq!(serde_json::from_value::<Message>(json).unwrap(), message);
        }
    }
}
