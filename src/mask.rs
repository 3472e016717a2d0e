//! Keys and masking: turns PII values into printable, deterministic, keyed,
//! reversible masks and back. No I/O here except reading and writing key files.
//!
//! A mask is `siv1.<key id>.<base64url(AES-SIV ciphertext)>`:
//! - AES-SIV (RFC 5297, `aes-siv` crate, 512-bit key: AES-256 for both the
//!   S2V/CMAC and the CTR halves) is deterministic authenticated encryption.
//!   Equal inputs under one key give equal masks, so `GROUP BY masked_ip`
//!   finds duplicates; without the key nothing can be learned or enumerated
//!   (the pseudo-random IV is a CMAC under a 256-bit key); with the key the
//!   value comes back, and a tampered or foreign mask is rejected, never
//!   guessed.
//! - The field name is bound in as associated data, so a masked IP and a
//!   masked device id never collide and cannot be swapped between columns.
//! - The key id in the mask says which key of a keyring made it, so keys can
//!   rotate while old masks stay readable.
//!
//! Irreversible mode (`MaskMode::Hmac`) makes `hmac1.<key id>.<base64url>`
//! masks: HMAC-SHA256 under a key derived from the same key material, over
//! the field name and the value. Deterministic and keyed like AES-SIV, so
//! duplicates stay visible, but nothing can turn them back into values.
//!
//! Quarantined bodies are encrypted with the same key but with a random
//! 16-byte nonce as an extra header (AES-SIV in its nonce-based mode), so
//! equal junk bodies do not produce equal ciphertexts.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length in bytes of an AES-256-SIV key (two AES-256 keys).
pub const KEY_BYTES: usize = 64;
/// Prefix that marks a mask made by AES-SIV, format version 1.
pub const SIV_PREFIX: &str = "siv1";
/// Prefix that marks an irreversible HMAC-SHA256 mask, format version 1.
pub const HMAC_PREFIX: &str = "hmac1";
/// Longest plaintext (bytes) that still yields a mask within varchar(256).
pub const MAX_MASKED_VALUE_BYTES: usize = 128;
const BODY_NONCE_BYTES: usize = 16;
const BODY_HEADER: &[u8] = b"veil/quarantine-body/v1";

/// How masks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MaskMode {
    /// AES-SIV: deterministic, keyed, reversible with the key (`siv1.`).
    #[default]
    Siv,
    /// HMAC-SHA256: deterministic, keyed, irreversible (`hmac1.`).
    Hmac,
}

/// Which PII field a value belongs to; bound into the mask as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The client's IP address (canonicalized before masking).
    Ip,
    /// The device id.
    DeviceId,
}

impl Field {
    /// Every field, in the order `reveal` tries them.
    pub const ALL: [Field; 2] = [Field::Ip, Field::DeviceId];

    /// The name used in errors, docs and the associated data.
    pub fn name(self) -> &'static str {
        match self {
            Field::Ip => "ip",
            Field::DeviceId => "device_id",
        }
    }

    fn associated_data(self) -> &'static [u8] {
        match self {
            Field::Ip => b"veil/ip/v1",
            Field::DeviceId => b"veil/device_id/v1",
        }
    }
}

/// Why a mask could not be opened. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevealError {
    /// The text does not have the `siv1.<key id>.<payload>` shape.
    #[error("not a veil mask (expected siv1.<key id>.<base64>)")]
    NotAMask,
    /// An HMAC mask: by design nothing can reverse it.
    #[error(
        "irreversible mask (hmac1, made with --mask-mode hmac): it cannot be reversed, by design"
    )]
    Irreversible,
    /// The mask names a key this keyring does not hold.
    #[error("mask was made with key {0:?}, which is not in the keyring")]
    UnknownKey(String),
    /// The payload fails authentication: tampered, truncated, or another key.
    #[error("mask does not authenticate under key {0:?} (tampered or not made by veil)")]
    NotAuthentic(String),
}

/// Errors loading, creating or parsing a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file in question.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid veil keyring.
    #[error("key file {path} is not a valid veil keyring: {reason}")]
    Invalid {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it (never the key material).
        reason: String,
    },
    /// Refused to overwrite an existing key file.
    #[error("key file {0} already exists; refusing to overwrite a key (masks made with it would become unreadable)")]
    Exists(PathBuf),
}

/// One AES-SIV key with its id. Key bytes are zeroed on drop and never printed.
#[derive(Clone)]
pub struct MaskKey {
    id: String,
    created_at: String,
    material: Zeroizing<[u8; KEY_BYTES]>,
}

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskKey")
            .field("id", &self.id)
            .field("material", &"<redacted>")
            .finish()
    }
}

impl MaskKey {
    /// A fresh random key with a random 8-hex-digit id.
    pub fn generate() -> Self {
        let mut material = Zeroizing::new([0u8; KEY_BYTES]);
        fill_random(material.as_mut());
        let mut id_bytes = [0u8; 4];
        fill_random(&mut id_bytes);
        let id = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        MaskKey {
            id,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            material,
        }
    }

    /// The key's id, as written in every mask it makes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the key was made (RFC 3339).
    pub fn created_at(&self) -> &str {
        &self.created_at
    }

    /// The HMAC key for irreversible masks, derived so that the AES-SIV and
    /// HMAC uses of one key material never share a key.
    fn hmac_key(&self) -> Zeroizing<Vec<u8>> {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(self.material.as_ref())
            .expect("HMAC accepts any key length");
        derive.update(b"veil/hmac-mask-key/v1");
        Zeroizing::new(derive.finalize().into_bytes().to_vec())
    }

    fn cipher(&self) -> Aes256Siv {
        Aes256Siv::new(self.material.as_ref().into())
    }
}

fn fill_random(buf: &mut [u8]) {
    // The OS RNG failing is unrecoverable and cannot be worked around safely.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// The keys veil knows: one active key makes new masks; all can open masks.
#[derive(Clone, Debug)]
pub struct Keyring {
    active: MaskKey,
    others: Vec<MaskKey>,
}

/// Serialized form of a keyring file (JSON, mode 0600).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    version: u32,
    active: String,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    created_at: String,
    algorithm: String,
    material_base64: String,
}

const ALGORITHM: &str = "AES-256-SIV";

impl Keyring {
    /// A keyring holding one new random key.
    pub fn generate() -> Self {
        Keyring {
            active: MaskKey::generate(),
            others: Vec::new(),
        }
    }

    /// The key that makes new masks.
    pub fn active(&self) -> &MaskKey {
        &self.active
    }

    /// Every key, the active one first.
    pub fn keys(&self) -> impl Iterator<Item = &MaskKey> {
        std::iter::once(&self.active).chain(self.others.iter())
    }

    fn find(&self, id: &str) -> Option<&MaskKey> {
        self.keys().find(|key| key.id == id)
    }

    /// Adds a fresh key and makes it the active one; the old keys stay to
    /// open existing masks. Returns the new key's id.
    pub fn rotate(&mut self) -> String {
        let fresh = MaskKey::generate();
        let id = fresh.id.clone();
        let previous = std::mem::replace(&mut self.active, fresh);
        self.others.insert(0, previous);
        id
    }

    /// Removes a key that is not the active one. Masks it made can never be
    /// opened again: run `veil rekey` first.
    pub fn retire(&mut self, id: &str) -> Result<(), String> {
        if self.active.id == id {
            return Err(format!("key {id} is the active key; rotate first"));
        }
        let before = self.others.len();
        self.others.retain(|key| key.id != id);
        if self.others.len() == before {
            return Err(format!("key {id} is not in the keyring"));
        }
        Ok(())
    }

    /// Parses the JSON keyring format; `origin` names the source in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, KeyFileError> {
        let invalid = |reason: String| KeyFileError::Invalid {
            path: origin.to_path_buf(),
            reason,
        };
        let file: KeyringFile =
            serde_json::from_str(text).map_err(|e| invalid(json_problem(&e)))?;
        if file.version != 1 {
            return Err(invalid(format!("unsupported version {}", file.version)));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            if entry.algorithm != ALGORITHM {
                return Err(invalid(format!(
                    "key {} has unsupported algorithm",
                    entry.id
                )));
            }
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(entry.material_base64.as_bytes())
                    .map_err(|_| invalid(format!("key {} material is not base64", entry.id)))?,
            );
            let mut material = Zeroizing::new([0u8; KEY_BYTES]);
            if bytes.len() != KEY_BYTES {
                return Err(invalid(format!(
                    "key {} must be {KEY_BYTES} bytes",
                    entry.id
                )));
            }
            material.copy_from_slice(&bytes);
            keys.push(MaskKey {
                id: entry.id,
                created_at: entry.created_at,
                material,
            });
        }
        let position = keys
            .iter()
            .position(|key| key.id == file.active)
            .ok_or_else(|| invalid(format!("active key {:?} is not in the file", file.active)))?;
        let active = keys.remove(position);
        Ok(Keyring {
            active,
            others: keys,
        })
    }

    /// The JSON keyring format. Holds key material: write it only to 0600 files.
    pub fn to_json(&self) -> Zeroizing<String> {
        let keys = std::iter::once(&self.active)
            .chain(self.others.iter())
            .map(|key| KeyEntry {
                id: key.id.clone(),
                created_at: key.created_at.clone(),
                algorithm: ALGORITHM.to_string(),
                material_base64: STANDARD.encode(key.material.as_ref()),
            })
            .collect();
        let file = KeyringFile {
            version: 1,
            active: self.active.id.clone(),
            keys,
        };
        // Serializing plain strings to JSON cannot fail.
        Zeroizing::new(serde_json::to_string_pretty(&file).expect("keyring serializes") + "\n")
    }

    /// Reads a keyring file, warning when others can read it.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = read_key_file(path)?;
        warn_if_readable_by_others(path);
        Self::from_json(&text, path)
    }

    /// Writes the keyring to a new file with mode 0600; never overwrites.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        write_private_file(path, self.to_json().as_bytes())
    }

    /// Masks one PII value with the active key in the given mode.
    pub fn mask_with(&self, mode: MaskMode, field: Field, value: &str) -> String {
        match mode {
            MaskMode::Siv => self.mask(field, value),
            MaskMode::Hmac => self.mask_irreversibly(field, value),
        }
    }

    /// An irreversible HMAC-SHA256 mask (`hmac1.`) with the active key.
    pub fn mask_irreversibly(&self, field: Field, value: &str) -> String {
        let key = self.active.hmac_key();
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC accepts any key length");
        mac.update(field.associated_data());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        format!(
            "{HMAC_PREFIX}.{}.{}",
            self.active.id,
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// Masks one PII value with the active key (AES-SIV).
    pub fn mask(&self, field: Field, value: &str) -> String {
        let ciphertext = self
            .active
            .cipher()
            .encrypt([field.associated_data()], value.as_bytes())
            // AES-SIV encryption only fails for more headers than S2V allows (126).
            .expect("AES-SIV encrypt with one header");
        format!(
            "{SIV_PREFIX}.{}.{}",
            self.active.id,
            URL_SAFE_NO_PAD.encode(ciphertext)
        )
    }

    /// Opens a mask made by any key in the ring, returning the field and value.
    pub fn reveal(&self, mask: &str) -> Result<(Field, String), RevealError> {
        let mut parts = mask.trim().splitn(3, '.');
        let (Some(prefix), Some(key_id), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(RevealError::NotAMask);
        };
        match prefix {
            SIV_PREFIX => {}
            HMAC_PREFIX => return Err(RevealError::Irreversible),
            _ => return Err(RevealError::NotAMask),
        }
        let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if payload.is_empty() || !payload.bytes().all(base64url) {
            return Err(RevealError::NotAMask);
        }
        let key = self
            .find(key_id)
            .ok_or_else(|| RevealError::UnknownKey(key_id.to_string()))?;
        // A mask-shaped payload that does not decode (an altered last
        // character sets bits base64 must leave zero) was tampered with.
        let ciphertext = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| RevealError::NotAuthentic(key_id.to_string()))?;
        for field in Field::ALL {
            if let Ok(plaintext) = key.cipher().decrypt([field.associated_data()], &ciphertext) {
                let value = String::from_utf8(plaintext)
                    .map_err(|_| RevealError::NotAuthentic(key_id.to_string()))?;
                return Ok((field, value));
            }
        }
        Err(RevealError::NotAuthentic(key_id.to_string()))
    }

    /// The key id a mask names, if it is a veil mask of either kind.
    pub fn key_id_of(mask: &str) -> Option<&str> {
        let mut parts = mask.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(SIV_PREFIX | HMAC_PREFIX), Some(id), Some(_)) => Some(id),
            _ => None,
        }
    }

    /// Encrypts a raw message body for the quarantine (randomized, authenticated).
    pub fn seal_body(&self, body: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; BODY_NONCE_BYTES];
        fill_random(&mut nonce);
        let ciphertext = self
            .active
            .cipher()
            .encrypt([BODY_HEADER, &nonce[..]], body)
            .expect("AES-SIV encrypt with two headers");
        let mut sealed = Vec::with_capacity(BODY_NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts a quarantined body sealed by the key `key_id`.
    pub fn open_body(&self, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, RevealError> {
        let key = self
            .find(key_id)
            .ok_or_else(|| RevealError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < BODY_NONCE_BYTES {
            return Err(RevealError::NotAuthentic(key_id.to_string()));
        }
        let (nonce, ciphertext) = sealed.split_at(BODY_NONCE_BYTES);
        key.cipher()
            .decrypt([BODY_HEADER, nonce], ciphertext)
            .map_err(|_| RevealError::NotAuthentic(key_id.to_string()))
    }
}

/// Says whether a keyring's JSON is malformed or holds the wrong fields.
pub fn json_problem(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("{error} (not valid JSON)"),
        Category::Data => {
            format!("{error} (valid JSON, but not a keyring's fields: version, active, keys)")
        }
    }
}

/// The text of a key file, in a buffer zeroed on drop.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates `path` with mode 0600 (and its directory) and writes `bytes`.
/// Never overwrites an existing file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_path_buf())
        } else {
            io(source)
        }
    })?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Warns when a key file can be read by group or others.
#[cfg(unix)]
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "key file is readable by group or others; run: chmod 600 {}",
                path.display()
            );
        }
    }
}

/// Warns when a key file can be read by others (no-op off Unix).
#[cfg(not(unix))]
pub fn warn_if_readable_by_others(_path: &Path) {}

/// Canonical text of an IP address, so equal addresses mask equally:
/// IPv6 in RFC 5952 form (lower case, longest zero run compressed) and
/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as the IPv4 address it carries.
/// Returns `None` for anything that is not an IP address (including zone ids
/// and IPv4 with leading zeros, which some parsers read as octal).
pub fn canonical_ip(text: &str) -> Option<String> {
    let address: IpAddr = text.parse().ok()?;
    Some(address.to_canonical().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_deterministic_for_one_key() {
        let ring = Keyring::generate();
        assert_eq!(
            ring.mask(Field::Ip, "10.0.0.1"),
            ring.mask(Field::Ip, "10.0.0.1")
        );
        assert_ne!(
            ring.mask(Field::Ip, "10.0.0.1"),
            ring.mask(Field::Ip, "10.0.0.2")
        );
    }

    #[test]
    fn masks_differ_between_keys_and_fields() {
        let one = Keyring::generate();
        let two = Keyring::generate();
        assert_ne!(one.mask(Field::Ip, "x"), two.mask(Field::Ip, "x"));
        assert_ne!(one.mask(Field::Ip, "x"), one.mask(Field::DeviceId, "x"));
    }

    #[test]
    fn mask_names_its_key_and_round_trips() {
        let ring = Keyring::generate();
        let mask = ring.mask(Field::DeviceId, "593-47-5928");
        assert!(mask.starts_with(&format!("siv1.{}.", ring.active().id())));
        assert!(!mask.contains("593"));
        assert_eq!(
            ring.reveal(&mask),
            Ok((Field::DeviceId, "593-47-5928".to_string()))
        );
    }

    #[test]
    fn longest_allowed_value_fits_varchar_256() {
        let ring = Keyring::generate();
        let mask = ring.mask(Field::DeviceId, &"x".repeat(MAX_MASKED_VALUE_BYTES));
        assert!(mask.len() <= 256, "mask is {} chars", mask.len());
        assert!(mask.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn reveal_refuses_foreign_tampered_and_malformed_masks() {
        let ring = Keyring::generate();
        let other = Keyring::generate();
        let foreign = other.mask(Field::Ip, "1.2.3.4");
        assert!(matches!(
            ring.reveal(&foreign),
            Err(RevealError::UnknownKey(_))
        ));

        let mask = ring.mask(Field::Ip, "1.2.3.4");
        // Change a character inside the payload: the last one may carry
        // unused bits, and changing those is a decoding error, not tampering.
        let mut tampered = mask.clone().into_bytes();
        let inside = tampered.len() - 5;
        tampered[inside] = if tampered[inside] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            ring.reveal(&tampered),
            Err(RevealError::NotAuthentic(_))
        ));
        // The last character too, whether the change breaks the base64 or the seal.
        for replacement in [b'A', b'B', b'x', b'_'] {
            let mut altered = mask.clone().into_bytes();
            let last = altered.len() - 1;
            if altered[last] == replacement {
                continue;
            }
            altered[last] = replacement;
            let altered = String::from_utf8(altered).unwrap();
            assert!(
                matches!(ring.reveal(&altered), Err(RevealError::NotAuthentic(_))),
                "{altered}"
            );
        }
        assert_eq!(ring.reveal("1.2.3.4"), Err(RevealError::NotAMask));
        assert_eq!(ring.reveal("siv1.x.!!"), Err(RevealError::NotAMask));
    }

    #[test]
    fn keyring_json_round_trip_keeps_masks_stable() {
        let ring = Keyring::generate();
        let json = ring.to_json();
        let loaded = Keyring::from_json(&json, Path::new("test")).unwrap();
        assert_eq!(
            ring.mask(Field::Ip, "1.2.3.4"),
            loaded.mask(Field::Ip, "1.2.3.4")
        );
    }

    #[test]
    fn keyring_file_is_created_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.json");
        let ring = Keyring::generate();
        ring.write_new(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            Keyring::generate().write_new(&path),
            Err(KeyFileError::Exists(_))
        ));
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!(loaded.active().id(), ring.active().id());
    }

    #[test]
    fn invalid_key_files_are_rejected_without_echoing_material() {
        let path = Path::new("k.json");
        let bad_len = r#"{"version":1,"active":"a","keys":[{"id":"a","created_at":"","algorithm":"AES-256-SIV","material_base64":"c2VjcmV0"}]}"#;
        let error = Keyring::from_json(bad_len, path).unwrap_err().to_string();
        assert!(error.contains("must be 64 bytes"), "{error}");
        assert!(!error.contains("c2VjcmV0"));
        let no_active = r#"{"version":1,"active":"b","keys":[]}"#;
        assert!(Keyring::from_json(no_active, path).is_err());
        let syntax = Keyring::from_json("not json", path)
            .unwrap_err()
            .to_string();
        assert!(syntax.contains("not valid JSON"), "{syntax}");
        let fields = Keyring::from_json(r#"{"version":1,"keyz":[]}"#, path)
            .unwrap_err()
            .to_string();
        assert!(
            fields.contains("not a keyring's fields") && !fields.contains("not valid JSON"),
            "{fields}"
        );
    }

    #[test]
    fn key_debug_output_is_redacted() {
        let ring = Keyring::generate();
        let debug = format!("{ring:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&STANDARD.encode(ring.active().material.as_ref())));
    }

    #[test]
    fn quarantine_bodies_seal_randomly_and_open() {
        let ring = Keyring::generate();
        let one = ring.seal_body(b"{\"ip\":\"1.2.3.4\"}");
        let two = ring.seal_body(b"{\"ip\":\"1.2.3.4\"}");
        assert_ne!(one, two);
        assert_eq!(
            ring.open_body(ring.active().id(), &one).unwrap(),
            b"{\"ip\":\"1.2.3.4\"}"
        );
        assert!(ring.open_body(ring.active().id(), &one[1..]).is_err());
    }

    #[test]
    fn hmac_masks_are_deterministic_keyed_and_irreversible() {
        let ring = Keyring::generate();
        let mask = ring.mask_irreversibly(Field::Ip, "10.0.0.1");
        assert_eq!(mask, ring.mask_with(MaskMode::Hmac, Field::Ip, "10.0.0.1"));
        assert!(mask.starts_with(&format!("hmac1.{}.", ring.active().id())));
        assert_ne!(
            mask,
            Keyring::generate().mask_irreversibly(Field::Ip, "10.0.0.1")
        );
        assert_ne!(mask, ring.mask_irreversibly(Field::DeviceId, "10.0.0.1"));
        assert_eq!(ring.reveal(&mask), Err(RevealError::Irreversible));
        assert!(mask.len() <= 256);
    }

    #[test]
    fn rotation_keeps_old_masks_readable_and_retire_forgets_them() {
        let mut ring = Keyring::generate();
        let old_id = ring.active().id().to_string();
        let old_mask = ring.mask(Field::Ip, "10.0.0.1");
        let new_id = ring.rotate();
        assert_eq!(ring.active().id(), new_id);
        assert_ne!(ring.mask(Field::Ip, "10.0.0.1"), old_mask);
        assert_eq!(ring.reveal(&old_mask).unwrap().1, "10.0.0.1");
        let reloaded = Keyring::from_json(&ring.to_json(), Path::new("t")).unwrap();
        assert_eq!(reloaded.keys().count(), 2);
        assert_eq!(reloaded.active().id(), new_id);
        assert!(
            ring.retire(&new_id).is_err(),
            "the active key cannot be retired"
        );
        ring.retire(&old_id).unwrap();
        assert!(matches!(
            ring.reveal(&old_mask),
            Err(RevealError::UnknownKey(_))
        ));
    }

    #[test]
    fn key_id_is_read_from_either_kind_of_mask() {
        assert_eq!(Keyring::key_id_of("siv1.ab12.xyz"), Some("ab12"));
        assert_eq!(Keyring::key_id_of("hmac1.cd34.xyz"), Some("cd34"));
        assert_eq!(Keyring::key_id_of("10.0.0.1"), None);
    }

    #[test]
    fn equal_ip_addresses_canonicalize_equally() {
        assert_eq!(
            canonical_ip("2001:DB8:0:0:0:0:0:1"),
            canonical_ip("2001:db8::1")
        );
        assert_eq!(canonical_ip("2001:db8::1").unwrap(), "2001:db8::1");
        assert_eq!(canonical_ip("::ffff:10.1.2.3").unwrap(), "10.1.2.3");
        assert_eq!(canonical_ip("199.172.111.135").unwrap(), "199.172.111.135");
    }

    #[test]
    fn non_addresses_are_not_canonicalized() {
        for text in [
            "",
            "1.2.3",
            "256.1.1.1",
            "01.2.3.4",
            "fe80::1%eth0",
            " 1.2.3.4",
            "abc",
        ] {
            assert_eq!(canonical_ip(text), None, "{text:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        proptest! {
            #[test]
            fn any_value_round_trips_through_its_mask(value in "\\PC{0,128}", ip in any::<bool>()) {
                let ring = Keyring::generate();
                let field = if ip { Field::Ip } else { Field::DeviceId };
                let mask = ring.mask(field, &value);
                prop_assert!(mask.len() <= 256 || value.len() > MAX_MASKED_VALUE_BYTES);
                prop_assert_eq!(ring.reveal(&mask), Ok((field, value)));
            }

            #[test]
            fn ipv6_spellings_canonicalize_to_one_text(segments in any::<[u16; 8]>()) {
                let address = Ipv6Addr::from(segments);
                let expanded = segments.iter().map(|s| format!("{s:04X}")).collect::<Vec<_>>().join(":");
                let short = segments.iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":");
                let canonical = canonical_ip(&address.to_string());
                prop_assert!(canonical.is_some());
                prop_assert_eq!(canonical_ip(&expanded), canonical.clone());
                prop_assert_eq!(canonical_ip(&short), canonical);
            }

            #[test]
            fn ipv4_mapped_ipv6_equals_the_ipv4_address(octets in any::<[u8; 4]>()) {
                let v4 = Ipv4Addr::from(octets);
                let mapped = format!("::ffff:{v4}");
                prop_assert_eq!(canonical_ip(&mapped), Some(v4.to_string()));
            }
        }
    }
}
