//! AWS configuration shared by SQS, KMS and Secrets Manager (SQS uses its
//! region and credentials; the other two their SDK clients): the endpoint
//! override variables, region and credentials, and what a failed SDK call
//! means.
//!
//! - AWS itself, and any endpoint that is not on this machine (a proxy, a
//!   VPC endpoint, `http://localstack:4566` in a container network): the
//!   full default credential chain (environment, profile, web identity,
//!   ECS, instance metadata).
//! - A loopback endpoint (LocalStack on localhost): only the environment
//!   and the profile (instance metadata is pointless there), with dummy
//!   credentials as the last resort, which LocalStack accepts.

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::error::ConfigError;

/// Region used when nothing else names one (the reference environment's).
pub const DEFAULT_REGION: &str = "us-east-1";

/// True for hosts of AWS itself.
pub fn is_aws_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

/// The endpoint override for a service: `AWS_ENDPOINT_URL_<SERVICE>`, then
/// `AWS_ENDPOINT_URL` (the SDKs' standard variables).
pub fn endpoint_from_env(service_suffix: &str) -> Option<String> {
    [
        format!("AWS_ENDPOINT_URL_{service_suffix}"),
        "AWS_ENDPOINT_URL".to_string(),
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
}

/// Whether an endpoint URL points somewhere other than AWS.
pub fn is_local_endpoint(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| !is_aws_host(h)))
        .unwrap_or(true)
}

/// Whether an endpoint URL is on this machine (localhost, 127.0.0.0/8,
/// ::1): the only endpoints that may get dummy credentials.
pub fn is_loopback_endpoint(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// Loads SDK configuration. `region_hint` (from a queue URL or key ARN)
/// wins over the chain's region, because the resource lives there.
/// `is_local`: the endpoint is not AWS (the region then comes from the
/// environment or the profile, else the default).
pub async fn sdk_config(
    endpoint_url: Option<&str>,
    is_local: bool,
    region_hint: Option<&str>,
) -> SdkConfig {
    let loopback = endpoint_url.is_some_and(is_loopback_endpoint);
    // Stalled-stream protection arms timers around every body; KMS bodies
    // are small. (SQS takes only region and credentials from this config:
    // its calls go through veil's own client, src/sqs/signer.rs.)
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = region_hint {
        loader = loader.region(Region::new(region.to_string()));
    } else if is_local {
        let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::builder().build())
            .or_else(Region::new(DEFAULT_REGION));
        loader = loader.region(region);
    }
    if loopback {
        let chain = CredentialsProviderChain::first_try(
            "Environment",
            EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else("Profile", ProfileFileCredentialsProvider::builder().build());
        let credentials = match chain.provide_credentials().await {
            Ok(credentials) => credentials,
            Err(_) => {
                tracing::debug!(
                    "no AWS credentials in env or profile; using dummy ones for the local endpoint"
                );
                Credentials::new("test", "test", None, None, "veil-local-endpoint")
            }
        };
        loader = loader.credentials_provider(SharedCredentialsProvider::new(credentials));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::new(DEFAULT_REGION))
        .build()
}

/// The SDK configuration for one resource of a service: the endpoint from
/// `AWS_ENDPOINT_URL_<service_suffix>` / `AWS_ENDPOINT_URL`, and the region
/// the resource's ARN names (`arn:aws:kms:REGION:...`; a bare id or name
/// names none).
pub async fn config_for(service_suffix: &str, resource: &str) -> SdkConfig {
    let endpoint = endpoint_from_env(service_suffix);
    let is_local = endpoint.as_deref().is_some_and(is_local_endpoint);
    let region = resource
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|region| !region.is_empty());
    sdk_config(endpoint.as_deref(), is_local, region).await
}

/// A failed SDK call, described as `what failed: detail`. A refusal by the
/// service (the resource is missing, or this identity may not use it) is a
/// configuration error; a call that never got an answer is not.
pub fn call_failure<E, R>(what: String, error: SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let message = format!("{what} failed: {}", DisplayErrorContext(&error));
    match error {
        SdkError::ServiceError(_) => ConfigError(message).into(),
        _ => anyhow::anyhow!(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_may_get_dummy_credentials() {
        for loopback in [
            "http://localhost:4566",
            "http://127.0.0.1:4566",
            "http://127.3.4.5",
            "http://[::1]:4566",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback_endpoint(loopback), "{loopback}");
        }
        for remote in [
            "http://localstack:4566",
            "https://sqs.eu-west-1.amazonaws.com",
            "http://10.0.0.5:4566",
            "not a url",
        ] {
            assert!(!is_loopback_endpoint(remote), "{remote}");
        }
    }
}

/// RDS IAM authentication tokens: the AWS chain's credentials and region,
/// loaded at the first token and kept.
#[derive(Debug, Default)]
pub struct RdsTokens {
    region: Option<String>,
    aws: tokio::sync::OnceCell<SdkConfig>,
}

impl RdsTokens {
    /// Tokens signed for `region` (None: the chain's region).
    pub fn new(region: Option<String>) -> Self {
        RdsTokens {
            region,
            aws: tokio::sync::OnceCell::new(),
        }
    }

    /// A token that logs `user` in to `host:port` for 15 minutes.
    pub async fn token(
        &self,
        host: &str,
        port: u16,
        user: &str,
    ) -> anyhow::Result<zeroize::Zeroizing<String>> {
        use anyhow::Context;
        let aws = self
            .aws
            .get_or_init(|| sdk_config(None, false, self.region.as_deref()))
            .await;
        let region = aws
            .region()
            .map(|r| r.to_string())
            .context("no AWS region for RDS IAM authentication: set AWS_REGION")?;
        let provider = aws
            .credentials_provider()
            .context("no AWS credentials provider for RDS IAM authentication")?;
        let credentials = provider
            .provide_credentials()
            .await
            .context("loading AWS credentials for an RDS IAM token")?;
        Ok(super::sigv4::rds_auth_token(
            &credentials,
            &region,
            host,
            port,
            user,
            std::time::SystemTime::now(),
        ))
    }
}
