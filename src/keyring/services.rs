//! The outside services a keyring may live in: a secret store (the whole
//! keyring, `--key-secret-id`) and a key management service (the data key
//! that opens an enveloped keyring). The keyring calls them through this
//! trait; `aws` implements it with Secrets Manager and KMS, and the
//! application hands that in, so this module names no driver.

use std::collections::HashMap;
use std::future::Future;

use zeroize::Zeroizing;

/// Where key material is kept outside veil.
pub trait KeyServices: Sync {
    /// The text of the secret `id` (a keyring file's JSON).
    fn secret_string(
        &self,
        id: &str,
    ) -> impl Future<Output = anyhow::Result<Zeroizing<String>>> + Send;

    /// A new AES-256 data key under `kms_key_id`: the plain key and its
    /// encrypted copy, bound to `context`.
    fn generate_data_key(
        &self,
        kms_key_id: &str,
        context: HashMap<String, String>,
    ) -> impl Future<Output = anyhow::Result<(Zeroizing<Vec<u8>>, Vec<u8>)>> + Send;

    /// The plain data key of `encrypted` (`context` None: version-1
    /// envelopes, made without one).
    fn decrypt(
        &self,
        kms_key_id: &str,
        encrypted: Vec<u8>,
        context: Option<HashMap<String, String>>,
    ) -> impl Future<Output = anyhow::Result<Zeroizing<Vec<u8>>>> + Send;
}
