//! Lookup and erasure by value (`veil find`, `veil forget`): what one
//! person's IP, device id or user id looks like in veil's tables. Masks
//! are deterministic, so the value masked under every key of the keyring
//! (both modes) matches its rows without opening any other; a quarantined
//! body holds it if its field says so, or, when the body is not a JSON
//! object, if the value stands in it as a whole token. Pure: no I/O.

use crate::error::ConfigError;
use crate::event::canonical_ip;
use crate::keyring::Keyring;
use crate::mask::Field;
use crate::postgres::privacy::Column;

/// The value looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address, in the canonical form the pipeline masks.
    Ip(String),
    /// A device id, as sent.
    DeviceId(String),
    /// A user id, as sent (stored unmasked).
    UserId(String),
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

    /// A device id or user id target; empty values are refused.
    pub fn text(kind: fn(String) -> Target, flag: &str, value: &str) -> Result<Self, ConfigError> {
        if value.is_empty() {
            return Err(ConfigError(format!("{flag} must not be empty")));
        }
        Ok(kind(value.to_string()))
    }

    /// The field's name, for output and the audit.
    pub fn field_name(&self) -> &'static str {
        match self {
            Target::Ip(_) => "ip",
            Target::DeviceId(_) => "device_id",
            Target::UserId(_) => "user_id",
        }
    }

    /// The `user_logins` column that holds it.
    pub fn column(&self) -> Column {
        match self {
            Target::Ip(_) => Column::MaskedIp,
            Target::DeviceId(_) => Column::MaskedDeviceId,
            Target::UserId(_) => Column::UserId,
        }
    }

    /// The values to match in that column: every mask of the value under
    /// the keyring, or the user id itself.
    pub fn column_values(&self, keyring: &Keyring) -> Vec<String> {
        match self {
            Target::Ip(ip) => keyring.masks_under_every_key(Field::Ip, ip),
            Target::DeviceId(id) => keyring.masks_under_every_key(Field::DeviceId, id),
            Target::UserId(id) => vec![id.clone()],
        }
    }

    /// What the audit records of the search: the field and the value's
    /// mask under the active key (never the PII itself; a user id is
    /// stored as it is, so it is recorded as it is).
    pub fn audit_description(&self, keyring: &Keyring) -> String {
        match self {
            Target::Ip(ip) => format!("masked_ip of {}", keyring.mask(Field::Ip, ip)),
            Target::DeviceId(id) => {
                format!("masked_device_id of {}", keyring.mask(Field::DeviceId, id))
            }
            Target::UserId(id) => format!("user_id = {id}"),
        }
    }

    fn json_field(&self) -> &'static str {
        self.field_name()
    }

    fn value(&self) -> &str {
        match self {
            Target::Ip(value) | Target::DeviceId(value) | Target::UserId(value) => value,
        }
    }

    /// Whether a quarantined body holds the value. A JSON object holds it
    /// in its field (an IP in any spelling); anything else (not JSON, an
    /// array, truncated text) holds it where it stands as a whole token,
    /// not as part of a longer word or number.
    pub fn held_by(&self, body: &[u8]) -> bool {
        let text = String::from_utf8_lossy(body);
        if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&text) {
            return match fields.get(self.json_field()) {
                Some(serde_json::Value::String(found)) => match self {
                    Target::Ip(ip) => canonical_ip(found.trim()).as_deref() == Some(ip.as_str()),
                    _ => found == self.value(),
                },
                _ => false,
            };
        }
        contains_token(&text, self.value())
    }
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

    #[test]
    fn a_json_body_holds_the_value_in_its_field_only() {
        let ip = Target::ip("203.0.113.7").unwrap();
        let body = br#"{"user_id": "u1", "ip": "::ffff:203.0.113.7", "device_id": "d"}"#;
        assert!(ip.held_by(body));
        // The same text in another field is not this person's IP.
        assert!(!ip.held_by(br#"{"ip": "10.0.0.1", "locale": "203.0.113.7"}"#));
        let user = Target::UserId("1".into());
        assert!(!user.held_by(br#"{"user_id": "12", "app_version": "1"}"#));
        assert!(user.held_by(br#"{"user_id": "1", "app_version": "2"}"#));
    }

    #[test]
    fn other_bodies_hold_the_value_as_a_whole_token() {
        let ip = Target::ip("10.0.0.1").unwrap();
        assert!(ip.held_by(br#"{"ip": "10.0.0.1", "user_id": "#));
        assert!(ip.held_by(b"ip=10.0.0.1;"));
        assert!(!ip.held_by(b"ip=110.0.0.1"));
        assert!(!ip.held_by(b"ip=10.0.0.15"));
        let device = Target::DeviceId("593-47-5928".into());
        assert!(device.held_by(br#"[{"device_id": "593-47-5928"}]"#));
        assert!(!device.held_by(b"x593-47-5928"));
    }
}
