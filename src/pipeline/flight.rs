//! Messages in flight: a semaphore bounds how many are held at once (so
//! memory stays flat however deep the queue is), counters record the
//! current and peak numbers, and a registry of held deliveries tells the
//! heartbeat whose visibility must be extended.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::sqs::QueueMessage;

/// The in-flight bound and its bookkeeping.
pub struct InFlight {
    semaphore: Arc<Semaphore>,
    /// Reserved slots: messages held plus slots reserved by receives under way.
    reserved: AtomicUsize,
    /// Most messages held at once.
    peak: AtomicUsize,
    /// Messages received and not yet finished (deleted or given up).
    held: AtomicUsize,
    /// Held deliveries by receipt handle.
    deliveries: Mutex<HashMap<String, Held, BuildHasherDefault<FxHasher>>>,
}

/// The Fx hash (rustc's): eight bytes per step. Receipt handles are a few
/// hundred bytes, come from SQS (not from an attacker, so no need for
/// SipHash's flood resistance), and are hashed twice per message; SipHash
/// was about 1% of a drain's CPU.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ rest.len() as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct Held {
    message_id: String,
    received_at: Instant,
    extended_at: Instant,
}

/// A delivery whose visibility should be extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// SQS message id.
    pub message_id: String,
    /// This delivery's receipt handle.
    pub receipt_handle: String,
    /// How long it has been held since it was received.
    pub held_for: Duration,
}

impl InFlight {
    /// At most `limit` messages (or reserved receive slots) at once.
    pub fn new(limit: usize) -> Self {
        InFlight {
            semaphore: Arc::new(Semaphore::new(limit)),
            reserved: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            deliveries: Mutex::new(HashMap::default()),
        }
    }

    /// Waits for `slots` free slots and reserves them.
    pub async fn reserve(&self, slots: usize) {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self
            .semaphore
            .acquire_many(slots as u32)
            .await
            .expect("in-flight semaphore is never closed");
        permit.forget();
        self.reserved.fetch_add(slots, Ordering::SeqCst);
    }

    /// Gives back `slots` reserved slots.
    pub fn release(&self, slots: usize) {
        if slots > 0 {
            self.reserved.fetch_sub(slots, Ordering::SeqCst);
            self.semaphore.add_permits(slots);
        }
    }

    /// Records received messages as held (they use reserved slots).
    pub fn hold(&self, messages: &[QueueMessage]) {
        let now = self.held.fetch_add(messages.len(), Ordering::SeqCst) + messages.len();
        self.peak.fetch_max(now, Ordering::SeqCst);
        let now = Instant::now();
        let mut deliveries = self.deliveries.lock().expect("deliveries lock");
        for message in messages {
            deliveries.insert(
                message.receipt_handle.clone(),
                Held {
                    message_id: message.message_id.clone(),
                    received_at: now,
                    extended_at: now,
                },
            );
        }
    }

    /// Messages are done (deleted, or given back to the queue): free their slots.
    pub fn finish(&self, messages: &[QueueMessage]) {
        {
            let mut deliveries = self.deliveries.lock().expect("deliveries lock");
            for message in messages {
                deliveries.remove(&message.receipt_handle);
            }
        }
        self.held.fetch_sub(messages.len(), Ordering::SeqCst);
        self.release(messages.len());
    }

    /// Deliveries whose visibility was last set more than `older_than`
    /// ago; marks them extended now.
    pub fn due_for_extension(&self, older_than: Duration) -> Vec<DueDelivery> {
        let now = Instant::now();
        let mut deliveries = self.deliveries.lock().expect("deliveries lock");
        deliveries
            .iter_mut()
            .filter(|(_, held)| now.duration_since(held.extended_at) >= older_than)
            .map(|(receipt, held)| {
                held.extended_at = now;
                DueDelivery {
                    message_id: held.message_id.clone(),
                    receipt_handle: receipt.clone(),
                    held_for: now.duration_since(held.received_at),
                }
            })
            .collect()
    }

    /// Messages received and not yet finished.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The most messages held at once (received, not yet finished).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> QueueMessage {
        QueueMessage {
            message_id: id.into(),
            receipt_handle: format!("r-{id}"),
            body: String::new(),
            sent_timestamp_ms: None,
            receive_count: None,
        }
    }

    #[tokio::test]
    async fn reservations_are_bounded_and_counted() {
        let flight = InFlight::new(10);
        flight.reserve(10).await;
        let blocked = tokio::time::timeout(Duration::from_millis(50), flight.reserve(1)).await;
        assert!(blocked.is_err(), "an 11th slot must wait");
        flight.release(8);
        let messages = [message("a"), message("b")];
        flight.hold(&messages);
        assert_eq!(
            (flight.held(), flight.peak()),
            (2, 2),
            "peak counts messages, not slots"
        );
        flight.finish(&messages);
        assert_eq!(flight.held(), 0);
        flight.reserve(10).await;
    }

    #[tokio::test]
    async fn only_stale_deliveries_are_due_and_then_not_again_at_once() {
        let flight = InFlight::new(10);
        flight.reserve(1).await;
        flight.hold(&[message("a")]);
        assert!(flight.due_for_extension(Duration::from_secs(60)).is_empty());
        let due = flight.due_for_extension(Duration::ZERO);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].message_id.as_str(), due[0].receipt_handle.as_str()),
            ("a", "r-a")
        );
        assert!(flight.due_for_extension(Duration::from_secs(60)).is_empty());
    }
}
