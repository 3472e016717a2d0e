//! Receive: reserve room in flight, long-poll SQS, prepare what arrives,
//! hand it to the writers. A receiver stops on shutdown, on a fatal error
//! anywhere (it reports its own: a queue that refuses it), or, with
//! --until-empty, once the queue is drained.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ack;
use super::flight::{InFlight, ReplyBytes};
use super::prepare::{prepare, Item};
use super::shared::{sleep_or_cancel, Shared};
use crate::backoff::Backoff;
use crate::sqs::{QueueMessage, SqsError};

/// How long a receive under way at shutdown may still take to return.
const SHUTDOWN_RECEIVE_GRACE: Duration = Duration::from_secs(1);

/// Receives until `stop` (shutdown, or a fatal error) or a drained queue.
pub async fn receive_loop(
    shared: Arc<Shared>,
    sender: mpsc::Sender<Item>,
    stop: CancellationToken,
) {
    let request = shared.settings.receive;
    let asked = request.max_messages as usize;
    let budget = shared.settings.budget();
    let room = budget.reservation(asked);
    let mut backoff = Backoff::default();
    loop {
        let mut reservation = tokio::select! {
            // A stop comes first: no receive starts once it is asked for.
            biased;
            _ = stop.cancelled() => return,
            reservation = shared.flight.reserve(asked, room) => reservation,
        };
        let reply_room = shared.flight.reply_room(&reservation, &budget, asked);
        let received = receive_or_stop(&shared, &reply_room, &stop).await;
        InFlight::absorb(&mut reservation, reply_room);
        let received = match received {
            Some(received) => received,
            None => {
                shared.flight.cancel(reservation);
                return;
            }
        };
        if shared.failure.happened() {
            // A fatal error while this receive was under way: what it
            // brought is given back now, not handed to writers that are
            // giving back. (On a shutdown, writers still record it.)
            shared.flight.cancel(reservation);
            if let Ok(messages) = received {
                give_back(&shared, &messages).await;
            }
            return;
        }
        let mut messages = match received {
            Ok(messages) => {
                backoff.reset();
                shared.metrics.sqs_answered();
                messages
            }
            Err(error) => {
                shared.flight.cancel(reservation);
                if !error.is_transient() {
                    shared
                        .metrics
                        .sqs_failed("receive", &error, true, "receive refused; stopping");
                    shared.fail(anyhow::Error::new(error).context("receiving from the queue"));
                    return;
                }
                let delay = backoff.next_delay();
                shared.metrics.sqs_failed(
                    "receive",
                    &error,
                    true,
                    &format!("receive failed; retrying in {} ms", delay.as_millis()),
                );
                sleep_or_cancel(delay, &stop).await;
                continue;
            }
        };
        if messages.len() > asked {
            give_back_extras(&shared, &mut messages, asked).await;
        }
        if messages.is_empty() {
            shared.flight.cancel(reservation);
            if shared.settings.until_empty && drained(&shared).await {
                stop.cancel();
                return;
            }
            continue;
        }
        let settings = &shared.settings;
        let items: Vec<Item> = messages
            .into_iter()
            .map(|message| {
                prepare(
                    &shared.keyring,
                    settings.mask_mode,
                    settings.max_receives,
                    &settings.plan,
                    message,
                )
            })
            .collect();
        let deliveries: Vec<_> = items
            .iter()
            .map(|item| (&item.receipt, item.bytes))
            .collect();
        shared.flight.hold(reservation, &deliveries).await;
        shared.metrics.received_messages(items.len());
        let mut items = items.into_iter();
        while let Some(item) = items.next() {
            if let Err(unsent) = sender.send(item).await {
                // Every writer is gone: give back what cannot be written,
                // with all the bytes it held.
                let rest: Vec<Item> = std::iter::once(unsent.0).chain(items).collect();
                ack::release(&shared, Item::give_up(rest, &shared.flight)).await;
                return;
            }
        }
    }
}

/// One receive, unless `stop` fires first. A receive under way may already
/// have taken messages: it gets a moment to hand them over rather than
/// leaving them hidden until their visibility timeout ends. On an empty
/// queue it is just a long poll, abandoned at no cost.
async fn receive_or_stop(
    shared: &Shared,
    reply_room: &ReplyBytes<'_>,
    stop: &CancellationToken,
) -> Option<Result<Vec<QueueMessage>, SqsError>> {
    if stop.is_cancelled() {
        return None;
    }
    let started = tokio::time::Instant::now();
    let receive = shared
        .sqs
        .receive_within(shared.settings.receive, Some(reply_room));
    tokio::pin!(receive);
    tokio::select! {
        biased;
        received = &mut receive => Some(received),
        _ = stop.cancelled() => {
            let received = tokio::time::timeout(SHUTDOWN_RECEIVE_GRACE, &mut receive).await.ok();
            if received.is_none() {
                // SQS goes on with the long poll until its wait ends.
                let wait = Duration::from_secs(shared.settings.receive.wait_secs.max(0) as u64);
                shared.receivers.abandoned(started + wait + SHUTDOWN_RECEIVE_GRACE);
            }
            received
        }
    }
}

/// A server that returns more messages than asked (none should): the
/// extras are given back at once, unprepared, so the bound holds.
async fn give_back_extras(shared: &Shared, messages: &mut Vec<QueueMessage>, asked: usize) {
    let extras = messages.split_off(asked);
    tracing::warn!(
        asked,
        extra = extras.len(),
        "SQS returned more messages than asked for; giving the extras back"
    );
    give_back(shared, &extras).await;
}

/// Gives received messages back at once (visibility 0), unprepared.
async fn give_back(shared: &Shared, messages: &[QueueMessage]) {
    if messages.is_empty() {
        return;
    }
    let timeout_secs = shared.receivers.give_back_visibility_secs();
    let changes: Vec<_> = messages
        .iter()
        .map(|m| crate::sqs::VisibilityChange {
            receipt: &m.receipt,
            timeout_secs,
        })
        .collect();
    let result = shared.sqs.change_visibility(&changes).await;
    if let Some(error) = result.error {
        tracing::warn!(%error, "could not give received messages back; they return after their visibility timeout");
    }
}

/// Drained: this process holds nothing and SQS reports nothing visible
/// and nothing in flight (messages held by another consumer may return).
/// An error asking counts as not drained: the next receive says more.
async fn drained(shared: &Shared) -> bool {
    if shared.flight.held() > 0 {
        return false;
    }
    match shared.sqs.depth().await {
        Ok(depth) => depth.visible == 0 && depth.in_flight == 0,
        Err(error) => {
            shared
                .metrics
                .sqs_failed("depth", &error, false, "could not read the queue depth");
            false
        }
    }
}
