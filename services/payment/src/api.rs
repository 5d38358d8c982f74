//! The payment HTTP API: customer accounts (set by admins, read by their
//! owner or an admin) and payment inspection (admin).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use saga_common::auth::{Admin, Caller};
use saga_common::customer::CustomerId;
use saga_common::http::{ApiState, created_or_replaced};
use saga_common::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType,
    integer,
};
use saga_common::page::{self, PageLimit};
use saga_common::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, OpenApi, ToSchema};
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

fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_accounts))
        .routes(routes!(get_account, put_account))
        .routes(routes!(customer_payments))
        .routes(routes!(get_payment))
}

pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    routes().with_state(state).split_for_parts()
}

pub const MAX_BALANCE_CENTS: i64 = 1_000_000_000_000;

/// A customer's balance.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"customer_id": "alice", "balance_cents": 1000000}))]
pub struct AccountView {
    #[schema(value_type = CustomerId)]
    pub customer_id: String,
    /// Never below zero: a charge that would overdraw it is declined.
    #[schema(minimum = 0)]
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
#[schema(example = json!({"balance_cents": 1000000}))]
pub struct PutAccount {
    /// 0..=1 000 000 000 000.
    #[serde(deserialize_with = "saga_common::openapi::deserialize_integer")]
    #[schema(schema_with = balance_schema)]
    pub balance_cents: i64,
}

fn balance_schema() -> Schema {
    integer(0, MAX_BALANCE_CENTS)
}

fn payment_status_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(store::PaymentStatus::ALL.map(store::PaymentStatus::as_str)))
        .into()
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
    #[schema(schema_with = payment_status_schema)]
    pub status: String,
}

/// Reads an account (its owner or an admin; anyone else gets 404).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{customer_id}",
    tag = "accounts",
    security(("bearer" = [])),
    params(("customer_id" = CustomerId, Path, description = "Customer id (a token's sub)")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
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
    security(("bearer" = [])),
    params(("customer_id" = CustomerId, Path, description = "Customer id (a token's sub)")),
    request_body = PutAccount,
    responses(
        (status = 200, description = "Balance set", body = AccountView,
            links(
                ("GetAccount" = (operation_id = "get_account",
                    parameters(("customer_id" = "$response.body#/customer_id")))),
                ("SetBalance" = (operation_id = "put_account",
                    parameters(("customer_id" = "$response.body#/customer_id")))),
            )),
        (status = 201, description = "Created", body = AccountView,
            headers(("Location" = String, description = "/api/v1/accounts/{customer_id}")),
            links(
                ("GetAccount" = (operation_id = "get_account",
                    parameters(("customer_id" = "$response.body#/customer_id")))),
                ("SetBalance" = (operation_id = "put_account",
                    parameters(("customer_id" = "$response.body#/customer_id")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
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
    security(("bearer" = [])),
    params(("order_id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
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

/// `limit` of the account and payment lists.
pub const PAGE: PageLimit = PageLimit::new(50, 200);

fn page_limit_schema() -> Schema {
    PAGE.schema()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountsQuery {
    /// Accounts per page, 1 to 200 (default 50).
    #[param(schema_with = page_limit_schema)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<CustomerId>)]
    pub cursor: Option<String>,
}

/// A page of accounts, in customer id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPage {
    pub items: Vec<AccountView>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(value_type = Option<CustomerId>, required = true)]
    pub next_cursor: Option<String>,
}

/// Lists the accounts, in customer id order (admin).
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    security(("bearer" = [])),
    params(AccountsQuery),
    responses(
        (status = 200, description = "A page of accounts", body = AccountPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
async fn list_accounts(
    _admin: Admin,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AccountsQuery>,
) -> Result<Json<AccountPage>, Problem> {
    let limit = PAGE.of(query.limit)?;
    let after = page::cursor(query.cursor.as_deref(), CustomerId::parse)?;
    let rows = store::list_accounts(&state.pool, after.as_ref().map(CustomerId::as_str), limit + 1).await?;
    let (accounts, next_cursor) = page::cut(rows, limit, |a| a.customer_id.clone());
    Ok(Json(AccountPage { items: accounts.into_iter().map(AccountView::from).collect(), next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// Payments per page, 1 to 200 (default 50).
    #[param(schema_with = page_limit_schema)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

/// One of a customer's payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentEntryView {
    pub order_id: Uuid,
    pub amount_cents: i64,
    #[schema(schema_with = payment_status_schema)]
    pub status: String,
    /// Why it was declined (`insufficient_funds`), if it was.
    #[schema(required = true)]
    pub reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A page of a customer's payments, newest order first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    pub items: Vec<PaymentEntryView>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(value_type = Option<Uuid>, required = true)]
    pub next_cursor: Option<String>,
}

/// A customer's payments, newest order first (admin).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{customer_id}/payments",
    tag = "payments",
    security(("bearer" = [])),
    params(("customer_id" = CustomerId, Path, description = "Customer id (a token's sub)"), PaymentsQuery),
    responses(
        (status = 200, description = "A page of payments (empty if the customer has none)", body = PaymentPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn customer_payments(
    _admin: Admin,
    State(state): State<ApiState>,
    ApiPath(customer_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PaymentsQuery>,
) -> Result<Json<PaymentPage>, Problem> {
    let limit = PAGE.of(query.limit)?;
    // An id no account can have has no payments to list (as GET /api/v1/accounts/{customer_id}).
    CustomerId::parse(&customer_id).map_err(|_| Problem::not_found("no such account"))?;
    let before = page::cursor(query.cursor.as_deref(), Uuid::parse_str)?;
    let rows = store::customer_payments(&state.pool, &customer_id, before, limit + 1).await?;
    let (payments, next_cursor) = page::cut(rows, limit, |p| p.order_id.to_string());
    let items = payments
        .into_iter()
        .map(|p| PaymentEntryView {
            order_id: p.order_id,
            amount_cents: p.amount_cents,
            status: p.status,
            reason: p.reason,
            created_at: p.created_at,
            updated_at: p.updated_at,
        })
        .collect();
    Ok(Json(PaymentPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> utoipa::openapi::OpenApi {
        let mut openapi = routes().into_openapi();
        saga_common::openapi::complete(&mut openapi);
        openapi
    }

    #[test]
    fn the_document_follows_the_shared_rules_and_states_the_limits() {
        let openapi = document();
        let errors = saga_common::openapi::check(&openapi);
        assert!(errors.is_empty(), "{errors:#?}");
        let doc = serde_json::to_value(openapi).unwrap();
        let balance = &doc["components"]["schemas"]["PutAccount"]["properties"]["balance_cents"];
        assert_eq!((balance["minimum"].clone(), balance["maximum"].clone()), (0.into(), MAX_BALANCE_CENTS.into()));
        let path = &doc["paths"]["/api/v1/accounts/{customer_id}"]["get"]["parameters"][0]["schema"]["$ref"];
        assert_eq!(path, "#/components/schemas/CustomerId");
    }

    #[test]
    fn a_balance_written_as_a_whole_number_is_an_integer() {
        assert_eq!(serde_json::from_str::<PutAccount>(r#"{"balance_cents":500.0}"#).unwrap().balance_cents, 500);
        assert!(serde_json::from_str::<PutAccount>(r#"{"balance_cents":500.5}"#).is_err());
    }

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
