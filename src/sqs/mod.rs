//! The queue: one `SqsClient` over either SQS wire protocol, each a small
//! signed client of our own (`signer`): the JSON protocol (real AWS,
//! LocalStack 3+), lean where `aws-sdk-sqs` cost most of veil's CPU, and
//! the old query protocol (form-encoded `Action=...`, XML replies, as spoken
//! by the LocalStack 0.x reference image), which the Rust SDK no longer
//! speaks. `detect` picks one; `values` holds the typed values that cross
//! this boundary.

mod client;
mod detect;
mod endpoint;
mod error;
pub mod event_source;
mod json;
mod query;
mod signer;
mod values;

pub use client::SqsClient;

/// What a caller that bounds its memory is asked before a receive's reply
/// is read. The reply (up to ten large bodies, escaped: up to six bytes of
/// reply per body byte) is held while the messages are decoded from it, and
/// only its length says how large it is.
pub trait ReplyRoom: Sync {
    /// Waits until the reply may take `bytes` in all. Asked again, with a
    /// larger figure, if a reply grows beyond what it announced.
    fn make_room(&self, bytes: usize) -> futures::future::BoxFuture<'_, ()>;
}

pub use endpoint::{resolve_endpoint, Endpoint};
pub use error::{fix, SqsError};
pub use signer::read_reply;
pub use values::{
    BatchResult, EntryResult, Protocol, ProtocolChoice, QueueDepth, QueueFacts, QueueMessage,
    QueueSettings, Receipt, ReceiveRequest, VisibilityChange, SQS_BATCH_LIMIT,
    SQS_MAX_MESSAGE_BYTES, SQS_MAX_RETENTION_SECS,
};

/// Deadline of any call but a long poll.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
