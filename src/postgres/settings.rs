//! `DatabaseSettings` from a connection string (URL or key=value) or the
//! libpq variables, with veil's socket defaults (keepalives, user timeout)
//! where the string names none, and TLS by libpq's rules.

use std::str::FromStr;
use std::time::Duration;

use super::{region_of_rds_host, DatabaseSettings, TlsSettings};
use crate::error::ConfigError;

/// Postgres settings: the URL if given, else the default with the libpq
/// variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) applied.
/// TLS: `sslmode` and `sslrootcert` from the URL, else PGSSLMODE and
/// PGSSLROOTCERT (libpq's rule); the default is `prefer`.
pub fn database_config(
    url: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DatabaseSettings, ConfigError> {
    let split = match url {
        Some(url) => Some(super::split_connection_string(url)?),
        None => None,
    };
    let config = connection_config(split.as_ref().map(|s| s.rest.as_str()), &env)?;
    let sslmode = split
        .as_ref()
        .and_then(|s| s.sslmode.clone())
        .or_else(|| env("PGSSLMODE"));
    let sslrootcert = split
        .as_ref()
        .and_then(|s| s.sslrootcert.clone())
        .or_else(|| env("PGSSLROOTCERT"));
    let tls = TlsSettings::new(sslmode.as_deref(), sslrootcert.as_deref())?;
    DatabaseSettings::new(config, tls)
}

/// Where and who, without TLS: the connection string if given, else the
/// default with the libpq variables applied.
fn connection_config(
    url: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<tokio_postgres::Config, ConfigError> {
    let mut config =
        match url {
            Some(url) => tokio_postgres::Config::from_str(url).map_err(|e| {
                // The URL may hold a password: describe the problem, not the URL.
                ConfigError(format!(
                    "DATABASE_URL / --database-url is not a valid Postgres URL: {e}"
                ))
            })?,
            None => {
                // The default URL's parts, each overridable by its libpq variable.
                let var = |name: &str, default: &str| env(name).unwrap_or_else(|| default.into());
                let port = var("PGPORT", "5432");
                let mut config = tokio_postgres::Config::new();
                config
                    .host(var("PGHOST", "localhost"))
                    .port(port.parse().map_err(|_| {
                        ConfigError(format!("PGPORT {port:?} is not a port number"))
                    })?)
                    .user(var("PGUSER", "postgres"))
                    .password(var("PGPASSWORD", "postgres"))
                    .dbname(var("PGDATABASE", "postgres"));
                config
            }
        };
    config.application_name("veil");
    let given = |key: &str| url.is_some_and(|url| mentions(url, key));
    // Defaults for what libpq leaves to the operating system; a URL that
    // names one of them keeps its own value.
    if !given("connect_timeout") {
        config.connect_timeout(super::CONNECT_TIMEOUT);
    }
    if !given("keepalives") {
        config.keepalives(true);
    }
    if !given("keepalives_idle") {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if !given("keepalives_interval") {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if !given("keepalives_retries") {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    if !given("tcp_user_timeout") {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    Ok(config)
}

/// Idle time before the first TCP keepalive probe on a Postgres socket
/// (the OS default is two hours).
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// Time between keepalive probes.
pub const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection counts as dead.
pub const KEEPALIVES_RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the kernel drops the
/// connection: a peer that stopped answering mid-write is noticed.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a connection string (URL or key=value) sets `key`.
fn mentions(connection: &str, key: &str) -> bool {
    let pattern = format!("{key}=");
    connection
        .match_indices(&pattern)
        .any(|(at, _)| at == 0 || matches!(connection.as_bytes()[at - 1], b'?' | b'&' | b' '))
}

impl DatabaseSettings {
    /// The AWS region of an RDS host name (`*.<region>.rds.amazonaws.com`),
    /// for IAM authentication tokens.
    pub fn rds_region(&self) -> Option<String> {
        self.config.get_hosts().first().and_then(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => region_of_rds_host(name),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }
    #[test]
    fn default_database_is_the_reference_one() {
        let settings = database_config(None, env_of(&[])).unwrap();
        assert_eq!(settings.describe(), "localhost:5432/postgres as postgres");
        assert_eq!(settings.config.get_password(), Some(&b"postgres"[..]));
        assert_eq!(settings.tls.mode, crate::postgres::SslMode::Prefer);
    }

    #[test]
    fn libpq_variables_override_the_default() {
        let env = env_of(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "veil"),
            ("PGDATABASE", "events"),
        ]);
        let settings = database_config(None, env).unwrap();
        assert_eq!(settings.describe(), "db.internal:6543/events as veil");
    }

    #[test]
    fn explicit_url_wins_over_libpq_variables() {
        let settings =
            database_config(Some("postgres://a@h:1/d"), env_of(&[("PGHOST", "other")])).unwrap();
        assert_eq!(settings.describe(), "h:1/d as a");
    }

    #[test]
    fn sockets_get_keepalives_unless_the_url_sets_them() {
        let defaults = database_config(Some("postgres://u@h/d"), env_of(&[]))
            .unwrap()
            .config;
        assert_eq!(defaults.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(defaults.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        let own = database_config(
            // tokio-postgres reads tcp_user_timeout in seconds (libpq: milliseconds).
            Some("postgres://u@h/d?keepalives_idle=7&tcp_user_timeout=9&connect_timeout=3"),
            env_of(&[]),
        )
        .unwrap()
        .config;
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(own.get_tcp_user_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(own.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn sslmode_comes_from_the_url_else_from_pgsslmode() {
        let env = env_of(&[("PGSSLMODE", "require"), ("PGSSLROOTCERT", "/env-ca.pem")]);
        let from_url = database_config(
            Some("postgres://u@h/d?sslmode=verify-full&sslrootcert=/url-ca.pem"),
            &env,
        );
        // The roots are read when the settings are made: a missing file is
        // a configuration error naming it.
        let error = from_url.unwrap_err().to_string();
        assert!(error.contains("/url-ca.pem"), "{error}");
        let from_env = database_config(Some("postgres://u@h/d"), &env).unwrap_err();
        assert!(from_env.to_string().contains("/env-ca.pem"), "{from_env}");
        let plain = database_config(Some("postgres://u@h/d?sslmode=disable"), &env).unwrap();
        assert_eq!(plain.tls.mode, crate::postgres::SslMode::Disable);
    }

    #[test]
    fn bad_database_url_error_does_not_echo_the_password() {
        let error = database_config(Some("postgres://u:hunter2@h:notaport/d"), env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
