//! Parse, by a plan: a raw message body becomes a typed row of one
//! contract, or a rejection naming the reason, the contract and the
//! column (never a value). The one boundary where a contract's body is
//! checked; nothing downstream sees unchecked data.
//!
//! The order of checks is the one the login events were checked in before
//! their table was a contract, so the built-in login contract gives the
//! answers it gave (`tests/fixtures/golden/login-parse-answers.jsonl`
//! holds it to 1 500 of them): size, JSON, an object, the route, at least
//! one of the contract's fields present, then the columns, required ones
//! first. Within a column: presence, JSON type, NUL, normalization,
//! `max_chars`, emptiness, `max_bytes`, the type's own format, `pattern`,
//! `enum`, `min`/`max`.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::cell::Cell;
use super::values::{canonical_ip, canonical_uuid, major_version};
use super::{Column, ColumnSource, ColumnType, Contract, Normalize, Plan};
use crate::record::RejectReason;

/// Largest body accepted as an event; a login event is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A body that fits a contract: which one, and its cells in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    /// Index of the contract in the plan.
    pub contract: usize,
    /// One cell per column, in table order.
    pub cells: Vec<Cell>,
}

/// Why a body fits no contract. Never holds a value from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractRejection {
    /// The reason code.
    pub reason: RejectReason,
    /// The contract the body was routed to, when it got that far.
    pub contract: Option<usize>,
    /// The offending column of that contract, when one is to blame.
    pub column: Option<usize>,
}

impl ContractRejection {
    fn whole(reason: RejectReason) -> Self {
        ContractRejection {
            reason,
            contract: None,
            column: None,
        }
    }
}

/// What SQS says of the message, for `sqs:` columns.
#[derive(Debug, Clone, Copy)]
pub struct SqsFacts<'a> {
    /// The message id.
    pub message_id: &'a str,
    /// SentTimestamp (ms), when the server gave one.
    pub sent_ms: Option<i64>,
    /// ApproximateFirstReceiveTimestamp (ms), when the server gave one.
    pub first_receive_ms: Option<i64>,
    /// The message attributes (String and Number), when asked for.
    pub attributes: &'a [(String, String)],
}

/// Parses one body by the plan.
pub fn parse(
    plan: &Plan,
    body: &[u8],
    sqs: SqsFacts<'_>,
) -> Result<ParsedEvent, ContractRejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ContractRejection::whole(RejectReason::TooLarge));
    }
    let mut slots = match plan.paths.extract(body) {
        Some(slots) => slots,
        // Not UTF-8, not JSON, not an object: a `Value` says which.
        None => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|_| ContractRejection::whole(RejectReason::NotJson))?;
            if !value.is_object() {
                return Err(ContractRejection::whole(RejectReason::WrongShape));
            }
            plan.paths.from_value(&value)
        }
    };
    let index = plan
        .contracts
        .iter()
        .position(|contract| routes_here(contract, &slots))
        .ok_or(ContractRejection::whole(RejectReason::UnknownType))?;
    let contract = &plan.contracts[index];
    let reject = |reason, column| ContractRejection {
        reason,
        contract: Some(index),
        column,
    };
    let any_present = contract
        .columns
        .iter()
        .any(|column| column.slot.is_some_and(|slot| slots[slot].is_some()));
    if !any_present {
        return Err(reject(RejectReason::WrongShape, None));
    }
    let mut cells = vec![Cell::Null; contract.columns.len()];
    for &column_index in &contract.check_order {
        let column = &contract.columns[column_index];
        // Moved out of its slot (no copy), unless another column of this
        // contract reads the same pointer.
        let found = column.slot.and_then(|slot| match column.shares_slot {
            true => slots[slot].clone(),
            false => slots[slot].take(),
        });
        cells[column_index] =
            cell_of(column, found, sqs).map_err(|reason| reject(reason, Some(column_index)))?;
    }
    Ok(ParsedEvent {
        contract: index,
        cells,
    })
}

/// A looked-up value as `column` would have stored it before masking
/// (normalized, canonical), or None when the column could not hold it.
/// `veil find --value` and `veil forget --value` mask this form.
pub fn stored_form(column: &Column, value: &str) -> Option<String> {
    let as_json = match serde_json::from_str::<Value>(value) {
        Ok(number @ Value::Number(_)) if column.column_type != ColumnType::Text => number,
        _ => Value::String(value.to_string()),
    };
    let relaxed = Column {
        required: false,
        coerce: true,
        ..column.clone()
    };
    typed(&relaxed, as_json)
        .ok()?
        .mask_input()
        .map(std::borrow::Cow::into_owned)
}

fn routes_here(contract: &Contract, slots: &[Option<Value>]) -> bool {
    match &contract.route {
        None => true,
        Some(route) => {
            slots[route.slot].as_ref().and_then(Value::as_str) == Some(route.equals.as_str())
        }
    }
}

fn cell_of(column: &Column, found: Option<Value>, sqs: SqsFacts<'_>) -> Result<Cell, RejectReason> {
    let found = match &column.source {
        ColumnSource::Body(_) => found,
        ColumnSource::MessageId => return Ok(Cell::Text(sqs.message_id.to_string())),
        ColumnSource::SentTimestamp => return Ok(sent_cell(column.column_type, sqs.sent_ms)),
        ColumnSource::FirstReceiveTimestamp => {
            return Ok(sent_cell(column.column_type, sqs.first_receive_ms))
        }
        ColumnSource::Attribute(name) => {
            let text = sqs.attributes.iter().rev().find(|(n, _)| n == name);
            let value = text.map(|(_, text)| Value::String(text.clone()));
            return match value {
                None if column.required => Err(RejectReason::MissingField),
                None => Ok(Cell::Null),
                Some(value) => typed(
                    &Column {
                        coerce: true,
                        ..column.clone()
                    },
                    value,
                ),
            };
        }
    };
    match found {
        None | Some(Value::Null) if column.required => Err(RejectReason::MissingField),
        None | Some(Value::Null) => Ok(Cell::Null),
        Some(value) => typed(column, value),
    }
}

/// An SQS timestamp as a date, a timestamp or milliseconds. Both
/// timestamps are always requested; "now" only covers a server that omits
/// one (the ledger still prevents a second row), as for login events.
fn sent_cell(column_type: ColumnType, sent_ms: Option<i64>) -> Cell {
    let time = sent_ms
        .filter(|&ms| ms != 0)
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    match column_type {
        ColumnType::Date => Cell::Date(time.date_naive()),
        ColumnType::Bigint => Cell::Integer(time.timestamp_millis()),
        _ => Cell::Timestamp(time),
    }
}

fn typed(column: &Column, value: Value) -> Result<Cell, RejectReason> {
    match column.column_type {
        ColumnType::Jsonb => json_cell(column, &value),
        ColumnType::Boolean => match (value, column.coerce) {
            (Value::Bool(flag), _) => Ok(Cell::Boolean(flag)),
            (Value::String(text), true) if text == "true" || text == "false" => {
                Ok(Cell::Boolean(text == "true"))
            }
            _ => Err(RejectReason::BadType),
        },
        ColumnType::Integer | ColumnType::Bigint | ColumnType::Numeric => {
            number_cell(column, &value)
        }
        _ => {
            let text = checked_text(column, value)?;
            text_cell(column, text)
        }
    }
}

/// The value as a text, through the checks every text-based type shares.
fn checked_text(column: &Column, value: Value) -> Result<String, RejectReason> {
    let raw = match (value, column.coerce) {
        (Value::String(text), _) => text,
        (Value::Number(number), true) => number.to_string(),
        (Value::Bool(flag), true) => flag.to_string(),
        _ => return Err(RejectReason::BadType),
    };
    if raw.contains('\0') {
        return Err(RejectReason::BadChar);
    }
    let text = match column.normalize {
        Normalize::None => raw,
        Normalize::Lowercase => raw.to_lowercase(),
        Normalize::Trim => raw.trim().to_string(),
    };
    if column
        .max_chars
        .is_some_and(|max| text.chars().count() > max)
    {
        return Err(RejectReason::TooLong);
    }
    if column.required && text.is_empty() {
        return Err(RejectReason::MissingField);
    }
    if column.max_bytes.is_some_and(|max| text.len() > max) {
        return Err(RejectReason::TooLong);
    }
    Ok(text)
}

fn text_cell(column: &Column, text: String) -> Result<Cell, RejectReason> {
    match column.column_type {
        ColumnType::Ip => canonical_ip(&text)
            .map(Cell::Text)
            .ok_or(RejectReason::BadIp),
        ColumnType::VersionMajor => major_version(&text)
            .map(|major| Cell::Integer(major.into()))
            .ok_or(RejectReason::BadVersion),
        ColumnType::Date => NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(Cell::Date)
            .map_err(|_| RejectReason::BadFormat),
        ColumnType::Timestamptz => DateTime::parse_from_rfc3339(&text)
            .map(|time| Cell::Timestamp(time.with_timezone(&Utc)))
            .map_err(|_| RejectReason::BadFormat),
        ColumnType::Uuid => canonical_uuid(&text)
            .map(Cell::Text)
            .ok_or(RejectReason::BadFormat),
        _ => {
            if column
                .pattern
                .as_ref()
                .is_some_and(|pattern| !pattern.is_match(&text))
            {
                return Err(RejectReason::BadFormat);
            }
            if column
                .allowed
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&text))
            {
                return Err(RejectReason::BadValue);
            }
            Ok(Cell::Text(text))
        }
    }
}

fn number_cell(column: &Column, value: &Value) -> Result<Cell, RejectReason> {
    let number: serde_json::Number = match (value, column.coerce) {
        (Value::Number(number), _) => number.clone(),
        (Value::String(text), true) => decimal(text).ok_or(RejectReason::BadFormat)?,
        _ => return Err(RejectReason::BadType),
    };
    let as_f64 = number.as_f64().ok_or(RejectReason::OutOfRange)?;
    if column.min.is_some_and(|min| as_f64 < min) || column.max.is_some_and(|max| as_f64 > max) {
        return Err(RejectReason::OutOfRange);
    }
    match column.column_type {
        ColumnType::Numeric => Ok(Cell::Numeric(number.to_string())),
        column_type => {
            let integer = match number.as_i64() {
                Some(integer) => integer,
                None if number.is_u64() => return Err(RejectReason::OutOfRange),
                None => return Err(RejectReason::BadType),
            };
            if column_type == ColumnType::Integer && i32::try_from(integer).is_err() {
                return Err(RejectReason::OutOfRange);
            }
            Ok(Cell::Integer(integer))
        }
    }
}

/// A string that is a JSON number, read as one ("42", "-1.5", "2e3").
fn decimal(text: &str) -> Option<serde_json::Number> {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Number(number)) if !text.trim().is_empty() => Some(number),
        _ => None,
    }
}

fn json_cell(column: &Column, value: &Value) -> Result<Cell, RejectReason> {
    let text = value.to_string();
    if text.contains("\\u0000") {
        return Err(RejectReason::BadChar);
    }
    if column.max_bytes.is_some_and(|max| text.len() > max)
        || column
            .max_chars
            .is_some_and(|max| text.chars().count() > max)
    {
        return Err(RejectReason::TooLong);
    }
    Ok(Cell::Json(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::format::{parse_documents, Source};

    fn plan(text: &str) -> Plan {
        let source = Source {
            origin: "t.yaml".into(),
            text: text.into(),
        };
        let files: Vec<_> = parse_documents(&source)
            .unwrap()
            .into_iter()
            .map(|f| (String::new(), f))
            .collect();
        Plan::compile(&files).unwrap()
    }

    const FACTS: SqsFacts<'static> = SqsFacts {
        message_id: "m-1",
        sent_ms: Some(1_764_000_000_000),
        first_receive_ms: None,
        attributes: &[],
    };

    fn rejection(plan: &Plan, body: &str) -> (&'static str, Option<String>) {
        let rejection = parse(plan, body.as_bytes(), FACTS).unwrap_err();
        let column = rejection.column.map(|c| {
            plan.contracts[rejection.contract.unwrap()].columns[c]
                .name
                .clone()
        });
        (rejection.reason.code(), column)
    }

    const TYPES: &str = r#"
contract: everything
version: 1
columns:
  - {name: id, from: /user/id, type: uuid, required: true}
  - {name: email, from: /user/email, type: text, normalize: lowercase, pii: siv, required: true}
  - {name: plan, from: /plan, type: text, enum: [free, pro]}
  - {name: code, from: /code, type: text, pattern: '[A-Z]{3}', max_chars: 3}
  - {name: age, from: /age, type: integer, min: 0, max: 150}
  - {name: big, from: /big, type: bigint, coerce: true}
  - {name: amount, from: /amount, type: numeric}
  - {name: opted_in, from: /opted_in, type: boolean}
  - {name: born, from: /born, type: date}
  - {name: at, from: /at, type: timestamptz}
  - {name: seen_ip, from: /net/ip, type: ip, pii: hmac}
  - {name: major, from: /app, type: version_major}
  - {name: extra, from: /extra, type: jsonb}
  - {name: received, sqs: sent_timestamp, type: date}
  - {name: message, sqs: message_id, type: text}
"#;

    #[test]
    fn every_type_parses_from_a_nested_body() {
        let plan = plan(TYPES);
        let body = r#"{"user": {"id": "424CDD21-063a-43a7-b91b-7ca1a833afae", "email": "A@B.C"},
            "plan": "pro", "code": "ABC", "age": 41, "big": "9000000000", "amount": 12.50,
            "opted_in": true, "born": "1985-02-03", "at": "2026-12-04T10:00:00+01:00",
            "net": {"ip": "2001:DB8::1"}, "app": "2.3.0", "extra": {"a": [1, 2]}}"#;
        let event = parse(&plan, body.as_bytes(), FACTS).unwrap();
        let expected = vec![
            Cell::Text("424cdd21-063a-43a7-b91b-7ca1a833afae".into()),
            Cell::Text("a@b.c".into()),
            Cell::Text("pro".into()),
            Cell::Text("ABC".into()),
            Cell::Integer(41),
            Cell::Integer(9_000_000_000),
            Cell::Numeric("12.5".into()),
            Cell::Boolean(true),
            Cell::Date(NaiveDate::from_ymd_opt(1985, 2, 3).unwrap()),
            Cell::Timestamp(
                DateTime::parse_from_rfc3339("2026-12-04T09:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            Cell::Text("2001:db8::1".into()),
            Cell::Integer(2),
            Cell::Json(r#"{"a":[1,2]}"#.into()),
            Cell::Date(NaiveDate::from_ymd_opt(2025, 11, 24).unwrap()),
            Cell::Text("m-1".into()),
        ];
        assert_eq!(event.cells, expected);
    }

    #[test]
    fn every_rule_quarantines_with_its_column() {
        let plan = plan(TYPES);
        let base = r#""user": {"id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "email": "a@b.c"}"#;
        let cases: [(&str, &str, &str); 16] = [
            (r#""plan": "gold""#, "bad_value", "plan"),
            (r#""code": "abc""#, "bad_format", "code"),
            (r#""code": "ABCD""#, "too_long", "code"),
            (r#""age": 151"#, "out_of_range", "age"),
            (r#""age": "41""#, "bad_type", "age"),
            (r#""age": 4.5"#, "bad_type", "age"),
            (r#""big": "9x""#, "bad_format", "big"),
            (r#""amount": "12""#, "bad_type", "amount"),
            (r#""opted_in": "true""#, "bad_type", "opted_in"),
            (r#""born": "03/02/1985""#, "bad_format", "born"),
            (r#""at": "yesterday""#, "bad_format", "at"),
            (r#""net": {"ip": "1.2.3.999"}"#, "bad_ip", "seen_ip"),
            (r#""app": "two""#, "bad_version", "major"),
            (r#""code": "A\u0000B""#, "bad_char", "code"),
            (
                r#""user": {"id": "424cdd21-063a-43a7-b91b-7ca1a833afae"}"#,
                "missing_field",
                "email",
            ),
            (
                r#""user": {"id": "not-a-uuid", "email": "a@b.c"}"#,
                "bad_format",
                "id",
            ),
        ];
        for (extra, reason, column) in cases {
            let body = format!("{{{base}, {extra}}}");
            assert_eq!(
                rejection(&plan, &body),
                (reason, Some(column.to_string())),
                "{extra}"
            );
        }
    }

    #[test]
    fn a_routed_queue_sends_each_body_to_its_contract_and_the_rest_to_unknown_type() {
        let plan = plan(
            "contract: signup\nversion: 1\nmatch: {field: /type, equals: signup}\ncolumns: [{name: v, from: /v, type: text}]\n---\n\
             contract: purchase\nversion: 1\nmatch: {field: /type, equals: purchase}\ncolumns: [{name: v, from: /v, type: integer}]\n",
        );
        let signup = parse(&plan, br#"{"type": "signup", "v": "x"}"#, FACTS).unwrap();
        let purchase = parse(&plan, br#"{"type": "purchase", "v": 3}"#, FACTS).unwrap();
        assert_eq!((signup.contract, purchase.contract), (0, 1));
        assert_eq!(
            rejection(&plan, r#"{"type": "refund", "v": 3}"#),
            ("unknown_type", None)
        );
        assert_eq!(rejection(&plan, r#"{"v": 3}"#), ("unknown_type", None));
        assert_eq!(
            rejection(&plan, r#"{"type": "purchase", "w": 3}"#),
            ("wrong_shape", None)
        );
    }
}
