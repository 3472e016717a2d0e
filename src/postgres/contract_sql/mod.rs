//! The SQL of contract tables (the built-in login contract's `user_logins`
//! among them): their DDL (`ddl`), the batch statements the writer
//! prepares (`batch_sql`), and `veil migrate`'s comparison of an existing
//! table with its contract (`migrate`).

mod batch_sql;
mod ddl;
mod migrate;

pub use batch_sql::ContractBatchSql;
pub use ddl::{create_indexes, create_table_sql, table_sql};
pub use migrate::{
    apply, may_insert, migrate, prepare_schema, table_columns, table_state, MigrateReport,
    TableChange, TableColumn, TableState,
};
