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
//!   later than its earliest window end (deadlines only move later while the
//!   window stays the same; a shrinking window rebuilds the heap). Each ban
//!   has one. Stale heap entries are skipped when popped. So
//!   [`Policy::next_deadline`] is O(1) and may be early, never late. (An
//!   entry ended by another user's ban is not a deadline of its own: it is
//!   settled at its ban's start whenever its user is next looked at.)
//! - "Seen after" (for `--confirm`) is line order, a sequence number, so
//!   lines sharing a timestamp are still ordered.
//! - The refresh path (a known key of a known user) does not allocate.
//! - The work per line is O(entries of the user), plus O(entries) per entry
//!   that ended since the user was last settled, plus one hash lookup per
//!   entry while bans exist. Without `--confirm` a user has at most `limit`
//!   entries.
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
//!   state could not be kept). A new ban counts against `max_keys` like a
//!   new entry and is refused the same way (a `--confirm` candidate turning
//!   into a ban moves from entries to bans, and bans restored at startup
//!   are bounded by the sets' `maxelem`), so entries plus bans stay within
//!   `max_keys` whatever the log holds.
//! - Time going backwards: the engine runs on an internal clock that never
//!   goes back. A step back of at most `window` (lines written slightly out
//!   of order) is treated as happening at the latest time seen; a larger step
//!   (a clock jump, a DST change in replay) is treated as no time passing and
//!   the internal clock continues from there (an offset absorbs the jump).
//!   Every line moves the clock (skipped ones too), as `expire` does.
//!   Deadlines and `Ban::until` are reported on the caller's scale.
//! - An address whose key (its /64) contains an allowlisted network is
//!   allowlisted too: banning the key would ban the allowlisted address.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::accesslog::{Access, Skip, Source, Status};
use crate::clock::Micros;
use crate::hash::Map;
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
    pub limits: crate::config::Limits,
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
            limits: crate::config::Limits::default(),
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

    /// Index of the oldest candidate.
    fn oldest_candidate(&self) -> Option<usize> {
        self.as_slice()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.candidate)
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
    users: Map<Arc<[u8]>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Banned key → when (internal clock).
    bans: Map<Key, BanRec>,
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
    bans: &Map<Key, BanRec>,
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
fn end_of(e: &Entry, window: Micros, bans: &Map<Key, BanRec>) -> Micros {
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

/// `limit(user)`: the per-user entry, else the default; at least 1.
fn limit_of(cfg: &PolicyConfig, email: &[u8]) -> usize {
    let l = if cfg.limits.is_empty() {
        cfg.limit
    } else {
        cfg.limits.get(email).copied().unwrap_or(cfg.limit)
    };
    l.max(1) as usize
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `key` touches an allowlisted network: the key inside one, or one
/// inside the key (a /64 key holding an allowed /128: banning the key would
/// ban the allowed address). IPv4 keys also match IPv4-mapped IPv6 networks.
/// Two prefixes overlap exactly when one contains the other.
fn allowlisted(allow: &[IpNet], key: Key) -> bool {
    let knet = key.net();
    allow.iter().any(|n| {
        n.contains(&knet)
            || knet.contains(n)
            || matches!(key, Key::V4(a) if n.contains(&IpAddr::V6(a.to_ipv6_mapped())))
    })
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy {
            cfg,
            stats: PolicyStats::default(),
            users: Map::default(),
            slots: Vec::new(),
            free: Vec::new(),
            bans: Map::default(),
            heap: BinaryHeap::new(),
            entries: 0,
            clock: 0,
            offset: 0,
            seq: 0,
        }
    }

    /// Replaces the configuration (SIGHUP), keeping all state. New limits,
    /// allowlist and window apply from the next line; existing bans keep
    /// their end (the caller decides about bans of newly allowed keys). Keys
    /// that became allowlisted stop counting at once; keys tracked under an
    /// old `v6_prefix` age out. Existing candidates keep their rules even if
    /// `confirm` is turned off. O(state), once per reload.
    pub fn reconfigure(&mut self, cfg: PolicyConfig) {
        let shrink = cfg.window < self.cfg.window;
        let allow = cfg.allow != self.cfg.allow && !cfg.allow.is_empty();
        self.cfg = cfg;
        if allow {
            for user in self.slots.iter_mut().filter_map(|s| s.user.as_mut()) {
                let mut i = 0;
                while i < user.entries.len() {
                    if allowlisted(&self.cfg.allow, user.entries.as_slice()[i].key) {
                        user.entries.remove(i);
                        self.entries -= 1;
                    } else {
                        i += 1;
                    }
                }
            }
        }
        if shrink {
            self.rebuild_heap();
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Feeds one parsed line at time `now`.
    pub fn observe(&mut self, now: Micros, access: &Access<'_>) -> Verdict {
        // Every line moves the clock, skipped or not, as `expire` does: the
        // clock then does not depend on how often `expire` ran.
        let t = self.advance(now);
        let (key, email) = match self.classify(access) {
            Ok(x) => x,
            Err(skip) => return Verdict::Skipped(skip),
        };
        self.seq += 1;
        if self.banned(key, t) {
            return Verdict::Ignored(key);
        }
        let limit = limit_of(&self.cfg, email);
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
            // appeared means limit + 1 devices online at once. The oldest
            // candidate has the most admitted keys seen after it, so if it
            // does not qualify no other does.
            let Some(c) = user.entries.oldest_candidate() else {
                return Verdict::Refreshed(key);
            };
            let since = user.entries.as_slice()[c].since;
            let seen = user
                .entries
                .as_slice()
                .iter()
                .filter(|a| !a.candidate && a.seq > since)
                .count();
            if seen < limit {
                return Verdict::Refreshed(key);
            }
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

        // 4. Violation: ban the newcomer. A ban is state too: at the key
        // cap it is refused like any new key (fail-open), or one user
        // rotating addresses would grow the ban table without bound.
        if self.entries + self.bans.len() >= self.cfg.max_keys {
            self.stats.keys_refused += 1;
            return Verdict::Admitted(key);
        }
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
        if allowlisted(&self.cfg.allow, key) {
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
        let limit = limit_of(&self.cfg, &user.name);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Civil, Timestamp, SECOND};

    const S: Micros = SECOND;
    const W: Micros = 5 * S;
    const BAN: Micros = 60 * S;
    /// An arbitrary start, far from zero so steps back stay positive.
    const T0: Micros = 1_000_000 * S;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(s: &str) -> Key {
        Key::new(ip(s), 64)
    }

    fn line<'a>(user: &'a str, addr: &str, port: u16, tag: &'a str) -> Access<'a> {
        Access {
            ts: Timestamp::default(),
            source: Source::Ip(ip(addr), port),
            status: Status::Accepted,
            inbound: Some(tag.as_bytes()),
            detour: None,
            email: Some(user.as_bytes()),
        }
    }

    /// One line from `user` at `addr` at time `t`, driven like the daemon
    /// and replay drive it (expire when the deadline passed, then observe).
    fn at(p: &mut Policy, t: Micros, user: &str, addr: &str) -> Verdict {
        if p.next_deadline().is_some_and(|d| d <= t) {
            p.expire(t);
        }
        p.observe(t, &line(user, addr, 40000, "in"))
    }

    fn policy(f: impl FnOnce(&mut PolicyConfig)) -> Policy {
        let mut cfg = PolicyConfig::default();
        f(&mut cfg);
        Policy::new(cfg)
    }

    fn ban_of(v: Verdict) -> Ban {
        match v {
            Verdict::Banned(b) => b,
            other => panic!("expected a ban, got {other:?}"),
        }
    }

    /// `user`'s entries as (key, last_seen on the internal clock, candidate),
    /// sorted by key.
    fn view(p: &Policy, user: &str) -> Vec<(Key, Micros, bool)> {
        let Some(&slot) = p.users.get(user.as_bytes()) else {
            return Vec::new();
        };
        let u = p.slots[slot as usize].user.as_ref().unwrap();
        let mut v: Vec<_> = u
            .entries
            .as_slice()
            .iter()
            .map(|e| (e.key, e.last_seen, e.candidate))
            .collect();
        v.sort();
        v
    }

    /// The earliest natural expiry or ban end, on the caller's clock.
    fn earliest_expiry(p: &Policy) -> Option<Micros> {
        let w = p.cfg.window;
        let entries = p
            .slots
            .iter()
            .filter_map(|s| s.user.as_ref())
            .flat_map(|u| {
                u.entries
                    .as_slice()
                    .iter()
                    .map(move |e| e.last_seen.saturating_add(w).saturating_add(1))
            });
        let bans = p.bans.values().map(|b| b.until);
        entries
            .chain(bans)
            .min()
            .map(|d| d.saturating_sub(p.offset))
    }

    #[test]
    fn skip_rules_in_order() {
        let mut p = policy(|c| {
            c.allow = vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8:bb::1/128".parse().unwrap(),
            ]
        });
        let mut a = line("alice", "127.0.0.1", 0, "in");
        a.status = Status::Rejected;
        assert_eq!(p.observe(T0, &a), Verdict::Skipped(Skip::Rejected));
        let mut a = line("alice", "192.0.2.1", 1, "in");
        a.email = None;
        assert_eq!(p.observe(T0, &a), Verdict::Skipped(Skip::NoEmail));
        a.email = Some(b"");
        assert_eq!(p.observe(T0, &a), Verdict::Skipped(Skip::NoEmail));
        for (source, skip) in [
            (Source::Masked, Skip::Masked),
            (Source::Unix, Skip::Unspecified),
            (Source::Internal, Skip::Unspecified),
            (Source::Ip(ip("0.0.0.0"), 0), Skip::Unspecified),
            (Source::Ip(ip("::"), 443), Skip::Unspecified),
            (Source::Ip(ip("::ffff:0.0.0.0"), 443), Skip::Unspecified),
            (Source::Ip(ip("192.0.2.1"), 0), Skip::XffPort0),
            (Source::Ip(ip("127.0.0.1"), 0), Skip::XffPort0),
            (Source::Ip(ip("127.3.2.1"), 5), Skip::Loopback),
            (Source::Ip(ip("::1"), 5), Skip::Loopback),
            (Source::Ip(ip("::ffff:127.0.0.1"), 5), Skip::Loopback),
            (Source::Ip(ip("203.0.113.9"), 5), Skip::Allowlisted),
            (Source::Ip(ip("::ffff:203.0.113.9"), 5), Skip::Allowlisted),
            // Same /64 as an allowlisted /128: banning the key would ban it.
            (Source::Ip(ip("2001:db8:bb::2"), 5), Skip::Allowlisted),
        ] {
            let a = Access {
                source,
                ..line("alice", "192.0.2.1", 1, "in")
            };
            assert_eq!(p.observe(T0, &a), Verdict::Skipped(skip), "{source:?}");
        }
        assert_eq!(p.tracked(), (0, 0));
        assert_eq!(p.next_deadline(), None);
        // The neighbour /64 is not allowlisted.
        assert_eq!(
            at(&mut p, T0, "alice", "2001:db8:bb:1::2"),
            Verdict::Admitted(key("2001:db8:bb:1::"))
        );
    }

    #[test]
    fn wifi_to_lte_after_the_window_is_no_ban() {
        let mut p = policy(|_| {});
        assert_eq!(
            at(&mut p, T0, "alice", "192.0.2.1"),
            Verdict::Admitted(key("192.0.2.1"))
        );
        assert_eq!(
            at(&mut p, T0 + W + 1, "alice", "198.51.100.2"),
            Verdict::Admitted(key("198.51.100.2"))
        );
        assert_eq!(p.stats().bans, 0);
        assert_eq!(p.tracked(), (1, 1));
    }

    #[test]
    fn switch_within_the_window_is_a_ban() {
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        let mut a = line("alice", "198.51.100.2", 4000, "x");
        a.inbound = None;
        a.detour = Some(b">> direct");
        let b = ban_of(p.observe(T0 + 2 * S, &a));
        assert_eq!(
            b,
            Ban {
                key: key("198.51.100.2"),
                user: b"alice"[..].into(),
                origins: vec![key("192.0.2.1")],
                tag: b">> direct"[..].into(),
                until: T0 + 2 * S + BAN,
            }
        );
        // The banned key is ignored for everyone, and not banned again.
        assert_eq!(
            at(&mut p, T0 + 3 * S, "alice", "198.51.100.2"),
            Verdict::Ignored(key("198.51.100.2"))
        );
        assert_eq!(
            at(&mut p, T0 + 3 * S, "bob", "198.51.100.2"),
            Verdict::Ignored(key("198.51.100.2"))
        );
        assert_eq!(p.stats().bans, 1);
        // No tag at all: empty brackets.
        let mut a = line("alice", "198.51.100.3", 4000, "x");
        a.inbound = None;
        assert_eq!(
            ban_of(p.observe(T0 + 4 * S, &a)).tag,
            Box::<[u8]>::default()
        );
    }

    #[test]
    fn confirm_switch_within_the_window_is_promoted() {
        let mut p = policy(|c| c.confirm = true);
        at(&mut p, T0, "alice", "192.0.2.1");
        assert_eq!(
            at(&mut p, T0 + 2 * S, "alice", "198.51.100.2"),
            Verdict::Candidate(key("198.51.100.2"))
        );
        assert_eq!(
            at(&mut p, T0 + 4 * S, "alice", "198.51.100.2"),
            Verdict::Candidate(key("198.51.100.2"))
        );
        // The promotion moment is a deadline: the old key's window end.
        assert_eq!(p.next_deadline(), Some(T0 + W + 1));
        assert!(p.expire(T0 + W + 1).is_empty());
        assert_eq!(p.stats().promotions, 1);
        assert_eq!(
            view(&p, "alice"),
            vec![(key("198.51.100.2"), T0 + 4 * S, false)]
        );
        assert_eq!(
            at(&mut p, T0 + 6 * S, "alice", "198.51.100.2"),
            Verdict::Refreshed(key("198.51.100.2"))
        );
        assert_eq!(p.stats().bans, 0);
    }

    #[test]
    fn confirm_promotion_does_not_need_expire() {
        let mut p = policy(|c| c.confirm = true);
        p.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
        p.observe(T0 + 2 * S, &line("alice", "198.51.100.2", 1, "in"));
        assert_eq!(
            p.observe(T0 + 7 * S, &line("alice", "198.51.100.2", 1, "in")),
            Verdict::Refreshed(key("198.51.100.2"))
        );
        assert_eq!(p.stats().promotions, 1);
        // The promotion happened when the admitted key ended, even if the
        // promoted key has ended too by the time anyone looks.
        let mut q = policy(|c| c.confirm = true);
        q.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
        q.observe(T0 + S, &line("alice", "198.51.100.2", 1, "in"));
        q.observe(T0 + 9 * S, &line("alice", "198.51.100.3", 1, "in"));
        assert_eq!(q.stats().promotions, 1);
        assert_eq!(
            view(&q, "alice"),
            vec![(key("198.51.100.3"), T0 + 9 * S, false)]
        );
        // A candidate that ends with (or before) the admitted key is not
        // promoted: it was not active after the admitted key ended.
        let mut p = policy(|c| c.confirm = true);
        p.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
        p.observe(T0, &line("alice", "198.51.100.2", 1, "in"));
        p.observe(T0 + W + 1, &line("bob", "192.0.2.9", 1, "in"));
        p.expire(T0 + W + 1);
        assert_eq!(p.stats().promotions, 0);
        assert_eq!(p.tracked(), (1, 1));
    }

    #[test]
    fn confirm_true_sharing_is_banned_when_the_old_device_speaks() {
        let mut p = policy(|c| c.confirm = true);
        at(&mut p, T0, "alice", "192.0.2.1");
        let cand = line("alice", "198.51.100.2", 1, "phone-in");
        assert_eq!(
            p.observe(T0 + S, &cand),
            Verdict::Candidate(key("198.51.100.2"))
        );
        let b = ban_of(at(&mut p, T0 + 2 * S, "alice", "192.0.2.1"));
        assert_eq!(b.key, key("198.51.100.2"));
        assert_eq!(b.origins, vec![key("192.0.2.1")]);
        assert_eq!(&*b.tag, b"phone-in", "the candidate's line's tag");
        assert_eq!(b.until, T0 + 2 * S + BAN);
        assert_eq!(
            at(&mut p, T0 + 3 * S, "alice", "198.51.100.2"),
            Verdict::Ignored(key("198.51.100.2"))
        );
        assert_eq!(
            view(&p, "alice"),
            vec![(key("192.0.2.1"), T0 + 2 * S, false)]
        );
        assert_eq!((p.stats().bans, p.stats().promotions), (1, 0));
    }

    #[test]
    fn confirm_candidates_go_oldest_first() {
        let mut p = policy(|c| c.confirm = true);
        at(&mut p, T0, "alice", "192.0.2.1");
        at(&mut p, T0 + S, "alice", "192.0.2.2");
        at(&mut p, T0 + 2 * S, "alice", "192.0.2.3");
        let b = ban_of(at(&mut p, T0 + 3 * S, "alice", "192.0.2.1"));
        assert_eq!(b.key, key("192.0.2.2"));
        let b = ban_of(at(&mut p, T0 + 4 * S, "alice", "192.0.2.1"));
        assert_eq!(b.key, key("192.0.2.3"));

        // Promotion: the oldest candidate takes the freed place; the other
        // stays a candidate until the promoted key speaks again.
        let mut p = policy(|c| c.confirm = true);
        at(&mut p, T0, "alice", "192.0.2.1");
        at(&mut p, T0 + S, "alice", "192.0.2.2");
        at(&mut p, T0 + 2 * S, "alice", "192.0.2.3");
        p.expire(T0 + W + 1);
        assert_eq!(
            view(&p, "alice"),
            vec![
                (key("192.0.2.2"), T0 + S, false),
                (key("192.0.2.3"), T0 + 2 * S, true)
            ]
        );
        let b = ban_of(at(&mut p, T0 + 6 * S, "alice", "192.0.2.2"));
        assert_eq!(b.key, key("192.0.2.3"));
        assert_eq!(b.origins, vec![key("192.0.2.2")]);
    }

    #[test]
    fn confirm_with_limit_two_needs_both_admitted_keys() {
        let mut p = policy(|c| {
            c.confirm = true;
            c.limit = 2;
        });
        at(&mut p, T0, "alice", "192.0.2.1");
        at(&mut p, T0, "alice", "192.0.2.2");
        assert!(matches!(
            at(&mut p, T0 + S, "alice", "192.0.2.3"),
            Verdict::Candidate(_)
        ));
        // One admitted device talking could be the one that moved.
        assert_eq!(
            at(&mut p, T0 + 2 * S, "alice", "192.0.2.2"),
            Verdict::Refreshed(key("192.0.2.2"))
        );
        assert_eq!(
            at(&mut p, T0 + 3 * S, "alice", "192.0.2.2"),
            Verdict::Refreshed(key("192.0.2.2"))
        );
        // Both speaking after the candidate appeared: three devices.
        let b = ban_of(at(&mut p, T0 + 4 * S, "alice", "192.0.2.1"));
        assert_eq!(b.key, key("192.0.2.3"));
        assert_eq!(b.origins, vec![key("192.0.2.1"), key("192.0.2.2")]);
    }

    #[test]
    fn limit_two_and_a_third_device() {
        let mut p = policy(|c| c.limit = 2);
        at(&mut p, T0, "alice", "198.51.100.9");
        assert!(matches!(
            at(&mut p, T0 + S, "alice", "192.0.2.1"),
            Verdict::Admitted(_)
        ));
        let b = ban_of(at(&mut p, T0 + 2 * S, "alice", "192.0.2.5"));
        assert_eq!(b.key, key("192.0.2.5"));
        assert_eq!(b.origins, vec![key("192.0.2.1"), key("198.51.100.9")]);
    }

    #[test]
    fn per_user_limits_override_the_default() {
        let mut p = policy(|c| {
            c.limits.insert(b"family"[..].into(), 3);
        });
        for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            assert!(matches!(at(&mut p, T0, "family", a), Verdict::Admitted(_)));
        }
        assert!(matches!(
            at(&mut p, T0, "family", "192.0.2.4"),
            Verdict::Banned(_)
        ));
        at(&mut p, T0, "solo", "198.51.100.1");
        assert!(matches!(
            at(&mut p, T0, "solo", "198.51.100.2"),
            Verdict::Banned(_)
        ));
        // Reconfigure: the new limit applies from the next line.
        let mut cfg = p.config().clone();
        cfg.limit = 2;
        p.reconfigure(cfg);
        assert!(matches!(
            at(&mut p, T0 + S, "solo", "198.51.100.3"),
            Verdict::Admitted(_)
        ));
    }

    #[test]
    fn two_users_behind_one_address() {
        let mut p = policy(|_| {});
        assert!(matches!(
            at(&mut p, T0, "alice", "192.0.2.7"),
            Verdict::Admitted(_)
        ));
        assert!(matches!(
            at(&mut p, T0, "bob", "192.0.2.7"),
            Verdict::Admitted(_)
        ));
        assert!(matches!(
            at(&mut p, T0 + S, "alice", "192.0.2.7"),
            Verdict::Refreshed(_)
        ));
        assert!(matches!(
            at(&mut p, T0 + S, "bob", "192.0.2.7"),
            Verdict::Refreshed(_)
        ));
        assert_eq!(p.tracked(), (2, 2));
        // alice's second device is banned; bob is unaffected.
        let b = ban_of(at(&mut p, T0 + 2 * S, "alice", "198.51.100.1"));
        assert_eq!(b.origins, vec![key("192.0.2.7")]);
        assert!(matches!(
            at(&mut p, T0 + 2 * S, "bob", "192.0.2.7"),
            Verdict::Refreshed(_)
        ));
    }

    #[test]
    fn a_ban_counts_for_nobody() {
        // carol's phone shares 192.0.2.7 with dave; carol's ban of it must
        // not make dave's next address a violation.
        let mut p = policy(|_| {});
        at(&mut p, T0, "dave", "192.0.2.7");
        at(&mut p, T0, "carol", "198.51.100.1");
        let b = ban_of(at(&mut p, T0 + S, "carol", "192.0.2.7"));
        assert_eq!(b.key, key("192.0.2.7"));
        assert_eq!(
            at(&mut p, T0 + 2 * S, "dave", "203.0.113.3"),
            Verdict::Admitted(key("203.0.113.3"))
        );
    }

    #[test]
    fn a_banned_address_reappearing() {
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        let b = ban_of(at(&mut p, T0 + S, "alice", "192.0.2.2"));
        for t in [T0 + 2 * S, T0 + S + BAN - 1] {
            assert_eq!(at(&mut p, t, "alice", "192.0.2.2"), Verdict::Ignored(b.key));
        }
        assert_eq!(p.stats().bans, 1);
        assert_eq!(p.next_deadline(), Some(b.until));
        assert_eq!(p.expire(b.until - 1), Vec::<Key>::new());
        assert_eq!(p.expire(b.until), vec![b.key]);
        assert_eq!(p.tracked(), (0, 0));
        assert_eq!(p.next_deadline(), None);
        // Afterwards it is a new key like any other.
        assert_eq!(
            at(&mut p, b.until, "alice", "192.0.2.2"),
            Verdict::Admitted(b.key)
        );
        // Without an `expire` call in between the result is the same.
        let mut q = policy(|_| {});
        q.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
        q.observe(T0 + S, &line("alice", "192.0.2.2", 1, "in"));
        assert_eq!(
            q.observe(b.until, &line("alice", "192.0.2.2", 1, "in")),
            Verdict::Admitted(b.key)
        );
    }

    #[test]
    fn restored_bans_are_ignored_until_they_end() {
        let mut p = policy(|_| {});
        p.restore_ban(key("192.0.2.9"), T0 + 10 * S);
        assert!(p.is_banned(key("192.0.2.9"), T0));
        assert_eq!(p.next_deadline(), Some(T0 + 10 * S));
        assert_eq!(
            at(&mut p, T0, "alice", "192.0.2.9"),
            Verdict::Ignored(key("192.0.2.9"))
        );
        assert_eq!(p.expire(T0 + 10 * S), vec![key("192.0.2.9")]);
        assert!(!p.is_banned(key("192.0.2.9"), T0 + 10 * S));
    }

    #[test]
    fn allowlisted_and_loopback_never_count() {
        let mut p = policy(|c| c.allow = vec!["10.0.0.0/8".parse().unwrap()]);
        at(&mut p, T0, "alice", "192.0.2.1");
        for a in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "::ffff:10.9.9.9",
        ] {
            assert!(matches!(
                at(&mut p, T0 + S, "alice", a),
                Verdict::Skipped(Skip::Loopback | Skip::Allowlisted)
            ));
        }
        assert_eq!(p.tracked(), (1, 1));
        assert_eq!(p.stats().bans, 0);
    }

    #[test]
    fn reconfigured_allowlist_applies_at_once() {
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        let mut cfg = p.config().clone();
        cfg.allow = vec!["::ffff:192.0.2.0/120".parse().unwrap()];
        p.reconfigure(cfg);
        assert_eq!(p.tracked(), (1, 0));
        assert_eq!(
            at(&mut p, T0 + S, "alice", "198.51.100.1"),
            Verdict::Admitted(key("198.51.100.1"))
        );
        // A mapped network allows the plain IPv4 address too.
        assert_eq!(
            at(&mut p, T0 + S, "alice", "192.0.2.1"),
            Verdict::Skipped(Skip::Allowlisted)
        );
    }

    #[test]
    fn ipv6_privacy_rotation_is_one_device() {
        let mut p = policy(|_| {});
        assert!(matches!(
            at(&mut p, T0, "bob", "2001:db8:5:6::a"),
            Verdict::Admitted(_)
        ));
        assert_eq!(
            at(&mut p, T0 + S, "bob", "2001:db8:5:6:8c1e:2ff:fe00:1"),
            Verdict::Refreshed(key("2001:db8:5:6::"))
        );
        let b = ban_of(at(&mut p, T0 + 2 * S, "bob", "2001:db8:5:7::1"));
        assert_eq!(b.key.to_string(), "2001:db8:5:7::/64");
        assert_eq!(b.origins, vec![key("2001:db8:5:6::")]);
        assert_eq!(b.origins[0].to_string(), "2001:db8:5:6::/64");
    }

    #[test]
    fn window_boundary() {
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        assert!(matches!(
            at(&mut p, T0 + W, "alice", "192.0.2.2"),
            Verdict::Banned(_)
        ));
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        assert_eq!(
            at(&mut p, T0 + W, "alice", "192.0.2.1"),
            Verdict::Refreshed(key("192.0.2.1"))
        );
        assert_eq!(
            at(&mut p, T0 + 2 * W + 1, "alice", "192.0.2.2"),
            Verdict::Admitted(key("192.0.2.2"))
        );
    }

    #[test]
    fn next_deadline_after_each_event() {
        let mut p = policy(|c| c.confirm = true);
        assert_eq!(p.next_deadline(), None);
        at(&mut p, T0, "alice", "192.0.2.1");
        assert_eq!(p.next_deadline(), Some(T0 + W + 1));
        // A refresh leaves an early deadline; expiring there finds the real one.
        at(&mut p, T0 + 2 * S, "alice", "192.0.2.1");
        assert_eq!(p.next_deadline(), Some(T0 + W + 1));
        assert!(p.expire(T0 + W + 1).is_empty());
        assert_eq!(p.next_deadline(), Some(T0 + 2 * S + W + 1));
        // A candidate: its promotion moment is the admitted key's end.
        at(&mut p, T0 + 6 * S, "alice", "192.0.2.2");
        assert_eq!(p.next_deadline(), Some(T0 + 2 * S + W + 1));
        // A ban adds its end; the user's (early) deadline stays first.
        let b = ban_of(at(&mut p, T0 + 7 * S, "alice", "192.0.2.1"));
        assert_eq!(b.until, T0 + 7 * S + BAN);
        assert_eq!(p.next_deadline(), Some(T0 + 2 * S + W + 1));
        assert!(p.expire(T0 + 2 * S + W + 1).is_empty());
        assert_eq!(p.next_deadline(), Some(T0 + 7 * S + W + 1));
        assert!(p.expire(T0 + 7 * S + W + 1).is_empty());
        assert_eq!(p.tracked(), (0, 1));
        assert_eq!(p.next_deadline(), Some(b.until));
        assert_eq!(p.expire(b.until), vec![b.key]);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.tracked(), (0, 0));
        // A shrinking window moves deadlines earlier.
        at(&mut p, T0 + 100 * S, "alice", "192.0.2.1");
        let mut cfg = p.config().clone();
        cfg.window = S;
        p.reconfigure(cfg);
        assert_eq!(p.next_deadline(), Some(T0 + 101 * S + 1));
    }

    #[test]
    fn memory_caps_refuse_and_never_ban() {
        let mut p = policy(|c| c.max_users = 1);
        at(&mut p, T0, "alice", "192.0.2.1");
        assert_eq!(
            at(&mut p, T0, "bob", "192.0.2.2"),
            Verdict::Admitted(key("192.0.2.2"))
        );
        assert_eq!(
            at(&mut p, T0, "bob", "192.0.2.3"),
            Verdict::Admitted(key("192.0.2.3"))
        );
        assert_eq!(p.stats().users_refused, 2);
        assert_eq!(p.tracked(), (1, 1));

        let mut p = policy(|c| {
            c.max_keys = 2;
            c.limit = 3;
            c.confirm = true;
        });
        at(&mut p, T0, "alice", "192.0.2.1");
        at(&mut p, T0, "alice", "192.0.2.2");
        assert_eq!(
            at(&mut p, T0, "alice", "192.0.2.3"),
            Verdict::Admitted(key("192.0.2.3"))
        );
        assert_eq!(
            at(&mut p, T0, "bob", "192.0.2.4"),
            Verdict::Admitted(key("192.0.2.4"))
        );
        assert_eq!(p.stats().keys_refused, 2);
        assert_eq!(p.stats().bans, 0);
        assert_eq!(p.tracked(), (1, 2));
        // Room again once state expires.
        assert_eq!(
            at(&mut p, T0 + W + 1, "bob", "192.0.2.4"),
            Verdict::Admitted(key("192.0.2.4"))
        );
        assert_eq!(p.tracked(), (1, 1));

        // A ban is state: at the key cap an over-limit newcomer is refused
        // (not banned), so one user rotating addresses cannot grow the ban
        // table past the cap.
        let mut p = policy(|c| c.max_keys = 3);
        at(&mut p, T0, "alice", "192.0.2.1");
        assert!(matches!(
            at(&mut p, T0, "alice", "192.0.2.2"),
            Verdict::Banned(_)
        ));
        assert!(matches!(
            at(&mut p, T0, "alice", "192.0.2.3"),
            Verdict::Banned(_)
        ));
        assert_eq!(
            at(&mut p, T0, "alice", "192.0.2.4"),
            Verdict::Admitted(key("192.0.2.4"))
        );
        assert_eq!(p.stats().keys_refused, 1);
        assert_eq!(p.stats().bans, 2);
        assert_eq!(p.tracked(), (1, 3));
    }

    #[test]
    fn clock_jumps() {
        // Back by an hour: no time passes at the jump.
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        let back = T0 - 3600 * S;
        let b = ban_of(at(&mut p, back + S, "alice", "192.0.2.2"));
        assert_eq!(b.until, back + S + BAN, "reported on the caller's clock");
        assert_eq!(p.next_deadline(), Some(back + S + W + 1));
        // After the jump, time runs again from the caller's new clock.
        assert_eq!(
            at(&mut p, back + S + W + 1, "alice", "192.0.2.3"),
            Verdict::Admitted(key("192.0.2.3"))
        );
        assert_eq!(p.expire(b.until), vec![b.key]);

        // A line slightly out of order counts as seen at the latest time.
        let mut p = policy(|_| {});
        at(&mut p, T0, "alice", "192.0.2.1");
        assert_eq!(
            at(&mut p, T0 - 1000, "alice", "192.0.2.1"),
            Verdict::Refreshed(key("192.0.2.1"))
        );
        assert_eq!(view(&p, "alice"), vec![(key("192.0.2.1"), T0, false)]);
        assert!(matches!(
            at(&mut p, T0 + W, "alice", "192.0.2.2"),
            Verdict::Banned(_)
        ));

        // Forward by a day: everything ended.
        let day = 86_400 * S;
        assert!(matches!(
            at(&mut p, T0 + day, "alice", "192.0.2.2"),
            Verdict::Admitted(_)
        ));
        p.expire(T0 + day);
        assert_eq!(p.tracked(), (1, 1));

        // The ends of the scale: no panic, no wrap.
        let mut p = policy(|_| {});
        at(&mut p, Micros::MAX, "alice", "192.0.2.1");
        assert!(matches!(
            at(&mut p, Micros::MAX, "alice", "192.0.2.2"),
            Verdict::Banned(_)
        ));
        at(&mut p, 0, "alice", "192.0.2.3");
        p.expire(0);
        p.expire(Micros::MAX);
        let _ = p.next_deadline();
    }

    /// `shared/samples/mixed.log`, line by line, with the defaults.
    #[test]
    fn mixed_log_scenario() {
        fn ts(s: u32, us: u32) -> Timestamp {
            let c = Civil {
                year: 2026,
                month: 11,
                day: 21,
                hour: 10,
                minute: 0,
                second: s,
            };
            Timestamp::from_civil(c, us).unwrap()
        }
        let ip_line = |t: Timestamp,
                       user: Option<&'static str>,
                       addr: &str,
                       port: u16,
                       detour: &'static str| Access {
            ts: t,
            source: Source::Ip(ip(addr), port),
            status: Status::Accepted,
            inbound: detour
                .split(" >> ")
                .next()
                .filter(|_| detour.contains(" >> "))
                .map(str::as_bytes),
            detour: Some(detour.as_bytes()),
            email: user.map(str::as_bytes),
        };
        let alice = Some("alice@example.com");
        let lines: Vec<(Access<'_>, Verdict)> = vec![
            (
                ip_line(
                    ts(1, 120_331),
                    alice,
                    "198.51.100.23",
                    58676,
                    "vless-in >> direct",
                ),
                Verdict::Admitted(key("198.51.100.23")),
            ),
            (
                ip_line(ts(1, 250_004), None, "127.0.0.1", 39946, "api -> api"),
                Verdict::Skipped(Skip::NoEmail),
            ),
            (
                ip_line(
                    ts(1, 300_871),
                    alice,
                    "198.51.100.23",
                    58680,
                    "vless-in -> dns-out",
                ),
                Verdict::Refreshed(key("198.51.100.23")),
            ),
            (
                Access {
                    source: Source::Internal,
                    ..ip_line(ts(2, 4_450), None, "0.0.0.0", 0, "direct")
                },
                Verdict::Skipped(Skip::NoEmail),
            ),
            (
                ip_line(
                    ts(2, 500_100),
                    Some("12.bob"),
                    "2001:db8:5:6::a",
                    40112,
                    "VLESS TCP REALITY >> direct",
                ),
                Verdict::Admitted(key("2001:db8:5:6::")),
            ),
            (
                ip_line(
                    ts(2, 700_200),
                    Some("12.bob"),
                    "2001:db8:5:6:8c1e:2ff:fe00:1",
                    40200,
                    "VLESS TCP REALITY >> direct",
                ),
                Verdict::Refreshed(key("2001:db8:5:6::")),
            ),
            (
                Access {
                    status: Status::Rejected,
                    detour: None,
                    inbound: None,
                    ..ip_line(ts(3, 0), None, "203.0.113.76", 57676, "")
                },
                Verdict::Skipped(Skip::Rejected),
            ),
            (
                ip_line(
                    ts(3, 100_000),
                    Some("carol"),
                    "203.0.113.9",
                    0,
                    "ws-in >> direct",
                ),
                Verdict::Skipped(Skip::XffPort0),
            ),
            (
                Access {
                    source: Source::Unix,
                    ..ip_line(
                        ts(3, 200_000),
                        Some("carol"),
                        "0.0.0.0",
                        0,
                        "xhttp-uds >> direct",
                    )
                },
                Verdict::Skipped(Skip::Unspecified),
            ),
            (
                Access {
                    source: Source::Masked,
                    ..ip_line(
                        ts(3, 300_000),
                        Some("carol"),
                        "0.0.0.0",
                        0,
                        "vless-in >> direct",
                    )
                },
                Verdict::Skipped(Skip::Masked),
            ),
            (
                ip_line(ts(4, 0), alice, "192.0.2.44", 61000, "vless-in >> direct"),
                Verdict::Banned(Ban {
                    key: key("192.0.2.44"),
                    user: b"alice@example.com"[..].into(),
                    origins: vec![key("198.51.100.23")],
                    tag: b"vless-in"[..].into(),
                    until: ts(4, 0).as_micros() + BAN,
                }),
            ),
            (
                ip_line(
                    ts(4, 500_000),
                    alice,
                    "198.51.100.23",
                    58690,
                    "inbound-127.0.0.1:3010 >> direct",
                ),
                Verdict::Refreshed(key("198.51.100.23")),
            ),
            (
                ip_line(ts(11, 0), alice, "192.0.2.45", 61010, "vless-in >> direct"),
                Verdict::Admitted(key("192.0.2.45")),
            ),
        ];
        let mut p = policy(|_| {});
        let mut audit = Vec::new();
        for (i, (a, want)) in lines.iter().enumerate() {
            let now = a.ts.as_micros();
            if p.next_deadline().is_some_and(|d| d <= now) {
                p.expire(now);
            }
            let got = p.observe(now, a);
            assert_eq!(&got, want, "line {i}");
            if let Verdict::Banned(b) = &got {
                crate::audit::write_line(&mut audit, a.ts, b);
            }
        }
        assert_eq!(
            String::from_utf8(audit).unwrap(),
            "2026/11/21 10:00:04 disallowed concurrent connection from 192.0.2.44 \
             w/ origin 198.51.100.23 [vless-in] email: alice@example.com"
        );
        assert_eq!(p.stats().bans, 1);
    }

    /// xorshift64*: small, deterministic, good enough to shuffle tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
    /// Ordinary client addresses: v4, mapped v4, and v6 in three /64s.
    const NORMAL: [&str; 12] = [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "::ffff:192.0.2.3",
        "192.0.2.4",
        "198.51.100.7",
        "2001:db8:1::1",
        "2001:db8:1::2",
        "2001:db8:1:0:ffff::9",
        "2001:db8:2::1",
        "2001:db8:2::abcd",
        "2001:db8:3::5",
    ];
    /// Addresses that must never count: loopback, unspecified, allowlisted
    /// (directly, mapped, inside an allowed /48, beside an allowed /128).
    const SPECIAL: [&str; 10] = [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.2",
        "0.0.0.0",
        "::",
        "::ffff:0.0.0.0",
        "203.0.113.5",
        "::ffff:203.0.113.6",
        "2001:db8:aa::7",
        "2001:db8:bb::2",
    ];

    /// One random run; checks the invariants after every step. `twin` is
    /// fed the same lines but never `expire`d: its verdicts must be equal
    /// (only asked when bans outlast the window, see `end_of`).
    fn run(seed: u64, steps: usize, seen: &mut [u64; 6]) {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let window = [S, 5 * S][rng.below(2) as usize];
        let ban = [S / 2, 2 * S, 60 * S][rng.below(3) as usize];
        let mut cfg = PolicyConfig {
            window,
            ban,
            limit: 1 + rng.below(3) as u32,
            confirm: rng.below(2) == 0,
            allow: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8:aa::/48".parse().unwrap(),
                "2001:db8:bb::1/128".parse().unwrap(),
            ],
            ..PolicyConfig::default()
        };
        for u in USERS {
            if rng.below(3) == 0 {
                cfg.limits
                    .insert(u.as_bytes().into(), 1 + rng.below(3) as u32);
            }
        }
        let limit_of = |u: &str| *cfg.limits.get(u.as_bytes()).unwrap_or(&cfg.limit) as usize;
        let special: Vec<Key> = SPECIAL.iter().map(|a| key(a)).collect();
        let mut p = Policy::new(cfg.clone());
        let mut twin = (ban > window).then(|| Policy::new(cfg.clone()));
        let mut now = T0 + rng.below(1000 * S);
        // To debug a failing seed: every step on stderr.
        let trace = std::env::var_os("REFRACT_POLICY_TRACE").is_some();
        // (user, key) → step at which it first became a candidate.
        let mut candidate_since: std::collections::HashMap<(&str, Key), usize> = Default::default();

        for step in 0..steps {
            now = match rng.below(100) {
                0..=59 => now + rng.below(5 * S / 2),
                60..=69 => now,
                70..=74 => now + window,
                75..=79 => now + window + 1,
                80..=87 => now.saturating_sub(rng.below(S)),
                88..=91 => now.saturating_sub(3600 * S),
                92..=94 => now + 86_400 * S,
                _ => now + rng.below(10 * S),
            };
            if rng.below(3) == 0 {
                p.expire(now);
            }
            let user = USERS[rng.below(USERS.len() as u64) as usize];
            let special_line = rng.below(5) == 0;
            let addr = if special_line {
                SPECIAL[rng.below(SPECIAL.len() as u64) as usize]
            } else {
                NORMAL[rng.below(NORMAL.len() as u64) as usize]
            };
            let port = if rng.below(15) == 0 { 0 } else { 1024 };
            let a = line(user, addr, port, "in");
            let lkey = key(addr);

            let before = view(&p, user);
            let banned_before: Vec<Key> = p.bans.keys().copied().collect();
            let v = p.observe(now, &a);
            let t = p.clock;
            if let Some(q) = twin.as_mut() {
                assert_eq!(v, q.observe(now, &a), "seed {seed} step {step}: twin");
            }
            let ctx = format!("seed {seed} step {step} {user} {addr}:{port} -> {v:?}");
            if trace {
                eprintln!(
                    "{ctx} now={now} t={t} before={before:?} cfg={window} {ban} {} {}",
                    cfg.limit, cfg.confirm
                );
            }

            if special_line || port == 0 {
                assert!(matches!(v, Verdict::Skipped(_)), "{ctx}");
            }
            seen[match &v {
                Verdict::Banned(b) if b.key != lkey => 0,
                Verdict::Banned(_) => 1,
                Verdict::Ignored(_) => 2,
                Verdict::Candidate(_) => 3,
                _ => 5,
            }] += 1;
            match &v {
                Verdict::Banned(b) => {
                    assert!(!special.contains(&b.key), "{ctx}");
                    assert_eq!(&*b.user, user.as_bytes(), "{ctx}");
                    assert!(b.origins.len() >= limit_of(user), "{ctx}");
                    assert!(!b.origins.contains(&b.key), "{ctx}");
                    // Origins: keys of this user active at the ban (admitted
                    // then, maybe promoted while settling at this line).
                    let after = view(&p, user);
                    for o in &b.origins {
                        let was = before.iter().any(|&(k, seen, _)| {
                            k == *o && (k == lkey || seen.saturating_add(window) >= t)
                        });
                        assert!(was, "{ctx}: origin {o} was not an active key");
                        let admitted = after.iter().any(|&(k, _, cand)| k == *o && !cand);
                        assert!(admitted, "{ctx}: origin {o} is not admitted");
                        assert!(!banned_before.contains(o) || !p.banned(*o, t), "{ctx}");
                    }
                    if b.key == lkey {
                        assert!(!cfg.confirm, "{ctx}: confirm bans only candidates");
                    } else {
                        assert!(cfg.confirm, "{ctx}");
                        assert!(b.origins.contains(&lkey), "{ctx}");
                        let since = candidate_since.get(&(user, b.key));
                        assert!(since.is_some_and(|&s| s < step), "{ctx}");
                        assert!(before.iter().any(|&(k, _, c)| k == b.key && c), "{ctx}");
                    }
                    assert!(p.is_banned(b.key, now), "{ctx}");
                }
                Verdict::Ignored(k) => assert!(banned_before.contains(k), "{ctx}"),
                Verdict::Candidate(k) => {
                    assert!(cfg.confirm || !before.is_empty(), "{ctx}");
                    candidate_since.entry((user, *k)).or_insert(step);
                }
                _ => {}
            }

            // After every step: limits hold, deadlines are not late, the
            // counts add up.
            let mut entries = 0;
            for u in USERS {
                let vu = view(&p, u);
                entries += vu.len();
                let admitted = vu
                    .iter()
                    .filter(|&&(k, seen, cand)| {
                        !cand && seen.saturating_add(window) >= t && !p.banned(k, t)
                    })
                    .count();
                assert!(admitted <= limit_of(u), "{ctx}: {u} has {vu:?}");
            }
            if let Some(e) = earliest_expiry(&p) {
                let d = p.next_deadline().expect("state without a deadline");
                assert!(d <= e, "{ctx}: next_deadline {d} after expiry {e}");
            }
            assert_eq!(
                p.tracked(),
                (p.users.len(), entries + p.bans.len()),
                "{ctx}"
            );
        }
        seen[4] += p.stats().promotions;
        // Everything ends: a day later, after expire, nothing is left.
        let later = now + 86_400 * S;
        p.expire(later);
        assert_eq!(p.tracked(), (0, 0), "seed {seed}");
        if let Some(mut q) = twin {
            q.expire(later);
            assert_eq!(p.stats(), q.stats(), "seed {seed}: twin");
        }
        assert_eq!(p.next_deadline(), None, "seed {seed}");
    }

    #[test]
    fn random_interleavings_keep_the_invariants() {
        // Confirm bans, plain bans, ignored, candidates, promotions, other.
        let mut seen = [0; 6];
        for seed in 1..=1000 {
            run(seed, 120, &mut seen);
        }
        assert!(seen.iter().all(|&n| n > 20), "coverage {seen:?}");
    }
}
