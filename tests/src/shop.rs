//! The shop the crash and fault tests share: a catalogue with one scarce SKU,
//! customers with one too poor to pay, a steady stream of orders (some
//! cancelled), and the invariants that must hold once the platform is at rest.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use sqlx::PgPool;

use crate::{Platform, Svc};

pub const SKUS: [(&str, i64, i64); 4] =
    [("A", 100, 1_000_000), ("B", 250, 1_000_000), ("C", 999, 500_000), ("SCARCE", 500, 40)];
pub const CUSTOMERS: [(&str, i64); 4] =
    [("c1", 100_000_000), ("c2", 100_000_000), ("c3", 100_000_000), ("poor", 3_000)];

pub async fn seed(platform: &Platform) {
    for (sku, price, stock) in SKUS {
        platform.put_product(sku, price, stock).await;
    }
    for (customer, balance) in CUSTOMERS {
        platform.put_account(customer, balance).await;
    }
}

/// What the shoppers saw: POSTs answered 202, and POSTs that failed (no
/// answer or a 5xx while a service or a dependency was down; nothing was
/// promised for those).
#[derive(Debug, Default)]
pub struct LoadCounts {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
}

/// Places orders from `clients` sequential clients until `stop` is set,
/// cancelling about one in ten, each client pausing `pace` between orders
/// (none: as fast as it can). Any 4xx is a bug and fails the test.
pub async fn shop(platform: &Platform, clients: usize, pace: Duration, stop: Arc<AtomicBool>) -> Arc<LoadCounts> {
    let counts = Arc::new(LoadCounts::default());
    let url = platform.url(Svc::Order, "");
    let tokens: Arc<HashMap<&str, String>> = Arc::new(CUSTOMERS.iter().map(|(c, _)| (*c, platform.token(c))).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, url, tokens, counts, stop) =
            (platform.http.clone(), url.clone(), tokens.clone(), counts.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (customer, items, cancel) = {
                    let mut rng = rand::rng();
                    let customer = CUSTOMERS[rng.random_range(0..CUSTOMERS.len())].0;
                    let lines = rng.random_range(1..=2);
                    let items: Vec<_> = (0..lines)
                        .map(|_| {
                            json!({"sku": SKUS[rng.random_range(0..SKUS.len())].0, "quantity": rng.random_range(1..=3)})
                        })
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
                        counts.accepted.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(pace).await;
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
                    Ok(r) if r.status().is_server_error() => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(r) => panic!("unexpected {}: {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(_) => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
    counts
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Orders not yet terminal.
pub async fn pending(platform: &Platform) -> i64 {
    count(platform.pool(Svc::Order), "SELECT count(*) FROM orders WHERE status = 'PENDING'").await
}

/// Waits until no order is pending and every outbox is empty.
pub async fn wait_until_quiet(platform: &Platform, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let pending = pending(platform).await;
        let mut outbox = 0;
        for svc in Svc::ALL {
            outbox += count(platform.pool(svc), "SELECT count(*) FROM outbox").await;
        }
        if pending == 0 && outbox == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not quiet after {within:?}: {pending} orders pending, {outbox} outbox rows"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every order terminal, money and stock conserved exactly, one capture per
/// completed order equal to its total, and the dead-letter queues holding
/// exactly the message ids in `expected_dead` (the poison a test injected).
pub async fn check_invariants(platform: &Platform, expected_dead: &BTreeSet<String>) {
    let orders = platform.pool(Svc::Order);
    let payment = platform.pool(Svc::Payment);
    let inventory = platform.pool(Svc::Inventory);

    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status || COALESCE(' ' || failure_reason, ''), count(*) FROM orders GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(orders)
    .await
    .unwrap();
    println!("final statuses: {by_status:?}");
    assert!(by_status.iter().all(|(status, _)| !status.starts_with("PENDING")), "{by_status:?}");

    // Money: Σ balances set = Σ balances now + Σ captured.
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

    // Stock: initial on_hand = on_hand + Σ quantities of completed orders; reserved = 0.
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

    let mut dead = BTreeSet::new();
    for svc in Svc::ALL {
        for message in platform.drain_dlq(svc).await {
            dead.insert(message.message_id.unwrap_or_else(|| format!("(no message id) {:?}", message.headers)));
        }
    }
    assert_eq!(&dead, expected_dead, "the dead-letter queues must hold exactly the injected poison");
}
