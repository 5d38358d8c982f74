//! One origin for local use: when configured, the order service forwards
//! the inventory service's paths (`/api/v1/products…`, `/api/v1/reservations…`)
//! and the payment service's (`/api/v1/accounts…`, `/api/v1/payments…`) to
//! them, so the explorer at `/ui/` reaches all three APIs on its own origin,
//! as the chart's Ingress/HTTPRoute does in a cluster. Off unless a base URL
//! is set. Request bodies are bounded as every API's are (64 KiB), responses
//! to `MAX_RESPONSE`; headers pass through (Authorization included) but the
//! hop-by-hop ones, and the request's correlation id and traceparent go on
//! with it; each forwarded request is bounded by `TIMEOUT`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use saga_common::http::{BODY_LIMIT, RequestContext};
use saga_common::problem::Problem;

pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// The paths each service owns (with everything below them).
pub const INVENTORY_PATHS: [&str; 2] = ["/api/v1/products", "/api/v1/reservations"];
pub const PAYMENT_PATHS: [&str; 2] = ["/api/v1/accounts", "/api/v1/payments"];

/// Headers of one connection, never forwarded (RFC 9110 §7.6.1), and the
/// ones the client library sets itself.
const NOT_FORWARDED: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}: not an http:// or https:// base URL")]
    BadUrl(String),
    #[error("cannot make the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

struct Upstream {
    client: reqwest::Client,
    base: String,
}

/// The forwarding routes for the configured services (none configured: an empty router).
pub fn router(inventory: Option<&str>, payment: Option<&str>) -> Result<Router, ProxyError> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut router = Router::new();
    for (base, paths) in [(inventory, INVENTORY_PATHS), (payment, PAYMENT_PATHS)] {
        let Some(base) = base else { continue };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ProxyError::BadUrl(base.to_owned()));
        }
        let upstream = Arc::new(Upstream { client: client.clone(), base: base.trim_end_matches('/').to_owned() });
        for path in paths {
            let forwarding = Router::new()
                .route(path, any(forward))
                .route(&format!("{path}/{{*rest}}"), any(forward))
                .with_state(upstream.clone());
            router = router.merge(forwarding);
        }
    }
    Ok(router)
}

fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in &NOT_FORWARDED {
        out.remove(name);
    }
    out.remove(header::CONTENT_LENGTH);
    out
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "request body larger than 64 KiB")
                .into_response();
        }
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path_and_query}", upstream.base);
    let mut headers = forwarded(&parts.headers);
    // The request's correlation id and trace go on with it (the ones this
    // service adopted or made, so both services log the same).
    if let Some(context) = parts.extensions.get::<RequestContext>() {
        let trace = &context.trace;
        let pairs = [
            ("x-correlation-id", &context.correlation_id),
            ("traceparent", &trace.traceparent),
            ("tracestate", &trace.tracestate),
        ];
        for (name, value) in pairs.into_iter().filter(|(_, value)| !value.is_empty()) {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
    }
    let sent = upstream.client.request(parts.method.clone(), &url).headers(headers).body(body).send().await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, %url, "forwarding failed");
            let (status, kind) = if error.is_timeout() {
                (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout")
            } else {
                (StatusCode::BAD_GATEWAY, "upstream-unavailable")
            };
            return Problem::new(status, kind, "the service behind this path did not answer").into_response();
        }
    };
    let status = response.status();
    let headers = forwarded(response.headers());
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_RESPONSE => bytes.extend_from_slice(&chunk),
            Ok(Some(_)) => {
                return Problem::new(StatusCode::BAD_GATEWAY, "upstream-too-large", "the answer is too large")
                    .into_response();
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, %url, "reading a forwarded answer failed");
                return Problem::new(StatusCode::BAD_GATEWAY, "upstream-unavailable", "the answer was cut off")
                    .into_response();
            }
        }
    }
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
