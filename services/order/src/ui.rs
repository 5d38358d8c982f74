//! The saga explorer (`/ui/`): static files compiled into the binary, so
//! nothing is fetched from anywhere at run time. Plain HTML, CSS and
//! JavaScript modules: no build step. The page talks to the same origin's
//! APIs with the bearer token the user signs in with.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use saga_common::problem::Problem;

/// (file name, content type, content)
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../ui/api.js")),
    ("timeline.js", "text/javascript; charset=utf-8", include_bytes!("../ui/timeline.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../ui/favicon.svg")),
];

/// Only this origin's scripts, styles and API; no framing; the token is
/// never sent elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the explorer's settings come from (order-service flags).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UiConfig {
    /// A trace viewer's URL with `{trace_id}` in it (Jaeger:
    /// `http://jaeger:16686/trace/{trace_id}`); none: no trace links.
    pub trace_url: Option<String>,
}

pub fn router(config: UiConfig) -> Router {
    let config = serde_json::to_vec(&config).expect("the ui config serializes");
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/config.json",
            get(move || {
                let config = config.clone();
                async move { with_headers("application/json", config.into()) }
            }),
        )
        .route("/ui/{file}", get(|Path(file): Path<String>| async move { asset(&file) }))
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => with_headers(content_type, (*body).into()),
        None => Problem::not_found(format!("no explorer file {name}")).into_response(),
    }
}

fn with_headers(content_type: &'static str, body: axum::body::Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small files, and a new binary may bring new ones: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page loads is served, and nothing loads from elsewhere.
    #[test]
    fn the_page_refers_only_to_served_files() {
        let index = std::str::from_utf8(ASSETS[0].2).unwrap();
        for (file, _, body) in ASSETS {
            // An SVG's namespace is a name, not a fetch.
            let text = String::from_utf8_lossy(body).replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!text.contains("http:") && !text.contains("https:") && !text.contains("//cdn"), "{file}");
        }
        for reference in ["app.js", "style.css", "favicon.svg"] {
            assert!(index.contains(reference), "{reference}");
        }
    }
}
