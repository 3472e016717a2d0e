//! Postgres: the connection (reconnecting after failures, with session
//! limits for writers; TLS with libpq's sslmode contract in `tls`, the
//! connection string's TLS parameters in `dsn`), the schema, the batch SQL
//! that records rows, quarantine entries and ledger entries in one
//! transaction, what a failed write means (`failure`), the audit, and
//! the partitions of the growing tables with their housekeeping
//! (`partitions`, `maintain`), what the connected role may do
//! (`rights`), the re-masking walk after a key rotation (`rekey`), and
//! contract tables (`contract_sql`). TLS follows libpq where rustls is
//! stricter (`tls_names`).

pub mod audit;
mod batch;
mod connection;
pub mod contract_sql;
mod dsn;
mod failure;
mod login;
pub mod maintain;
pub mod partitions;
pub mod privacy;
pub mod rekey;
pub mod reveal;
pub mod rights;
mod schema;
mod settings;
mod tls;
mod tls_names;

pub use batch::{record_batch, WriterStatements};
pub use connection::{
    describe, log_tls, tls_in_use, ConnectError, Database, DatabaseSettings, SessionLimits, Writer,
    CONNECT_TIMEOUT,
};
pub use dsn::{split as split_connection_string, Split};
pub use failure::{classify, fix_of, lacks_privilege, Class, WriteError};
pub use login::{region_of_rds_host, Login, IAM_TOKEN_LIFETIME};
pub use schema::{missing_veil_tables, MIGRATE_LOCK_SQL};
pub use settings::{
    database_config, KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_RETRIES, TCP_USER_TIMEOUT,
};
pub use tls::{certificate_problem, RootCertificates, SslMode, TlsSettings, Verification};
/// The driver's handles the application passes around (a connection, a
/// transaction, either, and the error they fail with); the SQL stays in
/// this module, and no other names the driver.
pub use tokio_postgres::{Client, Error, GenericClient, Transaction};
