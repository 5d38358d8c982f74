//! Configuration shared by the service binaries: clap flags with environment
//! fallbacks. Each binary flattens `ServiceArgs` into its own struct.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, ValueEnum};

use crate::component::SECRET_SETTINGS;
use crate::secret::Secret;
use crate::topology::{QueueType, RetryPolicy, TopologySpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL; `amqps://` connects over TLS.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", value_parser = parse_secret_url)]
    pub amqp_url: Secret,
    /// PEM file of the certificate authorities that sign the broker's
    /// certificate (amqps only; without it the system's roots are used).
    #[arg(long, env = "AMQP_TLS_CA_FILE")]
    pub amqp_tls_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub topology: TopologyArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Platform name: prefixes every exchange and queue.
    #[arg(long = "platform", env = "SAGA_PLATFORM", default_value = "saga", value_parser = parse_platform)]
    pub platform: String,
    /// Queue type of every queue the platform declares.
    #[arg(long, env = "QUEUE_TYPE", value_enum, default_value = "quorum")]
    pub queue_type: QueueType,
    /// Deliveries of a failing message (first one included) before it is dead-lettered.
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub retry_max_attempts: u32,
    /// Delay before the second delivery of a failing message.
    #[arg(long, env = "RETRY_INITIAL_DELAY", default_value = "500ms", value_parser = parse_duration)]
    pub retry_initial_delay: Duration,
    /// Factor by which each further delay grows.
    #[arg(long, env = "RETRY_MULTIPLIER", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub retry_multiplier: u32,
}

impl TopologyArgs {
    pub fn spec(&self) -> TopologySpec {
        TopologySpec {
            platform: self.platform.clone(),
            queue_type: self.queue_type,
            retry: RetryPolicy {
                max_attempts: self.retry_max_attempts,
                initial_delay: self.retry_initial_delay,
                multiplier: self.retry_multiplier,
            },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 secret for bearer tokens on /api/v1 (at least 32 bytes).
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub auth_jwt_secret: Option<Secret>,
    /// Tokens must carry this `iss`.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Tokens must carry this audience in `aud`.
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Tokens must carry `iat`, and `exp - iat` may not exceed this.
    #[arg(long, env = "AUTH_MAX_TOKEN_LIFETIME", value_parser = parse_duration)]
    pub auth_max_token_lifetime: Option<Duration>,
    /// Accept requests without a token (every caller an admin). Refused
    /// unless `SAGA_DEV_MODE=true`.
    #[arg(long, env = "AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    pub auth_disabled: bool,
    /// Declares a local development platform: the only one where
    /// `AUTH_DISABLED=true` is allowed.
    #[arg(long, env = "SAGA_DEV_MODE", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    pub dev_mode: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The service's own PostgreSQL database (created if missing). TLS as in
    /// libpq: `sslmode`/`sslrootcert` in the URL or `PGSSLMODE`/`PGSSLROOTCERT`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret_url)]
    pub database_url: Secret,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Database connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Unacknowledged deliveries the broker may push to each consumer.
    #[arg(long, env = "PREFETCH", default_value_t = 256)]
    pub prefetch: u16,
    /// Deliveries handled in one database transaction.
    #[arg(long, env = "CONSUMER_BATCH", default_value_t = 64)]
    pub consumer_batch: usize,
    /// Concurrent consumers of the service's queue. One batching consumer
    /// per replica is fastest for hot rows (no lock waits between batches).
    #[arg(long, env = "CONSUMERS", default_value_t = 1)]
    pub consumers: usize,
    /// An HTTP connection that has not sent a complete request head within
    /// this time (from its start or the end of its previous request) is
    /// closed. This also ends idle keep-alive connections, so the default
    /// stays above the usual proxy upstream idle timeout (60 s).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub http_header_read_timeout: Duration,
    /// A request still running after this long is answered 503 `timeout`
    /// and cancelled. Must exceed the longest long poll (`?wait=`, 30 s).
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "45s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,
    /// Open HTTP connections at most (long polls included); one more is
    /// answered 503 at once and closed.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// Message bodies larger than this (bytes) are dead-lettered unread.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_message_bytes: u32,
    /// Messages the outbox relay publishes per confirmed batch.
    #[arg(long, env = "OUTBOX_BATCH", default_value_t = 500)]
    pub outbox_batch: i64,
}

fn parse_platform(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if valid { Ok(value.to_owned()) } else { Err("use 1-63 lowercase letters, digits or '-'".to_owned()) }
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.len() >= 32 {
        Ok(Secret::new(value))
    } else {
        Err(format!("must be at least 32 bytes, got {}", value.len()))
    }
}

fn parse_secret_url(value: &str) -> Result<Secret, String> {
    if value.contains("://") { Ok(Secret::new(value)) } else { Err("expected a URL (scheme://...)".to_owned()) }
}

pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// Parses the command line; on a bad or missing setting prints one line
/// naming it and exits with status 2. `--help` and `--version` work as usual.
pub fn parse<T: Parser>() -> T {
    parse_with_matches().0
}

/// `parse`, also returning the matches (to ask where a value came from:
/// `ArgMatches::value_source`).
pub fn parse_with_matches<T: Parser>() -> (T, clap::ArgMatches) {
    let parsed = T::command().try_get_matches().and_then(|matches| {
        let args = T::from_arg_matches_mut(&mut matches.clone())?;
        Ok((args, matches))
    });
    match parsed {
        Ok(parsed) => parsed,
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
            _ => fail(&one_line(&error)),
        },
    }
}

/// Exits with status 2 after printing `error: {message}`.
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

fn one_line(error: &clap::Error) -> String {
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    let arg = context(ContextKind::InvalidArg).unwrap_or_default();
    match error.kind() {
        ErrorKind::MissingRequiredArgument => format!("missing required setting {arg}"),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let value = context(ContextKind::InvalidValue).unwrap_or_default();
            let value = if SECRET_SETTINGS.iter().any(|s| arg.contains(s)) {
                "(hidden)".to_owned()
            } else {
                format!("{value:?}")
            };
            let reason = error.source().map(|s| s.to_string()).unwrap_or_else(|| {
                context(ContextKind::ValidValue).map(|v| format!("expected one of: {v}")).unwrap_or_default()
            });
            format!("invalid value {value} for {arg}: {reason}")
        }
        _ => error.to_string().lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_owned(),
    }
}

use std::error::Error as _;
