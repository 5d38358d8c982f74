//! What sagactl prints. Every command that prints data builds one data
//! structure: `-o table` (the default) renders it for people, `-o json` and
//! `-o yaml` serialize the same structure for scripts, with stable field
//! names. Their JSON Schemas are derived from these types (`schemars`) and
//! committed in `cli/output-schema.json` (a unit test keeps them equal).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use clap::ValueEnum;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tables and a summary line, for people.
    #[default]
    Table,
    /// The same data as JSON (pretty-printed), for scripts.
    Json,
    /// The same data as YAML.
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    Always,
    Never,
}

/// Data a command prints.
pub trait Render: Serialize {
    /// The text for people: tables and summary lines, without colour.
    fn text(&self) -> String;
}

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub format: Format,
    pub color: bool,
}

impl Out {
    pub fn new(format: Format, choice: ColorChoice) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Out { format, color: use_color(choice, no_color, std::io::stdout().is_terminal()) }
    }

    pub fn print<T: Render>(&self, value: &T) -> Result<()> {
        say!("{}", self.render(value)?);
        Ok(())
    }

    pub fn render<T: Render>(&self, value: &T) -> Result<String> {
        Ok(match self.format {
            Format::Table if self.color => paint(&value.text()),
            Format::Table => value.text(),
            Format::Json => serde_json::to_string_pretty(value)?,
            Format::Yaml => serde_yaml::to_string(value)?.trim_end().to_owned(),
        })
    }
}

/// Colour only where a person reads it: `always` and `never` decide;
/// `auto` colours a terminal unless `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn use_color(choice: ColorChoice, no_color: bool, terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && !no_color,
    }
}

const RESET: &str = "\x1b[0m";

/// Order statuses and effects, coloured in rendered text. Applied after the
/// table is laid out, so the escapes do not count towards column widths; a
/// word is coloured only where it stands alone between spaces (a cell of
/// its own), and text from outside never holds an escape (`printable`).
fn paint(text: &str) -> String {
    const WORDS: [(&str, &str); 6] = [
        ("COMPLETED", "\x1b[32m"),
        ("FAILED", "\x1b[31m"),
        ("CANCELLED", "\x1b[35m"),
        ("PENDING", "\x1b[33m"),
        ("applied", "\x1b[32m"),
        ("refused", "\x1b[31m"),
    ];
    let mut out = text.to_owned();
    for (word, colour) in WORDS {
        out = out.replace(&format!(" {word} "), &format!(" {colour}{word}{RESET} "));
    }
    out
}

/// The JSON Schema of every command's `-o json` output, by command.
pub fn schemas() -> BTreeMap<&'static str, schemars::Schema> {
    fn of<T: JsonSchema>() -> schemars::Schema {
        schemars::schema_for!(T)
    }
    BTreeMap::from([
        ("bench", of::<crate::bench::Report>()),
        ("demo", of::<crate::demo::DemoReport>()),
        ("dlq list", of::<crate::dlq::DeadLetterList>()),
        ("dlq purge", of::<crate::dlq::Purged>()),
        ("dlq replay", of::<crate::dlq::Replayed>()),
        ("config view", of::<crate::context::ConfigView>()),
        ("orders compensate", of::<crate::orders::IncidentResult>()),
        ("orders list", of::<crate::orders::OrderList>()),
        ("orders retry", of::<crate::orders::IncidentResult>()),
        ("orders show", of::<crate::orders::OrderDetail>()),
        ("sagas stuck", of::<crate::orders::StuckSagas>()),
        ("token", of::<crate::TokenView>()),
        ("topology apply", of::<crate::topology::TopologyView>()),
        ("webhooks attempts", of::<crate::webhooks::AttemptList>()),
        ("webhooks list", of::<crate::webhooks::EndpointList>()),
        ("webhooks redeliver", of::<crate::webhooks::Redelivered>()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_choice_no_color_and_the_terminal() {
        use ColorChoice::*;
        let cases = [
            (Auto, false, true, true),
            (Auto, true, true, false),
            (Auto, false, false, false),
            (Always, true, false, true),
            (Never, false, true, false),
        ];
        for (choice, no_color, terminal, expected) in cases {
            assert_eq!(use_color(choice, no_color, terminal), expected, "{choice:?} {no_color} {terminal}");
        }
    }

    #[test]
    fn only_whole_cells_are_painted() {
        let painted = paint("│ COMPLETED │ NOT-FAILED-X │ FAILED   │");
        assert_eq!(painted, "│ \x1b[32mCOMPLETED\x1b[0m │ NOT-FAILED-X │ \x1b[31mFAILED\x1b[0m   │");
    }

    fn order(id: &str, status: &str, failure: Option<&str>) -> crate::client::Order {
        let at = |s: &str| Some(chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        crate::client::Order {
            id: id.into(),
            customer_id: Some("alice".into()),
            status: status.into(),
            total_cents: Some(3000),
            failure_reason: failure.map(Into::into),
            created_at: at("2026-12-06T10:00:00Z"),
            updated_at: at("2026-12-06T10:00:02Z"),
        }
    }

    const ID: &str = "0193a1b2-0000-7000-8000-000000000001";

    /// The tables people read, as they look (no colour).
    #[test]
    fn tables() {
        use crate::orders::*;
        let plain = Out { format: Format::Table, color: false };
        let list = OrderList {
            orders: vec![
                order(ID, "PENDING", None),
                order("0193a1b2-0000-7000-8000-000000000002", "FAILED", Some("compensated_by_operator")),
            ],
        };
        insta::assert_snapshot!("orders_list", plain.render(&list).unwrap());
        insta::assert_snapshot!("orders_list_empty", plain.render(&OrderList { orders: vec![] }).unwrap());
        let timeline: Vec<TimelineEntry> = serde_json::from_value(serde_json::json!([
            {"at": "2026-12-06T10:00:00Z", "kind": "order.placed", "detail": {"lines": 1, "customer_id": "alice"}},
            {"at": "2026-12-06T10:00:05Z", "kind": "retry.requested",
             "detail": {"effect": "applied", "by": "oncall-jane", "reason": "payment frozen"}},
        ]))
        .unwrap();
        let detail = OrderDetail { order: order(ID, "PENDING", None), timeline };
        insta::assert_snapshot!("orders_show", plain.render(&detail).unwrap());
        let retried = IncidentResult {
            action: "retry".into(),
            reason: Some("payment frozen".into()),
            order: order(ID, "PENDING", None),
        };
        insta::assert_snapshot!("orders_retry", plain.render(&retried).unwrap());
        let stuck = StuckSagas { older_than_ms: 60_000, sagas: vec![order(ID, "PENDING", None)] };
        insta::assert_snapshot!("sagas_stuck", plain.render(&stuck).unwrap());
        let config = crate::context::ConfigView {
            config_file: "/home/ops/.config/sagactl/config.yaml".into(),
            config_file_found: true,
            settings: vec![
                crate::context::Setting {
                    name: "order_url".into(),
                    value: "http://orders.internal:8080".into(),
                    source: "config".into(),
                },
                crate::context::Setting { name: "output".into(), value: "table".into(), source: "default".into() },
            ],
        };
        insta::assert_snapshot!("config_view", plain.render(&config).unwrap());
        let topology = saga_common::topology::Topology::new(saga_common::topology::TopologySpec {
            platform: "demo".into(),
            queue_type: saga_common::topology::QueueType::Quorum,
            retry: saga_common::topology::RetryPolicy {
                max_attempts: 2,
                initial_delay: std::time::Duration::from_millis(500),
                multiplier: 4,
            },
        });
        let view = crate::topology::TopologyView::new(&topology, "amqp://guest:secret@127.0.0.1:5672/%2f");
        insta::assert_snapshot!("topology_apply", plain.render(&view).unwrap());
    }

    #[test]
    fn json_and_yaml_carry_the_same_data() {
        let list = crate::orders::OrderList { orders: vec![order(ID, "COMPLETED", None)] };
        let json: serde_json::Value =
            serde_json::from_str(&Out { format: Format::Json, color: false }.render(&list).unwrap()).unwrap();
        let yaml: serde_json::Value =
            serde_yaml::from_str(&Out { format: Format::Yaml, color: false }.render(&list).unwrap()).unwrap();
        assert_eq!(json, yaml);
        assert_eq!(json["orders"][0]["status"], "COMPLETED");
        assert_eq!(json["orders"][0]["failure_reason"], serde_json::Value::Null);
        // Colour never reaches data formats.
        let coloured = Out { format: Format::Json, color: true }.render(&list).unwrap();
        assert!(!coloured.contains('\x1b'));
        assert!(Out { format: Format::Table, color: true }.render(&list).unwrap().contains("\x1b[32mCOMPLETED"));
    }

    /// `cli/output-schema.json` is what scripts read; regenerate it with
    /// `cargo run -p sagactl -- output-schema > cli/output-schema.json`.
    #[test]
    fn the_committed_output_schema_is_current() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../output-schema.json")).expect("cli/output-schema.json is JSON");
        let current = serde_json::to_value(schemas()).unwrap();
        assert!(
            committed == current,
            "cli/output-schema.json is stale: run `cargo run -p sagactl -- output-schema > cli/output-schema.json`"
        );
    }
}
