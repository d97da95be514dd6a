//! Per-endpoint state: the hot figures a choice reads ([`Hot`], 32 bytes, kept in dense
//! chunks owned by the Service's table) and the rest ([`Endpoint`]: address, health, cap),
//! shared by the table and the requests in flight.
//!
//! A choice reads only [`Hot`] cells: requests in flight, end of an ejection, latency
//! estimate and its timestamp. They sit two to a cache line in a few chunks of doubling
//! size, indexed by the endpoint's slot in its table, so sampling a candidate costs one
//! cache line of state
//! instead of a scattered `Endpoint` allocation. An endpoint keeps its cell for life (its
//! chunk is shared by `Arc`); the table reuses a slot, and so its cell, only once no request
//! holds the departed endpoint any more.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube_bastion_core::{Candidate, Host};

use super::health::Health;
use super::limit::Limiter;

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

/// The figures a choice reads, updated lock-free by the requests in flight. 32 bytes,
/// aligned so that one never straddles a cache line.
#[derive(Debug)]
#[repr(align(32))]
pub(crate) struct Hot {
    in_flight: AtomicU32,
    /// Ejected until this timeline instant (0: not ejected).
    ejected_until: AtomicU64,
    /// Peak-EWMA latency estimate in nanoseconds (`f64` bits), or [`NO_SAMPLE`].
    rtt_bits: AtomicU64,
    /// When the estimate was last updated (timeline nanoseconds).
    rtt_at: AtomicU64,
}

impl Default for Hot {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            rtt_bits: AtomicU64::new(NO_SAMPLE),
            rtt_at: AtomicU64::new(0),
        }
    }
}

impl Hot {
    /// Back to a fresh endpoint's figures (before a slot is reused; nothing else holds it).
    pub(crate) fn reset(&self) {
        self.in_flight.store(0, Ordering::Release);
        self.ejected_until.store(0, Ordering::Release);
        self.rtt_bits.store(NO_SAMPLE, Ordering::Release);
        self.rtt_at.store(0, Ordering::Release);
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether it is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now
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
}

/// Cells in a table's first chunk; each further chunk doubles (16, 32, 64, ... cells), so
/// a small Service costs 512 bytes of cells and a large one's cells sit in a few large,
/// contiguous allocations (the largest for 100,000 endpoints holds 65,536 cells, 2 MiB).
pub(crate) const FIRST_CHUNK: usize = 16;

/// Where slot `slot`'s cell is: (chunk number, place in the chunk). Chunk `k` holds slots
/// `[16 (2^k - 1), 16 (2^(k+1) - 1))`.
#[inline]
pub(crate) fn cell_of(slot: usize) -> (usize, usize) {
    let shifted = slot + FIRST_CHUNK;
    let chunk = (usize::BITS - 1 - shifted.leading_zeros()) as usize
        - FIRST_CHUNK.trailing_zeros() as usize;
    (chunk, shifted - (FIRST_CHUNK << chunk))
}

/// A chunk of hot cells, shared by the table and its endpoints.
pub(crate) type Chunk = Arc<[Hot]>;

/// A new chunk of `len` fresh cells.
pub(crate) fn new_chunk(len: usize) -> Chunk {
    (0..len).map(|_| Hot::default()).collect()
}

/// The state of one endpoint, shared by the Service table and the requests in flight.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Its address.
    pub(crate) key: EndpointKey,
    /// Its Service's figures.
    pub(crate) service: Arc<ServiceStats>,
    /// The chunk holding its hot cell, and the cell's place in it.
    chunk: Chunk,
    cell: usize,
    /// Last time a request was sent to it.
    last_used: AtomicU64,
    health: Mutex<Health>,
    /// Concurrency cap, when configured.
    pub(crate) limiter: Option<Limiter>,
}

impl Endpoint {
    /// An endpoint whose hot figures live in `chunk[cell]` (a fresh cell: see [`Hot::reset`]).
    pub(crate) fn new(
        key: EndpointKey,
        service: Arc<ServiceStats>,
        chunk: Chunk,
        cell: usize,
        limiter: Option<Limiter>,
    ) -> Self {
        debug_assert!(cell < chunk.len());
        Self {
            key,
            service,
            chunk,
            cell,
            last_used: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
            limiter,
        }
    }

    /// Its hot figures.
    pub(crate) fn hot(&self) -> &Hot {
        &self.chunk[self.cell]
    }

    pub(crate) fn lock_health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        self.hot().in_flight()
    }

    /// One more request in flight, sent at `now`.
    pub(crate) fn enter(&self, now: u64) {
        self.hot().in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_used.store(now, Ordering::Relaxed);
    }

    /// One request fewer in flight (called exactly once per [`enter`](Self::enter)).
    pub(crate) fn leave(&self) {
        let _ = self
            .hot()
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.hot().ejected_until.load(Ordering::Acquire)
    }

    pub(crate) fn set_ejected_until(&self, until: u64) {
        self.hot().ejected_until.store(until, Ordering::Release);
    }

    /// Folds a latency sample into the peak EWMA: a sample above the current estimate
    /// replaces it at once (peak), a lower one pulls it down with a weight that grows with
    /// the time since the last update.
    pub(crate) fn observe_rtt(&self, sample_ns: f64, now: u64, decay_ns: f64) {
        let _writer = self.lock_health();
        let hot = self.hot();
        let next = match hot.estimate(now, decay_ns) {
            None => sample_ns,
            Some(current) if sample_ns > current => sample_ns,
            Some(_) => {
                let stored = f64::from_bits(hot.rtt_bits.load(Ordering::Acquire));
                let elapsed = now.saturating_sub(hot.rtt_at.load(Ordering::Acquire)) as f64;
                let keep = (-elapsed / decay_ns).exp();
                stored * keep + sample_ns * (1.0 - keep)
            }
        };
        hot.rtt_bits.store(next.to_bits(), Ordering::Release);
        hot.rtt_at.store(now, Ordering::Release);
        self.service.observe_typical(sample_ns);
    }

    /// The stored estimate without decay (for snapshots).
    pub(crate) fn stored_estimate(&self) -> Option<f64> {
        let bits = self.hot().rtt_bits.load(Ordering::Acquire);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_doubling_chunks_without_gaps() {
        assert_eq!(cell_of(0), (0, 0));
        assert_eq!(cell_of(15), (0, 15));
        assert_eq!(cell_of(16), (1, 0));
        assert_eq!(cell_of(47), (1, 31));
        assert_eq!(cell_of(48), (2, 0));
        let mut expected = (0, 0);
        for slot in 0..200_000 {
            assert_eq!(cell_of(slot), expected, "slot {slot}");
            expected.1 += 1;
            if expected.1 == FIRST_CHUNK << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        assert_eq!(std::mem::size_of::<Hot>(), 32);
        assert_eq!(std::mem::align_of::<Hot>(), 32);
    }
}
