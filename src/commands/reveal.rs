//! `veil reveal`: masks back to values, always audited. The values are
//! opened first, then the audit row is committed, and only then is anything
//! printed. If the audit cannot be written, nothing is revealed.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};

use anyhow::{bail, Context};

use crate::cli::RevealArgs;
use crate::config::{database_from_args, key_location};
use crate::contract::{MaskKind, Plan};
use crate::error::ConfigError;
use crate::keyring as keys;
use crate::keyring::Keyring;
use crate::postgres::audit::{self, AuditRecord};
use crate::postgres::Database;
use crate::report::psql_table;

/// `veil reveal`.
pub async fn reveal(args: RevealArgs) -> anyhow::Result<()> {
    if args.reason.trim().is_empty() {
        return Err(ConfigError("--reason must say why PII is being revealed".into()).into());
    }
    let domains = Domains::of(&*crate::config::plan_from_args(&args.contracts)?);
    let keyring = keys::load(&key_location(&args.key)?, false, &crate::aws::KeyServices).await?;
    let mut database = Database::connect(database_from_args(&args.database)?).await?;
    let client = database.client().await?;
    let opener = Opener {
        keyring: &keyring,
        domains: &domains,
    };
    if let Some(sql) = &args.sql {
        reveal_query(client, &opener, sql, &args.mask_column, &args.reason).await
    } else if !args.quarantine.is_empty() {
        reveal_quarantine(client, &keyring, &args.quarantine, &args.reason).await
    } else {
        reveal_stdin(client, &opener, &args.reason).await
    }
}

/// What masks open as: the plan's reversible domains, with the columns
/// `--sql` opens: the plan's mask columns, and any named with
/// `--mask-column` (for aliases). Other columns are printed as they are,
/// even when a value looks like a mask: a producer controls `user_id` and
/// could plant one.
struct Domains {
    names: Vec<String>,
    associated_data: Vec<Vec<u8>>,
    mask_columns: Vec<String>,
    /// Prefix-preserving domains (name, associated data), and the mask
    /// columns of each: a `pfx1.` mask does not say its domain, so it is
    /// opened in its column's, or in the plan's only one.
    prefix_preserving: Vec<(String, Vec<u8>)>,
    prefix_columns: Vec<(String, usize)>,
}

impl Domains {
    fn of(plan: &Plan) -> Self {
        let reversible: Vec<_> = plan
            .domains()
            .into_iter()
            .filter(|pii| pii.kind == MaskKind::Siv)
            .collect();
        let mut mask_columns: Vec<String> = Vec::new();
        let mut prefix_preserving: Vec<(String, Vec<u8>)> = Vec::new();
        let mut prefix_columns = Vec::new();
        for column in plan.contracts.iter().flat_map(|c| &c.columns) {
            let Some(pii) = &column.pii else { continue };
            if !mask_columns.contains(&column.name) {
                mask_columns.push(column.name.clone());
            }
            if pii.kind == MaskKind::Pfx {
                let index = match prefix_preserving.iter().position(|(n, _)| *n == pii.domain) {
                    Some(index) => index,
                    None => {
                        prefix_preserving.push((pii.domain.clone(), pii.associated_data.clone()));
                        prefix_preserving.len() - 1
                    }
                };
                prefix_columns.push((column.name.clone(), index));
            }
        }
        Domains {
            prefix_preserving,
            prefix_columns,
            names: reversible.iter().map(|p| p.domain.clone()).collect(),
            associated_data: reversible
                .iter()
                .map(|p| p.associated_data.clone())
                .collect(),
            mask_columns,
        }
    }
}

/// A keyring and the domains its masks are opened in.
struct Opener<'a> {
    keyring: &'a Keyring,
    domains: &'a Domains,
}

impl<'a> Opener<'a> {
    /// The domain's name and the value of a mask found in `column` (None:
    /// a mask on stdin).
    fn open(
        &self,
        mask: &str,
        column: Option<&str>,
    ) -> Result<(&'a str, String), crate::mask::RevealError> {
        if mask.trim_start().starts_with(crate::mask::PFX_PREFIX) {
            return self.open_prefix_preserving(mask, column);
        }
        let data: Vec<&[u8]> = self
            .domains
            .associated_data
            .iter()
            .map(Vec::as_slice)
            .collect();
        let (index, value) = self.keyring.reveal(mask, &data)?;
        Ok((self.domains.names[index].as_str(), value))
    }

    fn open_prefix_preserving(
        &self,
        mask: &str,
        column: Option<&str>,
    ) -> Result<(&'a str, String), crate::mask::RevealError> {
        let domains = &self.domains.prefix_preserving;
        let by_column = column.and_then(|column| {
            self.domains
                .prefix_columns
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, index)| *index)
        });
        let index = match (by_column, domains.len()) {
            (Some(index), _) => index,
            (None, 1) => 0,
            // Several domains, and nothing says which made this mask.
            _ => return Err(crate::mask::RevealError::NotAMask),
        };
        let (name, data) = &domains[index];
        let value = self.keyring.open_prefix_preserving(mask, data)?;
        Ok((name.as_str(), value))
    }
}

fn field_names<'a>(fields: &BTreeSet<&'a str>) -> Vec<&'a str> {
    fields.iter().copied().collect()
}

async fn write_audit(
    client: &impl crate::postgres::GenericClient,
    record: AuditRecord<'_>,
) -> anyhow::Result<()> {
    audit::record(client, &record).await.context(
        "writing the audit record (veil.audit; run `veil migrate` and grant INSERT on it); nothing was revealed",
    )?;
    tracing::info!(
        values = record.value_count,
        action = record.action,
        "reveal audited"
    );
    Ok(())
}

/// Masks on stdin, one per line. Values are printed up to the first line
/// that cannot be opened, which then ends the command with an error.
async fn reveal_stdin(
    client: &impl crate::postgres::GenericClient,
    opener: &Opener<'_>,
    reason: &str,
) -> anyhow::Result<()> {
    let mut values = Vec::new();
    let mut fields = BTreeSet::new();
    let mut failure = None;
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        let mask = line.trim();
        if mask.is_empty() {
            values.push(String::new());
            continue;
        }
        match opener.open(mask, None) {
            Ok((field, value)) => {
                fields.insert(field);
                values.push(value);
            }
            Err(error) => {
                failure = Some((index + 1, error));
                break;
            }
        }
    }
    let opened = values.iter().filter(|v| !v.is_empty()).count();
    write_audit(
        client,
        AuditRecord {
            action: "masks",
            value_count: i32::try_from(opened).unwrap_or(i32::MAX),
            fields: field_names(&fields),
            reason,
            query: None,
        },
    )
    .await?;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for value in &values {
        // One line per mask, whatever the value holds.
        writeln!(stdout, "{}", crate::report::escape_control(value))?;
    }
    stdout.flush()?;
    if let Some((line, error)) = failure {
        bail!("line {line}: cannot reveal: {error}");
    }
    Ok(())
}

/// Runs one read-only query and opens the masks in its mask columns. A
/// mask-shaped cell that does not open is left as it is and reported; it
/// does not stop the others.
async fn reveal_query(
    client: &mut impl crate::postgres::GenericClient,
    opener: &Opener<'_>,
    sql: &str,
    extra_mask_columns: &[String],
    reason: &str,
) -> anyhow::Result<()> {
    let statement = sql.trim().trim_end_matches(';').trim();
    if statement.contains(';') {
        return Err(ConfigError("--sql takes a single statement".into()).into());
    }
    let result = crate::postgres::reveal::read_only_rows(client, statement).await?;
    let headers = result.headers;
    let masked: Vec<bool> = headers
        .iter()
        .map(|h| opener.domains.mask_columns.contains(h) || extra_mask_columns.contains(h))
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut fields = BTreeSet::new();
    let mut opened = 0usize;
    let mut refused: Vec<String> = Vec::new();
    for row in result.rows {
        let mut cells = Vec::with_capacity(row.len());
        for (index, header) in headers.iter().enumerate() {
            let cell = row[index].as_deref().unwrap_or_default();
            if !masked[index] || Keyring::key_id_of(cell).is_none() {
                cells.push(cell.to_string());
                continue;
            }
            match opener.open(cell, Some(header)) {
                Ok((field, value)) => {
                    fields.insert(field);
                    opened += 1;
                    cells.push(value);
                }
                Err(error) => {
                    refused.push(format!("row {}, column {header}: {error}", rows.len() + 1));
                    cells.push(cell.to_string());
                }
            }
        }
        rows.push(cells);
    }
    write_audit(
        client,
        AuditRecord {
            action: "sql",
            value_count: i32::try_from(opened).unwrap_or(i32::MAX),
            fields: field_names(&fields),
            reason,
            query: Some(statement),
        },
    )
    .await?;
    print!("{}", psql_table(&headers, &rows, &[], rows.len() as u64));
    if !refused.is_empty() {
        eprintln!(
            "warning: {} cell(s) looked like masks but did not open, and are shown as they are:",
            refused.len()
        );
        for line in refused {
            eprintln!("  {line}");
        }
    }
    Ok(())
}

/// Prints quarantined bodies as JSON lines `{"message_id", "reason", "body"}`.
async fn reveal_quarantine(
    client: &impl crate::postgres::GenericClient,
    keyring: &Keyring,
    message_ids: &[String],
    reason: &str,
) -> anyhow::Result<()> {
    let rows = crate::postgres::reveal::quarantined(client, message_ids).await?;
    let mut lines = Vec::with_capacity(message_ids.len());
    for id in message_ids {
        let row = rows
            .iter()
            .find(|row| row.message_id == *id)
            .ok_or_else(|| anyhow::anyhow!("message {id} is not in veil.quarantine"))?;
        let body = keyring
            .open_body(&row.key_id, &row.body_sealed)
            .with_context(|| format!("message {id}: cannot open its body"))?;
        lines.push(serde_json::json!({
            "message_id": id,
            "reason": row.reason,
            "body": String::from_utf8_lossy(&body),
        }));
    }
    write_audit(
        client,
        AuditRecord {
            action: "quarantine",
            value_count: i32::try_from(lines.len()).unwrap_or(i32::MAX),
            fields: vec!["quarantine_body"],
            reason,
            query: None,
        },
    )
    .await?;
    for line in lines {
        println!("{}", crate::report::escape_c1_in_json(&line.to_string()));
    }
    Ok(())
}
