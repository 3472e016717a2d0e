//! A batch writer: collects messages from the channel until the batch is
//! full or its first message has waited long enough, records the batch in
//! one transaction (retrying while Postgres is unavailable, bisecting when
//! it rejects a value), then deletes the batch's messages in the
//! background, ten per call, while it collects the next batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{prepared, quarantine_entry, sleep_or_cancel, Item, Shared};
use crate::backoff::Backoff;
use crate::event::RejectReason;
use crate::mask::Keyring;
use crate::postgres::{
    record_batch, BatchOutcome, Database, Prepared, Record, WriteError, WriterStatements,
};
use crate::sqs::{QueueMessage, SQS_BATCH_LIMIT};

pub(super) async fn write_loop(
    shared: Arc<Shared>,
    receiver: Arc<Mutex<mpsc::Receiver<Item>>>,
    mut database: Database,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut deletes = JoinSet::new();
    loop {
        let batch = collect(&shared, &receiver).await;
        if batch.is_empty() {
            break;
        }
        let (messages, prepared): (Vec<QueueMessage>, Vec<Prepared>) = batch
            .into_iter()
            .map(|item| (item.message, item.prepared))
            .unzip();
        let started = Instant::now();
        let written =
            write_with_retry(&shared, &mut database, &messages, &prepared, &shutdown).await;
        let outcome = match written {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                // Shut down while Postgres was unreachable: not recorded, so
                // not deleted; hand the messages straight back to the queue.
                shared.release_to_queue(&messages).await;
                continue;
            }
            Err(error) => {
                shared.release_to_queue(&messages).await;
                return Err(error);
            }
        };
        shared.counters.batch_seconds.observe(started.elapsed());
        shared.counters.absorb(&outcome, shared.settings.keep_rows);
        tracing::info!(
            messages = messages.len(),
            written = outcome.written.len(),
            quarantined = outcome.quarantined.len(),
            duplicates = outcome.duplicates,
            write_ms = started.elapsed().as_millis() as u64,
            "batch committed"
        );
        // The messages move into the delete tasks: no copy of their bodies.
        let mut messages = messages.into_iter();
        loop {
            let chunk: Vec<QueueMessage> = messages.by_ref().take(SQS_BATCH_LIMIT).collect();
            if chunk.is_empty() {
                break;
            }
            deletes.spawn(delete_chunk(shared.clone(), chunk));
        }
        while deletes.try_join_next().is_some() {}
    }
    while deletes.join_next().await.is_some() {}
    Ok(())
}

/// Up to `max_batch_rows` items: waits for the first, then takes more until
/// the batch is full or `max_batch_wait` has passed. Empty once the channel
/// is closed and drained.
async fn collect(shared: &Shared, receiver: &Mutex<mpsc::Receiver<Item>>) -> Vec<Item> {
    let settings = &shared.settings;
    let mut receiver = receiver.lock().await;
    let Some(first) = receiver.recv().await else {
        return Vec::new();
    };
    let mut batch = Vec::with_capacity(settings.max_batch_rows);
    batch.push(first);
    let deadline = tokio::time::Instant::now() + settings.max_batch_wait;
    while batch.len() < settings.max_batch_rows {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(item)) => batch.push(item),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// Records the batch, retrying transient failures with backoff until it
/// commits. Returns `None` if shutdown came first.
async fn write_with_retry<'a>(
    shared: &Shared,
    database: &mut Database,
    messages: &[QueueMessage],
    prepared: &'a [Prepared],
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<BatchOutcome<'a>>> {
    let counters = &shared.counters;
    let mut backoff = Backoff::default();
    loop {
        let error = match database.writer().await {
            Ok((client, statements)) => {
                let write =
                    write_isolating(client, statements, &shared.keyring, messages, prepared);
                match write.await {
                    Ok(outcome) => {
                        counters.postgres_ready.store(true, Ordering::Relaxed);
                        return Ok(Some(outcome));
                    }
                    Err(WriteError::Transient(error)) => error,
                    Err(error) => {
                        counters.postgres_errors.add("fatal");
                        bail!(error)
                    }
                }
            }
            Err(error) => error,
        };
        counters.postgres_errors.add("transient");
        counters.postgres_ready.store(false, Ordering::Relaxed);
        database.reset();
        let delay = backoff.next_delay();
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database unavailable; batch not recorded yet");
        sleep_or_cancel(delay, shutdown).await;
        if shutdown.is_cancelled() {
            return Ok(None);
        }
    }
}

/// Writes a batch; when Postgres rejects a value, bisects so the other
/// messages commit and only the culprit is quarantined (`db_rejected`).
fn write_isolating<'a, 'rows: 'a>(
    client: &'a mut tokio_postgres::Client,
    statements: &'a WriterStatements,
    keyring: &'a Keyring,
    messages: &'a [QueueMessage],
    batch: &'rows [Prepared],
) -> futures::future::BoxFuture<'a, Result<BatchOutcome<'rows>, WriteError>> {
    Box::pin(async move {
        match record_batch(client, statements, batch).await {
            Err(WriteError::Data(error)) if batch.len() > 1 => {
                tracing::debug!(%error, size = batch.len(), "value rejected; splitting batch");
                let (first, second) = batch.split_at(batch.len() / 2);
                let mut outcome =
                    write_isolating(client, statements, keyring, messages, first).await?;
                let rest = write_isolating(client, statements, keyring, messages, second).await?;
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
                let replacement = [prepared(message, Record::Quarantine(entry))];
                let outcome = record_batch(client, statements, &replacement).await?;
                Ok(BatchOutcome {
                    written: Vec::new(),
                    quarantined: outcome.quarantined,
                    duplicates: outcome.duplicates,
                })
            }
            other => other,
        }
    })
}

/// Deletes up to ten recorded messages, then frees their slots. A failed
/// delete only means the message comes back and the ledger skips it.
async fn delete_chunk(shared: Arc<Shared>, chunk: Vec<QueueMessage>) {
    let entries: Vec<(&str, &str)> = chunk
        .iter()
        .map(|m| (m.message_id.as_str(), m.receipt_handle.as_str()))
        .collect();
    let counters = &shared.counters;
    let mut backoff = Backoff::default();
    for attempt in 1..=3 {
        match shared.sqs.delete_batch(&entries).await {
            Ok(outcome) => {
                counters
                    .deleted
                    .fetch_add(outcome.deleted as u64, Ordering::Relaxed);
                counters
                    .delete_failures
                    .fetch_add(outcome.failed.len() as u64, Ordering::Relaxed);
                for (message_id, code) in outcome.failed {
                    tracing::warn!(%message_id, %code, "SQS did not delete a recorded message; it will be skipped when redelivered");
                }
                break;
            }
            Err(error) if error.is_transient() && attempt < 3 => {
                counters.sqs_errors.add("delete");
                counters.sqs_ready.store(false, Ordering::Relaxed);
                tracing::debug!(%error, attempt, "delete failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(error) => {
                counters.sqs_errors.add("delete");
                counters
                    .delete_failures
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                tracing::warn!(%error, "delete failed; the recorded messages will be redelivered and skipped");
                break;
            }
        }
    }
    shared.finished(&chunk);
    shared.mark_done();
}
