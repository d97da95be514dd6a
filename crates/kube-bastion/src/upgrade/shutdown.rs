//! Graceful shutdown for upgraded connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// A shutdown switch shared by the host and every tunnel.
///
/// Clones share one state. The host calls [`Shutdown::trigger`] when it stops accepting
/// connections: new upgrades are then refused with 503, open tunnels keep running until
/// they end on their own or the grace period passes, after which they are closed. The host
/// waits for [`Shutdown::drained`] before exiting.
///
/// ```
/// use std::time::Duration;
/// use kube_bastion::{Shutdown, UpgradeOptions};
///
/// let shutdown = Shutdown::new();
/// let options = UpgradeOptions::default().shutdown(shutdown.clone());
/// # let _ = options;
/// // ... serve ...
/// shutdown.trigger(Duration::from_secs(30));
/// assert!(shutdown.is_triggered());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    deadline: watch::Sender<Option<Instant>>,
    open: AtomicUsize,
    drained: Notify,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            deadline: watch::Sender::new(None),
            open: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }
}

impl Shutdown {
    /// A switch that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: no new upgrade is accepted, and tunnels still open after `grace`
    /// are closed. Triggering again can only bring the deadline closer.
    pub fn trigger(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.inner
            .deadline
            .send_if_modified(|current| match current {
                Some(existing) if *existing <= deadline => false,
                _ => {
                    *current = Some(deadline);
                    true
                }
            });
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.deadline.borrow().is_some()
    }

    /// How many tunnels are open right now.
    pub fn open_tunnels(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Resolves once no tunnel is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.inner.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_tunnels() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts one tunnel as open until the returned value is dropped.
    pub(crate) fn track(&self) -> OpenTunnel {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        OpenTunnel {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Resolves when the shutdown deadline has passed (never, if it is never triggered).
    pub(crate) async fn deadline_passed(&self) {
        let mut rx = self.inner.deadline.subscribe();
        let deadline = match rx.wait_for(Option::is_some).await {
            Ok(deadline) => *deadline,
            // The sender lives in `self.inner`, so it cannot be gone.
            Err(_) => None,
        };
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

/// One open tunnel, counted by its [`Shutdown`].
#[derive(Debug)]
pub(crate) struct OpenTunnel {
    inner: Arc<Inner>,
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_every_tunnel() {
        let shutdown = Shutdown::new();
        let a = shutdown.track();
        let b = shutdown.track();
        assert_eq!(shutdown.open_tunnels(), 2);
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.drained().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
        assert_eq!(shutdown.open_tunnels(), 0);
    }

    #[tokio::test]
    async fn deadline_passes_only_after_a_trigger() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.deadline_passed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        let triggered = Instant::now();
        shutdown.trigger(Duration::from_millis(30));
        // A later trigger with a longer grace does not extend the deadline.
        shutdown.trigger(Duration::from_secs(3600));
        assert!(shutdown.is_triggered());
        waiter.await.unwrap();
        assert!(triggered.elapsed() >= Duration::from_millis(30));
    }
}
