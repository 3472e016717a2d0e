//! Prepare: one received message becomes what to record. The body is parsed
//! and validated by its contract (`contract::parse`), the PII masked
//! (`mask`), or, for a body that is not a valid event, sealed for the
//! quarantine with a reason code. The raw
//! body is dropped here unless it is a valid event's, which is kept until
//! its row commits: should Postgres refuse the row, that body goes to the
//! quarantine instead (`db_rejected`).

use chrono::{DateTime, Utc};

use std::borrow::Cow;

use crate::contract::{self, Cell, MaskKind, ParsedEvent, Plan, SqsFacts};
use crate::keyring::Keyring;
use crate::mask::MaskMode;
use crate::record::{Prepared, QuarantineEntry, Record, RejectReason, Row};
use crate::sqs::{QueueMessage, Receipt};

use super::flight::{Delivery, InFlight};

/// One received message, parsed and masked, on its way to a writer.
pub struct Item {
    /// What a delete or a release needs.
    pub receipt: Receipt,
    /// What to record.
    pub prepared: Prepared,
    /// The raw body of a valid event, until its row commits.
    pub original: Option<String>,
    /// `ApproximateReceiveCount` at this delivery.
    pub receive_count: Option<u32>,
    /// What this item counts against `--max-in-flight-bytes`.
    pub bytes: usize,
}

impl Item {
    /// What is left of the item once it is recorded or given up: its
    /// receipt, counted as what it still holds.
    pub fn into_delivery(self) -> Delivery {
        Delivery {
            bytes: delivery_bytes(&self.receipt),
            receipt: self.receipt,
        }
    }

    /// Items that will not be recorded (shutdown, a fatal error, no writer
    /// left) become deliveries to give back: each first returns to the
    /// bound the bytes only its body and row used, so that finishing the
    /// deliveries frees everything the items held.
    pub fn give_up(items: Vec<Item>, flight: &InFlight) -> Vec<Delivery> {
        flight.shrink(items.iter().map(Item::droppable_bytes).sum());
        items.into_iter().map(Item::into_delivery).collect()
    }

    /// Bytes freed when only the receipt is kept.
    pub fn droppable_bytes(&self) -> usize {
        self.bytes.saturating_sub(delivery_bytes(&self.receipt))
    }

    /// Postgres refused this item's row although it passed validation: it
    /// goes to the quarantine (`db_rejected`) with its original body, named
    /// as its contract names its entries.
    pub fn reject_by_database(&mut self, keyring: &Keyring, plan: &Plan) {
        let contract = match &self.prepared.record {
            Record::Row(row) => plan.contracts[row.contract].quarantine_contract.clone(),
            Record::Quarantine(entry) => entry.contract.clone(),
        };
        let body = self.original.take().unwrap_or_default();
        let mut entry = quarantine_entry(
            keyring,
            body.as_bytes(),
            self.prepared.sent_ms,
            self.receive_count,
            RejectReason::DbRejected,
            None,
        );
        entry.contract = contract;
        self.prepared.record = Record::Quarantine(entry);
    }
}

/// What a delivery counts once only its receipt is held.
fn delivery_bytes(receipt: &Receipt) -> usize {
    std::mem::size_of::<Delivery>() + receipt.heap_bytes()
}

/// Delivered more than `max_receives` times: logged, to be quarantined.
fn over_limit(max_receives: Option<u32>, receive_count: Option<u32>, receipt: &Receipt) -> bool {
    let over = max_receives
        .zip(receive_count)
        .is_some_and(|(max, count)| count > max);
    if over {
        tracing::warn!(message_id = %receipt.message_id, receive_count, "message received too many times; quarantining it");
    }
    over
}

/// Wraps a prepared record with its receipt, counting its bytes.
fn item(
    receipt: Receipt,
    sent_ms: i64,
    record: Record,
    original: Option<String>,
    receive_count: Option<u32>,
) -> Item {
    let prepared = Prepared {
        message_id: receipt.message_id.clone(),
        sent_ms,
        record,
    };
    let bytes = std::mem::size_of::<Item>()
        + receipt.heap_bytes()
        + prepared_bytes(&prepared)
        + original.as_ref().map_or(0, String::len);
    Item {
        receipt,
        prepared,
        original,
        receive_count,
        bytes,
    }
}

/// Prepares one message by the plan: the body is parsed by its contract
/// and each PII column masked in its domain; a rejection is sealed for the
/// quarantine, named as its contract says (`quarantine:`). A message
/// delivered more than `max_receives` times is quarantined as
/// `too_many_receives` whatever its body, so one that keeps failing cannot
/// be redelivered forever.
pub fn prepare(
    keyring: &Keyring,
    mode: MaskMode,
    max_receives: Option<u32>,
    plan: &Plan,
    message: QueueMessage,
) -> Item {
    let QueueMessage {
        receipt,
        body,
        sent_timestamp_ms,
        receive_count,
        first_receive_ms,
        attributes,
    } = message;
    let sent_ms = sent_timestamp_ms.unwrap_or(0);
    let facts = SqsFacts {
        message_id: &receipt.message_id,
        sent_ms: sent_timestamp_ms,
        first_receive_ms,
        attributes: &attributes,
    };
    let parsed = if over_limit(max_receives, receive_count, &receipt) {
        Err(contract::ContractRejection {
            reason: RejectReason::TooManyReceives,
            contract: None,
            column: None,
        })
    } else {
        contract::parse(plan, body.as_bytes(), facts)
    };
    match parsed {
        Ok(event) => {
            let record = Record::Row(masked(keyring, mode, plan, event));
            item(receipt, sent_ms, record, Some(body), receive_count)
        }
        Err(rejection) => {
            let routed = rejection.contract.map(|index| &plan.contracts[index]);
            let field = rejection.column.zip(routed).map(|(column, contract)| {
                Cow::Owned(contract.columns[column].quarantine_field.clone())
            });
            let mut entry = quarantine_entry(
                keyring,
                body.as_bytes(),
                sent_ms,
                receive_count,
                rejection.reason,
                field,
            );
            entry.contract = routed.and_then(|contract| contract.quarantine_contract.clone());
            item(
                receipt,
                sent_ms,
                Record::Quarantine(entry),
                None,
                receive_count,
            )
        }
    }
}

/// A parsed event with each PII cell replaced by its mask. `--mask-mode
/// hmac` makes every mask irreversible.
fn masked(keyring: &Keyring, mode: MaskMode, plan: &Plan, event: ParsedEvent) -> Row {
    let contract = &plan.contracts[event.contract];
    let cells = event
        .cells
        .into_iter()
        .zip(&contract.columns)
        .map(|(cell, column)| match (&column.pii, cell.mask_input()) {
            (Some(pii), Some(value)) => {
                let data = &pii.associated_data;
                Cell::Text(match (mode, pii.kind) {
                    (MaskMode::Siv, MaskKind::Siv) => keyring.mask(mode, data, &value),
                    (MaskMode::Siv, MaskKind::Pfx) => keyring.mask_prefix_preserving(data, &value),
                    _ => keyring.mask(MaskMode::Hmac, data, &value),
                })
            }
            _ => cell,
        })
        .collect();
    Row {
        contract: event.contract,
        cells,
    }
}

/// Heap bytes a prepared record holds.
fn prepared_bytes(prepared: &Prepared) -> usize {
    prepared.message_id.len()
        + match &prepared.record {
            Record::Row(row) => row.cells.iter().map(Cell::heap_bytes).sum(),
            Record::Quarantine(entry) => entry.body_sealed.len() + entry.key_id.len(),
        }
}

fn sent_at(sent_ms: i64) -> Option<DateTime<Utc>> {
    (sent_ms != 0)
        .then(|| DateTime::<Utc>::from_timestamp_millis(sent_ms))
        .flatten()
}

fn quarantine_entry(
    keyring: &Keyring,
    body: &[u8],
    sent_ms: i64,
    receive_count: Option<u32>,
    reason: RejectReason,
    field: Option<Cow<'static, str>>,
) -> QuarantineEntry {
    QuarantineEntry {
        reason,
        field,
        sent_at: sent_at(sent_ms),
        receive_count: receive_count.and_then(|c| i32::try_from(c).ok()),
        key_id: keyring.active().id().to_string(),
        body_sealed: keyring.seal_body(body),
        body_bytes: i32::try_from(body.len()).unwrap_or(i32::MAX),
        contract: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str, receive_count: u32) -> QueueMessage {
        QueueMessage {
            receipt: Receipt {
                message_id: "m-1".into(),
                receipt_handle: "r-1".into(),
            },
            body: body.into(),
            sent_timestamp_ms: Some(1_764_000_000_000),
            receive_count: Some(receive_count),
            first_receive_ms: None,
            attributes: Vec::new(),
        }
    }

    const EVENT: &str = r#"{"user_id": "u", "app_version": "2.3.0", "device_type": "ios",
        "ip": "10.0.0.1", "locale": null, "device_id": "593-47-5928"}"#;

    fn login(keyring: &Keyring, max_receives: Option<u32>, message: QueueMessage) -> Item {
        prepare(
            keyring,
            MaskMode::Siv,
            max_receives,
            &contract::builtin_login(),
            message,
        )
    }

    fn quarantined(item: &Item) -> &QuarantineEntry {
        match &item.prepared.record {
            Record::Quarantine(entry) => entry,
            Record::Row(_) => panic!("quarantined"),
        }
    }

    #[tokio::test]
    async fn items_given_up_give_all_their_bytes_back_once_finished() {
        let keyring = Keyring::generate();
        let flight = InFlight::new(10, 1 << 20, Default::default());
        let items: Vec<Item> = ["m-1", "m-2"]
            .iter()
            .map(|id| {
                let mut message = message(EVENT, 1);
                message.receipt.message_id = id.to_string();
                message.receipt.receipt_handle = format!("r-{id}");
                login(&keyring, None, message)
            })
            .collect();
        let reservation = flight.reserve(2, 1 << 16).await;
        let held: Vec<(&Receipt, usize)> = items.iter().map(|i| (&i.receipt, i.bytes)).collect();
        flight.hold(reservation, &held).await;
        assert!(flight.bytes_in_use() > 0);

        let deliveries = Item::give_up(items, &flight);
        flight.finish(&deliveries);

        assert_eq!((flight.held(), flight.bytes_in_use()), (0, 0));
    }

    #[test]
    fn a_valid_event_keeps_its_body_until_commit_and_junk_keeps_only_the_seal() {
        let keyring = Keyring::generate();

        let row = login(&keyring, None, message(EVENT, 1));
        let junk = login(&keyring, None, message(&"x".repeat(5_000), 1));

        assert!(matches!(row.prepared.record, Record::Row(_)));
        assert_eq!(row.original.as_deref(), Some(EVENT));
        assert!(row.bytes >= EVENT.len());
        let entry = quarantined(&junk);
        assert_eq!(entry.reason, RejectReason::NotJson);
        assert!(junk.original.is_none(), "the raw body is dropped");
        assert!(junk.bytes >= entry.body_sealed.len());
        assert!(junk.droppable_bytes() >= 5_000);
    }

    #[test]
    fn too_many_receives_is_quarantined_whatever_the_body() {
        let keyring = Keyring::generate();
        let item = login(&keyring, Some(3), message(EVENT, 4));
        assert_eq!(quarantined(&item).reason, RejectReason::TooManyReceives);
    }

    #[test]
    fn a_row_postgres_refuses_goes_to_the_quarantine_with_its_original_body() {
        let keyring = Keyring::generate();
        let plan = contract::builtin_login();
        let mut item = login(&keyring, None, message(EVENT, 1));

        item.reject_by_database(&keyring, &plan);

        let entry = quarantined(&item);
        assert_eq!(
            (entry.reason, entry.contract.as_deref()),
            (RejectReason::DbRejected, None),
            "the login contract names no contract, as before it was one"
        );
        let opened = keyring
            .open_body(&entry.key_id, &entry.body_sealed)
            .unwrap();
        assert_eq!(opened, EVENT.as_bytes());
        assert_eq!(item.prepared.message_id, "m-1", "the item stays whole");
    }

    /// A fixed key (64 bytes 0x00..0x3f) under id "pinned".
    fn pinned_keyring() -> Keyring {
        use base64::Engine;
        let material: Vec<u8> = (0u8..64).collect();
        let json = format!(
            r#"{{"version":1,"active":"pinned","keys":[{{"id":"pinned","created_at":"","algorithm":"AES-256-SIV","material_base64":"{}"}}]}}"#,
            base64::engine::general_purpose::STANDARD.encode(material)
        );
        Keyring::from_json(&json, std::path::Path::new("pinned")).unwrap()
    }

    #[test]
    fn the_builtin_login_contract_makes_the_masks_and_row_of_before() {
        let keyring = pinned_keyring();
        let body = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0",
            "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;

        let item = login(&keyring, None, message(body, 1));

        let Record::Row(row) = &item.prepared.record else {
            panic!("a row")
        };
        // Pinned: a change here changes every mask already stored. Computed
        // independently with Python's `cryptography` (AESSIV(key).encrypt(
        // value, [b"veil/ip/v1"]), base64url without padding).
        let expected = vec![
            Cell::Text("424cdd21-063a-43a7-b91b-7ca1a833afae".into()),
            Cell::Text("android".into()),
            Cell::Text("siv1.pinned.4Ot3AL2cXmD2envd8ZooPFTOFcXOFXPkIu5wSJIbaQ".into()),
            Cell::Text("siv1.pinned.sjNK5sagNwm1gYL5B9-qKSXoT4pOynbsNFT4".into()),
            Cell::Text("RU".into()),
            Cell::Integer(2),
            Cell::Date(chrono::NaiveDate::from_ymd_opt(2025, 11, 24).unwrap()),
        ];
        assert_eq!(row.cells, expected);
    }

    #[test]
    fn a_login_rejection_names_the_body_field_and_no_contract_as_before() {
        let keyring = Keyring::generate();
        let bad_ip = EVENT.replace("10.0.0.1", "10.0.0.999");

        let item = login(&keyring, None, message(&bad_ip, 1));

        let entry = quarantined(&item);
        assert_eq!(
            (
                entry.reason,
                entry.field.as_deref(),
                entry.contract.as_deref()
            ),
            (RejectReason::BadIp, Some("ip"), None)
        );
    }

    #[test]
    fn a_contract_rejection_names_its_contract_and_column_by_default() {
        let keyring = Keyring::generate();
        let plan = contract::compile_text(
            "contract: signup\nversion: 1\ncolumns:\n  - {name: seen_ip, from: /net/ip, type: ip, pii: hmac}\n",
        )
        .unwrap();

        let item = prepare(
            &keyring,
            MaskMode::Siv,
            None,
            &plan,
            message(r#"{"net": {"ip": "nope"}}"#, 1),
        );
        let mut refused = login(&keyring, None, message(EVENT, 1));
        refused.prepared.record = Record::Row(Row {
            contract: 0,
            cells: Vec::new(),
        });
        refused.reject_by_database(&keyring, &plan);

        let entry = quarantined(&item);
        assert_eq!(
            (
                entry.reason,
                entry.field.as_deref(),
                entry.contract.as_deref()
            ),
            (RejectReason::BadIp, Some("seen_ip"), Some("signup"))
        );
        assert_eq!(quarantined(&refused).contract.as_deref(), Some("signup"));
    }

    #[test]
    fn every_column_gets_cells_of_the_kind_it_is_bound_as() {
        use crate::contract::Bind;
        let plan = contract::compile_text(
            "contract: every\nversion: 1\ncolumns:\n\
             - {name: t, from: /t, type: text}\n\
             - {name: i, from: /i, type: integer}\n\
             - {name: b, from: /b, type: bigint}\n\
             - {name: n, from: /n, type: numeric}\n\
             - {name: f, from: /f, type: boolean}\n\
             - {name: d, from: /d, type: date}\n\
             - {name: ts, from: /ts, type: timestamptz}\n\
             - {name: u, from: /u, type: uuid}\n\
             - {name: a, from: /a, type: ip}\n\
             - {name: v, from: /v, type: version_major}\n\
             - {name: j, from: /j, type: jsonb}\n\
             - {name: missing, from: /nothing, type: integer}\n\
             - {name: sent_on, sqs: sent_timestamp, type: date}\n\
             - {name: sent_at, sqs: sent_timestamp, type: timestamptz}\n\
             - {name: sent_ms, sqs: sent_timestamp, type: bigint}\n\
             - {name: masked_t, from: /t, type: text, pii: siv}\n\
             - {name: masked_i, from: /i, type: integer, pii: hmac}\n\
             - {name: masked_d, from: /d, type: date, pii: siv}\n\
             - {name: masked_a, from: /a, type: ip, pii: ipcrypt-pfx}\n",
        )
        .unwrap();
        let body = r#"{"t": "x", "i": 1, "b": 2, "n": 1.5, "f": true, "d": "2026-01-02",
            "ts": "2026-01-02T03:04:05Z", "u": "424cdd21-063a-43a7-b91b-7ca1a833afae",
            "a": "10.0.0.1", "v": "2.3", "j": {"k": [1]}}"#;

        let item = prepare(
            &Keyring::generate(),
            MaskMode::Siv,
            None,
            &plan,
            message(body, 1),
        );

        let Record::Row(row) = &item.prepared.record else {
            panic!("a row")
        };
        for (cell, column) in row.cells.iter().zip(&plan.contracts[0].columns) {
            let fits = match (column.bind(), cell) {
                (_, Cell::Null) => column.name == "missing",
                (Bind::Text, Cell::Text(_) | Cell::Numeric(_) | Cell::Json(_)) => true,
                (Bind::Bigint, Cell::Integer(_)) => true,
                (Bind::Date, Cell::Date(_)) => true,
                (Bind::Boolean, Cell::Boolean(_)) => true,
                (Bind::Timestamp, Cell::Timestamp(_)) => true,
                _ => false,
            };
            assert!(fits, "{}: {cell:?} for {:?}", column.name, column.bind());
        }
    }
}
