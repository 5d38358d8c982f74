//! The notification HTTP API: endpoints (webhook or e-mail) of a customer,
//! or admin endpoints that receive every customer's events; their secrets,
//! deliveries and attempts. A customer sees only their own; anyone else's
//! is 404.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use saga_common::auth::{Auth, Caller};
use saga_common::events::OrderEventType;
use saga_common::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType,
};
use saga_common::page::{self, PageLimit};
use saga_common::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::email;
use crate::ssrf::{self, AllowList};
use crate::store::{self, EMAIL, WEBHOOK};
use saga_common::webhook_signature as signing;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notification-service",
        description = "Webhooks (Standard Webhooks signatures) and e-mail telling customers what became of their orders."
    ),
    security(("bearer" = [])),
    tags((name = "endpoints"), (name = "deliveries"))
)]
struct ApiDoc;

/// What the API needs besides the database.
#[derive(Clone)]
pub struct NotificationApi {
    pub pool: PgPool,
    pub auth: Auth,
    pub allow: AllowList,
    pub email_enabled: bool,
    pub max_endpoints_per_customer: i64,
    pub rotation_overlap: Duration,
}

#[derive(Clone)]
pub struct ApiState(pub Arc<NotificationApi>);

impl FromRef<ApiState> for Auth {
    fn from_ref(state: &ApiState) -> Auth {
        state.0.auth.clone()
    }
}

fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_attempts))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(redeliver))
}

pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = routes().with_state(state).split_for_parts();
    close_new_endpoint_variants(&mut openapi);
    (router, openapi)
}

/// `CreateEndpoint`'s two shapes refuse unknown fields (`deny_unknown_fields`),
/// which utoipa does not say for an enum's variants: the document says it here.
fn close_new_endpoint_variants(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    let schemas = openapi.components.as_mut().map(|c| &mut c.schemas);
    if let Some(RefOr::T(Schema::OneOf(one_of))) = schemas.and_then(|s| s.get_mut("CreateEndpoint")) {
        for item in &mut one_of.items {
            if let RefOr::T(Schema::Object(object)) = item {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

pub const MAX_DESCRIPTION: usize = 200;

/// Each endpoint's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// An HTTP(S) URL, called with a signed POST.
    Webhook,
    /// An e-mail address.
    Email,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => WEBHOOK,
            Channel::Email => EMAIL,
        }
    }
}

/// Registers an endpoint: `channel` says which, a webhook (with `url`) or
/// an e-mail address (with `address`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "channel", rename_all = "lowercase", deny_unknown_fields)]
#[schema(example = json!({"channel": "webhook", "url": "https://example.com/hooks/orders", "event_types": ["order.completed"]}))]
pub enum CreateEndpoint {
    /// A signed POST to `url`.
    Webhook {
        /// The webhook's URL (http or https, a public address; at most 2048 characters).
        #[schema(max_length = 2048)]
        url: String,
        /// Free text: 1-200 characters, not blank, no control characters.
        #[schema(schema_with = description_schema)]
        description: Option<String>,
        /// The events it receives (default: all three).
        #[schema(value_type = Option<Vec<OrderEventType>>, min_items = 1)]
        event_types: Option<Vec<OrderEventType>>,
        /// `true`: every customer's events (admins only).
        #[serde(default)]
        all_customers: bool,
    },
    /// An e-mail to `address`.
    Email {
        /// The e-mail address (at most 254 characters).
        #[schema(max_length = 254)]
        address: String,
        /// Free text: 1-200 characters, not blank, no control characters.
        #[schema(schema_with = description_schema)]
        description: Option<String>,
        /// The events it receives (default: all three).
        #[schema(value_type = Option<Vec<OrderEventType>>, min_items = 1)]
        event_types: Option<Vec<OrderEventType>>,
        /// `true`: every customer's events (admins only).
        #[serde(default)]
        all_customers: bool,
    },
}

/// What both kinds of new endpoint say, the target apart.
struct NewEndpointRequest {
    channel: Channel,
    url: Option<String>,
    address: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<OrderEventType>>,
    all_customers: bool,
}

impl From<CreateEndpoint> for NewEndpointRequest {
    fn from(body: CreateEndpoint) -> Self {
        match body {
            CreateEndpoint::Webhook { url, description, event_types, all_customers } => NewEndpointRequest {
                channel: Channel::Webhook,
                url: Some(url),
                address: None,
                description,
                event_types,
                all_customers,
            },
            CreateEndpoint::Email { address, description, event_types, all_customers } => NewEndpointRequest {
                channel: Channel::Email,
                url: None,
                address: Some(address),
                description,
                event_types,
                all_customers,
            },
        }
    }
}

/// Changes an endpoint; absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true}))]
pub struct UpdateEndpoint {
    /// A webhook's new URL.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// An e-mail endpoint's new address.
    #[schema(max_length = 254)]
    pub address: Option<String>,
    /// Free text: 1-200 characters, not blank, no control characters.
    #[schema(schema_with = description_schema)]
    pub description: Option<String>,
    #[schema(value_type = Option<Vec<OrderEventType>>, min_items = 1)]
    pub event_types: Option<Vec<OrderEventType>>,
    /// `true` re-enables a disabled endpoint (its failure streak forgotten).
    pub enabled: Option<bool>,
}

/// An endpoint. `secret` only in the answers that create or rotate it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: Uuid,
    pub owner: String,
    pub all_customers: bool,
    pub channel: Channel,
    /// The URL (webhook) or the address (e-mail).
    pub target: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled (sustained failure, or by its owner).
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    #[schema(required = true)]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub consecutive_failures: i32,
    /// Since when it has been failing (its first failed attempt after the last success).
    #[schema(required = true)]
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs (after a rotation).
    #[schema(required = true)]
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The signing secret (`whsec_...`), in the answers to create and rotate only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    fn of(e: store::Endpoint, with_secret: bool) -> EndpointView {
        EndpointView {
            id: e.id,
            owner: e.owner,
            all_customers: e.all_customers,
            channel: if e.channel == EMAIL { Channel::Email } else { Channel::Webhook },
            target: e.target,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at,
            consecutive_failures: e.consecutive_failures,
            failing_since: e.failing_since,
            previous_secret_until: e.previous_secret_until,
            created_at: e.created_at,
            updated_at: e.updated_at,
            secret: if with_secret { e.secret } else { None },
        }
    }
}

/// 422 `destination-refused`: a URL this platform will not send to —
/// malformed, not http(s), with userinfo or a fragment, a host that does
/// not resolve or resolves into a blocked range (SSRF) — or e-mail without
/// an SMTP server. What no schema can say, so it has a problem type of its own.
fn destination_refused(detail: impl Into<String>) -> Problem {
    Problem::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "destination-refused", detail)
}

fn event_types(types: Option<Vec<OrderEventType>>) -> Result<Option<Vec<String>>, Problem> {
    match types {
        None => Ok(None),
        Some(types) if types.is_empty() => Err(Problem::validation("event_types must name at least one event type")),
        // In one order (completed, failed, cancelled), each once.
        Some(types) => Ok(Some(
            OrderEventType::ALL.into_iter().filter(|t| types.contains(t)).map(|t| t.as_str().to_owned()).collect(),
        )),
    }
}

fn description(value: Option<&str>) -> Result<(), Problem> {
    match value {
        Some(d) => saga_common::text::check("description", d, MAX_DESCRIPTION).map_err(Problem::validation),
        None => Ok(()),
    }
}

/// `saga_common::text`'s rule, or null.
fn description_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    let mut schema = saga_common::text::schema(MAX_DESCRIPTION, "Order updates for the shop");
    if let Schema::Object(object) = &mut schema {
        object.schema_type = SchemaType::Array(vec![Type::String, Type::Null]);
    }
    schema
}

async fn check_target(
    api: &NotificationApi,
    channel: Channel,
    url: Option<&str>,
    address: Option<&str>,
) -> Result<String, Problem> {
    match (channel, url, address) {
        (Channel::Webhook, Some(url), None) => {
            ssrf::vet(url, &api.allow).await.map_err(|refused| destination_refused(refused.to_string()))?;
            Ok(url.to_owned())
        }
        (Channel::Email, None, Some(address)) => {
            if !api.email_enabled {
                return Err(destination_refused(
                    "e-mail endpoints are not available: this platform has no SMTP server (SMTP_URL)",
                ));
            }
            email::check_address(address).map_err(Problem::validation)?;
            Ok(address.to_owned())
        }
        (Channel::Webhook, _, _) => Err(Problem::validation("a webhook endpoint takes a url and no address")),
        (Channel::Email, _, _) => Err(Problem::validation("an e-mail endpoint takes an address and no url")),
    }
}

/// Reads an endpoint the caller may see (404 otherwise).
async fn visible(api: &NotificationApi, caller: &Caller, id: Uuid) -> Result<store::Endpoint, Problem> {
    store::get_endpoint(&api.pool, id)
        .await?
        .filter(|e| caller.may_access(&e.owner))
        .ok_or_else(|| Problem::not_found(format!("no endpoint {id}")))
}

/// Registers a webhook or e-mail endpoint. A webhook's answer carries its
/// signing secret (shown again only by a rotation).
#[utoipa::path(
    post,
    path = "/api/v1/endpoints",
    tag = "endpoints",
    security(("bearer" = [])),
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Created", body = EndpointView,
            headers(("Location" = String, description = "/api/v1/endpoints/{id}"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
async fn create_endpoint(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<Response, Problem> {
    let body = NewEndpointRequest::from(body);
    if body.all_customers && !caller.admin {
        return Err(Problem::forbidden("only admins may register endpoints for every customer's events"));
    }
    description(body.description.as_deref())?;
    let types = event_types(body.event_types)?
        .unwrap_or_else(|| OrderEventType::ALL.iter().map(|t| t.as_str().to_owned()).collect());
    let target = check_target(&api, body.channel, body.url.as_deref(), body.address.as_deref()).await?;
    let secret = (body.channel == Channel::Webhook).then(signing::new_secret);
    let new = store::NewEndpoint {
        owner: caller.customer_id.as_str(),
        all_customers: body.all_customers,
        channel: body.channel.as_str(),
        target: &target,
        description: body.description.as_deref().unwrap_or(""),
        event_types: &types,
        secret: secret.as_deref(),
    };
    let endpoint = store::create_endpoint(&api.pool, new, api.max_endpoints_per_customer).await?.ok_or_else(|| {
        Problem::validation(format!("a customer may register at most {} endpoints", api.max_endpoints_per_customer))
    })?;
    tracing::info!(endpoint_id = %endpoint.id, channel = endpoint.channel, owner = endpoint.owner, "endpoint registered");
    let location = format!("/api/v1/endpoints/{}", endpoint.id);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(EndpointView::of(endpoint, true)))
        .into_response())
}

/// Reads an endpoint (its owner or an admin).
#[utoipa::path(
    get,
    path = "/api/v1/endpoints/{id}",
    tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn get_endpoint(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointView>, Problem> {
    Ok(Json(EndpointView::of(visible(&api, &caller, id).await?, false)))
}

/// Changes an endpoint; `{"enabled": true}` re-enables a disabled one.
#[utoipa::path(
    patch,
    path = "/api/v1/endpoints/{id}",
    tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
async fn update_endpoint(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateEndpoint>,
) -> Result<Json<EndpointView>, Problem> {
    let endpoint = visible(&api, &caller, id).await?;
    description(body.description.as_deref())?;
    let types = event_types(body.event_types)?;
    let channel = if endpoint.channel == EMAIL { Channel::Email } else { Channel::Webhook };
    let target = if body.url.is_some() || body.address.is_some() {
        Some(check_target(&api, channel, body.url.as_deref(), body.address.as_deref()).await?)
    } else {
        None
    };
    let update = store::EndpointUpdate {
        target: target.as_deref(),
        description: body.description.as_deref(),
        event_types: types.as_deref(),
        enabled: body.enabled,
    };
    let endpoint = store::update_endpoint(&api.pool, id, update)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no endpoint {id}")))?;
    tracing::info!(endpoint_id = %id, enabled = endpoint.enabled, by = %caller.customer_id, "endpoint updated");
    Ok(Json(EndpointView::of(endpoint, false)))
}

/// Deletes an endpoint with its deliveries and attempts.
#[utoipa::path(
    delete,
    path = "/api/v1/endpoints/{id}",
    tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn delete_endpoint(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, Problem> {
    visible(&api, &caller, id).await?;
    if store::delete_endpoint(&api.pool, id).await? {
        tracing::info!(endpoint_id = %id, by = %caller.customer_id, "endpoint deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a webhook a new secret; the old one keeps signing too until
/// `previous_secret_until` (both signatures in `webhook-signature`).
#[utoipa::path(
    post,
    path = "/api/v1/endpoints/{id}/rotate-secret",
    tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
async fn rotate_secret(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointView>, Problem> {
    let endpoint = visible(&api, &caller, id).await?;
    if endpoint.channel != WEBHOOK {
        return Err(Problem::validation("only webhook endpoints have a secret"));
    }
    let endpoint = store::rotate_secret(&api.pool, id, &signing::new_secret(), api.rotation_overlap)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no endpoint {id}")))?;
    tracing::info!(endpoint_id = %id, by = %caller.customer_id, "secret rotated");
    Ok(Json(EndpointView::of(endpoint, true)))
}

/// `limit` of the lists.
pub const PAGE: PageLimit = PageLimit::new(50, 200);

fn page_limit_schema() -> Schema {
    PAGE.schema()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EndpointsQuery {
    /// Endpoints per page, 1 to 200 (default 50).
    #[param(schema_with = page_limit_schema)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointPage {
    pub items: Vec<EndpointView>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(value_type = Option<Uuid>, required = true)]
    pub next_cursor: Option<String>,
}

/// The caller's endpoints (an admin: everyone's), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/endpoints",
    tag = "endpoints",
    security(("bearer" = [])),
    params(EndpointsQuery),
    responses(
        (status = 200, description = "A page of endpoints", body = EndpointPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn list_endpoints(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiQuery(query): ApiQuery<EndpointsQuery>,
) -> Result<Json<EndpointPage>, Problem> {
    let limit = PAGE.of(query.limit)?;
    let after = page::cursor(query.cursor.as_deref(), Uuid::parse_str)?;
    let owner = (!caller.admin).then(|| caller.customer_id.as_str());
    let rows = store::list_endpoints(&api.pool, owner, after, limit + 1).await?;
    let (rows, next_cursor) = page::cut(rows, limit, |e| e.id.to_string());
    Ok(Json(EndpointPage { items: rows.into_iter().map(|e| EndpointView::of(e, false)).collect(), next_cursor }))
}

/// One attempt to deliver.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub id: i64,
    pub delivery_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub succeeded: bool,
    /// The HTTP status (webhook) or SMTP reply code (e-mail), if one came back.
    #[schema(required = true)]
    pub status_code: Option<i32>,
    /// What went wrong: a timeout, a refused connection, a non-2xx status, a redirect.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The first 1024 bytes of the response.
    #[schema(required = true)]
    pub response_excerpt: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// Attempts per page, 1 to 200 (default 50).
    #[param(schema_with = page_limit_schema)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (an attempt's id).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptPage {
    pub items: Vec<AttemptView>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// An endpoint's attempts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/endpoints/{id}/attempts",
    tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id"), AttemptsQuery),
    responses(
        (status = 200, description = "A page of attempts", body = AttemptPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn list_attempts(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<AttemptsQuery>,
) -> Result<Json<AttemptPage>, Problem> {
    let limit = PAGE.of(query.limit)?;
    let before = page::cursor(query.cursor.as_deref(), str::parse::<i64>)?;
    visible(&api, &caller, id).await?;
    let rows = store::list_attempts(&api.pool, id, before, limit + 1).await?;
    let (rows, next_cursor) = page::cut(rows, limit, |a| a.id.to_string());
    let items = rows
        .into_iter()
        .map(|a| AttemptView {
            id: a.id,
            delivery_id: a.delivery_id,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            succeeded: a.succeeded,
            status_code: a.status_code,
            error: a.error,
            response_excerpt: a.response_excerpt,
        })
        .collect();
    Ok(Json(AttemptPage { items, next_cursor }))
}

/// One event for one endpoint; its id is the `webhook-id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    /// An order event type, or `endpoint.disabled` (the notice to the owner's
    /// e-mail endpoints that another endpoint was disabled).
    pub event_type: String,
    /// The order (none for `endpoint.disabled`).
    #[schema(required = true)]
    pub order_id: Option<Uuid>,
    pub customer_id: String,
    /// `pending`, `delivered` or `failed` (out of attempts).
    pub status: String,
    /// Attempts since it was created or last redelivered.
    pub attempts: i32,
    /// When it is next tried (pending only).
    pub next_attempt_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<store::Delivery> for DeliveryView {
    fn from(d: store::Delivery) -> Self {
        DeliveryView {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type,
            order_id: d.order_id,
            customer_id: d.customer_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this endpoint's.
    pub endpoint_id: Option<Uuid>,
    /// Deliveries per page, 1 to 200 (default 50).
    #[param(schema_with = page_limit_schema)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(value_type = Option<Uuid>, required = true)]
    pub next_cursor: Option<String>,
}

/// Deliveries to the caller's endpoints (an admin: all), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/deliveries",
    tag = "deliveries",
    security(("bearer" = [])),
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn list_deliveries(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, Problem> {
    let limit = PAGE.of(query.limit)?;
    let before = page::cursor(query.cursor.as_deref(), Uuid::parse_str)?;
    let owner = (!caller.admin).then(|| caller.customer_id.as_str());
    let rows = store::list_deliveries(&api.pool, owner, query.endpoint_id, before, limit + 1).await?;
    let (rows, next_cursor) = page::cut(rows, limit, |d| d.id.to_string());
    Ok(Json(DeliveryPage { items: rows.into_iter().map(DeliveryView::from).collect(), next_cursor }))
}

async fn visible_delivery(api: &NotificationApi, caller: &Caller, id: Uuid) -> Result<store::Delivery, Problem> {
    store::get_delivery(&api.pool, id)
        .await?
        .filter(|d| caller.may_access(&d.owner))
        .ok_or_else(|| Problem::not_found(format!("no delivery {id}")))
}

/// Reads a delivery (the endpoint's owner or an admin).
#[utoipa::path(
    get,
    path = "/api/v1/deliveries/{id}",
    tag = "deliveries",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Delivery id (the webhook-id)")),
    responses(
        (status = 200, description = "The delivery", body = DeliveryView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn get_delivery(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DeliveryView>, Problem> {
    Ok(Json(visible_delivery(&api, &caller, id).await?.into()))
}

/// Sends a delivery again now, with the same `webhook-id` and a fresh
/// attempt budget (the endpoint's owner or an admin).
#[utoipa::path(
    post,
    path = "/api/v1/deliveries/{id}/redeliver",
    tag = "deliveries",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Delivery id (the webhook-id)")),
    responses(
        (status = 202, description = "Queued for sending", body = DeliveryView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn redeliver(
    caller: Caller,
    State(ApiState(api)): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, Problem> {
    visible_delivery(&api, &caller, id).await?;
    store::redeliver(&api.pool, id).await?;
    tracing::info!(delivery_id = %id, by = %caller.customer_id, "redelivery requested");
    let delivery = visible_delivery(&api, &caller, id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(delivery))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_follows_the_shared_rules() {
        let mut openapi = routes().into_openapi();
        close_new_endpoint_variants(&mut openapi);
        saga_common::openapi::complete(&mut openapi);
        let errors = saga_common::openapi::check(&openapi);
        assert!(errors.is_empty(), "{errors:#?}");
        let doc = serde_json::to_value(openapi).unwrap();
        let [webhook, email] =
            [0, 1].map(|i| &doc["components"]["schemas"]["CreateEndpoint"]["oneOf"][i]["properties"]);
        assert_eq!(webhook["channel"]["enum"], serde_json::json!(["webhook"]));
        assert_eq!(webhook["url"]["maxLength"], crate::ssrf::MAX_URL_LEN);
        assert_eq!(email["channel"]["enum"], serde_json::json!(["email"]));
        assert_eq!(email["address"]["maxLength"], email::MAX_ADDRESS_LEN);
        for variant in [0, 1] {
            let variant = &doc["components"]["schemas"]["CreateEndpoint"]["oneOf"][variant];
            assert_eq!(variant["properties"]["description"]["maxLength"], MAX_DESCRIPTION);
            assert_eq!(variant["additionalProperties"], false, "deny_unknown_fields: {variant}");
        }
    }
}
