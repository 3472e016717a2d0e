//! The schema veil needs: the contract table `user_logins` (created with the
//! exact DDL only when missing, never altered; optionally partitioned by
//! month or day) and veil's own schema `veil` with the idempotency ledger
//! (partitioned by UTC day on `sent_ms`), the quarantine and the audit.
//! Older ledger layouts are upgraded in place without losing a recorded id.

use anyhow::{bail, Context};
use tokio_postgres::{Client, Transaction};

use super::partitions::{self, day_of_ms, day_start_ms, Granularity, DAY_MS};
use crate::error::ConfigError;

/// The contract's columns, as the reference Postgres ships them.
macro_rules! user_logins_columns {
    () => {
        "(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
)"
    };
}

/// The contract table, exactly as the reference Postgres ships it.
pub const USER_LOGINS_DDL: &str = concat!(
    "CREATE TABLE IF NOT EXISTS user_logins",
    user_logins_columns!()
);

/// The same columns, partitioned on `create_date`, with a default partition
/// for dates no partition covers yet (housekeeping adds the partitions).
const PARTITIONED_USER_LOGINS_DDL: &str = concat!(
    "CREATE TABLE user_logins",
    user_logins_columns!(),
    " PARTITION BY RANGE (create_date);
CREATE TABLE user_logins_default PARTITION OF user_logins DEFAULT;"
);

/// The ledger: partitioned by UTC day on `sent_ms`, so a day past SQS's
/// retention is dropped whole instead of deleted row by row. Entries
/// without a send time (`sent_ms` 0) have their own partition, pruned by
/// age; the default partition catches a send time no day covers yet.
const LEDGER_DDL: &str = r#"
CREATE TABLE veil.ledger(
    sent_ms      bigint NOT NULL,
    message_id   text COLLATE "C" NOT NULL,
    -- Named as the earlier layouts named it, so an upgraded ledger attaches.
    outcome      text NOT NULL CONSTRAINT ledger_outcome_check CHECK (outcome IN ('written', 'quarantined')),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sent_ms, message_id)
) PARTITION BY RANGE (sent_ms);
COMMENT ON TABLE veil.ledger IS 'SQS message ids already recorded, keyed by SentTimestamp (ms) first; partitioned by UTC day, days past the retention are dropped by veil maintain';
CREATE TABLE veil.ledger_unsent PARTITION OF veil.ledger FOR VALUES FROM (MINVALUE) TO (1);
COMMENT ON TABLE veil.ledger_unsent IS 'entries of messages without SentTimestamp; pruned by recorded_at';
"#;

/// The ledger's default partition, made after any upgraded partition is
/// attached (attaching would otherwise scan it).
const LEDGER_DEFAULT_DDL: &str =
    "CREATE TABLE veil.ledger_default PARTITION OF veil.ledger DEFAULT;";

const VEIL_SCHEMA_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS veil;
COMMENT ON SCHEMA veil IS 'veil bookkeeping: idempotency ledger and quarantine';
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
ALTER TABLE veil.quarantine ADD COLUMN IF NOT EXISTS contract text;
COMMENT ON COLUMN veil.quarantine.contract IS 'the contract the body was routed to (NULL: the built-in login path, or no contract took it)';
CREATE TABLE IF NOT EXISTS veil.audit(
    id            bigserial PRIMARY KEY,
    revealed_at   timestamptz NOT NULL DEFAULT now(),
    os_user       text NOT NULL,
    db_role       text NOT NULL DEFAULT current_user,
    client_addr   inet DEFAULT inet_client_addr(),
    action        text NOT NULL,
    value_count   integer NOT NULL,
    fields        text[] NOT NULL,
    reason        text NOT NULL CHECK (btrim(reason) <> ''),
    query         text
);
COMMENT ON TABLE veil.audit IS 'one row per veil reveal, find or forget: who, when, why, how many values';
"#;

/// The audit's actions. Replaced when a new action appears (the first
/// audit table allowed only the three reveal actions).
const AUDIT_ACTIONS: [&str; 5] = ["masks", "sql", "quarantine", "find", "forget"];

/// Renames a ledger of the first layout (keyed on `message_id` alone) out of
/// the way. The writer keeps checking ids against it, so messages recorded
/// before the upgrade are still skipped when redelivered.
const LEGACY_LEDGER_DDL: &str = "
ALTER TABLE veil.ledger RENAME TO ledger_v1;
ALTER INDEX veil.ledger_pkey RENAME TO ledger_v1_pkey;
COMMENT ON TABLE veil.ledger_v1 IS 'ids recorded before veil keyed its ledger on (sent_ms, message_id); still checked, never written; drop it once SQS can no longer redeliver them (14 days)';
";

/// veil's own tables; when all exist in their current layout (and
/// user_logins has the contract's shape) `migrate` runs no DDL, so roles
/// without CREATE rights can start.
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

/// Taken first in every migration transaction: one migration at a time.
pub const MIGRATE_LOCK_SQL: &str = "SET LOCAL client_min_messages = warning;
     SELECT pg_advisory_xact_lock(hashtext('veil.migrate'));";

/// What `migrate` may create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Create a missing `user_logins` partitioned by this (`migrate
    /// --partition-by`). An existing table is never altered.
    pub partition_user_logins: Option<Granularity>,
    /// Contract mode: `user_logins` is left alone (a contract table is
    /// made by `contract_sql::apply`), and the quarantine must have its
    /// `contract` column.
    pub for_contracts: bool,
}

/// What `migrate` found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// True when veil created `user_logins` (it was missing).
    pub created_user_logins: bool,
    /// How `user_logins` is partitioned, if it is.
    pub user_logins_partitioned: Option<Granularity>,
    /// The partition a non-partitioned ledger became, if this run upgraded one.
    pub upgraded_ledger: Option<String>,
}

/// Creates what is missing, upgrades older ledger layouts and checks the
/// shape of what exists. Serialized across concurrent veil processes with
/// an advisory lock, because concurrent `CREATE ... IF NOT EXISTS` can
/// still collide in the catalog. Partitions are housekeeping's
/// (`postgres::maintain`).
pub async fn migrate(client: &mut Client, options: MigrateOptions) -> anyhow::Result<SchemaReport> {
    let transaction = client.transaction().await?;
    transaction.batch_execute(MIGRATE_LOCK_SQL).await?;
    let mut report = SchemaReport::default();
    let existed: bool = options.for_contracts
        || transaction
            .query_one("SELECT to_regclass('user_logins') IS NOT NULL", &[])
            .await?
            .get(0);
    if existed && !options.for_contracts {
        check_user_logins_shape(&transaction).await?;
        report.user_logins_partitioned = user_logins_granularity(&transaction).await?;
        if let (Some(wanted), None) = (
            options.partition_user_logins,
            report.user_logins_partitioned,
        ) {
            return Err(ConfigError(format!(
                "--partition-by {}: user_logins already exists and is not partitioned, and veil never \
                 alters an existing table. Drop --partition-by, or create the partitioned table in a new \
                 database (veil migrate --partition-by there) and copy the rows over \
                 (docs/operations.md, \"Partitioning user_logins\")",
                wanted.name()
            ))
            .into());
        }
    }
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
    let current: bool = transaction
        .query_one(
            "SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest($1::text[]) t",
            &[&VEIL_TABLES.as_slice()],
        )
        .await?
        .get(0);
    let ledger_partitioned: bool = transaction
        .query_one(
            "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('veil.ledger')), false)",
            &[],
        )
        .await?
        .get(0);
    let audit_current = current && audit_actions_current(&transaction).await?;
    let current =
        current && (!options.for_contracts || quarantine_names_contracts(&transaction).await?);
    if existed && current && ledger_partitioned && audit_current {
        transaction.commit().await?;
        return Ok(report);
    }
    if !existed {
        create_user_logins(&transaction, options.partition_user_logins).await?;
        report.created_user_logins = true;
        report.user_logins_partitioned = options.partition_user_logins;
    }
    transaction.batch_execute(VEIL_SCHEMA_DDL).await.context(
        "creating schema veil (ledger, quarantine, audit); the role needs CREATE on the database",
    )?;
    if !audit_current {
        transaction
            .batch_execute(&format!(
                "ALTER TABLE veil.audit DROP CONSTRAINT IF EXISTS audit_action_check;
                 ALTER TABLE veil.audit ADD CONSTRAINT audit_action_check CHECK (action IN ({}));",
                AUDIT_ACTIONS.map(|a| format!("'{a}'")).join(", ")
            ))
            .await
            .context("updating the audit's list of actions")?;
    }
    if !ledger_partitioned {
        report.upgraded_ledger = create_ledger(&transaction).await?;
    }
    transaction.commit().await?;
    Ok(report)
}

/// The quarantine has its `contract` column (added for contracts).
async fn quarantine_names_contracts(transaction: &Transaction<'_>) -> anyhow::Result<bool> {
    Ok(transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
              WHERE attrelid = 'veil.quarantine'::regclass AND attname = 'contract' AND NOT attisdropped)",
            &[],
        )
        .await?
        .get(0))
}

async fn create_user_logins(
    transaction: &Transaction<'_>,
    partitioned: Option<Granularity>,
) -> anyhow::Result<()> {
    let ddl = match partitioned {
        None => USER_LOGINS_DDL,
        Some(_) => PARTITIONED_USER_LOGINS_DDL,
    };
    transaction
        .batch_execute(ddl)
        .await
        .context("creating table user_logins")?;
    if let Some(granularity) = partitioned {
        // Housekeeping reads the width back from here before any
        // partition but the default exists.
        transaction
            .batch_execute(&format!(
                "COMMENT ON TABLE user_logins IS 'login events with masked PII, partitioned by {} on create_date; veil maintain keeps the partitions'",
                granularity.name()
            ))
            .await?;
    }
    for (name, column) in ANALYST_INDEXES {
        transaction
            .batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {name} ON user_logins ({column})"
            ))
            .await?;
    }
    match partitioned {
        None => tracing::info!("created table user_logins with its analyst indexes"),
        Some(granularity) => tracing::info!(
            partition_by = granularity.name(),
            "created table user_logins, partitioned on create_date, with its analyst indexes"
        ),
    }
    Ok(())
}

/// How `user_logins` is partitioned; None when it is a plain table.
pub async fn user_logins_granularity(
    client: &impl tokio_postgres::GenericClient,
) -> anyhow::Result<Option<Granularity>> {
    Ok(partitions::dated_table(client, "user_logins")
        .await?
        .map(|table| table.granularity))
}

async fn audit_actions_current(transaction: &Transaction<'_>) -> anyhow::Result<bool> {
    let definition: Option<String> = transaction
        .query_one(
            "SELECT (SELECT pg_get_constraintdef(oid) FROM pg_constraint
                      WHERE conrelid = 'veil.audit'::regclass AND conname = 'audit_action_check')",
            &[],
        )
        .await?
        .get(0);
    Ok(definition.is_some_and(|text| {
        AUDIT_ACTIONS
            .iter()
            .all(|action| text.contains(&format!("'{action}'")))
    }))
}

/// Creates the partitioned ledger. A non-partitioned ledger of the second
/// layout (keyed on `(sent_ms, message_id)`) becomes its first partition,
/// covering every send time up to the end of the later of today and its
/// newest entry, so each recorded id stays where a redelivery will look
/// for it; its entries without a send time move to `ledger_unsent`.
/// Returns the name of that partition.
async fn create_ledger(transaction: &Transaction<'_>) -> anyhow::Result<Option<String>> {
    let upgrading: bool = transaction
        .query_one("SELECT to_regclass('veil.ledger') IS NOT NULL", &[])
        .await?
        .get(0);
    if !upgrading {
        transaction
            .batch_execute(&format!("{LEDGER_DDL}{LEDGER_DEFAULT_DDL}"))
            .await
            .context("creating the ledger")?;
        return Ok(None);
    }
    let newest_ms: Option<i64> = transaction
        .query_one("SELECT max(sent_ms) FROM veil.ledger", &[])
        .await?
        .get(0);
    let tomorrow_ms = day_start_ms(chrono::Utc::now().date_naive()) + DAY_MS;
    let boundary_ms = match newest_ms {
        Some(newest) if newest >= tomorrow_ms => day_start_ms(day_of_ms(newest)) + DAY_MS,
        _ => tomorrow_ms,
    };
    let name = format!("ledger_before_{}", day_of_ms(boundary_ms).format("%Y%m%d"));
    transaction
        .batch_execute(&format!(
            "ALTER TABLE veil.ledger RENAME TO {name};
             ALTER INDEX veil.ledger_pkey RENAME TO {name}_pkey;
             {LEDGER_DDL}
             WITH moved AS (DELETE FROM veil.{name} WHERE sent_ms < 1 RETURNING *)
             INSERT INTO veil.ledger_unsent SELECT * FROM moved;
             ALTER TABLE veil.{name} ADD CONSTRAINT {name}_range
                 CHECK (sent_ms >= 1 AND sent_ms < {boundary_ms});
             ALTER TABLE veil.ledger ATTACH PARTITION veil.{name}
                 FOR VALUES FROM (1) TO ({boundary_ms});
             ALTER TABLE veil.{name} DROP CONSTRAINT {name}_range;
             COMMENT ON TABLE veil.{name} IS 'the ledger before it was partitioned: dropped by veil maintain once its newest send time is past the retention';
             {LEDGER_DEFAULT_DDL}"
        ))
        .await
        .context("upgrading the ledger to the partitioned layout")?;
    tracing::info!(
        partition = %format!("veil.{name}"),
        "the ledger is now partitioned by day; its earlier entries are one partition, still checked, dropped after the retention"
    );
    Ok(Some(format!("veil.{name}")))
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

/// The tables veil needs that are missing (a first-layout ledger, without
/// `sent_ms`, counts as missing: `veil migrate` upgrades it).
const MISSING_SQL: &str = "SELECT name FROM unnest(ARRAY['user_logins', 'veil.ledger', 'veil.quarantine', 'veil.audit']) AS name
     WHERE to_regclass(name) IS NULL
        OR (name = 'veil.ledger' AND NOT EXISTS (
            SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(name) AND attname = 'sent_ms'))";

/// Which of `user_logins` and veil's own tables are missing (`veil doctor`).
pub async fn missing_tables(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(MISSING_SQL, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}
