//! Every number veil reports, and the service state: counters, gauges, the
//! batch latency histogram, and their Prometheus text. Adding a metric
//! touches this file (its field and its line in `render_prometheus`) and
//! the metrics table of docs/operations.md. Labels come from small fixed
//! sets: reason codes, SQS operations, Postgres failure kinds, states.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

mod observe;

pub use observe::BatchCounts;

use crate::record::RejectReason;
use crate::sqs::QueueDepth;

/// Where the service is in its life; `/readyz` is 200 only while running
/// with both dependencies answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Checking the key, the queue and the database.
    Starting,
    /// Receiving and recording.
    Running,
    /// Asked to stop: finishing the batches in hand.
    Stopping,
    /// A fatal error: giving messages back, then exiting non-zero.
    Failed,
}

impl ServiceState {
    const ALL: [ServiceState; 4] = [
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Stopping,
        ServiceState::Failed,
    ];

    /// The label value of `veil_state`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Stopping => "stopping",
            ServiceState::Failed => "failed",
        }
    }
}

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
    /// Messages received (redeliveries included).
    pub received: AtomicU64,
    /// ReceiveMessage calls that returned messages.
    pub receive_calls: AtomicU64,
    /// Rows written.
    pub written: AtomicU64,
    /// Messages skipped as already recorded.
    pub duplicates: AtomicU64,
    /// Messages deleted from the queue.
    pub deleted: AtomicU64,
    /// Recorded messages SQS did not delete.
    pub delete_failures: AtomicU64,
    /// Unrecorded messages given back to the queue (visibility 0).
    pub released: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Visibility extensions SQS confirmed.
    pub visibility_extensions: AtomicU64,
    /// Messages held now (received, not yet deleted or released).
    pub in_flight: AtomicU64,
    /// Bytes held now, as the in-flight bound counts them.
    pub in_flight_bytes: AtomicU64,
    /// The bound on messages held (`--max-in-flight`).
    pub in_flight_limit: AtomicU64,
    /// The bound on bytes held (`--max-in-flight-bytes`).
    pub in_flight_bytes_limit: AtomicU64,
    /// The queue's depth at the last successful read (None before one).
    pub queue_depth: Mutex<Option<QueueDepth>>,
    /// Housekeeping passes, by result (done, skipped, failed).
    pub housekeeping_runs: LabelledCounts,
    /// Partitions housekeeping created.
    pub partitions_created: AtomicU64,
    /// Partitions housekeeping dropped past their retention.
    pub partitions_dropped: AtomicU64,
    /// Rows housekeeping deleted (default and no-send-time partitions).
    pub housekeeping_rows_deleted: AtomicU64,
    /// Unix time of the last housekeeping pass that completed (0: none).
    pub housekeeping_last_success: AtomicU64,
    /// This process's role may not do housekeeping: it is left to `veil
    /// maintain` run by the tables' owner, and the loop is parked.
    pub housekeeping_delegated: AtomicBool,
    /// SQS call failures, by operation.
    pub sqs_errors: LabelledCounts,
    /// Postgres failures, by kind (transient, duplicate, data, fatal).
    pub postgres_errors: LabelledCounts,
    /// Batch write latency.
    pub batch_seconds: Histogram,
    /// The last SQS call succeeded.
    pub sqs_ready: AtomicBool,
    /// The last Postgres write succeeded.
    pub postgres_ready: AtomicBool,
    quarantined: LabelledCounts,
    state: AtomicU8,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: AtomicU64::new(0),
            receive_calls: AtomicU64::new(0),
            written: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            delete_failures: AtomicU64::new(0),
            released: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            visibility_extensions: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            in_flight_bytes: AtomicU64::new(0),
            in_flight_limit: AtomicU64::new(0),
            in_flight_bytes_limit: AtomicU64::new(0),
            queue_depth: Mutex::new(None),
            housekeeping_runs: LabelledCounts::default(),
            partitions_created: AtomicU64::new(0),
            partitions_dropped: AtomicU64::new(0),
            housekeeping_rows_deleted: AtomicU64::new(0),
            housekeeping_last_success: AtomicU64::new(0),
            housekeeping_delegated: AtomicBool::new(false),
            sqs_errors: LabelledCounts::default(),
            postgres_errors: LabelledCounts::default(),
            batch_seconds: Histogram::default(),
            sqs_ready: AtomicBool::new(true),
            postgres_ready: AtomicBool::new(true),
            quarantined: LabelledCounts::default(),
            state: AtomicU8::new(0),
        }
    }
}

/// Reads a counter or gauge.
pub fn get(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

impl Metrics {
    /// Counts one quarantined message.
    pub fn quarantine(&self, reason: &'static str) {
        self.quarantined.add(reason, 1);
    }

    /// Quarantined messages by reason code so far.
    pub fn quarantined_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.quarantined.snapshot()
    }

    /// Messages quarantined so far, all reasons.
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.total()
    }

    /// Moves the service to `state`.
    pub fn set_state(&self, state: ServiceState) {
        let index = ServiceState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.state.store(index as u8, Ordering::SeqCst);
    }

    /// The current state.
    pub fn state(&self) -> ServiceState {
        ServiceState::ALL[usize::from(self.state.load(Ordering::SeqCst)) % ServiceState::ALL.len()]
    }

    /// Whether `/readyz` says 200, and its body (the state, each
    /// dependency, and whether housekeeping is delegated to `veil
    /// maintain`, which does not make veil unready).
    pub fn readiness(&self) -> (bool, String) {
        let state = self.state();
        let sqs = self.sqs_ready.load(Ordering::Relaxed);
        let postgres = self.postgres_ready.load(Ordering::Relaxed);
        let up = |ok: bool| if ok { "ok" } else { "unavailable" };
        let housekeeping = if self.housekeeping_delegated.load(Ordering::Relaxed) {
            "delegated (this role may not; `veil maintain` as the tables' owner does it)"
        } else {
            "here"
        };
        (
            state == ServiceState::Running && sqs && postgres,
            format!(
                "state {}\nsqs {}\npostgres {}\nhousekeeping {housekeeping}\n",
                state.name(),
                up(sqs),
                up(postgres)
            ),
        )
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let simple = [
            ("veil_messages_received_total", "counter", "Messages received from SQS, redeliveries included.", &self.received),
            ("veil_sqs_receive_calls_total", "counter", "ReceiveMessage calls that returned messages (at most 10 each).", &self.receive_calls),
            ("veil_rows_written_total", "counter", "Rows inserted into user_logins.", &self.written),
            ("veil_duplicates_skipped_total", "counter", "Messages skipped because the ledger already had them.", &self.duplicates),
            ("veil_messages_deleted_total", "counter", "Recorded messages deleted from SQS.", &self.deleted),
            ("veil_delete_failures_total", "counter", "Recorded messages SQS did not delete (they are skipped when redelivered).", &self.delete_failures),
            ("veil_messages_released_total", "counter", "Unrecorded messages given back to the queue (visibility 0) on shutdown or a fatal error.", &self.released),
            ("veil_batches_total", "counter", "Postgres batches committed.", &self.batches),
            ("veil_visibility_extensions_total", "counter", "Visibility extensions SQS confirmed for slow messages.", &self.visibility_extensions),
            ("veil_messages_in_flight", "gauge", "Messages held now: received, not yet deleted or released.", &self.in_flight),
            ("veil_messages_in_flight_limit", "gauge", "Most messages veil holds at once (--max-in-flight).", &self.in_flight_limit),
            ("veil_in_flight_bytes", "gauge", "Bytes held now, as the in-flight bound counts them (bodies, receipts, prepared rows, room reserved for receives under way).", &self.in_flight_bytes),
            ("veil_in_flight_bytes_limit", "gauge", "Most bytes veil holds at once (--max-in-flight-bytes).", &self.in_flight_bytes_limit),
            ("veil_partitions_created_total", "counter", "Partitions housekeeping created (ledger days, user_logins months or days).", &self.partitions_created),
            ("veil_partitions_dropped_total", "counter", "Partitions housekeeping dropped past their retention.", &self.partitions_dropped),
            ("veil_housekeeping_rows_deleted_total", "counter", "Ledger entries and rows housekeeping deleted outside the dropped partitions.", &self.housekeeping_rows_deleted),
            ("veil_housekeeping_last_success_timestamp_seconds", "gauge", "When this process last completed a housekeeping pass (0: never; processes that skip, because another holds the lock, stay at 0).", &self.housekeeping_last_success),
        ];
        // Writing to a String cannot fail.
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(value)
            );
        }
        let _ = writeln!(
            out,
            "# HELP veil_housekeeping_delegated 1 when this process's role may not do housekeeping and leaves it to `veil maintain` run by the tables' owner.\n# TYPE veil_housekeeping_delegated gauge\nveil_housekeeping_delegated {}",
            u8::from(self.housekeeping_delegated.load(Ordering::Relaxed))
        );
        let by_reason = self.quarantined_by_reason();
        let reasons = RejectReason::ALL.iter().map(|reason| {
            (
                reason.code(),
                by_reason.get(reason.code()).copied().unwrap_or(0),
            )
        });
        labelled(
            &mut out,
            "veil_messages_quarantined_total",
            "counter",
            "Messages quarantined, by reason.",
            "reason",
            reasons,
        );
        labelled(
            &mut out,
            "veil_housekeeping_runs_total",
            "counter",
            "Housekeeping passes: done, skipped (another veil held the lock), failed.",
            "result",
            self.housekeeping_runs.snapshot().into_iter(),
        );
        labelled(
            &mut out,
            "veil_sqs_errors_total",
            "counter",
            "SQS call failures, by operation.",
            "operation",
            self.sqs_errors.snapshot().into_iter(),
        );
        labelled(
            &mut out,
            "veil_postgres_errors_total",
            "counter",
            "Postgres failures, by kind.",
            "kind",
            self.postgres_errors.snapshot().into_iter(),
        );
        self.render_histogram(&mut out);
        let ready = |flag: &AtomicBool| u64::from(flag.load(Ordering::Relaxed));
        let dependencies = [
            ("sqs", ready(&self.sqs_ready)),
            ("postgres", ready(&self.postgres_ready)),
        ];
        labelled(
            &mut out,
            "veil_up",
            "gauge",
            "Whether the last call to each dependency succeeded.",
            "dependency",
            dependencies.into_iter(),
        );
        let depth = *self.queue_depth.lock().expect("queue depth lock");
        if let Some(depth) = depth {
            labelled(
                &mut out,
                "veil_queue_messages",
                "gauge",
                "Messages in the queue at the last read (--queue-depth-interval-secs): visible ones wait, in_flight ones are received by some consumer and not yet deleted.",
                "state",
                [("visible", depth.visible), ("in_flight", depth.in_flight)].into_iter(),
            );
        }
        let current = self.state();
        let states = ServiceState::ALL
            .iter()
            .map(|state| (state.name(), u64::from(*state == current)));
        labelled(
            &mut out,
            "veil_state",
            "gauge",
            "1 for the state the service is in (starting, running, stopping, failed).",
            "state",
            states,
        );
        out
    }

    fn render_histogram(&self, out: &mut String) {
        let (buckets, sum, count) = self.batch_seconds.snapshot();
        let name = "veil_batch_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to record one batch in Postgres.\n# TYPE {name} histogram"
        );
        for (bound, cumulative) in buckets {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
}

/// Counter totals at the last EMF line, so each line carries what happened
/// since (CloudWatch sums what it receives).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmfTotals {
    received: u64,
    written: u64,
    quarantined: u64,
    duplicates: u64,
    deleted: u64,
    delete_failures: u64,
    released: u64,
    errors: u64,
    batches: u64,
}

/// The CloudWatch namespace of veil's own metrics.
pub const EMF_NAMESPACE: &str = "veil";

impl Metrics {
    /// One CloudWatch Embedded Metric Format line (a JSON object; no
    /// newline): counts since `last` (then updated), and the current
    /// gauges, in namespace `veil` with the dimension `Service=veil`.
    pub fn render_emf(&self, last: &mut EmfTotals, timestamp_ms: i64) -> String {
        let now = EmfTotals {
            received: get(&self.received),
            written: get(&self.written),
            quarantined: self.quarantined_total(),
            duplicates: get(&self.duplicates),
            deleted: get(&self.deleted),
            delete_failures: get(&self.delete_failures),
            released: get(&self.released),
            errors: self.sqs_errors.total() + self.postgres_errors.total(),
            batches: get(&self.batches),
        };
        let since = |now: u64, then: u64| now.saturating_sub(then);
        let ready = u64::from(self.readiness().0);
        let values: [(&str, &str, u64); 12] = [
            (
                "MessagesReceived",
                "Count",
                since(now.received, last.received),
            ),
            ("RowsWritten", "Count", since(now.written, last.written)),
            (
                "MessagesQuarantined",
                "Count",
                since(now.quarantined, last.quarantined),
            ),
            (
                "DuplicatesSkipped",
                "Count",
                since(now.duplicates, last.duplicates),
            ),
            ("MessagesDeleted", "Count", since(now.deleted, last.deleted)),
            (
                "DeleteFailures",
                "Count",
                since(now.delete_failures, last.delete_failures),
            ),
            (
                "MessagesReleased",
                "Count",
                since(now.released, last.released),
            ),
            ("Errors", "Count", since(now.errors, last.errors)),
            (
                "BatchesCommitted",
                "Count",
                since(now.batches, last.batches),
            ),
            ("MessagesInFlight", "Count", get(&self.in_flight)),
            ("InFlightBytes", "Bytes", get(&self.in_flight_bytes)),
            ("Ready", "None", ready),
        ];
        *last = now;
        let definitions: Vec<serde_json::Value> = values
            .iter()
            .map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit}))
            .collect();
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": [["Service"]],
                    "Metrics": definitions,
                }],
            },
            "Service": "veil",
            "State": self.state().name(),
        });
        for (name, _, value) in values {
            line[name] = value.into();
        }
        line.to_string()
    }
}

impl Metrics {
    /// One EMF line on stdout: the counts since `last` (then updated).
    pub fn print_emf_line(&self, last: &mut EmfTotals) {
        use std::io::Write;
        let line = self.render_emf(last, chrono::Utc::now().timestamp_millis());
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    }
}

/// Writes an EMF line to stdout every `interval` until `stop`, and a last
/// one then, so nothing counted is left out. CloudWatch Logs (the awslogs
/// driver, the agent) turns each line into metrics; no agent of veil's own.
pub async fn write_emf_lines(
    metrics: std::sync::Arc<Metrics>,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut last = EmfTotals::default();
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        metrics.print_emf_line(&mut last);
        if stopping {
            return;
        }
    }
}

fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'static str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value, count) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.received.store(7, Ordering::Relaxed);
        metrics.sqs_errors.add("receive", 1);
        metrics
            .batch_seconds
            .observe(std::time::Duration::from_millis(30));
        metrics.set_state(ServiceState::Failed);

        let text = metrics.render_prometheus();

        assert!(text.contains("veil_messages_received_total 7\n"));
        assert!(text.contains("veil_messages_quarantined_total{reason=\"not_json\"} 0\n"));
        assert!(text.contains("veil_sqs_errors_total{operation=\"receive\"} 1\n"));
        assert!(text.contains("veil_batch_duration_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("veil_batch_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("veil_batch_duration_seconds_count 1\n"));
        assert!(text.contains("veil_state{state=\"failed\"} 1\n"));
        assert!(text.contains("veil_state{state=\"running\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }

    #[test]
    fn emf_lines_follow_the_embedded_metric_format_and_count_since_the_last() {
        let metrics = Metrics::default();
        metrics.received.store(10, Ordering::Relaxed);
        metrics.sqs_errors.add("receive", 2);
        let mut last = EmfTotals::default();
        let first = metrics.render_emf(&mut last, 1_764_072_000_000);
        metrics.received.store(25, Ordering::Relaxed);
        let second = metrics.render_emf(&mut last, 1_764_072_060_000);

        for (line, received, errors) in [(&first, 10, 2), (&second, 15, 0)] {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(!line.contains('\n'), "one line");
            let aws = &value["_aws"];
            assert!(aws["Timestamp"].is_i64());
            let directive = &aws["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], EMF_NAMESPACE);
            // Every dimension named is a string member of the line.
            for set in directive["Dimensions"].as_array().unwrap() {
                for key in set.as_array().unwrap() {
                    assert!(value[key.as_str().unwrap()].is_string(), "{key}");
                }
            }
            // Every metric named is a number member, with a CloudWatch unit.
            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(metrics.len() <= 100, "EMF allows 100 metrics per directive");
            for metric in metrics {
                let name = metric["Name"].as_str().unwrap();
                assert!(value[name].is_u64(), "{name}");
                assert!(["Count", "Bytes", "None"].contains(&metric["Unit"].as_str().unwrap()));
            }
            assert_eq!(value["MessagesReceived"], received);
            assert_eq!(value["Errors"], errors);
        }
    }

    #[test]
    fn ready_only_while_running_with_both_dependencies_up() {
        let metrics = Metrics::default();
        assert!(!metrics.readiness().0, "starting is not ready");
        metrics.set_state(ServiceState::Running);
        assert_eq!(
            metrics.readiness(),
            (
                true,
                "state running\nsqs ok\npostgres ok\nhousekeeping here\n".into()
            )
        );
        metrics.postgres_ready.store(false, Ordering::Relaxed);
        assert!(!metrics.readiness().0);
        metrics.postgres_ready.store(true, Ordering::Relaxed);
        metrics.set_state(ServiceState::Failed);
        assert_eq!(
            metrics.readiness(),
            (
                false,
                "state failed\nsqs ok\npostgres ok\nhousekeeping here\n".into()
            )
        );
    }
}
