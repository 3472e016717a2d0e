//! `veil forget`: one person's value erased from every column of the
//! contracts that may hold it and from every quarantined message that
//! holds it, in one transaction with its audit row, so the record and the
//! erasure stand or fall together.

use anyhow::Context;

use super::lookup::{
    audit_lookup, listed, named_value, require_every_key, require_reason, search_quarantine, Lookup,
};
use crate::cli::ForgetArgs;
use crate::postgres::privacy as sql;

/// `veil forget`.
pub async fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    require_reason(&args.reason, "this person's data is being erased")?;
    let named = named_value(&args.target)?;
    let (lookup, mut database) =
        Lookup::open(&args.contracts, &args.key, &args.database, named).await?;
    let client = database.client().await?;
    let transaction = client.transaction().await?;
    require_every_key(&transaction, &lookup, "forget").await?;
    let Lookup {
        keyring,
        target,
        places,
        ..
    } = &lookup;
    let mut erased = Vec::with_capacity(places.len());
    for place in places {
        let rows = sql::delete_rows(
            &transaction,
            &place.table,
            &place.column,
            &place.values,
            args.dry_run,
        )
        .await
        .with_context(|| format!("erasing rows of {}", place.table))?;
        erased.push(rows);
    }
    let quarantine = search_quarantine(&transaction, keyring, target, true).await?;
    if !args.dry_run && !quarantine.holding.is_empty() {
        sql::delete_quarantined(&transaction, &quarantine.holding)
            .await
            .context("erasing quarantined messages")?;
    }
    let rows: u64 = erased.iter().sum();
    let query = format!(
        "{}{}",
        if args.dry_run { "dry run: " } else { "" },
        target.audit_description(keyring)
    );
    let count = i64::try_from(rows + quarantine.holding.len() as u64).unwrap_or(i64::MAX);
    audit_lookup(&transaction, "forget", target, count, &args.reason, &query)
        .await
        .context("writing the audit record (veil.audit); nothing was deleted")?;
    transaction
        .commit()
        .await
        .context("committing the erasure")?;
    tracing::info!(
        rows,
        quarantined = quarantine.holding.len(),
        dry_run = args.dry_run,
        "forget audited"
    );
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let quarantined = quarantine.holding.len();
    let ids = listed(&quarantine.holding);
    match places.as_slice() {
        [place] => println!(
            "{verb} {rows} row(s) of {} and {quarantined} quarantined message(s) holding the {}{ids}",
            place.table,
            target.field_name(),
        ),
        places => {
            for (place, rows) in places.iter().zip(&erased) {
                println!(
                    "{verb} {rows} row(s) of {} holding the {} in {}",
                    place.table,
                    target.field_name(),
                    place.column
                );
            }
            println!("{verb} {quarantined} quarantined message(s) holding it{ids}");
        }
    }
    quarantine.report_undecided()
}
