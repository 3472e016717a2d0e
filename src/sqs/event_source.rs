//! The records of Lambda's SQS event source, as the same `QueueMessage`
//! the poller receives: the event source mapping did the `ReceiveMessage`
//! (with every system attribute and message attribute), so a record
//! carries what a receive reply does, in the event's own spelling
//! (`messageId`, `attributes.SentTimestamp`, `messageAttributes.x.stringValue`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsMessage};

use super::values::{sent_timestamp_ms, timestamp_ms};
use super::{QueueMessage, Receipt};

/// The event a function behind an SQS event source mapping gets, and the
/// answer it sends (`batchItemFailures`: the records to retry).
pub use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

/// The records of an event as received messages; an error when one has no
/// `messageId` (it is then not an event of the SQS event source mapping).
pub fn queue_messages(event: SqsEvent) -> anyhow::Result<Vec<QueueMessage>> {
    event
        .records
        .into_iter()
        .map(|record| {
            queue_message(record).ok_or_else(|| {
                anyhow::anyhow!(
                    "a record of the SQS event has no messageId: this is not an event of the SQS event \
                     source mapping (is the function invoked by something else?)"
                )
            })
        })
        .collect()
}

/// The answer naming the records (by message id) to retry.
pub fn batch_response(failed: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// One record as a received message; None without a `messageId` (a record
/// veil could neither record once nor name in `batchItemFailures`).
pub fn queue_message(record: SqsMessage) -> Option<QueueMessage> {
    let SqsMessage {
        message_id,
        receipt_handle,
        body,
        attributes,
        message_attributes,
        ..
    } = record;
    let attribute = |name: &str| attributes.get(name).map(String::as_str);
    Some(QueueMessage {
        receipt: Receipt {
            message_id: message_id.filter(|id| !id.is_empty())?,
            receipt_handle: receipt_handle.unwrap_or_default(),
        },
        body: body.unwrap_or_default(),
        sent_timestamp_ms: attribute("SentTimestamp")
            .and_then(|value| value.parse().ok())
            .map(sent_timestamp_ms),
        receive_count: attribute("ApproximateReceiveCount").and_then(|value| value.parse().ok()),
        first_receive_ms: attribute("ApproximateFirstReceiveTimestamp").and_then(timestamp_ms),
        // String and Number attributes carry `stringValue`; Binary ones are
        // left out, as in the poller.
        attributes: message_attributes
            .into_iter()
            .filter_map(|(name, value)| value.string_value.map(|text| (name, text)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: serde_json::Value) -> SqsMessage {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_record_carries_what_a_receive_reply_does() {
        let message = queue_message(record(serde_json::json!({
            "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
            "body": "{\"user_id\": \"u1\"}",
            "attributes": {
                "ApproximateReceiveCount": "2",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185"
            },
            "messageAttributes": {
                "tenant": {"stringValue": "acme", "dataType": "String"},
                "blob": {"binaryValue": "AAE=", "dataType": "Binary"}
            },
            "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
            "awsRegion": "us-east-2"
        })))
        .unwrap();
        assert_eq!(
            message.receipt.message_id,
            "059f36b4-87a3-44ab-83d2-661975830a7d"
        );
        assert_eq!(message.body, "{\"user_id\": \"u1\"}");
        assert_eq!(message.sent_timestamp_ms, Some(1_545_082_649_183));
        assert_eq!(message.receive_count, Some(2));
        assert_eq!(message.first_receive_ms, Some(1_545_082_649_185));
        assert_eq!(
            message.attributes,
            [("tenant".to_string(), "acme".to_string())]
        );
    }

    #[test]
    fn a_record_without_a_send_time_is_kept_and_one_without_an_id_is_not() {
        let unsent = queue_message(record(serde_json::json!({
            "messageId": "m-1", "body": "{}", "attributes": {}
        })))
        .unwrap();
        assert_eq!(unsent.sent_timestamp_ms, None);
        assert!(queue_message(record(serde_json::json!({"body": "{}"}))).is_none());
    }
}
