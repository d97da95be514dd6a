//! The optional per-endpoint concurrency cap, with a bounded wait queue.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube_bastion_core::Status;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// A cap on requests in flight to one endpoint.
///
/// A request over the cap waits for a slot in a queue of at most
/// [`max_queued`](Self::max_queued) requests per endpoint, for at most
/// [`queue_timeout`](Self::queue_timeout); when the queue is full (or `max_queued` is 0) or
/// the wait times out, it is answered 503 with a message that says so. There is no unbounded
/// queue anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyLimit {
    /// Requests in flight per endpoint (at least 1).
    pub max_in_flight: u32,
    /// Requests that may wait for a slot, per endpoint; 0 answers 503 at once.
    pub max_queued: u32,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
}

impl ConcurrencyLimit {
    /// At most `max_in_flight` requests per endpoint; no queue.
    pub fn new(max_in_flight: u32) -> Self {
        Self {
            max_in_flight: max_in_flight.max(1),
            max_queued: 0,
            queue_timeout: Duration::ZERO,
        }
    }

    /// Lets up to `max_queued` requests wait up to `timeout` for a slot.
    pub fn with_queue(mut self, max_queued: u32, timeout: Duration) -> Self {
        self.max_queued = max_queued;
        self.queue_timeout = timeout;
        self
    }
}

/// Why a request could not start on its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum OverloadReason {
    /// The cap was reached and the queue is full (or there is none).
    QueueFull,
    /// The request waited in the queue for the whole timeout.
    Timeout,
}

/// An endpoint is at its concurrency cap; see [`ConcurrencyLimit`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) struct Overloaded {
    endpoint: String,
    limit: ConcurrencyLimit,
    reason: OverloadReason,
}

impl Overloaded {
    /// Why.
    #[cfg(test)]
    pub(crate) fn reason(&self) -> OverloadReason {
        self.reason
    }

    /// The 503 ServiceUnavailable a client gets.
    pub(crate) fn to_status(&self) -> Status {
        Status::service_unavailable(format!("error trying to reach service: {self}"))
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConcurrencyLimit {
            max_in_flight,
            max_queued,
            queue_timeout,
        } = &self.limit;
        match self.reason {
            OverloadReason::QueueFull if *max_queued == 0 => write!(
                f,
                "endpoint {} is at its limit of {max_in_flight} concurrent requests",
                self.endpoint
            ),
            OverloadReason::QueueFull => write!(
                f,
                "endpoint {} is at its limit of {max_in_flight} concurrent requests and \
                 {max_queued} queued requests",
                self.endpoint
            ),
            OverloadReason::Timeout => write!(
                f,
                "endpoint {} stayed at its limit of {max_in_flight} concurrent requests for {} ms",
                self.endpoint,
                queue_timeout.as_millis()
            ),
        }
    }
}

/// One endpoint's slots and queue.
#[derive(Debug)]
pub(crate) struct Limiter {
    slots: Arc<Semaphore>,
    queued: AtomicU32,
}

impl Limiter {
    pub(crate) fn new(limit: &ConcurrencyLimit) -> Self {
        let permits = usize::try_from(limit.max_in_flight.max(1)).unwrap_or(usize::MAX);
        Self {
            slots: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            queued: AtomicU32::new(0),
        }
    }

    /// Whether no slot is free right now.
    #[cfg(test)]
    pub(crate) fn is_full(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// Takes a slot, waiting in the bounded queue when allowed.
    pub(crate) async fn acquire(
        &self,
        limit: &ConcurrencyLimit,
        endpoint: &(dyn fmt::Display + Sync),
    ) -> Result<OwnedSemaphorePermit, Overloaded> {
        let overloaded = |reason| Overloaded {
            endpoint: endpoint.to_string(),
            limit: limit.clone(),
            reason,
        };
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) | Err(TryAcquireError::NoPermits) => {}
        }
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < limit.max_queued).then_some(queued + 1)
            });
        if joined.is_err() {
            return Err(overloaded(OverloadReason::QueueFull));
        }
        let _leave = LeaveQueue(&self.queued);
        match tokio::time::timeout(limit.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(overloaded(OverloadReason::QueueFull)),
            Err(_elapsed) => Err(overloaded(OverloadReason::Timeout)),
        }
    }
}

/// Leaves the queue when the wait ends, however it ends (including cancellation).
struct LeaveQueue<'a>(&'a AtomicU32);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_the_cap_without_queue_is_refused_with_a_clear_message() {
        let limit = ConcurrencyLimit::new(1);
        let limiter = Limiter::new(&limit);
        let held = limiter.acquire(&limit, &"10.0.0.1:80").await.unwrap();
        assert!(limiter.is_full());
        let error = limiter.acquire(&limit, &"10.0.0.1:80").await.unwrap_err();
        assert_eq!(error.reason(), OverloadReason::QueueFull);
        assert_eq!(
            error.to_string(),
            "endpoint 10.0.0.1:80 is at its limit of 1 concurrent requests"
        );
        drop(held);
        assert!(limiter.acquire(&limit, &"10.0.0.1:80").await.is_ok());
    }

    #[tokio::test]
    async fn queue_is_bounded_and_waiters_time_out_or_get_a_slot() {
        let limit = ConcurrencyLimit::new(1).with_queue(1, Duration::from_millis(50));
        let limiter = Arc::new(Limiter::new(&limit));
        let held = limiter.acquire(&limit, &"ep").await.unwrap();

        // One waiter fits; it gets the slot when it is released.
        let waiter = {
            let (limiter, limit) = (Arc::clone(&limiter), limit.clone());
            tokio::spawn(async move { limiter.acquire(&limit, &"ep").await.map(drop) })
        };
        tokio::task::yield_now().await;
        // The queue is full now: the next one is refused at once.
        let refused = limiter.acquire(&limit, &"ep").await.unwrap_err();
        assert_eq!(refused.reason(), OverloadReason::QueueFull);
        assert!(refused.to_string().contains("and 1 queued requests"));
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));

        // A waiter that never gets a slot times out.
        let _held = limiter.acquire(&limit, &"ep").await.unwrap();
        let timed_out = limiter.acquire(&limit, &"ep").await.unwrap_err();
        assert_eq!(timed_out.reason(), OverloadReason::Timeout);
        assert!(timed_out.to_string().contains("for 50 ms"));
        assert_eq!(limiter.queued.load(Ordering::Acquire), 0);
    }
}
