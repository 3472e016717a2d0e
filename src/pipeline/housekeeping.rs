//! Housekeeping inside `veil run`: one pass at start (so today's
//! partitions exist before the first batch) and one every interval, on a
//! connection of its own. Each pass logs what it did and counts it.
//!
//! Housekeeping is never fatal. Under a role that may not create, attach,
//! drop or prune partitions (the least-privilege pipeline role of
//! `sql/roles.sql`), veil says once, at start, what the role lacks and who
//! must run `veil maintain`, shows `housekeeping delegated` on `/readyz`
//! and `veil_housekeeping_delegated` on `/metrics`, and parks the loop:
//! recording goes on. A pass that fails for any other reason is retried at
//! the next interval.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::postgres::maintain::{describe, maintain, missing_rights, HousekeepingPolicy};
use crate::postgres::rights::Lacking;
use crate::postgres::{lacks_privilege, Database, DatabaseSettings};

/// Marks housekeeping as delegated to `veil maintain` and says so once.
fn delegate(metrics: &Metrics, lacking: &Lacking) {
    if metrics.housekeeping_delegated.swap(true, Ordering::Relaxed) {
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

/// One pass on `client`; logs and counts it. When the role lacks the
/// rights, housekeeping becomes delegated (`Metrics::housekeeping_delegated`)
/// and later passes do nothing.
pub async fn pass(
    client: &mut crate::postgres::Client,
    policy: &HousekeepingPolicy,
    metrics: &Metrics,
) {
    if metrics.housekeeping_delegated.load(Ordering::Relaxed) {
        return;
    }
    match missing_rights(client, policy).await {
        Ok(lacking) if !lacking.is_empty() => return delegate(metrics, &lacking),
        Ok(_) => {}
        Err(error) => {
            metrics.housekeeping_runs.add("failed", 1);
            tracing::warn!(error = %crate::error::error_chain(&error), "housekeeping could not read its rights; trying again at the next interval");
            return;
        }
    }
    match maintain(client, policy, Duration::ZERO).await {
        Ok(report) if report.skipped => {
            metrics.housekeeping_runs.add("skipped", 1);
            tracing::debug!("{}", describe(&report));
        }
        Ok(report) => count(metrics, &report),
        Err(error) if lacks_privilege(&error) => {
            metrics.housekeeping_runs.add("failed", 1);
            let lacking = Lacking {
                missing: vec![crate::error::error_chain(&error)],
                ..Lacking::default()
            };
            delegate(metrics, &lacking);
        }
        Err(error) => {
            metrics.housekeeping_runs.add("failed", 1);
            tracing::warn!(error = %crate::error::error_chain(&error), "housekeeping failed; trying again at the next interval");
        }
    }
}

/// Counts and logs what a completed pass did.
fn count(metrics: &Metrics, report: &crate::postgres::maintain::HousekeepingReport) {
    let outcome = if report.failures.is_empty() {
        "done"
    } else {
        "failed"
    };
    metrics.housekeeping_runs.add(outcome, 1);
    metrics
        .partitions_created
        .fetch_add(report.created.len() as u64, Ordering::Relaxed);
    metrics
        .partitions_dropped
        .fetch_add(report.dropped.len() as u64, Ordering::Relaxed);
    metrics.housekeeping_rows_deleted.fetch_add(
        report.pruned_entries + report.pruned_rows,
        Ordering::Relaxed,
    );
    if report.failures.is_empty() {
        metrics.housekeeping_last_success.store(
            chrono::Utc::now().timestamp().max(0) as u64,
            Ordering::Relaxed,
        );
    }
    let changed = !report.created.is_empty()
        || !report.dropped.is_empty()
        || report.pruned_entries + report.pruned_rows > 0
        || report.retired.is_some();
    if !report.failures.is_empty() {
        tracing::warn!(
            created = report.created.len(),
            failed = report.failures.len(),
            "{}; the rest is tried again at the next interval",
            describe(report)
        );
    } else if changed {
        tracing::info!(
            created = report.created.len(),
            dropped = report.dropped.len(),
            "{}",
            describe(report)
        );
    }
}

/// A pass every `interval` until `stop`, on its own connection. Once
/// housekeeping is delegated, it parks until `stop`: a background task
/// must not end early, and housekeeping is never a reason to stop veil.
pub async fn housekeeping_loop(
    database: DatabaseSettings,
    policy: HousekeepingPolicy,
    interval: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut connection: Option<Database> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if metrics.housekeeping_delegated.load(Ordering::Relaxed) {
            drop(connection.take());
            stop.cancelled().await;
            return;
        }
        if connection.is_none() {
            match Database::connect(database.clone()).await {
                Ok(database) => connection = Some(database),
                Err(error) => {
                    metrics.housekeeping_runs.add("failed", 1);
                    tracing::warn!(error = %crate::error::error_chain(&error), "housekeeping could not connect; trying again at the next interval");
                    continue;
                }
            }
        }
        let Some(database) = connection.as_mut() else {
            continue;
        };
        let client = match database.client().await {
            Ok(client) => client,
            Err(error) => {
                metrics.housekeeping_runs.add("failed", 1);
                tracing::warn!(error = %crate::error::error_chain(&error.into()), "housekeeping could not reconnect; trying again at the next interval");
                continue;
            }
        };
        // A pass that delegated parks the loop at the top of the next round.
        pass(client, &policy, &metrics).await;
    }
}
