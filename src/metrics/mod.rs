//! Every number veil reports, and the service state. One table
//! (`table::TABLE`) names each metric once, with its Prometheus name, help
//! and label and its CloudWatch (EMF) name and unit; `/metrics`
//! (`prometheus`) and the EMF lines (`emf`) are rendered from it. Stages
//! report through observations (`observe`): verbs that count and log in
//! one call. Labels come from small fixed sets: reason codes, SQS
//! operations, Postgres failure kinds, states. Adding a metric is a row of
//! the table (and a line of docs/operations.md's list).

mod emf;
mod observe;
mod prometheus;
mod state;
pub mod table;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use emf::{write_emf_lines, EmfTotals, EMF_NAMESPACE};
pub use observe::BatchCounts;
pub use state::ServiceState;
pub use table::{Family, Number};

use crate::sqs::QueueDepth;

/// Counts by a label from a small fixed set.
#[derive(Debug, Default)]
pub struct LabelledCounts(Mutex<BTreeMap<&'static str, u64>>);

impl LabelledCounts {
    /// Adds `count` for `label`.
    pub fn add(&self, label: &'static str, count: u64) {
        *self
            .0
            .lock()
            .expect("labelled counts lock")
            .entry(label)
            .or_default() += count;
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().expect("labelled counts lock").clone()
    }

    /// The sum over all labels.
    pub fn total(&self) -> u64 {
        self.0.lock().expect("labelled counts lock").values().sum()
    }
}

/// A fixed-bucket latency histogram (Prometheus semantics: cumulative).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
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

/// The live numbers of a running veil. Shared by the pipeline (which
/// counts), the operations endpoint (which serves them) and tests.
#[derive(Debug)]
pub struct Metrics {
    numbers: [AtomicU64; Number::COUNT],
    families: [LabelledCounts; Family::COUNT],
    /// The queue's depth at the last successful read (None before one).
    pub queue_depth: Mutex<Option<QueueDepth>>,
    /// This process's role may not do housekeeping: it is left to `veil
    /// maintain` run by the tables' owner, and the loop is parked.
    pub housekeeping_delegated: AtomicBool,
    /// Batch write latency.
    pub batch_seconds: Histogram,
    /// The last SQS call succeeded.
    pub sqs_ready: AtomicBool,
    /// The last Postgres write succeeded.
    pub postgres_ready: AtomicBool,
    state: AtomicU8,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            numbers: std::array::from_fn(|_| AtomicU64::new(0)),
            families: std::array::from_fn(|_| LabelledCounts::default()),
            queue_depth: Mutex::new(None),
            housekeeping_delegated: AtomicBool::new(false),
            batch_seconds: Histogram::default(),
            sqs_ready: AtomicBool::new(true),
            postgres_ready: AtomicBool::new(true),
            state: AtomicU8::new(0),
        }
    }
}

impl Metrics {
    /// Adds `count` to a number.
    pub fn add(&self, number: Number, count: u64) {
        self.numbers[number as usize].fetch_add(count, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(&self, number: Number, value: u64) {
        self.numbers[number as usize].store(value, Ordering::Relaxed);
    }

    /// A number's value now.
    pub fn get(&self, number: Number) -> u64 {
        self.numbers[number as usize].load(Ordering::Relaxed)
    }

    /// A labelled family.
    pub fn family(&self, family: Family) -> &LabelledCounts {
        &self.families[family as usize]
    }

    /// Counts one quarantined message.
    pub fn quarantine(&self, reason: &'static str) {
        self.family(Family::Quarantined).add(reason, 1);
    }

    /// Quarantined messages by reason code so far.
    pub fn quarantined_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.family(Family::Quarantined).snapshot()
    }

    /// Messages quarantined so far, all reasons.
    pub fn quarantined_total(&self) -> u64 {
        self.family(Family::Quarantined).total()
    }
}

impl crate::ops::Observed for Metrics {
    fn render_prometheus(&self) -> String {
        Metrics::render_prometheus(self)
    }

    fn readiness(&self) -> (bool, String) {
        Metrics::readiness(self)
    }
}
