//! Prefix-preserving IP masks (`pfx1.`, ipcrypt-pfx): addresses sharing a
//! prefix give masks sharing a prefix of the same length. Their key is
//! derived per domain, so they share none with AES-SIV or HMAC masks.

use std::net::IpAddr;

use ipcrypt_rs::IpcryptPfx;

use super::{derive_key, hmac_mask, RevealError, PFX_PREFIX};
use crate::keyring::{Keyring, MaskKey};

/// The ipcrypt-pfx cipher of a key for one domain: its 32-byte key is
/// derived from the key material by purpose and domain, so prefix-preserving
/// masks never share a key with AES-SIV or HMAC masks, nor across domains.
fn pfx_cipher(key: &MaskKey, associated_data: &[u8]) -> IpcryptPfx {
    let mut purpose = b"veil/ipcrypt-pfx-key/v1/".to_vec();
    purpose.extend_from_slice(associated_data);
    loop {
        let derived = derive_key(key, &purpose);
        let mut material = [0u8; IpcryptPfx::KEY_BYTES];
        material.copy_from_slice(&derived[..IpcryptPfx::KEY_BYTES]);
        // IpcryptPfx refuses (panics on) a key whose halves are equal; for
        // an HMAC output that has probability 2^-128, and derives again.
        if material[..16] != material[16..] {
            let cipher = IpcryptPfx::new(material);
            zeroize::Zeroize::zeroize(&mut material);
            return cipher;
        }
        purpose.push(0);
    }
}

/// The prefix-preserving mask (`pfx1.`) of an address under one key.
pub(super) fn pfx_mask(key: &MaskKey, associated_data: &[u8], address: IpAddr) -> String {
    let masked = pfx_cipher(key, associated_data).encrypt_ipaddr(address);
    format!("{PFX_PREFIX}.{}.{}", key.id(), masked.to_canonical())
}

impl Keyring {
    /// A prefix-preserving mask (`pfx1.<key id>.<address>`, ipcrypt-pfx) of
    /// an IP address: addresses sharing a prefix give masks sharing a
    /// prefix of the same length, so analysts can group by network.
    /// Deterministic and reversible with the key, but not authenticated
    /// (docs/security.md says what it reveals). A value that is not an
    /// address (the parser lets none through) gets an HMAC mask instead,
    /// never its clear text.
    pub fn mask_prefix_preserving(&self, associated_data: &[u8], address: &str) -> String {
        match address.parse::<IpAddr>() {
            Ok(address) => pfx_mask(self.active(), associated_data, address.to_canonical()),
            Err(_) => hmac_mask(self.active(), associated_data, address),
        }
    }

    /// Opens a prefix-preserving mask bound to `associated_data`. Nothing
    /// authenticates it: any address decrypts to some address, so the
    /// domain must come from the column, and a forged mask opens to noise.
    pub fn open_prefix_preserving(
        &self,
        mask: &str,
        associated_data: &[u8],
    ) -> Result<String, RevealError> {
        let mut parts = mask.trim().splitn(3, '.');
        let (Some(PFX_PREFIX), Some(key_id), Some(address)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(RevealError::NotAMask);
        };
        let key = self
            .find(key_id)
            .ok_or_else(|| RevealError::UnknownKey(key_id.to_string()))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| RevealError::NotAuthentic(key_id.to_string()))?;
        let clear = pfx_cipher(key, associated_data).decrypt_ipaddr(address);
        Ok(clear.to_canonical().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pfx_address(mask: &str) -> u32 {
        let text = mask.splitn(3, '.').nth(2).unwrap();
        u32::from(text.parse::<std::net::Ipv4Addr>().unwrap())
    }

    #[test]
    fn prefix_preserving_masks_share_exactly_the_prefixes_their_addresses_share() {
        let ring = Keyring::generate();
        let data = b"veil/client_ip/v1";
        let a = ring.mask_prefix_preserving(data, "203.0.113.7");
        let b = ring.mask_prefix_preserving(data, "203.0.113.99");
        let c = ring.mask_prefix_preserving(data, "198.51.100.7");

        assert!(a.starts_with(&format!("pfx1.{}.", ring.active().id())));
        assert_eq!(a, ring.mask_prefix_preserving(data, "::ffff:203.0.113.7"));
        // 203.0.113.x share 24 bits; 203 and 198 share their first 4 (11001011, 11000110).
        let (a, b, c) = (pfx_address(&a), pfx_address(&b), pfx_address(&c));
        assert_eq!(a >> 8, b >> 8);
        assert_ne!(a, b);
        assert_eq!(a >> 28, c >> 28);
        assert_ne!(a >> 27, c >> 27);
    }

    #[test]
    fn prefix_preserving_masks_open_with_their_key_and_domain_only() {
        let mut ring = Keyring::generate();
        let data = b"veil/client_ip/v1";
        let mask = ring.mask_prefix_preserving(data, "2001:DB8::1");
        let other_domain = ring.mask_prefix_preserving(b"veil/other/v1", "2001:db8::1");
        ring.rotate();

        assert_ne!(mask, other_domain);
        assert_eq!(
            ring.open_prefix_preserving(&mask, data).unwrap(),
            "2001:db8::1"
        );
        assert_ne!(
            ring.open_prefix_preserving(&mask, b"veil/other/v1")
                .unwrap(),
            "2001:db8::1"
        );
        assert_ne!(
            mask,
            ring.mask_prefix_preserving(data, "2001:db8::1"),
            "a new key, a new mask"
        );
        assert_eq!(Keyring::key_id_of(&mask).map(str::len), Some(8));
    }
}
