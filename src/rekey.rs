//! Re-masking after a key rotation. Walks `user_logins` in physical order
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

use anyhow::{bail, Context};
use tokio_postgres::Client;

use crate::keyring::Keyring;
use crate::mask::{RevealError, HMAC_PREFIX, SIV_PREFIX};

/// What a rekey run did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Rows of user_logins read.
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

/// The tables holding the rows: `user_logins` itself, or its leaf
/// partitions, schema-qualified and quoted.
const LEAVES_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN (SELECT relid FROM pg_partition_tree('user_logins') WHERE isleaf)
       OR (c.oid = 'user_logins'::regclass AND c.relkind = 'r')
    ORDER BY 1";

/// The rows of a range of blocks: a TID range scan reads those blocks and
/// nothing else. (A `ctid > $last ORDER BY ctid LIMIT n` page, as rekey
/// first did, sorts every row after `$last` for each page: quadratic.)
fn page_sql(table: &str) -> String {
    format!(
        "SELECT ctid::text, masked_ip, masked_device_id FROM {table}
          WHERE ctid >= $1::text::tid AND ctid < $2::text::tid FOR UPDATE"
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

fn update_sql(table: &str) -> String {
    format!(
        "UPDATE {table} AS u SET masked_ip = v.ip, masked_device_id = v.device
           FROM unnest($1::text[], $2::text[], $3::text[]) AS v(ctid, ip, device)
          WHERE u.ctid = v.ctid::tid"
    )
}

const QUARANTINE_PAGE_SQL: &str = "SELECT message_id, key_id, body_sealed FROM veil.quarantine
    WHERE key_id <> $1 ORDER BY message_id LIMIT $2 FOR UPDATE SKIP LOCKED";

const QUARANTINE_UPDATE_SQL: &str =
    "UPDATE veil.quarantine AS q SET key_id = $1, body_sealed = v.body
    FROM unnest($2::text[], $3::bytea[]) AS v(id, body) WHERE q.message_id = v.id";

const KEYS_IN_USE_SQL: &str = "SELECT DISTINCT split_part(m, '.', 2) FROM (
        SELECT masked_ip AS m FROM user_logins UNION ALL SELECT masked_device_id FROM user_logins
    ) masks WHERE m LIKE 'siv1.%' OR m LIKE 'hmac1.%'
    UNION SELECT DISTINCT key_id FROM veil.quarantine";

/// Re-masks everything made by older keys with the keyring's active key.
/// `progress` is called after each committed page.
pub async fn rekey(
    client: &mut Client,
    keyring: &Keyring,
    batch_rows: i64,
    mut progress: impl FnMut(&RekeyReport),
) -> anyhow::Result<RekeyReport> {
    let mut report = RekeyReport::default();
    let leaves: Vec<String> = client
        .query(LEAVES_SQL, &[])
        .await
        .context("listing user_logins' partitions")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for table in &leaves {
        rekey_table(
            client,
            table,
            keyring,
            batch_rows,
            &mut report,
            &mut progress,
        )
        .await?;
    }
    reseal_quarantine(client, keyring, batch_rows, &mut report).await?;
    progress(&report);
    report.keys_in_use = client
        .query(KEYS_IN_USE_SQL, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(report)
}

/// Re-masks one table (`user_logins`, or one of its partitions).
async fn rekey_table(
    client: &mut Client,
    table: &str,
    keyring: &Keyring,
    batch_rows: i64,
    report: &mut RekeyReport,
    progress: &mut impl FnMut(&RekeyReport),
) -> anyhow::Result<()> {
    let (page, update) = (page_sql(table), update_sql(table));
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
        let (mut ctids, mut ips, mut devices) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let ip = remask(keyring, row.get(1), report)?;
            let device = remask(keyring, row.get(2), report)?;
            if ip.is_some() || device.is_some() {
                ctids.push(row.get::<_, String>(0));
                ips.push(ip.or_else(|| row.get(1)));
                devices.push(device.or_else(|| row.get(2)));
            }
        }
        if !ctids.is_empty() {
            report.rows_rekeyed += transaction
                .execute(&update, &[&ctids, &ips, &devices])
                .await?;
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
        Some(id) => {
            debug_assert!(mask.starts_with(SIV_PREFIX));
            match keyring.reveal(&mask) {
                Ok((field, value)) => Ok(Some(keyring.mask(field, &value))),
                Err(RevealError::UnknownKey(_)) => bail!(
                    "a mask was made with key {id}, which is not in the keyring; \
                     add it back (or rekey with a keyring that holds it)"
                ),
                Err(error) => Err(error).context("a mask in user_logins cannot be opened"),
            }
        }
    }
}

async fn reseal_quarantine(
    client: &mut Client,
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
