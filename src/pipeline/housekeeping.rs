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

use crate::metrics::Family;
use crate::metrics::Metrics;
use crate::postgres::maintain::{maintain, missing_rights, HousekeepingPolicy};
use crate::postgres::rights::Lacking;
use crate::postgres::{lacks_privilege, Database, DatabaseSettings};

/// One pass on `client`; logs and counts it. When the role lacks the
/// rights, housekeeping becomes delegated (`Metrics::housekeeping_delegated`)
/// and later passes do nothing.
pub async fn pass(
    client: &mut impl crate::postgres::GenericClient,
    policy: &HousekeepingPolicy,
    metrics: &Metrics,
) {
    if metrics.housekeeping_delegated.load(Ordering::Relaxed) {
        return;
    }
    match missing_rights(client, policy).await {
        Ok(lacking) if !lacking.is_empty() => return metrics.housekeeping_delegated_to(&lacking),
        Ok(_) => {}
        Err(error) => return metrics.housekeeping_failed("could not read its rights", &error),
    }
    match maintain(client, policy, Duration::ZERO).await {
        Ok(report) => metrics.housekeeping_done(&report),
        Err(error) if lacks_privilege(&error) => {
            metrics.family(Family::HousekeepingRuns).add("failed", 1);
            metrics.housekeeping_delegated_to(&Lacking {
                missing: vec![crate::error::error_chain(&error)],
                ..Lacking::default()
            });
        }
        Err(error) => metrics.housekeeping_failed("failed", &error),
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
                    metrics.housekeeping_failed("could not connect", &error);
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
                metrics.housekeeping_failed("could not reconnect", &error.into());
                continue;
            }
        };
        // A pass that delegated parks the loop at the top of the next round.
        pass(client, &policy, &metrics).await;
    }
}
