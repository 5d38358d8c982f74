//! What the load generator records, and the report it prints: counts,
//! rates and HDR latency histograms (microsecond resolution, 3 significant
//! digits).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::raw::RawLimits;

/// Messages one completed saga moves through the broker: three commands
/// (reserve, charge, confirm) and their three replies.
pub const MESSAGES_PER_SAGA: f64 = 6.0;
/// Commits one saga would need with no batching at all: the order's
/// insert, then for each of the three steps the participant's handling and
/// the orchestrator's handling of the reply.
pub const COMMITS_PER_SAGA_UNBATCHED: f64 = 7.0;

/// Everything recorded during a run, for orders placed inside the
/// measurement window (warm-up orders are not counted).
pub struct Recorder {
    /// Intended send time → terminal state (open loop: from the schedule,
    /// so a slow platform cannot hide latency by slowing the generator).
    pub saga: Histogram<u64>,
    /// Round trip of the `POST /api/v1/orders`.
    pub accept: Histogram<u64>,
    pub accepted: u64,
    /// Sagas whose terminal state fell inside the window, by status.
    pub finished_in_window: BTreeMap<String, u64>,
    /// Final status of every order placed inside the window.
    pub outcomes: BTreeMap<String, u64>,
    /// Requests that failed, by kind ("HTTP 503", "transport", ...).
    pub errors: BTreeMap<String, u64>,
    /// Orders placed in the window and still not terminal when the run ended.
    pub unfinished: u64,
    /// Orders whose server timestamps contradict the local clock.
    pub clock_skew: u64,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            saga: histogram(),
            accept: histogram(),
            accepted: 0,
            finished_in_window: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
            unfinished: 0,
            clock_skew: 0,
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 1 h.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(histogram: &mut Histogram<u64>, value: Duration) {
    histogram.saturating_record(value.as_micros().max(1) as u64);
}

/// The figures of one run, as printed and as `--json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub mode: String,
    pub duration_s: f64,
    pub accepted: u64,
    pub accepted_per_s: f64,
    /// Sagas that reached COMPLETED inside the measurement window.
    pub completed: u64,
    pub completed_per_s: f64,
    /// Orders placed in the window that did not complete: FAILED or
    /// CANCELLED, refused at the edge, or unfinished at the end.
    pub failed: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub accept_p50_ms: f64,
    pub accept_p99_ms: f64,
    pub outcomes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub unfinished: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawLimits>,
    /// completed_per_s as a share of the lower infrastructure ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_ceiling: Option<f64>,
    /// What each completed saga cost the machine in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_saga: Option<super::costs::Costs>,
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() { 0.0 } else { histogram.value_at_quantile(quantile) as f64 / 1000.0 }
}

impl Report {
    pub fn new(mode: String, window: Duration, recorder: &Recorder, raw: Option<RawLimits>) -> Self {
        let seconds = window.as_secs_f64();
        let completed = recorder.finished_in_window.get("COMPLETED").copied().unwrap_or(0);
        let not_completed: u64 = recorder.outcomes.iter().filter(|(s, _)| *s != "COMPLETED").map(|(_, n)| n).sum();
        let refused: u64 = recorder.errors.values().sum();
        let completed_per_s = completed as f64 / seconds;
        let ratio_to_ceiling = raw.as_ref().map(|raw| completed_per_s / raw.saga_ceiling_per_s());
        Report {
            mode,
            duration_s: seconds,
            accepted: recorder.accepted,
            accepted_per_s: recorder.accepted as f64 / seconds,
            completed,
            completed_per_s,
            failed: not_completed + refused + recorder.unfinished,
            p50_ms: ms(&recorder.saga, 0.5),
            p90_ms: ms(&recorder.saga, 0.9),
            p99_ms: ms(&recorder.saga, 0.99),
            max_ms: recorder.saga.max() as f64 / 1000.0,
            accept_p50_ms: ms(&recorder.accept, 0.5),
            accept_p99_ms: ms(&recorder.accept, 0.99),
            outcomes: recorder.outcomes.clone(),
            errors: recorder.errors.clone(),
            unfinished: recorder.unfinished,
            raw,
            ratio_to_ceiling,
            per_saga: None,
        }
    }

    pub fn print(&self) {
        let mut table = crate::new_table(vec!["figure", "value"]);
        table.add_row(vec!["load".to_owned(), self.mode.clone()]);
        table.add_row(vec!["measured for".to_owned(), format!("{:.1} s", self.duration_s)]);
        table.add_row(vec![
            "accepted (HTTP 202)".to_owned(),
            format!("{} ({:.1}/s)", self.accepted, self.accepted_per_s),
        ]);
        table.add_row(vec![
            "sagas completed end to end".to_owned(),
            format!("{} ({:.1}/s)", self.completed, self.completed_per_s),
        ]);
        table.add_row(vec![
            "latency POST → terminal".to_owned(),
            format!(
                "p50 {:.1} ms · p90 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
                self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
            ),
        ]);
        table.add_row(vec![
            "POST round trip".to_owned(),
            format!("p50 {:.1} ms · p99 {:.1} ms", self.accept_p50_ms, self.accept_p99_ms),
        ]);
        let outcomes: Vec<String> = self.outcomes.iter().map(|(status, n)| format!("{status} {n}")).collect();
        table.add_row(vec!["outcomes".to_owned(), outcomes.join(" · ")]);
        let mut errors: Vec<String> = self.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        if self.unfinished > 0 {
            errors.push(format!("not terminal at the end {}", self.unfinished));
        }
        table
            .add_row(vec!["errors".to_owned(), if errors.is_empty() { "none".to_owned() } else { errors.join(" · ") }]);
        if let Some(raw) = &self.raw {
            table.add_row(vec![
                "broker ceiling (persistent, confirms)".to_owned(),
                format!("publish {:.0} msg/s · consume {:.0} msg/s", raw.publish_per_s, raw.consume_per_s),
            ]);
            table.add_row(vec![
                "database ceiling (small commits)".to_owned(),
                format!("{:.0} commits/s · p99 {:.1} ms", raw.commits_per_s, raw.commit_p99_ms),
            ]);
            table.add_row(vec![
                "saga ceiling".to_owned(),
                format!(
                    "{:.0}/s (broker {:.0}/s at {MESSAGES_PER_SAGA} messages per saga, database {:.0}/s at \
                     {COMMITS_PER_SAGA_UNBATCHED} unbatched commits per saga)",
                    raw.saga_ceiling_per_s(),
                    raw.broker_saga_ceiling_per_s(),
                    raw.database_saga_ceiling_per_s()
                ),
            ]);
        }
        if let Some(ratio) = self.ratio_to_ceiling {
            table.add_row(vec!["completed / saga ceiling".to_owned(), format!("{:.0} %", ratio * 100.0)]);
        }
        if let Some(costs) = &self.per_saga {
            let statements = costs.statements.map(|s| format!(" · {s:.1} statements")).unwrap_or_default();
            table.add_row(vec![
                "per saga, databases".to_owned(),
                format!("{:.2} commits{statements} · {:.1} rows written", costs.commits, costs.rows_written),
            ]);
            let by: Vec<String> = costs.cpu_ms_by_process.iter().map(|(g, ms)| format!("{g} {ms:.2}")).collect();
            table.add_row(vec![
                "per saga, CPU (every process)".to_owned(),
                format!("{:.2} ms ({}) · machine {:.0} % busy", costs.cpu_ms, by.join(" · "), costs.cpu_busy * 100.0),
            ]);
        }
        say!("{table}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_only_completed_sagas_as_completed() {
        let mut recorder = Recorder::new();
        recorder.accepted = 10;
        recorder.finished_in_window.insert("COMPLETED".into(), 8);
        recorder.finished_in_window.insert("FAILED".into(), 1);
        recorder.outcomes.insert("COMPLETED".into(), 8);
        recorder.outcomes.insert("FAILED".into(), 1);
        recorder.errors.insert("HTTP 503".into(), 2);
        recorder.unfinished = 1;
        for ms in [10, 20, 30, 40, 1000] {
            record(&mut recorder.saga, Duration::from_millis(ms));
        }
        let report = Report::new("test".into(), Duration::from_secs(2), &recorder, None);
        assert_eq!(report.completed, 8);
        assert_eq!(report.completed_per_s, 4.0);
        assert_eq!(report.accepted_per_s, 5.0);
        assert_eq!(report.failed, 1 + 2 + 1);
        assert!((report.p50_ms - 30.0).abs() < 0.1, "{}", report.p50_ms);
        assert!((report.max_ms - 1000.0).abs() < 1.0, "{}", report.max_ms);
        let json = serde_json::to_value(&report).unwrap();
        for key in ["completed_per_s", "accepted_per_s", "p50_ms", "p99_ms", "completed", "failed"] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
    }
}
