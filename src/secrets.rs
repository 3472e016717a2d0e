//! AWS Secrets Manager: the current string of one secret, for database
//! credentials (`postgres::credentials`) and keyrings (`keyring::source`).
//! The endpoint follows `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL`; an ARN names its region. The value is returned in
//! a zeroizing buffer and never logged.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};
use zeroize::Zeroizing;

use crate::error::ConfigError;

/// The current `SecretString` of secret `id` (a name or an ARN). A secret
/// that does not exist, or that this identity may not read, is a
/// configuration error; an unreachable endpoint is not.
pub async fn secret_string(id: &str) -> anyhow::Result<Zeroizing<String>> {
    let endpoint = crate::aws::endpoint_from_env("SECRETS_MANAGER");
    let is_local = endpoint
        .as_deref()
        .is_some_and(crate::aws::is_local_endpoint);
    // arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME names its region.
    let region = id
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|region| !region.is_empty());
    let config = crate::aws::sdk_config(endpoint.as_deref(), is_local, region).await;
    let output = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|error| {
            let detail = DisplayErrorContext(&error).to_string();
            let message = format!("Secrets Manager GetSecretValue of {id} failed: {detail}");
            match error {
                SdkError::ServiceError(_) => anyhow::Error::new(ConfigError(message)),
                _ => anyhow::anyhow!(message),
            }
        })?;
    let text = output.secret_string.ok_or_else(|| {
        ConfigError(format!(
            "secret {id} has no SecretString (a binary secret?); store the value as text"
        ))
    })?;
    Ok(Zeroizing::new(text))
}
