//! What every service's OpenAPI document shares: the bearer scheme, the
//! problem+json error responses (one component per status, with an example
//! and `Retry-After` where the service sends it), schema helpers for the
//! bounded numbers the handlers check, and `check`, the rules every document
//! is tested against (each service's unit tests run it).

use axum::http::StatusCode;
use serde_json::json;
use utoipa::ToResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::problem::{CONTENT_TYPE, Problem, RETRY_AFTER_SECS};

/// The name of the security scheme every `/api/v1` operation requires.
pub const BEARER: &str = "bearer";

/// An integer schema bounded as the handler checks it (both ends inclusive).
pub fn integer(minimum: i64, maximum: i64) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .into()
}

/// Deserializes a JSON number the document declares `type: integer`: by
/// JSON Schema (2020-12, the dialect of OpenAPI 3.1) `2.0` is an integer as
/// much as `2` is, so both are accepted; `2.5`, strings and numbers outside
/// `i64` are not. Use with `#[serde(deserialize_with = ...)]`.
pub fn deserialize_integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};
    struct Integer;
    impl Visitor<'_> for Integer {
        type Value = i64;
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an integer")
        }
        fn visit_i64<E: Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }
        fn visit_u64<E: Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
        }
        fn visit_f64<E: Error>(self, value: f64) -> Result<i64, E> {
            // i64::MIN is exactly -2^63; 2^63 itself is out of range.
            if value.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&value) {
                Ok(value as i64)
            } else {
                Err(E::invalid_value(Unexpected::Float(value), &self))
            }
        }
    }
    deserializer.deserialize_any(Integer)
}

fn problem_response(description: &str, status: StatusCode, kind: &str, detail: &str) -> Response {
    let example = serde_json::to_value(Problem::new(status, kind, detail)).expect("a problem serializes");
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).example(Some(example)).build();
    let mut response = ResponseBuilder::new().description(description).content(CONTENT_TYPE, content);
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build();
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Seconds to wait before retrying"))
                .example(Some(json!(RETRY_AFTER_SECS)))
                .build(),
        );
    }
    response.build()
}

macro_rules! problem_responses {
    ($($name:ident => ($status:expr, $kind:literal, $description:literal, $detail:literal);)*) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), problem_response($description, $status, $kind, $detail).into())
                }
            }
        )*

        /// Every problem response component, for the document's `components.responses`.
        fn all_problem_responses() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$(<$name as ToResponse>::response()),*]
        }
    };
}

problem_responses! {
    BadRequest => (StatusCode::BAD_REQUEST, "malformed-json",
        "Malformed request: JSON that does not parse, or an invalid path parameter, query or header",
        "Failed to parse the request body as JSON");
    Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized",
        "Missing, malformed, expired or wrongly signed bearer token",
        "missing Authorization header");
    Forbidden => (StatusCode::FORBIDDEN, "forbidden",
        "The token is valid but lacks the admin role",
        "this route needs the admin role");
    NotFound => (StatusCode::NOT_FOUND, "not-found",
        "No such resource, or not the caller's",
        "no such resource");
    Conflict => (StatusCode::CONFLICT, "cannot-cancel",
        "The request conflicts with the resource's state",
        "the order is already final");
    PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large",
        "Request body larger than 64 KiB",
        "Failed to buffer the request body: length limit exceeded");
    UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type",
        "The body is not sent as `Content-Type: application/json`",
        "Expected request with `Content-Type: application/json`");
    Unprocessable => (StatusCode::UNPROCESSABLE_ENTITY, "validation-failed",
        "Well-formed JSON of the wrong shape (`invalid-body`), or values out of their range (`validation-failed`)",
        "items: at least one line is required");
    TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "over-share",
        "The caller holds more than their share; retry after `Retry-After` seconds",
        "too many requests from this customer; retry later");
    Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable",
        "Overloaded, the database unavailable, or the request took too long (`timeout`); retry after `Retry-After` seconds",
        "the database is unavailable; retry later");
}

/// Adds what every document shares: the bearer security scheme and the
/// problem response components the operations refer to.
pub fn complete(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("HS256 JWT: `sub` is the customer id, `role: \"admin\"` unlocks admin operations"))
                .build(),
        ),
    );
    for (name, response) in all_problem_responses() {
        components.responses.insert(name.to_owned(), response);
    }
    components.schemas.insert("Problem".to_owned(), <Problem as utoipa::PartialSchema>::schema());
}

/// Every `$ref` in `value` that does not name something in `document`.
fn dangling_references(document: &serde_json::Value, value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(|r| r.as_str()) {
                let pointer = reference.trim_start_matches('#');
                if !reference.starts_with('#') || document.pointer(pointer).is_none() {
                    found.push(reference.to_owned());
                }
            }
            map.values().for_each(|v| dangling_references(document, v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dangling_references(document, v, found)),
        _ => {}
    }
}

/// The rules every service's document must follow; each failure is named.
/// Run on the finished document (after `complete`).
pub fn check(openapi: &OpenApi) -> Vec<String> {
    let document = serde_json::to_value(openapi).expect("a document serializes");
    let mut errors = Vec::new();
    let mut dangling = Vec::new();
    dangling_references(&document, &document, &mut dangling);
    errors.extend(dangling.into_iter().map(|r| format!("unresolvable reference {r}")));
    let responses = &document["components"]["responses"];
    let empty = serde_json::Map::new();
    for (path, item) in document["paths"].as_object().unwrap_or(&empty) {
        for (method, operation) in item.as_object().unwrap_or(&empty) {
            let at = format!("{} {path}", method.to_uppercase());
            let mut error = |message: String| errors.push(format!("{at}: {message}"));
            if operation["operationId"].as_str().is_none() {
                error("no operationId".into());
            }
            let secured = operation["security"]
                .as_array()
                .is_some_and(|all| !all.is_empty() && all.iter().all(|s| s.get(BEARER).is_some()));
            if !secured {
                error("no bearer security requirement on the operation".into());
            }
            let documented = operation["responses"].as_object().unwrap_or(&empty);
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let mut needed = vec!["401", "503"];
            if operation.get("requestBody").is_some() {
                needed.extend(["400", "413", "415", "422"]);
            }
            if parameters.iter().any(|p| p["in"] == "path") {
                needed.push("404");
            }
            if parameters.iter().any(|p| p["in"] == "query") {
                needed.push("400");
            }
            for status in needed {
                if !documented.contains_key(status) {
                    error(format!("does not document {status}"));
                }
            }
            if !documented.keys().any(|s| s.starts_with('2')) {
                error("no success response".into());
            }
            for (status, response) in documented {
                let response = match response["$ref"].as_str() {
                    Some(reference) => {
                        let name = reference.trim_start_matches("#/components/responses/");
                        match responses.get(name) {
                            Some(response) => response,
                            None => {
                                error(format!("{status} refers to a missing response {reference}"));
                                continue;
                            }
                        }
                    }
                    None => response,
                };
                let types: Vec<&String> =
                    response["content"].as_object().map(|c| c.keys().collect()).unwrap_or_default();
                if status.as_str() >= "400" && types != [CONTENT_TYPE] {
                    error(format!("{status} is not documented as {CONTENT_TYPE} alone: {types:?}"));
                }
                // JSON, or a stream of server-sent events (each event's data JSON).
                if status.starts_with('2')
                    && !types.is_empty()
                    && types != ["application/json"]
                    && types != ["text/event-stream"]
                {
                    error(format!("{status} is not documented as application/json: {types:?}"));
                }
            }
            for parameter in &parameters {
                if parameter.get("schema").is_none() {
                    error(format!("parameter {} has no schema", parameter["name"]));
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_as_whole_numbers() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[serde(deserialize_with = "deserialize_integer")]
            n: i64,
        }
        let parse = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.n).map_err(|e| e.to_string());
        assert_eq!(parse(r#"{"n": 2}"#), Ok(2));
        assert_eq!(parse(r#"{"n": -2.0}"#), Ok(-2));
        assert_eq!(parse(r#"{"n": 1e3}"#), Ok(1000));
        assert_eq!(parse(r#"{"n": -9223372036854775808}"#), Ok(i64::MIN));
        for bad in
            [r#"{"n": 2.5}"#, r#"{"n": "2"}"#, r#"{"n": null}"#, r#"{"n": 9223372036854775808}"#, r#"{"n": 1e19}"#]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn problem_responses_are_problem_json_with_retry_after_where_sent() {
        for (name, response) in all_problem_responses() {
            let response = serde_json::to_value(response).unwrap();
            let example = &response["content"][CONTENT_TYPE]["example"];
            assert!(example["type"].as_str().unwrap().starts_with("https://saga.dev/problems/"), "{name}");
            let status = example["status"].as_u64().unwrap();
            let retry_after = response["headers"].get("Retry-After").is_some();
            assert_eq!(retry_after, status == 429 || status == 503, "{name}");
        }
    }
}
