//! sagactl for scripts and people, against a real platform: the incident
//! commands (`orders retry | compensate`), `-o json` output checked against
//! the committed JSON Schemas (`cli/output-schema.json`), `-o yaml`, the
//! context file and the precedence of its settings, colour, and the shell
//! completion scripts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use saga_tests::{Options, Platform, SECRET, Svc, amqp_url};
use serde_json::Value;

/// A folder of its own for each test (its context files).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sagactl-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// sagactl with a clean environment: no context file unless `env` points at one.
fn sagactl(env: &[(&str, &str)], args: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|p| p.parent()).unwrap().join("sagactl");
    Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent-home")
        .env("AMQP_URL", amqp_url())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run sagactl (cargo build --bins)")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `sagactl … -o json`, checks the output against the committed schema
/// of `command`, and returns it.
fn json(env: &[(&str, &str)], command: &str, args: &[&str]) -> Value {
    let mut full: Vec<&str> = command.split(' ').collect();
    full.extend(args);
    full.extend(["-o", "json"]);
    let output = sagactl(env, &full);
    assert!(output.status.success(), "sagactl {full:?}: {}", stderr(&output));
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)));
    assert_valid(command, &value);
    value
}

fn assert_valid(command: &str, value: &Value) {
    let schemas: Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/output-schema.json"))).unwrap();
    let schema = schemas.get(command).unwrap_or_else(|| panic!("no schema for {command}"));
    let validator = jsonschema::validator_for(schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{command} -o json does not match its schema: {errors:#?}\n{value:#}");
}

/// A context file for `platform`: its order URL, and tokens minted as
/// `oncall-sam` with the platform's secret.
fn context_file(dir: &Path, platform: &Platform) -> PathBuf {
    let file = dir.join("context.yaml");
    let yaml = format!(
        "order_url: {}\npayment_url: {}\ninventory_url: {}\nauth_jwt_secret: {SECRET}\ntoken:\n  mint_as: oncall-sam\n",
        platform.url(Svc::Order, ""),
        platform.url(Svc::Payment, ""),
        platform.url(Svc::Inventory, "")
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

/// The incident commands on a saga stuck on a frozen payment service, with
/// the URLs and the token from a context file: `compensate` ends it FAILED
/// with everything given back; `retry` of another resends its charge and it
/// completes once payment resumes; both name the operator on the timeline;
/// a finished order is refused with the API's reason and exit status 1.
#[tokio::test]
async fn incident_commands_act_on_a_stuck_saga_as_the_context_says() {
    let platform = Platform::start(Options { step_timeout: Duration::from_secs(30), ..Options::default() }).await;
    platform.put_product("KIT", 900, 4).await;
    platform.put_account("hana", 10_000).await;
    let dir = scratch("incident");
    let file = context_file(&dir, &platform);
    let env = [("SAGACTL_CONFIG", file.to_str().unwrap())];

    platform.pause(Svc::Payment, 0, true);
    let forced = platform.place_order("hana", &[("KIT", 2)]).await;
    let retried = platform.place_order("hana", &[("KIT", 1)]).await;
    saga_tests::eventually("both orders reserved", Duration::from_secs(30), || async {
        (platform.product("KIT").await["reserved"] == 3).then_some(())
    })
    .await;

    let out = json(&env, "orders compensate", &[&forced, "--reason", "customer gave up waiting"]);
    assert_eq!((out["action"].as_str(), out["order"]["id"].as_str()), (Some("compensate"), Some(forced.as_str())));
    assert_eq!(out["reason"], "customer gave up waiting");
    // YAML carries the same fields.
    let output = sagactl(&env, &["orders", "retry", &retried, "-o", "yaml", "--reason", "payment frozen"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let yaml: Value = serde_yaml::from_str(&stdout(&output)).unwrap();
    assert_valid("orders retry", &yaml);
    assert_eq!((yaml["action"].as_str(), yaml["order"]["status"].as_str()), (Some("retry"), Some("PENDING")));

    platform.pause(Svc::Payment, 0, false);
    let failed = platform.wait_final(&forced, Duration::from_secs(30)).await;
    assert_eq!(failed["failure_reason"], "compensated_by_operator", "{failed}");
    let completed = platform.wait_final(&retried, Duration::from_secs(30)).await;
    assert_eq!(completed["status"], "COMPLETED", "{completed}");
    assert_eq!(platform.balance("hana").await, 10_000 - 900);
    let kit = platform.product("KIT").await;
    assert_eq!((kit["on_hand"].as_i64(), kit["reserved"].as_i64()), (Some(3), Some(0)));

    let shown = json(&env, "orders show", &[&forced]);
    let entry = shown["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "compensate.requested").cloned();
    let detail = entry.expect("on the timeline")["detail"].clone();
    assert_eq!(
        (detail["by"].as_str(), detail["reason"].as_str()),
        (Some("oncall-sam"), Some("customer gave up waiting"))
    );
    let shown = json(&env, "orders show", &[&retried]);
    assert!(
        shown["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "retry.requested" && e["detail"]["by"] == "oncall-sam")
    );

    // Finished: the API's 409 and its reason, exit status 1.
    let output = sagactl(&env, &["orders", "retry", &retried]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("409") && stderr(&output).contains("[cannot-retry]"), "{}", stderr(&output));
    // A customer's token (from the environment, over the file) is refused.
    let customer = platform.token("hana");
    let output = sagactl(&[env[0], ("SAGACTL_TOKEN", &customer)], &["orders", "compensate", &retried]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));

    // Colour: only on a terminal (a pseudo-terminal made by `script`), not
    // with NO_COLOR, not in a pipe unless asked for.
    let green = "\x1b[32mCOMPLETED\x1b[0m";
    let piped = stdout(&sagactl(&env, &["orders", "list"]));
    assert!(piped.contains(" COMPLETED ") && !piped.contains('\x1b'), "{piped}");
    assert!(stdout(&sagactl(&env, &["orders", "list", "--color", "always"])).contains(green));
    let on_terminal = |no_color: &str| {
        let exe = std::env::current_exe().unwrap();
        let binary = exe.parent().and_then(|p| p.parent()).unwrap().join("sagactl");
        let output = Command::new("script")
            .args(["-qec", &format!("{} orders list", binary.display()), "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SAGACTL_CONFIG", &file)
            .env("NO_COLOR", no_color)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        stdout(&output)
    };
    assert!(on_terminal("").contains(green), "a terminal, NO_COLOR empty: colour");
    let plain = on_terminal("1");
    assert!(plain.contains(" COMPLETED ") && !plain.contains('\x1b'), "NO_COLOR=1: {plain}");

    // The other commands that print data, against the same platform.
    let list = json(&env, "orders list", &["--limit", "5"]);
    assert_eq!(list["orders"].as_array().unwrap().len(), 2);
    let stuck = json(&env, "sagas stuck", &["--older-than", "1ms"]);
    assert_eq!(stuck["sagas"], Value::Array(vec![]));
    assert_eq!(stuck["older_than_ms"], 1);
    let token = json(&env, "token", &["--sub", "x"]);
    assert!(token["token"].as_str().unwrap().starts_with("ey"));
    let name = format!("o{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let topology = json(&env, "topology apply", &["--platform", &name]);
    assert_eq!(topology["platform"].as_str(), Some(name.as_str()));
    assert!(!topology["amqp_url"].as_str().unwrap().contains("guest:guest"), "password hidden: {topology}");
    // The defaults of `topology apply` (saga_common::config::TopologyArgs).
    let declared = saga_common::topology::Topology::new(saga_common::topology::TopologySpec {
        platform: name,
        queue_type: saga_common::topology::QueueType::Quorum,
        retry: saga_common::topology::RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            multiplier: 4,
        },
    });
    let connection = platform.amqp().await;
    declared.verify(&connection).await.expect("declared as printed");
    declared.delete(&connection).await.unwrap();
    let _ = connection.close(200, "done".into()).await;

    // The demo, as data: every scenario as expected, with its order and timeline.
    let demo = json(&env, "demo", &[]);
    assert_eq!(demo["all_as_expected"], true, "{demo:#}");
    let scenarios = demo["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 6);
    assert!(scenarios.iter().all(|s| s["timeline"].as_array().is_some_and(|t| !t.is_empty())), "{demo:#}");

    // Dead letters as data: poison, listed without consuming, then purged.
    let poison = uuid::Uuid::new_v4().to_string();
    let properties = lapin::BasicProperties::default().with_message_id(poison.as_str().into());
    platform.publish_raw(Svc::Inventory, properties, b"{").await;
    let args = ["--platform", platform.name.as_str(), "--queue", "inventory"];
    let listed = saga_tests::eventually("the poison is dead-lettered", Duration::from_secs(30), || async {
        let listed = json(&env, "dlq list", &args);
        (listed["total"] == 1).then_some(listed)
    })
    .await;
    assert_eq!(listed["messages"][0]["message_id"].as_str(), Some(poison.as_str()), "{listed:#}");
    let purged = json(&env, "dlq purge", &[&args[..], &["--yes"]].concat());
    assert_eq!(purged["purged"][0]["messages"], 1, "{purged:#}");

    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Each setting from the first of: flag, environment, context file, default;
/// the file found through XDG_CONFIG_HOME, HOME or SAGACTL_CONFIG / --config.
#[test]
fn settings_come_from_flags_then_environment_then_the_context_file_then_defaults() {
    let dir = scratch("precedence");
    let xdg = dir.join("xdg");
    std::fs::create_dir_all(xdg.join("sagactl")).unwrap();
    std::fs::write(
        xdg.join("sagactl/config.yaml"),
        "order_url: http://from-file:1\npayment_url: http://from-file:2\noutput: yaml\ntoken:\n  file: token.txt\n",
    )
    .unwrap();
    let xdg_env = ("XDG_CONFIG_HOME", xdg.to_str().unwrap());
    let setting = |view: &Value, name: &str| -> (String, String) {
        let found = view["settings"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap();
        (found["value"].as_str().unwrap().to_owned(), found["source"].as_str().unwrap().to_owned())
    };
    let pair = |value: &str, source: &str| (value.to_owned(), source.to_owned());

    // Nothing set: defaults, and the file it would read.
    let view = json(&[], "config view", &[]);
    assert_eq!(view["config_file"], "/nonexistent-home/.config/sagactl/config.yaml");
    assert_eq!(view["config_file_found"], false);
    assert_eq!(setting(&view, "order_url"), pair("http://127.0.0.1:8080", "default"));
    assert_eq!(setting(&view, "token"), pair("minted as admin, sub \"sagactl\", with auth_jwt_secret", "default"));

    // The file under XDG_CONFIG_HOME.
    let view = json(&[xdg_env], "config view", &[]);
    assert_eq!(view["config_file_found"], true);
    assert_eq!(setting(&view, "order_url"), pair("http://from-file:1", "config"));
    assert_eq!(setting(&view, "inventory_url"), pair("http://127.0.0.1:8082", "default"));
    let token_file = xdg.join("sagactl/token.txt");
    assert_eq!(setting(&view, "token"), pair(&format!("the file {}", token_file.display()), "config"));
    // The file's `output: yaml` applies when -o is not given.
    let output = sagactl(&[xdg_env], &["config", "view"]);
    let yaml: Value = serde_yaml::from_str(&stdout(&output)).unwrap();
    assert_eq!(yaml["config_file_found"], true);

    // The environment beats the file, a flag beats both.
    let env = [xdg_env, ("ORDER_URL", "http://from-env:1"), ("SAGACTL_TOKEN", "tok")];
    let view = json(&env, "config view", &[]);
    assert_eq!(setting(&view, "order_url"), pair("http://from-env:1", "env"));
    assert_eq!(setting(&view, "payment_url"), pair("http://from-file:2", "config"));
    assert_eq!(setting(&view, "token"), pair("a literal token (hidden)", "env"));
    let view = json(&env, "config view", &["--order-url", "http://from-flag:1", "--token-file", "/t"]);
    assert_eq!(setting(&view, "order_url"), pair("http://from-flag:1", "flag"));
    assert_eq!(setting(&view, "token"), pair("the file /t", "flag"));
    assert!(!stdout(&sagactl(&env, &["config", "view", "-o", "json"])).contains("tok\""), "the token is not shown");

    // HOME when XDG_CONFIG_HOME is unset; SAGACTL_CONFIG and --config name another file.
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".config/sagactl")).unwrap();
    std::fs::write(home.join(".config/sagactl/config.yaml"), "inventory_url: http://home:3\n").unwrap();
    let view = json(&[("HOME", home.to_str().unwrap())], "config view", &[]);
    assert_eq!(setting(&view, "inventory_url"), pair("http://home:3", "config"));
    let other = dir.join("other.yaml");
    std::fs::write(&other, "inventory_url: http://other:3\n").unwrap();
    let view = json(&[xdg_env, ("SAGACTL_CONFIG", other.to_str().unwrap())], "config view", &[]);
    assert_eq!(setting(&view, "inventory_url"), pair("http://other:3", "config"));
    assert_eq!(setting(&view, "order_url"), pair("http://127.0.0.1:8080", "default"));
    let view = json(&[xdg_env], "config view", &["--config", other.to_str().unwrap()]);
    assert_eq!(view["config_file"].as_str(), other.to_str());

    // Errors name the file and the setting; exit status 2.
    let missing = dir.join("missing.yaml");
    let output = sagactl(&[], &["config", "view", "--config", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing.yaml"), "{}", stderr(&output));
    for (yaml, expected) in [
        ("order_ulr: http://x:1\n", "unknown field `order_ulr`"),
        ("order_url: x\n", "invalid value for order_url"),
        ("auth_jwt_secret: short\n", "invalid value for auth_jwt_secret"),
        ("token:\n  value: a\n  file: b\n", "invalid value for token"),
        ("output: xml\n", "output"),
    ] {
        std::fs::write(&other, yaml).unwrap();
        let output = sagactl(&[], &["config", "view", "--config", other.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{yaml}");
        assert!(
            stderr(&output).contains(expected) && stderr(&output).contains("other.yaml"),
            "{yaml}: {}",
            stderr(&output)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The completion scripts: bash loads it and completes subcommands; zsh
/// and fish scripts name every subcommand.
#[test]
fn completion_scripts_complete_the_subcommands() {
    let output = sagactl(&[], &["completion", "bash"]);
    assert!(output.status.success());
    let dir = scratch("completion");
    let script = dir.join("sagactl.bash");
    std::fs::write(&script, output.stdout).unwrap();
    let complete = |words: &str| {
        let check = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"{words}\"; \
             COMP_POINT=${{#COMP_LINE}}; _sagactl sagactl \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let output = Command::new("bash").args(["-c", &check]).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let orders = complete("sagactl orders ''");
    for sub in ["list", "show", "retry", "compensate"] {
        assert!(orders.lines().any(|l| l == sub), "{sub} in {orders}");
    }
    let formats = complete("sagactl orders list -o ''");
    assert_eq!(formats.lines().collect::<Vec<_>>(), ["table", "json", "yaml"]);
    let top = complete("sagactl ''");
    for sub in ["completion", "config", "orders", "sagas", "dlq"] {
        assert!(top.lines().any(|l| l == sub), "{sub} in {top}");
    }
    for shell in ["zsh", "fish"] {
        let output = sagactl(&[], &["completion", shell]);
        assert!(output.status.success());
        let text = stdout(&output);
        for sub in ["retry", "compensate", "completion"] {
            assert!(text.contains(sub), "{shell}: {sub}");
        }
    }
    let output = sagactl(&[], &["completion", "tcsh"]);
    assert_eq!(output.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}
