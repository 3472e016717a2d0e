//! veil's own schema `veil`: the idempotency ledger (partitioned by UTC day
//! on `sent_ms`), the quarantine and the audit. Older ledger layouts are
//! upgraded in place without losing a recorded id. The tables events land
//! in are their contracts' (`contract_sql`), the built-in login contract's
//! `user_logins` among them.

use anyhow::Context;
use tokio_postgres::GenericClient;
use tokio_postgres::Transaction;

use super::partitions::{day_of_ms, day_start_ms, DAY_MS};

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
COMMENT ON COLUMN veil.quarantine.contract IS 'the contract the body was routed to (NULL: no contract took it, or the built-in login contract, which names none)';
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

/// veil's own tables; when all exist in their current layout `migrate`
/// runs no DDL, so roles without CREATE rights can start.
const VEIL_TABLES: [&str; 3] = ["veil.ledger", "veil.quarantine", "veil.audit"];

/// Taken first in every migration transaction: one migration at a time.
pub const MIGRATE_LOCK_SQL: &str = "SET LOCAL client_min_messages = warning;
     SELECT pg_advisory_xact_lock(hashtext('veil.migrate'));";

/// Creates what is missing of veil's own schema and upgrades older ledger
/// layouts. Serialized across concurrent veil processes with an advisory
/// lock, because concurrent `CREATE ... IF NOT EXISTS` can still collide in
/// the catalog. Partitions are housekeeping's (`postgres::maintain`).
/// Returns the partition a non-partitioned ledger became, if this run
/// upgraded one.
pub async fn migrate_veil_schema(
    client: &mut impl GenericClient,
) -> anyhow::Result<Option<String>> {
    let transaction = client.transaction().await?;
    transaction.batch_execute(MIGRATE_LOCK_SQL).await?;
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
    let current = current && quarantine_names_contracts(&transaction).await?;
    if current && ledger_partitioned && audit_current {
        transaction.commit().await?;
        return Ok(None);
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
    let upgraded = match ledger_partitioned {
        true => None,
        false => create_ledger(&transaction).await?,
    };
    transaction.commit().await?;
    Ok(upgraded)
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

/// Which of veil's own tables are missing (a first-layout ledger, without
/// `sent_ms`, counts as missing: `veil migrate` upgrades it), for `veil
/// doctor`.
pub async fn missing_veil_tables(
    client: &impl GenericClient,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT name FROM unnest($1::text[]) AS name
              WHERE to_regclass(name) IS NULL
                 OR (name = 'veil.ledger' AND NOT EXISTS (
                     SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(name) AND attname = 'sent_ms'))",
            &[&VEIL_TABLES.as_slice()],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}
