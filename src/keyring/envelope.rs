//! The KMS envelope: a keyring file whose key material only KMS can open.
//!
//! - `GenerateDataKey` (AES_256) gives a 32-byte data key and its
//!   KMS-encrypted copy. The plain data key is stretched with HMAC-SHA512
//!   into a 64-byte AES-SIV key that seals the plain keyring JSON. Only the
//!   encrypted data key is stored.
//! - Key ids, creation times and the active id stay readable (for
//!   `keys list`) and are bound to the ciphertext as associated data, so
//!   nobody can edit them unnoticed.
//! - Since version 2 the data key is bound to an `EncryptionContext`
//!   (`ENCRYPTION_CONTEXT`): KMS opens it only when the same context is
//!   given, CloudTrail shows it on every `Decrypt`, and a key policy can
//!   require it (`kms:EncryptionContext:purpose`). Version 1 envelopes
//!   (no context) still open; `keys rotate` rewrites them as version 2.
//! - At start-up veil calls KMS `Decrypt` once. Without KMS access the
//!   file holds no usable key.

use std::path::Path;

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use zeroize::Zeroizing;

use super::file::KeyFileError;
use super::ring::{fill_random, json_problem, Keyring};
use super::services::KeyServices;

const WRAP_HEADER: &[u8] = b"veil/keyring-envelope/v1";
const NONCE_BYTES: usize = 16;
/// The envelope version `keys new` and `keys rotate` write.
const CURRENT_VERSION: u32 = 2;

/// The KMS EncryptionContext a version-2 envelope's data key is bound to.
pub const ENCRYPTION_CONTEXT: [(&str, &str); 2] = [("app", "veil"), ("purpose", "masking-keyring")];

/// A KMS-enveloped keyring file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    version: u32,
    kms_key_id: String,
    encrypted_data_key_base64: String,
    #[serde(flatten)]
    index: Index,
    sealed_keyring_base64: String,
}

/// The readable part of an envelope, authenticated by the seal.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
struct Index {
    active: String,
    keys: Vec<IndexEntry>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
struct IndexEntry {
    id: String,
    created_at: String,
}

/// One key as `keys list` shows it; never material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id.
    pub id: String,
    /// Creation time.
    pub created_at: String,
    /// Whether new masks use it.
    pub active: bool,
}

/// How a keyring file is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Plain JSON: the file itself is the secret.
    Plain,
    /// Key material encrypted under this KMS key.
    Kms(String),
}

/// Whether the text is a plain keyring or a KMS envelope.
pub fn protection_of(text: &str, origin: &Path) -> Result<Protection, KeyFileError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| KeyFileError::Invalid {
            path: origin.to_path_buf(),
            reason: json_problem(&e),
        })?;
    Ok(match value.get("kms_key_id").and_then(|v| v.as_str()) {
        Some(arn) => Protection::Kms(arn.to_string()),
        None => Protection::Plain,
    })
}

/// Ids, creation times and the active flag; for KMS envelopes without
/// calling KMS.
pub fn list(text: &str, origin: &Path) -> anyhow::Result<Vec<KeyInfo>> {
    let index = match protection_of(text, origin)? {
        Protection::Kms(_) => {
            serde_json::from_str::<Envelope>(text)
                .map_err(|e| invalid(origin, json_problem(&e)))?
                .index
        }
        Protection::Plain => index_of(&Keyring::from_json(text, origin)?),
    };
    Ok(index
        .keys
        .iter()
        .map(|entry| KeyInfo {
            id: entry.id.clone(),
            created_at: entry.created_at.clone(),
            active: entry.id == index.active,
        })
        .collect())
}

fn index_of(keyring: &Keyring) -> Index {
    Index {
        active: keyring.active().id().to_string(),
        keys: keyring
            .keys()
            .map(|key| IndexEntry {
                id: key.id().to_string(),
                created_at: key.created_at().to_string(),
            })
            .collect(),
    }
}

fn invalid(origin: &Path, reason: String) -> KeyFileError {
    KeyFileError::Invalid {
        path: origin.to_path_buf(),
        reason,
    }
}

/// Parses a keyring file's text, opening a KMS envelope if it is one.
pub async fn parse(
    text: &str,
    origin: &Path,
    services: &impl KeyServices,
) -> anyhow::Result<Keyring> {
    match protection_of(text, origin)? {
        Protection::Plain => Ok(Keyring::from_json(text, origin)?),
        Protection::Kms(_) => open_envelope(text, origin, services).await,
    }
}

/// The file text for `keyring`: plain JSON, or a KMS envelope.
pub async fn render(
    keyring: &Keyring,
    protection: &Protection,
    services: &impl KeyServices,
) -> anyhow::Result<Zeroizing<String>> {
    match protection {
        Protection::Plain => Ok(keyring.to_json()),
        Protection::Kms(kms_key_id) => seal_envelope(keyring, kms_key_id, services).await,
    }
}

fn encryption_context() -> std::collections::HashMap<String, String> {
    ENCRYPTION_CONTEXT
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn wrapping_cipher(data_key: &[u8]) -> Aes256Siv {
    let mut kdf =
        <Hmac<Sha512> as Mac>::new_from_slice(data_key).expect("HMAC accepts any key length");
    kdf.update(b"veil/keyring-wrap-key/v1");
    let key = Zeroizing::new(kdf.finalize().into_bytes().to_vec());
    Aes256Siv::new_from_slice(&key).expect("HMAC-SHA512 gives the 64 bytes AES-256-SIV needs")
}

async fn seal_envelope(
    keyring: &Keyring,
    kms_key_id: &str,
    services: &impl KeyServices,
) -> anyhow::Result<Zeroizing<String>> {
    let (data_key, encrypted) = services
        .generate_data_key(kms_key_id, encryption_context())
        .await?;
    let index = index_of(keyring);
    let associated = serde_json::to_vec(&(kms_key_id, &index))?;
    let mut nonce = [0u8; NONCE_BYTES];
    fill_random(&mut nonce);
    let ciphertext = wrapping_cipher(&data_key)
        .encrypt(
            [WRAP_HEADER, &associated, &nonce[..]],
            keyring.to_json().as_bytes(),
        )
        .expect("AES-SIV encrypt with three headers");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    let envelope = Envelope {
        version: CURRENT_VERSION,
        kms_key_id: kms_key_id.to_string(),
        encrypted_data_key_base64: STANDARD.encode(&encrypted),
        index,
        sealed_keyring_base64: STANDARD.encode(sealed),
    };
    Ok(Zeroizing::new(
        serde_json::to_string_pretty(&envelope)? + "\n",
    ))
}

async fn open_envelope(
    text: &str,
    origin: &Path,
    services: &impl KeyServices,
) -> anyhow::Result<Keyring> {
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| invalid(origin, json_problem(&e)))?;
    let context = match envelope.version {
        1 => None,
        2 => Some(encryption_context()),
        other => return Err(invalid(origin, format!("unsupported version {other}")).into()),
    };
    let decode = |field: &str, value: &str| {
        STANDARD
            .decode(value)
            .map_err(|_| invalid(origin, format!("{field} is not base64")))
    };
    let encrypted = decode(
        "encrypted_data_key_base64",
        &envelope.encrypted_data_key_base64,
    )?;
    let sealed = decode("sealed_keyring_base64", &envelope.sealed_keyring_base64)?;
    let data_key = services
        .decrypt(&envelope.kms_key_id, encrypted, context)
        .await?;
    let associated = serde_json::to_vec(&(&envelope.kms_key_id, &envelope.index))?;
    if sealed.len() < NONCE_BYTES {
        return Err(invalid(origin, "sealed keyring is truncated".into()).into());
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    let plain = Zeroizing::new(
        wrapping_cipher(&data_key)
            .decrypt([WRAP_HEADER, &associated, nonce], ciphertext)
            .map_err(|_| {
                invalid(
                    origin,
                    "sealed keyring does not authenticate (edited or corrupted)".into(),
                )
            })?,
    );
    let text = std::str::from_utf8(&plain)
        .map_err(|_| invalid(origin, "sealed keyring is not UTF-8".into()))?;
    let keyring = Keyring::from_json(text, origin)?;
    tracing::info!(kms_key_id = %envelope.kms_key_id, key_id = %keyring.active().id(), "keyring opened with KMS");
    Ok(keyring)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keyrings_list_without_material() {
        let mut keyring = Keyring::generate();
        let first = keyring.active().id().to_string();
        let second = keyring.rotate();
        let text = keyring.to_json();
        let listed = list(&text, Path::new("k")).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|k| k.id == second && k.active));
        assert!(listed.iter().any(|k| k.id == first && !k.active));
        assert_eq!(
            protection_of(&text, Path::new("k")).unwrap(),
            Protection::Plain
        );
    }
}
