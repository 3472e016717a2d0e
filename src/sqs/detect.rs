//! Protocol detection for `--sqs-protocol auto`. AWS itself speaks JSON. Any
//! other endpoint gets one signed JSON-protocol probe (`GetQueueAttributes`);
//! a JSON reply, success or a typed error (`__type`), means JSON. Otherwise a
//! query-protocol probe; an XML reply means query. Old LocalStack answers the
//! JSON probe with HTTP 500 `{}`, which is why "any JSON" is not enough.

use std::time::Duration;

use crate::aws::SdkConfig;

use super::query::{form_body, FORM_CONTENT_TYPE};
use super::signer::Signer;
use super::{Endpoint, Protocol, SqsError};
use crate::error::ConfigError;

/// Probes the endpoint; an endpoint that refuses connections is retried for
/// `wait` (it may still be starting up) before giving up.
pub(super) async fn detect(
    endpoint: &Endpoint,
    aws: &SdkConfig,
    queue_url: &str,
    wait: Duration,
) -> anyhow::Result<Protocol> {
    if !endpoint.is_local {
        return Ok(Protocol::Json);
    }
    let probe = Probe::new(endpoint, aws, queue_url).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(200);
    loop {
        match probe.run().await {
            Ok(protocol) => return Ok(protocol),
            Err(ProbeError::Unreachable(reason)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(endpoint = %probe.signer.url(), %reason, "SQS endpoint unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(ProbeError::Unreachable(reason)) => {
                return Err(
                    anyhow::Error::new(SqsError::Transient(reason)).context(format!(
                        "cannot reach the SQS endpoint {} (tried for {} s)",
                        probe.signer.url(),
                        wait.as_secs()
                    )),
                )
            }
            Err(ProbeError::Neither(detail)) => {
                return Err(ConfigError(format!(
                    "the endpoint {} speaks neither SQS protocol ({detail}); \
                     check the queue URL or set --sqs-protocol json|query",
                    probe.signer.url()
                ))
                .into())
            }
        }
    }
}

enum ProbeError {
    Unreachable(String),
    Neither(String),
}

struct Probe {
    signer: Signer,
    queue_url: String,
}

impl Probe {
    async fn new(endpoint: &Endpoint, aws: &SdkConfig, queue_url: &str) -> anyhow::Result<Self> {
        Ok(Probe {
            signer: Signer::new(aws, &endpoint.origin)?,
            queue_url: queue_url.to_string(),
        })
    }

    async fn run(&self) -> Result<Protocol, ProbeError> {
        let (json_status, json_body) = self.json_probe().await?;
        if speaks_json(json_status, &json_body) {
            return Ok(Protocol::Json);
        }
        let (query_status, query_body) = self.query_probe().await?;
        if speaks_query(&query_body) {
            return Ok(Protocol::Query);
        }
        Err(ProbeError::Neither(format!(
            "JSON probe: HTTP {json_status}; query probe: HTTP {query_status}"
        )))
    }

    async fn json_probe(&self) -> Result<(u16, String), ProbeError> {
        let body = serde_json::json!({"QueueUrl": self.queue_url, "AttributeNames": ["QueueArn"]})
            .to_string();
        self.post(
            body,
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", "AmazonSQS.GetQueueAttributes"),
            ],
        )
        .await
    }

    async fn query_probe(&self) -> Result<(u16, String), ProbeError> {
        let params = [
            ("QueueUrl".to_string(), self.queue_url.clone()),
            ("AttributeName.1".to_string(), "QueueArn".to_string()),
        ];
        let body = form_body("GetQueueAttributes", &params);
        self.post(body, &[("content-type", FORM_CONTENT_TYPE)])
            .await
    }

    /// Posts `body` with `headers`, signed; returns the status and reply.
    async fn post(
        &self,
        body: String,
        headers: &[(&'static str, &str)],
    ) -> Result<(u16, String), ProbeError> {
        let (status, reply) = self
            .signer
            .exchange("probe", body.into_bytes(), headers, Duration::from_secs(10))
            .await
            .map_err(|e| match e {
                SqsError::Transient(reason) => ProbeError::Unreachable(reason),
                error @ SqsError::Permanent { .. } => ProbeError::Neither(error.to_string()),
            })?;
        Ok((
            status.as_u16(),
            String::from_utf8_lossy(&reply).into_owned(),
        ))
    }
}

/// A JSON-protocol server answers with a JSON object: the result, or a typed
/// error carrying `__type` (e.g. QueueDoesNotExist).
fn speaks_json(status: u16, body: &str) -> bool {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str(body) else {
        return false;
    };
    status == 200 || (400..500).contains(&status) && object.contains_key("__type")
}

/// A query-protocol server answers with XML: the result or an ErrorResponse.
fn speaks_query(body: &str) -> bool {
    let trimmed = body.trim_start();
    trimmed.starts_with('<')
        && (trimmed.contains("GetQueueAttributesResponse") || trimmed.contains("ErrorResponse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_servers_are_recognized_by_result_or_typed_error() {
        assert!(speaks_json(200, r#"{"Attributes": {"QueueArn": "arn"}}"#));
        assert!(speaks_json(
            400,
            r#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist"}"#
        ));
    }

    #[test]
    fn old_localstack_answers_to_json_are_not_json_protocol() {
        assert!(!speaks_json(500, "{}"));
        assert!(!speaks_json(404, r#"{"status": "running"}"#));
        assert!(!speaks_json(404, "<UnknownOperationException/>"));
    }

    #[test]
    fn query_servers_are_recognized_by_xml() {
        assert!(speaks_query(
            "<?xml version='1.0'?><GetQueueAttributesResponse/>"
        ));
        assert!(speaks_query("<ErrorResponse><Error/></ErrorResponse>"));
        assert!(!speaks_query("{}"));
    }
}
