//! Typed settings: the raw CLI/env values checked once and turned into the
//! objects the rest of veil uses (a Postgres config, a key location, SQS
//! receive parameters). Errors here are configuration errors: exit code 2.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{HousekeepingArgs, KeyArgs, QueueArgs, RunArgs};
use crate::keyring::{KeyLocation, VEIL_KEY_ENV};
use crate::postgres::maintain::HousekeepingPolicy;
use crate::postgres::{DatabaseSettings, Login, SessionLimits};
use crate::sqs::{QueueSettings, ReceiveRequest};

/// The reference environment's database (the default, documented in --help).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@localhost:5432/postgres";

use crate::error::ConfigError;
use crate::pipeline::PipelineSettings;

/// Everything `veil run` needs, checked, in one stage: the pipeline's
/// settings are built here, and only what depends on the queue itself
/// (its largest message, its redrive policy) is settled at start.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The queue and how to reach it.
    pub queue: QueueSettings,
    /// Postgres connection settings (holds the password: never log).
    pub database: DatabaseSettings,
    /// The keyring.
    pub key: KeyLocation,
    /// Where to serve /metrics, /healthz, /readyz.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Rows to show at the end of an --until-empty run.
    pub show_rows: usize,
    /// Deliveries after which a message is quarantined (0: no limit),
    /// before the queue's redrive policy is known.
    pub max_receives: u32,
    /// How the pipeline runs. `max_message_bytes` is SQS's largest until
    /// the queue says its own, and `max_receives` is settled at start.
    pub pipeline: PipelineSettings,
}

/// The plan of `--contract`, checked, or the built-in login contract.
pub fn plan_from_args(
    args: &crate::cli::ContractArgs,
) -> Result<std::sync::Arc<crate::contract::Plan>, ConfigError> {
    Ok(std::sync::Arc::new(match args.contract.as_deref() {
        Some(path) => crate::contract::load(path)?,
        None => crate::contract::builtin_login(),
    }))
}

/// The housekeeping policy of the command line, for the tables of `plan`.
pub fn housekeeping_policy(
    args: &HousekeepingArgs,
    plan: &crate::contract::Plan,
) -> HousekeepingPolicy {
    HousekeepingPolicy {
        ledger_retention_days: args.ledger_retention_days,
        user_logins_retention_months: args.retention_months,
        contract_tables: Vec::new(),
    }
    .with_contracts(plan)
}

impl RunConfig {
    /// Checks the arguments of `veil run`.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let plan = plan_from_args(&args.contracts)?;
        if args.max_in_flight < args.batch_size as u32 {
            return Err(ConfigError(format!(
                "--max-in-flight ({}) must be at least --batch-size ({})",
                args.max_in_flight, args.batch_size
            )));
        }
        use std::io::IsTerminal;
        let session_limits = SessionLimits {
            statement_timeout: Duration::from_millis(args.statement_timeout_ms),
            lock_timeout: Duration::from_millis(args.lock_timeout_ms),
        };
        let pipeline = PipelineSettings {
            receive: ReceiveRequest {
                max_messages: args.batch_size,
                wait_secs: args
                    .wait_secs
                    .unwrap_or(if args.until_empty { 1 } else { 20 }),
                visibility_timeout_secs: args.visibility_timeout_secs,
                message_attributes: plan.reads_message_attributes(),
                first_receive_time: plan.reads_first_receive_time(),
            },
            until_empty: args.until_empty,
            keep_rows: if args.until_empty { args.show_rows } else { 0 },
            mask_mode: args.mask_mode,
            receivers: usize::from(args.receivers),
            writers: usize::from(args.writers),
            max_batch_rows: args.max_batch_rows as usize,
            // Sized with the queue's largest message once it is known
            // (`commands::run`; see `pipeline::Budget`).
            max_batch_bytes: (args.max_in_flight_bytes / 16).max(1),
            max_batch_wait: Duration::from_millis(args.max_batch_wait_ms),
            max_in_flight: args.max_in_flight as usize,
            max_in_flight_bytes: args.max_in_flight_bytes,
            max_message_bytes: crate::sqs::SQS_MAX_MESSAGE_BYTES,
            session_limits,
            write_deadline: session_limits.statement_timeout * 2 + Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
            progress: args.until_empty && !args.quiet && std::io::stderr().is_terminal(),
            cloudwatch_emf_interval: (args.cloudwatch_emf_interval_secs > 0)
                .then(|| Duration::from_secs(args.cloudwatch_emf_interval_secs)),
            queue_depth_interval: (args.queue_depth_interval_secs > 0)
                .then(|| Duration::from_secs(args.queue_depth_interval_secs)),
            housekeeping: housekeeping_policy(&args.housekeeping, &plan),
            housekeeping_interval: (args.housekeeping_interval_secs > 0)
                .then(|| Duration::from_secs(args.housekeeping_interval_secs)),
            max_receives: None,
            plan,
        };
        Ok(RunConfig {
            queue: queue_settings(&args.queue)?,
            database: database_from_args(&args.database)?,
            key: key_location(&args.key)?,
            http_addr: args.http_addr,
            show_rows: args.show_rows,
            max_receives: args.max_receives,
            pipeline,
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

/// The key location: --key-file / VEIL_KEY_FILE, --key-secret-id /
/// VEIL_KEY_SECRET_ID or VEIL_KEY, else the per-user default. More than
/// one is ambiguous, so refused.
pub fn key_location(args: &KeyArgs) -> Result<KeyLocation, ConfigError> {
    // Empty counts as unset: compose passes `VEIL_KEY: ${VEIL_KEY:-}` through.
    let from_env = crate::keyring::env_key().is_some();
    let given = [
        args.key_file
            .is_some()
            .then_some("--key-file/VEIL_KEY_FILE"),
        args.key_secret_id
            .is_some()
            .then_some("--key-secret-id/VEIL_KEY_SECRET_ID"),
        from_env.then_some(VEIL_KEY_ENV),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(ConfigError(format!(
            "the keyring is named twice ({}); use one",
            given.join(" and ")
        )));
    }
    Ok(match (&args.key_file, &args.key_secret_id) {
        (Some(path), _) => KeyLocation::File(path.clone()),
        (_, Some(id)) => KeyLocation::Secret(id.clone()),
        _ if from_env => KeyLocation::Env,
        _ => KeyLocation::Default(default_key_file()?),
    })
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
) -> Result<DatabaseSettings, ConfigError> {
    let settings = crate::postgres::database_config(args.database_url.as_deref(), |name| {
        std::env::var(name).ok()
    })?;
    let login = match (&args.database_secret_id, args.database_iam_auth) {
        (Some(id), _) => Login::secret(id),
        (None, true) => Login::iam(settings.rds_region()),
        (None, false) => Login::Given,
    };
    settings.with_login(login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_key_file_is_used_as_given() {
        let args = KeyArgs {
            key_file: Some(PathBuf::from("/k.json")),
            key_secret_id: None,
        };
        assert_eq!(
            key_location(&args).unwrap(),
            KeyLocation::File("/k.json".into())
        );
    }
}
