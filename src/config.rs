//! Typed settings: the raw CLI/env values checked once and turned into the
//! objects the rest of veil uses (a Postgres config, a key location, SQS
//! receive parameters). Errors here are configuration errors: exit code 2.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::cli::{KeyArgs, QueueArgs, RunArgs};
use crate::sqs::{QueueSettings, ReceiveRequest};

/// The reference environment's database (the default, documented in --help).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@localhost:5432/postgres";

use crate::error::ConfigError;

/// Where the keyring comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// `VEIL_KEY`: base64 of a keyring file, injected by the platform.
    Env,
    /// Named by --key-file / VEIL_KEY_FILE: must exist.
    File(PathBuf),
    /// The per-user default; `run` creates it when missing.
    Default(PathBuf),
}

impl KeyLocation {
    /// The file's path, unless the keyring comes from the environment.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KeyLocation::Env => None,
            KeyLocation::File(path) | KeyLocation::Default(path) => Some(path),
        }
    }

    /// Where the keyring is, for messages.
    pub fn describe(&self) -> String {
        match self {
            KeyLocation::Env => format!("${}", crate::keys::VEIL_KEY_ENV),
            KeyLocation::File(path) | KeyLocation::Default(path) => path.display().to_string(),
        }
    }
}

/// Everything `veil run` needs, checked.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The queue and how to reach it.
    pub queue: QueueSettings,
    /// Postgres connection settings (holds the password: never log).
    pub database: tokio_postgres::Config,
    /// The keyring.
    pub key: KeyLocation,
    /// How masks are made.
    pub mask_mode: crate::mask::MaskMode,
    /// Receive parameters.
    pub receive: ReceiveRequest,
    /// Stop once the queue is empty.
    pub until_empty: bool,
    /// Rows to show at the end of an --until-empty run.
    pub show_rows: usize,
    /// Concurrent receivers.
    pub receivers: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// Messages per Postgres transaction, at most.
    pub max_batch_rows: usize,
    /// Longest wait for a batch to fill.
    pub max_batch_wait: std::time::Duration,
    /// Most messages held at once.
    pub max_in_flight: usize,
    /// Show a progress bar (until-empty, on a terminal, not --quiet).
    pub progress: bool,
    /// Deliveries after which a message is quarantined (0: no limit).
    pub max_receives: u32,
    /// Longest wait for a clean shutdown after a signal.
    pub shutdown_timeout: std::time::Duration,
    /// Where to serve /metrics, /healthz, /readyz.
    pub http_addr: Option<std::net::SocketAddr>,
}

impl RunConfig {
    /// Checks the arguments of `veil run`.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        if args.max_in_flight < args.batch_size as u32 {
            return Err(ConfigError(format!(
                "--max-in-flight ({}) must be at least --batch-size ({})",
                args.max_in_flight, args.batch_size
            )));
        }
        use std::io::IsTerminal;
        Ok(RunConfig {
            receivers: usize::from(args.receivers),
            writers: usize::from(args.writers),
            max_batch_rows: args.max_batch_rows as usize,
            max_batch_wait: std::time::Duration::from_millis(args.max_batch_wait_ms),
            max_in_flight: args.max_in_flight as usize,
            progress: args.until_empty && !args.quiet && std::io::stderr().is_terminal(),
            max_receives: args.max_receives,
            shutdown_timeout: std::time::Duration::from_secs(args.shutdown_timeout_secs),
            http_addr: args.http_addr,
            queue: queue_settings(&args.queue)?,
            database: database_from_args(&args.database)?,
            mask_mode: args.mask_mode,
            key: key_location(&args.key)?,
            receive: ReceiveRequest {
                max_messages: args.batch_size,
                wait_secs: args
                    .wait_secs
                    .unwrap_or(if args.until_empty { 1 } else { 20 }),
                visibility_timeout_secs: args.visibility_timeout_secs,
            },
            until_empty: args.until_empty,
            show_rows: args.show_rows,
        })
    }
}

/// The queue options, checked: a malformed queue URL (or endpoint
/// variable) is refused here, before anything connects.
pub fn queue_settings(args: &QueueArgs) -> Result<QueueSettings, ConfigError> {
    crate::sqs::resolve_endpoint(&args.queue_url)?;
    Ok(QueueSettings {
        url: args.queue_url.clone(),
        protocol: args.sqs_protocol,
        endpoint_wait: Duration::from_secs(args.endpoint_wait_secs),
    })
}

/// The key location: --key-file / VEIL_KEY_FILE, else VEIL_KEY, else the
/// per-user default. Both a file and VEIL_KEY is ambiguous, so refused.
pub fn key_location(args: &KeyArgs) -> Result<KeyLocation, ConfigError> {
    let from_env = std::env::var_os(crate::keys::VEIL_KEY_ENV).is_some();
    match (&args.key_file, from_env) {
        (Some(_), true) => Err(ConfigError(format!(
            "both {} and --key-file/VEIL_KEY_FILE are set; use one",
            crate::keys::VEIL_KEY_ENV
        ))),
        (Some(path), false) => Ok(KeyLocation::File(path.clone())),
        (None, true) => Ok(KeyLocation::Env),
        (None, false) => Ok(KeyLocation::Default(default_key_file()?)),
    }
}

/// The per-user keyring every command defaults to:
/// `$XDG_DATA_HOME/veil/keyring.json` (~/.local/share/veil/keyring.json).
pub fn default_key_file() -> Result<PathBuf, ConfigError> {
    let data_dir = dirs::data_dir().ok_or_else(|| {
        ConfigError(
            "no per-user data directory (HOME unset?); pass --key-file or set VEIL_KEY_FILE".into(),
        )
    })?;
    Ok(data_dir.join("veil").join("keyring.json"))
}

/// Postgres settings from the `--database-url` argument and environment.
pub fn database_from_args(
    args: &crate::cli::DatabaseArgs,
) -> Result<tokio_postgres::Config, ConfigError> {
    database_config(args.database_url.as_deref(), |name| {
        std::env::var(name).ok()
    })
}

/// Postgres settings: the URL if given, else the default with the libpq
/// variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) applied.
pub fn database_config(
    url: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<tokio_postgres::Config, ConfigError> {
    let mut config =
        match url {
            Some(url) => tokio_postgres::Config::from_str(url).map_err(|e| {
                // The URL may hold a password: describe the problem, not the URL.
                ConfigError(format!(
                    "DATABASE_URL / --database-url is not a valid Postgres URL: {e}"
                ))
            })?,
            None => {
                // The default URL's parts, each overridable by its libpq variable.
                let var = |name: &str, default: &str| env(name).unwrap_or_else(|| default.into());
                let port = var("PGPORT", "5432");
                let mut config = tokio_postgres::Config::new();
                config
                    .host(var("PGHOST", "localhost"))
                    .port(port.parse().map_err(|_| {
                        ConfigError(format!("PGPORT {port:?} is not a port number"))
                    })?)
                    .user(var("PGUSER", "postgres"))
                    .password(var("PGPASSWORD", "postgres"))
                    .dbname(var("PGDATABASE", "postgres"));
                config
            }
        };
    config.application_name("veil");
    config.connect_timeout(crate::postgres::CONNECT_TIMEOUT);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn default_database_is_the_reference_one() {
        let config = database_config(None, env_of(&[])).unwrap();
        assert_eq!(
            crate::postgres::describe(&config),
            "localhost:5432/postgres as postgres"
        );
        assert_eq!(config.get_password(), Some(&b"postgres"[..]));
    }

    #[test]
    fn libpq_variables_override_the_default() {
        let env = env_of(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "veil"),
            ("PGDATABASE", "events"),
        ]);
        let config = database_config(None, env).unwrap();
        assert_eq!(
            crate::postgres::describe(&config),
            "db.internal:6543/events as veil"
        );
    }

    #[test]
    fn explicit_url_wins_over_libpq_variables() {
        let config =
            database_config(Some("postgres://a@h:1/d"), env_of(&[("PGHOST", "other")])).unwrap();
        assert_eq!(crate::postgres::describe(&config), "h:1/d as a");
    }

    #[test]
    fn bad_database_url_error_does_not_echo_the_password() {
        let error = database_config(Some("postgres://u:hunter2@h:notaport/d"), env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn explicit_key_file_is_used_as_given() {
        let args = KeyArgs {
            key_file: Some(PathBuf::from("/k.json")),
        };
        assert_eq!(
            key_location(&args).unwrap(),
            KeyLocation::File("/k.json".into())
        );
    }
}
