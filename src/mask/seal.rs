//! Quarantined bodies, sealed with the active key: AES-SIV with a random
//! 16-byte nonce as an extra header, so equal junk bodies do not give equal
//! ciphertexts.

use super::{cipher, RevealError};
use crate::keyring::Keyring;

const BODY_NONCE_BYTES: usize = 16;
const BODY_HEADER: &[u8] = b"veil/quarantine-body/v1";

impl Keyring {
    /// Encrypts a raw message body for the quarantine (randomized, authenticated).
    pub fn seal_body(&self, body: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; BODY_NONCE_BYTES];
        crate::keyring::fill_random(&mut nonce);
        let ciphertext = cipher(self.active())
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
        cipher(key)
            .decrypt([BODY_HEADER, nonce], ciphertext)
            .map_err(|_| RevealError::NotAuthentic(key_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
