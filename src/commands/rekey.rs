//! `veil rekey`: re-masking after a key rotation, with progress and the
//! keys still in use at the end.

use std::time::Instant;

use crate::cli::RekeyArgs;
use crate::config::{database_from_args, key_location};
use crate::keyring as key_sources;
use crate::postgres::Database;

/// `veil rekey`.
pub async fn rekey(args: RekeyArgs) -> anyhow::Result<()> {
    let tables = crate::postgres::rekey::MaskedTable::of_plan(&*crate::config::plan_from_args(
        &args.contracts,
    )?);
    let keyring =
        key_sources::load(&key_location(&args.key)?, false, &crate::aws::KeyServices).await?;
    let config = database_from_args(&args.database)?;
    let mut database = Database::connect(config).await?;
    let client = database.client().await?;
    let started = Instant::now();
    let report =
        crate::postgres::rekey::rekey(client, &keyring, &tables, args.batch_rows, |progress| {
            tracing::info!(
                rows_scanned = progress.rows_scanned,
                rows_rekeyed = progress.rows_rekeyed,
                quarantine_resealed = progress.quarantine_resealed,
                "rekey progress"
            );
        })
        .await?;
    let active = keyring.active().id();
    println!(
        "rekeyed {} of {} rows read and {} quarantine bodies to key {active} in {:.2} s",
        report.rows_rekeyed,
        report.rows_scanned,
        report.quarantine_resealed,
        started.elapsed().as_secs_f64()
    );
    if report.irreversible_skipped > 0 {
        println!(
            "{} irreversible (hmac1) masks of older keys were left as they are: they cannot be re-masked",
            report.irreversible_skipped
        );
    }
    let old: Vec<&str> = keyring
        .keys()
        .map(|key| key.id())
        .filter(|id| *id != active)
        .collect();
    let retirable: Vec<&str> = old
        .iter()
        .copied()
        .filter(|id| !report.keys_in_use.contains(*id))
        .collect();
    let still_used: Vec<&String> = report
        .keys_in_use
        .iter()
        .filter(|id| *id != active)
        .collect();
    if !still_used.is_empty() {
        println!("still in use by some masks: {still_used:?} (a pipeline running with the old keyring? restart it and rekey again)");
    }
    if !retirable.is_empty() {
        println!("no longer used, can be retired with `veil keys retire`: {retirable:?}");
    }
    Ok(())
}
