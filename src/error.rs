//! The configuration error: what any stage raises when a setting, a flag, a
//! URL or a key file is wrong. It ends the command with exit code 2 (see
//! `outcome`). A leaf module, so that every layer can raise it.

/// A configuration problem: veil refuses to start (exit code 2). The
/// message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
