//! A token bucket that caps the bytes per second of one tunnel direction, as
//! kube-apiserver's `--max-connection-bytes-per-sec` does.

use std::num::NonZeroU64;
use std::time::Duration;

use tokio::time::Instant;

/// Tokens are refilled continuously at `rate` bytes per second; the bucket holds at most one
/// tenth of a second's worth (at least one read chunk), so a short burst after a quiet period
/// stays small and the long-run rate is the configured one.
///
/// Spending more than is available leaves the bucket in debt; [`TokenBucket::take`] then
/// reports how long to wait before the caller may move more bytes. That way the caller always
/// moves the bytes it already read and the average over any window longer than the wait is
/// the configured rate.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket for `rate` bytes per second, starting full.
    pub(crate) fn new(rate: NonZeroU64, now: Instant) -> Self {
        let rate = rate.get() as f64;
        let capacity = (rate / 10.0).max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// The largest read worth doing now: the bucket capacity, at least one byte.
    pub(crate) fn chunk(&self) -> usize {
        // Capacity is at least 1.0 and finite; the cast saturates for huge rates.
        self.capacity as usize
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }

    /// Spends `bytes` tokens at `now` and returns how long the caller must wait before moving
    /// more (zero when the bucket is not in debt).
    pub(crate) fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn millis(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    fn assert_ms(d: Duration, ms: f64) {
        assert!((millis(d) - ms).abs() < 1e-3, "{d:?} is not {ms} ms");
    }

    #[test]
    fn starts_with_a_tenth_of_a_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(1000), t0);
        assert_eq!(b.chunk(), 100);
        assert_eq!(b.take(100, t0), Duration::ZERO);
        // The next byte costs a millisecond.
        assert_ms(b.take(1, t0), 1.0);
    }

    #[test]
    fn debt_is_paid_back_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(1_000), t0);
        // 100 from the bucket plus 400 of debt: wait 0.4 s.
        let wait = b.take(500, t0);
        assert_ms(wait, 400.0);
        // After waiting exactly that long the bucket is empty again: one more byte costs 1 ms.
        let t1 = t0 + wait;
        assert_ms(b.take(1, t1), 1.0);
    }

    #[test]
    fn refill_never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(1_000), t0);
        let _ = b.take(100, t0);
        // A long quiet period only refills one chunk.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.take(100, t1), Duration::ZERO);
        assert_ms(b.take(10, t1), 10.0);
    }

    #[test]
    fn long_run_rate_is_the_configured_rate() {
        // Simulate a reader that moves 4 KiB chunks and sleeps as told.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(1 << 20), t0);
        let mut now = t0;
        let mut moved = 0usize;
        while moved < 8 << 20 {
            now += b.take(4096, now);
            moved += 4096;
        }
        let secs = (now - t0).as_secs_f64();
        // 8 MiB at 1 MiB/s, minus the initial tenth of a second of burst.
        assert!((secs - 7.9).abs() < 0.01, "took {secs} s");
    }

    #[test]
    fn tiny_rates_still_move_a_byte() {
        let t0 = Instant::now();
        let b = TokenBucket::new(rate(3), t0);
        assert_eq!(b.chunk(), 1);
    }
}
