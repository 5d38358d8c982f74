//! The order API's request models, through the extractors the routes use:
//! each input is tried as
//! - the body of `POST /api/v1/orders`: `ApiJson<PlaceOrder>` (axum's JSON
//!   extractor and the problem+json rejections), then `PlaceOrder::validate`
//!   and what `place_order` does with an accepted order before the database
//!   (the request hash's serialization, the `i32` quantities);
//! - the query string of `GET /api/v1/orders/{id}` and `GET /api/v1/orders`:
//!   `ApiQuery<GetQuery>` and `ApiQuery<ListQuery>`;
//! - an `Idempotency-Key` header value: `validate_idempotency_key`.
//!
//! The range checks of `wait`, `limit`, `status` and `cursor` are written in
//! the handlers (src/api/orders.rs), not in the models, so they are not
//! reached here; the end-to-end tests cover them.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, Request, header};
use libfuzzer_sys::fuzz_target;
use order_service::model::{
    GetQuery, ListQuery, MAX_IDEMPOTENCY_KEY, MAX_LINES, MAX_QUANTITY, PlaceOrder, valid_sku, validate_idempotency_key,
};
use saga_common::problem::{ApiJson, ApiQuery, Problem};

/// The extractors only await a body that is already complete: one poll.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an extractor waited on a complete request"),
    }
}

fn assert_problem(problem: &Problem, statuses: &[u16]) {
    assert!(statuses.contains(&problem.status), "status {} for {problem:?}", problem.status);
    assert!(problem.kind.starts_with("https://saga.dev/problems/"), "{problem:?}");
}

fn body(data: &[u8]) {
    let request = Request::post("/api/v1/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(data.to_vec()))
        .expect("a valid request");
    let order = match now(ApiJson::<PlaceOrder>::from_request(request, &())) {
        Ok(ApiJson(order)) => order,
        // 400 malformed JSON, 422 wrong shape or unknown field.
        Err(problem) => return assert_problem(&problem, &[400, 422]),
    };
    // place_order hashes the serialized request for Idempotency-Key: it must
    // serialize (it `expect`s so) and be stable through a round trip.
    let serialized = serde_json::to_vec(&order).expect("request serializes");
    let again: PlaceOrder = serde_json::from_slice(&serialized).expect("a serialized request reads back");
    assert_eq!(serde_json::to_vec(&again).unwrap(), serialized);
    match order.validate() {
        Ok(()) => {
            assert!((1..=MAX_LINES).contains(&order.items.len()));
            for line in &order.items {
                assert!(valid_sku(&line.sku) && (1..=64).contains(&line.sku.len()), "{:?}", line.sku);
                assert!(line.sku.bytes().all(|b| b.is_ascii_graphic()), "{:?}", line.sku);
                assert!((1..=MAX_QUANTITY).contains(&line.quantity));
                // place_order stores `quantity as i32`: must be lossless.
                assert_eq!(i64::from(line.quantity as i32), line.quantity);
            }
        }
        Err(problem) => assert_problem(&problem, &[422]),
    }
}

fn query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else { return };
    // Only what a request line can hold reaches the extractor.
    let Ok(request) = Request::get(format!("/api/v1/orders?{query}")).body(Body::empty()) else { return };
    let (mut parts, _) = request.into_parts();
    if let Err(problem) = now(ApiQuery::<GetQuery>::from_request_parts(&mut parts, &())) {
        assert_problem(&problem, &[400]);
    }
    if let Err(problem) = now(ApiQuery::<ListQuery>::from_request_parts(&mut parts, &())) {
        assert_problem(&problem, &[400]);
    }
}

fn idempotency_key(data: &[u8]) {
    // As place_order reads the header: a header value, then visible ASCII.
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let Ok(key) = value.to_str() else { return };
    match validate_idempotency_key(key) {
        Ok(()) => {
            assert!((1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()));
            assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
        }
        Err(problem) => assert_problem(&problem, &[400]),
    }
}

fuzz_target!(|data: &[u8]| {
    body(data);
    query(data);
    idempotency_key(data);
});
