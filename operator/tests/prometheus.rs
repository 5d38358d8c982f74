//! A real Prometheus scrapes a running platform under load, and every query
//! of the chart's Grafana dashboard returns data through Prometheus's HTTP
//! API: no panel is left empty because a metric name drifted.
//!
//! The platform: the three services started by `sagactl up` on a platform,
//! databases and ports of their own, and the operator (a local process, as
//! the chart's ServiceAccount, on the control plane of `scripts/cluster.sh`)
//! reconciling a `SagaPlatform` for the same broker names. Prometheus is the
//! one `scripts/prometheus-build.sh` builds from the official Go module, with
//! a generated scrape configuration on a temporary directory and a free port.
//! The load: `sagactl bench`. The queries are read from
//! `charts/saga-platform/files/dashboard.json` itself, never listed here.

#[allow(dead_code)] // shared with cluster.rs, which uses the rest
mod cluster_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    child: Mutex<Child>,
    what: &'static str,
}

impl Process {
    fn start(what: &'static str, command: &mut Command, log: &Path) -> Process {
        let file = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Process { child: Mutex::new(child), what }
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    fn assert_running(&self, log: &Path) {
        if let Some(status) = self.exited() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{} exited ({status}):\n{text}", self.what);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
        // sagactl up stops its services within 10 s of a SIGTERM.
        for _ in 0..150 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Every query of the dashboard: (panel title, expression), as Grafana would
/// send it for `namespace`, with `$__rate_interval` as `rate_interval`.
fn dashboard_queries(namespace: &str, rate_interval: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("charts/saga-platform/files/dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr.replace("$namespace", namespace).replace("$__rate_interval", rate_interval);
            assert!(!expr.contains('$'), "a variable this test does not know: {expr}");
            queries.push((panel["title"].as_str().unwrap_or_default().to_owned(), expr));
        }
    }
    assert!(queries.len() >= 20, "only {} queries in the dashboard", queries.len());
    queries
}

/// The dashboard's `namespace` variable: `label_values(METRIC, namespace)`.
fn namespace_variable_metric() -> String {
    let text = std::fs::read_to_string(root().join("charts/saga-platform/files/dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let variable = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "namespace")
        .expect("a namespace variable");
    let query = variable["query"]["query"].as_str().unwrap();
    let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(", namespace)")).expect(query);
    inner.to_owned()
}

/// The result of an instant query, or why there is none.
async fn query(http: &reqwest::Client, prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let response = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("Prometheus refused the query: {body}"));
    }
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Series whose value is a number (histogram_quantile over no observations gives NaN).
fn finite(result: &[Value]) -> usize {
    result
        .iter()
        .filter(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(f64::is_finite))
        .count()
}

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

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_platform_under_load() {
    let prometheus_bin = root().join("prometheus/bin/prometheus");
    assert!(prometheus_bin.exists(), "{} is missing: run scripts/prometheus-build.sh", prometheus_bin.display());
    let debug = root().join("target/debug");
    let sagactl = debug.join("sagactl");
    assert!(sagactl.exists(), "{} is missing: cargo build --workspace --bins", sagactl.display());
    let work = root().join("target/prometheus-tests").join(unique("scrape"));
    std::fs::create_dir_all(&work).unwrap();
    let http = reqwest::Client::new();

    // The operator, on the control plane, for the broker names of the services below.
    let ns = Namespace::create("prom").await;
    let release = unique("sp");
    install_chart(&release, &ns.name, &[]);
    let kubeconfig = service_account_kubeconfig(&ns.name, &service_account(&ns.name, &release));
    let operator_port = free_port();
    let operator_addr = format!("127.0.0.1:{operator_port}");
    let _operator = Operator::start_on(&format!("{}-operator", ns.name), &kubeconfig, &ns.name, &[], &operator_addr);
    let platform = unique("prom");
    let mut sp = example("sagaplatform-minimal.yaml").remove(0);
    sp["metadata"]["name"] = json!("scraped");
    sp["spec"]["platform"] = json!(platform);
    sp["spec"]["broker"]["managementUrl"] = json!(MANAGEMENT_URL);
    sp["spec"]["deletionPolicy"] = json!("Delete");
    let mut documents = local_secrets();
    documents.push(sp);
    kubectl_apply(&ns.name, &documents).unwrap();
    wait_ready(&ns.name, "scraped").await;

    // The services, on a platform of their own.
    let database_prefix = platform.replace('-', "_");
    let _leftovers = Leftovers { platform: platform.clone(), database_prefix: database_prefix.clone() };
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let urls = ports.map(|port| format!("http://127.0.0.1:{port}"));
    let service_args = |command: &mut Command| {
        command
            .args(["--order-url", &urls[0], "--payment-url", &urls[1], "--inventory-url", &urls[2]])
            .args(["--notification-url", &urls[3]])
            .args(["--database-prefix", &database_prefix])
            .env("SAGACTL_BIN_DIR", &debug)
            .current_dir(&work);
    };
    let mut up = Command::new(&sagactl);
    up.args(["up", "--platform", &platform]);
    service_args(&mut up);
    let up_log = work.join("sagactl-up.log");
    let services = Process::start("sagactl up", &mut up, &up_log);
    eventually("the four services ready", WAIT, || async {
        services.assert_running(&up_log);
        for url in &urls {
            let ready = http.get(format!("{url}/readyz")).send().await.ok()?;
            ready.status().is_success().then_some(())?;
        }
        Some(())
    })
    .await;

    // Prometheus, scraping the services and the operator every second, with
    // the namespace label a Kubernetes scrape gives them.
    let jobs = [
        ("order", ports[0]),
        ("payment", ports[1]),
        ("inventory", ports[2]),
        ("notification", ports[3]),
        ("operator", operator_port),
    ];
    let scrape_configs: Vec<Value> = jobs
        .iter()
        .map(|(job, port)| {
            json!({
                "job_name": job,
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [format!("127.0.0.1:{port}")], "labels": {"namespace": ns.name}}],
            })
        })
        .collect();
    let config =
        json!({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": scrape_configs});
    let config_file = work.join("prometheus.yml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let prometheus_port = free_port();
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let prometheus_log = work.join("prometheus.log");
    let server = Process::start(
        "prometheus",
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", work.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}")),
        &prometheus_log,
    );
    eventually("every target scraped", WAIT, || async {
        server.assert_running(&prometheus_log);
        let up = query(&http, &prometheus, "up == 1").await.ok()?;
        (up.len() == jobs.len()).then_some(())
    })
    .await;

    // The load.
    let mut bench = Command::new(&sagactl);
    bench.args(["bench", "--duration", "15", "--warmup", "1", "--rate", "20", "--drain", "20", "--customers", "32"]);
    service_args(&mut bench);
    let bench_log = work.join("sagactl-bench.log");
    let bench = Process::start("sagactl bench", &mut bench, &bench_log);
    let finished = eventually("sagactl bench done", Duration::from_secs(180), || async { bench.exited() }).await;
    let bench_text = std::fs::read_to_string(&bench_log).unwrap_or_default();
    assert!(finished.success(), "sagactl bench failed:\n{bench_text}");
    println!("{bench_text}");

    // Every query of the dashboard, as Grafana would send it.
    let variable = namespace_variable_metric();
    eventually(&format!("namespace {} among label_values({variable}, namespace)", ns.name), WAIT, || async {
        let result = query(&http, &prometheus, &format!("count by (namespace) ({variable})")).await.ok()?;
        result.iter().any(|s| s["metric"]["namespace"] == ns.name.as_str()).then_some(())
    })
    .await;
    let queries = dashboard_queries(&ns.name, "1m");
    for (title, expr) in &queries {
        let result = eventually(&format!("data for panel {title:?}: {expr}"), WAIT, || async {
            let result = query(&http, &prometheus, expr).await.unwrap_or_else(|e| panic!("{expr}: {e}"));
            (finite(&result) > 0).then_some(result)
        })
        .await;
        println!("{:>3} series  {title}: {expr}", result.len());
    }
    println!("all {} dashboard queries return data", queries.len());

    drop(bench);
    drop(server);
    drop(services);
    kubectl(&["delete", "sp", "scraped", "-n", &ns.name, "--wait", "--timeout=60s"]);
    let _ = std::fs::remove_dir_all(&work);
}

/// What the test leaves on the shared broker and database server, removed
/// when dropped, also after a failure: the platform's queues and the three
/// databases. Declared before the processes, so it runs after they stopped.
struct Leftovers {
    platform: String,
    database_prefix: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let platform = self.platform.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                for queue in queues(&platform).await {
                    delete_queue(&queue).await;
                }
            })
        })
        .join();
        for service in ["order", "payment", "inventory", "notification"] {
            let _ = Command::new("psql")
                .args([&format!("{PG_BASE}/postgres"), "-XAtqc"])
                .arg(format!("DROP DATABASE IF EXISTS {}_{service} WITH (FORCE)", self.database_prefix))
                .stdout(Stdio::null())
                .status();
        }
    }
}
