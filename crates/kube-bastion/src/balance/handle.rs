//! The per-request accounting handle: counts the request in flight on its endpoint from
//! the moment it starts until its response completes, then feeds latency and health.

use std::fmt;

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::Core;
use super::state::Endpoint;

/// Accounts one request on one endpoint. Created by [`Attempt::start`](super::Attempt::start).
///
/// The engine keeps it for the whole exchange (inside the response body) and ends it when
/// the response completes: [`success`](Self::success) at the body's end,
/// [`failure`](Self::failure) when the backend broke the exchange,
/// [`connect_failed`](Self::connect_failed) when the connection (or TLS handshake) could not
/// be made. Dropping it is a completion too: as a success when a response head was recorded
/// and was not a counted 5xx, otherwise with no effect on health. Either way the request
/// stops counting as in flight, its concurrency slot is released and, except for a connect
/// failure, its duration is folded into the endpoint's latency estimate.
pub(crate) struct RequestHandle {
    inner: Option<Inner>,
}

struct Inner {
    core: Arc<Core>,
    endpoint: Arc<Endpoint>,
    started: u64,
    status: Option<u16>,
    /// The latency sample was already taken (at an upgrade's `101`).
    sampled: bool,
    _slot: Option<OwnedSemaphorePermit>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    ConnectFailed,
    Dropped,
}

impl RequestHandle {
    pub(crate) fn tracked(
        core: Arc<Core>,
        endpoint: Arc<Endpoint>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let started = core.timeline.now();
        endpoint.enter(started);
        Self {
            inner: Some(Inner {
                core,
                endpoint,
                started,
                status: None,
                sampled: false,
                _slot: slot,
            }),
        }
    }

    /// A handle that accounts nothing (targets without balancing state: pods and nodes).
    pub(crate) fn untracked() -> Self {
        Self { inner: None }
    }

    /// The endpoint this handle accounts on, when it is an IP endpoint with state.
    #[cfg(test)]
    pub(crate) fn endpoint(&self) -> Option<std::net::SocketAddr> {
        match &self.inner.as_ref()?.endpoint.key {
            super::state::EndpointKey::Addr(addr) => Some(*addr),
            super::state::EndpointKey::Name(..) => None,
        }
    }

    /// Records the response head's status (a 5xx counts as a failure at completion when
    /// [`EjectionConfig::eject_on_5xx`](super::EjectionConfig::eject_on_5xx) is set).
    ///
    /// A `101 Switching Protocols` also takes the latency sample right away: the tunnel that
    /// follows stays in flight until the handle ends, but its lifetime (minutes or hours of
    /// a terminal session) says nothing about the endpoint's latency.
    pub(crate) fn response_head(&mut self, status: http::StatusCode) {
        if let Some(inner) = &mut self.inner {
            inner.status = Some(status.as_u16());
            if status == http::StatusCode::SWITCHING_PROTOCOLS && !inner.sampled {
                let now = inner.core.timeline.now();
                let sample = now.saturating_sub(inner.started).max(1) as f64;
                inner.endpoint.observe_rtt(sample, now, inner.core.decay_ns);
                inner.sampled = true;
            }
        }
    }

    /// The response completed (body end, or the 101 of an upgrade).
    pub(crate) fn success(mut self) {
        self.finish(Outcome::Success);
    }

    /// The backend broke the exchange after the connection was made (reset before the
    /// response head, or an error in the middle of the body).
    pub(crate) fn failure(mut self) {
        self.finish(Outcome::Failure);
    }

    /// The connection or the TLS handshake failed: no byte of the request was sent.
    pub(crate) fn connect_failed(mut self) {
        self.finish(Outcome::ConnectFailed);
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let Inner {
            core,
            endpoint,
            started,
            status,
            sampled,
            _slot,
        } = inner;
        let now = core.timeline.now();
        endpoint.leave();
        let config = &core.config;
        let decay_ns = core.decay_ns;
        let server_error = status.is_some_and(|s| s >= 500) && config.ejection.eject_on_5xx;
        if outcome != Outcome::ConnectFailed && !sampled {
            let sample = now.saturating_sub(started).max(1) as f64;
            endpoint.observe_rtt(sample, now, decay_ns);
        }
        match outcome {
            Outcome::Failure | Outcome::ConnectFailed => {
                endpoint.record_failure(&config.ejection, now);
            }
            Outcome::Success | Outcome::Dropped if server_error => {
                endpoint.record_failure(&config.ejection, now);
            }
            Outcome::Success => endpoint.record_success(&config.ejection, now),
            Outcome::Dropped if status.is_some() => {
                endpoint.record_success(&config.ejection, now);
            }
            Outcome::Dropped => {}
        }
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.finish(Outcome::Dropped);
    }
}

impl fmt::Debug for RequestHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("RequestHandle(untracked)"),
            Some(inner) => f
                .debug_struct("RequestHandle")
                .field("endpoint", &format_args!("{}", inner.endpoint.key))
                .field("status", &inner.status)
                .finish(),
        }
    }
}
