//! The audit: one row in `veil.audit` per `veil reveal`, `find` or
//! `forget`, written before any value is printed (or in the transaction
//! that erases), so there is no disclosure or erasure without a record.

use tokio_postgres::GenericClient;

/// What a reveal is about to disclose.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// `masks` (stdin), `sql`, `quarantine`, `find` or `forget`.
    pub action: &'static str,
    /// How many values will be printed.
    pub value_count: i32,
    /// Which fields or domains (ip, device_id, email, quarantine_body).
    pub fields: Vec<&'a str>,
    /// The operator's stated reason.
    pub reason: &'a str,
    /// The query, for `--sql`.
    pub query: Option<&'a str>,
}

/// The operating-system user running veil.
pub fn os_user() -> String {
    whoami::username().unwrap_or_else(|_| "unknown".into())
}

/// Inserts the audit row. The database role and client address are filled
/// in by Postgres itself. (No RETURNING: the revealer role may only insert.)
pub async fn record(
    client: &impl GenericClient,
    record: &AuditRecord<'_>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO veil.audit (os_user, action, value_count, fields, reason, query)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &os_user(),
                &record.action,
                &record.value_count,
                &record.fields,
                &record.reason,
                &record.query,
            ],
        )
        .await?;
    Ok(())
}
