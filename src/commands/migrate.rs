//! `veil migrate`: veil's schema and each contract's table (the built-in
//! login contract's `user_logins` without `--contract`), then a
//! housekeeping pass so the coming days' partitions exist.

use std::time::Duration;

use crate::cli::MigrateArgs;
use crate::config::{database_from_args, housekeeping_policy, plan_from_args};
use crate::error::ConfigError;
use crate::postgres::contract_sql::{self, TableChange};
use crate::postgres::{self, Database};

/// `veil migrate`: the schema, then a housekeeping pass, so the
/// partitions of the coming days exist before the first run.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let mut plan = (*plan_from_args(&args.contracts)?).clone();
    if let Some(every) = args.partition_by {
        if args.contracts.contract.is_some() {
            return Err(ConfigError(
                "--partition-by applies to user_logins, the built-in login contract's table; with \
                 --contract, say `partition: {by: <date column>, every: month}` in the contract"
                    .into(),
            )
            .into());
        }
        plan = plan.partitioned_by(every)?;
    }
    let policy = housekeeping_policy(&args.housekeeping, &plan);
    if policy.ledger_retention_days < 15 {
        super::maintain::confirm_short_retention(&args.queue_url, policy.ledger_retention_days)
            .await?;
    }
    let mut database = Database::connect(database_from_args(&args.database)?).await?;
    let report = contract_sql::migrate(database.client().await?, &plan).await?;
    let client = database.client().await?;
    for (table, change) in &report.tables {
        let partitioned = postgres::partitions::dated_table(client, table)
            .await?
            .map(|dated| format!(", partitioned by {}", dated.granularity.name()))
            .unwrap_or_default();
        let what = match change {
            TableChange::Created => format!("created{partitioned}, with analyst indexes"),
            TableChange::Unchanged(extra) if extra.is_empty() => {
                format!("already there{partitioned}, as the contract says")
            }
            TableChange::Unchanged(extra) => format!(
                "already there{partitioned}, as the contract says; it also has column(s) {}, which \
                 veil leaves to their default",
                extra.join(", ")
            ),
            TableChange::Added(columns) => format!("added column(s) {}", columns.join(", ")),
        };
        println!("table {table}: {what}");
    }
    println!("schema ready on {}", database.endpoint());
    if let Some(partition) = &report.upgraded_ledger {
        println!(
            "the ledger is now partitioned by day; its earlier entries are partition {partition}, \
             still checked for redeliveries and dropped once past the retention"
        );
    }
    let client = database.client().await?;
    let lacking = postgres::maintain::missing_rights(client, &policy).await?;
    if lacking.is_empty() {
        let housekeeping = postgres::maintain::maintain(client, &policy, Duration::ZERO).await?;
        println!("{}", postgres::maintain::describe(&housekeeping));
    } else {
        println!(
            "housekeeping not done: role {} lacks {}; run `veil maintain` as {}",
            lacking.role,
            lacking.list(),
            lacking.who_may()
        );
    }
    if args.indexes {
        let created = contract_sql::create_indexes(database.client().await?, &plan).await?;
        println!("analyst indexes created: {created:?} (any others already existed)");
    }
    Ok(())
}
