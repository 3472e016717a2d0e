//! Housekeeping of the partitioned tables: the partitions for the coming
//! days exist ahead of time, and those past the retention are dropped
//! whole (no DELETE, no bloat). One veil at a time does it, under a
//! session advisory lock; the others skip. `veil maintain` runs it once
//! (cron, a Kubernetes CronJob), `veil run` periodically.
//!
//! Today and the days ahead are created first (they are what writers need
//! next), then the missing past days, newest first; one partition that
//! fails does not stop the others: the pass reports it and goes on.

use anyhow::Context;
use std::time::Duration;
use tokio_postgres::GenericClient;

use chrono::{Datelike, Months, NaiveDate, Utc};

use super::partitions::{
    self, create_partition, drop_partition, existing, is_partitioned, Cutoff, DatedTable,
    Granularity, Partitioned, DAY_MS,
};
use super::rights::{self, Lacking};

/// Days of ledger partitions made ahead of today.
pub const LEDGER_DAYS_AHEAD: u32 = 7;
/// How far back rows of `user_logins` and ledger entries may be dated when
/// they arrive: SQS keeps a message at most 14 days, plus a day. Past
/// partitions are made this far back and no further, whatever the
/// retention (a longer retention keeps days, it never needs empty ones).
const OLDEST_ARRIVAL_DAYS: u32 = 15;

/// What housekeeping keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingPolicy {
    /// Ledger entries are kept this many days after their send time
    /// (`--ledger-retention-days`); longer than the queue keeps a message,
    /// so nothing dropped can come back.
    pub ledger_retention_days: u32,
    /// Partitions of a partitioned `user_logins` older than this many
    /// months are dropped (`--retention-months`); None keeps everything.
    pub user_logins_retention_months: Option<u32>,
    /// The contracts' tables (`--contract`), each as SQL with the months
    /// its contract keeps (`partition.retention_months`); those the catalog
    /// shows partitioned on a date get the same care as `user_logins`.
    pub contract_tables: Vec<(String, Option<u32>)>,
}

impl Default for HousekeepingPolicy {
    fn default() -> Self {
        HousekeepingPolicy {
            ledger_retention_days: 15,
            user_logins_retention_months: None,
            contract_tables: Vec::new(),
        }
    }
}

impl HousekeepingPolicy {
    /// The policy with the tables of `plan`'s contracts to keep too.
    pub fn with_contracts(mut self, plan: &crate::contract::Plan) -> Self {
        self.contract_tables = plan
            .contracts
            .iter()
            .map(|contract| {
                (
                    super::contract_sql::table_sql(&contract.table),
                    contract.partition.as_ref().and_then(|p| p.retention_months),
                )
            })
            .collect();
        self
    }

    /// The date-partitioned tables to keep, from the catalog, each with
    /// the months it keeps: `user_logins` (`--retention-months`), then each
    /// contract's table that is not `user_logins`.
    pub async fn dated_tables(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> anyhow::Result<Vec<(DatedTable, Option<u32>)>> {
        let mut tables = Vec::new();
        if let Some(table) = partitions::dated_table(client, "user_logins").await? {
            tables.push((table, self.user_logins_retention_months));
        }
        for (name, retention_months) in &self.contract_tables {
            if let Some(table) = partitions::dated_table(client, name).await? {
                if !tables.iter().any(|(known, _)| known == &table) {
                    tables.push((table, *retention_months));
                }
            }
        }
        Ok(tables)
    }
}

/// What one housekeeping pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HousekeepingReport {
    /// Another veil held the lock: nothing was done.
    pub skipped: bool,
    /// Partitions created, by name.
    pub created: Vec<String>,
    /// Partitions dropped, by name, with their approximate row counts.
    pub dropped: Vec<(String, i64)>,
    /// Ledger entries deleted from the default and no-send-time partitions.
    pub pruned_entries: u64,
    /// Rows of a dated table's default partition past the retention, deleted.
    pub pruned_rows: u64,
    /// The first-layout ledger, dropped once nothing in it can come back.
    pub retired: Option<String>,
    /// What failed, one line each (`creating partition ...: cause`); the
    /// rest of the pass went on.
    pub failures: Vec<String>,
}

/// The lock that lets one veil at a time do housekeeping.
const LOCK_SQL: &str = "SELECT pg_try_advisory_lock(hashtext('veil.maintain'))";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock(hashtext('veil.maintain'))";

/// One pass, if no other veil is doing one (`wait`: wait this long for the
/// one doing it to finish, then skip).
pub async fn maintain(
    client: &mut impl GenericClient,
    policy: &HousekeepingPolicy,
    wait: Duration,
) -> anyhow::Result<HousekeepingReport> {
    if !take_lock(client, wait).await? {
        return Ok(HousekeepingReport {
            skipped: true,
            ..Default::default()
        });
    }
    let result = maintain_locked(client, policy, Utc::now().date_naive()).await;
    // The session ends the lock anyway; unlocking lets the next pass of
    // another process start without waiting for this connection to close.
    let _ = client.query_one(UNLOCK_SQL, &[]).await;
    result
}

/// Takes the housekeeping lock, polling for up to `wait`.
async fn take_lock(client: &impl GenericClient, wait: Duration) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if client.query_one(LOCK_SQL, &[]).await?.get::<_, bool>(0) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The rights housekeeping needs that the connected role lacks, for the
/// tables as they are (a plain `user_logins` needs none).
pub async fn missing_rights(
    client: &impl GenericClient,
    policy: &HousekeepingPolicy,
) -> anyhow::Result<Lacking> {
    let tables: Vec<(Partitioned, bool)> = policy
        .dated_tables(client)
        .await?
        .into_iter()
        .map(|(table, retention_months)| (Partitioned::Dated(table), retention_months.is_some()))
        .collect();
    let tables: Vec<(&Partitioned, bool)> = tables.iter().map(|(t, p)| (t, *p)).collect();
    Ok(rights::housekeeping(client, &tables).await?)
}

async fn maintain_locked(
    client: &mut impl GenericClient,
    policy: &HousekeepingPolicy,
    today: NaiveDate,
) -> anyhow::Result<HousekeepingReport> {
    let mut report = HousekeepingReport::default();
    if is_partitioned(client, "veil.ledger").await? {
        ledger(client, policy, today, &mut report).await?;
    }
    for (table, retention_months) in policy.dated_tables(&*client).await? {
        dated(client, table, retention_months, today, &mut report).await?;
    }
    Ok(report)
}

async fn ledger(
    client: &mut impl GenericClient,
    policy: &HousekeepingPolicy,
    today: NaiveDate,
    report: &mut HousekeepingReport,
) -> anyhow::Result<()> {
    let retention_days = i64::from(policy.ledger_retention_days);
    let keep_from_ms = Utc::now().timestamp_millis() - retention_days * DAY_MS;
    let table = Partitioned::Ledger;
    let back_days = policy.ledger_retention_days.min(OLDEST_ARRIVAL_DAYS);
    let wanted = table.wanted(today, back_days, LEDGER_DAYS_AHEAD);
    let wanted: Vec<_> = wanted
        .into_iter()
        .filter(|spec| !spec.bound.ends_before(&Cutoff::Millis(keep_from_ms)))
        .collect();
    sync_partitions(
        client,
        &table,
        &wanted,
        Cutoff::Millis(keep_from_ms),
        today,
        report,
    )
    .await?;

    let stale = client
        .execute(
            "DELETE FROM veil.ledger_default WHERE sent_ms >= 1 AND sent_ms < $1",
            &[&keep_from_ms],
        )
        .await
        .context("pruning the ledger's default partition");
    let unsent = client
        .execute(
            "DELETE FROM veil.ledger_unsent WHERE recorded_at < now() - make_interval(days => $1)",
            &[&(retention_days as i32)],
        )
        .await
        .context("pruning ledger entries without a send time");
    for pruned in [stale, unsent] {
        match pruned {
            Ok(count) => report.pruned_entries += count,
            Err(error) => report.failures.push(crate::error::error_chain(&error)),
        }
    }

    // The first-layout ledger (ids alone) is still checked by the writer;
    // once its newest entry is older than the retention, nothing in it can
    // be redelivered.
    let legacy: bool = client
        .query_one("SELECT to_regclass('veil.ledger_v1') IS NOT NULL", &[])
        .await?
        .get(0);
    let retire = legacy
        && client
            .query_one(
                "SELECT coalesce(max(recorded_at), '-infinity') < now() - make_interval(days => $1)
                   FROM veil.ledger_v1",
                &[&(retention_days as i32)],
            )
            .await?
            .get::<_, bool>(0);
    if retire {
        partitions::ddl(
            client,
            "retiring veil.ledger_v1",
            "DROP TABLE veil.ledger_v1",
        )
        .await?;
        report.retired = Some("veil.ledger_v1".into());
    }
    Ok(())
}

/// One table partitioned on a date: the partitions from the oldest day a
/// row may arrive with to the days ahead, and those past `retention_months`
/// dropped (with the default partition's rows that old).
async fn dated(
    client: &mut impl GenericClient,
    dated: DatedTable,
    retention_months: Option<u32>,
    today: NaiveDate,
    report: &mut HousekeepingReport,
) -> anyhow::Result<()> {
    let ahead = match dated.granularity {
        Granularity::Month => 62,
        Granularity::Day => LEDGER_DAYS_AHEAD,
    };
    let table = &Partitioned::Dated(dated);
    let cutoff = retention_months.map(|months| {
        let first_of_month = today.with_day(1).unwrap_or(today);
        Cutoff::Date(first_of_month - Months::new(months))
    });
    let wanted: Vec<_> = table
        .wanted(today, OLDEST_ARRIVAL_DAYS, ahead)
        .into_iter()
        .filter(|spec| cutoff.is_none_or(|cutoff| !spec.bound.ends_before(&cutoff)))
        .collect();
    match cutoff {
        Some(cutoff) => {
            sync_partitions(client, table, &wanted, cutoff, today, report).await?;
            if let Cutoff::Date(date) = cutoff {
                let default = table.default_partition();
                match client
                    .execute(
                        &format!("DELETE FROM {default} WHERE {} < $1", table.column()),
                        &[&date],
                    )
                    .await
                {
                    Ok(count) => report.pruned_rows += count,
                    Err(error) => report.failures.push(format!(
                        "pruning {default}: {}",
                        crate::error::std_error_chain(&error)
                    )),
                }
            }
        }
        None => create_missing(client, table, &wanted, today, report).await?,
    }
    Ok(())
}

/// Creates the wanted partitions that are missing and drops those that end
/// before `keep_from`.
async fn sync_partitions(
    client: &mut impl GenericClient,
    table: &Partitioned,
    wanted: &[partitions::PartitionSpec],
    keep_from: Cutoff,
    today: NaiveDate,
    report: &mut HousekeepingReport,
) -> anyhow::Result<()> {
    create_missing(client, table, wanted, today, report).await?;
    for partition in existing(client, &table.parent()).await? {
        if partition
            .bound
            .as_ref()
            .is_some_and(|bound| bound.ends_before(&keep_from))
        {
            if let Err(error) = drop_partition(client, &partition.name).await {
                report.failures.push(crate::error::error_chain(&error));
                continue;
            }
            tracing::info!(partition = %partition.name, approximate_rows = partition.approximate_rows.max(0), "dropped a partition past the retention");
            report
                .dropped
                .push((partition.name, partition.approximate_rows.max(0)));
        }
    }
    Ok(())
}

/// Creates the wanted partitions that are missing: today's and the days
/// ahead first, then the past ones, newest first. A failure is reported
/// and the next partition tried.
async fn create_missing(
    client: &mut impl GenericClient,
    table: &Partitioned,
    wanted: &[partitions::PartitionSpec],
    today: NaiveDate,
    report: &mut HousekeepingReport,
) -> anyhow::Result<()> {
    let present = existing(client, &table.parent()).await?;
    let mut missing: Vec<&partitions::PartitionSpec> = wanted
        .iter()
        .filter(|spec| {
            !present.iter().any(|partition| {
                partition
                    .bound
                    .as_ref()
                    .is_some_and(|bound| bound.overlaps(&spec.bound))
            })
        })
        .collect();
    let current = table.partition_for(today).bound;
    let (ahead, past): (Vec<_>, Vec<_>) = missing
        .drain(..)
        .partition(|spec| !spec.bound.ends_before_start_of(&current));
    for spec in ahead.into_iter().chain(past.into_iter().rev()) {
        match create_partition(client, table, spec).await {
            Ok(()) => {
                tracing::debug!(partition = %spec.name, "created a partition");
                report.created.push(spec.name.clone());
            }
            Err(error) => report.failures.push(crate::error::error_chain(&error)),
        }
    }
    Ok(())
}

/// One line saying what a pass did, for logs and `veil maintain`.
pub fn describe(report: &HousekeepingReport) -> String {
    if report.skipped {
        return "another veil is doing housekeeping; skipped".into();
    }
    let dropped_rows: i64 = report.dropped.iter().map(|(_, rows)| rows).sum();
    let mut text = format!(
        "housekeeping: {} partition(s) created, {} dropped (about {dropped_rows} rows), {} stale ledger entries and {} old rows deleted",
        report.created.len(),
        report.dropped.len(),
        report.pruned_entries,
        report.pruned_rows,
    );
    if let Some(retired) = &report.retired {
        text.push_str(&format!(", {retired} retired"));
    }
    if !report.failures.is_empty() {
        text.push_str(&format!(
            "; {} step(s) failed: {}",
            report.failures.len(),
            report.failures.join("; ")
        ));
    }
    text
}
