//! Choosing among candidates: the tiers (ready, serving-terminating, then ejected ones),
//! random samples, the power-of-two-choices comparison, and the scan fallback.

use rand::Rng;

use super::{Chosen, Pick, SAMPLES, Table};
use crate::balance::algorithm::BalancePolicy;
use crate::balance::state::Hot;

impl Table {
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

    /// `None`: candidate `index` is not a choice (tried, or ejected); `Some(slot)`: a
    /// choice, with the slot of its state when it has some.
    #[inline]
    fn viable(
        &mut self,
        pick: &Pick<'_>,
        index: usize,
        allow_ejected: bool,
    ) -> Option<Option<u32>> {
        if pick.excluded.contains(&index) {
            return None;
        }
        let slot = self.slot_at(pick.candidates, index, pick.default_port);
        if !allow_ejected
            && let Some(slot) = slot
            && self.is_ejected(slot, pick.now)
        {
            return None;
        }
        Some(slot)
    }

    /// The first viable candidate of `[lo, hi)` from `start` on, wrapping around.
    fn scan(
        &mut self,
        pick: &Pick<'_>,
        lo: usize,
        hi: usize,
        start: usize,
        allow_ejected: bool,
    ) -> Option<Chosen> {
        let len = hi - lo;
        (0..len).map(|k| lo + (start + k) % len).find_map(|index| {
            self.viable(pick, index, allow_ejected)
                .map(|slot| (index, slot))
        })
    }

    fn choose_in(
        &mut self,
        pick: &Pick<'_>,
        lo: usize,
        hi: usize,
        allow_ejected: bool,
    ) -> Option<Chosen> {
        let len = hi - lo;
        match pick.policy {
            BalancePolicy::RoundRobin => {
                for _ in 0..len.min(SAMPLES) {
                    let index = lo + self.rr_next % len;
                    self.rr_next = self.rr_next.wrapping_add(1);
                    if let Some(slot) = self.viable(pick, index, allow_ejected) {
                        return Some((index, slot));
                    }
                }
                let start = self.rr_next % len;
                let found = self.scan(pick, lo, hi, start, allow_ejected);
                if let Some((index, _)) = &found {
                    self.rr_next = index - lo + 1;
                }
                found
            }
            BalancePolicy::Random => {
                for _ in 0..SAMPLES {
                    let index = lo + self.rng.random_range(0..len);
                    if let Some(slot) = self.viable(pick, index, allow_ejected) {
                        return Some((index, slot));
                    }
                }
                let start = self.rng.random_range(0..len);
                self.scan(pick, lo, hi, start, allow_ejected)
            }
            BalancePolicy::LeastRequest | BalancePolicy::PeakEwma => {
                let mut first = None;
                if len >= 2 {
                    // The usual case: two distinct samples, both viable. Neither lookup
                    // depends on the other, so their cache misses overlap.
                    let a = lo + self.rng.random_range(0..len);
                    let mut b = lo + self.rng.random_range(0..len - 1);
                    if b >= a {
                        b += 1;
                    }
                    let state_a = self.viable(pick, a, allow_ejected);
                    let state_b = self.viable(pick, b, allow_ejected);
                    if let (Some(state_a), Some(state_b)) = (state_a, state_b) {
                        return Some(self.lighter(pick, (a, state_a), (b, state_b)));
                    }
                    first = state_a.map(|s| (a, s)).or(state_b.map(|s| (b, s)));
                }
                if first.is_none() {
                    for _ in 0..SAMPLES {
                        let index = lo + self.rng.random_range(0..len);
                        if let Some(slot) = self.viable(pick, index, allow_ejected) {
                            first = Some((index, slot));
                            break;
                        }
                    }
                }
                let Some((a, state_a)) = first else {
                    let start = self.rng.random_range(0..len);
                    return self.scan(pick, lo, hi, start, allow_ejected);
                };
                if len == 1 {
                    return Some((a, state_a));
                }
                for _ in 0..SAMPLES {
                    let mut index = lo + self.rng.random_range(0..len - 1);
                    if index >= a {
                        index += 1;
                    }
                    if let Some(slot) = self.viable(pick, index, allow_ejected) {
                        return Some(self.lighter(pick, (a, state_a), (index, slot)));
                    }
                }
                Some((a, state_a))
            }
        }
    }

    /// Of two choices, the one with the lower load (the first on a tie).
    fn lighter(&self, pick: &Pick<'_>, a: Chosen, b: Chosen) -> Chosen {
        let load_a = load(pick, a.1.map(|slot| self.hot(slot)));
        let load_b = load(pick, b.1.map(|slot| self.hot(slot)));
        if load_b < load_a { b } else { a }
    }
}

/// The load of a candidate for the power-of-two-choices policies: endpoints at their cap
/// come last, then in-flight requests (LeastRequest) or latency estimate × (in flight + 1)
/// (PeakEwma).
fn load(pick: &Pick<'_>, hot: Option<&Hot>) -> (bool, f64) {
    let in_flight = hot.map_or(0, Hot::in_flight);
    let at_cap = pick.cap.is_some_and(|cap| in_flight >= cap);
    let cost = match pick.policy {
        BalancePolicy::PeakEwma => {
            let estimate = hot
                .and_then(|hot| hot.estimate(pick.now, pick.decay_ns))
                .unwrap_or(pick.unmeasured_rtt_ns)
                .max(1_000.0);
            estimate * f64::from(in_flight + 1)
        }
        _ => f64::from(in_flight),
    };
    (at_cap, cost)
}
