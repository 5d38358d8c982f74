//! `sagactl`: the Saga Platform command line.
//!
//! Every setting comes from a flag, its environment variable, the context
//! file (`context`) or its default, in that order; an invalid setting exits
//! with status 2 and one line naming it (see `saga_common::config::parse`).
//! Any other failure exits with status 1. Commands that print data print one
//! structure, as a table, JSON or YAML (`output`).

/// `println!` that ignores write errors: output piped into `head` must not
/// panic (and `up` must still stop its children).
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod client;
mod context;
mod demo;
mod demo_notifications;
mod dlq;
mod orders;
mod output;
mod topology;
mod up;
mod webhooks;

use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use saga_common::component::Component;
use saga_common::config::TopologyArgs;
use schemars::JsonSchema;
use serde::Serialize;

use crate::output::{ColorChoice, Format, Out, Render};

/// The HS256 secret used when `AUTH_JWT_SECRET` is not set. It is public
/// (it is in the source and the README): for local development only, never
/// for a shared or production deployment.
pub const LOCAL_DEV_SECRET: &str = "saga-platform-local-development-secret";

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Every table sagactl prints: one look, one place.
pub fn new_table(header: Vec<&str>) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(header);
    table
}

/// Text that came from outside (messages, orders, events) made safe for a
/// terminal: control characters and bidirectional overrides escaped
/// (`\u{1b}`), at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Parser)]
#[command(
    name = "sagactl",
    version,
    about = "Saga Platform command line: run the platform locally, inspect orders, redrive dead letters, generate load, declare the broker topology, mint tokens"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Settings every subcommand understands (before or after the subcommand).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// RabbitMQ URL.
    #[arg(long, global = true, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Base URL of the order service.
    #[arg(long, global = true, env = "ORDER_URL", default_value = "http://127.0.0.1:8080")]
    pub order_url: String,
    /// Base URL of the payment service.
    #[arg(long, global = true, env = "PAYMENT_URL", default_value = "http://127.0.0.1:8081")]
    pub payment_url: String,
    /// Base URL of the inventory service.
    #[arg(long, global = true, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8082")]
    pub inventory_url: String,
    /// Base URL of the notification service.
    #[arg(long, global = true, env = "NOTIFICATION_URL", default_value = "http://127.0.0.1:8083")]
    pub notification_url: String,
    /// HS256 secret for bearer tokens (at least 32 bytes). The default is a
    /// fixed, public secret for local development only: never use it for a
    /// shared or production deployment.
    #[arg(
        long,
        global = true,
        env = "AUTH_JWT_SECRET",
        hide_env_values = true,
        default_value = LOCAL_DEV_SECRET,
        value_parser = parse_secret
    )]
    pub auth_jwt_secret: String,
    /// Output of the commands that print data: a table for people, or the
    /// same data as JSON or YAML for scripts.
    #[arg(short = 'o', long, global = true, env = "SAGACTL_OUTPUT", value_enum, default_value = "table")]
    pub output: Format,
    /// Colour in tables: auto (only on a terminal, and not when NO_COLOR is
    /// set), always or never.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// Context file (service URLs, token source) [default:
    /// $XDG_CONFIG_HOME/sagactl/config.yaml, else ~/.config/sagactl/config.yaml].
    #[arg(long, global = true, env = "SAGACTL_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Bearer token for the admin calls of `orders` and `sagas` (instead of
    /// minting one with AUTH_JWT_SECRET).
    #[arg(long, global = true, env = "SAGACTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token for the admin calls of `orders` and `sagas`.
    #[arg(long, global = true, env = "SAGACTL_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

impl GlobalArgs {
    /// The base URL of `component`'s API.
    pub fn url(&self, component: Component) -> &str {
        match component {
            Component::Order => &self.order_url,
            Component::Payment => &self.payment_url,
            Component::Inventory => &self.inventory_url,
            Component::Notification => &self.notification_url,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Broker topology (exchanges, queues, bindings) of a platform.
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Print a bearer token (JWT HS256) signed with AUTH_JWT_SECRET.
    Token(TokenArgs),
    /// Run the platform locally: declare the topology, start the three
    /// services, wait until ready, seed demo data; stop them on Ctrl-C/SIGTERM.
    Up(up::UpArgs),
    /// Run the demo scenarios against running services and print the results.
    Demo(demo::DemoArgs),
    /// Generate load against a running platform and report sagas/s and
    /// latency percentiles (optionally next to the broker's and database's
    /// raw ceilings).
    Bench(bench::BenchArgs),
    /// Dead-letter queues: list, replay, purge.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Orders and their saga timelines (through the order API, as admin).
    #[command(subcommand)]
    Orders(orders::OrdersCommand),
    /// Sagas that are taking too long.
    #[command(subcommand)]
    Sagas(orders::SagasCommand),
    /// Notification endpoints (webhooks, e-mail): list, attempts, redeliver.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// The context file and the settings in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completion(CompletionArgs),
    /// Print the JSON Schema of every command's `-o json` output.
    #[command(hide = true)]
    OutputSchema,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Show each setting in effect and where it came from (flag, env,
    /// config, default); secrets are not shown.
    View,
}

#[derive(Debug, Args)]
struct CompletionArgs {
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `sagactl token`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenView {
    pub token: String,
}

impl Render for TokenView {
    fn text(&self) -> String {
        self.token.clone()
    }
}

#[derive(Debug, Subcommand)]
enum TopologyCommand {
    /// Declare the topology on AMQP_URL (idempotent; fails if something
    /// exists with different settings).
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
struct ApplyArgs {
    #[command(flatten)]
    topology: TopologyArgs,
    /// A SagaPlatform resource (YAML, as for `kubectl apply -f`): its
    /// platform name, queue type and retry policy replace the flags above.
    #[arg(short = 'f', long = "filename")]
    file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Subject: the customer id.
    #[arg(long)]
    sub: String,
    /// Add `role: admin` (unlocks the admin routes).
    #[arg(long)]
    admin: bool,
    /// Lifetime of the token.
    #[arg(long, default_value = "24h", value_parser = saga_common::config::parse_duration)]
    ttl: Duration,
}

pub fn parse_secret(value: &str) -> Result<String, String> {
    if value.len() >= 32 {
        Ok(value.to_owned())
    } else {
        Err(format!("must be at least 32 bytes, got {}", value.len()))
    }
}

fn main() {
    let (mut cli, matches): (Cli, _) = saga_common::config::parse_with_matches();
    let context = context::apply(&mut cli.global, &matches).unwrap_or_else(|e| saga_common::config::fail(&e));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the tokio runtime");
    let result = runtime.block_on(run(cli, context));
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}

/// Runs the command; `Ok` carries the exit status.
async fn run(cli: Cli, context: context::Context) -> Result<i32> {
    let global = cli.global;
    let out = Out::new(global.output, global.color);
    match cli.command {
        Command::Topology(TopologyCommand::Apply(args)) => {
            let spec = match &args.file {
                Some(file) => topology::spec_from_resource(file)?,
                None => args.topology.spec(),
            };
            let topology = topology::declare(&global.amqp_url, spec).await?;
            out.print(&topology::TopologyView::new(&topology, &global.amqp_url))?;
            Ok(0)
        }
        Command::Token(args) => {
            if args.sub.is_empty() || args.sub.len() > 255 {
                saga_common::config::fail("invalid value for --sub: use 1-255 characters");
            }
            let token = saga_common::auth::mint(&global.auth_jwt_secret, &args.sub, args.admin, args.ttl);
            out.print(&TokenView { token })?;
            Ok(0)
        }
        Command::Config(ConfigCommand::View) => {
            out.print(&context.view)?;
            Ok(0)
        }
        Command::Completion(args) => {
            let shell = match args.shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "sagactl", &mut std::io::stdout());
            Ok(0)
        }
        Command::OutputSchema => {
            say!("{}", serde_json::to_string_pretty(&output::schemas())?);
            Ok(0)
        }
        Command::Up(args) => up::run(&global, &args).await,
        Command::Demo(args) => demo::run_standalone(&global, out, &args).await,
        Command::Bench(args) => bench::run(&global, &args).await,
        Command::Dlq(command) => dlq::run(&global, out, &command).await,
        Command::Orders(command) => orders::orders(&global, &context.token, out, &command).await,
        Command::Sagas(command) => orders::sagas(&global, &context.token, out, &command).await,
        Command::Webhooks(command) => webhooks::run(&global, &context.token, out, &command).await,
    }
}
