//! `GET /api/v1/orders/{id}/stream`: an order and its timeline as
//! server-sent events, while its saga runs (the explorer's live view).
//!
//! The stream sends `order` (the order, whenever it changed), `timeline`
//! (the timeline entries stored since the last one sent) and, once the
//! order is final and its timeline sent, `end`; then it closes. A final
//! status wakes the stream at once (the NOTIFY the long poll waits on);
//! timeline steps between are read every `POLL` (one indexed query per open
//! stream), so the hot path of the saga pays nothing for them. A stream
//! lasts at most `MAX_STREAM`, then closes (the client reconnects); it
//! counts as a long poll against the same limits (429 per customer, 503
//! overall) and ends when the service shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use saga_common::auth::Caller;
use saga_common::openapi::{BadRequest, NotFound, TooManyRequests, Unauthorized, Unavailable};
use saga_common::problem::{ApiPath, Problem};
use saga_common::runtime::Shutdown;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::model::{OrderView, TimelineEntry};
use crate::admission::WaiterGuard;
use crate::store;

/// How often an open stream looks for new timeline steps.
pub const POLL: Duration = Duration::from_millis(250);
/// A stream closes after this long; the client reconnects.
pub const MAX_STREAM: Duration = Duration::from_secs(300);

/// One server-sent event of the stream (the schema of each event, as
/// OpenAPI describes `text/event-stream`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire format; events are built by `json_event`
pub struct StreamEvent {
    /// `order`, `timeline` or `end`.
    #[schema(schema_with = event_names)]
    event: String,
    /// JSON: the order with `trace_id` (`order`), the new timeline entries
    /// (`timeline`), or `{"status"}` (`end`).
    #[schema(content_media_type = "application/json")]
    data: String,
}

fn event_names() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["order", "timeline", "end"]))
        .into()
}

/// Follow an order live: server-sent events until it is final.
///
/// Events: `order` (data: the order, with `trace_id` from its W3C traceparent), `timeline` (data: the new timeline
/// entries, oldest first; the first one holds the whole timeline so far),
/// `end` (data: `{"status"}`; the stream then closes). The stream also
/// closes after 5 minutes or when the service stops; reconnect to go on.
#[utoipa::path(
    get, path = "/api/v1/orders/{id}/stream", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id")),
    responses(
        (status = 200, description = "`text/event-stream`: events `order`, `timeline` and `end`, each with JSON data",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn order_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, Problem> {
    let order = store::find(&state.pool, id).await?;
    super::orders::visible_order(order, &caller, id)?;
    let slot = state.waiters.enter(&caller.customer_id)?;
    let follow = Follow {
        shutdown: state.shutdown.clone(),
        state,
        id,
        last_step: 0,
        last_updated: None,
        queue: VecDeque::new(),
        deadline: tokio::time::Instant::now() + MAX_STREAM,
        first: true,
        done: false,
        _slot: slot,
    };
    let mut response = Sse::new(events(follow)).keep_alive(KeepAlive::default()).into_response();
    // Proxies (nginx ingress) must pass each event on at once.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

struct Follow {
    state: AppState,
    shutdown: Shutdown,
    id: Uuid,
    /// The last timeline step sent.
    last_step: i64,
    /// `updated_at` of the order as last sent.
    last_updated: Option<DateTime<Utc>>,
    queue: VecDeque<Event>,
    deadline: tokio::time::Instant,
    first: bool,
    done: bool,
    _slot: WaiterGuard,
}

impl Follow {
    /// Waits for a change (not before the first read), reads the order and
    /// its new steps, and queues their events. `false`: the stream is over.
    async fn next_batch(&mut self) -> bool {
        if !self.first {
            let mut watch = self.state.status_changes.watch(self.id);
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(self.deadline) => return false,
                _ = self.shutdown.wait() => return false,
            }
        }
        self.first = false;
        let (order, last, entries) =
            match store::find_with_events_after(&self.state.pool, self.id, self.last_step).await {
                Ok(Some(read)) => read,
                Ok(None) => return false,
                Err(error) => {
                    tracing::warn!(%error, order_id = %self.id, "order stream cannot read the order; closing it");
                    return false;
                }
            };
        if self.last_updated != Some(order.updated_at) {
            self.last_updated = Some(order.updated_at);
            // With its trace id, for the explorer's link to the trace.
            let mut view = serde_json::to_value(OrderView::from(&order)).expect("orders serialize");
            if let Some(trace_id) = order.traceparent.split('-').nth(1) {
                view["trace_id"] = trace_id.into();
            }
            self.queue.push_back(json_event("order", &view));
        }
        if !entries.is_empty() {
            self.last_step = last;
            let entries: Vec<TimelineEntry> = entries.into_iter().map(TimelineEntry::from).collect();
            self.queue.push_back(json_event("timeline", &entries));
        }
        if order.status != "PENDING" {
            self.queue.push_back(json_event("end", &json!({"status": order.status})));
            self.done = true;
        }
        true
    }
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(data).expect("events serialize"))
}

fn events(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(event) = follow.queue.pop_front() {
                return Some((Ok(event), follow));
            }
            if follow.done || !follow.next_batch().await {
                return None;
            }
        }
    })
}
