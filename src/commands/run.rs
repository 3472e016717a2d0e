//! `veil run`: the service, with its checks at start (database, queue,
//! schema), the pipeline, and the end-of-run report.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::config::RunConfig;
use crate::error::ConfigError;
use crate::keyring as key_sources;
use crate::metrics::{Metrics, ServiceState};
use crate::ops::OpsServer;
use crate::pipeline::{self, PipelineSettings, RunReport};
use crate::postgres::{self, Database};
use crate::report;
use crate::sqs::SqsClient;

/// `veil run`. After a signal or a fatal error, the run has
/// --shutdown-timeout-secs to finish the messages in hand (the supervisor
/// enforces it).
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = RunConfig::from_args(&args)?;
    let report = serve(&config, shutdown).await?;
    if config.pipeline.until_empty {
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
    let keyring = Arc::new(key_sources::load(&config.key, true, &crate::aws::KeyServices).await?);
    // The database first: a refused login or certificate stops veil here,
    // before it touches the queue.
    let mut database = Database::connect(config.database.clone()).await?;
    let endpoint = database.endpoint();
    postgres::log_tls(&config.database, database.client().await?).await;
    let sqs = SqsClient::connect(&config.queue).await?;
    // The first call to the queue itself: a missing queue or a denied
    // permission stops veil here, with its fix, before anything is written.
    let facts = sqs
        .facts()
        .await
        .with_context(|| format!("checking the queue {}", config.queue.url))?;
    if !facts.ledger_days_suffice(config.pipeline.housekeeping.ledger_retention_days) {
        return Err(ledger_retention_too_short(
            config.pipeline.housekeeping.ledger_retention_days,
            &facts,
        )
        .into());
    }
    let max_receives = match config.max_receives {
        0 => None,
        _ if facts.has_redrive_policy => {
            tracing::info!("the queue has a redrive policy; --max-receives is left to it");
            None
        }
        limit => Some(limit),
    };
    let settings = pipeline_settings(config, facts.max_message_bytes, max_receives)?;
    let schema =
        postgres::contract_sql::prepare_schema(database.client().await?, &config.pipeline.plan)
            .await?;
    let created: Vec<&str> = schema
        .tables
        .iter()
        .filter(|(_, change)| *change == postgres::contract_sql::TableChange::Created)
        .map(|(table, _)| table.as_str())
        .collect();
    if config.pipeline.housekeeping_interval.is_some() {
        // Never fatal: a role without the rights parks housekeeping here.
        pipeline::housekeeping_pass(
            database.client().await?,
            &config.pipeline.housekeeping,
            &metrics,
        )
        .await;
    }
    drop(database);
    tracing::info!(
        queue = %config.queue.url,
        database = %endpoint,
        key_id = %keyring.active().id(),
        created_tables = ?created,
        until_empty = config.pipeline.until_empty,
        receivers = config.pipeline.receivers,
        writers = config.pipeline.writers,
        "veil started"
    );
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
        peak_resident_bytes = peak_resident_bytes().unwrap_or(0),
        "veil stopped"
    );
    Ok(report)
}

/// This process's peak resident memory (VmHWM), where the system says it
/// (Linux): the figure to size a container's memory limit from.
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The error for a ledger retention shorter than the queue keeps messages.
pub(super) fn ledger_retention_too_short(days: u32, facts: &crate::sqs::QueueFacts) -> ConfigError {
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

/// The checked settings, with what the queue said of itself: its largest
/// message, and the receive limit (left to a redrive policy when it has
/// one). Receives and batches are sized so the byte bound holds them; a
/// bound too small for one message per receive is refused.
fn pipeline_settings(
    config: &RunConfig,
    max_message_bytes: usize,
    max_receives: Option<u32>,
) -> Result<PipelineSettings, ConfigError> {
    let settings = PipelineSettings {
        // A queue may allow more than SQS's own largest: not believed.
        max_message_bytes: max_message_bytes.min(crate::sqs::SQS_MAX_MESSAGE_BYTES),
        max_receives,
        ..config.pipeline.clone()
    };
    let asked = settings.receive.max_messages as usize;
    let settings = settings.fitted()?;
    let fits = settings.receive.max_messages as usize;
    if fits < asked {
        let budget = settings.budget();
        tracing::warn!(
            batch_size = asked,
            messages_per_receive = fits,
            queue_max_message_bytes = budget.max_message_bytes,
            needed_bytes = budget.needed(asked),
            "each receive asks for fewer messages than --batch-size: that many of the queue's \
             largest messages would not fit --max-in-flight-bytes; raise it to needed_bytes, or \
             lower --receivers"
        );
    }
    Ok(settings)
}
