//! `partition:` of a contract: its table is partitioned by range on a date
//! column every row has, one partition per month or day, kept by `veil
//! maintain`.

use super::column::{Column, ColumnSource, ColumnType};
use super::format::PartitionFile;

/// `partition:` of a contract: its table is partitioned by range on a
/// date column, one partition per month or day, kept by `veil maintain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// The date column partitioned on.
    pub column: String,
    /// The width of a partition.
    pub every: Granularity,
    /// Partitions older than this many months are dropped (None: kept).
    pub retention_months: Option<u32>,
}

/// The width of a date partition (`user_logins` with `veil migrate
/// --partition-by`, a contract's `partition.every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Granularity {
    /// One partition per calendar month.
    Month,
    /// One partition per UTC day.
    Day,
}

impl Granularity {
    /// Its name (`month`, `day`), as in the contract file, `--partition-by`
    /// and the table's comment.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Month => "month",
            Granularity::Day => "day",
        }
    }
}

/// Whether every row has a value in `column`: it is required, or an SQS
/// timestamp.
pub(super) fn always_there(column: &Column) -> bool {
    column.required
        || matches!(
            column.source,
            ColumnSource::SentTimestamp | ColumnSource::FirstReceiveTimestamp
        )
}

/// `partition:`: on a `date` column every row has (a row without one would
/// sit in the default partition, which retention never drops).
pub(super) fn partitioning(
    file: &PartitionFile,
    columns: &[Column],
) -> Result<Partitioning, String> {
    let every = match file.every.as_str() {
        "month" => Granularity::Month,
        "day" => Granularity::Day,
        other => return Err(format!("partition.every {other:?} is not month or day")),
    };
    let Some(column) = columns.iter().find(|c| c.name == file.by) else {
        let dates: Vec<&str> = columns
            .iter()
            .filter(|c| c.column_type == ColumnType::Date)
            .map(|c| c.name.as_str())
            .collect();
        return Err(format!(
            "partition.by {:?} is not one of its columns; its date columns: {}",
            file.by,
            if dates.is_empty() {
                "none".to_string()
            } else {
                dates.join(", ")
            }
        ));
    };
    if column.column_type != ColumnType::Date || column.sql_type != "date" {
        return Err(format!(
            "partition.by {:?} is a {} column; partitions are ranges of dates, so it must be `type: date`",
            column.name, column.sql_type
        ));
    }
    if !always_there(column) {
        return Err(format!(
            "partition.by {:?} may be missing, and rows without a date would stay in the default \
             partition, never dropped: make it `required: true`, or take it from `sqs: sent_timestamp`",
            column.name
        ));
    }
    if file.retention_months == Some(0) {
        return Err(
            "partition.retention_months 0 would drop this month's partition: use 1 or more, or leave it out to keep every row"
                .into(),
        );
    }
    Ok(Partitioning {
        column: column.name.clone(),
        every,
        retention_months: file.retention_months,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::compile_text as compile;
    use crate::contract::testing::refusal;

    #[test]
    fn partitions_go_on_a_date_column_every_row_has() {
        let columns = "columns:\n  - {name: id, from: /id, type: text}\n  \
                       - {name: on_day, from: /day, type: date}\n  \
                       - {name: sent_on, sqs: sent_timestamp, type: date}\n";
        let with =
            |partition: &str| format!("contract: t\nversion: 1\npartition: {partition}\n{columns}");
        let plan = compile(&with("{by: sent_on, every: day, retention_months: 3}")).unwrap();
        assert_eq!(
            plan.contracts[0].partition,
            Some(Partitioning {
                column: "sent_on".into(),
                every: Granularity::Day,
                retention_months: Some(3)
            })
        );
        for (partition, says) in [
            ("{by: on_day, every: month}", "make it `required: true`"),
            ("{by: id, every: month}", "must be `type: date`"),
            (
                "{by: nope, every: month}",
                "its date columns: on_day, sent_on",
            ),
            ("{by: sent_on, every: week}", "not month or day"),
            (
                "{by: sent_on, every: month, retention_months: 0}",
                "use 1 or more",
            ),
            ("{by: sent_on, every: month, keep: 3}", "unknown field"),
        ] {
            let problem = refusal(&with(partition));
            assert!(problem.contains(says), "{partition}: {problem}");
        }
    }
}
