//! The data contract: raw SQS message bodies become validated `LoginEvent`s
//! (parse, don't validate). Anything else becomes a `Rejection` with a reason
//! code from a small fixed set, which the quarantine records.

use std::fmt;

use serde_json::{Map, Value};

use crate::mask::{canonical_ip, MAX_MASKED_VALUE_BYTES};

/// Largest body accepted as an event; a login event is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Column widths of `user_logins`, in characters (varchar counts characters).
pub const USER_ID_MAX_CHARS: usize = 128;
/// Width of `device_type`.
pub const DEVICE_TYPE_MAX_CHARS: usize = 32;
/// Width of `locale`.
pub const LOCALE_MAX_CHARS: usize = 32;

/// A login event whose every field has been checked against the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// The user's id (at most 128 characters).
    pub user_id: String,
    /// Device type, e.g. "android" (at most 32 characters).
    pub device_type: String,
    /// The IP address in canonical text form (PII: mask before storing).
    pub ip: String,
    /// Locale, when the client sent one (at most 32 characters).
    pub locale: Option<String>,
    /// The device id (PII: mask before storing).
    pub device_id: String,
    /// First number of the version string: "2.3.0" -> 2, "0.96" -> 0.
    pub app_version_major: i32,
}

/// Why a body is not a valid login event. The set is small and fixed so it
/// can be a metric label and a stable `reason` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The body is not UTF-8 JSON (or nests too deeply to parse).
    NotJson,
    /// JSON, but not an object with any login-event field.
    WrongShape,
    /// A required field is absent, null or empty.
    MissingField,
    /// A field is not a string (or null, for locale).
    BadType,
    /// A value is longer than its column.
    TooLong,
    /// `ip` is not an IPv4 or IPv6 address.
    BadIp,
    /// `app_version` is not dotted numbers ("2.3.0", "0.96", "2.3").
    BadVersion,
    /// A value holds a character Postgres cannot store (NUL).
    BadChar,
    /// The body is larger than `MAX_BODY_BYTES`.
    TooLarge,
    /// Postgres rejected the row although it passed validation.
    DbRejected,
    /// Delivered more than --max-receives times without being recorded.
    TooManyReceives,
}

impl RejectReason {
    /// Every reason, for docs and metrics.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::NotJson,
        RejectReason::WrongShape,
        RejectReason::MissingField,
        RejectReason::BadType,
        RejectReason::TooLong,
        RejectReason::BadIp,
        RejectReason::BadVersion,
        RejectReason::BadChar,
        RejectReason::TooLarge,
        RejectReason::DbRejected,
        RejectReason::TooManyReceives,
    ];

    /// The stable code stored in `veil.quarantine.reason`.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NotJson => "not_json",
            RejectReason::WrongShape => "wrong_shape",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadType => "bad_type",
            RejectReason::TooLong => "too_long",
            RejectReason::BadIp => "bad_ip",
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadChar => "bad_char",
            RejectReason::TooLarge => "too_large",
            RejectReason::DbRejected => "db_rejected",
            RejectReason::TooManyReceives => "too_many_receives",
        }
    }
}

/// A rejected body: the reason and, where one is to blame, the field name.
/// Never holds a value from the body (it may be PII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason code.
    pub reason: RejectReason,
    /// The offending field, when there is one.
    pub field: Option<&'static str>,
}

impl Rejection {
    fn new(reason: RejectReason, field: &'static str) -> Self {
        Rejection {
            reason,
            field: Some(field),
        }
    }

    fn whole(reason: RejectReason) -> Self {
        Rejection {
            reason,
            field: None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({field})", self.reason.code()),
            None => f.write_str(self.reason.code()),
        }
    }
}

const FIELDS: [&str; 6] = [
    "user_id",
    "app_version",
    "device_type",
    "ip",
    "locale",
    "device_id",
];

/// Parses and validates one message body.
pub fn parse(body: &[u8]) -> Result<LoginEvent, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::whole(RejectReason::TooLarge));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|_| Rejection::whole(RejectReason::NotJson))?;
    let Value::Object(object) = value else {
        return Err(Rejection::whole(RejectReason::WrongShape));
    };
    if !FIELDS.iter().any(|field| object.contains_key(*field)) {
        return Err(Rejection::whole(RejectReason::WrongShape));
    }
    let user_id = required_text(&object, "user_id", USER_ID_MAX_CHARS)?;
    let device_type = required_text(&object, "device_type", DEVICE_TYPE_MAX_CHARS)?;
    let ip_text = required_text(&object, "ip", usize::MAX)?;
    let ip = canonical_ip(&ip_text).ok_or(Rejection::new(RejectReason::BadIp, "ip"))?;
    let device_id = required_text(&object, "device_id", usize::MAX)?;
    if device_id.len() > MAX_MASKED_VALUE_BYTES {
        return Err(Rejection::new(RejectReason::TooLong, "device_id"));
    }
    let version = required_text(&object, "app_version", usize::MAX)?;
    let app_version_major =
        major_version(&version).ok_or(Rejection::new(RejectReason::BadVersion, "app_version"))?;
    let locale = optional_text(&object, "locale", LOCALE_MAX_CHARS)?;
    Ok(LoginEvent {
        user_id,
        device_type,
        ip,
        locale,
        device_id,
        app_version_major,
    })
}

fn optional_text(
    object: &Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<Option<String>, Rejection> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            if text.contains('\0') {
                return Err(Rejection::new(RejectReason::BadChar, field));
            }
            if text.chars().count() > max_chars {
                return Err(Rejection::new(RejectReason::TooLong, field));
            }
            Ok(Some(text.clone()))
        }
        Some(_) => Err(Rejection::new(RejectReason::BadType, field)),
    }
}

fn required_text(
    object: &Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<String, Rejection> {
    match optional_text(object, field, max_chars)? {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(Rejection::new(RejectReason::MissingField, field)),
    }
}

/// The first number of a dotted version of one to four numeric parts:
/// "2.3.0" -> 2, "0.96" -> 0, "2.3" -> 2. Anything else (letters,
/// suffixes, empty parts, a first number beyond i32) is `None`.
pub fn major_version(text: &str) -> Option<i32> {
    let parts: Vec<&str> = text.split('.').collect();
    let well_formed = (1..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return None;
    }
    parts[0].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0",
        "device_type": "android", "ip": "199.172.111.135", "locale": "RU",
        "device_id": "593-47-5928"}"#;

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut object: Map<String, Value> = serde_json::from_str(SAMPLE).unwrap();
        object.insert(field.to_string(), value);
        serde_json::to_vec(&object).unwrap()
    }

    fn without(field: &str) -> Vec<u8> {
        let mut object: Map<String, Value> = serde_json::from_str(SAMPLE).unwrap();
        object.remove(field);
        serde_json::to_vec(&object).unwrap()
    }

    fn reason(body: &[u8]) -> RejectReason {
        parse(body).unwrap_err().reason
    }

    #[test]
    fn sample_event_parses() {
        let event = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(event.user_id, "424cdd21-063a-43a7-b91b-7ca1a833afae");
        assert_eq!(event.device_type, "android");
        assert_eq!(event.ip, "199.172.111.135");
        assert_eq!(event.locale.as_deref(), Some("RU"));
        assert_eq!(event.device_id, "593-47-5928");
        assert_eq!(event.app_version_major, 2);
    }

    #[test]
    fn locale_may_be_null_or_absent() {
        assert_eq!(parse(&with("locale", Value::Null)).unwrap().locale, None);
        assert_eq!(parse(&without("locale")).unwrap().locale, None);
    }

    #[test]
    fn ipv6_is_canonicalized() {
        let event = parse(&with("ip", "2001:DB8:0:0:0:0:0:1".into())).unwrap();
        assert_eq!(event.ip, "2001:db8::1");
    }

    #[test]
    fn version_forms_give_their_first_number() {
        assert_eq!(major_version("2.3.0"), Some(2));
        assert_eq!(major_version("0.96"), Some(0));
        assert_eq!(major_version("2.3"), Some(2));
        assert_eq!(major_version("10"), Some(10));
        for bad in [
            "",
            "2.",
            ".2",
            "2..3",
            "v2.3",
            "2.3.0-beta",
            "1.2.3.4.5",
            "99999999999.1",
            "-1.2",
        ] {
            assert_eq!(major_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_reason_code_is_reachable() {
        assert_eq!(reason(b"not json"), RejectReason::NotJson);
        assert_eq!(
            reason(b"{\"user_id\": \"a\"} trailing"),
            RejectReason::NotJson
        );
        assert_eq!(reason(&[0xff, 0xfe]), RejectReason::NotJson);
        assert_eq!(
            reason(br#"{"foo": "x", "bar": "1"}"#),
            RejectReason::WrongShape
        );
        assert_eq!(reason(b"[1, 2]"), RejectReason::WrongShape);
        assert_eq!(reason(b"\"text\""), RejectReason::WrongShape);
        assert_eq!(reason(&without("ip")), RejectReason::MissingField);
        assert_eq!(
            reason(&with("user_id", Value::Null)),
            RejectReason::MissingField
        );
        assert_eq!(
            reason(&with("device_id", "".into())),
            RejectReason::MissingField
        );
        assert_eq!(
            reason(&with("app_version", 2.into())),
            RejectReason::BadType
        );
        assert_eq!(reason(&with("locale", 7.into())), RejectReason::BadType);
        assert_eq!(
            reason(&with("device_type", "x".repeat(33).into())),
            RejectReason::TooLong
        );
        assert_eq!(
            reason(&with("user_id", "x".repeat(129).into())),
            RejectReason::TooLong
        );
        assert_eq!(
            reason(&with("device_id", "x".repeat(129).into())),
            RejectReason::TooLong
        );
        assert_eq!(reason(&with("ip", "300.1.1.1".into())), RejectReason::BadIp);
        assert_eq!(
            reason(&with("app_version", "two".into())),
            RejectReason::BadVersion
        );
        assert_eq!(
            reason(&with("locale", "R\u{0}U".into())),
            RejectReason::BadChar
        );
        let huge = with("locale", "x".repeat(MAX_BODY_BYTES).into());
        assert_eq!(reason(&huge), RejectReason::TooLarge);
    }

    #[test]
    fn column_limits_count_characters_not_bytes() {
        let thirty_two_wide = "é".repeat(32);
        assert!(parse(&with("device_type", thirty_two_wide.into())).is_ok());
    }

    #[test]
    fn rejection_names_the_field_but_never_the_value() {
        let rejection = parse(&with("ip", "10.0.0.999".into())).unwrap_err();
        assert_eq!(rejection.to_string(), "bad_ip (ip)");
    }

    #[test]
    fn deep_nesting_and_lone_surrogates_are_not_json() {
        let deep = "[".repeat(10_000);
        assert_eq!(reason(deep.as_bytes()), RejectReason::NotJson);
        assert_eq!(reason(br#"{"user_id": "\ud800"}"#), RejectReason::NotJson);
    }

    #[test]
    fn reason_codes_are_unique() {
        let codes: std::collections::HashSet<_> =
            RejectReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), RejectReason::ALL.len());
    }
}
