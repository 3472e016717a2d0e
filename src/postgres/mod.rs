//! Postgres: the connection (reconnecting after failures, with session
//! limits for writers), the schema, the batch SQL that records rows,
//! quarantine entries and ledger entries in one transaction, what a failed
//! write means (`failure`), and the reveal audit.

pub mod audit;
mod batch;
mod connection;
mod failure;
mod schema;

pub use batch::{
    record_batch, MaskedRow, Prepared, QuarantineEntry, Record, Recorded, WriterStatements,
};
pub use connection::{describe, Database, SessionLimits, CONNECT_TIMEOUT};
pub use failure::{classify, Class, WriteError};
pub use schema::{
    check_user_logins_shape, create_analyst_indexes, migrate, SchemaReport, ANALYST_INDEXES,
    USER_LOGINS_DDL,
};
