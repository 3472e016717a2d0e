//! What `veil find` and `veil forget` share: the value looked for (by
//! `--value NAME=VALUE`, or `--ip`, `--device-id`, `--user-id`, which name
//! the built-in login contract's `ip` and `device_id` domains and its
//! `user_id` column), every column of the plan that may hold it, the
//! refusal of a keyring lacking a key in use, the search of the
//! quarantine, and the audit row. Audited with a keyed fingerprint, never
//! the value.

use anyhow::Context;

use crate::cli::{ContractArgs, DatabaseArgs, KeyArgs, LookupArgs};
use crate::config::{database_from_args, key_location, plan_from_args};
use crate::error::ConfigError;
use crate::keyring::{self as keys, Keyring};
use crate::postgres::audit::{self, AuditRecord};
use crate::postgres::privacy as sql;
use crate::postgres::{Database, GenericClient};
use crate::privacy::{resolve, Holding, Place, Target};

/// Quarantine entries read (and locked) per page while `forget` checks them.
const QUARANTINE_PAGE_ROWS: i64 = 1000;

/// The value of a lookup's flags, as (NAME, VALUE): `--value NAME=VALUE`
/// split at its first `=`, or the login flag given (clap lets one through).
pub(super) fn named_value(flags: &LookupArgs) -> Result<(&str, &str), ConfigError> {
    let login = [
        ("ip", flags.ip.as_deref()),
        ("device_id", flags.device_id.as_deref()),
        ("user_id", flags.user_id.as_deref()),
    ];
    if let Some(text) = flags.value.as_deref() {
        return text.split_once('=').ok_or_else(|| {
            ConfigError(format!(
                "--value {text:?} needs NAME=VALUE, a domain or column name and the value (--value email=ann@example.com)"
            ))
        });
    }
    let (name, value) = login
        .into_iter()
        .find_map(|(name, value)| value.map(|value| (name, value)))
        .ok_or_else(|| {
            ConfigError("give --value NAME=VALUE, --ip, --device-id or --user-id".into())
        })?;
    if value.is_empty() {
        return Err(ConfigError(format!(
            "--{} must not be empty",
            name.replace('_', "-")
        )));
    }
    Ok((name, value))
}

/// Refuses an empty `--reason`.
pub(super) fn require_reason(reason: &str, why: &str) -> Result<(), ConfigError> {
    if reason.trim().is_empty() {
        return Err(ConfigError(format!("--reason must say why {why}")));
    }
    Ok(())
}

/// What `find` and `forget` start from.
pub(super) struct Lookup {
    pub(super) keyring: Keyring,
    pub(super) target: Target,
    pub(super) places: Vec<Place>,
    pub(super) plan: std::sync::Arc<crate::contract::Plan>,
}

impl Lookup {
    /// The plan, the keyring, where `name=value` may stand, and the database.
    pub(super) async fn open(
        contracts: &ContractArgs,
        key: &KeyArgs,
        database: &DatabaseArgs,
        (name, value): (&str, &str),
    ) -> anyhow::Result<(Self, Database)> {
        let plan = plan_from_args(contracts)?;
        let keyring = keys::load(&key_location(key)?, false, &crate::aws::KeyServices).await?;
        let (target, places) = resolve(&plan, &keyring, name, value)?;
        let database = Database::connect(database_from_args(database)?).await?;
        let lookup = Lookup {
            keyring,
            target,
            places,
            plan,
        };
        Ok((lookup, database))
    }
}

/// Refuses a keyring that lacks a key some masks of the plan's tables or
/// some quarantined bodies were made with: the lookup would miss what they
/// hold and report it absent.
pub(super) async fn require_every_key(
    client: &impl GenericClient,
    lookup: &Lookup,
    command: &str,
) -> anyhow::Result<()> {
    let made = sql::masks_by_key(client, &lookup.plan)
        .await
        .context("reading which keys made the masks")?;
    let missing: Vec<String> = made
        .iter()
        .filter(|(id, _)| lookup.keyring.find(id).is_none())
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
    client: &impl GenericClient,
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
    client: &impl GenericClient,
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
