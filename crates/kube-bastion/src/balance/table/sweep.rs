//! The membership sweep: how the table finds endpoints that left the candidate list, a few
//! positions per choice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube_bastion_core::Candidate;

use super::{DROP_STEP, SWEEP_STEP, Table};

impl Table {
    /// Advances the membership sweep by a few candidates (when a walk is needed, see
    /// below); once it has walked the whole list, a dropping pass visits the slots a few at
    /// a time and drops the entries not seen during the walk. No choice does more than a
    /// few steps of either.
    pub(crate) fn sweep_step(
        &mut self,
        candidates: &[Candidate],
        default_port: u16,
        tracked: &AtomicUsize,
        ejected: bool,
    ) {
        if let Some(cursor) = self.dropping {
            self.drop_step(cursor, tracked);
            return;
        }
        if self.index.is_empty() {
            self.sweep_cursor = 0;
            return;
        }
        let len = candidates.len();
        // Keys are unique, so a table larger than the candidate list holds departed
        // endpoints; an ejected one may have departed too. Otherwise the table is bounded by
        // the list already and a walk is not needed: start one only when needed, and finish
        // it once started.
        if self.sweep_cursor == 0 && self.index.len() <= len && !ejected {
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
        let epoch = self.sweep_epoch;
        for _ in 0..SWEEP_STEP {
            if self.sweep_cursor >= len {
                break;
            }
            if let Some(slot) = self.slot_at(candidates, self.sweep_cursor, default_port) {
                self.seen[slot as usize] = epoch;
            }
            self.sweep_cursor += 1;
        }
        if self.sweep_cursor >= len {
            self.sweep_cursor = 0;
            self.sweep_restarted = false;
            self.dropping = Some(0);
        }
    }

    /// One step of the dropping pass from slot `cursor`: drops the endpoints not seen
    /// during the walk that just ended; at the end of the slots, starts a new epoch.
    fn drop_step(&mut self, mut cursor: usize, tracked: &AtomicUsize) {
        let epoch = self.sweep_epoch;
        let end = cursor.saturating_add(DROP_STEP).min(self.endpoints.len());
        let mut removed = 0;
        while cursor < end {
            let slot = cursor;
            cursor += 1;
            let Some(endpoint) = &self.endpoints[slot] else {
                continue;
            };
            let seen = self.seen[slot];
            // Busy endpoints get one more walk: their in-flight count matters.
            if seen == epoch || (seen + 1 == epoch && endpoint.in_flight() > 0) {
                continue;
            }
            if let Some(endpoint) = self.endpoints[slot].take() {
                self.keys[slot] = None;
                self.index.remove(&endpoint.key);
                endpoint.mark_removed();
                self.retired.push((slot as u32, endpoint));
                removed += 1;
            }
        }
        if removed > 0 {
            // Entries of the position map checked in this generation may name the slots
            // just dropped.
            self.next_generation();
            let _ = tracked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(removed))
            });
        }
        if cursor < self.endpoints.len() {
            self.dropping = Some(cursor);
            return;
        }
        // Slots whose endpoint no request holds any more can take a new endpoint: nothing
        // else can reach their cell.
        let free = &mut self.free;
        self.retired.retain(|(slot, endpoint)| {
            let held = Arc::strong_count(endpoint) > 1;
            if !held {
                free.push(*slot);
            }
            held
        });
        self.sweep_epoch += 1;
        self.dropping = None;
    }
}
