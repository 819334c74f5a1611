//! Attribution and checks, without I/O: which connections each user's
//! lines named, which kernel lookups a decision needs, and what their
//! answers mean. [`super::kernel`] sends the lookups and feeds the
//! answers back; the daemon applies the resulting facts to the policy.
//!
//! - **Attribution** ([`Tracker::record`]): an accepted line with a client
//!   address and a real port names one connection: the TCP socket from
//!   that address and port to one of the inbound ports. The tracker keeps
//!   it under its user and key, once per peer (mux sub-streams repeat
//!   their connection's address and port), with the tag of the key's
//!   latest line (for an audit line).
//! - **Checks**: a set of lookups for one user's connections, with the
//!   lines whose verdict waits for them. A *newcomer check*
//!   ([`Tracker::check_newcomer`]) asks about the user's connections on
//!   other keys when the window rule alone would admit a new key; a
//!   *re-check* asks about all of a *suspect* user's connections (one with
//!   tracked connections on more keys than its limit: the case with no new
//!   line), every [`recheck_period`] while such a user exists and never
//!   otherwise. A check resolves when every lookup is
//!   answered or at its deadline ([`CHECK_DEADLINE`]); then the daemon
//!   applies its facts and decides its lines.
//! - **Answers**: a lookup finds an ESTABLISHED socket with its
//!   `tcp_info` ([`super::last_use`] turns it into a fact, or none), finds
//!   nothing on any local address (the connection is gone: forgotten), or
//!   does not come back in time (nothing is known: kept, no fact).
//!
//! Bounds: at most [`MAX_PER_KEY`] connections per key (the oldest one a
//! look found idle goes first, else the oldest), [`MAX_KEYS`] keys per
//! user, [`MAX_CONNS`] in all: when the table is full, the oldest tracked
//! connection not known to be in use (never looked at, or found idle) is
//! forgotten to make room, in the order they were recorded; those a look
//! found in use are kept. This costs no kernel work (an earlier version
//! looked the table up in slices, which at 10,000 new connections a second
//! was most of the daemon's CPU). [`MAX_DEFERRED`] lines wait at most. Invariant: a user has at
//! most one check in flight; every check resolves exactly once.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{last_use, Look};
use crate::clock::{Micros, SECOND};
use crate::hash::{Map, Set};
use crate::key::{canonical, Key};
use crate::nl::diag::{TcpInfo, TCP_ESTABLISHED};

/// Connections kept per key.
pub const MAX_PER_KEY: usize = 16;
/// Keys with connections kept per user.
pub const MAX_KEYS: usize = 8;
/// Connections kept in all.
pub const MAX_CONNS: usize = 8192;
/// Lines waiting for checks, in all; beyond it a line is decided at once
/// by the window rule (counted).
pub const MAX_DEFERRED: usize = 4096;
/// How long a verdict waits for the kernel. The kernel answers a lookup
/// inside `sendmsg`, so this only matters when it cannot answer at all.
pub const CHECK_DEADLINE: Micros = 50_000;
/// How many recorded connections one full-table insertion looks at, at
/// most, for one to forget.
const EVICT_SCAN: usize = 64;
/// Most lookups one round of re-checks sends; with more suspects than
/// that, the next round goes on from where this one stopped (so a
/// resumed connection is seen within a period as long as the suspects'
/// connections fit, and within a few periods beyond).
pub const RECHECK_LOOKUPS: usize = 4096;
/// Local addresses kept per family.
pub const MAX_LOCALS: usize = 16;

/// How often suspect users are re-checked: half the window, between
/// 100 ms and 1 s. A resumed connection is seen within one period.
pub fn recheck_period(window: Micros) -> Micros {
    (window / 2).clamp(SECOND / 10, SECOND)
}

/// One tracked connection.
#[derive(Clone, Debug)]
struct Conn {
    /// The client end (canonical: IPv4-mapped IPv6 as IPv4).
    peer: SocketAddr,
    /// The last look that found it.
    look: Option<Look>,
    /// That look found it not in use.
    idle: bool,
    /// When a line last named it.
    named: Micros,
}

#[derive(Clone, Debug)]
struct KeyConns {
    key: Key,
    conns: Vec<Conn>,
    /// The tag of the key's latest line.
    tag: Box<[u8]>,
    /// When a line of this key was first recorded (orders facts).
    first: Micros,
}

#[derive(Debug, Default)]
struct UserConns {
    keys: Vec<KeyConns>,
    limit: usize,
    /// The check in flight for this user.
    check: Option<u32>,
}

/// A tracked connection as `refract user` shows it: its peer, and whether
/// the last look found it in use (`None`: not looked at yet).
pub type ConnView = (SocketAddr, Option<bool>);

/// A lookup to send: is `peer` connected to `local:port` (a TCP socket,
/// or with `udp` a UDP conntrack flow)?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub check: u32,
    pub item: u32,
    pub local: IpAddr,
    pub port: u16,
    pub peer: SocketAddr,
    pub udp: bool,
}

/// What the kernel said to one [`Lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A socket with this identity, in `TcpInfo::state`.
    Found(TcpInfo),
    /// A UDP flow whose last packet (either direction: conntrack cannot
    /// tell) was this long ago.
    Flow { ago: Micros },
    /// No such socket (`ENOENT`), or only the listener matched.
    Gone,
    /// No answer, or an error: nothing is known.
    Unknown,
}

#[derive(Debug)]
struct Item {
    key: Key,
    peer: SocketAddr,
    outstanding: u32,
    found: Option<TcpInfo>,
    /// The youngest UDP flow's last packet, how long ago.
    flow: Option<Micros>,
    unknown: bool,
}

/// A line whose verdict waits for a check: its bytes, decided later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub line: Box<[u8]>,
    /// The newcomer that started its check (the window rule alone would
    /// admit it), not a line queued behind it.
    pub newcomer: bool,
}

#[derive(Debug)]
struct Check {
    user: Arc<[u8]>,
    items: Vec<Item>,
    outstanding: usize,
    deadline: Micros,
    lines: Vec<Deferred>,
}

/// A liveness fact: a connection of `key` was in use at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub key: Key,
    pub at: Micros,
    /// The tag of the key's latest line, for an audit line.
    pub tag: Box<[u8]>,
    /// The connection that was in use (for an exact kill).
    pub peer: SocketAddr,
    /// When a line of this key was first recorded.
    pub first: Micros,
}

/// A check that finished: apply `facts`, then decide `lines` in order.
#[derive(Debug)]
pub struct Resolved {
    pub user: Arc<[u8]>,
    pub facts: Vec<Fact>,
    pub lines: Vec<Deferred>,
    /// The deadline passed before every lookup was answered.
    pub timed_out: bool,
}

/// Counters (the `stats:` line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Lines recorded as naming a connection.
    pub attributed: u64,
    /// Counted lines that name no connection refract can look up (no
    /// local address of that family, the table full).
    pub unattributed: u64,
    pub checks: u64,
    pub rechecks: u64,
    /// Connections forgotten to make room in a full table.
    pub evicted: u64,
    pub lookups: u64,
    /// Connections found gone and forgotten.
    pub gone: u64,
    pub facts: u64,
    /// Lines whose verdict waited for a check.
    pub deferred: u64,
    /// Checks resolved at their deadline.
    pub timeouts: u64,
    /// Lines decided at once because [`MAX_DEFERRED`] were waiting.
    pub deferred_full: u64,
    /// Connections not tracked because a bound was reached.
    pub refused: u64,
}

/// The local ends connections can have (the namespace's addresses, newest
/// known use first), per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locals {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
}

impl Locals {
    /// From the interface addresses: loopback, unspecified and link-local
    /// ones are left out (a client reaches the node on none of them, and a
    /// link-local socket is bound to its interface).
    pub fn new(addrs: &[IpAddr]) -> Locals {
        let mut l = Locals::default();
        for &a in addrs {
            let a = canonical(a);
            let link_local = matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if a.is_loopback() || a.is_unspecified() || link_local {
                continue;
            }
            let list = l.family_mut(a);
            if !list.contains(&a) && list.len() < MAX_LOCALS {
                list.push(a);
            }
        }
        l
    }

    fn family_mut(&mut self, a: IpAddr) -> &mut Vec<IpAddr> {
        match a {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        }
    }

    /// The local addresses a connection from `peer` can be on.
    pub fn for_peer(&self, peer: SocketAddr) -> &[IpAddr] {
        match canonical(peer.ip()) {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        }
    }

    /// `local` was where a connection was found: try it first from now on.
    pub fn learn(&mut self, local: IpAddr) {
        let local = canonical(local);
        let list = self.family_mut(local);
        if list.first() == Some(&local) {
            return;
        }
        list.retain(|l| *l != local);
        list.insert(0, local);
        list.truncate(MAX_LOCALS);
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Tracker {
    window: Micros,
    ports: Vec<u16>,
    /// Which lookups a connection gets: TCP sockets, UDP flows.
    protos: (bool, bool),
    pub locals: Locals,
    users: Map<Arc<[u8]>, UserConns>,
    conns: usize,
    suspects: Set<Arc<[u8]>>,
    next_recheck: Option<Micros>,
    /// Recorded connections in the order they were first recorded (lazily
    /// cleaned: an entry whose connection is gone is skipped).
    order: VecDeque<(Arc<[u8]>, Key, SocketAddr)>,
    /// Where in the suspects' order the next re-check round starts.
    recheck_at: usize,
    checks: Map<u32, Check>,
    next_check: u32,
    deferred: usize,
    lookups: Vec<Lookup>,
    resolved: Vec<Resolved>,
    pub stats: TrackStats,
}

impl Tracker {
    /// A tracker for TCP connections to `ports` (`--dport`) on `locals`,
    /// judged with `window`.
    pub fn new(window: Micros, ports: &[u16], locals: Locals) -> Tracker {
        Tracker::with_protos(window, ports, locals, true, false)
    }

    /// [`Tracker::new`] for the protocols `--proto` enforces: a line's
    /// source is looked up as a TCP socket, a UDP flow, or both (the log
    /// does not say which carried it: `tcp:`/`udp:` prefixes name the
    /// proxied stream, not always the client's transport).
    pub fn with_protos(
        window: Micros,
        ports: &[u16],
        locals: Locals,
        tcp: bool,
        udp: bool,
    ) -> Tracker {
        let mut uniq: Vec<u16> = Vec::new();
        for &p in ports {
            if !uniq.contains(&p) {
                uniq.push(p);
            }
        }
        Tracker {
            window,
            ports: uniq,
            protos: (tcp, udp),
            locals,
            users: Map::default(),
            conns: 0,
            suspects: Set::default(),
            next_recheck: None,
            order: VecDeque::new(),
            recheck_at: 0,
            checks: Map::default(),
            next_check: 0,
            deferred: 0,
            lookups: Vec::new(),
            resolved: Vec::new(),
            stats: TrackStats::default(),
        }
    }

    /// A new window (reload).
    pub fn set_window(&mut self, window: Micros) {
        self.window = window;
    }

    /// Tracked connections, and users that have some.
    pub fn tracked(&self) -> (usize, usize) {
        (self.conns, self.users.len())
    }

    /// Users re-checked every period now.
    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }

    /// `user`'s tracked connections by key: each connection's peer and
    /// what the last look said (`None`: not looked at yet; `Some(true)`: in
    /// use). For `refract user`.
    pub fn user_conns(&self, user: &[u8]) -> Vec<(Key, Vec<ConnView>)> {
        let Some(u) = self.users.get(user) else {
            return Vec::new();
        };
        u.keys
            .iter()
            .map(|k| {
                let conns = k
                    .conns
                    .iter()
                    .map(|c| (c.peer, c.look.map(|_| !c.idle)))
                    .collect();
                (k.key, conns)
            })
            .collect()
    }

    /// A counted line of `user` from `peer` (key `key`, limit `limit`):
    /// remembers the connection it names (module docs).
    pub fn record(
        &mut self,
        now: Micros,
        user: &[u8],
        key: Key,
        peer: SocketAddr,
        tag: &[u8],
        limit: usize,
    ) {
        let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
        if peer.port() == 0 || self.locals.for_peer(peer).is_empty() || self.ports.is_empty() {
            self.stats.unattributed += 1;
            return;
        }
        if self.conns >= MAX_CONNS && !self.evict_one() {
            self.stats.refused += 1;
            self.stats.unattributed += 1;
            return;
        }
        if !self.users.contains_key(user) {
            // Most users have one key and one connection: exact capacity
            // (a Vec's first growth would make room for four).
            let u = UserConns {
                keys: Vec::with_capacity(1),
                ..UserConns::default()
            };
            self.users.insert(user.into(), u);
        }
        let u = self.users.get_mut(user).expect("inserted above");
        u.limit = limit.max(1);
        let k = match u.keys.iter().position(|k| k.key == key) {
            Some(i) => i,
            None if u.keys.len() >= MAX_KEYS => {
                self.stats.refused += 1;
                self.stats.unattributed += 1;
                return;
            }
            None => {
                u.keys.push(KeyConns {
                    key,
                    conns: Vec::with_capacity(1),
                    tag: Box::default(),
                    first: now,
                });
                u.keys.len() - 1
            }
        };
        let kc = &mut u.keys[k];
        if *kc.tag != *tag {
            kc.tag = tag.into();
        }
        if let Some(c) = kc.conns.iter_mut().find(|c| c.peer == peer) {
            c.named = now;
            self.stats.attributed += 1;
            return;
        }
        if kc.conns.len() >= MAX_PER_KEY {
            // The oldest connection a look found idle, else the oldest.
            let i = (0..kc.conns.len())
                .min_by_key(|&i| (!kc.conns[i].idle, kc.conns[i].named))
                .expect("full");
            kc.conns.swap_remove(i);
            self.conns -= 1;
        }
        kc.conns.push(Conn {
            peer,
            look: None,
            idle: false,
            named: now,
        });
        self.conns += 1;
        self.stats.attributed += 1;
        let name = self
            .users
            .get_key_value(user)
            .map(|(n, _)| n.clone())
            .expect("inserted above");
        self.order.push_back((name, key, peer));
        if self.order.len() > 2 * MAX_CONNS {
            self.compact();
        }
        self.suspect(now, user);
    }

    /// Forgets the oldest recorded connection not known to be in use (module
    /// docs); `false` when none was found within [`EVICT_SCAN`].
    fn evict_one(&mut self) -> bool {
        for _ in 0..EVICT_SCAN {
            let Some((user, key, peer)) = self.order.pop_front() else {
                return false;
            };
            let Some(u) = self.users.get_mut(&user) else {
                continue;
            };
            let Some(ki) = u.keys.iter().position(|k| k.key == key) else {
                continue;
            };
            let Some(ci) = u.keys[ki].conns.iter().position(|c| c.peer == peer) else {
                continue;
            };
            let c = &u.keys[ki].conns[ci];
            if c.look.is_some() && !c.idle {
                // In use at its last look: kept, looked at again later.
                self.order.push_back((user, key, peer));
                continue;
            }
            u.keys[ki].conns.swap_remove(ci);
            self.conns -= 1;
            self.stats.evicted += 1;
            if u.keys[ki].conns.is_empty() {
                u.keys.swap_remove(ki);
            }
            if u.keys.is_empty() && u.check.is_none() {
                self.users.remove(&user);
                self.suspects.remove(&user);
            }
            return true;
        }
        false
    }

    /// Drops entries of `order` whose connection is gone.
    fn compact(&mut self) {
        let users = &self.users;
        self.order.retain(|(user, key, peer)| {
            users.get(user).is_some_and(|u| {
                u.keys
                    .iter()
                    .any(|k| k.key == *key && k.conns.iter().any(|c| c.peer == *peer))
            })
        });
    }

    /// Re-evaluates whether `user` is a suspect (more keys with tracked
    /// connections than its limit) and schedules re-checks.
    fn suspect(&mut self, now: Micros, user: &[u8]) {
        let is = self
            .users
            .get(user)
            .is_some_and(|u| u.keys.iter().filter(|k| !k.conns.is_empty()).count() > u.limit);
        if is {
            if !self.suspects.contains(user) {
                self.suspects.insert(user.into());
            }
            if self.next_recheck.is_none() {
                self.next_recheck = Some(now.saturating_add(recheck_period(self.window)));
            }
        } else {
            self.suspects.remove(user);
            if self.suspects.is_empty() {
                self.next_recheck = None;
            }
        }
    }

    /// Whether a check for `user` is in flight (its later lines wait
    /// behind it, in order).
    pub fn pending(&self, user: &[u8]) -> bool {
        self.users.get(user).is_some_and(|u| u.check.is_some())
    }

    /// Appends `line` to the check in flight for `user`; `false` (decide
    /// it now) when there is none or [`MAX_DEFERRED`] lines wait.
    pub fn defer(&mut self, user: &[u8], line: &[u8]) -> bool {
        let Some(id) = self.users.get(user).and_then(|u| u.check) else {
            return false;
        };
        if self.deferred >= MAX_DEFERRED {
            self.stats.deferred_full += 1;
            return false;
        }
        let Some(c) = self.checks.get_mut(&id) else {
            return false;
        };
        c.lines.push(Deferred {
            line: line.into(),
            newcomer: false,
        });
        self.deferred += 1;
        self.stats.deferred += 1;
        true
    }

    /// The window rule alone would admit `key` as new for `user`: when the
    /// user has tracked connections on other keys, starts a check of them
    /// with `line` waiting for it and returns `true`; `false` (decide now)
    /// otherwise.
    pub fn check_newcomer(&mut self, now: Micros, user: &[u8], key: Key, line: &[u8]) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.check.is_some() {
            return self.defer(user, line);
        }
        if !u.keys.iter().any(|k| k.key != key && !k.conns.is_empty()) {
            return false;
        }
        if self.deferred >= MAX_DEFERRED {
            self.stats.deferred_full += 1;
            return false;
        }
        let user: Arc<[u8]> = self
            .users
            .get_key_value(user)
            .map(|(n, _)| n.clone())
            .expect("looked up above");
        self.start(now, &user, Some(key), Some(line));
        true
    }

    /// Starts a check of `user`'s connections (all of them, or those of
    /// keys other than `except`), with `line` waiting for it.
    fn start(&mut self, now: Micros, user: &Arc<[u8]>, except: Option<Key>, line: Option<&[u8]>) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        self.next_check = self.next_check.wrapping_add(1);
        let id = self.next_check;
        let mut items = Vec::new();
        for kc in u.keys.iter().filter(|k| Some(k.key) != except) {
            for c in &kc.conns {
                let locals = self.locals.for_peer(c.peer);
                let item = u32::try_from(items.len()).expect("bounded by MAX_KEYS * MAX_PER_KEY");
                let mut n = 0;
                for udp in [false, true] {
                    if !(if udp { self.protos.1 } else { self.protos.0 }) {
                        continue;
                    }
                    for &local in locals {
                        for &port in &self.ports {
                            n += 1;
                            self.lookups.push(Lookup {
                                check: id,
                                item,
                                local,
                                port,
                                peer: c.peer,
                                udp,
                            });
                        }
                    }
                }
                items.push(Item {
                    key: kc.key,
                    peer: c.peer,
                    outstanding: n,
                    found: None,
                    flow: None,
                    unknown: false,
                });
            }
        }
        let outstanding = items.iter().map(|i| i.outstanding as usize).sum();
        self.stats.lookups += outstanding as u64;
        self.stats.checks += 1;
        let mut lines = Vec::new();
        if let Some(l) = line {
            lines.push(Deferred {
                line: l.into(),
                newcomer: true,
            });
            self.deferred += 1;
            self.stats.deferred += 1;
        }
        u.check = Some(id);
        self.checks.insert(
            id,
            Check {
                user: user.clone(),
                items,
                outstanding,
                deadline: now.saturating_add(CHECK_DEADLINE),
                lines,
            },
        );
        if outstanding == 0 {
            self.resolve(id, now, false);
        }
    }

    /// Lookups to send (the kernel side drains this after every call).
    pub fn take_lookups(&mut self) -> Vec<Lookup> {
        std::mem::take(&mut self.lookups)
    }

    /// Whether lookups wait to be sent.
    pub fn has_lookups(&self) -> bool {
        !self.lookups.is_empty()
    }

    /// The kernel answered `lookup` at `now`.
    pub fn answer(&mut self, now: Micros, lookup: &Lookup, answer: Answer) {
        let Some(c) = self.checks.get_mut(&lookup.check) else {
            return; // resolved at its deadline already
        };
        let Some(item) = c.items.get_mut(lookup.item as usize) else {
            return;
        };
        if item.outstanding == 0 {
            return;
        }
        item.outstanding -= 1;
        c.outstanding -= 1;
        match answer {
            Answer::Found(info) if info.state == TCP_ESTABLISHED => {
                item.found = Some(info);
                self.locals.learn(lookup.local);
            }
            Answer::Flow { ago } => {
                item.flow = Some(item.flow.map_or(ago, |a| a.min(ago)));
                self.locals.learn(lookup.local);
            }
            Answer::Found(_) | Answer::Gone => {}
            Answer::Unknown => item.unknown = true,
        }
        if c.outstanding == 0 {
            self.resolve(lookup.check, now, false);
        }
    }

    /// The earliest time [`Tracker::tick`] has something to do.
    pub fn deadline(&self) -> Option<Micros> {
        let checks = self.checks.values().map(|c| c.deadline).min();
        [checks, self.next_recheck].into_iter().flatten().min()
    }

    /// Resolves checks past their deadline and starts due re-checks.
    pub fn tick(&mut self, now: Micros) {
        let late: Vec<u32> = self
            .checks
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.resolve(id, now, true);
        }
        if self.next_recheck.is_some_and(|d| d <= now) {
            if self.recheck_at >= self.suspects.len() {
                self.recheck_at = 0;
            }
            let mut budget = RECHECK_LOOKUPS;
            let mut due: Vec<Arc<[u8]>> = Vec::new();
            let mut taken = 0;
            for name in self.suspects.iter().skip(self.recheck_at) {
                taken += 1;
                let Some(u) = self.users.get(name) else {
                    continue;
                };
                if u.check.is_some() {
                    continue;
                }
                let cost: usize = u
                    .keys
                    .iter()
                    .flat_map(|k| &k.conns)
                    .map(|c| self.locals.for_peer(c.peer).len() * self.ports.len())
                    .sum();
                if cost > budget && !due.is_empty() {
                    taken -= 1;
                    break;
                }
                budget = budget.saturating_sub(cost);
                due.push(name.clone());
            }
            self.recheck_at += taken;
            for user in due {
                self.stats.rechecks += 1;
                self.start(now, &user, None, None);
            }
            self.next_recheck = (!self.suspects.is_empty())
                .then(|| now.saturating_add(recheck_period(self.window)));
        }
    }

    /// `key` was banned for `user`: its connections are being killed and
    /// it counts for nobody, so they are forgotten.
    pub fn banned(&mut self, now: Micros, user: &[u8], key: Key) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if let Some(i) = u.keys.iter().position(|k| k.key == key) {
            let kc = u.keys.swap_remove(i);
            self.conns -= kc.conns.len();
        }
        if u.keys.is_empty() && u.check.is_none() {
            self.users.remove(user);
        }
        self.suspect(now, user);
    }

    /// Checks finished since the last call, in the order they finished.
    pub fn take_resolved(&mut self) -> Vec<Resolved> {
        std::mem::take(&mut self.resolved)
    }

    fn resolve(&mut self, id: u32, now: Micros, timed_out: bool) {
        let Some(c) = self.checks.remove(&id) else {
            return;
        };
        self.deferred -= c.lines.len();
        if timed_out {
            self.stats.timeouts += 1;
        }
        let mut facts: Vec<Fact> = Vec::new();
        if let Some(u) = self.users.get_mut(&c.user) {
            u.check = None;
            for item in &c.items {
                let Some(kc) = u.keys.iter_mut().find(|k| k.key == item.key) else {
                    continue;
                };
                let Some(ci) = kc.conns.iter().position(|x| x.peer == item.peer) else {
                    continue;
                };
                // Found as a TCP socket, a UDP flow, or both: the later use.
                let tcp = item.found.map(|info| {
                    let conn = &mut kc.conns[ci];
                    let (at, look) = last_use(conn.look, now, &info, self.window);
                    conn.look = Some(look);
                    at
                });
                // A UDP flow: its last packet, when within the window.
                let udp = item
                    .flow
                    .map(|ago| (ago <= self.window).then(|| now.saturating_sub(ago)));
                let seen = match (tcp, udp) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                match seen {
                    Some(at) => {
                        kc.conns[ci].idle = at.is_none();
                        if let Some(at) = at {
                            match facts.iter_mut().find(|f| f.key == kc.key) {
                                Some(f) if f.at >= at => {}
                                Some(f) => {
                                    f.at = at;
                                    f.peer = item.peer;
                                }
                                None => facts.push(Fact {
                                    key: kc.key,
                                    at,
                                    tag: kc.tag.clone(),
                                    peer: item.peer,
                                    first: kc.first,
                                }),
                            }
                        }
                    }
                    // Every local address answered "no such socket".
                    None if !item.unknown && item.outstanding == 0 => {
                        kc.conns.swap_remove(ci);
                        self.conns -= 1;
                        self.stats.gone += 1;
                    }
                    None => {}
                }
            }
            u.keys.retain(|k| !k.conns.is_empty());
            if u.keys.is_empty() {
                self.users.remove(&c.user);
            }
        }
        self.suspect(now, &c.user);
        self.stats.facts += facts.len() as u64;
        self.resolved.push(Resolved {
            user: c.user,
            facts,
            lines: c.lines,
            timed_out,
        });
    }
}

#[cfg(test)]
mod tests;
