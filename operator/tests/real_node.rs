//! Real pods on the real node `saga-node-0` of `scripts/cluster.sh up --real-node`
//! (containerd, runc, kubelet, kube-proxy, a bridge CNI network): the chart
//! installed with examples/values-real-node.yaml, the operator a real pod with
//! in-cluster configuration, the four services real pods from the
//! saga-platform/*:dev images, probed and restarted by a real kubelet, reached
//! through kube-proxy's iptables rules, talking to this machine's PostgreSQL and
//! RabbitMQ from inside their network namespaces.
//!
//! Needs `KUBECONFIG` of that control plane. If saga-node-0 is not Ready the
//! tests FAIL saying so, unless `SAGA_REAL_NODE_TESTS=skip` says on purpose that
//! real-node tests are not wanted (then each test prints that it was skipped).
//! Root is needed for the checks made from the host (/proc/<pid>/status of the
//! containers' processes, signals to them).

// The shared helpers; this file uses only some of them.
#[allow(dead_code)]
mod cluster_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::{Value, json};

const NODE: &str = "saga-node-0";
/// Namespace where `up --real-node` made the Secrets for the pods.
const REAL_NS: &str = "saga-real";
const SKIP_VAR: &str = "SAGA_REAL_NODE_TESTS";
/// Real pods start slower than kwok's: images unpacked, migrations run.
const POD_WAIT: Duration = Duration::from_secs(240);
const SERVICES: [&str; 4] = ["order", "payment", "inventory", "notification"];

/// `false` when real-node tests are not wanted (SAGA_REAL_NODE_TESTS=skip);
/// panics when they are and the node is not Ready.
fn real_node_wanted() -> bool {
    if std::env::var(SKIP_VAR).as_deref() == Ok("skip") {
        eprintln!("SKIPPED: {SKIP_VAR}=skip (real-node tests not wanted)");
        return false;
    }
    let output =
        tool("kubectl", &["get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    let ready = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && ready == "True",
        "the real node {NODE} is not up and Ready ({}{}): run `scripts/cluster.sh up --real-node` \
         (or set {SKIP_VAR}=skip to say that real-node tests are not wanted)",
        ready,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    true
}

/// The control plane's state directory: where KUBECONFIG (admin.kubeconfig) is.
fn state_dir() -> PathBuf {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").expect("KUBECONFIG"));
    kubeconfig.parent().expect("KUBECONFIG's directory").to_path_buf()
}

/// `ctr` against the node's containerd, namespace k8s.io.
fn ctr(args: &[&str]) -> String {
    let socket = state_dir().join("node/containerd/containerd.sock");
    let output = Command::new("ctr")
        .args(["-a", socket.to_str().unwrap(), "-n", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr (Debian's containerd package)");
    assert!(output.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn secret_value(namespace: &str, name: &str, key: &str) -> String {
    kubectl(&[
        "get",
        "secret",
        name,
        "-n",
        namespace,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

/// A namespace whose pods all go to the real node (as `saga-real`), deleted
/// with its databases when dropped.
struct RealNamespace {
    namespace: Namespace,
    databases: Vec<String>,
}

impl RealNamespace {
    fn create() -> RealNamespace {
        let name = unique("rn");
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": {
                "scheduler.alpha.kubernetes.io/node-selector": format!("kubernetes.io/hostname={NODE}"),
                "scheduler.alpha.kubernetes.io/defaultTolerations":
                    r#"[{"key": "saga.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]"#,
            }},
        });
        kubectl_apply("default", &[ns]).expect("namespace created");
        // The pods' credentials, as `up --real-node` made them; a database of
        // this test's own per service (the services create it: CREATEDB).
        let broker = secret_value(REAL_NS, "saga-broker", "url");
        let order_url = secret_value(REAL_NS, "saga-db", "order");
        let base = order_url.rsplit_once('/').expect("a database URL").0.to_owned();
        let prefix = name.replace('-', "_");
        let databases: Vec<String> = SERVICES.iter().map(|s| format!("{prefix}_{s}")).collect();
        let db: BTreeMap<&str, String> =
            SERVICES.iter().zip(&databases).map(|(s, d)| (*s, format!("{base}/{d}"))).collect();
        let secret = |n: &str, data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "type": "Opaque", "stringData": data});
        kubectl_apply(
            &name,
            &[
                secret("saga-broker", json!({"url": broker})),
                secret("saga-db", json!(db)),
                secret("saga-auth", json!({"jwt-secret": JWT_SECRET})),
            ],
        )
        .expect("secrets created");
        RealNamespace { namespace: Namespace { name }, databases }
    }

    fn name(&self) -> &str {
        &self.namespace.name
    }
}

impl Drop for RealNamespace {
    fn drop(&mut self) {
        // The platforms while their operator still runs (its finalizer), the
        // pods (their connections), then the databases.
        let _ = tool("kubectl", &["delete", "sagaplatforms", "--all", "-n", self.name(), "--timeout=120s"]);
        let _ = tool("kubectl", &["delete", "namespace", self.name(), "--wait=true", "--timeout=120s"]);
        for db in &self.databases {
            let _ = Command::new("psql")
                .args([
                    &format!("{PG_BASE}/postgres"),
                    "-XAtq",
                    "-c",
                    &format!("drop database if exists {db} with (force)"),
                ])
                .output();
        }
    }
}

/// The pods of `selector` in `namespace`, as JSON.
fn pods(namespace: &str, selector: &str) -> Vec<Value> {
    let out = kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["items"].as_array().unwrap().clone()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn restart_count(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0)
}

/// Why pods are not ready: phase, container states, last events.
fn explain_pods(namespace: &str) -> String {
    let pods = tool("kubectl", &["get", "pods", "-n", namespace, "-o", "wide"]);
    let events = tool("kubectl", &["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"]);
    let mut text = format!(
        "pods:\n{}\nevents:\n{}",
        String::from_utf8_lossy(&pods.stdout),
        String::from_utf8_lossy(&events.stdout)
    );
    let logs = tool(
        "kubectl",
        &[
            "logs",
            "-n",
            namespace,
            "--all-containers",
            "--prefix",
            "--tail=15",
            "-l",
            "app.kubernetes.io/part-of=saga-platform",
        ],
    );
    text += &format!("logs:\n{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
    text
}

/// Waits until `selector` has `count` pods, all Ready, all on the real node.
async fn wait_pods_ready(namespace: &str, selector: &str, count: usize) -> Vec<Value> {
    eventually_explained(
        &format!("{count} Ready pod(s) {selector} on {NODE}"),
        POD_WAIT,
        || async {
            let pods = pods(namespace, selector);
            (pods.len() == count && pods.iter().all(|p| ready(p) && p["spec"]["nodeName"] == NODE)).then_some(pods)
        },
        || explain_pods(namespace),
    )
    .await
}

/// The host PIDs of every process of a pod's (first) container.
fn container_pids(pod: &Value) -> Vec<u32> {
    let id = pod["status"]["containerStatuses"][0]["containerID"].as_str().expect("a running container");
    let id = id.strip_prefix("containerd://").expect("a containerd container");
    ctr(&["tasks", "ps", id]).lines().skip(1).filter_map(|line| line.split_whitespace().next()?.parse().ok()).collect()
}

/// The container's main process (PID 1 in its namespace).
fn main_pid(pod: &Value) -> u32 {
    let id = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap();
    let id = id.strip_prefix("containerd://").unwrap();
    let line = ctr(&["tasks", "ls"]).lines().find(|l| l.starts_with(id)).map(str::to_owned);
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no task {id} in the node's containerd"))
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// uid 65532 (real, effective, saved, filesystem), no capability, no new
/// privileges, and `/` mounted read-only, for every process of the pod.
fn assert_locked_down(pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap();
    let pids = container_pids(pod);
    assert!(!pids.is_empty(), "{name}: no process found");
    for pid in pids {
        let uid = status_field(pid, "Uid");
        assert!(uid.split_whitespace().all(|u| u == "65532"), "{name} pid {pid}: Uid {uid}");
        let gid = status_field(pid, "Gid");
        assert!(gid.split_whitespace().all(|g| g == "65532"), "{name} pid {pid}: Gid {gid}");
        for cap in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert_eq!(status_field(pid, cap), "0000000000000000", "{name} pid {pid}: {cap}");
        }
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{name} pid {pid}: NoNewPrivs");
        assert_eq!(status_field(pid, "Seccomp"), "2", "{name} pid {pid}: seccomp filter (RuntimeDefault)");
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mountinfo
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .rfind(|f| f.get(4) == Some(&"/"))
            .unwrap_or_else(|| panic!("{name} pid {pid}: no / in mountinfo"));
        assert!(root[5].split(',').any(|o| o == "ro"), "{name} pid {pid}: / is mounted {}", root[5]);
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The platform's HTTP APIs through their Services' ClusterIPs (kube-proxy's
/// iptables rules on the host).
struct Api {
    http: reqwest::Client,
    order: String,
    payment: String,
    inventory: String,
}

impl Api {
    fn new(namespace: &str, platform: &str) -> Api {
        let ip = |service: &str| {
            let ip = kubectl(&[
                "get",
                "service",
                "-n",
                namespace,
                &format!("{platform}-{service}"),
                "-o",
                "jsonpath={.spec.clusterIP}",
            ]);
            format!("http://{ip}")
        };
        Api {
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            order: ip("order"),
            payment: ip("payment"),
            inventory: ip("inventory"),
        }
    }

    /// Waits until kube-proxy routes each Service's ClusterIP to its pod: the
    /// pods turn Ready before kube-proxy's next sync has rules for their
    /// endpoints, and until then a connection is refused (kube-proxy rejects
    /// a Service without endpoints).
    async fn wait_routed(&self, namespace: &str) {
        for base in [&self.order, &self.payment, &self.inventory] {
            let url = format!("{base}/readyz");
            eventually_explained(
                &format!("GET {url} through kube-proxy answers 200"),
                Duration::from_secs(60),
                || async { self.http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) },
                || explain_pods(namespace),
            )
            .await;
        }
    }

    fn admin() -> String {
        saga_common::auth::mint(JWT_SECRET, "admin", true, Duration::from_secs(3600))
    }

    async fn put(&self, url: String, body: Value) {
        let response = self.http.put(&url).bearer_auth(Self::admin()).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "PUT {url}: {} {}", response.status(), response.text().await.unwrap());
    }

    async fn place(&self, customer: &str, sku: &str) -> String {
        let token = saga_common::auth::mint(JWT_SECRET, customer, false, Duration::from_secs(3600));
        let response = self
            .http
            .post(format!("{}/api/v1/orders", self.order))
            .bearer_auth(token)
            .json(&json!({"items": [{"sku": sku, "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    async fn status(&self, id: &str) -> Option<String> {
        let response =
            self.http.get(format!("{}/api/v1/orders/{id}", self.order)).bearer_auth(Self::admin()).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<Value>().await.ok()?["status"].as_str().map(str::to_owned)
    }

    async fn wait_completed(&self, ids: &[String], within: Duration) {
        for id in ids {
            eventually(&format!("order {id} COMPLETED"), within, || async {
                (self.status(id).await.as_deref() == Some("COMPLETED")).then_some(())
            })
            .await;
        }
    }
}

/// Everything of issue 23's first items on real pods, in order: the chart's
/// operator pod Ready through its probes and reconciling; the four services'
/// pods Ready through theirs; conditions True; orders through the order
/// Service complete; the security context holds (from the host); kill -9 is
/// restarted without losing an order; a frozen process is restarted by its
/// liveness probe.
#[tokio::test]
async fn the_chart_runs_on_real_pods_probed_restarted_and_locked_down() {
    if !real_node_wanted() {
        return;
    }
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let ns = RealNamespace::create();
    let namespace = ns.name().to_owned();

    // 1. helm install with examples/values-real-node.yaml: --wait waits for
    // the operator pod's readiness (its /readyz: the watches synced).
    phase("helm install");
    let release = unique("rn");
    let chart = root().join("charts/saga-platform");
    let values = root().join("examples/values-real-node.yaml");
    let watch = format!("operator.watchNamespace={namespace}");
    let fullname = format!("fullnameOverride={release}");
    let install = tool(
        "helm",
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "-n",
            &namespace,
            "-f",
            values.to_str().unwrap(),
            "--set",
            &watch,
            "--set",
            &fullname,
            "--wait",
            "--timeout",
            "240s",
        ],
    );
    assert!(
        install.status.success(),
        "helm install: {}\n{}",
        String::from_utf8_lossy(&install.stderr),
        explain_pods(&namespace)
    );
    let operator = wait_pods_ready(&namespace, &format!("app.kubernetes.io/instance={release}"), 1).await;
    assert_eq!(restart_count(&operator[0]), 0, "the operator restarted:\n{}", explain_pods(&namespace));
    phase("operator pod Ready on the real node");

    // The SagaPlatform of examples/sagaplatform-real-node.yaml, on broker names of its own.
    let mut sp = example("sagaplatform-real-node.yaml").remove(0);
    let name = "rn";
    sp["metadata"]["name"] = json!(name);
    sp["spec"]["platform"] = json!(unique("rn"));
    kubectl_apply(&namespace, &[sp]).expect("SagaPlatform applied");
    let selector = format!("app.kubernetes.io/instance={name}");
    let service_pods = wait_pods_ready(&namespace, &selector, 4).await;
    phase("the four services' pods Ready on the real node");
    let status = eventually_explained(
        "conditions Ready, TopologyReady, ServicesAvailable True",
        POD_WAIT,
        || async {
            let sp: Value =
                serde_json::from_str(&kubectl(&["get", "sagaplatform", name, "-n", &namespace, "-o", "json"])).unwrap();
            let conditions = sp["status"]["conditions"].as_array().cloned().unwrap_or_default();
            ["Ready", "TopologyReady", "ServicesAvailable"]
                .iter()
                .all(|t| conditions.iter().any(|c| c["type"] == *t && c["status"] == "True"))
                .then_some(sp["status"].clone())
        },
        || {
            format!(
                "{}\n{}",
                kubectl(&["get", "sagaplatform", name, "-n", &namespace, "-o", "yaml"]),
                explain_pods(&namespace)
            )
        },
    )
    .await;
    assert_eq!(status["order"]["readyReplicas"], 1, "{status}");
    phase("status conditions True");

    // 2. Orders through the order Service's ClusterIP (kube-proxy), complete.
    let api = Api::new(&namespace, name);
    api.wait_routed(&namespace).await;
    api.put(
        format!("{}/api/v1/products/RN-1", api.inventory),
        json!({"name": "real node", "unit_price_cents": 100, "on_hand": 1000}),
    )
    .await;
    api.put(format!("{}/api/v1/accounts/alice", api.payment), json!({"balance_cents": 1_000_000})).await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        orders.push(api.place("alice", "RN-1").await);
    }
    api.wait_completed(&orders, Duration::from_secs(60)).await;
    phase("5 orders through the order Service COMPLETED");

    // 3. The security context, from the host: every process of every pod.
    for pod in operator.iter().chain(&service_pods) {
        assert_locked_down(pod);
    }
    phase("uid/gid 65532, no capabilities, NoNewPrivs, seccomp, read-only / in all 5 pods");

    // 4a. kill -9 of the order service's process: the kubelet restarts it and
    // no order is lost (accepted ones complete; new ones are accepted again).
    let order_selector = format!("{selector},app.kubernetes.io/component=order");
    let before = pods(&namespace, &order_selector).remove(0);
    let in_flight: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(api.place("alice", "RN-1").await);
        }
        ids
    };
    signal(main_pid(&before), "KILL");
    let after = eventually_explained(
        "the order pod restarted after kill -9 and Ready again",
        POD_WAIT,
        || async {
            let pod = pods(&namespace, &order_selector).remove(0);
            (restart_count(&pod) > restart_count(&before) && ready(&pod)).then_some(pod)
        },
        || explain_pods(&namespace),
    )
    .await;
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"], "the same pod, restarted in place");
    let mut all = orders.clone();
    all.extend(in_flight);
    all.push(api.place("alice", "RN-1").await);
    api.wait_completed(&all, Duration::from_secs(90)).await;
    phase("kill -9: restartCount grew, the 11 orders COMPLETED");

    // 4b. SIGSTOP of the payment service: /healthz stops answering, the
    // liveness probe (every 10 s, 3 failures) has the kubelet restart it.
    let payment_selector = format!("{selector},app.kubernetes.io/component=payment");
    let before = pods(&namespace, &payment_selector).remove(0);
    signal(main_pid(&before), "STOP");
    let after = eventually_explained(
        "the frozen payment pod restarted by its liveness probe",
        Duration::from_secs(120),
        || async {
            let pod = pods(&namespace, &payment_selector).remove(0);
            (restart_count(&pod) > restart_count(&before) && ready(&pod)).then_some(pod)
        },
        || explain_pods(&namespace),
    )
    .await;
    let events = kubectl(&[
        "get",
        "events",
        "-n",
        &namespace,
        "--field-selector",
        &format!("involvedObject.name={}", before["metadata"]["name"].as_str().unwrap()),
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("Liveness probe failed"), "no liveness failure event: {events}");
    assert!(restart_count(&after) > restart_count(&before));
    let id = api.place("alice", "RN-1").await;
    api.wait_completed(&[id], Duration::from_secs(60)).await;
    phase("SIGSTOP: liveness restarted payment, a new order COMPLETED");

    // Clean up: the platform (deletionPolicy Delete removes its topology),
    // the release, then the namespace and databases (RealNamespace's drop).
    kubectl(&["delete", "sagaplatform", name, "-n", &namespace, "--timeout=180s"]);
    helm(&["uninstall", &release, "-n", &namespace, "--wait", "--timeout", "120s"]);
    phase("cleaned up");
}
