//! `veil migrate` (and the schema check of `veil run`): veil's schema, then
//! each contract's table created, or compared with its contract: nullable
//! columns added (by `migrate` only), destructive differences refused with
//! the reason, a table's own columns with a default accepted.

use tokio_postgres::GenericClient;

use super::ddl::{create_table_sql, quoted, table_sql};
use crate::contract::{Column, Contract, Plan, TableName};
use crate::error::ConfigError;

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
    let upgraded_ledger = super::super::schema::migrate_veil_schema(client).await?;
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(super::super::MIGRATE_LOCK_SQL)
        .await?;
    let tables = apply(&transaction, plan, add_columns).await?;
    transaction.commit().await?;
    Ok(MigrateReport {
        upgraded_ledger,
        tables,
    })
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
    let has = super::super::partitions::dated_table(client, &table_sql(&contract.table)).await?;
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
