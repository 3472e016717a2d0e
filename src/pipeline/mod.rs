//! The pipeline: receivers long-poll SQS and parse and mask each message,
//! a bounded channel hands the results to batch writers, each writer
//! records a batch in one Postgres transaction and only then deletes its
//! messages (in tens, in the background, while it collects the next batch).
//! A semaphore bounds the messages in flight; a heartbeat extends the
//! visibility of messages held for more than half the visibility timeout.
//! Shutdown is a parameter: receivers stop, writers finish what is in hand.
//!
//! ```text
//! receivers (N) --> channel --> writers (M) --> Postgres --> deletes (async)
//!      ^ in-flight slots ----------------------------------------- freed
//! ```

mod flight;
mod progress;
mod receiver;
mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::event::{self, RejectReason};
use crate::mask::{Field, Keyring, MaskMode};
use crate::postgres::{BatchOutcome, Database, MaskedRow, Prepared, QuarantineEntry, Record};
use crate::sqs::{Protocol, QueueMessage, ReceiveRequest, SqsClient};

pub use flight::InFlight;

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Parameters of each ReceiveMessage.
    pub receive: ReceiveRequest,
    /// Stop once the queue is drained (nothing visible, nothing in flight).
    pub until_empty: bool,
    /// How many written rows to keep for the final report.
    pub keep_rows: usize,
    /// AES-SIV (reversible) or HMAC (irreversible) masks.
    pub mask_mode: MaskMode,
    /// Concurrent long-polling receivers.
    pub receivers: usize,
    /// Concurrent batch writers (one Postgres connection each).
    pub writers: usize,
    /// A batch is written when it has this many messages...
    pub max_batch_rows: usize,
    /// ...or when its first message has waited this long.
    pub max_batch_wait: Duration,
    /// Most messages held at once (received, not yet deleted).
    pub max_in_flight: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Quarantine messages delivered more often than this (`None`: no limit,
    /// e.g. because the queue has a redrive policy).
    pub max_receives: Option<u32>,
}

/// Live counters of a run; tests and the progress bar read them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received (redeliveries included).
    pub received: AtomicU64,
    /// ReceiveMessage calls that returned messages (each costs a request:
    /// messages per call is the SQS efficiency of a run).
    pub receive_calls: AtomicU64,
    /// Rows written.
    pub written: AtomicU64,
    /// Messages quarantined.
    pub quarantined: AtomicU64,
    /// Messages skipped as already recorded.
    pub duplicates: AtomicU64,
    /// Messages deleted from the queue.
    pub deleted: AtomicU64,
    /// Deletes SQS refused or that failed.
    pub delete_failures: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Visibility extensions sent by the heartbeat.
    pub visibility_extensions: AtomicU64,
    /// Messages held now (received, not yet deleted or released).
    pub in_flight: AtomicU64,
    /// SQS call failures, by operation.
    pub sqs_errors: ErrorCounts,
    /// Postgres failures, by kind (transient, data, fatal).
    pub postgres_errors: ErrorCounts,
    /// Batch write latency.
    pub batch_seconds: Histogram,
    /// The last SQS call succeeded.
    pub sqs_ready: std::sync::atomic::AtomicBool,
    /// The last Postgres write succeeded.
    pub postgres_ready: std::sync::atomic::AtomicBool,
    by_reason: Mutex<BTreeMap<&'static str, u64>>,
    sample_rows: Mutex<Vec<MaskedRow>>,
}

/// Counts by a label from a small fixed set.
#[derive(Debug, Default)]
pub struct ErrorCounts(Mutex<BTreeMap<&'static str, u64>>);

impl ErrorCounts {
    /// Adds one for `label`.
    pub fn add(&self, label: &'static str) {
        *self
            .0
            .lock()
            .expect("error counts lock")
            .entry(label)
            .or_default() += 1;
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().expect("error counts lock").clone()
    }
}

/// A fixed-bucket latency histogram (Prometheus semantics: cumulative).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds.
    pub bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        const BOUNDS: &[f64] = &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Histogram {
            bounds: BOUNDS,
            counts: BOUNDS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, the sum in seconds, and the count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum, self.count.load(Ordering::Relaxed))
    }
}

impl Counters {
    /// Quarantined messages by reason code so far.
    pub fn quarantined_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.by_reason.lock().expect("counters lock").clone()
    }

    fn absorb(&self, outcome: &BatchOutcome, keep_rows: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.written
            .fetch_add(outcome.written.len() as u64, Ordering::Relaxed);
        self.quarantined
            .fetch_add(outcome.quarantined.len() as u64, Ordering::Relaxed);
        self.duplicates
            .fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
        if !outcome.quarantined.is_empty() {
            let mut by_reason = self.by_reason.lock().expect("counters lock");
            for reason in &outcome.quarantined {
                *by_reason.entry(reason).or_default() += 1;
            }
        }
        if keep_rows > 0 {
            let mut sample = self.sample_rows.lock().expect("counters lock");
            let room = keep_rows.saturating_sub(sample.len());
            sample.extend(outcome.written.iter().take(room).map(|row| (*row).clone()));
        }
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Messages received from SQS (redeliveries included).
    pub received: u64,
    /// ReceiveMessage calls that returned messages.
    pub receive_calls: u64,
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
    /// Visibility extensions sent.
    pub visibility_extensions: u64,
    /// Most messages held at once (never above --max-in-flight).
    pub peak_in_flight: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time from the start until the last batch was recorded and deleted
    /// (excludes the final empty polls of an --until-empty run).
    pub busy: Duration,
    /// The first `keep_rows` rows written.
    pub sample_rows: Vec<MaskedRow>,
}

impl RunReport {
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

/// Everything the pipeline's tasks share.
struct Shared {
    sqs: SqsClient,
    keyring: Arc<Keyring>,
    settings: PipelineSettings,
    counters: Arc<Counters>,
    flight: InFlight,
    started: Instant,
    /// Nanoseconds from `started` to the last finished batch.
    last_done_nanos: AtomicU64,
}

impl Shared {
    /// Messages are done with (deleted, or given back): free their slots.
    fn finished(&self, messages: &[QueueMessage]) {
        self.flight.finish(messages);
        self.counters
            .in_flight
            .store(self.flight.held() as u64, Ordering::Relaxed);
    }

    /// Gives unrecorded messages back to the queue at once (visibility 0)
    /// instead of leaving them hidden until their timeout ends.
    async fn release_to_queue(&self, messages: &[QueueMessage]) {
        for chunk in messages.chunks(crate::sqs::SQS_BATCH_LIMIT) {
            let entries: Vec<(String, String, i32)> = chunk
                .iter()
                .map(|m| (m.message_id.clone(), m.receipt_handle.clone(), 0))
                .collect();
            if let Err(error) = self.sqs.extend_visibility(&entries).await {
                self.counters.sqs_errors.add("release");
                tracing::warn!(%error, "could not release messages; they return after their visibility timeout");
            }
        }
        self.finished(messages);
    }

    fn mark_done(&self) {
        let nanos = self.started.elapsed().as_nanos() as u64;
        self.last_done_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

/// One received message, parsed and masked, on its way to a writer.
struct Item {
    message: QueueMessage,
    prepared: Prepared,
}

/// Runs until `shutdown` fires (or the queue is drained, with
/// `until_empty`). `counters` may be watched while it runs.
pub async fn run(
    sqs: &SqsClient,
    database: tokio_postgres::Config,
    keyring: Arc<Keyring>,
    settings: &PipelineSettings,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> anyhow::Result<RunReport> {
    counters.sqs_ready.store(true, Ordering::Relaxed);
    counters.postgres_ready.store(true, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        sqs: sqs.clone(),
        keyring,
        settings: settings.clone(),
        counters,
        flight: InFlight::new(settings.max_in_flight),
        started: Instant::now(),
        last_done_nanos: AtomicU64::new(0),
    });
    let (sender, receiver) = mpsc::channel::<Item>(settings.max_in_flight);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    // Stops the receivers: on shutdown, once drained, or when a task fails.
    let stop_receiving = shutdown.child_token();

    let mut writers = JoinSet::new();
    for _ in 0..settings.writers {
        let connection = Database::connect(database.clone()).await?;
        writers.spawn(writer::write_loop(
            shared.clone(),
            receiver.clone(),
            connection,
            shutdown.clone(),
        ));
    }
    let mut receivers = JoinSet::new();
    for _ in 0..settings.receivers {
        receivers.spawn(receiver::receive_loop(
            shared.clone(),
            sender.clone(),
            stop_receiving.clone(),
        ));
    }
    drop(sender);
    let background = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), background.clone()));
    let progress = settings
        .progress
        .then(|| tokio::spawn(progress::show(shared.clone(), background.clone())));

    let mut failure: Option<anyhow::Error> = None;
    while let Some(result) = receivers.join_next().await {
        if let Err(error) = result.context("receiver task").and_then(|r| r) {
            stop_receiving.cancel();
            failure.get_or_insert(error);
        }
    }
    while let Some(result) = writers.join_next().await {
        if let Err(error) = result.context("writer task").and_then(|r| r) {
            failure.get_or_insert(error);
        }
    }
    background.cancel();
    let _ = heartbeat.await;
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(report(&shared))
}

fn report(shared: &Shared) -> RunReport {
    let counters = &shared.counters;
    RunReport {
        received: Counters::get(&counters.received),
        receive_calls: Counters::get(&counters.receive_calls),
        written: Counters::get(&counters.written),
        quarantined: Counters::get(&counters.quarantined),
        quarantined_by_reason: counters.by_reason.lock().expect("counters lock").clone(),
        duplicates: Counters::get(&counters.duplicates),
        deleted: Counters::get(&counters.deleted),
        delete_failures: Counters::get(&counters.delete_failures),
        batches: Counters::get(&counters.batches),
        visibility_extensions: Counters::get(&counters.visibility_extensions),
        peak_in_flight: shared.flight.peak(),
        elapsed: shared.started.elapsed(),
        busy: Duration::from_nanos(shared.last_done_nanos.load(Ordering::Relaxed)),
        sample_rows: counters.sample_rows.lock().expect("counters lock").clone(),
    }
}

/// Extends the visibility of messages held for more than half the
/// visibility timeout, so a slow batch is not redelivered under our feet.
async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let timeout_secs = shared.settings.receive.visibility_timeout_secs;
    let half = Duration::from_secs(timeout_secs.max(1) as u64) / 2;
    let tick = (half / 2).max(Duration::from_millis(100));
    let protocol = shared.sqs.protocol();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let due = shared.flight.due_for_extension(half);
        for chunk in due.chunks(crate::sqs::SQS_BATCH_LIMIT) {
            let entries: Vec<(String, String, i32)> = chunk
                .iter()
                .map(|d| {
                    let timeout = extension_secs(protocol, timeout_secs, d.held_for);
                    (d.message_id.clone(), d.receipt_handle.clone(), timeout)
                })
                .collect();
            match shared.sqs.extend_visibility(&entries).await {
                Ok(refused) => {
                    let extended = chunk.len() - refused.len();
                    shared
                        .counters
                        .visibility_extensions
                        .fetch_add(extended as u64, Ordering::Relaxed);
                    tracing::debug!(extended, refused = refused.len(), "visibility extended");
                }
                Err(error) => {
                    shared.counters.sqs_errors.add("extend_visibility");
                    tracing::warn!(%error, "could not extend visibility");
                }
            }
        }
    }
}

/// The timeout to ask for when extending a delivery held for `held_for`.
/// AWS (and LocalStack 3+) count a new timeout from the call, so it is the
/// configured timeout. LocalStack 0.x, the only query-protocol server in
/// use, counts it from the receive (`last_received + timeout` in its
/// provider), so there it must include the time already held.
fn extension_secs(protocol: Protocol, timeout_secs: i32, held_for: Duration) -> i32 {
    const SQS_MAX_VISIBILITY_SECS: i32 = 43_200;
    let secs = match protocol {
        Protocol::Json => timeout_secs,
        Protocol::Query => timeout_secs.saturating_add(held_for.as_secs_f64().ceil() as i32),
    };
    secs.min(SQS_MAX_VISIBILITY_SECS)
}

/// `prepare`, but a message delivered more than `max_receives` times is
/// quarantined as `too_many_receives` whatever its body, so one that keeps
/// failing cannot be redelivered forever.
pub fn prepare_limited(
    keyring: &Keyring,
    mode: MaskMode,
    max_receives: Option<u32>,
    message: &QueueMessage,
) -> Prepared {
    let over = max_receives
        .zip(message.receive_count)
        .is_some_and(|(max, count)| count > max);
    if over {
        tracing::warn!(message_id = %message.message_id, receive_count = message.receive_count, "message received too many times; quarantining it");
        let entry = quarantine_entry(keyring, message, RejectReason::TooManyReceives, None);
        return prepared(message, Record::Quarantine(entry));
    }
    prepare(keyring, mode, message)
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
    prepared(message, record)
}

/// What to record for `message`, keyed as the ledger keys it.
fn prepared(message: &QueueMessage, record: Record) -> Prepared {
    Prepared {
        message_id: message.message_id.clone(),
        sent_ms: message.sent_timestamp_ms.unwrap_or(0),
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

async fn sleep_or_cancel(delay: Duration, token: &CancellationToken) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_count_from_the_call_on_json_and_from_the_receive_on_query() {
        let held = Duration::from_millis(4_200);
        assert_eq!(extension_secs(Protocol::Json, 60, held), 60);
        assert_eq!(extension_secs(Protocol::Query, 60, held), 65);
        assert_eq!(
            extension_secs(Protocol::Query, 43_000, Duration::from_secs(900)),
            43_200
        );
    }
}
