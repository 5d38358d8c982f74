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

use clap::{Args, Subcommand, ValueEnum};
use lapin::Connection;
use saga_common::amqp::{Broker, redact};
use saga_common::dlq::{self, Selection};
use saga_common::topology::{Destination, dlq_name};

use crate::{GlobalArgs, Result, new_table, printable};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum QueueName {
    Order,
    Payment,
    Inventory,
}

impl QueueName {
    fn destination(self) -> Destination {
        match self {
            QueueName::Order => Destination::Order,
            QueueName::Payment => Destination::Payment,
            QueueName::Inventory => Destination::Inventory,
        }
    }
}

#[derive(Debug, Args)]
pub struct Target {
    /// Platform name (prefix of every queue).
    #[arg(long, env = "SAGA_PLATFORM", default_value = "saga")]
    platform: String,
    /// Service whose dead-letter queue to use (repeatable) [default: all three].
    #[arg(long, value_enum)]
    queue: Vec<QueueName>,
}

impl Target {
    fn queues(&self) -> Vec<(Destination, String)> {
        let chosen: BTreeSet<QueueName> = if self.queue.is_empty() {
            [QueueName::Order, QueueName::Payment, QueueName::Inventory].into()
        } else {
            self.queue.iter().copied().collect()
        };
        chosen.into_iter().map(|q| (q.destination(), dlq_name(&self.platform, q.destination()))).collect()
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

pub async fn run(global: &GlobalArgs, command: &DlqCommand) -> Result<i32> {
    let connection = Broker::new(&global.amqp_url, "sagactl")
        .connect_once()
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", redact(&global.amqp_url)))?;
    let result = match command {
        DlqCommand::List(args) => list(&connection, args).await,
        DlqCommand::Replay(args) => replay(&connection, args).await,
        DlqCommand::Purge(args) => purge(&connection, args).await,
    };
    let _ = connection.close(200, "sagactl done".into()).await;
    result
}

async fn list(connection: &Connection, args: &ListArgs) -> Result<i32> {
    let mut table =
        new_table(vec!["queue", "message id", "type", "correlation id", "attempts", "dead-lettered at", "reason"]);
    let mut shown = 0;
    let mut total = 0;
    for (_, queue) in args.target.queues() {
        let (depth, messages) = dlq::browse(connection, &queue, args.limit).await?;
        total += depth;
        for message in messages {
            // Everything shown came from a message: escaped and shortened.
            table.add_row(vec![
                queue.clone(),
                printable(&message.message_id, 64),
                printable(&message.kind, 64),
                printable(&message.correlation_id, 64),
                printable(&message.attempts, 20),
                printable(&message.dead_lettered_at, 40),
                printable(&message.reason, 300),
            ]);
            shown += 1;
        }
    }
    if shown > 0 {
        say!("{table}");
    }
    say!("{shown} shown of {total} dead-lettered messages");
    Ok(0)
}

async fn replay(connection: &Connection, args: &ReplayArgs) -> Result<i32> {
    let platform = &args.target.platform;
    let mut selection = if args.all { Selection::All } else { Selection::Ids(args.id.iter().cloned().collect()) };
    let mut replayed = 0;
    for (destination, queue) in args.target.queues() {
        for id in dlq::replay(connection, platform, destination, &mut selection).await? {
            say!("replayed {id} from {queue} to {}.{}", platform, destination.queue());
            replayed += 1;
        }
    }
    say!("{replayed} messages replayed");
    match selection {
        Selection::Ids(missing) if !missing.is_empty() => {
            let missing: Vec<String> = missing.into_iter().collect();
            eprintln!("error: not found in the selected dead-letter queues: {}", missing.join(", "));
            Ok(1)
        }
        _ => Ok(0),
    }
}

async fn purge(connection: &Connection, args: &PurgeArgs) -> Result<i32> {
    let channel = connection.create_channel().await?;
    let queues = args.target.queues();
    let mut counts = Vec::new();
    for (_, queue) in &queues {
        counts.push((queue.clone(), dlq::depth(&channel, queue).await?));
    }
    let _ = channel.close(200, "counted".into()).await;
    let total: u32 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        say!("nothing to purge");
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
            say!("not purged");
            return Ok(1);
        }
    }
    for (queue, _) in &counts {
        let purged = dlq::purge(connection, queue).await?;
        say!("purged {purged} messages from {queue}");
    }
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
