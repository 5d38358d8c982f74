//! HTTP plumbing every service shares: correlation ids and request logs,
//! metrics, the operational routes, API docs, limits and serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tracing::Instrument;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Auth;
use crate::envelope::valid_correlation_id;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::runtime::Shutdown;
use crate::telemetry;
use crate::trace_context::{TRACEPARENT, TRACESTATE, TraceContext};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The state of an API that needs only its database and authentication.
#[derive(Clone)]
pub struct ApiState {
    pub pool: sqlx::PgPool,
    pub auth: Auth,
}

impl FromRef<ApiState> for Auth {
    fn from_ref(state: &ApiState) -> Auth {
        state.auth.clone()
    }
}

/// Where a request sits in a causal chain; copied onto every message it causes.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: String,
    /// The context of the request's span.
    pub trace: TraceContext,
}

/// Routes that are not traced: probes and scrapes, every few seconds.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Adopts the caller's `x-correlation-id` (or makes one) and continues the
/// caller's trace (`traceparent` + `tracestate`, or starts one), runs the
/// request inside a span carrying them, echoes the correlation id and the
/// request span's `traceparent`, and records metrics.
async fn observe(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let correlation_id = header(&request, "x-correlation-id")
        .filter(|id| valid_correlation_id(id))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let traced = !UNTRACED.contains(&route.as_str());
    let (span, trace) = if traced {
        let span = tracing::info_span!(
            "request",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
            %correlation_id,
            %method,
            route,
        );
        let parent = caller_trace(&request).parent();
        let trace = TraceContext::of(&telemetry::start(&span, &parent));
        (span, trace)
    } else {
        (tracing::Span::none(), TraceContext::default())
    };
    request.extensions_mut().insert(RequestContext { correlation_id: correlation_id.clone(), trace: trace.clone() });
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    if route.starts_with("/api/v1") {
        span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed * 1000.0, "request"));
    }
    metrics.http_request(method.as_str(), &route, status, elapsed);
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent)
        && !trace.is_empty()
    {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// The caller's trace context; several `tracestate` lines are one list (RFC 9110 field lines).
fn caller_trace(request: &Request) -> TraceContext {
    let states: Vec<&str> = request.headers().get_all(TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
    let tracestate = (!states.is_empty()).then(|| states.join(","));
    TraceContext::read(header(request, TRACEPARENT).as_deref(), tracestate.as_deref())
}

/// Answers 503 `timeout` when a request takes longer than the limit (a
/// locked row, a stuck dependency): the handler is dropped, which rolls back
/// its open transaction, and the connection is free for the next request.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long; retry later")
                .into_response()
        }
    }
}

/// The answer to a PUT that creates or replaces: 201 with `Location` when it
/// created the resource, 200 when it replaced it.
pub fn created_or_replaced(created: bool, location: String, body: impl serde::Serialize) -> Response {
    if created {
        (StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(body)).into_response()
    } else {
        Json(body).into_response()
    }
}

fn header(request: &Request, name: &str) -> Option<String> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Combines a service's API routes with `/healthz`, `/readyz`, `/metrics`,
/// `/api/openapi.json`, `/api/docs`, a problem+json 404, the body limit and
/// request observation.
pub fn finish(
    api: Router,
    mut openapi: OpenApi,
    readiness: Readiness,
    metrics: Metrics,
    request_timeout: Duration,
) -> Router {
    crate::openapi::complete(&mut openapi);
    let metrics_for_route = metrics.clone();
    let ops = Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "alive"})) }))
        .route(
            "/readyz",
            get(move || async move {
                let report = readiness.report();
                let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, Json(report))
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    metrics_for_route.render(),
                )
            }),
        );
    api.merge(ops)
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
        .fallback(|| async { Problem::not_found("no such route").into_response() })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(request_timeout, time_limit))
        .layer(middleware::from_fn_with_state(metrics, observe))
}

/// Limits of the HTTP server itself (before any route runs).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// See `ServiceArgs::http_header_read_timeout`.
    pub header_read_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
}

/// The whole answer to a connection over the limit: it is written before
/// the request is read, then the connection is closed.
fn too_many_connections() -> Vec<u8> {
    let body = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many connections; retry later");
    let body = serde_json::to_string(&body).expect("a problem serializes");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves HTTP/1 until shutdown, letting in-flight requests finish. A
/// connection that has not sent a complete request head within
/// `header_read_timeout` (counted from the connection's start, or from the
/// end of its previous request) is closed, so idle or slow-header clients
/// cannot hold connections open; beyond `max_connections` open connections
/// a new one gets a 503 at once.
pub async fn serve(addr: SocketAddr, app: Router, mut shutdown: Shutdown, limits: ServerLimits) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening");
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusal: Arc<[u8]> = too_many_connections().into();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, for example: pause, do not spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, refusal.clone()));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers 503 on a connection over the limit and closes it (within 1 s).
async fn refuse(stream: tokio::net::TcpStream, answer: Arc<[u8]>) {
    let write = async {
        let mut sent = 0;
        while sent < answer.len() {
            stream.writable().await?;
            match stream.try_write(&answer[sent..]) {
                Ok(n) => sent += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
