//! ClientIP session affinity: one client address keeps going to one endpoint while that
//! endpoint stays a healthy candidate, until `timeoutSeconds` pass without a request from
//! that client (kube-proxy's rule).

use std::collections::HashMap;
use std::net::IpAddr;

use foldhash::fast::RandomState;
use kube_bastion_core::Candidate;

use super::state::EndpointKey;

/// One client's sticky endpoint.
#[derive(Debug)]
struct Sticky {
    key: EndpointKey,
    /// Where the endpoint was in the candidate list last time (checked before trusting it).
    hint: usize,
    /// Timeline instant after which the entry is void.
    expires: u64,
}

/// Client address → endpoint, bounded in size.
#[derive(Debug)]
pub(crate) struct AffinityTable {
    entries: HashMap<IpAddr, Sticky, RandomState>,
    capacity: usize,
    next_purge: u64,
}

/// Nanoseconds between two purges of a full table.
const PURGE_INTERVAL: u64 = 1_000_000_000;

impl AffinityTable {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::default(),
            capacity: capacity.max(1),
            next_purge: 0,
        }
    }

    /// The candidate index `client` sticks to, if its entry is live and its endpoint is
    /// still among `candidates`. Expired or stale entries are dropped.
    pub(crate) fn lookup(
        &mut self,
        client: IpAddr,
        candidates: &[Candidate],
        default_port: u16,
        now: u64,
    ) -> Option<usize> {
        let sticky = self.entries.get_mut(&client)?;
        if now >= sticky.expires {
            self.entries.remove(&client);
            return None;
        }
        if let Some(candidate) = candidates.get(sticky.hint)
            && sticky.key.matches(candidate, default_port)
        {
            return Some(sticky.hint);
        }
        // The list changed since: find the endpoint again (rare: only after a change).
        match candidates
            .iter()
            .position(|c| sticky.key.matches(c, default_port))
        {
            Some(index) => {
                sticky.hint = index;
                Some(index)
            }
            None => {
                self.entries.remove(&client);
                None
            }
        }
    }

    /// Makes `client` stick to `key` (at `index`) until `now + timeout`.
    pub(crate) fn record(
        &mut self,
        client: IpAddr,
        key: &EndpointKey,
        index: usize,
        now: u64,
        timeout: u64,
    ) {
        let expires = now.saturating_add(timeout);
        if let Some(sticky) = self.entries.get_mut(&client) {
            if sticky.key != *key {
                sticky.key = key.clone();
            }
            sticky.hint = index;
            sticky.expires = expires;
            return;
        }
        if self.entries.len() >= self.capacity {
            // Purge expired entries, at most once per second so that a flood of new client
            // addresses costs O(1) per request.
            if now >= self.next_purge {
                self.entries.retain(|_, sticky| sticky.expires > now);
                self.next_purge = now.saturating_add(PURGE_INTERVAL);
            }
            if self.entries.len() >= self.capacity {
                // Full of live clients: this one is balanced without stickiness.
                return;
            }
        }
        self.entries.insert(
            client,
            Sticky {
                key: key.clone(),
                hint: index,
                expires,
            },
        );
    }

    /// Live and expired entries kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use kube_bastion_core::{EndpointState, Host};

    use super::*;

    fn candidate(last: u8) -> Candidate {
        Candidate {
            host: Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
            port: Some(80),
            pod: None,
            state: EndpointState::Ready,
        }
    }

    fn key(last: u8) -> EndpointKey {
        EndpointKey::Addr(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            80,
        ))
    }

    #[test]
    fn holds_until_timeout_then_expires() {
        let mut table = AffinityTable::new(8);
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let candidates: Vec<_> = (1..=3).map(candidate).collect();
        table.record(client, &key(2), 1, 100, 50);
        assert_eq!(table.lookup(client, &candidates, 80, 149), Some(1));
        assert_eq!(table.lookup(client, &candidates, 80, 150), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn follows_the_endpoint_when_the_list_moves_and_drops_it_when_gone() {
        let mut table = AffinityTable::new(8);
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        table.record(client, &key(3), 2, 0, 1_000);
        let moved: Vec<_> = [3, 1].into_iter().map(candidate).collect();
        assert_eq!(table.lookup(client, &moved, 80, 10), Some(0));
        let gone: Vec<_> = [1, 2].into_iter().map(candidate).collect();
        assert_eq!(table.lookup(client, &gone, 80, 20), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn stays_within_capacity() {
        let mut table = AffinityTable::new(4);
        let client = |i: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
        for i in 0..100u8 {
            table.record(client(i), &key(1), 0, u64::from(i), 1_000);
            assert!(table.len() <= 4);
        }
        let candidates = [candidate(1)];
        // Full of live clients: the first four stick, later ones are not recorded.
        assert_eq!(table.lookup(client(3), &candidates, 80, 100), Some(0));
        assert_eq!(table.lookup(client(99), &candidates, 80, 100), None);
        // Once they expire, a new client takes a place.
        table.record(client(200), &key(1), 0, 2_000_000_000, 1_000);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.lookup(client(200), &candidates, 80, 2_000_000_001),
            Some(0)
        );
    }
}
