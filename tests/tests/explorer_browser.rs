//! The saga explorer in a real browser: a platform of real services (the
//! order service serving `/ui/` and forwarding the inventory and payment
//! APIs), prepared here, then tests/browser/explorer.mjs drives Debian's
//! headless Chromium through it with playwright-core: sign-in by field and
//! by link, a customer denied another's order, finding an order by filter,
//! a saga's steps arriving live while payment is frozen (SIGSTOP) and
//! resumed, retry/compensate/cancel with confirmation, the long-poll
//! fallback, replaying and purging dead letters, the catalogue and
//! accounts, phone width, labels, focus and contrast. It writes the
//! screenshots in docs/explorer/.
//!
//! Needs Chromium and the npm packages: `scripts/explorer-test.sh` installs
//! both (idempotently) and runs this test; scripts/test.sh runs that script
//! as its own step, so the workspace run leaves it out (`#[ignore]`).

use std::process::Command;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use saga_tests::{Options, Platform, Svc, eventually};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and tests/browser/node_modules: run scripts/explorer-test.sh"]
async fn the_explorer_in_headless_chromium() {
    // A step timeout far longer than the test holds payment frozen.
    let options = Options { step_timeout: Duration::from_secs(120), ..Options::default() };
    let mut platform = Platform::start(options).await;
    let env = [
        ("EXPLORER_INVENTORY_URL", platform.url(Svc::Inventory, "")),
        ("EXPLORER_PAYMENT_URL", platform.url(Svc::Payment, "")),
    ];
    platform.restart_with(Svc::Order, 0, &env);
    platform.wait_ready().await;

    platform.put_product("SKU-1", 1250, 100).await;
    platform.put_product("SKU-2", 499, 40).await;
    platform.put_account("alice", 1_000_000).await;
    platform.put_account("bob", 100).await;
    let mut alice = Vec::new();
    for items in [&[("SKU-1", 1)][..], &[("SKU-2", 2)], &[("SKU-1", 1), ("SKU-2", 3)]] {
        alice.push(platform.place_order("alice", items).await);
    }
    let bob = platform.place_order("bob", &[("SKU-1", 1)]).await;
    for id in &alice {
        platform.wait_status(id, "COMPLETED", WAIT).await;
    }
    let failed = platform.wait_final(&bob, WAIT).await;
    assert_eq!(failed["failure_reason"], "insufficient_funds");

    // A dead letter to replay (a real message of a finished saga, so the
    // replay is handled once and changes nothing) and poison beside it.
    let confirm_id = platform
        .events(&alice[0])
        .await
        .iter()
        .find(|e| e["detail"]["type"] == "inventory.confirm")
        .and_then(|e| e["detail"]["message_id"].as_str().map(str::to_owned))
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-correlation-id".into(), AMQPValue::LongString("explorer-demo".into()));
    let properties = BasicProperties::default()
        .with_message_id(confirm_id.as_str().into())
        .with_type("inventory.confirm".into())
        .with_headers(headers);
    let body = format!(r#"{{"type":"inventory.confirm","order_id":"{}"}}"#, alice[0]);
    platform.dead_letter(Svc::Inventory, properties, body.as_bytes(), "injected by the test").await;
    let poison = uuid::Uuid::new_v4().to_string();
    platform
        .publish_raw(Svc::Inventory, BasicProperties::default().with_message_id(poison.as_str().into()), b"{")
        .await;
    let dead_letters = platform.url(Svc::Order, "/api/v1/dead-letters");
    eventually("both messages in the inventory dead-letter queue", WAIT, || async {
        let all: Value = platform
            .http
            .get(&dead_letters)
            .bearer_auth(platform.admin_token())
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let inventory = all["queues"].as_array()?.iter().find(|q| q["queue"] == "inventory")?.clone();
        (inventory["depth"] == 2).then_some(())
    })
    .await;

    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/browser");
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/explorer");
    let failure = saga_tests::bin_dir().join("explorer-failure.png");
    let output = Command::new("node")
        .arg("explorer.mjs")
        .current_dir(browser_dir)
        .env("BASE_URL", platform.url(Svc::Order, ""))
        .env("ADMIN_TOKEN", platform.admin_token())
        .env("ALICE_TOKEN", platform.token("alice"))
        .env("BOB_ORDER", &bob)
        .env("ALICE_ORDERS", alice.join(","))
        .env("PAYMENT_PID", platform.pid(Svc::Payment, 0).to_string())
        .env("DLQ_REPLAY_ID", &confirm_id)
        .env("SHOTS", shots)
        .env("FAILURE_SHOT", &failure)
        .output()
        .expect("run node (scripts/explorer-test.sh installs what it needs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    platform.assert_running();
    assert!(output.status.success(), "the browser test failed (screenshot: {failure:?}):\n{stdout}\n{stderr}");
    assert!(stdout.contains("explorer: every check passed"), "{stdout}");

    // What the page did is what the services hold.
    let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
        .bind(&confirm_id)
        .fetch_one(platform.pool(Svc::Inventory))
        .await
        .unwrap();
    assert_eq!(handled, 1, "the replayed message was handled once");
    platform.shutdown().await;
}
