//! The SQL of `veil reveal`: an operator's one statement, run in a
//! read-only transaction that is rolled back, its rows as text; and
//! quarantined bodies, sealed, by message id.

use anyhow::Context;
use tokio_postgres::GenericClient;
use tokio_postgres::SimpleQueryMessage;

/// What a `--sql` statement returned, every cell as text (NULL: None).
#[derive(Debug, Default)]
pub struct QueryRows {
    /// The column names.
    pub headers: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Option<String>>>,
}

/// Runs one statement read-only (it cannot write, whatever it says) and
/// returns its rows.
pub async fn read_only_rows(
    client: &mut impl GenericClient,
    statement: &str,
) -> anyhow::Result<QueryRows> {
    let transaction = client.transaction().await?;
    transaction
        .batch_execute("SET TRANSACTION READ ONLY")
        .await?;
    let messages = transaction
        .simple_query(statement)
        .await
        .context("running --sql (read-only)")?;
    transaction.rollback().await?;
    let mut result = QueryRows::default();
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        if result.headers.is_empty() {
            result.headers = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        result.rows.push(
            (0..row.len())
                .map(|i| row.get(i).map(str::to_string))
                .collect(),
        );
    }
    Ok(result)
}

/// A quarantined message, its body still sealed.
#[derive(Debug, Clone)]
pub struct QuarantinedBody {
    /// Its SQS message id.
    pub message_id: String,
    /// Why it was quarantined.
    pub reason: String,
    /// The key that sealed it.
    pub key_id: String,
    /// The sealed body.
    pub body_sealed: Vec<u8>,
}

/// The quarantined messages among `message_ids`.
pub async fn quarantined(
    client: &impl GenericClient,
    message_ids: &[String],
) -> Result<Vec<QuarantinedBody>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT message_id, reason, key_id, body_sealed FROM veil.quarantine WHERE message_id = ANY($1)",
            &[&message_ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| QuarantinedBody {
            message_id: row.get(0),
            reason: row.get(1),
            key_id: row.get(2),
            body_sealed: row.get(3),
        })
        .collect())
}
