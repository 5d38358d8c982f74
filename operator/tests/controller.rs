//! The real `Controller` against the fake API server (tower-test mock), driven
//! by watch events, with the topology declared on the local RabbitMQ; and
//! leader election on the same fake: one holder at a time, takeover only
//! after expiry, and a holder that loses the lease stops.

mod support;

use std::time::Duration;

use http::Method;
use saga_operator::lease::Lease;
use serde_json::json;
use support::*;
use tokio::sync::oneshot;

#[tokio::test]
async fn create_applies_children_and_reports_ready_once_deployments_are() {
    let operator = Operator::start(settings());
    // Ready (for /readyz) once the initial list is read, even with nothing to reconcile.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !operator.synced.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "watches never reported synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let platform = unique_platform("op-create");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 2, "Retain"));

    let deployments = operator.wait_deployments("demo").await;
    for deployment in &deployments {
        assert_eq!(deployment["spec"]["replicas"], 2);
        assert_eq!(deployment["metadata"]["ownerReferences"][0]["kind"], "SagaPlatform");
        assert_eq!(deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"], "saga-operator");
    }
    for child in ["demo-order", "demo-payment", "demo-inventory", "demo-notification"] {
        assert!(operator.fake.get(&Key::new("configmaps", NS, child)).is_some());
        assert!(operator.fake.get(&Key::new("services", NS, child)).is_some());
    }
    // Topology declared, pods not ready yet (no Deployment controller here: not even observed).
    let object = operator.wait_condition("demo", "TopologyReady", "True").await;
    let ready = condition(&object, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "RolloutPending");
    assert_eq!(object["metadata"]["finalizers"][0], "saga.dev/topology");
    assert!(queue_exists(&format!("{platform}.payment.commands")).await);

    // The Deployment controller reports the pods ready: a watch event on the Deployments.
    for deployment in &deployments {
        operator.make_ready(deployment);
    }
    let object = operator.wait_condition("demo", "Ready", "True").await;
    assert_eq!(object["status"]["observedGeneration"], 1);
    assert_eq!(object["status"]["order"]["replicas"], "2/2");
    assert_eq!(condition(&object, "ServicesAvailable").unwrap()["status"], "True");
    let reasons = operator.event_reasons();
    assert!(reasons.contains(&"Applied".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"TopologyDeclared".to_owned()), "{reasons:?}");

    // A pod stops being ready: status follows, with a new transition time only for the flip.
    let ready_since = condition(&object, "Ready").unwrap()["lastTransitionTime"].clone();
    let topology_since = condition(&object, "TopologyReady").unwrap()["lastTransitionTime"].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await; // RFC 3339 seconds must be able to differ
    let key = Key::new("deployments", NS, "demo-order");
    let generation = operator.fake.get(&key).unwrap()["metadata"]["generation"].clone();
    let status = json!({"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1});
    operator.fake.set_status(&key, status);
    let object = operator.wait_condition("demo", "Ready", "False").await;
    assert_eq!(condition(&object, "Ready").unwrap()["message"], "order: 1/2 ready");
    assert_ne!(condition(&object, "Ready").unwrap()["lastTransitionTime"], ready_since);
    assert_eq!(condition(&object, "TopologyReady").unwrap()["lastTransitionTime"], topology_since);

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn spec_change_updates_children() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-update");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;

    let mut changed = support::platform("demo", &platform, 0, "Retain");
    changed["spec"]["order"]["image"] = json!("saga/order-service:2");
    changed["spec"]["saga"] = json!({"stepTimeoutSeconds": 30});
    operator.fake.put("sagaplatforms", changed);

    let key = Key::new("deployments", NS, "demo-order");
    let deployment = operator
        .fake
        .wait_for("new image", WAIT, |fake| {
            fake.get(&key).filter(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == "saga/order-service:2")
        })
        .await;
    let config = operator.fake.get(&Key::new("configmaps", NS, "demo-order")).unwrap();
    assert_eq!(config["data"]["SAGA_STEP_TIMEOUT"], "30s");
    assert!(deployment["spec"]["template"]["metadata"]["annotations"]["saga.dev/config-hash"].is_string());
    operator
        .fake
        .wait_for("observedGeneration 2", WAIT, |fake| {
            fake.get(&Operator::platform_key("demo")).filter(|p| p["status"]["observedGeneration"] == 2)
        })
        .await;

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn deployment_scaled_by_hand_is_put_back() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-drift");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    let deployments = operator.wait_deployments("demo").await;

    let mut scaled = deployments[0].clone();
    scaled["spec"]["replicas"] = json!(7);
    operator.fake.put("deployments", scaled);
    let key = Key::new("deployments", NS, "demo-order");
    operator
        .fake
        .wait_for("replicas back to 0", WAIT, |fake| {
            fake.get(&key).filter(|d| d["spec"]["replicas"] == 0 && d["metadata"]["generation"].as_i64() > Some(2))
        })
        .await;

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn api_errors_are_retried_with_backoff_not_lost() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-errors");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.fail(Method::PATCH, "/configmaps/", 500, 1);
    operator.fake.fail(Method::PATCH, "/deployments/", 409, 2);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));

    operator.wait_condition("demo", "Ready", "True").await;
    assert_eq!(operator.fake.faults_left(), 0);
    assert!(operator.context.metrics.failures("kubernetes_api") >= 1);
    assert!(operator.context.metrics.failures("conflict") >= 2);
    let deployment_patches = operator
        .fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.contains("/deployments/demo-order"))
        .count();
    assert!(deployment_patches >= 3, "two conflicts, then success: {deployment_patches}");

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn an_apply_error_sets_ready_false_with_the_current_generation() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-status");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;

    // A spec change whose children cannot be applied (RBAC taken away, say):
    // the old Ready=True and observedGeneration must not stay.
    operator.fake.fail(Method::PATCH, "/deployments/", 403, 1_000);
    let mut changed = support::platform("demo", &platform, 0, "Retain");
    changed["spec"]["order"]["image"] = json!("saga/order-service:2");
    operator.fake.put("sagaplatforms", changed);
    let key = Operator::platform_key("demo");
    let failed = operator
        .fake
        .wait_for("Ready=False for generation 2", WAIT, |fake| {
            let object = fake.get(&key)?;
            let current = object["status"]["observedGeneration"] == 2 && object["metadata"]["generation"] == 2;
            (current && condition(&object, "Ready")?["status"] == "False").then_some(object)
        })
        .await;
    let ready = condition(&failed, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubernetesApiError", "{ready}");
    assert!(ready["message"].as_str().unwrap().contains("403"), "{ready}");

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn a_deleted_platform_leaves_no_metric_series() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-prune");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;
    let before = operator.context.metrics.render();
    assert!(before.contains(&format!("platform=\"{platform}\"")), "{before}");
    // Every per-platform family has series by now, the scaling counters at 0
    // before any scaling, so each removal below is exercised.
    for family in [
        "saga_operator_queue_depth{",
        "saga_operator_desired_replicas{",
        "saga_operator_ready_replicas{",
        "saga_operator_scaling_decisions_total{",
    ] {
        assert!(
            before.lines().any(|l| l.starts_with(family) && l.contains(&platform)),
            "no {family}..}} series of {platform}:\n{before}"
        );
    }

    operator.fake.delete(&Operator::platform_key("demo"));
    let key = Operator::platform_key("demo");
    operator.fake.wait_for("resource gone", WAIT, |fake| fake.get(&key).is_none().then_some(())).await;
    let after = operator.context.metrics.render();
    assert!(!after.contains(&platform), "series of a deleted platform stay:\n{after}");
    assert!(!after.contains("resource=\"shop/demo\""), "series of a deleted resource stay:\n{after}");

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn deletion_with_retain_keeps_the_topology() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-retain");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;

    operator.fake.delete(&Operator::platform_key("demo"));
    let key = Operator::platform_key("demo");
    operator.fake.wait_for("resource gone", WAIT, |fake| fake.get(&key).is_none().then_some(())).await;
    assert!(queue_exists(&format!("{platform}.order.replies")).await, "Retain leaves the queues");
    assert!(operator.event_reasons().contains(&"TopologyRetained".to_owned()));

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn deletion_with_delete_removes_the_topology() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-delete");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Delete"));
    operator.wait_condition("demo", "Ready", "True").await;
    assert!(queue_exists(&format!("{platform}.order.replies")).await);

    operator.fake.delete(&Operator::platform_key("demo"));
    let key = Operator::platform_key("demo");
    operator.fake.wait_for("resource gone", WAIT, |fake| fake.get(&key).is_none().then_some(())).await;
    assert!(!queue_exists(&format!("{platform}.order.replies")).await, "Delete removes the queues");
    assert!(!queue_exists(&format!("{platform}.payment.commands.dlq")).await);
    assert!(operator.event_reasons().contains(&"TopologyDeleted".to_owned()));

    operator.stop().await;
}

#[tokio::test]
async fn deletion_is_not_blocked_by_a_dead_broker() {
    let mut short = settings();
    // deletionTimestamp has whole seconds: with 1 s, a first drain pass just
    // after a second boundary already counted 1 s and timed out before any
    // Draining (seen once in a full parallel run); with 2 s a first pass
    // within a second of the deletion always waits (Draining) first.
    short.cleanup_timeout = Duration::from_secs(2);
    let operator = Operator::start(short);
    put_secrets(&operator.fake, DEAD_AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", "op-dead", 0, "Delete"));
    operator.wait_condition("demo", "TopologyReady", "False").await;

    operator.fake.delete(&Operator::platform_key("demo"));
    let key = Operator::platform_key("demo");
    operator.fake.wait_for("resource gone", WAIT, |fake| fake.get(&key).is_none().then_some(())).await;
    let reasons = operator.event_reasons();
    // The queues cannot be counted: the drain waits out the timeout, then gives up.
    assert!(reasons.contains(&"Draining".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"CleanupAbandoned".to_owned()), "{reasons:?}");
    operator.stop().await;
}

#[tokio::test]
async fn deletion_is_not_blocked_by_a_missing_secret() {
    let operator = Operator::start(settings());
    put_secrets(&operator.fake, DEAD_AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", "op-nosecret", 0, "Delete"));
    operator.wait_condition("demo", "TopologyReady", "False").await;

    operator.fake.delete(&Key::new("secrets", NS, "broker"));
    operator.fake.delete(&Operator::platform_key("demo"));
    let key = Operator::platform_key("demo");
    operator.fake.wait_for("resource gone", WAIT, |fake| fake.get(&key).is_none().then_some(())).await;
    assert!(operator.event_reasons().contains(&"CleanupSkipped".to_owned()));
    operator.stop().await;
}

#[tokio::test]
async fn broker_down_holds_replicas_and_says_so() {
    let operator = Operator::start(settings());
    put_secrets(&operator.fake, DEAD_AMQP_URL);
    let mut resource = support::platform("demo", "op-down", 0, "Retain");
    resource["spec"]["payment"]["autoscaling"] =
        json!({"minReplicas": 2, "maxReplicas": 6, "targetQueueDepthPerReplica": 10});
    operator.fake.put("sagaplatforms", resource);

    let object = operator.wait_condition("demo", "AutoscalingActive", "False").await;
    assert_eq!(condition(&object, "AutoscalingActive").unwrap()["reason"], "QueueDepthUnknown");
    assert_eq!(condition(&object, "TopologyReady").unwrap()["status"], "False");
    assert_eq!(condition(&object, "Ready").unwrap()["status"], "False");
    let deployment = operator.fake.get(&Key::new("deployments", NS, "demo-payment")).unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2, "held at the current count (min at first)");
    operator.stop().await;
}

#[tokio::test]
async fn invalid_spec_and_malformed_resource_do_not_block_others() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-good");
    put_secrets(&operator.fake, AMQP_URL);
    // Does not even deserialize (an older or hand-edited schema).
    let mut malformed = support::platform("broken", "op-broken", 0, "Retain");
    malformed["spec"]["order"] = json!("not an object");
    operator.fake.put("sagaplatforms", malformed);
    // Deserializes but is invalid (an empty image).
    let mut invalid = support::platform("invalid", "op-invalid", 0, "Retain");
    invalid["spec"]["inventory"]["image"] = json!("");
    operator.fake.put("sagaplatforms", invalid);
    operator.fake.put("sagaplatforms", support::platform("good", &platform, 0, "Retain"));

    operator.wait_condition("good", "Ready", "True").await;
    let object = operator.wait_condition("invalid", "Ready", "False").await;
    assert_eq!(condition(&object, "Ready").unwrap()["reason"], "InvalidSpec");
    assert_eq!(condition(&object, "Ready").unwrap()["message"], "inventory.image must not be empty");
    assert_eq!(object["status"]["observedGeneration"], 1, "an invalid generation is still observed");
    operator
        .fake
        .wait_for("InvalidResource event", WAIT, |fake| {
            fake.list("events").into_iter().find(|e| e["reason"] == "InvalidResource")
        })
        .await;
    assert!(operator.fake.get(&Key::new("deployments", NS, "broken-order")).is_none());
    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn autoscaling_follows_the_backlog_and_waits_before_scaling_down() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-scale");
    put_secrets(&operator.fake, AMQP_URL);
    let mut resource = support::platform("demo", &platform, 0, "Retain");
    resource["spec"]["payment"]["autoscaling"] = json!({"minReplicas": 1, "maxReplicas": 4, "targetQueueDepthPerReplica": 10, "stabilizationWindowSeconds": 300});
    operator.fake.put("sagaplatforms", resource);
    operator.wait_condition("demo", "AutoscalingActive", "True").await;

    // 35 messages waiting: ceil(35 / 10) = 4 replicas, at once.
    let queue = format!("{platform}.payment.commands");
    let connection = saga_common::amqp::Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    for _ in 0..35 {
        channel
            .basic_publish("".into(), queue.as_str().into(), Default::default(), b"{}", Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let key = Key::new("deployments", NS, "demo-payment");
    operator.fake.wait_for("4 replicas", WAIT, |fake| fake.get(&key).filter(|d| d["spec"]["replicas"] == 4)).await;
    let object = operator.fake.get(&Operator::platform_key("demo")).unwrap();
    assert!(object["status"]["payment"]["recommendations"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(operator.event_reasons().contains(&"Scaled".to_owned()));

    // The backlog is gone, but the window still holds the recommendation of 4.
    channel.queue_purge(queue.as_str().into(), Default::default()).await.unwrap();
    let key_platform = Operator::platform_key("demo");
    operator
        .fake
        .wait_for("depth 0 observed", WAIT, |fake| {
            fake.get(&key_platform).filter(|p| p["status"]["payment"]["queueDepth"] == 0)
        })
        .await;
    assert_eq!(operator.fake.get(&key).unwrap()["spec"]["replicas"], 4, "no scale-down inside the window");

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn resync_declares_a_queue_deleted_by_hand() {
    let operator = Operator::start(settings());
    let platform = unique_platform("op-resync");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;

    let queue = format!("{platform}.inventory.commands");
    let connection = saga_common::amqp::Broker::new(AMQP_URL, "operator-test").connect_once().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
    // No watch event: only the periodic resync can notice. The recorder turns
    // the second TopologyDeclared into a series of two.
    operator
        .fake
        .wait_for("TopologyDeclared after the drift", WAIT, |fake| {
            fake.list("events").into_iter().find(|e| e["reason"] == "TopologyDeclared" && e["series"]["count"] == 2)
        })
        .await;
    assert!(queue_exists(&queue).await);

    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn own_status_writes_do_not_trigger_reconciles() {
    let mut idle = settings();
    idle.resync = Duration::from_secs(3600);
    let operator = Operator::start(idle);
    let platform = unique_platform("op-idle");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;
    let reconciles = || {
        let metrics = operator.context.metrics.render();
        let count = metrics.lines().find_map(|l| l.strip_prefix("saga_operator_reconcile_duration_seconds_count"));
        count.and_then(|c| c.trim().parse::<u64>().ok()).unwrap()
    };
    // Proving that nothing happens needs quiet periods: first until the
    // Deployments' own watch events have settled, then one to observe.
    let mut before = reconciles();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = reconciles();
        if now == before {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = reconciles();
    assert_eq!(before, after, "reconciles while idle: a status write loop");
    let status_writes = operator.fake.requests().iter().filter(|r| r.contains("/status")).count();
    assert!(status_writes <= 2, "{status_writes} status writes for one unchanged platform");
    operator.stop().await;
    delete_topology(&platform).await;
}

/// Prints the operator's footprint on the fake API: process RSS once idle
/// with one platform, and the mean reconcile time. Run with `--nocapture`.
#[tokio::test]
async fn footprint_at_idle_and_reconcile_time() {
    let mut idle = settings();
    idle.resync = Duration::from_secs(3600);
    let operator = Operator::start(idle);
    let platform = unique_platform("op-footprint");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;
    // Trigger a few more reconciles through spec changes.
    for generation in 2..=6 {
        let mut changed = support::platform("demo", &platform, 0, "Retain");
        changed["spec"]["saga"] = json!({"stepTimeoutSeconds": generation});
        operator.fake.put("sagaplatforms", changed);
        operator
            .fake
            .wait_for("reconciled", WAIT, |fake| {
                fake.get(&Operator::platform_key("demo")).filter(|p| p["status"]["observedGeneration"] == generation)
            })
            .await;
    }
    let metrics = operator.context.metrics.render();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(f64::NAN)
    };
    let count = value("saga_operator_reconcile_duration_seconds_count");
    let mean_ms = value("saga_operator_reconcile_duration_seconds_sum") / count * 1000.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    println!("footprint: {count} reconciles, mean {mean_ms:.1} ms; test process RSS {} MiB", rss_kib / 1024);
    assert!(count >= 6.0, "{metrics}");
    assert!(mean_ms < 1000.0, "a reconcile on the fake API takes {mean_ms} ms");
    operator.stop().await;
    delete_topology(&platform).await;
}

// ---- leader election ----

fn lease_for(client: &kube::Client, identity: &str) -> Lease {
    Lease::new(client.clone(), "ops", "saga-operator", identity)
        .with_timing(Duration::from_secs(1), Duration::from_millis(100))
}

fn holder(fake: &FakeApi) -> Option<String> {
    let lease = fake.get(&Key::new("leases", "ops", "saga-operator"))?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn one_holder_at_a_time_and_takeover_after_expiry() {
    let (client, fake) = FakeApi::start();
    let a = lease_for(&client, "a");
    let b = lease_for(&client, "b");
    assert!(a.acquire(std::future::pending()).await);
    let (stop_a, stopped_a) = oneshot::channel::<()>();
    let a_done = a.hold(async move {
        let _ = stopped_a.await;
    });

    // b cannot take a lease that a keeps renewing.
    let gave_up = tokio::time::sleep(Duration::from_millis(2500));
    assert!(!b.acquire(gave_up).await, "b must not lead while a renews");
    assert_eq!(holder(&fake).as_deref(), Some("a"));

    // a stops renewing (shutdown); b takes over once the lease expired.
    stop_a.send(()).unwrap();
    a_done.await;
    let took_over = tokio::time::timeout(Duration::from_secs(10), b.acquire(std::future::pending())).await;
    assert_eq!(took_over, Ok(true));
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    let lease = fake.get(&Key::new("leases", "ops", "saga-operator")).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn a_holder_that_loses_the_lease_stops() {
    let (client, fake) = FakeApi::start();
    let a = lease_for(&client, "a");
    assert!(a.acquire(std::future::pending()).await);
    let lost = a.hold(std::future::pending());
    // Someone else writes the lease (as a replica that saw it expire would).
    let mut object = fake.get(&Key::new("leases", "ops", "saga-operator")).unwrap();
    object["spec"]["holderIdentity"] = serde_json::json!("b");
    object["spec"]["leaseDurationSeconds"] = serde_json::json!(60);
    fake.put("leases", object);
    tokio::time::timeout(Duration::from_secs(10), lost).await.expect("a notices it lost the lease");
}

#[tokio::test]
async fn a_holder_cut_off_from_the_api_steps_down_before_the_lease_expires() {
    let (client, fake) = FakeApi::start();
    let a = lease_for(&client, "a");
    assert!(a.acquire(std::future::pending()).await);
    let lost = a.hold(std::future::pending());
    // Every renewal fails: another replica may take over once the lease
    // (1 s) expired, so `a` must stop acting before that.
    fake.fail(Method::GET, "/leases/", 500, 10_000);
    fake.fail(Method::PUT, "/leases/", 500, 10_000);
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lost).await.expect("a steps down while cut off");
    assert!(started.elapsed() < Duration::from_secs(1), "stepped down after {:?}", started.elapsed());
}

#[tokio::test]
async fn expiry_is_judged_by_local_time_not_the_holders_clock() {
    let (client, fake) = FakeApi::start();
    // A dead holder whose clock ran an hour ahead: its renewTime lies in the future.
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    fake.put(
        "leases",
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "saga-operator", "namespace": "ops"},
            "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 1,
                     "renewTime": ahead.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
        }),
    );
    let b = lease_for(&client, "b");
    let took_over = tokio::time::timeout(Duration::from_secs(5), b.acquire(std::future::pending())).await;
    assert_eq!(took_over, Ok(true), "the record did not change for a lease duration: expired");
    assert_eq!(holder(&fake).as_deref(), Some("b"));
}

#[tokio::test]
async fn a_secret_change_reconciles_at_once_without_a_resync() {
    // No resync within the test: only the Secret watch can notice a change.
    let mut settings = settings();
    settings.resync = Duration::from_secs(600);
    let operator = Operator::start(settings);
    let platform = unique_platform("op-secret");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("secrets", secret("db", &[("order", "postgres://db/order"), ("payment", "postgres://db/pay")]));
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;
    let key = |service: &str| Key::new("deployments", NS, &format!("demo-{service}"));
    let hash = |fake: &FakeApi, service: &str| {
        let deployment = fake.get(&key(service))?;
        deployment["spec"]["template"]["metadata"]["annotations"]["saga.dev/secrets-hash"].as_str().map(str::to_owned)
    };
    let (order, payment) = (hash(&operator.fake, "order").unwrap(), hash(&operator.fake, "payment").unwrap());
    // Let the Deployment events of the first apply settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    operator.fake.put("secrets", secret("unrelated", &[("k", "v")]));
    operator.fake.put("secrets", secret("db", &[("order", "postgres://db/order2"), ("payment", "postgres://db/pay")]));
    let changed = operator
        .fake
        .wait_for("the order secrets hash changed", Duration::from_secs(5), |fake| {
            hash(fake, "order").filter(|h| *h != order)
        })
        .await;
    assert_ne!(changed, order);
    assert_eq!(hash(&operator.fake, "payment").unwrap(), payment, "the payment pods read no changed key");
    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn a_reconcile_held_by_an_unanswered_call_is_abandoned_at_its_deadline() {
    // No resync within the test: only the Secret watch triggers reconciles.
    let mut settings = settings();
    settings.resync = Duration::from_secs(600);
    settings.reconcile_timeout = Duration::from_secs(1);
    let operator = Operator::start(settings);
    let platform = unique_platform("op-held");
    put_secrets(&operator.fake, AMQP_URL);
    operator.fake.put("secrets", secret("db", &[("order", "postgres://db/order"), ("payment", "postgres://db/pay")]));
    operator.fake.put("sagaplatforms", support::platform("demo", &platform, 0, "Retain"));
    operator.wait_condition("demo", "Ready", "True").await;
    let deployment = Key::new("deployments", NS, "demo-order");
    let hash = |fake: &FakeApi| {
        let deployment = fake.get(&deployment)?;
        deployment["spec"]["template"]["metadata"]["annotations"]["saga.dev/secrets-hash"].as_str().map(str::to_owned)
    };
    let before = hash(&operator.fake).unwrap();
    let timeouts = || operator.context.metrics.failures("timeout");
    assert_eq!(timeouts(), 0);

    // The next reconcile waits on an answer that never comes (a half-open
    // connection): its first read of the broker Secret is held.
    operator.fake.hold(Method::GET, "/secrets/broker", 1);
    operator.fake.put("secrets", secret("db", &[("order", "postgres://db/order2"), ("payment", "postgres://db/pay")]));
    operator.fake.wait_for("a request held", WAIT, |fake| (fake.held() == 1).then_some(())).await;
    // A rotation made meanwhile waits behind the held reconcile of the same resource.
    operator.fake.put("secrets", secret("db", &[("order", "postgres://db/order3"), ("payment", "postgres://db/pay")]));

    // Abandoned at 1 s, retried: the rotation reaches the pods within seconds.
    let changed = operator
        .fake
        .wait_for("the order secrets hash changed after the held reconcile", Duration::from_secs(5), |fake| {
            hash(fake).filter(|h| *h != before)
        })
        .await;
    assert_ne!(changed, before);
    assert_eq!(timeouts(), 1, "the abandoned reconcile is counted with reason=timeout");
    assert_eq!(operator.fake.held(), 1, "the held call was never answered: only the deadline ended it");
    // Later triggers are still served.
    operator.fake.put("secrets", secret("db", &[("order", "postgres://db/order4"), ("payment", "postgres://db/pay")]));
    operator
        .fake
        .wait_for("a later rotation rolls the pods too", Duration::from_secs(5), |fake| {
            hash(fake).filter(|h| *h != changed)
        })
        .await;
    let snapshot = operator.context.health.snapshot();
    assert!(snapshot.last_success.is_some(), "{snapshot:?}");
    operator.stop().await;
    delete_topology(&platform).await;
}

#[tokio::test]
async fn a_holder_whose_controller_is_stalled_stops_renewing_and_steps_down() {
    let (client, fake) = FakeApi::start();
    let a = lease_for(&client, "a");
    assert!(a.acquire(std::future::pending()).await);
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = stalled.clone();
    let lost = a.hold_while(std::future::pending(), move || {
        if health.load(std::sync::atomic::Ordering::SeqCst) { Err("stalled".into()) } else { Ok(()) }
    });
    tokio::pin!(lost);
    // Healthy: it keeps renewing for well past the renew deadline (2/3 s).
    assert!(tokio::time::timeout(Duration::from_secs(2), &mut lost).await.is_err(), "a healthy holder keeps the lease");
    let renewals = || fake.requests().iter().filter(|r| r.starts_with("PUT") && r.contains("/leases/")).count();
    let before = renewals();
    stalled.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), &mut lost).await.expect("a stalled holder steps down");
    assert!(renewals() <= before + 1, "no renewal once stalled (one may have been in flight)");
    // Still named holder, but no longer renewed: the record stands still and another replica takes over on expiry.
    assert_eq!(holder(&fake).as_deref(), Some("a"));
}
