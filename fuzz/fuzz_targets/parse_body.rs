//! Fuzzes the body parser with arbitrary bytes: it must never panic, its
//! fast path must agree with the generic `serde_json::Value` one, and
//! whatever it accepts must satisfy the contract (column widths, a
//! canonical IP, a device id that fits a mask) and mask and reveal cleanly.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veil::event::{self, DEVICE_TYPE_MAX_CHARS, LOCALE_MAX_CHARS, USER_ID_MAX_CHARS};
use veil::event::canonical_ip;
use veil::keyring::Keyring;
use veil::mask::{Field, MAX_MASKED_VALUE_BYTES};

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(Keyring::generate)
}

fuzz_target!(|body: &[u8]| {
    let parsed = event::parse(body);
    assert_eq!(parsed, event::parse_generic(body));
    let Ok(event) = parsed else {
        return;
    };
    assert!(!event.user_id.is_empty() && event.user_id.chars().count() <= USER_ID_MAX_CHARS);
    assert!(event.device_type.chars().count() <= DEVICE_TYPE_MAX_CHARS);
    assert!(event
        .locale
        .as_ref()
        .is_none_or(|l| l.chars().count() <= LOCALE_MAX_CHARS));
    assert!(!event.device_id.is_empty() && event.device_id.len() <= MAX_MASKED_VALUE_BYTES);
    for text in [
        &event.user_id,
        &event.device_type,
        &event.ip,
        &event.device_id,
    ] {
        assert!(!text.contains('\0'));
    }
    assert_eq!(canonical_ip(&event.ip).as_deref(), Some(event.ip.as_str()));
    let ring = keyring();
    let mask = ring.mask(Field::DeviceId, &event.device_id);
    assert!(mask.len() <= 256);
    assert_eq!(ring.reveal(&mask).unwrap().1, event.device_id);
});
