//! The saga end to end: real services, real RabbitMQ, real PostgreSQL.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use saga_tests::{Options, Platform, Svc};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn header(headers: &FieldTable, name: &str) -> String {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test]
async fn orders_complete_fail_and_compensate() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("WIDGET", 1500, 10).await;
    platform.put_product("RARE", 99_900, 1).await;
    platform.put_account("alice", 100_000).await;
    platform.put_account("bob", 500).await;

    // Happy path: priced by inventory, charged, confirmed.
    let id = platform.place_order("alice", &[("WIDGET", 2)]).await;
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!(order["status"], "COMPLETED", "{order}");
    assert_eq!(order["total_cents"], 3000);
    assert_eq!(order["items"][0]["unit_price_cents"], 1500);
    assert_eq!(platform.balance("alice").await, 97_000);
    let widget = platform.product("WIDGET").await;
    assert_eq!((widget["on_hand"].as_i64(), widget["reserved"].as_i64()), (Some(8), Some(0)));
    let kinds: Vec<String> =
        platform.events(&id).await.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "command.sent").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "reply.received").count(), 3, "{kinds:?}");

    // Out of stock: nothing reserved, nothing charged.
    let id = platform.place_order("alice", &[("RARE", 2)]).await;
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!((order["status"].as_str(), order["failure_reason"].as_str()), (Some("FAILED"), Some("out_of_stock")));

    // Unknown SKU.
    let id = platform.place_order("alice", &[("WIDGET", 1), ("NOPE", 1)]).await;
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!(order["failure_reason"], "unknown_sku");
    assert_eq!(platform.product("WIDGET").await["on_hand"], 8);

    // Insufficient funds: the reservation is released.
    let id = platform.place_order("bob", &[("WIDGET", 1)]).await;
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!(
        (order["status"].as_str(), order["failure_reason"].as_str()),
        (Some("FAILED"), Some("insufficient_funds"))
    );
    assert_eq!(platform.balance("bob").await, 500);
    let widget = platform.product("WIDGET").await;
    assert_eq!((widget["on_hand"].as_i64(), widget["reserved"].as_i64()), (Some(8), Some(0)));
    assert_eq!(platform.balance("alice").await, 97_000);

    // Cancel a COMPLETED order: refunded and restocked.
    let id = platform.place_order("alice", &[("WIDGET", 3)]).await;
    platform.wait_status(&id, "COMPLETED", WAIT).await;
    assert_eq!(platform.balance("alice").await, 92_500);
    assert_eq!(platform.cancel(&id).await.status(), 202);
    platform.wait_status(&id, "CANCELLED", WAIT).await;
    assert_eq!(platform.balance("alice").await, 97_000);
    assert_eq!(platform.product("WIDGET").await["on_hand"], 8);
    let payment: serde_json::Value = platform
        .http
        .get(platform.url(Svc::Payment, &format!("/api/v1/payments/{id}")))
        .bearer_auth(platform.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(payment["status"], "REFUNDED");
    // A finished order cannot be cancelled again.
    assert_eq!(platform.cancel(&id).await.status(), 409);

    platform.shutdown().await;
}

#[tokio::test]
async fn cancel_while_running_and_step_timeout_compensate() {
    let options = Options { step_timeout: Duration::from_millis(1500), ..Options::default() };
    let platform = Platform::start(options).await;
    platform.put_product("WIDGET", 1000, 10).await;
    platform.put_account("carol", 10_000).await;

    // Payment is frozen: the saga waits in its charging step; cancel it there.
    platform.pause(Svc::Payment, 0, true);
    let id = platform.place_order("carol", &[("WIDGET", 2)]).await;
    let deadline = std::time::Instant::now() + WAIT;
    while platform.product("WIDGET").await["reserved"] != 2 {
        assert!(std::time::Instant::now() < deadline, "stock never reserved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(platform.cancel(&id).await.status(), 202);
    // A second cancel of the same running saga is accepted and changes nothing.
    assert_eq!(platform.cancel(&id).await.status(), 202);
    platform.pause(Svc::Payment, 0, false);
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(platform.balance("carol").await, 10_000);
    let widget = platform.product("WIDGET").await;
    assert_eq!((widget["on_hand"].as_i64(), widget["reserved"].as_i64()), (Some(10), Some(0)));

    // Payment frozen past the step timeout: the saga compensates and fails with `timeout`;
    // the charge that payment processes late is refunded (or voided) once it wakes up.
    platform.pause(Svc::Payment, 0, true);
    let id = platform.place_order("carol", &[("WIDGET", 1)]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // past the 1.5 s step timeout, on purpose
    let pending = platform.order(&id).await;
    assert_eq!(pending["status"], "PENDING", "refund awaits the frozen payment service");
    platform.pause(Svc::Payment, 0, false);
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!((order["status"].as_str(), order["failure_reason"].as_str()), (Some("FAILED"), Some("timeout")));
    assert_eq!(platform.balance("carol").await, 10_000);
    let widget = platform.product("WIDGET").await;
    assert_eq!((widget["on_hand"].as_i64(), widget["reserved"].as_i64()), (Some(10), Some(0)));
    let kinds: Vec<String> =
        platform.events(&id).await.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert!(kinds.contains(&"step.timed_out".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"compensation.sent".to_owned()), "{kinds:?}");

    platform.shutdown().await;
}

#[tokio::test]
async fn duplicates_have_one_effect_and_poison_is_dead_lettered() {
    let platform = Platform::start(Options::default()).await;
    platform.put_account("dave", 10_000).await;
    let order_id = uuid::Uuid::now_v7();
    let charge = json!({"type": "payment.charge", "order_id": order_id, "customer_id": "dave", "amount_cents": 700});
    let body = serde_json::to_vec(&charge).unwrap();
    let properties = |message_id: &str| {
        BasicProperties::default()
            .with_message_id(message_id.into())
            .with_type("payment.charge".into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
    };
    // The same message twice (a redelivery), then the same command under a new id (a resend).
    let message_id = uuid::Uuid::new_v4().to_string();
    platform.publish_raw(Svc::Payment, properties(&message_id), &body).await;
    platform.publish_raw(Svc::Payment, properties(&message_id), &body).await;
    platform.publish_raw(Svc::Payment, properties(&uuid::Uuid::new_v4().to_string()), &body).await;

    // Poison: not JSON, and JSON of an unknown type.
    platform
        .publish_raw(Svc::Inventory, properties(&uuid::Uuid::new_v4().to_string()).with_type("x".into()), b"{not json")
        .await;
    platform
        .publish_raw(
            Svc::Inventory,
            BasicProperties::default().with_message_id(uuid::Uuid::new_v4().to_string().as_str().into()),
            br#"{"type":"inventory.explode"}"#,
        )
        .await;

    // Wait for the effects: two poison messages dead-lettered, the charge applied.
    let deadline = std::time::Instant::now() + WAIT;
    let mut dead = Vec::new();
    while dead.len() < 2 {
        dead.extend(platform.drain_dlq(Svc::Inventory).await);
        assert!(std::time::Instant::now() < deadline, "poison not dead-lettered: {}", dead.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for message in &dead {
        let headers = &message.headers;
        assert!(header(headers, "x-failure-reason").contains("malformed"), "{headers:?}");
        assert_eq!(header(headers, "x-original-queue"), format!("{}.inventory.commands", platform.name));
    }
    let handled = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM inbox WHERE message_type = 'payment.charge'")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    while handled(platform.pool(Svc::Payment)).await < 2 {
        assert!(std::time::Instant::now() < deadline, "charges not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(platform.balance("dave").await, 9_300, "charged exactly once");
    let captured: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = $1 AND status = 'CAPTURED'")
        .bind(order_id)
        .fetch_one(platform.pool(Svc::Payment))
        .await
        .unwrap();
    assert_eq!(captured, 1);
    platform.shutdown().await;
}

#[tokio::test]
async fn two_replicas_of_each_service_share_the_work() {
    let platform = Platform::start(Options { replicas: 2, ..Options::default() }).await;
    platform.put_product("WIDGET", 100, 1000).await;
    platform.put_account("erin", 1_000_000).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = platform.place_order("erin", &[("WIDGET", 1 + i % 3)]).await;
        ids.push(id);
    }
    let mut sold = 0;
    for id in &ids {
        let order = platform.wait_final(id, WAIT).await;
        assert_eq!(order["status"], "COMPLETED", "{order}");
        sold += order["items"][0]["quantity"].as_i64().unwrap();
    }
    let widget = platform.product("WIDGET").await;
    assert_eq!(widget["on_hand"].as_i64().unwrap() + sold, 1000);
    assert_eq!(widget["reserved"], 0);
    assert_eq!(platform.balance("erin").await, 1_000_000 - sold * 100);
    // Both replicas of each consumer took part.
    for svc in [Svc::Payment, Svc::Inventory, Svc::Order] {
        for replica in 0..2 {
            let metrics = platform
                .http
                .get(platform.replica_url(svc, replica, "/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(metrics.contains("outcome=\"handled\""), "{svc:?} replica {replica} handled nothing");
        }
    }
    platform.shutdown().await;
}

/// Orders placed at the same moment are written in shared transactions
/// (group commit), and each still completes exactly once.
#[tokio::test]
async fn concurrent_orders_are_written_in_batches() {
    const ORDERS: i64 = 64;
    let platform = Platform::start(Options::default()).await;
    platform.put_product("BOLT", 10, 1000).await;
    platform.put_account("fay", 1_000_000).await;
    let ids = futures_util::future::join_all((0..ORDERS).map(|_| platform.place_order("fay", &[("BOLT", 2)]))).await;
    for id in &ids {
        let order = platform.wait_final(id, WAIT).await;
        assert_eq!(order["status"], "COMPLETED", "{order}");
    }
    assert_eq!(platform.product("BOLT").await["on_hand"], 1000 - 2 * ORDERS);
    assert_eq!(platform.balance("fay").await, 1_000_000 - 20 * ORDERS);
    let metrics = platform.http.get(platform.url(Svc::Order, "/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(value("saga_order_write_batch_size_sum"), ORDERS as f64, "every order written once");
    let transactions = value("saga_order_write_batch_size_count");
    assert!(transactions < ORDERS as f64, "{ORDERS} orders took {transactions} transactions: none shared one");
    platform.shutdown().await;
}

#[tokio::test]
async fn over_the_running_saga_limit_new_orders_are_refused_at_the_edge() {
    let env = vec![("MAX_RUNNING_SAGAS", "2".to_owned())];
    let platform = Platform::start(Options { step_timeout: Duration::from_secs(30), env, ..Options::default() }).await;
    platform.put_product("A", 100, 100).await;
    platform.put_account("c1", 100_000).await;
    // Payment frozen: sagas stay running.
    platform.pause(Svc::Payment, 0, true);
    let post = || async {
        platform
            .http
            .post(platform.url(Svc::Order, "/api/v1/orders"))
            .bearer_auth(platform.token("c1"))
            .json(&json!({"items": [{"sku": "A", "quantity": 1}]}))
            .send()
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut accepted = 0;
    let refused = loop {
        let response = post().await;
        match response.status().as_u16() {
            202 => accepted += 1,
            503 => break response,
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
        assert!(std::time::Instant::now() < deadline, "never refused after {accepted} orders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(accepted >= 2, "the limit is 2 running sagas, {accepted} accepted");
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/overloaded"), "{problem}");
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(platform.pool(Svc::Order)).await.unwrap();
    assert_eq!(running, accepted, "a refused order is not stored");

    // Once the sagas finish, orders are accepted again.
    platform.pause(Svc::Payment, 0, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while post().await.status() != 202 {
        assert!(std::time::Instant::now() < deadline, "orders still refused after the sagas finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform.shutdown().await;
}
