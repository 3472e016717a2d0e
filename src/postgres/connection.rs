//! A Postgres connection that is re-opened when it breaks. Writer
//! connections set `statement_timeout` and `lock_timeout` on every new
//! session, so no statement and no lock wait can hold a batch forever; the
//! socket's keepalives and `tcp_user_timeout` (set in `config`) notice a
//! peer that stopped answering.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, Config, NoTls};

use super::batch::WriterStatements;

/// Connect timeout applied to every connection veil opens.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits set on each writer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Longest a statement may run before the server cancels it (57014).
    pub statement_timeout: Duration,
    /// Longest a statement may wait for a lock (55P03).
    pub lock_timeout: Duration,
}

impl SessionLimits {
    fn sql(&self) -> String {
        format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis()
        )
    }
}

/// A Postgres connection that is re-opened when it breaks.
pub struct Database {
    config: Config,
    limits: Option<SessionLimits>,
    client: Option<Client>,
    /// The batch writer's statements, prepared on `client` when first needed.
    statements: Option<WriterStatements>,
}

impl Database {
    /// Connects once (to fail fast on bad configuration) and returns the handle.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        Self::open(config, None).await
    }

    /// A writer's connection: every session it opens gets `limits`.
    pub async fn connect_writer(config: Config, limits: SessionLimits) -> anyhow::Result<Self> {
        Self::open(config, Some(limits)).await
    }

    async fn open(config: Config, limits: Option<SessionLimits>) -> anyhow::Result<Self> {
        let target = describe(&config);
        let mut database = Database {
            config,
            limits,
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
            self.statements = None;
            let (client, connection) = self.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %error, "Postgres connection closed");
                }
            });
            if let Some(limits) = self.limits {
                client.batch_execute(&limits.sql()).await?;
            }
            self.client = Some(client);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_limits_are_set_in_milliseconds() {
        let limits = SessionLimits {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_millis(250),
        };
        assert_eq!(
            limits.sql(),
            "SET statement_timeout = 30000; SET lock_timeout = 250"
        );
    }
}
