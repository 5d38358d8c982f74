//! Incident actions on the real services: an operator retries the current
//! step of a saga stuck on a frozen participant (SIGSTOP), or forces it to
//! compensate; who did it and why is on the timeline; customers are refused
//! (403) and finished orders conflict (409).

use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_tests::{Options, Platform, SECRET, Svc};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A token for an on-call operator: an admin whose `sub` the timeline names.
fn oncall() -> String {
    saga_common::auth::mint(SECRET, "oncall-jane", true, Duration::from_secs(3600))
}

/// POSTs an incident action; the status and the JSON body.
async fn act(platform: &Platform, token: &str, id: &str, action: &str, body: Option<Value>) -> (u16, Value) {
    let mut request =
        platform.http.post(platform.url(Svc::Order, &format!("/api/v1/orders/{id}/{action}"))).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    if status >= 400 {
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{status} {body}");
    }
    (status, body)
}

/// The step deadline the order row holds (the timeout worker's clock).
async fn deadline(platform: &Platform, id: &str) -> DateTime<Utc> {
    let id: uuid::Uuid = id.parse().unwrap();
    sqlx::query_scalar("SELECT deadline FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(platform.pool(Svc::Order))
        .await
        .unwrap()
}

async fn wait_reserved(platform: &Platform, sku: &str, reserved: i64) {
    saga_tests::eventually("the stock is reserved", WAIT, || async {
        (platform.product(sku).await["reserved"] == reserved).then_some(())
    })
    .await;
}

/// Waits until the saga has sent the charge: the stock is reserved and the
/// order service has taken that reply (inventory's count alone can run ahead
/// of the orchestrator, and an action then meets the saga still reserving).
async fn wait_charge_sent(platform: &Platform, id: &str) {
    saga_tests::eventually("the charge is sent", WAIT, || async {
        let events = platform.events(id).await;
        events.iter().any(|e| e["kind"] == "command.sent" && e["detail"]["type"] == "payment.charge").then_some(())
    })
    .await;
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

/// Payment frozen while the saga waits for its charge: an operator retries
/// the step. The charge is sent a second time (a new message, the same
/// order), the step's deadline starts afresh, so the saga outlives its
/// original deadline; once payment is resumed it handles both charges, captures
/// once, and the saga completes with money and stock exact.
#[tokio::test]
async fn a_step_retried_on_a_frozen_participant_completes_once_it_resumes() {
    // Long enough that, resumed 1.5 s past its first deadline, payment has 3.5 s to
    // answer before the fresh one even on a loaded machine.
    let step_timeout = Duration::from_secs(10);
    let platform = Platform::start(Options { step_timeout, ..Options::default() }).await;
    platform.put_product("GADGET", 1250, 10).await;
    platform.put_account("erin", 10_000).await;

    platform.pause(Svc::Payment, 0, true);
    let id = platform.place_order("erin", &[("GADGET", 2)]).await;
    wait_reserved(&platform, "GADGET", 2).await;
    wait_charge_sent(&platform, &id).await;
    let first_deadline = deadline(&platform, &id).await;

    // Half the step timeout on: retry, with a reason.
    tokio::time::sleep(step_timeout / 2).await; // time must pass for the deadline to move, on purpose
    let reason = "payment-service frozen (SIGSTOP); resending the charge";
    let (status, order) = act(&platform, &oncall(), &id, "retry", Some(json!({"reason": reason}))).await;
    assert_eq!(status, 202, "{order}");
    assert_eq!((order["id"].as_str(), order["status"].as_str()), (Some(id.as_str()), Some("PENDING")));
    let retried_deadline = deadline(&platform, &id).await;
    assert!(
        retried_deadline >= first_deadline + chrono::Duration::from_std(step_timeout / 2).unwrap(),
        "the retry gives the step a fresh timeout: {first_deadline} -> {retried_deadline}"
    );

    // Past the step's first deadline: without the fresh timeout it would now be compensating.
    let past_first = (first_deadline - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(past_first).await; // on purpose: the original deadline must pass
    let events = platform.events(&id).await;
    assert!(!kinds(&events).contains(&"step.timed_out"), "{events:#?}");
    assert_eq!(platform.order(&id).await["status"], "PENDING");

    platform.pause(Svc::Payment, 0, false);
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!((order["status"].as_str(), order["total_cents"].as_i64()), (Some("COMPLETED"), Some(2500)), "{order}");
    assert_eq!(platform.balance("erin").await, 10_000 - 2500, "charged exactly once");
    let gadget = platform.product("GADGET").await;
    assert_eq!((gadget["on_hand"].as_i64(), gadget["reserved"].as_i64()), (Some(8), Some(0)));
    let payments: Vec<(String, i64)> = sqlx::query_as("SELECT status, amount_cents FROM payments WHERE order_id = $1")
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .fetch_all(platform.pool(Svc::Payment))
        .await
        .unwrap();
    assert_eq!(payments, vec![("CAPTURED".to_owned(), 2500)]);

    // The timeline: who retried and why, the charge sent twice under two
    // message ids, two captures received of which the second changed nothing.
    let events = platform.events(&id).await;
    let retry = events.iter().find(|e| e["kind"] == "retry.requested").expect("retry on the timeline");
    assert_eq!(retry["detail"], json!({"effect": "applied", "by": "oncall-jane", "reason": reason}));
    let charges: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "command.sent" && e["detail"]["type"] == "payment.charge")
        .map(|e| &e["detail"]["message_id"])
        .collect();
    assert_eq!(charges.len(), 2, "{events:#?}");
    assert_ne!(charges[0], charges[1]);
    let captured: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "reply.received" && e["detail"]["type"] == "payment.captured")
        .map(|e| &e["detail"]["effect"])
        .collect();
    assert_eq!(captured, vec![&json!("applied"), &json!({"ignored": "late or duplicate reply"})], "{events:#?}");

    // Finished: neither action applies any more.
    for action in ["retry", "compensate"] {
        let (status, problem) = act(&platform, &oncall(), &id, action, None).await;
        assert_eq!(status, 409, "{action}: {problem}");
        assert!(problem["type"].as_str().unwrap().ends_with(&format!("/cannot-{action}")), "{problem}");
    }
    platform.shutdown().await;
}

/// Payment frozen with the charge waiting in its queue: an operator forces
/// compensation. Inventory releases the stock at once; the order stays
/// PENDING until the frozen payment service refunds. Resumed, it captures the
/// late charge and then refunds it: FAILED `compensated_by_operator`, money
/// and stock as before, the operator on the timeline.
#[tokio::test]
async fn a_saga_forced_to_compensate_while_frozen_fails_with_everything_restored() {
    let platform = Platform::start(Options { step_timeout: Duration::from_secs(30), ..Options::default() }).await;
    platform.put_product("GIZMO", 700, 5).await;
    platform.put_account("frank", 5_000).await;

    platform.pause(Svc::Payment, 0, true);
    let id = platform.place_order("frank", &[("GIZMO", 3)]).await;
    wait_reserved(&platform, "GIZMO", 3).await;
    wait_charge_sent(&platform, &id).await;

    let reason = "payment-service hung; customer asked to abandon";
    let (status, order) = act(&platform, &oncall(), &id, "compensate", Some(json!({"reason": reason}))).await;
    assert_eq!((status, order["status"].as_str()), (202, Some("PENDING")), "{order}");
    // Stock comes back while payment is still frozen; the refund waits for it.
    wait_reserved(&platform, "GIZMO", 0).await;
    assert_eq!(platform.product("GIZMO").await["on_hand"], 5);
    assert_eq!(platform.order(&id).await["status"], "PENDING");
    // Forcing it again, or cancelling it, is refused: it is already compensating.
    let (status, problem) = act(&platform, &oncall(), &id, "compensate", None).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(platform.cancel(&id).await.status(), 409);

    platform.pause(Svc::Payment, 0, false);
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!(
        (order["status"].as_str(), order["failure_reason"].as_str()),
        (Some("FAILED"), Some("compensated_by_operator")),
        "{order}"
    );
    assert_eq!(platform.balance("frank").await, 5_000);
    let gizmo = platform.product("GIZMO").await;
    assert_eq!((gizmo["on_hand"].as_i64(), gizmo["reserved"].as_i64()), (Some(5), Some(0)));
    let payments: Vec<(String,)> = sqlx::query_as("SELECT status FROM payments WHERE order_id = $1")
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .fetch_all(platform.pool(Svc::Payment))
        .await
        .unwrap();
    assert_eq!(payments, vec![("REFUNDED".to_owned(),)], "the late charge was captured, then refunded");

    let events = platform.events(&id).await;
    let forced = events.iter().find(|e| e["kind"] == "compensate.requested").expect("on the timeline");
    assert_eq!(forced["detail"], json!({"effect": "applied", "by": "oncall-jane", "reason": reason}));
    let sent: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "compensation.sent")
        .map(|e| e["detail"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(sent, vec!["payment.refund", "inventory.release"], "{events:#?}");
    let (status, _) = act(&platform, &oncall(), &id, "retry", None).await;
    assert_eq!(status, 409);
    platform.shutdown().await;
}

/// Customers are refused whatever the order; an admin gets 404 for an
/// unknown order, 422 for a bad reason and 415 for a body that is not JSON;
/// nothing is recorded.
#[tokio::test]
async fn incident_actions_are_for_admins_and_check_their_input() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("BOLT", 100, 10).await;
    platform.put_account("gina", 1_000).await;
    let id = platform.place_order("gina", &[("BOLT", 1)]).await;
    let completed = platform.wait_final(&id, WAIT).await;
    assert_eq!(completed["status"], "COMPLETED");
    let timeline = platform.events(&id).await;

    for action in ["retry", "compensate"] {
        // The order's own customer, and another one.
        for customer in ["gina", "mallory"] {
            let (status, problem) = act(&platform, &platform.token(customer), &id, action, None).await;
            assert_eq!(status, 403, "{action} by {customer}: {problem}");
            assert!(problem["type"].as_str().unwrap().ends_with("/forbidden"), "{problem}");
        }
        let unknown = uuid::Uuid::now_v7().to_string();
        let (status, problem) = act(&platform, &oncall(), &unknown, action, None).await;
        assert_eq!(status, 404, "{problem}");
        for reason in [json!(""), json!("   "), json!("a\u{1b}[2Jb"), json!("x".repeat(501)), json!(5)] {
            let (status, problem) = act(&platform, &oncall(), &id, action, Some(json!({"reason": reason}))).await;
            assert_eq!(status, 422, "{action} reason {reason}: {problem}");
        }
        let (status, problem) = act(&platform, &oncall(), &id, action, Some(json!({"why": "x"}))).await;
        assert_eq!(status, 422, "unknown field: {problem}");
        let response = platform
            .http
            .post(platform.url(Svc::Order, &format!("/api/v1/orders/{id}/{action}")))
            .bearer_auth(oncall())
            .body("reason=x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415);
        // Valid (a JSON null body is no reason, as no body), but the order is COMPLETED.
        for body in [Some(json!({"reason": "x".repeat(500)})), Some(json!({"reason": null})), Some(Value::Null), None] {
            let (status, problem) = act(&platform, &oncall(), &id, action, body.clone()).await;
            assert_eq!(status, 409, "{body:?}: {problem}");
        }
    }
    assert_eq!(platform.events(&id).await, timeline, "nothing recorded");
    assert_eq!(platform.balance("gina").await, 900);
    platform.shutdown().await;
}
