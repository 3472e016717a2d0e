//! SQS over the AWS JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.<Action>`,
//! JSON bodies), with a small signed client of our own rather than
//! `aws-sdk-sqs`. Measured on a 20 000-event drain, the SDK's orchestrator
//! (interceptors, type-erased config bags, its own retry and timeout layers
//! around every call) was over 40% of veil's CPU; veil already retries and
//! times out each call itself. Credentials come from aws-config; requests
//! are signed by `signer` (SigV4). Covers exactly the calls veil makes;
//! batch calls take at most `SQS_BATCH_LIMIT` entries (the client splits).

use std::collections::HashMap;
use std::time::Duration;

use crate::aws::SdkConfig;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::error::{is_expired_credentials, refusal};
use super::signer::Signer;
#[cfg(test)]
use super::values::SYSTEM_ATTRIBUTES;
use super::values::{sent_timestamp_ms, timestamp_ms};
use super::{
    Endpoint, EntryResult, QueueMessage, Receipt, ReceiveRequest, SqsError, VisibilityChange,
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
        self.call_within(action, request, timeout, None).await
    }

    /// `call`, asking `room` before the reply is read.
    async fn call_within<T: DeserializeOwned>(
        &self,
        action: &'static str,
        request: &impl Serialize,
        timeout: Duration,
        room: Option<&dyn super::ReplyRoom>,
    ) -> Result<T, SqsError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| SqsError::refused(format!("{action}: encoding request: {e}")))?;
        let target = target_of(action);
        let signed = [
            ("content-type", JSON_CONTENT_TYPE),
            ("x-amz-target", target.as_str()),
        ];
        let (status, reply) = self
            .signer
            .exchange_within(action, body, &signed, timeout, room)
            .await?;
        if !status.is_success() {
            let (code, message) = error_of(&reply);
            if is_expired_credentials(&code) {
                self.signer.forget_credentials().await;
            }
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
        room: Option<&dyn super::ReplyRoom>,
    ) -> Result<Vec<QueueMessage>, SqsError> {
        let call = ReceiveMessage {
            queue_url,
            max_number_of_messages: request.max_messages,
            wait_time_seconds: request.wait_secs,
            visibility_timeout: request.visibility_timeout_secs,
            // The current name, and the older one for servers that predate it.
            message_system_attribute_names: request.system_attributes(),
            attribute_names: request.system_attributes(),
            message_attribute_names: request.message_attributes.then_some(["All"]),
        };
        let timeout = Duration::from_secs(request.wait_secs.max(0) as u64 + 15);
        let reply: ReceiveReply = self
            .call_within("ReceiveMessage", &call, timeout, room)
            .await?;
        Ok(reply
            .messages
            .into_iter()
            .map(|message| QueueMessage {
                receipt: Receipt {
                    message_id: message.message_id,
                    receipt_handle: message.receipt_handle,
                },
                body: message.body,
                sent_timestamp_ms: message
                    .attributes
                    .sent_timestamp
                    .and_then(|value| value.parse().ok())
                    .map(sent_timestamp_ms),
                receive_count: message
                    .attributes
                    .approximate_receive_count
                    .and_then(|value| value.parse().ok()),
                first_receive_ms: message
                    .attributes
                    .approximate_first_receive_timestamp
                    .as_deref()
                    .and_then(timestamp_ms),
                attributes: message
                    .message_attributes
                    .into_iter()
                    .filter_map(|(name, value)| value.string_value.map(|text| (name, text)))
                    .collect(),
            })
            .collect())
    }

    pub(super) async fn delete_batch(
        &self,
        queue_url: &str,
        receipts: &[&Receipt],
    ) -> Result<Vec<EntryResult>, SqsError> {
        let call = Batch {
            queue_url,
            entries: receipts
                .iter()
                .enumerate()
                .map(|(index, receipt)| Entry {
                    id: index,
                    receipt_handle: Some(&receipt.receipt_handle),
                    ..Entry::default()
                })
                .collect(),
        };
        let reply: BatchReply = self.call("DeleteMessageBatch", &call, CALL_TIMEOUT).await?;
        Ok(reply.results(receipts.len()))
    }

    pub(super) async fn change_visibility(
        &self,
        queue_url: &str,
        changes: &[VisibilityChange<'_>],
    ) -> Result<Vec<EntryResult>, SqsError> {
        let call = Batch {
            queue_url,
            entries: changes
                .iter()
                .enumerate()
                .map(|(index, change)| Entry {
                    id: index,
                    receipt_handle: Some(&change.receipt.receipt_handle),
                    visibility_timeout: Some(change.timeout_secs),
                    ..Entry::default()
                })
                .collect(),
        };
        let reply: BatchReply = self
            .call("ChangeMessageVisibilityBatch", &call, CALL_TIMEOUT)
            .await?;
        Ok(reply.results(changes.len()))
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

    pub(super) async fn attributes(
        &self,
        queue_url: &str,
        names: &[&str],
    ) -> Result<HashMap<String, String>, SqsError> {
        let call = GetQueueAttributes {
            queue_url,
            attribute_names: names,
        };
        let reply: AttributesReply = self.call("GetQueueAttributes", &call, CALL_TIMEOUT).await?;
        Ok(reply.attributes)
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
    message_system_attribute_names: &'static [&'static str],
    attribute_names: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    message_attribute_names: Option<[&'static str; 1]>,
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
    #[serde(default)]
    message_attributes: std::collections::BTreeMap<String, WireAttribute>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct MessageAttributes {
    sent_timestamp: Option<String>,
    approximate_receive_count: Option<String>,
    approximate_first_receive_timestamp: Option<String>,
}

/// A message attribute: String and Number ones carry `StringValue`
/// (Binary ones are left out).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireAttribute {
    #[serde(default)]
    string_value: Option<String>,
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
    successful: Vec<BatchSuccess>,
    #[serde(default)]
    failed: Vec<BatchFailure>,
}

impl BatchReply {
    /// One result per entry sent (entries are sent with their index as id);
    /// an entry the reply does not mention counts as refused.
    fn results(self, sent: usize) -> Vec<EntryResult> {
        let mut results: Vec<Option<EntryResult>> = vec![None; sent];
        let slot = |id: &str| id.parse::<usize>().ok().filter(|index| *index < sent);
        for success in self.successful {
            if let Some(index) = slot(&success.id) {
                results[index] = Some(EntryResult::Done);
            }
        }
        for failure in self.failed {
            if let Some(index) = slot(&failure.id) {
                results[index] = Some(EntryResult::Refused(failure.code));
            }
        }
        results
            .into_iter()
            .map(super::values::unmentioned)
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchSuccess {
    #[serde(default)]
    id: String,
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
    attributes: HashMap<String, String>,
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
    fn receive_request_names_the_system_attributes_under_both_names() {
        let call = ReceiveMessage {
            queue_url: "http://q",
            max_number_of_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: 60,
            message_system_attribute_names: &SYSTEM_ATTRIBUTES,
            attribute_names: &SYSTEM_ATTRIBUTES,
            message_attribute_names: None,
        };
        let value = serde_json::to_value(&call).unwrap();
        assert_eq!(value["MaxNumberOfMessages"], 10);
        let names = serde_json::json!(["SentTimestamp", "ApproximateReceiveCount"]);
        assert_eq!(value["MessageSystemAttributeNames"], names);
        assert_eq!(value["AttributeNames"], names);
        assert!(
            value.get("MessageAttributeNames").is_none(),
            "only when a contract reads one"
        );
    }

    #[test]
    fn batch_results_line_up_with_the_entries_sent() {
        let reply = br#"{"Successful": [{"Id": "0"}, {"Id": "7"}],
            "Failed": [{"Id": "1", "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "m"}]}"#;
        let decoded: BatchReply = serde_json::from_slice(reply).unwrap();
        assert_eq!(
            decoded.results(3),
            [
                EntryResult::Done,
                EntryResult::Refused("ReceiptHandleIsInvalid".into()),
                EntryResult::Refused("NoResult".into()),
            ]
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
