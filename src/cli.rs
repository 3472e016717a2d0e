//! The command line: subcommands and their options, with `--help` text. Raw
//! arguments only; `config` turns them into checked settings.
//!
//! Longer than 500 lines on purpose: it is a declaration, one struct of
//! flags per subcommand and the flag groups they share, whose doc comments
//! are the `--help` users read. Kept in one file so a shared group (the
//! database, the key, the contracts) and every command using it are read
//! together; it holds no logic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::mask::MaskMode;
use crate::sqs::ProtocolChoice;

/// The reference environment's queue (docker compose up).
pub const DEFAULT_QUEUE_URL: &str = "http://localhost:4566/000000000000/login-queue";

/// veil streams user-login events from Amazon SQS into PostgreSQL with the
/// PII masked: device ids and IP addresses become deterministic, keyed,
/// reversible AES-SIV masks, so analysts can find duplicates without seeing
/// the values. Each event is written exactly once; bad input is quarantined.
///
/// With no configuration it talks to the reference environment
/// (LocalStack on localhost:4566, Postgres on localhost:5432).
#[derive(Debug, Parser)]
#[command(name = "veil", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Log format on stderr: text for people, json for log shippers
    /// (CloudWatch, Loki). Levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "VEIL_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// veil's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the queue into Postgres until stopped (SIGINT/SIGTERM finish
    /// the batch in hand, then exit 0), or until it is empty.
    Run(RunArgs),

    /// Serve AWS Lambda's Runtime API: the binary as the bootstrap of a
    /// provided.al2023 function behind an SQS event source mapping (with
    /// ReportBatchItemFailures). Each batch goes through the same
    /// validation, masks, contracts, quarantine and ledger as `veil run`;
    /// the answer lists the records not recorded, which the mapping
    /// retries. Takes veil run's options (VEIL_* variables); those about
    /// receiving and deleting do not apply, and it never creates tables
    /// (run `veil migrate` first). Chosen by itself when
    /// AWS_LAMBDA_RUNTIME_API is set and no subcommand is given.
    Lambda(LambdaArgs),
    /// Turn masks back into values, with an audit record in veil.audit.
    /// Reads masks from stdin (one per line, values printed in the same
    /// order), or runs --sql and opens the masked columns, or opens
    /// quarantined bodies by --quarantine MESSAGE_ID. Needs the key and a
    /// --reason.
    Reveal(RevealArgs),
    /// Manage keyrings: new, rotate, list, retire.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Same as `keys new`: write a new keyring file (mode 0600).
    Keygen(KeysNewArgs),
    /// Re-mask rows of user_logins (and re-seal quarantine bodies) made by
    /// older keys with the active key, in batches. Resumable and safe
    /// beside a running `veil run`; run it after `keys rotate`.
    Rekey(RekeyArgs),
    /// Create user_logins (if missing) and veil's schema, then exit. Lets a
    /// least-privilege pipeline role run without DDL rights.
    Migrate(MigrateArgs),
    /// Check configuration, key, queue (and its protocol), database,
    /// permissions and the table's shape; print what is wrong and how to
    /// fix it. Changes nothing. Exit 0 when all is well, 1 otherwise.
    Doctor(DoctorArgs),
    /// Send generated login events (and a share of junk) to the queue, for
    /// demos, tests and benchmarks. Creates the queue if it is missing.
    Seed(SeedArgs),
    /// Housekeeping, once: create the partitions of the coming days, drop
    /// those past the retention (the ledger after --ledger-retention-days,
    /// a partitioned user_logins after --retention-months). For cron or a
    /// Kubernetes CronJob, as the tables' owner; `veil run` does the same
    /// every --housekeeping-interval-secs. One veil at a time does it.
    Maintain(MaintainArgs),
    /// List the rows that hold one person's value: an IP, a device id or a
    /// user id of user_logins, or with --value a value of a domain or
    /// column in every contract's table; and the quarantined messages that
    /// hold it. Nothing else is revealed: the value is masked under every
    /// key of the keyring (every mask mode) and matched. Audited; --reason
    /// required.
    Find(FindArgs),
    /// Erase one person's data: delete the rows of user_logins that hold an
    /// IP, a device id or a user id (or, with --value, the rows of any
    /// contract's tables that hold a value of a domain or column), and the
    /// quarantined messages whose bodies hold it (opened to check), under
    /// every key of the keyring.
    /// Audited; --reason required; --dry-run counts without deleting.
    Forget(ForgetArgs),
    /// Contracts: any JSON event type, its table and its PII policy in one
    /// YAML file (docs/contracts.md). Show the built-in login contract,
    /// check a file, print its table's DDL or a JSON Schema of its bodies.
    #[command(subcommand)]
    Contract(ContractCommand),
}

/// Which contracts a command runs with.
#[derive(Debug, Clone, Args)]
pub struct ContractArgs {
    /// A contract file (YAML, one or more contracts separated by ---) or a
    /// directory of them (*.yaml, *.yml, in name order). Bodies go to the
    /// first contract whose `match` holds; each lands in its contract's
    /// table. Without it, the built-in login contract applies (user_logins).
    #[arg(long, env = "VEIL_CONTRACT", value_name = "FILE|DIR")]
    pub contract: Option<PathBuf>,
}

/// `veil contract ...`.
#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// Print the built-in login contract (what veil runs with no
    /// --contract), as a starting point for your own.
    Show {
        /// The built-in contract to print: `login`, the only one (and the
        /// default).
        #[arg(default_value = "login")]
        name: String,
    },
    /// Check contracts: the file's shape (with line and column), then
    /// every rule (PII columns without a mask, mask columns too narrow,
    /// sources of the wrong type, routes that overlap). Exit 2 on a
    /// problem, naming the fix.
    Check(ContractArgs),
    /// Print the CREATE TABLE of each contract's table, with the analyst
    /// indexes on its PII columns (what `veil migrate --contract` runs).
    Ddl(ContractArgs),
    /// Print a JSON Schema (draft 2020-12) of the bodies the contracts
    /// accept, for producers.
    Export(ContractExportArgs),
}

/// `veil contract export`.
#[derive(Debug, Clone, Args)]
pub struct ContractExportArgs {
    #[command(flatten)]
    pub contracts: ContractArgs,

    /// Export a JSON Schema of the bodies (the only format so far).
    #[arg(long, required = true)]
    pub json_schema: bool,
}

/// Where the queue is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// SQS queue URL. For a non-AWS host (LocalStack) the endpoint is taken
    /// from the URL; AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL override it.
    /// Region and credentials come from the standard AWS chain (env vars,
    /// profile, web identity, ECS, EC2 instance role); a local endpoint with
    /// no credentials anywhere gets dummy ones.
    #[arg(long, env = "VEIL_QUEUE_URL", default_value = DEFAULT_QUEUE_URL)]
    pub queue_url: String,

    /// SQS wire protocol. auto probes the endpoint: JSON (AWS, LocalStack
    /// 3+) when it speaks it, else query (old LocalStack, as in the
    /// reference image). The choice is logged once.
    #[arg(long, env = "VEIL_SQS_PROTOCOL", value_enum, default_value_t = ProtocolChoice::Auto)]
    pub sqs_protocol: ProtocolChoice,

    /// At start, how long to keep trying an SQS endpoint that refuses
    /// connections, because it may still be starting (LocalStack takes a few
    /// seconds). 0 gives up at once.
    #[arg(long, env = "VEIL_ENDPOINT_WAIT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub endpoint_wait_secs: u64,
}

/// Where the masking keys are. Every command that needs a keyring takes
/// these options and finds the same keyring.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Keyring file (plain, or a KMS envelope made with `keys new
    /// --kms-key-id`). When unset, VEIL_KEY (base64 of a keyring file) is
    /// used if set, else $XDG_DATA_HOME/veil/keyring.json
    /// (~/.local/share/veil/keyring.json), which `veil run` creates on
    /// first use and says so. Back it up: masks cannot be revealed without
    /// it. Keys are never logged.
    #[arg(long, env = "VEIL_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Read the keyring from this AWS Secrets Manager secret (name or ARN)
    /// instead: its SecretString is a keyring file's text, plain or
    /// KMS-enveloped. The endpoint follows AWS_ENDPOINT_URL_SECRETS_MANAGER /
    /// AWS_ENDPOINT_URL.
    #[arg(long, env = "VEIL_KEY_SECRET_ID", value_name = "SECRET")]
    pub key_secret_id: Option<String>,
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL. When unset, the libpq variables PGHOST,
    /// PGPORT, PGUSER, PGPASSWORD and PGDATABASE apply over the default
    /// postgres://postgres:postgres@localhost:5432/postgres. Prefer the
    /// environment to the flag for passwords (the flag shows in `ps`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log in with the host, port, username, password and dbname of this
    /// AWS Secrets Manager secret (name or ARN), in the format RDS writes
    /// for the secrets it manages. Read at start and again once whenever
    /// Postgres refuses the login, as after an RDS rotation. Fields the
    /// secret lacks come from --database-url / the PG variables; TLS
    /// settings always do.
    #[arg(
        long,
        env = "VEIL_DATABASE_SECRET_ID",
        value_name = "SECRET",
        conflicts_with = "database_iam_auth"
    )]
    pub database_secret_id: Option<String>,

    /// Log in with an RDS IAM authentication token instead of a password:
    /// made fresh for each new connection (valid 15 minutes) from the same
    /// AWS credentials as SQS, for the user of --database-url. Needs
    /// sslmode=verify-full with the RDS CA bundle (verify-ca is taken with a
    /// warning; under require a server in the middle would get the token).
    #[arg(long, env = "VEIL_DATABASE_IAM_AUTH")]
    pub database_iam_auth: bool,
}

/// What each invocation of `veil lambda` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LambdaHandlerKind {
    /// Record the batch of an SQS event source mapping.
    Sqs,
    /// One housekeeping pass (`veil maintain`), for a scheduled invocation
    /// as the tables' owner; the event is ignored.
    Maintain,
}

/// Options of `veil lambda`: veil run's, and what an invocation does.
#[derive(Debug, Args)]
pub struct LambdaArgs {
    /// sqs: each invocation records an SQS batch. maintain: each invocation
    /// is one `veil maintain` pass (the stack schedules one daily as the
    /// tables' owner).
    #[arg(long, value_enum, env = "VEIL_LAMBDA_HANDLER", default_value_t = LambdaHandlerKind::Sqs)]
    pub handler: LambdaHandlerKind,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `veil run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How masks are made. siv: AES-SIV, reversible with the key (veil
    /// reveal). hmac: HMAC-SHA256, irreversible; duplicates stay visible
    /// but no one can recover the values. Do not mix modes in one table:
    /// the same value gets different masks in each.
    #[arg(long, env = "VEIL_MASK_MODE", value_enum, default_value_t = MaskMode::Siv)]
    pub mask_mode: MaskMode,

    /// Drain the queue, then exit 0 and print a summary and the rows written.
    #[arg(long)]
    pub until_empty: bool,

    /// With --until-empty: how many of the written rows to print.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub show_rows: usize,

    /// How long a received message stays hidden from other consumers while
    /// veil records it. Must exceed the time to write one batch.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=43_200))]
    pub visibility_timeout_secs: i32,

    /// Long-poll wait of each receive (0-20 s). Default: 20, or 1 with
    /// --until-empty so the run ends promptly once the queue is empty.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=20))]
    pub wait_secs: Option<i32>,

    /// Messages per ReceiveMessage call (1-10, the SQS maximum).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=10))]
    pub batch_size: i32,

    /// Concurrent long-polling receivers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub receivers: u16,

    /// Concurrent batch writers, each with its own Postgres connection.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub writers: u16,

    /// Messages per Postgres transaction, at most.
    #[arg(long, env = "VEIL_MAX_BATCH_ROWS", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_batch_rows: u32,

    /// How long a batch waits for more messages before it is written anyway.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub max_batch_wait_ms: u64,

    /// Most messages held at once (received, not yet deleted), so memory
    /// stays flat however deep the queue is. At least --batch-size.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    /// Most bytes held at once, counting all veil holds: bodies, receipts,
    /// prepared rows, a receive's reply while it is decoded, each writer's
    /// statement buffers, and room reserved for receives under way. Takes
    /// 134217728, 128MiB, 512KiB or 1GiB. A bound too small for one message
    /// of the queue's largest size per receive is refused at start; one too
    /// small for --batch-size of them makes receives ask for fewer (logged,
    /// with the bound that would be needed).
    #[arg(long, default_value = "128MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub max_in_flight_bytes: usize,

    /// Longest a batch statement may run on a writer's session before
    /// Postgres cancels it (statement_timeout); the batch is then retried.
    /// A whole batch write is abandoned after twice this plus 5 s, however
    /// the connection behaves.
    #[arg(long, env = "VEIL_STATEMENT_TIMEOUT_MS", default_value_t = 30_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub statement_timeout_ms: u64,

    /// Longest a batch waits for a lock (lock_timeout), e.g. behind an
    /// operator's ALTER TABLE; the batch is then retried with backoff.
    #[arg(long, env = "VEIL_LOCK_TIMEOUT_MS", default_value_t = 5_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub lock_timeout_ms: u64,

    /// Quarantine a message (reason too_many_receives) once SQS has
    /// delivered it more than this many times without veil recording it,
    /// so a message that keeps failing cannot loop forever. Ignored when
    /// the queue has its own redrive policy (its dead-letter queue takes
    /// over). 0 disables the limit.
    #[arg(long, default_value_t = 10)]
    pub max_receives: u32,

    /// After SIGINT/SIGTERM or a fatal error: how long to finish and commit
    /// the messages in hand and give the rest back before exiting anyway
    /// (exit 1; unrecorded messages then return to the queue when their
    /// visibility timeout ends). Keep it below the orchestrator's grace
    /// period.
    #[arg(long, default_value_t = 20, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout_secs: u64,

    /// Serve /metrics (Prometheus text), /healthz and /readyz on this
    /// address, e.g. 127.0.0.1:9898. Off by default.
    #[arg(long, env = "VEIL_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,

    /// Every this many seconds, write a CloudWatch Embedded Metric Format
    /// line to stdout (namespace veil, dimension Service=veil): the counts
    /// since the last line and the current gauges. CloudWatch Logs turns
    /// them into metrics, with no agent. 0 (the default) writes none.
    #[arg(long, env = "VEIL_CLOUDWATCH_EMF_INTERVAL_SECS", default_value_t = 0, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub cloudwatch_emf_interval_secs: u64,

    /// Every this many seconds, ask SQS how many messages wait in the queue
    /// (GetQueueAttributes) and publish it as veil_queue_messages on
    /// /metrics, so "messages wait but nothing is recorded" is one alert
    /// with no exporter. 0 asks never.
    #[arg(long, env = "VEIL_QUEUE_DEPTH_INTERVAL_SECS", default_value_t = 15, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub queue_depth_interval_secs: u64,

    #[command(flatten)]
    pub housekeeping: HousekeepingArgs,

    /// Every this many seconds (and once at start), do housekeeping: the
    /// partitions of the coming days, dropping those past the retention.
    /// One veil at a time does it; the others skip. Needs the tables'
    /// owner: under a role without those rights, it says so once and
    /// leaves it to `veil maintain`. 0 never.
    #[arg(long, env = "VEIL_HOUSEKEEPING_INTERVAL_SECS", default_value_t = 3600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub housekeeping_interval_secs: u64,

    /// No progress bar (it is shown only with --until-empty on a terminal).
    #[arg(long, short)]
    pub quiet: bool,

    /// Threads that run the pipeline. 1 (the default) runs everything on one
    /// thread, which costs the least CPU per event (about 23 us here, so a
    /// core carries some 40 000 events/s); more threads raise one process's
    /// ceiling at some CPU per event. Running more processes also scales
    /// out.
    #[arg(long, env = "VEIL_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
}

/// Options of `veil reveal`.
#[derive(Debug, Args)]
pub struct RevealArgs {
    #[command(flatten)]
    pub key: KeyArgs,

    /// With a contract, masks open in its reversible domains, and --sql
    /// opens its PII columns (instead of masked_ip and masked_device_id).
    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Why you are revealing PII (a ticket, a legal request). Required;
    /// stored in the audit record.
    #[arg(long)]
    pub reason: String,

    /// Run this read-only query and print its rows with the masks of its
    /// mask columns opened (masked_ip, masked_device_id, and any
    /// --mask-column), e.g. "select * from user_logins where create_date =
    /// current_date". Other columns are printed as they are. A mask that
    /// does not open is shown as it is and reported on stderr.
    #[arg(long, value_name = "QUERY", conflicts_with = "quarantine")]
    pub sql: Option<String>,

    /// With --sql: another column to open masks in (an alias such as
    /// `ip` in "select masked_ip as ip ..."). Repeatable.
    #[arg(long, value_name = "COLUMN", requires = "sql")]
    pub mask_column: Vec<String>,

    /// Print the original bodies of these quarantined messages.
    #[arg(long, value_name = "MESSAGE_ID", num_args = 1..)]
    pub quarantine: Vec<String>,
}

/// `veil keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new keyring file (mode 0600) with one fresh key; never
    /// overwrites. With --kms-key-id, the key material is encrypted under
    /// that AWS KMS key (envelope encryption).
    New(KeysNewArgs),
    /// Add a fresh key to a keyring and make it active. Old keys stay, so
    /// old masks still open; restart `veil run`, then run `veil rekey`.
    Rotate(KeyArgs),
    /// Show key ids, creation times and which key is active (never key
    /// material; a KMS keyring is listed without calling KMS).
    List(KeyArgs),
    /// Remove an old key. Masks it made can never be opened again: run
    /// `veil rekey` first.
    Retire(RetireArgs),
}

/// Options of `veil keys new` and `veil keygen`.
#[derive(Debug, Args)]
pub struct KeysNewArgs {
    /// Where to write the keyring (created with mode 0600; never
    /// overwritten). Default: VEIL_KEY_FILE, else the per-user keyring
    /// that every other command reads ($XDG_DATA_HOME/veil/keyring.json).
    #[arg(
        long,
        visible_alias = "key-file",
        env = "VEIL_KEY_FILE",
        value_name = "FILE"
    )]
    pub out: Option<PathBuf>,

    /// Store the new keyring in this AWS Secrets Manager secret (name or
    /// ARN) instead of a file: the secret must exist and hold no value yet
    /// (the CloudFormation stack makes an empty one). Use with
    /// --kms-key-id, so the secret holds no usable key by itself.
    #[arg(long, value_name = "SECRET", conflicts_with = "out")]
    pub secret_id: Option<String>,

    /// Encrypt the key material under this AWS KMS key (ARN, id or alias).
    /// veil then calls KMS Decrypt once at start-up. The KMS endpoint
    /// follows AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL.
    #[arg(long, value_name = "ARN")]
    pub kms_key_id: Option<String>,
}

/// Options of `veil keys retire`.
#[derive(Debug, Args)]
pub struct RetireArgs {
    #[command(flatten)]
    pub key: KeyArgs,

    /// The id of the key to remove.
    #[arg(long, value_name = "ID")]
    pub key_id: String,

    /// The database whose masks and quarantined bodies are counted first:
    /// retiring a key that still made some would leave them impossible to
    /// reveal, find or forget (`veil rekey` moves them to the active key).
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// With a contract, the masks of every contract's table are counted
    /// (instead of user_logins').
    #[command(flatten)]
    pub contracts: ContractArgs,

    /// Retire the key even though masks or quarantined bodies made by it
    /// remain (or the database cannot be asked): they can then never be
    /// opened again.
    #[arg(long)]
    pub force: bool,
}

/// Options of `veil rekey`.
#[derive(Debug, Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub key: KeyArgs,

    /// With a contract, every AES-SIV column of every contract's table is
    /// re-masked (instead of user_logins' two).
    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Rows per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_rows: i64,
}

/// Options of `veil doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// With a contract, each contract's table is checked against it
    /// (instead of user_logins).
    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Options of `veil migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub contracts: ContractArgs,

    /// Also add the analyst indexes (masked_ip, masked_device_id,
    /// create_date) to an existing user_logins, without blocking writers.
    /// veil adds them by itself only to a table it creates.
    #[arg(long)]
    pub indexes: bool,

    /// Create user_logins partitioned on create_date, by month or by day,
    /// with the contract's columns exactly (only when it is missing; an
    /// existing table is never altered). Housekeeping keeps its partitions;
    /// --retention-months drops old ones.
    #[arg(long, value_enum, value_name = "month|day")]
    pub partition_by: Option<crate::contract::Granularity>,

    #[command(flatten)]
    pub housekeeping: HousekeepingArgs,

    /// The queue whose MessageRetentionPeriod a --ledger-retention-days
    /// below 15 is checked against (as `veil run` and `veil maintain` do).
    #[arg(long, env = "VEIL_QUEUE_URL", default_value = DEFAULT_QUEUE_URL)]
    pub queue_url: String,
}

/// What housekeeping keeps. `veil run`, `veil maintain` and `veil migrate`
/// take these.
#[derive(Debug, Clone, Args)]
pub struct HousekeepingArgs {
    /// Keep ledger entries this many days after their message was sent;
    /// older days are dropped whole. The ledger is what makes a redelivered
    /// message a duplicate, so this must exceed how long the queue keeps a
    /// message (SQS: 14 days at most, hence 15). Shorter values are checked
    /// against the queue's MessageRetentionPeriod.
    #[arg(long, env = "VEIL_LEDGER_RETENTION_DAYS", default_value_t = 15, value_name = "DAYS",
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub ledger_retention_days: u32,

    /// Drop partitions of a partitioned user_logins (veil migrate
    /// --partition-by) once they are older than this many months. Off by
    /// default: rows are kept until you say otherwise. A contract's table
    /// keeps what its contract's `partition.retention_months` says.
    #[arg(long, env = "VEIL_RETENTION_MONTHS", value_name = "MONTHS",
          value_parser = clap::value_parser!(u32).range(1..=1200))]
    pub retention_months: Option<u32>,
}

/// Options of `veil maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    // The contracts whose tables to keep too: each one partitioned on a
    // date (its `partition:`) gets the same care as user_logins, with its
    // contract's `retention_months`.
    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub housekeeping: HousekeepingArgs,

    /// The queue whose MessageRetentionPeriod a --ledger-retention-days
    /// below 15 is checked against.
    #[arg(long, env = "VEIL_QUEUE_URL", default_value = DEFAULT_QUEUE_URL)]
    pub queue_url: String,

    /// When another veil is doing housekeeping, wait up to this many
    /// seconds for it to finish, then do a pass. 0 (the default) does not
    /// wait: veil maintain then exits 75 (EX_TEMPFAIL) having done
    /// nothing, so a scheduler can tell "skipped" from "done" (0) and
    /// "failed" (1).
    #[arg(long, env = "VEIL_MAINTAIN_WAIT_SECS", default_value_t = 0, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub wait_secs: u64,
}

/// The value `find` and `forget` look for: exactly one. `--ip`,
/// `--device-id` and `--user-id` are the built-in login contract's `ip`
/// and `device_id` domains and `user_id` column (`--value ip=...`).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct LookupArgs {
    /// An IP address (any spelling of it: it is put in the canonical form
    /// the pipeline masks).
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,

    /// A device id, exactly as the producer sent it.
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,

    /// A user id (stored as it is, so matched as it is).
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,

    /// A value of a PII domain or a column of the contracts (--contract;
    /// without it, the built-in login contract): NAME=VALUE, where NAME is
    /// a domain (email: every column of that domain, in every contract) or
    /// a column name (user_id). The value is normalized as its columns
    /// normalize it, then masked under every key.
    #[arg(long, value_name = "NAME=VALUE")]
    pub value: Option<String>,
}

/// Options of `veil find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub lookup: LookupArgs,

    /// Why this lookup is needed (a ticket, a case); stored in veil.audit.
    #[arg(long)]
    pub reason: String,

    /// Show at most this many rows (all are counted and audited).
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
}

/// Options of `veil forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub contracts: ContractArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub target: LookupArgs,

    /// Why (a privacy request's reference); stored in veil.audit.
    #[arg(long)]
    pub reason: String,

    /// Count what would be deleted, delete nothing (still audited).
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `veil seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Generate bodies of these contracts (spread over them; routed
    /// contracts get their `match` value) instead of login events.
    /// Columns with a `pattern` need `examples` to draw from.
    #[command(flatten)]
    pub contracts: ContractArgs,

    /// How many messages to send.
    #[arg(long, default_value_t = 100)]
    pub count: usize,

    /// Share of the messages that are junk (not JSON, wrong shape, missing
    /// fields, bad IPs, ...), 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,

    /// Seed for the generator, to send the same events again.
    #[arg(long)]
    pub rng_seed: Option<u64>,
}

/// A size in bytes: a number, optionally with a unit (B, KiB, MiB, GiB; or
/// KB, MB, GB for powers of 1000).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; use e.g. 67108864, 64MiB or 1GiB"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?}; use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_plain_numbers_and_binary_or_decimal_units() {
        assert_eq!(parse_bytes("67108864"), Ok(64 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("2gb"), Ok(2_000_000_000));
        assert!(parse_bytes("64 MeB").is_err());
        assert!(parse_bytes("MiB").is_err());
    }
}
