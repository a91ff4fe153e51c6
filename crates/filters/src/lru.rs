//! A bounded least-recently-used map from pre-hashed `u64` keys to values, for per-key state
//! that must not grow with the number of distinct clients (rate-limit buckets per IP, per
//! consumer, per header value).
//!
//! Entries live in one `Vec` and are linked into a recency list by index (no pointers, no
//! `unsafe`); a hash index maps keys to slots. Both are allocated up front for `capacity`
//! entries, so once the map is full it recycles the least recently used slot in place and a
//! lookup or insert never allocates. Keys are already hashes (see [`shardgate_common::hash`]), so the index
//! uses them as they are instead of hashing again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const NIL: u32 = u32::MAX;

/// A `Hasher` for keys that are already well-mixed `u64` hashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; fold anything else in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Build hasher for maps keyed by pre-hashed `u64`s.
pub type Prehashed = BuildHasherDefault<PrehashedKey>;

#[derive(Debug, Clone)]
struct Node<V> {
    key: u64,
    prev: u32,
    next: u32,
    value: V,
}

/// What [`Lru::get_or_insert_with`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<V> {
    /// The key was there.
    Hit,
    /// The key was added in a free slot.
    Inserted,
    /// The key was added in place of the least recently used entry, handed back here.
    Evicted { key: u64, value: V },
}

/// The bounded map. The most recently used entry is at the head.
#[derive(Debug, Clone)]
pub struct Lru<V> {
    index: HashMap<u64, u32, Prehashed>,
    nodes: Vec<Node<V>>,
    head: u32,
    tail: u32,
    capacity: usize,
}

impl<V> Lru<V> {
    /// A map holding at most `capacity` entries (at least 1, at most `u32::MAX - 1`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, (NIL - 1) as usize);
        Lru {
            // Twice the entries: removals leave tombstones, and with this much room the table
            // always cleans them in place instead of growing.
            index: HashMap::with_capacity_and_hasher(capacity * 2, Prehashed::default()),
            nodes: Vec::with_capacity(capacity),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value for `key` without touching recency.
    pub fn peek(&self, key: u64) -> Option<&V> {
        self.index.get(&key).map(|&i| &self.nodes[i as usize].value)
    }

    /// The value for `key` and its slot index, marked most recently used; when absent, `make()`
    /// fills a free slot or replaces the least recently used entry.
    pub fn get_or_insert_with(
        &mut self,
        key: u64,
        make: impl FnOnce() -> V,
    ) -> (u32, &mut V, Slot<V>) {
        if let Some(&i) = self.index.get(&key) {
            self.move_to_front(i);
            return (i, &mut self.nodes[i as usize].value, Slot::Hit);
        }
        let (i, slot) = if self.nodes.len() < self.capacity {
            let i = self.nodes.len() as u32;
            self.nodes.push(Node {
                key,
                prev: NIL,
                next: NIL,
                value: make(),
            });
            self.push_front(i);
            (i, Slot::Inserted)
        } else {
            let i = self.tail;
            let old = self.nodes[i as usize].key;
            self.index.remove(&old);
            let node = &mut self.nodes[i as usize];
            node.key = key;
            let value = std::mem::replace(&mut node.value, make());
            self.move_to_front(i);
            (i, Slot::Evicted { key: old, value })
        };
        self.index.insert(key, i);
        (i, &mut self.nodes[i as usize].value, slot)
    }

    /// The slot index of `key`, if present (stable until the key is evicted).
    pub fn slot_of(&self, key: u64) -> Option<u32> {
        self.index.get(&key).copied()
    }

    /// The key and value in slot `i` (from [`Lru::slot_of`]).
    pub fn slot(&self, i: u32) -> Option<(u64, &V)> {
        self.nodes.get(i as usize).map(|n| (n.key, &n.value))
    }

    /// Mutable access to the value in slot `i`, without touching recency.
    pub fn slot_mut(&mut self, i: u32) -> Option<(u64, &mut V)> {
        self.nodes
            .get_mut(i as usize)
            .map(|n| (n.key, &mut n.value))
    }

    /// Keys from most to least recently used.
    pub fn keys_by_recency(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let n = &self.nodes[at as usize];
            at = n.next;
            Some(n.key)
        })
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old_head;
        }
        if old_head != NIL {
            self.nodes[old_head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn move_to_front(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_table() {
        // Operations on a 3-entry map: (key, expected slot outcome)
        let ev = |key: u64| Slot::Evicted {
            key,
            value: key * 10,
        };
        let ops: &[(u64, Slot<u64>)] = &[
            (1, Slot::Inserted),
            (2, Slot::Inserted),
            (3, Slot::Inserted),
            (1, Slot::Hit),
            (4, ev(2)),
            (3, Slot::Hit),
            (5, ev(1)),
            (4, Slot::Hit),
            (6, ev(3)),
        ];
        let mut lru = Lru::new(3);
        for (step, &(key, want)) in ops.iter().enumerate() {
            let (_, v, slot) = lru.get_or_insert_with(key, || key * 10);
            assert_eq!(slot, want, "step {step}: key {key}");
            assert_eq!(*v, key * 10);
        }
        assert_eq!(lru.keys_by_recency().collect::<Vec<_>>(), vec![6, 4, 5]);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.peek(3), None);
        assert_eq!(lru.peek(5), Some(&50));
    }

    #[test]
    fn capacity_one_and_slot_access() {
        let mut lru = Lru::new(0);
        assert_eq!(lru.capacity(), 1);
        lru.get_or_insert_with(7, || 'a');
        assert_eq!(
            lru.get_or_insert_with(8, || 'b').2,
            Slot::Evicted { key: 7, value: 'a' }
        );
        let i = lru.slot_of(8).unwrap();
        assert_eq!(lru.slot(i), Some((8, &'b')));
        *lru.slot_mut(i).unwrap().1 = 'c';
        assert_eq!(lru.peek(8), Some(&'c'));
    }

    #[test]
    fn churn_keeps_the_bound_and_the_list_consistent() {
        let mut lru = Lru::new(100);
        let mut rng = shardgate_common::hash::Rng::new(1);
        for step in 0..50_000u64 {
            let key = if step % 2 == 0 { 42 } else { rng.next_u64() };
            lru.get_or_insert_with(key, || step);
            assert!(lru.len() <= 100);
        }
        let keys: Vec<u64> = lru.keys_by_recency().collect();
        assert_eq!(keys.len(), 100);
        assert!(keys[..2].contains(&42), "the hot key stays near the head");
        for k in keys {
            assert!(lru.peek(k).is_some());
        }
    }
}
