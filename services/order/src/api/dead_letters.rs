//! The dead-letter queues, for admins (the explorer's dead-letter view):
//! list, replay, purge. The broker side is `saga_common::dlq`, the same code
//! `sagactl dlq` runs; each request opens its own broker connection.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use lapin::Connection;
use saga_common::auth::Admin;
use saga_common::dlq::{self, DeadLetter, DlqError, Selection};
use saga_common::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType,
};
use saga_common::page::PageLimit;
use saga_common::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use saga_common::topology::Destination;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

use super::AppState;

/// `limit` of the dead-letter list: messages shown per queue.
pub const PAGE: PageLimit = PageLimit::new(100, 500);
/// Message ids in one replay request: the longest such body stays under the 64 KiB body limit.
pub const MAX_IDS: usize = 100;
pub const MAX_ID_LEN: usize = 255;

/// The queue a path names; any other name is 404 (there is no such queue).
fn queue_from_path(name: &str) -> Result<Destination, Problem> {
    Destination::from_name(name)
        .ok_or_else(|| Problem::not_found("no such dead-letter queue (order, payment, inventory or notification)"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Messages shown per queue, 1 to 500 (default 100); `depth` counts them all.
    #[param(schema_with = limit_schema)]
    pub limit: Option<u32>,
}

fn limit_schema() -> Schema {
    PAGE.schema()
}

/// One dead-letter queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterQueue {
    pub queue: Destination,
    /// The broker's name for it: `{platform}.{queue}.dlq`.
    pub name: String,
    /// Messages in it now.
    pub depth: u32,
    /// Up to `limit` of them, oldest first (left in the queue).
    pub messages: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterQueues {
    pub queues: Vec<DeadLetterQueue>,
}

/// Replay the messages with these ids, or all of the queue: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub message_ids: Option<Vec<String>>,
    pub all: Option<bool>,
}

impl utoipa::PartialSchema for ReplayRequest {
    fn schema() -> utoipa::openapi::RefOr<Schema> {
        replay_request_schema().into()
    }
}

impl ToSchema for ReplayRequest {}

/// `{"message_ids": [1 to 100 ids of 1-255 characters]}` or `{"all": true}`, as the handler checks it.
fn replay_request_schema() -> Schema {
    let id = ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(MAX_ID_LEN));
    let ids = ArrayBuilder::new()
        .items(id)
        .min_items(Some(1))
        .max_items(Some(MAX_IDS))
        .description(Some("1 to 100 message ids, each 1-255 characters"));
    let all = ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .description(Some("`true`: every message in the queue now"));
    let closed = || Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false));
    let by_id = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("message_ids", ids)
        .required("message_ids")
        .additional_properties(closed());
    let every = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("all", all)
        .required("all")
        .additional_properties(closed());
    OneOfBuilder::new()
        .item(by_id)
        .item(every)
        .examples([serde_json::json!({"message_ids": ["0190b8f1-3c1e-7000-8000-000000000000"]})])
        .into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// Sent back to the service's queue, in order.
    pub replayed: Vec<String>,
    /// Asked for but not in the queue.
    pub not_found: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    pub purged: u32,
}

fn problem(error: DlqError) -> Problem {
    match error {
        DlqError::Missing { .. } | DlqError::Broker(_) => {
            tracing::warn!(%error, "dead-letter request failed");
            Problem::unavailable(format!("the broker cannot be used now: {error}"))
        }
        DlqError::NotAccepted { .. } => Problem::unavailable(error.to_string()),
    }
}

async fn connect(state: &AppState) -> Result<Connection, Problem> {
    state.broker.connect_once().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot connect to RabbitMQ for a dead-letter request");
        Problem::unavailable("the broker is unavailable; retry later")
    })
}

async fn close(connection: Connection) {
    let _ = connection.close(200, "dead-letter request done".into()).await;
}

/// Every dead-letter queue of the platform with its messages (admin).
#[utoipa::path(
    get, path = "/api/v1/dead-letters", tag = "dead-letters",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The three dead-letter queues", body = DeadLetterQueues),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list_dead_letters(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterQueues>, Problem> {
    // Within 1..=500 once checked, so it fits the u32 the broker browse takes.
    let limit = u32::try_from(PAGE.of(query.limit.map(i64::from))?).expect("a limit within 1..=500");
    let connection = connect(&state).await?;
    let mut queues = Vec::new();
    for queue in Destination::ALL {
        let name = dlq::queue(&state.platform, queue);
        match dlq::browse(&connection, &name, limit).await {
            Ok((depth, messages)) => queues.push(DeadLetterQueue { queue, name, depth, messages }),
            Err(error) => {
                close(connection).await;
                return Err(problem(error));
            }
        }
    }
    close(connection).await;
    Ok(Json(DeadLetterQueues { queues }))
}

/// Sends messages of a dead-letter queue back to the service's queue, each exactly once (admin).
#[utoipa::path(
    post, path = "/api/v1/dead-letters/{queue}/replay", tag = "dead-letters",
    security(("bearer" = [])),
    params(("queue" = Destination, Path, description = "The service whose dead-letter queue")),
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "What was replayed, and the ids not found", body = Replayed),
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
pub async fn replay_dead_letters(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> Result<Json<Replayed>, Problem> {
    let queue = queue_from_path(&queue)?;
    let mut selection = match (&request.message_ids, request.all) {
        (None, Some(true)) => Selection::All,
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(Problem::validation(format!("message_ids: 1 to {MAX_IDS} ids")));
            }
            if let Some(bad) = ids.iter().position(|id| id.is_empty() || id.len() > MAX_ID_LEN) {
                return Err(Problem::validation(format!("message_ids[{bad}]: 1 to {MAX_ID_LEN} characters")));
            }
            Selection::Ids(ids.iter().cloned().collect::<BTreeSet<_>>())
        }
        _ => return Err(Problem::validation("give either message_ids or \"all\": true, not both")),
    };
    let connection = connect(&state).await?;
    let replayed = dlq::replay(&connection, &state.platform, queue, &mut selection).await;
    close(connection).await;
    let replayed = replayed.map_err(problem)?;
    tracing::info!(by = %admin.0.customer_id, ?queue, count = replayed.len(), "dead letters replayed");
    let not_found = match selection {
        Selection::Ids(missing) => missing.into_iter().collect(),
        Selection::All => Vec::new(),
    };
    Ok(Json(Replayed { replayed, not_found }))
}

/// Deletes every message of a dead-letter queue (admin).
#[utoipa::path(
    post, path = "/api/v1/dead-letters/{queue}/purge", tag = "dead-letters",
    security(("bearer" = [])),
    params(("queue" = Destination, Path, description = "The service whose dead-letter queue")),
    responses(
        (status = 200, description = "How many messages were deleted", body = Purged),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn purge_dead_letters(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<Purged>, Problem> {
    let queue = queue_from_path(&queue)?;
    let connection = connect(&state).await?;
    let purged = dlq::purge(&connection, &dlq::queue(&state.platform, queue)).await;
    close(connection).await;
    let purged = purged.map_err(problem)?;
    tracing::info!(by = %admin.0.customer_id, ?queue, purged, "dead letters purged");
    Ok(Json(Purged { purged }))
}
