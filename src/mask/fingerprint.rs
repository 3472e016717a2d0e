//! The audit's fingerprints of looked-up values (`fp1.`): keyed, one way,
//! and never equal to a mask, so rows cannot be joined to the audit and
//! nothing in the audit opens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

use super::{derive_key, keyed_digest};
use crate::keyring::{Keyring, MaskKey};

/// Prefix of the audit's fingerprints of looked-up values.
pub const FINGERPRINT_PREFIX: &str = "fp1";

/// The key of audit fingerprints, derived by purpose so that a fingerprint
/// never equals a mask (rows cannot be joined to the audit, and nothing in
/// the audit opens).
fn fingerprint_key(key: &MaskKey) -> Zeroizing<Vec<u8>> {
    derive_key(key, b"veil/audit-fingerprint-key/v1")
}

impl Keyring {
    /// A keyed one-way fingerprint of a looked-up value, for the audit of
    /// `find` and `forget`: `fp1.<key id>.<base64url>`, HMAC-SHA256 (128
    /// bits kept) of the field and the value under a key derived from the
    /// active key for this purpose alone. It cannot be opened, matches no
    /// mask, and says nothing without the key; a key holder can check
    /// whether a given value was looked up by computing it again.
    pub fn audit_fingerprint(&self, field: &str, value: &str) -> String {
        let key = self.active();
        let digest = keyed_digest(&fingerprint_key(key), field.as_bytes(), value);
        format!(
            "{FINGERPRINT_PREFIX}.{}.{}",
            key.id(),
            URL_SAFE_NO_PAD.encode(&digest[..16])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::testing::{DOMAINS, IP};

    #[test]
    fn audit_fingerprints_are_keyed_one_way_and_match_no_mask() {
        let ring = Keyring::generate();
        let fingerprint = ring.audit_fingerprint("ip", "10.0.0.1");
        assert_eq!(fingerprint, ring.audit_fingerprint("ip", "10.0.0.1"));
        assert!(fingerprint.starts_with(&format!("fp1.{}.", ring.active().id())));
        assert_ne!(fingerprint, ring.audit_fingerprint("ip", "10.0.0.2"));
        assert_ne!(fingerprint, ring.audit_fingerprint("device_id", "10.0.0.1"));
        assert_ne!(
            fingerprint,
            Keyring::generate().audit_fingerprint("ip", "10.0.0.1")
        );
        assert!(ring.reveal(&fingerprint, DOMAINS).is_err());
        assert!(!ring
            .masks_under_every_key(IP, "10.0.0.1")
            .iter()
            .any(|mask| mask.ends_with(fingerprint.rsplit('.').next().unwrap())));
    }
}
