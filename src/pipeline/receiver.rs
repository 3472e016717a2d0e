//! A receiver: reserve in-flight slots, long-poll SQS, parse and mask what
//! arrives, hand it to the writers. With --until-empty, a receiver that
//! finds the queue drained stops all receivers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{prepare_limited, sleep_or_cancel, Item, Shared};
use crate::backoff::Backoff;
use crate::sqs::SqsError;

/// How long a receive under way at shutdown may still take to return.
const SHUTDOWN_RECEIVE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn receive_loop(
    shared: Arc<Shared>,
    sender: mpsc::Sender<Item>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let request = shared.settings.receive;
    let slots = request.max_messages as usize;
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = shared.flight.reserve(slots) => {}
        }
        let receive = shared.sqs.receive(request);
        tokio::pin!(receive);
        let received = tokio::select! {
            received = &mut receive => received,
            _ = stop.cancelled() => {
                // A receive under way may already have taken messages; give
                // it a moment to hand them over rather than leaving them
                // hidden until their visibility timeout ends. On an empty
                // queue it is just a long poll, abandoned at no cost.
                match tokio::time::timeout(SHUTDOWN_RECEIVE_GRACE, &mut receive).await {
                    Ok(received) => received,
                    Err(_) => {
                        shared.flight.release(slots);
                        return Ok(());
                    }
                }
            }
        };
        let messages = match received {
            Ok(messages) => {
                backoff.reset();
                shared.counters.sqs_ready.store(true, Ordering::Relaxed);
                messages
            }
            Err(error) if error.is_transient() => {
                shared.flight.release(slots);
                shared.counters.sqs_errors.add("receive");
                shared.counters.sqs_ready.store(false, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "receive failed");
                sleep_or_cancel(delay, &stop).await;
                continue;
            }
            Err(error) => {
                shared.flight.release(slots);
                shared.counters.sqs_errors.add("receive");
                return Err(error.into());
            }
        };
        shared.flight.release(slots - messages.len());
        if messages.is_empty() {
            if shared.settings.until_empty && drained(&shared).await? {
                stop.cancel();
                return Ok(());
            }
            continue;
        }
        shared.flight.hold(&messages);
        shared
            .counters
            .in_flight
            .store(shared.flight.held() as u64, Ordering::Relaxed);
        shared
            .counters
            .received
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        shared
            .counters
            .receive_calls
            .fetch_add(1, Ordering::Relaxed);
        for message in messages {
            let settings = &shared.settings;
            let prepared = prepare_limited(
                &shared.keyring,
                settings.mask_mode,
                settings.max_receives,
                &message,
            );
            if sender
                .send(super::Item { message, prepared })
                .await
                .is_err()
            {
                // Every writer is gone (one failed): stop receiving.
                return Ok(());
            }
        }
    }
}

/// Drained: this process holds nothing and SQS reports nothing visible
/// and nothing in flight (messages held by another consumer may return).
async fn drained(shared: &Shared) -> Result<bool, SqsError> {
    if shared.flight.held() > 0 {
        return Ok(false);
    }
    let depth = shared.sqs.depth().await?;
    Ok(depth.visible == 0 && depth.in_flight == 0)
}
