//! Protocol detection for `--sqs-protocol auto`. AWS itself speaks JSON. Any
//! other endpoint gets one signed JSON-protocol probe (`GetQueueAttributes`);
//! a JSON reply, success or a typed error (`__type`), means JSON. Otherwise a
//! query-protocol probe; an XML reply means query. Old LocalStack answers the
//! JSON probe with HTTP 500 `{}`, which is why "any JSON" is not enough.

use std::time::Duration;

use anyhow::{anyhow, bail};
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;

use super::query::{error_chain, form_body, http_client, signed_headers, signed_headers_with};
use super::{Endpoint, Protocol};

/// How long to keep retrying an endpoint that refuses connections (it may
/// still be starting up) before giving up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

pub(super) async fn detect(
    endpoint: &Endpoint,
    aws: &SdkConfig,
    queue_url: &str,
) -> anyhow::Result<Protocol> {
    if !endpoint.is_local {
        return Ok(Protocol::Json);
    }
    let probe = Probe::new(endpoint, aws, queue_url).await?;
    let deadline = tokio::time::Instant::now() + UNREACHABLE_GRACE;
    let mut delay = Duration::from_millis(200);
    loop {
        match probe.run().await {
            Ok(protocol) => return Ok(protocol),
            Err(ProbeError::Unreachable(reason)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(endpoint = %probe.url, %reason, "SQS endpoint unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(ProbeError::Unreachable(reason)) => {
                bail!("cannot reach the SQS endpoint {}: {reason}", probe.url)
            }
            Err(ProbeError::Neither(detail)) => bail!(
                "the endpoint {} speaks neither SQS protocol ({detail}); \
                 check the queue URL or set --sqs-protocol json|query",
                probe.url
            ),
        }
    }
}

enum ProbeError {
    Unreachable(String),
    Neither(String),
}

struct Probe {
    http: reqwest::Client,
    url: String,
    region: String,
    credentials: aws_credential_types::Credentials,
    queue_url: String,
}

impl Probe {
    async fn new(endpoint: &Endpoint, aws: &SdkConfig, queue_url: &str) -> anyhow::Result<Self> {
        let provider = aws
            .credentials_provider()
            .ok_or_else(|| anyhow!("no AWS credentials provider"))?;
        Ok(Probe {
            http: http_client()?,
            url: format!("{}/", endpoint.origin),
            region: aws.region().map_or("us-east-1".into(), |r| r.to_string()),
            credentials: provider.provide_credentials().await?,
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
        let extra = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "AmazonSQS.GetQueueAttributes"),
        ];
        let headers = signed_headers_with(
            &self.credentials,
            &self.region,
            &self.url,
            body.as_bytes(),
            &extra,
        )
        .map_err(|e| ProbeError::Neither(e.to_string()))?;
        self.post(
            body,
            extra
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .chain(headers),
        )
        .await
    }

    async fn query_probe(&self) -> Result<(u16, String), ProbeError> {
        let params = [
            ("QueueUrl".to_string(), self.queue_url.clone()),
            ("AttributeName.1".to_string(), "QueueArn".to_string()),
        ];
        let body = form_body("GetQueueAttributes", &params);
        let headers = signed_headers(&self.credentials, &self.region, &self.url, body.as_bytes())
            .map_err(|e| ProbeError::Neither(e.to_string()))?;
        let content_type = (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        );
        self.post(body, std::iter::once(content_type).chain(headers))
            .await
    }

    async fn post(
        &self,
        body: String,
        headers: impl Iterator<Item = (String, String)>,
    ) -> Result<(u16, String), ProbeError> {
        let mut request = self
            .http
            .post(&self.url)
            .timeout(Duration::from_secs(10))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ProbeError::Unreachable(error_chain(&e)))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, text))
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
