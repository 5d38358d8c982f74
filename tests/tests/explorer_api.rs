//! What the saga explorer (`/ui/`) needs from the APIs, on real services:
//! the order search (filters, counts, paging, who may search whom), the
//! live event stream, the dead-letter admin routes, the payment lists, the
//! one-origin forwarding and the embedded page itself.

use std::time::Duration;

use lapin::BasicProperties;
use reqwest::{Response, StatusCode};
use saga_tests::{Options, Platform, Svc, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn get(platform: &Platform, svc: Svc, path: &str, token: &str) -> Response {
    platform.http.get(platform.url(svc, path)).bearer_auth(token).send().await.unwrap()
}

async fn json_ok(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// A problem+json answer with this status; returns its `type`.
async fn problem(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "{:?}", response.url().path());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    body["type"].as_str().unwrap().to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect()
}

async fn place_with_correlation(platform: &Platform, customer: &str, correlation: &str) -> String {
    let response = platform
        .http
        .post(platform.url(Svc::Order, "/api/v1/orders"))
        .bearer_auth(platform.token(customer))
        .header("x-correlation-id", correlation)
        .json(&json!({"items": [{"sku": "A", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_found_by_every_filter_counted_and_paged() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("A", 100, 1000).await;
    platform.put_product("B", 100, 0).await;
    platform.put_account("alice", 1_000_000).await;
    platform.put_account("bob", 0).await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(platform.place_order("alice", &[("A", 1)]).await);
    }
    let correlation = format!("explorer-{}", uuid::Uuid::new_v4());
    let tagged = place_with_correlation(&platform, "alice", &correlation).await;
    alice.push(tagged.clone());
    let out_of_stock = platform.place_order("alice", &[("B", 1)]).await;
    alice.push(out_of_stock.clone());
    let poor = platform.place_order("bob", &[("A", 1)]).await;
    for id in alice.iter().chain([&poor]) {
        platform.wait_final(id, WAIT).await;
    }
    let admin = platform.admin_token();
    let list = |query: String, token: String| {
        let platform = &platform;
        async move { json_ok(get(platform, Svc::Order, &format!("/api/v1/orders?{query}"), &token).await).await }
    };

    let failed = list("status=FAILED".into(), admin.clone()).await;
    assert_eq!(ids(&failed).len(), 2, "{failed}");
    let declined = list("failure_reason=insufficient_funds".into(), admin.clone()).await;
    assert_eq!(ids(&declined), vec![poor.clone()]);
    let missing = list("failure_reason=out_of_stock&customer_id=alice".into(), admin.clone()).await;
    assert_eq!(ids(&missing), vec![out_of_stock.clone()]);
    let of_alice = list("customer_id=alice".into(), admin.clone()).await;
    let mut expected = alice.clone();
    expected.reverse(); // newest first
    assert_eq!(ids(&of_alice), expected);
    let by_correlation = list(format!("correlation_id={correlation}"), admin.clone()).await;
    assert_eq!(ids(&by_correlation), vec![tagged.clone()]);
    for cut in [1, 8, 9, 13, 36] {
        let prefix = &poor[..cut];
        let found = ids(&list(format!("id_prefix={}", prefix.to_uppercase()), admin.clone()).await);
        assert!(found.contains(&poor) && found.iter().all(|id| id.starts_with(prefix)), "{prefix}: {found:?}");
    }
    let after = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = list(format!("created_after={}", urlencode(&after)), admin.clone()).await;
    assert!(ids(&none).is_empty());
    let window = format!("created_after={}&created_before={}", urlencode(&started.to_rfc3339()), urlencode(&after));
    assert_eq!(ids(&list(format!("{window}&customer_id=bob"), admin.clone()).await), vec![poor.clone()]);
    let before_all =
        list(format!("created_before={}&customer_id=alice", urlencode(&started.to_rfc3339())), admin.clone());
    assert!(ids(&before_all.await).is_empty());

    // Paging through alice's five orders two at a time: every one once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = list(format!("customer_id=alice&limit=2{cursor}"), admin.clone()).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, expected);

    let counts = json_ok(get(&platform, Svc::Order, "/api/v1/orders/counts?customer_id=alice", &admin).await).await;
    assert_eq!(counts, json!({"PENDING": 0, "COMPLETED": 4, "FAILED": 1, "CANCELLED": 0, "total": 5}));
    let all = json_ok(get(&platform, Svc::Order, "/api/v1/orders/counts", &admin).await).await;
    assert_eq!((all["FAILED"].as_i64(), all["total"].as_i64()), (Some(2), Some(6)), "{all}");

    // A customer searches only their own orders.
    let bob = platform.token("bob");
    let own = json_ok(get(&platform, Svc::Order, "/api/v1/orders/counts", &bob).await).await;
    assert_eq!(own, json!({"PENDING": 0, "COMPLETED": 0, "FAILED": 1, "CANCELLED": 0, "total": 1}));
    assert_eq!(ids(&list("status=FAILED".into(), bob.clone()).await), vec![poor.clone()]);
    assert!(ids(&list(format!("correlation_id={correlation}"), bob.clone()).await).is_empty());
    assert_eq!(ids(&list("customer_id=bob".into(), bob.clone()).await), vec![poor.clone()]);
    for path in ["/api/v1/orders?customer_id=alice", "/api/v1/orders/counts?customer_id=alice"] {
        assert_eq!(
            problem(get(&platform, Svc::Order, path, &bob).await, StatusCode::FORBIDDEN).await,
            kind("forbidden")
        );
    }

    // Every new parameter is checked.
    for query in [
        "failure_reason=nope",
        "failure_reason=",
        "created_after=yesterday",
        "created_before=2026-13-01T00:00:00Z",
        "correlation_id=",
        "correlation_id=has%20space",
        "id_prefix=xyz",
        "id_prefix=0190b8f13",
        "id_prefix=",
        "customer_id=",
        "colour=blue",
    ] {
        for path in ["/api/v1/orders", "/api/v1/orders/counts"] {
            let response = get(&platform, Svc::Order, &format!("{path}?{query}"), &admin).await;
            assert_eq!(problem(response, StatusCode::BAD_REQUEST).await, kind("invalid-query"), "{path}?{query}");
        }
    }
    let response = platform.http.get(platform.url(Svc::Order, "/api/v1/orders/counts")).send().await.unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    platform.shutdown().await;
}

fn kind(name: &str) -> String {
    format!("https://saga.dev/problems/{name}")
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

/// Reads server-sent events from `response` until `stop` says so; returns them as (event, data).
async fn read_events(
    response: &mut Response,
    events: &mut Vec<(String, Value)>,
    buffer: &mut String,
    stop: impl Fn(&[(String, Value)]) -> bool,
) {
    while !stop(events) {
        let chunk = tokio::time::timeout(WAIT, response.chunk()).await.expect("an event in time").unwrap();
        let Some(chunk) = chunk else { panic!("the stream ended early: {events:?}") };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(cut) = buffer.find("\n\n") {
            let block: String = buffer.drain(..cut + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
}

fn timeline_types(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(name, _)| name == "timeline")
        .flat_map(|(_, entries)| entries.as_array().unwrap().clone())
        .map(|e| format!("{} {}", e["kind"].as_str().unwrap(), e["detail"]["type"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_each_step_as_it_happens_then_ends() {
    let options = Options { step_timeout: Duration::from_secs(60), ..Options::default() };
    let platform = Platform::start(options).await;
    platform.put_product("A", 250, 10).await;
    platform.put_account("alice", 10_000).await;
    // Payment is frozen: the saga waits at the charge step.
    platform.pause(Svc::Payment, 0, true);
    let id = platform.place_order("alice", &[("A", 2)]).await;
    let mut response =
        get(&platform, Svc::Order, &format!("/api/v1/orders/{id}/stream"), &platform.token("alice")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (mut events, mut buffer) = (Vec::new(), String::new());
    read_events(&mut response, &mut events, &mut buffer, |events| {
        timeline_types(events).iter().any(|t| t == "command.sent payment.charge")
    })
    .await;
    let first = &events[0];
    assert_eq!((first.0.as_str(), first.1["id"].as_str()), ("order", Some(id.as_str())));
    assert!(first.1["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{first:?}");
    assert!(!events.iter().any(|(name, _)| name == "end"), "not final while payment is frozen: {events:?}");
    let priced = events.iter().rev().find(|(name, _)| name == "order").unwrap();
    assert_eq!(priced.1["total_cents"], 500, "the order event follows the pricing: {priced:?}");

    platform.pause(Svc::Payment, 0, false);
    read_events(&mut response, &mut events, &mut buffer, |events| events.iter().any(|(name, _)| name == "end")).await;
    assert_eq!(events.last().unwrap(), &("end".to_owned(), json!({"status": "COMPLETED"})));
    let types = timeline_types(&events);
    for step in
        ["reply.received payment.captured", "command.sent inventory.confirm", "reply.received inventory.confirmed"]
    {
        assert!(types.iter().any(|t| t == step), "{step} missing from {types:?}");
    }
    // Every entry once, in the order of the timeline.
    assert_eq!(types.len(), platform.events(&id).await.len(), "{types:?}");
    assert!(tokio::time::timeout(WAIT, response.chunk()).await.unwrap().unwrap().is_none(), "closed after end");

    // A final order: its state, whole timeline and the end at once.
    let mut again = get(&platform, Svc::Order, &format!("/api/v1/orders/{id}/stream"), &platform.admin_token()).await;
    let (mut events, mut buffer) = (Vec::new(), String::new());
    read_events(&mut again, &mut events, &mut buffer, |e| e.iter().any(|(name, _)| name == "end")).await;
    assert_eq!(events.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["order", "timeline", "end"]);

    let other = get(&platform, Svc::Order, &format!("/api/v1/orders/{id}/stream"), &platform.token("mallory")).await;
    assert_eq!(problem(other, StatusCode::NOT_FOUND).await, kind("not-found"));
    let bad = get(&platform, Svc::Order, "/api/v1/orders/not-a-uuid/stream", &platform.admin_token()).await;
    problem(bad, StatusCode::BAD_REQUEST).await;
    let anonymous = platform.http.get(platform.url(Svc::Order, &format!("/api/v1/orders/{id}/stream"))).send().await;
    problem(anonymous.unwrap(), StatusCode::UNAUTHORIZED).await;
    platform.shutdown().await;
}

async fn dead_letters(platform: &Platform) -> Value {
    json_ok(get(platform, Svc::Order, "/api/v1/dead-letters", &platform.admin_token()).await).await
}

fn queue<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["queues"].as_array().unwrap().iter().find(|q| q["queue"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_once_and_purged_by_admins_only() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("A", 100, 10).await;
    platform.put_account("c1", 10_000).await;
    let order = platform.place_order("c1", &[("A", 1)]).await;
    platform.wait_status(&order, "COMPLETED", WAIT).await;
    // A real message of the finished saga, dead-lettered; and poison the service dead-letters itself.
    let confirm_id = platform
        .events(&order)
        .await
        .iter()
        .find(|e| e["detail"]["type"] == "inventory.confirm")
        .and_then(|e| e["detail"]["message_id"].as_str().map(str::to_owned))
        .unwrap();
    let mut headers = lapin::types::FieldTable::default();
    headers.insert("x-correlation-id".into(), lapin::types::AMQPValue::LongString("corr-confirm".into()));
    let properties = BasicProperties::default()
        .with_message_id(confirm_id.as_str().into())
        .with_type("inventory.confirm".into())
        .with_headers(headers);
    let body = format!(r#"{{"type":"inventory.confirm","order_id":"{order}"}}"#);
    platform.dead_letter(Svc::Inventory, properties, body.as_bytes(), "injected by the test").await;
    let poison = uuid::Uuid::new_v4().to_string();
    platform
        .publish_raw(Svc::Inventory, BasicProperties::default().with_message_id(poison.as_str().into()), b"{")
        .await;
    let listed = eventually("both in the inventory DLQ", WAIT, || async {
        let all = dead_letters(&platform).await;
        (queue(&all, "inventory")["depth"] == 2).then_some(all)
    })
    .await;
    let inventory = queue(&listed, "inventory");
    assert_eq!(inventory["name"], format!("{}.inventory.commands.dlq", platform.name));
    let messages = inventory["messages"].as_array().unwrap();
    let confirm = messages.iter().find(|m| m["message_id"] == confirm_id.as_str()).unwrap();
    assert_eq!(
        (&confirm["type"], &confirm["correlation_id"], &confirm["reason"], &confirm["attempts"]),
        (&json!("inventory.confirm"), &json!("corr-confirm"), &json!("injected by the test"), &json!("3"))
    );
    let bad = messages.iter().find(|m| m["message_id"] == poison.as_str()).unwrap();
    assert!(bad["reason"].as_str().unwrap().contains("malformed"), "{bad}");
    assert_eq!(queue(&listed, "payment")["depth"], 0);
    assert_eq!(queue(&dead_letters(&platform).await, "inventory")["depth"], 2, "listing does not consume");

    // Customers: 403 everywhere.
    let customer = platform.token("c1");
    problem(get(&platform, Svc::Order, "/api/v1/dead-letters", &customer).await, StatusCode::FORBIDDEN).await;
    let post = |path: &str, token: &str, body: Value| {
        platform.http.post(platform.url(Svc::Order, path)).bearer_auth(token).json(&body).send()
    };
    let replay = "/api/v1/dead-letters/inventory/replay";
    problem(post(replay, &customer, json!({"all": true})).await.unwrap(), StatusCode::FORBIDDEN).await;
    problem(post("/api/v1/dead-letters/inventory/purge", &customer, json!({})).await.unwrap(), StatusCode::FORBIDDEN)
        .await;

    // Replay one: back to its queue once; the saga is finished, so it is a duplicate with no effect.
    let admin = platform.admin_token();
    let answer = json_ok(post(replay, &admin, json!({"message_ids": [confirm_id, "no-such-id"]})).await.unwrap()).await;
    assert_eq!(answer, json!({"replayed": [confirm_id], "not_found": ["no-such-id"]}));
    eventually("the replayed message is handled", WAIT, || async {
        (queue(&dead_letters(&platform).await, "inventory")["depth"] == 1).then_some(())
    })
    .await;
    let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
        .bind(&confirm_id)
        .fetch_one(platform.pool(Svc::Inventory))
        .await
        .unwrap();
    assert_eq!(handled, 1);
    let product = platform.product("A").await;
    assert_eq!((product["on_hand"].as_i64(), product["reserved"].as_i64()), (Some(9), Some(0)), "{product}");

    // Bad requests change nothing.
    for body in
        [json!({}), json!({"all": true, "message_ids": ["x"]}), json!({"message_ids": []}), json!({"all": false})]
    {
        let response = post(replay, &admin, body.clone()).await.unwrap();
        assert_eq!(problem(response, StatusCode::UNPROCESSABLE_ENTITY).await, kind("validation-failed"), "{body}");
    }
    let response = post(replay, &admin, json!({"message_ids": ["x".repeat(256)]})).await.unwrap();
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = post("/api/v1/dead-letters/shipping/replay", &admin, json!({"all": true})).await.unwrap();
    assert_eq!(problem(response, StatusCode::NOT_FOUND).await, kind("not-found"));
    problem(get(&platform, Svc::Order, "/api/v1/dead-letters?limit=0", &admin).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(queue(&dead_letters(&platform).await, "inventory")["depth"], 1);

    let purged = json_ok(post("/api/v1/dead-letters/inventory/purge", &admin, json!({})).await.unwrap()).await;
    assert_eq!(purged, json!({"purged": 1}));
    assert_eq!(queue(&dead_letters(&platform).await, "inventory")["depth"], 0);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_payments_are_listed_for_admins() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("A", 300, 10).await;
    for (customer, balance) in [("acc-a", 1000), ("acc-b", 2000), ("acc-c", 3000)] {
        platform.put_account(customer, balance).await;
    }
    let first = platform.place_order("acc-b", &[("A", 1)]).await;
    let second = platform.place_order("acc-b", &[("A", 2)]).await;
    for id in [&first, &second] {
        platform.wait_status(id, "COMPLETED", WAIT).await;
    }
    let admin = platform.admin_token();
    let page = json_ok(get(&platform, Svc::Payment, "/api/v1/accounts?limit=2", &admin).await).await;
    let names: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|a| a["customer_id"].as_str().unwrap()).collect();
    assert_eq!(names, ["acc-a", "acc-b"]);
    assert_eq!(page["next_cursor"], "acc-b");
    let rest = json_ok(get(&platform, Svc::Payment, "/api/v1/accounts?limit=2&cursor=acc-b", &admin).await).await;
    assert_eq!(rest, json!({"items": [{"customer_id": "acc-c", "balance_cents": 3000}], "next_cursor": null}));

    let payments = json_ok(get(&platform, Svc::Payment, "/api/v1/accounts/acc-b/payments", &admin).await).await;
    let listed: Vec<(String, i64, String)> = payments["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["order_id"].as_str().unwrap().into(),
                p["amount_cents"].as_i64().unwrap(),
                p["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(listed, vec![(second.clone(), 600, "CAPTURED".into()), (first.clone(), 300, "CAPTURED".into())]);
    let paged = json_ok(get(&platform, Svc::Payment, "/api/v1/accounts/acc-b/payments?limit=1", &admin).await).await;
    assert_eq!(paged["next_cursor"], second.as_str());
    let none = json_ok(get(&platform, Svc::Payment, "/api/v1/accounts/acc-a/payments", &admin).await).await;
    assert_eq!(none, json!({"items": [], "next_cursor": null}));

    let bad_id = get(&platform, Svc::Payment, "/api/v1/accounts/no%20spaces/payments", &admin).await;
    assert_eq!(problem(bad_id, StatusCode::NOT_FOUND).await, kind("not-found"));
    let customer = platform.token("acc-b");
    for path in ["/api/v1/accounts", "/api/v1/accounts/acc-b/payments"] {
        problem(get(&platform, Svc::Payment, path, &customer).await, StatusCode::FORBIDDEN).await;
    }
    for path in [
        "/api/v1/accounts?limit=0",
        "/api/v1/accounts?limit=201",
        "/api/v1/accounts?cursor=",
        "/api/v1/accounts/acc-b/payments?cursor=nope",
        "/api/v1/accounts/acc-b/payments?limit=-1",
        "/api/v1/accounts?sort=name",
    ] {
        problem(get(&platform, Svc::Payment, path, &admin).await, StatusCode::BAD_REQUEST).await;
    }
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_serves_the_page_and_forwards_the_other_apis() {
    let mut platform = Platform::start(Options::default()).await;
    let admin = platform.admin_token();
    // Not configured: the other services' paths are not this service's.
    problem(get(&platform, Svc::Order, "/api/v1/products", &admin).await, StatusCode::NOT_FOUND).await;

    let env = [
        ("EXPLORER_INVENTORY_URL", platform.url(Svc::Inventory, "")),
        ("EXPLORER_PAYMENT_URL", platform.url(Svc::Payment, "/")),
    ];
    platform.restart_with(Svc::Order, 0, &env);
    platform.wait_ready().await;
    let put = platform
        .http
        .put(platform.url(Svc::Order, "/api/v1/products/VIA-ORDER"))
        .bearer_auth(&admin)
        .json(&json!({"name": "through the order service", "unit_price_cents": 123, "on_hand": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(put.headers()["location"], "/api/v1/products/VIA-ORDER");
    // The correlation id goes on to the service behind: its log names it.
    let correlation = put.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    eventually("the inventory log names the forwarded request's correlation id", WAIT, || async {
        platform.log(Svc::Inventory, 0).contains(&correlation).then_some(())
    })
    .await;
    assert_eq!(platform.product("VIA-ORDER").await["on_hand"], 4);
    let direct = json_ok(get(&platform, Svc::Inventory, "/api/v1/products", &admin).await).await;
    let forwarded = json_ok(get(&platform, Svc::Order, "/api/v1/products", &admin).await).await;
    assert_eq!(forwarded, direct);
    platform.put_account("via", 77).await;
    let account = json_ok(get(&platform, Svc::Order, "/api/v1/accounts/via", &admin).await).await;
    assert_eq!(account, json!({"customer_id": "via", "balance_cents": 77}));
    let page = json_ok(get(&platform, Svc::Order, "/api/v1/accounts?limit=1", &admin).await).await;
    assert_eq!(page["items"][0]["customer_id"], "via");
    // The other service decides: its 401, 403 and 404 come through.
    let anonymous = platform.http.get(platform.url(Svc::Order, "/api/v1/products")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let customer = platform.token("via");
    problem(get(&platform, Svc::Order, "/api/v1/accounts", &customer).await, StatusCode::FORBIDDEN).await;
    problem(get(&platform, Svc::Order, "/api/v1/products/NOPE", &admin).await, StatusCode::NOT_FOUND).await;
    let huge = platform
        .http
        .put(platform.url(Svc::Order, "/api/v1/products/BIG"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .unwrap();
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE).await;
    // The order service's own routes are still its own.
    json_ok(get(&platform, Svc::Order, "/api/v1/orders", &admin).await).await;

    // The page, from the binary, with its security headers.
    let page = platform.http.get(platform.url(Svc::Order, "/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("<title>Saga explorer</title>"));
    let script = platform.http.get(platform.url(Svc::Order, "/ui/app.js")).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let bare = redirect.get(platform.url(Svc::Order, "/ui")).send().await.unwrap();
    assert_eq!((bare.status(), bare.headers()["location"].to_str().unwrap()), (StatusCode::PERMANENT_REDIRECT, "/ui/"));
    for path in ["/ui/nope.js", "/ui/..%2Fsrc%2Fmain.rs", "/ui/a/b"] {
        let response = platform.http.get(platform.url(Svc::Order, path)).send().await.unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
    }
    platform.shutdown().await;
}
