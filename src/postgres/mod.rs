//! Postgres: the connection (reconnecting after failures), the schema, the
//! batch writer that records rows, quarantine entries and ledger entries in
//! one transaction, and the reveal audit.

pub mod audit;
mod schema;
mod writer;

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, Config, NoTls};

pub use schema::{
    check_user_logins_shape, create_analyst_indexes, migrate, SchemaReport, ANALYST_INDEXES,
    USER_LOGINS_DDL,
};
pub use writer::{
    record_batch, BatchOutcome, MaskedRow, Prepared, QuarantineEntry, Record, WriteError,
    WriterStatements,
};

/// A Postgres connection that is re-opened when it breaks.
pub struct Database {
    config: Config,
    client: Option<Client>,
    /// The batch writer's statements, prepared on `client` when first needed.
    statements: Option<WriterStatements>,
}

impl Database {
    /// Connects once (to fail fast on bad configuration) and returns the handle.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let target = describe(&config);
        let mut database = Database {
            config,
            client: None,
            statements: None,
        };
        database
            .client()
            .await
            .with_context(|| format!("connecting to Postgres at {target}"))?;
        Ok(database)
    }

    /// The live client, reconnecting first if the last one closed.
    pub async fn client(&mut self) -> Result<&mut Client, tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %error, "Postgres connection closed");
                }
            });
            self.client = Some(client);
            self.statements = None;
        }
        // Set just above when missing or closed.
        Ok(self.client.as_mut().expect("client connected"))
    }

    /// The live client with the batch writer's statements prepared on it.
    pub async fn writer(
        &mut self,
    ) -> Result<(&mut Client, &WriterStatements), tokio_postgres::Error> {
        self.client().await?;
        let client = self.client.as_mut().expect("client connected");
        if self.statements.is_none() {
            self.statements = Some(WriterStatements::prepare(client).await?);
        }
        Ok((
            client,
            self.statements.as_ref().expect("statements prepared"),
        ))
    }

    /// Forgets the current connection so the next call reconnects.
    pub fn reset(&mut self) {
        self.client = None;
        self.statements = None;
    }
}

/// `host:port/dbname as user`, for logs and errors; never the password.
pub fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        config.get_dbname().unwrap_or("postgres"),
        config.get_user().unwrap_or("postgres")
    )
}

/// Connect timeout applied to every connection veil opens.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
