//! How `--max-in-flight-bytes` is shared, so that it counts all veil holds:
//!
//! - each writer's statement buffers: the Postgres driver encodes a batch
//!   into a buffer that grows by doubling, copies it into the connection's
//!   write buffer, and keeps both at their largest for the connection's life
//!   (three times the largest statement, measured). A writer keeps that room
//!   for as long as it runs; batches stay within `max_batch_bytes`;
//! - each receiver's reservation: room for what a receive may bring, taken
//!   before it asks SQS;
//! - one reply being decoded: the reply, up to six bytes per body byte, and
//!   what it decodes to, taken once its length is known. One receive at a
//!   time waits for that room, and it always fits next to every
//!   reservation, so the wait ends once writers finish what they hold.
//!
//! `Budget::messages_per_receive` sizes receives so that all of it fits.

/// Room a receive of one message reserves beyond the message itself: its
/// receipt, the prepared row, the sealed copy of a junk body.
const PER_MESSAGE_OVERHEAD_BYTES: usize = 4 * 1024;

/// The most reply bytes an SQS encoding spends on one body byte: XML's
/// `&quot;`, JSON's `\u003c`.
const REPLY_BYTES_PER_BODY_BYTE: usize = 6;

/// What a writer's connection keeps per byte of its largest statement.
const STATEMENT_BUFFER_COPIES: usize = 3;

/// The parts that share the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Concurrent receivers.
    pub receivers: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// The queue's largest message.
    pub max_message_bytes: usize,
    /// The bound.
    pub bound: usize,
}

impl Budget {
    /// Bytes one receive of `messages` reserves before it asks SQS: room
    /// for as many of the queue's largest messages.
    pub fn reservation(&self, messages: usize) -> usize {
        messages * (self.max_message_bytes + PER_MESSAGE_OVERHEAD_BYTES)
    }

    /// The most room a reply to a receive of `messages` may take beyond
    /// its reservation.
    pub fn reply_ceiling(&self, messages: usize) -> usize {
        messages * self.max_message_bytes * REPLY_BYTES_PER_BODY_BYTE
    }

    /// The most bytes a batch's items count: a share of the bound for each
    /// writer, and never less than one of the queue's largest messages
    /// (which then makes a batch of its own).
    pub fn max_batch_bytes(&self) -> usize {
        (self.bound / (16 * self.writers.max(1)))
            .max(self.max_message_bytes + PER_MESSAGE_OVERHEAD_BYTES)
    }

    /// The room each writer keeps for its statement buffers.
    pub fn statement_room(&self) -> usize {
        STATEMENT_BUFFER_COPIES * self.max_batch_bytes()
    }

    /// The bound needed for receives of `messages` each.
    pub fn needed(&self, messages: usize) -> usize {
        self.writers * self.statement_room()
            + self.receivers * self.reservation(messages)
            + self.reply_ceiling(messages)
    }

    /// The messages a receive may ask for: `batch_size`, or fewer if that
    /// many would not fit the bound; `None` if not even one does.
    pub fn messages_per_receive(&self, batch_size: usize) -> Option<usize> {
        (1..=batch_size)
            .rev()
            .find(|&messages| self.needed(messages) <= self.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn budget(max_message_bytes: usize, bound: usize) -> Budget {
        Budget {
            receivers: 4,
            writers: 2,
            max_message_bytes,
            bound,
        }
    }

    #[test]
    fn defaults_ask_for_ten_on_both_sizes_of_queue() {
        assert_eq!(
            budget(256 << 10, 128 * MIB).messages_per_receive(10),
            Some(10)
        );
        assert_eq!(budget(MIB, 128 * MIB).messages_per_receive(10), Some(10));
    }

    #[test]
    fn a_small_bound_asks_for_fewer_and_a_too_small_one_for_none() {
        let small = budget(MIB, 24 * MIB);
        let fits = small.messages_per_receive(10).unwrap();
        assert!((1..10).contains(&fits), "{fits}");
        assert!(small.needed(fits) <= small.bound);
        assert!(small.needed(fits + 1) > small.bound);
        assert_eq!(budget(MIB, 12 * MIB).messages_per_receive(10), None);
    }

    #[test]
    fn a_batch_always_takes_the_largest_message() {
        let tight = budget(MIB, 16 * MIB);
        assert!(tight.max_batch_bytes() > MIB);
        assert_eq!(budget(256 << 10, 128 * MIB).max_batch_bytes(), 4 * MIB);
    }
}
