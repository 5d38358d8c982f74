//! What one saga costs the machine, from its own counters over the measured
//! window: the platform databases' commits and rows written
//! (`pg_stat_database`), their statements (`pg_stat_statements`, when the
//! server loads it), and the CPU time of every process on the machine
//! (`/proc/<pid>/stat`), grouped into PostgreSQL, RabbitMQ, the services, the
//! load generator and the rest.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;

/// Clock ticks per second of `/proc` times (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    commits: i64,
    rows_written: i64,
    statements: Option<i64>,
    /// CPU ticks by process group.
    cpu: BTreeMap<&'static str, u64>,
    /// Busy ticks of the whole machine (`/proc/stat`), and all ticks.
    machine_busy: u64,
    machine_total: u64,
}

/// Reads the counters. `prefix`: the platform's databases are `<prefix>_*`.
pub async fn snapshot(pool: &PgPool, prefix: &str) -> Snapshot {
    let pattern = format!("{prefix}\\_%");
    let (commits, rows_written): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(xact_commit), 0)::int8, COALESCE(sum(tup_inserted + tup_updated + tup_deleted), 0)::int8
         FROM pg_stat_database WHERE datname LIKE $1",
    )
    .bind(&pattern)
    .fetch_one(pool)
    .await
    .unwrap_or_default();
    let statements: Option<i64> = sqlx::query_scalar(
        "SELECT COALESCE(sum(s.calls), 0)::int8 FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid WHERE d.datname LIKE $1",
    )
    .bind(&pattern)
    .fetch_one(pool)
    .await
    .ok();
    let (machine_busy, machine_total) = machine_ticks().unwrap_or_default();
    Snapshot { commits, rows_written, statements, cpu: process_ticks(), machine_busy, machine_total }
}

/// Per completed saga, between two snapshots.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Costs {
    pub commits: f64,
    pub rows_written: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements: Option<f64>,
    /// CPU milliseconds of every process on the machine.
    pub cpu_ms: f64,
    pub cpu_ms_by_process: BTreeMap<&'static str, f64>,
    /// Share of the machine's CPU time that was busy in the window.
    pub cpu_busy: f64,
}

pub fn per_saga(before: &Snapshot, after: &Snapshot, completed: u64) -> Option<Costs> {
    if completed == 0 {
        return None;
    }
    let n = completed as f64;
    let ms = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1000.0 / n;
    let cpu_ms_by_process: BTreeMap<&'static str, f64> = after
        .cpu
        .iter()
        .map(|(group, ticks)| (*group, ms(ticks.saturating_sub(before.cpu.get(group).copied().unwrap_or(0)))))
        .collect();
    let total = after.machine_total.saturating_sub(before.machine_total).max(1);
    Some(Costs {
        commits: (after.commits - before.commits) as f64 / n,
        rows_written: (after.rows_written - before.rows_written) as f64 / n,
        statements: after.statements.zip(before.statements).map(|(a, b)| (a - b) as f64 / n),
        cpu_ms: ms(after.machine_busy.saturating_sub(before.machine_busy)),
        cpu_ms_by_process,
        cpu_busy: after.machine_busy.saturating_sub(before.machine_busy) as f64 / total as f64,
    })
}

/// Busy and total ticks summed over the machine's CPUs (`/proc/stat`),
/// scaled to one CPU's ticks per second like process times.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let total: u64 = fields.iter().take(8).sum();
    Some((total - idle, total))
}

/// utime + stime of every process, by group.
fn process_ticks() -> BTreeMap<&'static str, u64> {
    let mut ticks = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return ticks };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ... : comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
        let (Some(utime), Some(stime)) = (rest.get(11), rest.get(12)) else { continue };
        let used = utime.parse::<u64>().unwrap_or(0) + stime.parse::<u64>().unwrap_or(0);
        *ticks.entry(group(comm)).or_default() += used;
    }
    ticks
}

fn group(comm: &str) -> &'static str {
    match comm {
        "postgres" => "postgresql",
        "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => "rabbitmq",
        // comm is cut to 15 bytes.
        "order-service" | "payment-service" | "inventory-servi" => "services",
        "sagactl" => "load generator",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_differences_per_saga() {
        let before = Snapshot {
            commits: 100,
            rows_written: 1000,
            statements: Some(10),
            cpu: BTreeMap::from([("postgresql", 100), ("services", 50)]),
            machine_busy: 1000,
            machine_total: 4000,
        };
        let after = Snapshot {
            commits: 300,
            rows_written: 3000,
            statements: Some(1010),
            cpu: BTreeMap::from([("postgresql", 300), ("services", 150), ("rabbitmq", 100)]),
            machine_busy: 2000,
            machine_total: 6000,
        };
        let costs = per_saga(&before, &after, 100).unwrap();
        assert_eq!(costs.commits, 2.0);
        assert_eq!(costs.rows_written, 20.0);
        assert_eq!(costs.statements, Some(10.0));
        assert_eq!(costs.cpu_ms, 100.0);
        assert_eq!(costs.cpu_ms_by_process["postgresql"], 20.0);
        assert_eq!(costs.cpu_ms_by_process["rabbitmq"], 10.0);
        assert_eq!(costs.cpu_busy, 0.5);
        assert!(per_saga(&before, &after, 0).is_none());
    }

    #[test]
    fn this_process_is_counted() {
        assert!(!process_ticks().is_empty());
        assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total && total > 0));
    }
}
