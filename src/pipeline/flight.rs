//! Messages in flight: two semaphores bound what is held at once, in
//! messages (`--max-in-flight`) and in bytes (`--max-in-flight-bytes`), so
//! memory stays flat however deep the queue is and however large its
//! bodies. A receive reserves room for the most it can bring (its message
//! count times the queue's largest message) before it asks SQS; what came
//! back keeps what it uses and gives the rest back. The registry of held
//! deliveries tells the heartbeat whose visibility to extend.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use super::budget::Budget;
use crate::metrics::Metrics;
use crate::metrics::Number;
use crate::sqs::Receipt;

/// A held delivery: its receipt (all a delete or a release needs) and the
/// bytes it counts against the bound.
#[derive(Debug)]
pub struct Delivery {
    /// Its id and handle.
    pub receipt: Receipt,
    /// Bytes counted for it.
    pub bytes: usize,
}

/// Room taken for a receive under way: given back, in part or whole, by
/// `hold` or `cancel`.
#[derive(Debug)]
#[must_use = "a reservation must be held or cancelled, or its room is lost"]
pub struct Reservation {
    messages: usize,
    bytes: usize,
}

/// The in-flight bound and its bookkeeping.
pub struct InFlight {
    messages: Semaphore,
    bytes: Semaphore,
    byte_limit: usize,
    /// Messages received and not yet finished.
    held: AtomicUsize,
    /// Most messages held at once.
    peak_held: AtomicUsize,
    /// Bytes counted now: reservations plus held deliveries.
    bytes_in_use: AtomicUsize,
    /// Most bytes counted at once.
    peak_bytes: AtomicUsize,
    /// Held deliveries by receipt handle.
    deliveries: Mutex<HashMap<String, Held, BuildHasherDefault<FxHasher>>>,
    /// One receive at a time waits for room for its reply (see `ReplyBytes`).
    reply_turn: tokio::sync::Mutex<()>,
    /// Where the gauges go: kept current by every change.
    metrics: Arc<Metrics>,
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

/// Room for a receive's reply, asked for as its length becomes known. While
/// the messages are decoded, the reply, what it decodes to (never longer
/// than its escaped text) and the decoder's scratch copy of one body are
/// held at once, less what the reservation already counts. Only one
/// receive at a time waits for more, and never for more than the ceiling
/// (see `budget`).
pub struct ReplyBytes<'a> {
    flight: &'a InFlight,
    covered: usize,
    decoded_most: usize,
    largest: usize,
    ceiling: usize,
    taken: AtomicUsize,
}

impl crate::sqs::ReplyRoom for ReplyBytes<'_> {
    fn make_room(&self, bytes: usize) -> BoxFuture<'_, ()> {
        let held = bytes
            .saturating_add(bytes.min(self.decoded_most))
            .saturating_add(bytes.min(self.largest));
        let beyond = held.saturating_sub(self.covered).min(self.ceiling);
        Box::pin(async move {
            if beyond <= self.taken.load(Ordering::SeqCst) {
                return;
            }
            let _turn = self.flight.reply_turn.lock().await;
            let more = beyond - self.taken.load(Ordering::SeqCst);
            self.flight.take_bytes(more).await;
            self.taken.fetch_add(more, Ordering::SeqCst);
        })
    }
}

/// A delivery whose visibility should be extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The delivery.
    pub receipt: Receipt,
    /// How long it has been held since it was received.
    pub held_for: Duration,
}

impl InFlight {
    /// At most `message_limit` messages and `byte_limit` bytes at once;
    /// the in-flight gauges of `metrics` follow every change.
    pub fn new(message_limit: usize, byte_limit: usize, metrics: Arc<Metrics>) -> Self {
        metrics.set(Number::InFlightLimit, message_limit as u64);
        metrics.set(Number::InFlightBytesLimit, byte_limit as u64);
        InFlight {
            metrics,
            messages: Semaphore::new(message_limit),
            bytes: Semaphore::new(byte_limit.min(Semaphore::MAX_PERMITS)),
            byte_limit,
            held: AtomicUsize::new(0),
            peak_held: AtomicUsize::new(0),
            bytes_in_use: AtomicUsize::new(0),
            peak_bytes: AtomicUsize::new(0),
            deliveries: Mutex::new(HashMap::default()),
            reply_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for room for `messages` messages of `bytes` bytes in all.
    /// Cancel-safe: dropped while waiting, it takes nothing.
    pub async fn reserve(&self, messages: usize, bytes: usize) -> Reservation {
        // Neither semaphore is ever closed, so acquiring cannot fail.
        let message_permits = self
            .messages
            .acquire_many(messages as u32)
            .await
            .expect("in-flight semaphore is never closed");
        self.take_bytes(bytes).await;
        message_permits.forget();
        Reservation { messages, bytes }
    }

    async fn take_bytes(&self, bytes: usize) {
        let permits = self
            .bytes
            .acquire_many(u32::try_from(bytes).unwrap_or(u32::MAX))
            .await
            .expect("in-flight semaphore is never closed");
        permits.forget();
        let now = self.bytes_in_use.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak_bytes.fetch_max(now, Ordering::SeqCst);
        self.publish();
    }

    fn give_bytes(&self, bytes: usize) {
        if bytes > 0 {
            self.bytes_in_use.fetch_sub(bytes, Ordering::SeqCst);
            self.bytes.add_permits(bytes);
            self.publish();
        }
    }

    /// Copies the current numbers into the gauges.
    fn publish(&self) {
        let metrics = &self.metrics;
        metrics.set(Number::InFlight, self.held() as u64);
        metrics.set(Number::InFlightBytes, self.bytes_in_use() as u64);
    }

    /// The room the reply to a receive of `messages` may take beyond its
    /// `reservation`, as `budget` sizes it.
    pub fn reply_room(
        &self,
        reservation: &Reservation,
        budget: &Budget,
        messages: usize,
    ) -> ReplyBytes<'_> {
        ReplyBytes {
            flight: self,
            covered: reservation.bytes,
            decoded_most: messages * budget.max_message_bytes,
            largest: budget.max_message_bytes,
            ceiling: budget.reply_ceiling(messages),
            taken: AtomicUsize::new(0),
        }
    }

    /// What `room` took joins `reservation`, to be kept or given back with it.
    pub fn absorb(reservation: &mut Reservation, room: ReplyBytes<'_>) {
        reservation.bytes += room.taken.into_inner();
    }

    /// Gives a whole reservation back (the receive brought nothing, or failed).
    pub fn cancel(&self, reservation: Reservation) {
        self.messages.add_permits(reservation.messages);
        self.give_bytes(reservation.bytes);
    }

    /// Records the deliveries a receive brought as held, within its
    /// reservation: unused room goes back at once. Should they need more
    /// bytes than reserved (a server that exceeds its own size limit), the
    /// difference is waited for.
    pub async fn hold(&self, reservation: Reservation, deliveries: &[(&Receipt, usize)]) {
        let count = deliveries.len();
        debug_assert!(count <= reservation.messages);
        let bytes: usize = deliveries.iter().map(|(_, bytes)| bytes).sum();
        if bytes > reservation.bytes {
            self.take_bytes(bytes - reservation.bytes).await;
        } else {
            self.give_bytes(reservation.bytes - bytes);
        }
        self.messages
            .add_permits(reservation.messages.saturating_sub(count));
        let now = self.held.fetch_add(count, Ordering::SeqCst) + count;
        self.peak_held.fetch_max(now, Ordering::SeqCst);
        self.publish();
        let received_at = Instant::now();
        let mut registry = self.deliveries.lock().expect("deliveries lock");
        for (receipt, _) in deliveries {
            registry.insert(
                receipt.receipt_handle.clone(),
                Held {
                    message_id: receipt.message_id.clone(),
                    received_at,
                    extended_at: received_at,
                },
            );
        }
    }

    /// Gives back bytes a held delivery no longer uses (its body, once
    /// recorded); the delivery itself stays held.
    pub fn shrink(&self, bytes: usize) {
        self.give_bytes(bytes);
    }

    /// Deliveries are done (deleted, or given back to the queue): free
    /// their slots and bytes.
    pub fn finish(&self, deliveries: &[Delivery]) {
        {
            let mut registry = self.deliveries.lock().expect("deliveries lock");
            for delivery in deliveries {
                registry.remove(&delivery.receipt.receipt_handle);
            }
        }
        self.held.fetch_sub(deliveries.len(), Ordering::SeqCst);
        self.messages.add_permits(deliveries.len());
        self.give_bytes(deliveries.iter().map(|d| d.bytes).sum());
        self.publish();
    }

    /// Deliveries whose visibility was last set more than `older_than` ago.
    /// They stay due until `extended` says SQS confirmed a new timeout.
    pub fn due_for_extension(&self, older_than: Duration) -> Vec<DueDelivery> {
        let now = Instant::now();
        let registry = self.deliveries.lock().expect("deliveries lock");
        registry
            .iter()
            .filter(|(_, held)| now.duration_since(held.extended_at) >= older_than)
            .map(|(handle, held)| DueDelivery {
                receipt: Receipt {
                    message_id: held.message_id.clone(),
                    receipt_handle: handle.clone(),
                },
                held_for: now.duration_since(held.received_at),
            })
            .collect()
    }

    /// SQS confirmed new visibility timeouts for these deliveries at `when`.
    pub fn extended(&self, receipts: &[&Receipt], when: Instant) {
        let mut registry = self.deliveries.lock().expect("deliveries lock");
        for receipt in receipts {
            if let Some(held) = registry.get_mut(&receipt.receipt_handle) {
                held.extended_at = when;
            }
        }
    }

    /// Messages received and not yet finished.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The most messages held at once.
    pub fn peak_held(&self) -> usize {
        self.peak_held.load(Ordering::SeqCst)
    }

    /// Bytes counted now (reservations and held deliveries).
    pub fn bytes_in_use(&self) -> usize {
        self.bytes_in_use.load(Ordering::SeqCst)
    }

    /// The most bytes counted at once; never above the byte limit.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::SeqCst)
    }

    /// The byte limit.
    pub fn byte_limit(&self) -> usize {
        self.byte_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(id: &str) -> Receipt {
        Receipt {
            message_id: id.into(),
            receipt_handle: format!("r-{id}"),
        }
    }

    fn delivery(id: &str, bytes: usize) -> Delivery {
        Delivery {
            receipt: receipt(id),
            bytes,
        }
    }

    #[tokio::test]
    async fn messages_and_bytes_are_both_bounded_and_peaks_count_what_was_held() {
        let flight = InFlight::new(10, 1_000, Arc::default());
        let first = flight.reserve(10, 800).await;
        let blocked = tokio::time::timeout(Duration::from_millis(50), flight.reserve(1, 1)).await;
        assert!(blocked.is_err(), "an 11th message must wait");
        let (a, b) = (receipt("a"), receipt("b"));
        flight.hold(first, &[(&a, 300), (&b, 200)]).await;
        assert_eq!((flight.held(), flight.peak_held()), (2, 2));
        assert_eq!(flight.bytes_in_use(), 500, "unused room went back");
        let too_big = tokio::time::timeout(Duration::from_millis(50), flight.reserve(1, 600)).await;
        assert!(too_big.is_err(), "600 more bytes must wait past 1000");
        flight.shrink(250);
        flight.finish(&[delivery("a", 150), delivery("b", 100)]);
        assert_eq!((flight.held(), flight.bytes_in_use()), (0, 0));
        assert!(flight.peak_bytes() <= 1_000);
        let again = flight.reserve(10, 1_000).await;
        flight.cancel(again);
        assert_eq!(flight.bytes_in_use(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_reservation_takes_nothing() {
        let flight = InFlight::new(10, 100, Arc::default());
        let held = flight.reserve(1, 100).await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), flight.reserve(5, 10)).await;
        assert!(waiting.is_err());
        flight.cancel(held);
        let all = flight.reserve(10, 100).await;
        assert_eq!(flight.bytes_in_use(), 100);
        flight.cancel(all);
    }

    #[tokio::test]
    async fn a_delivery_stays_due_until_its_extension_is_confirmed() {
        let flight = InFlight::new(10, 1_000, Arc::default());
        let reservation = flight.reserve(1, 10).await;
        let a = receipt("a");
        flight.hold(reservation, &[(&a, 10)]).await;
        assert!(flight.due_for_extension(Duration::from_secs(60)).is_empty());
        let due = flight.due_for_extension(Duration::ZERO);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].receipt, a);
        assert_eq!(
            flight.due_for_extension(Duration::ZERO).len(),
            1,
            "not marked until confirmed"
        );
        flight.extended(&[&a], Instant::now());
        assert!(flight.due_for_extension(Duration::from_secs(60)).is_empty());
    }

    #[tokio::test]
    async fn a_reply_counts_with_what_it_decodes_to_beyond_its_reservation_up_to_its_ceiling() {
        use crate::sqs::ReplyRoom;
        let flight = InFlight::new(10, 2_000, Arc::default());
        let budget = Budget {
            receivers: 1,
            writers: 1,
            max_message_bytes: 50,
            bound: 2_000,
        };
        // Two messages of at most 50 bytes: a reply of up to 600 beyond.
        let mut reservation = flight.reserve(2, 100).await;
        let room = flight.reply_room(&reservation, &budget, 2);
        room.make_room(30).await;
        assert_eq!(
            flight.bytes_in_use(),
            100,
            "30 + 30 decoded + 30 scratch fit"
        );
        room.make_room(200).await;
        assert_eq!(flight.bytes_in_use(), 350, "200 + 100 decoded + 50 scratch");
        room.make_room(150).await;
        assert_eq!(
            flight.bytes_in_use(),
            350,
            "asking for less takes nothing back"
        );
        let other = flight.reserve(1, 1_650).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), room.make_room(400)).await;
        assert!(waiting.is_err(), "200 more must wait for the other receive");
        flight.cancel(other);
        room.make_room(5_000).await;
        assert_eq!(
            flight.bytes_in_use(),
            700,
            "never more than the ceiling beyond the reservation"
        );
        InFlight::absorb(&mut reservation, room);
        let a = receipt("a");
        flight.hold(reservation, &[(&a, 50)]).await;
        assert_eq!(
            flight.bytes_in_use(),
            50,
            "the reply's room went back with the reservation's"
        );
    }
}
