//! `veil maintain`: housekeeping once, as the tables' owner.

use std::time::{Duration, Instant};

use crate::cli::MaintainArgs;
use crate::config::{database_from_args, queue_settings};
use crate::error::ConfigError;
use crate::postgres::{self, Database};
use crate::sqs::SqsClient;

/// `veil maintain`: one housekeeping pass. Exits 0 when it was done, 1
/// when a step failed (the others were still done), 2 when the role lacks
/// the rights, 75 when another veil held the lock (past `--wait-secs`).
pub async fn maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let plan = crate::config::plan_from_args(&args.contracts)?;
    let policy = crate::config::housekeeping_policy(&args.housekeeping, &plan);
    if policy.ledger_retention_days < 15 {
        confirm_short_retention(&args.queue_url, policy.ledger_retention_days).await?;
    }
    let config = database_from_args(&args.database)?;
    let mut database = Database::connect(config.clone()).await?;
    let client = database.client().await?;
    let started = Instant::now();
    let wait = Duration::from_secs(args.wait_secs);
    let report = pass(client, &policy, wait).await?;
    if report.skipped {
        return Err(crate::error::LockHeld(format!(
            "another veil held the housekeeping lock{}; nothing was done. It is doing the same pass; \
             pass --wait-secs to wait for it",
            if args.wait_secs > 0 {
                format!(" for more than {} s", args.wait_secs)
            } else {
                String::new()
            }
        ))
        .into());
    }
    println!(
        "{} on {} in {:.2} s",
        postgres::maintain::describe(&report),
        config.describe(),
        started.elapsed().as_secs_f64()
    );
    for name in &report.created {
        println!("  created {name}");
    }
    for (name, rows) in &report.dropped {
        println!("  dropped {name} (about {rows} rows)");
    }
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} housekeeping step(s) failed (the others were done): {}",
            report.failures.len(),
            report.failures.join("; ")
        );
    }
    Ok(())
}

/// One pass as the tables' owner: refused (exit 2) when the connected role
/// lacks a right housekeeping needs, naming who may.
pub(super) async fn pass(
    client: &mut impl crate::postgres::GenericClient,
    policy: &postgres::maintain::HousekeepingPolicy,
    wait: Duration,
) -> anyhow::Result<postgres::maintain::HousekeepingReport> {
    let lacking = postgres::maintain::missing_rights(client, policy).await?;
    if !lacking.is_empty() {
        return Err(ConfigError(format!(
            "role {} may not do housekeeping: it lacks {}. Run `veil maintain` as {}",
            lacking.role,
            lacking.list(),
            lacking.who_may()
        ))
        .into());
    }
    postgres::maintain::maintain(client, policy, wait).await
}

/// A ledger retention under SQS's 14 days is safe only for a queue that
/// keeps messages for less: ask the queue.
pub(super) async fn confirm_short_retention(queue_url: &str, days: u32) -> anyhow::Result<()> {
    let queue_args = crate::cli::QueueArgs {
        queue_url: queue_url.to_string(),
        sqs_protocol: crate::sqs::ProtocolChoice::Auto,
        endpoint_wait_secs: 0,
    };
    let facts = async {
        let sqs = SqsClient::connect(&queue_settings(&queue_args)?).await?;
        Ok::<_, anyhow::Error>(sqs.facts().await?)
    }
    .await
    .map_err(|error| {
        ConfigError(format!(
            "--ledger-retention-days {days} is below SQS's 14-day maximum, and the queue {queue_url} could not \
             be asked how long it keeps messages ({}). Use 15 or more, or give the right --queue-url",
            crate::error::error_chain(&error)
        ))
    })?;
    if !facts.ledger_days_suffice(days) {
        return Err(super::run::ledger_retention_too_short(days, &facts).into());
    }
    Ok(())
}
