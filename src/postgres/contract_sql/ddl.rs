//! A contract table's `CREATE TABLE` (partitioned when its contract says
//! so) with the analyst indexes on its PII columns and first date column,
//! and those indexes added later to an existing table.

use anyhow::Context;
use tokio_postgres::GenericClient;

use crate::contract::{Column, Contract, Plan, TableName};

/// A quoted identifier (contract identifiers are checked to be plain, so
/// quoting cannot be escaped out of; it keeps reserved words usable).
pub(super) fn quoted(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// The table's name as SQL.
pub fn table_sql(table: &TableName) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", quoted(schema), quoted(&table.name)),
        None => quoted(&table.name),
    }
}

/// `CREATE TABLE` of a contract, with an index on each PII column (the
/// analysts' `GROUP BY masked_x`) and on its first date column.
pub fn create_table_sql(contract: &Contract) -> String {
    let table = table_sql(&contract.table);
    let width = contract
        .columns
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        + 2;
    let columns: Vec<String> = contract
        .columns
        .iter()
        .map(|c| format!("    {:<width$}  {}", quoted(&c.name), c.sql_type))
        .collect();
    let mut sql = match &contract.table.schema {
        Some(schema) => format!("CREATE SCHEMA IF NOT EXISTS {};\n", quoted(schema)),
        None => String::new(),
    };
    match &contract.partition {
        None => sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {table}(\n{}\n);\n",
            columns.join(",\n")
        )),
        Some(partition) => {
            // The default partition catches dates no partition covers yet;
            // `veil migrate` and `veil maintain` add the ranges. The comment
            // is where housekeeping reads the width back.
            let default = match &contract.table.schema {
                Some(schema) => format!(
                    "{}.{}",
                    quoted(schema),
                    quoted(&format!("{}_default", contract.table.name))
                ),
                None => quoted(&format!("{}_default", contract.table.name)),
            };
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {table}(\n{}\n) PARTITION BY RANGE ({});\n\
                 CREATE TABLE IF NOT EXISTS {default} PARTITION OF {table} DEFAULT;\n\
                 COMMENT ON TABLE {table} IS 'contract {}: partitioned by {} on {}; veil maintain keeps the partitions';\n",
                columns.join(",\n"),
                quoted(&partition.column),
                contract.name,
                partition.every.name(),
                partition.column,
            ));
        }
    }
    for (_, index) in index_statements(contract) {
        sql.push_str(&index);
        sql.push_str(";\n");
    }
    sql
}

/// Each analyst index of a contract: its name and its `CREATE INDEX IF
/// NOT EXISTS` (an index lives in its table's schema).
fn index_statements(contract: &Contract) -> Vec<(String, String)> {
    let table = table_sql(&contract.table);
    index_columns(contract)
        .map(|column| {
            let name = format!("{}_{}_idx", contract.table.name, column.name);
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} ({})",
                quoted(&name),
                quoted(&column.name)
            );
            (name, sql)
        })
        .collect()
}

/// An index's name as `to_regclass` finds it: in its table's schema.
fn index_sql_name(contract: &Contract, name: &str) -> String {
    match &contract.table.schema {
        Some(schema) => format!("{}.{}", quoted(schema), quoted(name)),
        None => quoted(name),
    }
}

fn index_columns(contract: &Contract) -> impl Iterator<Item = &Column> {
    let first_date = contract
        .columns
        .iter()
        .find(|c| c.sql_type == "date")
        .map(|c| c.name.as_str());
    contract
        .columns
        .iter()
        .filter(move |c| c.pii.is_some() || Some(c.name.as_str()) == first_date)
}

/// Adds the analyst indexes of each contract (its PII columns and first
/// date column) that its existing table lacks, without blocking writers
/// (`CREATE INDEX CONCURRENTLY`). Returns the names it created.
pub async fn create_indexes(
    client: &impl GenericClient,
    plan: &Plan,
) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for contract in &plan.contracts {
        for (name, sql) in index_statements(contract) {
            let exists: bool = client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&index_sql_name(contract, &name)],
                )
                .await?
                .get(0);
            if !exists {
                let concurrently = sql.replacen("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1);
                client
                    .batch_execute(&concurrently)
                    .await
                    .with_context(|| format!("creating index {name}"))?;
                created.push(name);
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_contract_ddl_is_the_reference_table() {
        let plan = crate::contract::builtin_login();
        let sql = create_table_sql(&plan.contracts[0]);
        let columns: Vec<String> = sql
            .lines()
            .skip(1)
            .take(7)
            .map(|line| {
                line.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_end_matches(',')
                    .to_string()
            })
            .collect();
        assert_eq!(
            columns,
            [
                "\"user_id\" varchar(128)",
                "\"device_type\" varchar(32)",
                "\"masked_ip\" varchar(256)",
                "\"masked_device_id\" varchar(256)",
                "\"locale\" varchar(32)",
                "\"app_version\" integer",
                "\"create_date\" date",
            ]
        );
        assert!(sql.contains("CREATE INDEX IF NOT EXISTS \"user_logins_masked_ip_idx\""));
    }
}
