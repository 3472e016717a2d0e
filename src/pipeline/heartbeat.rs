//! Heartbeat: extends the visibility of messages held for more than half
//! the visibility timeout, so a slow batch is not redelivered under our
//! feet. A delivery counts as extended only once SQS confirmed it; one
//! whose call failed stays due and is tried again at the next tick (a
//! quarter of the timeout later, well before it would become visible).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::sqs::{EntryResult, Protocol, VisibilityChange};

/// Extends visibility until `stop`.
pub async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let timeout_secs = shared.settings.receive.visibility_timeout_secs;
    let half = Duration::from_secs(timeout_secs.max(1) as u64) / 2;
    let tick = (half / 2).max(Duration::from_millis(100));
    let protocol = shared.sqs.protocol();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let due = shared.flight.due_for_extension(half);
        if due.is_empty() {
            continue;
        }
        let changes: Vec<VisibilityChange<'_>> = due
            .iter()
            .map(|d| VisibilityChange {
                receipt: &d.receipt,
                timeout_secs: extension_secs(protocol, timeout_secs, d.held_for),
            })
            .collect();
        let sent_at = Instant::now();
        let result = shared.sqs.change_visibility(&changes).await;
        // Refused entries (already deleted, an expired handle) have nothing
        // more to extend; unsent ones stay due.
        let settled: Vec<_> = changes
            .iter()
            .zip(&result.entries)
            .filter(|(_, outcome)| **outcome != EntryResult::Unsent)
            .map(|(change, _)| change.receipt)
            .collect();
        shared.flight.extended(&settled, sent_at);
        shared.metrics.visibility_extended(result.done());
        if let Some(error) = result.error {
            shared.metrics.sqs_failed(
                "extend_visibility",
                &error,
                false,
                &format!(
                    "could not extend visibility; retrying in {} ms",
                    tick.as_millis()
                ),
            );
        }
    }
}

/// The timeout to ask for when extending a delivery held for `held_for`.
/// AWS (and LocalStack 3+) count a new timeout from the call, so it is the
/// configured timeout. LocalStack 0.x, the only query-protocol server in
/// use, counts it from the receive (`last_received + timeout` in its
/// provider), so there it must include the time already held.
fn extension_secs(protocol: Protocol, timeout_secs: i32, held_for: Duration) -> i32 {
    const SQS_MAX_VISIBILITY_SECS: i32 = 43_200;
    let secs = match protocol {
        Protocol::Json => timeout_secs,
        Protocol::Query => timeout_secs.saturating_add(held_for.as_secs_f64().ceil() as i32),
    };
    secs.min(SQS_MAX_VISIBILITY_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_count_from_the_call_on_json_and_from_the_receive_on_query() {
        let held = Duration::from_millis(4_200);
        assert_eq!(extension_secs(Protocol::Json, 60, held), 60);
        assert_eq!(extension_secs(Protocol::Query, 60, held), 65);
        assert_eq!(
            extension_secs(Protocol::Query, 43_000, Duration::from_secs(900)),
            43_200
        );
    }
}
