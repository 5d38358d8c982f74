//! `sagactl dlq list | replay | purge`: the dead-letter queues of a platform.
//! The broker side (browse without consuming, replay exactly once by message
//! id, purge) is `saga_common::dlq`, shared with the order service's admin
//! API; this module parses the command and prints.
//!
//! - `list` browses without consuming.
//! - `replay` moves selected (or all) messages back to the queue they failed on.
//! - `purge` deletes a DLQ's messages, after confirmation.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use lapin::Connection;
use saga_common::amqp::{Broker, redact};
use saga_common::dlq::{self, Selection};
use saga_common::topology::{Destination, dlq_name};

use schemars::JsonSchema;
use serde::Serialize;

use crate::output::{Out, Render};
use crate::{GlobalArgs, Result, new_table, printable};

/// `dlq list`: what was shown, of how many.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeadLetterList {
    pub messages: Vec<DeadLetterView>,
    /// Messages in the selected dead-letter queues (shown or not).
    pub total: u32,
}

/// A dead-lettered message, as `dlq list` shows it (headers as text).
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeadLetterView {
    pub queue: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub correlation_id: String,
    pub attempts: String,
    pub dead_lettered_at: String,
    pub reason: String,
}

impl Render for DeadLetterList {
    fn text(&self) -> String {
        let summary = format!("{} shown of {} dead-lettered messages", self.messages.len(), self.total);
        if self.messages.is_empty() {
            return summary;
        }
        let mut table =
            new_table(vec!["queue", "message id", "type", "correlation id", "attempts", "dead-lettered at", "reason"]);
        for m in &self.messages {
            // Everything shown came from a message: escaped and shortened.
            table.add_row(vec![
                m.queue.clone(),
                printable(&m.message_id, 64),
                printable(&m.kind, 64),
                printable(&m.correlation_id, 64),
                printable(&m.attempts, 20),
                printable(&m.dead_lettered_at, 40),
                printable(&m.reason, 300),
            ]);
        }
        format!("{table}\n{summary}")
    }
}

/// `dlq replay`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Replayed {
    pub replayed: Vec<ReplayedMessage>,
    /// Ids asked for (--id) but not found in the selected dead-letter queues.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReplayedMessage {
    pub message_id: String,
    /// The dead-letter queue it was taken from.
    pub from: String,
    /// The queue it was sent back to.
    pub to: String,
}

impl Render for Replayed {
    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .replayed
            .iter()
            .map(|m| format!("replayed {} from {} to {}", printable(&m.message_id, 64), m.from, m.to))
            .collect();
        lines.push(format!("{} messages replayed", self.replayed.len()));
        lines.join("\n")
    }
}

/// `dlq purge`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Purged {
    pub purged: Vec<PurgedQueue>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PurgedQueue {
    pub queue: String,
    pub messages: u32,
}

impl Render for Purged {
    fn text(&self) -> String {
        if self.purged.is_empty() {
            return "nothing to purge".to_owned();
        }
        self.purged
            .iter()
            .map(|q| format!("purged {} messages from {}", q.messages, q.queue))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show dead-lettered messages: queue, message id, type, correlation id,
    /// attempts and the reason they failed.
    List(ListArgs),
    /// Send selected (--id, repeatable) or all (--all) dead-lettered
    /// messages back to their original queue, exactly once.
    Replay(ReplayArgs),
    /// Delete every message of the selected dead-letter queues.
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
pub struct Target {
    /// Platform name (prefix of every queue).
    #[arg(long, env = "SAGA_PLATFORM", default_value = "saga")]
    platform: String,
    /// Service whose dead-letter queue to use (repeatable) [default: all].
    #[arg(long, value_enum)]
    queue: Vec<Destination>,
}

impl Target {
    fn queues(&self) -> Vec<(Destination, String)> {
        let chosen: BTreeSet<Destination> =
            if self.queue.is_empty() { Destination::ALL.into() } else { self.queue.iter().copied().collect() };
        chosen.into_iter().map(|d| (d, dlq_name(&self.platform, d))).collect()
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// At most this many messages per queue.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
#[group(id = "selection", required = true, multiple = false, args = ["id", "all"])]
pub struct ReplayArgs {
    #[command(flatten)]
    target: Target,
    /// Message id to replay (repeatable).
    #[arg(long)]
    id: Vec<String>,
    /// Replay every message of the selected queues.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    target: Target,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

pub async fn run(global: &GlobalArgs, out: Out, command: &DlqCommand) -> Result<i32> {
    let connection = Broker::new(&global.amqp_url, "sagactl")
        .connect_once()
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", redact(&global.amqp_url)))?;
    let result = match command {
        DlqCommand::List(args) => list(&connection, out, args).await,
        DlqCommand::Replay(args) => replay(&connection, out, args).await,
        DlqCommand::Purge(args) => purge(&connection, out, args).await,
    };
    let _ = connection.close(200, "sagactl done".into()).await;
    result
}

async fn list(connection: &Connection, out: Out, args: &ListArgs) -> Result<i32> {
    let mut messages = Vec::new();
    let mut total = 0;
    for (_, queue) in args.target.queues() {
        let (depth, browsed) = dlq::browse(connection, &queue, args.limit).await?;
        total += depth;
        for message in browsed {
            messages.push(DeadLetterView {
                queue: queue.clone(),
                message_id: message.message_id,
                kind: message.kind,
                correlation_id: message.correlation_id,
                attempts: message.attempts,
                dead_lettered_at: message.dead_lettered_at,
                reason: message.reason,
            });
        }
    }
    out.print(&DeadLetterList { messages, total })?;
    Ok(0)
}

async fn replay(connection: &Connection, out: Out, args: &ReplayArgs) -> Result<i32> {
    let platform = &args.target.platform;
    let mut selection = if args.all { Selection::All } else { Selection::Ids(args.id.iter().cloned().collect()) };
    let mut replayed = Vec::new();
    for (destination, queue) in args.target.queues() {
        for id in dlq::replay(connection, platform, destination, &mut selection).await? {
            replayed.push(ReplayedMessage {
                message_id: id,
                from: queue.clone(),
                to: format!("{platform}.{}", destination.queue()),
            });
        }
    }
    let missing: Vec<String> = match selection {
        Selection::Ids(missing) => missing.into_iter().collect(),
        Selection::All => Vec::new(),
    };
    out.print(&Replayed { replayed, missing: missing.clone() })?;
    if missing.is_empty() {
        Ok(0)
    } else {
        eprintln!("error: not found in the selected dead-letter queues: {}", missing.join(", "));
        Ok(1)
    }
}

async fn purge(connection: &Connection, out: Out, args: &PurgeArgs) -> Result<i32> {
    let channel = connection.create_channel().await?;
    let queues = args.target.queues();
    let mut counts = Vec::new();
    for (_, queue) in &queues {
        counts.push((queue.clone(), dlq::depth(&channel, queue).await?));
    }
    let _ = channel.close(200, "counted".into()).await;
    let total: u32 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        out.print(&Purged { purged: Vec::new() })?;
        return Ok(0);
    }
    if !args.yes {
        let summary: Vec<String> = counts.iter().map(|(q, n)| format!("{q} ({n})")).collect();
        if !std::io::stdin().is_terminal() {
            return Err(
                format!("refusing to purge {} without --yes (stdin is not a terminal)", summary.join(", ")).into()
            );
        }
        print!("Delete {total} dead-lettered messages from {}? Type 'purge' to confirm: ", summary.join(", "));
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "purge" {
            eprintln!("not purged");
            return Ok(1);
        }
    }
    let mut purged = Vec::new();
    for (queue, _) in &counts {
        let messages = dlq::purge(connection, queue).await?;
        purged.push(PurgedQueue { queue: queue.clone(), messages });
    }
    out.print(&Purged { purged })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use crate::printable;

    #[test]
    fn message_text_is_escaped_and_bounded() {
        assert_eq!(printable("plain text", 100), "plain text");
        assert_eq!(printable("a\u{1b}[31mb\u{7}\n", 100), "a\\u{1b}[31mb\\u{7}\\u{a}");
        assert_eq!(printable("x\u{202e}y", 100), "x\\u{202e}y");
        assert_eq!(printable(&"é".repeat(10), 3), "ééé…");
    }
}
