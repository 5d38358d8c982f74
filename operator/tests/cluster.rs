//! The chart, the CRD and the operator against a real Kubernetes API server
//! (`scripts/cluster.sh up`: etcd, kube-apiserver with RBAC, the controller
//! manager's garbage collector and Deployment controllers, the scheduler, and
//! kwok's simulated node), with the machine's RabbitMQ behind the topology.
//!
//! Each test works in a namespace of its own, installs the chart there with
//! `helm install` (the operator limited to that namespace), and runs the
//! operator as a local process authenticated as the chart's ServiceAccount,
//! so the real RBAC authorizer decides whether the chart's Role is enough.

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

/// The chart's ServiceAccount of `release` in `namespace`.
fn service_account(namespace: &str, release: &str) -> String {
    kubectl(&[
        "get",
        "serviceaccount",
        "-n",
        namespace,
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])
}

/// Installs the chart into `namespace` and starts one operator as its ServiceAccount.
fn chart_and_operator(namespace: &str, set: &[&str]) -> (String, Operator) {
    chart_and_operator_with(namespace, set, &[])
}

/// The same, with extra environment for the operator.
fn chart_and_operator_with(namespace: &str, set: &[&str], env: &[(&str, &str)]) -> (String, Operator) {
    let release = unique("sp");
    install_chart(&release, namespace, set);
    let kubeconfig = service_account_kubeconfig(namespace, &service_account(namespace, &release));
    let operator = Operator::start(&format!("{namespace}-operator"), &kubeconfig, namespace, env);
    (release, operator)
}

/// A SagaPlatform on its own broker names, pointed at the local broker.
fn platform(name: &str, deletion_policy: &str) -> Value {
    let mut sp = example("sagaplatform-minimal.yaml").remove(0);
    sp["metadata"]["name"] = json!(name);
    sp["spec"]["platform"] = json!(unique("e2e"));
    sp["spec"]["broker"]["managementUrl"] = json!(MANAGEMENT_URL);
    sp["spec"]["deletionPolicy"] = json!(deletion_policy);
    sp
}

fn platform_name(sp: &Value) -> String {
    sp["spec"]["platform"].as_str().unwrap().to_owned()
}

/// Names of the objects of `kinds` the operator manages for SagaPlatform `name`.
fn children(namespace: &str, name: &str) -> Vec<String> {
    let out = kubectl(&[
        "get",
        "deployments,services,configmaps",
        "-n",
        namespace,
        "-l",
        &format!("app.kubernetes.io/managed-by=saga-operator,app.kubernetes.io/instance={name}"),
        "-o",
        "name",
    ]);
    out.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let ns = Namespace::create("helm").await;
    let release = unique("sp");
    // --wait: the operator's pod must be scheduled and report Ready (kwok).
    install_chart(&release, &ns.name, &[]);

    let crd = get("", "crd", "sagaplatforms.saga.dev").expect("the chart installed the CRD");
    for type_ in ["Established", "NamesAccepted"] {
        assert_eq!(condition(&crd, type_).unwrap()["status"], "True", "CRD {type_}: {crd}");
    }
    let selector = format!("app.kubernetes.io/instance={release}");
    let objects = |kinds: &str| kubectl(&["get", kinds, "-n", &ns.name, "-l", &selector, "-o", "name"]);
    let installed = objects("serviceaccounts,roles,rolebindings,deployments,services");
    for kind in [
        "serviceaccount/",
        "role.rbac.authorization.k8s.io/",
        "rolebinding.rbac.authorization.k8s.io/",
        "deployment.apps/",
    ] {
        assert!(installed.contains(kind), "no {kind} after helm install:\n{installed}");
    }
    // The real authorizer: what the operator needs and nothing more.
    let account = format!("system:serviceaccount:{}:{}", ns.name, service_account(&ns.name, &release));
    let can = |verb: &str, resource: &str, namespace: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let subresource = format!("--subresource={subresource}");
        let mut args = vec!["auth", "can-i", verb, resource, "-n", namespace, "--as", &account];
        if subresource.len() > "--subresource=".len() {
            args.push(&subresource);
        }
        let output = tool("kubectl", &args);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    for (verb, resource) in [
        ("watch", "sagaplatforms.saga.dev"),
        ("patch", "sagaplatforms.saga.dev/status"),
        ("update", "sagaplatforms.saga.dev/finalizers"),
        ("patch", "deployments.apps"),
        ("create", "services"),
        ("get", "secrets"),
        // rbac.watchSecrets (default true): Secret rotations reconcile at once.
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "events.events.k8s.io"),
        ("patch", "poddisruptionbudgets.policy"),
        ("delete", "poddisruptionbudgets.policy"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("delete", "networkpolicies.networking.k8s.io"),
    ] {
        assert!(can(verb, resource, &ns.name), "the operator cannot {verb} {resource}");
    }
    for (verb, resource, namespace) in [
        ("delete", "deployments.apps", ns.name.as_str()),
        ("create", "pods", &ns.name),
        ("delete", "sagaplatforms.saga.dev", &ns.name),
        ("get", "secrets", "kube-system"),
        ("list", "secrets", "kube-system"),
        ("update", "secrets", &ns.name),
        ("delete", "poddisruptionbudgets.policy", "kube-system"),
        ("watch", "sagaplatforms.saga.dev", "default"),
    ] {
        assert!(
            !can(verb, resource, namespace),
            "the operator may {verb} {resource} in {namespace}: more than it needs"
        );
    }
    let deployment = installed.lines().find(|l| l.starts_with("deployment.apps/")).unwrap().to_owned();
    let available = |replicas: i64| {
        let deployment = deployment.clone();
        let ns = ns.name.clone();
        async move {
            let d: Value = serde_json::from_str(&kubectl(&["get", &deployment, "-n", &ns, "-o", "json"])).ok()?;
            (d["status"]["availableReplicas"] == replicas && d["status"]["updatedReplicas"] == replicas).then_some(d)
        }
    };
    eventually("the operator Deployment available", WAIT, || available(1)).await;

    // Upgrade: two replicas with leader election, as the README says.
    helm(&[
        "upgrade",
        &release,
        root_chart().as_str(),
        "-n",
        &ns.name,
        "--reuse-values",
        "--set",
        "operator.replicas=2",
        "--set",
        "operator.leaderElection.enabled=true",
        "--set",
        "rbac.watchSecrets=false",
        "--wait",
        "--timeout",
        "120s",
    ]);
    let upgraded = eventually("two operator replicas available", WAIT, || available(2)).await;
    let env = &upgraded["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array().unwrap().iter().any(|e| e["name"] == "LEADER_ELECTION" && e["value"] == "true"),
        "leader election not wired: {env}"
    );
    // rbac.watchSecrets=false: the Secrets' values by name only, and the operator told so.
    assert!(can("get", "secrets", &ns.name), "get on Secrets stays");
    for verb in ["list", "watch"] {
        assert!(!can(verb, "secrets", &ns.name), "rbac.watchSecrets=false still grants {verb} on Secrets");
    }
    assert!(
        env.as_array().unwrap().iter().any(|e| e["name"] == "WATCH_SECRETS" && e["value"] == "false"),
        "WATCH_SECRETS not wired to rbac.watchSecrets: {env}"
    );
    let roles = objects("roles");
    assert_eq!(roles.lines().count(), 2, "the leader-election Role joins the operator's Role:\n{roles}");

    helm(&["uninstall", &release, "-n", &ns.name, "--wait", "--timeout", "120s"]);
    let left = objects("serviceaccounts,roles,rolebindings,deployments,services,configmaps");
    assert!(left.trim().is_empty(), "helm uninstall left:\n{left}");
    // Helm never deletes a CRD from crds/ (that would delete every SagaPlatform).
    assert!(get("", "crd", "sagaplatforms.saga.dev").is_some(), "the CRD stays after helm uninstall");
}

fn root_chart() -> String {
    format!("{}/../charts/saga-platform", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn examples_become_ready_and_drift_is_repaired() {
    let ns = Namespace::create("examples").await;
    let (_release, operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();

    let mut applied = Vec::new();
    for file in ["sagaplatform.yaml", "sagaplatform-minimal.yaml"] {
        for mut sp in example(file) {
            sp["spec"]["platform"] = json!(unique("e2e"));
            if sp["spec"]["broker"].get("managementUrl").is_some() {
                sp["spec"]["broker"]["managementUrl"] = json!(MANAGEMENT_URL);
            }
            kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap_or_else(|e| panic!("{file} refused: {e}"));
            applied.push(sp);
        }
    }
    for sp in &applied {
        let name = sp["metadata"]["name"].as_str().unwrap();
        let ready = wait_ready(&ns.name, name).await;
        let platform = platform_name(sp);
        let queues = queues(&platform).await;
        for queue in ["order", "payment", "inventory", "notification"] {
            assert!(queues.iter().any(|q| q.starts_with(&format!("{platform}.{queue}"))), "{queue} queues: {queues:?}");
        }
        assert!(queues.iter().any(|q| q.ends_with(".dlq")), "no DLQ: {queues:?}");
        for service in ["order", "payment", "inventory", "notification"] {
            let status = &ready["status"][service];
            assert_eq!(status["desiredReplicas"], status["readyReplicas"], "{name} {service}: {status}");
        }
        // Owner references and the chart's labels on every child.
        let kids = children(&ns.name, name);
        assert_eq!(kids.len(), 12, "four Deployments, Services and ConfigMaps: {kids:?}");
        for kid in &kids {
            let object: Value = serde_json::from_str(&kubectl(&["get", kid, "-n", &ns.name, "-o", "json"])).unwrap();
            let owner = &object["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "SagaPlatform", "{kid}");
            assert_eq!(owner["uid"], ready["metadata"]["uid"], "{kid}");
            assert_eq!(owner["controller"], true, "{kid}");
            assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/part-of"], "saga-platform", "{kid}");
        }
    }

    // kubectl get sp: the printer columns with real values.
    let table = kubectl(&["get", "sp", "-n", &ns.name]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "ORDER", "PAYMENT", "INVENTORY", "DEPTH", "AGE"], "{table}");
    let demo = table.lines().find(|l| l.starts_with("demo ")).unwrap_or_else(|| panic!("no demo row:\n{table}"));
    let cells: Vec<&str> = demo.split_whitespace().collect();
    assert_eq!(&cells[1..5], ["True", "1/1", "1/1", "2/2"], "{table}");
    assert!(cells[5].parse::<u64>().is_ok(), "depth is a number: {table}");

    let minimal = applied.iter().find(|sp| sp["metadata"]["name"] == "minimal").unwrap();
    let deployment = "minimal-payment";

    // Another field manager's field survives our server-side apply.
    kubectl(&["rollout", "restart", &format!("deployment/{deployment}"), "-n", &ns.name]);
    // kubectl scale: repaired to the spec's one replica.
    kubectl(&["scale", &format!("deployment/{deployment}"), "--replicas=3", "-n", &ns.name]);
    eventually("the scaled Deployment repaired", WAIT, || async {
        let d = get(&ns.name, "deployment", deployment)?;
        (d["spec"]["replicas"] == 1).then_some(())
    })
    .await;
    let d = get(&ns.name, "deployment", deployment).unwrap();
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
        "kubectl rollout restart was undone: {}",
        d["spec"]["template"]["metadata"]
    );

    // Deleted children come back (new objects: new uid).
    for kind in ["deployment", "service"] {
        let before = get(&ns.name, kind, "minimal-order").unwrap()["metadata"]["uid"].clone();
        kubectl(&["delete", kind, "minimal-order", "-n", &ns.name]);
        eventually(&format!("the deleted {kind} recreated"), WAIT, || async {
            let now = get(&ns.name, kind, "minimal-order")?;
            (now["metadata"]["uid"] != before).then_some(())
        })
        .await;
    }

    // A queue deleted on the broker is declared again.
    let platform = platform_name(minimal);
    let queue = format!("{platform}.payment.commands");
    assert!(queues(&platform).await.contains(&queue), "{queue} missing before the test deletes it");
    delete_queue(&queue).await;
    eventually("the deleted queue declared again", WAIT, || async {
        queues(&platform).await.contains(&queue).then_some(())
    })
    .await;

    assert!(
        !operator.log_text().to_lowercase().contains("forbidden"),
        "the chart's Role was not enough:\n{}",
        operator.log_text()
    );
    for sp in &applied {
        kubectl(&["delete", "sp", sp["metadata"]["name"].as_str().unwrap(), "-n", &ns.name, "--wait", "--timeout=60s"]);
        delete_topology_of(sp).await;
    }
}

/// Removes a test platform's queues from the broker (deletionPolicy Retain leaves them).
async fn delete_topology_of(sp: &Value) {
    for queue in queues(&platform_name(sp)).await {
        delete_queue(&queue).await;
    }
}

#[tokio::test]
async fn invalid_resources_are_refused_by_the_api_server() {
    let ns = Namespace::create("refused").await;
    // This test installs no chart: the CRD, as the chart has it.
    apply_crd();
    let cases: Vec<Value> = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{}/tests/refused-sagaplatforms.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 5, "the catalogue is loaded");
    for case in &cases {
        let mut sp = platform("refused", "Retain");
        merge(&mut sp["spec"], &case["spec"]);
        let expected = case["apiServerMessage"].as_str().or(case["message"].as_str()).unwrap();
        match kubectl_apply(&ns.name, &[sp]) {
            Ok(out) => panic!("{}: accepted by the API server: {out}", case["name"]),
            Err(error) => assert!(error.contains(expected), "{}: expected {expected:?} in: {error}", case["name"]),
        }
    }
    assert!(get(&ns.name, "sagaplatform", "refused").is_none(), "nothing was stored");

    // Transition rules: what RabbitMQ cannot change in place cannot be changed here.
    kubectl_apply(&ns.name, &[platform("fixed", "Retain")]).unwrap();
    for (patch, message) in [
        (r#"{"spec":{"retry":{"initialDelayMs":900}}}"#, "retry.initialDelayMs cannot be changed after creation"),
        (r#"{"spec":{"retry":{"multiplier":2}}}"#, "retry.multiplier cannot be changed after creation"),
        (r#"{"spec":{"broker":{"queueType":"classic"}}}"#, "queueType cannot be changed after creation"),
        (r#"{"spec":{"platform":"renamed"}}"#, "platform cannot be changed after creation"),
    ] {
        let output = tool("kubectl", &["patch", "sp", "fixed", "-n", &ns.name, "--type=merge", "-p", patch]);
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && error.contains(message), "{patch}: {error}");
    }
    kubectl(&["patch", "sp", "fixed", "-n", &ns.name, "--type=merge", "-p", r#"{"spec":{"retry":{"maxAttempts":7}}}"#]);
    kubectl(&["delete", "sp", "fixed", "-n", &ns.name, "--wait=false"]);
}

/// Merges `over` into `base` (objects key by key, anything else replaced).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over.clone(),
    }
}

#[tokio::test]
async fn deletion_keeps_or_removes_the_topology_and_the_garbage_collector_removes_children() {
    let ns = Namespace::create("delete").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let retain = platform("retain", "Retain");
    let delete = platform("remove", "Delete");
    let mut orphan = platform("orphan", "Delete");
    orphan["spec"]["broker"]["urlSecret"]["name"] = json!("orphan-broker");
    let orphan_secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orphan-broker"},
        "stringData": {"url": AMQP_URL}});
    kubectl_apply(&ns.name, &[orphan_secret, retain.clone(), delete.clone(), orphan.clone()]).unwrap();
    for name in ["retain", "remove", "orphan"] {
        wait_ready(&ns.name, name).await;
        assert_eq!(children(&ns.name, name).len(), 12, "{name}'s children");
    }

    for (sp, queues_stay) in [(&retain, true), (&delete, false)] {
        let name = sp["metadata"]["name"].as_str().unwrap();
        let before = queues(&platform_name(sp)).await;
        assert!(!before.is_empty());
        kubectl(&["delete", "sp", name, "-n", &ns.name, "--wait", "--timeout=60s"]);
        eventually(&format!("{name}'s children removed by the garbage collector"), WAIT, || async {
            children(&ns.name, name).is_empty().then_some(())
        })
        .await;
        let after = queues(&platform_name(sp)).await;
        if queues_stay {
            assert_eq!(after, before, "deletionPolicy Retain keeps the topology");
        } else {
            assert!(after.is_empty(), "deletionPolicy Delete removes the topology: {after:?}");
        }
    }

    // The Secret with the broker URL is gone: the deletion still finishes
    // (CLEANUP_TIMEOUT is 15 s in these tests).
    kubectl(&["delete", "secret", "orphan-broker", "-n", &ns.name]);
    let started = std::time::Instant::now();
    kubectl(&["delete", "sp", "orphan", "-n", &ns.name, "--wait", "--timeout=60s"]);
    assert!(started.elapsed() < Duration::from_secs(45), "deletion took {:?}", started.elapsed());
    delete_topology_of(&retain).await;
    delete_topology_of(&orphan).await;
}

#[tokio::test]
async fn deletion_waits_until_the_service_queues_are_drained() {
    let ns = Namespace::create("drain").await;
    let release = unique("sp");
    install_chart(&release, &ns.name, &[]);
    let kubeconfig = service_account_kubeconfig(&ns.name, &service_account(&ns.name, &release));
    // Long enough that only the drain, not the timeout, lets the deletion go on.
    let env = [("CLEANUP_TIMEOUT", "120s")];
    let _operator = Operator::start(&format!("{}-operator", ns.name), &kubeconfig, &ns.name, &env);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let mut sp = platform("drained", "Delete");
    // A minute in the first retry tier: a retry still waits there when the service queue is empty.
    sp["spec"]["retry"] = json!({"initialDelayMs": 60000});
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "drained").await;
    let names = platform_name(&sp);
    let backlog = format!("{names}.payment.commands");
    let retrying = format!("{backlog}.retry.1");
    publish(&backlog, 3).await;
    publish(&retrying, 2).await;

    kubectl(&["delete", "sp", "drained", "-n", &ns.name, "--wait=false"]);
    // kwok's pods consume nothing: the resource waits, and says why.
    let message = eventually("Ready=False Draining", WAIT, || async {
        let sp = get(&ns.name, "sagaplatform", "drained")?;
        let ready = condition(&sp, "Ready").filter(|c| c["reason"] == "Draining")?;
        Some(ready["message"].as_str().unwrap().to_owned())
    })
    .await;
    assert!(message.contains(&format!("{backlog} 3")), "the remaining count is named: {message}");
    assert!(message.contains(&format!("retry queues: {retrying} 2")), "the retry queue's count is named: {message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(get(&ns.name, "sagaplatform", "drained").is_some(), "held while messages wait");
    assert!(queues(&names).await.contains(&backlog), "the backlog's queue is still there");
    // The edge is closed (the order API's Service selects no pods), the consumers still run.
    let order = get(&ns.name, "service", "drained-order").unwrap();
    assert!(order["spec"]["selector"].is_null(), "order Service still selects pods: {}", order["spec"]);
    for service in ["order", "payment", "inventory", "notification"] {
        let deployment = get(&ns.name, "deployment", &format!("drained-{service}")).unwrap();
        assert_eq!(deployment["spec"]["replicas"], 1, "{service} still runs while draining");
    }

    // The service queue consumed, a retry still waiting: it comes back to the
    // service queue when its TTL ends, so the services keep running.
    purge_queue(&backlog).await;
    let message = eventually("Draining on the retry queue alone", WAIT, || async {
        let sp = get(&ns.name, "sagaplatform", "drained")?;
        let message = condition(&sp, "Ready").filter(|c| c["reason"] == "Draining")?["message"].as_str()?.to_owned();
        message.contains(&format!("{backlog} 0")).then_some(message)
    })
    .await;
    assert!(message.contains(&format!("retry queues: {retrying} 2")), "{message}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(get(&ns.name, "sagaplatform", "drained").is_some(), "held while a retry waits");
    for service in ["order", "payment", "inventory", "notification"] {
        let deployment = get(&ns.name, "deployment", &format!("drained-{service}")).unwrap();
        assert_eq!(deployment["spec"]["replicas"], 1, "{service} still runs while a retry waits");
    }

    // Consumed: the services go to zero, then deletionPolicy Delete applies.
    purge_queue(&retrying).await;
    eventually("the drained resource gone", WAIT, || async {
        get(&ns.name, "sagaplatform", "drained").is_none().then_some(())
    })
    .await;
    assert!(queues(&names).await.is_empty(), "deletionPolicy Delete removed the topology");
    let reasons = event_reasons(&ns.name, "drained");
    for expected in ["Draining", "Drained", "TopologyDeleted"] {
        assert!(reasons.iter().any(|r| r == expected), "{expected} in {reasons:?}");
    }
    assert!(!reasons.iter().any(|r| r == "CleanupAbandoned"), "not the timeout: {reasons:?}");
}

#[tokio::test]
async fn one_leader_reconciles_and_the_other_takes_over_when_it_dies() {
    let ns = Namespace::create("lease").await;
    let release = unique("sp");
    install_chart(&release, &ns.name, &["operator.leaderElection.enabled=true"]);
    let kubeconfig = service_account_kubeconfig(&ns.name, &service_account(&ns.name, &release));
    let leader_env = |id: &'static str| [("LEADER_ELECTION", "true"), ("POD_NAME", id)];
    let mut a = Operator::start(&format!("{}-a", ns.name), &kubeconfig, &ns.name, &leader_env("operator-a"));
    let mut b = Operator::start(&format!("{}-b", ns.name), &kubeconfig, &ns.name, &leader_env("operator-b"));
    let holder = || async {
        let lease = get(&ns.name, "lease", "saga-operator")?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
    };
    let first = eventually("a lease holder", WAIT, holder).await;

    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let sp = platform("leased", "Delete");
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "leased").await;
    let (leader, follower) = if first == "operator-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(leader.log_text().contains("became leader"), "{}", leader.log_text());
    assert!(!follower.log_text().contains("became leader"), "two leaders:\n{}", follower.log_text());
    assert!(!follower.log_text().contains("reconcile"), "the follower reconciled:\n{}", follower.log_text());

    // SIGKILL the leader: the other takes over within the lease duration (15 s).
    leader.kill();
    let started = std::time::Instant::now();
    let second = eventually("the other operator holds the lease", Duration::from_secs(40), || async {
        holder().await.filter(|h| *h != first)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(25), "takeover took {:?}", started.elapsed());
    assert!(follower.running());
    assert_ne!(second, first);
    // And it reconciles: a spec change reaches the Deployment.
    kubectl(&["patch", "sp", "leased", "-n", &ns.name, "--type=merge", "-p", r#"{"spec":{"order":{"replicas":2}}}"#]);
    eventually("the new leader applies the change", WAIT, || async {
        (get(&ns.name, "deployment", "leased-order")?["spec"]["replicas"] == 2).then_some(())
    })
    .await;
    kubectl(&["delete", "sp", "leased", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_steps_down_and_the_other_takes_over() {
    const LEASE: Duration = Duration::from_secs(15);
    const STEP_DOWN: &str = "could not renew the lease in time, stepping down";
    let ns = Namespace::create("cutoff").await;
    let release = unique("sp");
    install_chart(&release, &ns.name, &["operator.leaderElection.enabled=true"]);
    let kubeconfig = service_account_kubeconfig(&ns.name, &service_account(&ns.name, &release));
    let leader_env = |id: &'static str| [("LEADER_ELECTION", "true"), ("POD_NAME", id)];
    let lease = || get(&ns.name, "lease", "saga-operator");
    let holder = || async { lease()?["spec"]["holderIdentity"].as_str().map(str::to_owned) };
    // A alone first, so it is the holder, reaching the API only through the proxy.
    let proxy = TcpProxy::to_api_server();
    let proxied = proxy.kubeconfig(&kubeconfig);
    let mut a = Operator::start(&format!("{}-a", ns.name), &proxied, &ns.name, &leader_env("operator-a"));
    eventually("operator-a holds the lease", WAIT, || async { holder().await.filter(|h| h == "operator-a") }).await;
    let mut b = Operator::start(&format!("{}-b", ns.name), &kubeconfig, &ns.name, &leader_env("operator-b"));

    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    kubectl_apply(&ns.name, &[platform("cutoff", "Delete")]).unwrap();
    wait_ready(&ns.name, "cutoff").await;
    assert_eq!(holder().await.as_deref(), Some("operator-a"));
    assert!(a.log_text().contains("reconcile finished"), "A reconciles through the proxy:\n{}", a.log_text());
    assert!(!b.log_text().contains("became leader"), "two leaders:\n{}", b.log_text());
    assert!(!b.log_text().contains("reconcile"), "the follower reconciled:\n{}", b.log_text());
    assert!(!a.log_text().contains(STEP_DOWN), "stepped down before the cut:\n{}", a.log_text());

    // Silence between A and the API server: no error, no reset, no answer.
    proxy.cut();
    let cut = std::time::Instant::now();
    // A can renew no more: the API server's record is its last renewal.
    let renewed: jiff::Timestamp = lease().unwrap()["spec"]["renewTime"].as_str().unwrap().parse().unwrap();

    // A steps down within its renew deadline (2/3 of the lease), before the
    // lease can expire and before B may take over.
    eventually("operator-a steps down", LEASE, || async { a.log_text().contains(STEP_DOWN).then_some(()) }).await;
    let stepped_down = Duration::try_from(jiff::Timestamp::now().duration_since(renewed)).unwrap_or_default();
    assert_eq!(holder().await.as_deref(), Some("operator-a"), "B took over before A stepped down");
    assert!(stepped_down < LEASE, "stepped down {stepped_down:?} after the last renewal");
    // And it stops: the controller ends and the process exits, to come back as a follower.
    eventually("operator-a exits", Duration::from_secs(10), || {
        let exited = !a.running();
        async move { exited.then_some(()) }
    })
    .await;
    let exited = cut.elapsed();

    // B takes over once A's record stood still for the lease duration, and reconciles.
    kubectl(&["patch", "sp", "cutoff", "-n", &ns.name, "--type=merge", "-p", r#"{"spec":{"order":{"replicas":2}}}"#]);
    eventually("operator-b holds the lease", Duration::from_secs(40), || async {
        holder().await.filter(|h| h == "operator-b")
    })
    .await;
    let taken_over = cut.elapsed();
    assert!(b.log_text().contains("became leader"), "{}", b.log_text());
    eventually("operator-b applies the change", WAIT, || async {
        (get(&ns.name, "deployment", "cutoff-order")?["spec"]["replicas"] == 2).then_some(())
    })
    .await;
    eprintln!(
        "stepped down {stepped_down:?} after A's last renewal; A exited {exited:?} and B held the lease {taken_over:?} after the cut"
    );
    assert!(b.running());
    kubectl(&["delete", "sp", "cutoff", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn a_silent_api_connection_does_not_silence_the_operator() {
    // The operator reaches the API server through a proxy that goes silent
    // (a half-open partition: nothing answers, nothing closes) while it
    // reconciles every 2 s, then heals. Before the bounded calls, the request
    // in flight waited forever and the resource was never reconciled again.
    let ns = Namespace::create("silent").await;
    let release = unique("sp");
    install_chart(&release, &ns.name, &[]);
    let kubeconfig = service_account_kubeconfig(&ns.name, &service_account(&ns.name, &release));
    let proxy = TcpProxy::to_api_server();
    let env = [("API_READ_TIMEOUT", "5s"), ("RECONCILE_TIMEOUT", "20s")];
    let operator = Operator::start(&format!("{}-operator", ns.name), &proxy.kubeconfig(&kubeconfig), &ns.name, &env);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    kubectl_apply(&ns.name, &[platform("silent", "Delete")]).unwrap();
    wait_ready(&ns.name, "silent").await;

    // 20 s of silence, with reconciles (the 2 s resync) in flight.
    proxy.cut();
    eprintln!("cut the operator (pid {}) off the API server", operator.pid());
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.restore();
    let healed = std::time::Instant::now();
    let log_at_heal = operator.log_text().len();

    // A drift made after the silence is repaired within a bounded time.
    kubectl(&["scale", "deployment", "silent-order", "-n", &ns.name, "--replicas=3"]);
    eventually_explained(
        "the scaled Deployment put back to 1 replica",
        Duration::from_secs(60),
        || async { (get(&ns.name, "deployment", "silent-order")?["spec"]["replicas"] == 1).then_some(()) },
        || operator.log_text(),
    )
    .await;
    eprintln!("drift after the silence repaired {:?} after it healed", healed.elapsed());
    let log = operator.log_text();
    let silence = log.get(..log_at_heal).unwrap_or(&log);
    assert!(
        silence.contains("reconcile failed") || silence.contains("reconcile past its deadline"),
        "a timeout warning during the silence:\n{silence}"
    );
    kubectl(&["delete", "sp", "silent", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn two_resources_cannot_share_broker_names() {
    let first = Namespace::create("claim-a").await;
    let second = Namespace::create("claim-b").await;
    let (_release_a, _operator_a) = chart_and_operator(&first.name, &[]);
    let (_release_b, _operator_b) = chart_and_operator(&second.name, &[]);
    let owner = platform("shop", "Delete");
    let mut intruder = platform("shop", "Delete");
    intruder["spec"]["platform"] = owner["spec"]["platform"].clone();
    let broker_names = platform_name(&owner);

    kubectl_apply(&first.name, &local_secrets()).unwrap();
    kubectl_apply(&first.name, std::slice::from_ref(&owner)).unwrap();
    wait_ready(&first.name, "shop").await;
    let before = queues(&broker_names).await;

    kubectl_apply(&second.name, &local_secrets()).unwrap();
    kubectl_apply(&second.name, std::slice::from_ref(&intruder)).unwrap();
    let refused = eventually("the second resource told of the conflict", WAIT, || async {
        let sp = get(&second.name, "sagaplatform", "shop")?;
        let topology = condition(&sp, "TopologyReady")?;
        (topology["reason"] == "Conflict").then(|| topology.clone())
    })
    .await;
    assert!(refused["message"].as_str().unwrap().contains(&first.name), "names the owner: {refused}");

    // deletionPolicy Delete on the intruder must not touch the owner's queues.
    kubectl(&["delete", "sp", "shop", "-n", &second.name, "--wait", "--timeout=60s"]);
    assert_eq!(queues(&broker_names).await, before, "the owner's topology survives the other's deletion");
    assert_eq!(condition(&get(&first.name, "sagaplatform", "shop").unwrap(), "Ready").unwrap()["status"], "True");

    kubectl(&["delete", "sp", "shop", "-n", &first.name, "--wait", "--timeout=60s"]);
    assert!(queues(&broker_names).await.is_empty(), "the owner's Delete removes its topology");
}

/// The secrets hash in the pod template of `name`'s Deployment of `service`.
fn secrets_hash(namespace: &str, name: &str, service: &str) -> Option<String> {
    let d = get(namespace, "deployment", &format!("{name}-{service}"))?;
    d["spec"]["template"]["metadata"]["annotations"]["saga.dev/secrets-hash"].as_str().map(str::to_owned)
}

/// Patches the order key of the database Secret (a rotation of the order
/// service's database URL).
fn rotate_order_database_url(namespace: &str, suffix: &str) {
    let patch = json!({"stringData": {"order": format!("{PG_BASE}/cluster_order_{suffix}")}}).to_string();
    kubectl(&["patch", "secret", "saga-db", "-n", namespace, "-p", &patch]);
}

// Quarantined again (2026-12-08): the bounded API calls and the reconcile
// deadline did not cure it. A fresh-clone CI run failed it once more (status
// RolloutPending, "the Deployment controller has not observed generation 2
// yet", unchanged for 90 s) after 10 of 10 local passes; the stall it shows is
// not the unbounded API call that was found and fixed. Issue 24 stays open for
// it. Run with `cargo test -p saga-operator --test cluster -- --ignored`; the
// rotation stays covered by
// without_the_secret_watch_a_rotation_rolls_the_pods_at_the_resync.
#[ignore = "operator stalls after the rotation under load; issue 24"]
#[tokio::test]
async fn a_rotated_secret_rolls_the_pods_that_read_it_at_once() {
    let ns = Namespace::create("rotate").await;
    // No resync within the test: only the Secret watch can notice the rotation.
    let (_release, operator) = chart_and_operator_with(&ns.name, &[], &[("RESYNC_INTERVAL", "600s")]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let sp = platform("rotate", "Delete");
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "rotate").await;
    let hash = |service: &str| secrets_hash(&ns.name, "rotate", service);
    let (order, payment) = (hash("order").expect("a secrets hash"), hash("payment").expect("a secrets hash"));
    // Let the Deployment events of the first rollout settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A Secret no resource refers to changes nothing.
    let other =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}, "stringData": {"k": "v"}});
    kubectl_apply(&ns.name, &[other]).unwrap();
    // Rotate the order service's database URL only.
    rotate_order_database_url(&ns.name, "rotated");
    eventually("the order pods rolled within seconds", Duration::from_secs(10), || async {
        (hash("order")? != order).then_some(())
    })
    .await;
    assert_eq!(hash("payment").unwrap(), payment, "a key the payment pods do not read leaves them alone");
    wait_ready(&ns.name, "rotate").await;
    let log = operator.log_text();
    assert!(!log.contains("cannot watch Secrets"), "the chart grants the Secret watch:\n{log}");
    kubectl(&["delete", "sp", "rotate", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn a_broker_that_comes_back_is_noticed_without_waiting_for_the_resync() {
    let ns = Namespace::create("broker-back").await;
    // The broker sits behind a proxy that starts cut off: connections are
    // accepted and never answered, as behind a partition.
    let broker = TcpProxy::start(AMQP_URL.split_once('@').and_then(|(_, rest)| rest.split_once('/')).unwrap().0, true);
    // No resync within the test: nothing in the cluster changes when the
    // broker comes back, so only the retry of an unconfirmed topology can see it.
    let env = [("RESYNC_INTERVAL", "600s"), ("BROKER_TIMEOUT", "3s"), ("BROKER_RETRY_INTERVAL", "2s")];
    let (_release, _operator) = chart_and_operator_with(&ns.name, &[], &env);
    let mut secrets = local_secrets();
    secrets[0]["stringData"]["url"] = json!(format!("amqp://guest:guest@{}/%2f", broker.address));
    kubectl_apply(&ns.name, &secrets).unwrap();
    let sp = platform("back", "Delete");
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    let down = wait_condition(&ns.name, "back", "TopologyReady", |c| c["status"] == "False").await;
    assert_eq!(condition(&down, "Ready").unwrap()["status"], "False", "{down}");

    broker.restore();
    let ready = wait_ready(&ns.name, "back").await;
    assert_eq!(condition(&ready, "TopologyReady").unwrap()["reason"], "Declared", "{ready}");
    assert!(!queues(&platform_name(&sp)).await.is_empty(), "the topology was declared through the proxy");
    kubectl(&["delete", "sp", "back", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn without_the_secret_watch_a_rotation_rolls_the_pods_at_the_resync() {
    let ns = Namespace::create("rotate-resync").await;
    // The chart withholds list/watch on Secrets; the operator is not told
    // (WATCH_SECRETS unset): it must find out, say so once, and fall back.
    let (_release, operator) =
        chart_and_operator_with(&ns.name, &["rbac.watchSecrets=false"], &[("RESYNC_INTERVAL", "3s")]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let sp = platform("resync", "Delete");
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "resync").await;
    let order = secrets_hash(&ns.name, "resync", "order").expect("a secrets hash");

    rotate_order_database_url(&ns.name, "resynced");
    eventually("the order pods rolled at a resync", WAIT, || async {
        (secrets_hash(&ns.name, "resync", "order")? != order).then_some(())
    })
    .await;
    wait_ready(&ns.name, "resync").await;
    // Several resyncs later: one warning, and no request repeated against the refusal.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = operator.log_text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("cannot watch Secrets")).collect();
    assert_eq!(warnings.len(), 1, "one warning about the refused Secret watch:\n{log}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("403"), "at warn, with the refusal: {}", warnings[0]);
    // kube's watcher logs each refused request once more, in its own words.
    let refusals = log.lines().filter(|l| l.contains("secrets is forbidden") && !l.contains("cannot watch Secrets"));
    assert_eq!(refusals.count(), 1, "the refused Secret list is not retried:\n{log}");
    kubectl(&["delete", "sp", "resync", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn a_burst_of_deployment_events_does_not_multiply_a_scaling_step() {
    let ns = Namespace::create("burst").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let mut sp = platform("burst", "Delete");
    sp["spec"]["payment"]["autoscaling"] = json!({
        "minReplicas": 1, "maxReplicas": 10, "targetQueueDepthPerReplica": 1,
        "maxScaleUpStep": 1, "stepPeriodSeconds": 3600, "stabilizationWindowSeconds": 0,
    });
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "burst").await;

    // A backlog of 50 on the payment queue (no consumer runs: pods are simulated).
    publish(&format!("{}.payment.commands", platform_name(&sp)), 50).await;
    let replicas = || async { get(&ns.name, "deployment", "burst-payment")?["spec"]["replicas"].as_i64() };
    eventually("the first scaling step", WAIT, || async { (replicas().await? == 2).then_some(()) }).await;

    // Every Deployment event triggers a reconcile; none may add another step
    // inside the period (before: 2 -> 3 -> 4 ... within seconds).
    for i in 0..20 {
        kubectl(&["annotate", "deployment", "burst-payment", "-n", &ns.name, &format!("test/poke={i}"), "--overwrite"]);
    }
    // Nothing to await: the claim is that nothing happens. The burst's reconciles
    // and three SCALE_INTERVALs (2 s here) pass.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(replicas().await, Some(2), "one step per period, however many reconciles");
    kubectl(&["delete", "sp", "burst", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

/// A TCP listener on `address` that answers every connection with an HTTP
/// response carrying a queue depth and records what each connection sent.
async fn recording_listener(address: &str) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(address).await.expect("bind the recording listener");
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0; 8192];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
                let text = match read {
                    Ok(Ok(n)) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
                    _ => String::new(),
                };
                record.lock().unwrap().push(text);
                let body = r#"{"messages_ready":0,"messages_unacknowledged":0}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, received)
}

#[tokio::test]
async fn broker_credentials_go_only_to_the_brokers_host() {
    let ns = Namespace::create("creds").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    // 127.0.0.2: this machine, but not the host of the broker URL (127.0.0.1).
    let (port, received) = recording_listener("127.0.0.2:0").await;
    let mut sp = platform("withheld", "Delete");
    sp["spec"]["broker"]["managementUrl"] = json!(format!("http://127.0.0.2:{port}"));
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();

    let withheld = eventually("the credentials withheld", WAIT, || async {
        let sp = get(&ns.name, "sagaplatform", "withheld")?;
        let management = condition(&sp, "ManagementApiAvailable")?.clone();
        let topology = condition(&sp, "TopologyReady")?;
        (topology["status"] == "True").then_some(())?;
        (management["status"] == "False").then_some(management)
    })
    .await;
    assert_eq!(withheld["reason"], "CredentialsWithheld", "{withheld}");
    let message = withheld["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.2") && message.contains("127.0.0.1"), "names both hosts: {message}");
    assert!(!message.contains("guest"), "no credentials in the condition: {message}");
    let ready = condition(&get(&ns.name, "sagaplatform", "withheld").unwrap(), "Ready").unwrap().clone();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("CredentialsWithheld")));
    // Several resyncs (2 s here) pass: not one connection, let alone a request.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(received.lock().unwrap().is_empty(), "the listener was contacted: {:?}", received.lock().unwrap());

    // The explicit opt-in for that host: now the request goes, with the credentials.
    let patch = r#"{"spec":{"broker":{"allowCredentialsToManagementHost":"127.0.0.2"}}}"#;
    kubectl(&["patch", "sp", "withheld", "-n", &ns.name, "--type=merge", "-p", patch]);
    let request =
        eventually("a request to the allowed host", WAIT, || async { received.lock().unwrap().first().cloned() }).await;
    assert!(request.to_lowercase().contains("authorization: basic "), "the opt-in sends the credentials: {request}");
    wait_ready(&ns.name, "withheld").await;
    let sp = get(&ns.name, "sagaplatform", "withheld").unwrap();
    assert_eq!(condition(&sp, "ManagementApiAvailable").unwrap()["status"], "True", "{sp}");
    kubectl(&["delete", "sp", "withheld", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

/// The machine's TLS listeners (scripts/lib.sh): amqps on 5671 and the
/// management API over https on 15671 with a certificate for localhost,
/// signed by this CA.
const MACHINE_CA: &str = "/etc/saga-platform/tls/ca.pem";

#[tokio::test]
async fn amqps_with_the_ca_becomes_ready_and_a_wrong_ca_is_named() {
    let ns = Namespace::create("tls").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    let ca = std::fs::read_to_string(MACHINE_CA)
        .unwrap_or_else(|e| panic!("{MACHINE_CA}: {e} (the TLS listeners of scripts/lib.sh are not set up)"));
    let other_ca = include_str!("fixtures/tls/other-ca.pem");
    let mut secrets = local_secrets();
    secrets[0]["stringData"]["url"] = json!("amqps://guest:guest@localhost:5671/%2f");
    let secret = |name: &str, pem: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"ca.pem": pem}});
    secrets.push(secret("broker-ca", &ca));
    secrets.push(secret("wrong-ca", other_ca));
    secrets.push(secret("not-a-ca", "not a certificate"));
    kubectl_apply(&ns.name, &secrets).unwrap();
    let with_ca = |name: &str, ca_secret: &str| {
        let mut sp = platform(name, "Delete");
        sp["spec"]["broker"]["managementUrl"] = json!("https://localhost:15671");
        sp["spec"]["broker"]["tls"] = json!({"caSecret": {"name": ca_secret, "key": "ca.pem"}});
        sp
    };
    let (secure, wrong, invalid) =
        (with_ca("secure", "broker-ca"), with_ca("wrong", "wrong-ca"), with_ca("bad", "not-a-ca"));
    kubectl_apply(&ns.name, &[secure.clone(), wrong.clone(), invalid.clone()]).unwrap();

    // The right CA: topology declared over amqps, depth from the https management API.
    let ready = wait_ready(&ns.name, "secure").await;
    assert_eq!(condition(&ready, "ManagementApiAvailable").unwrap()["status"], "True", "{ready}");
    assert_eq!(ready["status"]["queueDepthSource"], "management-api", "{ready}");
    assert!(!queues(&platform_name(&secure)).await.is_empty(), "declared over amqps");
    let config = get(&ns.name, "configmap", "secure-order").unwrap();
    assert_eq!(config["data"]["AMQP_TLS_CA_FILE"], "/etc/saga/tls/broker-ca.pem");

    // A CA that did not sign the broker's certificate: said so, with no password.
    let refused = |name: &'static str, reason: &'static str| {
        let ns = ns.name.clone();
        async move {
            eventually(&format!("{name}: TopologyReady reason {reason}"), WAIT, || async {
                let sp = get(&ns, "sagaplatform", name)?;
                let topology = condition(&sp, "TopologyReady")?;
                (topology["reason"] == reason).then(|| topology["message"].as_str().unwrap().to_owned())
            })
            .await
        }
    };
    let message = refused("wrong", "BrokerTlsHandshakeFailed").await;
    assert!(message.contains("UnknownIssuer") && message.contains("localhost:5671"), "{message}");
    assert!(!message.contains("guest:guest"), "no password: {message}");
    let message = refused("bad", "BrokerCaInvalid").await;
    assert!(message.contains("not-a-ca") && message.contains("no certificate"), "{message}");
    assert!(queues(&platform_name(&wrong)).await.is_empty(), "nothing declared through an unverified connection");

    for sp in [&secure, &wrong, &invalid] {
        let name = sp["metadata"]["name"].as_str().unwrap();
        kubectl(&["delete", "sp", name, "-n", &ns.name, "--wait", "--timeout=60s"]);
    }
}

/// A SagaPlatform's condition `type_` once `probe` accepts it.
async fn wait_condition(namespace: &str, name: &str, type_: &str, probe: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{name}: condition {type_} as expected"), WAIT, || async {
        let sp = get(namespace, "sagaplatform", name)?;
        let found = condition(&sp, type_)?;
        probe(found).then_some(sp)
    })
    .await
}

#[tokio::test]
async fn a_rollout_that_cannot_complete_turns_services_available_false() {
    let ns = Namespace::create("rollout").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let mut sp = platform("stuck", "Delete");
    sp["spec"]["order"]["progressDeadlineSeconds"] = json!(5);
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "stuck").await;
    assert_eq!(get(&ns.name, "deployment", "stuck-order").unwrap()["spec"]["progressDeadlineSeconds"], 5);

    // A new image whose pods need more CPU than the node has: they stay
    // Pending, the old pod stays ready (maxUnavailable 0), and the Deployment
    // controller gives up after the deadline. Ready counts alone look fine.
    let patch =
        r#"{"spec":{"order":{"image":"saga-platform/order-service:0.2.0","resources":{"requests":{"cpu":"100"}}}}}"#;
    kubectl(&["patch", "sp", "stuck", "-n", &ns.name, "--type=merge", "-p", patch]);
    let stuck = wait_condition(&ns.name, "stuck", "ServicesAvailable", |c| {
        c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
    })
    .await;
    let available = condition(&stuck, "ServicesAvailable").unwrap();
    assert!(available["message"].as_str().unwrap().starts_with("order: rollout stuck"), "{available}");
    assert_eq!(condition(&stuck, "Ready").unwrap()["reason"], "ProgressDeadlineExceeded", "{stuck}");
    assert_eq!(stuck["status"]["observedGeneration"], stuck["metadata"]["generation"]);
    let deployment = get(&ns.name, "deployment", "stuck-order").unwrap();
    assert_eq!(deployment["status"]["readyReplicas"], 1, "the old pod is ready all along: {}", deployment["status"]);
    assert_eq!(stuck["status"]["order"]["replicas"], "1/1", "ready/desired alone would say available");

    // A fix that can be scheduled: the rollout completes and the condition follows.
    let patch = r#"{"spec":{"order":{"resources":{"requests":{"cpu":"100m"}}}}}"#;
    kubectl(&["patch", "sp", "stuck", "-n", &ns.name, "--type=merge", "-p", patch]);
    wait_ready(&ns.name, "stuck").await;
    kubectl(&["delete", "sp", "stuck", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

/// The retry queues (`….retry.{n}`) of a platform on the broker.
async fn retry_queues(platform: &str) -> Vec<String> {
    queues(platform).await.into_iter().filter(|q| q.contains(".retry.")).collect()
}

#[tokio::test]
async fn lowering_max_attempts_removes_the_surplus_retry_queues() {
    let ns = Namespace::create("retries").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let sp = platform("retries", "Delete");
    let names = platform_name(&sp);
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    wait_ready(&ns.name, "retries").await;
    assert_eq!(retry_queues(&names).await.len(), 4 * 4, "maxAttempts 5: tiers 1-4 per service queue");

    // maxAttempts 5 → 2 together with an order template whose new pod cannot
    // be scheduled: the old order pod (maxAttempts 5 in its environment)
    // keeps running and may still publish into tiers 2-4, so none of them
    // goes, empty or not, while the rollout is incomplete.
    let patch = r#"{"spec":{"retry":{"maxAttempts":2},"order":{"resources":{"requests":{"cpu":"100"}}}}}"#;
    kubectl(&["patch", "sp", "retries", "-n", &ns.name, "--type=merge", "-p", patch]);
    // Passes after the other services rolled out: only order's old pod is left.
    let held = wait_condition(&ns.name, "retries", "ServicesAvailable", |c| {
        c["reason"] == "RolloutInProgress" && c["message"] == "order: 1 old replicas still running"
    })
    .await;
    assert_eq!(held["status"]["observedGeneration"], held["metadata"]["generation"], "{held}");
    assert_eq!(retry_queues(&names).await.len(), 4 * 4, "no surplus tier removed while an old pod runs");
    assert_eq!(held["status"]["topologyMaxAttempts"], 5, "{held}");
    let message = condition(&held, "TopologyReady").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("kept until the rollout completes (order: 1 old replicas still running)")
            && message.contains(&format!("{names}.order.replies.retry.4")),
        "{message}"
    );

    // One message waits in a surplus tier (expiring in 10 s).
    let tier = format!("{names}.payment.commands.retry.4");
    let body = json!({"properties": {"delivery_mode": 2, "expiration": "10000"}, "routing_key": tier,
                      "payload": "waiting for a retry", "payload_encoding": "string"});
    let answer: Value = reqwest::Client::new()
        .post(format!("{MANAGEMENT_URL}/api/exchanges/%2f/amq.default/publish"))
        .basic_auth("guest", Some("guest"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["routed"], true);

    // A template that can be scheduled: the rollout completes.
    let patch = r#"{"spec":{"order":{"resources":{"requests":{"cpu":"100m"}}}}}"#;
    kubectl(&["patch", "sp", "retries", "-n", &ns.name, "--type=merge", "-p", patch]);
    // The empty surplus tiers go then; the one holding a message stays until it is empty.
    let left = eventually("the empty surplus tiers removed", WAIT, || async {
        let left = retry_queues(&names).await;
        (left.len() == 5).then_some(left)
    })
    .await;
    assert!(left.contains(&tier), "the tier with a waiting message is kept: {left:?}");
    let expected: Vec<String> = ["inventory.commands", "notification.events", "order.replies", "payment.commands"]
        .iter()
        .map(|q| format!("{names}.{q}.retry.1"))
        .collect();
    eventually("the last surplus tier removed once its message left", WAIT, || async {
        let left = retry_queues(&names).await;
        let sp = get(&ns.name, "sagaplatform", "retries")?;
        (left == expected && sp["status"]["topologyMaxAttempts"] == 2).then_some(())
    })
    .await;
    // The message was not lost: its TTL sent it back to the service queue.
    let main = format!("{names}.payment.commands");
    let depth = eventually("the message back in the service queue", WAIT, || async {
        let response = reqwest::Client::new()
            .get(format!("{MANAGEMENT_URL}/api/queues/%2f/{main}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?;
        let info: Value = response.json().await.ok()?;
        info["messages"].as_u64().filter(|m| *m > 0)
    })
    .await;
    assert_eq!(depth, 1);
    let sp = wait_ready(&ns.name, "retries").await;
    assert_eq!(sp["status"]["topologyMaxAttempts"], 2);
    kubectl(&["delete", "sp", "retries", "-n", &ns.name, "--wait", "--timeout=60s"]);
    assert!(queues(&names).await.is_empty(), "deletionPolicy Delete removes the rest");
}

#[tokio::test]
async fn a_paused_resource_is_left_alone_and_says_so() {
    let ns = Namespace::create("paused").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    kubectl_apply(&ns.name, &[platform("held", "Delete")]).unwrap();
    let before = wait_ready(&ns.name, "held").await;

    kubectl(&["annotate", "sp", "held", "-n", &ns.name, "saga.dev/paused=true"]);
    let paused = wait_condition(&ns.name, "held", "Paused", |c| c["status"] == "True").await;
    let ready = condition(&paused, "Ready").unwrap();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("Paused")), "{ready}");

    // Neither a spec change nor drift is acted on while paused.
    kubectl(&["patch", "sp", "held", "-n", &ns.name, "--type=merge", "-p", r#"{"spec":{"order":{"replicas":3}}}"#]);
    kubectl(&["scale", "deployment/held-payment", "--replicas=2", "-n", &ns.name]);
    // Nothing to await: the claim is that nothing happens over three resyncs (2 s here).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(get(&ns.name, "deployment", "held-order").unwrap()["spec"]["replicas"], 1, "spec change applied");
    assert_eq!(get(&ns.name, "deployment", "held-payment").unwrap()["spec"]["replicas"], 2, "drift repaired");
    let sp = get(&ns.name, "sagaplatform", "held").unwrap();
    assert_eq!(
        sp["status"]["observedGeneration"], before["status"]["observedGeneration"],
        "the last applied generation"
    );
    assert_eq!(condition(&sp, "Paused").unwrap()["status"], "True");

    // Resumed: everything catches up, and the Paused condition goes.
    kubectl(&["annotate", "sp", "held", "-n", &ns.name, "saga.dev/paused-"]);
    let resumed = wait_ready(&ns.name, "held").await;
    assert!(condition(&resumed, "Paused").is_none(), "{}", resumed["status"]);
    assert_eq!(get(&ns.name, "deployment", "held-order").unwrap()["spec"]["replicas"], 3);
    assert_eq!(get(&ns.name, "deployment", "held-payment").unwrap()["spec"]["replicas"], 1);
    kubectl(&["delete", "sp", "held", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn disruption_budgets_and_network_policies_follow_the_spec() {
    let ns = Namespace::create("policies").await;
    let (_release, operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let mut sp = platform("guarded", "Delete");
    sp["spec"]["order"]["disruptionBudget"] = json!({"minAvailable": 1});
    sp["spec"]["order"]["networkPolicy"] = json!({"allowFrom": [
        {"podLabels": {"app": "gateway"}},
        {"namespaceLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    ]});
    sp["spec"]["payment"]["disruptionBudget"] = json!({"maxUnavailable": 1});
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    let ready = wait_ready(&ns.name, "guarded").await;

    let budget = get(&ns.name, "poddisruptionbudget", "guarded-order").expect("the order PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "order-service");
    assert_eq!(budget["metadata"]["ownerReferences"][0]["uid"], ready["metadata"]["uid"]);
    assert_eq!(get(&ns.name, "poddisruptionbudget", "guarded-payment").unwrap()["spec"]["maxUnavailable"], 1);
    assert!(get(&ns.name, "poddisruptionbudget", "guarded-inventory").is_none(), "not asked for");
    let policy = get(&ns.name, "networkpolicy", "guarded-order").expect("the order NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "order-service");
    let rule = &policy["spec"]["ingress"][0];
    assert_eq!(rule["ports"], json!([{"port": 8080, "protocol": "TCP"}]), "{rule}");
    assert_eq!(rule["from"][0]["podSelector"]["matchLabels"]["app"], "gateway", "{rule}");
    assert_eq!(rule["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");

    // A PodDisruptionBudget of someone else with the name the payment's would get is never touched.
    let foreign = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "guarded-inventory", "labels": {"app.kubernetes.io/managed-by": "saga-operator",
                                                              "app.kubernetes.io/instance": "guarded"}},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "other"}}}});
    kubectl_apply(&ns.name, &[foreign]).unwrap();

    // Taken out of the spec: removed (and only ours).
    let patch =
        r#"{"spec":{"order":{"disruptionBudget":null,"networkPolicy":null},"payment":{"disruptionBudget":null}}}"#;
    kubectl(&["patch", "sp", "guarded", "-n", &ns.name, "--type=merge", "-p", patch]);
    eventually("the budgets and the policy removed", WAIT, || async {
        let gone = ["guarded-order", "guarded-payment"]
            .iter()
            .all(|name| get(&ns.name, "poddisruptionbudget", name).is_none())
            && get(&ns.name, "networkpolicy", "guarded-order").is_none();
        gone.then_some(())
    })
    .await;
    wait_ready(&ns.name, "guarded").await;
    assert!(get(&ns.name, "poddisruptionbudget", "guarded-inventory").is_some(), "another owner's object stays");
    assert!(
        !operator.log_text().to_lowercase().contains("forbidden"),
        "the chart's Role was not enough:\n{}",
        operator.log_text()
    );
    kubectl(&["delete", "sp", "guarded", "-n", &ns.name, "--wait", "--timeout=60s"]);
}

#[tokio::test]
async fn message_rate_autoscaling_reports_a_limited_decision() {
    let ns = Namespace::create("rate").await;
    let (_release, _operator) = chart_and_operator(&ns.name, &[]);
    kubectl_apply(&ns.name, &local_secrets()).unwrap();
    let mut sp = platform("rate", "Delete");
    // 0.5 messages/s per replica, at most 3; scale-up by one pod per half hour.
    sp["spec"]["payment"]["autoscaling"] = json!({
        "minReplicas": 1, "maxReplicas": 3, "metric": "MessageRate", "targetMessageRatePerReplica": 0.5,
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1800}]}},
    });
    kubectl_apply(&ns.name, std::slice::from_ref(&sp)).unwrap();
    let ready = wait_ready(&ns.name, "rate").await;
    // Idle: 0 recommended, held at minReplicas (as the HPA reports it).
    assert_eq!(condition(&ready, "ScalingLimited").unwrap()["reason"], "TooFewReplicas", "{}", ready["status"]);
    assert_eq!(ready["status"]["payment"]["autoscaler"]["metric"], "MessageRate");

    // About 10 messages/s into the payment queue (no consumer: pods are simulated)
    // until the management API's rate shows it and the autoscaler acts.
    let queue = format!("{}.payment.commands", platform_name(&sp));
    let publishing = tokio::spawn(async move {
        loop {
            publish(&queue, 5).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    // Limited, and Ready all the same once the second pod runs.
    let limited = eventually("ScalingLimited reason ScaleUpLimit with Ready=True", WAIT, || async {
        let sp = get(&ns.name, "sagaplatform", "rate")?;
        let limited = condition(&sp, "ScalingLimited")?["reason"] == "ScaleUpLimit";
        let ready = condition(&sp, "Ready")?["status"] == "True";
        (limited && ready).then_some(sp)
    })
    .await;
    publishing.abort();
    let scaling = condition(&limited, "ScalingLimited").unwrap();
    let autoscaler = &limited["status"]["payment"]["autoscaler"];
    assert_eq!(autoscaler["replicas"], 2, "one pod per period: {autoscaler}");
    assert!(autoscaler["recommendedReplicas"].as_i64().unwrap() > 2, "{autoscaler}");
    assert!(autoscaler["value"].as_str().unwrap().parse::<f64>().unwrap() > 1.0, "a publish rate: {autoscaler}");
    assert_eq!(scaling["reason"], "ScaleUpLimit", "{scaling}");
    assert!(scaling["message"].as_str().unwrap().starts_with("payment: "), "{scaling}");
    assert_eq!(get(&ns.name, "deployment", "rate-payment").unwrap()["spec"]["replicas"], 2);
    kubectl(&["delete", "sp", "rate", "-n", &ns.name, "--wait", "--timeout=60s"]);
}
