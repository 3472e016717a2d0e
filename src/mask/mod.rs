//! Masking: turns PII values into printable, deterministic, keyed,
//! reversible masks and back, and seals quarantined bodies. Pure: no I/O;
//! the keys come from `crate::keyring`.
//!
//! A mask is `siv1.<key id>.<base64url(AES-SIV ciphertext)>`:
//! - AES-SIV (RFC 5297, `aes-siv` crate, 512-bit key: AES-256 for both the
//!   S2V/CMAC and the CTR halves) is deterministic authenticated encryption.
//!   Equal inputs under one key give equal masks, so `GROUP BY masked_ip`
//!   finds duplicates; without the key nothing can be learned or enumerated
//!   (the pseudo-random IV is a CMAC under a 256-bit key); with the key the
//!   value comes back, and a tampered or foreign mask is rejected, never
//!   guessed.
//! - The domain is bound in as associated data (`veil/<domain>/v1`, from
//!   the contract), so a masked IP and a masked device id never collide
//!   and cannot be swapped between columns.
//! - The key id in the mask says which key of a keyring made it, so keys can
//!   rotate while old masks stay readable.
//!
//! Irreversible mode (`MaskMode::Hmac`) makes `hmac1.<key id>.<base64url>`
//! masks: HMAC-SHA256 under a key derived from the same key material, over
//! the domain and the value. Deterministic and keyed like AES-SIV, so
//! duplicates stay visible, but nothing can turn them back into values.
//!
//! Quarantined bodies are encrypted with the same key but with a random
//! 16-byte nonce as an extra header (AES-SIV in its nonce-based mode), so
//! equal junk bodies do not produce equal ciphertexts.
//!
//! Files: `prefix` (ipcrypt-pfx masks), `seal` (quarantined bodies),
//! `fingerprint` (the audit's one-way fingerprints of looked-up values).

mod fingerprint;
mod prefix;
mod seal;

pub use fingerprint::FINGERPRINT_PREFIX;
use prefix::pfx_mask;

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use std::net::IpAddr;

use crate::keyring::{Keyring, MaskKey};

/// Prefix that marks a mask made by AES-SIV, format version 1.
pub const SIV_PREFIX: &str = "siv1";
/// Prefix that marks an irreversible HMAC-SHA256 mask, format version 1.
pub const HMAC_PREFIX: &str = "hmac1";
/// Prefix that marks a prefix-preserving IP mask (ipcrypt-pfx), version 1.
pub const PFX_PREFIX: &str = "pfx1";
/// Longest plaintext (bytes) that still yields a mask within varchar(256).
pub const MAX_MASKED_VALUE_BYTES: usize = 128;

/// How masks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MaskMode {
    /// AES-SIV: deterministic, keyed, reversible with the key (`siv1.`).
    #[default]
    Siv,
    /// HMAC-SHA256: deterministic, keyed, irreversible (`hmac1.`).
    Hmac,
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

/// The AES-SIV cipher of a key.
fn cipher(key: &MaskKey) -> Aes256Siv {
    Aes256Siv::new(key.material().into())
}

/// The HMAC key for irreversible masks, derived so that the AES-SIV and
/// HMAC uses of one key material never share a key.
fn hmac_key(key: &MaskKey) -> Zeroizing<Vec<u8>> {
    derive_key(key, b"veil/hmac-mask-key/v1")
}

/// A key for one purpose, derived from a key's material with HMAC-SHA256.
fn derive_key(key: &MaskKey, purpose: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut derive =
        <Hmac<Sha256> as Mac>::new_from_slice(key.material()).expect("HMAC accepts any key length");
    derive.update(purpose);
    Zeroizing::new(derive.finalize().into_bytes().to_vec())
}

/// The AES-SIV mask (`siv1.`) of a value under one key, bound to the
/// associated data of its field or domain.
fn siv_mask(key: &MaskKey, associated_data: &[u8], value: &str) -> String {
    let ciphertext = cipher(key)
        .encrypt([associated_data], value.as_bytes())
        // AES-SIV encryption only fails for more headers than S2V allows (126).
        .expect("AES-SIV encrypt with one header");
    mask_text(SIV_PREFIX, key, &ciphertext)
}

/// `<prefix>.<key id>.<base64url of payload>`, written into one string of
/// its final size (`format!` parses its pattern and grows the string: a
/// tenth of the cost of a mask).
fn mask_text(prefix: &str, key: &MaskKey, payload: &[u8]) -> String {
    let mut mask =
        String::with_capacity(prefix.len() + key.id().len() + 2 + (payload.len() * 4).div_ceil(3));
    mask.push_str(prefix);
    mask.push('.');
    mask.push_str(key.id());
    mask.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut mask);
    mask
}

/// HMAC-SHA256 under `derived` of `label`, a NUL, and `value`.
fn keyed_digest(derived: &[u8], label: &[u8], value: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(derived).expect("HMAC accepts any key length");
    mac.update(label);
    mac.update(&[0]);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The HMAC-SHA256 mask (`hmac1.`) of a value under one key.
fn hmac_mask(key: &MaskKey, associated_data: &[u8], value: &str) -> String {
    let digest = keyed_digest(&hmac_key(key), associated_data, value);
    mask_text(HMAC_PREFIX, key, &digest)
}

/// Masking, revealing and sealing with the keys of a keyring.
impl Keyring {
    /// Masks one value of a domain (`associated_data` is `veil/<domain>/v1`)
    /// with the active key: AES-SIV (`siv1.`, reversible) or HMAC-SHA256
    /// (`hmac1.`, irreversible).
    pub fn mask(&self, mode: MaskMode, associated_data: &[u8], value: &str) -> String {
        match mode {
            MaskMode::Siv => siv_mask(self.active(), associated_data, value),
            MaskMode::Hmac => hmac_mask(self.active(), associated_data, value),
        }
    }

    /// Every mask a value of a domain (`veil/<domain>/v1`) can have in a
    /// table this keyring wrote: under each of its keys, in every mode (an
    /// IP address also gets its prefix-preserving masks). Masks are
    /// deterministic, so these find the value's rows (`veil find`, `veil
    /// forget`) without opening any other.
    pub fn masks_under_every_key(&self, associated_data: &[u8], value: &str) -> Vec<String> {
        let address = value.parse::<IpAddr>().ok().map(|a| a.to_canonical());
        self.keys()
            .flat_map(|key| {
                let pfx = address.map(|address| pfx_mask(key, associated_data, address));
                [
                    Some(siv_mask(key, associated_data, value)),
                    Some(hmac_mask(key, associated_data, value)),
                    pfx,
                ]
            })
            .flatten()
            .collect()
    }

    /// Opens an AES-SIV mask made by any key in the ring and bound to one of
    /// `associated_data` (the `veil/<domain>/v1` of the plan's domains),
    /// returning which one and the value.
    pub fn reveal(
        &self,
        mask: &str,
        associated_data: &[&[u8]],
    ) -> Result<(usize, String), RevealError> {
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
        for (index, data) in associated_data.iter().enumerate() {
            if let Ok(plaintext) = cipher(key).decrypt([*data], &ciphertext) {
                let value = String::from_utf8(plaintext)
                    .map_err(|_| RevealError::NotAuthentic(key_id.to_string()))?;
                return Ok((index, value));
            }
        }
        Err(RevealError::NotAuthentic(key_id.to_string()))
    }

    /// The key id a mask names, if it is a veil mask of any kind.
    pub fn key_id_of(mask: &str) -> Option<&str> {
        let mut parts = mask.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(SIV_PREFIX | HMAC_PREFIX | PFX_PREFIX), Some(id), Some(_)) => Some(id),
            _ => None,
        }
    }
}

/// The login contract's domains, for the tests of these modules.
#[cfg(test)]
mod testing {
    /// Its IP domain.
    pub const IP: &[u8] = b"veil/ip/v1";
    /// Its device id domain.
    pub const DEVICE: &[u8] = b"veil/device_id/v1";
    /// Both, in its column order.
    pub const DOMAINS: &[&[u8]] = &[IP, DEVICE];
}

#[cfg(test)]
mod tests {
    use super::testing::{DEVICE, DOMAINS, IP};
    use super::*;
    use std::path::Path;

    #[test]
    fn masks_are_deterministic_for_one_key() {
        let ring = Keyring::generate();
        assert_eq!(
            ring.mask(MaskMode::Siv, IP, "10.0.0.1"),
            ring.mask(MaskMode::Siv, IP, "10.0.0.1")
        );
        assert_ne!(
            ring.mask(MaskMode::Siv, IP, "10.0.0.1"),
            ring.mask(MaskMode::Siv, IP, "10.0.0.2")
        );
    }

    #[test]
    fn masks_differ_between_keys_and_fields() {
        let one = Keyring::generate();
        let two = Keyring::generate();
        assert_ne!(
            one.mask(MaskMode::Siv, IP, "x"),
            two.mask(MaskMode::Siv, IP, "x")
        );
        assert_ne!(
            one.mask(MaskMode::Siv, IP, "x"),
            one.mask(MaskMode::Siv, DEVICE, "x")
        );
    }

    #[test]
    fn mask_names_its_key_and_round_trips() {
        let ring = Keyring::generate();
        let mask = ring.mask(MaskMode::Siv, DEVICE, "593-47-5928");
        assert!(mask.starts_with(&format!("siv1.{}.", ring.active().id())));
        assert!(!mask.contains("593"));
        assert_eq!(
            ring.reveal(&mask, DOMAINS),
            Ok((1, "593-47-5928".to_string()))
        );
    }

    #[test]
    fn longest_allowed_value_fits_varchar_256() {
        let ring = Keyring::generate();
        let mask = ring.mask(MaskMode::Siv, DEVICE, &"x".repeat(MAX_MASKED_VALUE_BYTES));
        assert!(mask.len() <= 256, "mask is {} chars", mask.len());
        assert!(mask.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn reveal_refuses_foreign_tampered_and_malformed_masks() {
        let ring = Keyring::generate();
        let other = Keyring::generate();
        let foreign = other.mask(MaskMode::Siv, IP, "1.2.3.4");
        assert!(matches!(
            ring.reveal(&foreign, DOMAINS),
            Err(RevealError::UnknownKey(_))
        ));

        let mask = ring.mask(MaskMode::Siv, IP, "1.2.3.4");
        // Change a character inside the payload: the last one may carry
        // unused bits, and changing those is a decoding error, not tampering.
        let mut tampered = mask.clone().into_bytes();
        let inside = tampered.len() - 5;
        tampered[inside] = if tampered[inside] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            ring.reveal(&tampered, DOMAINS),
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
                matches!(
                    ring.reveal(&altered, DOMAINS),
                    Err(RevealError::NotAuthentic(_))
                ),
                "{altered}"
            );
        }
        assert_eq!(ring.reveal("1.2.3.4", DOMAINS), Err(RevealError::NotAMask));
        assert_eq!(
            ring.reveal("siv1.x.!!", DOMAINS),
            Err(RevealError::NotAMask)
        );
    }

    #[test]
    fn keyring_json_round_trip_keeps_masks_stable() {
        let ring = Keyring::generate();
        let json = ring.to_json();
        let loaded = Keyring::from_json(&json, Path::new("test")).unwrap();
        assert_eq!(
            ring.mask(MaskMode::Siv, IP, "1.2.3.4"),
            loaded.mask(MaskMode::Siv, IP, "1.2.3.4")
        );
    }

    #[test]
    fn hmac_masks_are_deterministic_keyed_and_irreversible() {
        let ring = Keyring::generate();
        let mask = ring.mask(MaskMode::Hmac, IP, "10.0.0.1");
        assert_eq!(mask, ring.mask(MaskMode::Hmac, IP, "10.0.0.1"));
        assert!(mask.starts_with(&format!("hmac1.{}.", ring.active().id())));
        assert_ne!(
            mask,
            Keyring::generate().mask(MaskMode::Hmac, IP, "10.0.0.1")
        );
        assert_ne!(mask, ring.mask(MaskMode::Hmac, DEVICE, "10.0.0.1"));
        assert_eq!(ring.reveal(&mask, DOMAINS), Err(RevealError::Irreversible));
        assert!(mask.len() <= 256);
    }

    #[test]
    fn rotation_keeps_old_masks_readable_and_retire_forgets_them() {
        let mut ring = Keyring::generate();
        let old_id = ring.active().id().to_string();
        let old_mask = ring.mask(MaskMode::Siv, IP, "10.0.0.1");
        let new_id = ring.rotate();
        assert_eq!(ring.active().id(), new_id);
        assert_ne!(ring.mask(MaskMode::Siv, IP, "10.0.0.1"), old_mask);
        assert_eq!(ring.reveal(&old_mask, DOMAINS).unwrap().1, "10.0.0.1");
        let reloaded = Keyring::from_json(&ring.to_json(), Path::new("t")).unwrap();
        assert_eq!(reloaded.keys().count(), 2);
        assert_eq!(reloaded.active().id(), new_id);
        assert!(
            ring.retire(&new_id).is_err(),
            "the active key cannot be retired"
        );
        ring.retire(&old_id).unwrap();
        assert!(matches!(
            ring.reveal(&old_mask, DOMAINS),
            Err(RevealError::UnknownKey(_))
        ));
    }

    #[test]
    fn every_mask_a_value_can_have_covers_old_keys_and_every_mode() {
        let mut ring = Keyring::generate();
        let old_siv = ring.mask(MaskMode::Siv, IP, "10.0.0.1");
        let old_hmac = ring.mask(MaskMode::Hmac, IP, "10.0.0.1");
        let old_pfx = ring.mask_prefix_preserving(IP, "10.0.0.1");
        ring.rotate();
        let new_siv = ring.mask(MaskMode::Siv, IP, "10.0.0.1");
        let masks = ring.masks_under_every_key(IP, "10.0.0.1");
        assert_eq!(
            masks.len(),
            6,
            "two keys, three kinds of mask for an address"
        );
        assert_eq!(
            ring.masks_under_every_key(DEVICE, "d").len(),
            4,
            "no pfx for a non-address"
        );
        for mask in [&old_siv, &old_hmac, &old_pfx, &new_siv] {
            assert!(masks.contains(mask), "{mask} missing");
        }
        assert!(!masks.contains(&ring.mask(MaskMode::Siv, DEVICE, "10.0.0.1")));
        assert!(!ring
            .masks_under_every_key(IP, "10.0.0.2")
            .contains(&new_siv));
    }

    #[test]
    fn key_id_is_read_from_either_kind_of_mask() {
        assert_eq!(Keyring::key_id_of("siv1.ab12.xyz"), Some("ab12"));
        assert_eq!(Keyring::key_id_of("hmac1.cd34.xyz"), Some("cd34"));
        assert_eq!(Keyring::key_id_of("10.0.0.1"), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_value_round_trips_through_its_mask(value in "\\PC{0,128}", ip in any::<bool>()) {
                let ring = Keyring::generate();
                let domain = usize::from(!ip);
                let mask = ring.mask(MaskMode::Siv, DOMAINS[domain], &value);
                prop_assert!(mask.len() <= 256 || value.len() > MAX_MASKED_VALUE_BYTES);
                prop_assert_eq!(ring.reveal(&mask, DOMAINS), Ok((domain, value)));
            }
        }
    }
}
