//! A Postgres connection that is re-opened when it breaks, over TLS as
//! `sslmode` says (`tls`). Writer connections set `statement_timeout` and
//! `lock_timeout` on every new session, so no statement and no lock wait
//! can hold a batch forever; the socket's keepalives and `tcp_user_timeout`
//! (set in `config`) notice a peer that stopped answering.

use std::time::Duration;
use tokio_postgres::GenericClient;

use anyhow::Context;
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::batch::WriterStatements;
use super::failure::WriteError;
use super::login::Login;
use super::tls::{SslMode, TlsSettings};
use crate::error::ConfigError;

/// Everything needed to open a connection: where, who, and how TLS goes.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// Host, port, user, password, database, timeouts.
    pub config: Config,
    /// sslmode and trusted roots.
    pub tls: TlsSettings,
    /// Where the login comes from (the string, a secret, an IAM token).
    pub login: Login,
    connector: MakeRustlsConnect,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Postgres (or the network) refused it.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// The login could not be made: a secret or an IAM token.
    #[error("{0:#}")]
    Login(anyhow::Error),
    /// Postgres refused the login of a secret even after it was read again:
    /// a rotation under way (the secret and the role's password change one
    /// after the other), or a wrong secret. Transient for a running veil;
    /// at start, fatal with the secret named.
    #[error("Postgres refused the login from secret {secret}, read again just now (a password rotation under way, or a wrong secret)")]
    SecretRefused {
        /// The secret's name or ARN.
        secret: String,
        /// Postgres's refusal (28P01 or 28000).
        #[source]
        error: tokio_postgres::Error,
    },
}

/// What a failed connection means for a writer.
impl From<ConnectError> for WriteError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Postgres(error) => error.into(),
            ConnectError::Login(error) => WriteError::Login(error),
            // A rotation under way: back off and read the secret again.
            refused @ ConnectError::SecretRefused { .. } => {
                WriteError::Login(anyhow::Error::new(refused))
            }
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres's own Debug redacts the password.
        f.debug_struct("DatabaseSettings")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl DatabaseSettings {
    /// Settings for `config` with `tls` (the trusted roots are read here,
    /// so a bad sslrootcert is a configuration error at start).
    pub fn new(config: Config, tls: TlsSettings) -> Result<Self, ConfigError> {
        let connector = tls.connector()?;
        Ok(DatabaseSettings {
            config,
            tls,
            login: Login::Given,
            connector,
        })
    }

    /// The same settings, logging in as `login` says. An IAM token is a
    /// bearer credential, valid 15 minutes for anyone who holds it: it is
    /// sent only to a server whose certificate was verified, `verify-full`
    /// (the name too) or `verify-ca` (the chain only; logged as weaker).
    /// Under `require` a server in the middle gets the token.
    pub fn with_login(mut self, login: Login) -> Result<Self, ConfigError> {
        if matches!(login, Login::Iam(_)) {
            match self.tls.mode {
                SslMode::VerifyFull => {}
                SslMode::VerifyCa => tracing::warn!(
                    "RDS IAM authentication with sslmode=verify-ca: the certificate's chain is checked \
                     but not its name, so any server with a certificate from the same CA (any RDS \
                     instance, with the RDS bundle) could take the token; use verify-full unless the \
                     host name cannot match (a tunnel, an IP address)"
                ),
                mode => {
                    return Err(ConfigError(format!(
                        "RDS IAM authentication sends a bearer token that must go only to a verified \
                         server, and sslmode={} does not verify it (a server in the middle would get the \
                         token): set sslmode=verify-full and sslrootcert (RDS: global-bundle.pem)",
                        mode.name()
                    )))
                }
            }
        }
        self.login = login;
        Ok(self)
    }

    /// `host:port/dbname as user`, for logs and errors; never the password.
    pub fn describe(&self) -> String {
        format!("{}{}", describe(&self.config), self.login.describe())
    }

    /// Opens one connection, TLS as `sslmode` says, logged in as the login
    /// says (a secret is read again once if Postgres refuses it), and
    /// drives it in the background.
    /// Returns it with `host:port/dbname as user` of the endpoint it
    /// connected to (a secret's host and port replace the URL's).
    pub async fn open(&self) -> Result<(Client, String), ConnectError> {
        let mut config = self.config.clone();
        self.login
            .apply(&mut config, false)
            .await
            .map_err(ConnectError::Login)?;
        match self.open_as(&config).await {
            Err(error) if self.login.may_retry_after(&error) => {
                self.login
                    .apply(&mut config, true)
                    .await
                    .map_err(ConnectError::Login)?;
                match self.open_as(&config).await {
                    Err(error) if self.login.may_retry_after(&error) => {
                        Err(ConnectError::SecretRefused {
                            secret: self.login.secret_id().unwrap_or_default().to_string(),
                            error,
                        })
                    }
                    other => Ok((other?, describe(&config))),
                }
            }
            other => Ok((other?, describe(&config))),
        }
    }

    async fn open_as(&self, config: &Config) -> Result<Client, tokio_postgres::Error> {
        match self.tls.mode {
            SslMode::Disable => plain(config).await,
            // libpq's allow: plain first; TLS only if the server refused that.
            SslMode::Allow => match plain(config).await {
                Err(error) if error.as_db_error().is_some() => {
                    self.encrypted(config, WireMode::Require).await
                }
                other => other,
            },
            SslMode::Prefer => self.encrypted(config, WireMode::Prefer).await,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                self.encrypted(config, WireMode::Require).await
            }
        }
    }

    async fn encrypted(
        &self,
        config: &Config,
        mode: WireMode,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = config.clone();
        config.ssl_mode(mode);
        let (client, connection) = config.connect(self.connector.clone()).await?;
        tokio::spawn(drive(connection));
        Ok(client)
    }
}

async fn plain(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let mut config = config.clone();
    config.ssl_mode(WireMode::Disable);
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(drive(connection));
    Ok(client)
}

/// Runs a connection until it ends; its end is logged, never its contents.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = connection.await {
        tracing::warn!(error = %error, "Postgres connection closed");
    }
}

/// Whether a live connection is encrypted, from the server's own view
/// (`pg_stat_ssl`): `Some("TLSv1.3 TLS_AES_256_GCM_SHA384")` or `None`.
pub async fn tls_in_use(
    client: &impl GenericClient,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
            &[],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

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
    settings: DatabaseSettings,
    limits: Option<SessionLimits>,
    client: Option<Client>,
    /// How many connections this handle has opened: a writer's statements
    /// are prepared again on each new one.
    connections: u64,
    /// The endpoint of the last connection opened.
    endpoint: String,
}

/// A batch writer's connection: a `Database` whose sessions get the
/// writer's limits, with the plan's batch statements prepared on each
/// connection it opens.
pub struct Writer {
    database: Database,
    plan: std::sync::Arc<crate::contract::Plan>,
    /// The statements, and the connection (by count) they were prepared on.
    statements: Option<(u64, WriterStatements)>,
}

impl DatabaseSettings {
    /// Whether every host is this machine (a socket, localhost, a loopback
    /// IP): an unencrypted connection there is no finding.
    pub fn is_local(&self) -> bool {
        self.config.get_hosts().iter().all(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        })
    }
}

impl Database {
    /// Connects once (to fail fast on bad configuration) and returns the handle.
    pub async fn connect(settings: DatabaseSettings) -> anyhow::Result<Self> {
        Self::start(settings, None).await
    }

    async fn start(
        settings: DatabaseSettings,
        limits: Option<SessionLimits>,
    ) -> anyhow::Result<Self> {
        let target = settings.describe();
        let mut database = Database {
            settings,
            limits,
            client: None,
            connections: 0,
            endpoint: String::new(),
        };
        database
            .client()
            .await
            .with_context(|| format!("connecting to Postgres at {target}"))?;
        Ok(database)
    }

    /// The live client, reconnecting first if the last one closed.
    pub async fn client(&mut self) -> Result<&mut Client, ConnectError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, endpoint) = self.settings.open().await?;
            if let Some(limits) = self.limits {
                client.batch_execute(&limits.sql()).await?;
            }
            self.client = Some(client);
            self.endpoint = endpoint;
            self.connections += 1;
        }
        // Set just above when missing or closed.
        Ok(self.client.as_mut().expect("client connected"))
    }

    /// `host:port/dbname as user` of the endpoint last connected to (a
    /// secret's host and port, not the URL's), with where the login came
    /// from.
    pub fn endpoint(&self) -> String {
        format!("{}{}", self.endpoint, self.settings.login.describe())
    }

    /// Forgets the current connection so the next call reconnects.
    pub fn reset(&mut self) {
        self.client = None;
    }
}

impl Writer {
    /// Connects once (to fail fast); every session it opens gets `limits`,
    /// and its batch statements record `plan`'s contracts.
    pub async fn connect(
        settings: DatabaseSettings,
        limits: SessionLimits,
        plan: std::sync::Arc<crate::contract::Plan>,
    ) -> anyhow::Result<Self> {
        Ok(Writer {
            database: Database::start(settings, Some(limits)).await?,
            plan,
            statements: None,
        })
    }

    /// The live client with the batch statements prepared on it.
    pub async fn ready(&mut self) -> Result<(&mut Client, &WriterStatements), ConnectError> {
        self.database.client().await?;
        let connection = self.database.connections;
        let client = self.database.client.as_mut().expect("client connected");
        if self
            .statements
            .as_ref()
            .is_none_or(|(on, _)| *on != connection)
        {
            let statements = WriterStatements::prepare(client, &self.plan).await?;
            self.statements = Some((connection, statements));
        }
        let (_, statements) = self.statements.as_ref().expect("statements prepared");
        Ok((client, statements))
    }

    /// Forgets the current connection so the next call reconnects.
    pub fn reset(&mut self) {
        self.database.reset();
    }

    /// The live client, reconnecting first if the last one closed.
    pub async fn client(&mut self) -> Result<&mut Client, ConnectError> {
        self.database.client().await
    }

    /// The endpoint last connected to (see `Database::endpoint`).
    pub fn endpoint(&self) -> String {
        self.database.endpoint()
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

/// Logs once whether the Postgres connection is encrypted, as the server
/// sees it, and how the certificate was checked.
pub async fn log_tls(settings: &DatabaseSettings, client: &impl GenericClient) {
    match tls_in_use(client).await {
        Ok(Some(tls)) => {
            tracing::info!(tls = %tls, check = %settings.tls.describe(), "Postgres connection encrypted")
        }
        Ok(None) => tracing::warn!(
            sslmode = settings.tls.mode.name(),
            "Postgres connection NOT encrypted: the password and the data travel in clear; set sslmode=verify-full for anything but a local database"
        ),
        Err(error) => tracing::debug!(%error, "could not read pg_stat_ssl"),
    }
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
