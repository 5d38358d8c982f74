//! The fault suite: under a steady load of orders (and cancels), with a
//! share of the real traffic duplicated and re-delivered late and poison
//! messages injected, the test restarts RabbitMQ, restarts PostgreSQL,
//! SIGKILLs a service and SIGSTOPs one past the step timeout. After each
//! fault it measures how long the services take to be ready again and to
//! complete a new saga, with no manual restart. At rest: every accepted
//! order terminal, money and stock conserved exactly, no double charge,
//! outboxes drained, the dead-letter queues hold exactly the poison, and a
//! webhook receiver registered for every customer's events applied each
//! final order's events exactly once (the order events are duplicated too).
//!
//! It stops and starts the machine's RabbitMQ and PostgreSQL, so it must run
//! alone: `scripts/test.sh` runs it after every other test.
//! `FAULT_ROUNDS=5 cargo test -p saga-tests --test faults -- --nocapture`
//! repeats the cycle of faults for a longer run.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use rand::Rng;
use saga_common::amqp::Broker;
use saga_common::events::OrderEventType;
use saga_common::topology::Destination;
use saga_tests::webhooks::{self, WebhookReceiver};
use saga_tests::{Options, Platform, Svc, amqp_url, shop};

const STEP_TIMEOUT: Duration = Duration::from_secs(3);
const OUTAGE: Duration = Duration::from_secs(5);
const DUPLICATE_HEADER: &str = "x-test-duplicate";

/// What one fault did and how the platform came back.
struct Recovery {
    fault: String,
    in_flight: i64,
    /// Orders accepted while the fault lasted: all of them in flight through it.
    accepted_meanwhile: u64,
    down_for: Duration,
    /// Every replica's /readyz said 503 at some point while the dependency was down.
    reported_not_ready: Option<bool>,
    ready_after: Duration,
    first_saga_after: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_database_restarts_kills_and_pauses_lose_nothing() {
    let rounds: usize = std::env::var("FAULT_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let options = Options { step_timeout: STEP_TIMEOUT, env: webhooks::local_delivery_env(), ..Options::default() };
    let mut platform = Platform::start(options).await;
    shop::seed(&platform).await;
    let (receiver, url) = WebhookReceiver::start().await;
    let (_, secret) = webhooks::subscribe_all(&platform, &url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let duplicates = Arc::new(AtomicU64::new(0));
    let saga_keys = Destination::ALL.map(|d| d.queue().to_owned()).to_vec();
    tokio::spawn(duplicate_traffic(platform.topology.exchange(), saga_keys, duplicates.clone(), stop.clone()));
    let event_keys = OrderEventType::ALL.map(|kind| kind.as_str().to_owned()).to_vec();
    let events = platform.topology.events_exchange();
    tokio::spawn(duplicate_traffic(events, event_keys, duplicates.clone(), stop.clone()));
    // A steady load the debug build sustains with room to catch up after a fault.
    let counts = shop::shop(&platform, 1, Duration::from_millis(40), stop.clone()).await;
    let started = Instant::now();
    let mut poison = BTreeSet::new();
    let mut recoveries = Vec::new();

    for round in 0..rounds {
        let mut kill_turn = rand::rng().random_range(0..Svc::ALL.len());
        for fault in ["rabbitmq", "postgresql", "sigkill", "sigstop"] {
            inject_poison(&platform, &mut poison, round).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let in_flight = shop::pending(&platform).await;
            let accepted_before = counts.accepted.load(Ordering::Relaxed);
            let down = Instant::now();
            let (name, reported_not_ready) = match fault {
                "rabbitmq" => {
                    rabbitmqctl("stop_app");
                    let not_ready = all_report_not_ready(&platform, OUTAGE).await;
                    rabbitmqctl("start_app");
                    ("RabbitMQ stop_app / start_app".to_owned(), Some(not_ready))
                }
                "postgresql" => {
                    pg_ctlcluster("stop");
                    let not_ready = all_report_not_ready(&platform, OUTAGE).await;
                    pg_ctlcluster("start");
                    ("PostgreSQL stop (fast) / start".to_owned(), Some(not_ready))
                }
                "sigkill" => {
                    let svc = Svc::ALL[kill_turn % Svc::ALL.len()];
                    kill_turn += 1;
                    platform.kill(svc, 0);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    platform.restart(svc, 0);
                    (format!("SIGKILL {}", svc.binary()), None)
                }
                _ => {
                    platform.pause(Svc::Payment, 0, true);
                    tokio::time::sleep(STEP_TIMEOUT + Duration::from_secs(2)).await;
                    platform.pause(Svc::Payment, 0, false);
                    (format!("SIGSTOP payment-service for {:?}", STEP_TIMEOUT + Duration::from_secs(2)), None)
                }
            };
            let down_for = down.elapsed();
            let accepted_meanwhile = counts.accepted.load(Ordering::Relaxed) - accepted_before;
            let back = Instant::now();
            platform.wait_ready().await;
            let ready_after = back.elapsed();
            let probe = platform.place_order("c1", &[("A", 1)]).await;
            platform.wait_final(&probe, Duration::from_secs(60)).await;
            let first_saga_after = back.elapsed();
            recoveries.push(Recovery {
                fault: name,
                in_flight,
                accepted_meanwhile,
                down_for,
                reported_not_ready,
                ready_after,
                first_saga_after,
            });
        }
    }
    inject_poison(&platform, &mut poison, rounds).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let load_seconds = started.elapsed().as_secs_f64();

    shop::wait_until_quiet(&platform, Duration::from_secs(120)).await;
    let (accepted, refused) = (counts.accepted.load(Ordering::Relaxed), counts.refused.load(Ordering::Relaxed));
    println!(
        "fault suite: {load_seconds:.0} s of load, {accepted} orders accepted, {refused} POSTs refused during outages, \
         {} real messages duplicated and re-delivered late, {} poison messages injected",
        duplicates.load(Ordering::Relaxed),
        poison.len()
    );
    println!(
        "| fault | orders in flight | down for | /readyz said not ready | ready again after | first new saga done after |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &recoveries {
        let said = r.reported_not_ready.map_or("n/a".to_owned(), |said| if said { "yes" } else { "no" }.to_owned());
        println!(
            "| {} | {} | {} | {:.1} s | {said} | {:.1} s | {:.1} s |",
            r.fault,
            r.in_flight,
            r.accepted_meanwhile,
            r.down_for.as_secs_f64(),
            r.ready_after.as_secs_f64(),
            r.first_saga_after.as_secs_f64()
        );
    }
    shop::check_invariants(&platform, &poison).await;
    let (requests, applied) = webhooks::check_notified(&platform, &receiver, &secret, Duration::from_secs(90)).await;
    println!("fault suite: {requests} webhook requests received, {applied} distinct webhook-ids applied");
    assert!(accepted > 0);
    assert!(duplicates.load(Ordering::Relaxed) > 0, "no traffic was duplicated: the injector did not run");
    for r in &recoveries {
        assert_ne!(r.reported_not_ready, Some(false), "{}: some /readyz kept answering 200 while it was down", r.fault);
    }
    platform.shutdown().await;
}

fn run(program: &str, args: &[&str]) {
    // No standard input: rabbitmqctl (through `su` when run as root) was seen
    // hanging after its answer when it inherited one.
    let status = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

fn rabbitmqctl(action: &str) {
    run("rabbitmqctl", &["-q", action]);
    if action == "start_app" {
        run("rabbitmqctl", &["-q", "await_startup", "--timeout", "60"]);
    }
}

fn pg_ctlcluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a PostgreSQL cluster in /etc/postgresql")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .max()
        .expect("a PostgreSQL version directory");
    let mut args = vec!["--skip-systemctl-redirect", version.as_str(), "main", action];
    if action == "stop" {
        args.extend(["--", "-m", "fast"]);
    }
    run("pg_ctlcluster", &args);
}

/// Polls every replica's /readyz during the outage; true when each one
/// answered 503 at least once.
async fn all_report_not_ready(platform: &Platform, outage: Duration) -> bool {
    let deadline = Instant::now() + outage;
    let mut said_not_ready = BTreeSet::new();
    while Instant::now() < deadline {
        for svc in Svc::ALL {
            let response = platform.http.get(platform.url(svc, "/readyz")).timeout(Duration::from_secs(1)).send().await;
            if matches!(response, Ok(r) if r.status() == 503) {
                said_not_ready.insert(svc);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    said_not_ready.len() == Svc::ALL.len()
}

/// Malformed messages, one kind per queue; their message ids go into
/// `poison` (all must end up dead-lettered, and nothing else).
async fn inject_poison(platform: &Platform, poison: &mut BTreeSet<String>, round: usize) {
    let kinds: [(&str, &[u8]); 4] = [
        ("not-json", b"{not json"),
        ("unknown-type", br#"{"type":"inventory.explode","order_id":"00000000-0000-0000-0000-000000000000"}"#),
        ("missing-fields", br#"{"type":"payment.charge"}"#),
        ("event-missing-fields", br#"{"type":"order.completed","schema_version":1}"#),
    ];
    assert_eq!(kinds.len(), Svc::ALL.len(), "one kind of poison per service");
    for (svc, (kind, body)) in Svc::ALL.into_iter().zip(kinds) {
        let id = uuid::Uuid::new_v4().to_string();
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_correlation_id(format!("poison-{kind}-{round}").as_str().into())
            .with_delivery_mode(2);
        platform.publish_raw(svc, properties, body).await;
        poison.insert(id);
    }
}

/// Taps an exchange (the saga's, or the order events') for these routing
/// keys and re-publishes about one message in five, unchanged (same message
/// id), 0-1.5 s later: duplicates that arrive out of order with the saga's
/// later messages. Reconnects across broker restarts.
async fn duplicate_traffic(exchange: String, keys: Vec<String>, duplicated: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(connection) = Broker::new(amqp_url(), "saga-tests-duplicator").connect_once().await {
            let _ = tap(&connection, &exchange, &keys, &duplicated, &stop).await;
            let _ = connection.close(200, "done".into()).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn tap(
    connection: &Connection,
    exchange: &str,
    keys: &[String],
    duplicated: &Arc<AtomicU64>,
    stop: &AtomicBool,
) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    let publisher = Arc::new(connection.create_channel().await?);
    publisher.confirm_select(Default::default()).await?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = channel.queue_declare("".into(), options, FieldTable::default()).await?;
    for key in keys {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut deliveries = channel.basic_consume(queue.name().clone(), "".into(), options, FieldTable::default()).await?;
    while !stop.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await else { continue };
        let Some(delivery) = next else { return Ok(()) };
        let delivery = delivery?;
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        if headers.inner().contains_key(DUPLICATE_HEADER) || !rand::rng().random_bool(0.2) {
            continue;
        }
        headers.insert(DUPLICATE_HEADER.into(), AMQPValue::Boolean(true));
        let properties = delivery.properties.clone().with_headers(headers);
        let delay = Duration::from_millis(rand::rng().random_range(0..1500));
        let (publisher, duplicated, exchange) = (publisher.clone(), duplicated.clone(), exchange.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let routing_key = delivery.routing_key.clone();
            let published = publisher
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key,
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await;
            if let Ok(confirm) = published
                && matches!(confirm.await, Ok(c) if c.is_ack())
            {
                duplicated.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}
