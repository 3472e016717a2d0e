//! SQS over the AWS JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.<Action>`,
//! JSON bodies), with a small signed client of our own rather than
//! `aws-sdk-sqs`. Measured on a 20 000-event drain, the SDK's orchestrator
//! (interceptors, type-erased config bags, its own retry and timeout layers
//! around every call) was over 40% of veil's CPU; veil already retries and
//! times out each call itself. Credentials and signing still come from
//! aws-config and aws-sigv4. Covers exactly the calls veil makes.

use std::time::Duration;

use aws_config::SdkConfig;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::signer::Signer;
use super::{
    refusal, DeleteOutcome, Endpoint, QueueDepth, QueueMessage, ReceiveRequest, SqsError,
    CALL_TIMEOUT,
};

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

#[derive(Clone)]
pub(super) struct JsonTransport {
    signer: Signer,
}

impl JsonTransport {
    pub(super) fn new(endpoint: &Endpoint, aws: &SdkConfig) -> anyhow::Result<Self> {
        Ok(JsonTransport {
            signer: Signer::new(aws, &endpoint.origin)?,
        })
    }

    /// Posts one signed action and decodes the reply of a 2xx answer.
    async fn call<T: DeserializeOwned>(
        &self,
        action: &'static str,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, SqsError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| SqsError::refused(format!("{action}: encoding request: {e}")))?;
        let target = target_of(action);
        let signed = [
            ("content-type", JSON_CONTENT_TYPE),
            ("x-amz-target", target.as_str()),
        ];
        let (status, reply) = self.signer.exchange(action, body, &signed, timeout).await?;
        if !status.is_success() {
            let (code, message) = error_of(&reply);
            return Err(refusal(action, status, &code, &message));
        }
        // Replies without a result (DeleteQueue) may have an empty body.
        let reply: &[u8] = if reply.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &reply
        };
        serde_json::from_slice(reply)
            .map_err(|e| SqsError::Transient(format!("{action}: malformed reply from SQS: {e}")))
    }

    pub(super) async fn receive(
        &self,
        queue_url: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<QueueMessage>, SqsError> {
        let call = ReceiveMessage {
            queue_url,
            max_number_of_messages: request.max_messages,
            wait_time_seconds: request.wait_secs,
            visibility_timeout: request.visibility_timeout_secs,
            message_system_attribute_names: ["SentTimestamp", "ApproximateReceiveCount"],
        };
        let timeout = Duration::from_secs(request.wait_secs.max(0) as u64 + 15);
        let reply: ReceiveReply = self.call("ReceiveMessage", &call, timeout).await?;
        Ok(reply
            .messages
            .into_iter()
            .map(|message| QueueMessage {
                message_id: message.message_id,
                receipt_handle: message.receipt_handle,
                body: message.body,
                sent_timestamp_ms: message
                    .attributes
                    .sent_timestamp
                    .and_then(|value| value.parse().ok())
                    .map(super::sent_timestamp_ms),
                receive_count: message
                    .attributes
                    .approximate_receive_count
                    .and_then(|value| value.parse().ok()),
            })
            .collect())
    }

    pub(super) async fn delete_batch(
        &self,
        queue_url: &str,
        entries: &[(&str, &str)],
    ) -> Result<DeleteOutcome, SqsError> {
        let call = Batch {
            queue_url,
            entries: entries
                .iter()
                .enumerate()
                .map(|(index, (_, receipt_handle))| Entry {
                    id: index,
                    receipt_handle: Some(*receipt_handle),
                    ..Entry::default()
                })
                .collect(),
        };
        let reply: BatchReply = self.call("DeleteMessageBatch", &call, CALL_TIMEOUT).await?;
        let failed = reply
            .failed
            .into_iter()
            .map(|failure| {
                let message_id = failure
                    .id
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| entries.get(index))
                    .map_or_else(|| failure.id.clone(), |(id, _)| id.to_string());
                (message_id, failure.code)
            })
            .collect();
        Ok(DeleteOutcome {
            deleted: reply.successful.len(),
            failed,
        })
    }

    pub(super) async fn change_visibility(
        &self,
        queue_url: &str,
        entries: &[(String, String, i32)],
    ) -> Result<Vec<String>, SqsError> {
        let call = Batch {
            queue_url,
            entries: entries
                .iter()
                .enumerate()
                .map(|(index, (_, receipt_handle, timeout_secs))| Entry {
                    id: index,
                    receipt_handle: Some(receipt_handle),
                    visibility_timeout: Some(*timeout_secs),
                    ..Entry::default()
                })
                .collect(),
        };
        let reply: BatchReply = self
            .call("ChangeMessageVisibilityBatch", &call, CALL_TIMEOUT)
            .await?;
        Ok(reply
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
        let call = Batch {
            queue_url,
            entries: bodies
                .iter()
                .enumerate()
                .map(|(index, body)| Entry {
                    id: index,
                    message_body: Some(body),
                    ..Entry::default()
                })
                .collect(),
        };
        let reply: BatchReply = self.call("SendMessageBatch", &call, CALL_TIMEOUT).await?;
        Ok(reply.successful.len())
    }

    async fn attributes(
        &self,
        queue_url: &str,
        names: &[&str],
    ) -> Result<AttributesReply, SqsError> {
        let call = GetQueueAttributes {
            queue_url,
            attribute_names: names,
        };
        self.call("GetQueueAttributes", &call, CALL_TIMEOUT).await
    }

    pub(super) async fn depth(&self, queue_url: &str) -> Result<QueueDepth, SqsError> {
        let names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ];
        let reply = self.attributes(queue_url, &names).await?;
        let count = |name: &str| {
            reply
                .attributes
                .get(name)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(names[0]),
            in_flight: count(names[1]),
        })
    }

    pub(super) async fn redrive_policy(&self, queue_url: &str) -> Result<Option<String>, SqsError> {
        let mut reply = self.attributes(queue_url, &["RedrivePolicy"]).await?;
        Ok(reply.attributes.remove("RedrivePolicy"))
    }

    pub(super) async fn create_queue(&self, name: &str) -> Result<(), SqsError> {
        let call = CreateQueue { queue_name: name };
        let _: IgnoredAny = self.call("CreateQueue", &call, CALL_TIMEOUT).await?;
        Ok(())
    }

    pub(super) async fn delete_queue(&self, queue_url: &str) -> Result<(), SqsError> {
        let call = QueueOnly { queue_url };
        let _: IgnoredAny = self.call("DeleteQueue", &call, CALL_TIMEOUT).await?;
        Ok(())
    }
}

/// `AmazonSQS.<Action>`, the operation header of the JSON protocol.
fn target_of(action: &str) -> String {
    format!("AmazonSQS.{action}")
}

/// The error code and message of a JSON-protocol error reply. `__type` is
/// `namespace#Code`, sometimes followed by `:` and a URL.
fn error_of(reply: &[u8]) -> (String, String) {
    #[derive(Deserialize, Default)]
    struct ErrorReply {
        #[serde(rename = "__type", default)]
        kind: String,
        #[serde(alias = "Message", default)]
        message: String,
    }
    let error: ErrorReply = serde_json::from_slice(reply).unwrap_or_default();
    let code = error.kind.rsplit('#').next().unwrap_or_default();
    let code = code.split(':').next().unwrap_or_default().to_string();
    (code, error.message)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveMessage<'a> {
    queue_url: &'a str,
    max_number_of_messages: i32,
    wait_time_seconds: i32,
    visibility_timeout: i32,
    message_system_attribute_names: [&'static str; 2],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveReply {
    #[serde(default)]
    messages: Vec<WireMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireMessage {
    message_id: String,
    receipt_handle: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    attributes: MessageAttributes,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct MessageAttributes {
    sent_timestamp: Option<String>,
    approximate_receive_count: Option<String>,
}

/// Request of the three batch calls; each entry uses the fields its call needs.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Batch<'a> {
    queue_url: &'a str,
    entries: Vec<Entry<'a>>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    /// The entry's index, as a string on the wire.
    #[serde(serialize_with = "index_as_string")]
    id: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt_handle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_body: Option<&'a str>,
}

fn index_as_string<S: serde::Serializer>(index: &usize, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(index)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchReply {
    #[serde(default)]
    successful: Vec<IgnoredAny>,
    #[serde(default)]
    failed: Vec<BatchFailure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchFailure {
    id: String,
    #[serde(default)]
    code: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueAttributes<'a> {
    queue_url: &'a str,
    attribute_names: &'a [&'a str],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributesReply {
    #[serde(default)]
    attributes: std::collections::HashMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueue<'a> {
    queue_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct QueueOnly<'a> {
    queue_url: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_reply_is_decoded_with_attributes() {
        let reply = br#"{"Messages": [{"MessageId": "m-1", "ReceiptHandle": "r-1",
            "MD5OfBody": "x", "Body": "{\"a\": \"<b> & \u00e9\"}",
            "Attributes": {"SentTimestamp": "1700000000123", "ApproximateReceiveCount": "2",
                           "SenderId": "AIDA"}}]}"#;
        let decoded: ReceiveReply = serde_json::from_slice(reply).unwrap();
        let message = &decoded.messages[0];
        assert_eq!(message.message_id, "m-1");
        assert_eq!(message.receipt_handle, "r-1");
        assert_eq!(message.body, "{\"a\": \"<b> & \u{e9}\"}");
        assert_eq!(
            message.attributes.sent_timestamp.as_deref(),
            Some("1700000000123")
        );
        assert_eq!(
            message.attributes.approximate_receive_count.as_deref(),
            Some("2")
        );
    }

    #[test]
    fn an_empty_queue_replies_without_messages() {
        let decoded: ReceiveReply = serde_json::from_slice(b"{}").unwrap();
        assert!(decoded.messages.is_empty());
    }

    #[test]
    fn batch_entries_carry_only_their_call_fields_and_string_ids() {
        let call = Batch {
            queue_url: "http://q",
            entries: vec![Entry {
                id: 3,
                receipt_handle: Some("r"),
                visibility_timeout: Some(30),
                ..Entry::default()
            }],
        };
        assert_eq!(
            serde_json::to_value(&call).unwrap(),
            serde_json::json!({"QueueUrl": "http://q",
                "Entries": [{"Id": "3", "ReceiptHandle": "r", "VisibilityTimeout": 30}]})
        );
    }

    #[test]
    fn receive_request_names_the_system_attributes() {
        let call = ReceiveMessage {
            queue_url: "http://q",
            max_number_of_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: 60,
            message_system_attribute_names: ["SentTimestamp", "ApproximateReceiveCount"],
        };
        let value = serde_json::to_value(&call).unwrap();
        assert_eq!(value["MaxNumberOfMessages"], 10);
        assert_eq!(
            value["MessageSystemAttributeNames"],
            serde_json::json!(["SentTimestamp", "ApproximateReceiveCount"])
        );
    }

    #[test]
    fn batch_failures_are_decoded() {
        let reply = br#"{"Successful": [{"Id": "0"}],
            "Failed": [{"Id": "1", "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "m"}]}"#;
        let decoded: BatchReply = serde_json::from_slice(reply).unwrap();
        assert_eq!(decoded.successful.len(), 1);
        assert_eq!(
            (
                decoded.failed[0].id.as_str(),
                decoded.failed[0].code.as_str()
            ),
            ("1", "ReceiptHandleIsInvalid")
        );
    }

    #[test]
    fn error_codes_are_read_from_the_type() {
        let (code, message) =
            error_of(br#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "gone"}"#);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("QueueDoesNotExist", "gone")
        );
        let (code, _) = error_of(br#"{"__type": "ThrottlingException:http://internal"}"#);
        assert_eq!(code, "ThrottlingException");
        assert_eq!(error_of(b"<html>").0, "");
    }
}
