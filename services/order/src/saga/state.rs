pub use saga_common::contracts::FailureReason;
use serde::{Deserialize, Serialize};

/// Where a saga is; stored as JSON on the order row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SagaState {
    /// Waiting for inventory to reserve and price the lines.
    Reserving,
    /// Waiting for payment to capture the total.
    Charging,
    /// Waiting for inventory to confirm the reservation.
    Confirming,
    Completed,
    /// Undoing what was done; finishes in `outcome` once nothing is awaited.
    Compensating {
        outcome: Outcome,
        awaiting_release: bool,
        awaiting_refund: bool,
        /// How often the compensations were sent again for lack of a reply.
        #[serde(default)]
        resends: u32,
    },
    Failed {
        reason: FailureReason,
    },
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    Failed(FailureReason),
    Cancelled,
}

impl Outcome {
    pub fn terminal_state(self) -> SagaState {
        match self {
            Outcome::Failed(reason) => SagaState::Failed { reason },
            Outcome::Cancelled => SagaState::Cancelled,
        }
    }
}

/// The order status the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Completed,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] =
        [OrderStatus::Pending, OrderStatus::Completed, OrderStatus::Failed, OrderStatus::Cancelled];
    pub const ALL_STR: [&str; 4] = ["PENDING", "COMPLETED", "FAILED", "CANCELLED"];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

impl SagaState {
    pub fn status(&self) -> OrderStatus {
        match self {
            SagaState::Completed => OrderStatus::Completed,
            SagaState::Failed { .. } => OrderStatus::Failed,
            SagaState::Cancelled => OrderStatus::Cancelled,
            _ => OrderStatus::Pending,
        }
    }

    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            SagaState::Failed { reason } => Some(*reason),
            _ => None,
        }
    }

    /// Whether a reply is awaited (so the step can time out).
    pub fn awaits_reply(&self) -> bool {
        matches!(
            self,
            SagaState::Reserving | SagaState::Charging | SagaState::Confirming | SagaState::Compensating { .. }
        )
    }

    /// The step timeout is multiplied by this: compensations that keep
    /// getting no reply (a participant down or far behind) are re-sent with
    /// exponential backoff instead of piling more work on it.
    pub fn timeout_factor(&self) -> u32 {
        match self {
            SagaState::Compensating { resends, .. } => 1 << (*resends).min(5),
            _ => 1,
        }
    }

    /// Short name for the timeline.
    pub fn name(&self) -> &'static str {
        match self {
            SagaState::Reserving => "reserving",
            SagaState::Charging => "charging",
            SagaState::Confirming => "confirming",
            SagaState::Completed => "completed",
            SagaState::Compensating { .. } => "compensating",
            SagaState::Failed { .. } => "failed",
            SagaState::Cancelled => "cancelled",
        }
    }
}
