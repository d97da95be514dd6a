//! The failover plan of one request: which candidates, in which order, how many, and when
//! a failed attempt may move on to the next one.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::Method;
use kube_bastion_core::{Candidate, Status, Target};

use super::handle::RequestHandle;
use super::limit::Overloaded;
use super::state::EndpointKey;
use super::table::{Pick, Table, ready_count};
use super::{Core, ServiceState};

/// How an attempt failed, for [`Attempts::may_retry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum FailureKind {
    /// The TCP connection was refused or timed out, or the TLS handshake failed: no byte of
    /// the request left. Always safe to try the next candidate.
    Connect,
    /// The connection broke after request bytes were written and before the response head
    /// arrived. Only an idempotent request (GET, HEAD, OPTIONS) with a body that can be sent
    /// again may be retried, and only with
    /// [`BalancerConfig::retry_idempotent_on_reset`](super::BalancerConfig::retry_idempotent_on_reset).
    BeforeResponseHead,
}

/// The candidates one request may try, best first; an [`Iterator`] of [`Attempt`]s.
///
/// The first attempt is the Service's sticky endpoint (ClientIP affinity) or the policy's
/// choice; each further one is the policy's choice among the candidates not tried yet.
/// Ready endpoints come before serving-terminating ones and healthy ones before ejected
/// ones. At most [`BalancerConfig::max_attempts`](super::BalancerConfig::max_attempts)
/// attempts are yielded (never more than there are candidates).
///
/// Targets without a Service (pods, nodes) have no balancing state: their candidates are
/// tried in the order resolution gave them.
///
/// ```text
/// let mut attempts = balancer.plan(target, None);
/// let mut last_error = String::from("no endpoint");
/// while let Some(attempt) = attempts.next() {
///     let handle = match attempt.start().await {
///         Ok(handle) => handle,
///         Err(overloaded) => { let _status = overloaded.to_status(); return; }
///     };
///     // dial attempt.candidate() ...; on a connect error:
///     handle.connect_failed();
///     last_error = "dial tcp 10.0.0.1:80: connect: connection refused".into();
///     if !attempts.may_retry(FailureKind::Connect, &http::Method::GET, true) { break; }
/// }
/// let status = attempts.exhausted(&last_error);
/// assert_eq!(status.code(), 503);
/// ```
pub(crate) struct Attempts<'a> {
    core: &'a Arc<Core>,
    target: &'a Target,
    service: Option<Arc<ServiceState>>,
    client: Option<IpAddr>,
    ready: usize,
    default_port: u16,
    tried: Tried,
    limit: usize,
}

/// Indices tried so far: inline up to [`Tried::INLINE`], then on the heap (no allocation
/// for the usual few attempts).
#[derive(Debug, Default)]
struct Tried {
    inline: [usize; Tried::INLINE],
    len: usize,
    heap: Vec<usize>,
}

impl Tried {
    const INLINE: usize = 8;

    fn as_slice(&self) -> &[usize] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, index: &usize) -> bool {
        self.as_slice().contains(index)
    }

    fn push(&mut self, index: usize) {
        if self.heap.is_empty() && self.len < Self::INLINE {
            self.inline[self.len] = index;
            self.len += 1;
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            self.heap.push(index);
        }
    }
}

/// One candidate to try; see [`Attempts`].
pub(crate) struct Attempt<'a> {
    core: &'a Arc<Core>,
    candidate: &'a Candidate,
    index: usize,
    number: usize,
    default_port: u16,
    /// The Service's state and the slot the choice found for this endpoint (`None` for
    /// targets without a Service). The endpoint's state itself is fetched by
    /// [`start`](Self::start): choosing does not touch it.
    service: Option<(Arc<ServiceState>, Option<u32>)>,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(
        core: &'a Arc<Core>,
        target: &'a Target,
        service: Option<Arc<ServiceState>>,
        client: Option<IpAddr>,
    ) -> Self {
        let total = target.candidates.len();
        Self {
            core,
            target,
            service,
            client,
            ready: ready_count(&target.candidates),
            default_port: target.scheme.default_port(),
            tried: Tried::default(),
            limit: core.config.max_attempts.max(1).min(total),
        }
    }

    /// Attempts yielded so far.
    pub(crate) fn tried(&self) -> usize {
        self.tried.len()
    }

    /// Candidates the target has.
    pub(crate) fn total(&self) -> usize {
        self.target.candidates.len()
    }

    /// Most attempts this request may make.
    pub(crate) fn max_attempts(&self) -> usize {
        self.limit
    }

    /// The policy in force for this target (`None` for targets without a Service).
    #[cfg(test)]
    pub(crate) fn policy(&self) -> Option<super::BalancePolicy> {
        let service = self.service.as_ref()?;
        let mut table = service.lock_table();
        self.refresh_policy(service, &mut table);
        Some(table.policy)
    }

    /// Whether, after an attempt failed this way, the request may go on to the next
    /// attempt: attempts must remain, a connect failure always qualifies, a failure after
    /// bytes left only for an idempotent method whose body can be sent again, and only when
    /// [`BalancerConfig::retry_idempotent_on_reset`](super::BalancerConfig::retry_idempotent_on_reset)
    /// is on. A non-idempotent request is never sent twice.
    pub(crate) fn may_retry(
        &self,
        failure: FailureKind,
        method: &Method,
        body_replayable: bool,
    ) -> bool {
        if self.tried.len() >= self.limit {
            return false;
        }
        match failure {
            FailureKind::Connect => true,
            FailureKind::BeforeResponseHead => {
                self.core.config.retry_idempotent_on_reset
                    && is_idempotent(method)
                    && body_replayable
            }
        }
    }

    /// The next attempt of the loop every proxy path runs: the next candidate in the
    /// balancer's order that `endpoint` can dial, as `endpoint` maps it, with its started
    /// handle (which counts the request on the endpoint; a full concurrency limit is the
    /// limit's Status) and whether it is the last attempt the plan allows. `None` when no
    /// candidate is left. Pair it with [`failed`](Self::failed).
    pub(crate) async fn begin<P>(
        &mut self,
        mut endpoint: impl FnMut(usize) -> Option<P>,
    ) -> Result<Option<(P, RequestHandle, bool)>, Status> {
        while let Some(next) = self.next() {
            let Some(dial) = endpoint(next.index()) else {
                continue;
            };
            let handle = next.start().await.map_err(|e| e.to_status())?;
            let last = self.tried() >= self.max_attempts();
            return Ok(Some((dial, handle, last)));
        }
        Ok(None)
    }

    /// Records a failed attempt on its handle and says whether the request goes on to the
    /// next candidate: a connect failure (`kind` [`FailureKind::Connect`]) only while the
    /// request is `replayable`, a failure after bytes left as
    /// [`may_retry`](Self::may_retry) says, and no `kind` (no other endpoint would do
    /// better) never.
    pub(crate) fn failed(
        &self,
        handle: RequestHandle,
        kind: Option<FailureKind>,
        method: &Method,
        replayable: bool,
    ) -> bool {
        match kind {
            Some(FailureKind::Connect) => {
                handle.connect_failed();
                replayable && self.may_retry(FailureKind::Connect, method, true)
            }
            Some(kind) => {
                handle.failure();
                self.may_retry(kind, method, replayable)
            }
            None => {
                handle.failure();
                false
            }
        }
    }

    /// The message when every attempt failed: kube-apiserver's
    /// `error trying to reach service: <error>`, followed by
    /// `(tried N of M endpoints)` when the target had more than one candidate.
    pub(crate) fn exhausted_message(&self, last_error: &dyn fmt::Display) -> String {
        let total = self.total();
        if total > 1 {
            format!(
                "error trying to reach service: {last_error} (tried {} of {total} endpoints)",
                self.tried()
            )
        } else {
            format!("error trying to reach service: {last_error}")
        }
    }

    /// The 503 ServiceUnavailable Status when every attempt failed; see
    /// [`exhausted_message`](Self::exhausted_message).
    pub(crate) fn exhausted(&self, last_error: &dyn fmt::Display) -> Status {
        Status::service_unavailable(self.exhausted_message(last_error))
    }

    /// Follows the Service's annotation (parsed again only when its value changed).
    fn refresh_policy(&self, service: &ServiceState, table: &mut Table) {
        let default = self.core.config.policy;
        let annotation = self
            .target
            .service
            .as_ref()
            .and_then(|s| s.balancer.as_deref());
        if table.annotation.as_deref() != annotation {
            let (policy, error) = super::algorithm::effective_policy(default, annotation);
            if let Some(error) = error {
                tracing::warn!(
                    service = %service.key,
                    annotation = super::BALANCER_ANNOTATION,
                    default = %default,
                    "{error}; using the default policy"
                );
            }
            table.policy = policy;
            table.annotation = annotation.map(Box::from);
        }
    }

    fn pick(&mut self, service: &ServiceState) -> Option<(usize, Option<u32>)> {
        let candidates = &self.target.candidates;
        let config = &self.core.config;
        let info = self.target.service.as_ref();
        let mut table = service.lock_table();
        table.bind(self.target.candidates.as_arc());
        if self.tried.is_empty() {
            service.stats.set_candidates(candidates.len());
            self.refresh_policy(service, &mut table);
            let ejected = service.stats.ejected() > 0;
            table.sweep_step(candidates, self.default_port, &self.core.tracked, ejected);
        }
        let affinity = self
            .client
            .zip(info.and_then(|s| s.client_ip_affinity_seconds))
            .map(|(client, seconds)| (client, u64::from(seconds).saturating_mul(1_000_000_000)));
        // Affinity expiry and ejection ends need the exact time; otherwise the latest time
        // any request read is close enough and saves a clock read.
        let timeline = &self.core.timeline;
        let now = if affinity.is_some() || service.stats.ejected() > 0 {
            timeline.now()
        } else {
            timeline.coarse()
        };
        let mut chosen = None;
        if let Some((client, _)) = affinity
            && let Some(index) = table
                .affinity
                .lookup(client, candidates, self.default_port, now)
        {
            let (slot, ejected) = table.state_at(candidates, index, self.default_port, now);
            let tier_ok = index < self.ready || self.ready == 0;
            if !ejected && tier_ok && !self.tried.contains(&index) {
                chosen = Some((index, slot));
            }
        }
        let chosen = match chosen {
            Some(chosen) => chosen,
            None => {
                let pick = Pick {
                    candidates,
                    ready: self.ready,
                    default_port: self.default_port,
                    excluded: self.tried.as_slice(),
                    now,
                    policy: table.policy,
                    decay_ns: self.core.decay_ns,
                    unmeasured_rtt_ns: service
                        .stats
                        .typical_rtt()
                        .unwrap_or(self.core.default_rtt_ns),
                    cap: config.concurrency_limit.as_ref().map(|l| l.max_in_flight),
                };
                table.choose(&pick)?
            }
        };
        let index = chosen.0;
        let slot = table.track(
            chosen,
            candidates,
            self.default_port,
            &service.stats,
            self.core,
        );
        if let Some((client, timeout)) = affinity {
            let key = match slot.and_then(|slot| table.key(slot)) {
                Some(key) => key.clone(),
                None => EndpointKey::of(&candidates[index], self.default_port),
            };
            table.affinity.record(client, &key, index, now, timeout);
        }
        Some((index, slot))
    }
}

impl<'a> Iterator for Attempts<'a> {
    type Item = Attempt<'a>;

    fn next(&mut self) -> Option<Attempt<'a>> {
        if self.tried.len() >= self.limit {
            return None;
        }
        let service = self.service.take();
        let picked = match &service {
            None => Some((self.tried.len(), None)),
            Some(state) => self
                .pick(state)
                .map(|(index, slot)| (index, Some((Arc::clone(state), slot)))),
        };
        self.service = service;
        let (index, service) = picked?;
        self.tried.push(index);
        Some(Attempt {
            core: self.core,
            candidate: &self.target.candidates[index],
            index,
            number: self.tried.len(),
            default_port: self.default_port,
            service,
        })
    }
}

impl<'a> Attempt<'a> {
    /// Its position in [`Target::candidates`].
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Starts the request on this endpoint: takes a concurrency slot when a cap is
    /// configured (waiting in the bounded queue if allowed) and counts the request in
    /// flight. Call it before dialling, so that connects count as load too.
    pub(crate) async fn start(&self) -> Result<RequestHandle, Overloaded> {
        let Some((service, slot)) = &self.service else {
            return Ok(RequestHandle::untracked());
        };
        let endpoint = service.lock_table().endpoint_for(
            *slot,
            self.candidate,
            self.default_port,
            &service.stats,
            self.core,
        );
        let permit = match (&endpoint.limiter, &self.core.config.concurrency_limit) {
            (Some(limiter), Some(limit)) => Some(limiter.acquire(limit, &endpoint.key).await?),
            _ => None,
        };
        Ok(RequestHandle::tracked(
            Arc::clone(self.core),
            endpoint,
            permit,
        ))
    }
}

impl fmt::Debug for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempts")
            .field("tried", &self.tried)
            .field("limit", &self.limit)
            .field("total", &self.total())
            .field("service", &self.service.as_ref().map(|s| &s.key))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Attempt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("index", &self.index)
            .field("number", &self.number)
            .field("endpoint", &self.candidate.authority())
            .finish_non_exhaustive()
    }
}

/// GET, HEAD and OPTIONS: the methods that may be sent again after a broken exchange.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}
