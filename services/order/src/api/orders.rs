use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use saga_common::auth::{Admin, Caller};
use saga_common::envelope::Envelope;
use saga_common::http::RequestContext;
use saga_common::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use saga_common::page;
use saga_common::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use saga_common::telemetry;
use saga_common::trace_context::TraceContext;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::AppState;
use super::model::*;
use crate::placement::{self, NewOrder, PlaceError};
use crate::saga::{self, Effect, Event, Operator};
use crate::store::{self, Item, ListFilter, OrderRow};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Place an order; its saga runs in the background.
#[utoipa::path(
    post, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    request_body = PlaceOrder,
    params(IdempotencyKeyHeader),
    responses(
        (status = 202, description = "Accepted: the order, PENDING; follow the Location", body = OrderView,
            headers(("Location" = String, description = "/api/v1/orders/{id}")),
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")),
                    description = "The order")),
                ("OrderEvents" = (operation_id = "order_events", parameters(("id" = "$response.body#/id")),
                    description = "Its saga timeline")),
                ("CancelOrder" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")),
                    description = "Cancel it")),
                ("RetryOrder" = (operation_id = "retry_order", parameters(("id" = "$response.body#/id")),
                    description = "Retry its current step (admin)")),
                ("CompensateOrder" = (operation_id = "compensate_order", parameters(("id" = "$response.body#/id")),
                    description = "Force its compensation (admin)")),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn place_order(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrder>,
) -> Result<Response, Problem> {
    request.validate()?;
    let admitted = state.admission.admit(&caller.customer_id)?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => {
            let key = value.to_str().map_err(|_| {
                Problem::bad_request("invalid-idempotency-key", "Idempotency-Key must be visible ASCII")
            })?;
            validate_idempotency_key(key)?;
            Some(key.to_owned())
        }
        None => None,
    };
    let request_hash = Sha256::digest(serde_json::to_vec(&request).expect("request serializes")).to_vec();

    let order = new_order(&caller, &context, &request);
    let view = OrderView::from(&order.row);
    let committed_at = match key {
        // Without a key, the order joins the next batch of the order writer.
        None => state.placements.place(order).await.map_err(|error| match error {
            PlaceError::Db(error) => Problem::from(error),
            PlaceError::Stopped => Problem::unavailable("the service is shutting down"),
        })?,
        Some(key) => match place_once(&state, &caller, &key, &request_hash, &order, &view).await? {
            Placed::New(at) => at,
            Placed::Before(first_response) => return Ok(first_response),
        },
    };
    admitted.committed(committed_at);
    tracing::info!(order_id = %view.id, lines = view.items.len(), "order placed");
    Ok(accepted(&view))
}

/// The order as it is stored, with its first timeline step and the commands
/// that start its saga.
fn new_order(caller: &Caller, context: &RequestContext, request: &PlaceOrder) -> NewOrder {
    let now = Utc::now();
    let mut row = OrderRow {
        id: Uuid::now_v7(),
        customer_id: caller.customer_id.to_string(),
        status: String::new(),
        saga: SqlJson(saga::SagaState::Reserving),
        items: SqlJson(
            request
                .items
                .iter()
                .map(|l| Item { sku: l.sku.clone(), quantity: l.quantity as i32, unit_price_cents: None })
                .collect(),
        ),
        total_cents: None,
        failure_reason: None,
        correlation_id: context.correlation_id.clone(),
        traceparent: context.trace.traceparent.clone(),
        tracestate: context.trace.tracestate.clone(),
        created_at: now,
        updated_at: now,
    };
    let (first_state, commands) = saga::begin(&crate::orchestrator::saga_order(&row));
    let step = crate::orchestrator::step_span(row.id, "order.placed", None, &first_state);
    let trace = TraceContext::of(&telemetry::start(&step, &context.trace.parent()));
    row.status = first_state.status().as_str().to_owned();
    row.saga = SqlJson(first_state);
    let commands: Vec<Envelope> =
        commands.into_iter().map(|command| Envelope::new(command, &context.correlation_id, trace.clone())).collect();
    let mut timeline = vec![("order.placed", json!({"lines": row.items.len(), "customer_id": row.customer_id}))];
    timeline.extend(commands.iter().map(crate::orchestrator::sent));
    NewOrder { row, timeline, commands }
}

enum Placed {
    /// Stored; its transaction committed then.
    New(Instant),
    /// The key was used before: the first response (nothing new is written).
    Before(Response),
}

/// With an `Idempotency-Key`: the order, its commands and the stored response
/// in one transaction that holds the key's lock.
async fn place_once(
    state: &AppState,
    caller: &Caller,
    key: &str,
    request_hash: &[u8],
    order: &NewOrder,
    view: &OrderView,
) -> Result<Placed, Problem> {
    let placed = state.signal.transaction(async {
        let mut tx = state.pool.begin().await?;
        if !store::try_lock_idempotency_key(&mut tx, &caller.customer_id, key).await? {
            return Err(Problem::conflict(
                "idempotency-key-in-use",
                "another request with this Idempotency-Key is in progress; retry",
            ));
        }
        if let Some(stored) = store::find_idempotent_response(&mut tx, &caller.customer_id, key).await? {
            if stored.request_hash != request_hash {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "this Idempotency-Key was used with a different request body",
                ));
            }
            let view: OrderView = serde_json::from_value(stored.response).map_err(Problem::internal)?;
            return Ok(Placed::Before(accepted(&view)));
        }
        placement::stage(&mut tx, &[order], state.orchestrator.step_timeout).await?;
        let response = serde_json::to_value(view).expect("order view serializes");
        store::store_idempotent_response(&mut tx, &caller.customer_id, key, request_hash, order.row.id, &response)
            .await?;
        tx.commit().await?;
        Ok(Placed::New(Instant::now()))
    });
    placed.await
}

fn accepted(view: &OrderView) -> Response {
    let location = HeaderValue::from_str(&format!("/api/v1/orders/{}", view.id)).expect("uuid is a valid header");
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response()
}

/// One order (a customer sees only their own). With `wait`, a PENDING order
/// is answered when it reaches a final status, or after `wait` seconds with
/// its status then.
#[utoipa::path(
    get, path = "/api/v1/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id"), GetQuery),
    responses(
        (status = 200, description = "The order", body = OrderView,
            links(
                ("OrderEvents" = (operation_id = "order_events", parameters(("id" = "$response.body#/id")))),
                ("CancelOrder" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<GetQuery>,
) -> Result<Json<OrderView>, Problem> {
    let wait = match query.wait {
        None => Duration::ZERO,
        Some(seconds @ 1..=MAX_WAIT_SECONDS) => Duration::from_secs(seconds),
        Some(_) => {
            return Err(Problem::bad_request("invalid-query", format!("wait must be 1 to {MAX_WAIT_SECONDS} seconds")));
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut slot = None;
    let order = loop {
        let mut watch = (!wait.is_zero()).then(|| state.status_changes.watch(id));
        let order = visible_order(store::find(&state.pool, id).await?, &caller, id)?;
        let now = tokio::time::Instant::now();
        match watch.as_mut() {
            Some(watch) if order.status == "PENDING" && now < deadline => {
                if slot.is_none() {
                    slot = Some(state.waiters.enter(&caller.customer_id)?);
                }
                tokio::select! {
                    _ = watch.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            _ => break order,
        }
    };
    Ok(Json(OrderView::from(&order)))
}

pub(super) fn visible_order(order: Option<OrderRow>, caller: &Caller, id: Uuid) -> Result<OrderRow, Problem> {
    order.filter(|o| caller.may_access(&o.customer_id)).ok_or_else(|| Problem::not_found(format!("no order {id}")))
}

/// Orders, newest first (own orders; an admin sees all), with the
/// explorer's search conditions.
#[utoipa::path(
    get, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<OrderPage>, Problem> {
    let limit = PAGE.of(query.limit)?;
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(Problem::bad_request("invalid-query", format!("status must be one of {}", STATUSES.join(", "))));
    }
    let before = page::cursor(query.cursor.as_deref(), Uuid::parse_str)?;
    let mut filter = query.filter_query().filter(&caller)?;
    filter.status = query.status.clone();
    let rows = store::list(&state.pool, ListFilter { filter: &filter, before, limit: limit + 1 }).await?;
    let (rows, next_cursor) = page::cut(rows, limit, |o| o.id.to_string());
    Ok(Json(OrderPage { items: rows.iter().map(OrderView::from).collect(), next_cursor }))
}

/// How many orders match the search conditions, by status (own orders; an admin counts all).
#[utoipa::path(
    get, path = "/api/v1/orders/counts", tag = "orders",
    security(("bearer" = [])),
    params(CountsQuery),
    responses(
        (status = 200, description = "The counts", body = OrderCounts),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub async fn order_counts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CountsQuery>,
) -> Result<Json<OrderCounts>, Problem> {
    let filter = query.filter_query().filter(&caller)?;
    let rows = store::count_by_status(&state.pool, &filter).await?;
    Ok(Json(OrderCounts::from_rows(&rows)))
}

/// Cancel: a running saga compensates; a COMPLETED order is refunded and restocked.
#[utoipa::path(
    post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id")),
    responses(
        (status = 202, description = "Cancellation under way: the order, still PENDING until compensated", body = OrderView,
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, Problem> {
    act(&state, &caller, id, Event::CancelRequested, "cannot-cancel").await
}

/// Applies a request (cancel, retry, compensate) to the order's saga in one
/// transaction: 202 with the order, or 409 `conflict_kind` when the saga
/// refuses it in its current state (nothing is recorded then).
async fn act(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    event: Event,
    conflict_kind: &str,
) -> Result<Response, Problem> {
    let done = state.signal.transaction(async {
        let mut tx = state.pool.begin().await?;
        let order = visible_order(store::lock(&mut tx, id).await?, caller, id)?;
        let transition = state.orchestrator.advance(&mut tx, &order, event, None).await?;
        if let Effect::Refused(why) = transition.effect {
            return Err(Problem::conflict(conflict_kind, why));
        }
        let order = store::find(&mut *tx, id).await?.ok_or_else(|| Problem::not_found(format!("no order {id}")))?;
        tx.commit().await?;
        Ok((StatusCode::ACCEPTED, Json(OrderView::from(&order))).into_response())
    });
    done.await
}

/// Who acts and why, from the admin's token and the optional body.
/// No body and a JSON `null` are the same: no reason.
fn operator(caller: &Caller, body: Option<ApiJson<Option<IncidentRequest>>>) -> Result<Operator, Problem> {
    let request = body.and_then(|ApiJson(request)| request).unwrap_or_default();
    request.validate()?;
    Ok(Operator { actor: caller.customer_id.to_string(), reason: request.reason })
}

/// Retry (admin): send the current step's command again — or, while the
/// saga compensates, the compensations still awaited — and give the step a
/// fresh timeout. Harmless if the participant already did it: its effects
/// are keyed by order, so a duplicate only repeats the same reply, which the
/// saga ignores. Recorded on the timeline (`retry.requested`) with the
/// caller's `sub` and the reason. 409 `cannot-retry` once the order is final.
#[utoipa::path(
    post, path = "/api/v1/orders/{id}/retry", tag = "incidents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id")),
    request_body(content = Option<IncidentRequest>, content_type = "application/json",
        description = "Optional: why (recorded on the timeline)"),
    responses(
        (status = 202, description = "The command was sent again: the order, still PENDING", body = OrderView,
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))),
                ("OrderEvents" = (operation_id = "order_events", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub async fn retry_order(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<Uuid>,
    body: Option<ApiJson<Option<IncidentRequest>>>,
) -> Result<Response, Problem> {
    let operator = operator(&caller, body)?;
    let by = operator.actor.clone();
    let response = act(&state, &caller, id, Event::RetryRequested(operator), "cannot-retry").await?;
    tracing::info!(order_id = %id, %by, "operator retried the saga's current step");
    Ok(response)
}

/// Force compensation (admin): a running saga releases the stock and
/// refunds the payment, whatever it had done, and ends FAILED
/// `compensated_by_operator`. Recorded on the timeline
/// (`compensate.requested`) with the caller's `sub` and the reason. 409
/// `cannot-compensate` once the order is final or already compensating.
#[utoipa::path(
    post, path = "/api/v1/orders/{id}/compensate", tag = "incidents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id")),
    request_body(content = Option<IncidentRequest>, content_type = "application/json",
        description = "Optional: why (recorded on the timeline)"),
    responses(
        (status = 202, description = "Compensation under way: the order, PENDING until compensated, then FAILED", body = OrderView,
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))),
                ("OrderEvents" = (operation_id = "order_events", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub async fn compensate_order(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<Uuid>,
    body: Option<ApiJson<Option<IncidentRequest>>>,
) -> Result<Response, Problem> {
    let operator = operator(&caller, body)?;
    let by = operator.actor.clone();
    let response = act(&state, &caller, id, Event::CompensateRequested(operator), "cannot-compensate").await?;
    tracing::warn!(order_id = %id, %by, "operator forced the saga to compensate");
    Ok(response)
}

/// The saga timeline: every step, command, reply and compensation.
#[utoipa::path(
    get, path = "/api/v1/orders/{id}/events", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id")),
    responses(
        (status = 200, description = "The timeline, oldest first", body = [TimelineEntry]),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn order_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<TimelineEntry>>, Problem> {
    visible_order(store::find(&state.pool, id).await?, &caller, id)?;
    let events = store::events(&state.pool, id).await?;
    Ok(Json(events.into_iter().map(TimelineEntry::from).collect()))
}
