//! Hostile input against the real binaries, broker and database: crafted
//! AMQP messages, outbox rows that cannot be published, forged tokens,
//! made-up HTTP methods, connections that never finish their headers.
//! After each case: a clean 4xx or a dead letter with a reason, no process
//! died or panicked, the outboxes drain, and a fresh order still completes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
use saga_tests::{DeadLetter, Options, Platform, SECRET, Svc, eventually, shop};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);
const FRESH_SKU: &str = "FRESH";
const FRESH_CUSTOMER: &str = "fresh";

/// A platform with what `still_works` needs to place a fresh order.
async fn start(options: Options) -> Platform {
    let platform = Platform::start(options).await;
    platform.put_product(FRESH_SKU, 100, 1_000_000).await;
    platform.put_account(FRESH_CUSTOMER, 1_000_000_000).await;
    platform
}

/// After a hostile case: a fresh order completes, every outbox drains, no
/// process died and no task panicked.
async fn still_works(platform: &mut Platform) {
    platform.assert_running();
    let id = platform.place_order(FRESH_CUSTOMER, &[(FRESH_SKU, 1)]).await;
    let order = platform.wait_final(&id, WAIT).await;
    assert_eq!(order["status"], "COMPLETED", "a fresh order after the hostile input: {order}");
    shop::wait_until_quiet(platform, WAIT).await;
    platform.assert_running();
    for svc in Svc::ALL {
        let log = platform.log(svc, 0);
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "{} panicked: {panics:?}", svc.binary());
    }
}

fn reason(message: &DeadLetter) -> String {
    match message.headers.inner().get("x-failure-reason") {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("dead letter without a failure reason: {other:?}"),
    }
}

fn attempt(message: &DeadLetter) -> Option<u32> {
    match message.headers.inner().get("x-attempt") {
        Some(AMQPValue::LongUInt(n)) => Some(*n),
        _ => None,
    }
}

fn properties(message_id: &str, kind: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_type(kind.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn headers(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert(ShortString::from(name), value);
    }
    table
}

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A command for an order nobody placed: inventory answers it (an unknown
/// SKU is rejected) and so copies its correlation id into a reply.
fn reserve_unknown() -> Vec<u8> {
    let body = json!({"type": "inventory.reserve", "order_id": new_id(), "items": [{"sku": "NOPE", "quantity": 1}]});
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn malformed_correlation_ids_are_dead_lettered_and_nothing_panics() {
    let mut platform = start(Options::default()).await;
    let cases: Vec<(&str, Option<AMQPValue>, Option<String>)> = vec![
        ("a 300-byte header", Some(long(&"c".repeat(300))), None),
        ("a 70 000-byte header", Some(long(&"c".repeat(70_000))), None),
        ("a header with control characters", Some(long("abc\u{0}\u{1b}[31m")), None),
        ("a non-ASCII header", Some(long("corrélation")), None),
        ("an empty header", Some(long("")), None),
        ("an integer header", Some(AMQPValue::LongLongInt(42)), None),
        ("a binary header", Some(AMQPValue::ByteArray(ByteArray::from(vec![0xff_u8, 0, 0xfe]))), None),
        ("an empty property", None, Some(String::new())),
        ("a property with a space", None, Some("has space".to_owned())),
    ];
    let mut ids = Vec::new();
    for (name, header, property) in &cases {
        let id = new_id();
        let mut props = properties(
            &id,
            "inventory.reserve",
            headers(header.iter().map(|h| ("x-correlation-id", h.clone())).collect()),
        );
        if let Some(property) = property {
            props = props.with_correlation_id(property.as_str().into());
        }
        println!("{id}: {name}");
        platform.publish_raw(Svc::Inventory, props, &reserve_unknown()).await;
        ids.push(id);
    }

    still_works(&mut platform).await;
    let dead = platform.wait_dead_letters(Svc::Inventory, &ids, WAIT).await;
    for ((name, _, _), id) in cases.iter().zip(&ids) {
        let reason = reason(&dead[id]);
        assert!(reason.contains("correlation id"), "{name}: {reason}");
        assert!(reason.len() < 1100, "{name}: the reason is bounded");
    }
    // A valid correlation id of the longest allowed length is fine, and a
    // huge, binary or garbled traceparent only starts a new trace.
    let valid: Vec<(&str, FieldTable)> = vec![
        ("a 128-byte correlation id", headers(vec![("x-correlation-id", long(&"v".repeat(128)))])),
        ("a 100 000-byte traceparent", headers(vec![("traceparent", long(&"0".repeat(100_000)))])),
        ("a binary traceparent", headers(vec![("traceparent", AMQPValue::ByteArray(ByteArray::from(vec![0_u8; 55])))])),
        ("a traceparent with an escape sequence", headers(vec![("traceparent", long("00-\u{1b}[31m-01"))])),
    ];
    for (name, table) in valid {
        let id = new_id();
        platform.publish_raw(Svc::Inventory, properties(&id, "inventory.reserve", table), &reserve_unknown()).await;
        still_works(&mut platform).await;
        let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
            .bind(&id)
            .fetch_one(platform.pool(Svc::Inventory))
            .await
            .unwrap();
        assert_eq!(handled, 1, "{name}: the message was handled");
    }
    platform.shutdown().await;
}

#[tokio::test]
async fn outbox_rows_that_cannot_be_published_are_set_aside() {
    let mut platform = start(Options::default()).await;
    // Rows no valid message can produce (the consumer refuses such
    // correlation ids), written straight into the outbox: each would break
    // the AMQP frame or has nowhere to go.
    let payload = |order_id: &str| serde_json::to_vec(&json!({"type": "inventory.released", "order_id": order_id}));
    let rows = [
        ("long correlation id", "inventory.released", "order.replies", "c".repeat(300)),
        ("long message type", &*"t".repeat(300), "order.replies", "ok".to_owned()),
        ("long routing key", "inventory.released", &*"r".repeat(300), "ok".to_owned()),
        ("unknown routing key", "inventory.released", "nowhere", "ok".to_owned()),
    ];
    let mut ids = Vec::new();
    for (name, kind, routing_key, correlation_id) in &rows {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO outbox (message_id, message_type, routing_key, correlation_id, traceparent, payload)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(kind)
        .bind(routing_key)
        .bind(correlation_id)
        .bind("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .bind(payload(&new_id()).unwrap())
        .execute(platform.pool(Svc::Inventory))
        .await
        .unwrap();
        println!("{id}: {name}");
        ids.push(id);
    }

    // The rows behind them flow: a fresh order needs inventory's relay.
    still_works(&mut platform).await;
    let set_aside: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT message_id, reason FROM outbox_dead_letters ORDER BY seq")
            .fetch_all(platform.pool(Svc::Inventory))
            .await
            .unwrap();
    assert_eq!(set_aside.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids, "{set_aside:?}");
    for ((name, ..), (_, reason)) in rows.iter().zip(&set_aside) {
        println!("{name}: {reason}");
        assert!(!reason.is_empty());
    }
    platform.shutdown().await;
}

/// From now on a charge for `flaky` fails transiently (a database error).
async fn flaky_charges(platform: &Platform) {
    platform.put_account("flaky", 1_000_000).await;
    sqlx::raw_sql(
        "CREATE FUNCTION hostile_fail() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.customer_id = 'flaky' THEN RAISE EXCEPTION 'injected transient failure'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER hostile_fail BEFORE INSERT ON payments FOR EACH ROW EXECUTE FUNCTION hostile_fail();",
    )
    .execute(platform.pool(Svc::Payment))
    .await
    .unwrap();
}

fn flaky_charge(id: &str) -> (BasicProperties, Vec<u8>) {
    let charge = json!({"type": "payment.charge", "order_id": new_id(), "customer_id": "flaky", "amount_cents": 1});
    (properties(id, "payment.charge", FieldTable::default()), serde_json::to_vec(&charge).unwrap())
}

#[tokio::test]
async fn a_missing_delay_queue_dead_letters_instead_of_looping() {
    let mut platform = start(Options::default()).await;
    flaky_charges(&platform).await;
    let connection = platform.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let delay_queue = format!("{}.payment.commands.retry.1", platform.name);
    channel.queue_delete(delay_queue.as_str().into(), Default::default()).await.unwrap();
    let id = new_id();
    let (properties, body) = flaky_charge(&id);
    platform.publish_raw(Svc::Payment, properties, &body).await;
    let dead = platform.wait_dead_letters(Svc::Payment, std::slice::from_ref(&id), WAIT).await;
    let reason = reason(&dead[&id]);
    assert!(reason.contains("injected transient failure") && reason.contains("refused the copy"), "{reason}");
    still_works(&mut platform).await;
    let _ = connection.close(200, "done".into()).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn attempt_header_is_clamped_to_the_retry_ladder() {
    let mut platform = start(Options::default()).await;
    let max_attempts = Options::default().retry.max_attempts;
    flaky_charges(&platform).await;

    let cases: Vec<(&str, Option<AMQPValue>)> = vec![
        ("no header", None),
        ("0", Some(AMQPValue::LongUInt(0))),
        ("1 as a short-short int", Some(AMQPValue::ShortShortInt(1))),
        ("2 as an unsigned short-short int", Some(AMQPValue::ShortShortUInt(2))),
        ("2 as a short int", Some(AMQPValue::ShortInt(2))),
        ("2 as an unsigned short int", Some(AMQPValue::ShortUInt(2))),
        ("2 as a long long int", Some(AMQPValue::LongLongInt(2))),
        ("-1", Some(AMQPValue::LongInt(-1))),
        ("i32::MIN", Some(AMQPValue::LongInt(i32::MIN))),
        ("u32::MAX", Some(AMQPValue::LongUInt(u32::MAX))),
        ("2^32 (0 once truncated)", Some(AMQPValue::LongLongInt(1 << 32))),
        ("2^32 + 1", Some(AMQPValue::LongLongInt((1 << 32) + 1))),
        ("i64::MIN", Some(AMQPValue::LongLongInt(i64::MIN))),
        ("i64::MAX", Some(AMQPValue::LongLongInt(i64::MAX))),
        ("a string", Some(long("2"))),
        ("a float", Some(AMQPValue::Double(2.5))),
        ("a boolean", Some(AMQPValue::Boolean(true))),
        ("a timestamp", Some(AMQPValue::Timestamp(2))),
    ];
    let mut ids = Vec::new();
    for (name, value) in &cases {
        let id = new_id();
        let charge = json!({"type": "payment.charge", "order_id": new_id(), "customer_id": "flaky", "amount_cents": 1});
        let table = headers(value.iter().map(|v| ("x-attempt", v.clone())).collect());
        println!("{id}: x-attempt {name}");
        platform
            .publish_raw(Svc::Payment, properties(&id, "payment.charge", table), &serde_json::to_vec(&charge).unwrap())
            .await;
        ids.push(id);
    }

    let dead = platform.wait_dead_letters(Svc::Payment, &ids, WAIT).await;
    for ((name, _), id) in cases.iter().zip(&ids) {
        let message = &dead[id];
        assert!(reason(message).contains("injected transient failure"), "{name}: {}", reason(message));
        assert_eq!(attempt(message), Some(max_attempts), "{name}: dead-lettered after the last attempt");
    }
    assert_eq!(platform.balance("flaky").await, 1_000_000, "nothing was charged");
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_dead_lettered() {
    let mut platform = start(Options::default()).await;
    // Valid messages apart from their size: padding in an ignored field.
    let padded = |size: usize| {
        let head = format!(r#"{{"type":"inventory.release","order_id":"{}","pad":""#, new_id());
        let mut body = head.into_bytes();
        body.resize(size - 2, b'x');
        body.extend_from_slice(b"\"}");
        serde_json::from_slice::<Value>(&body).expect("still JSON");
        body
    };
    let mut ids = Vec::new();
    for size in [1024 * 1024 + 1, 8 * 1024 * 1024] {
        let id = new_id();
        platform
            .publish_raw(Svc::Inventory, properties(&id, "inventory.release", FieldTable::default()), &padded(size))
            .await;
        ids.push(id);
    }
    still_works(&mut platform).await;
    let dead = platform.wait_dead_letters(Svc::Inventory, &ids, WAIT).await;
    for id in &ids {
        let reason = reason(&dead[id]);
        assert!(reason.contains("body of") && reason.contains("bytes"), "{reason}");
    }
    platform.shutdown().await;
}

#[tokio::test]
async fn crafted_messages_on_every_queue_are_dead_lettered_and_change_nothing() {
    let mut platform = start(Options::default()).await;
    let unknown = new_id();
    let charge = |customer: Value, amount: Value| json!({"type": "payment.charge", "order_id": new_id(), "customer_id": customer, "amount_cents": amount});
    let reserve = |items: Value| json!({"type": "inventory.reserve", "order_id": new_id(), "items": items});
    let raw = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.to_owned()));
    let cases: Vec<(&str, Svc, Value)> = vec![
        ("negative charge", Svc::Payment, charge(json!(FRESH_CUSTOMER), json!(-1))),
        ("i64::MIN charge", Svc::Payment, charge(json!(FRESH_CUSTOMER), json!(i64::MIN))),
        (
            "charge beyond i64",
            Svc::Payment,
            raw(&format!(
                r#"{{"type":"payment.charge","order_id":"{unknown}","customer_id":"fresh","amount_cents":1e30}}"#
            )),
        ),
        ("charge amount as a string", Svc::Payment, charge(json!(FRESH_CUSTOMER), json!("5"))),
        ("charge for a customer id with a space", Svc::Payment, charge(json!("fre sh"), json!(1))),
        ("charge for a customer id with NUL", Svc::Payment, charge(json!("fre\u{0}sh"), json!(1))),
        ("refund without an order id", Svc::Payment, json!({"type": "payment.refund"})),
        ("a reserve command on the payment queue", Svc::Payment, reserve(json!([{"sku": FRESH_SKU, "quantity": 1}]))),
        ("negative quantity", Svc::Inventory, reserve(json!([{"sku": FRESH_SKU, "quantity": -5}]))),
        ("zero quantity", Svc::Inventory, reserve(json!([{"sku": FRESH_SKU, "quantity": 0}]))),
        ("quantity beyond i32", Svc::Inventory, reserve(json!([{"sku": FRESH_SKU, "quantity": 1_i64 << 31}]))),
        (
            "quantities overflowing i32 together",
            Svc::Inventory,
            reserve(json!([{"sku": FRESH_SKU, "quantity": i32::MAX}, {"sku": FRESH_SKU, "quantity": i32::MAX}])),
        ),
        ("no items", Svc::Inventory, reserve(json!([]))),
        ("a charge command on the inventory queue", Svc::Inventory, charge(json!(FRESH_CUSTOMER), json!(1))),
        (
            "reserved reply for an unknown order",
            Svc::Order,
            json!({"type": "inventory.reserved", "order_id": unknown, "lines": [], "total_cents": i64::MIN}),
        ),
        (
            "negative capture for an unknown order",
            Svc::Order,
            json!({"type": "payment.captured", "order_id": unknown, "amount_cents": -1}),
        ),
        ("a charge command on the order queue", Svc::Order, charge(json!(FRESH_CUSTOMER), json!(1))),
        ("JSON null", Svc::Order, Value::Null),
        ("a JSON string", Svc::Inventory, json!("inventory.reserve")),
    ];
    let balance = platform.balance(FRESH_CUSTOMER).await;
    let product = platform.product(FRESH_SKU).await;
    let mut ids: Vec<(Svc, String)> = Vec::new();
    for (name, svc, body) in &cases {
        let id = new_id();
        let properties = BasicProperties::default().with_message_id(id.as_str().into()).with_delivery_mode(2);
        println!("{id}: {name}");
        platform.publish_raw(*svc, properties, &serde_json::to_vec(body).unwrap()).await;
        ids.push((*svc, id));
    }
    for svc in Svc::ALL {
        let expected: Vec<String> = ids.iter().filter(|(s, _)| *s == svc).map(|(_, id)| id.clone()).collect();
        let dead = platform.wait_dead_letters(svc, &expected, WAIT).await;
        for ((name, ..), (_, id)) in cases.iter().zip(&ids).filter(|(_, (s, _))| *s == svc) {
            println!("{name}: {}", reason(&dead[id]));
        }
    }
    assert_eq!(platform.balance(FRESH_CUSTOMER).await, balance, "money unchanged");
    assert_eq!(platform.product(FRESH_SKU).await, product, "stock unchanged");
    let payments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(platform.pool(Svc::Payment)).await.unwrap();
    assert_eq!(payments, 0, "no payment recorded");
    still_works(&mut platform).await;
    platform.shutdown().await;
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn tokens_not_yet_valid_or_naming_no_customer_are_refused() {
    let mut platform = start(Options::default()).await;
    let now = now_secs();
    let hour = now + 3600;
    let cases: Vec<(&str, Value, u16)> = vec![
        ("control: a valid token", json!({"sub": "alice", "exp": hour}), 200),
        ("control: nbf and iat just past", json!({"sub": "alice", "exp": hour, "nbf": now - 5, "iat": now - 5}), 200),
        ("nbf in an hour", json!({"sub": "alice", "exp": hour, "nbf": hour}), 401),
        ("nbf in two minutes", json!({"sub": "alice", "exp": hour, "nbf": now + 120}), 401),
        ("iat in an hour", json!({"sub": "alice", "exp": hour, "iat": hour}), 401),
        ("no exp", json!({"sub": "alice"}), 401),
        ("exp as a string", json!({"sub": "alice", "exp": hour.to_string()}), 401),
        ("sub with a NUL byte", json!({"sub": "ali\u{0}ce", "exp": hour}), 401),
        ("sub with a newline", json!({"sub": "ali\nce", "exp": hour}), 401),
        ("sub with an escape sequence", json!({"sub": "\u{1b}[31malice", "exp": hour}), 401),
        ("sub with a space", json!({"sub": "ali ce", "exp": hour}), 401),
        ("sub of 256 bytes", json!({"sub": "a".repeat(256), "exp": hour}), 401),
        ("sub as a number", json!({"sub": 42, "exp": hour}), 401),
    ];
    let mut failures = Vec::new();
    for (name, claims, expected) in &cases {
        for (svc, path) in [(Svc::Order, "/api/v1/orders"), (Svc::Payment, "/api/v1/accounts/alice")] {
            let response = platform.http.get(platform.url(svc, path)).bearer_auth(sign(claims)).send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            let ok = status == *expected || (*expected == 200 && svc == Svc::Payment && status == 404);
            if !ok {
                failures.push(format!("{name} on {svc:?}: {status}, expected {expected}: {body}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn issuer_audience_and_lifetime_are_enforced_when_configured() {
    let mut platform = start(Options::default()).await;
    let strict = [
        ("AUTH_ISSUER", "https://idp.example".to_owned()),
        ("AUTH_AUDIENCE", "saga-platform".to_owned()),
        ("AUTH_MAX_TOKEN_LIFETIME", "1h".to_owned()),
    ];
    platform.restart_with(Svc::Payment, 0, &strict);
    platform.wait_ready().await;
    let now = now_secs();
    let good =
        json!({"sub": "alice", "iss": "https://idp.example", "aud": "saga-platform", "iat": now, "exp": now + 600});
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let cases: Vec<(&str, Value, u16)> = vec![
        ("control: issuer, audience and a 10-minute lifetime", good.clone(), 404),
        ("control: the audience among several", with("aud", json!(["other", "saga-platform"])), 404),
        ("another issuer", with("iss", json!("https://evil.example")), 401),
        ("no issuer", without("iss"), 401),
        ("another audience", with("aud", json!("another-api")), 401),
        ("no audience", without("aud"), 401),
        ("a two-hour lifetime", with("exp", json!(now + 7200)), 401),
        ("no iat (lifetime unknown)", without("iat"), 401),
    ];
    let mut failures = Vec::new();
    for (name, claims, expected) in &cases {
        let url = platform.url(Svc::Payment, "/api/v1/accounts/alice");
        let response = platform.http.get(url).bearer_auth(sign(claims)).send().await.unwrap();
        let status = response.status().as_u16();
        if status != *expected {
            failures.push(format!("{name}: {status}, expected {expected}: {}", response.text().await.unwrap()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    platform.shutdown().await;
}

/// Runs a service binary with `env` only; its exit code and output.
fn run_service(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = std::process::Command::new(saga_tests::bin_dir().join("payment-service"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn bad_settings_are_refused_without_repeating_secrets() {
    let database = "postgres://app:db-pw-hunter2@127.0.0.1:5432/nowhere";
    let (code, output) = run_service(&[("DATABASE_URL", database), ("AUTH_JWT_SECRET", "short-secret-hunter2")]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("AUTH_JWT_SECRET") && output.contains("at least 32 bytes"), "{output}");
    assert!(!output.contains("hunter2"), "a secret was printed: {output}");
    let (code, output) = run_service(&[("DATABASE_URL", "not a url with pw-hunter2"), ("AUTH_DISABLED", "true")]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("DATABASE_URL") && !output.contains("hunter2"), "{output}");
    // AUTH_DISABLED only on a development platform.
    let (code, output) = run_service(&[("DATABASE_URL", database), ("AUTH_DISABLED", "true")]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("SAGA_DEV_MODE"), "{output}");
    assert!(!output.contains("hunter2"), "{output}");
}

/// How many series `/metrics` holds.
async fn series(platform: &Platform, svc: Svc) -> std::collections::BTreeSet<String> {
    let text = platform.http.get(platform.url(svc, "/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let mut platform = start(Options::default()).await;
    let token = platform.token("alice");
    // Every known route and method once, so their series exist.
    for path in ["/api/v1/orders", "/nope", "/api/v1/orders/x"] {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO"] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            platform.http.request(method, platform.url(Svc::Order, path)).bearer_auth(&token).send().await.unwrap();
        }
    }
    series(&platform, Svc::Order).await; // the scrape's own series
    let before = series(&platform, Svc::Order).await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("X{i}M").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/api/v1/orders".to_owned() } else { format!("/made/up/{i}") };
        let response =
            platform.http.request(method, platform.url(Svc::Order, &path)).bearer_auth(&token).send().await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let after = series(&platform, Svc::Order).await;
    let added: Vec<_> = after.difference(&before).collect();
    assert!(added.is_empty(), "300 made-up requests added {} series: {added:#?}", added.len());
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed() {
    let options = Options { env: vec![("HTTP_HEADER_READ_TIMEOUT", "1s".to_owned())], ..Options::default() };
    let mut platform = start(options).await;
    let address = platform.url(Svc::Order, "").trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "a connection with unfinished headers was still open after 10 s");
    // A connection that sent nothing at all is closed as well.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "a silent connection was still open after 10 s");
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_refused() {
    let mut platform = start(Options::default()).await;
    let address = platform.url(Svc::Order, "").trim_start_matches("http://").to_owned();
    let token = platform.token("alice");
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 256 KiB of JSON in 8 KiB chunks, no Content-Length anywhere.
    let mut body = br#"{"items":[{"sku":""#.to_vec();
    body.resize(256 * 1024, b'A');
    body.extend_from_slice(br#"","quantity":1}]}"#);
    for chunk in body.chunks(8 * 1024) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break; // the server answered and closed early
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{}", response.lines().next().unwrap_or("(no answer)"));
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(platform.pool(Svc::Order)).await.unwrap();
    assert_eq!(orders, 0);
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_a_503_at_once() {
    let options = Options { env: vec![("HTTP_MAX_CONNECTIONS", "4".to_owned())], ..Options::default() };
    let mut platform = start(options).await;
    let address = platform.url(Svc::Order, "").trim_start_matches("http://").to_owned();
    // Four connections that say nothing hold every slot...
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // ...so a fifth is answered 503 with a problem body, without waiting.
    let mut fifth = tokio::net::TcpStream::connect(&address).await.unwrap();
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("overloaded"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<Value>(body).expect("the body is the JSON its content-length says");
    // Freed slots are used again.
    drop(idle);
    let deadline = std::time::Instant::now() + WAIT;
    while platform.http.get(platform.url(Svc::Order, "/healthz")).send().await.map(|r| r.status()).ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn a_request_stuck_on_a_lock_times_out() {
    let options = Options { env: vec![("HTTP_REQUEST_TIMEOUT", "1s".to_owned())], ..Options::default() };
    let mut platform = start(options).await;
    // Someone holds the accounts table: every read of it waits.
    let mut lock = platform.pool(Svc::Payment).begin().await.unwrap();
    sqlx::query("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let request = platform
        .http
        .get(platform.url(Svc::Payment, &format!("/api/v1/accounts/{FRESH_CUSTOMER}")))
        .bearer_auth(platform.admin_token())
        .send();
    let response = tokio::time::timeout(Duration::from_secs(10), request).await;
    lock.rollback().await.unwrap();
    let response = response.expect("no answer within 10 s").unwrap();
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/timeout"), "{problem}");
    still_works(&mut platform).await;
    platform.shutdown().await;
}

/// The value of an unlabelled gauge in the order service's `/metrics`.
async fn gauge(platform: &Platform, name: &str) -> i64 {
    let text = platform.http.get(platform.url(Svc::Order, "/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// POST an order as `customer`: the status and the problem type, if any.
async fn try_order(platform: &Platform, customer: &str) -> (u16, String) {
    let response = platform
        .http
        .post(platform.url(Svc::Order, "/api/v1/orders"))
        .bearer_auth(platform.token(customer))
        .json(&json!({"items": [{"sku": "HELD", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    refusal(response).await
}

/// The status and, for a 429/503, the problem type (checking `Retry-After`).
async fn refusal(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or_default();
    if matches!(status, 429 | 503) {
        assert_eq!(retry_after.as_deref(), Some("1"), "{status} without Retry-After: {body}");
    }
    (status, body["type"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_owned())
}

/// Waits until the order service's admission counts `n` running sagas.
async fn settled(platform: &Platform, n: i64) {
    eventually(&format!("the admission counts {n} running sagas"), WAIT, || async {
        (gauge(platform, "saga_admission_running_sagas").await == n).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_customer_over_their_share_gets_429_before_the_global_503() {
    let mut platform = start(Options { env: vec![("MAX_RUNNING_SAGAS", "10".into())], ..Options::default() }).await;
    // Inventory frozen: every saga stays running at its first step.
    platform.pause(Svc::Inventory, 0, true);
    for _ in 0..8 {
        assert_eq!(try_order(&platform, "heavy").await.0, 202);
    }
    assert_eq!(try_order(&platform, "light").await.0, 202);
    // An order committed while a refresh counts may be counted twice until
    // the next refresh: the boundaries are probed once the count has settled.
    settled(&platform, 9).await;
    // Two customers running: a share of 5 each. Heavy is over it.
    assert_eq!(try_order(&platform, "heavy").await, (429, "over-share".to_owned()));
    assert_eq!(try_order(&platform, "light").await.0, 202);
    settled(&platform, 10).await;
    // 10 running: full for everyone, light included.
    assert_eq!(try_order(&platform, "light").await, (503, "overloaded".to_owned()));
    assert_eq!(try_order(&platform, "newcomer").await, (503, "overloaded".to_owned()));
    platform.pause(Svc::Inventory, 0, false);
    shop::wait_until_quiet(&platform, WAIT).await;
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn long_polls_are_bounded_per_customer_and_overall() {
    let env = vec![("LONG_POLL_MAX_WAITERS", "5".into()), ("LONG_POLL_MAX_WAITERS_PER_CUSTOMER", "2".into())];
    let mut platform = start(Options { env, ..Options::default() }).await;
    platform.pause(Svc::Inventory, 0, true);
    let mut orders = std::collections::BTreeMap::new();
    for customer in ["w1", "w2", "w3"] {
        orders.insert(customer, platform.place_order(customer, &[("HELD", 1)]).await);
    }
    let poll = |customer: &str, wait: u32| {
        let url = platform.url(Svc::Order, &format!("/api/v1/orders/{}?wait={wait}", orders[customer]));
        platform.http.get(url).bearer_auth(platform.token(customer)).send()
    };
    let open = |n: i64| {
        let platform = &platform;
        move || async move { (gauge(platform, "saga_long_polls_open").await == n).then_some(()) }
    };
    let probe = |customer: &'static str| {
        let request = poll(customer, 1);
        async move { refusal(request.await.unwrap()).await }
    };
    let mut held = Vec::new();
    for customer in ["w1", "w1"] {
        held.push(tokio::spawn(poll(customer, 25)));
    }
    eventually("w1's two long polls are open", Duration::from_secs(10), open(2)).await;
    assert_eq!(probe("w1").await, (429, "too-many-waiters".to_owned()));
    for customer in ["w2", "w2", "w3"] {
        held.push(tokio::spawn(poll(customer, 25)));
    }
    eventually("five long polls are open", Duration::from_secs(10), open(5)).await;
    assert_eq!(probe("w3").await, (503, "overloaded".to_owned()));
    // A plain read is not a long poll: still served.
    assert_eq!(platform.order(&orders["w3"]).await["status"], "PENDING");
    // Clients that give up free their slots.
    for request in &held {
        request.abort();
    }
    eventually("the slots are freed", Duration::from_secs(10), open(0)).await;
    assert_eq!(probe("w3").await.0, 200);
    platform.pause(Svc::Inventory, 0, false);
    still_works(&mut platform).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn another_customers_idempotency_key_and_cursor_reveal_nothing() {
    let mut platform = start(Options::default()).await;
    let place = |customer: &str, key: &str| {
        platform
            .http
            .post(platform.url(Svc::Order, "/api/v1/orders"))
            .bearer_auth(platform.token(customer))
            .header("idempotency-key", key)
            .json(&json!({"items": [{"sku": FRESH_SKU, "quantity": 1}]}))
            .send()
    };
    let alices = place("alice", "shared-key-1").await.unwrap();
    assert_eq!(alices.status(), 202);
    let alices: Value = alices.json().await.unwrap();
    place("alice", "shared-key-2").await.unwrap();
    // Bob replays Alice's key with her very body: his own new order, not hers.
    let bobs = place("bob", "shared-key-1").await.unwrap();
    assert_eq!(bobs.status(), 202);
    let bobs: Value = bobs.json().await.unwrap();
    assert_ne!(bobs["id"], alices["id"], "bob got alice's order through her Idempotency-Key");
    assert_eq!(bobs["customer_id"], "bob");
    // Bob follows Alice's cursor: still only his own orders.
    let list = |customer: &str, query: String| {
        let url = platform.url(Svc::Order, &format!("/api/v1/orders?{query}"));
        let request = platform.http.get(url).bearer_auth(platform.token(customer));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let page = list("alice", "limit=1".into()).await;
    let cursor = page["next_cursor"].as_str().expect("alice has a second page").to_owned();
    let followed = list("bob", format!("limit=100&cursor={cursor}")).await;
    let customers: Vec<&Value> = followed["items"].as_array().unwrap().iter().map(|o| &o["customer_id"]).collect();
    assert!(customers.iter().all(|c| *c == "bob"), "bob saw {customers:?} through alice's cursor");
    still_works(&mut platform).await;
    platform.shutdown().await;
}

/// `saga_dlq_messages{queue}` of the order service, as `/metrics` shows it now.
async fn dlq_gauge(platform: &Platform, queue: &str) -> Option<i64> {
    let text = platform.http.get(platform.url(Svc::Order, "/metrics")).send().await.ok()?.text().await.ok()?;
    let series = format!("saga_dlq_messages{{queue=\"{queue}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(series.as_str())?.trim().parse().ok())
}

/// The DLQ depth gauge follows the broker: a message dead-lettered in the
/// inventory's DLQ shows there within the order service's read interval
/// (15 s), the other DLQs stay at 0, and it returns to 0 once drained.
#[tokio::test]
async fn dead_letters_show_in_the_dlq_gauge_until_drained() {
    let mut platform = start(Options::default()).await;
    let inventory_dlq = format!("{}.inventory.commands.dlq", platform.name);
    let payment_dlq = format!("{}.payment.commands.dlq", platform.name);
    eventually("saga_dlq_messages at 0 for every DLQ", WAIT, || async {
        (dlq_gauge(&platform, &inventory_dlq).await == Some(0) && dlq_gauge(&platform, &payment_dlq).await == Some(0))
            .then_some(())
    })
    .await;
    let id = new_id();
    let props = properties(&id, "inventory.reserve", headers(vec![("x-correlation-id", long(""))]));
    platform.publish_raw(Svc::Inventory, props, &reserve_unknown()).await;
    eventually("the dead letter counted in saga_dlq_messages", Duration::from_secs(60), || async {
        (dlq_gauge(&platform, &inventory_dlq).await == Some(1)).then_some(())
    })
    .await;
    assert_eq!(dlq_gauge(&platform, &payment_dlq).await, Some(0));
    let drained = platform.drain_dlq(Svc::Inventory).await;
    assert_eq!(drained.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>(), vec![Some(id)]);
    eventually("saga_dlq_messages back to 0 once drained", Duration::from_secs(60), || async {
        (dlq_gauge(&platform, &inventory_dlq).await == Some(0)).then_some(())
    })
    .await;
    still_works(&mut platform).await;
    platform.shutdown().await;
}

/// A labelled series of the order service's `/metrics`, as a number.
async fn order_series(platform: &Platform, series: &str) -> Option<f64> {
    let text = platform.http.get(platform.url(Svc::Order, "/metrics")).send().await.ok()?.text().await.ok()?;
    let prefix = format!("{series} ");
    text.lines().find_map(|line| line.strip_prefix(prefix.as_str())?.trim().parse().ok())
}

/// `saga_running_sagas{step}` and `saga_running_oldest_age_seconds{step}`
/// follow the database: with payment frozen (SIGSTOP) a saga waits in
/// `charging`, counted there with an age that grows; once payment resumes it
/// completes and the step is back to 0.
#[tokio::test]
async fn running_sagas_are_counted_by_step_with_the_oldest_age() {
    let mut platform = start(Options { step_timeout: Duration::from_secs(120), ..Options::default() }).await;
    let running = r#"saga_running_sagas{step="charging"}"#;
    let age = r#"saga_running_oldest_age_seconds{step="charging"}"#;
    let timeout = order_series(&platform, "saga_step_timeout_seconds").await;
    assert_eq!(timeout, Some(120.0));
    platform.pause(Svc::Payment, 0, true);
    let id = platform.place_order(FRESH_CUSTOMER, &[(FRESH_SKU, 1)]).await;
    eventually("the saga counted in charging", Duration::from_secs(30), || async {
        (order_series(&platform, running).await == Some(1.0)).then_some(())
    })
    .await;
    let first = order_series(&platform, age).await.unwrap();
    for step in ["reserving", "confirming", "compensating"] {
        assert_eq!(order_series(&platform, &format!("saga_running_sagas{{step=\"{step}\"}}")).await, Some(0.0));
    }
    eventually("the oldest age grows while it waits", Duration::from_secs(30), || async {
        (order_series(&platform, age).await? > first + 4.0).then_some(())
    })
    .await;
    platform.pause(Svc::Payment, 0, false);
    platform.wait_status(&id, "COMPLETED", Duration::from_secs(30)).await;
    eventually("charging back to 0 with age 0", Duration::from_secs(30), || async {
        (order_series(&platform, running).await == Some(0.0) && order_series(&platform, age).await == Some(0.0))
            .then_some(())
    })
    .await;
    still_works(&mut platform).await;
    platform.shutdown().await;
}
