//! Capped exponential backoff with full jitter, for retrying transient
//! failures (SQS or Postgres unavailable) without a thundering herd.

use std::time::Duration;

/// Delays of 200 ms doubling to a cap of 30 s, each randomized in [d/2, d].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(200),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The next delay to wait; grows until the cap.
    pub fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.cap);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        current.mul_f64(jitter)
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first <= Duration::from_millis(200) && first >= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
        assert!(backoff.next_delay() >= Duration::from_secs(15));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }
}
