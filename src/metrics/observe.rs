//! Observations: what happened, as verbs on `Metrics` that count it and
//! log it in one call (Vector's internal events), so a stage says
//! `metrics.batch_committed(..)` and the counter, the readiness flag and
//! the log line cannot drift apart. A new kind of input (a contract, the
//! Lambda handler) reuses them and needs no plumbing of its own.

use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Family;
use super::Metrics;
use super::Number;
use crate::postgres::maintain::{describe, HousekeepingReport};
use crate::postgres::rights::Lacking;
use crate::postgres::WriteError;
use crate::record::Recorded;

/// What one committed batch held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Rows written.
    pub written: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Messages already recorded.
    pub duplicates: u64,
}

impl Metrics {
    /// `count` messages came back from one receive call.
    pub fn received_messages(&self, count: usize) {
        self.add(Number::Received, count as u64);
        self.add(Number::ReceiveCalls, 1);
    }

    /// An SQS call succeeded: SQS is reachable again.
    pub fn sqs_answered(&self) {
        self.sqs_ready.store(true, Ordering::Relaxed);
    }

    /// An SQS call (`operation`: receive, delete, release,
    /// extend_visibility, depth) failed for a passing reason, or was read
    /// only to observe: counted, logged with what happens next. `unready`:
    /// the pipeline waits on SQS until a call succeeds (`/readyz` says so).
    pub fn sqs_failed(
        &self,
        operation: &'static str,
        error: &dyn Display,
        unready: bool,
        next: &str,
    ) {
        self.family(Family::SqsErrors).add(operation, 1);
        if unready {
            self.sqs_ready.store(false, Ordering::Relaxed);
        }
        tracing::warn!(operation, %error, "{next}");
    }

    /// A batch committed in `elapsed`: its results counted (quarantines by
    /// reason), the latency observed, one "batch committed" line.
    pub fn batch_committed(&self, results: &[Recorded], elapsed: Duration) -> BatchCounts {
        self.batch_seconds.observe(elapsed);
        self.add(Number::Batches, 1);
        self.postgres_ready.store(true, Ordering::Relaxed);
        let mut counts = BatchCounts::default();
        for result in results {
            match result {
                Recorded::Written => counts.written += 1,
                Recorded::Quarantined(reason) => {
                    counts.quarantined += 1;
                    self.quarantine(reason.code());
                }
                Recorded::Duplicate => counts.duplicates += 1,
            }
        }
        self.add(Number::Written, counts.written);
        self.add(Number::Duplicates, counts.duplicates);
        tracing::info!(
            messages = results.len(),
            written = counts.written,
            quarantined = counts.quarantined,
            duplicates = counts.duplicates,
            write_ms = elapsed.as_millis() as u64,
            "batch committed"
        );
        counts
    }

    /// A batch could not be recorded for a passing reason and is retried
    /// after `retry_in` on a new connection.
    pub fn database_unavailable(&self, error: &WriteError, retry_in: Duration) {
        self.family(Family::PostgresErrors).add(error.kind(), 1);
        self.postgres_ready.store(false, Ordering::Relaxed);
        tracing::warn!(
            error = %crate::error::std_error_chain(error),
            retry_in_ms = retry_in.as_millis() as u64,
            "database unavailable; batch not recorded yet"
        );
    }

    /// Writing stopped on an error no retry mends (the caller fails the
    /// process or the invocation with it, which logs it).
    pub fn database_failed(&self, error: &WriteError) {
        self.family(Family::PostgresErrors).add(error.kind(), 1);
    }

    /// Postgres refused a value of this message: it is quarantined as
    /// `db_rejected` instead.
    pub fn value_rejected(&self, message_id: &str) {
        self.family(Family::PostgresErrors).add("data", 1);
        tracing::warn!(
            message_id,
            "Postgres rejected a value; quarantining the message"
        );
    }

    /// SQS deleted `count` recorded messages.
    pub fn deleted_messages(&self, count: usize) {
        self.add(Number::Deleted, count as u64);
    }

    /// Recorded messages SQS did not delete: they come back and the ledger
    /// skips them. `why` is logged with their count.
    pub fn delete_failed(&self, count: usize, why: &dyn Display) {
        self.add(Number::DeleteFailures, count as u64);
        tracing::warn!(
            messages = count,
            %why,
            "SQS did not delete recorded messages; they will be skipped when redelivered"
        );
    }

    /// `done` unrecorded messages given back to the queue (visibility 0);
    /// `failed` could not be, with the error.
    pub fn released_messages(&self, done: usize, failed: Option<(usize, &dyn Display)>) {
        self.add(Number::Released, done as u64);
        if let Some((count, error)) = failed {
            self.family(Family::SqsErrors).add("release", 1);
            tracing::warn!(%error, messages = count, "could not release messages; they return after their visibility timeout");
        }
        tracing::info!(
            released = done,
            "gave unrecorded messages back to the queue"
        );
    }

    /// SQS extended the visibility of `count` held messages.
    pub fn visibility_extended(&self, count: usize) {
        self.add(Number::VisibilityExtensions, count as u64);
    }

    /// A housekeeping pass completed (perhaps with failed steps): its
    /// partitions and deletions counted, its summary logged when it changed
    /// something or a step failed.
    pub fn housekeeping_done(&self, report: &HousekeepingReport) {
        if report.skipped {
            self.family(Family::HousekeepingRuns).add("skipped", 1);
            tracing::debug!("{}", describe(report));
            return;
        }
        let failed = !report.failures.is_empty();
        self.family(Family::HousekeepingRuns)
            .add(if failed { "failed" } else { "done" }, 1);
        self.add(Number::PartitionsCreated, report.created.len() as u64);
        self.add(Number::PartitionsDropped, report.dropped.len() as u64);
        self.add(
            Number::HousekeepingRowsDeleted,
            report.pruned_entries + report.pruned_rows,
        );
        if failed {
            tracing::warn!(
                created = report.created.len(),
                failed = report.failures.len(),
                "{}; the rest is tried again at the next interval",
                describe(report)
            );
            return;
        }
        self.set(
            Number::HousekeepingLastSuccess,
            chrono::Utc::now().timestamp().max(0) as u64,
        );
        let changed = !report.created.is_empty()
            || !report.dropped.is_empty()
            || report.pruned_entries + report.pruned_rows > 0
            || report.retired.is_some();
        if changed {
            tracing::info!(
                created = report.created.len(),
                dropped = report.dropped.len(),
                "{}",
                describe(report)
            );
        }
    }

    /// The role lacks what housekeeping needs: it is delegated to `veil
    /// maintain` run by the owner (`housekeeping_delegated`), said once.
    pub fn housekeeping_delegated_to(&self, lacking: &Lacking) {
        if self.housekeeping_delegated.swap(true, Ordering::Relaxed) {
            return;
        }
        let owner = lacking.who_may();
        let role = if lacking.role.is_empty() {
            "this role".to_string()
        } else {
            format!("role {}", lacking.role)
        };
        tracing::warn!(
            role = %lacking.role,
            lacks = %lacking.list(),
            "housekeeping delegated: {role} lacks {}, so this veil leaves partitions to `veil maintain` \
             run by {owner} (a cron job, a Kubernetes CronJob, a scheduled ECS task). \
             veil keeps recording; until maintain runs, rows of days without a partition land in the default \
             partitions and nothing old is dropped",
            lacking.list(),
        );
    }

    /// A housekeeping pass could not run (`what`: "could not connect", ...);
    /// it is tried again at the next interval.
    pub fn housekeeping_failed(&self, what: &str, error: &anyhow::Error) {
        self.family(Family::HousekeepingRuns).add("failed", 1);
        tracing::warn!(
            error = %crate::error::error_chain(error),
            "housekeeping {what}; trying again at the next interval"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RejectReason;

    #[test]
    fn a_committed_batch_counts_each_result_and_its_reason() {
        let metrics = Metrics::default();
        metrics.postgres_ready.store(false, Ordering::Relaxed);
        let counts = metrics.batch_committed(
            &[
                Recorded::Written,
                Recorded::Written,
                Recorded::Duplicate,
                Recorded::Quarantined(RejectReason::NotJson),
            ],
            Duration::from_millis(3),
        );
        assert_eq!(
            counts,
            BatchCounts {
                written: 2,
                quarantined: 1,
                duplicates: 1
            }
        );
        assert_eq!(metrics.get(Number::Written), 2);
        assert_eq!(metrics.get(Number::Batches), 1);
        assert_eq!(metrics.quarantined_total(), 1);
        assert!(metrics.postgres_ready.load(Ordering::Relaxed));
    }

    #[test]
    fn a_failed_sqs_call_counts_by_operation_and_may_make_veil_unready() {
        let metrics = Metrics::default();
        metrics.sqs_failed("depth", &"timed out", false, "could not read the depth");
        assert!(metrics.sqs_ready.load(Ordering::Relaxed));
        metrics.sqs_failed("receive", &"refused", true, "receive failed");
        assert!(!metrics.sqs_ready.load(Ordering::Relaxed));
        assert_eq!(metrics.family(Family::SqsErrors).total(), 2);
        metrics.sqs_answered();
        assert!(metrics.sqs_ready.load(Ordering::Relaxed));
    }
}
