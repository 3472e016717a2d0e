//! SQS over the query protocol: form-encoded `Action=...` POSTs signed with
//! SigV4, XML replies. Written by hand because the AWS SDK for Rust only
//! speaks JSON, and old LocalStack (the reference image) only speaks this.
//! Covers exactly the calls veil makes; batch calls take at most
//! `SQS_BATCH_LIMIT` entries (the client splits).

use std::collections::HashMap;
use std::time::Duration;

use crate::aws::SdkConfig;

use super::error::{is_expired_credentials, refusal};
use super::signer::Signer;
use super::values::{sent_timestamp_ms, timestamp_ms};
use super::{
    Endpoint, EntryResult, QueueMessage, Receipt, ReceiveRequest, SqsError, VisibilityChange,
    CALL_TIMEOUT,
};

const API_VERSION: &str = "2012-11-05";
pub(super) const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

#[derive(Clone)]
pub(super) struct QueryTransport {
    signer: Signer,
}

/// A parsed query-protocol reply.
type Reply = String;

impl QueryTransport {
    pub(super) fn new(endpoint: &Endpoint, aws: &SdkConfig) -> anyhow::Result<Self> {
        Ok(QueryTransport {
            signer: Signer::new(aws, &endpoint.origin)?,
        })
    }

    /// Posts one signed action and returns the XML of a 200 reply.
    async fn call(
        &self,
        action: &str,
        params: &[(String, String)],
        timeout: Duration,
    ) -> Result<Reply, SqsError> {
        self.call_within(action, params, timeout, None).await
    }

    /// `call`, asking `room` before the reply is read.
    async fn call_within(
        &self,
        action: &str,
        params: &[(String, String)],
        timeout: Duration,
        room: Option<&dyn super::ReplyRoom>,
    ) -> Result<Reply, SqsError> {
        let body = form_body(action, params);
        let (status, reply) = self
            .signer
            .exchange_within(
                action,
                body.into_bytes(),
                &[("content-type", FORM_CONTENT_TYPE)],
                timeout,
                room,
            )
            .await?;
        // The reply's own buffer becomes the text (a copy only if it is
        // not UTF-8): a receive's reply is held once, not twice.
        let text = String::from_utf8(Vec::from(reply))
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
        if status.is_success() {
            return Ok(text);
        }
        let code = first_text(&text, "Code").unwrap_or_default();
        let message = first_text(&text, "Message").unwrap_or_default();
        if is_expired_credentials(&code) {
            self.signer.forget_credentials().await;
        }
        Err(refusal(action, status, &code, &message))
    }

    pub(super) async fn receive(
        &self,
        queue_url: &str,
        request: ReceiveRequest,
        room: Option<&dyn super::ReplyRoom>,
    ) -> Result<Vec<QueueMessage>, SqsError> {
        let mut params = vec![
            ("QueueUrl".to_string(), queue_url.to_string()),
            (
                "MaxNumberOfMessages".into(),
                request.max_messages.to_string(),
            ),
            ("WaitTimeSeconds".into(), request.wait_secs.to_string()),
            (
                "VisibilityTimeout".into(),
                request.visibility_timeout_secs.to_string(),
            ),
        ];
        // The current name, and the older one that LocalStack 0.x reads.
        for (index, name) in request.system_attributes().iter().enumerate() {
            let n = index + 1;
            params.push((format!("MessageSystemAttributeName.{n}"), name.to_string()));
            params.push((format!("AttributeName.{n}"), name.to_string()));
        }
        if request.message_attributes {
            params.push(("MessageAttributeName.1".into(), "All".into()));
        }
        let timeout = Duration::from_secs(request.wait_secs.max(0) as u64 + 15);
        let reply = self
            .call_within("ReceiveMessage", &params, timeout, room)
            .await?;
        parse_messages(&reply)
    }

    pub(super) async fn delete_batch(
        &self,
        queue_url: &str,
        receipts: &[&Receipt],
    ) -> Result<Vec<EntryResult>, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, receipt) in receipts.iter().enumerate() {
            let prefix = format!("DeleteMessageBatchRequestEntry.{}", index + 1);
            params.push((format!("{prefix}.Id"), index.to_string()));
            params.push((
                format!("{prefix}.ReceiptHandle"),
                receipt.receipt_handle.clone(),
            ));
        }
        let reply = self
            .call("DeleteMessageBatch", &params, CALL_TIMEOUT)
            .await?;
        batch_results(&reply, "DeleteMessageBatchResultEntry", receipts.len())
    }

    pub(super) async fn change_visibility(
        &self,
        queue_url: &str,
        changes: &[VisibilityChange<'_>],
    ) -> Result<Vec<EntryResult>, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, change) in changes.iter().enumerate() {
            let prefix = format!("ChangeMessageVisibilityBatchRequestEntry.{}", index + 1);
            params.push((format!("{prefix}.Id"), index.to_string()));
            params.push((
                format!("{prefix}.ReceiptHandle"),
                change.receipt.receipt_handle.clone(),
            ));
            params.push((
                format!("{prefix}.VisibilityTimeout"),
                change.timeout_secs.to_string(),
            ));
        }
        let reply = self
            .call("ChangeMessageVisibilityBatch", &params, CALL_TIMEOUT)
            .await?;
        batch_results(
            &reply,
            "ChangeMessageVisibilityBatchResultEntry",
            changes.len(),
        )
    }

    pub(super) async fn send_batch(
        &self,
        queue_url: &str,
        bodies: &[String],
    ) -> Result<usize, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, body) in bodies.iter().enumerate() {
            let prefix = format!("SendMessageBatchRequestEntry.{}", index + 1);
            params.push((format!("{prefix}.Id"), index.to_string()));
            params.push((format!("{prefix}.MessageBody"), body.clone()));
        }
        let reply = self.call("SendMessageBatch", &params, CALL_TIMEOUT).await?;
        let document = parse_xml(&reply)?;
        Ok(elements(&document, "SendMessageBatchResultEntry").count())
    }

    pub(super) async fn attributes(
        &self,
        queue_url: &str,
        names: &[&str],
    ) -> Result<HashMap<String, String>, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, name) in names.iter().enumerate() {
            params.push((format!("AttributeName.{}", index + 1), name.to_string()));
        }
        let reply = self
            .call("GetQueueAttributes", &params, CALL_TIMEOUT)
            .await?;
        let document = parse_xml(&reply)?;
        Ok(elements(&document, "Attribute")
            .filter_map(|a| Some((child_text(a, "Name")?, child_text(a, "Value")?)))
            .collect())
    }

    pub(super) async fn create_queue(&self, _queue_url: &str, name: &str) -> Result<(), SqsError> {
        let params = [("QueueName".to_string(), name.to_string())];
        self.call("CreateQueue", &params, CALL_TIMEOUT).await?;
        Ok(())
    }

    pub(super) async fn delete_queue(&self, queue_url: &str) -> Result<(), SqsError> {
        let params = [("QueueUrl".to_string(), queue_url.to_string())];
        self.call("DeleteQueue", &params, CALL_TIMEOUT).await?;
        Ok(())
    }
}

/// The form-encoded body of an action. (The serializer is not `Send`, so it
/// must not live across an await.)
pub(super) fn form_body(action: &str, params: &[(String, String)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action);
    form.append_pair("Version", API_VERSION);
    for (name, value) in params {
        form.append_pair(name, value);
    }
    form.finish()
}

fn parse_xml(text: &str) -> Result<roxmltree::Document<'_>, SqsError> {
    roxmltree::Document::parse(text)
        .map_err(|e| SqsError::Transient(format!("malformed XML reply from SQS: {e}")))
}

fn elements<'a, 'input>(
    document: &'a roxmltree::Document<'input>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    document
        .descendants()
        .filter(move |node| node.is_element() && node.tag_name().name() == name)
}

/// All text under a node, entities decoded (bodies arrive entity-escaped).
fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    node.children()
        .find(|child| child.is_element() && child.tag_name().name() == name)
        .map(text_of)
}

/// Text of the first element called `name` anywhere in `xml`, if it parses.
pub(super) fn first_text(xml: &str, name: &'static str) -> Option<String> {
    let document = roxmltree::Document::parse(xml).ok()?;
    let found = elements(&document, name).next().map(text_of);
    found
}

/// One result per entry sent (with its index as id): `success_tag` entries
/// are done, `BatchResultErrorEntry` ones refused; an entry the reply does
/// not mention counts as refused.
fn batch_results(
    reply: &str,
    success_tag: &'static str,
    sent: usize,
) -> Result<Vec<EntryResult>, SqsError> {
    let document = parse_xml(reply)?;
    let mut results: Vec<Option<EntryResult>> = vec![None; sent];
    let slot = |node: roxmltree::Node<'_, '_>| {
        child_text(node, "Id")?
            .parse::<usize>()
            .ok()
            .filter(|index| *index < sent)
    };
    for node in elements(&document, success_tag) {
        if let Some(index) = slot(node) {
            results[index] = Some(EntryResult::Done);
        }
    }
    for node in elements(&document, "BatchResultErrorEntry") {
        if let Some(index) = slot(node) {
            let code = child_text(node, "Code").unwrap_or_default();
            results[index] = Some(EntryResult::Refused(code));
        }
    }
    Ok(results
        .into_iter()
        .map(super::values::unmentioned)
        .collect())
}

fn parse_messages(reply: &str) -> Result<Vec<QueueMessage>, SqsError> {
    let document = parse_xml(reply)?;
    let mut messages = Vec::new();
    for node in elements(&document, "Message") {
        let (Some(message_id), Some(receipt_handle)) = (
            child_text(node, "MessageId"),
            child_text(node, "ReceiptHandle"),
        ) else {
            continue;
        };
        let mut message = QueueMessage {
            receipt: Receipt {
                message_id,
                receipt_handle,
            },
            body: child_text(node, "Body").unwrap_or_default(),
            sent_timestamp_ms: None,
            receive_count: None,
            first_receive_ms: None,
            attributes: Vec::new(),
        };
        for attribute in node
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Attribute")
        {
            let value = child_text(attribute, "Value");
            match child_text(attribute, "Name").as_deref() {
                Some("SentTimestamp") => {
                    message.sent_timestamp_ms =
                        value.and_then(|v| v.parse().ok()).map(sent_timestamp_ms)
                }
                Some("ApproximateReceiveCount") => {
                    message.receive_count = value.and_then(|v| v.parse().ok())
                }
                Some("ApproximateFirstReceiveTimestamp") => {
                    message.first_receive_ms = value.as_deref().and_then(timestamp_ms)
                }
                _ => {}
            }
        }
        for attribute in node
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "MessageAttribute")
        {
            let value = attribute
                .children()
                .find(|c| c.is_element() && c.tag_name().name() == "Value")
                .and_then(|value| child_text(value, "StringValue"));
            if let (Some(name), Some(value)) = (child_text(attribute, "Name"), value) {
                message.attributes.push((name, value));
            }
        }
        messages.push(message);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_reply_is_parsed_with_entities_decoded() {
        let reply = r#"<?xml version="1.0"?><ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><ReceiveMessageResult><Message><MessageId>m-1</MessageId><ReceiptHandle>r-1</ReceiptHandle><MD5OfBody>x</MD5OfBody><Body>{&quot;a&quot;: &quot;&lt;b&gt; &amp; c&quot;}</Body><Attribute><Name>SentTimestamp</Name><Value>1700000000123</Value></Attribute><Attribute><Name>ApproximateReceiveCount</Name><Value>2</Value></Attribute></Message></ReceiveMessageResult><ResponseMetadata><RequestId>q</RequestId></ResponseMetadata></ReceiveMessageResponse>"#;
        let messages = parse_messages(reply).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].receipt.message_id, "m-1");
        assert_eq!(messages[0].receipt.receipt_handle, "r-1");
        assert_eq!(messages[0].body, r#"{"a": "<b> & c"}"#);
        assert_eq!(messages[0].sent_timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(messages[0].receive_count, Some(2));
    }

    #[test]
    fn empty_receive_reply_has_no_messages() {
        let reply = "<ReceiveMessageResponse><ReceiveMessageResult/></ReceiveMessageResponse>";
        assert!(parse_messages(reply).unwrap().is_empty());
    }

    #[test]
    fn batch_results_line_up_with_the_entries_sent() {
        let reply = "<DeleteMessageBatchResponse><DeleteMessageBatchResult>\
            <DeleteMessageBatchResultEntry><Id>1</Id></DeleteMessageBatchResultEntry>\
            <BatchResultErrorEntry><Id>0</Id><Code>ReceiptHandleIsInvalid</Code></BatchResultErrorEntry>\
            </DeleteMessageBatchResult></DeleteMessageBatchResponse>";
        assert_eq!(
            batch_results(reply, "DeleteMessageBatchResultEntry", 3).unwrap(),
            [
                EntryResult::Refused("ReceiptHandleIsInvalid".into()),
                EntryResult::Done,
                EntryResult::Refused("NoResult".into()),
            ]
        );
    }

    #[test]
    fn error_reply_code_is_found() {
        let reply = "<ErrorResponse><Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>no</Message></Error></ErrorResponse>";
        assert_eq!(
            first_text(reply, "Code").as_deref(),
            Some("AWS.SimpleQueueService.NonExistentQueue")
        );
    }
}
