//! Who veil logs in as, for each new connection:
//!
//! - the user and password of the connection string (or `PGUSER` /
//!   `PGPASSWORD`);
//! - an AWS Secrets Manager secret in RDS's format (`host`, `port`,
//!   `username`, `password`, `dbname`), read once and re-read once when
//!   Postgres refuses the login, because RDS rotates it;
//! - an RDS IAM authentication token, made fresh for every connection (it
//!   is valid for 15 minutes) from the same AWS credential chain as SQS.
//!   Only over TLS: the token is a bearer credential.
//!
//! Secret values live in zeroizing buffers and are never logged.

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;
use zeroize::Zeroizing;

/// How long an RDS IAM token is valid.
pub use crate::aws::sigv4::IAM_TOKEN_LIFETIME;

/// Where the login comes from.
#[derive(Clone, Debug, Default)]
pub enum Login {
    /// The connection string's user and password.
    #[default]
    Given,
    /// An RDS-format secret in AWS Secrets Manager.
    Secret(Arc<SecretLogin>),
    /// RDS IAM database authentication.
    Iam(Arc<IamLogin>),
}

impl Login {
    /// A login from secret `id` (name or ARN).
    pub fn secret(id: &str) -> Self {
        Login::Secret(Arc::new(SecretLogin {
            id: id.to_string(),
            current: Mutex::new(None),
        }))
    }

    /// RDS IAM authentication, in `region` if known (else the AWS chain's).
    pub fn iam(region: Option<String>) -> Self {
        Login::Iam(Arc::new(IamLogin {
            tokens: crate::aws::RdsTokens::new(region),
        }))
    }

    /// Where the login comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Login::Given => String::new(),
            Login::Secret(secret) => format!(" (login from secret {})", secret.id),
            Login::Iam(_) => " (login by RDS IAM token)".into(),
        }
    }

    /// Fills `config` with the login to use now; `after_refusal` re-reads
    /// a secret.
    pub async fn apply(&self, config: &mut Config, after_refusal: bool) -> anyhow::Result<()> {
        match self {
            Login::Given => Ok(()),
            Login::Secret(secret) => secret.apply(config, after_refusal).await,
            Login::Iam(iam) => {
                let token = iam.token_for(config).await?;
                config.password(token.as_bytes());
                Ok(())
            }
        }
    }

    /// The secret the login comes from, if it does.
    pub fn secret_id(&self) -> Option<&str> {
        match self {
            Login::Secret(secret) => Some(&secret.id),
            _ => None,
        }
    }

    /// Whether a refused login is worth one more try with a fresh read.
    pub fn may_retry_after(&self, error: &tokio_postgres::Error) -> bool {
        matches!(self, Login::Secret(_))
            && error.code().is_some_and(|code| {
                *code == SqlState::INVALID_PASSWORD
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            })
    }
}

/// An RDS-format secret, cached between connections.
#[derive(Debug)]
pub struct SecretLogin {
    id: String,
    current: Mutex<Option<RdsSecret>>,
}

/// The fields of RDS's secret format veil uses (`engine` and the rest are
/// ignored).
#[derive(Deserialize, Clone)]
struct RdsSecret {
    host: Option<String>,
    port: Option<PortNumber>,
    username: Option<String>,
    password: Option<Zeroizing<String>>,
    dbname: Option<String>,
}

impl std::fmt::Debug for RdsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdsSecret")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// RDS writes the port as a number; people sometimes write a string.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum PortNumber {
    Number(u16),
    Text(#[serde(deserialize_with = "port_text")] u16),
}

fn port_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl SecretLogin {
    async fn apply(&self, config: &mut Config, refresh: bool) -> anyhow::Result<()> {
        let mut current = self.current.lock().await;
        if refresh || current.is_none() {
            if refresh {
                tracing::info!(secret = %self.id, "Postgres refused the login; reading the secret again (RDS may have rotated it)");
            }
            let text = crate::aws::secrets::secret_string(&self.id).await?;
            let secret: RdsSecret = serde_json::from_str(&text).map_err(|e| {
                crate::error::ConfigError(format!(
                    "secret {} is not in RDS's format ({{\"host\", \"port\", \"username\", \"password\", \"dbname\"}}): {}",
                    self.id,
                    crate::keyring::json_problem(&e)
                ))
            })?;
            *current = Some(secret);
        }
        // Set just above when it was empty.
        let secret = current.as_ref().expect("secret read");
        let port = secret.port.map(|port| match port {
            PortNumber::Number(port) | PortNumber::Text(port) => port,
        });
        if secret.host.is_some() || port.is_some() {
            // The secret's endpoint replaces the URL's (or the default
            // localhost:5432): `Config::host` and `port` append, which
            // would try the URL's host first with the secret's password.
            *config = with_endpoint(config, secret.host.as_deref(), port);
        }
        if let Some(user) = &secret.username {
            config.user(user);
        }
        if let Some(password) = &secret.password {
            config.password(password.as_bytes());
        }
        if let Some(dbname) = &secret.dbname {
            config.dbname(dbname);
        }
        Ok(())
    }
}

/// `config` with its hosts and ports replaced: `host` (else the first of
/// `config`'s, else localhost) and `port` (else the first of `config`'s,
/// else 5432). tokio-postgres can only add hosts, so everything else is
/// copied into a new `Config`.
pub fn with_endpoint(config: &Config, host: Option<&str>, port: Option<u16>) -> Config {
    use tokio_postgres::config::Host;
    let mut fresh = Config::new();
    match (host, config.get_hosts().first()) {
        (Some(host), _) => {
            fresh.host(host);
        }
        (None, Some(Host::Tcp(host))) => {
            fresh.host(host);
        }
        #[cfg(unix)]
        (None, Some(Host::Unix(path))) => {
            fresh.host_path(path);
        }
        (None, None) => {
            fresh.host("localhost");
        }
    }
    fresh.port(port.or(config.get_ports().first().copied()).unwrap_or(5432));
    if let Some(user) = config.get_user() {
        fresh.user(user);
    }
    if let Some(password) = config.get_password() {
        fresh.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        fresh.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        fresh.options(options);
    }
    if let Some(name) = config.get_application_name() {
        fresh.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        fresh.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        fresh.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        fresh.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        fresh.keepalives_retries(retries);
    }
    fresh
        .ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    fresh
}

/// RDS IAM authentication: a token for each connection, signed with the
/// AWS chain's credentials and region (`aws::RdsTokens`).
#[derive(Debug)]
pub struct IamLogin {
    tokens: crate::aws::RdsTokens,
}

impl IamLogin {
    async fn token_for(&self, config: &Config) -> anyhow::Result<Zeroizing<String>> {
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => anyhow::bail!("RDS IAM authentication needs a TCP host name"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .context("RDS IAM authentication needs a user name")?;
        self.tokens.token(&host, port, user).await
    }
}

/// The region named by an RDS host (`db.abc.eu-west-1.rds.amazonaws.com`).
pub fn region_of_rds_host(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let rds = labels.iter().position(|label| *label == "rds")?;
    let region = labels.get(rds.checked_sub(1)?)?;
    (labels.get(rds + 1) == Some(&"amazonaws")).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_rds_secret_fills_the_connection_and_takes_ports_as_numbers_or_text() {
        for port in ["6543", "\"6543\""] {
            let text = format!(
                r#"{{"engine": "postgres", "host": "db.internal", "port": {port},
                    "username": "veil", "password": "pw", "dbname": "events",
                    "dbInstanceIdentifier": "x"}}"#
            );
            let secret: RdsSecret = serde_json::from_str(&text).unwrap();
            let login = SecretLogin {
                id: "s".into(),
                current: Mutex::new(Some(secret)),
            };
            let mut config = Config::new();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(login.apply(&mut config, false))
                .unwrap();
            assert_eq!(
                crate::postgres::describe(&config),
                "db.internal:6543/events as veil"
            );
            assert_eq!(config.get_password(), Some(&b"pw"[..]));
            assert!(!format!("{:?}", login.current).contains("pw\""));
        }
    }

    #[test]
    fn the_secrets_endpoint_replaces_the_urls_and_keeps_the_rest() {
        let mut config: Config =
            "postgres://app@db.old:5432/events?connect_timeout=7&application_name=veil"
                .parse()
                .unwrap();
        config.keepalives_idle(Duration::from_secs(11));
        let fresh = with_endpoint(&config, Some("db.new"), Some(6543));
        assert_eq!(
            crate::postgres::describe(&fresh),
            "db.new:6543/events as app"
        );
        assert_eq!(fresh.get_hosts().len(), 1, "the URL's host is gone");
        assert_eq!(fresh.get_ports(), [6543]);
        assert_eq!(fresh.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(fresh.get_application_name(), Some("veil"));
        assert_eq!(fresh.get_keepalives_idle(), Duration::from_secs(11));
        let port_only = with_endpoint(&config, None, Some(6000));
        assert_eq!(
            crate::postgres::describe(&port_only),
            "db.old:6000/events as app"
        );
    }

    #[test]
    fn rds_hosts_name_their_region() {
        assert_eq!(
            region_of_rds_host("veil.abc123.eu-west-1.rds.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_rds_host("localhost"), None);
        assert_eq!(region_of_rds_host("rds.example.com"), None);
    }
}
