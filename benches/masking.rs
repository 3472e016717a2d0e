//! Masking cost per event: both PII fields (IP and device id), AES-SIV and
//! HMAC, plus the full parse-validate-mask step of the pipeline. Run with
//! `cargo bench --bench masking`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use veil::event::canonical_ip;
use veil::keyring::Keyring;
use veil::mask::{Field, MaskMode};
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
                keyring.mask(Field::Ip, &ip),
                keyring.mask(Field::DeviceId, black_box("593-47-5928")),
            )
        })
    });
    group.bench_function("hmac_both_fields", |b| {
        b.iter(|| {
            let ip = canonical_ip(black_box("199.172.111.135")).unwrap();
            (
                keyring.mask_irreversibly(Field::Ip, &ip),
                keyring.mask_irreversibly(Field::DeviceId, black_box("593-47-5928")),
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
    };
    // The message is moved into `prepare` (as in the pipeline), so each
    // iteration gets a copy made outside the timing.
    group.bench_function("parse_validate_mask", |b| {
        b.iter_batched(
            || message.clone(),
            |message| prepare(&keyring, MaskMode::Siv, None, black_box(message)),
            BatchSize::SmallInput,
        )
    });
    let mask = keyring.mask(Field::Ip, "199.172.111.135");
    group.bench_function("reveal_one", |b| {
        b.iter(|| keyring.reveal(black_box(&mask)))
    });
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
