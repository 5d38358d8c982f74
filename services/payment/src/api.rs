//! The payment HTTP API: customer accounts (set by admins, read by their
//! owner or an admin) and payment inspection (admin).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use saga_common::auth::{Admin, Caller};
use saga_common::customer::CustomerId;
use saga_common::http::{ApiState, created_or_replaced};
use saga_common::problem::{ApiJson, ApiPath, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::store;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payment-service",
        description = "Customer accounts (balances), charges and refunds."
    ),
    security(("bearer" = [])),
    tags((name = "accounts"), (name = "payments"))
)]
struct ApiDoc;

pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(get_account, put_account))
        .routes(routes!(get_payment))
        .with_state(state)
        .split_for_parts()
}

pub const MAX_BALANCE_CENTS: i64 = 1_000_000_000_000;

/// A customer's balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    #[schema(example = "alice")]
    pub customer_id: String,
    pub balance_cents: i64,
}

impl From<store::Account> for AccountView {
    fn from(a: store::Account) -> Self {
        AccountView { customer_id: a.customer_id, balance_cents: a.balance_cents }
    }
}

/// Creates an account or sets its balance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAccount {
    /// 0..=1 000 000 000 000.
    pub balance_cents: i64,
}

impl PutAccount {
    fn validate(&self, customer_id: &str) -> Result<(), Problem> {
        let mut errors = Vec::new();
        if let Err(e) = CustomerId::parse(customer_id) {
            errors.push(e.to_string());
        }
        if !(0..=MAX_BALANCE_CENTS).contains(&self.balance_cents) {
            errors.push(format!("balance_cents must be 0..={MAX_BALANCE_CENTS}"));
        }
        if errors.is_empty() { Ok(()) } else { Err(Problem::validation(errors.join("; "))) }
    }
}

/// An order's payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub order_id: Uuid,
    pub amount_cents: i64,
    /// `CAPTURED`, `REFUNDED`, `DECLINED`, or `VOIDED` (refunded before
    /// the charge arrived: nothing was or will be charged).
    #[schema(example = "CAPTURED")]
    pub status: String,
}

/// Reads an account (its owner or an admin; anyone else gets 404).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{customer_id}",
    tag = "accounts",
    params(("customer_id" = String, Path, description = "Customer id (a token's sub)")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not yours)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_account(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(customer_id): ApiPath<String>,
) -> Result<Json<AccountView>, Problem> {
    // An id no account can have is not looked up (nor echoed back).
    let customer_id = CustomerId::parse(&customer_id).map_err(|_| Problem::not_found("no such account"))?;
    let not_found = || Problem::not_found(format!("no account {customer_id}"));
    if !caller.may_access(&customer_id) {
        return Err(not_found());
    }
    store::get_account(&state.pool, &customer_id).await?.map(|a| Json(a.into())).ok_or_else(not_found)
}

/// Creates an account (201) or sets its balance (200). Admin only.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{customer_id}",
    tag = "accounts",
    params(("customer_id" = String, Path, description = "Customer id (a token's sub)")),
    request_body = PutAccount,
    responses(
        (status = 200, description = "Balance set", body = AccountView),
        (status = 201, description = "Created", body = AccountView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid account", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_account(
    Admin(caller): Admin,
    State(state): State<ApiState>,
    ApiPath(customer_id): ApiPath<String>,
    ApiJson(body): ApiJson<PutAccount>,
) -> Result<Response, Problem> {
    body.validate(&customer_id)?;
    let (account, created) = store::upsert_account(&state.pool, &customer_id, body.balance_cents).await?;
    tracing::info!(
        customer_id,
        created,
        balance_cents = account.balance_cents,
        by = %caller.customer_id,
        "account balance set"
    );
    Ok(created_or_replaced(created, format!("/api/v1/accounts/{customer_id}"), AccountView::from(account)))
}

/// Reads an order's payment (admin).
#[utoipa::path(
    get,
    path = "/api/v1/payments/{order_id}",
    tag = "payments",
    params(("order_id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No payment for this order", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_payment(
    _admin: Admin,
    State(state): State<ApiState>,
    ApiPath(order_id): ApiPath<Uuid>,
) -> Result<Json<PaymentView>, Problem> {
    store::get_payment(&state.pool, order_id)
        .await?
        .map(|p| {
            Json(PaymentView {
                order_id: p.order_id,
                amount_cents: p.amount_cents,
                status: p.status.as_str().to_owned(),
            })
        })
        .ok_or_else(|| Problem::not_found(format!("no payment for order {order_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_bounds() {
        let put = |balance_cents| PutAccount { balance_cents };
        assert!(put(0).validate("alice").is_ok());
        assert!(put(MAX_BALANCE_CENTS).validate("alice").is_ok());
        assert!(put(-1).validate("alice").is_err());
        assert!(put(MAX_BALANCE_CENTS + 1).validate("alice").is_err());
        assert_eq!(put(-1).validate("").unwrap_err().status, 422);
    }
}
