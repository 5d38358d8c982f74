//! The notification service end to end: real order events from a real
//! platform (RabbitMQ, PostgreSQL, the four services of the harness, the
//! notification service configured through `Options::env`), a real HTTP receiver in this test that
//! checks the Standard Webhooks signatures with its own code, and a real SMTP
//! server (PyPI aiosmtpd, tests/smtp_sink.py; `scripts/smtp-sink.sh` installs it).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lapin::BasicProperties;
use saga_tests::{Options, Platform, SECRET, Svc, bin_dir, eventually, free_port};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

const WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The receiver's own signature check (Standard Webhooks), independent of the
// service's code: HMAC-SHA256 written out over SHA-256 (RFC 2104).

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The `v1,` signature a receiver expects from `secret` (`whsec_` + base64 key).
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).expect("base64 key");
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &signed)))
}

/// Whether one of the space-separated signatures is `secret`'s.
fn signed_by(secret: &str, request: &Received) -> bool {
    let expected = expected_signature(secret, &request.id, &request.timestamp, &request.body);
    request.signatures.contains(&expected)
}

#[test]
fn the_receivers_check_agrees_with_the_specification_vector() {
    let request = Received {
        path: String::new(),
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
        timestamp: "1614265330".into(),
        signatures: vec!["v1,bm9wZQ==".into(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()],
        body: br#"{"test": 2432232314}"#.to_vec(),
    };
    assert!(signed_by("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &request));
    assert!(!signed_by("whsec_AAAA9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &request));
}

// ---------------------------------------------------------------------------
// The receiver: records every request, applies each webhook-id's effect once.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Status(u16),
    Redirect,
    /// Applies the effect, then answers only after far longer than the
    /// service's request timeout.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signatures: Vec<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    /// Answers to give, in order; then `fallback`.
    script: VecDeque<Answer>,
    fallback: Option<Answer>,
    requests: Vec<Received>,
    /// The effect of each webhook-id, applied once: the body first received.
    effects: BTreeMap<String, Value>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<ReceiverState>>);

impl Receiver {
    async fn start() -> (Receiver, u16) {
        let receiver = Receiver::default();
        let app = axum::Router::new().route("/{path}", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, port)
    }

    fn script(&self, answers: &[Answer], fallback: Answer) {
        let mut state = self.0.lock().unwrap();
        state.script = answers.iter().copied().collect();
        state.fallback = Some(fallback);
    }

    fn requests(&self, path: &str) -> Vec<Received> {
        self.0.lock().unwrap().requests.iter().filter(|r| r.path == path).cloned().collect()
    }

    fn effects(&self) -> BTreeMap<String, Value> {
        self.0.lock().unwrap().effects.clone()
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let request = Received {
        path,
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signatures: header("webhook-signature").split(' ').map(str::to_owned).collect(),
        body: body.to_vec(),
    };
    let answer = {
        let mut state = receiver.0.lock().unwrap();
        state.requests.push(request.clone());
        let answer = state.script.pop_front().or(state.fallback).unwrap_or(Answer::Ok);
        if matches!(answer, Answer::Ok | Answer::Hang) {
            // Deduplicated by webhook-id, as the documentation tells receivers
            // to. A hanging receiver did the work but answers too late.
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            state.effects.entry(request.id.clone()).or_insert(body);
        }
        answer
    };
    match answer {
        Answer::Ok => (StatusCode::OK, "thanks").into_response(),
        Answer::Status(code) => (StatusCode::from_u16(code).unwrap(), "not now").into_response(),
        Answer::Redirect => (StatusCode::FOUND, [("location", "http://169.254.169.254/")], "").into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (StatusCode::OK, "too late").into_response()
        }
    }
}

// ---------------------------------------------------------------------------
// The harness's notification-service.

struct Notifier {
    base: String,
    pool: PgPool,
    http: reqwest::Client,
    platform: String,
}

impl Notifier {
    /// The platform's notification-service (replica 0).
    fn of(platform: &Platform) -> Notifier {
        Notifier {
            base: platform.url(Svc::Notification, ""),
            pool: platform.pool(Svc::Notification).clone(),
            http: reqwest::Client::new(),
            platform: platform.name.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }

    /// Registers an endpoint; panics unless 201.
    async fn register(&self, token: &str, body: Value) -> Value {
        let (status, endpoint) = self.post("/api/v1/endpoints", token, body).await;
        assert_eq!(status, 201, "{endpoint}");
        endpoint
    }

    /// Waits until the delivery has reached `status`; returns it.
    async fn wait_delivery(&self, id: &str, token: &str, status: &str) -> Value {
        eventually(&format!("delivery {id} {status} (logs: test-logs/{})", self.platform), WITHIN, || async {
            let (_, delivery) = self.get(&format!("/api/v1/deliveries/{id}"), token).await;
            (delivery["status"] == status).then_some(delivery)
        })
        .await
    }

    /// The deliveries of an endpoint, newest first.
    async fn deliveries(&self, endpoint: &str, token: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/api/v1/deliveries?endpoint_id={endpoint}"), token).await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().clone()
    }

    /// The attempts of an endpoint, newest first.
    async fn attempts(&self, endpoint: &str, token: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/api/v1/endpoints/{endpoint}/attempts"), token).await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().clone()
    }

    /// Runs `sagactl ARGS -o json` against this service (an admin's token
    /// minted with the platform's secret); its parsed output.
    fn sagactl(&self, args: &[&str]) -> Value {
        let output = Command::new(bin_dir().join("sagactl"))
            .args(args)
            .args(["-o", "json"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent-home")
            .env("AUTH_JWT_SECRET", SECRET)
            .env("NOTIFICATION_URL", &self.base)
            .output()
            .expect("run `cargo build --bins` first");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "sagactl {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("sagactl {args:?}: {e}: {stdout}"))
    }
}

/// A platform selling `widget` at 2.50, with these customers' accounts
/// funded; `env` on top of every service's environment (the notification
/// service's settings).
async fn shop(customers: &[&str], env: Vec<(&'static str, String)>) -> Platform {
    let platform = Platform::start(Options { env, ..Options::default() }).await;
    platform.put_product("widget", 250, 1_000).await;
    for customer in customers {
        platform.put_account(customer, 1_000_000).await;
    }
    platform
}

/// Places an order of two widgets and waits until it is COMPLETED.
async fn completed_order(platform: &Platform, customer: &str) -> String {
    let id = platform.place_order(customer, &[("widget", 2)]).await;
    platform.wait_status(&id, "COMPLETED", WITHIN).await;
    id
}

fn allow_local() -> (&'static str, String) {
    ("WEBHOOK_ALLOW_CIDRS", "127.0.0.1/32".to_owned())
}

// ---------------------------------------------------------------------------

/// Signed per the specification, each customer's events to their own
/// endpoints (and every event to an admin's), one delivery per endpoint and
/// event whatever the broker redelivers, one effect per webhook-id however
/// often it is sent, and both signatures verifiable during a rotation.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_deduplicated_and_rotated() {
    let platform = shop(&["alice", "bob"], vec![allow_local()]).await;
    let notifier = Notifier::of(&platform);
    let (receiver, port) = Receiver::start().await;
    let (alice, bob, admin) = (platform.token("alice"), platform.token("bob"), platform.admin_token());
    let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");

    let endpoint = notifier.register(&alice, json!({"channel": "webhook", "url": url("alice")})).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && STANDARD.decode(&secret[6..]).unwrap().len() >= 24, "{secret}");
    assert_eq!(endpoint["event_types"], json!(["order.completed", "order.failed", "order.cancelled"]));
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let bobs = notifier.register(&bob, json!({"channel": "webhook", "url": url("bob")})).await;
    // Only admins may listen to everyone.
    let (status, problem) = notifier
        .post("/api/v1/endpoints", &bob, json!({"channel": "webhook", "url": url("x"), "all_customers": true}))
        .await;
    assert_eq!(status, 403, "{problem}");
    let everyone =
        notifier.register(&admin, json!({"channel": "webhook", "url": url("admin"), "all_customers": true})).await;
    let admin_secret = everyone["secret"].as_str().unwrap().to_owned();

    let order = completed_order(&platform, "alice").await;
    let delivered = eventually("alice's endpoint received the event", WITHIN, || async {
        receiver.requests("alice").first().cloned()
    })
    .await;
    assert!(signed_by(&secret, &delivered), "{delivered:?}");
    let now = chrono::Utc::now().timestamp();
    let timestamp: i64 = delivered.timestamp.parse().unwrap();
    assert!((now - timestamp).abs() < 300, "webhook-timestamp {timestamp} is not now ({now})");
    let body: Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(body["type"], "order.completed");
    assert_eq!(body["data"]["order_id"], order.as_str());
    assert_eq!(body["data"]["customer_id"], "alice");
    assert_eq!(body["data"]["total_cents"], 500);
    // The admin endpoint gets it too, signed with its own secret; bob's does not.
    let to_admin = eventually("the admin endpoint received the event", WITHIN, || async {
        receiver.requests("admin").first().cloned()
    })
    .await;
    assert!(signed_by(&admin_secret, &to_admin) && !signed_by(&secret, &to_admin));
    assert!(notifier.deliveries(bobs["id"].as_str().unwrap(), &bob).await.is_empty());
    assert!(receiver.requests("bob").is_empty());

    // The broker delivers the same event again (a new message id, so the
    // inbox lets it through): no second delivery to any endpoint.
    let event = body["data"].clone();
    let duplicate_id = uuid::Uuid::now_v7().to_string();
    let properties = BasicProperties::default()
        .with_message_id(duplicate_id.as_str().into())
        .with_type("order.completed".into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    platform.publish_event("order.completed", properties, &serde_json::to_vec(&event).unwrap()).await;
    eventually("the duplicate event was handled", WITHIN, || async {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
            .bind(&duplicate_id)
            .fetch_one(&notifier.pool)
            .await
            .unwrap();
        (seen == 1).then_some(())
    })
    .await;
    let deliveries = notifier.deliveries(&endpoint_id, &alice).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    let delivery_id = deliveries[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(delivery_id, delivered.id, "the webhook-id is the delivery's id");
    notifier.wait_delivery(&delivery_id, &alice, "delivered").await;

    // Bob can neither see nor redeliver alice's delivery.
    assert_eq!(notifier.get(&format!("/api/v1/deliveries/{delivery_id}"), &bob).await.0, 404);
    assert_eq!(notifier.post(&format!("/api/v1/deliveries/{delivery_id}/redeliver"), &bob, json!({})).await.0, 404);
    // Alice redelivers it: sent again with the same webhook-id, applied once.
    let (status, redelivered) =
        notifier.post(&format!("/api/v1/deliveries/{delivery_id}/redeliver"), &alice, json!({})).await;
    assert_eq!(status, 202, "{redelivered}");
    eventually("the redelivery arrived", WITHIN, || async { (receiver.requests("alice").len() == 2).then_some(()) })
        .await;
    let requests = receiver.requests("alice");
    assert!(requests.iter().all(|r| r.id == delivered.id && signed_by(&secret, r)), "{requests:?}");
    let effects = receiver.effects();
    assert_eq!(effects.keys().filter(|id| **id == delivered.id).count(), 1);
    notifier.wait_delivery(&delivery_id, &alice, "delivered").await;
    let attempts = notifier.attempts(&endpoint_id, &alice).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert!(
        attempts.iter().all(|a| a["succeeded"] == true && a["status_code"] == 200 && a["delivery_id"] == delivery_id)
    );

    // Rotation: a new secret; both sign until the overlap ends.
    let (status, rotated) =
        notifier.post(&format!("/api/v1/endpoints/{endpoint_id}/rotate-secret"), &alice, json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
    let (_, shown) = notifier.get(&format!("/api/v1/endpoints/{endpoint_id}"), &alice).await;
    assert!(shown.get("secret").is_none(), "a secret is shown only on creation and rotation: {shown}");
    let second = completed_order(&platform, "alice").await;
    let during = eventually("the second order's webhook arrived", WITHIN, || async {
        receiver
            .requests("alice")
            .into_iter()
            .find(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["data"]["order_id"] == second.as_str()))
    })
    .await;
    assert_eq!(during.signatures.len(), 2, "{during:?}");
    assert!(signed_by(&new_secret, &during) && signed_by(&secret, &during), "{during:?}");
    let by_new = expected_signature(&new_secret, &during.id, &during.timestamp, &during.body);
    let by_old = expected_signature(&secret, &during.id, &during.timestamp, &during.body);
    assert_eq!(during.signatures, [by_new, by_old]);

    // sagactl webhooks list | attempts | redeliver (as an admin).
    let listed = notifier.sagactl(&["webhooks", "list"]);
    let targets: Vec<&str> =
        listed["endpoints"].as_array().unwrap().iter().map(|e| e["target"].as_str().unwrap()).collect();
    assert_eq!(targets.len(), 3, "{listed}");
    assert!(targets.contains(&url("alice").as_str()) && targets.contains(&url("admin").as_str()), "{listed}");
    // The second order's attempt is recorded once the receiver has answered.
    eventually("three attempts logged", WITHIN, || async {
        (notifier.attempts(&endpoint_id, &alice).await.len() == 3).then_some(())
    })
    .await;
    let logged = notifier.sagactl(&["webhooks", "attempts", &endpoint_id]);
    let logged = logged["attempts"].as_array().unwrap();
    assert_eq!(logged.len(), 3, "{logged:#?}");
    assert!(logged.iter().all(|a| a["succeeded"] == true && a["status_code"] == 200));
    let again = notifier.sagactl(&["webhooks", "redeliver", &delivery_id]);
    assert_eq!(again["delivery"]["id"], delivery_id.as_str(), "{again}");
    eventually("sagactl's redelivery arrived", WITHIN, || async {
        (receiver.requests("alice").iter().filter(|r| r.id == delivered.id).count() == 3).then_some(())
    })
    .await;
    assert_eq!(receiver.effects().keys().filter(|id| **id == delivered.id).count(), 1);

    platform.shutdown().await;
}

/// A receiver that redirects, answers 503, then hangs is retried (each
/// attempt logged: the redirect not followed, the status, the timeout) until
/// it answers; one that keeps failing gets its endpoint disabled, with the
/// reason in the API, and re-enabling it delivers what waited.
#[tokio::test(flavor = "multi_thread")]
async fn failures_are_retried_logged_and_disable_the_endpoint() {
    let platform = shop(
        &["carol"],
        vec![
            allow_local(),
            ("DELIVERY_RETRY_INITIAL_DELAY", "200ms".into()),
            ("DELIVERY_RETRY_MAX_DELAY", "500ms".into()),
            ("DELIVERY_MAX_ATTEMPTS", "20".into()),
            ("DELIVERY_TIMEOUT", "1s".into()),
            ("ENDPOINT_DISABLE_AFTER_FAILURES", "4".into()),
        ],
    )
    .await;
    let notifier = Notifier::of(&platform);
    let (receiver, port) = Receiver::start().await;
    let carol = platform.token("carol");
    receiver.script(&[Answer::Redirect, Answer::Status(503), Answer::Hang], Answer::Ok);
    let endpoint = notifier
        .register(
            &carol,
            json!({"channel": "webhook", "url": format!("http://127.0.0.1:{port}/carol"),
            "event_types": ["order.completed"], "description": "carol's shop"}),
        )
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();

    let order = completed_order(&platform, "carol").await;
    let delivery = eventually("a delivery for carol's order", WITHIN, || async {
        notifier.deliveries(&endpoint_id, &carol).await.into_iter().find(|d| d["order_id"] == order.as_str())
    })
    .await;
    let delivery_id = delivery["id"].as_str().unwrap().to_owned();
    let delivered = notifier.wait_delivery(&delivery_id, &carol, "delivered").await;
    assert_eq!(delivered["attempts"], 4, "{delivered}");
    let mut attempts = notifier.attempts(&endpoint_id, &carol).await;
    attempts.reverse();
    let summary: Vec<(Value, Value)> =
        attempts.iter().map(|a| (a["succeeded"].clone(), a["status_code"].clone())).collect();
    assert_eq!(
        summary,
        [
            (json!(false), json!(302)),
            (json!(false), json!(503)),
            (json!(false), Value::Null),
            (json!(true), json!(200))
        ],
        "{attempts:#?}"
    );
    assert!(attempts[0]["error"].as_str().unwrap().contains("redirects are not followed"), "{:?}", attempts[0]);
    assert_eq!(attempts[1]["error"], "HTTP 503 Service Unavailable");
    assert_eq!(attempts[1]["response_excerpt"], "not now");
    assert!(attempts[2]["error"].as_str().unwrap().contains("timed out"), "{:?}", attempts[2]);
    assert!(attempts[2]["duration_ms"].as_i64().unwrap() >= 1_000, "{:?}", attempts[2]);
    let requests = receiver.requests("carol");
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r.id == delivery_id), "the same webhook-id on every retry");
    assert_eq!(receiver.effects().len(), 1);
    let (_, shown) = notifier.get(&format!("/api/v1/endpoints/{endpoint_id}"), &carol).await;
    assert_eq!((shown["enabled"].clone(), shown["consecutive_failures"].clone()), (json!(true), json!(0)), "{shown}");

    // Now it keeps failing: disabled after 4 failed attempts in a row.
    receiver.script(&[], Answer::Status(500));
    let failing = completed_order(&platform, "carol").await;
    let disabled = eventually("the endpoint is disabled", WITHIN, || async {
        let (_, endpoint) = notifier.get(&format!("/api/v1/endpoints/{endpoint_id}"), &carol).await;
        (endpoint["enabled"] == false).then_some(endpoint)
    })
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("4 failed attempts in a row") && reason.contains("HTTP 500"), "{reason}");
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    let waiting = notifier.deliveries(&endpoint_id, &carol).await;
    let waiting = waiting.iter().find(|d| d["order_id"] == failing.as_str()).unwrap().clone();
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["attempts"], 4, "{waiting}");

    // Re-enabled by its owner: what waited is delivered.
    receiver.script(&[], Answer::Ok);
    let (status, enabled) = notifier
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/endpoints/{endpoint_id}"),
            &carol,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!((enabled["enabled"].clone(), enabled["disabled_reason"].clone()), (json!(true), Value::Null));
    notifier.wait_delivery(waiting["id"].as_str().unwrap(), &carol, "delivered").await;
    assert_eq!(receiver.effects().len(), 2);

    // The metrics count the same: 3 + 4 failed attempts, 2 successful, 2 delivered.
    // (The delivery counter moves once the outcome is committed: awaited.)
    let expected = [
        r#"saga_notification_attempts_total{channel="webhook",result="failure"} 7"#,
        r#"saga_notification_attempts_total{channel="webhook",result="success"} 2"#,
        r#"saga_notification_deliveries_total{channel="webhook",outcome="delivered"} 2"#,
        r#"saga_notification_deliveries_total{channel="email",outcome="failed"} 0"#,
        "saga_notification_backlog ",
    ];
    let url = platform.url(Svc::Notification, "/metrics");
    eventually(&format!("the metrics show {expected:?}"), WITHIN, || async {
        let metrics = platform.http.get(&url).send().await.ok()?.text().await.ok()?;
        expected.iter().all(|series| metrics.contains(series)).then_some(())
    })
    .await;

    platform.shutdown().await;
}

/// Without the development allow-list, URLs that reach the service's own
/// network are refused at registration with the reason (422), as are e-mail
/// endpoints when no SMTP server is configured.
#[tokio::test(flavor = "multi_thread")]
async fn internal_urls_are_refused() {
    let platform = Platform::start(Options::default()).await;
    let notifier = Notifier::of(&platform);
    let dave = platform.token("dave");
    for (url, address) in [
        ("http://127.0.0.1/hook", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]/", "::1"),
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://localhost:8080/hook", "127.0.0.1"),
        ("http://[::ffff:192.168.0.1]/", "::ffff:192.168.0.1"),
    ] {
        let (status, problem) =
            notifier.post("/api/v1/endpoints", &dave, json!({"channel": "webhook", "url": url})).await;
        assert_eq!(status, 422, "{url}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(address) && detail.contains("which webhooks may not reach"), "{url}: {detail}");
    }
    for (body, expected) in [
        (json!({"channel": "webhook", "url": "ftp://example.com/"}), "url must use http or https"),
        (json!({"channel": "webhook", "url": "http://u:p@example.com/"}), "user name or password"),
        (json!({"channel": "webhook", "url": format!("http://example.com/{}", "a".repeat(2048))}), "at most 2048"),
        (json!({"channel": "email", "address": "dave@example.com"}), "no SMTP server"),
        (json!({"channel": "webhook", "url": "https://93.184.215.14/", "description": "x".repeat(201)}), "description"),
        (json!({"channel": "webhook", "url": "https://93.184.215.14/", "event_types": []}), "at least one"),
    ] {
        let (status, problem) = notifier.post("/api/v1/endpoints", &dave, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{body}: {problem}");
    }
    let (status, listed) = notifier.get("/api/v1/endpoints", &dave).await;
    assert_eq!((status, listed["items"].clone()), (200, json!([])));

    platform.shutdown().await;
}

/// The SMTP server of tests/smtp_sink.py, started from the clone's
/// .venv-smtp (scripts/smtp-sink.sh).
struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let python = root.join(".venv-smtp/bin/python");
        assert!(python.exists(), "{python:?} is missing: run scripts/smtp-sink.sh first");
        let port = free_port();
        let dir = bin_dir().join("test-logs").join(format!("smtp-{}", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new(python)
            .arg(root.join("tests/smtp_sink.py"))
            .arg(port.to_string())
            .arg(&dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        SmtpSink { child, port, dir }
    }

    /// The messages received so far, in order (as tests/smtp_sink.py summarises them).
    fn messages(&self) -> Vec<Value> {
        (1..)
            .map(|n| self.dir.join(format!("{n}.json")))
            .take_while(|path| path.exists())
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// E-mail to a real SMTP server: the customer's registered address, a
/// subject, a text and an HTML part per event type with the order id, total
/// and reason; and the notice, with the reason, when one of the customer's
/// webhooks is disabled.
#[tokio::test(flavor = "multi_thread")]
async fn emails_reach_the_registered_address() {
    let smtp = SmtpSink::start();
    let platform = shop(
        &["erin"],
        vec![
            ("SMTP_URL", format!("smtp://127.0.0.1:{}", smtp.port)),
            ("SMTP_FROM", "Saga Shop <shop@example.com>".into()),
            allow_local(),
            ("DELIVERY_RETRY_INITIAL_DELAY", "100ms".into()),
            ("DELIVERY_RETRY_MAX_DELAY", "200ms".into()),
            ("ENDPOINT_DISABLE_AFTER_FAILURES", "2".into()),
        ],
    )
    .await;
    let notifier = Notifier::of(&platform);
    let erin = platform.token("erin");
    let endpoint = notifier.register(&erin, json!({"channel": "email", "address": "erin@example.com"})).await;
    assert!(endpoint.get("secret").is_none(), "{endpoint}");
    assert_eq!(notifier.post("/api/v1/endpoints", &erin, json!({"channel": "email", "address": "nope"})).await.0, 422);

    let completed = completed_order(&platform, "erin").await;
    let failed = platform.place_order("erin", &[("widget", 5_000)]).await;
    platform.wait_status(&failed, "FAILED", WITHIN).await;
    let messages = eventually("two e-mails arrived", WITHIN, || async {
        let messages = smtp.messages();
        (messages.len() == 2).then_some(messages)
    })
    .await;
    let about = |order: &str| {
        messages.iter().find(|m| m["subject"].as_str().unwrap().contains(order)).cloned().unwrap_or_else(|| {
            panic!("no e-mail about {order}: {messages:#?}");
        })
    };
    let done = about(&completed);
    assert_eq!(done["rcpt_tos"], json!(["erin@example.com"]));
    assert_eq!(done["mail_from"], "shop@example.com");
    assert_eq!(done["content_type"], "multipart/alternative");
    assert_eq!(done["subject"], format!("Your order {completed} is complete"));
    let text = done["text"].as_str().unwrap();
    assert!(text.contains("your order is complete") && text.contains(&format!("Order: {completed}")), "{text}");
    assert!(text.contains("Total: 5.00"), "{text}");
    let html = done["html"].as_str().unwrap();
    assert!(html.contains(&format!("<td>{completed}</td>")) && html.contains("<td>5.00</td>"), "{html}");
    let sorry = about(&failed);
    assert_eq!(sorry["subject"], format!("Your order {failed} could not be completed"));
    let text = sorry["text"].as_str().unwrap();
    assert!(text.contains("Reason: out of stock") && text.contains(&format!("Order: {failed}")), "{text}");
    assert!(sorry["html"].as_str().unwrap().contains("<td>out of stock</td>"));

    // The attempts are recorded once the SMTP server has answered: awaited.
    let mailbox = endpoint["id"].as_str().unwrap();
    let attempts = eventually("both e-mail attempts logged", WITHIN, || async {
        let attempts = notifier.attempts(mailbox, &erin).await;
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    assert!(attempts.iter().all(|a| a["succeeded"] == true && a["status_code"] == 250), "{attempts:#?}");

    // A webhook of erin's that keeps failing is disabled: erin is told why by e-mail.
    let (receiver, port) = Receiver::start().await;
    receiver.script(&[], Answer::Status(500));
    let hook = notifier
        .register(
            &erin,
            json!({"channel": "webhook", "url": format!("http://127.0.0.1:{port}/erin"),
            "event_types": ["order.completed"]}),
        )
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let third = completed_order(&platform, "erin").await;
    let messages = eventually("the third order's e-mail and the notice arrived", WITHIN, || async {
        let messages = smtp.messages();
        (messages.len() == 4).then_some(messages)
    })
    .await;
    assert!(messages.iter().any(|m| m["subject"] == format!("Your order {third} is complete")), "{messages:#?}");
    let notice = messages
        .iter()
        .find(|m| m["subject"] == "Your notification endpoint was disabled")
        .unwrap_or_else(|| panic!("no notice: {messages:#?}"));
    assert_eq!(notice["rcpt_tos"], json!(["erin@example.com"]));
    let (_, disabled) = notifier.get(&format!("/api/v1/endpoints/{hook_id}"), &erin).await;
    assert_eq!(disabled["enabled"], false, "{disabled}");
    let reason = disabled["disabled_reason"].as_str().unwrap();
    let text = notice["text"].as_str().unwrap();
    assert!(text.contains(&format!("Endpoint: {hook_id}")) && text.contains(&format!("Why: {reason}")), "{text}");
    assert!(text.contains(&format!("Target: http://127.0.0.1:{port}/erin")), "{text}");
    assert!(notice["html"].as_str().unwrap().contains(&format!("<td>{hook_id}</td>")));

    platform.shutdown().await;
}

/// A notification-service killed (SIGKILL) while a webhook is in flight
/// loses nothing: the claim's lease runs out and the delivery is sent again,
/// with the same webhook-id, so the receiver that already did the work
/// applies it once. And the SSRF check is made again at send time.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_cut_by_a_crash_is_sent_again_with_the_same_id() {
    let mut platform =
        shop(&["frank"], vec![allow_local(), ("DELIVERY_TIMEOUT", "2s".into()), ("DELIVERY_LEASE", "4s".into())]).await;
    let notifier = Notifier::of(&platform);
    let (receiver, port) = Receiver::start().await;
    receiver.script(&[Answer::Hang], Answer::Ok);
    let frank = platform.token("frank");
    let endpoint =
        notifier.register(&frank, json!({"channel": "webhook", "url": format!("http://127.0.0.1:{port}/frank")})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    completed_order(&platform, "frank").await;
    let first =
        eventually("the receiver got the webhook", WITHIN, || async { receiver.requests("frank").first().cloned() })
            .await;
    platform.kill(Svc::Notification, 0);
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM deliveries WHERE id = $1::uuid")
            .bind(&first.id)
            .fetch_one(&notifier.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("pending", 0), "the cut attempt left nothing recorded");

    platform.restart(Svc::Notification, 0);
    platform.wait_ready().await;
    notifier.wait_delivery(&first.id, &frank, "delivered").await;
    let requests = receiver.requests("frank");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.iter().all(|r| r.id == first.id));
    assert_eq!(receiver.effects().len(), 1);
    let attempts = notifier.attempts(&endpoint_id, &frank).await;
    assert_eq!(attempts.len(), 1, "only the attempt that finished is logged: {attempts:#?}");
    assert_eq!(attempts[0]["succeeded"], true);

    // The address is checked again before each send: restarted without the
    // allow-list, the same endpoint is not called, and the attempt says why.
    platform.restart_with(Svc::Notification, 0, &[("WEBHOOK_ALLOW_CIDRS", String::new())]);
    platform.wait_ready().await;
    completed_order(&platform, "frank").await;
    let refused = eventually("an attempt refused at send time", WITHIN, || async {
        notifier.attempts(&endpoint_id, &frank).await.into_iter().find(|a| a["succeeded"] == false)
    })
    .await;
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("resolves to 127.0.0.1") && error.contains("which webhooks may not reach"), "{error}");
    assert_eq!(receiver.requests("frank").len(), 2, "no request reached the receiver");

    platform.shutdown().await;
}

/// An event of a schema version the service does not read, or with an
/// invalid customer id, is dead-lettered (not guessed at); a valid one
/// beside them is handled.
#[tokio::test(flavor = "multi_thread")]
async fn events_it_cannot_read_are_dead_lettered() {
    let platform = shop(&[], vec![allow_local()]).await;
    let notifier = Notifier::of(&platform);
    let event = |version: u32, customer: &str| {
        json!({"schema_version": version, "event_id": uuid::Uuid::now_v7(), "type": "order.failed",
            "order_id": uuid::Uuid::now_v7(), "customer_id": customer, "total_cents": null,
            "failure_reason": "out_of_stock", "order_created_at": "2026-12-06T12:00:00Z",
            "occurred_at": "2026-12-06T12:00:01Z"})
    };
    let mut ids = Vec::new();
    for body in [event(2, "gina"), event(1, "has space"), event(1, "gina")] {
        let id = uuid::Uuid::now_v7().to_string();
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_type("order.failed".into())
            .with_content_type("application/json".into());
        platform.publish_raw(Svc::Notification, properties, &serde_json::to_vec(&body).unwrap()).await;
        ids.push(id);
    }
    let dead = platform.wait_dead_letters(Svc::Notification, &ids[..2], WITHIN).await;
    let reason = |id: &str| {
        let header = dead[id].headers.inner().get("x-failure-reason").cloned();
        match header {
            Some(lapin::types::AMQPValue::LongString(reason)) => reason.to_string(),
            other => panic!("{other:?}"),
        }
    };
    assert!(reason(&ids[0]).contains("schema version 2"), "{}", reason(&ids[0]));
    assert!(reason(&ids[1]).contains("invalid customer id"), "{}", reason(&ids[1]));
    eventually("the valid event was handled", WITHIN, || async {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
            .bind(&ids[2])
            .fetch_one(&notifier.pool)
            .await
            .unwrap();
        (seen == 1).then_some(())
    })
    .await;
    assert!(platform.drain_dlq(Svc::Notification).await.is_empty());

    platform.shutdown().await;
}
