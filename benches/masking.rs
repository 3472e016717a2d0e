//! Masking cost per event: both PII fields of a login (IP and device id),
//! AES-SIV and HMAC, plus the full parse-validate-mask step of the
//! pipeline: the built-in login contract and a 20-column nested contract.
//! Run with `cargo bench --bench masking`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use veil::contract::values::canonical_ip;
use veil::keyring::Keyring;
use veil::mask::MaskMode;

const IP: &[u8] = b"veil/ip/v1";
const DEVICE_ID: &[u8] = b"veil/device_id/v1";
use veil::pipeline::prepare;
use veil::sqs::{QueueMessage, Receipt};

const BODY: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;

fn masking(c: &mut Criterion) {
    let keyring = Keyring::generate();
    let mut group = c.benchmark_group("per_event");
    group.bench_function("siv_both_fields", |b| {
        b.iter(|| {
            let ip = canonical_ip(black_box("199.172.111.135")).unwrap();
            (
                keyring.mask(MaskMode::Siv, IP, &ip),
                keyring.mask(MaskMode::Siv, DEVICE_ID, black_box("593-47-5928")),
            )
        })
    });
    group.bench_function("hmac_both_fields", |b| {
        b.iter(|| {
            let ip = canonical_ip(black_box("199.172.111.135")).unwrap();
            (
                keyring.mask(MaskMode::Hmac, IP, &ip),
                keyring.mask(MaskMode::Hmac, DEVICE_ID, black_box("593-47-5928")),
            )
        })
    });
    let message = QueueMessage {
        receipt: Receipt {
            message_id: "m".into(),
            receipt_handle: "r".into(),
        },
        body: BODY.into(),
        sent_timestamp_ms: Some(1_764_000_000_000),
        receive_count: Some(1),
        first_receive_ms: None,
        attributes: Vec::new(),
    };
    // The message is moved into `prepare` (as in the pipeline), so each
    // iteration gets a copy made outside the timing.
    let login_contract = veil::contract::builtin_login();
    group.bench_function("parse_validate_mask_login_contract", |b| {
        b.iter_batched(
            || message.clone(),
            |message| {
                prepare(
                    &keyring,
                    MaskMode::Siv,
                    None,
                    &login_contract,
                    black_box(message),
                )
            },
            BatchSize::SmallInput,
        )
    });
    let wide = wide_contract();
    let wide_message = QueueMessage {
        body: WIDE_BODY.into(),
        ..message.clone()
    };
    group.bench_function("parse_validate_mask_20_column_nested_contract", |b| {
        b.iter_batched(
            || wide_message.clone(),
            |message| prepare(&keyring, MaskMode::Siv, None, &wide, black_box(message)),
            BatchSize::SmallInput,
        )
    });
    let mask = keyring.mask(MaskMode::Siv, IP, "199.172.111.135");
    group.bench_function("reveal_one", |b| {
        b.iter(|| keyring.reveal(black_box(&mask), &[IP, DEVICE_ID]))
    });
    group.finish();
}

/// 20 columns, nested two levels, 5 of them masked (3 AES-SIV, 1 HMAC, 1 IP).
const WIDE_CONTRACT: &str = r#"
contract: wide
version: 1
columns:
  - {name: event_id, from: /id, type: uuid, required: true}
  - {name: masked_email, from: /user/email, type: text, normalize: lowercase, pii: siv, domain: email, required: true}
  - {name: masked_phone, from: /user/phone, type: text, pii: siv, domain: phone}
  - {name: masked_street, from: /user/address/street, type: text, pii: siv, domain: street}
  - {name: masked_ip, from: /client/ip, type: ip, pii: siv, domain: ip}
  - {name: masked_card, from: /payment/card, type: text, pii: hmac, domain: card}
  - {name: city, from: /user/address/city, type: text, max_chars: 64}
  - {name: country, from: /user/address/country, type: text, pattern: '[A-Z]{2}'}
  - {name: plan, from: /plan, type: text, enum: [free, pro, team]}
  - {name: amount, from: /payment/amount, type: numeric, min: 0}
  - {name: currency, from: /payment/currency, type: text, enum: [EUR, USD]}
  - {name: items, from: /payment/items, type: integer, min: 1}
  - {name: first_order, from: /first_order, type: boolean}
  - {name: born, from: /user/born, type: date}
  - {name: at, from: /at, type: timestamptz, required: true}
  - {name: app, from: /client/app, type: version_major}
  - {name: agent, from: /client/agent, type: text, max_chars: 256}
  - {name: extra, from: /extra, type: jsonb}
  - {name: message_id, sqs: message_id, type: text}
  - {name: received_on, sqs: sent_timestamp, type: date}
"#;

const WIDE_BODY: &str = r#"{"id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "user": {"email": "Ann@Example.com",
 "phone": "+44 20 7946 0958", "born": "1985-02-03", "address": {"street": "1 High St", "city": "London",
 "country": "GB"}}, "client": {"ip": "2001:db8::1", "app": "2.3.0", "agent": "Mozilla/5.0"},
 "payment": {"card": "fp_9f8e7d", "amount": 49.9, "currency": "EUR", "items": 3}, "plan": "pro",
 "first_order": true, "at": "2026-12-04T09:30:00Z", "extra": {"campaign": "winter"}}"#;

fn wide_contract() -> veil::contract::Plan {
    let dir = std::env::temp_dir().join(format!("veil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wide.yaml");
    std::fs::write(&path, WIDE_CONTRACT).unwrap();
    veil::contract::load(&path).unwrap()
}

criterion_group!(benches, masking);
criterion_main!(benches);
