//! `sagactl bench`: a load generator against a running platform.
//!
//! Seeds its own `bench-` products and accounts through the admin API, warms
//! up, then offers load for `--duration` seconds, either at a fixed rate
//! (`--rate`, open loop: latency is honest) or from `--clients` closed-loop
//! clients (max throughput), shows a live progress line, and prints a table
//! (or `--json`) of accepted/s at the HTTP edge, completed sagas/s end to end,
//! latency percentiles from POST to terminal state, outcomes and errors.
//! `--raw` also measures the broker's and the database's ceilings in the same
//! run, so the result can be read against the machine's limits.

mod costs;
mod load;
mod raw;
mod stats;
pub use stats::Report;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use saga_common::topology::QueueType;

use crate::output::Format;
use crate::{GlobalArgs, Result};
use load::{Load, Progress, Schedule};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    duration: f64,
    /// Seconds of unmeasured load first (connections, caches, JIT of the plans).
    #[arg(long, default_value_t = 5.0, value_parser = non_negative_seconds)]
    warmup: f64,
    /// Fixed rate, orders per second (open loop).
    #[arg(long, conflicts_with = "clients", value_parser = positive_rate)]
    rate: Option<f64>,
    /// Closed-loop clients, each placing its next order once the last is
    /// terminal (max throughput) [default: 64 when --rate is not given].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    clients: Option<u16>,
    /// Seconds to wait after the load for orders still in flight.
    #[arg(long, default_value_t = 30.0, value_parser = non_negative_seconds)]
    drain: f64,
    /// Products in the bench catalogue (fewer means hotter rows).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    skus: u16,
    /// Customers (fresh accounts per run).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    customers: u16,
    /// Print the figures as one JSON object on stdout instead of a table
    /// (as `-o json`; `-o yaml` prints them as YAML).
    #[arg(long)]
    json: bool,
    /// Also measure the broker's and the database's raw ceilings first.
    #[arg(long)]
    raw: bool,
    /// Queue type of the broker measurement (--raw): the platform's.
    #[arg(long, env = "QUEUE_TYPE", value_enum, default_value = "quorum")]
    queue_type: QueueType,
    /// PostgreSQL for the database measurement (--raw); the database is
    /// created if missing and only a scratch table is written.
    #[arg(long, env = "BENCH_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/saga_bench")]
    database_url: String,
    /// PostgreSQL server of the platform, read for the per-saga costs
    /// (`pg_stat_database`, `pg_stat_statements`).
    #[arg(long, env = "BENCH_STATS_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    stats_database_url: String,
    /// The platform's databases are `<prefix>_order` etc. (as `sagactl up`).
    #[arg(long, env = "DATABASE_PREFIX", default_value = "saga")]
    database_prefix: String,
}

fn positive_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err("must be a number of seconds in (0, 86400]".into()),
    }
}

fn non_negative_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err("must be a number of seconds in [0, 86400]".into()),
    }
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err("must be orders per second in (0, 100000]".into()),
    }
}

pub async fn run(global: &GlobalArgs, args: &BenchArgs) -> Result<i32> {
    let raw = if args.raw {
        note(global, args, "Measuring the raw ceilings of the broker and the database");
        Some(raw::measure(&global.amqp_url, &args.database_url, args.queue_type).await?)
    } else {
        None
    };

    note(global, args, &format!("Seeding {} bench products and {} bench customers", args.skus, args.customers));
    let workload = load::seed(global, args.skus.into(), args.customers.into()).await?;

    let load = match (args.rate, args.clients) {
        (Some(rate), _) => Load::Rate(rate),
        (None, clients) => Load::Clients(clients.unwrap_or(64).into()),
    };
    let mode = match load {
        Load::Rate(rate) => format!("open loop, {rate} orders/s"),
        Load::Clients(n) => format!("closed loop, {n} clients"),
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_until = measure_from + Duration::from_secs_f64(args.duration);
    let schedule = Schedule {
        start,
        measure_from,
        measure_until,
        give_up_at: measure_until + Duration::from_secs_f64(args.drain),
    };
    note(global, args, &format!("Load: {mode}; warm-up {} s, measured {} s", args.warmup, args.duration));

    let stats = sqlx::PgPool::connect(&args.stats_database_url).await?;
    // Loaded by the server when configured (scripts/lib.sh); else no statement counts.
    let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&stats).await;
    let prefix = args.database_prefix.clone();
    let counters = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = costs::snapshot(&stats, &prefix).await;
        tokio::time::sleep_until(measure_until.into()).await;
        (before, costs::snapshot(&stats, &prefix).await)
    });

    let progress = Arc::new(Progress::default());
    let (bar, ticker) = progress_bar(schedule, progress.clone());
    let recorder = load::drive(workload, load, schedule, progress).await;
    ticker.abort();
    bar.finish_and_clear();

    let (before, after) = counters.await?;
    let mut report = Report::new(mode, measure_until - measure_from, &recorder, raw);
    report.per_saga = costs::per_saga(&before, &after, report.completed);
    if recorder.clock_skew > 0 {
        eprintln!(
            "warning: {} orders carry server timestamps that contradict this machine's clock; \
             their latency was taken from the server's timestamps",
            recorder.clock_skew
        );
    }
    match format(global, args) {
        Format::Json => say!("{}", serde_json::to_string(&report)?),
        Format::Yaml => say!("{}", serde_yaml::to_string(&report)?.trim_end()),
        Format::Table => report.print(),
    }
    Ok(0)
}

/// `--json` is `-o json`.
fn format(global: &GlobalArgs, args: &BenchArgs) -> Format {
    if args.json { Format::Json } else { global.output }
}

/// Progress goes to stderr, so `--json` / `-o json|yaml` output stays clean.
fn note(global: &GlobalArgs, args: &BenchArgs, line: &str) {
    if format(global, args) != Format::Table {
        eprintln!("{line}");
    } else {
        say!("{line}");
    }
}

/// A live line with the rates of the last second; hidden when stderr is not
/// a terminal.
fn progress_bar(schedule: Schedule, progress: Arc<Progress>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let total = (schedule.measure_until - schedule.start).as_millis() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}").expect("valid template").progress_chars("=> "),
    );
    let shown = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let (mut accepted, mut finished) = (0, 0);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let phase = if now < schedule.measure_from {
                "warm-up"
            } else if now < schedule.measure_until {
                "measuring"
            } else {
                "draining"
            };
            let (a, f) = (progress.accepted.load(Ordering::Relaxed), progress.finished.load(Ordering::Relaxed));
            bar.set_position((now - schedule.start).as_millis() as u64);
            bar.set_message(format!(
                "{phase}: accepted {}/s, finished {}/s, in flight {}, errors {}",
                a - accepted,
                f - finished,
                a - f,
                progress.errors.load(Ordering::Relaxed)
            ));
            (accepted, finished) = (a, f);
        }
    });
    (shown, ticker)
}
