//! Re-masking after a key rotation. Walks each contract's table (the
//! built-in login contract's `user_logins` without `--contract`) and its
//! reversible mask columns in physical order
//! (ranges of blocks by `ctid`, about `--batch-rows` rows each, one
//! transaction each, rows locked `FOR UPDATE`; partition by partition when
//! the table is partitioned, since a `ctid` is only unique within one),
//! opens every AES-SIV mask made by a non-active key and masks the value
//! again with the active key, then re-seals quarantine bodies the same way.
//!
//! - Resumable: a second run skips rows already on the active key.
//! - Each row is re-masked once: the walk ends at the last block that
//!   existed when it started (rows inserted later were masked with the
//!   active key by an up-to-date pipeline; the final key census catches the
//!   rest). A new version that an update places in a block still ahead is
//!   read again and left alone, being on the active key.
//! - Safe beside `veil run`: the pipeline only inserts, and rekey only
//!   updates the rows it has locked.
//! - A pipeline still running with the old keyring keeps writing old-key
//!   masks; restart it after rotating, then rekey. The final count says
//!   whether anything is left.
//! - HMAC masks cannot be re-masked (nothing can open them); they are
//!   counted and left alone.

use std::collections::BTreeSet;
use tokio_postgres::GenericClient;

use anyhow::{bail, Context};

use crate::contract::Plan;
use crate::keyring::Keyring;
use crate::mask::{MaskMode, RevealError, HMAC_PREFIX, PFX_PREFIX, SIV_PREFIX};

/// A table to re-mask: its name as SQL (`user_logins`,
/// `"analytics"."signups"`) and its mask columns, each with the
/// associated data its masks are bound to.
#[derive(Debug, Clone)]
pub struct MaskedTable {
    /// The table, as SQL (a partitioned one is walked leaf by leaf).
    pub name: String,
    /// Mask columns (plain identifiers) and their associated data.
    pub columns: Vec<(String, Vec<u8>)>,
}

impl MaskedTable {
    /// Each contract table of a plan with its PII columns (HMAC ones too:
    /// they are counted, and left as they are).
    pub fn of_plan(plan: &Plan) -> Vec<Self> {
        plan.contracts
            .iter()
            .map(|contract| MaskedTable {
                name: crate::postgres::contract_sql::table_sql(&contract.table),
                columns: contract
                    .columns
                    .iter()
                    .filter_map(|c| {
                        let pii = c.pii.as_ref()?;
                        Some((c.name.clone(), pii.associated_data.clone()))
                    })
                    .collect(),
            })
            .filter(|table| !table.columns.is_empty())
            .collect()
    }
}

/// What a rekey run did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Rows read, in every table.
    pub rows_scanned: u64,
    /// Rows whose masks were replaced.
    pub rows_rekeyed: u64,
    /// Old-key HMAC masks, which cannot be re-masked.
    pub irreversible_skipped: u64,
    /// Quarantine bodies re-sealed with the active key.
    pub quarantine_resealed: u64,
    /// Key ids still used by some mask or quarantine body after the run.
    pub keys_in_use: BTreeSet<String>,
}

/// The tables holding the rows: the table itself, or its leaf
/// partitions, schema-qualified and quoted.
const LEAVES_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass($1)) WHERE isleaf)
       OR (c.oid = to_regclass($1) AND c.relkind = 'r')
    ORDER BY 1";

/// `"a", "b"` of the mask columns.
fn column_list(columns: &[(String, Vec<u8>)]) -> String {
    let names: Vec<String> = columns
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    names.join(", ")
}

/// The rows of a range of blocks: a TID range scan reads those blocks and
/// nothing else. (A `ctid > $last ORDER BY ctid LIMIT n` page, as rekey
/// first did, sorts every row after `$last` for each page: quadratic.)
fn page_sql(table: &str, columns: &[(String, Vec<u8>)]) -> String {
    format!(
        "SELECT ctid::text, {} FROM {table}
          WHERE ctid >= $1::text::tid AND ctid < $2::text::tid FOR UPDATE",
        column_list(columns)
    )
}

/// The block of the last tuple when the walk begins; the new versions its
/// own updates append lie beyond and need no look. (-1: an empty table.)
fn end_sql(table: &str) -> String {
    format!("SELECT coalesce((max(ctid)::text::point)[0]::int8, -1) FROM {table}")
}

/// Blocks per page: a row with its two masks takes about 200 bytes, some
/// 40 to an 8 KiB block, so a page holds about `batch_rows` rows.
fn blocks_per_page(batch_rows: i64) -> i64 {
    (batch_rows / 40).max(1)
}

fn update_sql(table: &str, columns: &[(String, Vec<u8>)]) -> String {
    let sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("\"{name}\" = v.c{i}"))
        .collect();
    let params: Vec<String> = (0..=columns.len())
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    format!(
        "UPDATE {table} AS u SET {}
           FROM unnest({}) AS v(ctid, {})
          WHERE u.ctid = v.ctid::tid",
        sets.join(", "),
        params.join(", "),
        aliases.join(", ")
    )
}

const QUARANTINE_PAGE_SQL: &str = "SELECT message_id, key_id, body_sealed FROM veil.quarantine
    WHERE key_id <> $1 ORDER BY message_id LIMIT $2 FOR UPDATE SKIP LOCKED";

const QUARANTINE_UPDATE_SQL: &str =
    "UPDATE veil.quarantine AS q SET key_id = $1, body_sealed = v.body
    FROM unnest($2::text[], $3::bytea[]) AS v(id, body) WHERE q.message_id = v.id";

/// The key ids still in any mask column of `tables` or the quarantine.
fn keys_in_use_sql(tables: &[MaskedTable]) -> String {
    let masks: Vec<String> = tables
        .iter()
        .flat_map(|table| {
            table
                .columns
                .iter()
                .map(move |(name, _)| format!("SELECT \"{name}\"::text AS m FROM {}", table.name))
        })
        .collect();
    let masks = if masks.is_empty() {
        "SELECT NULL::text AS m WHERE false".to_string()
    } else {
        masks.join(" UNION ALL ")
    };
    format!(
        "SELECT DISTINCT split_part(m, '.', 2) FROM ({masks}) masks
          WHERE m LIKE 'siv1.%' OR m LIKE 'hmac1.%' OR m LIKE 'pfx1.%'
         UNION SELECT DISTINCT key_id FROM veil.quarantine"
    )
}

/// Re-masks everything made by older keys with the keyring's active key.
/// `progress` is called after each committed page.
pub async fn rekey(
    client: &mut impl GenericClient,
    keyring: &Keyring,
    tables: &[MaskedTable],
    batch_rows: i64,
    mut progress: impl FnMut(&RekeyReport),
) -> anyhow::Result<RekeyReport> {
    let mut report = RekeyReport::default();
    for table in tables {
        let leaves: Vec<String> = client
            .query(LEAVES_SQL, &[&table.name])
            .await
            .with_context(|| format!("listing {}'s partitions", table.name))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for leaf in &leaves {
            rekey_table(
                client,
                leaf,
                &table.columns,
                keyring,
                batch_rows,
                &mut report,
                &mut progress,
            )
            .await?;
        }
    }
    reseal_quarantine(client, keyring, batch_rows, &mut report).await?;
    progress(&report);
    report.keys_in_use = client
        .query(&keys_in_use_sql(tables), &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(report)
}

/// Re-masks one table (`user_logins`, or one of its partitions).
async fn rekey_table(
    client: &mut impl GenericClient,
    table: &str,
    columns: &[(String, Vec<u8>)],
    keyring: &Keyring,
    batch_rows: i64,
    report: &mut RekeyReport,
    progress: &mut impl FnMut(&RekeyReport),
) -> anyhow::Result<()> {
    let (page, update) = (page_sql(table, columns), update_sql(table, columns));
    let others: Vec<Vec<u8>> = columns.iter().map(|(_, data)| data.clone()).collect();
    let last_block: i64 = client.query_one(&end_sql(table), &[]).await?.get(0);
    let step = blocks_per_page(batch_rows);
    let mut block = 0;
    while block <= last_block {
        // Never past the last block: the new versions this walk's own
        // updates append lie there.
        let end = (block + step).min(last_block + 1);
        let (from, to) = (format!("({block},0)"), format!("({end},0)"));
        block = end;
        let transaction = client.transaction().await?;
        let rows = transaction.query(&page, &[&from, &to]).await?;
        report.rows_scanned += rows.len() as u64;
        // ctids first, then one array per mask column.
        let mut arrays: Vec<Vec<Option<String>>> = vec![Vec::new(); columns.len() + 1];
        for row in &rows {
            let mut changed = false;
            let mut masks = Vec::with_capacity(columns.len());
            for (index, (_, data)) in columns.iter().enumerate() {
                let old: Option<String> = row.get(index + 1);
                let new = remask(keyring, old.clone(), data, &others, report)?;
                changed |= new.is_some();
                masks.push(new.or(old));
            }
            if changed {
                arrays[0].push(Some(row.get::<_, String>(0)));
                for (array, mask) in arrays[1..].iter_mut().zip(masks) {
                    array.push(mask);
                }
            }
        }
        if !arrays[0].is_empty() {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
                .iter()
                .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            report.rows_rekeyed += transaction.execute(&update, &params).await?;
        }
        transaction.commit().await?;
        progress(report);
    }
    Ok(())
}

/// The new mask for `mask` if it was made by an older key, else `None`.
fn remask(
    keyring: &Keyring,
    mask: Option<String>,
    associated_data: &[u8],
    others: &[Vec<u8>],
    report: &mut RekeyReport,
) -> anyhow::Result<Option<String>> {
    let Some(mask) = mask else { return Ok(None) };
    let active = keyring.active().id();
    match Keyring::key_id_of(&mask) {
        Some(id) if id == active => Ok(None),
        None => Ok(None),
        Some(_) if mask.starts_with(HMAC_PREFIX) => {
            report.irreversible_skipped += 1;
            Ok(None)
        }
        // Prefix-preserving masks are bound to the column's domain alone
        // (nothing in them says which domain made them).
        Some(id) if mask.starts_with(PFX_PREFIX) => {
            match keyring.open_prefix_preserving(&mask, associated_data) {
                Ok(address) => Ok(Some(
                    keyring.mask_prefix_preserving(associated_data, &address),
                )),
                Err(RevealError::UnknownKey(_)) => bail!(
                    "a mask was made with key {id}, which is not in the keyring; \
                     add it back (or rekey with a keyring that holds it)"
                ),
                Err(error) => Err(error).context("a prefix-preserving mask cannot be opened"),
            }
        }
        Some(id) => {
            debug_assert!(mask.starts_with(SIV_PREFIX));
            // The column's own domain first; a mask bound to another domain
            // of these tables stays bound to it (it is re-masked, not moved).
            let candidates: Vec<&[u8]> = std::iter::once(associated_data)
                .chain(others.iter().map(Vec::as_slice))
                .collect();
            match keyring.reveal(&mask, &candidates) {
                Ok((index, value)) => {
                    Ok(Some(keyring.mask(MaskMode::Siv, candidates[index], &value)))
                }
                Err(RevealError::UnknownKey(_)) => bail!(
                    "a mask was made with key {id}, which is not in the keyring; \
                     add it back (or rekey with a keyring that holds it)"
                ),
                Err(error) => Err(error).context("a mask in a mask column cannot be opened"),
            }
        }
    }
}

async fn reseal_quarantine(
    client: &mut impl GenericClient,
    keyring: &Keyring,
    batch_rows: i64,
    report: &mut RekeyReport,
) -> anyhow::Result<()> {
    let active = keyring.active().id().to_string();
    loop {
        let transaction = client.transaction().await?;
        let rows = transaction
            .query(QUARANTINE_PAGE_SQL, &[&active, &batch_rows])
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut bodies = Vec::with_capacity(rows.len());
        for row in &rows {
            let key_id: String = row.get(1);
            let body = keyring.open_body(&key_id, row.get(2)).with_context(|| {
                format!("quarantine body sealed by key {key_id} cannot be opened")
            })?;
            ids.push(row.get::<_, String>(0));
            bodies.push(keyring.seal_body(&body));
        }
        transaction
            .execute(QUARANTINE_UPDATE_SQL, &[&active, &ids, &bodies])
            .await?;
        transaction.commit().await?;
        report.quarantine_resealed += ids.len() as u64;
    }
    Ok(())
}
