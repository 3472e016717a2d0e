//! SQS over the AWS JSON 1.0 protocol, through `aws-sdk-sqs`.

use aws_config::SdkConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use super::{
    is_transient_code, DeleteOutcome, Endpoint, QueueDepth, QueueMessage, ReceiveRequest, SqsError,
};

#[derive(Clone)]
pub(super) struct JsonTransport {
    client: Client,
}

/// Classifies an SDK error: no answer, a 5xx or throttling is transient.
fn classify<E, R>(error: SdkError<E, R>) -> SqsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let description = format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&error));
    match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            SqsError::Transient(description)
        }
        SdkError::ResponseError(_) => SqsError::Transient(description),
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = service.err().message().unwrap_or_default();
            let described = format!("{code}: {message}");
            if is_transient_code(code) {
                SqsError::Transient(described)
            } else {
                SqsError::Permanent(described)
            }
        }
        _ => SqsError::Permanent(description),
    }
}

impl JsonTransport {
    pub(super) fn new(_endpoint: &Endpoint, aws: &SdkConfig) -> Self {
        JsonTransport {
            client: Client::new(aws),
        }
    }

    pub(super) async fn receive(
        &self,
        queue_url: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<QueueMessage>, SqsError> {
        let output = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(request.max_messages)
            .wait_time_seconds(request.wait_secs)
            .visibility_timeout(request.visibility_timeout_secs)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                let attributes = message.attributes.unwrap_or_default();
                let attribute = |name: MessageSystemAttributeName| attributes.get(&name).cloned();
                Some(QueueMessage {
                    sent_timestamp_ms: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|value| value.parse().ok())
                        .map(super::sent_timestamp_ms),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|value| value.parse().ok()),
                    message_id: message.message_id?,
                    receipt_handle: message.receipt_handle?,
                    body: message.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    pub(super) async fn delete_batch(
        &self,
        queue_url: &str,
        entries: &[(String, String)],
    ) -> Result<DeleteOutcome, SqsError> {
        let mut call = self.client.delete_message_batch().queue_url(queue_url);
        for (index, (_, receipt_handle)) in entries.iter().enumerate() {
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(receipt_handle)
                .build()
                .map_err(|e| SqsError::Permanent(e.to_string()))?;
            call = call.entries(entry);
        }
        let output = call.send().await.map_err(classify)?;
        let failed = output
            .failed
            .into_iter()
            .map(|failure| {
                let message_id = failure
                    .id
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| entries.get(index))
                    .map_or_else(|| failure.id.clone(), |(id, _)| id.clone());
                (message_id, failure.code)
            })
            .collect();
        Ok(DeleteOutcome {
            deleted: output.successful.len(),
            failed,
        })
    }

    pub(super) async fn change_visibility(
        &self,
        queue_url: &str,
        entries: &[(String, String, i32)],
    ) -> Result<Vec<String>, SqsError> {
        let mut call = self
            .client
            .change_message_visibility_batch()
            .queue_url(queue_url);
        for (index, (_, receipt_handle, timeout_secs)) in entries.iter().enumerate() {
            let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(receipt_handle)
                .visibility_timeout(*timeout_secs)
                .build()
                .map_err(|e| SqsError::Permanent(e.to_string()))?;
            call = call.entries(entry);
        }
        let output = call.send().await.map_err(classify)?;
        Ok(output
            .failed
            .into_iter()
            .filter_map(|failure| failure.id.parse::<usize>().ok())
            .filter_map(|index| entries.get(index).map(|(id, _, _)| id.clone()))
            .collect())
    }

    pub(super) async fn send_batch(
        &self,
        queue_url: &str,
        bodies: &[String],
    ) -> Result<usize, SqsError> {
        let mut call = self.client.send_message_batch().queue_url(queue_url);
        for (index, body) in bodies.iter().enumerate() {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(body)
                .build()
                .map_err(|e| SqsError::Permanent(e.to_string()))?;
            call = call.entries(entry);
        }
        let output = call.send().await.map_err(classify)?;
        Ok(output.successful.len())
    }

    pub(super) async fn depth(&self, queue_url: &str) -> Result<QueueDepth, SqsError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(classify)?;
        let attributes = output.attributes.unwrap_or_default();
        let count = |name| {
            attributes
                .get(&name)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    pub(super) async fn redrive_policy(&self, queue_url: &str) -> Result<Option<String>, SqsError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .attributes
            .unwrap_or_default()
            .remove(&QueueAttributeName::RedrivePolicy))
    }

    pub(super) async fn create_queue(&self, name: &str) -> Result<(), SqsError> {
        self.client
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn delete_queue(&self, queue_url: &str) -> Result<(), SqsError> {
        self.client
            .delete_queue()
            .queue_url(queue_url)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
