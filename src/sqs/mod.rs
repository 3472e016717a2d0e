//! The queue: one `SqsClient` over either SQS wire protocol, each a small
//! signed client of our own (`signer`): the JSON protocol (real AWS,
//! LocalStack 3+), lean where `aws-sdk-sqs` cost most of veil's CPU, and
//! the old query protocol (form-encoded `Action=...`, XML replies, as spoken
//! by the LocalStack 0.x reference image), which the Rust SDK no longer
//! speaks. `detect` picks one.

mod detect;
mod endpoint;
mod json;
mod query;
mod signer;

use std::fmt;

pub use endpoint::{resolve_endpoint, Endpoint};

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

/// One received message. The body is PII: never log it.
#[derive(Clone)]
pub struct QueueMessage {
    /// SQS's message id (stable across redeliveries).
    pub message_id: String,
    /// Handle for deleting or changing visibility of this delivery.
    pub receipt_handle: String,
    /// The raw body.
    pub body: String,
    /// `SentTimestamp`: when the message was sent, in ms since the epoch.
    pub sent_timestamp_ms: Option<i64>,
    /// `ApproximateReceiveCount`: how many times it has been delivered.
    pub receive_count: Option<u32>,
}

impl fmt::Debug for QueueMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMessage")
            .field("message_id", &self.message_id)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What went wrong talking to SQS, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// Worth retrying: connection refused or reset, timeout, 5xx, throttling.
    #[error("SQS unavailable: {0}")]
    Transient(String),
    /// Retrying will not help: no such queue, access denied, bad request.
    #[error("SQS refused the request: {description}")]
    Permanent {
        /// SQS's error code (`QueueDoesNotExist`, `AccessDenied`, ...); empty
        /// when the refusal did not come from SQS.
        code: String,
        /// What was asked and what came back (never a message body).
        description: String,
    },
}

impl SqsError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, SqsError::Transient(_))
    }

    /// A refusal that did not come from SQS itself (no error code).
    pub fn refused(description: String) -> Self {
        SqsError::Permanent {
            code: String::new(),
            description,
        }
    }

    /// SQS's error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            SqsError::Permanent { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }
}

/// Result of a `DeleteMessageBatch`: entries SQS did not delete.
#[derive(Debug, Default)]
pub struct DeleteOutcome {
    /// How many entries SQS confirmed deleted.
    pub deleted: usize,
    /// Message ids not deleted, with SQS's error code (they will be
    /// redelivered and skipped by the ledger).
    pub failed: Vec<(String, String)>,
}

/// Approximate queue depth, from `GetQueueAttributes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// `ApproximateNumberOfMessages`: visible, waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not yet deleted.
    pub in_flight: u64,
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
    pub endpoint_wait: std::time::Duration,
}

impl QueueSettings {
    /// Default wait for an endpoint that is still starting.
    pub const DEFAULT_ENDPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

    /// Settings for `url`, with the default endpoint wait.
    pub fn new(url: &str, protocol: ProtocolChoice) -> Self {
        QueueSettings {
            url: url.to_string(),
            protocol,
            endpoint_wait: Self::DEFAULT_ENDPOINT_WAIT,
        }
    }
}

/// Deadline of any call but a long poll.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most entries SQS accepts in one batch call.
pub const SQS_BATCH_LIMIT: usize = 10;

/// An SQS queue client over the detected protocol.
#[derive(Clone)]
pub struct SqsClient {
    transport: Transport,
    queue_url: String,
}

#[derive(Clone)]
enum Transport {
    Json(json::JsonTransport),
    Query(query::QueryTransport),
}

impl SqsClient {
    /// Resolves endpoint, region and credentials for `queue_url`, picks the
    /// protocol (probing the endpoint when `choice` is auto) and returns a
    /// client. Logs the chosen protocol once.
    pub async fn connect(queue: &QueueSettings) -> anyhow::Result<Self> {
        let (queue_url, choice) = (queue.url.as_str(), queue.protocol);
        let endpoint = resolve_endpoint(queue_url)?;
        let aws = endpoint.load_aws_config().await?;
        let protocol = match choice {
            ProtocolChoice::Json => Protocol::Json,
            ProtocolChoice::Query => Protocol::Query,
            ProtocolChoice::Auto => {
                detect::detect(&endpoint, &aws, queue_url, queue.endpoint_wait).await?
            }
        };
        tracing::info!(
            protocol = %protocol,
            endpoint = %endpoint.display_url(),
            chosen_by = if choice == ProtocolChoice::Auto { "detection" } else { "configuration" },
            "SQS protocol selected"
        );
        let transport = match protocol {
            Protocol::Json => Transport::Json(json::JsonTransport::new(&endpoint, &aws)?),
            Protocol::Query => Transport::Query(query::QueryTransport::new(&endpoint, &aws)?),
        };
        Ok(SqsClient {
            transport,
            queue_url: queue_url.to_string(),
        })
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> Protocol {
        match self.transport {
            Transport::Json(_) => Protocol::Json,
            Transport::Query(_) => Protocol::Query,
        }
    }

    /// The queue this client reads.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Receives up to `request.max_messages` messages (long polling).
    pub async fn receive(&self, request: ReceiveRequest) -> Result<Vec<QueueMessage>, SqsError> {
        match &self.transport {
            Transport::Json(t) => t.receive(&self.queue_url, request).await,
            Transport::Query(t) => t.receive(&self.queue_url, request).await,
        }
    }

    /// Deletes up to ten messages, given as (message id, receipt handle).
    pub async fn delete_batch(&self, entries: &[(&str, &str)]) -> Result<DeleteOutcome, SqsError> {
        debug_assert!(entries.len() <= SQS_BATCH_LIMIT);
        if entries.is_empty() {
            return Ok(DeleteOutcome::default());
        }
        match &self.transport {
            Transport::Json(t) => t.delete_batch(&self.queue_url, entries).await,
            Transport::Query(t) => t.delete_batch(&self.queue_url, entries).await,
        }
    }

    /// Sets the visibility timeout of up to ten held messages, given as
    /// (message id, receipt handle, timeout in seconds). Returns the ids
    /// SQS refused (e.g. already deleted).
    pub async fn extend_visibility(
        &self,
        entries: &[(String, String, i32)],
    ) -> Result<Vec<String>, SqsError> {
        debug_assert!(entries.len() <= SQS_BATCH_LIMIT);
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        match &self.transport {
            Transport::Json(t) => t.change_visibility(&self.queue_url, entries).await,
            Transport::Query(t) => t.change_visibility(&self.queue_url, entries).await,
        }
    }

    /// Sends up to ten bodies; returns how many SQS accepted.
    pub async fn send_batch(&self, bodies: &[String]) -> Result<usize, SqsError> {
        debug_assert!(bodies.len() <= SQS_BATCH_LIMIT);
        match &self.transport {
            Transport::Json(t) => t.send_batch(&self.queue_url, bodies).await,
            Transport::Query(t) => t.send_batch(&self.queue_url, bodies).await,
        }
    }

    /// Approximate number of visible and in-flight messages.
    pub async fn depth(&self) -> Result<QueueDepth, SqsError> {
        match &self.transport {
            Transport::Json(t) => t.depth(&self.queue_url).await,
            Transport::Query(t) => t.depth(&self.queue_url).await,
        }
    }

    /// Whether the queue has a redrive policy (a dead-letter queue takes
    /// over messages received too often).
    pub async fn has_redrive_policy(&self) -> Result<bool, SqsError> {
        match &self.transport {
            Transport::Json(t) => t.redrive_policy(&self.queue_url).await,
            Transport::Query(t) => t.redrive_policy(&self.queue_url).await,
        }
        .map(|policy| policy.is_some_and(|p| !p.trim().is_empty()))
    }

    /// Creates the queue named by the last path segment of this client's
    /// queue URL if it does not exist (idempotent); for `seed` and tests.
    pub async fn create_queue(&self) -> Result<(), SqsError> {
        let name = self
            .queue_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        match &self.transport {
            Transport::Json(t) => t.create_queue(&name).await,
            Transport::Query(t) => t.create_queue(&self.queue_url, &name).await,
        }
    }

    /// Deletes the queue itself (tests clean up with it).
    pub async fn delete_queue(&self) -> Result<(), SqsError> {
        match &self.transport {
            Transport::Json(t) => t.delete_queue(&self.queue_url).await,
            Transport::Query(t) => t.delete_queue(&self.queue_url).await,
        }
    }
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

/// The error for an SQS reply that is not a success: server errors and
/// throttling are transient, anything else is a refusal.
fn refusal(action: &str, status: reqwest::StatusCode, code: &str, message: &str) -> SqsError {
    let description = format!("{action}: HTTP {status} {code} {message}");
    if status.is_server_error() || is_transient_code(code) {
        SqsError::Transient(description)
    } else {
        SqsError::Permanent {
            code: code.to_string(),
            description,
        }
    }
}

/// Error codes that mean "try again later" in either protocol.
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ServiceUnavailable"
            | "InternalError"
            | "InternalFailure"
            | "RequestThrottled"
            | "ThrottlingException"
            | "Throttling"
            | "KmsThrottled"
            | "RequestTimeout"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_timestamp_in_seconds_is_read_as_seconds() {
        assert_eq!(sent_timestamp_ms(1_764_000_000), 1_764_000_000_000);
        assert_eq!(sent_timestamp_ms(1_764_000_000_123), 1_764_000_000_123);
    }
}
