//! The Lambda handler: one batch of Lambda's SQS event source through the
//! same prepare and write path as `veil run` (validation, masks, contracts,
//! quarantine, the ledger), answering which records were not recorded.
//!
//! - The event source mapping receives and deletes; veil never touches the
//!   queue here. A record is done when it is written, quarantined, or found
//!   in the ledger (a duplicate); only records not recorded go in
//!   `batchItemFailures`, so the mapping retries just those.
//! - Records are written in batches of `--max-batch-rows`, each in its own
//!   transaction, so a batch that could not be written in time fails alone.
//! - The invocation's deadline bounds every write (a lock held past it, a
//!   database that stopped answering): what is left when the time is short
//!   is reported as failed, with a margin to send the answer.
//! - A passing failure is retried with backoff within the deadline, on a new
//!   connection; an error no retry mends (a table missing, a privilege
//!   revoked, a bad password) fails the invocation, so every record is
//!   retried and, past the queue's receive limit, goes to the DLQ.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::prepare::{prepare, Item};
use super::recorder::Recorder;
use super::shared::PipelineSettings;
use crate::backoff::Backoff;
use crate::keyring::Keyring;
use crate::metrics::{EmfTotals, Metrics};
use crate::postgres::{WriteError, Writer};
use crate::record::Recorded;
use crate::sqs::event_source::{batch_response, queue_messages, SqsBatchResponse, SqsEvent};

/// Time kept back from the deadline to send the answer.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);
/// Less time than this left, a write is not started.
const SHORTEST_WRITE: Duration = Duration::from_millis(100);

/// What one execution environment keeps across invocations: the keyring,
/// the settings and the open connection (with its prepared statements).
pub struct LambdaHandler {
    keyring: Arc<Keyring>,
    settings: PipelineSettings,
    database: Mutex<Writer>,
    metrics: Arc<Metrics>,
    emf: std::sync::Mutex<EmfTotals>,
}

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Records recorded (written, quarantined or already recorded).
    pub recorded: usize,
    /// Message ids of the records not recorded.
    pub failed: Vec<String>,
}

impl LambdaHandler {
    /// A handler over an open writer connection.
    pub fn new(
        keyring: Arc<Keyring>,
        settings: PipelineSettings,
        database: Writer,
        metrics: Arc<Metrics>,
    ) -> Self {
        LambdaHandler {
            keyring,
            settings,
            database: Mutex::new(database),
            metrics,
            emf: std::sync::Mutex::new(EmfTotals::default()),
        }
    }

    /// One invocation: the batch, answered by the records not recorded
    /// before `deadline` (the invocation's, less the answer's margin). An
    /// error fails the whole invocation.
    pub async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> anyhow::Result<SqsBatchResponse> {
        let handled = self.record(event, deadline).await;
        self.write_emf_line();
        Ok(batch_response(handled?.failed))
    }

    /// Waits until no invocation is writing (one that is holds the
    /// connection until its batches are done or given up).
    pub async fn idle(&self) {
        drop(self.database.lock().await);
    }

    /// One CloudWatch EMF line of what was counted since the last (the
    /// last one of an execution environment that is shutting down).
    pub fn flush_metrics(&self) {
        self.write_emf_line();
    }

    /// Prepares and records the records in batches, stopping at the deadline.
    pub async fn record(&self, event: SqsEvent, deadline: Instant) -> anyhow::Result<Handled> {
        let messages = queue_messages(event)?;
        let count = messages.len();
        self.metrics.received_messages(count);
        let settings = &self.settings;
        let mut items: Vec<Item> = messages
            .into_iter()
            .map(|message| {
                prepare(
                    &self.keyring,
                    settings.mask_mode,
                    settings.max_receives,
                    &settings.plan,
                    message,
                )
            })
            .collect();
        let mut handled = Handled::default();
        let mut database = self.database.lock().await;
        for batch in items.chunks_mut(settings.max_batch_rows.max(1)) {
            let recorded = match handled.failed.is_empty() {
                // Once time ran short, the rest is left for the retry.
                true => self.write(&mut database, batch, deadline).await?,
                false => None,
            };
            match recorded {
                Some(_) => handled.recorded += batch.len(),
                None => handled
                    .failed
                    .extend(batch.iter().map(|item| item.receipt.message_id.clone())),
            }
        }
        if !handled.failed.is_empty() {
            tracing::warn!(
                records = count,
                recorded = handled.recorded,
                failed = handled.failed.len(),
                "time ran short before every record was recorded; the event source retries the rest"
            );
        }
        Ok(handled)
    }

    /// One batch, retried within the deadline. `None`: not recorded in time.
    async fn write(
        &self,
        database: &mut Writer,
        batch: &mut [Item],
        deadline: Instant,
    ) -> anyhow::Result<Option<Vec<Recorded>>> {
        let mut backoff = Backoff::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < SHORTEST_WRITE {
                return Ok(None);
            }
            let started = Instant::now();
            let recorder = Recorder {
                keyring: &self.keyring,
                plan: &self.settings.plan,
                metrics: &self.metrics,
                deadline: left.min(self.settings.write_deadline),
            };
            let attempt = async {
                let (client, statements) = database.ready().await?;
                recorder.write_isolating(client, statements, batch).await
            };
            let result = match tokio::time::timeout(left, attempt).await {
                Ok(result) => result,
                Err(_) => Err(WriteError::Deadline(left.as_secs())),
            };
            let error = match result {
                Ok(results) => {
                    self.metrics.batch_committed(&results, started.elapsed());
                    return Ok(Some(results));
                }
                Err(error) => error,
            };
            // A statement cut short may still run on the server: the next
            // attempt gets a new session.
            database.reset();
            if !error.is_transient() {
                self.metrics.database_failed(&error);
                return Err(anyhow::Error::new(error).context("recording a batch in Postgres"));
            }
            let delay = backoff.next_delay();
            self.metrics.database_unavailable(&error, delay);
            if Instant::now() + delay + SHORTEST_WRITE >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One CloudWatch EMF line per invocation on stdout (Lambda sends it to
    /// CloudWatch Logs, which makes the metrics).
    fn write_emf_line(&self) {
        let mut last = self.emf.lock().expect("emf totals lock");
        self.metrics.print_emf_line(&mut last);
    }
}
