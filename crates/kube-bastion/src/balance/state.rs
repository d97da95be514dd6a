//! Per-Service, per-endpoint state and the O(1) choice among candidates.
//!
//! A Service's table maps endpoint addresses to their state. Choosing never scans the
//! candidate list: a policy samples one or two indices and looks their state up by address.
//! Endpoints that left the cluster view are found by an incremental sweep (one candidate
//! per choice is marked as present; when the sweep has walked the whole list, unmarked
//! entries are dropped), so the table follows the candidate list in amortised O(1). A walk
//! starts only when the table holds more entries than there are candidates (keys are
//! unique, so some left) or an endpoint is ejected.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use foldhash::fast::RandomState;
use kube_bastion_core::{Candidate, EndpointState, Host};
use rand::Rng;
use rand::rngs::SmallRng;

use super::Core;
use super::affinity::AffinityTable;
use super::health::Health;
use super::limit::Limiter;
use super::policy::BalancePolicy;

/// Samples a policy draws before it falls back to a scan (only reached when most
/// candidates are excluded or ejected).
const SAMPLES: usize = 8;

/// Candidates the membership sweep visits per choice.
const SWEEP_STEP: usize = 2;

/// `rtt_bits` value meaning "no latency observed yet".
const NO_SAMPLE: u64 = u64::MAX;

/// Where an endpoint lives: the state key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EndpointKey {
    /// An IP address and port (every Service endpoint).
    Addr(SocketAddr),
    /// A DNS name and port.
    Name(Arc<str>, u16),
}

impl EndpointKey {
    /// The key of `candidate`, dialled on `default_port` when it names none.
    pub(crate) fn of(candidate: &Candidate, default_port: u16) -> Self {
        let port = candidate.port.unwrap_or(default_port);
        match &candidate.host {
            Host::Ip(ip) => Self::Addr(SocketAddr::new(*ip, port)),
            Host::Name(name) => Self::Name(Arc::from(name.as_str()), port),
        }
    }

    /// Whether `candidate` is this endpoint (no allocation).
    pub(crate) fn matches(&self, candidate: &Candidate, default_port: u16) -> bool {
        let port = candidate.port.unwrap_or(default_port);
        match (self, &candidate.host) {
            (Self::Addr(addr), Host::Ip(ip)) => addr.ip() == *ip && addr.port() == port,
            (Self::Name(name, own), Host::Name(other)) => **name == **other && *own == port,
            _ => false,
        }
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => addr.fmt(f),
            Self::Name(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// Service-wide figures shared by the Service's endpoints.
#[derive(Debug)]
pub(crate) struct ServiceStats {
    ejected: AtomicU32,
    candidates: AtomicUsize,
    typical_rtt_bits: AtomicU64,
}

impl ServiceStats {
    pub(crate) fn new() -> Self {
        Self {
            ejected: AtomicU32::new(0),
            candidates: AtomicUsize::new(0),
            typical_rtt_bits: AtomicU64::new(NO_SAMPLE),
        }
    }

    pub(crate) fn ejected_counter(&self) -> &AtomicU32 {
        &self.ejected
    }

    /// Endpoints currently ejected (or on probation).
    pub(crate) fn ejected(&self) -> u32 {
        self.ejected.load(Ordering::Acquire)
    }

    /// Records the candidate count of the current choice.
    pub(crate) fn set_candidates(&self, count: usize) {
        self.candidates.store(count, Ordering::Release);
    }

    /// Candidates seen at the last choice.
    pub(crate) fn candidates(&self) -> usize {
        self.candidates.load(Ordering::Acquire)
    }

    /// Latency typical of the Service (a plain moving average over all its samples), used
    /// as the estimate of endpoints not measured yet, so they neither starve nor stampede.
    pub(crate) fn typical_rtt(&self) -> Option<f64> {
        let bits = self.typical_rtt_bits.load(Ordering::Relaxed);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits))
    }

    fn observe_typical(&self, sample: f64) {
        let next = match self.typical_rtt() {
            None => sample,
            Some(current) => current * 0.9 + sample * 0.1,
        };
        self.typical_rtt_bits
            .store(next.to_bits(), Ordering::Relaxed);
    }
}

/// The state of one endpoint, shared by the Service table and the requests in flight.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Its address.
    pub(crate) key: EndpointKey,
    /// Its Service's figures.
    pub(crate) service: Arc<ServiceStats>,
    in_flight: AtomicU32,
    /// Peak-EWMA latency estimate in nanoseconds (`f64` bits), or [`NO_SAMPLE`].
    rtt_bits: AtomicU64,
    /// When the estimate was last updated (timeline nanoseconds).
    rtt_at: AtomicU64,
    /// Ejected until this timeline instant (0: not ejected).
    ejected_until: AtomicU64,
    /// Last time a request was sent to it.
    last_used: AtomicU64,
    /// Last sweep epoch in which it was seen among the candidates.
    seen_epoch: AtomicU64,
    health: Mutex<Health>,
    /// Removed from its Service table (mirrors `Health::removed` for lock-free reads).
    removed: AtomicBool,
    /// Concurrency cap, when configured.
    pub(crate) limiter: Option<Limiter>,
}

impl Endpoint {
    pub(crate) fn new(
        key: EndpointKey,
        service: Arc<ServiceStats>,
        limiter: Option<Limiter>,
    ) -> Self {
        Self {
            key,
            service,
            in_flight: AtomicU32::new(0),
            rtt_bits: AtomicU64::new(NO_SAMPLE),
            rtt_at: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            seen_epoch: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            limiter,
        }
    }

    pub(crate) fn lock_health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether it was removed from its Service table.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn set_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// One more request in flight, sent at `now`.
    pub(crate) fn enter(&self, now: u64) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_used.store(now, Ordering::Relaxed);
    }

    /// One request fewer in flight (called exactly once per [`enter`](Self::enter)).
    pub(crate) fn leave(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Whether it is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    pub(crate) fn set_ejected_until(&self, until: u64) {
        self.ejected_until.store(until, Ordering::Release);
    }

    /// The latency estimate at `now`: the stored peak EWMA decayed towards zero for the
    /// time nothing was observed (so an idle endpoint is eventually tried again).
    pub(crate) fn estimate(&self, now: u64, decay_ns: f64) -> Option<f64> {
        let bits = self.rtt_bits.load(Ordering::Acquire);
        if bits == NO_SAMPLE {
            return None;
        }
        let stored = f64::from_bits(bits);
        let idle = now.saturating_sub(self.rtt_at.load(Ordering::Acquire)) as f64;
        Some(stored * (-idle / decay_ns).exp())
    }

    /// Folds a latency sample into the peak EWMA: a sample above the current estimate
    /// replaces it at once (peak), a lower one pulls it down with a weight that grows with
    /// the time since the last update.
    pub(crate) fn observe_rtt(&self, sample_ns: f64, now: u64, decay_ns: f64) {
        let _writer = self.lock_health();
        let next = match self.estimate(now, decay_ns) {
            None => sample_ns,
            Some(current) if sample_ns > current => sample_ns,
            Some(_) => {
                let stored = f64::from_bits(self.rtt_bits.load(Ordering::Acquire));
                let elapsed = now.saturating_sub(self.rtt_at.load(Ordering::Acquire)) as f64;
                let keep = (-elapsed / decay_ns).exp();
                stored * keep + sample_ns * (1.0 - keep)
            }
        };
        self.rtt_bits.store(next.to_bits(), Ordering::Release);
        self.rtt_at.store(now, Ordering::Release);
        self.service.observe_typical(sample_ns);
    }

    /// The stored estimate without decay (for snapshots).
    pub(crate) fn stored_estimate(&self) -> Option<f64> {
        let bits = self.rtt_bits.load(Ordering::Acquire);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits))
    }
}

/// A choice: the candidate index and its state, when it has some.
pub(crate) type Chosen = (usize, Option<Arc<Endpoint>>);

/// What choosing needs to know besides the table.
#[derive(Debug)]
pub(crate) struct Pick<'a> {
    pub(crate) candidates: &'a [Candidate],
    /// Candidates `[0, ready)` are ready, the rest serving-terminating.
    pub(crate) ready: usize,
    pub(crate) default_port: u16,
    /// Indices already tried by this request.
    pub(crate) excluded: &'a [usize],
    pub(crate) now: u64,
    pub(crate) policy: BalancePolicy,
    pub(crate) decay_ns: f64,
    /// Estimate for endpoints never measured: the Service's typical latency, else the
    /// configured default.
    pub(crate) unmeasured_rtt_ns: f64,
    /// Per-endpoint concurrency cap.
    pub(crate) cap: Option<u32>,
}

/// How many of `candidates` are ready (the core orders ready ones first). O(1) when all
/// are ready, O(log n) otherwise.
pub(crate) fn ready_count(candidates: &[Candidate]) -> usize {
    match candidates.last() {
        None => 0,
        Some(last) if last.state == EndpointState::Ready => candidates.len(),
        Some(_) => candidates.partition_point(|c| c.state == EndpointState::Ready),
    }
}

/// The mutable state of one Service, behind its mutex.
#[derive(Debug)]
pub(crate) struct Table {
    endpoints: HashMap<EndpointKey, Arc<Endpoint>, RandomState>,
    /// A cache of `endpoints` by candidate position: checked against the candidate's
    /// address before use, it spares the hash probe (and its cache misses) on large lists.
    slots: Vec<Option<Arc<Endpoint>>>,
    rng: SmallRng,
    rr_next: usize,
    sweep_cursor: usize,
    sweep_epoch: u64,
    sweep_len: usize,
    sweep_restarted: bool,
    /// ClientIP affinity.
    pub(crate) affinity: AffinityTable,
    /// The annotation value the policy was parsed from.
    pub(crate) annotation: Option<Box<str>>,
    /// The Service's effective policy.
    pub(crate) policy: BalancePolicy,
}

impl Table {
    pub(crate) fn new(rng: SmallRng, policy: BalancePolicy, affinity_capacity: usize) -> Self {
        Self {
            endpoints: HashMap::default(),
            slots: Vec::new(),
            rng,
            rr_next: 0,
            sweep_cursor: 0,
            sweep_epoch: 1,
            sweep_len: 0,
            sweep_restarted: false,
            affinity: AffinityTable::new(affinity_capacity),
            annotation: None,
            policy,
        }
    }

    /// The state of the endpoint at `index`, if tracked.
    pub(crate) fn get(
        &self,
        candidates: &[Candidate],
        index: usize,
        default_port: u16,
    ) -> Option<&Arc<Endpoint>> {
        let candidate = candidates.get(index)?;
        lookup(&self.endpoints, &self.slots, candidate, index, default_port)
    }

    /// The state of `key`, if tracked.
    pub(crate) fn by_key(&self, key: &EndpointKey) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(key)
    }

    /// The state of the chosen endpoint, created when missing. When the balancer-wide
    /// bound is reached the state is not kept (the request still gets one to account on).
    pub(crate) fn track(
        &mut self,
        (index, known): Chosen,
        candidates: &[Candidate],
        default_port: u16,
        service: &Arc<ServiceStats>,
        core: &Core,
    ) -> Arc<Endpoint> {
        if let Some(endpoint) = known {
            endpoint
                .seen_epoch
                .store(self.sweep_epoch, Ordering::Relaxed);
            self.remember_slot(candidates.len(), index, &endpoint);
            return endpoint;
        }
        let key = EndpointKey::of(&candidates[index], default_port);
        let endpoint = Arc::new(Endpoint::new(
            key.clone(),
            Arc::clone(service),
            core.config.concurrency_limit.as_ref().map(Limiter::new),
        ));
        endpoint
            .seen_epoch
            .store(self.sweep_epoch, Ordering::Relaxed);
        let bound = core.config.max_tracked_endpoints;
        let admitted = core
            .tracked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.endpoints.insert(key, Arc::clone(&endpoint));
            self.remember_slot(candidates.len(), index, &endpoint);
        }
        endpoint
    }

    /// Caches `endpoint` at candidate position `index` of a list of `len`.
    fn remember_slot(&mut self, len: usize, index: usize, endpoint: &Arc<Endpoint>) {
        if self.slots.len() != len {
            self.slots.resize(len, None);
        }
        if let Some(slot) = self.slots.get_mut(index)
            && !slot
                .as_ref()
                .is_some_and(|cached| Arc::ptr_eq(cached, endpoint))
        {
            *slot = Some(Arc::clone(endpoint));
        }
    }

    /// Drops every entry (the Service is forgotten); returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let count = self.endpoints.len();
        self.slots.clear();
        for (_, endpoint) in self.endpoints.drain() {
            endpoint.mark_removed();
        }
        count
    }

    /// Whether any tracked endpoint has requests in flight.
    pub(crate) fn busy(&self) -> bool {
        self.endpoints.values().any(|e| e.in_flight() > 0)
    }

    /// Advances the membership sweep by a few candidates (when a walk is needed, see
    /// below); when it has walked the whole list, drops the entries not seen during the walk.
    pub(crate) fn sweep_step(
        &mut self,
        candidates: &[Candidate],
        default_port: u16,
        tracked: &AtomicUsize,
        ejected: bool,
    ) {
        if self.endpoints.is_empty() {
            self.sweep_cursor = 0;
            return;
        }
        let len = candidates.len();
        // Keys are unique, so a table larger than the candidate list holds departed
        // endpoints; an ejected one may have departed too. Otherwise the table is bounded by
        // the list already and a walk costs cache misses for nothing: start one only when
        // needed, and finish it once started.
        if self.sweep_cursor == 0 && self.endpoints.len() <= len && !ejected {
            return;
        }
        if len != self.sweep_len {
            // The list changed under the walk: restart it once per epoch so that entries
            // that moved are not missed; marks already made stay valid.
            if !self.sweep_restarted {
                self.sweep_cursor = 0;
                self.sweep_restarted = true;
            }
            self.sweep_len = len;
        }
        for _ in 0..SWEEP_STEP {
            let Some(candidate) = candidates.get(self.sweep_cursor) else {
                break;
            };
            if let Some(endpoint) = self
                .endpoints
                .get(&EndpointKey::of(candidate, default_port))
            {
                endpoint
                    .seen_epoch
                    .store(self.sweep_epoch, Ordering::Relaxed);
            }
            self.sweep_cursor += 1;
        }
        if self.sweep_cursor >= len {
            let epoch = self.sweep_epoch;
            let before = self.endpoints.len();
            self.endpoints.retain(|_, endpoint| {
                let seen = endpoint.seen_epoch.load(Ordering::Relaxed);
                // Busy endpoints get one more walk: their in-flight count matters.
                let keep = seen == epoch || (seen + 1 == epoch && endpoint.in_flight() > 0);
                if !keep {
                    endpoint.mark_removed();
                }
                keep
            });
            let removed = before - self.endpoints.len();
            if removed > 0 {
                for slot in &mut self.slots {
                    if slot.as_ref().is_some_and(|e| e.is_removed()) {
                        *slot = None;
                    }
                }
                let _ = tracked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(removed))
                });
            }
            self.sweep_epoch += 1;
            self.sweep_cursor = 0;
            self.sweep_restarted = false;
        }
    }

    /// Chooses a candidate: ready ones not ejected, then serving-terminating ones not
    /// ejected, then (everything else being ejected or tried) ejected ready ones, then
    /// ejected serving-terminating ones. `None` when every candidate is excluded.
    pub(crate) fn choose(&mut self, pick: &Pick<'_>) -> Option<Chosen> {
        let n = pick.candidates.len();
        let tiers = [(0, pick.ready.min(n)), (pick.ready.min(n), n)];
        for allow_ejected in [false, true] {
            for (lo, hi) in tiers {
                if lo < hi
                    && let Some(chosen) = self.choose_in(pick, lo, hi, allow_ejected)
                {
                    return Some(chosen);
                }
            }
        }
        None
    }

    fn choose_in(
        &mut self,
        pick: &Pick<'_>,
        lo: usize,
        hi: usize,
        allow_ejected: bool,
    ) -> Option<Chosen> {
        let len = hi - lo;
        let (endpoints, slots) = (&self.endpoints, &self.slots);
        // `None`: not a choice (tried, or ejected); `Some(state)`: a choice, with its state
        // when it has some.
        let viable = |index: usize| -> Option<Option<&Arc<Endpoint>>> {
            if pick.excluded.contains(&index) {
                return None;
            }
            let endpoint = lookup(
                endpoints,
                slots,
                &pick.candidates[index],
                index,
                pick.default_port,
            );
            if !allow_ejected && endpoint.is_some_and(|e| e.is_ejected(pick.now)) {
                return None;
            }
            Some(endpoint)
        };
        let chosen = |index: usize, endpoint: Option<&Arc<Endpoint>>| (index, endpoint.cloned());
        let rng = &mut self.rng;
        let scan = |start: usize| {
            (0..len)
                .map(|k| lo + (start + k) % len)
                .find_map(|i| viable(i).map(|endpoint| chosen(i, endpoint)))
        };
        match pick.policy {
            BalancePolicy::RoundRobin => {
                for _ in 0..len.min(SAMPLES) {
                    let index = lo + self.rr_next % len;
                    self.rr_next = self.rr_next.wrapping_add(1);
                    if let Some(endpoint) = viable(index) {
                        return Some(chosen(index, endpoint));
                    }
                }
                let found = scan(self.rr_next % len);
                if let Some((index, _)) = &found {
                    self.rr_next = index - lo + 1;
                }
                found
            }
            BalancePolicy::Random => {
                for _ in 0..SAMPLES {
                    let index = lo + rng.random_range(0..len);
                    if let Some(endpoint) = viable(index) {
                        return Some(chosen(index, endpoint));
                    }
                }
                scan(rng.random_range(0..len))
            }
            BalancePolicy::LeastRequest | BalancePolicy::PeakEwma => {
                let mut first = None;
                for _ in 0..SAMPLES {
                    let index = lo + rng.random_range(0..len);
                    if let Some(endpoint) = viable(index) {
                        first = Some((index, endpoint));
                        break;
                    }
                }
                let Some((a, state_a)) = first else {
                    return scan(rng.random_range(0..len));
                };
                if len == 1 {
                    return Some(chosen(a, state_a));
                }
                let mut second = None;
                for _ in 0..SAMPLES {
                    let mut index = lo + rng.random_range(0..len - 1);
                    if index >= a {
                        index += 1;
                    }
                    if let Some(endpoint) = viable(index) {
                        second = Some((index, endpoint));
                        break;
                    }
                }
                let Some((b, state_b)) = second else {
                    return Some(chosen(a, state_a));
                };
                Some(if load(pick, state_b) < load(pick, state_a) {
                    chosen(b, state_b)
                } else {
                    chosen(a, state_a)
                })
            }
        }
    }
}

/// The state of `candidate` (at `index`): from the position cache when it still holds
/// this address, else from the table.
fn lookup<'t>(
    endpoints: &'t HashMap<EndpointKey, Arc<Endpoint>, RandomState>,
    slots: &'t [Option<Arc<Endpoint>>],
    candidate: &Candidate,
    index: usize,
    default_port: u16,
) -> Option<&'t Arc<Endpoint>> {
    if let Some(Some(cached)) = slots.get(index)
        && cached.key.matches(candidate, default_port)
        && !cached.is_removed()
    {
        return Some(cached);
    }
    endpoints.get(&EndpointKey::of(candidate, default_port))
}

/// The load of a candidate for the power-of-two-choices policies: endpoints at their cap
/// come last, then in-flight requests (LeastRequest) or latency estimate × (in flight + 1)
/// (PeakEwma).
fn load(pick: &Pick<'_>, endpoint: Option<&Arc<Endpoint>>) -> (bool, f64) {
    let in_flight = endpoint.map_or(0, |e| e.in_flight());
    let at_cap = pick.cap.is_some_and(|cap| in_flight >= cap);
    let cost = match pick.policy {
        BalancePolicy::PeakEwma => {
            let estimate = endpoint
                .and_then(|e| e.estimate(pick.now, pick.decay_ns))
                .unwrap_or(pick.unmeasured_rtt_ns)
                .max(1_000.0);
            estimate * f64::from(in_flight + 1)
        }
        _ => f64::from(in_flight),
    };
    (at_cap, cost)
}
