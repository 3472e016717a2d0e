//! Prepare: one received message becomes what to record. The body is parsed
//! and validated (`event`), the PII masked (`mask`), or, for a body that is
//! not a valid event, sealed for the quarantine with a reason code. The raw
//! body is dropped here unless it is a valid event's, which is kept until
//! its row commits: should Postgres refuse the row, that body goes to the
//! quarantine instead (`db_rejected`).

use chrono::{DateTime, Utc};

use crate::event::{self, RejectReason};
use crate::keyring::Keyring;
use crate::mask::{Field, MaskMode};
use crate::postgres::{MaskedRow, Prepared, QuarantineEntry, Record};
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
    /// goes to the quarantine (`db_rejected`) with its original body.
    pub fn reject_by_database(&mut self, keyring: &Keyring) {
        let body = self.original.take().unwrap_or_default();
        let entry = quarantine_entry(
            keyring,
            body.as_bytes(),
            self.prepared.sent_ms,
            self.receive_count,
            RejectReason::DbRejected,
            None,
        );
        self.prepared.record = Record::Quarantine(entry);
    }
}

/// What a delivery counts once only its receipt is held.
fn delivery_bytes(receipt: &Receipt) -> usize {
    std::mem::size_of::<Delivery>() + receipt.heap_bytes()
}

/// Prepares one message. A message delivered more than `max_receives`
/// times is quarantined as `too_many_receives` whatever its body, so one
/// that keeps failing cannot be redelivered forever.
pub fn prepare(
    keyring: &Keyring,
    mode: MaskMode,
    max_receives: Option<u32>,
    message: QueueMessage,
) -> Item {
    let QueueMessage {
        receipt,
        body,
        sent_timestamp_ms,
        receive_count,
    } = message;
    let sent_ms = sent_timestamp_ms.unwrap_or(0);
    let over_limit = max_receives
        .zip(receive_count)
        .is_some_and(|(max, count)| count > max);
    let parsed = if over_limit {
        tracing::warn!(message_id = %receipt.message_id, receive_count, "message received too many times; quarantining it");
        Err((RejectReason::TooManyReceives, None))
    } else {
        event::parse(body.as_bytes()).map_err(|rejection| (rejection.reason, rejection.field))
    };
    let (record, original) = match parsed {
        Ok(event) => {
            let row = MaskedRow {
                masked_ip: keyring.mask_with(mode, Field::Ip, &event.ip),
                masked_device_id: keyring.mask_with(mode, Field::DeviceId, &event.device_id),
                user_id: event.user_id,
                device_type: event.device_type,
                locale: event.locale,
                app_version: event.app_version_major,
                // SentTimestamp is always requested; "now" only covers a
                // server that omits it (the ledger still prevents a second row).
                create_date: sent_at(sent_ms).unwrap_or_else(Utc::now).date_naive(),
            };
            (Record::Row(row), Some(body))
        }
        Err((reason, field)) => {
            let entry = quarantine_entry(
                keyring,
                body.as_bytes(),
                sent_ms,
                receive_count,
                reason,
                field,
            );
            // The raw body is dropped here: only its sealed copy travels on.
            (Record::Quarantine(entry), None)
        }
    };
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

/// Heap bytes a prepared record holds.
fn prepared_bytes(prepared: &Prepared) -> usize {
    prepared.message_id.len()
        + match &prepared.record {
            Record::Row(row) => {
                row.user_id.len()
                    + row.device_type.len()
                    + row.masked_ip.len()
                    + row.masked_device_id.len()
                    + row.locale.as_ref().map_or(0, String::len)
            }
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
    field: Option<&'static str>,
) -> QuarantineEntry {
    QuarantineEntry {
        reason: reason.code(),
        field,
        sent_at: sent_at(sent_ms),
        receive_count: receive_count.and_then(|c| i32::try_from(c).ok()),
        key_id: keyring.active().id().to_string(),
        body_sealed: keyring.seal_body(body),
        body_bytes: i32::try_from(body.len()).unwrap_or(i32::MAX),
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
        }
    }

    const EVENT: &str = r#"{"user_id": "u", "app_version": "2.3.0", "device_type": "ios",
        "ip": "10.0.0.1", "locale": null, "device_id": "593-47-5928"}"#;

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
                prepare(&keyring, MaskMode::Siv, None, message)
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

        let row = prepare(&keyring, MaskMode::Siv, None, message(EVENT, 1));
        let junk = prepare(
            &keyring,
            MaskMode::Siv,
            None,
            message(&"x".repeat(5_000), 1),
        );

        assert!(matches!(row.prepared.record, Record::Row(_)));
        assert_eq!(row.original.as_deref(), Some(EVENT));
        assert!(row.bytes >= EVENT.len());
        let Record::Quarantine(entry) = &junk.prepared.record else {
            panic!("junk is quarantined")
        };
        assert_eq!(entry.reason, "not_json");
        assert!(junk.original.is_none(), "the raw body is dropped");
        assert!(junk.bytes >= entry.body_sealed.len());
        assert!(junk.droppable_bytes() >= 5_000);
    }

    #[test]
    fn too_many_receives_is_quarantined_whatever_the_body() {
        let keyring = Keyring::generate();
        let item = prepare(&keyring, MaskMode::Siv, Some(3), message(EVENT, 4));
        let Record::Quarantine(entry) = &item.prepared.record else {
            panic!("quarantined")
        };
        assert_eq!(entry.reason, "too_many_receives");
    }

    #[test]
    fn a_row_postgres_refuses_goes_to_the_quarantine_with_its_original_body() {
        let keyring = Keyring::generate();
        let mut item = prepare(&keyring, MaskMode::Siv, None, message(EVENT, 1));

        item.reject_by_database(&keyring);

        let Record::Quarantine(entry) = &item.prepared.record else {
            panic!("quarantined")
        };
        assert_eq!(entry.reason, "db_rejected");
        let opened = keyring
            .open_body(&entry.key_id, &entry.body_sealed)
            .unwrap();
        assert_eq!(opened, EVENT.as_bytes());
        assert_eq!(item.prepared.message_id, "m-1", "the item stays whole");
    }
}
