//! The policy engine: who is online from where, and who gets banned.
//!
//! The engine is pure: no clock, no I/O; the caller passes `now`
//! (microseconds on any monotonic-ish scale) with every call and asks
//! [`Policy::next_deadline`] when to call [`Policy::expire`] next. The
//! semantics below are normative: the daemon and `refract replay` implement
//! exactly this, and the tests in `tests.rs` check it rule by rule.
//!
//! # Semantics (normative)
//!
//! User = the `email:` value. Each accepted line yields (user, client
//! address, time). The *key* of an address is the IPv4 address itself, or
//! the IPv6 address masked to `--ipv6-prefix` bits (default 64: one device
//! rotates privacy addresses inside its /64). IPv4-mapped IPv6 is IPv4
//! ([`crate::key`]).
//!
//! Lines that never count and never cause a ban each have a reason and a
//! counter ([`skip::Skip`]); the reasons that mean misconfiguration (masked,
//! port 0, loopback) make the daemon log a rate-limited warning, not one per
//! line:
//!
//! - no email; `rejected`;
//! - non-access lines (DNS answers, error-log lines, banners). A
//!   syslog/journald prefix is *not* a reason to skip: the access part after
//!   it still counts ([`crate::accesslog`]);
//! - client address unparseable or masked (`log.maskAddress`);
//! - unspecified address (`0.0.0.0:0`, unix-socket listeners);
//! - port `0` (address taken from X-Forwarded-For: packets come from the
//!   CDN, a kernel ban cannot work);
//! - loopback (a reverse proxy without PROXY protocol);
//! - addresses in the allowlist (`--allow CIDR`, repeatable).
//!
//! With `window` W, a key is *active* for a user at time t while
//! `t - last_seen <= W`. `limit(user)` is `--limit` (default 1), or the
//! user's entry in the per-user limits file ([`limits`]). On an accepted
//! line (U, K, t):
//!
//! 1. K is banned → ignore.
//! 2. K is active for U → refresh `last_seen`.
//! 3. U has fewer than `limit(U)` active keys → admit K.
//! 4. Otherwise → violation: ban K (the newcomer) for `--timeout`, and write
//!    the audit line naming the active keys as the origin.
//!
//! `--confirm` (off by default) removes the false positives of a device
//! moving WiFi → LTE: the over-limit newcomer K becomes a *candidate* instead
//! of being banned. It is banned as soon as one of U's admitted keys is seen
//! again while K is still active (two devices provably online at once). If
//! the admitted keys all expire while K is active, K is promoted (it was a
//! network switch).
//!
//! Time: the live daemon uses a monotonic clock; `replay` uses the log's own
//! timestamps (local time, optional microseconds). The policy never reads a
//! clock: it takes `now` and reports `next_deadline()`. Memory is bounded:
//! expired state is dropped, and tracked users/keys have caps with counters.
//!
//! ## Liveness
//!
//! In force in the daemon; `replay` has no kernel and keeps the window rule
//! alone (it says so under `--explain`). The "in use" judgment of a socket
//! is [`crate::liveness::last_use`]; attribution and the lookups are
//! [`crate::liveness::track`] and [`crate::liveness::kernel`]; the engine
//! takes the outcome as plain data ([`Policy::live`]).
//!
//! The log says when a connection *starts*, never that it is still in use.
//! The kernel knows. A key K is also *active* for U at t when a connection
//! that U's lines attributed to K is still open and received something from
//! the client (data or an ACK: a device that only downloads sends nothing
//! but ACKs) within W before t. A socket that is still ESTABLISHED but has
//! received nothing for longer than W (the phone left the WiFi, no FIN ever
//! came) does not make K active. A line is attributed when its client
//! address and port name a socket to one of the inbound ports (either
//! family; IPv4 clients of a dual-stack listener appear as
//! `::ffff:a.b.c.d`); lines that name no socket (port 0, `udp:` without
//! conntrack, a relay on another host) keep the window rule alone. `replay`
//! has no kernel and keeps the window rule. The window rule stays the
//! floor: a line within W keeps K active whatever its socket does.
//!
//! Count use, not keepalives. Go's TCP keepalive (V2Ray and Xray sockets:
//! 15 s idle) makes an idle client answer a probe every 15 s, which moves
//! `tcpi_last_ack_recv` without any use of the connection: judged by that
//! field alone, an idle connection would be "live" for W out of every 15 s,
//! and verdicts would depend on the keepalive's phase. A connection is in
//! use within W when the client sent data within W (`tcpi_last_data_recv`)
//! or acknowledged new data within W (`tcpi_bytes_acked` advanced since the
//! previous look, or `tcpi_last_ack_recv` within W while data was in
//! flight); a probe's ACK acknowledges no new data. The verdict for the same
//! traffic must not change with the keepalive's phase.
//!
//! How the facts enter the engine (choices the semantics leave open):
//!
//! - A fact is "a connection of U attributed to K was in use at `at`"
//!   (`at <= now`, the latest moment the kernel's figures prove). It counts
//!   exactly like a line of (U, K) at `at`: the four rules above, with
//!   `last_seen = at`, so K stays active until `at + W`, never longer than
//!   the kernel showed. A fact older than W changes nothing.
//! - The daemon asks when a line's key is a *newcomer* that the window rule
//!   alone would admit ([`Policy::probe`]) and U has attributed connections
//!   on other keys; that line's verdict waits until the facts are applied
//!   (or a short deadline passes: then the window rule decides alone).
//! - Without a new line: a user whose attributed connections span more
//!   keys than its limit is re-checked periodically. Facts of one check
//!   are applied with the keys the engine holds active first, then oldest
//!   key first, so a key that comes back (an idle connection resuming) is
//!   the newcomer and is banned, the key that held the slot its origin.
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
//! # Choices the semantics leave open
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

pub mod limits;
pub mod skip;

mod entries;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use ipnet::IpNet;

use crate::accesslog::Access;
use crate::clock::Micros;
use crate::hash::Map;
use crate::key::Key;
use entries::{end_of, settle, user_deadline, BanRec, Bans, Entries, Entry, Slot, User};
use limits::{limit_of, Limits};
use skip::{allowlisted, classify, Skip};

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
    pub limits: Limits,
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
            limits: Limits::default(),
            v6_prefix: 64,
            allow: Vec::new(),
            confirm: false,
            max_users: 50_000,
            max_keys: 250_000,
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
    /// What the audit line prints in its brackets, as refract 0.2 did:
    /// [`crate::accesslog::Access::audit_tag`] of the newcomer's line.
    pub tag: Box<[u8]>,
    /// Until when (policy clock).
    pub until: Micros,
}

/// [`Policy::probe`]: a counted line's key and user, and whether the
/// window rule alone would admit it as a new key of the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe<'a> {
    pub key: Key,
    pub user: &'a [u8],
    pub newcomer: bool,
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
    bans: Bans,
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

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy {
            cfg,
            stats: PolicyStats::default(),
            users: Map::default(),
            slots: Vec::new(),
            free: Vec::new(),
            bans: Bans::default(),
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
        let (key, email) = match classify(&self.cfg, access) {
            Ok(x) => x,
            Err(skip) => return Verdict::Skipped(skip),
        };
        self.decide(t, t, key, email, access.audit_tag())
    }

    /// What the window rule alone would do with `access` at `now`, without
    /// changing anything: `None` for a line that does not count, else its
    /// key and user, and whether it is a *newcomer* the window rule would
    /// admit (not banned, not active for the user, the user's active
    /// admitted keys below the limit) — the one case a liveness fact about
    /// the user's other keys can turn into a ban (see "Liveness").
    pub fn probe<'a>(&self, now: Micros, access: &Access<'a>) -> Option<Probe<'a>> {
        let (key, user) = classify(&self.cfg, access).ok()?;
        let t = now.saturating_add(self.offset).max(self.clock);
        if self.banned(key, t) {
            return Some(Probe {
                key,
                user,
                newcomer: false,
            });
        }
        let newcomer = match self.users.get(user) {
            None => true,
            Some(&slot) => {
                let u = self.slots[slot as usize]
                    .user
                    .as_ref()
                    .expect("indexed slots hold a user");
                let window = self.cfg.window;
                let active = |e: &&Entry| end_of(e, window, &self.bans) >= t;
                let entries = u.entries.as_slice();
                let known = entries.iter().filter(active).any(|e| e.key == key);
                let admitted = entries
                    .iter()
                    .filter(active)
                    .filter(|e| !e.candidate)
                    .count();
                !known && admitted < limit_of(&self.cfg, user)
            }
        };
        Some(Probe {
            key,
            user,
            newcomer,
        })
    }

    /// A liveness fact (see "Liveness"): the kernel showed at `now` that a
    /// connection `user`'s lines attributed to `key` was in use at `at`
    /// (caller's clock, `at <= now`). The key counts as if a line had come
    /// from it at `at`, by the same four rules: it refreshes an active key,
    /// is admitted while there is room, and bans the key when the user's
    /// other active keys fill the limit (the key that came back is the
    /// newcomer; `tag` is for its audit line). `None` when the fact changes
    /// nothing: `at` is older than the window, or the key is allowlisted
    /// now.
    pub fn live(
        &mut self,
        now: Micros,
        user: &[u8],
        key: Key,
        at: Micros,
        tag: &[u8],
    ) -> Option<Verdict> {
        let t = self.advance(now);
        let at = at.saturating_add(self.offset).min(t);
        if t - at > self.cfg.window || user.is_empty() || allowlisted(&self.cfg.allow, key) {
            return None;
        }
        Some(self.decide(t, at, key, user, tag))
    }

    /// The four rules for `key` of `email` at `t`, recording `last_seen`
    /// (`t` for a line, earlier for a liveness fact; internal clock).
    fn decide(
        &mut self,
        t: Micros,
        last_seen: Micros,
        key: Key,
        email: &[u8],
        tag: &[u8],
    ) -> Verdict {
        self.seq += 1;
        if self.banned(key, t) {
            return Verdict::Ignored(key);
        }
        let limit = limit_of(&self.cfg, email);
        let window = self.cfg.window;

        let Some(&slot) = self.users.get(email) else {
            return self.new_user(key, email, last_seen);
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
            e.last_seen = e.last_seen.max(last_seen);
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
                last_seen,
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
            // A fact's `last_seen` is in the past: its window may end before
            // the user's queued deadline (which must never be later).
            let end = last_seen.saturating_add(window).saturating_add(1);
            if end < user.queued {
                user.queued = end;
                let gen = self.slots[slot as usize].gen;
                self.heap.push(Reverse((end, Timer::User { slot, gen })));
            }
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

    /// `user`'s limit (`--limit` or its entry in the limits file).
    pub fn limit(&self, user: &[u8]) -> usize {
        limit_of(&self.cfg, user)
    }

    /// Whether `key` is an active admitted key of `user` at `now` (read
    /// only; for ordering liveness facts).
    pub fn is_active(&self, now: Micros, user: &[u8], key: Key) -> bool {
        let t = now.saturating_add(self.offset).max(self.clock);
        let Some(&slot) = self.users.get(user) else {
            return false;
        };
        let u = self.slots[slot as usize]
            .user
            .as_ref()
            .expect("indexed slots hold a user");
        u.entries
            .as_slice()
            .iter()
            .any(|e| e.key == key && !e.candidate && end_of(e, self.cfg.window, &self.bans) >= t)
    }

    /// A ban by hand (`refract ban`): `key` is kept out until `now + dur`
    /// (caller's clock), counts for nobody from now on, like any ban. A key
    /// banned already gets the later of the two ends. Returns the end.
    pub fn manual_ban(&mut self, now: Micros, key: Key, dur: Micros) -> Micros {
        let t = self.advance(now);
        let until = t.saturating_add(dur);
        let rec = match self.bans.get(&key) {
            Some(b) if b.until > t => BanRec {
                start: b.start,
                until: b.until.max(until),
            },
            _ => BanRec { start: t, until },
        };
        self.bans.insert(key, rec);
        self.heap.push(Reverse((rec.until, Timer::Ban(key))));
        rec.until.saturating_sub(self.offset)
    }

    /// Bans `key` of `user` now because something beyond this node's view
    /// says it is one device too many (the fleet: `origins` are the devices
    /// elsewhere that fill the limit). The key leaves the user's entries;
    /// `None` when it is banned already or allowlisted.
    pub fn ban_now(
        &mut self,
        now: Micros,
        user: &[u8],
        key: Key,
        origins: Vec<Key>,
        tag: &[u8],
    ) -> Option<Ban> {
        let t = self.advance(now);
        if self.banned(key, t) || allowlisted(&self.cfg.allow, key) {
            return None;
        }
        if let Some(&slot) = self.users.get(user) {
            if let Some(u) = self.slots[slot as usize].user.as_mut() {
                if let Some(i) = u.entries.find(key) {
                    u.entries.remove(i);
                    self.entries -= 1;
                }
            }
        }
        Some(self.ban(key, user.into(), origins, tag.into(), t))
    }

    /// Lifts the ban of `key` (`refract unban`): the next line from it is
    /// judged afresh. Returns whether it was banned.
    pub fn unban(&mut self, now: Micros, key: Key) -> bool {
        let t = self.advance(now);
        // Its heap entry goes stale (`expire` checks `until`).
        self.bans.remove(&key).is_some_and(|b| b.until > t)
    }

    /// The bans in force at `now`: key, when it started and when it ends
    /// (caller's clock), in no order.
    pub fn bans(&self, now: Micros) -> Vec<(Key, Micros, Micros)> {
        let t = now.saturating_add(self.offset).max(self.clock);
        self.bans
            .iter()
            .filter(|(_, b)| b.until > t)
            .map(|(&k, b)| {
                (
                    k,
                    b.start.saturating_sub(self.offset),
                    b.until.saturating_sub(self.offset),
                )
            })
            .collect()
    }

    /// Every user with a key online at `now`, with those keys (admitted
    /// ones first), in no order. O(users): for `refract status`.
    pub fn online(&self, now: Micros) -> Vec<(Arc<[u8]>, Vec<Key>)> {
        let t = now.saturating_add(self.offset).max(self.clock);
        let window = self.cfg.window;
        let mut out = Vec::new();
        for u in self.slots.iter().filter_map(|s| s.user.as_ref()) {
            let mut keys: Vec<(bool, Key)> = u
                .entries
                .as_slice()
                .iter()
                .filter(|e| end_of(e, window, &self.bans) >= t)
                .map(|e| (e.candidate, e.key))
                .collect();
            if keys.is_empty() {
                continue;
            }
            keys.sort_unstable();
            out.push((u.name.clone(), keys.into_iter().map(|(_, k)| k).collect()));
        }
        out
    }

    /// One user's keys at `now`: (key, candidate, last seen on the
    /// caller's clock) for every key still active; `None` for a user with
    /// no state.
    pub fn user(&self, now: Micros, user: &[u8]) -> Option<Vec<(Key, bool, Micros)>> {
        let t = now.saturating_add(self.offset).max(self.clock);
        let &slot = self.users.get(user)?;
        let u = self.slots[slot as usize].user.as_ref()?;
        let window = self.cfg.window;
        let mut keys: Vec<(Key, bool, Micros)> = u
            .entries
            .as_slice()
            .iter()
            .filter(|e| end_of(e, window, &self.bans) >= t)
            .map(|e| (e.key, e.candidate, e.last_seen.saturating_sub(self.offset)))
            .collect();
        keys.sort_unstable_by_key(|&(k, c, _)| (c, k));
        Some(keys)
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

    /// Bans recorded (in force, or ended and not yet dropped by `expire`).
    pub fn ban_count(&self) -> usize {
        self.bans.len()
    }

    /// Number of users with state, and number of tracked keys (bans included).
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.len(), self.entries + self.bans.len())
    }

    /// Whether `key` is banned at `now` (caller's clock).
    pub fn is_banned(&self, key: Key, now: Micros) -> bool {
        self.banned(key, now.saturating_add(self.offset).max(self.clock))
    }

    #[inline]
    fn banned(&self, key: Key, t: Micros) -> bool {
        self.bans.get(&key).is_some_and(|b| b.until > t)
    }

    /// Moves the internal clock to the caller's `now` and returns it.
    #[inline]
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
        for (&k, b) in self.bans.iter() {
            self.heap.push(Reverse((b.until, Timer::Ban(k))));
        }
    }
}

#[cfg(test)]
mod tests;
