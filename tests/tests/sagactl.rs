//! sagactl against a real platform: `topology apply -f` from a SagaPlatform
//! file, and the dead-letter commands (list, replay exactly once, purge).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use saga_common::topology::{Destination, QueueType, RetryPolicy, Topology, TopologySpec, dlq_name};
use saga_tests::{Options, Platform, Svc, amqp_url};

fn sagactl(args: &[&str]) -> Output {
    // target/debug/deps/<test> → target/debug/sagactl
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|p| p.parent()).unwrap().join("sagactl");
    Command::new(binary).args(args).env("AMQP_URL", amqp_url()).output().expect("run sagactl (cargo build --bins)")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn topology_apply_declares_what_a_sagaplatform_file_says() {
    let name = format!("f{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let file = std::env::temp_dir().join(format!("{name}.yaml"));
    // The minimal example, renamed, with classic queues and its own retry policy.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sagaplatform-minimal.yaml"));
    let yaml = example.unwrap().replace("name: minimal", &format!("name: {name}")).replace(
        "    urlSecret: { name: saga-broker, key: url }\n",
        "    urlSecret: { name: saga-broker, key: url }\n    queueType: classic\n  retry:\n    maxAttempts: 3\n    \
         initialDelayMs: 200\n    multiplier: 2\n",
    );
    std::fs::write(&file, yaml).unwrap();
    let output = sagactl(&["topology", "apply", "-f", file.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains(&format!("{name}.saga")), "{}", stdout(&output));

    let expected = Topology::new(TopologySpec {
        platform: name.clone(),
        queue_type: QueueType::Classic,
        retry: RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(200), multiplier: 2 },
    });
    let connection = saga_common::amqp::Broker::new(amqp_url(), "saga-tests").connect_once().await.unwrap();
    expected.verify(&connection).await.expect("the file's topology is declared exactly");
    expected.delete(&connection).await.unwrap();

    std::fs::write(&file, "apiVersion: saga.dev/v1alpha1\nkind: SagaPlatform\nmetadata: {name: x}\nspec: 7\n").unwrap();
    let output = sagactl(&["topology", "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a valid SagaPlatform"), "{output:?}");
    let _ = std::fs::remove_file(file);
}

async fn dlq_depth(platform: &Platform) -> u32 {
    let connection = platform.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let queue = dlq_name(&platform.name, Destination::Inventory);
    let depth = channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    depth.message_count()
}

async fn wait_dlq_depth(platform: &Platform, expected: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let depth = dlq_depth(platform).await;
        if depth == expected {
            return;
        }
        assert!(Instant::now() < deadline, "inventory DLQ holds {depth}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_once_and_purged() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("A", 100, 10).await;
    platform.put_account("c1", 10_000).await;
    let order = platform.place_order("c1", &[("A", 1)]).await;
    platform.wait_status(&order, "COMPLETED", Duration::from_secs(20)).await;

    // A real message of the finished saga, as if it had been dead-lettered.
    let confirm_id = platform
        .events(&order)
        .await
        .iter()
        .find(|e| e["detail"]["type"] == "inventory.confirm")
        .and_then(|e| e["detail"]["message_id"].as_str().map(str::to_owned))
        .expect("the timeline names the confirm command");
    let mut headers = FieldTable::default();
    headers.insert("x-failure-reason".into(), AMQPValue::LongString("injected by the test".into()));
    headers.insert("x-attempt".into(), AMQPValue::LongUInt(5));
    let properties = BasicProperties::default()
        .with_message_id(confirm_id.as_str().into())
        .with_type("inventory.confirm".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let body = format!(r#"{{"type":"inventory.confirm","order_id":"{order}"}}"#);
    let connection = platform.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let dlx = platform.topology.dead_letter_exchange();
    let routing_key = Destination::Inventory.queue();
    let publish = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm =
        channel.basic_publish(dlx.as_str().into(), routing_key.into(), publish, body.as_bytes(), properties).await;
    assert!(confirm.unwrap().await.unwrap().is_ack());
    let _ = connection.close(200, "done".into()).await;
    // And poison, dead-lettered by the service itself.
    let poison_id = uuid::Uuid::new_v4().to_string();
    platform
        .publish_raw(Svc::Inventory, BasicProperties::default().with_message_id(poison_id.as_str().into()), b"{")
        .await;
    wait_dlq_depth(&platform, 2).await;

    let list = sagactl(&["dlq", "list", "--platform", &platform.name, "--queue", "inventory"]);
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    for expected in [confirm_id.as_str(), poison_id.as_str(), "injected by the test", "malformed", "2 shown of 2"] {
        assert!(text.contains(expected), "`dlq list` lacks {expected:?}:\n{text}");
    }
    assert_eq!(dlq_depth(&platform).await, 2, "listing must not consume");

    let replay = sagactl(&["dlq", "replay", "--platform", &platform.name, "--id", &confirm_id]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(stdout(&replay).contains("1 messages replayed"), "{}", stdout(&replay));
    // The saga is finished: the replayed confirm is a duplicate with no effect.
    wait_dlq_depth(&platform, 1).await;
    let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
        .bind(&confirm_id)
        .fetch_one(platform.pool(Svc::Inventory))
        .await
        .unwrap();
    assert_eq!(handled, 1);
    let product = platform.product("A").await;
    assert_eq!((product["on_hand"].as_i64(), product["reserved"].as_i64()), (Some(9), Some(0)), "{product}");

    let missing = sagactl(&["dlq", "replay", "--platform", &platform.name, "--id", "no-such-message"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    // Poison replayed goes back to its queue once and is dead-lettered again.
    let replay_all = sagactl(&["dlq", "replay", "--platform", &platform.name, "--all"]);
    assert!(stdout(&replay_all).contains("1 messages replayed"), "{replay_all:?}");
    wait_dlq_depth(&platform, 1).await;

    let refused = sagactl(&["dlq", "purge", "--platform", &platform.name]);
    assert_eq!(refused.status.code(), Some(1), "purge without --yes and no terminal must refuse: {refused:?}");
    let purge = sagactl(&["dlq", "purge", "--platform", &platform.name, "--yes"]);
    assert!(purge.status.success(), "{purge:?}");
    assert_eq!(dlq_depth(&platform).await, 0);
    platform.shutdown().await;
}

#[tokio::test]
async fn dlq_list_escapes_what_came_from_messages() {
    let platform = Platform::start(Options::default()).await;
    let mut headers = FieldTable::default();
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}";
    headers.insert("x-correlation-id".into(), AMQPValue::LongString(format!("c{evil}").as_str().into()));
    headers.insert(
        "x-failure-reason".into(),
        AMQPValue::LongString(format!("r{evil}{}", "x".repeat(5000)).as_str().into()),
    );
    let id = uuid::Uuid::new_v4().to_string();
    let properties = BasicProperties::default()
        .with_message_id(id.as_str().into())
        .with_type(format!("t{evil}").as_str().into())
        .with_headers(headers);
    let connection = platform.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let dlx = platform.topology.dead_letter_exchange();
    let publish = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm = channel
        .basic_publish(dlx.as_str().into(), Destination::Inventory.queue().into(), publish, b"{}", properties)
        .await;
    assert!(confirm.unwrap().await.unwrap().is_ack());
    let _ = connection.close(200, "done".into()).await;
    wait_dlq_depth(&platform, 1).await;

    let list = sagactl(&["dlq", "list", "--platform", &platform.name, "--queue", "inventory"]);
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    let raw: Vec<char> = text.chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}').collect();
    assert!(raw.is_empty(), "`dlq list` printed control characters {raw:?}:\n{text}");
    assert!(text.contains(r"c\u{1b}[2J"), "{text}");
    assert!(text.lines().all(|line| line.chars().count() < 1000), "the reason is shortened");
    platform.shutdown().await;
}

#[tokio::test]
async fn orders_list_and_show_escape_what_came_from_outside() {
    let platform = Platform::start(Options::default()).await;
    platform.put_product("ESC-1", 100, 10).await;
    platform.put_account("escaper", 10_000).await;
    let id = platform.place_order("escaper", &[("ESC-1", 1)]).await;
    platform.wait_final(&id, Duration::from_secs(30)).await;
    // Text that reached the order database from elsewhere, hostile.
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}";
    let order_id = uuid::Uuid::parse_str(&id).unwrap();
    sqlx::query("UPDATE orders SET failure_reason = $1 WHERE id = $2")
        .bind(format!("r{evil}"))
        .bind(order_id)
        .execute(platform.pool(Svc::Order))
        .await
        .unwrap();
    sqlx::query("INSERT INTO saga_events (order_id, kind, detail) VALUES ($1, $2, $3)")
        .bind(order_id)
        .bind(format!("k{evil}"))
        .bind(serde_json::json!({ format!("key{evil}"): format!("v{evil}") }))
        .execute(platform.pool(Svc::Order))
        .await
        .unwrap();
    let order_url = platform.url(Svc::Order, "");
    for args in [vec!["orders", "list"], vec!["orders", "show", &id]] {
        let output = Command::new(saga_tests::bin_dir().join("sagactl"))
            .args(&args)
            .env("ORDER_URL", &order_url)
            .env("AUTH_JWT_SECRET", saga_tests::SECRET)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        let text = stdout(&output);
        let raw: Vec<char> = text.chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}').collect();
        assert!(raw.is_empty(), "`sagactl {args:?}` printed control characters {raw:?}:\n{text}");
        assert!(text.contains(r"r\u{1b}[2J"), "{text}");
    }
    platform.shutdown().await;
}
