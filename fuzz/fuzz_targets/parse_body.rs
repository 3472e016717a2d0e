//! Fuzzes the contract parser with arbitrary bytes on the built-in login
//! contract: it must never panic, its one-pass reader must agree with
//! reading a parsed `serde_json::Value`, and whatever it accepts must
//! satisfy the contract (column widths, no NUL, a canonical IP, a device id
//! that fits a mask) and mask and reveal cleanly.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use veil::contract::values::canonical_ip;
use veil::contract::{self, Cell, ColumnType, Plan, SqsFacts};
use veil::keyring::Keyring;
use veil::mask::{MaskMode, MAX_MASKED_VALUE_BYTES};

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(Keyring::generate)
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(contract::builtin_login)
}

fuzz_target!(|body: &[u8]| {
    let plan = plan();
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => {
            assert_eq!(plan.paths.extract(body), Some(plan.paths.from_value(&value)))
        }
        _ => assert_eq!(plan.paths.extract(body), None),
    }
    let facts = SqsFacts {
        message_id: "m",
        sent_ms: Some(1_764_000_000_000),
        first_receive_ms: None,
        attributes: &[],
    };
    let Ok(event) = contract::parse(plan, body, facts) else {
        return;
    };
    let login = &plan.contracts[event.contract];
    for (cell, column) in event.cells.iter().zip(&login.columns) {
        let Cell::Text(text) = cell else {
            assert!(!column.required || *cell != Cell::Null, "{}", column.name);
            continue;
        };
        assert!(!text.contains('\0'));
        assert!(!column.required || !text.is_empty(), "{}", column.name);
        assert!(column.max_chars.is_none_or(|max| text.chars().count() <= max));
        assert!(column.max_bytes.is_none_or(|max| text.len() <= max));
        if column.column_type == ColumnType::Ip {
            assert_eq!(canonical_ip(text).as_deref(), Some(text.as_str()));
        }
        if let Some(pii) = &column.pii {
            assert!(text.len() <= MAX_MASKED_VALUE_BYTES);
            let ring = keyring();
            let mask = ring.mask(MaskMode::Siv, &pii.associated_data, text);
            assert!(mask.len() <= 256);
            let opened = ring.reveal(&mask, &[pii.associated_data.as_slice()]);
            assert_eq!(opened.unwrap().1, *text);
        }
    }
});
