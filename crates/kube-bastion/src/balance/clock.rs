//! The time source of a [`Balancer`](super::Balancer): the system clock in production, a
//! hand-driven clock in tests (ejection backoff and affinity expiry without sleeping).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where a balancer reads the time.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

/// The monotonic system clock ([`Instant::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to; clones share the same time (tests).
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub struct ManualClock {
    base: Instant,
    offset_nanos: Arc<AtomicU64>,
}

#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(current.saturating_add(nanos))
            });
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::Acquire))
    }
}

/// Instants as nanoseconds since a fixed origin, so they fit in atomics.
#[derive(Clone, Debug)]
pub(crate) struct Timeline {
    clock: Arc<dyn Clock>,
    origin: Instant,
    /// The latest reading (see [`coarse`](Self::coarse)).
    latest: Arc<AtomicU64>,
}

impl Timeline {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        let origin = clock.now();
        Self {
            clock,
            origin,
            latest: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Nanoseconds since the origin, plus one: never 0 (0 means "never" in the endpoint
    /// state), and differences stay exact.
    pub(crate) fn now(&self) -> u64 {
        let nanos = self
            .clock
            .now()
            .saturating_duration_since(self.origin)
            .as_nanos();
        let now = u64::try_from(nanos).unwrap_or(u64::MAX).saturating_add(1);
        self.latest.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// The latest time any request read (its start or completion): no clock read, at most
    /// one request's duration behind while requests flow. Used where exactness does not
    /// matter (latency decay, idle bookkeeping): reading the clock can cost more than the
    /// whole choice on virtual machines.
    pub(crate) fn coarse(&self) -> u64 {
        self.latest.load(Ordering::Relaxed)
    }
}

/// Saturating conversion of a duration to nanoseconds.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - start, Duration::from_millis(1500));
    }

    #[test]
    fn timeline_counts_from_its_origin_and_never_reports_zero() {
        let clock = ManualClock::new();
        let timeline = Timeline::new(Arc::new(clock.clone()));
        assert_eq!(timeline.now(), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(timeline.now(), 2_000_000_001);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
