//! Where the keyring comes from and how it is stored. Sources, first match
//! wins: `VEIL_KEY` (base64 of a keyring file, for platforms that inject
//! secrets as environment variables), `--key-file`/`VEIL_KEY_FILE`, or the
//! per-user default file. A keyring file is either plain JSON (`mask.rs`)
//! or a KMS envelope:
//!
//! - `GenerateDataKey` (AES_256) gives a 32-byte data key and its
//!   KMS-encrypted copy. The plain data key is stretched with HMAC-SHA512
//!   into a 64-byte AES-SIV key that seals the plain keyring JSON. Only the
//!   encrypted data key is stored.
//! - Key ids, creation times and the active id stay readable (for
//!   `keys list`) and are bound to the ciphertext as associated data, so
//!   nobody can edit them unnoticed.
//! - At start-up veil calls KMS `Decrypt` once. Without KMS access the
//!   file holds no usable key.

use std::path::{Path, PathBuf};

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use anyhow::Context;
use aws_sdk_kms::error::{DisplayErrorContext, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use zeroize::Zeroizing;

use crate::config::KeyLocation;
use crate::error::ConfigError;
use crate::mask::{KeyFileError, Keyring};

/// Environment variable holding a whole keyring file, base64-encoded.
pub const VEIL_KEY_ENV: &str = "VEIL_KEY";
const WRAP_HEADER: &[u8] = b"veil/keyring-envelope/v1";
const NONCE_BYTES: usize = 16;

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

/// Loads the keyring from `location`. With `create_default`, the per-user
/// default file is created on first use.
pub async fn load(location: &KeyLocation, create_default: bool) -> anyhow::Result<Keyring> {
    if let KeyLocation::Default(path) = location {
        if create_default && !path.exists() {
            let keyring = Keyring::generate();
            keyring.write_new(path)?;
            tracing::warn!(
                path = %path.display(),
                key_id = %keyring.active().id(),
                "created a new masking key; back it up: masks can only be revealed with it"
            );
            return Ok(keyring);
        }
    }
    let (text, origin) = read_text(location)?;
    parse(&text, &origin).await
}

/// The keyring text at `location` (never creating one), and the name to
/// use for it in errors.
pub fn read_text(location: &KeyLocation) -> Result<(Zeroizing<String>, PathBuf), ConfigError> {
    let path = match location {
        KeyLocation::Env => {
            let encoded = Zeroizing::new(std::env::var(VEIL_KEY_ENV).unwrap_or_default());
            let text = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    ConfigError(format!("{VEIL_KEY_ENV} is not base64 of a keyring file"))
                })?;
            return Ok((
                Zeroizing::new(text),
                PathBuf::from(format!("${VEIL_KEY_ENV}")),
            ));
        }
        KeyLocation::File(path) | KeyLocation::Default(path) => path,
    };
    if !path.exists() {
        let how = match location {
            KeyLocation::Default(_) => {
                "veil run creates it on first use; or pass --key-file, VEIL_KEY_FILE or VEIL_KEY"
            }
            _ => "or fix --key-file / VEIL_KEY_FILE",
        };
        return Err(ConfigError(format!(
            "no keyring at {}: create one with `veil keys new --out {}` ({how})",
            path.display(),
            path.display()
        )));
    }
    let text = crate::mask::read_key_file(path).map_err(|e| ConfigError(e.to_string()))?;
    crate::mask::warn_if_readable_by_others(path);
    Ok((text, path.clone()))
}

/// Parses a keyring file's text, opening a KMS envelope if it is one.
pub async fn parse(text: &str, origin: &Path) -> anyhow::Result<Keyring> {
    match protection_of(text, origin)? {
        Protection::Plain => Ok(Keyring::from_json(text, origin)?),
        Protection::Kms(_) => open_envelope(text, origin).await,
    }
}

/// Whether the text is a plain keyring or a KMS envelope.
pub fn protection_of(text: &str, origin: &Path) -> Result<Protection, KeyFileError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| KeyFileError::Invalid {
            path: origin.to_path_buf(),
            reason: crate::mask::json_problem(&e),
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
                .map_err(|e| invalid(origin, crate::mask::json_problem(&e)))?
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

/// The file text for `keyring`: plain JSON, or a KMS envelope.
pub async fn render(
    keyring: &Keyring,
    protection: &Protection,
) -> anyhow::Result<Zeroizing<String>> {
    match protection {
        Protection::Plain => Ok(keyring.to_json()),
        Protection::Kms(kms_key_id) => seal_envelope(keyring, kms_key_id).await,
    }
}

/// Writes a new key file (0600); never overwrites.
pub fn write_new(path: &Path, text: &str) -> Result<(), KeyFileError> {
    crate::mask::write_private_file(path, text.as_bytes())
}

/// Replaces a key file atomically (write a 0600 sibling, then rename), so
/// a crash mid-write never leaves a half-written keyring.
pub fn replace(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let temporary = sibling(path, ".veil-tmp");
    let _ = std::fs::remove_file(&temporary);
    crate::mask::write_private_file(&temporary, text.as_bytes())?;
    std::fs::rename(&temporary, path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

async fn kms_client(kms_key_id: &str) -> aws_sdk_kms::Client {
    let endpoint = crate::aws::endpoint_from_env("KMS");
    let is_local = endpoint
        .as_deref()
        .is_some_and(crate::aws::is_local_endpoint);
    // arn:aws:kms:REGION:ACCOUNT:key/ID names its region; a bare id does not.
    let region = kms_key_id
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|region| !region.is_empty());
    let config = crate::aws::sdk_config(endpoint.as_deref(), is_local, region).await;
    aws_sdk_kms::Client::new(&config)
}

/// A KMS failure: problems with the key itself are configuration errors.
fn kms_error<E, R>(action: &str, kms_key_id: &str, error: SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let detail = DisplayErrorContext(&error).to_string();
    let message = format!("KMS {action} with key {kms_key_id} failed: {detail}");
    match error {
        SdkError::ServiceError(_) => ConfigError(message).into(),
        _ => anyhow::anyhow!(message),
    }
}

fn wrapping_cipher(data_key: &[u8]) -> Aes256Siv {
    let mut kdf =
        <Hmac<Sha512> as Mac>::new_from_slice(data_key).expect("HMAC accepts any key length");
    kdf.update(b"veil/keyring-wrap-key/v1");
    let key = Zeroizing::new(kdf.finalize().into_bytes().to_vec());
    Aes256Siv::new_from_slice(&key).expect("HMAC-SHA512 gives the 64 bytes AES-256-SIV needs")
}

async fn seal_envelope(keyring: &Keyring, kms_key_id: &str) -> anyhow::Result<Zeroizing<String>> {
    let output = kms_client(kms_key_id)
        .await
        .generate_data_key()
        .key_id(kms_key_id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .map_err(|e| kms_error("GenerateDataKey", kms_key_id, e))?;
    let data_key = Zeroizing::new(
        output
            .plaintext
            .context("KMS returned no plaintext data key")?
            .into_inner(),
    );
    let encrypted = output
        .ciphertext_blob
        .context("KMS returned no encrypted data key")?;
    let index = index_of(keyring);
    let associated = serde_json::to_vec(&(kms_key_id, &index))?;
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
    let ciphertext = wrapping_cipher(&data_key)
        .encrypt(
            [WRAP_HEADER, &associated, &nonce[..]],
            keyring.to_json().as_bytes(),
        )
        .expect("AES-SIV encrypt with three headers");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    let envelope = Envelope {
        version: 1,
        kms_key_id: kms_key_id.to_string(),
        encrypted_data_key_base64: STANDARD.encode(encrypted.as_ref()),
        index,
        sealed_keyring_base64: STANDARD.encode(sealed),
    };
    Ok(Zeroizing::new(
        serde_json::to_string_pretty(&envelope)? + "\n",
    ))
}

async fn open_envelope(text: &str, origin: &Path) -> anyhow::Result<Keyring> {
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| invalid(origin, crate::mask::json_problem(&e)))?;
    if envelope.version != 1 {
        return Err(invalid(origin, format!("unsupported version {}", envelope.version)).into());
    }
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
    let output = kms_client(&envelope.kms_key_id)
        .await
        .decrypt()
        .key_id(&envelope.kms_key_id)
        .ciphertext_blob(Blob::new(encrypted))
        .send()
        .await
        .map_err(|e| kms_error("Decrypt", &envelope.kms_key_id, e))?;
    let data_key = Zeroizing::new(
        output
            .plaintext
            .context("KMS returned no plaintext")?
            .into_inner(),
    );
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

    #[test]
    fn replace_swaps_the_file_atomically_and_keeps_it_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        write_new(&path, "one").unwrap();
        replace(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
