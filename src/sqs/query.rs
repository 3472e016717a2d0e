//! SQS over the query protocol: form-encoded `Action=...` POSTs signed with
//! SigV4, XML replies. Written by hand because the AWS SDK for Rust only
//! speaks JSON, and old LocalStack (the reference image) only speaks this.
//! Covers exactly the calls veil makes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use tokio::sync::Mutex;

use super::{
    is_transient_code, DeleteOutcome, Endpoint, QueueDepth, QueueMessage, ReceiveRequest, SqsError,
};

const API_VERSION: &str = "2012-11-05";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// Refresh temporary credentials this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub(super) struct QueryTransport {
    http: reqwest::Client,
    origin: String,
    region: String,
    credentials: Arc<CredentialCache>,
}

/// Keeps the last credentials until shortly before they expire, so the chain
/// (which may call instance metadata) is not asked on every request.
struct CredentialCache {
    provider: Option<SharedCredentialsProvider>,
    current: Mutex<Option<Credentials>>,
}

impl CredentialCache {
    async fn get(&self) -> Result<Credentials, SqsError> {
        let mut current = self.current.lock().await;
        let fresh = current.as_ref().is_some_and(|credentials| {
            credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + CREDENTIAL_REFRESH_MARGIN)
        });
        if !fresh {
            let provider = self.provider.as_ref().ok_or_else(|| {
                SqsError::Permanent("no AWS credentials provider configured".into())
            })?;
            let credentials = provider
                .provide_credentials()
                .await
                .map_err(|e| SqsError::Permanent(format!("could not load AWS credentials: {e}")))?;
            *current = Some(credentials);
        }
        // Just filled above when it was empty or stale.
        Ok(current.clone().expect("credentials cached"))
    }
}

/// A parsed query-protocol reply.
type Reply = String;

impl QueryTransport {
    pub(super) fn new(endpoint: &Endpoint, aws: &SdkConfig) -> anyhow::Result<Self> {
        Ok(QueryTransport {
            http: http_client()?,
            origin: endpoint.origin.clone(),
            region: aws
                .region()
                .map(|region| region.to_string())
                .unwrap_or_else(|| "us-east-1".into()),
            credentials: Arc::new(CredentialCache {
                provider: aws.credentials_provider(),
                current: Mutex::new(None),
            }),
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
        let url = format!("{}/", self.origin);
        let credentials = self.credentials.get().await?;
        let headers = signed_headers(&credentials, &self.region, &url, body.as_bytes())?;
        let mut request = self
            .http
            .post(&url)
            .timeout(timeout)
            .header("content-type", FORM_CONTENT_TYPE)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SqsError::Transient(format!("{action}: {}", error_chain(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| SqsError::Transient(format!("{action}: reading reply: {e}")))?;
        if status.is_success() {
            return Ok(text);
        }
        let code = first_text(&text, "Code").unwrap_or_default();
        let message = first_text(&text, "Message").unwrap_or_default();
        let description = format!("{action}: HTTP {status} {code} {message}");
        if status.is_server_error() || is_transient_code(&code) {
            Err(SqsError::Transient(description))
        } else {
            Err(SqsError::Permanent(description))
        }
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
        entries: &[(String, String)],
    ) -> Result<DeleteOutcome, SqsError> {
        let mut params = vec![("QueueUrl".to_string(), queue_url.to_string())];
        for (index, (_, receipt_handle)) in entries.iter().enumerate() {
            let prefix = format!("DeleteMessageBatchRequestEntry.{}", index + 1);
            params.push((format!("{prefix}.Id"), index.to_string()));
            params.push((format!("{prefix}.ReceiptHandle"), receipt_handle.clone()));
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
                    .map_or(id, |(message_id, _)| message_id.clone());
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
            params.push((format!("{prefix}.ReceiptHandle"), receipt_handle.clone()));
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

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client for our own SQS calls (query protocol and detection).
pub(super) fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(50))
        .build()?)
}

/// SigV4 headers (authorization, date, token) for a POST of `body` to `url`.
pub(super) fn signed_headers(
    credentials: &Credentials,
    region: &str,
    url: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, SqsError> {
    signed_headers_with(
        credentials,
        region,
        url,
        body,
        &[("content-type", FORM_CONTENT_TYPE)],
    )
}

/// SigV4 headers for a POST carrying `extra` headers (which are signed too).
pub(super) fn signed_headers_with(
    credentials: &Credentials,
    region: &str,
    url: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Result<Vec<(String, String)>, SqsError> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sqs")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SqsError::Permanent(format!("signing: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        extra.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| SqsError::Permanent(format!("signing: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SqsError::Permanent(format!("signing: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect())
}

/// The error and its sources, one line (reqwest hides the useful part).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

    #[test]
    fn signing_produces_an_authorization_header() {
        let credentials = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let headers = signed_headers(
            &credentials,
            "us-east-1",
            "http://localhost:4566/",
            b"Action=X",
        )
        .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"authorization"), "{names:?}");
        assert!(names.contains(&"x-amz-date"));
        assert!(names.contains(&"x-amz-security-token"));
        let authorization = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(authorization.contains("/us-east-1/sqs/aws4_request"));
        assert!(!authorization.contains("secret"));
    }
}
