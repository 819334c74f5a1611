//! The policy engine: who is online from where, and who gets banned.
//!
//! Semantics: `shared/design.md`, "Policy semantics (normative)". The engine
//! is pure: no clock, no I/O; the caller passes `now` (microseconds on any
//! monotonic-ish scale) with every call and asks [`Policy::next_deadline`]
//! when to call [`Policy::expire`] next.
//!
//! # State and invariants
//!
//! - Users live in a slab (`slots`) indexed from `users` (email → slot). A
//!   user holds its *entries*: keys it was seen from, each admitted or a
//!   `--confirm` candidate, with `last_seen`. An entry is active at `t` while
//!   `t - last_seen <= window`. Every operation first *settles* the user at
//!   `t` (drops expired entries in expiry order, promoting candidates on the
//!   way), so decisions never depend on when `expire` was last called.
//! - Bans are global to a key (`bans`: key → start, until). A banned key
//!   counts for nobody: the banning user never holds it, and other users'
//!   entries for it end at the ban's start, applied when those users are
//!   next settled (lazily; no reverse index). So a ban cannot cascade into
//!   a ban of another user's next address.
//! - Timers: one min-heap of `(deadline, timer)` with lazy deletion. Each
//!   user with state has exactly one live heap entry (`User::queued`), never
//!   later than its earliest entry expiry (deadlines only move later while the
//!   window stays the same; a shrinking window rebuilds the heap). Each ban
//!   has one. Stale heap entries are skipped when popped. So
//!   [`Policy::next_deadline`] is O(1) and may be early, never late.
//! - The refresh path (a known key of a known user) does not allocate.
//!
//! # Choices the design leaves open
//!
//! - `--confirm` with a limit above 1: a candidate is banned once `limit`
//!   distinct admitted keys of its user were seen after it became a
//!   candidate (for limit 1: "an admitted key is seen again"), and is
//!   promoted as soon as the user has fewer than `limit` admitted keys (for
//!   limit 1: "all admitted keys expired"). Candidates are promoted and
//!   banned oldest first; one line bans at most one candidate.
//! - Memory caps: at `max_users` / `max_keys` new users/entries are
//!   *refused* (nothing is evicted; `users_evicted`/`keys_evicted` stay 0).
//!   A refused line is reported as `Admitted` (fail-open: never ban because
//!   state could not be kept). Bans are always recorded, so bans can take
//!   the key count past `max_keys`; each ban needs an over-limit user.
//! - Time going backwards: the engine runs on an internal clock that never
//!   goes back. A step back of at most `window` (lines written slightly out
//!   of order) is treated as happening at the latest time seen; a larger step
//!   (a clock jump, a DST change in replay) is treated as no time passing and
//!   the internal clock continues from there (an offset absorbs the jump).
//!   Deadlines and `Ban::until` are reported on the caller's scale.
//! - An address whose key (its /64) contains an allowlisted network is
//!   allowlisted too: banning the key would ban the allowlisted address.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::accesslog::{Access, Skip, Source, Status};
use crate::clock::Micros;
use crate::key::Key;

/// Everything the policy needs to decide; plain data, swapped whole on reload.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// A key stays active while `now - last_seen <= window`.
    pub window: Micros,
    /// How long a ban lasts.
    pub ban: Micros,
    /// Default number of keys per user (0 is treated as 1).
    pub limit: u32,
    /// Per-user overrides (`--limits FILE`), keyed by the raw email bytes.
    pub limits: HashMap<Box<[u8]>, u32>,
    /// IPv6 grouping, `1..=128`.
    pub v6_prefix: u8,
    /// Networks that never count and are never banned.
    pub allow: Vec<IpNet>,
    /// Over-limit newcomers become candidates instead of being banned.
    pub confirm: bool,
    /// Cap on tracked users (memory bound); beyond it new users are not
    /// tracked and a counter says so.
    pub max_users: usize,
    /// Cap on tracked keys over all users, bans included.
    pub max_keys: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            window: 5 * crate::clock::SECOND,
            ban: 60 * crate::clock::SECOND,
            limit: 1,
            limits: HashMap::new(),
            v6_prefix: 64,
            allow: Vec::new(),
            confirm: false,
            max_users: 1_000_000,
            max_keys: 4_000_000,
        }
    }
}

/// A decision to ban `key`, with what the audit line needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub key: Key,
    pub user: Box<[u8]>,
    /// The user's other active keys at the moment of the ban (the "origin"),
    /// sorted.
    pub origins: Vec<Key>,
    /// The tag printed in the audit line's brackets (the newcomer's line:
    /// its inbound tag, else the bracket's content, else empty).
    pub tag: Box<[u8]>,
    /// Until when (policy clock).
    pub until: Micros,
}

/// What one accepted line did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The line does not count.
    Skipped(Skip),
    /// The key is banned already; ignored.
    Ignored(Key),
    /// The key was active for the user: `last_seen` refreshed.
    Refreshed(Key),
    /// A new active key for the user, within the limit. Also returned when
    /// the memory caps refused to track the line (see `PolicyStats`).
    Admitted(Key),
    /// `--confirm`: over the limit, held as a candidate.
    Candidate(Key),
    /// Over the limit: banned. With `--confirm` the banned key may be a
    /// candidate other than this line's (the line's key is in `Ban::origins`
    /// then).
    Banned(Ban),
}

/// Counters the policy keeps (plain data for the summary and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyStats {
    pub bans: u64,
    pub promotions: u64,
    /// Always 0: at the caps new state is refused, nothing is evicted.
    pub users_evicted: u64,
    /// Always 0: at the caps new state is refused, nothing is evicted.
    pub keys_evicted: u64,
    pub users_refused: u64,
    pub keys_refused: u64,
}

/// One key a user was seen from. Times are on the internal clock.
#[derive(Clone, Debug)]
struct Entry {
    key: Key,
    last_seen: Micros,
    /// Line sequence number of the last line from this key.
    seq: u64,
    /// Line sequence number at which it became a candidate.
    since: u64,
    candidate: bool,
    /// Candidates only: the tag of the line that made it a candidate.
    tag: Box<[u8]>,
}

impl Entry {
    fn vacant() -> Entry {
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
const INLINE: usize = 2;

/// A user's entries: inline up to [`INLINE`], then on the heap. Unordered.
#[derive(Debug)]
enum Entries {
    Inline(u8, [Entry; INLINE]),
    Heap(Vec<Entry>),
}

impl Entries {
    fn new() -> Entries {
        Entries::Inline(0, [Entry::vacant(), Entry::vacant()])
    }

    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::Inline(n, a) => &a[..usize::from(*n)],
            Entries::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Entry] {
        match self {
            Entries::Inline(n, a) => &mut a[..usize::from(*n)],
            Entries::Heap(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn push(&mut self, e: Entry) {
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
    fn remove(&mut self, i: usize) -> Entry {
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

    fn find(&self, key: Key) -> Option<usize> {
        self.as_slice().iter().position(|e| e.key == key)
    }

    fn admitted(&self) -> usize {
        self.as_slice().iter().filter(|e| !e.candidate).count()
    }

    /// The admitted keys, sorted: a ban's origins.
    fn origins(&self) -> Vec<Key> {
        let mut o: Vec<Key> = self
            .as_slice()
            .iter()
            .filter(|e| !e.candidate)
            .map(|e| e.key)
            .collect();
        o.sort_unstable();
        o
    }

    /// Index of the oldest candidate satisfying `pred`.
    fn oldest_candidate(&self, pred: impl Fn(&Entry) -> bool) -> Option<usize> {
        self.as_slice()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.candidate && pred(e))
            .min_by_key(|(_, e)| (e.since, e.key))
            .map(|(i, _)| i)
    }
}

#[derive(Debug)]
struct User {
    name: Arc<[u8]>,
    entries: Entries,
    /// The deadline of this user's one live heap entry.
    queued: Micros,
}

#[derive(Debug)]
struct Slot {
    /// Bumped when the slot is freed, so stale heap entries miss.
    gen: u32,
    user: Option<User>,
}

/// A ban on the internal clock: `start <= t < until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BanRec {
    start: Micros,
    until: Micros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    User { slot: u32, gen: u32 },
    Ban(Key),
}

/// The engine. Pure: no clock, no I/O; `now` comes in with every call.
#[derive(Debug)]
pub struct Policy {
    cfg: PolicyConfig,
    stats: PolicyStats,
    users: HashMap<Arc<[u8]>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Banned key → when (internal clock).
    bans: HashMap<Key, BanRec>,
    heap: BinaryHeap<Reverse<(Micros, Timer)>>,
    /// Number of entries over all users.
    entries: usize,
    /// The internal clock: the latest time seen, never going back.
    clock: Micros,
    /// internal = caller + offset; grows when the caller's clock jumps back.
    offset: Micros,
    /// Accepted-line counter, orders lines that share a timestamp.
    seq: u64,
}

/// What a settled user changed: entries removed (for the key count).
fn settle(
    entries: &mut Entries,
    t: Micros,
    window: Micros,
    limit: usize,
    bans: &HashMap<Key, BanRec>,
    stats: &mut PolicyStats,
) -> usize {
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

fn promote(entries: &mut Entries, limit: usize, stats: &mut PolicyStats) {
    while entries.admitted() < limit {
        let Some(c) = entries.oldest_candidate(|_| true) else {
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
fn end_of(e: &Entry, window: Micros, bans: &HashMap<Key, BanRec>) -> Micros {
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
fn user_deadline(entries: &Entries, window: Micros) -> Micros {
    entries
        .as_slice()
        .iter()
        .map(|e| e.last_seen.saturating_add(window).saturating_add(1))
        .min()
        .unwrap_or(0)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Two prefixes overlap exactly when one contains the other.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy {
            cfg,
            stats: PolicyStats::default(),
            users: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            bans: HashMap::new(),
            heap: BinaryHeap::new(),
            entries: 0,
            clock: 0,
            offset: 0,
            seq: 0,
        }
    }

    /// Replaces the configuration (SIGHUP), keeping all state. New limits,
    /// allowlist and window apply from the next line; existing bans keep
    /// their end. Keys tracked under an old `v6_prefix` simply age out.
    pub fn reconfigure(&mut self, cfg: PolicyConfig) {
        let shrink = cfg.window < self.cfg.window;
        self.cfg = cfg;
        if shrink {
            self.rebuild_heap();
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Feeds one parsed line at time `now`.
    pub fn observe(&mut self, now: Micros, access: &Access<'_>) -> Verdict {
        let (key, email) = match self.classify(access) {
            Ok(x) => x,
            Err(skip) => return Verdict::Skipped(skip),
        };
        let t = self.advance(now);
        self.seq += 1;
        if self.banned(key, t) {
            return Verdict::Ignored(key);
        }
        let limit = self.limit(email);
        let window = self.cfg.window;
        let tag = access.inbound.or(access.detour).unwrap_or_default();

        let Some(&slot) = self.users.get(email) else {
            return self.new_user(key, email, t);
        };
        let user = self.slots[slot as usize]
            .user
            .as_mut()
            .expect("indexed slots hold a user");
        let removed = settle(
            &mut user.entries,
            t,
            window,
            limit,
            &self.bans,
            &mut self.stats,
        );
        self.entries -= removed;

        // 2. Active for this user: refresh.
        if let Some(i) = user.entries.find(key) {
            let e = &mut user.entries.as_mut_slice()[i];
            e.last_seen = t;
            e.seq = self.seq;
            if e.candidate {
                return Verdict::Candidate(key);
            }
            // --confirm: `limit` admitted keys seen since a candidate
            // appeared means limit + 1 devices online at once.
            let c = user.entries.oldest_candidate(|c| {
                let seen = user
                    .entries
                    .as_slice()
                    .iter()
                    .filter(|a| !a.candidate && a.seq > c.since)
                    .count();
                seen >= limit
            });
            let Some(c) = c else {
                return Verdict::Refreshed(key);
            };
            let cand = user.entries.remove(c);
            self.entries -= 1;
            let origins = user.entries.origins();
            let name = user.name.as_ref().into();
            return Verdict::Banned(self.ban(cand.key, name, origins, cand.tag, t));
        }

        // 3. Room under the limit: admit.
        let admitted = user.entries.admitted();
        if admitted < limit || self.cfg.confirm {
            if self.entries + self.bans.len() >= self.cfg.max_keys {
                self.stats.keys_refused += 1;
                return Verdict::Admitted(key);
            }
            let candidate = admitted >= limit;
            user.entries.push(Entry {
                key,
                last_seen: t,
                seq: self.seq,
                since: self.seq,
                candidate,
                tag: if candidate {
                    tag.into()
                } else {
                    Box::default()
                },
            });
            self.entries += 1;
            return if candidate {
                Verdict::Candidate(key)
            } else {
                Verdict::Admitted(key)
            };
        }

        // 4. Violation: ban the newcomer.
        let origins = user.entries.origins();
        let name = user.name.as_ref().into();
        Verdict::Banned(self.ban(key, name, origins, tag.into(), t))
    }

    /// Records a ban that already exists (read back from the kernel at
    /// startup), so its key is ignored until `until` (caller's clock).
    pub fn restore_ban(&mut self, key: Key, until: Micros) {
        let until = until.saturating_add(self.offset);
        let start = self.clock;
        self.bans.insert(key, BanRec { start, until });
        self.heap.push(Reverse((until, Timer::Ban(key))));
    }

    /// Drops expired state (windows, candidates, bans) at `now` and returns
    /// the keys whose bans ended, in the order they ended.
    pub fn expire(&mut self, now: Micros) -> Vec<Key> {
        let t = self.advance(now);
        let mut ended = Vec::new();
        // Each heap entry is looked at most once per call, so a deadline that
        // cannot move past `t` (saturated at the end of time) cannot spin.
        let mut budget = self.heap.len();
        while budget > 0 {
            budget -= 1;
            let Some(&Reverse((d, timer))) = self.heap.peek() else {
                break;
            };
            if d > t {
                break;
            }
            self.heap.pop();
            match timer {
                Timer::Ban(k) => {
                    if self.bans.get(&k).is_some_and(|b| b.until == d) {
                        self.bans.remove(&k);
                        ended.push(k);
                    }
                }
                Timer::User { slot, gen } => self.expire_user(slot, gen, d, t),
            }
        }
        ended
    }

    /// The earliest time (caller's clock) at which [`Policy::expire`] may
    /// have something to do: never later than the first real expiry, maybe
    /// earlier (a refreshed key's old deadline).
    pub fn next_deadline(&self) -> Option<Micros> {
        self.heap
            .peek()
            .map(|Reverse((d, _))| d.saturating_sub(self.offset))
    }

    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// Number of users with state, and number of tracked keys (bans included).
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.len(), self.entries + self.bans.len())
    }

    /// Whether `key` is banned at `now` (caller's clock).
    pub fn is_banned(&self, key: Key, now: Micros) -> bool {
        self.banned(key, now.saturating_add(self.offset).max(self.clock))
    }

    fn banned(&self, key: Key, t: Micros) -> bool {
        self.bans.get(&key).is_some_and(|b| b.until > t)
    }

    fn limit(&self, email: &[u8]) -> usize {
        let l = if self.cfg.limits.is_empty() {
            self.cfg.limit
        } else {
            self.cfg
                .limits
                .get(email)
                .copied()
                .unwrap_or(self.cfg.limit)
        };
        l.max(1) as usize
    }

    /// The skip rules, in the order of [`Skip`]; on success the key and user.
    fn classify<'a>(&self, a: &Access<'a>) -> Result<(Key, &'a [u8]), Skip> {
        if a.status == Status::Rejected {
            return Err(Skip::Rejected);
        }
        let email = match a.email {
            Some(e) if !e.is_empty() => e,
            _ => return Err(Skip::NoEmail),
        };
        let (ip, port) = match a.source {
            Source::Masked => return Err(Skip::Masked),
            Source::Unix | Source::Internal => return Err(Skip::Unspecified),
            Source::Ip(ip, port) => (ip, port),
        };
        let canon = canonical(ip);
        if canon.is_unspecified() {
            return Err(Skip::Unspecified);
        }
        if port == 0 {
            return Err(Skip::XffPort0);
        }
        if canon.is_loopback() {
            return Err(Skip::Loopback);
        }
        let key = Key::new(ip, self.cfg.v6_prefix);
        let knet = key.net();
        if self
            .cfg
            .allow
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canon) || overlaps(n, &knet))
        {
            return Err(Skip::Allowlisted);
        }
        Ok((key, email))
    }

    /// Moves the internal clock to the caller's `now` and returns it.
    fn advance(&mut self, now: Micros) -> Micros {
        let t = now.saturating_add(self.offset);
        if t >= self.clock {
            self.clock = t;
        } else if self.clock - t > self.cfg.window {
            // A clock jump back: no time passed; continue from here.
            self.offset = self.offset.saturating_add(self.clock - t);
        }
        self.clock
    }

    fn new_user(&mut self, key: Key, email: &[u8], t: Micros) -> Verdict {
        if self.users.len() >= self.cfg.max_users {
            self.stats.users_refused += 1;
            return Verdict::Admitted(key);
        }
        if self.entries + self.bans.len() >= self.cfg.max_keys {
            self.stats.keys_refused += 1;
            return Verdict::Admitted(key);
        }
        let mut entries = Entries::new();
        entries.push(Entry {
            key,
            last_seen: t,
            seq: self.seq,
            since: self.seq,
            candidate: false,
            tag: Box::default(),
        });
        self.entries += 1;
        let queued = user_deadline(&entries, self.cfg.window);
        let name: Arc<[u8]> = email.into();
        let user = User {
            name: name.clone(),
            entries,
            queued,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize].user = Some(user);
                s
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    user: Some(user),
                });
                u32::try_from(self.slots.len() - 1).expect("max_users fits in u32")
            }
        };
        let gen = self.slots[slot as usize].gen;
        self.users.insert(name, slot);
        self.heap.push(Reverse((queued, Timer::User { slot, gen })));
        Verdict::Admitted(key)
    }

    fn ban(
        &mut self,
        key: Key,
        user: Box<[u8]>,
        origins: Vec<Key>,
        tag: Box<[u8]>,
        t: Micros,
    ) -> Ban {
        let until = t.saturating_add(self.cfg.ban);
        self.bans.insert(key, BanRec { start: t, until });
        self.heap.push(Reverse((until, Timer::Ban(key))));
        self.stats.bans += 1;
        Ban {
            key,
            user,
            origins,
            tag,
            until: until.saturating_sub(self.offset),
        }
    }

    fn expire_user(&mut self, slot: u32, gen: u32, d: Micros, t: Micros) {
        let s = &mut self.slots[slot as usize];
        if s.gen != gen {
            return;
        }
        let Some(user) = s.user.as_mut() else { return };
        if user.queued != d {
            return;
        }
        let limit = {
            let l = if self.cfg.limits.is_empty() {
                self.cfg.limit
            } else {
                let name: &[u8] = &user.name;
                self.cfg.limits.get(name).copied().unwrap_or(self.cfg.limit)
            };
            l.max(1) as usize
        };
        let removed = settle(
            &mut user.entries,
            t,
            self.cfg.window,
            limit,
            &self.bans,
            &mut self.stats,
        );
        self.entries -= removed;
        if user.entries.len() == 0 {
            let name = user.name.clone();
            s.user = None;
            s.gen = s.gen.wrapping_add(1);
            self.users.remove(&name);
            self.free.push(slot);
        } else {
            user.queued = user_deadline(&user.entries, self.cfg.window);
            self.heap
                .push(Reverse((user.queued, Timer::User { slot, gen })));
        }
    }

    /// One live heap entry per user and ban, nothing stale.
    fn rebuild_heap(&mut self) {
        self.heap.clear();
        let window = self.cfg.window;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if let Some(user) = s.user.as_mut() {
                user.queued = user_deadline(&user.entries, window);
                let timer = Timer::User {
                    slot: slot as u32,
                    gen: s.gen,
                };
                self.heap.push(Reverse((user.queued, timer)));
            }
        }
        for (&k, b) in &self.bans {
            self.heap.push(Reverse((b.until, Timer::Ban(k))));
        }
    }
}
