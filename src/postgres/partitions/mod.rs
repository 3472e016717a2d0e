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
//!
//! - `tables`: which partitions should exist, and their names (pure);
//! - `bounds`: a partition's range, and when it is past the retention (pure);
//! - `catalog`: what the catalog holds, and the DDL.

mod bounds;
mod catalog;
mod tables;

pub use bounds::{Bound, Cutoff};
pub use catalog::{
    create_partition, dated_table, ddl, drop_partition, existing, is_partitioned, Existing,
};
pub use tables::{
    day_of_ms, day_start_ms, DatedTable, Granularity, PartitionSpec, Partitioned, DAY_MS,
};

/// What the tests of these modules share.
#[cfg(test)]
mod testing {
    use chrono::NaiveDate;

    use super::{DatedTable, Granularity};

    /// The day `text` (`2026-11-25`).
    pub fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    /// `user_logins` in `schema`, by month on `create_date`.
    pub fn user_logins(schema: &str) -> DatedTable {
        DatedTable {
            schema: schema.into(),
            name: "user_logins".into(),
            column: "create_date".into(),
            granularity: Granularity::Month,
        }
    }
}
