//! `veil find --value NAME=VALUE` and `veil forget --value NAME=VALUE`:
//! one person's value looked up through a contract plan (the built-in
//! login contract without --contract), in every column of every contract
//! that may hold it, and in every quarantined body. Audited as the login
//! lookups are: a keyed fingerprint, never the value.

use anyhow::Context;

use super::privacy::{
    audit_and_commit_forget, audit_lookup, find_login, forget_login, listed, refuse_missing_keys,
    require_reason, search_quarantine,
};
use crate::cli::{FindArgs, ForgetArgs};
use crate::config::{contracts_from_args, database_from_args, key_location};
use crate::contract::Plan;
use crate::error::ConfigError;
use crate::keyring::{self as keys, Keyring};
use crate::postgres::privacy as sql;
use crate::postgres::Database;
use crate::privacy::{resolve, Place, Target};
use crate::report::psql_table;

/// The plan of `--contract`, or the built-in login contract.
fn plan_of(args: &crate::cli::ContractArgs) -> anyhow::Result<Plan> {
    Ok(match contracts_from_args(args)? {
        Some(plan) => (*plan).clone(),
        None => crate::contract::builtin_login(),
    })
}

/// What `find` and `forget` by value start from (their `--reason` was
/// checked by the caller, `super::privacy`).
struct Lookup {
    plan: Plan,
    keyring: Keyring,
    target: Target,
    places: Vec<Place>,
    database: Database,
}

impl Lookup {
    /// The plan, the keyring, where `name=value` may stand, and the database.
    async fn open(
        contracts: &crate::cli::ContractArgs,
        key: &crate::cli::KeyArgs,
        database: &crate::cli::DatabaseArgs,
        name: &str,
        value: &str,
    ) -> anyhow::Result<Self> {
        let plan = plan_of(contracts)?;
        let keyring = keys::load(&key_location(key)?, false).await?;
        let (target, places) = resolve(&plan, &keyring, name, value)?;
        let database = Database::connect(database_from_args(database)?).await?;
        Ok(Lookup {
            plan,
            keyring,
            target,
            places,
            database,
        })
    }
}

/// `--value NAME=VALUE` split at its first `=`.
fn value_flag(flag: &Option<String>) -> Result<Option<(&str, &str)>, ConfigError> {
    flag.as_deref()
        .map(|text| {
            text.split_once('=').ok_or_else(|| {
                ConfigError(format!(
                    "--value {text:?} needs NAME=VALUE, a domain or column name and the value (--value email=ann@example.com)"
                ))
            })
        })
        .transpose()
}

/// `veil find`: by `--value NAME=VALUE` through the contracts, or by the
/// login flags (`--ip`, `--device-id`, `--user-id`).
pub async fn find(args: FindArgs) -> anyhow::Result<()> {
    require_reason(&args.reason, "this person's rows are being looked up")?;
    if args.limit < 1 {
        return Err(ConfigError("--limit must be at least 1".into()).into());
    }
    match value_flag(&args.lookup.value)? {
        Some((name, value)) => find_value(&args, name, value).await,
        None => find_login(args).await,
    }
}

/// `veil forget`: as `find`, erasing in one audited transaction.
pub async fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    require_reason(&args.reason, "this person's data is being erased")?;
    match value_flag(&args.target.value)? {
        Some((name, value)) => forget_value(&args, name, value).await,
        None => forget_login(args).await,
    }
}

/// Refuses a keyring lacking a key that made masks in the plan's tables.
async fn require_every_key(
    client: &impl crate::postgres::GenericClient,
    plan: &Plan,
    keyring: &Keyring,
    command: &str,
) -> anyhow::Result<()> {
    let made = sql::masks_by_key_in(client, plan)
        .await
        .context("reading which keys made the masks")?;
    refuse_missing_keys(&made, keyring, command)
}

/// `veil find --value`.
async fn find_value(args: &FindArgs, name: &str, value: &str) -> anyhow::Result<()> {
    let Lookup {
        plan,
        keyring,
        target,
        places,
        mut database,
    } = Lookup::open(&args.contracts, &args.key, &args.database, name, value).await?;
    let client = database.client().await?;
    require_every_key(&*client, &plan, &keyring, "find").await?;
    let mut found = Vec::with_capacity(places.len());
    for place in &places {
        let (rows, total) = sql::find_in(
            &*client,
            &place.table,
            &place.column,
            &place.values,
            &place.shown,
            args.limit,
        )
        .await
        .with_context(|| format!("looking the value up in {}.{}", place.table, place.column))?;
        found.push((rows, total));
    }
    let quarantine = search_quarantine(&*client, &keyring, &target, false).await?;
    let total: i64 = found.iter().map(|(_, total)| total).sum();
    let count = total + quarantine.holding.len() as i64;
    audit_lookup(
        &*client,
        "find",
        &target,
        count,
        &args.reason,
        &target.audit_description(&keyring),
    )
    .await
    .context("writing the audit record (veil.audit; run `veil migrate` and grant INSERT on it); nothing was shown")?;
    tracing::info!(
        rows = total,
        quarantined = quarantine.holding.len(),
        field = name,
        "find audited"
    );
    for (place, (rows, total)) in places.iter().zip(&found) {
        println!(
            "{}.{} (contract {}):",
            place.table, place.column, place.contract
        );
        print!("{}", place_table(place, rows, *total));
    }
    println!(
        "{} quarantined message(s) hold it{}",
        quarantine.holding.len(),
        listed(&quarantine.holding)
    );
    quarantine.report_undecided()
}

fn place_table(place: &Place, rows: &[Vec<Option<String>>], total: i64) -> String {
    let headers: Vec<&str> = place.shown.iter().map(String::as_str).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| cell.clone().unwrap_or_default())
                .collect()
        })
        .collect();
    psql_table(&headers, &cells, &[], total.max(0) as u64)
}

/// `veil forget --value`: every place and every quarantined body holding
/// the value, erased in one transaction with its audit row.
async fn forget_value(args: &ForgetArgs, name: &str, value: &str) -> anyhow::Result<()> {
    let Lookup {
        plan,
        keyring,
        target,
        places,
        mut database,
    } = Lookup::open(&args.contracts, &args.key, &args.database, name, value).await?;
    let client = database.client().await?;
    let transaction = client.transaction().await?;
    require_every_key(&transaction, &plan, &keyring, "forget").await?;
    let mut erased = Vec::with_capacity(places.len());
    for place in &places {
        let rows = sql::delete_in(
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
    let quarantine = search_quarantine(&transaction, &keyring, &target, true).await?;
    if !args.dry_run && !quarantine.holding.is_empty() {
        sql::delete_quarantined(&transaction, &quarantine.holding)
            .await
            .context("erasing quarantined messages")?;
    }
    let rows: u64 = erased.iter().sum();
    audit_and_commit_forget(
        transaction,
        &keyring,
        &target,
        (rows, quarantine.holding.len()),
        &args.reason,
        args.dry_run,
    )
    .await?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for (place, rows) in places.iter().zip(&erased) {
        println!(
            "{verb} {rows} row(s) of {} holding the {} in {}",
            place.table,
            target.field_name(),
            place.column
        );
    }
    println!(
        "{verb} {} quarantined message(s) holding it{}",
        quarantine.holding.len(),
        listed(&quarantine.holding)
    );
    quarantine.report_undecided()
}
