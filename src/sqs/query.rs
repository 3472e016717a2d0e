//! SQS over the query protocol: form-encoded `Action=...` POSTs signed with
//! SigV4, XML replies. Written by hand because the AWS SDK for Rust only
//! speaks JSON, and old LocalStack (the reference image) only speaks this.
//! Covers exactly the calls veil makes.

use std::time::Duration;

use aws_config::SdkConfig;

use super::signer::Signer;
use super::{
    refusal, DeleteOutcome, Endpoint, QueueDepth, QueueMessage, ReceiveRequest, SqsError,
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
        let body = form_body(action, params);
        let (status, reply) = self
            .signer
            .exchange(
                action,
                body.into_bytes(),
                &[("content-type", FORM_CONTENT_TYPE)],
                timeout,
            )
            .await?;
        let text = String::from_utf8_lossy(&reply).into_owned();
        if status.is_success() {
            return Ok(text);
        }
        let code = first_text(&text, "Code").unwrap_or_default();
        let message = first_text(&text, "Message").unwrap_or_default();
        Err(refusal(action, status, &code, &message))
    }

    pub(super) async fn receive(
        &self,
        queue_url: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<QueueMessage>, SqsError> {
        let params = vec![
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
            ("AttributeName.1".into(), "SentTimestamp".into()),
            ("AttributeName.2".into(), "ApproximateReceiveCount".into()),
        ];
        let timeout = Duration::from_secs(request.wait_secs.max(0) as u64 + 15);
        let reply = self.call("ReceiveMessage", &params, timeout).await?;
        parse_messages(&reply)
    }

    pub(super) async fn delete_batch(
        &self,
        queue_url: &str,
        entries: &[(&str, &str)],
    ) -> Result<DeleteOutcome, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, (_, receipt_handle)) in entries.iter().enumerate() {
            let prefix = format!("DeleteMessageBatchRequestEntry.{}", index + 1);
            params.push((format!("{prefix}.Id"), index.to_string()));
            params.push((
                format!("{prefix}.ReceiptHandle"),
                receipt_handle.to_string(),
            ));
        }
        let reply = self
            .call("DeleteMessageBatch", &params, CALL_TIMEOUT)
            .await?;
        let document = parse_xml(&reply)?;
        let deleted = elements(&document, "DeleteMessageBatchResultEntry").count();
        let failed = elements(&document, "BatchResultErrorEntry")
            .map(|node| {
                let id = child_text(node, "Id").unwrap_or_default();
                let message_id = id
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| entries.get(index))
                    .map_or(id, |(message_id, _)| message_id.to_string());
                (message_id, child_text(node, "Code").unwrap_or_default())
            })
            .collect();
        Ok(DeleteOutcome { deleted, failed })
    }

    pub(super) async fn change_visibility(
        &self,
        queue_url: &str,
        entries: &[(String, String, i32)],
    ) -> Result<Vec<String>, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, (_, receipt_handle, timeout_secs)) in entries.iter().enumerate() {
            let prefix = format!("ChangeMessageVisibilityBatchRequestEntry.{}", index + 1);
            params.push((format!("{prefix}.Id"), index.to_string()));
            params.push((
                format!("{prefix}.ReceiptHandle"),
                receipt_handle.to_string(),
            ));
            params.push((
                format!("{prefix}.VisibilityTimeout"),
                timeout_secs.to_string(),
            ));
        }
        let reply = self
            .call("ChangeMessageVisibilityBatch", &params, CALL_TIMEOUT)
            .await?;
        let document = parse_xml(&reply)?;
        Ok(elements(&document, "BatchResultErrorEntry")
            .filter_map(|node| child_text(node, "Id"))
            .filter_map(|id| id.parse::<usize>().ok())
            .filter_map(|index| entries.get(index).map(|(id, _, _)| id.clone()))
            .collect())
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

    pub(super) async fn depth(&self, queue_url: &str) -> Result<QueueDepth, SqsError> {
        let params = [
            ("QueueUrl".to_string(), queue_url.to_string()),
            (
                "AttributeName.1".into(),
                "ApproximateNumberOfMessages".into(),
            ),
            (
                "AttributeName.2".into(),
                "ApproximateNumberOfMessagesNotVisible".into(),
            ),
        ];
        let reply = self
            .call("GetQueueAttributes", &params, CALL_TIMEOUT)
            .await?;
        let document = parse_xml(&reply)?;
        let mut depth = QueueDepth::default();
        for attribute in elements(&document, "Attribute") {
            let value = child_text(attribute, "Value")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match child_text(attribute, "Name").as_deref() {
                Some("ApproximateNumberOfMessages") => depth.visible = value,
                Some("ApproximateNumberOfMessagesNotVisible") => depth.in_flight = value,
                _ => {}
            }
        }
        Ok(depth)
    }

    pub(super) async fn redrive_policy(&self, queue_url: &str) -> Result<Option<String>, SqsError> {
        let params = [
            ("QueueUrl".to_string(), queue_url.to_string()),
            ("AttributeName.1".into(), "RedrivePolicy".into()),
        ];
        let reply = self
            .call("GetQueueAttributes", &params, CALL_TIMEOUT)
            .await?;
        let document = parse_xml(&reply)?;
        let policy = elements(&document, "Attribute")
            .find(|a| child_text(*a, "Name").as_deref() == Some("RedrivePolicy"))
            .and_then(|a| child_text(a, "Value"));
        Ok(policy)
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
            message_id,
            receipt_handle,
            body: child_text(node, "Body").unwrap_or_default(),
            sent_timestamp_ms: None,
            receive_count: None,
        };
        for attribute in node
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Attribute")
        {
            let value = child_text(attribute, "Value");
            match child_text(attribute, "Name").as_deref() {
                Some("SentTimestamp") => {
                    message.sent_timestamp_ms = value
                        .and_then(|v| v.parse().ok())
                        .map(super::sent_timestamp_ms)
                }
                Some("ApproximateReceiveCount") => {
                    message.receive_count = value.and_then(|v| v.parse().ok())
                }
                _ => {}
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
        assert_eq!(messages[0].message_id, "m-1");
        assert_eq!(messages[0].receipt_handle, "r-1");
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
    fn error_reply_code_is_found() {
        let reply = "<ErrorResponse><Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>no</Message></Error></ErrorResponse>";
        assert_eq!(
            first_text(reply, "Code").as_deref(),
            Some("AWS.SimpleQueueService.NonExistentQueue")
        );
    }
}
