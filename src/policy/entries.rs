//! Per-user state: the keys a user was seen from (its *entries*), the
//! user slots the engine indexes, and the ban records, with the rules that
//! age them (`settle`: expiry in order of end, `--confirm` promotion).
//!
//! Invariants (relied on by the engine in `super`):
//! - An entry is active at `t` while `t - last_seen <= window` and its key
//!   was not banned after it was last seen ([`end_of`]).
//! - [`settle`] drops entries in the order they end, candidates first on a
//!   tie, promoting candidates when an admitted key ends, so the outcome does
//!   not depend on how often it runs.
//! - [`Entries`] holds up to [`INLINE`] entries without a heap allocation;
//!   its order means nothing.

use std::sync::Arc;

use super::PolicyStats;
use crate::clock::Micros;
use crate::hash::Map;
use crate::key::Key;

/// One key a user was seen from. Times are on the internal clock.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) key: Key,
    pub(super) last_seen: Micros,
    /// Line sequence number of the last line from this key.
    pub(super) seq: u64,
    /// Line sequence number at which it became a candidate.
    pub(super) since: u64,
    pub(super) candidate: bool,
    /// Candidates only: the tag of the line that made it a candidate.
    pub(super) tag: Box<[u8]>,
}

impl Entry {
    pub(super) fn vacant() -> Entry {
        Entry {
            key: Key::V4(std::net::Ipv4Addr::UNSPECIFIED),
            last_seen: 0,
            seq: 0,
            since: 0,
            candidate: false,
            // An empty boxed slice does not allocate.
            tag: Box::default(),
        }
    }
}

/// Inline room for the common case (limit 1, maybe a candidate) so a user
/// costs one allocation (its name), not two.
pub(super) const INLINE: usize = 2;

/// A user's entries: inline up to [`INLINE`], then on the heap. Unordered.
#[derive(Debug)]
pub(super) enum Entries {
    Inline(u8, [Entry; INLINE]),
    Heap(Vec<Entry>),
}

impl Entries {
    pub(super) fn new() -> Entries {
        Entries::Inline(0, [Entry::vacant(), Entry::vacant()])
    }

    #[inline]
    pub(super) fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::Inline(n, a) => &a[..usize::from(*n)],
            Entries::Heap(v) => v,
        }
    }

    #[inline]
    pub(super) fn as_mut_slice(&mut self) -> &mut [Entry] {
        match self {
            Entries::Inline(n, a) => &mut a[..usize::from(*n)],
            Entries::Heap(v) => v,
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(super) fn push(&mut self, e: Entry) {
        match self {
            Entries::Inline(n, a) if usize::from(*n) < INLINE => {
                a[usize::from(*n)] = e;
                *n += 1;
            }
            Entries::Inline(_, a) => {
                let mut v = Vec::with_capacity(2 * INLINE);
                v.extend(a.iter_mut().map(|x| std::mem::replace(x, Entry::vacant())));
                v.push(e);
                *self = Entries::Heap(v);
            }
            Entries::Heap(v) => v.push(e),
        }
    }

    /// Removes entry `i` (order is not kept).
    pub(super) fn remove(&mut self, i: usize) -> Entry {
        match self {
            Entries::Inline(n, a) => {
                let last = usize::from(*n) - 1;
                a.swap(i, last);
                *n -= 1;
                std::mem::replace(&mut a[last], Entry::vacant())
            }
            Entries::Heap(v) => v.swap_remove(i),
        }
    }

    #[inline]
    pub(super) fn find(&self, key: Key) -> Option<usize> {
        self.as_slice().iter().position(|e| e.key == key)
    }

    #[inline]
    pub(super) fn admitted(&self) -> usize {
        self.as_slice().iter().filter(|e| !e.candidate).count()
    }

    /// The admitted keys, sorted: a ban's origins.
    pub(super) fn origins(&self) -> Vec<Key> {
        let mut o: Vec<Key> = self
            .as_slice()
            .iter()
            .filter(|e| !e.candidate)
            .map(|e| e.key)
            .collect();
        o.sort_unstable();
        o
    }

    /// Index of the oldest candidate.
    #[inline]
    pub(super) fn oldest_candidate(&self) -> Option<usize> {
        self.as_slice()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.candidate)
            .min_by_key(|(_, e)| (e.since, e.key))
            .map(|(i, _)| i)
    }
}

#[derive(Debug)]
pub(super) struct User {
    pub(super) name: Arc<[u8]>,
    pub(super) entries: Entries,
    /// The deadline of this user's one live heap entry.
    pub(super) queued: Micros,
}

#[derive(Debug)]
pub(super) struct Slot {
    /// Bumped when the slot is freed, so stale heap entries miss.
    pub(super) gen: u32,
    pub(super) user: Option<User>,
}

/// A ban on the internal clock: `start <= t < until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BanRec {
    pub(super) start: Micros,
    pub(super) until: Micros,
}

/// The ban table, with a counting filter in front: most lookups (every
/// line's key, every entry [`end_of`] looks at) are for keys that are not
/// banned, and the table is small, so a bucket count of zero answers them
/// without hashing. The bucket is an unkeyed multiply of the key's bits:
/// addresses aimed at one bucket only send lookups on to the keyed table,
/// as without the filter.
#[derive(Debug)]
pub(super) struct Bans {
    map: Map<Key, BanRec>,
    /// Keys of `map` per bucket of [`Bans::bucket`].
    count: Box<[u32; 256]>,
}

impl Default for Bans {
    fn default() -> Bans {
        Bans {
            map: Map::default(),
            count: Box::new([0; 256]),
        }
    }
}

impl Bans {
    #[inline]
    fn bucket(k: Key) -> usize {
        let x = match k {
            Key::V4(a) => u64::from(u32::from(a)),
            Key::V6(a, p) => {
                let v = u128::from(a);
                (v >> 64) as u64 ^ v as u64 ^ u64::from(p)
            }
        };
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
    }

    #[inline]
    pub(super) fn get(&self, k: &Key) -> Option<&BanRec> {
        if self.count[Bans::bucket(*k)] == 0 {
            return None;
        }
        self.map.get(k)
    }

    pub(super) fn insert(&mut self, k: Key, rec: BanRec) -> Option<BanRec> {
        let old = self.map.insert(k, rec);
        if old.is_none() {
            self.count[Bans::bucket(k)] += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, k: &Key) -> Option<BanRec> {
        let old = self.map.remove(k);
        if old.is_some() {
            self.count[Bans::bucket(*k)] -= 1;
        }
        old
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &BanRec)> {
        self.map.iter()
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.map.keys()
    }

    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &BanRec> {
        self.map.values()
    }

    /// The filter's invariant: each bucket counts exactly its keys.
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut want = [0u32; 256];
        for k in self.map.keys() {
            want[Bans::bucket(*k)] += 1;
        }
        assert_eq!(&want[..], &self.count[..], "ban filter counts");
    }
}

/// What a settled user changed: entries removed (for the key count).
pub(super) fn settle(
    entries: &mut Entries,
    t: Micros,
    window: Micros,
    limit: usize,
    bans: &Bans,
    stats: &mut PolicyStats,
) -> usize {
    // The common case, one pass: nothing ended and no candidate waits, so
    // the loop below would break at once and `promote` find nothing.
    let quiet = entries
        .as_slice()
        .iter()
        .all(|e| !e.candidate && end_of(e, window, bans) >= t);
    if quiet {
        return 0;
    }
    let before = entries.len();
    // Expire in order of end, candidates first on a tie (a candidate that
    // ends with the last admitted key is not promoted), promoting candidates
    // that are still active when an admitted key ends. Processing the events
    // in their own order (not all at `t`) makes the outcome independent of
    // how often `expire` ran in between.
    loop {
        let next = entries
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, e)| (end_of(e, window, bans), !e.candidate, i))
            .filter(|&(end, _, _)| end < t)
            .min();
        let Some((_, _, i)) = next else { break };
        let gone = entries.remove(i);
        // Every candidate left ends after `end`: it was active when `gone`
        // ended.
        if !gone.candidate {
            promote(entries, limit, stats);
        }
    }
    // Room can also come from a raised limit or a dropped banned key.
    promote(entries, limit, stats);
    before - entries.len()
}

#[inline]
fn promote(entries: &mut Entries, limit: usize, stats: &mut PolicyStats) {
    while entries.admitted() < limit {
        let Some(c) = entries.oldest_candidate() else {
            return;
        };
        let e = &mut entries.as_mut_slice()[c];
        e.candidate = false;
        e.tag = Box::default();
        stats.promotions += 1;
    }
}

/// The last instant at which entry `e` is active: `last_seen + window`, or
/// just before its key was banned (a key banned for anyone counts for
/// nobody; other users' entries for it end at the ban, found lazily here).
#[inline]
pub(super) fn end_of(e: &Entry, window: Micros, bans: &Bans) -> Micros {
    let natural = e.last_seen.saturating_add(window);
    if bans.is_empty() {
        return natural;
    }
    match bans.get(&e.key) {
        Some(b) if e.last_seen <= b.start => natural.min(b.start.saturating_sub(1)),
        _ => natural,
    }
}

/// The earliest instant at which `entries` has an expiry to process. An
/// entry ended early by a ban is not looked for: settling it later gives
/// the same outcome, and `observe` settles before deciding.
pub(super) fn user_deadline(entries: &Entries, window: Micros) -> Micros {
    entries
        .as_slice()
        .iter()
        .map(|e| e.last_seen.saturating_add(window).saturating_add(1))
        .min()
        .unwrap_or(0)
}
