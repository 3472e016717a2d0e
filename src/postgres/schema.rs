//! The schema veil needs: the contract table `user_logins` (created with the
//! exact DDL only when missing, never altered) and veil's own schema `veil`
//! with the idempotency ledger, the quarantine and the reveal audit.

use anyhow::{bail, Context};
use tokio_postgres::Client;

/// The contract table, exactly as the reference Postgres ships it.
pub const USER_LOGINS_DDL: &str = "CREATE TABLE IF NOT EXISTS user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
)";

const VEIL_SCHEMA_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS veil;
COMMENT ON SCHEMA veil IS 'veil bookkeeping: idempotency ledger and quarantine';
CREATE TABLE IF NOT EXISTS veil.ledger(
    sent_ms      bigint NOT NULL,
    message_id   text COLLATE "C" NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('written', 'quarantined')),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sent_ms, message_id)
);
COMMENT ON TABLE veil.ledger IS 'SQS message ids already recorded, keyed by SentTimestamp (ms) first so new entries append; a redelivered message is skipped';
CREATE TABLE IF NOT EXISTS veil.quarantine(
    message_id     text PRIMARY KEY,
    reason         text NOT NULL,
    field          text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    receive_count  integer,
    key_id         text NOT NULL,
    body_sealed    bytea NOT NULL,
    body_bytes     integer NOT NULL
);
COMMENT ON TABLE veil.quarantine IS 'messages that are not valid login events; body_sealed is AES-SIV encrypted (veil reveal)';
CREATE INDEX IF NOT EXISTS quarantine_reason_idx ON veil.quarantine (reason, received_at);
CREATE TABLE IF NOT EXISTS veil.audit(
    id            bigserial PRIMARY KEY,
    revealed_at   timestamptz NOT NULL DEFAULT now(),
    os_user       text NOT NULL,
    db_role       text NOT NULL DEFAULT current_user,
    client_addr   inet DEFAULT inet_client_addr(),
    action        text NOT NULL CHECK (action IN ('masks', 'sql', 'quarantine')),
    value_count   integer NOT NULL,
    fields        text[] NOT NULL,
    reason        text NOT NULL CHECK (btrim(reason) <> ''),
    query         text
);
COMMENT ON TABLE veil.audit IS 'one row per veil reveal: who, when, why, how many values';
"#;

/// Renames a ledger of the first layout (keyed on `message_id` alone) out of
/// the way. The writer keeps checking ids against it, so messages recorded
/// before the upgrade are still skipped when redelivered.
const LEGACY_LEDGER_DDL: &str = "
ALTER TABLE veil.ledger RENAME TO ledger_v1;
ALTER INDEX veil.ledger_pkey RENAME TO ledger_v1_pkey;
COMMENT ON TABLE veil.ledger_v1 IS 'ids recorded before veil keyed its ledger on (sent_ms, message_id); still checked, never written; drop it once SQS can no longer redeliver them (14 days)';
";

/// veil's own tables; when all exist (and user_logins has the contract's
/// shape) `migrate` runs no DDL, so roles without CREATE rights can start.
const VEIL_TABLES: [&str; 3] = ["veil.ledger", "veil.quarantine", "veil.audit"];

/// Indexes for the analysts' duplicate queries (`GROUP BY masked_ip`, by
/// day). Each costs insert throughput, so veil adds them only to a table it
/// created itself, or when asked (`veil migrate --indexes`).
pub const ANALYST_INDEXES: [(&str, &str); 3] = [
    ("user_logins_masked_ip_idx", "masked_ip"),
    ("user_logins_masked_device_id_idx", "masked_device_id"),
    ("user_logins_create_date_idx", "create_date"),
];

/// The columns veil writes, with the types it needs.
const EXPECTED_COLUMNS: [(&str, &str); 7] = [
    ("user_id", "character varying"),
    ("device_type", "character varying"),
    ("masked_ip", "character varying"),
    ("masked_device_id", "character varying"),
    ("locale", "character varying"),
    ("app_version", "integer"),
    ("create_date", "date"),
];

/// What `migrate` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaReport {
    /// True when veil created `user_logins` (it was missing).
    pub created_user_logins: bool,
}

/// Creates what is missing and checks the shape of what exists. Serialized
/// across concurrent veil processes with an advisory lock, because
/// concurrent `CREATE ... IF NOT EXISTS` can still collide in the catalog.
pub async fn migrate(client: &mut Client) -> anyhow::Result<SchemaReport> {
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(
            "SET LOCAL client_min_messages = warning;
             SELECT pg_advisory_xact_lock(hashtext('veil.migrate'));",
        )
        .await?;
    let existed: bool = transaction
        .query_one("SELECT to_regclass('user_logins') IS NOT NULL", &[])
        .await?
        .get(0);
    let legacy_ledger: bool = transaction
        .query_one(
            "SELECT to_regclass('veil.ledger') IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM pg_attribute
                  WHERE attrelid = to_regclass('veil.ledger') AND attname = 'sent_ms')",
            &[],
        )
        .await?
        .get(0);
    if legacy_ledger {
        transaction
            .batch_execute(LEGACY_LEDGER_DDL)
            .await
            .context("keeping the first-layout ledger as veil.ledger_v1")?;
        tracing::info!("kept the first-layout ledger as veil.ledger_v1 (still checked for redeliveries); creating the new one");
    }
    let veil_tables_exist: bool = transaction
        .query_one(
            "SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest($1::text[]) t",
            &[&VEIL_TABLES.as_slice()],
        )
        .await?
        .get(0);
    if existed {
        check_user_logins_shape(&transaction).await?;
        if veil_tables_exist {
            transaction.commit().await?;
            return Ok(SchemaReport {
                created_user_logins: false,
            });
        }
    } else {
        transaction
            .batch_execute(USER_LOGINS_DDL)
            .await
            .context("creating table user_logins")?;
        for (name, column) in ANALYST_INDEXES {
            transaction
                .batch_execute(&format!(
                    "CREATE INDEX IF NOT EXISTS {name} ON user_logins ({column})"
                ))
                .await?;
        }
        tracing::info!("created table user_logins with its analyst indexes");
    }
    transaction.batch_execute(VEIL_SCHEMA_DDL).await.context(
        "creating schema veil (ledger, quarantine); the role needs CREATE on the database",
    )?;
    transaction.commit().await?;
    Ok(SchemaReport {
        created_user_logins: !existed,
    })
}

/// Checks that `user_logins` has the contract's columns and types.
pub async fn check_user_logins_shape(
    client: &impl tokio_postgres::GenericClient,
) -> anyhow::Result<()> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, NULL)
               FROM pg_attribute a
              WHERE a.attrelid = to_regclass('user_logins') AND a.attnum > 0 AND NOT a.attisdropped",
            &[],
        )
        .await?;
    let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut problems = Vec::new();
    for (name, wanted) in EXPECTED_COLUMNS {
        match found.iter().find(|(column, _)| column == name) {
            None => problems.push(format!("column {name} is missing")),
            Some((_, actual)) if actual != wanted => {
                problems.push(format!("column {name} is {actual}, expected {wanted}"))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!(
            "table user_logins exists but does not match the contract: {}. \
             veil never alters it; fix the table or point veil at another database",
            problems.join("; ")
        );
    }
    Ok(())
}

/// Adds the analyst indexes to an existing `user_logins`, without blocking
/// writers (`CREATE INDEX CONCURRENTLY`). Returns the names it created.
pub async fn create_analyst_indexes(client: &Client) -> anyhow::Result<Vec<&'static str>> {
    let mut created = Vec::new();
    for (name, column) in ANALYST_INDEXES {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await?
            .get(0);
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON user_logins ({column})"
                ))
                .await
                .with_context(|| format!("creating index {name}"))?;
            created.push(name);
        }
    }
    Ok(created)
}
