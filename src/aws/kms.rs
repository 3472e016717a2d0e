//! The AWS KMS calls veil makes: a data key for a keyring envelope, and
//! its decryption at start-up. Both bind an encryption context; a failure
//! about the key itself is a configuration error (`super::call_failure`).

use anyhow::Context;
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

async fn client(kms_key_id: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&super::config_for("KMS", kms_key_id).await)
}

/// A KMS failure: problems with the key itself are configuration errors.
fn failure<E, R>(action: &str, kms_key_id: &str, error: SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    super::call_failure(format!("KMS {action} with key {kms_key_id}"), error)
}

/// A new AES-256 data key under `kms_key_id`: the plain key and its
/// KMS-encrypted copy.
pub async fn generate_data_key(
    kms_key_id: &str,
    context: std::collections::HashMap<String, String>,
) -> anyhow::Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let output = client(kms_key_id)
        .await
        .generate_data_key()
        .key_id(kms_key_id)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(context))
        .send()
        .await
        .map_err(|e| failure("GenerateDataKey", kms_key_id, e))?;
    let plain = Zeroizing::new(
        output
            .plaintext
            .context("KMS returned no plaintext data key")?
            .into_inner(),
    );
    let encrypted = output
        .ciphertext_blob
        .context("KMS returned no encrypted data key")?
        .into_inner();
    Ok((plain, encrypted))
}

/// The plain data key of `encrypted` (None: no context, version-1 envelopes).
pub async fn decrypt(
    kms_key_id: &str,
    encrypted: Vec<u8>,
    context: Option<std::collections::HashMap<String, String>>,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let output = client(kms_key_id)
        .await
        .decrypt()
        .key_id(kms_key_id)
        .ciphertext_blob(Blob::new(encrypted))
        .set_encryption_context(context)
        .send()
        .await
        .map_err(|e| failure("Decrypt", kms_key_id, e))?;
    Ok(Zeroizing::new(
        output
            .plaintext
            .context("KMS returned no plaintext")?
            .into_inner(),
    ))
}
