//! What every step of a run shares: its settings, the SQS client and the
//! keyring, the in-flight bound, the metrics, the delete tasks under way,
//! the first fatal error, and what the end-of-run report is built from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::flight::InFlight;
use crate::contract::{ColumnType, Plan};
use crate::error::ConfigError;
use crate::keyring::Keyring;
use crate::mask::MaskMode;
use crate::metrics::Number;
use crate::metrics::{Metrics, ServiceState};
use crate::postgres::SessionLimits;
use crate::record::Row;
use crate::sqs::{ReceiveRequest, SqsClient};

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
    /// ...or as many bytes as the next item would take past this (an item
    /// as large alone is a batch of its own)...
    pub max_batch_bytes: usize,
    /// ...or when its first message has waited this long.
    pub max_batch_wait: Duration,
    /// Most messages held at once (received, not yet deleted).
    pub max_in_flight: usize,
    /// Most bytes held at once.
    pub max_in_flight_bytes: usize,
    /// The largest message a receive can bring (the queue's
    /// `MaximumMessageSize`), so a receive reserves room for it.
    pub max_message_bytes: usize,
    /// Limits set on each writer's Postgres session.
    pub session_limits: SessionLimits,
    /// Longest one batch statement may take, end to end, before the
    /// connection is dropped and the batch retried.
    pub write_deadline: Duration,
    /// After a signal or a fatal error: time to finish the batches in
    /// hand and give the rest back, before exiting anyway.
    pub shutdown_timeout: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Write CloudWatch EMF lines this often.
    pub cloudwatch_emf_interval: Option<Duration>,
    /// Read the queue's depth for /metrics this often.
    pub queue_depth_interval: Option<Duration>,
    /// What housekeeping keeps.
    pub housekeeping: crate::postgres::maintain::HousekeepingPolicy,
    /// Housekeeping this often, after the pass at start (None: never).
    pub housekeeping_interval: Option<Duration>,
    /// Quarantine messages delivered more often than this (`None`: no limit,
    /// e.g. because the queue has a redrive policy).
    pub max_receives: Option<u32>,
    /// The contracts bodies are parsed, masked and recorded by (the
    /// built-in login contract without `--contract`).
    pub plan: Arc<crate::contract::Plan>,
}

impl PipelineSettings {
    /// These settings with receives and batches sized to fit the byte
    /// bound: receives ask for fewer than `receive.max_messages` if that
    /// many of the largest messages would not fit. Refused if not even one
    /// does, with the bound that would.
    pub fn fitted(mut self) -> Result<Self, ConfigError> {
        let budget = self.budget();
        let asked = self.receive.max_messages as usize;
        let Some(fits) = budget.messages_per_receive(asked) else {
            return Err(ConfigError(format!(
                "--max-in-flight-bytes ({}) is too small for this queue, whose largest message \
                 is {} bytes: it must hold {} receivers' room for one message each, one reply \
                 being decoded (up to six times a message) and {} writers' statement buffers. \
                 Use --max-in-flight-bytes {}MiB or more, or lower --receivers or --writers",
                budget.bound,
                budget.max_message_bytes,
                budget.receivers,
                budget.writers,
                budget.needed(1).div_ceil(1 << 20),
            )));
        };
        self.receive.max_messages = fits as i32;
        self.max_batch_bytes = budget.max_batch_bytes();
        Ok(self)
    }

    /// How the byte bound is shared (see `budget`).
    pub fn budget(&self) -> super::budget::Budget {
        super::budget::Budget {
            receivers: self.receivers,
            writers: self.writers,
            max_message_bytes: self.max_message_bytes,
            bound: self.max_in_flight_bytes,
        }
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
    /// Unrecorded messages given back to the queue.
    pub released: u64,
    /// Batches committed.
    pub batches: u64,
    /// Visibility extensions SQS confirmed.
    pub visibility_extensions: u64,
    /// Most messages held at once (never above --max-in-flight).
    pub peak_in_flight: usize,
    /// Most bytes counted at once (never above --max-in-flight-bytes).
    pub peak_in_flight_bytes: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time from the start until the last batch was recorded and deleted
    /// (excludes the final empty polls of an --until-empty run).
    pub busy: Duration,
    /// The first `keep_rows` rows written, a table per contract that wrote
    /// some.
    pub samples: Vec<SampleTable>,
}

/// Rows of one contract's table for the end-of-run report, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleTable {
    /// The table, and the contract that writes it.
    pub title: String,
    /// Its column names.
    pub headers: Vec<String>,
    /// The columns that hold numbers (printed flush right).
    pub right_aligned: Vec<usize>,
    /// The rows kept, each cell as Postgres reads it ("" for NULL).
    pub rows: Vec<Vec<String>>,
    /// How many rows the run wrote to the table.
    pub total: u64,
}

impl SampleTable {
    /// The tables of `plan` that `rows` (and `totals`, by contract) hold.
    fn of(plan: &Plan, rows: &[Row], totals: &[u64]) -> Vec<SampleTable> {
        let numeric = |t: ColumnType| {
            matches!(
                t,
                ColumnType::Integer
                    | ColumnType::Bigint
                    | ColumnType::Numeric
                    | ColumnType::VersionMajor
            )
        };
        plan.contracts
            .iter()
            .enumerate()
            .filter(|(index, _)| totals[*index] > 0)
            .map(|(index, contract)| SampleTable {
                title: format!("{} (contract {})", contract.table, contract.name),
                headers: contract.columns.iter().map(|c| c.name.clone()).collect(),
                right_aligned: (0..contract.columns.len())
                    .filter(|&i| numeric(contract.columns[i].column_type))
                    .collect(),
                rows: rows
                    .iter()
                    .filter(|row| row.contract == index)
                    .map(|row| {
                        row.cells
                            .iter()
                            .map(|cell| cell.sql_text().unwrap_or_default())
                            .collect()
                    })
                    .collect(),
                total: totals[index],
            })
            .collect()
    }
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

/// The first fatal error of a run. Reporting it logs it at ERROR (once,
/// with its cause chain), marks the service failed (`/readyz` 503,
/// `veil_state{state="failed"}`) and tells every step to wind down.
#[derive(Default)]
pub struct Failure {
    token: CancellationToken,
    first: Mutex<Option<anyhow::Error>>,
}

impl Failure {
    /// Cancelled once a fatal error was reported.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether a fatal error was reported.
    pub fn happened(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Reports a fatal error; only the first is kept and logged.
    pub fn report(&self, error: anyhow::Error, metrics: &Metrics) {
        let mut first = self.first.lock().expect("failure lock");
        if first.is_none() {
            tracing::error!(
                error = %crate::error::error_chain(&error),
                "fatal: veil cannot go on; giving unrecorded messages back to the queue and stopping"
            );
            metrics.set_state(ServiceState::Failed);
            *first = Some(error);
            self.token.cancel();
        }
    }

    /// The error reported, if any.
    pub fn take(&self) -> Option<anyhow::Error> {
        self.first.lock().expect("failure lock").take()
    }
}

/// The receivers still running, and how long a receive they abandoned may
/// still take messages. After a fatal error the writers give what they
/// hold back only once no receiver runs: a message given back while a
/// receive is under way could be received again, and again, in the same
/// crash. And a long poll abandoned at a stop goes on at SQS until its
/// wait ends, taking what becomes visible for a reply nobody reads: what
/// is given back stays hidden until then.
#[derive(Debug, Default)]
pub struct Receivers {
    running: std::sync::atomic::AtomicUsize,
    stopped: tokio::sync::Notify,
    abandoned_until: Mutex<Option<tokio::time::Instant>>,
}

/// One receiver counted as running until dropped.
pub struct Running(Arc<Receivers>);

impl Receivers {
    /// Counts one more receiver as running, until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// A receive was abandoned; SQS may go on with it until `until`.
    pub fn abandoned(&self, until: tokio::time::Instant) {
        let mut latest = self.abandoned_until.lock().expect("abandoned lock");
        *latest = Some(latest.map_or(until, |known| known.max(until)));
    }

    /// The visibility to give messages back with: 0, or the seconds until
    /// every abandoned receive has ended at SQS.
    pub fn give_back_visibility_secs(&self) -> i32 {
        let until = *self.abandoned_until.lock().expect("abandoned lock");
        until.map_or(0, |until| {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            i32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(i32::MAX)
        })
    }

    /// Waits until no receiver runs.
    pub async fn all_stopped(&self) {
        loop {
            let notified = self.stopped.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.stopped.notify_waiters();
    }
}

/// Everything the pipeline's tasks share.
pub struct Shared {
    /// The queue.
    pub sqs: SqsClient,
    /// The masking keys.
    pub keyring: Arc<Keyring>,
    /// How the run goes.
    pub settings: PipelineSettings,
    /// Live numbers.
    pub metrics: Arc<Metrics>,
    /// The in-flight bound.
    pub flight: InFlight,
    /// Delete tasks of committed batches; the supervisor waits for them.
    pub deletes: TaskTracker,
    /// The receivers still running.
    pub receivers: Arc<Receivers>,
    /// The first fatal error.
    pub failure: Failure,
    /// Stops the receivers: shutdown, a fatal error, or a drained queue.
    stop_receiving: CancellationToken,
    /// When the run started.
    pub started: Instant,
    /// Nanoseconds from `started` to the last finished batch.
    last_done_nanos: AtomicU64,
    sample_rows: Mutex<Vec<Row>>,
    /// Rows written, by contract (the report's table footers).
    written_by_contract: Vec<AtomicU64>,
}

impl Shared {
    /// What the writers record batches with.
    pub fn recorder(&self) -> super::recorder::Recorder<'_> {
        super::recorder::Recorder {
            keyring: &self.keyring,
            plan: &self.settings.plan,
            metrics: &self.metrics,
            deadline: self.settings.write_deadline,
        }
    }

    /// The shared state of a new run.
    pub fn new(
        sqs: SqsClient,
        keyring: Arc<Keyring>,
        settings: PipelineSettings,
        metrics: Arc<Metrics>,
        stop_receiving: CancellationToken,
    ) -> Self {
        let written_by_contract = (0..settings.plan.contracts.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        Shared {
            sqs,
            keyring,
            flight: InFlight::new(
                settings.max_in_flight,
                settings.max_in_flight_bytes,
                metrics.clone(),
            ),
            settings,
            metrics,
            deletes: TaskTracker::new(),
            receivers: Arc::default(),
            failure: Failure::default(),
            stop_receiving,
            started: Instant::now(),
            last_done_nanos: AtomicU64::new(0),
            sample_rows: Mutex::new(Vec::new()),
            written_by_contract,
        }
    }

    /// Reports a fatal error (see `Failure`).
    pub fn fail(&self, error: anyhow::Error) {
        self.failure.report(error, &self.metrics);
        self.stop_receiving.cancel();
    }

    /// A batch was finished (recorded and deleted).
    pub fn mark_done(&self) {
        let nanos = self.started.elapsed().as_nanos() as u64;
        self.last_done_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Counts the rows a batch wrote and keeps some for the end-of-run
    /// table, up to `keep_rows`.
    pub fn keep_sample<'a>(&self, rows: impl Iterator<Item = &'a Row>) {
        let keep = self.settings.keep_rows;
        if keep == 0 {
            return;
        }
        let mut sample = self.sample_rows.lock().expect("sample lock");
        for row in rows {
            self.written_by_contract[row.contract].fetch_add(1, Ordering::Relaxed);
            if sample.len() < keep {
                sample.push(row.clone());
            }
        }
    }

    /// What the run did.
    pub fn report(&self) -> RunReport {
        let m = &self.metrics;
        RunReport {
            received: m.get(Number::Received),
            receive_calls: m.get(Number::ReceiveCalls),
            written: m.get(Number::Written),
            quarantined: m.quarantined_total(),
            quarantined_by_reason: m.quarantined_by_reason(),
            duplicates: m.get(Number::Duplicates),
            deleted: m.get(Number::Deleted),
            delete_failures: m.get(Number::DeleteFailures),
            released: m.get(Number::Released),
            batches: m.get(Number::Batches),
            visibility_extensions: m.get(Number::VisibilityExtensions),
            peak_in_flight: self.flight.peak_held(),
            peak_in_flight_bytes: self.flight.peak_bytes(),
            elapsed: self.started.elapsed(),
            busy: Duration::from_nanos(self.last_done_nanos.load(Ordering::Relaxed)),
            samples: SampleTable::of(
                &self.settings.plan,
                &self.sample_rows.lock().expect("sample lock"),
                &self
                    .written_by_contract
                    .iter()
                    .map(|count| count.load(Ordering::Relaxed))
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// Sleeps for `delay`, or less if `token` is cancelled first.
pub async fn sleep_or_cancel(delay: Duration, token: &CancellationToken) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
