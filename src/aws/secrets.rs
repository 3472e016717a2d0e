//! AWS Secrets Manager: the current string of one secret, for database
//! credentials (`postgres::credentials`) and keyrings (`keyring::source`).
//! The endpoint follows `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL`; an ARN names its region. The value is returned in
//! a zeroizing buffer and never logged.

use aws_sdk_secretsmanager::error::SdkError;
use zeroize::Zeroizing;

use crate::error::ConfigError;

/// A client for the region of secret `id` (an ARN names it).
async fn client(id: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&crate::aws::config_for("SECRETS_MANAGER", id).await)
}

/// A failed call: problems with the secret itself are configuration errors.
fn failure<E, R>(action: &str, id: &str, error: SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    crate::aws::call_failure(format!("Secrets Manager {action} of {id}"), error)
}

/// The current `SecretString` of secret `id` (a name or an ARN). A secret
/// that does not exist, or that this identity may not read, is a
/// configuration error; an unreachable endpoint is not.
pub async fn secret_string(id: &str) -> anyhow::Result<Zeroizing<String>> {
    let output = client(id)
        .await
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|error| failure("GetSecretValue", id, error))?;
    let text = output.secret_string.ok_or_else(|| {
        ConfigError(format!(
            "secret {id} has no SecretString (a binary secret?); store the value as text"
        ))
    })?;
    Ok(Zeroizing::new(text))
}

/// Stores `value` as the first value of secret `id`, which must exist and
/// hold no value yet: a keyring already there is never replaced (masks made
/// with it would become unreadable).
pub async fn put_first_value(id: &str, value: &str) -> anyhow::Result<()> {
    let client = client(id).await;
    match client.get_secret_value().secret_id(id).send().await {
        Ok(_) => {
            return Err(ConfigError(format!(
                "secret {id} already holds a value; refusing to replace it (masks made with that \
                 keyring would become unreadable). Use another, empty secret; to add a key to the \
                 keyring already there, run `veil keys rotate --key-secret-id {id}`, which says how"
            ))
            .into())
        }
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(error) => return Err(failure("GetSecretValue", id, error)),
    }
    client
        .put_secret_value()
        .secret_id(id)
        .secret_string(value)
        .send()
        .await
        .map_err(|error| failure("PutSecretValue", id, error))?;
    Ok(())
}
