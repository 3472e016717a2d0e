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
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;
use zeroize::Zeroizing;

/// How long an RDS IAM token is valid.
pub const IAM_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

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
            region,
            aws: OnceCell::new(),
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
            let text = crate::secrets::secret_string(&self.id).await?;
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
        if let Some(host) = &secret.host {
            config.host(host);
        }
        if let Some(port) = secret.port {
            config.port(match port {
                PortNumber::Number(port) | PortNumber::Text(port) => port,
            });
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

/// RDS IAM authentication: credentials and region from the AWS chain,
/// loaded at the first connection.
#[derive(Debug)]
pub struct IamLogin {
    region: Option<String>,
    aws: OnceCell<aws_config::SdkConfig>,
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
        let aws = self
            .aws
            .get_or_init(|| crate::aws::sdk_config(None, false, self.region.as_deref()))
            .await;
        let region = aws
            .region()
            .map(|r| r.to_string())
            .context("no AWS region for RDS IAM authentication: set AWS_REGION")?;
        let provider = aws
            .credentials_provider()
            .context("no AWS credentials provider for RDS IAM authentication")?;
        use aws_credential_types::provider::ProvideCredentials;
        let credentials = provider
            .provide_credentials()
            .await
            .context("loading AWS credentials for an RDS IAM token")?;
        Ok(crate::sigv4::rds_auth_token(
            &credentials,
            &region,
            &host,
            port,
            user,
            SystemTime::now(),
        ))
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
    fn rds_hosts_name_their_region() {
        assert_eq!(
            region_of_rds_host("veil.abc123.eu-west-1.rds.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_rds_host("localhost"), None);
        assert_eq!(region_of_rds_host("rds.example.com"), None);
    }
}
