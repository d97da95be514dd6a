//! The bounded, expiring cache of webhook answers, and the counters of how it is used.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The SHA-256 digest a cache entry is found by (of a token and its audiences, or of a
/// SubjectAccessReview spec): the cache never holds what it is keyed by.
pub(super) type Key = [u8; 32];

/// SHA-256 over length-prefixed parts, so that no two different lists of parts give the
/// same input (`["ab", "c"]` and `["a", "bc"]` differ).
pub(super) fn key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

struct Entry<V> {
    value: V,
    expires: Instant,
    /// Last use (insertion or hit), for evicting the least recently used entry when the
    /// cache is full.
    seq: u64,
}

struct Inner<V> {
    entries: HashMap<Key, Entry<V>>,
    order: BTreeMap<u64, Key>,
    next: u64,
    /// When a full cache last dropped every expired entry.
    last_sweep: Option<Instant>,
}

/// How often, at most, a full cache scans all its entries for expired ones; in between, a
/// full cache evicts the least recently used entry, so an insert costs O(log n) even when
/// a client fills the cache with answers to random tokens.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A map from digests to answers with a time to live per entry and at most `capacity`
/// entries: when full, expired entries go first (a scan at most once a second), then the
/// least recently used.
pub(super) struct Cache<V> {
    inner: Mutex<Inner<V>>,
    capacity: usize,
}

impl<V: Clone> Cache<V> {
    pub(super) fn new(capacity: usize) -> Self {
        Cache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                next: 0,
                last_sweep: None,
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while the lock was held cannot leave the maps inconsistent in a way that
        // matters (at worst an order entry without its value): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry of `key`, if any (an expired one is removed).
    pub(super) fn get(&self, key: &Key) -> Option<V> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let entry = inner.entries.get_mut(key)?;
        let old = entry.seq;
        if entry.expires > Instant::now() {
            // A hit makes the entry the most recently used.
            entry.seq = inner.next;
            inner.next += 1;
            inner.order.remove(&old);
            inner.order.insert(entry.seq, *key);
            return Some(entry.value.clone());
        }
        inner.entries.remove(key);
        inner.order.remove(&old);
        None
    }

    /// Keeps `value` for `ttl` (nothing is kept with a zero TTL or a zero capacity).
    pub(super) fn insert(&self, key: Key, value: V, ttl: Duration) {
        if ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let Some(expires) = now.checked_add(ttl) else {
            return;
        };
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(old) = inner.entries.remove(&key) {
            inner.order.remove(&old.seq);
        }
        let sweep_due = inner
            .last_sweep
            .is_none_or(|last| now.duration_since(last) >= SWEEP_INTERVAL);
        if inner.entries.len() >= self.capacity && sweep_due {
            inner.last_sweep = Some(now);
            inner.entries.retain(|_, e| e.expires > now);
            let entries = &inner.entries;
            inner.order.retain(|_, k| entries.contains_key(k));
        }
        while inner.entries.len() >= self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        let seq = inner.next;
        inner.next += 1;
        inner.order.insert(seq, key);
        inner.entries.insert(
            key,
            Entry {
                value,
                expires,
                seq,
            },
        );
    }

    /// Number of entries (expired ones not yet removed included).
    pub(super) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> Vec<Key> {
        self.lock().entries.keys().copied().collect()
    }
}

/// How a webhook's answers were found: in the cache (`hits`), by asking the webhook
/// (`misses`), and how many of those asks failed (`errors`: no answer after the retries,
/// or an answer that reports an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Requests that asked the webhook (cache misses, and requests not cacheable).
    pub misses: u64,
    /// Asks that ended in an error (never cached).
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    pub(super) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key([&b"ab"[..], b"c"]), key([&b"a"[..], b"bc"]));
        assert_eq!(key([&b"a"[..]]), key([&b"a"[..]]));
    }

    #[test]
    fn entries_expire() {
        let cache = Cache::new(4);
        cache.insert(key([&b"a"[..]]), 1, Duration::from_millis(30));
        cache.insert(key([&b"b"[..]]), 2, Duration::from_secs(60));
        cache.insert(key([&b"c"[..]]), 3, Duration::ZERO);
        assert_eq!(cache.get(&key([&b"a"[..]])), Some(1));
        assert_eq!(
            cache.get(&key([&b"c"[..]])),
            None,
            "a zero TTL keeps nothing"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&key([&b"a"[..]])), None);
        assert_eq!(cache.get(&key([&b"b"[..]])), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_least_recently_used() {
        let cache = Cache::new(3);
        let k = |i: u8| key([&[i][..]]);
        cache.insert(k(0), 0, Duration::from_millis(20));
        cache.insert(k(1), 1, Duration::from_secs(60));
        cache.insert(k(2), 2, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(40));
        cache.insert(k(3), 3, Duration::from_secs(60));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&k(1)), Some(1), "the expired entry went first");
        // The hit on k(1) made k(2) the least recently used.
        cache.insert(k(4), 4, Duration::from_secs(60));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&k(2)), None, "then the least recently used");
        assert_eq!(cache.get(&k(1)), Some(1));
        assert_eq!(cache.get(&k(4)), Some(4));
        // Replacing an entry does not grow the cache.
        cache.insert(k(4), 40, Duration::from_secs(60));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&k(4)), Some(40));
        assert_eq!(cache.get(&k(3)), Some(3));
    }

    #[test]
    fn a_full_cache_of_live_entries_scans_at_most_once_a_second() {
        let cache = Cache::new(2);
        let k = |i: u8| key([&[i][..]]);
        cache.insert(k(0), 0, Duration::from_secs(60));
        cache.insert(k(1), 1, Duration::from_millis(10));
        cache.insert(k(2), 2, Duration::from_secs(60));
        // That insert swept (nothing had expired) and evicted k(0).
        let swept = cache.lock().last_sweep;
        assert!(swept.is_some());
        std::thread::sleep(Duration::from_millis(30));
        // k(1) has expired, but no sweep is due: the least recently used entry goes, which
        // is k(1) all the same; k(2) stays.
        cache.insert(k(3), 3, Duration::from_secs(60));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&k(2)), Some(2));
        assert_eq!(cache.get(&k(3)), Some(3));
        assert_eq!(
            cache.lock().last_sweep,
            swept,
            "no second scan within the interval"
        );
    }
}
