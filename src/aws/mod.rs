//! AWS, the one outside system of this module: the SDK configuration
//! (region, credentials, endpoints) shared by every call, the one SigV4
//! signer (our own SQS clients, RDS IAM tokens), Secrets Manager reads and
//! writes, the KMS calls of keyring envelopes, and the Lambda Runtime API
//! (`lambda_runtime`). Every `aws_sdk_*` use lives here.

pub mod kms;
pub mod lambda_runtime;
mod sdk;
pub mod secrets;
pub mod sigv4;

/// The SDK's configuration and credential types, for the other adapters
/// that sign AWS requests with them (our SQS clients): they reach AWS
/// through this module, never through the SDK's crates.
pub use aws_config::SdkConfig;
pub use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
pub use aws_credential_types::Credentials;
pub use sdk::{
    call_failure, config_for, endpoint_from_env, is_aws_host, is_local_endpoint,
    is_loopback_endpoint, sdk_config, RdsTokens, DEFAULT_REGION,
};

/// Secrets Manager and KMS as the places a keyring may live
/// (`keyring::KeyServices`).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyServices;

impl crate::keyring::KeyServices for KeyServices {
    async fn secret_string(&self, id: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
        secrets::secret_string(id).await
    }

    async fn generate_data_key(
        &self,
        kms_key_id: &str,
        context: std::collections::HashMap<String, String>,
    ) -> anyhow::Result<(zeroize::Zeroizing<Vec<u8>>, Vec<u8>)> {
        kms::generate_data_key(kms_key_id, context).await
    }

    async fn decrypt(
        &self,
        kms_key_id: &str,
        encrypted: Vec<u8>,
        context: Option<std::collections::HashMap<String, String>>,
    ) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
        kms::decrypt(kms_key_id, encrypted, context).await
    }
}
