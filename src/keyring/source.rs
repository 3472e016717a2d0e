//! Where the keyring comes from. One source per command, chosen in the
//! configuration stage (`config::key_location`):
//!
//! - `--key-file` / `VEIL_KEY_FILE`: a keyring file (mode 0600);
//! - `--key-secret-id` / `VEIL_KEY_SECRET_ID`: an AWS Secrets Manager
//!   secret holding a keyring file's text;
//! - `VEIL_KEY`: base64 of a keyring file, for platforms that inject
//!   secrets as environment variables;
//! - otherwise the per-user default file, which `veil run` creates.
//!
//! Any of them may hold a plain keyring or a KMS envelope (`envelope`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use super::envelope;
use super::file::read_key_file;
use super::ring::Keyring;
use super::services::KeyServices;
use crate::error::ConfigError;

/// Environment variable holding a whole keyring file, base64-encoded.
pub const VEIL_KEY_ENV: &str = "VEIL_KEY";

/// `VEIL_KEY` as `take_env_key` took it out of the environment.
static TAKEN_ENV_KEY: OnceLock<Option<Zeroizing<String>>> = OnceLock::new();

/// Takes `VEIL_KEY` out of the process environment into a zeroizing
/// buffer: the value is overwritten in place, so `/proc/<pid>/environ`
/// (what `ps e` shows, and what a child process would inherit) no longer
/// holds it, then the variable is removed. Call once, first thing, while
/// the process has one thread (the environment is not thread-safe).
pub fn take_env_key() {
    TAKEN_ENV_KEY.get_or_init(|| {
        let value = Zeroizing::new(std::env::var(VEIL_KEY_ENV).ok()?);
        scrub_environment_value(VEIL_KEY_ENV);
        std::env::remove_var(VEIL_KEY_ENV);
        Some(value)
    });
}

/// Overwrites the bytes of variable `name`'s value where the environment
/// block holds them.
fn scrub_environment_value(name: &str) {
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: getenv returns null or a pointer to the NUL-terminated value
    // inside this process's environment, which is writable memory owned by
    // the process (the initial block on the stack, or what setenv
    // allocated). strlen stays within that string, and write_bytes covers
    // exactly its bytes, not the terminator. Only one thread runs here
    // (see take_env_key), so no getenv elsewhere reads it meanwhile.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if !value.is_null() {
            let length = libc::strlen(value);
            std::ptr::write_bytes(value, 0, length);
        }
    }
}

/// The value of `VEIL_KEY`: what `take_env_key` took, else the
/// environment as it is (library callers that never took it); None when
/// unset or empty (compose passes `VEIL_KEY: ${VEIL_KEY:-}` through).
pub fn env_key() -> Option<Zeroizing<String>> {
    let value = match TAKEN_ENV_KEY.get() {
        Some(taken) => taken.clone(),
        None => std::env::var(VEIL_KEY_ENV).ok().map(Zeroizing::new),
    };
    value.filter(|value| !value.is_empty())
}

/// Where the keyring comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// `VEIL_KEY`: base64 of a keyring file, injected by the platform.
    Env,
    /// An AWS Secrets Manager secret (name or ARN) holding a keyring file.
    Secret(String),
    /// Named by --key-file / VEIL_KEY_FILE: must exist.
    File(PathBuf),
    /// The per-user default; `run` creates it when missing.
    Default(PathBuf),
}

impl KeyLocation {
    /// The file's path, unless the keyring comes from elsewhere.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KeyLocation::Env | KeyLocation::Secret(_) => None,
            KeyLocation::File(path) | KeyLocation::Default(path) => Some(path),
        }
    }

    /// Where the keyring is, for messages (never its contents).
    pub fn describe(&self) -> String {
        match self {
            KeyLocation::Env => format!("${VEIL_KEY_ENV}"),
            KeyLocation::Secret(id) => format!("secret {id}"),
            KeyLocation::File(path) | KeyLocation::Default(path) => path.display().to_string(),
        }
    }
}

/// Loads the keyring from `location` (a secret or a KMS envelope through
/// `services`). With `create_default`, the per-user default file is
/// created on first use.
pub async fn load(
    location: &KeyLocation,
    create_default: bool,
    services: &impl KeyServices,
) -> anyhow::Result<Keyring> {
    if let KeyLocation::Default(path) = location {
        if create_default && !path.exists() {
            let keyring = Keyring::generate();
            super::file::write_private_file(path, keyring.to_json().as_bytes())?;
            tracing::warn!(
                path = %path.display(),
                key_id = %keyring.active().id(),
                "created a new masking key; back it up: masks can only be revealed with it"
            );
            return Ok(keyring);
        }
    }
    let (text, origin) = read_text(location, services).await?;
    envelope::parse(&text, &origin, services).await
}

/// The keyring text at `location` (never creating one), and the name to
/// use for it in errors.
pub async fn read_text(
    location: &KeyLocation,
    services: &impl KeyServices,
) -> anyhow::Result<(Zeroizing<String>, PathBuf)> {
    let path = match location {
        KeyLocation::Env => {
            let encoded = env_key().unwrap_or_default();
            let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).map_err(|_| {
                ConfigError(format!("{VEIL_KEY_ENV} is not base64 of a keyring file"))
            })?);
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                ConfigError(format!("{VEIL_KEY_ENV} is not base64 of a keyring file"))
            })?;
            return Ok((Zeroizing::new(text.to_string()), location.describe().into()));
        }
        KeyLocation::Secret(id) => {
            let text = services.secret_string(id).await?;
            return Ok((text, location.describe().into()));
        }
        KeyLocation::File(path) | KeyLocation::Default(path) => path,
    };
    if !path.exists() {
        let how = match location {
            KeyLocation::Default(_) => {
                "veil run creates it on first use; or pass --key-file, VEIL_KEY_FILE, VEIL_KEY or --key-secret-id"
            }
            _ => "or fix --key-file / VEIL_KEY_FILE",
        };
        return Err(ConfigError(format!(
            "no keyring at {}: create one with `veil keys new --out {}` ({how})",
            path.display(),
            path.display()
        ))
        .into());
    }
    Ok((read_key_file(path)?, path.clone()))
}
