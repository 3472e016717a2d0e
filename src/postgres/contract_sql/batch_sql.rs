//! The batch statements the writer prepares for a plan: the ledger, every
//! contract's rows and the quarantine in one statement, and each alone for
//! the slow path. Each column is an array parameter of its bind's type
//! (`Column::bind`), cast to the column's type in SQL where they differ.

use super::ddl::{quoted, table_sql};
use crate::contract::{Bind, Column, Contract, Plan};

/// The array type a column's cells are bound as (`Column::bind`).
fn param_type(column: &Column) -> &'static str {
    match column.bind() {
        Bind::Text => "text",
        Bind::Bigint => "int8",
        Bind::Date => "date",
        Bind::Boolean => "bool",
        Bind::Timestamp => "timestamptz",
    }
}

/// The expression that turns the parameter `u.cN` into the column's type.
/// Text goes as it is: a varchar(n) column then refuses a longer value
/// (`db_rejected`) instead of the cast cutting it silently. A cast to the
/// parameter's own type costs nothing.
fn cast(column: &Column, index: usize) -> String {
    let text_like = column.sql_type == "text" || column.sql_type.starts_with("varchar");
    if text_like && column.bind() == Bind::Text {
        format!("u.c{index}")
    } else {
        format!("u.c{index}::{}", column.sql_type)
    }
}

/// `INSERT INTO table (columns) SELECT casts FROM unnest($first.., ) AS u(c0..)`.
fn insert_sql(contract: &Contract, first_param: usize) -> String {
    let names: Vec<String> = contract.columns.iter().map(|c| quoted(&c.name)).collect();
    let casts: Vec<String> = contract
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| cast(c, i))
        .collect();
    let params: Vec<String> = contract
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| format!("${}::{}[]", first_param + i, param_type(column)))
        .collect();
    let aliases: Vec<String> = (0..contract.columns.len())
        .map(|i| format!("c{i}"))
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
        table_sql(&contract.table),
        names.join(", "),
        casts.join(", "),
        params.join(", "),
        aliases.join(", ")
    )
}

const QUARANTINE_COLUMNS: &str =
    "(message_id, reason, field, sent_at, receive_count, key_id, body_sealed, body_bytes, contract)";

fn quarantine_unnest(first: usize) -> String {
    let types = [
        "text",
        "text",
        "text",
        "timestamptz",
        "int4",
        "text",
        "bytea",
        "int4",
        "text",
    ];
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!("SELECT * FROM unnest({})", params.join(", "))
}

/// The batch statements of a plan, as the writer prepares them.
#[derive(Debug, Clone)]
pub struct ContractBatchSql {
    /// Ledger, every contract's rows and the quarantine in one statement:
    /// $1-$3 the ledger, then each contract's columns in plan order, then
    /// the quarantine's nine.
    pub record_all: String,
    /// Each contract's insert alone, its columns from $1 (the slow path).
    pub inserts: Vec<String>,
    /// The quarantine insert alone, skipping ids already there.
    pub quarantine: String,
}

impl ContractBatchSql {
    /// The statements of `plan`.
    pub fn of(plan: &Plan) -> Self {
        let mut record_all = String::from(
            "WITH claimed AS (
    INSERT INTO veil.ledger (sent_ms, message_id, outcome)
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[])
)",
        );
        let mut next = 4;
        for (index, contract) in plan.contracts.iter().enumerate() {
            record_all.push_str(&format!(
                ", written_{index} AS (\n    {}\n)",
                insert_sql(contract, next)
            ));
            next += contract.columns.len();
        }
        record_all.push_str(&format!(
            "\nINSERT INTO veil.quarantine {QUARANTINE_COLUMNS}\n{}",
            quarantine_unnest(next)
        ));
        ContractBatchSql {
            record_all,
            inserts: plan.contracts.iter().map(|c| insert_sql(c, 1)).collect(),
            quarantine: format!(
                "INSERT INTO veil.quarantine {QUARANTINE_COLUMNS}\n{}\n    ON CONFLICT (message_id) DO NOTHING\n    RETURNING message_id",
                quarantine_unnest(1)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_statement_numbers_each_contracts_columns_after_the_ledgers() {
        let plan = crate::contract::builtin_login();
        let sql = ContractBatchSql::of(&plan);
        assert!(sql.record_all.contains("unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::date[])"));
        assert!(sql.record_all.contains("unnest($11::text[]"));
        assert!(sql.record_all.contains("$19::text[])"));
        assert!(sql.record_all.contains("u.c5::integer, u.c6::date"));
    }
}
