//! `sagactl up`: runs the platform locally as child processes.
//!
//! Declares the topology, starts the three service binaries (each in its own
//! process group, so a terminal Ctrl-C reaches only sagactl, which then stops
//! them in order), waits until every `/readyz` answers 200, seeds the demo
//! data, optionally runs the demo, and supervises the children until
//! Ctrl-C/SIGTERM or until one of them exits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use saga_common::amqp::redact;
use saga_common::component::{Component, settings_env};
use saga_common::config::TopologyArgs;
use saga_common::runtime::termination_signal;
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::demo::{self, Platform};
use crate::{GlobalArgs, LOCAL_DEV_SECRET, Result, new_table};

const READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const LOG_DIR: &str = ".sagactl/logs";
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Run the demo once when the platform is ready.
    #[arg(long)]
    demo: bool,
    /// Directory holding order-service, payment-service and
    /// inventory-service [default: the directory of the sagactl executable].
    #[arg(long, env = "SAGACTL_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// PostgreSQL server URL without a database name; each service uses
    /// <base>/<prefix>_order, <base>/<prefix>_payment and
    /// <base>/<prefix>_inventory (the services create their database if it
    /// is missing).
    #[arg(long, env = "DATABASE_URL_BASE", default_value = "postgres://postgres@127.0.0.1:5432")]
    database_url_base: String,
    /// Prefix of the three database names (see --database-url-base).
    #[arg(long, env = "DATABASE_PREFIX", default_value = "saga")]
    database_prefix: String,
    #[command(flatten)]
    topology: TopologyArgs,
}

/// One service to run, and the base URL it serves.
struct ServiceDef {
    component: Component,
    url: String,
}

/// A started child and where its output goes.
struct Running {
    binary: &'static str,
    child: Child,
    /// `Some` once the child has exited (and was reaped).
    exited: Option<ExitStatus>,
    url: String,
    log: PathBuf,
    /// Size of the log before this run: the tail shown on failure starts here.
    log_start: u64,
}

impl Running {
    /// The exit status, if the child has exited (without blocking).
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    fn tail(&self) -> String {
        log_tail(&self.log, self.log_start, LOG_TAIL_LINES)
    }
}

pub async fn run(global: &GlobalArgs, args: &UpArgs) -> Result<i32> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("cannot tell the directory of the sagactl executable; pass --bin-dir")?,
    };
    let services = Component::ALL.map(|component| ServiceDef { component, url: global.url(component).to_owned() });
    // Check everything that can be checked before starting anything.
    let mut prepared = Vec::new();
    for service in &services {
        let binary = bin_dir.join(service.component.binary());
        if !binary.is_file() {
            return Err(format!(
                "{} not found in {} (build it with `cargo build --bins`, or pass --bin-dir)",
                service.component.binary(),
                bin_dir.display()
            )
            .into());
        }
        let addr = listen_addr(&service.url)
            .map_err(|e| format!("{}: cannot listen on {}: {e}", service.component.binary(), service.url))?;
        if let Err(error) = std::net::TcpListener::bind(addr) {
            return Err(format!(
                "{}: address {addr} is not free ({error}); is the platform already running?",
                service.component.binary()
            )
            .into());
        }
        prepared.push((service, binary, addr));
    }

    let topology = crate::topology::declare(&global.amqp_url, args.topology.spec()).await?;
    say!(
        "Declared the topology of platform {:?} on {}: {} exchanges, {} queues, {} bindings",
        topology.spec.platform,
        redact(&global.amqp_url),
        topology.exchanges.len(),
        topology.queues.len(),
        topology.bindings.len()
    );

    let log_dir = std::env::current_dir()?.join(LOG_DIR);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
    // Keep the logs out of git wherever sagactl is run.
    let _ = std::fs::write(log_dir.parent().unwrap_or(&log_dir).join(".gitignore"), "*\n");

    let mut children: Vec<Running> = Vec::new();
    let mut demo_failed = false;
    let outcome = tokio::select! {
        result = supervise(global, args, &prepared, &log_dir, &mut children, &mut demo_failed) => result,
        _ = termination_signal() => {
            say!("\nStopping the services");
            Ok(())
        }
    };
    if let Err(error) = &outcome {
        eprintln!("error: {error}");
        eprintln!("Stopping the services");
    }
    stop_all(&mut children).await;
    Ok(if outcome.is_err() || demo_failed { 1 } else { 0 })
}

/// Starts the children and supervises them; returns only on a failure to
/// report (the caller stops the children, also on Ctrl-C/SIGTERM).
async fn supervise(
    global: &GlobalArgs,
    args: &UpArgs,
    prepared: &[(&ServiceDef, PathBuf, SocketAddr)],
    log_dir: &Path,
    children: &mut Vec<Running>,
    demo_failed: &mut bool,
) -> Result<()> {
    let spec = args.topology.spec();
    for (service, binary, addr) in prepared {
        let log = log_dir.join(format!("{}.log", service.component.binary()));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let log_start = file.metadata().map(|m| m.len()).unwrap_or(0);
        writeln!(
            file,
            "==== sagactl up: starting {} at {} ====",
            service.component.binary(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )?;
        let stderr = file.try_clone()?;
        let mut command = Command::new(binary);
        command
            .env(
                "DATABASE_URL",
                database_url(&args.database_url_base, &service.component.database(&args.database_prefix)),
            )
            .env("AMQP_URL", &global.amqp_url)
            .env("AUTH_JWT_SECRET", &global.auth_jwt_secret)
            .envs(settings_env(&spec, &addr.to_string()))
            .env("LOG_FORMAT", "json");
        if service.component == Component::Notification && std::env::var_os("WEBHOOK_ALLOW_CIDRS").is_none() {
            // Local development: webhooks may go to receivers on this machine
            // (the demo's among them), which the SSRF rules refuse otherwise.
            command.env("WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8,::1/128");
        }
        if service.component == Component::Order {
            // One origin for the explorer at /ui/: the order service forwards
            // the catalogue and account APIs to their services.
            command
                .env("EXPLORER_INVENTORY_URL", global.inventory_url.trim_end_matches('/'))
                .env("EXPLORER_PAYMENT_URL", global.payment_url.trim_end_matches('/'));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| format!("starting {}: {e}", binary.display()))?;
        say!(
            "Started {} (pid {}) on {addr}, log: {}",
            service.component.binary(),
            child.id().unwrap_or(0),
            log.display()
        );
        children.push(Running {
            binary: service.component.binary(),
            child,
            exited: None,
            url: service.url.clone(),
            log,
            log_start,
        });
    }

    wait_ready(children).await?;

    let platform = Platform::new(global);
    platform.seed().await?;
    print_banner(global, &spec.platform, children);
    say!("Seeded demo data ({})", demo::describe_seed());

    if args.demo {
        say!();
        *demo_failed = !demo::run(&platform, Duration::from_secs(30)).await?;
    }
    // Last, so it is on screen after the demo's output.
    say!("\n{}", explorer_link(global));
    say!("\nThe platform is running. Press Ctrl-C to stop it.");
    loop {
        for running in children.iter_mut() {
            if let Some(exit) = running.poll_exit() {
                return Err(format!(
                    "{} exited unexpectedly ({exit}); last lines of {}:\n{}",
                    running.binary,
                    running.log.display(),
                    running.tail()
                )
                .into());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls every `/readyz` until all answer 200; fails naming the service (and
/// showing its log) if one exits or the deadline passes.
async fn wait_ready(children: &mut [Running]) -> Result<()> {
    say!("Waiting up to {}s for the services to be ready", READY_DEADLINE.as_secs());
    let clients: Vec<Client> = children.iter().map(|r| Client::new(&r.url)).collect();
    let mut ready = vec![false; children.len()];
    let mut last: Vec<String> = vec!["no answer yet".to_owned(); children.len()];
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        for (i, running) in children.iter_mut().enumerate() {
            if let Some(exit) = running.poll_exit() {
                return Err(format!(
                    "{} exited during start-up ({exit}); last lines of {}:\n{}",
                    running.binary,
                    running.log.display(),
                    running.tail()
                )
                .into());
            }
            if ready[i] {
                continue;
            }
            match clients[i].probe("/readyz").await {
                Ok((status, _)) if status.is_success() => {
                    ready[i] = true;
                    say!("  {} is ready", running.binary);
                }
                Ok((status, body)) => last[i] = format!("{status}: {}", body.trim()),
                Err(error) => last[i] = error.to_string(),
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut message = format!("not ready after {}s:", READY_DEADLINE.as_secs());
            for (i, running) in children.iter().enumerate() {
                if !ready[i] {
                    message.push_str(&format!(
                        "\n{} (last /readyz: {}); last lines of {}:\n{}",
                        running.binary,
                        last[i],
                        running.log.display(),
                        running.tail()
                    ));
                }
            }
            return Err(message.into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// SIGTERM to every running child, up to 10 s for all to exit, then SIGKILL.
async fn stop_all(children: &mut [Running]) {
    for running in children.iter_mut() {
        if running.poll_exit().is_none()
            && let Some(pid) = running.child.id()
            && let Err(error) = kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
        {
            eprintln!("  cannot signal {} (pid {pid}): {error}", running.binary);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for running in children.iter_mut() {
        if let Some(status) = running.exited {
            say!("  {} had exited ({status})", running.binary);
            continue;
        }
        match tokio::time::timeout_at(deadline, running.child.wait()).await {
            Ok(Ok(status)) => say!("  stopped {} ({status})", running.binary),
            Ok(Err(error)) => eprintln!("  waiting for {}: {error}", running.binary),
            Err(_) => {
                let _ = running.child.kill().await;
                say!("  killed {} (still running {}s after SIGTERM)", running.binary, STOP_GRACE.as_secs());
            }
        }
    }
}

fn print_banner(global: &GlobalArgs, platform: &str, children: &[Running]) {
    say!("\nSaga Platform {platform:?} is up.");
    let mut table = new_table(vec!["service", "API", "docs", "log"]);
    for running in children {
        let base = running.url.trim_end_matches('/');
        table.add_row(vec![
            running.binary.to_owned(),
            format!("{base}/api/v1"),
            format!("{base}/api/docs"),
            running.log.display().to_string(),
        ]);
    }
    say!("{table}");
    let sagactl = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "sagactl".to_owned());
    if global.auth_jwt_secret == LOCAL_DEV_SECRET {
        say!("Tokens are signed with the local development secret (local use only).");
    }
    say!("Try it:");
    say!("  export TOKEN=$({sagactl} token --sub alice)");
    say!(
        "  curl -s -X POST {}/api/v1/orders -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"items\":[{{\"sku\":\"SKU-1\",\"quantity\":2}}]}}'",
        global.order_url.trim_end_matches('/')
    );
    say!("  admin token: {sagactl} token --sub admin --admin");
}

/// How long the explorer link's development admin token lives.
const EXPLORER_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The explorer's URL with a development admin token in its fragment (the
/// page reads it, keeps it for the tab and removes it from the address bar;
/// a fragment never reaches a server or its logs).
fn explorer_link(global: &GlobalArgs) -> String {
    let token = saga_common::auth::mint(&global.auth_jwt_secret, "admin", true, EXPLORER_TOKEN_TTL);
    format!(
        "Explorer (signed in as a development admin for {} h; anyone with this link is admin):\n  {}/ui/#token={token}",
        EXPLORER_TOKEN_TTL.as_secs() / 3600,
        global.order_url.trim_end_matches('/')
    )
}

/// `<base>/<database>`, keeping any query string of the base.
fn database_url(base: &str, database: &str) -> String {
    let (server, query) = match base.split_once('?') {
        Some((server, query)) => (server, Some(query)),
        None => (base, None),
    };
    let mut url = format!("{}/{database}", server.trim_end_matches('/'));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The listen address for a service URL (`localhost` is 127.0.0.1).
fn listen_addr(url: &str) -> Result<SocketAddr, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let port = parsed.port_or_known_default().ok_or("the URL has no port")?;
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let ip = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| "the host must be an IP address or localhost".to_owned())?
    };
    Ok(SocketAddr::new(ip, port))
}

/// The last `lines` lines written since `start`, indented.
fn log_tail(path: &Path, start: u64, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if tail.is_empty() {
                "    (the log is empty)".to_owned()
            } else {
                tail.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
            }
        }
        Err(error) => format!("    (cannot read the log: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_appends_the_database_and_keeps_the_query() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432", "saga_order"),
            "postgres://postgres@127.0.0.1:5432/saga_order"
        );
        assert_eq!(
            database_url("postgres://u:p@h:5432/?sslmode=disable", "saga_payment"),
            "postgres://u:p@h:5432/saga_payment?sslmode=disable"
        );
    }

    #[test]
    fn listen_addr_from_service_url() {
        assert_eq!(listen_addr("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(listen_addr("http://localhost:8081/").unwrap(), "127.0.0.1:8081".parse().unwrap());
        assert_eq!(listen_addr("http://[::1]:8082").unwrap(), "[::1]:8082".parse().unwrap());
        assert!(listen_addr("http://example.com:80").is_err());
    }

    #[test]
    fn log_tail_starts_at_this_run() {
        let path = std::env::temp_dir().join(format!("sagactl-tail-{}.log", std::process::id()));
        std::fs::write(&path, "old run\n").unwrap();
        let start = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "a\nb\nc").unwrap();
        assert_eq!(log_tail(&path, start, 2), "    b\n    c");
        let _ = std::fs::remove_file(&path);
    }
}
