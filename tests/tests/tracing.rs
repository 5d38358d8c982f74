//! Traces in a real Jaeger: the all-in-one binary built from its official Go
//! module by scripts/jaeger-build.sh (in-memory storage, OTLP/HTTP receiver),
//! started by the test on ports of its own. The services export to it with
//! OTLP; the test reads the traces back through Jaeger's query APIs
//! (`/api/traces/{id}` and the OTLP-shaped `/api/v3/traces/{id}`), and taps
//! the broker to read the trace context on the wire.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use saga_tests::{Options, Platform, Svc, eventually, free_port};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A Jaeger all-in-one process with in-memory storage, killed on drop.
struct Jaeger {
    child: Child,
    /// OTLP/HTTP receiver (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    otlp: String,
    /// Query API and UI.
    query: String,
    dir: PathBuf,
}

impl Jaeger {
    async fn start() -> Jaeger {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let binary = root.join("observability/bin/jaeger");
        assert!(
            binary.is_file(),
            "{} is missing: build it with scripts/jaeger-build.sh (scripts/test.sh runs it)",
            binary.display()
        );
        let (otlp, query, grpc) = (free_port(), free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("saga-jaeger-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // Only what the test needs, each on a port of its own: the OTLP/HTTP
        // receiver, the in-memory store and the query service (no fixed ports).
        let config = format!(
            "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
        );
        let config_path = dir.join("jaeger.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("jaeger.log")).unwrap();
        let child = Command::new(&binary)
            .arg("--config")
            .arg(format!("file:{}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let jaeger =
            Jaeger { child, otlp: format!("http://127.0.0.1:{otlp}"), query: format!("http://127.0.0.1:{query}"), dir };
        let http = reqwest::Client::new();
        let services = format!("{}/api/services", jaeger.query);
        let log = jaeger.dir.join("jaeger.log");
        eventually(&format!("Jaeger answers on {services} (log: {})", log.display()), WAIT, || async {
            http.get(&services).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
        })
        .await;
        jaeger
    }

    /// The spans of a trace from the v1 query API (`None`: not found yet).
    async fn spans(&self, http: &reqwest::Client, trace_id: &str) -> Option<Vec<Span>> {
        let response = http.get(format!("{}/api/traces/{trace_id}", self.query)).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        let trace = body["data"].get(0)?;
        let processes = &trace["processes"];
        Some(
            trace["spans"]
                .as_array()?
                .iter()
                .map(|span| {
                    let process = span["processID"].as_str().unwrap_or_default();
                    let refs = span["references"].as_array().cloned().unwrap_or_default();
                    let parent = refs
                        .iter()
                        .find(|r| r["refType"] == "CHILD_OF")
                        .map(|r| r["spanID"].as_str().unwrap().to_owned());
                    let links = refs
                        .iter()
                        .filter(|r| r["refType"] == "FOLLOWS_FROM")
                        .map(|r| (r["traceID"].as_str().unwrap().to_owned(), r["spanID"].as_str().unwrap().to_owned()))
                        .collect();
                    let tags = span["tags"]
                        .as_array()
                        .map(|tags| {
                            tags.iter()
                                .map(|t| (t["key"].as_str().unwrap().to_owned(), t["value"].to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Span {
                        id: span["spanID"].as_str().unwrap().to_owned(),
                        service: processes[process]["serviceName"].as_str().unwrap_or_default().to_owned(),
                        operation: span["operationName"].as_str().unwrap().to_owned(),
                        parent,
                        links,
                        tags,
                    }
                })
                .collect(),
        )
    }

    /// The trace as OTLP JSON from the v3 query API (spans with their `traceState`).
    async fn otlp_spans(&self, http: &reqwest::Client, trace_id: &str) -> Vec<(String, Value)> {
        let response = http.get(format!("{}/api/v3/traces/{trace_id}", self.query)).send().await.unwrap();
        assert_eq!(response.status(), 200, "v3 trace {trace_id}");
        let body: Value = response.json().await.unwrap();
        let mut spans = Vec::new();
        for resource in body["result"]["resourceSpans"].as_array().unwrap() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                .unwrap();
            for scope in resource["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    spans.push((service.clone(), span.clone()));
                }
            }
        }
        spans
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug, Clone)]
struct Span {
    id: String,
    service: String,
    operation: String,
    /// The CHILD_OF reference.
    parent: Option<String>,
    /// FOLLOWS_FROM references (OpenTelemetry links): (trace id, span id).
    links: Vec<(String, String)>,
    /// Tag values as JSON text.
    tags: HashMap<String, String>,
}

/// The path of a completed order, span by span, each the child of the one before.
const COMPLETED_ORDER: [(&str, &str); 17] = [
    ("order-service", "POST /api/v1/orders"),
    ("order-service", "saga step reserving"),
    ("order-service", "publish inventory.reserve"),
    ("inventory-service", "consume inventory.reserve"),
    ("inventory-service", "publish inventory.reserved"),
    ("order-service", "consume inventory.reserved"),
    ("order-service", "saga step charging"),
    ("order-service", "publish payment.charge"),
    ("payment-service", "consume payment.charge"),
    ("payment-service", "publish payment.captured"),
    ("order-service", "consume payment.captured"),
    ("order-service", "saga step confirming"),
    ("order-service", "publish inventory.confirm"),
    ("inventory-service", "consume inventory.confirm"),
    ("inventory-service", "publish inventory.confirmed"),
    ("order-service", "consume inventory.confirmed"),
    ("order-service", "saga step completed"),
];

/// Follows `COMPLETED_ORDER` down the trace from its root (whose parent is
/// the caller's span, if it had one); `Err` names the first step not found
/// as a child of the step before.
fn follow_chain(spans: &[Span], caller: Option<&str>) -> Result<Vec<Span>, String> {
    let mut chain: Vec<Span> = Vec::new();
    for (service, operation) in COMPLETED_ORDER {
        let parent = chain.last().map(|s| s.id.clone()).or(caller.map(str::to_owned));
        let found = spans.iter().find(|s| s.service == service && s.operation == operation && s.parent == parent);
        match found {
            Some(span) => chain.push(span.clone()),
            None => {
                let seen: Vec<String> =
                    spans.iter().map(|s| format!("{}:{} (parent {:?})", s.service, s.operation, s.parent)).collect();
                return Err(format!("no {service} span {operation:?} with parent {parent:?}; spans: {seen:#?}"));
            }
        }
    }
    Ok(chain)
}

/// `Ok` as `Some`; an `Err` is printed (shown if the test fails) when it differs from the last one.
fn report<T>(result: Result<T, String>) -> Option<T> {
    thread_local!(static LAST: std::cell::RefCell<String> = Default::default());
    result
        .map_err(|error| {
            LAST.with(|last| {
                if *last.borrow() != error {
                    eprintln!("{error}");
                    *last.borrow_mut() = error;
                }
            })
        })
        .ok()
}

fn options(jaeger: &Jaeger) -> Options {
    Options {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp.clone()),
            // Export within 100 ms instead of 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        ..Options::default()
    }
}

/// POSTs an order with extra headers; returns its id and the response's `traceparent`.
async fn place(platform: &Platform, customer: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut request = platform
        .http
        .post(platform.url(Svc::Order, "/api/v1/orders"))
        .bearer_auth(platform.token(customer))
        .json(&json!({"items": [{"sku": "WIDGET", "quantity": 1}]}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let traceparent =
        response.headers().get("traceparent").expect("the response echoes a traceparent").to_str().unwrap().to_owned();
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    (id, traceparent)
}

fn trace_id(traceparent: &str) -> &str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert!(parts[1].len() == 32 && parts[2].len() == 16, "{traceparent}");
    traceparent.split('-').nth(1).unwrap()
}

#[tokio::test]
async fn one_orders_trace_crosses_the_three_services_and_the_broker_hops() {
    let jaeger = Jaeger::start().await;
    let platform = Platform::start(options(&jaeger)).await;
    platform.put_product("WIDGET", 1500, 10).await;
    platform.put_account("alice", 100_000).await;
    let http = reqwest::Client::new();

    let (id, traceparent) = place(&platform, "alice", &[]).await;
    let trace_id = trace_id(&traceparent).to_owned();
    assert!(traceparent.ends_with("-01"), "a new trace is sampled: {traceparent}");
    assert_eq!(platform.wait_final(&id, WAIT).await["status"], "COMPLETED");

    let chain = eventually(&format!("trace {trace_id} complete in Jaeger"), WAIT, || async {
        report(follow_chain(&jaeger.spans(&http, &trace_id).await?, None))
    })
    .await;
    // The echoed traceparent names the request's own span, the root.
    assert_eq!(chain[0].id, traceparent.split('-').nth(2).unwrap());
    assert_eq!(chain[0].parent, None);
    for span in &chain {
        let kind = span.tags.get("span.kind").map(String::as_str);
        let expected = match span.operation.split(' ').next().unwrap() {
            "POST" => Some("\"server\""),
            "publish" => Some("\"producer\""),
            "consume" => Some("\"consumer\""),
            _ => Some("\"internal\""),
        };
        assert_eq!(kind, expected, "{span:?}");
        if span.operation.starts_with("publish") || span.operation.starts_with("consume") {
            assert_eq!(span.tags.get("messaging.system").map(String::as_str), Some("\"rabbitmq\""), "{span:?}");
        }
    }
    // Each consume span is linked to its batch's span, a trace of its own
    // that links back to every message of the batch.
    let consume = &chain[3];
    let [(batch_trace, batch_span)] = consume.links.as_slice() else { panic!("{consume:?} has no single batch link") };
    assert_ne!(batch_trace, &trace_id);
    let batch = eventually("the batch's trace in Jaeger", WAIT, || async {
        jaeger.spans(&http, batch_trace).await?.into_iter().find(|s| &s.id == batch_span)
    })
    .await;
    assert_eq!(
        (batch.service.as_str(), batch.operation.as_str()),
        ("inventory-service", format!("consume batch {}.inventory.commands", platform.name).as_str())
    );
    assert!(batch.links.iter().any(|(trace, span)| trace == &trace_id && span == &consume.id), "{batch:?}");

    // Every JSON log line written while handling the order carries the trace
    // id and the span id of the span it was written in.
    let log = platform.log(Svc::Order, 0);
    let placed = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "order placed" && line["order_id"] == id.as_str())
        .expect("the order's log line");
    assert_eq!(placed["trace_id"], trace_id.as_str(), "{placed}");
    assert_eq!(placed["span_id"], chain[0].id.as_str(), "{placed}");
    platform.shutdown().await;
}

/// Copies of every message of the platform, read off a queue of the test's
/// own bound to the saga exchange with the three services' routing keys.
struct Tap {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

impl Tap {
    async fn bind(platform: &Platform) -> Tap {
        let connection = platform.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.unwrap();
        for svc in Svc::ALL {
            let exchange = platform.topology.exchange();
            let key = svc.destination().queue();
            let bind = QueueBindOptions::default();
            channel
                .queue_bind(queue.name().clone(), exchange.into(), key.into(), bind, FieldTable::default())
                .await
                .unwrap();
        }
        let consume = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let consumer =
            channel.basic_consume(queue.name().clone(), "".into(), consume, FieldTable::default()).await.unwrap();
        Tap { _connection: connection, consumer }
    }

    /// (type, traceparent, tracestate) of the next `count` messages.
    async fn next(&mut self, count: usize) -> Vec<(String, String, String)> {
        let mut seen = Vec::new();
        while seen.len() < count {
            let delivery = tokio::time::timeout(WAIT, self.consumer.next())
                .await
                .unwrap_or_else(|_| panic!("only {} messages tapped: {seen:?}", seen.len()))
                .unwrap()
                .unwrap();
            let headers = delivery.properties.headers().clone().unwrap_or_default();
            let header = |name: &str| match headers.inner().get(name) {
                Some(AMQPValue::LongString(value)) => value.to_string(),
                _ => String::new(),
            };
            let kind = delivery.properties.kind().as_ref().map(|k| k.to_string()).unwrap_or_default();
            seen.push((kind, header("traceparent"), header("tracestate")));
        }
        seen
    }
}

#[tokio::test]
async fn a_callers_sampling_decision_and_tracestate_travel_every_hop() {
    let jaeger = Jaeger::start().await;
    let platform = Platform::start(options(&jaeger)).await;
    platform.put_product("WIDGET", 1500, 10).await;
    platform.put_account("alice", 100_000).await;
    let http = reqwest::Client::new();
    let mut tap = Tap::bind(&platform).await;

    // Not sampled by the caller: the trace continues (same id, flag 00, the
    // caller's tracestate on every message) and nothing is recorded.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let caller = format!("00-{unsampled}-b7ad6b7169203331-00");
    let (id, echoed) = place(&platform, "alice", &[("traceparent", &caller), ("tracestate", "shop=1,vendor=a")]).await;
    assert_eq!(trace_id(&echoed), unsampled);
    assert!(echoed.ends_with("-00") && echoed != caller, "a child of the caller's span, unsampled: {echoed}");
    assert_eq!(platform.wait_final(&id, WAIT).await["status"], "COMPLETED");
    // reserve, reserved, charge, captured, confirm, confirmed
    let hops = tap.next(6).await;
    for (kind, traceparent, tracestate) in &hops {
        assert_eq!(trace_id(traceparent), unsampled, "{kind}");
        assert!(traceparent.ends_with("-00"), "{kind}: {traceparent}");
        assert_eq!(tracestate, "shop=1,vendor=a", "{kind}");
    }
    let span_ids: std::collections::BTreeSet<&str> = hops.iter().map(|h| h.1.split('-').nth(2).unwrap()).collect();
    assert_eq!(span_ids.len(), hops.len(), "every publish is a span of its own: {hops:?}");

    // Sampled by the caller, with a tracestate: recorded by every service,
    // every span with the caller's tracestate.
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{sampled}-00f067aa0ba902b7-01");
    let (id, echoed) = place(&platform, "alice", &[("traceparent", &caller), ("tracestate", "shop=2")]).await;
    assert_eq!(trace_id(&echoed), sampled);
    assert_eq!(platform.wait_final(&id, WAIT).await["status"], "COMPLETED");
    for (kind, traceparent, tracestate) in tap.next(6).await {
        assert_eq!((trace_id(&traceparent), tracestate.as_str()), (sampled, "shop=2"), "{kind}");
    }
    let chain = eventually(&format!("trace {sampled} complete in Jaeger"), WAIT, || async {
        report(follow_chain(&jaeger.spans(&http, sampled).await?, Some("00f067aa0ba902b7")))
    })
    .await;
    // The request's span is the child of the caller's.
    assert_eq!(chain.len(), COMPLETED_ORDER.len());
    let spans = jaeger.otlp_spans(&http, sampled).await;
    let root = spans.iter().find(|(_, s)| s["spanId"] == chain[0].id.as_str()).expect("the root in v3");
    assert_eq!(root.1["parentSpanId"], "00f067aa0ba902b7");
    for (service, span) in &spans {
        assert_eq!(span["traceState"], "shop=2", "{service}: {span}");
    }
    let services: std::collections::BTreeSet<&str> = spans.iter().map(|(service, _)| service.as_str()).collect();
    // The notification service too: the order event continues the order's trace.
    let all: Vec<&str> = Svc::ALL.iter().map(|svc| svc.binary()).collect();
    assert_eq!(services, all.into_iter().collect());

    // Both orders were exported by the same processes, in order: the
    // unsampled one, finished first, was not recorded at all.
    let response = http.get(format!("{}/api/traces/{unsampled}", jaeger.query)).send().await.unwrap();
    assert_eq!(response.status(), 404, "{}", response.text().await.unwrap());
    platform.shutdown().await;
}
