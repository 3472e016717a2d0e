//! What prepare hands to write: a masked row of a contract's table or a
//! quarantine entry with its reason, for one SQS message, and what
//! recording it did. Domain types: no I/O; `postgres::batch` writes them.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use crate::contract::Cell;

/// Why a body cannot be recorded as a row (the reason code of its
/// quarantine entry). The set is small and fixed so it
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
    /// Matches no contract's `match` (a routed queue).
    UnknownType,
    /// A value not in its column's format: `pattern`, a date, a timestamp,
    /// a uuid, a number in a string.
    BadFormat,
    /// A value outside its column's `enum`.
    BadValue,
    /// A number outside its column's `min`/`max` or its SQL type.
    OutOfRange,
}

impl RejectReason {
    /// Every reason, for docs and metrics.
    pub const ALL: [RejectReason; 15] = [
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
        RejectReason::UnknownType,
        RejectReason::BadFormat,
        RejectReason::BadValue,
        RejectReason::OutOfRange,
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
            RejectReason::UnknownType => "unknown_type",
            RejectReason::BadFormat => "bad_format",
            RejectReason::BadValue => "bad_value",
            RejectReason::OutOfRange => "out_of_range",
        }
    }
}

/// A message that is not a valid event, body sealed with the masking key.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    /// Why (stored as its code, `RejectReason::code`).
    pub reason: RejectReason,
    /// The offending field (login) or column (a contract), if one.
    pub field: Option<Cow<'static, str>>,
    /// When SQS accepted the message.
    pub sent_at: Option<DateTime<Utc>>,
    /// ApproximateReceiveCount at this delivery.
    pub receive_count: Option<i32>,
    /// Id of the key that sealed the body.
    pub key_id: String,
    /// The body, AES-SIV encrypted (nonce || ciphertext).
    pub body_sealed: Vec<u8>,
    /// Length of the original body in bytes.
    pub body_bytes: i32,
    /// What `veil.quarantine.contract` holds: the contract the body was
    /// routed to (`None` for bodies no contract took, and for a contract
    /// that names none, as the built-in login contract).
    pub contract: Option<String>,
}

/// A row of a contract's table, PII already masked, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Index of the contract in the plan.
    pub contract: usize,
    /// One cell per column.
    pub cells: Vec<Cell>,
}

/// What to record for one message.
#[derive(Debug, Clone)]
pub enum Record {
    /// A valid event: a row of its contract's table.
    Row(Row),
    /// Bad input.
    Quarantine(QuarantineEntry),
}

/// One message ready to be written.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// SQS message id: the idempotency key.
    pub message_id: String,
    /// SentTimestamp in milliseconds (0 when the server gave none). The same
    /// for every delivery of a message, so the ledger keys on
    /// `(sent_ms, message_id)`: new keys land at the right edge of its index
    /// instead of on random pages (see `schema.rs`).
    pub sent_ms: i64,
    /// What to record.
    pub record: Record,
}

/// What a committed batch did with one of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Its row is in its contract's table.
    Written,
    /// It is in the quarantine, for this reason.
    Quarantined(RejectReason),
    /// It was recorded before (or twice in this batch): nothing written.
    Duplicate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique() {
        let codes: std::collections::HashSet<_> =
            RejectReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), RejectReason::ALL.len());
    }
}
