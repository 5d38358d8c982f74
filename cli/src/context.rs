//! The context file: the service URLs, the broker and where the bearer token
//! comes from, so neither people nor scripts repeat them on every command.
//!
//! It is `$XDG_CONFIG_HOME/sagactl/config.yaml` (`~/.config/sagactl/config.yaml`
//! when `XDG_CONFIG_HOME` is unset), or the file `--config` / `SAGACTL_CONFIG`
//! names. Each setting is taken from the first of: its flag, its environment
//! variable, the context file, the default. A missing default file is no
//! error; a missing named file, YAML that does not parse, an unknown key or
//! an invalid value is, naming the file and the key.

use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use saga_common::amqp::redact;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::output::{Format, Render};
use crate::{GlobalArgs, LOCAL_DEV_SECRET, new_table, printable};

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub order_url: Option<String>,
    pub payment_url: Option<String>,
    pub inventory_url: Option<String>,
    pub notification_url: Option<String>,
    pub amqp_url: Option<String>,
    /// HS256 secret to mint tokens with (at least 32 bytes).
    pub auth_jwt_secret: Option<String>,
    /// Output format: table, json or yaml.
    pub output: Option<Format>,
    /// The bearer token of the admin calls (`orders`, `sagas`).
    pub token: Option<TokenConfig>,
}

/// Where the token comes from: exactly one of the three.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A bearer token, as is.
    pub value: Option<String>,
    /// A file holding one (white space around it ignored); `~/` is the home
    /// folder, a relative path is relative to the context file.
    pub file: Option<PathBuf>,
    /// Mint an admin token with `auth_jwt_secret` whose `sub` is this (the
    /// name incident actions are recorded under).
    pub mint_as: Option<String>,
}

/// The token of the admin API calls, as resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Value(String),
    File(PathBuf),
    Mint { sub: String },
}

/// Who the admin calls are made as when nothing else is set.
pub const DEFAULT_SUB: &str = "sagactl";

impl Token {
    /// The bearer token itself.
    pub fn bearer(&self, secret: &str) -> crate::Result<String> {
        match self {
            Token::Value(token) => Ok(token.clone()),
            Token::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!("the token file {} is empty", path.display()).into());
                }
                Ok(token.to_owned())
            }
            Token::Mint { sub } => Ok(saga_common::auth::mint(secret, sub, true, crate::orders::TOKEN_TTL)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Token::Value(_) => "a literal token (hidden)".to_owned(),
            Token::File(path) => format!("the file {}", path.display()),
            Token::Mint { sub } => format!("minted as admin, sub {sub:?}, with auth_jwt_secret"),
        }
    }
}

/// One setting and where its value came from.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Setting {
    pub name: String,
    /// The value; secrets are never shown.
    pub value: String,
    /// flag, env, config or default.
    pub source: String,
}

/// `sagactl config view`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConfigView {
    /// The context file sagactl looks at.
    pub config_file: String,
    /// Whether it exists (and was read).
    pub config_file_found: bool,
    pub settings: Vec<Setting>,
}

impl Render for ConfigView {
    fn text(&self) -> String {
        let mut table = new_table(vec!["setting", "value", "source"]);
        for setting in &self.settings {
            table.add_row(vec![setting.name.clone(), printable(&setting.value, 200), setting.source.clone()]);
        }
        let found = if self.config_file_found { "" } else { " (not found: defaults apply)" };
        format!("{table}\ncontext file: {}{found}", self.config_file)
    }
}

/// The settings after the context file was applied.
#[derive(Debug, Clone)]
pub struct Context {
    pub token: Token,
    pub view: ConfigView,
}

/// The default place of the context file.
pub fn default_path(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match (xdg_config_home.filter(|v| !v.is_empty()), home.filter(|v| !v.is_empty())) {
        (Some(xdg), _) => Some(Path::new(xdg).join("sagactl/config.yaml")),
        (None, Some(home)) => Some(Path::new(home).join(".config/sagactl/config.yaml")),
        (None, None) => None,
    }
}

fn source_name(source: Option<ValueSource>) -> &'static str {
    match source {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "env",
        _ => "default",
    }
}

/// Reads the context file and fills in every setting its flag and
/// environment variable left at the default. Errors name the file and key.
pub fn apply(global: &mut GlobalArgs, matches: &ArgMatches) -> Result<Context, String> {
    let env = |name: &str| std::env::var(name).ok();
    let named = matches.value_source("config").is_some_and(|s| s != ValueSource::DefaultValue);
    let path = match &global.config {
        Some(path) => Some(path.clone()),
        None => default_path(env("XDG_CONFIG_HOME").as_deref(), env("HOME").as_deref()),
    };
    let file = match &path {
        Some(path) => read(path, named)?,
        None => None,
    };
    let found = file.is_some();
    let file = file.unwrap_or_default();
    let shown = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(no HOME: none)".to_owned());
    let bad = |key: &str, why: String| format!("invalid value for {key} in {shown}: {why}");

    for (id, value) in [
        ("order_url", &file.order_url),
        ("payment_url", &file.payment_url),
        ("inventory_url", &file.inventory_url),
        ("notification_url", &file.notification_url),
    ] {
        if let Some(url) = value
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(bad(id, "expected an http:// or https:// URL".to_owned()));
        }
    }
    if let Some(url) = &file.amqp_url
        && !url.contains("://")
    {
        return Err(bad("amqp_url", "expected a URL (amqp://...)".to_owned()));
    }
    if let Some(secret) = &file.auth_jwt_secret {
        crate::parse_secret(secret).map_err(|why| bad("auth_jwt_secret", why))?;
    }
    let mut settings = Vec::new();
    let mut setting = |name: &str, value: String, source: &str| {
        settings.push(Setting { name: name.to_owned(), value, source: source.to_owned() })
    };
    let source = take(matches, "order_url", &mut global.order_url, file.order_url.as_ref());
    setting("order_url", global.order_url.clone(), source);
    let source = take(matches, "payment_url", &mut global.payment_url, file.payment_url.as_ref());
    setting("payment_url", global.payment_url.clone(), source);
    let source = take(matches, "inventory_url", &mut global.inventory_url, file.inventory_url.as_ref());
    setting("inventory_url", global.inventory_url.clone(), source);
    let source = take(matches, "notification_url", &mut global.notification_url, file.notification_url.as_ref());
    setting("notification_url", global.notification_url.clone(), source);
    let source = take(matches, "amqp_url", &mut global.amqp_url, file.amqp_url.as_ref());
    setting("amqp_url", redact(&global.amqp_url), source);
    let source = take(matches, "auth_jwt_secret", &mut global.auth_jwt_secret, file.auth_jwt_secret.as_ref());
    let shown_secret =
        if global.auth_jwt_secret == LOCAL_DEV_SECRET { "(the public local development secret)" } else { "(hidden)" };
    setting("auth_jwt_secret", shown_secret.to_owned(), source);
    let output_source = matches.value_source("output");
    let output = match file.output {
        Some(format) if output_source.is_none() || output_source == Some(ValueSource::DefaultValue) => {
            global.output = format;
            "config"
        }
        _ => source_name(output_source),
    };
    setting("output", format!("{:?}", global.output).to_lowercase(), output);

    let base = path.as_deref().and_then(Path::parent).unwrap_or(Path::new("."));
    let (token, source) = token(global, matches, file.token.as_ref(), base).map_err(|why| bad("token", why))?;
    setting("token", token.describe(), source);
    let view = ConfigView { config_file: shown, config_file_found: found, settings };
    Ok(Context { token, view })
}

/// The value clap resolved (flag, env or default), unless clap fell back
/// to the default and the file has one; returns where it came from.
fn take(matches: &ArgMatches, id: &str, slot: &mut String, from_file: Option<&String>) -> &'static str {
    let source = matches.value_source(id);
    match from_file {
        Some(value) if source.is_none() || source == Some(ValueSource::DefaultValue) => {
            *slot = value.clone();
            "config"
        }
        _ => source_name(source),
    }
}

/// Reads and parses the file; `None` if it does not exist and was not named.
fn read(path: &Path, named: bool) -> Result<Option<ConfigFile>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => return Err(format!("cannot read the context file {}: {e}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Some(ConfigFile::default()));
    }
    serde_yaml::from_str(&text).map(Some).map_err(|e| format!("invalid context file {}: {e}", path.display()))
}

fn expand(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    if path.is_relative() { base.join(path) } else { path.to_owned() }
}

/// The token by precedence: `--token` / `--token-file` flags, then
/// `SAGACTL_TOKEN` / `SAGACTL_TOKEN_FILE`, then the file's `token`, then a
/// token minted as `sagactl`.
fn token(
    global: &GlobalArgs,
    matches: &ArgMatches,
    from_file: Option<&TokenConfig>,
    base: &Path,
) -> Result<(Token, &'static str), String> {
    let rank = |id: &str| match matches.value_source(id) {
        Some(ValueSource::CommandLine) => 2,
        Some(ValueSource::EnvVariable) => 1,
        _ => 0,
    };
    let literal =
        global.token.clone().map(|t| (rank("token"), Token::Value(t), source_name(matches.value_source("token"))));
    let file = global
        .token_file
        .clone()
        .map(|f| (rank("token_file"), Token::File(f), source_name(matches.value_source("token_file"))));
    // The higher rank wins; a literal token wins a tie.
    let chosen = match (literal, file) {
        (Some(l), Some(f)) => Some(if f.0 > l.0 { f } else { l }),
        (l, f) => l.or(f),
    };
    if let Some((_, token, source)) = chosen {
        return Ok((token, source));
    }
    if let Some(config) = from_file {
        let token = match (&config.value, &config.file, &config.mint_as) {
            (Some(value), None, None) if !value.trim().is_empty() => Token::Value(value.trim().to_owned()),
            (None, Some(file), None) => Token::File(expand(file, base)),
            (None, None, Some(sub)) if !sub.is_empty() && sub.len() <= 255 => Token::Mint { sub: sub.clone() },
            _ => return Err("give exactly one of value, file or mint_as (a non-empty one)".to_owned()),
        };
        return Ok((token, "config"));
    }
    Ok((Token::Mint { sub: DEFAULT_SUB.to_owned() }, "default"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_path_follows_xdg() {
        assert_eq!(default_path(Some("/x"), Some("/home/a")), Some(PathBuf::from("/x/sagactl/config.yaml")));
        assert_eq!(default_path(Some(""), Some("/home/a")), Some(PathBuf::from("/home/a/.config/sagactl/config.yaml")));
        assert_eq!(default_path(None, None), None);
    }

    #[test]
    fn the_file_is_strict() {
        let parse = |text: &str| serde_yaml::from_str::<ConfigFile>(text);
        let file = parse("order_url: http://o:1\ntoken:\n  file: ~/t\noutput: json\n").unwrap();
        assert_eq!(file.order_url.as_deref(), Some("http://o:1"));
        assert_eq!(file.output, Some(Format::Json));
        assert_eq!(file.token.unwrap().file, Some(PathBuf::from("~/t")));
        assert!(parse("order_ulr: http://o:1\n").unwrap_err().to_string().contains("unknown field `order_ulr`"));
        assert!(parse("output: xml\n").is_err());
        assert!(parse("token:\n  secret: x\n").is_err());
    }
}
