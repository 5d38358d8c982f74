//! A small typed HTTP client for the three services' APIs (contract §3):
//! bearer tokens, JSON bodies, and RFC 9457 problem details turned into
//! readable errors.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An order as the order service returns it. Lenient: fields the CLI does
/// not need are ignored, optional ones may be missing. Also what `-o json`
/// prints for an order (missing fields as null).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct Order {
    pub id: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub total_cents: Option<i64>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Order {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "FAILED" | "CANCELLED")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Serialize)]
struct PlaceOrder<'a> {
    items: &'a [OrderLine],
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductUpsert {
    pub name: String,
    pub unit_price_cents: i64,
    pub on_hand: i64,
}

#[derive(Debug, Serialize)]
struct AccountUpsert {
    balance_cents: i64,
}

/// RFC 9457 problem details (every field optional: shown as far as present).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug)]
pub enum ApiError {
    /// No HTTP response (connection refused, timeout, ...).
    Transport {
        /// "METHOD url"
        request: String,
        source: reqwest::Error,
    },
    /// A non-2xx response.
    Status { request: String, status: StatusCode, problem: Option<Box<Problem>>, body: String },
    /// A 2xx response whose body is not what was expected.
    Decode { request: String, error: String },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport { request, source } => {
                write!(f, "{request}: {source}")?;
                let mut cause = std::error::Error::source(source);
                while let Some(inner) = cause {
                    write!(f, ": {inner}")?;
                    cause = inner.source();
                }
                Ok(())
            }
            ApiError::Status { request, status, problem, body } => {
                write!(f, "{request}: {status}")?;
                match problem {
                    Some(problem) => {
                        if let Some(kind) = &problem.kind {
                            let short = kind.rsplit('/').next().unwrap_or(kind);
                            write!(f, " [{short}]")?;
                        }
                        if let Some(detail) = problem.detail.as_ref().or(problem.title.as_ref()) {
                            write!(f, ": {detail}")?;
                        }
                        Ok(())
                    }
                    None if body.trim().is_empty() => Ok(()),
                    None => write!(f, ": {}", truncate(body.trim(), 300)),
                }
            }
            ApiError::Decode { request, error } => {
                write!(f, "{request}: unexpected response body: {error}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// One service's base URL plus an optional bearer token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .expect("building the HTTP client");
        Client { http, base: base.trim_end_matches('/').to_owned(), token: None }
    }

    /// The same service, authenticated with `token`.
    pub fn with_token(&self, token: String) -> Self {
        Client { token: Some(token), ..self.clone() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and decodes a JSON answer (problem+json on error).
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiError> {
        let url = self.url(path);
        let what = format!("{method} {url}");
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let transport = |source| ApiError::Transport { request: what.clone(), source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            let problem = serde_json::from_str::<Problem>(&text)
                .ok()
                .filter(|p| p.kind.is_some() || p.detail.is_some() || p.title.is_some())
                .map(Box::new);
            return Err(ApiError::Status { request: what, status, problem, body: text });
        }
        serde_json::from_str(&text).map_err(|error| ApiError::Decode {
            request: what,
            error: format!("{error} (body: {})", truncate(&text, 200)),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ApiError> {
        self.send(Method::POST, path, Some(to_json(body))).await
    }

    pub async fn put<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ApiError> {
        self.send(Method::PUT, path, Some(to_json(body))).await
    }

    /// DELETE; a 2xx with an empty body is success.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.send::<serde_json::Value>(Method::DELETE, path, None).await.map(drop).or_else(|error| match error {
            ApiError::Decode { .. } => Ok(()),
            other => Err(other),
        })
    }

    /// GET without decoding: the status code and the body text (for `/readyz`).
    pub async fn probe(&self, path: &str) -> Result<(StatusCode, String), ApiError> {
        let url = self.url(path);
        let transport = |source| ApiError::Transport { request: format!("GET {url}"), source };
        let response = self.http.get(&url).timeout(Duration::from_secs(2)).send().await.map_err(transport)?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok((status, body))
    }

    // Typed routes (contract §3).

    pub async fn place_order(&self, items: &[OrderLine]) -> Result<Order, ApiError> {
        self.post("/api/v1/orders", &PlaceOrder { items }).await
    }

    pub async fn order(&self, id: &str) -> Result<Order, ApiError> {
        self.get(&format!("/api/v1/orders/{id}")).await
    }

    /// The order once it is final, or as it is after `wait` (1-30 s): the
    /// server answers as soon as the status changes (long poll).
    pub async fn wait_for_order(&self, id: &str, wait: Duration) -> Result<Order, ApiError> {
        self.get(&format!("/api/v1/orders/{id}?wait={}", wait.as_secs().clamp(1, 30))).await
    }

    /// Requests cancellation; the answer body is not needed (the order is
    /// polled afterwards), so any JSON is accepted.
    pub async fn cancel_order(&self, id: &str) -> Result<(), ApiError> {
        self.send::<serde_json::Value>(Method::POST, &format!("/api/v1/orders/{id}/cancel"), None)
            .await
            .map(drop)
            .or_else(|error| match error {
                // A 2xx with an empty body is fine too.
                ApiError::Decode { .. } => Ok(()),
                other => Err(other),
            })
    }

    /// An operator's action on a running saga (`retry` or `compensate`,
    /// admin): the order as it stands once the action is recorded.
    pub async fn order_action(&self, id: &str, action: &str, reason: Option<&str>) -> Result<Order, ApiError> {
        let body = reason.map(|reason| serde_json::json!({ "reason": reason }));
        self.send(Method::POST, &format!("/api/v1/orders/{id}/{action}"), body).await
    }

    /// The saga timeline, as raw JSON (printed defensively).
    pub async fn order_events(&self, id: &str) -> Result<serde_json::Value, ApiError> {
        self.get(&format!("/api/v1/orders/{id}/events")).await
    }

    pub async fn put_product(&self, sku: &str, product: &ProductUpsert) -> Result<(), ApiError> {
        self.put::<serde_json::Value, _>(&format!("/api/v1/products/{sku}"), product).await.map(drop)
    }

    pub async fn put_account(&self, customer_id: &str, balance_cents: i64) -> Result<(), ApiError> {
        self.put::<serde_json::Value, _>(&format!("/api/v1/accounts/{customer_id}"), &AccountUpsert { balance_cents })
            .await
            .map(drop)
    }
}

fn to_json<B: Serialize>(body: &B) -> serde_json::Value {
    serde_json::to_value(body).expect("request bodies always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_are_shown_readably() {
        let error = ApiError::Status {
            request: "POST http://x/api/v1/orders".into(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            problem: Some(Box::new(Problem {
                kind: Some("https://saga.dev/problems/validation-failed".into()),
                title: Some("Unprocessable Entity".into()),
                detail: Some("items must not be empty".into()),
            })),
            body: String::new(),
        };
        assert_eq!(
            error.to_string(),
            "POST http://x/api/v1/orders: 422 Unprocessable Entity [validation-failed]: items must not be empty"
        );
    }

    #[test]
    fn plain_error_bodies_are_truncated() {
        let error = ApiError::Status {
            request: "GET http://x/".into(),
            status: StatusCode::BAD_GATEWAY,
            problem: None,
            body: "x".repeat(500),
        };
        assert!(error.to_string().ends_with('…'));
    }
}
