//! AWS, the one outside system of this module: the SDK configuration
//! (region, credentials, endpoints) shared by every call, the one SigV4
//! signer (our own SQS clients, RDS IAM tokens), Secrets Manager reads and
//! writes, and the KMS calls of keyring envelopes. Every `aws_sdk_*` use
//! lives here.

pub mod kms;
mod sdk;
pub mod secrets;
pub mod sigv4;

pub use sdk::{
    call_failure, config_for, endpoint_from_env, is_aws_host, is_local_endpoint,
    is_loopback_endpoint, sdk_config, DEFAULT_REGION,
};
