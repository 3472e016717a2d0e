//! `veil find` and `veil forget`: one person's rows, by value, without
//! revealing anything else; always audited, with a reason. `find` commits
//! its audit row before printing; `forget` writes its audit row in the
//! transaction that deletes, so the record and the erasure stand or fall
//! together.

use anyhow::Context;

use crate::cli::{FindArgs, ForgetArgs, ForgetTarget, LookupArgs};
use crate::config::{database_from_args, key_location};
use crate::error::ConfigError;
use crate::keyring as keys;
use crate::keyring::Keyring;
use crate::postgres::audit::{self, AuditRecord};
use crate::postgres::privacy::{self as sql, FoundRow};
use crate::postgres::Database;
use crate::privacy::{Holding, Target};
use crate::report::psql_table;

/// Quarantine entries read (and locked) per page while `forget` checks them.
const QUARANTINE_PAGE_ROWS: i64 = 1000;

fn lookup_target(args: &LookupArgs) -> Result<Target, ConfigError> {
    match (&args.ip, &args.device_id) {
        (Some(ip), _) => Target::ip(ip),
        (_, Some(id)) => Target::text(Target::DeviceId, "--device-id", id),
        // clap requires exactly one.
        (None, None) => Err(ConfigError("give --ip or --device-id".into())),
    }
}

fn forget_target(args: &ForgetTarget) -> Result<Target, ConfigError> {
    match (&args.ip, &args.device_id, &args.user_id) {
        (Some(ip), _, _) => Target::ip(ip),
        (_, Some(id), _) => Target::text(Target::DeviceId, "--device-id", id),
        (_, _, Some(id)) => Target::text(Target::UserId, "--user-id", id),
        // clap requires exactly one.
        _ => Err(ConfigError("give --ip, --device-id or --user-id".into())),
    }
}

pub(super) fn require_reason(reason: &str, why: &str) -> Result<(), ConfigError> {
    if reason.trim().is_empty() {
        return Err(ConfigError(format!("--reason must say why {why}")));
    }
    Ok(())
}

/// Refuses a keyring that lacks a key some masks or quarantined bodies
/// were made with: the lookup would miss what they hold and report it
/// absent.
async fn require_every_key(
    client: &impl crate::postgres::GenericClient,
    keyring: &Keyring,
    command: &str,
) -> anyhow::Result<()> {
    let made = sql::masks_by_key(client)
        .await
        .context("reading which keys made the masks")?;
    refuse_missing_keys(&made, keyring, command)
}

/// The refusal of a keyring that lacks some of the keys in `made`.
pub(super) fn refuse_missing_keys(
    made: &std::collections::BTreeMap<String, i64>,
    keyring: &Keyring,
    command: &str,
) -> anyhow::Result<()> {
    let missing: Vec<String> = made
        .iter()
        .filter(|(id, _)| keyring.find(id).is_none())
        .map(|(id, count)| format!("{id} ({count})"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ConfigError(format!(
        "masks and quarantined messages were made by key(s) this keyring lacks: {} (with how many); \
         `veil {command}` would miss what they hold and report it absent. Use the keyring that holds \
         every key still in use (`veil keys list`; retired keys must not be), then `veil rekey` to move \
         everything to the active key",
        missing.join(", ")
    ))
    .into())
}

/// The audit row of a `find` or `forget` of `target`, `count` values.
pub(super) async fn audit_lookup(
    client: &impl crate::postgres::GenericClient,
    action: &'static str,
    target: &Target,
    count: i64,
    reason: &str,
    query: &str,
) -> Result<(), crate::postgres::Error> {
    let record = AuditRecord {
        action,
        value_count: i32::try_from(count).unwrap_or(i32::MAX),
        fields: vec![target.field_name()],
        reason,
        query: Some(query),
    };
    audit::record(client, &record).await
}

/// `veil find`.
pub(super) async fn find_login(args: FindArgs) -> anyhow::Result<()> {
    let target = lookup_target(&args.lookup)?;
    let keyring = keys::load(&key_location(&args.key)?, false).await?;
    let mut database = Database::connect(database_from_args(&args.database)?).await?;
    let client = database.client().await?;
    require_every_key(&*client, &keyring, "find").await?;
    let (rows, total) = sql::find_rows(
        &*client,
        target.column(),
        &target.column_values(&keyring),
        args.limit,
    )
    .await
    .context("looking the value up in user_logins")?;
    let quarantine = search_quarantine(&*client, &keyring, &target, false).await?;
    let query = target.audit_description(&keyring);
    let count = total + quarantine.holding.len() as i64;
    audit_lookup(client, "find", &target, count, &args.reason, &query)
        .await
        .context("writing the audit record (veil.audit; run `veil migrate` and grant INSERT on it); nothing was shown")?;
    tracing::info!(
        rows = total,
        quarantined = quarantine.holding.len(),
        field = target.field_name(),
        "find audited"
    );
    print!("{}", found_table(&rows, target.field_name(), total));
    println!(
        "{} quarantined message(s) hold it{}",
        quarantine.holding.len(),
        listed(&quarantine.holding)
    );
    quarantine.report_undecided()
}

/// `: id, id, ...` for a non-empty list of message ids.
pub(super) fn listed(ids: &[String]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!(": {}", ids.join(", "))
    }
}

/// What a search of the quarantine found.
pub(super) struct QuarantineSearch {
    /// Messages whose bodies hold the value.
    pub(super) holding: Vec<String>,
    /// Messages whose bodies could not be read or opened.
    pub(super) undecided: Vec<String>,
}

impl QuarantineSearch {
    /// An error naming every body nothing could be said of (they must be
    /// looked at by hand), or Ok when there is none.
    pub(super) fn report_undecided(&self) -> anyhow::Result<()> {
        if self.undecided.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} quarantined message(s) could not be checked (not text, or not opened by this keyring): {}; \
             look at them with `veil reveal` and delete them by hand if they hold the value",
            self.undecided.len(),
            self.undecided.join(", ")
        )
    }
}

/// Opens every quarantined body and checks it for the value; with `lock`,
/// the entries stay locked until the transaction ends.
pub(super) async fn search_quarantine(
    client: &impl crate::postgres::GenericClient,
    keyring: &Keyring,
    target: &Target,
    lock: bool,
) -> anyhow::Result<QuarantineSearch> {
    let mut search = QuarantineSearch {
        holding: Vec::new(),
        undecided: Vec::new(),
    };
    let mut after = String::new();
    loop {
        let page = sql::quarantine_page(client, &after, QUARANTINE_PAGE_ROWS, lock)
            .await
            .context("reading the quarantine")?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.message_id.clone();
        for entry in page {
            let holding = keyring
                .open_body(&entry.key_id, &entry.body_sealed)
                .map_or(Holding::Undecided, |body| target.held_by(&body));
            match holding {
                Holding::Yes => search.holding.push(entry.message_id),
                Holding::No => {}
                Holding::Undecided => search.undecided.push(entry.message_id),
            }
        }
    }
    Ok(search)
}

fn found_table(rows: &[FoundRow], field: &str, total: i64) -> String {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                text(&row.user_id),
                text(&row.device_type),
                text(&row.locale),
                row.app_version.map(|v| v.to_string()).unwrap_or_default(),
                row.create_date.map(|d| d.to_string()).unwrap_or_default(),
                field.to_string(),
            ]
        })
        .collect();
    psql_table(
        &[
            "user_id",
            "device_type",
            "locale",
            "app_version",
            "create_date",
            "matched",
        ],
        &cells,
        &[],
        total.max(0) as u64,
    )
}

/// What `forget` found and erased.
struct Erased {
    rows: u64,
    quarantine: QuarantineSearch,
}

/// `veil forget`.
pub(super) async fn forget_login(args: ForgetArgs) -> anyhow::Result<()> {
    let target = forget_target(&args.target)?;
    let keyring = keys::load(&key_location(&args.key)?, false).await?;
    let mut database = Database::connect(database_from_args(&args.database)?).await?;
    let client = database.client().await?;
    let transaction = client.transaction().await?;
    require_every_key(&transaction, &keyring, "forget").await?;
    let erased = erase(&transaction, &keyring, &target, args.dry_run).await?;
    audit_and_commit_forget(
        transaction,
        &keyring,
        &target,
        (erased.rows, erased.quarantine.holding.len()),
        &args.reason,
        args.dry_run,
    )
    .await?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{verb} {} row(s) of user_logins and {} quarantined message(s) holding the {}{}",
        erased.rows,
        erased.quarantine.holding.len(),
        target.field_name(),
        listed(&erased.quarantine.holding)
    );
    erased.quarantine.report_undecided()
}

/// Audits a `forget` in the transaction that erased, and commits both: the
/// record and the erasure stand or fall together. `erased` is (rows,
/// quarantined messages).
pub(super) async fn audit_and_commit_forget(
    transaction: crate::postgres::Transaction<'_>,
    keyring: &Keyring,
    target: &Target,
    erased: (u64, usize),
    reason: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let query = format!(
        "{}{}",
        if dry_run { "dry run: " } else { "" },
        target.audit_description(keyring)
    );
    let count = i64::try_from(erased.0 + erased.1 as u64).unwrap_or(i64::MAX);
    audit_lookup(&transaction, "forget", target, count, reason, &query)
        .await
        .context("writing the audit record (veil.audit); nothing was deleted")?;
    transaction
        .commit()
        .await
        .context("committing the erasure")?;
    tracing::info!(
        rows = erased.0,
        quarantined = erased.1,
        dry_run,
        "forget audited"
    );
    Ok(())
}

async fn erase(
    transaction: &crate::postgres::Transaction<'_>,
    keyring: &Keyring,
    target: &Target,
    dry_run: bool,
) -> anyhow::Result<Erased> {
    let rows = sql::delete_rows(
        transaction,
        target.column(),
        &target.column_values(keyring),
        dry_run,
    )
    .await
    .context("erasing rows of user_logins")?;
    let quarantine = search_quarantine(transaction, keyring, target, true).await?;
    if !dry_run && !quarantine.holding.is_empty() {
        sql::delete_quarantined(transaction, &quarantine.holding)
            .await
            .context("erasing quarantined messages")?;
    }
    Ok(Erased { rows, quarantine })
}
