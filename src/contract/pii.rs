//! The PII policy of a column: which mask (AES-SIV, HMAC, ipcrypt-pfx) in
//! which domain, how wide its masks can be, and the refusal of a column
//! that looks like personal data but says nothing of it.

use super::column::ColumnType;
use super::format::ColumnFile;
use super::plan::identifier;
use crate::keyring::MAX_KEY_ID_CHARS;

/// Longest plaintext (bytes) of an AES-SIV column when the contract gives
/// no `max_bytes`: its mask then fits varchar(256) with any key id.
pub const DEFAULT_SIV_MAX_BYTES: usize = crate::mask::MAX_MASKED_VALUE_BYTES;

/// How a PII column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// AES-SIV: deterministic, reversible with the key.
    Siv,
    /// HMAC-SHA256: deterministic, irreversible.
    Hmac,
    /// ipcrypt-pfx: deterministic, reversible, prefix-preserving (IP only).
    Pfx,
}

/// A PII column's mask: its kind and the domain bound into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pii {
    /// AES-SIV or HMAC.
    pub kind: MaskKind,
    /// Masks of one domain compare equal across columns and contracts.
    pub domain: String,
    /// `veil/<domain>/v1`: the associated data (AES-SIV) or label (HMAC).
    pub associated_data: Vec<u8>,
}

/// Words that, in a column's name or its pointer's last part, say the
/// value is personal data: such a column needs `pii`, or `pii: none` to
/// store it in clear on purpose.
const PII_WORDS: [&str; 16] = [
    "email",
    "phone",
    "ip",
    "ip_address",
    "ssn",
    "device_id",
    "address",
    "street",
    "first_name",
    "last_name",
    "full_name",
    "birth_date",
    "date_of_birth",
    "card_number",
    "iban",
    "passport",
];

/// The longest mask of a value of `max_bytes` bytes (any key id).
pub fn mask_chars(kind: MaskKind, max_bytes: usize) -> usize {
    let header = crate::mask::SIV_PREFIX
        .len()
        .max(crate::mask::HMAC_PREFIX.len())
        + MAX_KEY_ID_CHARS
        + 2;
    match kind {
        // base64url without padding of the 16-byte tag and the ciphertext
        MaskKind::Siv => header + (16 + max_bytes).div_ceil(3) * 4,
        MaskKind::Hmac => header + 43,
        // the longest canonical IPv6 text
        MaskKind::Pfx => header + 39,
    }
}

/// The name of a mask kind in the contract file.
pub fn kind_name(kind: MaskKind) -> &'static str {
    match kind {
        MaskKind::Siv => "siv",
        MaskKind::Hmac => "hmac",
        MaskKind::Pfx => "ipcrypt-pfx",
    }
}

pub(super) fn pii_of(
    file: &ColumnFile,
    name: &str,
    column_type: ColumnType,
) -> Result<Option<Pii>, String> {
    let kind = match file.pii.as_deref() {
        Some("siv") => MaskKind::Siv,
        Some("hmac") => MaskKind::Hmac,
        Some("ipcrypt-pfx") if column_type == ColumnType::Ip => MaskKind::Pfx,
        Some("ipcrypt-pfx") => {
            return Err(format!(
                "pii ipcrypt-pfx masks IP addresses only (this column is {}): use siv or hmac",
                column_type.name()
            ))
        }
        Some("none") => {
            if file.domain.is_some() {
                return Err(
                    "`domain` names a mask's domain, but `pii: none` stores the value in clear"
                        .into(),
                );
            }
            return Ok(None);
        }
        Some(other) => {
            return Err(format!(
                "pii {other:?} is not one of siv, hmac, ipcrypt-pfx, none"
            ))
        }
        None => {
            if file.domain.is_some() {
                return Err("`domain` without `pii`: say how to mask it (pii: siv or hmac)".into());
            }
            if let Some(word) = looks_like_pii(name, file.from.as_deref()) {
                return Err(format!(
                    "it looks like personal data ({word:?}) but has no mask: add `pii: siv` (reversible) or \
                     `pii: hmac` (irreversible), or `pii: none` to store it in clear on purpose"
                ));
            }
            return Ok(None);
        }
    };
    if matches!(
        column_type,
        ColumnType::Boolean | ColumnType::Jsonb | ColumnType::VersionMajor
    ) {
        return Err(format!(
            "a {} column cannot be masked (a boolean has two values, a jsonb no one text): \
             point `from` at the PII leaf instead",
            column_type.name()
        ));
    }
    let domain = identifier("the domain", file.domain.as_deref().unwrap_or(name))?;
    let associated_data = format!("veil/{domain}/v1").into_bytes();
    Ok(Some(Pii {
        kind,
        domain,
        associated_data,
    }))
}

fn looks_like_pii(name: &str, from: Option<&str>) -> Option<&'static str> {
    let leaf = from
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    PII_WORDS.iter().copied().find(|word| {
        let in_name = name == *word
            || name.ends_with(&format!("_{word}"))
            || name.starts_with(&format!("{word}_"));
        in_name || leaf == *word
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::compile_text as compile;
    use crate::contract::testing::{refusal, HEAD};

    #[test]
    fn a_pii_looking_column_without_a_mask_is_refused() {
        let text = format!("{HEAD}  - {{name: email, from: /user/email, type: text}}\n");
        assert!(refusal(&text).contains("pii: siv"), "{}", refusal(&text));
        let explicit =
            format!("{HEAD}  - {{name: email, from: /user/email, type: text, pii: none}}\n");
        assert!(compile(&explicit).is_ok());
    }

    #[test]
    fn masks_of_the_longest_value_fit_the_computed_width() {
        let keyring = crate::keyring::Keyring::generate();
        let value = "x".repeat(DEFAULT_SIV_MAX_BYTES);
        let mask = keyring.mask(crate::mask::MaskMode::Siv, b"veil/device_id/v1", &value);
        let long_id = MAX_KEY_ID_CHARS - keyring.active().id().len();
        assert!(mask.len() + long_id <= mask_chars(MaskKind::Siv, DEFAULT_SIV_MAX_BYTES));
        assert!(mask_chars(MaskKind::Siv, DEFAULT_SIV_MAX_BYTES) <= 256);
    }
}
