//! The SQL of contract tables: their `CREATE TABLE` (with the analyst
//! indexes on PII columns), the batch statements the writer prepares for a
//! plan, and the comparison of an existing table with its contract
//! (additive changes applied, destructive ones refused with the reason).
//!
//! Every value travels as text and is cast to its column's type in SQL:
//! one statement shape serves every contract, and the parser has already
//! checked that each text casts.

use anyhow::Context;
use tokio_postgres::GenericClient;

use crate::contract::{Bind, Column, Contract, Plan, TableName};
use crate::error::ConfigError;

/// A quoted identifier (contract identifiers are checked to be plain, so
/// quoting cannot be escaped out of; it keeps reserved words usable).
fn quoted(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// The table's name as SQL.
pub fn table_sql(table: &TableName) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", quoted(schema), quoted(&table.name)),
        None => quoted(&table.name),
    }
}

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

/// The SQL type as `format_type` prints it, to compare with the catalog.
fn catalog_type(sql_type: &str) -> String {
    if let Some(width) = sql_type.strip_prefix("varchar") {
        return format!("character varying{width}");
    }
    match sql_type {
        "timestamptz" => "timestamp with time zone".into(),
        "int4" => "integer".into(),
        "int8" => "bigint".into(),
        "bool" => "boolean".into(),
        other => other.into(),
    }
}

/// What `veil migrate` found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// The partition a non-partitioned ledger became, if this run
    /// upgraded one.
    pub upgraded_ledger: Option<String>,
    /// Each contract's table and what was done to it.
    pub tables: Vec<(String, TableChange)>,
}

/// `veil migrate`: veil's own schema, then each contract's table, under
/// the migration lock; the missing columns of an existing table are added.
pub async fn migrate(
    client: &mut impl GenericClient,
    plan: &Plan,
) -> anyhow::Result<MigrateReport> {
    migrate_with(client, plan, true).await
}

/// What `veil run` does at start: `migrate`, but a table lacking some of
/// its contract's columns is refused instead of altered.
pub async fn prepare_schema(
    client: &mut impl GenericClient,
    plan: &Plan,
) -> anyhow::Result<MigrateReport> {
    migrate_with(client, plan, false).await
}

async fn migrate_with(
    client: &mut impl GenericClient,
    plan: &Plan,
    add_columns: bool,
) -> anyhow::Result<MigrateReport> {
    let upgraded_ledger = super::schema::migrate_veil_schema(client).await?;
    let transaction = client.transaction().await?;
    transaction.batch_execute(super::MIGRATE_LOCK_SQL).await?;
    let tables = apply(&transaction, plan, add_columns).await?;
    transaction.commit().await?;
    Ok(MigrateReport {
        upgraded_ledger,
        tables,
    })
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

/// Whether the connected role may insert into a contract's table (true
/// when the table is missing: there is nothing to say yet).
pub async fn may_insert(
    client: &impl GenericClient,
    table: &TableName,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT to_regclass($1) IS NULL OR has_table_privilege(to_regclass($1), 'INSERT')",
            &[&table_sql(table)],
        )
        .await?
        .get(0))
}

/// What `apply` did to one contract's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableChange {
    /// The table was missing and is created (partitioned, if its contract
    /// says so), with its analyst indexes.
    Created,
    /// The table had the contract's columns; it also has these, which the
    /// contract does not write (each with a default or an identity, which
    /// inserts leave them to).
    Unchanged(Vec<String>),
    /// These columns (nullable) were added.
    Added(Vec<String>),
}

/// Creates the table of each contract, or (with `add_columns`) brings an
/// existing one to the contract by adding its missing (nullable) columns.
/// A column of another type, or a table column the contract lacks that has
/// no default, is refused (exit code 2): veil never changes or drops what
/// holds data. Without `add_columns` (`veil run`) a table lacking columns
/// is refused too: only `veil migrate` alters a table.
pub async fn apply(
    client: &impl GenericClient,
    plan: &Plan,
    add_columns: bool,
) -> anyhow::Result<Vec<(String, TableChange)>> {
    let mut changes = Vec::new();
    for contract in &plan.contracts {
        let existing = table_columns(client, &contract.table).await?;
        let change = match existing {
            None => {
                client
                    .batch_execute(&create_table_sql(contract))
                    .await
                    .map_err(|error| {
                        anyhow::Error::new(error).context(format!(
                        "creating table {} of contract {:?}; the role needs CREATE on its schema",
                        contract.table, contract.name
                    ))
                    })?;
                tracing::info!(table = %contract.table, contract = %contract.name, "created table with its analyst indexes");
                TableChange::Created
            }
            Some(columns) => {
                if let Some(refusal) = partitioning_refusal(client, contract).await? {
                    return Err(ConfigError(refusal).into());
                }
                let fit = fit(contract, &columns)?;
                if !add_columns && !fit.lacking.is_empty() {
                    let names: Vec<&str> = fit.lacking.iter().map(|c| c.name.as_str()).collect();
                    return Err(ConfigError(format!(
                        "table {} does not match contract {:?} version {}: it lacks column(s) {}. \
                         `veil run` never alters a table: run `veil migrate` (as the table's owner) to \
                         add them, nullable, or point veil at another database",
                        contract.table,
                        contract.name,
                        contract.version,
                        names.join(", ")
                    ))
                    .into());
                }
                for column in &fit.lacking {
                    client
                        .batch_execute(&format!(
                            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                            table_sql(&contract.table),
                            quoted(&column.name),
                            column.sql_type
                        ))
                        .await?;
                }
                match fit.lacking.is_empty() {
                    true => TableChange::Unchanged(fit.extra),
                    false => {
                        TableChange::Added(fit.lacking.iter().map(|c| c.name.clone()).collect())
                    }
                }
            }
        };
        changes.push((contract.table.to_string(), change));
    }
    Ok(changes)
}

/// How an existing table stands against its contract (`veil doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    /// The table is missing: `veil migrate --contract` creates it.
    Missing,
    /// It has the contract's columns, and these it does not write
    /// (nullable or with a default).
    Fits(Vec<String>),
    /// It lacks these (nullable) columns: `veil migrate` adds them.
    Lacks(Vec<String>),
    /// It differs destructively: the reason.
    Refused(String),
}

/// The table of `contract` against the contract, changing nothing.
pub async fn table_state(
    client: &impl GenericClient,
    contract: &Contract,
) -> anyhow::Result<TableState> {
    let Some(columns) = table_columns(client, &contract.table).await? else {
        return Ok(TableState::Missing);
    };
    if let Some(refusal) = partitioning_refusal(client, contract).await? {
        return Ok(TableState::Refused(refusal));
    }
    Ok(match fit(contract, &columns) {
        Ok(fit) if fit.lacking.is_empty() => TableState::Fits(fit.extra),
        Ok(fit) => TableState::Lacks(fit.lacking.iter().map(|c| c.name.clone()).collect()),
        Err(refusal) => TableState::Refused(refusal.0),
    })
}

/// Why an existing table cannot be the contract's partitioned table (veil
/// never partitions a table after the fact, nor changes how it is
/// partitioned); None when it fits. A contract without `partition:` takes
/// any table: its rows go where the table routes them.
async fn partitioning_refusal(
    client: &impl GenericClient,
    contract: &Contract,
) -> anyhow::Result<Option<String>> {
    let Some(wanted) = &contract.partition else {
        return Ok(None);
    };
    let table = contract.table.to_string();
    let has = super::partitions::dated_table(client, &table_sql(&contract.table)).await?;
    let problem = match has {
        None => format!(
            "table {table} exists and is not partitioned, and veil never alters how a table holding \
             rows is stored (it never alters an existing table). Drop the partitioning you asked for \
             (`partition:` in contract {:?}, or veil migrate --partition-by), or create the partitioned \
             table under a new name (or in a new database) and copy the rows over (docs/operations.md, \
             \"Partitioning user_logins\")",
            contract.name
        ),
        Some(dated) if dated.column != wanted.column => format!(
            "table {table} is partitioned on {} but contract {:?} says {}: change `partition.by` back to {}",
            dated.column, contract.name, wanted.column, dated.column
        ),
        Some(dated) if dated.granularity != wanted.every => format!(
            "table {table} is partitioned by {} but contract {:?} says every {}: change `partition.every` back to {}",
            dated.granularity.name(),
            contract.name,
            wanted.every.name(),
            dated.granularity.name()
        ),
        Some(_) => return Ok(None),
    };
    Ok(Some(problem))
}

/// How an existing table's columns stand against its contract's.
struct Fit<'a> {
    /// The contract's columns the table lacks (veil adds them, nullable).
    lacking: Vec<&'a Column>,
    /// The table's columns the contract does not write (each with a
    /// default or an identity).
    extra: Vec<String>,
}

/// The contract's columns the table lacks and the table's the contract
/// does not write; an error naming the first difference veil cannot take.
fn fit<'a>(contract: &'a Contract, table: &[TableColumn]) -> Result<Fit<'a>, ConfigError> {
    let refuse = |what: String| {
        ConfigError(format!(
            "table {} does not match contract {:?} version {}: {what}. veil only adds nullable columns; \
             change the table yourself (or the contract back), then run veil migrate again",
            contract.table, contract.name, contract.version
        ))
    };
    let mut extra = Vec::new();
    for found in table {
        let TableColumn {
            name,
            sql_type,
            not_null,
            has_default,
        } = found;
        match contract.columns.iter().find(|c| &c.name == name) {
            // A column of the table's own (a surrogate key, a load time):
            // every insert leaves it to its default.
            None if *has_default => extra.push(name.clone()),
            None if *not_null => {
                return Err(refuse(format!(
                    "column {name} ({sql_type}, NOT NULL, no default) is not in the contract, so every insert would fail"
                )))
            }
            None => {
                return Err(refuse(format!(
                    "column {name} ({sql_type}) is not in the contract: removing a column is destructive \
                     (a column of the table's own needs a default, which inserts leave it to)"
                )))
            }
            Some(column) if catalog_type(&column.sql_type) != *sql_type => {
                return Err(refuse(format!(
                    "column {name} is {sql_type} in the table but {} in the contract: changing a type is destructive",
                    column.sql_type
                )))
            }
            Some(_) => {}
        }
    }
    Ok(Fit {
        lacking: contract
            .columns
            .iter()
            .filter(|c| !table.iter().any(|found| found.name == c.name))
            .collect(),
        extra,
    })
}

/// A column of an existing table, as the catalog says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// Its name.
    pub name: String,
    /// Its type, as `format_type` prints it.
    pub sql_type: String,
    /// NOT NULL.
    pub not_null: bool,
    /// It has a default or is an identity (an insert that leaves it out
    /// gets a value).
    pub has_default: bool,
}

/// The table's columns, or None when it is missing. An unqualified name is
/// looked up through `search_path`, as the writer's inserts find it.
pub async fn table_columns(
    client: &impl GenericClient,
    table: &TableName,
) -> anyhow::Result<Option<Vec<TableColumn>>> {
    let name = match &table.schema {
        Some(schema) => format!("{}.{}", quoted(schema), quoted(&table.name)),
        None => quoted(&table.name),
    };
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull,
                    atthasdef OR attidentity <> ''
               FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
            &[&name],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|r| TableColumn {
                name: r.get(0),
                sql_type: r.get(1),
                not_null: r.get(2),
                has_default: r.get(3),
            })
            .collect(),
    ))
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
