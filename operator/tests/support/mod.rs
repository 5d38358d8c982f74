//! Shared by the controller tests: the fake API server, a running operator
//! against it, and resources to feed it.

pub mod fake_api;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use saga_operator::broker::Brokers;
use saga_operator::metrics::Metrics;
use saga_operator::reconcile::{Context, Settings};
use serde_json::{Value, json};
use tokio::sync::watch;

pub use fake_api::{FakeApi, Key};

pub const NS: &str = "shop";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Nothing listens there: a broker that is down.
pub const DEAD_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";
pub const WAIT: Duration = Duration::from_secs(20);

/// The operator running against a fake API server.
pub struct Operator {
    pub fake: FakeApi,
    pub context: Arc<Context>,
    /// What `/readyz` reports.
    pub synced: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

pub fn settings() -> Settings {
    Settings {
        resync: Duration::from_millis(500),
        scale_interval: Duration::from_millis(200),
        cleanup_timeout: Duration::from_secs(30),
        error_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        broker_retry: Duration::from_millis(500),
        rollout_poll: Duration::from_millis(500),
        reconcile_timeout: Duration::from_secs(30),
    }
}

impl Operator {
    pub fn start(settings: Settings) -> Operator {
        let (client, fake) = FakeApi::start();
        let context = Arc::new(Context::new(
            client.clone(),
            Metrics::new(),
            Brokers::new(Duration::from_secs(3)),
            settings,
            "test".into(),
        ));
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let synced = Arc::new(AtomicBool::new(false));
        let task =
            tokio::spawn(saga_operator::controller::run(client, None, true, context.clone(), synced.clone(), shutdown));
        Operator { fake, context, synced, stop, task }
    }

    /// Graceful shutdown: the controller must stop by itself.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task).await.expect("controller stops on shutdown").unwrap();
    }

    pub fn platform_key(name: &str) -> Key {
        Key::new("sagaplatforms", NS, name)
    }

    /// Waits for a condition of the resource's status to have `status`; returns the resource.
    pub async fn wait_condition(&self, name: &str, type_: &str, status: &str) -> Value {
        let key = Self::platform_key(name);
        self.fake
            .wait_for(&format!("{name} condition {type_}={status}"), WAIT, |fake| {
                let object = fake.get(&key)?;
                let found = condition(&object, type_)?;
                (found["status"] == status).then_some(object)
            })
            .await
    }

    /// Waits until every Deployment of the resource exists and returns them.
    pub async fn wait_deployments(&self, name: &str) -> Vec<Value> {
        let keys: Vec<Key> = ["order", "payment", "inventory", "notification"]
            .iter()
            .map(|s| Key::new("deployments", NS, &format!("{name}-{s}")))
            .collect();
        self.fake
            .wait_for("four deployments", WAIT, |fake| keys.iter().map(|k| fake.get(k)).collect::<Option<Vec<_>>>())
            .await
    }

    /// Marks every replica of a Deployment ready, as the Deployment controller would.
    pub fn make_ready(&self, deployment: &Value) {
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        let key = Key::new("deployments", NS, deployment["metadata"]["name"].as_str().unwrap());
        // The generation stored now (a later apply may have bumped it), as the
        // Deployment controller observes it.
        let stored = self.fake.get(&key).unwrap_or_else(|| deployment.clone());
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
        let status = json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                            "readyReplicas": replicas, "availableReplicas": replicas});
        self.fake.set_status(&key, status);
    }

    /// Reasons of the Events recorded so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.fake.list("events").iter().filter_map(|e| e["reason"].as_str().map(str::to_owned)).collect()
    }
}

pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// A platform name no other test (or earlier run) uses.
pub fn unique_platform(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn secret(name: &str, values: &[(&str, &str)]) -> Value {
    let data: BTreeMap<String, ByteString> =
        values.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect();
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..ObjectMeta::default() },
        data: Some(data),
        ..Secret::default()
    };
    serde_json::to_value(secret).unwrap()
}

/// The Secrets a platform refers to, with the given broker URL.
pub fn put_secrets(fake: &FakeApi, amqp_url: &str) {
    fake.put("secrets", secret("broker", &[("url", amqp_url)]));
    fake.put("secrets", secret("auth", &[("jwt", "0123456789abcdef0123456789abcdef")]));
}

/// A SagaPlatform named `name` on platform `platform` with `replicas` pods per
/// service (0 means no pod has to become ready).
pub fn platform(name: &str, platform: &str, replicas: i32, deletion_policy: &str) -> Value {
    let service = |service: &str| {
        json!({
            "image": format!("saga/{service}-service:1"),
            "replicas": replicas,
            "databaseUrlSecret": {"name": "db", "key": service},
        })
    };
    json!({
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "SagaPlatform",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "platform": platform,
            "broker": {"urlSecret": {"name": "broker", "key": "url"}, "queueType": "classic"},
            "auth": {"jwtSecret": {"name": "auth", "key": "jwt"}},
            "deletionPolicy": deletion_policy,
            "order": service("order"),
            "payment": service("payment"),
            "inventory": service("inventory"),
            "notification": service("notification"),
        }
    })
}

/// Deletes a platform's topology from the real broker after a test.
pub async fn delete_topology(platform: &str) {
    let spec = saga_common::topology::TopologySpec {
        platform: platform.into(),
        queue_type: saga_common::topology::QueueType::Classic,
        retry: Default::default(),
    };
    let connection = saga_common::amqp::Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    saga_common::topology::Topology::new(spec).delete(&connection).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let owner = saga_operator::broker::owner_exchange(platform);
    channel.exchange_delete(owner.as_str().into(), Default::default()).await.unwrap();
}

/// Whether a queue exists on the real broker.
pub async fn queue_exists(queue: &str) -> bool {
    let connection = saga_common::amqp::Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, Default::default()).await.is_ok()
}
