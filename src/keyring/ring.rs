//! The Keyring type and its JSON file format. A keyring holds one active
//! key, which makes new masks, and older keys, which still open the masks
//! they made. Key material lives in zeroizing buffers and is never printed;
//! key ids are checked (a small charset, a length that keeps every mask
//! within varchar(256), no duplicates).

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::file::KeyFileError;

/// Length in bytes of an AES-256-SIV key (two AES-256 keys).
pub const KEY_BYTES: usize = 64;
/// Longest key id: `siv1.<id>.` plus the longest payload (192 characters)
/// must fit varchar(256).
pub const MAX_KEY_ID_CHARS: usize = 32;

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

    /// The key material, for the masking code (`crate::mask`).
    pub(crate) fn material(&self) -> &[u8; KEY_BYTES] {
        &self.material
    }
}

pub(crate) fn fill_random(buf: &mut [u8]) {
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
    material_base64: Zeroizing<String>,
}

const ALGORITHM: &str = "AES-256-SIV";

/// Why a key id is refused, if it is.
fn check_key_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if id.is_empty() || id.chars().count() > MAX_KEY_ID_CHARS || !id.chars().all(allowed) {
        return Err(format!(
            "key id {id:?} must be 1 to {MAX_KEY_ID_CHARS} of A-Z, a-z, 0-9, - and _ \
             (it is written into every mask, which must fit varchar(256))"
        ));
    }
    Ok(())
}

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

    /// The key with this id.
    pub fn find(&self, id: &str) -> Option<&MaskKey> {
        self.keys().find(|key| key.id == id)
    }

    /// Adds a fresh key and makes it the active one; the old keys stay to
    /// open existing masks. Returns the new key's id.
    pub fn rotate(&mut self) -> String {
        let mut fresh = MaskKey::generate();
        while self.find(&fresh.id).is_some() {
            fresh = MaskKey::generate(); // 2^32 ids: a clash is rare, never kept
        }
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
        let mut keys: Vec<MaskKey> = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            check_key_id(&entry.id).map_err(invalid)?;
            if keys.iter().any(|key| key.id == entry.id) {
                return Err(invalid(format!("key id {} appears twice", entry.id)));
            }
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
            if bytes.len() != KEY_BYTES {
                return Err(invalid(format!(
                    "key {} must be {KEY_BYTES} bytes",
                    entry.id
                )));
            }
            let mut material = Zeroizing::new([0u8; KEY_BYTES]);
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
        let keys = self
            .keys()
            .map(|key| KeyEntry {
                id: key.id.clone(),
                created_at: key.created_at.clone(),
                algorithm: ALGORITHM.to_string(),
                material_base64: Zeroizing::new(STANDARD.encode(key.material.as_ref())),
            })
            .collect();
        let file = KeyringFile {
            version: 1,
            active: self.active.id.clone(),
            keys,
        };
        // Written into one zeroizing buffer, sized so that it never grows:
        // a growing Vec would free its old, unzeroed copies of the keys.
        // Each key takes under 200 bytes pretty-printed.
        let mut buffer = Zeroizing::new(Vec::with_capacity(256 + 256 * file.keys.len()));
        // Serializing plain strings to JSON cannot fail.
        serde_json::to_writer_pretty(&mut *buffer, &file).expect("keyring serializes");
        buffer.push(b'\n');
        // serde_json writes UTF-8; the bytes move into the String.
        Zeroizing::new(String::from_utf8(std::mem::take(&mut *buffer)).expect("JSON is UTF-8"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_json_round_trips_with_its_ids_and_material() {
        let mut ring = Keyring::generate();
        ring.rotate();
        let loaded = Keyring::from_json(&ring.to_json(), Path::new("test")).unwrap();
        assert_eq!(loaded.active().id(), ring.active().id());
        assert_eq!(loaded.keys().count(), 2);
        for key in ring.keys() {
            assert_eq!(loaded.find(key.id()).unwrap().material(), key.material());
        }
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

    fn with_ids(ids: &[&str]) -> String {
        let material = STANDARD.encode([7u8; KEY_BYTES]);
        let keys: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"id":{id:?},"created_at":"","algorithm":"AES-256-SIV","material_base64":"{material}"}}"#
                )
            })
            .collect();
        format!(
            r#"{{"version":1,"active":{:?},"keys":[{}]}}"#,
            ids[0],
            keys.join(",")
        )
    }

    #[test]
    fn key_ids_are_checked_for_charset_length_and_duplicates() {
        let path = Path::new("k.json");
        assert!(Keyring::from_json(&with_ids(&["8f17fb39", "old_key-2"]), path).is_ok());
        let long = "a".repeat(MAX_KEY_ID_CHARS + 1);
        for bad in [
            &["a.b"][..],
            &["a b"],
            &[""],
            &[long.as_str()],
            &["k1", "k1"],
        ] {
            let error = Keyring::from_json(&with_ids(bad), path).unwrap_err();
            assert!(matches!(error, KeyFileError::Invalid { .. }), "{bad:?}");
        }
    }

    #[test]
    fn the_json_is_written_into_one_buffer_that_never_grew() {
        let mut ring = Keyring::generate();
        for _ in 0..5 {
            ring.rotate();
        }
        let json = ring.to_json();
        // Grown, the Vec would have moved to a larger allocation and
        // freed the old one with the keys in it.
        assert_eq!(json.capacity(), 256 + 256 * 6);
        assert_eq!(
            Keyring::from_json(&json, Path::new("k"))
                .unwrap()
                .keys()
                .count(),
            6
        );
    }

    #[test]
    fn key_debug_output_is_redacted() {
        let ring = Keyring::generate();
        let debug = format!("{ring:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&STANDARD.encode(ring.active().material())));
    }
}
