//! The keyring: the keys that make and open masks, their file format, and
//! every place a keyring can come from. The masking itself (`crate::mask`)
//! only uses keys; it never reads or writes them.
//!
//! - `ring`: the `Keyring` type, its JSON format, key id rules;
//! - `file`: keyring files (0600, never overwritten, atomic replace,
//!   refused when others can read them);
//! - `envelope`: keyrings whose material only AWS KMS can open;
//! - `source`: file, `VEIL_KEY`, a secret, the per-user default;
//! - `services`: the secret store and the KMS a keyring may live in, as a
//!   trait the `aws` adapter implements (this module names no driver).

mod envelope;
mod file;
mod ring;
mod services;
mod source;

pub use envelope::{list, parse, protection_of, render, KeyInfo, Protection, ENCRYPTION_CONTEXT};
pub use file::{read_key_file, replace, write_private_file, KeyFileError};
pub(crate) use ring::fill_random;
pub use ring::{json_problem, Keyring, MaskKey, KEY_BYTES, MAX_KEY_ID_CHARS};
pub use services::KeyServices;
pub use source::{env_key, load, read_text, take_env_key, KeyLocation, VEIL_KEY_ENV};
