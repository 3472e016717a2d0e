//! Write: a writer collects items from the channel until the batch is full
//! (in rows or bytes) or its first item has waited long enough, records
//! the batch in one transaction, then hands its receipts to a delete task
//! while it collects the next batch.
//!
//! - A passing failure (connection lost, read-only after a failover, a lock
//!   or statement timeout, a stalled socket past the write deadline) is
//!   retried with backoff on a new connection until the batch commits.
//! - A value Postgres refuses splits the batch in halves until the culprit
//!   is alone; it goes to the quarantine as `db_rejected`, the rest commit.
//!   Items move through the split whole: no search by id afterwards.
//! - A fatal failure (a privilege, a table) is reported; from then on, and
//!   on a shutdown while Postgres is unreachable, items are given back to
//!   the queue instead of written.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::ack;
use super::prepare::Item;
use super::shared::{sleep_or_cancel, Shared};
use crate::backoff::Backoff;
use crate::postgres::{WriteError, Writer};
use crate::record::{Record, Recorded};

/// Writes batches until the channel is closed and empty.
pub async fn write_loop(
    shared: Arc<Shared>,
    receiver: Arc<Mutex<mpsc::Receiver<Item>>>,
    mut database: Writer,
    shutdown: CancellationToken,
) {
    let abort = shared.failure.token().clone();
    let mut next = None;
    loop {
        let mut batch = collect(&shared, &receiver, &mut next).await;
        if batch.is_empty() {
            return;
        }
        let oversize =
            batch.iter().map(|item| item.bytes).sum::<usize>() > shared.settings.max_batch_bytes;
        if abort.is_cancelled() {
            release(&shared, batch).await;
            continue;
        }
        let started = Instant::now();
        match write_with_retry(&shared, &mut database, &mut batch, &shutdown).await {
            Ok(Some(results)) => {
                committed(&shared, batch, &results, started);
                if oversize {
                    // An item larger than a batch: its statement grew the
                    // connection's buffers past the room counted for them;
                    // a new connection starts small.
                    database.reset();
                }
            }
            Ok(None) => release(&shared, batch).await,
            Err(error) => {
                shared.metrics.database_failed(&error);
                shared.fail(anyhow::Error::new(error).context("recording a batch in Postgres"));
                release(&shared, batch).await;
            }
        }
    }
}

/// Up to `max_batch_rows` items and `max_batch_bytes`: waits for the
/// first (`next`, if the last batch left one), then takes more until the
/// batch is full or `max_batch_wait` has passed. An item that would take
/// the batch past its bytes waits in `next`; one that large alone is a
/// batch of its own. Empty once the channel is closed and drained.
async fn collect(
    shared: &Shared,
    receiver: &Mutex<mpsc::Receiver<Item>>,
    next: &mut Option<Item>,
) -> Vec<Item> {
    let settings = &shared.settings;
    let mut receiver = receiver.lock().await;
    let first = match next.take() {
        Some(item) => item,
        None => match receiver.recv().await {
            Some(item) => item,
            None => return Vec::new(),
        },
    };
    let mut bytes = first.bytes;
    let mut batch = Vec::with_capacity(settings.max_batch_rows);
    batch.push(first);
    let deadline = tokio::time::Instant::now() + settings.max_batch_wait;
    while batch.len() < settings.max_batch_rows && bytes < settings.max_batch_bytes {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(item)) if bytes + item.bytes > settings.max_batch_bytes => {
                *next = Some(item);
                break;
            }
            Ok(Some(item)) => {
                bytes += item.bytes;
                batch.push(item);
            }
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// Records the batch, retrying passing failures with backoff until it
/// commits. `None`: shutdown or a fatal error elsewhere came first, with
/// the batch not recorded.
async fn write_with_retry(
    shared: &Shared,
    database: &mut Writer,
    batch: &mut [Item],
    shutdown: &CancellationToken,
) -> Result<Option<Vec<Recorded>>, WriteError> {
    let metrics = &shared.metrics;
    let mut backoff = Backoff::default();
    loop {
        let error = match database.ready().await {
            Ok((client, statements)) => {
                match shared
                    .recorder()
                    .write_isolating(client, statements, batch)
                    .await
                {
                    Ok(results) => return Ok(Some(results)),
                    Err(error) if error.is_transient() => error,
                    Err(error) => return Err(error),
                }
            }
            Err(error) => WriteError::from(error),
        };
        if !error.is_transient() {
            return Err(error);
        }
        database.reset();
        let delay = backoff.next_delay();
        metrics.database_unavailable(&error, delay);
        let stop = shutdown.clone();
        tokio::select! {
            _ = shared.failure.token().cancelled() => return Ok(None),
            _ = sleep_or_cancel(delay, &stop) => {}
        }
        if shutdown.is_cancelled() {
            return Ok(None);
        }
    }
}

/// After commit: count, keep sample rows, log, free what the batch no
/// longer needs (bodies, rows) and hand its receipts to a delete task.
fn committed(shared: &Arc<Shared>, batch: Vec<Item>, results: &[Recorded], started: Instant) {
    shared.metrics.batch_committed(results, started.elapsed());
    shared.keep_sample(
        batch
            .iter()
            .zip(results)
            .filter(|(_, result)| **result == Recorded::Written)
            .filter_map(|(item, _)| match &item.prepared.record {
                Record::Row(row) => Some(row),
                Record::Quarantine(_) => None,
            }),
    );
    shared
        .flight
        .shrink(batch.iter().map(Item::droppable_bytes).sum());
    let deliveries = batch.into_iter().map(Item::into_delivery).collect();
    shared
        .deletes
        .spawn(ack::delete(shared.clone(), deliveries));
}

/// Gives a batch back to the queue. After a fatal error, only once every
/// receiver has stopped (each stops at once, or after its receive under way
/// returns): a message given back earlier could be received again in the
/// same crash, and each time it counts against `maxReceiveCount`.
async fn release(shared: &Shared, batch: Vec<Item>) {
    if shared.failure.happened() {
        let waited = tokio::time::timeout(RECEIVERS_STOP_WITHIN, shared.receivers.all_stopped());
        if waited.await.is_err() {
            tracing::warn!("receivers still running; giving messages back anyway");
        }
    }
    ack::release(shared, Item::give_up(batch, &shared.flight)).await;
}

/// How long a writer giving messages back after a fatal error waits for
/// the receivers to stop: a receive under way gets a second to return.
const RECEIVERS_STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
