//! Crash safety: under a steady stream of orders (and some cancels), each
//! service in turn is SIGKILLed at a random moment and restarted. After a
//! quiet period every order must be final and money and stock conserved
//! exactly, with nothing charged twice and nothing left in outboxes or DLQs;
//! and a subscriber bound to `{platform}.events` got each final status's
//! order event (at least once, one event id each), and no other; and a
//! webhook receiver registered for every customer's events applied each of
//! them exactly once (deduplicating by webhook-id), signed, with no delivery
//! logged as succeeding twice. The notification service is killed in turn
//! with the others.
//!
//! CRASH_TEST_SECONDS (default 20) sets how long load and kills go on;
//! `CRASH_TEST_SECONDS=300 cargo test -p saga-tests --test crash -- --nocapture`
//! runs a longer soak.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use saga_tests::webhooks::{self, WebhookReceiver};
use saga_tests::{EventSubscriber, Options, Platform, Svc, shop};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_any_service_mid_saga_loses_nothing() {
    let seconds: u64 = std::env::var("CRASH_TEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let options =
        Options { step_timeout: Duration::from_secs(3), env: webhooks::local_delivery_env(), ..Options::default() };
    let mut platform = Platform::start(options).await;
    shop::seed(&platform).await;
    let events = platform.subscribe_events("order.*").await;
    let (receiver, url) = WebhookReceiver::start().await;
    let (_, secret) = webhooks::subscribe_all(&platform, &url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = shop::shop(&platform, 1, Duration::ZERO, stop.clone()).await;
    let stop_at = Instant::now() + Duration::from_secs(seconds);

    // Kill order, payment, inventory, notification in turn, each at a random moment.
    let mut kills = 0;
    let mut turn = 0;
    while Instant::now() < stop_at {
        let pause = rand::rng().random_range(800..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let svc = Svc::ALL[turn % Svc::ALL.len()];
        turn += 1;
        let down_for = rand::rng().random_range(0..800);
        platform.kill(svc, 0);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(down_for)).await;
        platform.restart(svc, 0);
    }
    stop.store(true, Ordering::Relaxed);
    platform.wait_ready().await;
    let (accepted, refused) = (counts.accepted.load(Ordering::Relaxed), counts.refused.load(Ordering::Relaxed));
    println!(
        "crash test: {seconds}s, {kills} SIGKILLs, {accepted} orders accepted ({:.0}/s), {refused} POSTs failed while the order service was down",
        accepted as f64 / seconds as f64
    );
    assert!(accepted > 0);

    shop::wait_until_quiet(&platform, Duration::from_secs(90)).await;
    // Nothing dead-lettered: no poison was injected in this test.
    shop::check_invariants(&platform, &BTreeSet::new()).await;
    check_events(&platform, &events).await;
    events.close().await;
    let (requests, applied) = webhooks::check_notified(&platform, &receiver, &secret, Duration::from_secs(60)).await;
    println!("crash test: {requests} webhook requests received, {applied} distinct webhook-ids applied");
    platform.shutdown().await;
}

/// id, customer_id, status, total_cents, failure_reason
type OrderRow = (uuid::Uuid, String, String, Option<i64>, Option<String>);

/// Every final order's events arrived despite the kills, none was invented:
/// per order, one event id per event type (redeliveries of an id allowed:
/// at least once), the types its statuses call for, the payload matching
/// the order row.
async fn check_events(platform: &Platform, subscriber: &EventSubscriber) {
    platform.wait_outbox_drained(Duration::from_secs(30)).await;
    let received = subscriber.take().await;
    // order id -> event type -> (event ids, last payload)
    let mut by_order: BTreeMap<String, BTreeMap<String, (BTreeSet<String>, Value)>> = BTreeMap::new();
    for event in &received {
        assert_eq!(event.body["event_id"].as_str(), Some(event.message_id.as_str()), "{:?}", event.body);
        assert_eq!(event.body["type"].as_str(), Some(event.routing_key.as_str()));
        let order = event.body["order_id"].as_str().unwrap().to_owned();
        let entry = by_order.entry(order).or_default().entry(event.routing_key.clone()).or_default();
        entry.0.insert(event.message_id.clone());
        entry.1 = event.body.clone();
    }
    let orders: Vec<OrderRow> =
        sqlx::query_as("SELECT id, customer_id, status, total_cents, failure_reason FROM orders")
            .fetch_all(platform.pool(Svc::Order))
            .await
            .unwrap();
    let unique: usize = by_order.values().flat_map(|types| types.values()).map(|(ids, _)| ids.len()).sum();
    println!("crash test: {} order events received ({unique} distinct) for {} orders", received.len(), orders.len());
    for (id, customer, status, total, reason) in &orders {
        let events = by_order.remove(&id.to_string()).unwrap_or_default();
        let types: Vec<&str> = events.keys().map(String::as_str).collect();
        let expected: &[&[&str]] = match status.as_str() {
            "COMPLETED" => &[&["order.completed"]],
            "FAILED" => &[&["order.failed"]],
            // Cancelled while running, or completed and then cancelled.
            "CANCELLED" => &[&["order.cancelled"], &["order.cancelled", "order.completed"]],
            other => panic!("order {id} is {other} at rest"),
        };
        assert!(expected.contains(&types.as_slice()), "order {id} ({status}): events {events:?}");
        for (kind, (ids, body)) in &events {
            assert_eq!(ids.len(), 1, "order {id}: {kind} published under several event ids {ids:?}");
            assert_eq!(body["customer_id"].as_str(), Some(customer.as_str()));
            assert_eq!(body["total_cents"].as_i64(), *total, "order {id}: {body}");
            let expected_reason = if kind == "order.failed" { reason.as_deref() } else { None };
            assert_eq!(body["failure_reason"].as_str(), expected_reason, "order {id}: {body}");
        }
    }
    assert!(by_order.is_empty(), "events for orders that do not exist: {by_order:?}");
}
