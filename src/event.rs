//! The data contract: raw SQS message bodies become validated `LoginEvent`s
//! (parse, don't validate). Anything else becomes a `Rejection` with a reason
//! code from a small fixed set, which the quarantine records.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::contract::extract::Skip;
use crate::contract::values::{canonical_ip, major_version};
use crate::contract::MAX_BODY_BYTES;
use crate::mask::MAX_MASKED_VALUE_BYTES;
use crate::record::RejectReason;

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

/// Parses and validates one message body.
///
/// The common case, an object of strings, is read straight into borrowed
/// fields. Anything that path cannot read (not an object, invalid JSON) is
/// read again into a `serde_json::Value`, which decides the reason. Both
/// paths give the same answer; a test and the fuzz target hold them to it.
pub fn parse(body: &[u8]) -> Result<LoginEvent, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::whole(RejectReason::TooLarge));
    }
    // The whole body must be UTF-8: serde_json checks the strings it
    // returns, but not those it skips (values of other keys).
    let Ok(text) = std::str::from_utf8(body) else {
        return parse_as_value(body);
    };
    match serde_json::from_str::<Fields<'_>>(text) {
        Ok(fields) => validate(&fields),
        Err(_) => parse_as_value(body),
    }
}

/// `parse` through the generic `serde_json::Value` path alone: the
/// reference the fast path is tested and fuzzed against.
#[doc(hidden)]
pub fn parse_generic(body: &[u8]) -> Result<LoginEvent, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::whole(RejectReason::TooLarge));
    }
    parse_as_value(body)
}

/// The slow path: the body as a generic JSON value.
fn parse_as_value(body: &[u8]) -> Result<LoginEvent, Rejection> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| Rejection::whole(RejectReason::NotJson))?;
    let Value::Object(object) = value else {
        return Err(Rejection::whole(RejectReason::WrongShape));
    };
    validate(&Fields::of_object(&object))
}

/// A login-event field as found in the body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Slot<'a> {
    /// Not in the body.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A string (borrowed from the body when it had no escapes).
    Text(Cow<'a, str>),
    /// A number, boolean, array or object.
    Other,
}

impl<'a> Slot<'a> {
    fn of_value(value: Option<&'a Value>) -> Self {
        match value {
            None => Slot::Absent,
            Some(Value::Null) => Slot::Null,
            Some(Value::String(text)) => Slot::Text(Cow::Borrowed(text)),
            Some(_) => Slot::Other,
        }
    }
}

/// The six fields of the contract; other keys are ignored. A repeated key
/// counts by its last value, as in `serde_json::Value`.
#[derive(Debug, Default)]
struct Fields<'a> {
    user_id: Slot<'a>,
    app_version: Slot<'a>,
    device_type: Slot<'a>,
    ip: Slot<'a>,
    locale: Slot<'a>,
    device_id: Slot<'a>,
}

impl<'a> Fields<'a> {
    fn of_object(object: &'a Map<String, Value>) -> Self {
        let mut fields = Fields::default();
        for (key, value) in object {
            if let Some(slot) = fields.slot(Key::of(key)) {
                *slot = Slot::of_value(Some(value));
            }
        }
        fields
    }

    fn slot(&mut self, key: Key) -> Option<&mut Slot<'a>> {
        Some(match key {
            Key::UserId => &mut self.user_id,
            Key::AppVersion => &mut self.app_version,
            Key::DeviceType => &mut self.device_type,
            Key::Ip => &mut self.ip,
            Key::Locale => &mut self.locale,
            Key::DeviceId => &mut self.device_id,
            Key::Other => return None,
        })
    }
}

/// An object key, read without copying it.
#[derive(Clone, Copy)]
enum Key {
    UserId,
    AppVersion,
    DeviceType,
    Ip,
    Locale,
    DeviceId,
    Other,
}

impl Key {
    fn of(key: &str) -> Key {
        match key {
            "user_id" => Key::UserId,
            "app_version" => Key::AppVersion,
            "device_type" => Key::DeviceType,
            "ip" => Key::Ip,
            "locale" => Key::Locale,
            "device_id" => Key::DeviceId,
            _ => Key::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(Key::of(key))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

fn validate(fields: &Fields<'_>) -> Result<LoginEvent, Rejection> {
    let all = [
        &fields.user_id,
        &fields.app_version,
        &fields.device_type,
        &fields.ip,
        &fields.locale,
        &fields.device_id,
    ];
    if all.iter().all(|slot| **slot == Slot::Absent) {
        return Err(Rejection::whole(RejectReason::WrongShape));
    }
    let user_id = required_text(&fields.user_id, "user_id", USER_ID_MAX_CHARS)?;
    let device_type = required_text(&fields.device_type, "device_type", DEVICE_TYPE_MAX_CHARS)?;
    let ip_text = required_text(&fields.ip, "ip", usize::MAX)?;
    let ip = canonical_ip(ip_text).ok_or(Rejection::new(RejectReason::BadIp, "ip"))?;
    let device_id = required_text(&fields.device_id, "device_id", usize::MAX)?;
    if device_id.len() > MAX_MASKED_VALUE_BYTES {
        return Err(Rejection::new(RejectReason::TooLong, "device_id"));
    }
    let version = required_text(&fields.app_version, "app_version", usize::MAX)?;
    let app_version_major =
        major_version(version).ok_or(Rejection::new(RejectReason::BadVersion, "app_version"))?;
    let locale = optional_text(&fields.locale, "locale", LOCALE_MAX_CHARS)?;
    Ok(LoginEvent {
        user_id: user_id.to_string(),
        device_type: device_type.to_string(),
        ip,
        locale: locale.map(str::to_string),
        device_id: device_id.to_string(),
        app_version_major,
    })
}

fn optional_text<'s>(
    slot: &'s Slot<'_>,
    field: &'static str,
    max_chars: usize,
) -> Result<Option<&'s str>, Rejection> {
    match slot {
        Slot::Absent | Slot::Null => Ok(None),
        Slot::Text(text) => {
            if text.contains('\0') {
                return Err(Rejection::new(RejectReason::BadChar, field));
            }
            if text.chars().count() > max_chars {
                return Err(Rejection::new(RejectReason::TooLong, field));
            }
            Ok(Some(text))
        }
        Slot::Other => Err(Rejection::new(RejectReason::BadType, field)),
    }
}

fn required_text<'s>(
    slot: &'s Slot<'_>,
    field: &'static str,
    max_chars: usize,
) -> Result<&'s str, Rejection> {
    match optional_text(slot, field, max_chars)? {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(Rejection::new(RejectReason::MissingField, field)),
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match fields.slot(key) {
                        Some(slot) => *slot = map.next_value()?,
                        None => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        // Only an object: a derived struct would also take an array.
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Slot<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SlotVisitor;
        impl<'de> Visitor<'de> for SlotVisitor {
            type Value = Slot<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Slot::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Slot::Text(Cow::Owned(text.to_string())))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(Slot::Text(Cow::Owned(text)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Slot::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Slot::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Slot::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Slot::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Slot::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Slot::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Skip::visit_seq(seq).map(|_| Slot::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Skip::visit_map(map).map(|_| Slot::Other)
            }
        }
        deserializer.deserialize_any(SlotVisitor)
    }
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

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_generic_one(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "user_id", "app_version", "device_type", "ip", "locale", "device_id",
                        "user_\\u0069d", "other", "",
                    ]),
                    proptest::sample::select(vec![
                        r#""2.3.0""#, r#""android""#, r#""10.0.0.1""#, r#""::FFFF:1.2.3.4""#,
                        r#""RU""#, r#""""#, r#""a\"b""#, r#""\u00e9t\u00e9""#, r#""R\u0000U""#,
                        "null", "7", "true", "[1, [2]]", r#"{"ip": "1.1.1.1"}"#,
                        "1e999", "[1e999]", r#"{"a": 55555e556}"#, "-0", "18446744073709551616",
                    ]),
                ),
                0..9,
            ),
            top_level in proptest::sample::select(vec!["object", "array", "truncated"]),
        ) {
            let members: Vec<String> = entries
                .iter()
                .map(|(key, value)| format!(r#""{key}": {value}"#))
                .collect();
            let body = match top_level {
                "object" => format!("{{{}}}", members.join(", ")),
                "array" => format!("[{}]", entries.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(", ")),
                _ => format!("{{{}", members.join(", ")),
            };
            proptest::prop_assert_eq!(parse(body.as_bytes()), parse_generic(body.as_bytes()), "{}", body);
        }
    }

    #[test]
    fn invalid_utf8_in_a_skipped_value_is_not_json_on_both_paths() {
        // Found by the fuzz target: the fast path skipped the bad string.
        let mut body = br#"{"other": "ab"#.to_vec();
        body.extend_from_slice(&[0xcc, 0xc9]);
        body.extend_from_slice(br#"", "user_id": "u"}"#);
        assert_eq!(reason(&body), RejectReason::NotJson);
        assert_eq!(parse(&body), parse_generic(&body));
    }

    #[test]
    fn a_number_out_of_range_is_not_json_on_both_paths() {
        // Found by the fuzz target: skipped numbers were not converted.
        for body in [
            &br#"{"usedevd": 55555e556}"#[..],
            br#"{"user_id": [1e999]}"#,
            br#"{"x": {"y": -1e400}, "ip": "1.2.3.4"}"#,
        ] {
            assert_eq!(reason(body), RejectReason::NotJson);
            assert_eq!(parse(body), parse_generic(body));
        }
    }

    #[test]
    fn a_repeated_key_counts_by_its_last_value_on_both_paths() {
        let body = br#"{"user_id": "first", "user_id": "last", "app_version": "1",
            "device_type": "ios", "ip": "1.2.3.4", "device_id": "d"}"#;
        assert_eq!(parse(body).unwrap().user_id, "last");
        assert_eq!(parse(body), parse_generic(body));
    }
}
