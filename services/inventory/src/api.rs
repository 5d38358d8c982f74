//! The inventory HTTP API: the product catalogue (reads for any caller with
//! a valid token, writes for admins) and reservation inspection (admin).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use saga_common::auth::{Admin, Caller};
use saga_common::http::{ApiState, created_or_replaced};
use saga_common::problem::{ApiJson, ApiPath, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::store::{self, Reservation};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inventory-service",
        description = "Product catalogue, stock reservation and release."
    ),
    security(("bearer" = [])),
    tags((name = "products"), (name = "reservations"))
)]
struct ApiDoc;

pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_products))
        .routes(routes!(get_product, put_product))
        .routes(routes!(get_reservation))
        .with_state(state)
        .split_for_parts()
}

pub const MAX_SKU_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;
pub const MAX_ON_HAND: i64 = 1_000_000_000;

/// A product and its stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    #[schema(example = "SKU-1")]
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    /// Units free to sell.
    pub on_hand: i64,
    /// Units held by running sagas.
    pub reserved: i64,
}

impl From<store::Product> for ProductView {
    fn from(p: store::Product) -> Self {
        ProductView {
            sku: p.sku,
            name: p.name,
            unit_price_cents: p.unit_price_cents,
            on_hand: p.on_hand.into(),
            reserved: p.reserved.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    /// Every product, ordered by SKU.
    pub items: Vec<ProductView>,
}

/// Creates or replaces a product. `reserved` is not settable: it is the stock
/// held by running sagas.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProduct {
    /// 1-200 characters.
    pub name: String,
    /// 0..=1 000 000 000.
    pub unit_price_cents: i64,
    /// Units free to sell, 0..=1 000 000 000.
    pub on_hand: i64,
}

impl PutProduct {
    fn validate(&self, sku: &str) -> Result<(), Problem> {
        let mut errors = Vec::new();
        if let Err(e) = validate_sku(sku) {
            errors.push(e);
        }
        let name_len = self.name.chars().count();
        if !(1..=MAX_NAME_LEN).contains(&name_len) || self.name.trim().is_empty() {
            errors.push(format!("name must be 1-{MAX_NAME_LEN} characters and not blank"));
        }
        if self.name.chars().any(char::is_control) {
            errors.push("name must not contain control characters".into());
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.unit_price_cents) {
            errors.push(format!("unit_price_cents must be 0..={MAX_PRICE_CENTS}"));
        }
        if !(0..=MAX_ON_HAND).contains(&self.on_hand) {
            errors.push(format!("on_hand must be 0..={MAX_ON_HAND}"));
        }
        if errors.is_empty() { Ok(()) } else { Err(Problem::validation(errors.join("; "))) }
    }
}

/// A SKU is 1-64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_sku(sku: &str) -> Result<(), String> {
    let valid = (1..=MAX_SKU_LEN).contains(&sku.len())
        && sku.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!("sku must be 1-{MAX_SKU_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"))
    }
}

/// One priced line of a reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationLine {
    pub sku: String,
    pub quantity: i32,
    /// The catalogue price when the stock was reserved.
    pub unit_price_cents: i64,
}

/// An order's reservation, for inspection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    pub order_id: Uuid,
    /// `RESERVED`, `CONFIRMED`, `RELEASED` or `REJECTED`.
    #[schema(example = "RESERVED")]
    pub status: String,
    pub lines: Vec<ReservationLine>,
    /// Why it was rejected (`out_of_stock`, `unknown_sku`), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<String>,
    /// The SKU that caused the rejection, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_sku: Option<String>,
}

impl From<Reservation> for ReservationView {
    fn from(r: Reservation) -> Self {
        let (reject_reason, reject_sku) = match r.rejection {
            Some((reason, sku)) => (Some(store::reject_reason_str(reason).to_owned()), Some(sku)),
            None => (None, None),
        };
        ReservationView {
            order_id: r.order_id,
            status: r.status.as_str().to_owned(),
            lines: r
                .lines
                .into_iter()
                .map(|l| ReservationLine { sku: l.sku, quantity: l.quantity, unit_price_cents: l.unit_price_cents })
                .collect(),
            reject_reason,
            reject_sku,
        }
    }
}

/// Lists the catalogue.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    responses(
        (status = 200, description = "Every product, ordered by SKU", body = ProductList),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_products(_caller: Caller, State(state): State<ApiState>) -> Result<Json<ProductList>, Problem> {
    let items = store::list_products(&state.pool).await?.into_iter().map(ProductView::from).collect();
    Ok(Json(ProductList { items }))
}

/// Reads one product.
#[utoipa::path(
    get,
    path = "/api/v1/products/{sku}",
    tag = "products",
    params(("sku" = String, Path, description = "Product SKU")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_product(
    _caller: Caller,
    State(state): State<ApiState>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<ProductView>, Problem> {
    store::get_product(&state.pool, &sku)
        .await?
        .map(|p| Json(p.into()))
        .ok_or_else(|| Problem::not_found(format!("no product {sku}")))
}

/// Creates a product (201) or replaces its name, price and free stock (200).
#[utoipa::path(
    put,
    path = "/api/v1/products/{sku}",
    tag = "products",
    params(("sku" = String, Path, description = "Product SKU: 1-64 of A-Z a-z 0-9 . _ -")),
    request_body = PutProduct,
    responses(
        (status = 200, description = "Replaced", body = ProductView),
        (status = 201, description = "Created", body = ProductView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid product", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_product(
    Admin(caller): Admin,
    State(state): State<ApiState>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<PutProduct>,
) -> Result<Response, Problem> {
    body.validate(&sku)?;
    // Validated: 0..=MAX_ON_HAND, which fits the INTEGER column.
    let on_hand = i32::try_from(body.on_hand).map_err(|_| Problem::validation("on_hand is out of range"))?;
    let (product, created) =
        store::upsert_product(&state.pool, &sku, &body.name, body.unit_price_cents, on_hand).await?;
    tracing::info!(
        sku,
        created,
        on_hand = product.on_hand,
        unit_price_cents = product.unit_price_cents,
        by = %caller.customer_id,
        "product stored"
    );
    Ok(created_or_replaced(created, format!("/api/v1/products/{sku}"), ProductView::from(product)))
}

/// Reads an order's reservation (admin).
#[utoipa::path(
    get,
    path = "/api/v1/reservations/{order_id}",
    tag = "reservations",
    params(("order_id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The reservation", body = ReservationView),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No reservation for this order", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_reservation(
    _admin: Admin,
    State(state): State<ApiState>,
    ApiPath(order_id): ApiPath<Uuid>,
) -> Result<Json<ReservationView>, Problem> {
    store::get_reservation(&state.pool, order_id)
        .await?
        .map(|r| Json(r.into()))
        .ok_or_else(|| Problem::not_found(format!("no reservation for order {order_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, price: i64, on_hand: i64) -> PutProduct {
        PutProduct { name: name.into(), unit_price_cents: price, on_hand }
    }

    #[test]
    fn sku_rules() {
        assert!(validate_sku("SKU-1").is_ok());
        assert!(validate_sku("a.b_c-D9").is_ok());
        assert!(validate_sku(&"x".repeat(64)).is_ok());
        assert!(validate_sku("").is_err());
        assert!(validate_sku(&"x".repeat(65)).is_err());
        assert!(validate_sku("has space").is_err());
        assert!(validate_sku("slash/").is_err());
        assert!(validate_sku("é").is_err());
    }

    #[test]
    fn product_bounds() {
        assert!(body("Widget", 0, 0).validate("W").is_ok());
        assert!(body("Widget", MAX_PRICE_CENTS, MAX_ON_HAND).validate("W").is_ok());
        assert!(body(&"n".repeat(200), 1, 1).validate("W").is_ok());
        assert!(body("", 1, 1).validate("W").is_err());
        assert!(body("   ", 1, 1).validate("W").is_err());
        assert!(body(&"n".repeat(201), 1, 1).validate("W").is_err());
        assert!(body("Widget", -1, 1).validate("W").is_err());
        assert!(body("Widget", MAX_PRICE_CENTS + 1, 1).validate("W").is_err());
        assert!(body("Widget", 1, -1).validate("W").is_err());
        assert!(body("Widget", 1, MAX_ON_HAND + 1).validate("W").is_err());
        assert!(body("Widget", 1, 1).validate("bad sku").is_err());
        let problem = body("", -1, 1).validate("W").unwrap_err();
        assert_eq!(problem.status, 422);
        assert!(problem.detail.contains("name") && problem.detail.contains("unit_price_cents"));
    }
}
