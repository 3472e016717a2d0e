//! One function per subcommand: wires configuration, keys, SQS and Postgres
//! together and reports. The work itself lives in the other modules.

pub mod contract;
pub mod doctor;
pub mod keys;
pub mod lookup;
pub mod privacy;
pub mod reveal;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::cli::{MaintainArgs, MigrateArgs, RekeyArgs, RunArgs, SeedArgs};
use crate::config::{database_from_args, key_location, queue_settings, RunConfig};
use crate::error::ConfigError;
use crate::keyring as key_sources;
use crate::metrics::{Metrics, ServiceState};
use crate::ops::OpsServer;
use crate::pipeline::{self, PipelineSettings, RunReport};
use crate::postgres::{self, Database, DatabaseSettings};
use crate::sqs::{SqsClient, SQS_BATCH_LIMIT};
use crate::{report, seed};

/// `veil run`. After a signal or a fatal error, the run has
/// --shutdown-timeout-secs to finish the messages in hand (the supervisor
/// enforces it).
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = RunConfig::from_args(&args)?;
    let report = serve(&config, shutdown).await?;
    if config.until_empty {
        print!("{}", report::render(&report));
    }
    Ok(())
}

/// Runs the service with checked settings until shutdown (or an empty
/// queue) and returns what it did. Tests call this in-process.
pub async fn serve(config: &RunConfig, shutdown: CancellationToken) -> anyhow::Result<RunReport> {
    serve_observed(config, shutdown, Arc::default()).await
}

/// `serve`, with live metrics the caller can watch while it runs.
pub async fn serve_observed(
    config: &RunConfig,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<RunReport> {
    metrics.set_state(ServiceState::Starting);
    let ops = match config.http_addr {
        Some(address) => Some(OpsServer::start(address, metrics.clone()).await?),
        None => None,
    };
    let keyring = Arc::new(key_sources::load(&config.key, true).await?);
    // The database first: a refused login or certificate stops veil here,
    // before it touches the queue.
    let mut database = Database::connect(config.database.clone()).await?;
    let endpoint = database.endpoint();
    log_tls(&config.database, database.client().await?).await;
    let sqs = SqsClient::connect(&config.queue).await?;
    // The first call to the queue itself: a missing queue or a denied
    // permission stops veil here, with its fix, before anything is written.
    let facts = sqs
        .facts()
        .await
        .with_context(|| format!("checking the queue {}", config.queue.url))?;
    if !facts.ledger_days_suffice(config.housekeeping.ledger_retention_days) {
        return Err(
            ledger_retention_too_short(config.housekeeping.ledger_retention_days, &facts).into(),
        );
    }
    let schema = match &config.contracts {
        None => postgres::migrate(database.client().await?, Default::default()).await?,
        Some(plan) => {
            let changes =
                postgres::contract_sql::migrate_contracts(database.client().await?, plan).await?;
            for (table, change) in changes {
                tracing::info!(table = %table, change = ?change, "contract table ready");
            }
            postgres::SchemaReport::default()
        }
    };
    if config.housekeeping_interval.is_some() {
        // Never fatal: a role without the rights parks housekeeping here.
        pipeline::housekeeping_pass(database.client().await?, &config.housekeeping, &metrics).await;
    }
    drop(database);
    let max_receives = match config.max_receives {
        0 => None,
        _ if facts.has_redrive_policy => {
            tracing::info!("the queue has a redrive policy; --max-receives is left to it");
            None
        }
        limit => Some(limit),
    };
    tracing::info!(
        queue = %config.queue.url,
        database = %endpoint,
        key_id = %keyring.active().id(),
        created_user_logins = schema.created_user_logins,
        until_empty = config.until_empty,
        receivers = config.receivers,
        writers = config.writers,
        "veil started"
    );
    let settings = pipeline_settings(config, facts.max_message_bytes, max_receives);
    let report = pipeline::run(
        &sqs,
        config.database.clone(),
        keyring,
        &settings,
        shutdown,
        metrics,
        ops,
    )
    .await?;
    tracing::info!(
        received = report.received,
        written = report.written,
        quarantined = report.quarantined,
        duplicates = report.duplicates,
        batches = report.batches,
        peak_in_flight = report.peak_in_flight,
        peak_in_flight_bytes = report.peak_in_flight_bytes,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "veil stopped"
    );
    Ok(report)
}

/// The error for a ledger retention shorter than the queue keeps messages.
fn ledger_retention_too_short(days: u32, facts: &crate::sqs::QueueFacts) -> ConfigError {
    let retention_secs = facts
        .retention_secs
        .unwrap_or(crate::sqs::SQS_MAX_RETENTION_SECS);
    let needed = (retention_secs + 86_400).div_ceil(86_400);
    ConfigError(format!(
        "--ledger-retention-days {days} is shorter than this queue keeps a message ({} s, plus a day \
         of margin): a message redelivered after its ledger day was dropped would be recorded twice. \
         Use --ledger-retention-days {needed} or more",
        retention_secs
    ))
}

/// Logs once whether the Postgres connection is encrypted, as the server
/// sees it, and how the certificate was checked.
pub async fn log_tls(settings: &DatabaseSettings, client: &tokio_postgres::Client) {
    match postgres::tls_in_use(client).await {
        Ok(Some(tls)) => {
            tracing::info!(tls = %tls, check = %settings.tls.describe(), "Postgres connection encrypted")
        }
        Ok(None) => tracing::warn!(
            sslmode = settings.tls.mode.name(),
            "Postgres connection NOT encrypted: the password and the data travel in clear; set sslmode=verify-full for anything but a local database"
        ),
        Err(error) => tracing::debug!(%error, "could not read pg_stat_ssl"),
    }
}

/// What the pipeline needs of the checked settings and the queue's facts.
fn pipeline_settings(
    config: &RunConfig,
    max_message_bytes: usize,
    max_receives: Option<u32>,
) -> PipelineSettings {
    let limits = config.session_limits;
    PipelineSettings {
        receive: config.receive,
        until_empty: config.until_empty,
        keep_rows: if config.until_empty {
            config.show_rows
        } else {
            0
        },
        mask_mode: config.mask_mode,
        receivers: config.receivers,
        writers: config.writers,
        max_batch_rows: config.max_batch_rows,
        // A batch's bytes are copied into one bind message, outside the
        // bound's count: a sixteenth of the bound keeps that copy small
        // (4 MiB by default; thousands of ordinary events).
        max_batch_bytes: (config.max_in_flight_bytes / 16).max(1),
        max_batch_wait: config.max_batch_wait,
        max_in_flight: config.max_in_flight,
        max_in_flight_bytes: config.max_in_flight_bytes,
        // A queue may allow more than the configured bound was checked for.
        max_message_bytes: max_message_bytes.min(crate::sqs::SQS_MAX_MESSAGE_BYTES),
        session_limits: limits,
        write_deadline: limits.statement_timeout * 2 + Duration::from_secs(5),
        shutdown_timeout: config.shutdown_timeout,
        progress: config.progress,
        cloudwatch_emf_interval: config.cloudwatch_emf_interval,
        queue_depth_interval: config.queue_depth_interval,
        housekeeping: config.housekeeping,
        housekeeping_interval: config.housekeeping_interval,
        max_receives,
        contracts: config.contracts.clone(),
    }
}

/// `veil migrate`: the schema, then a housekeeping pass, so the
/// partitions of the coming days exist before the first run.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let policy = crate::config::housekeeping_policy(&args.housekeeping);
    if policy.ledger_retention_days < 15 {
        confirm_short_retention(&args.queue_url, policy.ledger_retention_days).await?;
    }
    let contracts = crate::config::contracts_from_args(&args.contracts)?;
    let config = database_from_args(&args.database)?;
    let mut database = Database::connect(config.clone()).await?;
    if let Some(plan) = contracts {
        if args.partition_by.is_some() || args.indexes {
            return Err(ConfigError(
                "--partition-by and --indexes apply to user_logins, the built-in login contract's table; \
                 drop them with --contract (contract tables get their indexes when created)"
                    .into(),
            )
            .into());
        }
        return contract::migrate(&mut database, &plan, &policy).await;
    }
    let options = postgres::MigrateOptions {
        partition_user_logins: args.partition_by,
        for_contracts: false,
    };
    let report = postgres::migrate(database.client().await?, options).await?;
    let table = match (report.created_user_logins, report.user_logins_partitioned) {
        (true, None) => "created, with analyst indexes".to_string(),
        (true, Some(granularity)) => format!(
            "created, partitioned by {}, with analyst indexes",
            granularity_name(granularity)
        ),
        (false, None) => "already there".to_string(),
        (false, Some(granularity)) => {
            format!(
                "already there, partitioned by {}",
                granularity_name(granularity)
            )
        }
    };
    println!(
        "schema ready on {} (user_logins {table})",
        database.endpoint()
    );
    if let Some(partition) = &report.upgraded_ledger {
        println!(
            "the ledger is now partitioned by day; its earlier entries are partition {partition}, \
             still checked for redeliveries and dropped once past the retention"
        );
    }
    let client = database.client().await?;
    let lacking = postgres::maintain::missing_rights(client, &policy).await?;
    if lacking.is_empty() {
        let housekeeping = postgres::maintain::maintain(client, &policy, Duration::ZERO).await?;
        println!("{}", postgres::maintain::describe(&housekeeping));
    } else {
        println!(
            "housekeeping not done: role {} lacks {}; run `veil maintain` as {}",
            lacking.role,
            lacking.list(),
            lacking.who_may()
        );
    }
    if args.indexes {
        let created = postgres::create_analyst_indexes(database.client().await?).await?;
        println!("analyst indexes created: {created:?} (any others already existed)");
    }
    Ok(())
}

fn granularity_name(granularity: postgres::partitions::Granularity) -> &'static str {
    match granularity {
        postgres::partitions::Granularity::Month => "month",
        postgres::partitions::Granularity::Day => "day",
    }
}

/// `veil maintain`: one housekeeping pass. Exits 0 when it was done, 1
/// when a step failed (the others were still done), 2 when the role lacks
/// the rights, 75 when another veil held the lock (past `--wait-secs`).
pub async fn maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let policy = crate::config::housekeeping_policy(&args.housekeeping);
    if policy.ledger_retention_days < 15 {
        confirm_short_retention(&args.queue_url, policy.ledger_retention_days).await?;
    }
    let config = database_from_args(&args.database)?;
    let mut database = Database::connect(config.clone()).await?;
    let client = database.client().await?;
    let lacking = postgres::maintain::missing_rights(client, &policy).await?;
    if !lacking.is_empty() {
        return Err(ConfigError(format!(
            "role {} may not do housekeeping: it lacks {}. Run `veil maintain` as {}",
            lacking.role,
            lacking.list(),
            lacking.who_may()
        ))
        .into());
    }
    let started = Instant::now();
    let wait = Duration::from_secs(args.wait_secs);
    let report = postgres::maintain::maintain(client, &policy, wait).await?;
    if report.skipped {
        return Err(crate::error::LockHeld(format!(
            "another veil held the housekeeping lock{}; nothing was done. It is doing the same pass; \
             pass --wait-secs to wait for it",
            if args.wait_secs > 0 {
                format!(" for more than {} s", args.wait_secs)
            } else {
                String::new()
            }
        ))
        .into());
    }
    println!(
        "{} on {} in {:.2} s",
        postgres::maintain::describe(&report),
        config.describe(),
        started.elapsed().as_secs_f64()
    );
    for name in &report.created {
        println!("  created {name}");
    }
    for (name, rows) in &report.dropped {
        println!("  dropped {name} (about {rows} rows)");
    }
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} housekeeping step(s) failed (the others were done): {}",
            report.failures.len(),
            report.failures.join("; ")
        );
    }
    Ok(())
}

/// A ledger retention under SQS's 14 days is safe only for a queue that
/// keeps messages for less: ask the queue.
async fn confirm_short_retention(queue_url: &str, days: u32) -> anyhow::Result<()> {
    let queue_args = crate::cli::QueueArgs {
        queue_url: queue_url.to_string(),
        sqs_protocol: crate::sqs::ProtocolChoice::Auto,
        endpoint_wait_secs: 0,
    };
    let facts = async {
        let sqs = SqsClient::connect(&queue_settings(&queue_args)?).await?;
        Ok::<_, anyhow::Error>(sqs.facts().await?)
    }
    .await
    .map_err(|error| {
        ConfigError(format!(
            "--ledger-retention-days {days} is below SQS's 14-day maximum, and the queue {queue_url} could not \
             be asked how long it keeps messages ({}). Use 15 or more, or give the right --queue-url",
            crate::error::error_chain(&error)
        ))
    })?;
    if !facts.ledger_days_suffice(days) {
        return Err(ledger_retention_too_short(days, &facts).into());
    }
    Ok(())
}

/// `veil rekey`.
pub async fn rekey(args: RekeyArgs) -> anyhow::Result<()> {
    let tables = match crate::config::contracts_from_args(&args.contracts)? {
        Some(plan) => crate::postgres::rekey::MaskedTable::of_plan(&plan),
        None => crate::postgres::rekey::MaskedTable::login(),
    };
    let keyring = key_sources::load(&key_location(&args.key)?, false).await?;
    let config = database_from_args(&args.database)?;
    let mut database = Database::connect(config).await?;
    let client = database.client().await?;
    let started = Instant::now();
    let report =
        crate::postgres::rekey::rekey(client, &keyring, &tables, args.batch_rows, |progress| {
            tracing::info!(
                rows_scanned = progress.rows_scanned,
                rows_rekeyed = progress.rows_rekeyed,
                quarantine_resealed = progress.quarantine_resealed,
                "rekey progress"
            );
        })
        .await?;
    let active = keyring.active().id();
    println!(
        "rekeyed {} of {} rows read and {} quarantine bodies to key {active} in {:.2} s",
        report.rows_rekeyed,
        report.rows_scanned,
        report.quarantine_resealed,
        started.elapsed().as_secs_f64()
    );
    if report.irreversible_skipped > 0 {
        println!(
            "{} irreversible (hmac1) masks of older keys were left as they are: they cannot be re-masked",
            report.irreversible_skipped
        );
    }
    let old: Vec<&str> = keyring
        .keys()
        .map(|key| key.id())
        .filter(|id| *id != active)
        .collect();
    let retirable: Vec<&str> = old
        .iter()
        .copied()
        .filter(|id| !report.keys_in_use.contains(*id))
        .collect();
    let still_used: Vec<&String> = report
        .keys_in_use
        .iter()
        .filter(|id| *id != active)
        .collect();
    if !still_used.is_empty() {
        println!("still in use by some masks: {still_used:?} (a pipeline running with the old keyring? restart it and rekey again)");
    }
    if !retirable.is_empty() {
        println!("no longer used, can be retired with `veil keys retire`: {retirable:?}");
    }
    Ok(())
}

/// `veil seed`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        return Err(ConfigError("--bad-ratio must be between 0.0 and 1.0".into()).into());
    }
    let rng_seed = args.rng_seed.unwrap_or_else(rand::random);
    let messages = match crate::config::contracts_from_args(&args.contracts)? {
        Some(plan) => seed::generate_by_contract(&plan, args.count, args.bad_ratio, rng_seed)?,
        None => seed::generate(args.count, args.bad_ratio, rng_seed),
    };
    let queue = queue_settings(&args.queue)?;
    let sqs = SqsClient::connect(&queue).await?;
    sqs.create_queue()
        .await
        .context("creating the queue (if missing)")?;
    let junk = messages.iter().filter(|m| !m.valid).count();
    let started = Instant::now();
    let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
    // Eight senders, each with its share of calls of ten.
    let shares = bodies.chunks(SQS_BATCH_LIMIT * bodies.len().div_ceil(SQS_BATCH_LIMIT * 8).max(1));
    let sent: usize = stream::iter(shares)
        .map(|share| {
            let sqs = sqs.clone();
            async move { sqs.send(share).await }
        })
        .buffer_unordered(8)
        .try_fold(0, |total, sent| async move { Ok(total + sent) })
        .await
        .context("sending messages")?;
    println!(
        "sent {sent} messages ({junk} junk) to {} in {:.2} s (rng seed {rng_seed})",
        args.queue.queue_url,
        started.elapsed().as_secs_f64()
    );
    if sent != messages.len() {
        anyhow::bail!("SQS accepted only {sent} of {} messages", messages.len());
    }
    Ok(())
}
