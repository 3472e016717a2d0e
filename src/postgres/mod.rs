//! Postgres: the connection (reconnecting after failures, with session
//! limits for writers; TLS with libpq's sslmode contract in `tls`, the
//! connection string's TLS parameters in `dsn`), the schema, the batch SQL
//! that records rows, quarantine entries and ledger entries in one
//! transaction, what a failed write means (`failure`), and the reveal
//! audit.

pub mod audit;
mod batch;
mod connection;
mod dsn;
mod failure;
mod login;
mod schema;
mod tls;

pub use batch::{
    record_batch, MaskedRow, Prepared, QuarantineEntry, Record, Recorded, WriterStatements,
};
pub use connection::{
    describe, tls_in_use, ConnectError, Database, DatabaseSettings, SessionLimits, CONNECT_TIMEOUT,
};
pub use dsn::{split as split_connection_string, Split};
pub use failure::{classify, Class, WriteError};
pub use login::{region_of_rds_host, Login, IAM_TOKEN_LIFETIME};
pub use schema::{
    check_user_logins_shape, create_analyst_indexes, migrate, SchemaReport, ANALYST_INDEXES,
    USER_LOGINS_DDL,
};
pub use tls::{certificate_problem, RootCertificates, SslMode, TlsSettings, Verification};
