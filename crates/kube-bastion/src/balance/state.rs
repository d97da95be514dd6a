//! Per-endpoint state: the hot figures a choice reads ([`Hot`], 16 bytes, kept in dense
//! chunks owned by the Service's table) and the rest ([`Endpoint`]: address, health, cap,
//! exact end of an ejection), shared by the table and the requests in flight.
//!
//! A choice reads only [`Hot`] cells: requests in flight, whether an ejection is recorded,
//! latency estimate and its timestamp. They sit four to a cache line in a few chunks of
//! doubling size, indexed by the endpoint's slot in its table, so sampling a candidate
//! costs a quarter of a cache line of state instead of a scattered `Endpoint` allocation
//! (an ejected endpoint also costs a read of its exact ejection end). An endpoint keeps its
//! cell for life (its chunk is shared by `Arc`); the table reuses a slot, and so its cell,
//! only once no request holds the departed endpoint any more.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube_bastion_core::{Candidate, Host};

use super::health::Health;
use super::limit::Limiter;

/// `typical_rtt_bits` value meaning "no latency observed yet".
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

/// `rtt_bits` value meaning "no latency observed yet" (a NaN pattern no `f32` arithmetic
/// on latencies produces).
const NO_RTT: u32 = u32::MAX;

/// Bit of [`Hot`]'s state word set while the endpoint has an ejection end recorded (the
/// exact instant is in [`Endpoint`], read only when this bit is set).
const EJECTED: u32 = 1 << 31;

/// Mask of the in-flight count in [`Hot`]'s state word.
const IN_FLIGHT: u32 = EJECTED - 1;

/// The figures a choice reads, updated lock-free by the requests in flight. 16 bytes,
/// aligned so that four share a cache line and none straddles two.
///
/// Only the latency estimate is narrowed: it is kept as an `f32` (24 bits of mantissa, a
/// relative rounding of at most 6e-8, and rounding is monotonic, so two estimates never swap
/// order; they can only become equal when they differ by less than that). Its timestamp
/// stays in exact timeline nanoseconds, so the decay is computed as before and cannot be
/// misjudged after any wrap-around. The end of an ejection does not fit: a 32-bit instant
/// wraps (after 49 days in milliseconds), and a stale end that was never cleared would then
/// read as a future one. So the cell keeps one bit, "an ejection end is recorded", in the
/// word of the in-flight count, and the exact 64-bit end lives in the endpoint, read only
/// when the bit is set (ejected endpoints, and those on probation until their next success).
#[derive(Debug)]
#[repr(align(16))]
pub(crate) struct Hot {
    /// Requests in flight (low 31 bits) and the [`EJECTED`] bit.
    state: AtomicU32,
    /// Peak-EWMA latency estimate in nanoseconds (`f32` bits), or [`NO_RTT`].
    rtt_bits: AtomicU32,
    /// When the estimate was last updated (timeline nanoseconds).
    rtt_at: AtomicU64,
}

impl Default for Hot {
    fn default() -> Self {
        Self {
            state: AtomicU32::new(0),
            rtt_bits: AtomicU32::new(NO_RTT),
            rtt_at: AtomicU64::new(0),
        }
    }
}

/// A latency in nanoseconds as stored in a cell: the nearest `f32` (rounding is
/// monotonic: `a <= b` implies `narrow(a) <= narrow(b)`), never [`NO_RTT`].
fn narrow(rtt_ns: f64) -> u32 {
    // Latencies are positive and far below f32::MAX (3.4e38 ns); `as` saturates anyway.
    let narrowed = (rtt_ns.max(0.0) as f32).to_bits();
    if narrowed == NO_RTT { 0 } else { narrowed }
}

/// A stored latency back in nanoseconds, `None` for [`NO_RTT`].
fn widen(bits: u32) -> Option<f64> {
    (bits != NO_RTT).then(|| f64::from(f32::from_bits(bits)))
}

impl Hot {
    /// Back to a fresh endpoint's figures (before a slot is reused; nothing else holds it).
    pub(crate) fn reset(&self) {
        self.state.store(0, Ordering::Release);
        self.rtt_bits.store(NO_RTT, Ordering::Release);
        self.rtt_at.store(0, Ordering::Release);
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        self.state.load(Ordering::Acquire) & IN_FLIGHT
    }

    /// Whether an ejection end is recorded for this endpoint: when not, it is not ejected;
    /// when it is, [`Endpoint::is_ejected`] tells.
    pub(crate) fn maybe_ejected(&self) -> bool {
        self.state.load(Ordering::Acquire) & EJECTED != 0
    }

    /// The latency estimate at `now`: the stored peak EWMA decayed towards zero for the
    /// time nothing was observed (so an idle endpoint is eventually tried again).
    pub(crate) fn estimate(&self, now: u64, decay_ns: f64) -> Option<f64> {
        let stored = widen(self.rtt_bits.load(Ordering::Acquire))?;
        let idle = now.saturating_sub(self.rtt_at.load(Ordering::Acquire)) as f64;
        Some(stored * (-idle / decay_ns).exp())
    }

    /// One more request in flight. The count cannot reach the [`EJECTED`] bit: that would
    /// take 2^31 requests in flight to one endpoint.
    fn enter(&self) {
        self.state.fetch_add(1, Ordering::AcqRel);
    }

    /// One request fewer in flight (never below zero, the [`EJECTED`] bit untouched).
    fn leave(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some((word & EJECTED) | (word & IN_FLIGHT).saturating_sub(1))
            });
    }
}

/// Cells in a table's first chunk; each further chunk doubles (16, 32, 64, ... cells), so
/// a small Service costs 256 bytes of cells and a large one's cells sit in a few large,
/// contiguous allocations (the largest for 100,000 endpoints holds 65,536 cells, 1 MiB).
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
    /// Ejected until this timeline instant (0: not ejected); its cell's [`EJECTED`] bit is
    /// set while this is not 0.
    ejected_until: AtomicU64,
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
            ejected_until: AtomicU64::new(0),
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
        self.hot().enter();
        self.last_used.store(now, Ordering::Relaxed);
    }

    /// One request fewer in flight (called exactly once per [`enter`](Self::enter)).
    pub(crate) fn leave(&self) {
        self.hot().leave();
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    /// Whether it is ejected at `now` (exact: the 64-bit end, when its cell says one is
    /// recorded).
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.hot().maybe_ejected() && self.ejected_until() > now
    }

    /// Records the end of an ejection (`0`: none). Called with the health lock held, so
    /// writers do not interleave; a choice reading the bit set and then the end sees the
    /// end written before the bit (or `0` once cleared).
    pub(crate) fn set_ejected_until(&self, until: u64) {
        let state = &self.hot().state;
        if until == 0 {
            state.fetch_and(!EJECTED, Ordering::AcqRel);
            self.ejected_until.store(0, Ordering::Release);
        } else {
            self.ejected_until.store(until, Ordering::Release);
            state.fetch_or(EJECTED, Ordering::AcqRel);
        }
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
                let stored = widen(hot.rtt_bits.load(Ordering::Acquire)).unwrap_or(sample_ns);
                let elapsed = now.saturating_sub(hot.rtt_at.load(Ordering::Acquire)) as f64;
                let keep = (-elapsed / decay_ns).exp();
                stored * keep + sample_ns * (1.0 - keep)
            }
        };
        hot.rtt_bits.store(narrow(next), Ordering::Release);
        hot.rtt_at.store(now, Ordering::Release);
        self.service.observe_typical(sample_ns);
    }

    /// The stored estimate without decay (for snapshots).
    pub(crate) fn stored_estimate(&self) -> Option<f64> {
        widen(self.hot().rtt_bits.load(Ordering::Acquire))
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
        assert_eq!(std::mem::size_of::<Hot>(), 16);
        assert_eq!(std::mem::align_of::<Hot>(), 16);
    }
}

#[cfg(test)]
mod narrow_tests {
    use super::*;

    fn endpoint() -> Endpoint {
        let key = EndpointKey::Addr(SocketAddr::from(([10, 0, 0, 1], 8080)));
        Endpoint::new(key, Arc::new(ServiceStats::new()), new_chunk(1), 0, None)
    }

    #[test]
    fn narrowed_latencies_round_to_nearest_and_keep_their_order() {
        // Round numbers of milliseconds below 2^24 ns times a power of two are exact.
        for ms in [1u64, 2, 5, 10, 20, 50, 100, 500] {
            let ns = (ms * 1_000_000) as f64;
            assert_eq!(widen(narrow(ns)), Some(ns), "{ms} ms");
        }
        let mut values = vec![0.0, 1.0, 999.5, 1_000.0, 1_000.25];
        let mut x = 1.5_f64;
        while x < 1e15 {
            values.push(x);
            values.push(x + 1.0);
            x *= 1.37;
        }
        values.sort_by(f64::total_cmp);
        let mut previous = 0.0;
        for &value in &values {
            let back = widen(narrow(value)).expect("a sample");
            // Nearest f32: half an ulp of 24 bits at most.
            assert!(
                (back - value).abs() <= value * f64::from(f32::EPSILON) / 2.0,
                "{value} read back as {back}"
            );
            assert!(back >= previous, "{value} read back below a smaller value");
            previous = back;
        }
        // Nothing a computation yields is read as "no sample".
        for odd in [f64::NAN, f64::INFINITY, -1.0, f64::MAX] {
            assert_ne!(narrow(odd), NO_RTT, "{odd}");
        }
        assert_eq!(widen(NO_RTT), None);
    }

    #[test]
    fn in_flight_count_and_ejection_bit_do_not_disturb_each_other() {
        let endpoint = endpoint();
        let hot = endpoint.hot();
        for _ in 0..3 {
            endpoint.enter(1);
        }
        endpoint.set_ejected_until(50);
        assert_eq!(hot.in_flight(), 3);
        assert!(hot.maybe_ejected());
        for _ in 0..4 {
            endpoint.leave();
        }
        assert_eq!(hot.in_flight(), 0, "leave never goes below zero");
        assert!(hot.maybe_ejected(), "leave keeps the ejection bit");
        endpoint.enter(2);
        endpoint.set_ejected_until(0);
        assert!(!hot.maybe_ejected());
        assert_eq!(hot.in_flight(), 1);
        endpoint.set_ejected_until(70);
        hot.reset();
        assert!(!hot.maybe_ejected());
        assert_eq!(hot.in_flight(), 0);
    }

    #[test]
    fn ejection_is_judged_on_the_exact_end_past_any_32_bit_wrap() {
        let endpoint = endpoint();
        assert!(!endpoint.is_ejected(1));
        endpoint.set_ejected_until(1_000);
        assert!(endpoint.is_ejected(999));
        assert!(!endpoint.is_ejected(1_000));
        // An end that was never cleared stays in the past whatever time it is: a 32-bit
        // instant would read it as a future one again after 2^32 units.
        assert!(!endpoint.is_ejected(1_000 + (1 << 32)));
        assert!(!endpoint.is_ejected(u64::MAX));
        let until = (5 << 32) + 7;
        endpoint.set_ejected_until(until);
        assert!(endpoint.is_ejected(7));
        assert!(endpoint.is_ejected(until - 1));
        assert!(!endpoint.is_ejected(until));
        assert_eq!(endpoint.ejected_until(), until);
        endpoint.set_ejected_until(0);
        assert!(!endpoint.is_ejected(7));
        assert_eq!(endpoint.ejected_until(), 0);
    }

    #[test]
    fn decay_uses_exact_nanoseconds_past_any_32_bit_wrap() {
        let endpoint = endpoint();
        let decay_ns = 10e9;
        let start = (3 << 32) + 11;
        endpoint.observe_rtt(8e6, start, decay_ns);
        let hot = endpoint.hot();
        assert_eq!(hot.estimate(start, decay_ns), Some(8e6));
        // 2^32 ns (4.3 s) later the estimate has decayed: a 32-bit timestamp in nanoseconds
        // would read the same instant again.
        let later = hot
            .estimate(start + (1 << 32), decay_ns)
            .expect("an estimate");
        let expected = 8e6 * (-((1u64 << 32) as f64) / decay_ns).exp();
        assert!(
            (later - expected).abs() < 1e-6 * expected,
            "{later} {expected}"
        );
        assert_eq!(endpoint.stored_estimate(), Some(8e6));
    }
}
