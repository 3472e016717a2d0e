//! libpq connection strings, URL (`postgres://...?sslmode=verify-full`) or
//! key=value (`host=db sslmode=verify-full`): the TLS parameters that
//! tokio-postgres does not know (`verify-ca`, `verify-full`, `allow`,
//! `sslrootcert`) are taken out here, for `tls`; the rest goes to
//! tokio-postgres unchanged. Client-certificate parameters are refused by
//! name rather than ignored.

use crate::error::ConfigError;

/// The TLS parameters of a connection string, and the string without them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// The connection string without `sslmode` and `sslrootcert`.
    pub rest: String,
    /// `sslmode`, if given.
    pub sslmode: Option<String>,
    /// `sslrootcert`, if given.
    pub sslrootcert: Option<String>,
}

/// Parameters libpq knows and veil does not support.
const UNSUPPORTED: [&str; 6] = [
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
];

/// Takes the TLS parameters out of a connection string.
pub fn split(connection: &str) -> Result<Split, ConfigError> {
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        split_url(connection)
    } else {
        split_key_values(connection)
    }
}

fn refuse_unsupported(key: &str) -> Result<(), ConfigError> {
    if UNSUPPORTED.contains(&key) {
        return Err(ConfigError(format!(
            "the connection string sets {key}, which veil does not support (no client \
             certificates, CRLs or SNI switch); remove it"
        )));
    }
    Ok(())
}

fn split_url(url: &str) -> Result<Split, ConfigError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(Split {
            rest: url.to_string(),
            ..Split::default()
        });
    };
    let mut split = Split::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = url::form_urlencoded::parse(pair.as_bytes())
            .next()
            .unwrap_or_default();
        refuse_unsupported(&key)?;
        match key.as_ref() {
            "sslmode" => split.sslmode = Some(value.into_owned()),
            "sslrootcert" => split.sslrootcert = Some(value.into_owned()),
            _ => kept.push(pair),
        }
    }
    split.rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(split)
}

/// key=value pairs separated by spaces; a value may be single-quoted, with
/// backslash escapes (libpq's rules).
fn split_key_values(text: &str) -> Result<Split, ConfigError> {
    let mut split = Split::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (token, value, after) = next_pair(rest).ok_or_else(|| {
            ConfigError("DATABASE_URL / --database-url is not a valid Postgres connection string (expected key=value pairs or a postgres:// URL)".into())
        })?;
        let key = token.split('=').next().unwrap_or_default().trim();
        refuse_unsupported(key)?;
        match key {
            "sslmode" => split.sslmode = Some(value),
            "sslrootcert" => split.sslrootcert = Some(value),
            _ => kept.push(token),
        }
        rest = after.trim_start();
    }
    split.rest = kept.join(" ");
    Ok(split)
}

/// One `key=value` pair at the start of `text`: the pair as written, its
/// value unquoted, and what follows.
fn next_pair(text: &str) -> Option<(&str, String, &str)> {
    let equals = text.find('=')?;
    let after_key = text[equals + 1..].trim_start();
    let value_start = text.len() - after_key.len();
    let mut value = String::new();
    let end = if let Some(quoted) = after_key.strip_prefix('\'') {
        let mut chars = quoted.char_indices();
        let mut closed = None;
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
                '\'' => {
                    closed = Some(at);
                    break;
                }
                other => value.push(other),
            }
        }
        value_start + 1 + closed? + 1
    } else {
        let length = after_key
            .find(char::is_whitespace)
            .unwrap_or(after_key.len());
        value.push_str(&after_key[..length]);
        value_start + length
    };
    Some((&text[..end], value, &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept_as_written() {
        let split = split(
            "postgres://u:p%40ss@db:5432/d?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Frds.pem",
        )
        .unwrap();
        assert_eq!(
            split.rest,
            "postgres://u:p%40ss@db:5432/d?application_name=x"
        );
        assert_eq!(split.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(split.sslrootcert.as_deref(), Some("/etc/rds.pem"));
        let plain = super::split("postgres://u@h/d").unwrap();
        assert_eq!(
            (plain.rest.as_str(), plain.sslmode),
            ("postgres://u@h/d", None)
        );
    }

    #[test]
    fn key_value_strings_are_split_with_libpq_quoting() {
        let split = split(
            r"host=db  sslmode=verify-ca password='it\'s a secret' sslrootcert='/a b.pem' dbname=d",
        )
        .unwrap();
        assert_eq!(split.rest, r"host=db password='it\'s a secret' dbname=d");
        assert_eq!(split.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(split.sslrootcert.as_deref(), Some("/a b.pem"));
    }

    #[test]
    fn client_certificates_are_refused_by_name() {
        for text in ["postgres://u@h/d?sslcert=/c.pem", "host=h sslkey=/k.pem"] {
            let error = split(text).unwrap_err().to_string();
            assert!(error.contains("veil does not support"), "{error}");
        }
    }
}
