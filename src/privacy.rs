//! Lookup and erasure by value (`veil find`, `veil forget`): where one
//! person's value of a PII domain or a column stands in the contracts'
//! tables, and what it looks like there. Masks are deterministic, so the
//! value masked under every key of the keyring (every mode) matches its
//! rows without opening any other. A quarantined
//! body is junk by definition, so it is searched everywhere: every leaf of
//! its JSON, JSON inside strings, and its text, an IP in any spelling
//! (`Target::held_by`). Pure: no I/O.

use crate::contract::values::canonical_ip;
use crate::contract::{ColumnType, Normalize, Plan, TableName};
use crate::error::ConfigError;
use crate::keyring::Keyring;

/// The value looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address, in the canonical form the pipeline masks.
    Ip(String),
    /// A value of a contract's domain or column (`--value NAME=VALUE`),
    /// matched in quarantined bodies as a whole token; in any case when a
    /// column of it lower-cases its values.
    Value {
        /// The domain or column named.
        name: String,
        /// The value, as given.
        value: String,
        /// Match in any letter case.
        any_case: bool,
    },
}

impl Target {
    /// An IP target: any spelling of an address, put in canonical form.
    pub fn ip(text: &str) -> Result<Self, ConfigError> {
        canonical_ip(text.trim()).map(Target::Ip).ok_or_else(|| {
            ConfigError(format!(
                "--ip {:?} is not an IP address (IPv4 like 203.0.113.7, or IPv6)",
                text
            ))
        })
    }

    /// The field's name, for output and the audit.
    pub fn field_name(&self) -> &str {
        match self {
            Target::Ip(_) => "ip",
            Target::Value { name, .. } => name,
        }
    }

    /// What the audit records of the search: the field and a keyed
    /// one-way fingerprint of the value (`fp1.`, see
    /// `Keyring::audit_fingerprint`), never the value, a mask that opens,
    /// or a raw user id.
    pub fn audit_description(&self, keyring: &Keyring) -> String {
        format!(
            "{} fingerprint {}",
            self.field_name(),
            keyring.audit_fingerprint(self.field_name(), self.value())
        )
    }

    fn value(&self) -> &str {
        match self {
            Target::Ip(value) | Target::Value { value, .. } => value,
        }
    }

    /// Whether a quarantined body holds the value, wherever it stands: any
    /// string or number of a JSON body (nested objects and arrays, every
    /// value of a duplicated key, under any key, object keys too), JSON
    /// text inside a string (an SNS envelope), and any text (a body that is
    /// not JSON, a string that is not JSON) where the value stands as a
    /// whole token; an IP in any spelling (IPv6 uncompressed or upper case,
    /// IPv4-mapped). A body that is not UTF-8 cannot be read as text, so
    /// nothing can be said of it: `Undecided`.
    pub fn held_by(&self, body: &[u8]) -> Holding {
        match std::str::from_utf8(body) {
            Ok(text) if self.held_by_text(text, JSON_DEPTH) => Holding::Yes,
            Ok(_) => Holding::No,
            Err(_) => Holding::Undecided,
        }
    }

    /// A JSON object or array is searched leaf by leaf (its text holds
    /// nothing its leaves do not); anything else as text.
    fn held_by_text(&self, text: &str, depth: u8) -> bool {
        let container = text.trim_start().starts_with(['{', '[']);
        if depth > 0 && container {
            if let Some(leaves) = json_leaves(text) {
                return leaves.iter().any(|leaf| self.held_by_text(leaf, depth - 1));
            }
        }
        match self {
            Target::Ip(ip) => ip_tokens(text).any(|found| found == *ip),
            Target::Value {
                value,
                any_case: true,
                ..
            } => contains_token(&text.to_lowercase(), &value.to_lowercase()),
            Target::Value { value, .. } => contains_token(text, value),
        }
    }
}

/// One table column of a plan that may hold a looked-up value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The contract.
    pub contract: String,
    /// Its table.
    pub table: TableName,
    /// The column.
    pub column: String,
    /// What to match there: every mask of the value (a PII column), or
    /// the value as stored.
    pub values: Vec<String>,
    /// The table's columns `find` may show: none that holds PII.
    pub shown: Vec<String>,
    /// The column `find` orders its rows by first: the table's first date
    /// column that holds no PII, if any.
    pub order_by: Option<String>,
}

/// `--value NAME=VALUE` through a plan: the target quarantined bodies are
/// checked for, and every column of every contract that may hold it.
/// NAME is a domain (every column of it, in every contract) or a column
/// name (that column, in every contract that has one).
pub fn resolve(
    plan: &Plan,
    keyring: &Keyring,
    name: &str,
    value: &str,
) -> Result<(Target, Vec<Place>), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError(format!(
            "--value {name}= needs a value after the ="
        )));
    }
    let columns: Vec<_> = plan
        .contracts
        .iter()
        .flat_map(|contract| {
            contract
                .columns
                .iter()
                .map(move |column| (contract, column))
        })
        .filter(|(_, column)| {
            column.name == name || column.pii.as_ref().is_some_and(|pii| pii.domain == name)
        })
        .collect();
    if columns.is_empty() {
        let mut known: Vec<String> = plan
            .domains()
            .iter()
            .map(|pii| pii.domain.clone())
            .collect();
        known.extend(
            plan.contracts
                .iter()
                .flat_map(|c| c.columns.iter().map(|col| col.name.clone())),
        );
        known.dedup();
        return Err(ConfigError(format!(
            "--value {name}=...: {name:?} is neither a PII domain nor a column of the contracts; \
             use one of: {}",
            known.join(", ")
        )));
    }
    let target = if columns
        .iter()
        .any(|(_, column)| column.column_type == ColumnType::Ip)
    {
        Target::ip(value)?
    } else {
        Target::Value {
            name: name.to_string(),
            value: value.trim().to_string(),
            any_case: columns
                .iter()
                .any(|(_, column)| column.normalize == Normalize::Lowercase),
        }
    };
    let places = columns
        .into_iter()
        .filter_map(|(contract, column)| {
            let stored = match &target {
                // an IP in any spelling, already canonical
                Target::Ip(ip) => crate::contract::stored_form(column, ip)?,
                Target::Value { .. } => crate::contract::stored_form(column, value)?,
            };
            let values = match &column.pii {
                Some(pii) => keyring.masks_under_every_key(&pii.associated_data, &stored),
                None => vec![stored],
            };
            Some(Place {
                contract: contract.name.clone(),
                table: contract.table.clone(),
                column: column.name.clone(),
                values,
                shown: contract
                    .columns
                    .iter()
                    .filter(|c| c.pii.is_none())
                    .map(|c| c.name.clone())
                    .collect(),
                order_by: contract
                    .columns
                    .iter()
                    .find(|c| c.pii.is_none() && c.sql_type == "date")
                    .map(|c| c.name.clone()),
            })
        })
        .collect();
    Ok((target, places))
}

/// Whether a quarantined body holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// It does.
    Yes,
    /// It does not.
    No,
    /// It cannot be read (not UTF-8): report it, never skip it silently.
    Undecided,
}

/// How deep JSON text inside JSON strings is opened.
const JSON_DEPTH: u8 = 8;

/// Every string, number and object key of a JSON document, duplicated
/// keys' values included (a map type would keep only the last); None when
/// `text` is not JSON.
fn json_leaves(text: &str) -> Option<Vec<String>> {
    use serde::de::DeserializeSeed;
    let mut leaves = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Leaves(&mut leaves).deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(leaves)
}

/// A serde visitor that collects the leaves of any JSON value.
struct Leaves<'a>(&'a mut Vec<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.0.push(value.to_string());
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.0.push(value.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.0.push(value.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.0.push(value.to_string());
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        while seq.next_element_seed(Leaves(&mut *out))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        while let Some(key) = map.next_key::<String>()? {
            out.push(key);
            map.next_value_seed(Leaves(&mut *out))?;
        }
        Ok(())
    }
}

/// Every IP address written in `text`, canonical: runs of the characters
/// an address is written with (hex digits, `:` and `.`), each as a whole,
/// without a trailing `:port`, and the dotted IPv4 parts inside it (so
/// `abc10.0.0.1` and `10.0.0.1:443` yield 10.0.0.1, `110.0.0.1` does not).
fn ip_tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
        .filter(|run| run.len() >= 2)
        .flat_map(|run| {
            let run = run.trim_matches(|c| c == '.' || c == ':');
            let mut candidates = vec![run.to_string()];
            if let Some((host, port)) = run.rsplit_once(':') {
                if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    candidates.push(host.to_string());
                }
            }
            candidates.extend(
                run.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .map(|part| part.trim_matches('.').to_string()),
            );
            candidates
        })
        .filter_map(|candidate| canonical_ip(&candidate))
}

/// Whether `needle` occurs in `haystack` with no letter or digit right
/// before or after it.
fn contains_token(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_is_looked_for_in_its_canonical_form() {
        assert_eq!(
            Target::ip(" 203.0.113.7 ").unwrap(),
            Target::Ip("203.0.113.7".into())
        );
        assert_eq!(
            Target::ip("::ffff:203.0.113.7").unwrap(),
            Target::Ip("203.0.113.7".into())
        );
        assert_eq!(
            Target::ip("2001:DB8:0:0::1").unwrap(),
            Target::Ip("2001:db8::1".into())
        );
        assert!(Target::ip("203.0.113").is_err());
    }

    fn value(name: &str, value: &str) -> Target {
        Target::Value {
            name: name.into(),
            value: value.into(),
            any_case: false,
        }
    }

    fn holds(target: &Target, body: &str) -> bool {
        target.held_by(body.as_bytes()) == Holding::Yes
    }

    #[test]
    fn a_json_body_holds_the_value_wherever_it_stands() {
        let ip = Target::ip("203.0.113.7").unwrap();
        for body in [
            r#"{"user_id": "u1", "ip": "::ffff:203.0.113.7", "device_id": "d"}"#,
            r#"{"event": {"client": {"addresses": ["10.0.0.1", "203.0.113.7"]}}}"#,
            r#"{"IP": "203.0.113.7"}"#,
            r#"{"ip": "10.0.0.1", "ip": "203.0.113.7"}"#,
            r#"{"Type": "Notification", "Message": "{\"ip\": \"203.0.113.7\"}"}"#,
            r#"{"log": "login from 203.0.113.7 at noon"}"#,
            r#"{"203.0.113.7": true}"#,
        ] {
            assert!(holds(&ip, body), "{body}");
        }
        let v6 = Target::ip("2001:db8::1").unwrap();
        for body in [
            r#"{"ip": "2001:0DB8:0000:0000:0000:0000:0000:0001"}"#,
            "client [2001:DB8::1]:443 refused",
        ] {
            assert!(holds(&v6, body), "{body}");
        }
        let user = value("user_id", "12345");
        assert!(holds(&user, r#"{"user": {"id": 12345}}"#), "a number");
        assert!(!holds(
            &user,
            r#"{"user_id": "123456", "app_version": "1"}"#
        ));
        let device = value("device_id", "593-47-5928");
        assert!(holds(&device, r#"{"d": [{"x": "593-47-5928"}]}"#));
        assert!(!holds(&device, r#"{"device_id": "593-47-59281"}"#));
    }

    #[test]
    fn the_same_text_elsewhere_is_not_this_value() {
        let ip = Target::ip("10.0.0.1").unwrap();
        assert!(!holds(&ip, r#"{"ip": "110.0.0.1", "locale": "10.0.0.15"}"#));
        assert!(!holds(&ip, "ip=10.0.0.15"));
        assert!(!holds(
            &Target::ip("::1").unwrap(),
            "a::1b is not an address"
        ));
    }

    #[test]
    fn a_body_that_is_not_text_is_undecided() {
        let ip = Target::ip("10.0.0.1").unwrap();
        assert_eq!(ip.held_by(&[0xff, 0xfe, 0x00, 0x31]), Holding::Undecided);
    }

    #[test]
    fn other_bodies_hold_the_value_as_a_whole_token() {
        let ip = Target::ip("10.0.0.1").unwrap();
        assert!(holds(&ip, r#"{"ip": "10.0.0.1", "user_id": "#));
        assert!(holds(&ip, "ip=10.0.0.1;"));
        assert!(holds(&ip, "from 10.0.0.1:8080"));
        assert!(holds(&ip, "::FFFF:10.0.0.1 (mapped)"));
        assert!(!holds(&ip, "ip=110.0.0.1"));
        assert!(!holds(&ip, "ip=10.0.0.15"));
        let device = value("device_id", "593-47-5928");
        assert!(holds(&device, r#"[{"device_id": "593-47-5928"}]"#));
        assert!(!holds(&device, "x593-47-5928"));
    }
}
