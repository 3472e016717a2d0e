//! The one table of every metric veil reports: its Prometheus name, type
//! and help, its label, and its CloudWatch (EMF) name and unit. `/metrics`
//! and the EMF lines are both rendered from it, in its order, so a metric
//! is named once. docs/operations.md lists the same names.

/// A number veil keeps (a counter or a gauge without labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    /// Messages received (redeliveries included).
    Received,
    /// ReceiveMessage calls that returned messages.
    ReceiveCalls,
    /// Rows written.
    Written,
    /// Messages skipped as already recorded.
    Duplicates,
    /// Messages deleted from the queue.
    Deleted,
    /// Recorded messages SQS did not delete.
    DeleteFailures,
    /// Unrecorded messages given back to the queue (visibility 0).
    Released,
    /// Batches committed.
    Batches,
    /// Visibility extensions SQS confirmed.
    VisibilityExtensions,
    /// Messages held now (received, not yet deleted or released).
    InFlight,
    /// The bound on messages held (`--max-in-flight`).
    InFlightLimit,
    /// Bytes held now, as the in-flight bound counts them.
    InFlightBytes,
    /// The bound on bytes held (`--max-in-flight-bytes`).
    InFlightBytesLimit,
    /// Partitions housekeeping created.
    PartitionsCreated,
    /// Partitions housekeeping dropped past their retention.
    PartitionsDropped,
    /// Rows housekeeping deleted (default and no-send-time partitions).
    HousekeepingRowsDeleted,
    /// Unix time of the last housekeeping pass that completed (0: none).
    HousekeepingLastSuccess,
}

impl Number {
    /// How many there are (the length of `Metrics`' array of them).
    pub const COUNT: usize = 17;
}

/// Counts by one label from a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Messages quarantined, by reason code.
    Quarantined,
    /// Housekeeping passes, by result.
    HousekeepingRuns,
    /// SQS call failures, by operation.
    SqsErrors,
    /// Postgres failures, by kind.
    PostgresErrors,
}

impl Family {
    /// How many there are.
    pub const COUNT: usize = 4;
}

/// What a table row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A number of `Metrics`.
    Number(Number),
    /// A labelled family of `Metrics`.
    Family(Family),
    /// 1 when housekeeping is left to `veil maintain`.
    Delegated,
    /// The batch latency histogram.
    BatchSeconds,
    /// Whether the last call to each dependency succeeded.
    Up,
    /// The queue's depth at the last read.
    QueueMessages,
    /// The service's state.
    State,
    /// Whether `/readyz` would say 200.
    Ready,
}

/// The Prometheus side of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prometheus {
    /// The metric's name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Its HELP text.
    pub help: &'static str,
    /// The label of a labelled row.
    pub label: Option<&'static str>,
}

/// The CloudWatch side of a row (one EMF value; rows of one name are summed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emf {
    /// The CloudWatch metric name.
    pub name: &'static str,
    /// Its unit (`Count`, `Bytes`, `None`).
    pub unit: &'static str,
    /// Sent as what happened since the last line (a counter), not as the
    /// current value (a gauge).
    pub delta: bool,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// What it measures.
    pub source: Source,
    /// How `/metrics` shows it (None: not there).
    pub prometheus: Option<Prometheus>,
    /// How an EMF line carries it (None: not there).
    pub emf: Option<Emf>,
}

const fn prometheus(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
) -> Option<Prometheus> {
    Some(Prometheus {
        name,
        kind,
        help,
        label: None,
    })
}

const fn labelled(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    label: &'static str,
) -> Option<Prometheus> {
    Some(Prometheus {
        name,
        kind,
        help,
        label: Some(label),
    })
}

const fn counted(name: &'static str) -> Option<Emf> {
    Some(Emf {
        name,
        unit: "Count",
        delta: true,
    })
}

const fn gauge(name: &'static str, unit: &'static str) -> Option<Emf> {
    Some(Emf {
        name,
        unit,
        delta: false,
    })
}

const fn number(number: Number, prometheus: Option<Prometheus>, emf: Option<Emf>) -> Row {
    Row {
        source: Source::Number(number),
        prometheus,
        emf,
    }
}

/// Every metric, in the order `/metrics` lists them.
pub const TABLE: [Row; 27] = [
    number(Number::Received, prometheus("veil_messages_received_total", "counter", "Messages received from SQS, redeliveries included."), counted("MessagesReceived")),
    number(Number::ReceiveCalls, prometheus("veil_sqs_receive_calls_total", "counter", "ReceiveMessage calls that returned messages (at most 10 each)."), None),
    number(Number::Written, prometheus("veil_rows_written_total", "counter", "Rows inserted into the contracts' tables (user_logins without --contract)."), counted("RowsWritten")),
    number(Number::Duplicates, prometheus("veil_duplicates_skipped_total", "counter", "Messages skipped because the ledger already had them."), counted("DuplicatesSkipped")),
    number(Number::Deleted, prometheus("veil_messages_deleted_total", "counter", "Recorded messages deleted from SQS."), counted("MessagesDeleted")),
    number(Number::DeleteFailures, prometheus("veil_delete_failures_total", "counter", "Recorded messages SQS did not delete (they are skipped when redelivered)."), counted("DeleteFailures")),
    number(Number::Released, prometheus("veil_messages_released_total", "counter", "Unrecorded messages given back to the queue (visibility 0) on shutdown or a fatal error."), counted("MessagesReleased")),
    number(Number::Batches, prometheus("veil_batches_total", "counter", "Postgres batches committed."), counted("BatchesCommitted")),
    number(Number::VisibilityExtensions, prometheus("veil_visibility_extensions_total", "counter", "Visibility extensions SQS confirmed for slow messages."), None),
    number(Number::InFlight, prometheus("veil_messages_in_flight", "gauge", "Messages held now: received, not yet deleted or released."), gauge("MessagesInFlight", "Count")),
    number(Number::InFlightLimit, prometheus("veil_messages_in_flight_limit", "gauge", "Most messages veil holds at once (--max-in-flight)."), None),
    number(Number::InFlightBytes, prometheus("veil_in_flight_bytes", "gauge", "Bytes held now, as the in-flight bound counts them (bodies, receipts, prepared rows, room reserved for receives under way)."), gauge("InFlightBytes", "Bytes")),
    number(Number::InFlightBytesLimit, prometheus("veil_in_flight_bytes_limit", "gauge", "Most bytes veil holds at once (--max-in-flight-bytes)."), None),
    number(Number::PartitionsCreated, prometheus("veil_partitions_created_total", "counter", "Partitions housekeeping created (ledger days, the contract tables' months or days)."), None),
    number(Number::PartitionsDropped, prometheus("veil_partitions_dropped_total", "counter", "Partitions housekeeping dropped past their retention."), None),
    number(Number::HousekeepingRowsDeleted, prometheus("veil_housekeeping_rows_deleted_total", "counter", "Ledger entries and rows housekeeping deleted outside the dropped partitions."), None),
    number(Number::HousekeepingLastSuccess, prometheus("veil_housekeeping_last_success_timestamp_seconds", "gauge", "When this process last completed a housekeeping pass (0: never; processes that skip, because another holds the lock, stay at 0)."), None),
    Row { source: Source::Delegated, prometheus: prometheus("veil_housekeeping_delegated", "gauge", "1 when this process's role may not do housekeeping and leaves it to `veil maintain` run by the tables' owner."), emf: None },
    Row { source: Source::Family(Family::Quarantined), prometheus: labelled("veil_messages_quarantined_total", "counter", "Messages quarantined, by reason.", "reason"), emf: counted("MessagesQuarantined") },
    Row { source: Source::Family(Family::HousekeepingRuns), prometheus: labelled("veil_housekeeping_runs_total", "counter", "Housekeeping passes: done, skipped (another veil held the lock), failed.", "result"), emf: None },
    Row { source: Source::Family(Family::SqsErrors), prometheus: labelled("veil_sqs_errors_total", "counter", "SQS call failures, by operation.", "operation"), emf: counted("Errors") },
    Row { source: Source::Family(Family::PostgresErrors), prometheus: labelled("veil_postgres_errors_total", "counter", "Postgres failures, by kind.", "kind"), emf: counted("Errors") },
    Row { source: Source::BatchSeconds, prometheus: prometheus("veil_batch_duration_seconds", "histogram", "Time to record one batch in Postgres."), emf: None },
    Row { source: Source::Up, prometheus: labelled("veil_up", "gauge", "Whether the last call to each dependency succeeded.", "dependency"), emf: None },
    Row { source: Source::QueueMessages, prometheus: labelled("veil_queue_messages", "gauge", "Messages in the queue at the last read (--queue-depth-interval-secs): visible ones wait, in_flight ones are received by some consumer and not yet deleted.", "state"), emf: None },
    Row { source: Source::State, prometheus: labelled("veil_state", "gauge", "1 for the state the service is in (starting, running, stopping, failed).", "state"), emf: None },
    Row { source: Source::Ready, prometheus: None, emf: gauge("Ready", "None") },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_and_family_has_one_row_and_names_are_unique() {
        for (index, count) in [(0, Number::COUNT), (1, Family::COUNT)] {
            let rows = TABLE
                .iter()
                .filter(|row| {
                    matches!(
                        (index, row.source),
                        (0, Source::Number(_)) | (1, Source::Family(_))
                    )
                })
                .count();
            assert_eq!(rows, count);
        }
        let names: Vec<&str> = TABLE
            .iter()
            .filter_map(|row| row.prometheus.map(|p| p.name))
            .collect();
        let unique: std::collections::HashSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
