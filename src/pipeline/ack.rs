//! Ack: what happens to a delivery once veil is done with it. A recorded
//! message is deleted (only after its batch committed); an unrecorded one,
//! on shutdown or after a fatal error, is released: its visibility set to 0
//! so another consumer can take it at once. Either way its slot and bytes
//! are freed afterwards.

use std::sync::Arc;

use super::flight::Delivery;
use super::shared::Shared;
use crate::backoff::Backoff;
use crate::sqs::{EntryResult, Receipt, VisibilityChange};

/// Attempts at a delete whose call failed for a passing reason.
const DELETE_ATTEMPTS: usize = 3;

/// Deletes recorded messages, retrying calls that failed for a passing
/// reason, then frees their slots. A failed delete only means the message
/// comes back and the ledger skips it; but a delete SQS refuses for good
/// (AccessDenied, a KMS error on the queue's key, a queue gone) would let
/// every recorded message come back each visibility timeout, forever: that
/// is a configuration error, and fatal like any other.
pub async fn delete(shared: Arc<Shared>, deliveries: Vec<Delivery>) {
    let metrics = &shared.metrics;
    let mut pending: Vec<&Receipt> = deliveries.iter().map(|d| &d.receipt).collect();
    let mut backoff = Backoff::default();
    for attempt in 1..=DELETE_ATTEMPTS {
        let result = shared.sqs.delete(&pending).await;
        metrics.deleted_messages(result.done());
        let mut unsent = Vec::new();
        for (receipt, outcome) in pending.iter().zip(&result.entries) {
            match outcome {
                EntryResult::Done => {}
                EntryResult::Refused(code) if is_permission(code) => {
                    metrics.delete_failed(1, code);
                    shared.fail(anyhow::anyhow!(
                        "SQS refused to delete recorded message {} ({code}): veil may not delete from this queue, \
                         so every recorded message would come back; grant sqs:DeleteMessage on the queue \
                         (and kms:Decrypt on its KMS key)",
                        receipt.message_id
                    ));
                }
                EntryResult::Refused(code) => {
                    tracing::debug!(message_id = %receipt.message_id, %code, "delete refused");
                    metrics.delete_failed(1, code);
                }
                EntryResult::Unsent => unsent.push(*receipt),
            }
        }
        let Some(error) = result.error else { break };
        metrics.sqs_failed(
            "delete",
            &error,
            true,
            &format!("delete failed (attempt {attempt})"),
        );
        if error.is_transient() && attempt < DELETE_ATTEMPTS {
            pending = unsent;
            tokio::time::sleep(backoff.next_delay()).await;
        } else if error.is_transient() {
            metrics.delete_failed(unsent.len(), &error);
            break;
        } else {
            metrics.delete_failed(unsent.len(), &error);
            shared.fail(anyhow::Error::new(error).context(
                "deleting recorded messages: SQS refuses for good, so every recorded message would come back \
                 each visibility timeout",
            ));
            break;
        }
    }
    shared.flight.finish(&deliveries);
    shared.mark_done();
}

/// Whether an entry's error code says veil may not do this at all (rather
/// than that this one receipt is stale).
fn is_permission(code: &str) -> bool {
    code.contains("AccessDenied") || code.starts_with("KMS") || code.contains("Kms")
}

/// Gives unrecorded messages back to the queue at once (visibility 0)
/// instead of leaving them hidden until their timeout ends, then frees
/// their slots.
pub async fn release(shared: &Shared, deliveries: Vec<Delivery>) {
    if deliveries.is_empty() {
        return;
    }
    // 0, unless a receive abandoned at a stop could still take them.
    let timeout_secs = shared.receivers.give_back_visibility_secs();
    let changes: Vec<VisibilityChange<'_>> = deliveries
        .iter()
        .map(|d| VisibilityChange {
            receipt: &d.receipt,
            timeout_secs,
        })
        .collect();
    let result = shared.sqs.change_visibility(&changes).await;
    let failed = result.error.as_ref().map(|error| {
        (
            deliveries.len() - result.done(),
            error as &dyn std::fmt::Display,
        )
    });
    shared.metrics.released_messages(result.done(), failed);
    shared.flight.finish(&deliveries);
}
