//! Which partitions the growing tables should have, and their names: the
//! ledger by UTC day on `sent_ms`, a contract's table by month or day on
//! its date column. Pure arithmetic.

use chrono::{Datelike, Months, NaiveDate};

use super::bounds::Bound;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

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

#[cfg(test)]
mod tests {
    use super::super::testing::{day, user_logins};
    use super::*;

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

        let monthly = Partitioned::Dated(user_logins("public"));
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
}
