//! The inventory HTTP API: the product catalogue (reads for any caller with
//! a valid token, writes for admins) and reservation inspection (admin).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use saga_common::auth::{Admin, Caller};
use saga_common::http::{ApiState, created_or_replaced};
use saga_common::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType,
    integer,
};
use saga_common::problem::{ApiJson, ApiPath, Problem};
use saga_common::sku::Sku;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
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

fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_products))
        .routes(routes!(get_product, put_product))
        .routes(routes!(get_reservation))
}

pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    routes().with_state(state).split_for_parts()
}

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;
pub const MAX_ON_HAND: i64 = 1_000_000_000;

/// A product and its stock.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"sku": "SKU-1", "name": "Widget", "unit_price_cents": 1500, "on_hand": 100, "reserved": 0}))]
pub struct ProductView {
    #[schema(value_type = Sku)]
    pub sku: String,
    pub name: String,
    #[schema(schema_with = price_schema)]
    pub unit_price_cents: i64,
    /// Units free to sell.
    #[schema(minimum = 0)]
    pub on_hand: i64,
    /// Units held by running sagas.
    #[schema(minimum = 0)]
    pub reserved: i64,
}

fn price_schema() -> Schema {
    integer(0, MAX_PRICE_CENTS)
}

fn on_hand_schema() -> Schema {
    integer(0, MAX_ON_HAND)
}

fn name_schema() -> Schema {
    saga_common::text::schema(MAX_NAME_LEN, "Widget")
}

fn reservation_status_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(store::ReservationStatus::ALL.map(store::ReservationStatus::as_str)))
        .into()
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
#[schema(example = json!({"name": "Widget", "unit_price_cents": 1500, "on_hand": 100}))]
pub struct PutProduct {
    /// 1-200 characters, not blank, no control characters.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// 0..=1 000 000 000.
    #[serde(deserialize_with = "saga_common::openapi::deserialize_integer")]
    #[schema(schema_with = price_schema)]
    pub unit_price_cents: i64,
    /// Units free to sell, 0..=1 000 000 000.
    #[serde(deserialize_with = "saga_common::openapi::deserialize_integer")]
    #[schema(schema_with = on_hand_schema)]
    pub on_hand: i64,
}

impl PutProduct {
    fn validate(&self, sku: &str) -> Result<(), Problem> {
        let mut errors = Vec::new();
        if let Err(e) = validate_sku(sku) {
            errors.push(e);
        }
        if let Err(e) = saga_common::text::check("name", &self.name, MAX_NAME_LEN) {
            errors.push(e);
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

/// A SKU is 1-64 characters of `A-Z a-z 0-9 . _ -` (`saga_common::sku`).
pub fn validate_sku(sku: &str) -> Result<(), String> {
    Sku::parse(sku).map(|_| ()).map_err(|e| e.to_string())
}

/// One priced line of a reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationLine {
    #[schema(value_type = Sku)]
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
    #[schema(schema_with = reservation_status_schema)]
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
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every product, ordered by SKU", body = ProductList),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
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
    security(("bearer" = [])),
    params(("sku" = Sku, Path, description = "Product SKU")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
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
    security(("bearer" = [])),
    params(("sku" = Sku, Path, description = "Product SKU")),
    request_body = PutProduct,
    responses(
        (status = 200, description = "Replaced", body = ProductView,
            links(
                ("GetProduct" = (operation_id = "get_product", parameters(("sku" = "$response.body#/sku")))),
                ("ReplaceProduct" = (operation_id = "put_product", parameters(("sku" = "$response.body#/sku")))),
            )),
        (status = 201, description = "Created", body = ProductView,
            headers(("Location" = String, description = "/api/v1/products/{sku}")),
            links(
                ("GetProduct" = (operation_id = "get_product", parameters(("sku" = "$response.body#/sku")))),
                ("ReplaceProduct" = (operation_id = "put_product", parameters(("sku" = "$response.body#/sku")))),
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
    security(("bearer" = [])),
    params(("order_id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The reservation", body = ReservationView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
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
        let put = &doc["components"]["schemas"]["PutProduct"]["properties"];
        assert_eq!(put["unit_price_cents"]["maximum"], MAX_PRICE_CENTS);
        assert_eq!(put["on_hand"]["maximum"], MAX_ON_HAND);
        assert_eq!(
            (put["name"]["maxLength"].clone(), put["name"]["pattern"].clone()),
            (MAX_NAME_LEN.into(), saga_common::text::PATTERN.into())
        );
        let path = &doc["paths"]["/api/v1/products/{sku}"]["put"]["parameters"][0]["schema"]["$ref"];
        assert_eq!(path, "#/components/schemas/Sku");
    }

    fn body(name: &str, price: i64, on_hand: i64) -> PutProduct {
        PutProduct { name: name.into(), unit_price_cents: price, on_hand }
    }

    #[test]
    fn whole_numbers_written_with_a_fraction_part_are_integers() {
        let put: PutProduct = serde_json::from_str(r#"{"name":"W","unit_price_cents":250.0,"on_hand":1e3}"#).unwrap();
        assert_eq!((put.unit_price_cents, put.on_hand), (250, 1000));
        assert!(serde_json::from_str::<PutProduct>(r#"{"name":"W","unit_price_cents":1,"on_hand":0.5}"#).is_err());
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
