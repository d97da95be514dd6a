//! A Service's table: which endpoints have state, where their hot cells are, and the O(1)
//! choice among candidates.
//!
//! The table keeps its endpoints in *slots*: dense, parallel arrays indexed by a small
//! number (the endpoint's state, its address, the sweep epoch it was last seen in) and hot
//! cells ([`Hot`](super::state::Hot)) in a few chunks of doubling size (16, 32, 64, ...
//! cells), so a large Service's cells are a few contiguous allocations. An address → slot
//! hash map finds an endpoint by address.
//!
//! Choosing reads no candidate and no endpoint allocation in the usual case. The table is
//! bound to one candidate list, by identity: it keeps a [`Weak`] of the list's shared
//! allocation ([`Candidates`](kube_bastion_core::Candidates)), so the allocation cannot be
//! reused by another list while it is compared, and a *position map* from candidate
//! position to slot (or "no state"), each entry stamped with the binding's *generation*. An
//! entry of the current generation is trusted as is: a sample costs the 4-byte entry (the
//! map of 100,000 positions is 400 KB) and the endpoint's 16-byte hot cell, and the two
//! samples of power-of-two-choices are independent loads. An entry of an older generation is
//! checked (the candidate's address against the slot's, else a hash probe by address) and
//! stamped again, so a new list is mapped lazily, one position at a time as choices and the
//! sweep reach it; binding a new list only bumps the generation (O(1), plus growing the map
//! when the list grew, and clearing its tags once per 4,095 bumps: an entry holds its generation in
//! 12 bits, see [`Position`]). Removing an endpoint bumps it too, so that no trusted entry ever
//! names a slot that changed hands.
//!
//! Endpoints that left the cluster view are found by an incremental sweep (a few positions
//! per choice are marked as present; when the sweep has walked the whole list, unmarked
//! entries are dropped), so the table follows the candidate list in amortised O(1). A walk
//! starts only when the table holds more entries than there are candidates (addresses are
//! unique, so some left) or an endpoint is ejected. A dropped endpoint's slot is reused once
//! no request holds the endpoint any more (until then its cell keeps counting that request).

mod choose;
mod sweep;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use foldhash::fast::RandomState;
use kube_bastion_core::{Candidate, EndpointState};
use rand::rngs::SmallRng;

use super::Core;
use super::affinity::AffinityTable;
use super::algorithm::BalancePolicy;
use super::limit::Limiter;
use super::state::{
    Chunk, Endpoint, EndpointKey, FIRST_CHUNK, Hot, ServiceStats, cell_of, new_chunk,
};

/// Samples a policy draws before it falls back to a scan (only reached when most
/// candidates are excluded or ejected).
const SAMPLES: usize = 8;

/// Candidates the membership sweep visits per choice.
const SWEEP_STEP: usize = 2;

/// Slots the sweep's dropping pass visits per choice (two sequential reads each).
const DROP_STEP: usize = 16;

/// Bits of a position-map entry that hold the generation tag (the rest hold the slot).
const TAG_BITS: u32 = 12;

/// The largest generation tag; tags run from 1 to this (0: never trusted).
const LAST_TAG: u32 = (1 << TAG_BITS) - 1;

/// Slot number meaning "no state" in the position map: the largest the 20 slot bits of an
/// entry hold. A table holds at most this many endpoints (1,048,575), slots `0..NO_STATE`;
/// beyond, requests account on state that is not kept.
const NO_STATE: u32 = u32::MAX >> TAG_BITS;

/// One entry of the position map, 4 bytes: the slot of the endpoint at this position (or
/// [`NO_STATE`]) in the high 20 bits, and in the low 12 the tag of the binding generation
/// the entry was checked in. The tag is the generation itself: generations run from 1 to
/// [`LAST_TAG`], and every tag of the map is cleared when they start again at 1, so an
/// entry whose tag equals the current generation was checked in it (once per 4,095 list
/// changes, one sequential pass over the map, instead of a second word per entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position(u32);

impl Position {
    /// Never trusted (generations start at 1).
    const UNKNOWN: Self = Self::new(NO_STATE, 0);

    /// `slot` (at most [`NO_STATE`]) checked in generation `tag` (at most [`LAST_TAG`]).
    const fn new(slot: u32, tag: u32) -> Self {
        debug_assert!(slot <= NO_STATE && tag <= LAST_TAG);
        Self((slot << TAG_BITS) | (tag & LAST_TAG))
    }

    /// The slot, or [`NO_STATE`].
    const fn slot(self) -> u32 {
        self.0 >> TAG_BITS
    }

    /// The generation it was checked in.
    const fn tag(self) -> u32 {
        self.0 & LAST_TAG
    }

    /// The same slot, as a hint of generation 0 (never trusted).
    const fn distrusted(self) -> Self {
        Self(self.0 & !LAST_TAG)
    }
}

/// A choice: the candidate index and the slot of its state, when it has some.
pub(crate) type Chosen = (usize, Option<u32>);

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
    /// Address → slot, for every endpoint with state.
    index: HashMap<EndpointKey, u32, RandomState>,
    /// By slot: the endpoint (`None`: a free or retired slot).
    endpoints: Vec<Option<Arc<Endpoint>>>,
    /// By slot: its address, dense, to check a position without touching the endpoint.
    keys: Vec<Option<EndpointKey>>,
    /// By slot: the sweep epoch in which it was last seen among the candidates.
    seen: Vec<u64>,
    /// Hot cells, in chunks of doubling size: see [`cell_of`].
    chunks: Vec<Chunk>,
    /// Slots ready for reuse.
    free: Vec<u32>,
    /// Slots of dropped endpoints still held by requests: reused once they are not.
    retired: Vec<(u32, Arc<Endpoint>)>,
    /// The candidate list the position map is bound to.
    list: Option<Weak<[Candidate]>>,
    /// The binding generation (1 to [`LAST_TAG`]): entries of the position map stamped with
    /// it are trusted.
    generation: u32,
    /// Candidate position → slot, in the bound list.
    positions: Vec<Position>,
    rng: SmallRng,
    rr_next: usize,
    sweep_cursor: usize,
    sweep_epoch: u64,
    sweep_len: usize,
    sweep_restarted: bool,
    /// The dropping pass that follows a walk: the next slot to look at.
    dropping: Option<usize>,
    /// The Service was forgotten: no new state (a late attempt accounts without keeping any).
    forgotten: bool,
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
            index: HashMap::default(),
            endpoints: Vec::new(),
            keys: Vec::new(),
            seen: Vec::new(),
            chunks: Vec::new(),
            free: Vec::new(),
            retired: Vec::new(),
            list: None,
            generation: 1,
            positions: Vec::new(),
            rng,
            rr_next: 0,
            sweep_cursor: 0,
            sweep_epoch: 1,
            sweep_len: 0,
            sweep_restarted: false,
            dropping: None,
            forgotten: false,
            affinity: AffinityTable::new(affinity_capacity),
            annotation: None,
            policy,
        }
    }

    /// Binds the position map to `list` unless it is bound to it already: O(1) (a pointer
    /// comparison), plus growing the map when the new list is longer than any before.
    pub(crate) fn bind(&mut self, list: &Arc<[Candidate]>) {
        if let Some(bound) = &self.list
            && std::ptr::addr_eq(bound.as_ptr(), Arc::as_ptr(list))
        {
            return;
        }
        self.list = Some(Arc::downgrade(list));
        self.next_generation();
        self.positions.resize(list.len(), Position::UNKNOWN);
    }

    /// Distrusts every entry of the position map.
    fn next_generation(&mut self) {
        if self.generation == LAST_TAG {
            // Once per 4,095 list changes: distrust every entry rather than trust one of the
            // generation that wrapped around. Slots stay as hints (a hint is checked against
            // the candidate's address before use), so a list that changes at every choice
            // does not fall back to hash probes after the wipe.
            for entry in &mut self.positions {
                *entry = entry.distrusted();
            }
            self.generation = 1;
        } else {
            self.generation += 1;
        }
    }

    /// The hot cell of `slot`.
    fn hot(&self, slot: u32) -> &Hot {
        let slot = slot as usize;
        let (chunk, cell) = cell_of(slot);
        &self.chunks[chunk][cell]
    }

    /// The slot of the endpoint at position `index` of `candidates` (the bound list), if
    /// it has state: from the position map when its entry is current, else checked and
    /// stamped.
    #[inline]
    fn slot_at(
        &mut self,
        candidates: &[Candidate],
        index: usize,
        default_port: u16,
    ) -> Option<u32> {
        if let Some(entry) = self.positions.get(index)
            && entry.tag() == self.generation
        {
            let slot = entry.slot();
            return (slot != NO_STATE).then_some(slot);
        }
        self.map_position(candidates, index, default_port)
    }

    /// [`slot_at`](Self::slot_at) for an entry not checked in this generation.
    #[cold]
    fn map_position(
        &mut self,
        candidates: &[Candidate],
        index: usize,
        default_port: u16,
    ) -> Option<u32> {
        let candidate = candidates.get(index)?;
        let hint = self
            .positions
            .get(index)
            .map(|entry| entry.slot())
            .filter(|&slot| slot != NO_STATE);
        let slot = match hint {
            Some(slot)
                if self
                    .keys
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|key| key.matches(candidate, default_port)) =>
            {
                Some(slot)
            }
            _ => self
                .index
                .get(&EndpointKey::of(candidate, default_port))
                .copied(),
        };
        self.stamp(index, slot.unwrap_or(NO_STATE));
        slot
    }

    /// Records that position `index` of the bound list holds `slot`.
    fn stamp(&mut self, index: usize, slot: u32) {
        let entry = Position::new(slot.min(NO_STATE), self.generation);
        if let Some(place) = self.positions.get_mut(index) {
            *place = entry;
        }
    }

    /// Whether the endpoint in `slot` is ejected at `now`: its cell tells when it is not
    /// (the usual case); when an ejection is recorded, its exact end tells.
    #[inline]
    fn is_ejected(&self, slot: u32, now: u64) -> bool {
        self.hot(slot).maybe_ejected()
            && self
                .endpoint(slot)
                .is_some_and(|endpoint| endpoint.is_ejected(now))
    }

    fn endpoint(&self, slot: u32) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(slot as usize)?.as_ref()
    }

    /// The state of the endpoint at `index` of the bound list, if tracked, and whether it
    /// is ejected at `now`.
    pub(crate) fn state_at(
        &mut self,
        candidates: &[Candidate],
        index: usize,
        default_port: u16,
        now: u64,
    ) -> (Option<u32>, bool) {
        let slot = self.slot_at(candidates, index, default_port);
        let ejected = slot.is_some_and(|slot| self.is_ejected(slot, now));
        (slot, ejected)
    }

    /// The state of `key`, if tracked.
    pub(crate) fn by_key(&self, key: &EndpointKey) -> Option<&Arc<Endpoint>> {
        self.endpoint(*self.index.get(key)?)
    }

    /// Makes sure the chosen endpoint has state (creating it when missing) and returns its
    /// slot; `None` when the balancer-wide bound is reached (the request will account on
    /// state that is not kept). Touches neither the candidate nor the endpoint when the
    /// choice came from the position map.
    pub(crate) fn track(
        &mut self,
        (index, known): Chosen,
        candidates: &[Candidate],
        default_port: u16,
        service: &Arc<ServiceStats>,
        core: &Core,
    ) -> Option<u32> {
        let slot = match known {
            Some(slot) => slot,
            None => {
                let key = EndpointKey::of(&candidates[index], default_port);
                let slot = match self.index.get(&key) {
                    // Known under another position (the same address twice in one list).
                    Some(&slot) => slot,
                    None => self.create(key, service, core)?,
                };
                self.stamp(index, slot);
                slot
            }
        };
        if self.sweep_cursor > 0 {
            // A walk is running: the chosen endpoint is present.
            self.seen[slot as usize] = self.sweep_epoch;
        }
        Some(slot)
    }

    /// The state a request to `candidate` accounts on, given the slot its choice returned:
    /// that slot's endpoint while it still holds this address, else the state found by
    /// address or created now (the table changed between the choice and the start), else,
    /// beyond the balancer-wide bound, state that is not kept.
    pub(crate) fn endpoint_for(
        &mut self,
        slot: Option<u32>,
        candidate: &Candidate,
        default_port: u16,
        service: &Arc<ServiceStats>,
        core: &Core,
    ) -> Arc<Endpoint> {
        // The slot's address is checked in the dense array, not in the endpoint.
        if let Some(slot) = slot
            && self
                .key(slot)
                .is_some_and(|key| key.matches(candidate, default_port))
            && let Some(endpoint) = self.endpoint(slot)
        {
            return Arc::clone(endpoint);
        }
        let key = EndpointKey::of(candidate, default_port);
        let slot = match self.index.get(&key) {
            Some(&slot) => Some(slot),
            None => self.create(key.clone(), service, core),
        };
        if let Some(endpoint) = slot.and_then(|slot| self.endpoint(slot)) {
            return Arc::clone(endpoint);
        }
        let limiter = core.config.concurrency_limit.as_ref().map(Limiter::new);
        Arc::new(Endpoint::new(
            key,
            Arc::clone(service),
            new_chunk(1),
            0,
            limiter,
        ))
    }

    /// The key a slot holds.
    pub(crate) fn key(&self, slot: u32) -> Option<&EndpointKey> {
        self.keys.get(slot as usize)?.as_ref()
    }

    /// State for `key` in a new slot, unless the balancer-wide bound is reached.
    fn create(
        &mut self,
        key: EndpointKey,
        service: &Arc<ServiceStats>,
        core: &Core,
    ) -> Option<u32> {
        let bound = core.config.max_tracked_endpoints;
        let room = self.free.len() + (NO_STATE as usize).saturating_sub(self.endpoints.len());
        let admitted = room > 0
            && !self.forgotten
            && core
                .tracked
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < bound).then_some(n + 1)
                })
                .is_ok();
        if !admitted {
            return None;
        }
        let slot = self.allocate();
        let at = slot as usize;
        let (chunk, cell) = cell_of(at);
        let chunk = Arc::clone(&self.chunks[chunk]);
        chunk[cell].reset();
        let limiter = core.config.concurrency_limit.as_ref().map(Limiter::new);
        let endpoint = Arc::new(Endpoint::new(
            key.clone(),
            Arc::clone(service),
            chunk,
            cell,
            limiter,
        ));
        self.endpoints[at] = Some(endpoint);
        self.keys[at] = Some(key.clone());
        self.seen[at] = self.sweep_epoch;
        self.index.insert(key, slot);
        Some(slot)
    }

    /// A free slot (reused, or a new one, with a new chunk of cells when the last is full).
    fn allocate(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        let slot = self.endpoints.len();
        let (chunk, cell) = cell_of(slot);
        if cell == 0 && chunk == self.chunks.len() {
            self.chunks.push(new_chunk(FIRST_CHUNK << chunk));
        }
        self.endpoints.push(None);
        self.keys.push(None);
        self.seen.push(0);
        // `track` checked there is room below NO_STATE.
        slot as u32
    }

    /// Drops every entry (the Service is forgotten); returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let count = self.index.len();
        for endpoint in self.endpoints.drain(..).flatten() {
            endpoint.mark_removed();
        }
        self.index.clear();
        self.keys.clear();
        self.seen.clear();
        self.chunks.clear();
        self.free.clear();
        self.retired.clear();
        self.positions.clear();
        self.list = None;
        self.next_generation();
        self.sweep_cursor = 0;
        self.dropping = None;
        self.forgotten = true;
        count
    }

    /// Whether any tracked endpoint has requests in flight.
    pub(crate) fn busy(&self) -> bool {
        self.endpoints.iter().flatten().any(|e| e.in_flight() > 0)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn position_entries_pack_slot_and_generation_in_four_bytes() {
        assert_eq!(std::mem::size_of::<Position>(), 4);
        for slot in [0, 1, 99_999, NO_STATE - 1, NO_STATE] {
            for tag in [0, 1, 2_048, LAST_TAG] {
                let entry = Position::new(slot, tag);
                assert_eq!((entry.slot(), entry.tag()), (slot, tag));
            }
        }
        assert_eq!(NO_STATE, (1 << 20) - 1);
        assert_eq!(LAST_TAG, 4_095);
        assert_eq!(Position::UNKNOWN.slot(), NO_STATE);
        assert_eq!(Position::UNKNOWN.tag(), 0);
    }

    #[test]
    fn an_entry_is_never_trusted_after_its_generation_wrapped_around() {
        let rng = SmallRng::seed_from_u64(7);
        let mut table = Table::new(rng, BalancePolicy::PeakEwma, 16);
        table.positions = vec![Position::new(3, 1), Position::new(4, 1)];
        assert_eq!(table.generation, 1);
        for expected in 2..=LAST_TAG {
            table.next_generation();
            assert_eq!(table.generation, expected);
            assert!(table.positions.iter().all(|entry| entry.tag() != expected));
        }
        // Generation 1 again: the entries stamped in the first generation 1 are no longer
        // trusted; their slots stay as hints (checked against the address before use).
        table.next_generation();
        assert_eq!(table.generation, 1);
        assert_eq!(table.positions, [Position::new(3, 0), Position::new(4, 0)]);
        table.stamp(1, 9);
        assert_eq!(table.positions[1], Position::new(9, 1));
        // A slot beyond the packed range is never recorded as another slot.
        table.stamp(0, u32::MAX);
        assert_eq!(table.positions[0].slot(), NO_STATE);
    }
}
