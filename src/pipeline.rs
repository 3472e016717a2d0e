//! The pipeline: receive a batch from SQS, parse and mask each message,
//! record the batch in one Postgres transaction, and only then delete the
//! messages from the queue. Shutdown is a parameter: when it fires, the
//! batch in hand is finished and the loop ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::event::{self, RejectReason};
use crate::mask::{Field, Keyring, MaskMode};
use crate::postgres::{
    record_batch, BatchOutcome, Database, MaskedRow, Prepared, QuarantineEntry, Record, WriteError,
};
use crate::sqs::{QueueMessage, ReceiveRequest, SqsClient, SqsError, SQS_BATCH_LIMIT};

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Parameters of each ReceiveMessage.
    pub receive: ReceiveRequest,
    /// Stop once a receive comes back empty and the queue reports no
    /// visible or in-flight messages.
    pub until_empty: bool,
    /// How many written rows to keep for the final report.
    pub keep_rows: usize,
    /// AES-SIV (reversible) or HMAC (irreversible) masks.
    pub mask_mode: MaskMode,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Messages received from SQS (redeliveries included).
    pub received: u64,
    /// Rows written to user_logins.
    pub written: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Quarantined messages by reason code.
    pub quarantined_by_reason: BTreeMap<&'static str, u64>,
    /// Messages skipped because they were already recorded.
    pub duplicates: u64,
    /// Messages deleted from the queue.
    pub deleted: u64,
    /// Deletes SQS refused (those messages come back and are skipped).
    pub delete_failures: u64,
    /// Batches committed.
    pub batches: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time from the start until the last batch was recorded and deleted
    /// (excludes the final empty polls of an --until-empty run).
    pub busy: Duration,
    /// The first `keep_rows` rows written.
    pub sample_rows: Vec<MaskedRow>,
}

impl RunReport {
    fn absorb(&mut self, outcome: &BatchOutcome, keep_rows: usize) {
        self.batches += 1;
        self.written += outcome.written.len() as u64;
        self.quarantined += outcome.quarantined.len() as u64;
        self.duplicates += outcome.duplicates as u64;
        for reason in &outcome.quarantined {
            *self.quarantined_by_reason.entry(reason).or_default() += 1;
        }
        let room = keep_rows.saturating_sub(self.sample_rows.len());
        self.sample_rows
            .extend(outcome.written.iter().take(room).cloned());
    }

    /// Messages handled per second until the last batch was done.
    pub fn rate_per_sec(&self) -> f64 {
        let secs = self.busy.as_secs_f64();
        if secs > 0.0 {
            self.received as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs until `shutdown` fires (or the queue is empty, with `until_empty`).
pub async fn run(
    sqs: &SqsClient,
    database: &mut Database,
    keyring: &Keyring,
    settings: &PipelineSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let mut report = RunReport::default();
    let mut sqs_backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = sqs.receive(settings.receive) => received,
        };
        let messages = match received {
            Ok(messages) => {
                sqs_backoff.reset();
                messages
            }
            Err(error) if error.is_transient() => {
                let delay = sqs_backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "receive failed");
                sleep_or_shutdown(delay, &shutdown).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if messages.is_empty() {
            if settings.until_empty && queue_is_drained(sqs).await? {
                break;
            }
            continue;
        }
        report.received += messages.len() as u64;
        let prepared: Vec<Prepared> = messages
            .iter()
            .map(|m| prepare(keyring, settings.mask_mode, m))
            .collect();
        let Some(outcome) =
            write_with_retry(database, keyring, &messages, prepared, &shutdown).await?
        else {
            // Shut down while the database was unreachable: the batch was not
            // recorded, so it is not deleted; SQS redelivers it later.
            break;
        };
        report.absorb(&outcome, settings.keep_rows);
        delete_recorded(sqs, &messages, &mut report).await;
        report.busy = started.elapsed();
        tracing::debug!(
            messages = messages.len(),
            written = outcome.written.len(),
            quarantined = outcome.quarantined.len(),
            duplicates = outcome.duplicates,
            "batch committed"
        );
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// The queue is drained when nothing is visible and nothing is in flight
/// (messages held by another consumer may still come back).
async fn queue_is_drained(sqs: &SqsClient) -> Result<bool, SqsError> {
    let depth = sqs.depth().await?;
    Ok(depth.visible == 0 && depth.in_flight == 0)
}

/// Parses, validates and masks one message into what to record.
pub fn prepare(keyring: &Keyring, mode: MaskMode, message: &QueueMessage) -> Prepared {
    let sent_at = message
        .sent_timestamp_ms
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    let record = match event::parse(message.body.as_bytes()) {
        Ok(event) => Record::Row(MaskedRow {
            masked_ip: keyring.mask_with(mode, Field::Ip, &event.ip),
            masked_device_id: keyring.mask_with(mode, Field::DeviceId, &event.device_id),
            user_id: event.user_id,
            device_type: event.device_type,
            locale: event.locale,
            app_version: event.app_version_major,
            // SentTimestamp is always requested; "now" only covers a server
            // that omits it (the ledger still prevents a second row).
            create_date: sent_at.unwrap_or_else(Utc::now).date_naive(),
        }),
        Err(rejection) => Record::Quarantine(quarantine_entry(
            keyring,
            message,
            rejection.reason,
            rejection.field,
        )),
    };
    Prepared {
        message_id: message.message_id.clone(),
        record,
    }
}

fn quarantine_entry(
    keyring: &Keyring,
    message: &QueueMessage,
    reason: RejectReason,
    field: Option<&'static str>,
) -> QuarantineEntry {
    QuarantineEntry {
        reason: reason.code(),
        field,
        sent_at: message
            .sent_timestamp_ms
            .and_then(DateTime::<Utc>::from_timestamp_millis),
        receive_count: message.receive_count.and_then(|c| i32::try_from(c).ok()),
        key_id: keyring.active().id().to_string(),
        body_sealed: keyring.seal_body(message.body.as_bytes()),
        body_bytes: i32::try_from(message.body.len()).unwrap_or(i32::MAX),
    }
}

/// Records the batch, retrying transient failures with backoff until it
/// commits. Returns `None` if shutdown came first.
async fn write_with_retry(
    database: &mut Database,
    keyring: &Keyring,
    messages: &[QueueMessage],
    prepared: Vec<Prepared>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<BatchOutcome>> {
    let mut backoff = Backoff::default();
    loop {
        let error = match database.client().await {
            Ok(client) => {
                match write_isolating(client, keyring, messages, prepared.clone()).await {
                    Ok(outcome) => return Ok(Some(outcome)),
                    Err(WriteError::Transient(error)) => error,
                    Err(error) => bail!(error),
                }
            }
            Err(error) => error,
        };
        database.reset();
        let delay = backoff.next_delay();
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database unavailable; batch not recorded yet");
        sleep_or_shutdown(delay, shutdown).await;
        if shutdown.is_cancelled() {
            return Ok(None);
        }
    }
}

/// Writes a batch; when Postgres rejects a value, bisects so the other
/// messages commit and only the culprit is quarantined (`db_rejected`).
fn write_isolating<'a>(
    client: &'a mut tokio_postgres::Client,
    keyring: &'a Keyring,
    messages: &'a [QueueMessage],
    batch: Vec<Prepared>,
) -> futures::future::BoxFuture<'a, Result<BatchOutcome, WriteError>> {
    Box::pin(async move {
        match record_batch(client, &batch).await {
            Err(WriteError::Data(error)) if batch.len() > 1 => {
                tracing::debug!(%error, size = batch.len(), "value rejected; splitting batch");
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                let mut outcome = write_isolating(client, keyring, messages, first).await?;
                let rest = write_isolating(client, keyring, messages, second).await?;
                outcome.written.extend(rest.written);
                outcome.quarantined.extend(rest.quarantined);
                outcome.duplicates += rest.duplicates;
                Ok(outcome)
            }
            Err(WriteError::Data(_)) if matches!(batch[0].record, Record::Row(_)) => {
                let culprit = &batch[0];
                tracing::warn!(message_id = %culprit.message_id, "Postgres rejected a value; quarantining the message");
                let message = messages
                    .iter()
                    .find(|m| m.message_id == culprit.message_id)
                    .expect("every prepared item comes from a received message");
                let entry = quarantine_entry(keyring, message, RejectReason::DbRejected, None);
                let replacement = Prepared {
                    message_id: culprit.message_id.clone(),
                    record: Record::Quarantine(entry),
                };
                record_batch(client, &[replacement]).await
            }
            other => other,
        }
    })
}

/// Deletes the recorded messages, ten per call. A failed delete only means
/// the message comes back later and the ledger skips it.
async fn delete_recorded(sqs: &SqsClient, messages: &[QueueMessage], report: &mut RunReport) {
    for chunk in messages.chunks(SQS_BATCH_LIMIT) {
        let entries: Vec<(String, String)> = chunk
            .iter()
            .map(|m| (m.message_id.clone(), m.receipt_handle.clone()))
            .collect();
        let mut backoff = Backoff::default();
        for attempt in 1..=3 {
            match sqs.delete_batch(&entries).await {
                Ok(outcome) => {
                    report.deleted += outcome.deleted as u64;
                    report.delete_failures += outcome.failed.len() as u64;
                    for (message_id, code) in outcome.failed {
                        tracing::warn!(%message_id, %code, "SQS did not delete a recorded message; it will be skipped when redelivered");
                    }
                    break;
                }
                Err(error) if error.is_transient() && attempt < 3 => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => {
                    report.delete_failures += entries.len() as u64;
                    tracing::warn!(%error, "delete failed; the recorded messages will be redelivered and skipped");
                    break;
                }
            }
        }
    }
}
