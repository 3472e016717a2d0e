//! The partitions in the catalog, and the DDL that makes and drops them,
//! each statement under a short `lock_timeout`, retried.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::GenericClient;

use super::bounds::Bound;
use super::tables::{DatedTable, Granularity, PartitionSpec, Partitioned};

/// How long each DDL statement may wait for its lock before it gives up
/// and is retried (writers queue behind a waiting lock request).
const LOCK_TIMEOUT: &str = "2s";
/// Attempts per DDL statement.
const ATTEMPTS: u32 = 5;

/// An existing partition, from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Schema-qualified name.
    pub name: String,
    /// Its range; None for the DEFAULT partition.
    pub bound: Option<Bound>,
    /// Approximate rows (`pg_class.reltuples`; -1 when never analyzed).
    pub approximate_rows: i64,
}

/// The partitions of `parent` (direct children), with their bounds.
pub async fn existing(client: &impl GenericClient, parent: &str) -> anyhow::Result<Vec<Existing>> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_get_expr(c.relpartbound, c.oid),
                    c.reltuples::int8
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE i.inhparent = to_regclass($1)
              ORDER BY 1",
            &[&parent],
        )
        .await
        .with_context(|| format!("listing the partitions of {parent}"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let expression: String = row.get(1);
            Existing {
                name: row.get(0),
                bound: Bound::parse(&expression),
                approximate_rows: row.get(2),
            }
        })
        .collect())
}

/// Whether `table` is a partitioned table.
pub async fn is_partitioned(client: &impl GenericClient, table: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)), false)",
            &[&table],
        )
        .await?
        .get(0))
}

/// `table` (SQL, as `search_path` finds it) as a table partitioned by
/// range on a date column; None when it is a plain table or missing. The
/// width is what its comment says (veil writes "partitioned by month|day"
/// when it creates the table), else the width of its first range
/// partition (a month is 28 days or more).
pub async fn dated_table(
    client: &impl GenericClient,
    table: &str,
) -> anyhow::Result<Option<DatedTable>> {
    let Some(row) = client
        .query_opt(
            "SELECT quote_ident(n.nspname), c.relname::text,
                    coalesce(obj_description(c.oid, 'pg_class'), ''),
                    (SELECT pg_get_expr(p.relpartbound, p.oid)
                       FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
                      WHERE i.inhparent = c.oid
                        AND pg_get_expr(p.relpartbound, p.oid) <> 'DEFAULT'
                      ORDER BY 1 LIMIT 1),
                    (SELECT a.attname::text FROM pg_partitioned_table pt
                       JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
                      WHERE pt.partrelid = c.oid)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = to_regclass($1) AND c.relkind = 'p'",
            &[&table],
        )
        .await
        .with_context(|| format!("reading how {table} is partitioned"))?
    else {
        return Ok(None);
    };
    let Some(column) = row.get::<_, Option<String>>(4) else {
        // Partitioned on an expression: not a table veil partitioned.
        return Ok(None);
    };
    let comment: String = row.get(2);
    let granularity = if comment.contains("partitioned by day") {
        Granularity::Day
    } else if comment.contains("partitioned by month") {
        Granularity::Month
    } else {
        match row
            .get::<_, Option<String>>(3)
            .as_deref()
            .and_then(Bound::parse)
        {
            Some(Bound::Dates { from, to }) if (to - from).num_days() < 28 => Granularity::Day,
            _ => Granularity::Month,
        }
    };
    Ok(Some(DatedTable {
        schema: row.get(0),
        name: row.get(1),
        column,
        granularity,
    }))
}

/// Runs `sql` in a transaction under a short lock timeout, retrying when
/// the lock is not granted in time (SQLSTATE 55P03).
pub async fn ddl(client: &mut impl GenericClient, what: &str, sql: &str) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let transaction = client.transaction().await?;
        let result = transaction
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';\n{sql}"
            ))
            .await;
        match result {
            Ok(()) => {
                transaction.commit().await?;
                return Ok(());
            }
            Err(error)
                if attempt < ATTEMPTS
                    && error.code()
                        == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
            {
                drop(transaction);
                tracing::debug!(what, attempt, "lock not granted in time; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(error) => return Err(error).with_context(|| what.to_string()),
        }
    }
}

/// Creates and attaches one partition, moving any rows of its range out of
/// the default partition first, safely while writers insert rows of that
/// range.
pub async fn create_partition(
    client: &mut impl GenericClient,
    table: &Partitioned,
    spec: &PartitionSpec,
) -> anyhow::Result<()> {
    let parent = table.parent();
    let check = spec.bound.check(&table.column());
    let default = table.default_partition();
    // Constraint names are per table: one name serves every partition.
    let constraint = "veil_partition_range";
    // ATTACH locks the default partition ACCESS EXCLUSIVE and scans it for
    // rows of the new range. Taken only there, writers could still add such
    // rows between the move and the scan (23514 on every attempt while any
    // writer runs): taking it first closes that window. Writers wait a
    // moment, then route to the new partition.
    let sql = format!(
        "LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE;
         CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         ALTER TABLE {name} ADD CONSTRAINT {constraint} CHECK ({check});
         WITH moved AS (DELETE FROM {default} WHERE {check} RETURNING *)
         INSERT INTO {name} SELECT * FROM moved;
         ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES {values};
         ALTER TABLE {name} DROP CONSTRAINT {constraint};",
        name = spec.name,
        values = spec.bound.for_values(),
    );
    ddl(client, &format!("creating partition {}", spec.name), &sql).await
}

/// Drops one partition (its rows go with it).
pub async fn drop_partition(client: &mut impl GenericClient, name: &str) -> anyhow::Result<()> {
    ddl(
        client,
        &format!("dropping partition {name}"),
        &format!("DROP TABLE {name}"),
    )
    .await
}
