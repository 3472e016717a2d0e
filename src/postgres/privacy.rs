//! The SQL of `veil find` and `veil forget`: rows of a contract's table by
//! the values of one column (the masks of a value, or the value as
//! stored), the quarantine read in pages so its bodies can be opened and
//! checked, and which keys made the masks and seals there.

use tokio_postgres::GenericClient;

use super::contract_sql::table_sql;
use crate::contract::{Plan, TableName};

/// One quarantined message, sealed.
#[derive(Debug, Clone)]
pub struct SealedEntry {
    /// Its SQS message id.
    pub message_id: String,
    /// The key that sealed it.
    pub key_id: String,
    /// The sealed body.
    pub body_sealed: Vec<u8>,
}

/// The quarantine after `after` (by message id), `page_rows` at a time;
/// with `lock`, locked against concurrent changes until the transaction
/// ends (`forget`; `find` only reads).
pub async fn quarantine_page(
    client: &impl GenericClient,
    after: &str,
    page_rows: i64,
    lock: bool,
) -> Result<Vec<SealedEntry>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT message_id, key_id, body_sealed FROM veil.quarantine
          WHERE message_id > $1 ORDER BY message_id LIMIT $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = client.query(&sql, &[&after, &page_rows]).await?;
    Ok(rows
        .iter()
        .map(|row| SealedEntry {
            message_id: row.get(0),
            key_id: row.get(1),
            body_sealed: row.get(2),
        })
        .collect())
}

/// Deletes quarantine entries by message id.
pub async fn delete_quarantined(
    client: &impl GenericClient,
    message_ids: &[String],
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM veil.quarantine WHERE message_id = ANY($1)",
            &[&message_ids],
        )
        .await
}

/// How many rows of a contract's table hold one of `values` in `column`
/// (compared as text, so any column type matches its stored form).
async fn count_rows(
    client: &impl GenericClient,
    table: &TableName,
    column: &str,
    values: &[String],
) -> Result<i64, tokio_postgres::Error> {
    let sql = format!(
        "SELECT count(*) FROM {} WHERE \"{column}\"::text = ANY($1)",
        table_sql(table)
    );
    Ok(client.query_one(&sql, &[&values]).await?.get(0))
}

/// The matching rows of a contract's table (their `shown` columns, as
/// text, at most `limit`, in the order of `order_by` then the shown
/// columns) and how many match.
pub async fn find_rows(
    client: &impl GenericClient,
    table: &TableName,
    column: &str,
    values: &[String],
    shown: &[String],
    order_by: Option<&str>,
    limit: i64,
) -> Result<(Vec<Vec<Option<String>>>, i64), tokio_postgres::Error> {
    let total = count_rows(client, table, column, values).await?;
    let list: Vec<String> = shown
        .iter()
        .map(|name| format!("\"{name}\"::text"))
        .collect();
    let order: Vec<String> = order_by
        .into_iter()
        .chain(shown.iter().map(String::as_str))
        .map(|name| format!("\"{name}\""))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE \"{column}\"::text = ANY($1){} LIMIT $2",
        if list.is_empty() {
            "NULL::text".to_string()
        } else {
            list.join(", ")
        },
        table_sql(table),
        if order.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", order.join(", "))
        }
    );
    let rows = client.query(&sql, &[&values, &limit]).await?;
    let cells = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect()
        })
        .collect();
    Ok((cells, total))
}

/// Deletes the matching rows of a contract's table (or counts them).
pub async fn delete_rows(
    client: &impl GenericClient,
    table: &TableName,
    column: &str,
    values: &[String],
    dry_run: bool,
) -> Result<u64, tokio_postgres::Error> {
    if dry_run {
        return Ok(count_rows(client, table, column, values).await?.max(0) as u64);
    }
    let sql = format!(
        "DELETE FROM {} WHERE \"{column}\"::text = ANY($1)",
        table_sql(table)
    );
    client.execute(&sql, &[&values]).await
}

/// How many masks of the PII columns of the plan's tables and how many
/// quarantined bodies each key id made, so a lookup can refuse a keyring
/// that lacks some of them (it would miss what they hold). Reads every row
/// once.
pub async fn masks_by_key(
    client: &impl GenericClient,
    plan: &Plan,
) -> Result<std::collections::BTreeMap<String, i64>, tokio_postgres::Error> {
    let mut masks: Vec<String> = Vec::new();
    for contract in &plan.contracts {
        for column in contract.columns.iter().filter(|c| c.pii.is_some()) {
            masks.push(format!(
                "SELECT \"{}\"::text AS m FROM {}",
                column.name,
                table_sql(&contract.table)
            ));
        }
    }
    let from = if masks.is_empty() {
        "SELECT NULL::text AS m WHERE false".to_string()
    } else {
        masks.join(" UNION ALL ")
    };
    let sql = format!(
        "SELECT key_id, count(*) FROM (
             SELECT split_part(m, '.', 2) AS key_id FROM ({from}) masks
              WHERE m LIKE 'siv1.%' OR m LIKE 'hmac1.%' OR m LIKE 'pfx1.%'
             UNION ALL SELECT key_id FROM veil.quarantine) made
          GROUP BY key_id"
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}
