//! The batch writer: one transaction per batch claims the message ids in the
//! ledger (its primary key means concurrent writers and redeliveries cannot
//! double-record), then inserts the rows and quarantine entries of the ids
//! it claimed. Set-based `unnest` inserts: three statements per batch,
//! whatever its size. (Binary COPY into a staging table, then INSERT ...
//! SELECT, was measured slower here: it writes every row twice.)

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// A row for `user_logins`, PII already masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedRow {
    /// user_id
    pub user_id: String,
    /// device_type
    pub device_type: String,
    /// masked_ip
    pub masked_ip: String,
    /// masked_device_id
    pub masked_device_id: String,
    /// locale
    pub locale: Option<String>,
    /// app_version (the major version number)
    pub app_version: i32,
    /// create_date (UTC date of SentTimestamp)
    pub create_date: NaiveDate,
}

/// A message that is not a valid event, body sealed with the masking key.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    /// Reason code (see `event::RejectReason::code`).
    pub reason: &'static str,
    /// The offending field, if one.
    pub field: Option<&'static str>,
    /// When SQS accepted the message.
    pub sent_at: Option<DateTime<Utc>>,
    /// ApproximateReceiveCount at this delivery.
    pub receive_count: Option<i32>,
    /// Id of the key that sealed the body.
    pub key_id: String,
    /// The body, AES-SIV encrypted (nonce || ciphertext).
    pub body_sealed: Vec<u8>,
    /// Length of the original body in bytes.
    pub body_bytes: i32,
}

/// What to record for one message.
#[derive(Debug, Clone)]
pub enum Record {
    /// A valid event.
    Row(MaskedRow),
    /// Bad input.
    Quarantine(QuarantineEntry),
}

/// One message ready to be written.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// SQS message id: the idempotency key.
    pub message_id: String,
    /// What to record.
    pub record: Record,
}

/// What one committed batch did. Borrows the written rows from the batch
/// (copying them cost measurable CPU per event; only a sample is kept).
#[derive(Debug, Default, Clone)]
pub struct BatchOutcome<'a> {
    /// Rows inserted into user_logins, in input order.
    pub written: Vec<&'a MaskedRow>,
    /// Quarantine entries inserted, by reason code.
    pub quarantined: Vec<&'static str>,
    /// Messages skipped because the ledger already had them.
    pub duplicates: usize,
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Connection lost, server shutting down, serialization failure, lack of
    /// resources: retry the same batch later.
    #[error("database unavailable: {0}")]
    Transient(#[source] tokio_postgres::Error),
    /// Postgres refused some value in the batch (a data exception): split the
    /// batch to find the message to blame.
    #[error("database rejected a value: {0}")]
    Data(#[source] tokio_postgres::Error),
    /// Anything else (permissions, missing table): not fixed by retrying soon.
    #[error("database error: {0}")]
    Fatal(#[source] tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(code) = error.code() else {
            // No SQLSTATE: the connection itself failed.
            return WriteError::Transient(error);
        };
        let class = &code.code()[..2];
        match class {
            // connection exception, insufficient resources, operator intervention
            "08" | "53" | "57" => WriteError::Transient(error),
            // serialization failure / deadlock
            _ if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                WriteError::Transient(error)
            }
            // data exception, e.g. a character the server encoding cannot hold
            "22" => WriteError::Data(error),
            _ => WriteError::Fatal(error),
        }
    }
}

/// Claims ids that may already be in the ledger: takes the free ones.
const CLAIM_SQL: &str = "INSERT INTO veil.ledger (message_id, outcome)
    SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id";

/// Claims ids expected to be new: all or nothing, and about twice as fast
/// as `ON CONFLICT`, whose speculative insertion doubles the index work
/// (`cargo bench --bench writer`).
const CLAIM_ALL_SQL: &str = "INSERT INTO veil.ledger (message_id, outcome)
    SELECT * FROM unnest($1::text[], $2::text[])";

const INSERT_ROWS_SQL: &str = "INSERT INTO user_logins
    (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[],
                         $5::varchar[], $6::int4[], $7::date[])";

const INSERT_QUARANTINE_SQL: &str = "INSERT INTO veil.quarantine
    (message_id, reason, field, sent_at, receive_count, key_id, body_sealed, body_bytes)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[],
                         $6::text[], $7::bytea[], $8::int4[])";

/// Records a batch in one transaction. Messages whose id is already in the
/// ledger (or repeated within the batch) are counted as duplicates.
///
/// First tries to claim every id with a plain insert, the common case.
/// If an id is taken (a redelivery, or another consumer holding the same
/// message), Postgres answers with a unique violation (after waiting for
/// the other transaction to commit). The batch is then redone with
/// `ON CONFLICT DO NOTHING`, so only the free ids are recorded.
pub async fn record_batch<'a>(
    client: &mut Client,
    batch: &'a [Prepared],
) -> Result<BatchOutcome<'a>, WriteError> {
    let mut seen = HashSet::with_capacity(batch.len());
    let unique: Vec<&Prepared> = batch
        .iter()
        .filter(|item| seen.insert(item.message_id.as_str()))
        .collect();
    let repeated_in_batch = batch.len() - unique.len();
    let mut outcome = match record_unique(client, &unique, Claim::All).await {
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            record_unique(client, &unique, Claim::FreeOnly).await?
        }
        other => other?,
    };
    outcome.duplicates += repeated_in_batch;
    Ok(outcome)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Every id must be new (plain insert).
    All,
    /// Take the ids that are free (`ON CONFLICT DO NOTHING`).
    FreeOnly,
}

async fn record_unique<'a>(
    client: &mut Client,
    unique: &[&'a Prepared],
    claim: Claim,
) -> Result<BatchOutcome<'a>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let ids: Vec<&str> = unique.iter().map(|item| item.message_id.as_str()).collect();
    let kinds: Vec<&str> = unique
        .iter()
        .map(|item| match item.record {
            Record::Row(_) => "written",
            Record::Quarantine(_) => "quarantined",
        })
        .collect();
    let claimed: Option<HashSet<String>> = match claim {
        Claim::All => {
            transaction.execute(CLAIM_ALL_SQL, &[&ids, &kinds]).await?;
            None
        }
        Claim::FreeOnly => Some(
            transaction
                .query(CLAIM_SQL, &[&ids, &kinds])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect(),
        ),
    };
    let is_claimed = |item: &&&'a Prepared| {
        claimed
            .as_ref()
            .is_none_or(|c| c.contains(&item.message_id))
    };
    let mut rows: Vec<&'a MaskedRow> = Vec::new();
    let mut quarantine = Vec::new();
    for item in unique.iter().copied().filter(|item| is_claimed(&item)) {
        match &item.record {
            Record::Row(row) => rows.push(row),
            Record::Quarantine(entry) => quarantine.push((item.message_id.as_str(), entry)),
        }
    }
    if !rows.is_empty() {
        insert_rows(&transaction, &rows).await?;
    }
    if !quarantine.is_empty() {
        insert_quarantine(&transaction, &quarantine).await?;
    }
    transaction.commit().await?;
    Ok(BatchOutcome {
        duplicates: unique.len() - rows.len() - quarantine.len(),
        written: rows,
        quarantined: quarantine.iter().map(|(_, entry)| entry.reason).collect(),
    })
}

async fn insert_rows(
    transaction: &tokio_postgres::Transaction<'_>,
    rows: &[&MaskedRow],
) -> Result<(), tokio_postgres::Error> {
    let column = |f: fn(&MaskedRow) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let locales: Vec<Option<&str>> = rows.iter().map(|r| r.locale.as_deref()).collect();
    let versions: Vec<i32> = rows.iter().map(|r| r.app_version).collect();
    let dates: Vec<NaiveDate> = rows.iter().map(|r| r.create_date).collect();
    transaction
        .execute(
            INSERT_ROWS_SQL,
            &[
                &column(|r| &r.user_id),
                &column(|r| &r.device_type),
                &column(|r| &r.masked_ip),
                &column(|r| &r.masked_device_id),
                &locales,
                &versions,
                &dates,
            ],
        )
        .await?;
    Ok(())
}

async fn insert_quarantine(
    transaction: &tokio_postgres::Transaction<'_>,
    entries: &[(&str, &QuarantineEntry)],
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<&str> = entries.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<&str> = entries.iter().map(|(_, e)| e.reason).collect();
    let fields: Vec<Option<&str>> = entries.iter().map(|(_, e)| e.field).collect();
    let sent: Vec<Option<DateTime<Utc>>> = entries.iter().map(|(_, e)| e.sent_at).collect();
    let counts: Vec<Option<i32>> = entries.iter().map(|(_, e)| e.receive_count).collect();
    let keys: Vec<&str> = entries.iter().map(|(_, e)| e.key_id.as_str()).collect();
    let bodies: Vec<&[u8]> = entries
        .iter()
        .map(|(_, e)| e.body_sealed.as_slice())
        .collect();
    let sizes: Vec<i32> = entries.iter().map(|(_, e)| e.body_bytes).collect();
    transaction
        .execute(
            INSERT_QUARANTINE_SQL,
            &[
                &ids, &reasons, &fields, &sent, &counts, &keys, &bodies, &sizes,
            ],
        )
        .await?;
    Ok(())
}
