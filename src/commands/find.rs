//! `veil find`: one person's rows, by value, in every column of the
//! contracts that may hold it, and the quarantined messages that hold it,
//! without revealing anything else. Audited with a reason; the audit row
//! is committed before anything is printed.

use anyhow::Context;

use super::lookup::{
    audit_lookup, listed, named_value, require_every_key, require_reason, search_quarantine, Lookup,
};
use crate::cli::FindArgs;
use crate::error::ConfigError;
use crate::postgres::privacy as sql;
use crate::privacy::Place;
use crate::report::psql_table;

/// `veil find`.
pub async fn find(args: FindArgs) -> anyhow::Result<()> {
    require_reason(&args.reason, "this person's rows are being looked up")?;
    if args.limit < 1 {
        return Err(ConfigError("--limit must be at least 1".into()).into());
    }
    let named = named_value(&args.lookup)?;
    let (lookup, mut database) =
        Lookup::open(&args.contracts, &args.key, &args.database, named).await?;
    let client = database.client().await?;
    require_every_key(&*client, &lookup, "find").await?;
    let Lookup {
        keyring,
        target,
        places,
        plan,
    } = lookup;
    let mut found = Vec::with_capacity(places.len());
    for place in &places {
        let shown = sql::find_rows(
            &*client,
            &place.table,
            &place.column,
            &place.values,
            &place.shown,
            place.order_by.as_deref(),
            args.limit,
        )
        .await
        .with_context(|| format!("looking the value up in {}.{}", place.table, place.column))?;
        found.push(shown);
    }
    let target = &target;
    let quarantine = search_quarantine(&*client, &keyring, target, false).await?;
    let total: i64 = found.iter().map(|(_, total)| total).sum();
    let count = total + quarantine.holding.len() as i64;
    audit_lookup(
        &*client,
        "find",
        target,
        count,
        &args.reason,
        &target.audit_description(&keyring),
    )
    .await
    .context("writing the audit record (veil.audit; run `veil migrate` and grant INSERT on it); nothing was shown")?;
    tracing::info!(
        rows = total,
        quarantined = quarantine.holding.len(),
        field = target.field_name(),
        "find audited"
    );
    // One contract's one place needs no title (the login lookups look as
    // they always did); with several, each table is named.
    let titled = places.len() > 1 || plan.contracts.len() > 1;
    for (place, (rows, total)) in places.iter().zip(&found) {
        if titled {
            println!(
                "{}.{} (contract {}):",
                place.table, place.column, place.contract
            );
        }
        print!("{}", place_table(place, target.field_name(), rows, *total));
    }
    println!(
        "{} quarantined message(s) hold it{}",
        quarantine.holding.len(),
        listed(&quarantine.holding)
    );
    quarantine.report_undecided()
}

/// The rows found in one place: its columns that hold no PII, and which
/// value matched.
fn place_table(place: &Place, matched: &str, rows: &[Vec<Option<String>>], total: i64) -> String {
    let mut headers: Vec<&str> = place.shown.iter().map(String::as_str).collect();
    headers.push("matched");
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| cell.clone().unwrap_or_default())
                .chain([matched.to_string()])
                .collect()
        })
        .collect();
    psql_table(&headers, &cells, &[], total.max(0) as u64)
}
