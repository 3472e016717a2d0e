//! `SqsClient`: one queue, over whichever wire protocol the endpoint speaks
//! (chosen by configuration or by `detect`). Batch calls take any number of
//! entries and are split here into calls of `SQS_BATCH_LIMIT`, sent
//! concurrently, with results lined up with the entries given.

use std::collections::HashMap;

use futures::future::join_all;

use super::{
    detect, json, query, resolve_endpoint, BatchResult, EntryResult, Protocol, ProtocolChoice,
    QueueDepth, QueueFacts, QueueMessage, QueueSettings, Receipt, ReceiveRequest, SqsError,
    VisibilityChange, SQS_BATCH_LIMIT, SQS_MAX_MESSAGE_BYTES,
};

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
    /// Resolves endpoint, region and credentials for the queue, picks the
    /// protocol (probing the endpoint when the choice is auto) and returns
    /// a client. Logs the chosen protocol once.
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
        self.receive_within(request, None).await
    }

    /// `receive`, asking `room` for what the reply takes before reading it.
    pub async fn receive_within(
        &self,
        request: ReceiveRequest,
        room: Option<&dyn super::ReplyRoom>,
    ) -> Result<Vec<QueueMessage>, SqsError> {
        match &self.transport {
            Transport::Json(t) => t.receive(&self.queue_url, request, room).await,
            Transport::Query(t) => t.receive(&self.queue_url, request, room).await,
        }
    }

    /// Deletes these deliveries, in calls of ten sent concurrently.
    pub async fn delete(&self, receipts: &[&Receipt]) -> BatchResult {
        let calls = receipts.chunks(SQS_BATCH_LIMIT).map(|chunk| async move {
            match &self.transport {
                Transport::Json(t) => t.delete_batch(&self.queue_url, chunk).await,
                Transport::Query(t) => t.delete_batch(&self.queue_url, chunk).await,
            }
        });
        gather(
            receipts.chunks(SQS_BATCH_LIMIT).map(<[_]>::len),
            join_all(calls).await,
        )
    }

    /// Sets the visibility timeout of these held deliveries, in calls of
    /// ten sent concurrently.
    pub async fn change_visibility(&self, changes: &[VisibilityChange<'_>]) -> BatchResult {
        let calls = changes.chunks(SQS_BATCH_LIMIT).map(|chunk| async move {
            match &self.transport {
                Transport::Json(t) => t.change_visibility(&self.queue_url, chunk).await,
                Transport::Query(t) => t.change_visibility(&self.queue_url, chunk).await,
            }
        });
        gather(
            changes.chunks(SQS_BATCH_LIMIT).map(<[_]>::len),
            join_all(calls).await,
        )
    }

    /// Sends these bodies in calls of ten, one after another; returns how
    /// many SQS accepted.
    pub async fn send(&self, bodies: &[String]) -> Result<usize, SqsError> {
        let mut sent = 0;
        for chunk in bodies.chunks(SQS_BATCH_LIMIT) {
            sent += match &self.transport {
                Transport::Json(t) => t.send_batch(&self.queue_url, chunk).await?,
                Transport::Query(t) => t.send_batch(&self.queue_url, chunk).await?,
            };
        }
        Ok(sent)
    }

    async fn attributes(&self, names: &[&str]) -> Result<HashMap<String, String>, SqsError> {
        match &self.transport {
            Transport::Json(t) => t.attributes(&self.queue_url, names).await,
            Transport::Query(t) => t.attributes(&self.queue_url, names).await,
        }
    }

    /// Approximate number of visible and in-flight messages.
    pub async fn depth(&self) -> Result<QueueDepth, SqsError> {
        let names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ];
        let attributes = self.attributes(&names).await?;
        let count = |name: &str| attributes.get(name).and_then(|v| v.parse().ok());
        Ok(QueueDepth {
            visible: count(names[0]).unwrap_or(0),
            in_flight: count(names[1]).unwrap_or(0),
        })
    }

    /// The queue's redrive policy and maximum message size: the first call
    /// to the queue itself, so a missing queue or a denied permission shows
    /// here.
    pub async fn facts(&self) -> Result<QueueFacts, SqsError> {
        let attributes = self
            .attributes(&[
                "RedrivePolicy",
                "MaximumMessageSize",
                "MessageRetentionPeriod",
            ])
            .await?;
        Ok(QueueFacts {
            has_redrive_policy: attributes
                .get("RedrivePolicy")
                .is_some_and(|policy| !policy.trim().is_empty()),
            max_message_bytes: attributes
                .get("MaximumMessageSize")
                .and_then(|v| v.parse().ok())
                .filter(|bytes| *bytes > 0)
                .unwrap_or(SQS_MAX_MESSAGE_BYTES),
            retention_secs: attributes
                .get("MessageRetentionPeriod")
                .and_then(|v| v.parse().ok()),
        })
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

/// Lines up the results of calls over consecutive chunks (of the sizes
/// given) into one result per entry; a call that failed marks its entries
/// unsent and keeps the first error.
fn gather(
    sizes: impl Iterator<Item = usize>,
    calls: Vec<Result<Vec<EntryResult>, SqsError>>,
) -> BatchResult {
    let mut result = BatchResult::default();
    for (size, call) in sizes.zip(calls) {
        match call {
            Ok(entries) => result.entries.extend(entries),
            Err(error) => {
                result
                    .entries
                    .extend(std::iter::repeat_n(EntryResult::Unsent, size));
                result.error.get_or_insert(error);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_marks_its_own_entries_unsent_and_keeps_the_first_error() {
        let calls = vec![
            Ok(vec![EntryResult::Done; 10]),
            Err(SqsError::Transient("reset".into())),
            Ok(vec![EntryResult::Refused("X".into())]),
        ];

        let result = gather([10, 10, 1].into_iter(), calls);

        assert_eq!(result.entries.len(), 21);
        assert_eq!(result.done(), 10);
        assert!(result.entries[10..20]
            .iter()
            .all(|e| *e == EntryResult::Unsent));
        assert_eq!(result.entries[20], EntryResult::Refused("X".into()));
        assert!(result.error.is_some_and(|e| e.is_transient()));
    }
}
