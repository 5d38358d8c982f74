//! Malformed, unauthenticated and unauthorised requests against the real
//! services: every one is refused with the right status and an RFC 9457
//! problem+json body, and none of them changes any database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use reqwest::header::HeaderValue;
use saga_common::auth::{Claims, mint};
use saga_tests::{Options, Platform, SECRET, Svc};
use serde_json::{Value, json};

const PROBLEM_JSON: &str = "application/problem+json";
const ORDERS: &str = "/api/v1/orders";
const NEW_PRODUCT: &str = "/api/v1/products/NEW-SKU";
const BOB_ACCOUNT: &str = "/api/v1/accounts/bob";

enum Body {
    /// No body and no content type.
    None,
    /// Serialized, sent as `application/json`.
    Json(Value),
    /// Exactly these bytes, with this content type (if any).
    Raw(Option<&'static str>, Vec<u8>),
}

struct Case {
    name: &'static str,
    svc: Svc,
    method: Method,
    path: String,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Body,
    expect_status: u16,
    /// The last segment of the problem `type` (checked when given).
    expect_type: Option<&'static str>,
    /// For the positive control: the order id the response must carry.
    expect_order_id: Option<String>,
}

impl Case {
    fn new(name: &'static str, svc: Svc, method: Method, path: impl Into<String>) -> Case {
        Case {
            name,
            svc,
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Body::None,
            expect_status: 0,
            expect_type: None,
            expect_order_id: None,
        }
    }

    fn order(name: &'static str, method: Method, path: impl Into<String>) -> Case {
        Case::new(name, Svc::Order, method, path)
    }

    fn inventory(name: &'static str, method: Method, path: impl Into<String>) -> Case {
        Case::new(name, Svc::Inventory, method, path)
    }

    fn payment(name: &'static str, method: Method, path: impl Into<String>) -> Case {
        Case::new(name, Svc::Payment, method, path)
    }

    /// POST /api/v1/orders as `token`.
    fn place(name: &'static str, token: &str) -> Case {
        Case::order(name, Method::POST, ORDERS).bearer(token)
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Case {
        self.headers.push((name, value));
        self
    }

    fn authorization(self, value: &str) -> Case {
        self.header("authorization", HeaderValue::from_str(value).unwrap())
    }

    fn bearer(self, token: &str) -> Case {
        self.authorization(&format!("Bearer {token}"))
    }

    fn idempotency_key(self, value: HeaderValue) -> Case {
        self.header("idempotency-key", value)
    }

    fn json(mut self, body: Value) -> Case {
        self.body = Body::Json(body);
        self
    }

    fn raw(mut self, content_type: Option<&'static str>, bytes: impl Into<Vec<u8>>) -> Case {
        self.body = Body::Raw(content_type, bytes.into());
        self
    }

    fn expect(mut self, status: u16, kind: &'static str) -> Case {
        self.expect_status = status;
        self.expect_type = Some(kind);
        self
    }

    fn expect_order(mut self, status: u16, id: &str) -> Case {
        self.expect_status = status;
        self.expect_order_id = Some(id.to_owned());
        self
    }
}

fn line(sku: impl Into<Value>, quantity: impl Into<Value>) -> Value {
    json!({"sku": sku.into(), "quantity": quantity.into()})
}

fn items(lines: Vec<Value>) -> Value {
    json!({ "items": lines })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Signs arbitrary claims with `algorithm` and `secret`.
fn sign(algorithm: Algorithm, secret: &str, claims: &impl serde::Serialize) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// Sends one case; returns a description of every way it went wrong.
async fn run(platform: &Platform, case: &Case) -> Vec<String> {
    let mut request = platform.http.request(case.method.clone(), platform.url(case.svc, &case.path));
    for (name, value) in &case.headers {
        request = request.header(*name, value.clone());
    }
    request = match &case.body {
        Body::None => request,
        Body::Json(value) => request.json(value),
        Body::Raw(content_type, bytes) => {
            let request = match content_type {
                Some(content_type) => request.header("content-type", *content_type),
                None => request,
            };
            request.body(bytes.clone())
        }
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return vec![format!("request failed: {e}")],
    };
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = response.text().await.unwrap_or_default();
    let mut errors = Vec::new();
    if status != case.expect_status {
        errors.push(format!("status {status}, expected {}", case.expect_status));
    }
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if let Some(id) = &case.expect_order_id {
        let got = body.as_ref().and_then(|b| b["id"].as_str());
        if got != Some(id.as_str()) {
            errors.push(format!("order id {got:?}, expected {id}"));
        }
    } else {
        if content_type != PROBLEM_JSON {
            errors.push(format!("content-type {content_type:?}, expected {PROBLEM_JSON}"));
        }
        match &body {
            Some(problem @ Value::Object(_)) => {
                for field in ["type", "title", "detail"] {
                    if !problem[field].is_string() {
                        errors.push(format!("`{field}` missing or not a string"));
                    }
                }
                if problem["status"].as_u64() != Some(u64::from(status)) {
                    errors.push(format!("`status` is {}, the HTTP status is {status}", problem["status"]));
                }
                if let Some(kind) = case.expect_type {
                    let suffix = format!("/{kind}");
                    if !problem["type"].as_str().is_some_and(|t| t.ends_with(&suffix)) {
                        errors.push(format!("type {}, expected …{suffix}", problem["type"]));
                    }
                }
            }
            _ => errors.push("body is not a JSON object".into()),
        }
    }
    if !errors.is_empty() {
        errors.push(format!("body: {}", text.chars().take(300).collect::<String>()));
    }
    errors
}

const TABLES: [(Svc, &str); 8] = [
    (Svc::Order, "orders"),
    (Svc::Order, "outbox"),
    (Svc::Order, "saga_events"),
    (Svc::Order, "idempotency_keys"),
    (Svc::Inventory, "products"),
    (Svc::Inventory, "reservations"),
    (Svc::Payment, "accounts"),
    (Svc::Payment, "payments"),
];

async fn row_counts(platform: &Platform) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (svc, table) in TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(platform.pool(svc)).await.unwrap();
        counts.insert(format!("{svc:?}.{table}"), count);
    }
    counts
}

/// Row counts once every service's outbox is empty (nothing left in flight).
async fn settled_row_counts(platform: &Platform) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut pending = 0;
        for svc in Svc::ALL {
            let (count,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(platform.pool(svc)).await.unwrap();
            pending += count;
        }
        if pending == 0 {
            return row_counts(platform).await;
        }
        assert!(Instant::now() < deadline, "outboxes never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_problem_json_and_change_nothing() {
    let started = Instant::now();
    let platform = Platform::start(Options::default()).await;
    let before_setup = row_counts(&platform).await;

    // Setup, on purpose: one product, one account, and one order by alice
    // under an Idempotency-Key. Its SKU does not exist, so the saga ends
    // FAILED (unknown_sku) quickly and nothing is left running.
    platform.put_product("CTL-SKU", 250, 10).await;
    platform.put_account("alice", 5_000).await;
    let alice = platform.token("alice");
    let bob = platform.token("bob");
    let admin = platform.admin_token();
    let control_key = "control-key-1";
    let control_body = items(vec![line("NO-SUCH-SKU", 2)]);
    let response = platform
        .http
        .post(platform.url(Svc::Order, ORDERS))
        .bearer_auth(&alice)
        .header("idempotency-key", control_key)
        .json(&control_body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 202, "the control order: {text}");
    let control: Value = serde_json::from_str(&text).unwrap();
    let control_id = control["id"].as_str().unwrap().to_owned();
    let failed = platform.wait_final(&control_id, Duration::from_secs(30)).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["failure_reason"], "unknown_sku", "{failed}");
    // Timeline rows (one per saga step; the API expands them into entries).
    let control_events: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_events WHERE order_id = $1")
        .bind(uuid::Uuid::parse_str(&control_id).unwrap())
        .fetch_one(platform.pool(Svc::Order))
        .await
        .unwrap();
    assert!(platform.events(&control_id).await.len() as i64 > control_events, "entries are expanded from steps");

    let before = settled_row_counts(&platform).await;
    let mut expected = before_setup.clone();
    for (table, delta) in [
        ("Order.orders", 1),
        ("Order.idempotency_keys", 1),
        ("Order.saga_events", control_events),
        ("Inventory.products", 1),
        // The control order's reservation, stored as REJECTED.
        ("Inventory.reservations", 1),
        ("Payment.accounts", 1),
    ] {
        *expected.get_mut(table).unwrap() += delta;
    }
    assert_eq!(before, expected, "the setup stored exactly what it placed");

    let expired = sign(
        Algorithm::HS256,
        SECRET,
        &Claims { sub: "alice".into(), role: None, exp: now_secs() - 3600, iat: now_secs() - 7200 },
    );
    let wrong_algorithm = sign(
        Algorithm::HS512,
        SECRET,
        &Claims { sub: "alice".into(), role: None, exp: now_secs() + 3600, iat: now_secs() },
    );
    let no_sub = sign(Algorithm::HS256, SECRET, &json!({"exp": now_secs() + 3600}));
    let empty_sub = sign(Algorithm::HS256, SECRET, &json!({"sub": "", "exp": now_secs() + 3600}));
    let other_secret = mint("some-other-secret-some-other-secret-0000", "alice", true, Duration::from_secs(3600));

    let valid = || items(vec![line("SKU-1", 2)]);
    let unknown_id = uuid::Uuid::now_v7().to_string();
    let order_path = format!("{ORDERS}/{control_id}");
    let control_payment = format!("/api/v1/payments/{control_id}");
    let key = |s: &str| HeaderValue::from_str(s).unwrap();
    let json_ct = Some("application/json");

    let cases = vec![
        // --- body syntax (400) ---
        Case::place("malformed JSON", &alice).raw(json_ct, "{items: [}").expect(400, "malformed-json"),
        Case::place("truncated JSON", &alice)
            .raw(json_ct, r#"{"items":[{"sku":"SKU-1","quantity":2}"#)
            .expect(400, "malformed-json"),
        Case::place("empty body", &alice).raw(json_ct, "").expect(400, "malformed-json"),
        Case::place("trailing garbage after the object", &alice)
            .raw(json_ct, r#"{"items":[{"sku":"SKU-1","quantity":2}]} x"#)
            .expect(400, "malformed-json"),
        Case::place("invalid UTF-8 in a string", &alice)
            .raw(json_ct, b"{\"items\":[{\"sku\":\"\xff\xfe\",\"quantity\":2}]}".to_vec())
            .expect(400, "malformed-json"),
        // --- media type (415) and size (413) ---
        Case::place("wrong content type", &alice)
            .raw(Some("text/plain"), valid().to_string())
            .expect(415, "unsupported-media-type"),
        Case::place("no content type", &alice).raw(None, valid().to_string()).expect(415, "unsupported-media-type"),
        Case::place("body over 64 KiB", &alice)
            .json(items(vec![line("A".repeat(70 * 1024), 1)]))
            .expect(413, "body-too-large"),
        // --- body shape (422 invalid-body) ---
        Case::place("JSON array instead of object", &alice).json(json!([line("SKU-1", 2)])).expect(422, "invalid-body"),
        Case::place("missing items", &alice).json(json!({})).expect(422, "invalid-body"),
        Case::place("items not an array", &alice)
            .json(json!({"items": {"sku": "SKU-1", "quantity": 2}}))
            .expect(422, "invalid-body"),
        Case::place("null items", &alice).json(json!({"items": null})).expect(422, "invalid-body"),
        Case::place("quantity as string", &alice).json(items(vec![line("SKU-1", "2")])).expect(422, "invalid-body"),
        Case::place("quantity as float", &alice).json(items(vec![line("SKU-1", 2.5)])).expect(422, "invalid-body"),
        Case::place("quantity beyond i64", &alice)
            .raw(json_ct, r#"{"items":[{"sku":"SKU-1","quantity":99999999999999999999}]}"#)
            .expect(422, "invalid-body"),
        Case::place("sku missing from a line", &alice)
            .json(json!({"items": [{"quantity": 2}]}))
            .expect(422, "invalid-body"),
        Case::place("unknown top-level field", &alice)
            .json(json!({"items": [line("SKU-1", 2)], "coupon": "FREE"}))
            .expect(422, "invalid-body"),
        Case::place("unknown field in a line", &alice)
            .json(json!({"items": [{"sku": "SKU-1", "quantity": 2, "price": 1}]}))
            .expect(422, "invalid-body"),
        Case::place("duplicate items field", &alice)
            .raw(json_ct, r#"{"items":[{"sku":"SKU-1","quantity":2}],"items":[{"sku":"SKU-2","quantity":1}]}"#)
            .expect(422, "invalid-body"),
        // --- body values (422 validation-failed) ---
        Case::place("empty items", &alice).json(items(vec![])).expect(422, "validation-failed"),
        Case::place("101 lines", &alice).json(items(vec![line("SKU-1", 1); 101])).expect(422, "validation-failed"),
        Case::place("quantity 0", &alice).json(items(vec![line("SKU-1", 0)])).expect(422, "validation-failed"),
        Case::place("negative quantity", &alice).json(items(vec![line("SKU-1", -3)])).expect(422, "validation-failed"),
        Case::place("quantity 10001", &alice).json(items(vec![line("SKU-1", 10_001)])).expect(422, "validation-failed"),
        Case::place("bad second line", &alice)
            .json(items(vec![line("SKU-1", 1), line("SKU-2", 0)]))
            .expect(422, "validation-failed"),
        Case::place("empty sku", &alice).json(items(vec![line("", 1)])).expect(422, "validation-failed"),
        Case::place("sku with spaces", &alice).json(items(vec![line("SKU 1", 1)])).expect(422, "validation-failed"),
        Case::place("sku of 65 characters", &alice)
            .json(items(vec![line("S".repeat(65), 1)]))
            .expect(422, "validation-failed"),
        Case::place("non-ASCII sku", &alice).json(items(vec![line("SKÜ-1", 1)])).expect(422, "validation-failed"),
        // --- authentication (401) ---
        Case::order("no Authorization header", Method::POST, ORDERS).json(valid()).expect(401, "unauthorized"),
        Case::order("no Authorization header, malformed body", Method::POST, ORDERS)
            .raw(json_ct, "{")
            .expect(401, "unauthorized"),
        Case::order("non-Bearer scheme", Method::POST, ORDERS)
            .authorization(&format!("Basic {alice}"))
            .json(valid())
            .expect(401, "unauthorized"),
        Case::order("Bearer without a token", Method::GET, ORDERS).authorization("Bearer ").expect(401, "unauthorized"),
        Case::place("garbage token", "not.a.jwt").json(valid()).expect(401, "unauthorized"),
        Case::place("token signed with another secret", &other_secret).json(valid()).expect(401, "unauthorized"),
        Case::place("expired token", &expired).json(valid()).expect(401, "unauthorized"),
        Case::place("token signed with HS512", &wrong_algorithm).json(valid()).expect(401, "unauthorized"),
        Case::place("token without sub", &no_sub).json(valid()).expect(401, "unauthorized"),
        Case::place("token with empty sub", &empty_sub).json(valid()).expect(401, "unauthorized"),
        Case::order("list without a token", Method::GET, ORDERS).expect(401, "unauthorized"),
        // --- Idempotency-Key ---
        Case::place("Idempotency-Key of 256 characters", &alice)
            .idempotency_key(key(&"k".repeat(256)))
            .json(valid())
            .expect(400, "invalid-idempotency-key"),
        Case::place("empty Idempotency-Key", &alice)
            .idempotency_key(key(""))
            .json(valid())
            .expect(400, "invalid-idempotency-key"),
        Case::place("non-ASCII Idempotency-Key", &alice)
            .idempotency_key(HeaderValue::from_bytes("clé-1".as_bytes()).unwrap())
            .json(valid())
            .expect(400, "invalid-idempotency-key"),
        Case::place("Idempotency-Key with a space", &alice)
            .idempotency_key(key("has space"))
            .json(valid())
            .expect(400, "invalid-idempotency-key"),
        Case::place("Idempotency-Key reused with another body", &alice)
            .idempotency_key(key(control_key))
            .json(items(vec![line("NO-SUCH-SKU", 3)]))
            .expect(422, "idempotency-key-reused"),
        Case::place("Idempotency-Key replayed with the same body (control)", &alice)
            .idempotency_key(key(control_key))
            .json(control_body.clone())
            .expect_order(202, &control_id),
        // --- one order: ownership, path, state ---
        Case::order("another customer's order", Method::GET, &order_path).bearer(&bob).expect(404, "not-found"),
        Case::order("cancel another customer's order", Method::POST, format!("{order_path}/cancel"))
            .bearer(&bob)
            .expect(404, "not-found"),
        Case::order("another customer's order events", Method::GET, format!("{order_path}/events"))
            .bearer(&bob)
            .expect(404, "not-found"),
        Case::order("non-UUID order id", Method::GET, format!("{ORDERS}/not-a-uuid"))
            .bearer(&alice)
            .expect(400, "invalid-path"),
        Case::order("cancel a non-UUID order id", Method::POST, format!("{ORDERS}/123/cancel"))
            .bearer(&alice)
            .expect(400, "invalid-path"),
        Case::order("unknown order id", Method::GET, format!("{ORDERS}/{unknown_id}"))
            .bearer(&admin)
            .expect(404, "not-found"),
        Case::order("cancel an unknown order id", Method::POST, format!("{ORDERS}/{unknown_id}/cancel"))
            .bearer(&admin)
            .expect(404, "not-found"),
        Case::order("cancel an order that already FAILED", Method::POST, format!("{order_path}/cancel"))
            .bearer(&alice)
            .expect(409, "cannot-cancel"),
        // --- list query ---
        Case::order("limit=0", Method::GET, format!("{ORDERS}?limit=0")).bearer(&alice).expect(400, "invalid-query"),
        Case::order("limit=101", Method::GET, format!("{ORDERS}?limit=101"))
            .bearer(&alice)
            .expect(400, "invalid-query"),
        Case::order("limit not a number", Method::GET, format!("{ORDERS}?limit=ten"))
            .bearer(&alice)
            .expect(400, "invalid-query"),
        Case::order("status=BOGUS", Method::GET, format!("{ORDERS}?status=BOGUS"))
            .bearer(&alice)
            .expect(400, "invalid-query"),
        Case::order("cursor=garbage", Method::GET, format!("{ORDERS}?cursor=garbage"))
            .bearer(&alice)
            .expect(400, "invalid-query"),
        Case::order("unknown query parameter", Method::GET, format!("{ORDERS}?sort=asc"))
            .bearer(&alice)
            .expect(400, "invalid-query"),
        // --- routing ---
        Case::order("DELETE /api/v1/orders", Method::DELETE, ORDERS).bearer(&admin).expect(405, "method-not-allowed"),
        Case::order("PUT on an order", Method::PUT, &order_path)
            .bearer(&admin)
            .json(valid())
            .expect(405, "method-not-allowed"),
        Case::order("unknown route", Method::GET, "/api/v1/nope").bearer(&admin).expect(404, "not-found"),
        Case::order("unknown route without a token", Method::GET, "/nope").expect(404, "not-found"),
        // --- inventory admin routes ---
        Case::inventory("PUT product as non-admin", Method::PUT, "/api/v1/products/CTL-SKU")
            .bearer(&alice)
            .json(json!({"name": "hijacked", "unit_price_cents": 1, "on_hand": 999}))
            .expect(403, "forbidden"),
        Case::inventory("PUT new product as non-admin", Method::PUT, NEW_PRODUCT)
            .bearer(&alice)
            .json(json!({"name": "new", "unit_price_cents": 1, "on_hand": 1}))
            .expect(403, "forbidden"),
        Case::inventory("PUT product as non-admin, malformed body", Method::PUT, NEW_PRODUCT)
            .bearer(&alice)
            .raw(json_ct, "{")
            .expect(403, "forbidden"),
        Case::inventory("PUT product without a token", Method::PUT, NEW_PRODUCT)
            .json(json!({"name": "new", "unit_price_cents": 1, "on_hand": 1}))
            .expect(401, "unauthorized"),
        Case::inventory("PUT product, malformed JSON", Method::PUT, NEW_PRODUCT)
            .bearer(&admin)
            .raw(json_ct, r#"{"name": "new","#)
            .expect(400, "malformed-json"),
        Case::inventory("PUT product, negative price", Method::PUT, NEW_PRODUCT)
            .bearer(&admin)
            .json(json!({"name": "new", "unit_price_cents": -1, "on_hand": 1}))
            .expect(422, "validation-failed"),
        Case::inventory("PUT product, sku with spaces", Method::PUT, "/api/v1/products/BAD%20SKU")
            .bearer(&admin)
            .json(json!({"name": "new", "unit_price_cents": 1, "on_hand": 1}))
            .expect(422, "validation-failed"),
        Case::inventory("PUT product, reserved is not settable", Method::PUT, NEW_PRODUCT)
            .bearer(&admin)
            .json(json!({"name": "new", "unit_price_cents": 1, "on_hand": 1, "reserved": 5}))
            .expect(422, "invalid-body"),
        // Integers may be written 2.0 (JSON Schema counts them so), never 2.5.
        Case::inventory("PUT product, fractional stock", Method::PUT, NEW_PRODUCT)
            .bearer(&admin)
            .json(json!({"name": "new", "unit_price_cents": 1, "on_hand": 2.5}))
            .expect(422, "invalid-body"),
        Case::inventory("PUT product, negative price written -1.0", Method::PUT, NEW_PRODUCT)
            .bearer(&admin)
            .json(json!({"name": "new", "unit_price_cents": -1.0, "on_hand": 1}))
            .expect(422, "validation-failed"),
        Case::inventory("PUT product, name with a control character", Method::PUT, NEW_PRODUCT)
            .bearer(&admin)
            .json(json!({"name": "new\u{7}", "unit_price_cents": 1, "on_hand": 1}))
            .expect(422, "validation-failed"),
        // --- payment admin routes ---
        Case::payment("PUT account as non-admin", Method::PUT, "/api/v1/accounts/alice")
            .bearer(&alice)
            .json(json!({"balance_cents": 1_000_000}))
            .expect(403, "forbidden"),
        Case::payment("PUT own new account as non-admin", Method::PUT, BOB_ACCOUNT)
            .bearer(&bob)
            .json(json!({"balance_cents": 1_000_000}))
            .expect(403, "forbidden"),
        Case::payment("PUT account as non-admin, invalid body", Method::PUT, BOB_ACCOUNT)
            .bearer(&bob)
            .json(json!({"balance_cents": -1, "extra": true}))
            .expect(403, "forbidden"),
        Case::payment("PUT account, negative balance", Method::PUT, BOB_ACCOUNT)
            .bearer(&admin)
            .json(json!({"balance_cents": -1}))
            .expect(422, "validation-failed"),
        Case::payment("PUT account, balance as string", Method::PUT, BOB_ACCOUNT)
            .bearer(&admin)
            .json(json!({"balance_cents": "100"}))
            .expect(422, "invalid-body"),
        Case::payment("PUT account, fractional balance", Method::PUT, BOB_ACCOUNT)
            .bearer(&admin)
            .json(json!({"balance_cents": 100.5}))
            .expect(422, "invalid-body"),
        Case::payment("PUT account, wrong content type", Method::PUT, BOB_ACCOUNT)
            .bearer(&admin)
            .raw(Some("application/x-www-form-urlencoded"), "balance_cents=100")
            .expect(415, "unsupported-media-type"),
        Case::payment("GET payment as non-admin", Method::GET, &control_payment)
            .bearer(&alice)
            .expect(403, "forbidden"),
        Case::payment("GET payment, non-UUID order id", Method::GET, "/api/v1/payments/not-a-uuid")
            .bearer(&admin)
            .expect(400, "invalid-path"),
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let errors = run(&platform, case).await;
        let verdict = if errors.is_empty() { "ok  " } else { "FAIL" };
        println!("{verdict} {:<55} {} {:?} {}", case.name, case.method, case.svc, case.expect_status);
        if !errors.is_empty() {
            failures.push(format!("{}:\n    {}", case.name, errors.join("\n    ")));
        }
    }

    // Nothing above may have stored anything: not an order, an event, an
    // outbox message, an idempotency key, a product or an account.
    let after = settled_row_counts(&platform).await;
    if after != before {
        failures.push(format!("bad requests changed the databases:\n    before {before:?}\n    after  {after:?}"));
    }
    let product = platform.product("CTL-SKU").await;
    if product["unit_price_cents"] != 250 || product["on_hand"] != 10 {
        failures.push(format!("CTL-SKU changed: {product}"));
    }
    if platform.balance("alice").await != 5_000 {
        failures.push("alice's balance changed".into());
    }
    let order = platform.order(&control_id).await;
    if order["status"] != "FAILED" {
        failures.push(format!("the control order changed: {order}"));
    }

    platform.shutdown().await;
    println!("{} cases in {:.1?}", cases.len(), started.elapsed());
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
