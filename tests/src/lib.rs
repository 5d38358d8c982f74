//! A test harness that runs a whole platform: the three real service
//! binaries as child processes (several replicas if asked), on their own
//! databases and their own broker topology (a unique platform name), so
//! tests run in parallel without seeing each other.

pub mod shop;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use saga_common::amqp::Broker;
use saga_common::component::settings_env;
use saga_common::topology::{QueueType, RetryPolicy, Topology, TopologySpec};
use serde_json::{Value, json};
use sqlx::PgPool;

pub const SECRET: &str = "saga-platform-test-secret-0123456789abcdef";
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

/// Polls `check` every 50 ms until it returns `Some`, or panics naming
/// `what` once `within` has passed.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A service of the platform (the one list: `saga_common::component`).
pub use saga_common::component::Component as Svc;

/// An order event as a subscriber takes it off its queue.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub routing_key: String,
    pub message_id: String,
    pub message_type: String,
    pub delivery_mode: Option<u8>,
    pub content_type: Option<String>,
    /// The `x-correlation-id` header.
    pub correlation_header: Option<String>,
    pub body: Value,
}

/// A subscriber's own queue (exclusive to its connection) bound to
/// `{platform}.events` with one pattern, as another system would bind one.
pub struct EventSubscriber {
    connection: Connection,
    channel: lapin::Channel,
    queue: String,
}

impl EventSubscriber {
    /// Takes every event waiting in the queue.
    pub async fn take(&self) -> Vec<ReceivedEvent> {
        let mut taken = Vec::new();
        while let Some(message) =
            self.channel.basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
        {
            let delivery = &message.delivery;
            let properties = &delivery.properties;
            let correlation_header = properties.headers().as_ref().and_then(|headers| {
                headers.inner().iter().find(|(name, _)| name.as_str() == "x-correlation-id").and_then(|(_, value)| {
                    match value {
                        lapin::types::AMQPValue::LongString(value) => Some(value.to_string()),
                        _ => None,
                    }
                })
            });
            taken.push(ReceivedEvent {
                routing_key: delivery.routing_key.to_string(),
                message_id: properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default(),
                message_type: properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default(),
                delivery_mode: *properties.delivery_mode(),
                content_type: properties.content_type().as_ref().map(|c| c.to_string()),
                correlation_header,
                body: serde_json::from_slice(&delivery.data).expect("an event is JSON"),
            });
        }
        taken
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// A message taken from a dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub headers: FieldTable,
    pub body: Vec<u8>,
}

pub struct Options {
    pub replicas: usize,
    pub step_timeout: Duration,
    pub retry: RetryPolicy,
    /// Extra environment for every service process.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 1,
            step_timeout: Duration::from_secs(10),
            retry: RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(100), multiplier: 2 },
            env: Vec::new(),
        }
    }
}

struct Replica {
    port: u16,
    child: Option<Child>,
}

pub struct Platform {
    pub name: String,
    pub topology: Topology,
    pub http: reqwest::Client,
    options: Options,
    replicas: BTreeMap<(Svc, usize), Replica>,
    pools: BTreeMap<Svc, PgPool>,
    log_dir: PathBuf,
    /// Set once `shutdown` removed the topology and the databases.
    cleaned: bool,
}

pub fn bin_dir() -> PathBuf {
    // target/debug/deps/<test> → target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Platform {
    /// Declares a fresh topology, starts every service and waits until all are ready.
    pub async fn start(options: Options) -> Platform {
        let name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let spec = TopologySpec { platform: name.clone(), queue_type: QueueType::Quorum, retry: options.retry.clone() };
        let topology = Topology::new(spec);
        let connection = Broker::new(amqp_url(), "saga-tests").connect_once().await.expect("RabbitMQ is reachable");
        topology.declare(&connection).await.expect("declare topology");
        let _ = connection.close(200, "done".into()).await;
        let log_dir = bin_dir().join("test-logs").join(&name);
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut platform = Platform {
            name,
            topology,
            http: reqwest::Client::new(),
            options,
            replicas: BTreeMap::new(),
            pools: BTreeMap::new(),
            log_dir,
            cleaned: false,
        };
        for svc in Svc::ALL {
            for replica in 0..platform.options.replicas {
                platform.replicas.insert((svc, replica), Replica { port: free_port(), child: None });
                platform.spawn(svc, replica);
            }
        }
        platform.wait_ready().await;
        for svc in Svc::ALL {
            let pool = PgPool::connect(&platform.database_url(svc)).await.unwrap();
            platform.pools.insert(svc, pool);
        }
        platform
    }

    pub fn database_url(&self, svc: Svc) -> String {
        format!("{PG_BASE}/{}", svc.database(&self.name))
    }

    fn spawn(&mut self, svc: Svc, replica: usize) {
        self.spawn_with(svc, replica, &[]);
    }

    /// Starts a replica with `env` on top of the platform's environment.
    fn spawn_with(&mut self, svc: Svc, replica: usize, env: &[(&str, String)]) {
        let port = self.replicas[&(svc, replica)].port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}-{replica}.log", svc.name())))
            .unwrap();
        let child = Command::new(bin_dir().join(svc.binary()))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.database_url(svc))
            .env("AMQP_URL", amqp_url())
            .envs(settings_env(&self.topology.spec, &format!("127.0.0.1:{port}")))
            .env("AUTH_JWT_SECRET", SECRET)
            .env("SAGA_STEP_TIMEOUT", format!("{}ms", self.options.step_timeout.as_millis()))
            .env("DB_POOL_SIZE", "8")
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(name, value)| (name, value)))
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (run `cargo build --bins` first): {e}", svc.binary()));
        self.replicas.get_mut(&(svc, replica)).unwrap().child = Some(child);
    }

    /// SIGKILL: no shutdown hook runs, whatever was in flight is cut.
    pub fn kill(&mut self, svc: Svc, replica: usize) {
        if let Some(mut child) = self.replicas.get_mut(&(svc, replica)).unwrap().child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self, svc: Svc, replica: usize) {
        self.kill(svc, replica);
        self.spawn(svc, replica);
    }

    /// Restarts a replica with `env` on top of the platform's environment
    /// (not waiting for it to be ready).
    pub fn restart_with(&mut self, svc: Svc, replica: usize, env: &[(&str, String)]) {
        self.kill(svc, replica);
        self.spawn_with(svc, replica, env);
    }

    /// The exit status of a replica's process, if it has exited.
    pub fn exit_status(&mut self, svc: Svc, replica: usize) -> Option<std::process::ExitStatus> {
        self.replicas.get_mut(&(svc, replica)).unwrap().child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panics naming every replica whose process has exited (a crash).
    pub fn assert_running(&mut self) {
        let mut dead = Vec::new();
        for (&(svc, replica), r) in &mut self.replicas {
            if let Some(child) = r.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                dead.push(format!("{} replica {replica} exited ({status})", svc.binary()));
            }
        }
        assert!(dead.is_empty(), "processes died: {dead:?}; see {:?}", self.log_dir);
    }

    /// The log file of one replica (stdout and stderr).
    pub fn log(&self, svc: Svc, replica: usize) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{}-{replica}.log", svc.name()))).unwrap_or_default()
    }

    /// The process id of a running replica.
    pub fn pid(&self, svc: Svc, replica: usize) -> u32 {
        self.replicas[&(svc, replica)].child.as_ref().expect("replica is running").id()
    }

    /// SIGSTOP / SIGCONT: the process keeps its connections but does nothing.
    pub fn pause(&self, svc: Svc, replica: usize, paused: bool) {
        let child = self.replicas[&(svc, replica)].child.as_ref().expect("replica is running");
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn url(&self, svc: Svc, path: &str) -> String {
        self.replica_url(svc, 0, path)
    }

    pub fn replica_url(&self, svc: Svc, replica: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.replicas[&(svc, replica)].port)
    }

    pub fn pool(&self, svc: Svc) -> &PgPool {
        &self.pools[&svc]
    }

    /// Waits until every running replica answers 200 on /readyz.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (&(svc, replica), r) in &self.replicas {
            if r.child.is_none() {
                continue;
            }
            let url = self.replica_url(svc, replica, "/readyz");
            loop {
                if let Ok(response) = self.http.get(&url).send().await
                    && response.status() == 200
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} replica {replica} not ready; see {:?}",
                    svc.binary(),
                    self.log_dir
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub fn token(&self, customer: &str) -> String {
        saga_common::auth::mint(SECRET, customer, false, Duration::from_secs(3600))
    }

    pub fn admin_token(&self) -> String {
        saga_common::auth::mint(SECRET, "admin", true, Duration::from_secs(3600))
    }

    async fn admin_put(&self, svc: Svc, path: &str, body: Value) {
        let response =
            self.http.put(self.url(svc, path)).bearer_auth(self.admin_token()).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "PUT {path}: {} {}", response.status(), response.text().await.unwrap());
    }

    pub async fn put_product(&self, sku: &str, unit_price_cents: i64, on_hand: i64) {
        let body = json!({"name": format!("{sku} name"), "unit_price_cents": unit_price_cents, "on_hand": on_hand});
        self.admin_put(Svc::Inventory, &format!("/api/v1/products/{sku}"), body).await;
    }

    pub async fn put_account(&self, customer: &str, balance_cents: i64) {
        self.admin_put(Svc::Payment, &format!("/api/v1/accounts/{customer}"), json!({"balance_cents": balance_cents}))
            .await;
    }

    /// POSTs an order; returns the order id. Panics unless 202.
    pub async fn place_order(&self, customer: &str, items: &[(&str, i64)]) -> String {
        let items: Vec<Value> = items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect();
        let response = self
            .http
            .post(self.url(Svc::Order, "/api/v1/orders"))
            .bearer_auth(self.token(customer))
            .json(&json!({"items": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    pub async fn order(&self, id: &str) -> Value {
        let response = self
            .http
            .get(self.url(Svc::Order, &format!("/api/v1/orders/{id}")))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.http
            .post(self.url(Svc::Order, &format!("/api/v1/orders/{id}/cancel")))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .unwrap()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let url = self.url(Svc::Order, &format!("/api/v1/orders/{id}/events"));
        self.http.get(url).bearer_auth(self.admin_token()).send().await.unwrap().json().await.unwrap()
    }

    /// Polls until the order reaches `status` (panics after `within`).
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        self.wait_order(id, within, |order| order["status"] == status).await
    }

    /// Polls until the order leaves PENDING.
    pub async fn wait_final(&self, id: &str, within: Duration) -> Value {
        self.wait_order(id, within, |order| order["status"] != "PENDING").await
    }

    async fn wait_order(&self, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let order = self.order(id).await;
            if done(&order) {
                return order;
            }
            assert!(Instant::now() < deadline, "order {id} did not get there in {within:?}: {order}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn product(&self, sku: &str) -> Value {
        let url = self.url(Svc::Inventory, &format!("/api/v1/products/{sku}"));
        self.http.get(url).bearer_auth(self.admin_token()).send().await.unwrap().json().await.unwrap()
    }

    pub async fn balance(&self, customer: &str) -> i64 {
        let url = self.url(Svc::Payment, &format!("/api/v1/accounts/{customer}"));
        let account: Value =
            self.http.get(url).bearer_auth(self.admin_token()).send().await.unwrap().json().await.unwrap();
        account["balance_cents"].as_i64().unwrap()
    }

    pub async fn amqp(&self) -> Connection {
        Broker::new(amqp_url(), "saga-tests").connect_once().await.unwrap()
    }

    /// Binds a queue of the test's own to `{platform}.events` with `pattern`
    /// (`order.*`, `order.failed`): it receives what is published from now on.
    pub async fn subscribe_events(&self, pattern: &str) -> EventSubscriber {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        let options = lapin::options::QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.unwrap().name().to_string();
        let exchange = self.topology.events_exchange();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                pattern.into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        EventSubscriber { connection, channel, queue }
    }

    /// Waits until the order service's outbox is empty: every message it
    /// wrote (order events included) has been published and confirmed, so it
    /// is in every queue it was routed to.
    pub async fn wait_outbox_drained(&self, within: Duration) {
        eventually("the order service's outbox is empty", within, || async {
            let rows: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(self.pool(Svc::Order)).await.unwrap();
            (rows == 0).then_some(())
        })
        .await;
    }

    /// Publishes raw bytes straight into a service's queue.
    pub async fn publish_raw(&self, to: Svc, properties: BasicProperties, body: &[u8]) {
        self.publish_confirmed(&self.topology.exchange(), to, properties, body).await;
    }

    /// Publishes an order event onto `{platform}.events` (routing key = its
    /// type, not mandatory, as the order service does) and asserts the
    /// broker confirmed it.
    pub async fn publish_event(&self, routing_key: &str, properties: BasicProperties, body: &[u8]) {
        let options = BasicPublishOptions::default();
        self.publish_to(&self.topology.events_exchange(), routing_key, options, properties, body).await;
    }

    /// Publishes to `exchange` with `to`'s queue as routing key, mandatory,
    /// and asserts the broker confirmed it.
    async fn publish_confirmed(&self, exchange: &str, to: Svc, properties: BasicProperties, body: &[u8]) {
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        self.publish_to(exchange, to.destination().queue(), options, properties, body).await;
    }

    /// One confirmed publish on a connection of its own.
    async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: BasicProperties,
        body: &[u8],
    ) {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        let confirm = channel
            .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        let _ = connection.close(200, "done".into()).await;
    }

    /// Puts a message straight into a service's dead-letter queue (through
    /// the dead-letter exchange), as if it had failed there for `reason`.
    pub async fn dead_letter(&self, to: Svc, properties: BasicProperties, body: &[u8], reason: &str) {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert("x-failure-reason".into(), lapin::types::AMQPValue::LongString(reason.into()));
        headers.insert("x-attempt".into(), lapin::types::AMQPValue::LongUInt(self.options.retry.max_attempts));
        let properties = properties.with_headers(headers).with_delivery_mode(2);
        self.publish_confirmed(&self.topology.dead_letter_exchange(), to, properties, body).await;
    }

    /// Takes every message from a service's dead-letter queue.
    pub async fn drain_dlq(&self, svc: Svc) -> Vec<DeadLetter> {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        let queue = saga_common::topology::dlq_name(&self.name, svc.destination());
        let mut messages = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
        {
            let properties = &message.delivery.properties;
            messages.push(DeadLetter {
                message_id: properties.message_id().as_ref().map(|id| id.to_string()),
                headers: properties.headers().clone().unwrap_or_default(),
                body: message.delivery.data.clone(),
            });
        }
        let _ = connection.close(200, "done".into()).await;
        messages
    }

    /// Takes messages from a service's dead-letter queue until every id in
    /// `ids` has arrived (panics after `within`); returns those, by id.
    pub async fn wait_dead_letters(&self, svc: Svc, ids: &[String], within: Duration) -> BTreeMap<String, DeadLetter> {
        let deadline = Instant::now() + within;
        let mut found = BTreeMap::new();
        loop {
            for message in self.drain_dlq(svc).await {
                if let Some(id) = message.message_id.clone().filter(|id| ids.contains(id)) {
                    found.insert(id, message);
                }
            }
            if ids.iter().all(|id| found.contains_key(id)) {
                return found;
            }
            let missing: Vec<_> = ids.iter().filter(|id| !found.contains_key(*id)).collect();
            assert!(Instant::now() < deadline, "not dead-lettered by {svc:?} within {within:?}: {missing:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process, deletes the topology and drops the databases.
    pub async fn shutdown(mut self) {
        let keys: Vec<_> = self.replicas.keys().copied().collect();
        for (svc, replica) in keys {
            self.kill(svc, replica);
        }
        for pool in std::mem::take(&mut self.pools).into_values() {
            pool.close().await;
        }
        let connection = self.amqp().await;
        self.topology.delete(&connection).await.unwrap();
        let admin = PgPool::connect(&format!("{PG_BASE}/postgres")).await.unwrap();
        for svc in Svc::ALL {
            let db = format!("{}_{}", self.name, svc.name());
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")))
                .execute(&admin)
                .await
                .unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
        self.cleaned = true;
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // A failed test still stops its processes; its logs stay for reading.
        for replica in self.replicas.values_mut() {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.cleaned {
            return;
        }
        // The topology and databases of a failed test go too: leftover
        // quorum queues hold broker file handles, and enough of them stop
        // RabbitMQ from accepting connections at all.
        let (name, topology) = (self.name.clone(), self.topology.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                if let Ok(connection) = Broker::new(amqp_url(), "saga-tests-cleanup").connect_once().await {
                    let _ = topology.delete(&connection).await;
                    let _ = connection.close(200, "done".into()).await;
                }
                if let Ok(admin) = PgPool::connect(&format!("{PG_BASE}/postgres")).await {
                    for svc in Svc::ALL {
                        let db = format!("{name}_{}", svc.name());
                        let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                    }
                    admin.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
