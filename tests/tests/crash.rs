//! Crash safety: under a steady stream of orders (and some cancels), each
//! service in turn is SIGKILLed at a random moment and restarted. After a
//! quiet period every order must be final and money and stock conserved
//! exactly, with nothing charged twice and nothing left in outboxes or DLQs.
//!
//! CRASH_TEST_SECONDS (default 20) sets how long load and kills go on;
//! `CRASH_TEST_SECONDS=300 cargo test -p saga-tests --test crash -- --nocapture`
//! runs a longer soak.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use saga_tests::{Options, Platform, Svc};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Mutex;

const SKUS: [(&str, i64, i64); 4] = [("A", 100, 100_000), ("B", 250, 100_000), ("C", 999, 50_000), ("SCARCE", 500, 40)];
const CUSTOMERS: [(&str, i64); 4] = [("c1", 10_000_000), ("c2", 10_000_000), ("c3", 10_000_000), ("poor", 3_000)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_any_service_mid_saga_loses_nothing() {
    let seconds: u64 = std::env::var("CRASH_TEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let options = Options { step_timeout: Duration::from_secs(3), ..Options::default() };
    let platform = Platform::start(options).await;
    for (sku, price, stock) in SKUS {
        platform.put_product(sku, price, stock).await;
    }
    for (customer, balance) in CUSTOMERS {
        platform.put_account(customer, balance).await;
    }
    let platform = Arc::new(Mutex::new(platform));
    let stop_at = Instant::now() + Duration::from_secs(seconds);

    let load = tokio::spawn(generate_load(platform.clone(), stop_at));
    // Kill order, payment, inventory in turn, each at a random moment.
    let mut kills = 0;
    let mut turn = 0;
    while Instant::now() < stop_at {
        let pause = rand::rng().random_range(800..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let svc = Svc::ALL[turn % 3];
        turn += 1;
        let down_for = rand::rng().random_range(0..800);
        platform.lock().await.kill(svc, 0);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(down_for)).await;
        platform.lock().await.restart(svc, 0);
    }
    let (accepted, rejected) = load.await.unwrap();
    let platform = Arc::into_inner(platform).expect("load finished").into_inner();
    platform.wait_ready().await;
    println!(
        "crash test: {seconds}s, {kills} SIGKILLs, {accepted} orders accepted ({:.0}/s), {rejected} POSTs failed while the order service was down",
        accepted as f64 / seconds as f64
    );
    assert!(accepted > 0);

    wait_until_quiet(&platform).await;
    check_invariants(&platform).await;
    platform.shutdown().await;
}

/// Places orders as fast as one client can while the platform is being
/// killed; cancels some. Returns (accepted, failed) POST counts.
async fn generate_load(platform: Arc<Mutex<Platform>>, stop_at: Instant) -> (usize, usize) {
    let (http, url, tokens) = {
        let p = platform.lock().await;
        let tokens: HashMap<&str, String> = CUSTOMERS.iter().map(|(c, _)| (*c, p.token(c))).collect();
        (p.http.clone(), p.url(Svc::Order, ""), tokens)
    };
    let (mut accepted, mut failed) = (0, 0);
    while Instant::now() < stop_at {
        let (customer, items, cancel) = {
            let mut rng = rand::rng();
            let customer = CUSTOMERS[rng.random_range(0..CUSTOMERS.len())].0;
            let lines = rng.random_range(1..=2);
            let items: Vec<_> = (0..lines)
                .map(|_| json!({"sku": SKUS[rng.random_range(0..SKUS.len())].0, "quantity": rng.random_range(1..=3)}))
                .collect();
            (customer, items, rng.random_bool(0.1))
        };
        let response = http
            .post(format!("{url}/api/v1/orders"))
            .bearer_auth(&tokens[customer])
            .json(&json!({"items": items}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 202 => {
                accepted += 1;
                if cancel {
                    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
                    let _ = http
                        .post(format!("{url}/api/v1/orders/{id}/cancel"))
                        .bearer_auth(&tokens[customer])
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                }
            }
            Ok(r) if r.status().is_server_error() => failed += 1,
            Ok(r) => panic!("unexpected {}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (accepted, failed)
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits (up to 90 s) until no order is pending and every outbox is empty.
async fn wait_until_quiet(platform: &Platform) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pending = count(platform.pool(Svc::Order), "SELECT count(*) FROM orders WHERE status = 'PENDING'").await;
        let mut outbox = 0;
        for svc in Svc::ALL {
            outbox += count(platform.pool(svc), "SELECT count(*) FROM outbox").await;
        }
        if pending == 0 && outbox == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "not quiet: {pending} orders pending, {outbox} outbox rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check_invariants(platform: &Platform) {
    let orders = platform.pool(Svc::Order);
    let payment = platform.pool(Svc::Payment);
    let inventory = platform.pool(Svc::Inventory);

    // Every order reached a final status.
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status || COALESCE(' ' || failure_reason, ''), count(*) FROM orders GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(orders)
    .await
    .unwrap();
    println!("final statuses: {by_status:?}");
    assert!(by_status.iter().all(|(status, _)| !status.starts_with("PENDING")), "{by_status:?}");

    // Money: Σ balances set = Σ balances now + Σ captured; one capture per completed order, equal to its total.
    let initial: i64 = CUSTOMERS.iter().map(|(_, b)| b).sum();
    let balances = count(payment, "SELECT COALESCE(sum(balance_cents), 0)::bigint FROM accounts").await;
    let captured =
        count(payment, "SELECT COALESCE(sum(amount_cents), 0)::bigint FROM payments WHERE status = 'CAPTURED'").await;
    assert_eq!(initial, balances + captured, "money not conserved: {balances} + {captured} != {initial}");
    let completed: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT id, total_cents FROM orders WHERE status = 'COMPLETED'")
            .fetch_all(orders)
            .await
            .unwrap();
    let captures: HashMap<uuid::Uuid, i64> =
        sqlx::query_as::<_, (uuid::Uuid, i64)>("SELECT order_id, amount_cents FROM payments WHERE status = 'CAPTURED'")
            .fetch_all(payment)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(captures.len(), completed.len(), "captures must match completed orders one to one");
    for (id, total) in &completed {
        assert_eq!(captures.get(id), Some(total), "order {id}: capture must equal its total");
    }

    // Stock: initial on_hand = on_hand + reserved + Σ quantities of completed orders; reserved = 0.
    let sold: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT line->>'sku', sum((line->>'quantity')::bigint)::bigint
         FROM orders, jsonb_array_elements(items) AS line WHERE status = 'COMPLETED' GROUP BY 1",
    )
    .fetch_all(orders)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for (sku, _, initial) in SKUS {
        let (on_hand, reserved): (i32, i32) = sqlx::query_as("SELECT on_hand, reserved FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(inventory)
            .await
            .unwrap();
        let sold = sold.get(sku).copied().unwrap_or(0);
        assert_eq!(reserved, 0, "{sku}: stock still reserved at rest");
        assert_eq!(initial, on_hand as i64 + sold, "{sku}: stock not conserved (on_hand {on_hand}, sold {sold})");
    }

    // Nothing dead-lettered: no poison was injected in this test.
    for svc in Svc::ALL {
        let dead = platform.drain_dlq(svc).await;
        assert!(dead.is_empty(), "{svc:?} DLQ holds {} messages: {:?}", dead.len(), dead.first());
    }
}
