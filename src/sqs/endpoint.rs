//! Where the queue lives and how to sign for it: the endpoint (from
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL`, or the queue URL's own host
//! when that is not AWS; for AWS, its regional endpoint), the region and
//! the credentials (`crate::aws`: the standard chain, or only env and
//! profile with dummy credentials for a loopback endpoint). Every call goes
//! through veil's own signed client (`signer`); no SDK client is involved.

use crate::aws::SdkConfig;
use url::Url;

use crate::aws::{endpoint_from_env, is_aws_host, is_local_endpoint};
use crate::error::ConfigError;

/// The resolved SQS endpoint for one queue URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The endpoint as configured (an endpoint variable, or the queue
    /// URL's own origin when it is not AWS); `None` for AWS itself.
    pub configured_url: Option<String>,
    /// Base URL (scheme, host, port) that every SQS call is POSTed to.
    pub origin: String,
    /// Region named by the queue URL's AWS host, if any.
    pub region_hint: Option<String>,
    /// True for anything but an AWS host (LocalStack, a proxy, a test server).
    pub is_local: bool,
}

/// Resolves the endpoint for `queue_url`, honouring the AWS endpoint
/// variables. A malformed URL is a configuration error.
pub fn resolve_endpoint(queue_url: &str) -> Result<Endpoint, ConfigError> {
    const SHAPE: &str = "http(s)://HOST[:PORT]/ACCOUNT_ID/QUEUE_NAME, e.g. \
        http://localhost:4566/000000000000/login-queue";
    let url = Url::parse(queue_url).map_err(|e| {
        ConfigError(format!(
            "queue URL {queue_url:?} is not a URL ({e}); it must be {SHAPE}"
        ))
    })?;
    let segments = url
        .path_segments()
        .map_or(0, |s| s.filter(|p| !p.is_empty()).count());
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || segments < 2 {
        return Err(ConfigError(format!(
            "queue URL {queue_url:?} must be {SHAPE}"
        )));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let is_aws_host = is_aws_host(&host);
    let region_hint = is_aws_host.then(|| region_of_aws_host(&host)).flatten();
    let from_env = endpoint_from_env("SQS");
    let origin_of_queue = url.origin().ascii_serialization();
    Ok(match from_env {
        Some(env_url) => {
            let parsed = Url::parse(&env_url).map_err(|e| {
                ConfigError(format!(
                    "AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL {env_url:?} is not a URL ({e})"
                ))
            })?;
            Endpoint {
                origin: parsed.origin().ascii_serialization(),
                is_local: is_local_endpoint(&env_url),
                configured_url: Some(env_url),
                region_hint,
            }
        }
        None if is_aws_host => Endpoint {
            configured_url: None,
            origin: regional_origin(&host, region_hint.as_deref()).unwrap_or(origin_of_queue),
            region_hint,
            is_local: false,
        },
        None => Endpoint {
            configured_url: Some(origin_of_queue.clone()),
            origin: origin_of_queue,
            region_hint: None,
            is_local: true,
        },
    })
}

/// The regional endpoint `https://sqs.<region>.amazonaws.com` (what the
/// AWS SDKs call) for a queue URL on the legacy `<region>.queue` host;
/// `None` when the queue's host is already that endpoint.
fn regional_origin(host: &str, region: Option<&str>) -> Option<String> {
    let region = region?;
    if host.starts_with("sqs.") {
        return None;
    }
    let domain = if host.ends_with(".cn") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Some(format!("https://sqs.{region}.{domain}"))
}

/// `sqs.eu-west-1.amazonaws.com` -> `eu-west-1`; also the legacy
/// `eu-west-1.queue.amazonaws.com` form.
fn region_of_aws_host(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        ["sqs", region, ..] | [region, "queue", ..] => Some(region.to_string()),
        _ => None,
    }
}

impl Endpoint {
    /// The endpoint as shown in logs.
    pub fn display_url(&self) -> &str {
        self.configured_url.as_deref().unwrap_or(&self.origin)
    }

    /// Loads region and credentials through the standard AWS chain. The
    /// queue URL's region wins over the chain's (a queue lives in one
    /// region); a loopback endpoint with no credentials anywhere gets
    /// dummies.
    pub async fn load_aws_config(&self) -> anyhow::Result<SdkConfig> {
        Ok(crate::aws::sdk_config(
            self.configured_url.as_deref(),
            self.is_local,
            self.region_hint.as_deref(),
        )
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_queue_url_gives_its_own_endpoint() {
        let endpoint = resolve_endpoint("http://localhost:4566/000000000000/login-queue").unwrap();
        assert_eq!(
            endpoint.configured_url.as_deref(),
            Some("http://localhost:4566")
        );
        assert!(endpoint.is_local);
        assert_eq!(endpoint.region_hint, None);
    }

    #[test]
    fn aws_queue_url_gives_region_and_sdk_resolution() {
        let endpoint =
            resolve_endpoint("https://sqs.eu-west-1.amazonaws.com/123456789012/logins").unwrap();
        assert_eq!(endpoint.configured_url, None);
        assert!(!endpoint.is_local);
        assert_eq!(endpoint.region_hint.as_deref(), Some("eu-west-1"));
        assert_eq!(
            region_of_aws_host("us-east-2.queue.amazonaws.com").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(endpoint.origin, "https://sqs.eu-west-1.amazonaws.com");
    }

    #[test]
    fn legacy_aws_queue_hosts_are_served_by_the_regional_endpoint() {
        let endpoint =
            resolve_endpoint("https://us-east-2.queue.amazonaws.com/123456789012/logins").unwrap();
        assert_eq!(endpoint.region_hint.as_deref(), Some("us-east-2"));
        assert_eq!(endpoint.origin, "https://sqs.us-east-2.amazonaws.com");
        let china = resolve_endpoint("https://cn-north-1.queue.amazonaws.com.cn/1/q").unwrap();
        assert_eq!(china.origin, "https://sqs.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn malformed_queue_urls_are_refused_with_the_expected_shape() {
        for bad in [
            "login-queue",
            "ftp://x/1/q",
            "http://localhost:4566/login-queue",
        ] {
            let error = resolve_endpoint(bad).unwrap_err().to_string();
            assert!(error.contains("queue URL"), "{bad}: {error}");
        }
    }
}
