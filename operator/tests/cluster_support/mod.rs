//! The real Kubernetes API of `scripts/cluster.sh`: namespaces, `helm` and
//! `kubectl` as a user runs them, the operator binary as a local process
//! authenticated as the chart's ServiceAccount, and one `eventually` helper
//! for every wait.
//!
//! The tests need `KUBECONFIG` pointing at that control plane (what
//! `scripts/cluster.sh up` prints); without it they fail with that advice.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace as NamespaceObject;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

/// RabbitMQ and PostgreSQL of the machine, as the Secrets point at them.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const JWT_SECRET: &str = "cluster-test-secret-0123456789abcdef0123";
/// Bound of every wait on the control plane (reconciles, garbage collection, kwok).
pub const WAIT: Duration = Duration::from_secs(90);

/// Polls `probe` until it returns `Some`, or panics naming `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(what, deadline, probe, String::new).await
}

/// [`eventually`], and on timeout the panic also shows what `explain` finds
/// then (the state that kept the condition false).
pub async fn eventually_explained<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut probe: F,
    explain: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if started.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}\n{}", explain());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn kubeconfig() -> PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "KUBECONFIG is not set: these tests need the local control plane; run `scripts/cluster.sh up` and the two exports it prints"
        ),
    }
}

/// Runs a tool of `k8s/bin` (kubectl, helm) with the admin kubeconfig.
pub fn tool(name: &str, args: &[&str]) -> Output {
    let path = root().join("k8s/bin").join(name);
    Command::new(&path)
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .env("HELM_CACHE_HOME", root().join(".cluster/helm/cache"))
        .env("HELM_CONFIG_HOME", root().join(".cluster/helm/config"))
        .env("HELM_DATA_HOME", root().join(".cluster/helm/data"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (scripts/k8s-build.sh builds it)", path.display()))
}

/// Runs a tool and returns its standard output; panics with its error output on failure.
pub fn ok(name: &str, args: &[&str]) -> String {
    let output = tool(name, args);
    assert!(
        output.status.success(),
        "{name} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

pub fn kubectl(args: &[&str]) -> String {
    ok("kubectl", args)
}

pub fn helm(args: &[&str]) -> String {
    ok("helm", args)
}

/// `kubectl apply -f -` of `documents`; the output, or the error text when refused.
pub fn kubectl_apply(namespace: &str, documents: &[Value]) -> Result<String, String> {
    let file = tempfile(documents);
    let output = tool("kubectl", &["apply", "-n", namespace, "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn tempfile(documents: &[Value]) -> PathBuf {
    let dir = root().join("target/cluster-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.yaml", uuid::Uuid::new_v4().simple()));
    let text: Vec<String> = documents.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect();
    std::fs::write(&path, text.join("---\n")).unwrap();
    path
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// The admin client of the test itself.
pub async fn client() -> Client {
    let _ = kubeconfig();
    Client::try_default().await.expect("a client for KUBECONFIG")
}

/// A fresh namespace, deleted (with everything in it) when dropped.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub async fn create(prefix: &str) -> Namespace {
        let name = unique(prefix);
        let api: Api<NamespaceObject> = Api::all(client().await);
        let object = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &object).await.expect("namespace created");
        Namespace { name }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = tool("kubectl", &["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// `helm install` of charts/saga-platform as `release` into `namespace`, the
/// operator limited to that namespace (its own Role), plus `--set` values.
pub fn install_chart(release: &str, namespace: &str, set: &[&str]) -> String {
    let chart = root().join("charts/saga-platform");
    // Helm installs the CRD only when it is missing and never upgrades it: on a
    // control plane kept from an earlier run, bring it up to date as the
    // README tells users to.
    if get("", "crd", "sagaplatforms.saga.dev").is_some() {
        apply_crd();
    }
    let watch = format!("operator.watchNamespace={namespace}");
    let mut args = vec!["install", release, chart.to_str().unwrap(), "-n", namespace, "--set", &watch, "--wait"];
    args.extend(["--timeout", "120s"]);
    for value in set {
        args.extend(["--set", value]);
    }
    helm(&args)
}

/// The Secrets of examples/secrets.yaml, pointed at this machine's broker and databases.
pub fn local_secrets() -> Vec<Value> {
    let secret = |name: &str, data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "stringData": data});
    vec![
        secret("saga-broker", json!({"url": AMQP_URL})),
        secret(
            "saga-db",
            json!({
                "order": format!("{PG_BASE}/cluster_order"),
                "payment": format!("{PG_BASE}/cluster_payment"),
                "inventory": format!("{PG_BASE}/cluster_inventory"),
                "notification": format!("{PG_BASE}/cluster_notification"),
            }),
        ),
        secret("saga-auth", json!({"jwt-secret": JWT_SECRET})),
        // examples/sagaplatform.yaml's e-mail settings (never used: no pod runs).
        secret("saga-smtp", json!({"url": "smtp://127.0.0.1:2525"})),
    ]
}

/// An example file of examples/, parsed.
pub fn example(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("examples").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::with::singleton_map_recursive::deserialize::<Value, _>(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// A bearer-token kubeconfig of ServiceAccount `account` in `namespace`
/// (token from the TokenRequest API, as a pod would get one).
pub fn service_account_kubeconfig(namespace: &str, account: &str) -> PathBuf {
    let token = kubectl(&["create", "token", account, "-n", namespace, "--duration", "1h"]);
    let server = kubectl(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let ca = kubectl(&[
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority}",
    ]);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": account, "namespace": namespace}}],
        "current-context": "local",
    });
    let dir = root().join("target/cluster-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{namespace}-{account}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// A TCP proxy in front of the API server or the broker, for an operator
/// whose network the test cuts. TLS passes through unchanged (the API
/// server's certificate names 127.0.0.1; only the port differs). It runs on
/// threads of its own, so the test's blocking `kubectl` calls never hold up
/// the traffic it forwards.
pub struct TcpProxy {
    pub address: SocketAddr,
    upstream: String,
    cut: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    /// Every socket it ever opened, shut down when it is dropped.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Forwards to the API server of the admin kubeconfig.
    pub fn to_api_server() -> TcpProxy {
        let server = kubectl(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
        let upstream = server.trim().strip_prefix("https://").expect("an https API server").trim_end_matches('/');
        TcpProxy::start(upstream, false)
    }

    /// Forwards to `upstream` (`host:port`); `cut` starts it cut off.
    pub fn start(upstream: &str, cut: bool) -> TcpProxy {
        let upstream = upstream.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = TcpProxy {
            address: listener.local_addr().unwrap(),
            upstream: upstream.clone(),
            cut: Arc::new(AtomicBool::new(cut)),
            closed: Arc::new(AtomicBool::new(false)),
            sockets: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, closed, sockets) = (proxy.cut.clone(), proxy.closed.clone(), proxy.sockets.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                sockets.lock().unwrap().push(client.try_clone().unwrap());
                if cut.load(Ordering::SeqCst) {
                    // Blackholed: the connection stays open and nothing ever answers.
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                sockets.lock().unwrap().push(server.try_clone().unwrap());
                for (from, to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    let (cut, closed) = (cut.clone(), closed.clone());
                    std::thread::spawn(move || pipe(from, to, &cut, &closed));
                }
            }
        });
        proxy
    }

    /// Cuts the operator off: from now on nothing is forwarded in either
    /// direction on the open connections, and new ones are accepted but never
    /// answered, as behind a network partition (no reset, no error: only silence).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards new connections again (the ones opened while cut stay silent).
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// A copy of `kubeconfig` whose API server is this proxy.
    pub fn kubeconfig(&self, kubeconfig: &Path) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let mut config: Value = serde_yaml::from_str(&text).unwrap();
        config["clusters"][0]["cluster"]["server"] = json!(format!("https://{}", self.address));
        assert_ne!(self.upstream, self.address.to_string());
        let path = kubeconfig.with_extension(format!("proxied-{}.kubeconfig", self.address.port()));
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
        path
    }
}

/// Copies `from` to `to` until either side closes; once cut, stops forwarding
/// (and reading) and holds the connection open until the proxy is dropped.
fn pipe(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, closed: &AtomicBool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            while !closed.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    if !cut.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread so it sees `closed`.
        let _ = TcpStream::connect(self.address);
    }
}

/// `saga-operator` as a local process, killed when dropped. Its log goes to
/// target/cluster-tests/<name>.log.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(name: &str, kubeconfig: &Path, namespace: &str, env: &[(&str, &str)]) -> Operator {
        Operator::start_on(name, kubeconfig, namespace, env, "127.0.0.1:0")
    }

    /// The same, serving `/metrics` (and the probes) on `http_addr`.
    pub fn start_on(name: &str, kubeconfig: &Path, namespace: &str, env: &[(&str, &str)], http_addr: &str) -> Operator {
        let dir = root().join("target/cluster-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        // SAGA_OPERATOR_BIN runs another build (an older one, to show a test failing before a fix).
        let binary = std::env::var_os("SAGA_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_saga-operator")));
        let child = Command::new(binary)
            .args(["run", "--namespace", namespace, "--http-addr", http_addr])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("LOG_FORMAT", "pretty")
            // OPERATOR_RUST_LOG: more detail, e.g. `info,saga_operator=debug,kube_client=debug`.
            .env("RUST_LOG", std::env::var("OPERATOR_RUST_LOG").unwrap_or_else(|_| "info,saga_operator=debug".into()))
            .env("RESYNC_INTERVAL", "2s")
            .env("SCALE_INTERVAL", "2s")
            .env("CLEANUP_TIMEOUT", "15s")
            // Generous on a loaded 2-core machine (the default is 5 s).
            .env("BROKER_TIMEOUT", "30s")
            .env("POD_NAMESPACE", namespace)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("saga-operator starts");
        Operator { child, log }
    }

    /// SIGKILL, as a crashed or evicted pod.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    /// Kills it; when the test failed, prints the end of its log (the file
    /// is gone with the checkout on CI).
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("---- the last lines of {} ----\n{tail}", self.log.display());
        }
    }
}

/// The status of condition `type_` of a resource as JSON, if any.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// `kubectl get KIND NAME -o json`, or None when it does not exist.
pub fn get(namespace: &str, kind: &str, name: &str) -> Option<Value> {
    let output = tool("kubectl", &["get", kind, name, "-n", namespace, "-o", "json"]);
    output.status.success().then(|| serde_json::from_slice(&output.stdout).unwrap())
}

/// Waits until the SagaPlatform is Ready, TopologyReady and ServicesAvailable
/// with its current generation observed; returns it.
pub async fn wait_ready(namespace: &str, name: &str) -> Value {
    let what = format!("SagaPlatform {namespace}/{name} ready");
    let probe = || async {
        let sp = get(namespace, "sagaplatform", name)?;
        let current = sp["status"]["observedGeneration"] == sp["metadata"]["generation"];
        let all = ["Ready", "TopologyReady", "ServicesAvailable"]
            .iter()
            .all(|t| condition(&sp, t).is_some_and(|c| c["status"] == "True"));
        (current && all).then_some(sp)
    };
    eventually_explained(&what, WAIT, probe, || describe(namespace, name)).await
}

/// The resource's generation and status, and its namespace's Deployments,
/// ReplicaSets and Pods: what a failed wait should show.
pub fn describe(namespace: &str, name: &str) -> String {
    let resource = get(namespace, "sagaplatform", name).map_or_else(
        || "(no such SagaPlatform)".to_owned(),
        |sp| {
            let summary = json!({"generation": sp["metadata"]["generation"], "status": sp["status"]});
            serde_json::to_string_pretty(&summary).unwrap()
        },
    );
    let children = tool("kubectl", &["get", "deployments,replicasets,pods", "-n", namespace, "-o", "wide"]);
    format!("{resource}\n{}{}", String::from_utf8_lossy(&children.stdout), String::from_utf8_lossy(&children.stderr))
}

/// The names of the broker's queues that start with `prefix.` (management API).
pub async fn queues(prefix: &str) -> Vec<String> {
    let response = reqwest::Client::new()
        .get(format!("{MANAGEMENT_URL}/api/queues/%2f?columns=name"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("RabbitMQ management API");
    let all: Vec<Value> = response.error_for_status().unwrap().json().await.unwrap();
    let mut names: Vec<String> = all
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|n| n.starts_with(&format!("{prefix}.")))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Deletes one queue on the broker (management API), as drift.
pub async fn delete_queue(name: &str) {
    let response = reqwest::Client::new()
        .delete(format!("{MANAGEMENT_URL}/api/queues/%2f/{}", name.replace('/', "%2F")))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "delete queue {name}: {}", response.status());
}

/// Empties `queue` (management API), as consumers would.
pub async fn purge_queue(name: &str) {
    let response = reqwest::Client::new()
        .delete(format!("{MANAGEMENT_URL}/api/queues/%2f/{}/contents", name.replace('/', "%2F")))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "purge queue {name}: {}", response.status());
}

/// The reasons of the events about object `name` in `namespace`.
pub fn event_reasons(namespace: &str, name: &str) -> Vec<String> {
    let selector = format!("involvedObject.name={name}");
    let out = kubectl(&["get", "events", "-n", namespace, "--field-selector", &selector, "-o", "json"]);
    let events: Value = serde_json::from_str(&out).unwrap();
    events["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str().map(str::to_owned)).collect()
}

/// Publishes `count` persistent messages to `queue` through the default exchange (management API).
pub async fn publish(queue: &str, count: usize) {
    let client = reqwest::Client::new();
    for i in 0..count {
        let body = json!({"properties": {"delivery_mode": 2}, "routing_key": queue,
                          "payload": format!("backlog {i}"), "payload_encoding": "string"});
        let response = client
            .post(format!("{MANAGEMENT_URL}/api/exchanges/%2f/amq.default/publish"))
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["routed"], true, "published to {queue}");
    }
}

/// `kubectl apply --server-side` of the chart's CRD, then waits until it is Established.
pub fn apply_crd() {
    let crd = root().join("charts/saga-platform/crds/sagaplatform.yaml");
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd.to_str().unwrap()]);
    kubectl(&["wait", "--for=condition=Established", "crd/sagaplatforms.saga.dev", "--timeout=60s"]);
}
