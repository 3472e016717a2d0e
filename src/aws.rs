//! AWS configuration shared by SQS and KMS (SQS uses its region and
//! credentials; KMS its SDK client): the endpoint override
//! variables, region and credentials. For a local endpoint (LocalStack)
//! only the environment and the profile are consulted (instance metadata
//! is pointless there), with dummy credentials as the last resort.

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

/// Loads SDK configuration. `region_hint` (from a queue URL or key ARN)
/// wins over the chain's region, because the resource lives there.
pub async fn sdk_config(
    endpoint_url: Option<&str>,
    is_local: bool,
    region_hint: Option<&str>,
) -> SdkConfig {
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
    if is_local {
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
