//! The typed values at the SQS boundary: what a receive returns, what a
//! delete or a visibility change needs of a delivery (its receipt, never
//! its body), what a batch call did entry by entry, and the checked queue
//! settings every command shares.

use std::fmt;
use std::time::Duration;

/// Most entries SQS accepts in one batch call; the client splits longer
/// lists into calls of this size.
pub const SQS_BATCH_LIMIT: usize = 10;

/// The largest message SQS accepts (1 MiB since August 2025; older queues
/// say 256 KiB in their `MaximumMessageSize`).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Which SQS wire protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolChoice {
    /// Probe the endpoint and use JSON when it speaks it, else query.
    Auto,
    /// AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.*`): AWS, LocalStack 3+.
    Json,
    /// Query protocol (`Action=...`, XML): LocalStack 0.x and 1.x.
    Query,
}

/// The protocol in use once detection is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.0.
    Json,
    /// Query protocol, through veil's own client.
    Query,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Json => "json",
            Protocol::Query => "query",
        })
    }
}

/// Which queue to use and how to reach it: the checked form of the queue
/// options every command shares.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The queue URL (already checked by `resolve_endpoint`).
    pub url: String,
    /// Protocol choice (auto, json, query).
    pub protocol: ProtocolChoice,
    /// At start, how long to keep trying an endpoint that refuses
    /// connections (it may still be starting).
    pub endpoint_wait: Duration,
}

impl QueueSettings {
    /// Default wait for an endpoint that is still starting.
    pub const DEFAULT_ENDPOINT_WAIT: Duration = Duration::from_secs(30);

    /// Settings for `url`, with the default endpoint wait.
    pub fn new(url: &str, protocol: ProtocolChoice) -> Self {
        QueueSettings {
            url: url.to_string(),
            protocol,
            endpoint_wait: Self::DEFAULT_ENDPOINT_WAIT,
        }
    }
}

/// What deleting a delivery or changing its visibility needs: no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// SQS's message id (stable across redeliveries).
    pub message_id: String,
    /// Handle of this delivery.
    pub receipt_handle: String,
}

impl Receipt {
    /// Bytes of heap the receipt holds.
    pub fn heap_bytes(&self) -> usize {
        self.message_id.len() + self.receipt_handle.len()
    }
}

/// One received message. The body is PII: never log it.
#[derive(Clone)]
pub struct QueueMessage {
    /// Its id and this delivery's handle.
    pub receipt: Receipt,
    /// The raw body.
    pub body: String,
    /// `SentTimestamp`: when the message was sent, in ms since the epoch.
    pub sent_timestamp_ms: Option<i64>,
    /// `ApproximateReceiveCount`: how many times it has been delivered.
    pub receive_count: Option<u32>,
    /// `ApproximateFirstReceiveTimestamp`: when it was first received, in
    /// ms since the epoch (the same for every delivery).
    pub first_receive_ms: Option<i64>,
    /// Its message attributes of type String or Number, as (name, value),
    /// when the receive asked for them (a contract reads one). PII like
    /// the body: never log the values.
    pub attributes: Vec<(String, String)>,
}

impl fmt::Debug for QueueMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMessage")
            .field("message_id", &self.receipt.message_id)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A new visibility timeout for one held delivery.
#[derive(Debug, Clone, Copy)]
pub struct VisibilityChange<'a> {
    /// The delivery.
    pub receipt: &'a Receipt,
    /// Seconds from now (AWS) until it is visible again; 0 gives it back.
    pub timeout_secs: i32,
}

/// What a batch call (delete, visibility change) did to one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// SQS did it.
    Done,
    /// SQS refused this entry, with its code (e.g. `ReceiptHandleIsInvalid`).
    Refused(String),
    /// The call carrying this entry failed as a whole (see `BatchResult::error`).
    Unsent,
}

/// An entry's result, where a reply that does not mention it counts as
/// refused.
pub(super) fn unmentioned(result: Option<EntryResult>) -> EntryResult {
    result.unwrap_or_else(|| EntryResult::Refused("NoResult".into()))
}

/// What a batch call did, entry by entry in the order given.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// One result per entry, in input order.
    pub entries: Vec<EntryResult>,
    /// The first error of a call that failed as a whole, if any.
    pub error: Option<super::SqsError>,
}

impl BatchResult {
    /// How many entries SQS did.
    pub fn done(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| **e == EntryResult::Done)
            .count()
    }
}

/// Approximate queue depth, from `GetQueueAttributes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// `ApproximateNumberOfMessages`: visible, waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not yet deleted.
    pub in_flight: u64,
}

/// What veil needs to know about its queue before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFacts {
    /// A redrive policy (dead-letter queue) is set.
    pub has_redrive_policy: bool,
    /// `MaximumMessageSize` in bytes: the largest body a receive can bring.
    pub max_message_bytes: usize,
    /// `MessageRetentionPeriod` in seconds: how long the queue keeps a
    /// message (SQS: 14 days at most), if the server says.
    pub retention_secs: Option<u64>,
}

/// The longest SQS keeps a message: 14 days.
pub const SQS_MAX_RETENTION_SECS: u64 = 14 * 86_400;

impl QueueFacts {
    /// Whether a ledger keeping entries `days` days covers every message
    /// this queue can still deliver (its retention plus a day for the
    /// visibility timeouts and clock skew). Unknown retention counts as
    /// SQS's maximum.
    pub fn ledger_days_suffice(&self, days: u32) -> bool {
        let retention = self.retention_secs.unwrap_or(SQS_MAX_RETENTION_SECS);
        u64::from(days) * 86_400 >= retention + 86_400
    }
}

/// Parameters of one `ReceiveMessage`.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveRequest {
    /// 1 to 10.
    pub max_messages: i32,
    /// Long-poll wait, 0 to 20 seconds.
    pub wait_secs: i32,
    /// How long received messages stay hidden from other consumers.
    pub visibility_timeout_secs: i32,
    /// Ask for the messages' attributes (a contract column reads one).
    pub message_attributes: bool,
    /// Ask for ApproximateFirstReceiveTimestamp (a contract column reads it).
    pub first_receive_time: bool,
}

/// The system attributes veil asks for with every receive.
pub(super) const SYSTEM_ATTRIBUTES: [&str; 2] = ["SentTimestamp", "ApproximateReceiveCount"];

/// The same and the first receive time, when a contract reads it.
pub(super) const SYSTEM_ATTRIBUTES_AND_FIRST_RECEIVE: [&str; 3] = [
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
];

impl ReceiveRequest {
    /// The system attributes this receive asks for.
    pub(super) fn system_attributes(&self) -> &'static [&'static str] {
        if self.first_receive_time {
            &SYSTEM_ATTRIBUTES_AND_FIRST_RECEIVE
        } else {
            &SYSTEM_ATTRIBUTES
        }
    }
}

/// A timestamp attribute in milliseconds: whole milliseconds (SQS,
/// LocalStack 3+), whole seconds, or fractional seconds (LocalStack 0.x
/// sends `1796410161.8687193` for ApproximateFirstReceiveTimestamp).
pub(crate) fn timestamp_ms(text: &str) -> Option<i64> {
    if let Ok(whole) = text.parse::<i64>() {
        return Some(sent_timestamp_ms(whole));
    }
    let value: f64 = text
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    // As for whole values: below 10^11 it can only be seconds.
    Some(if value < 1e11 {
        (value * 1000.0) as i64
    } else {
        value as i64
    })
}

/// `SentTimestamp` in milliseconds. Real SQS and LocalStack 3+ send
/// milliseconds; LocalStack 0.x sends seconds. A value below 10^11 would be
/// a millisecond time in 1973, so it can only be seconds.
pub(crate) fn sent_timestamp_ms(raw: i64) -> i64 {
    if raw < 100_000_000_000 {
        raw.saturating_mul(1000)
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_milliseconds_seconds_or_fractional_seconds_are_read_as_milliseconds() {
        assert_eq!(timestamp_ms("1796410158468"), Some(1_796_410_158_468));
        assert_eq!(timestamp_ms("1796410161"), Some(1_796_410_161_000));
        assert_eq!(timestamp_ms("1796410161.8687193"), Some(1_796_410_161_868));
        assert_eq!(timestamp_ms("soon"), None);
    }

    #[test]
    fn sent_timestamp_in_seconds_is_read_as_seconds() {
        assert_eq!(sent_timestamp_ms(1_764_000_000), 1_764_000_000_000);
        assert_eq!(sent_timestamp_ms(1_764_000_000_123), 1_764_000_000_123);
    }
}
