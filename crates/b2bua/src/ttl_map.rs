//! A bounded map whose entries expire: the memory the B2BUA keeps of things that are over
//! (forgotten dialogs, challenged INVITEs) for as long as late messages about them may come.
//!
//! Entries expire in insertion order (one TTL for the whole map), so expiry is a walk from the
//! front of a queue, never a scan; at the bound the oldest entry makes room. Time is passed in.
//! The map grows with the call rate (every ended call is remembered for minutes), so it is a
//! `griddle` map, which moves its entries to a larger allocation a few per insert instead of
//! all at once on the signalling thread.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct TtlMap<K, V> {
    map: griddle::HashMap<K, (Instant, V), RandomState>,
    order: VecDeque<(Instant, K)>,
    ttl: Duration,
    max: usize,
}

impl<K: Clone + Eq + Hash, V> TtlMap<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            map: griddle::HashMap::with_hasher(Default::default()),
            order: VecDeque::new(),
            ttl,
            max,
        }
    }

    /// Inserts or replaces `key`, expiring `ttl` from `now`.
    pub fn insert(&mut self, now: Instant, key: K, value: V) {
        self.purge(now);
        while self.map.len() >= self.max {
            let Some((_, k)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&k);
        }
        let expires = now + self.ttl;
        self.order.push_back((expires, key.clone()));
        self.map.insert(key, (expires, value));
    }

    pub fn get(&mut self, now: Instant, key: &K) -> Option<&V> {
        self.purge(now);
        self.map.get(key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn purge(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if *t > now {
                break;
            }
            let Some((t, k)) = self.order.pop_front() else {
                break;
            };
            // A later insert of the same key replaced the entry; keep that one.
            if self.map.get(&k).is_some_and(|(e, _)| *e <= t) {
                self.map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_are_replaced_and_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut m = TtlMap::new(s(10), 2);
        m.insert(t0, "a", 1);
        m.insert(t0 + s(5), "a", 2);
        // The first insert's expiry does not remove the replacement.
        assert_eq!(m.get(t0 + s(12), &"a"), Some(&2));
        assert_eq!(m.get(t0 + s(15), &"a"), None);
        m.insert(t0 + s(20), "b", 3);
        m.insert(t0 + s(21), "c", 4);
        m.insert(t0 + s(22), "d", 5);
        assert_eq!(m.len(), 2, "the oldest made room");
        assert_eq!(m.get(t0 + s(22), &"b"), None);
        assert_eq!(m.remove(&"c"), Some(4));
    }
}
