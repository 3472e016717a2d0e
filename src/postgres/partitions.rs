//! Range partitions of veil's two growing tables: `veil.ledger` by UTC day
//! on `sent_ms` (milliseconds), and optionally `user_logins` by month or
//! day on `create_date`. The arithmetic (which partitions should exist,
//! what they are called, when one is old enough to drop) is pure; the rest
//! reads the catalog and runs the DDL.
//!
//! A partition is made as a plain table holding a CHECK of its range, then
//! attached: `ATTACH PARTITION` takes SHARE UPDATE EXCLUSIVE on the parent,
//! which writers' inserts do not conflict with, where `CREATE TABLE ...
//! PARTITION OF` would block them. Rows that the default partition caught
//! for that range (a clock far off, a day that had no partition) move into
//! the new partition in the same transaction, as `ATTACH` requires.
//! Dropping takes ACCESS EXCLUSIVE on the parent for a moment; every DDL
//! statement runs under a short `lock_timeout` and is retried, so it never
//! queues writers behind a long transaction.

use std::time::Duration;

use anyhow::Context;
use chrono::{Datelike, Months, NaiveDate};
use tokio_postgres::GenericClient;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// How long each DDL statement may wait for its lock before it gives up
/// and is retried (writers queue behind a waiting lock request).
const LOCK_TIMEOUT: &str = "2s";
/// Attempts per DDL statement.
const ATTEMPTS: u32 = 5;

/// The partitioned tables veil maintains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioned {
    /// `veil.ledger`, by UTC day on `sent_ms`.
    Ledger,
    /// A table of rows by month or day on a date column: `user_logins`
    /// (`veil migrate --partition-by`) or a contract's table (its
    /// `partition:`), as the catalog names it.
    Dated(DatedTable),
}

/// A table partitioned by range on a date column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedTable {
    /// The table's schema, quoted as an identifier (`public`, `"Analytics"`).
    pub schema: String,
    /// The table's name as it is (unquoted).
    pub name: String,
    /// The date column it is partitioned on, as it is.
    pub column: String,
    /// The width of a partition.
    pub granularity: Granularity,
}

impl DatedTable {
    /// `user_logins` in `schema`, on `create_date`.
    pub fn user_logins(schema: &str, granularity: Granularity) -> Self {
        DatedTable {
            schema: schema.into(),
            name: "user_logins".into(),
            column: "create_date".into(),
            granularity,
        }
    }

    /// A sibling table's name (`<table><suffix>`) in the same schema, as SQL.
    fn sibling(&self, suffix: &str) -> String {
        format!(
            "{}.{}",
            self.schema,
            identifier(&format!("{}{suffix}", self.name))
        )
    }
}

/// An identifier as SQL: as it is when plain lower-case (so partition names
/// read as they always have), else double-quoted.
fn identifier(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match plain {
        true => name.to_string(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

pub use crate::contract::Granularity;

/// The bounds of one range partition, in the partition key's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// `sent_ms` from `from_ms` (inclusive) to `to_ms` (exclusive); `None`
    /// for MINVALUE.
    Millis {
        /// Lower bound; None is MINVALUE.
        from_ms: Option<i64>,
        /// Upper bound.
        to_ms: i64,
    },
    /// `create_date` from `from` to `to` (exclusive).
    Dates {
        /// Lower bound.
        from: NaiveDate,
        /// Upper bound.
        to: NaiveDate,
    },
}

/// One partition that should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Schema-qualified name, e.g. `veil.ledger_d20261125`.
    pub name: String,
    /// Its range.
    pub bound: Bound,
}

impl Partitioned {
    /// The parent table, schema-qualified.
    pub fn parent(&self) -> String {
        match self {
            Partitioned::Ledger => "veil.ledger".into(),
            Partitioned::Dated(table) => table.sibling(""),
        }
    }

    /// Its DEFAULT partition, which holds the rows no range covers.
    pub fn default_partition(&self) -> String {
        match self {
            Partitioned::Ledger => "veil.ledger_default".into(),
            Partitioned::Dated(table) => table.sibling("_default"),
        }
    }

    /// The partition key's column, as SQL.
    pub fn column(&self) -> String {
        match self {
            Partitioned::Ledger => "sent_ms".into(),
            Partitioned::Dated(table) => format!("\"{}\"", table.column.replace('"', "\"\"")),
        }
    }

    /// The partition covering `day` (UTC).
    pub fn partition_for(&self, day: NaiveDate) -> PartitionSpec {
        match self {
            Partitioned::Ledger => {
                let from_ms = day_start_ms(day);
                PartitionSpec {
                    name: format!("veil.ledger_d{}", day.format("%Y%m%d")),
                    bound: Bound::Millis {
                        from_ms: Some(from_ms),
                        to_ms: from_ms + DAY_MS,
                    },
                }
            }
            Partitioned::Dated(table) if table.granularity == Granularity::Day => PartitionSpec {
                name: table.sibling(&format!("_d{}", day.format("%Y%m%d"))),
                bound: Bound::Dates {
                    from: day,
                    to: day.succ_opt().unwrap_or(day),
                },
            },
            Partitioned::Dated(table) => {
                let from = day.with_day(1).unwrap_or(day);
                PartitionSpec {
                    name: table.sibling(&format!("_m{}", from.format("%Y%m"))),
                    bound: Bound::Dates {
                        from,
                        to: from + Months::new(1),
                    },
                }
            }
        }
    }

    /// The partitions that should exist on `today`: from `back_days` ago
    /// (messages wait in SQS up to 14 days, so their rows and ledger
    /// entries may be that old) to `ahead_days` ahead, without repeats.
    pub fn wanted(&self, today: NaiveDate, back_days: u32, ahead_days: u32) -> Vec<PartitionSpec> {
        let first = today - chrono::Days::new(u64::from(back_days));
        let last = today + chrono::Days::new(u64::from(ahead_days));
        let mut wanted: Vec<PartitionSpec> = Vec::new();
        let mut day = first;
        while day <= last {
            let spec = self.partition_for(day);
            if wanted.last() != Some(&spec) {
                wanted.push(spec);
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        wanted
    }
}

impl Bound {
    /// The `FOR VALUES` clause.
    pub fn for_values(&self) -> String {
        match self {
            Bound::Millis { from_ms, to_ms } => format!(
                "FROM ({}) TO ({to_ms})",
                from_ms.map_or("MINVALUE".to_string(), |ms| ms.to_string())
            ),
            Bound::Dates { from, to } => format!("FROM ('{from}') TO ('{to}')"),
        }
    }

    /// The CHECK that lets `ATTACH` skip scanning the new table.
    fn check(&self, column: &str) -> String {
        match self {
            Bound::Millis {
                from_ms: Some(from),
                to_ms,
            } => format!("{column} >= {from} AND {column} < {to_ms}"),
            Bound::Millis {
                from_ms: None,
                to_ms,
            } => format!("{column} < {to_ms}"),
            Bound::Dates { from, to } => format!("{column} >= '{from}' AND {column} < '{to}'"),
        }
    }

    /// Whether two ranges share a value.
    pub fn overlaps(&self, other: &Bound) -> bool {
        match (self, other) {
            (
                Bound::Millis {
                    from_ms: a,
                    to_ms: b,
                },
                Bound::Millis {
                    from_ms: c,
                    to_ms: d,
                },
            ) => a.unwrap_or(i64::MIN) < *d && c.unwrap_or(i64::MIN) < *b,
            (Bound::Dates { from: a, to: b }, Bound::Dates { from: c, to: d }) => a < d && c < b,
            _ => false,
        }
    }

    /// Whether every value in the range lies before `keep_from`, the oldest
    /// value still kept (the partition may be dropped). A MINVALUE range
    /// never does: it holds the entries without a send time, which are
    /// pruned by age instead.
    pub fn ends_before(&self, keep_from: &Cutoff) -> bool {
        match (self, keep_from) {
            (
                Bound::Millis {
                    from_ms: Some(_),
                    to_ms,
                },
                Cutoff::Millis(limit),
            ) => to_ms <= limit,
            (Bound::Dates { to, .. }, Cutoff::Date(limit)) => to <= limit,
            _ => false,
        }
    }

    /// Whether this range lies wholly before `other` begins.
    pub fn ends_before_start_of(&self, other: &Bound) -> bool {
        match (self, other) {
            (
                Bound::Millis { to_ms, .. },
                Bound::Millis {
                    from_ms: Some(start),
                    ..
                },
            ) => to_ms <= start,
            (Bound::Dates { to, .. }, Bound::Dates { from, .. }) => to <= from,
            _ => false,
        }
    }

    /// Parses `pg_get_expr(relpartbound)` of a range partition, e.g.
    /// `FOR VALUES FROM ('1795564800000') TO ('1795651200000')` or
    /// `FOR VALUES FROM (MINVALUE) TO ('1')`. None for DEFAULT.
    pub fn parse(expression: &str) -> Option<Bound> {
        let rest = expression.strip_prefix("FOR VALUES FROM (")?;
        let (from, rest) = rest.split_once(") TO (")?;
        let to = rest.strip_suffix(')')?;
        let unquote = |value: &str| value.trim().trim_matches('\'').to_string();
        let (from, to) = (unquote(from), unquote(to));
        if let Ok(to_ms) = to.parse::<i64>() {
            let from_ms = match from.as_str() {
                "MINVALUE" => None,
                value => Some(value.parse::<i64>().ok()?),
            };
            return Some(Bound::Millis { from_ms, to_ms });
        }
        Some(Bound::Dates {
            from: from.parse().ok()?,
            to: to.parse().ok()?,
        })
    }
}

/// The oldest value a table keeps: partitions ending at or before it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// A `sent_ms` value.
    Millis(i64),
    /// A `create_date` value.
    Date(NaiveDate),
}

/// The first millisecond of a UTC day.
pub fn day_start_ms(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|midnight| midnight.and_utc().timestamp_millis())
        .unwrap_or_default()
}

/// The UTC day a millisecond timestamp falls in.
pub fn day_of_ms(ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|at| at.date_naive())
        .unwrap_or_default()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn a_ledger_partition_is_one_utc_day_of_milliseconds() {
        let spec = Partitioned::Ledger.partition_for(day("2026-11-25"));
        assert_eq!(spec.name, "veil.ledger_d20261125");
        assert_eq!(
            spec.bound.for_values(),
            "FROM (1795564800000) TO (1795651200000)"
        );
        assert_eq!(day_of_ms(1_795_564_800_000), day("2026-11-25"));
        assert_eq!(day_of_ms(1_795_651_199_999), day("2026-11-25"));
    }

    #[test]
    fn wanted_partitions_run_from_the_oldest_redeliverable_day_to_the_days_ahead() {
        let wanted = Partitioned::Ledger.wanted(day("2026-11-25"), 15, 7);
        assert_eq!(wanted.len(), 23);
        assert_eq!(wanted[0].name, "veil.ledger_d20261110");
        assert_eq!(wanted[22].name, "veil.ledger_d20261202");

        let monthly = Partitioned::Dated(DatedTable::user_logins("public", Granularity::Month));
        let months = monthly.wanted(day("2026-11-25"), 15, 40);
        let names: Vec<&str> = months.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "public.user_logins_m202611",
                "public.user_logins_m202612",
                "public.user_logins_m202701"
            ]
        );
        let early = monthly.wanted(day("2026-11-05"), 15, 7);
        assert_eq!(early[0].name, "public.user_logins_m202610");
        assert_eq!(
            early[0].bound.for_values(),
            "FROM ('2026-10-01') TO ('2026-11-01')"
        );
    }

    #[test]
    fn a_contract_tables_partitions_are_named_beside_it_and_quoted_when_needed() {
        let table = Partitioned::Dated(DatedTable {
            schema: "\"Shop\"".into(),
            name: "Orders".into(),
            column: "placed_on".into(),
            granularity: Granularity::Day,
        });
        assert_eq!(table.parent(), "\"Shop\".\"Orders\"");
        assert_eq!(table.default_partition(), "\"Shop\".\"Orders_default\"");
        let spec = table.partition_for(day("2026-12-04"));
        assert_eq!(spec.name, "\"Shop\".\"Orders_d20261204\"");
        assert_eq!(
            spec.bound.check(&table.column()),
            "\"placed_on\" >= '2026-12-04' AND \"placed_on\" < '2026-12-05'"
        );
        let plain = Partitioned::Dated(DatedTable {
            schema: "analytics".into(),
            name: "signups".into(),
            column: "signed_up_on".into(),
            granularity: Granularity::Month,
        });
        assert_eq!(
            plain.partition_for(day("2026-12-04")).name,
            "analytics.signups_m202612"
        );
    }

    #[test]
    fn catalog_bounds_parse_back() {
        assert_eq!(
            Bound::parse("FOR VALUES FROM ('1795564800000') TO ('1795651200000')"),
            Some(Bound::Millis {
                from_ms: Some(1_795_564_800_000),
                to_ms: 1_795_651_200_000
            })
        );
        assert_eq!(
            Bound::parse("FOR VALUES FROM (MINVALUE) TO ('1')"),
            Some(Bound::Millis {
                from_ms: None,
                to_ms: 1
            })
        );
        assert_eq!(
            Bound::parse("FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"),
            Some(Bound::Dates {
                from: day("2026-11-01"),
                to: day("2026-12-01")
            })
        );
        assert_eq!(Bound::parse("DEFAULT"), None);
    }

    #[test]
    fn only_ranges_wholly_before_the_cutoff_are_dropped() {
        let keep_from = Cutoff::Millis(day_start_ms(day("2026-11-10")));
        let older = Partitioned::Ledger.partition_for(day("2026-11-09")).bound;
        let kept = Partitioned::Ledger.partition_for(day("2026-11-10")).bound;
        let cutoff = kept.clone();
        let unsent = Bound::Millis {
            from_ms: None,
            to_ms: 1,
        };
        assert!(older.ends_before(&keep_from));
        assert!(!kept.ends_before(&keep_from));
        assert!(!unsent.ends_before(&keep_from));
        let month = Partitioned::Dated(DatedTable::user_logins("analytics", Granularity::Month));
        assert_eq!(month.parent(), "analytics.user_logins");
        let month = month.partition_for(day("2026-09-15")).bound;
        assert!(month.ends_before(&Cutoff::Date(day("2026-10-01"))));
        assert!(!month.ends_before(&Cutoff::Date(day("2026-09-30"))));
        assert!(older.overlaps(&older));
        assert!(!older.overlaps(&cutoff));
        assert!(unsent.overlaps(&Bound::Millis {
            from_ms: Some(0),
            to_ms: 5
        }));
    }
}
