//! `veil migrate`: the schema (or the contracts' tables), then a
//! housekeeping pass so the coming days' partitions exist.

use std::time::Duration;

use crate::cli::MigrateArgs;
use crate::config::database_from_args;
use crate::error::ConfigError;
use crate::postgres::{self, Database};

/// `veil migrate`: the schema, then a housekeeping pass, so the
/// partitions of the coming days exist before the first run.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let contracts = crate::config::contracts_from_args(&args.contracts)?;
    let policy = crate::config::housekeeping_policy(&args.housekeeping, contracts.as_deref());
    if policy.ledger_retention_days < 15 {
        super::maintain::confirm_short_retention(&args.queue_url, policy.ledger_retention_days)
            .await?;
    }
    let config = database_from_args(&args.database)?;
    let mut database = Database::connect(config.clone()).await?;
    if let Some(plan) = contracts {
        if args.partition_by.is_some() || args.indexes {
            return Err(ConfigError(
                "--partition-by and --indexes apply to user_logins, the built-in login contract's table; \
                 drop them with --contract (contract tables get their indexes when created)"
                    .into(),
            )
            .into());
        }
        return super::contract::migrate(&mut database, &plan, &policy).await;
    }
    let options = postgres::MigrateOptions {
        partition_user_logins: args.partition_by,
        for_contracts: false,
    };
    let report = postgres::migrate(database.client().await?, options).await?;
    let table = match (report.created_user_logins, report.user_logins_partitioned) {
        (true, None) => "created, with analyst indexes".to_string(),
        (true, Some(granularity)) => format!(
            "created, partitioned by {}, with analyst indexes",
            granularity.name()
        ),
        (false, None) => "already there".to_string(),
        (false, Some(granularity)) => {
            format!("already there, partitioned by {}", granularity.name())
        }
    };
    println!(
        "schema ready on {} (user_logins {table})",
        database.endpoint()
    );
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
        let created = postgres::create_analyst_indexes(database.client().await?).await?;
        println!("analyst indexes created: {created:?} (any others already existed)");
    }
    Ok(())
}
