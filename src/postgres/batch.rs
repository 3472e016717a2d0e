//! The batch SQL: each batch claims its message ids in the ledger (its
//! primary key means concurrent writers and redeliveries cannot
//! double-record) and inserts the rows and quarantine entries of the ids it
//! claimed, atomically. The result says, message by message and in the
//! order given, what was recorded.
//!
//! The common case is one prepared statement per batch, one round trip:
//! three set-based `unnest` inserts joined as data-modifying CTEs, committed
//! as one implicit transaction. A unique violation of the ledger's or the
//! quarantine's key (an id already recorded) undoes it all, and the batch
//! is redone in a transaction that claims only the free ids. (Binary COPY
//! into a staging table, then INSERT ... SELECT, was measured slower here:
//! it writes every row twice.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::GenericClient;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::Statement;

use super::contract_sql::ContractBatchSql;
use super::failure::{classify, Class, WriteError};
use crate::contract::{Cell, Plan};
use crate::record::{Prepared, QuarantineEntry, Record, Recorded, Row};

/// Claims ids that may already be in the ledger: takes the free ones.
const CLAIM_SQL: &str = "INSERT INTO veil.ledger (sent_ms, message_id, outcome)
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[])
    ON CONFLICT (sent_ms, message_id) DO NOTHING
    RETURNING message_id";

/// Ids recorded by veil before the ledger was keyed on `sent_ms` (kept by
/// `migrate` as `veil.ledger_v1`, read-only).
const LEGACY_LEDGER_SQL: &str =
    "SELECT message_id FROM veil.ledger_v1 WHERE message_id = ANY($1::text[])";

/// What the writer prepares once per connection.
pub struct WriterStatements {
    record_all: Statement,
    /// `veil.ledger_v1` exists: ids are also checked against it (until an
    /// operator drops it).
    legacy_ledger: AtomicBool,
    /// The plan's statements.
    sql: ContractBatchSql,
    /// Each contract's column count.
    widths: Vec<usize>,
}

impl WriterStatements {
    /// Prepares the plan's batch statement on this connection (the schema
    /// must exist: run `migrate` first).
    pub async fn prepare(
        client: &impl GenericClient,
        plan: &Plan,
    ) -> Result<Self, tokio_postgres::Error> {
        let sql = ContractBatchSql::of(plan);
        let record_all = client.prepare(&sql.record_all).await?;
        let legacy_ledger = client
            .query_one("SELECT to_regclass('veil.ledger_v1') IS NOT NULL", &[])
            .await?
            .get(0);
        Ok(WriterStatements {
            record_all,
            legacy_ledger: AtomicBool::new(legacy_ledger),
            sql,
            widths: plan.contracts.iter().map(|c| c.columns.len()).collect(),
        })
    }
}

/// Records a batch atomically and says what became of each message, in
/// the order given. A message whose id is already in the ledger (or
/// repeated within the batch) is a `Duplicate`.
///
/// First claims every id with a plain insert in one statement, the common
/// case. If an id is taken (a redelivery, or another consumer holding the
/// same message), Postgres answers with a unique violation (after waiting
/// for the other transaction to commit) and nothing of the batch is kept.
/// The batch is then redone with `ON CONFLICT DO NOTHING`, so only the free
/// ids are recorded.
pub async fn record_batch(
    client: &mut impl GenericClient,
    statements: &WriterStatements,
    batch: &[&Prepared],
) -> Result<Vec<Recorded>, WriteError> {
    let mut results = vec![Recorded::Duplicate; batch.len()];
    let mut seen = HashSet::with_capacity(batch.len());
    let mut unique: Vec<usize> = (0..batch.len())
        .filter(|&index| seen.insert(batch[index].message_id.as_str()))
        .collect();
    if statements.legacy_ledger.load(Ordering::Relaxed) {
        let ids: Vec<&str> = unique
            .iter()
            .map(|&index| batch[index].message_id.as_str())
            .collect();
        match client.query(LEGACY_LEDGER_SQL, &[&ids]).await {
            Ok(rows) => {
                let recorded: HashSet<String> = rows.iter().map(|row| row.get(0)).collect();
                unique.retain(|&index| !recorded.contains(&batch[index].message_id));
            }
            // Dropped by an operator, as docs/operations.md suggests once
            // nothing in it can be redelivered: stop checking it.
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                tracing::info!("veil.ledger_v1 is gone; no longer checking it");
                statements.legacy_ledger.store(false, Ordering::Relaxed);
            }
            Err(error) => return Err(error.into()),
        }
    }
    let items: Vec<&Prepared> = unique.iter().map(|&index| batch[index]).collect();
    let recorded = match record_all(client, statements, &items).await {
        Ok(recorded) => recorded,
        Err(error) if is_already_recorded(&error) => {
            record_free(client, statements, &items).await?
        }
        Err(error) => return Err(error.into()),
    };
    for (index, outcome) in unique.into_iter().zip(recorded) {
        results[index] = outcome;
    }
    Ok(results)
}

/// A unique violation of the ledger's or the quarantine's key.
fn is_already_recorded(error: &tokio_postgres::Error) -> bool {
    let constraint = error.as_db_error().and_then(|db| db.constraint());
    classify(error.code(), constraint) == Class::Duplicate
}

/// What recording `item` means, if it is claimed.
fn recorded(item: &Prepared) -> Recorded {
    match &item.record {
        Record::Row(_) => Recorded::Written,
        Record::Quarantine(entry) => Recorded::Quarantined(entry.reason),
    }
}

/// A batch split into what goes into each table, as `unnest` columns.
struct Columns<'a> {
    sent: Vec<i64>,
    ids: Vec<&'a str>,
    kinds: Vec<&'static str>,
    rows: Vec<&'a Row>,
    quarantine: Vec<(&'a str, &'a QuarantineEntry)>,
}

impl<'a> Columns<'a> {
    fn of(items: &[&'a Prepared]) -> Self {
        let mut columns = Columns {
            sent: Vec::with_capacity(items.len()),
            ids: Vec::with_capacity(items.len()),
            kinds: Vec::with_capacity(items.len()),
            rows: Vec::with_capacity(items.len()),
            quarantine: Vec::new(),
        };
        for item in items {
            columns.push(item);
        }
        columns
    }

    fn push(&mut self, item: &'a Prepared) {
        self.sent.push(item.sent_ms);
        self.ids.push(&item.message_id);
        match &item.record {
            Record::Row(row) => {
                self.kinds.push("written");
                self.rows.push(row);
            }
            Record::Quarantine(entry) => {
                self.kinds.push("quarantined");
                self.quarantine.push((&item.message_id, entry));
            }
        }
    }
}

/// One cell as an element of its column's array parameter, bound as the
/// column's `Bind` says: a number or a date in binary, anything else as
/// its text, NULL as NULL, without a copy.
#[derive(Debug)]
struct CellValue<'a>(&'a Cell);

impl ToSql for CellValue<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self.0, ty) {
            (Cell::Null, _) => Ok(IsNull::Yes),
            (Cell::Text(text) | Cell::Numeric(text) | Cell::Json(text), &Type::TEXT) => {
                text.as_str().to_sql(ty, out)
            }
            (Cell::Integer(number), &Type::INT8) => number.to_sql(ty, out),
            (Cell::Date(date), &Type::DATE) => date.to_sql(ty, out),
            (Cell::Boolean(flag), &Type::BOOL) => flag.to_sql(ty, out),
            (Cell::Timestamp(time), &Type::TIMESTAMPTZ) => time.to_sql(ty, out),
            // Prepare makes each column's cells of its bind (a test holds
            // it to that); a bug here fails the batch, never stores NULL.
            (cell, ty) => Err(format!("a {cell:?} cannot be sent as {ty}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TEXT,
            Type::INT8,
            Type::DATE,
            Type::BOOL,
            Type::TIMESTAMPTZ,
        ]
        .contains(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The `unnest` arrays of rows: for each contract of the plan, one array
/// per column (empty for a contract with no row here).
struct RowArrays<'a> {
    columns: Vec<Vec<Vec<CellValue<'a>>>>,
    rows: Vec<usize>,
}

impl<'a> RowArrays<'a> {
    fn of(widths: &[usize], events: &[&'a Row]) -> Self {
        let mut columns: Vec<Vec<Vec<CellValue<'a>>>> = widths
            .iter()
            .map(|&width| {
                (0..width)
                    .map(|_| Vec::with_capacity(events.len()))
                    .collect()
            })
            .collect();
        let mut rows = vec![0; widths.len()];
        for event in events {
            rows[event.contract] += 1;
            for (column, cell) in columns[event.contract].iter_mut().zip(&event.cells) {
                column.push(CellValue(cell));
            }
        }
        RowArrays { columns, rows }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        (0..self.columns.len())
            .flat_map(|index| self.params_of(index))
            .collect()
    }

    fn params_of(&self, contract: usize) -> Vec<&(dyn ToSql + Sync)> {
        self.columns[contract]
            .iter()
            .map(|column| column as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The `unnest` arrays of quarantine entries.
struct QuarantineArrays<'a> {
    ids: Vec<&'a str>,
    reasons: Vec<&'static str>,
    fields: Vec<Option<&'a str>>,
    sent: Vec<Option<DateTime<Utc>>>,
    counts: Vec<Option<i32>>,
    keys: Vec<&'a str>,
    bodies: Vec<&'a [u8]>,
    sizes: Vec<i32>,
    contracts: Vec<Option<&'a str>>,
}

impl<'a> QuarantineArrays<'a> {
    fn of(entries: &[(&'a str, &'a QuarantineEntry)]) -> Self {
        QuarantineArrays {
            ids: entries.iter().map(|(id, _)| *id).collect(),
            reasons: entries.iter().map(|(_, e)| e.reason.code()).collect(),
            fields: entries.iter().map(|(_, e)| e.field.as_deref()).collect(),
            sent: entries.iter().map(|(_, e)| e.sent_at).collect(),
            counts: entries.iter().map(|(_, e)| e.receive_count).collect(),
            keys: entries.iter().map(|(_, e)| e.key_id.as_str()).collect(),
            bodies: entries
                .iter()
                .map(|(_, e)| e.body_sealed.as_slice())
                .collect(),
            sizes: entries.iter().map(|(_, e)| e.body_bytes).collect(),
            contracts: entries.iter().map(|(_, e)| e.contract.as_deref()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.ids,
            &self.reasons,
            &self.fields,
            &self.sent,
            &self.counts,
            &self.keys,
            &self.bodies,
            &self.sizes,
            &self.contracts,
        ]
    }
}

/// The fast path: every id claimed, everything inserted, one statement.
async fn record_all(
    client: &impl GenericClient,
    statements: &WriterStatements,
    items: &[&Prepared],
) -> Result<Vec<Recorded>, tokio_postgres::Error> {
    let columns = Columns::of(items);
    let rows = RowArrays::of(&statements.widths, &columns.rows);
    let quarantine = QuarantineArrays::of(&columns.quarantine);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&columns.sent, &columns.ids, &columns.kinds];
    params.extend(rows.params());
    params.extend(quarantine.params());
    client.execute(&statements.record_all, &params).await?;
    Ok(items.iter().map(|item| recorded(item)).collect())
}

/// The slow path, after a unique violation: claims the free ids in a
/// transaction and records only those (a quarantine entry already there is
/// left as it is).
async fn record_free(
    client: &mut impl GenericClient,
    statements: &WriterStatements,
    items: &[&Prepared],
) -> Result<Vec<Recorded>, WriteError> {
    let transaction = client.transaction().await?;
    let all = Columns::of(items);
    let claimed: HashSet<String> = transaction
        .query(CLAIM_SQL, &[&all.sent, &all.ids, &all.kinds])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut columns = Columns::of(&[]);
    for item in items.iter().copied() {
        if claimed.contains(&item.message_id) {
            columns.push(item);
        }
    }
    let rows = RowArrays::of(&statements.widths, &columns.rows);
    for (index, insert) in statements.sql.inserts.iter().enumerate() {
        if rows.rows[index] > 0 {
            transaction.execute(insert, &rows.params_of(index)).await?;
        }
    }
    let mut quarantined = HashSet::new();
    if !columns.quarantine.is_empty() {
        let arrays = QuarantineArrays::of(&columns.quarantine);
        let rows = transaction
            .query(&statements.sql.quarantine, &arrays.params())
            .await?;
        quarantined = rows.iter().map(|row| row.get::<_, String>(0)).collect();
    }
    transaction.commit().await?;
    Ok(items
        .iter()
        .map(|item| match &item.record {
            _ if !claimed.contains(&item.message_id) => Recorded::Duplicate,
            Record::Quarantine(_) if !quarantined.contains(&item.message_id) => Recorded::Duplicate,
            _ => recorded(item),
        })
        .collect())
}
