//! Housekeeping inside `veil run`: one pass at start (so today's
//! partitions exist before the first batch) and one every interval, on a
//! connection of its own. Each pass logs what it did and counts it. Under
//! a role that may not create or drop partitions, it says so once and
//! leaves the work to `veil maintain` run by the owner.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::postgres::maintain::{describe, maintain, HousekeepingPolicy};
use crate::postgres::{Database, DatabaseSettings};

/// Whether a pass failed for want of privileges (the pipeline role).
fn lacks_privilege(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(|error| error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE))
}

/// One pass on `client`; logs and counts it. Returns false when the role
/// lacks the rights, so the caller stops trying.
pub async fn pass(
    client: &mut tokio_postgres::Client,
    policy: &HousekeepingPolicy,
    metrics: &Metrics,
) -> bool {
    match maintain(client, policy).await {
        Ok(report) if report.skipped => {
            metrics.housekeeping_runs.add("skipped", 1);
            tracing::debug!("{}", describe(&report));
            true
        }
        Ok(report) => {
            metrics.housekeeping_runs.add("done", 1);
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
            metrics.housekeeping_last_success.store(
                chrono::Utc::now().timestamp().max(0) as u64,
                Ordering::Relaxed,
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
                    describe(&report)
                );
            }
            true
        }
        Err(error) if lacks_privilege(&error) => {
            metrics.housekeeping_runs.add("failed", 1);
            tracing::warn!(
                error = %format!("{error:#}"),
                "housekeeping needs the tables' owner (CREATE and DROP of partitions); this role may not, \
                 so veil leaves it to `veil maintain` run by the owner (cron or a CronJob). \
                 Until then new rows land in the default partitions and nothing is dropped"
            );
            false
        }
        Err(error) => {
            metrics.housekeeping_runs.add("failed", 1);
            tracing::warn!(error = %format!("{error:#}"), "housekeeping failed; trying again at the next interval");
            true
        }
    }
}

/// A pass every `interval` until `stop`, on its own connection.
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
        if connection.is_none() {
            match Database::connect(database.clone()).await {
                Ok(database) => connection = Some(database),
                Err(error) => {
                    metrics.housekeeping_runs.add("failed", 1);
                    tracing::warn!(error = %format!("{error:#}"), "housekeeping could not connect; trying again at the next interval");
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
                tracing::warn!(error = %format!("{error:#}"), "housekeeping could not reconnect; trying again at the next interval");
                continue;
            }
        };
        if !pass(client, &policy, &metrics).await {
            return;
        }
    }
}
