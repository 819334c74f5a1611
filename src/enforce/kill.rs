//! Ending banned keys' open connections: TCP sockets by sock_diag
//! `SOCK_DESTROY`, UDP flows by conntrack DELETE, batched per loop turn.
//!
//! The set entry already stops a banned key's new packets (the ADD runs
//! inside `sendmsg` before this starts), so nothing can reconnect while the
//! kill runs. Per ban ([`Killer::ban`]):
//!
//! - the connection the log line named (client address and port) is
//!   looked up exactly (a `SOCK_DIAG_BY_FAMILY` get), on every local
//!   address the proxy's connections were seen on (learned from dumps): one
//!   hash probe in the kernel (`inet_diag_find_one_icsk()`), microseconds;
//!   what it finds, if it is that connection and not the listener the
//!   lookup falls back to when the connection is gone, is destroyed by its
//!   identity and cookie in the same call; a guess that names no socket
//!   answers `ENOENT`, which is no error;
//! - the key joins the turn's batch.
//!
//! When the turn ends ([`Killer::start_batch`], which the enforcer runs
//! from `tick` at a deadline of `now`, or from `ready`/`flush`), the whole
//! batch is searched at once:
//!
//! - TCP: one `SOCK_DIAG_BY_FAMILY` dump per address family a key can live
//!   in ([`diag::families`]: an IPv4 key also in `AF_INET6`, for
//!   dual-stack listeners), filtered in the kernel: local port in
//!   `--dport`, and, for at most [`ADDR_FILTER_MAX`] keys, remote address
//!   in any of them (one OR chain, [`diag::filter`]). A walk costs the
//!   kernel one bytecode run per socket, and the chain fails one `D_COND`
//!   per key, so for more keys the program filters ports only and refract
//!   matches addresses in a hash set (one lookup per socket). Every socket
//!   found is re-checked in process, then destroyed.
//! - UDP: one ctnetlink dump per family (IPv4 keys in `AF_INET`, IPv6 in
//!   `AF_INET6`: conntrack has no mapped addresses), filtered in the kernel
//!   by protocol (and port and source when there is only one), matched in
//!   process, then one DELETE per flow. Not one `AF_UNSPEC` dump for both:
//!   ctnetlink refuses `CTA_FILTER` without a family (`EINVAL`, seen on
//!   Linux 6.18), and unfiltered it would send every flow of every
//!   protocol.
//!
//! The old way, one dump per ban per family and per port, walked the whole
//! socket hash once per ban: a flood of bans cost the kernel bans × table
//! size.
//!
//! Each socket's requests go through its [`Channel`]: one dump at a time,
//! the destroys of a dump sent when it ends (destroying while the kernel
//! walks the hash chains could make its resume position skip a socket),
//! acked kills batched into datagrams. `ENOBUFS` on a kill socket means
//! acks were dropped: unanswered kills are re-sent (kills are idempotent:
//! a socket already gone answers `ENOENT`) and the running dump completes
//! as lossy and is run again (at most [`MAX_RESTARTS`] times). A kernel
//! that refuses `CTA_FILTER` (`EINVAL`/`EOPNOTSUPP` before 5.9) gets plain
//! dumps from then on.
//!
//! Invariant: every unit of work (a dump a key is in, a kill) is counted in
//! its key's tally when queued and closed exactly once when answered,
//! expired or abandoned; when a key's last unit closes, a [`KillReport`]
//! says how many connections died.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

use crate::clock::Micros;
use crate::enforce::{EnforceStats, KillReport};
use crate::key::{canonical, Key};
use crate::nl::buf::NlBuf;
use crate::nl::channel::{Channel, Fault, Handler};
use crate::nl::conntrack::{self, Flow};
use crate::nl::diag::{self, Remote, SockId};
use crate::nl::msg::Msg;
use crate::nl::pipeline::{Completion, Kind, Outcome, Pipeline};
use crate::nl::socket::NlSocket;

/// How often one dump is run again after an overrun.
pub const MAX_RESTARTS: u8 = 3;

/// Most keys one TCP dump filters by address in the kernel; a larger batch
/// is filtered by port only and matched in process (module docs). Measured
/// with `scripts/ban-latency.sh 240 10000 16384 100000` (10,000 idle
/// sockets on the proxy port, the worst case for a ports-only dump; 2-core
/// VM): the 100,000-ban flood ran at 33,500 bans/s this way and at 20,600
/// with OR chains of up to 1,500 keys per dump (same machine, back to
/// back). Small turns, a single ban above all, keep the kernel-side
/// address filter: their dump returns only the key's sockets.
pub const ADDR_FILTER_MAX: usize = 32;

// The address chain of ADDR_FILTER_MAX keys (an IPv4 key in an AF_INET6
// dump is the longest hostcond) with the most ports always fits one
// program, so a batch is never split for size.
const _: () =
    assert!(ADDR_FILTER_MAX * (4 + diag::HOSTCOND_LEN + 16 + 4) + 1024 * 12 <= diag::MAX_BYTECODE);

/// Finished kill reports kept for [`Killer::take_reports`]; older ones are
/// dropped when the daemon does not collect them. The daemon collects
/// every turn, but one dump's end finishes every key of its batch at once
/// (thousands in a flood), so this is far above a turn's keys; a report
/// is 28 bytes.
const MAX_REPORTS: usize = 1 << 16;

/// Receive buffer of the kill sockets (dumps are flow-controlled by the
/// kernel; this is for the destroy/delete acks).
pub const KILL_RCVBUF: usize = 1 << 19;

/// Local addresses remembered for exact kills.
const MAX_LOCALS: usize = 8;

const TCP: u8 = libc::IPPROTO_TCP as u8;
const UDP: u8 = libc::IPPROTO_UDP as u8;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

fn log(msg: fmt::Arguments<'_>) {
    crate::logger::warning(msg);
}

/// The keys of one dump, with a lookup from a peer address to its key.
#[derive(Clone, Debug, Default)]
struct KeySet {
    keys: Vec<Key>,
    index: HashSet<Key>,
    /// The distinct prefix lengths of the IPv6 keys (usually one).
    v6_prefixes: Vec<u8>,
}

impl KeySet {
    fn new(keys: Vec<Key>) -> KeySet {
        let mut v6_prefixes = Vec::new();
        for k in &keys {
            if let Key::V6(_, p) = *k {
                if !v6_prefixes.contains(&p) {
                    v6_prefixes.push(p);
                }
            }
        }
        KeySet {
            index: keys.iter().copied().collect(),
            keys,
            v6_prefixes,
        }
    }

    /// The key `ip` falls under (IPv4-mapped IPv6 counts as IPv4).
    fn find(&self, ip: IpAddr) -> Option<Key> {
        match canonical(ip) {
            IpAddr::V4(a) => Some(Key::V4(a)).filter(|k| self.index.contains(k)),
            v6 => self
                .v6_prefixes
                .iter()
                .map(|&p| Key::new(v6, p))
                .find(|k| self.index.contains(k)),
        }
    }
}

impl fmt::Display for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.keys.as_slice() {
            [k] => write!(f, "{k}"),
            keys => write!(f, "{} keys", keys.len()),
        }
    }
}

/// What one dump looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// TCP sockets in one address family.
    Tcp { family: u8 },
    /// UDP conntrack flows of one family. `kernel_filter` off after a
    /// kernel refused `CTA_FILTER`.
    Udp { family: u8, kernel_filter: bool },
}

/// A connection to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Tcp(SockId),
    Udp(Flow),
}

impl fmt::Display for Victim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Victim::Tcp(id) => write!(f, "tcp {} -> {}", id.remote(), id.local()),
            Victim::Udp(fl) => write!(
                f,
                "udp {}:{} -> {}:{}",
                fl.orig.src, fl.orig.sport, fl.orig.dst, fl.orig.dport
            ),
        }
    }
}

#[derive(Debug)]
struct Dump {
    scan: Scan,
    keys: KeySet,
    restarts: u8,
    found: Vec<(Key, Victim)>,
}

/// One request on a kill socket.
#[derive(Debug)]
enum Req {
    Dump(Dump),
    Kill {
        key: Key,
        victim: Victim,
    },
    /// The logged connection, looked up exactly before it is destroyed: a
    /// lookup that names no established socket falls back to the listener
    /// (`inet_diag_find_one_icsk()` → `inet_lookup()` also searches the
    /// listening hash), and a `SOCK_DESTROY` of that would close the
    /// proxy's listening socket. So the kill goes only to what the get
    /// found, not a listener, with the peer asked for, by its cookie.
    Probe {
        key: Key,
        id: SockId,
        found: Option<SockId>,
    },
}

/// Per-key bookkeeping: how many units are still unanswered, and what the
/// answered ones achieved.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    outstanding: u32,
    tcp: u32,
    udp: u32,
}

#[derive(Debug, Default)]
struct Tallies {
    open: HashMap<Key, Tally>,
    done: VecDeque<KillReport>,
}

impl Tallies {
    fn open(&mut self, key: Key, n: u32) {
        self.open.entry(key).or_default().outstanding += n;
    }

    /// One unit of work for `key` is answered, having killed `tcp`/`udp`.
    fn close(&mut self, key: Key, tcp: u32, udp: u32) {
        let Some(t) = self.open.get_mut(&key) else {
            return;
        };
        t.tcp += tcp;
        t.udp += udp;
        t.outstanding = t.outstanding.saturating_sub(1);
        if t.outstanding == 0 {
            let t = self.open.remove(&key).expect("present above");
            if self.done.len() >= MAX_REPORTS {
                self.done.pop_front();
            }
            self.done.push_back(KillReport {
                key,
                tcp: t.tcp,
                udp: t.udp,
            });
        }
    }
}

/// What both kill sockets share.
#[derive(Debug, Default)]
struct State {
    tallies: Tallies,
    /// Local addresses the proxy's connections were seen on (learned from
    /// dumps, newest first, at most [`MAX_LOCALS`]): with the client's
    /// address and port from the log they name a connection exactly.
    locals: Vec<IpAddr>,
    /// The kernel refused `CTA_FILTER` once: plain dumps from now on.
    no_ct_filter: bool,
    /// Keys banned this turn whose dumps have not started, once per ban;
    /// each holds one tally unit until its dumps are queued, so an exact
    /// kill answered first does not finish the key's report early.
    batch: Vec<Key>,
}

impl State {
    /// Remembers `ip` (IPv4-mapped IPv6 as IPv4), newest first.
    fn learn_local(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        if self.locals.first() == Some(&ip) {
            return;
        }
        self.locals.retain(|l| *l != ip);
        self.locals.insert(0, ip);
        self.locals.truncate(MAX_LOCALS);
    }
}

/// Queues `req` (one tally unit for `key` already open); refused when the
/// outbox is full, which closes the unit as an error.
fn queue(pipe: &mut Pipeline<Req>, what: &str, req: Req, st: &mut State, stats: &mut EnforceStats) {
    let kind = match req {
        Req::Dump(_) => Kind::Dump,
        Req::Kill { .. } => Kind::Ack,
        Req::Probe { .. } => Kind::Get,
    };
    if let Err(req) = pipe.push(req, kind) {
        stats.errors += 1;
        let limit = pipe.limits().max_queued;
        match req {
            Req::Dump(d) => {
                log(format_args!(
                    "{what}: {}: connections not ended, {limit} requests already queued",
                    d.keys
                ));
                for &k in &d.keys.keys {
                    st.tallies.close(k, 0, 0);
                }
            }
            Req::Kill { key, victim } => {
                log(format_args!(
                    "{what}: kill {victim}: dropped, {limit} requests already queued"
                ));
                st.tallies.close(key, 0, 0);
            }
            Req::Probe { key, .. } => st.tallies.close(key, 0, 0),
        }
    }
}

/// The [`Handler`] of one kill socket.
struct H<'a> {
    /// `sock_diag` or `conntrack`, for messages.
    what: &'static str,
    ports: &'a [u16],
    st: &'a mut State,
    stats: &'a mut EnforceStats,
}

impl H<'_> {
    fn dump_done(&mut self, mut d: Dump, outcome: Outcome, pipe: &mut Pipeline<Req>) {
        match (outcome, d.scan) {
            (Outcome::Done | Outcome::Lossy, _) => {
                for (key, victim) in d.found.drain(..) {
                    self.st.tallies.open(key, 1);
                    queue(
                        pipe,
                        self.what,
                        Req::Kill { key, victim },
                        self.st,
                        self.stats,
                    );
                }
                if outcome == Outcome::Lossy && d.restarts < MAX_RESTARTS {
                    // The tallies stay open: the repeat is the same unit.
                    d.restarts += 1;
                    pipe.push_front(Req::Dump(d), Kind::Dump);
                } else {
                    for &k in &d.keys.keys {
                        self.st.tallies.close(k, 0, 0);
                    }
                }
            }
            (
                Outcome::Errno(libc::EINVAL | libc::EOPNOTSUPP),
                Scan::Udp {
                    family,
                    kernel_filter: true,
                },
            ) => {
                log(format_args!(
                    "conntrack: the kernel refuses CTA_FILTER; filtering flows in refract"
                ));
                self.st.no_ct_filter = true;
                d.scan = Scan::Udp {
                    family,
                    kernel_filter: false,
                };
                pipe.push_front(Req::Dump(d), Kind::Dump);
            }
            (outcome, _) => {
                self.stats.errors += 1;
                log(format_args!(
                    "{}: dump for {}: {}",
                    self.what,
                    d.keys,
                    describe(outcome)
                ));
                for &k in &d.keys.keys {
                    self.st.tallies.close(k, 0, 0);
                }
            }
        }
    }

    fn kill_done(&mut self, key: Key, victim: Victim, outcome: Outcome) {
        match (outcome, victim) {
            (Outcome::Done | Outcome::Lossy, Victim::Tcp(_)) => {
                self.stats.tcp_killed += 1;
                self.st.tallies.close(key, 1, 0);
            }
            (Outcome::Done | Outcome::Lossy, Victim::Udp(_)) => {
                self.stats.udp_killed += 1;
                self.st.tallies.close(key, 0, 1);
            }
            // Closed or expired between dump and kill: nothing to do.
            (Outcome::Errno(libc::ENOENT), _) => self.st.tallies.close(key, 0, 0),
            (outcome, v) => {
                self.stats.errors += 1;
                log(format_args!(
                    "{}: kill {v}: {}",
                    self.what,
                    describe(outcome)
                ));
                self.st.tallies.close(key, 0, 0);
            }
        }
    }
}

fn describe(outcome: Outcome) -> String {
    match outcome {
        Outcome::Errno(e) | Outcome::Unsent(e) => std::io::Error::from_raw_os_error(e).to_string(),
        Outcome::Expired => "no answer from the kernel".to_string(),
        Outcome::Done | Outcome::Lossy => "done".to_string(),
    }
}

impl Handler<Req> for H<'_> {
    fn emit(&mut self, req: &Req, buf: &mut NlBuf, seq: u32) {
        match req {
            Req::Dump(d) => match d.scan {
                Scan::Tcp { family } => {
                    let remote = if d.keys.keys.len() > ADDR_FILTER_MAX {
                        Remote::Any
                    } else {
                        Remote::In(&d.keys.keys)
                    };
                    let r = diag::DumpRequest {
                        family,
                        protocol: TCP,
                        ports: self.ports,
                        remote,
                        ext: 0,
                    }
                    .emit(buf, seq);
                    // The bounds above make every program fit (the const
                    // assertion); the config layer caps the ports.
                    debug_assert!(r.is_ok(), "{r:?}");
                }
                Scan::Udp {
                    family,
                    kernel_filter,
                } => conntrack::DumpRequest {
                    family,
                    protocol: UDP,
                    port: match self.ports {
                        [p] => Some(*p),
                        _ => None,
                    },
                    key: match d.keys.keys.as_slice() {
                        [k] => Some(*k),
                        _ => None,
                    },
                    kernel_filter,
                }
                .emit(buf, seq),
            },
            Req::Probe { id, .. } => diag::GetRequest {
                protocol: TCP,
                id: *id,
                ext: 0,
            }
            .emit(buf, seq),
            Req::Kill {
                victim: Victim::Tcp(id),
                ..
            } => diag::DestroyRequest {
                protocol: TCP,
                id: *id,
            }
            .emit(buf, seq),
            Req::Kill {
                victim: Victim::Udp(flow),
                ..
            } => conntrack::DeleteRequest { flow: *flow }.emit(buf, seq),
        }
    }

    fn data(&mut self, req: &mut Req, msg: &Msg<'_>) {
        if let Req::Probe { id, found, .. } = req {
            if let Some(got) = diag::parse_socket(msg) {
                let same_peer = got.dport == id.dport
                    && canonical(got.remote().ip()) == canonical(id.remote().ip());
                if got.state != diag::TCP_LISTEN && same_peer && self.ports.contains(&got.sport) {
                    *found = Some(got);
                }
            }
            return;
        }
        let Req::Dump(d) = req else { return };
        match d.scan {
            Scan::Tcp { .. } => {
                // Re-checked in process: a filter mistake could only ever
                // spare a socket, never kill a wrong one.
                let Some(id) = diag::parse_socket(msg) else {
                    return;
                };
                if !self.ports.contains(&id.sport) {
                    return;
                }
                if let Some(key) = d.keys.find(id.remote().ip()) {
                    d.found.push((key, Victim::Tcp(id)));
                    self.st.learn_local(id.local().ip());
                }
            }
            Scan::Udp { family, .. } => {
                let Some(f) = conntrack::parse_flow(msg) else {
                    return;
                };
                if f.family != family || f.orig.proto != UDP || !self.ports.contains(&f.orig.dport)
                {
                    return;
                }
                if let Some(key) = d.keys.find(f.orig.src) {
                    d.found.push((key, Victim::Udp(f)));
                }
            }
        }
    }

    fn complete(&mut self, done: Completion<Req>, pipe: &mut Pipeline<Req>) {
        match done.tag {
            Req::Dump(d) => self.dump_done(d, done.outcome, pipe),
            Req::Kill { key, victim } => self.kill_done(key, victim, done.outcome),
            Req::Probe { key, found, .. } => {
                // Found: destroyed by its own identity and cookie. Not found
                // (ENOENT, or only the listener answered): nothing to end.
                if let (Outcome::Done | Outcome::Lossy, Some(id)) = (done.outcome, found) {
                    self.st.tallies.open(key, 1);
                    let req = Req::Kill {
                        key,
                        victim: Victim::Tcp(id),
                    };
                    queue(pipe, self.what, req, self.st, self.stats);
                }
                self.st.tallies.close(key, 0, 0);
            }
        }
    }

    fn fault(&mut self, fault: Fault) {
        self.stats.errors += 1;
        match fault {
            Fault::Overrun(n) => log(format_args!(
                "{}: receive queue overflowed (ENOBUFS); re-sending {n} requests, \
                 repeating the running dump",
                self.what
            )),
            Fault::Malformed => log(format_args!("{}: malformed reply", self.what)),
            Fault::Recv(e) => log(format_args!("{}: receive: {e}", self.what)),
        }
    }
}

/// The connection killer: a sock_diag channel (with `--proto tcp`) and a
/// conntrack channel (with `--proto udp`). See the module docs.
#[derive(Debug)]
pub struct Killer {
    /// `--dport`, each port once.
    ports: Vec<u16>,
    tcp: Option<Channel<Req>>,
    udp: Option<Channel<Req>>,
    st: State,
}

/// Borrows one channel of `$k` with its handler.
macro_rules! with_channel {
    ($k:expr, $field:ident, $what:expr, $stats:expr, |$c:ident, $h:ident| $body:expr) => {
        if let Some($c) = $k.$field.as_mut() {
            let mut $h = H {
                what: $what,
                ports: &$k.ports,
                st: &mut $k.st,
                stats: $stats,
            };
            $body
        }
    };
}

impl Killer {
    /// A killer over the sockets startup opened (`None`: that protocol is
    /// not enforced).
    pub fn new(tcp: Option<NlSocket>, udp: Option<NlSocket>, ports: &[u16]) -> Killer {
        let mut uniq = Vec::with_capacity(ports.len());
        for &p in ports {
            if !uniq.contains(&p) {
                uniq.push(p);
            }
        }
        let limits = crate::enforce::limits();
        Killer {
            ports: uniq,
            tcp: tcp.map(|s| Channel::new(s, limits)),
            udp: udp.map(|s| Channel::new(s, limits)),
            st: State::default(),
        }
    }

    /// `key` is banned (its ADD already ran): ends the logged connection
    /// `conn` by exact lookup now, and searches for the key's others when
    /// the turn ends.
    pub fn ban(
        &mut self,
        key: Key,
        conn: Option<SocketAddr>,
        now: Micros,
        stats: &mut EnforceStats,
    ) {
        if self.tcp.is_none() && self.udp.is_none() {
            return;
        }
        let conn = conn.filter(|c| c.port() != 0 && key.contains(c.ip()));
        if let (Some(c), Some(chan)) = (conn, self.tcp.as_mut()) {
            let victims: Vec<SockId> = self
                .ports
                .iter()
                .flat_map(|&port| {
                    self.st
                        .locals
                        .iter()
                        .filter_map(move |&local| SockId::exact(local, port, c))
                })
                .collect();
            for id in victims {
                self.st.tallies.open(key, 1);
                let req = Req::Probe {
                    key,
                    id,
                    found: None,
                };
                queue(&mut chan.pipe, "sock_diag", req, &mut self.st, stats);
            }
        }
        self.st.tallies.open(key, 1);
        self.st.batch.push(key);
        // The probes' answers are queued inside that sendmsg: read them now,
        // so the logged connection's destroy goes out in this call too.
        with_channel!(self, tcp, "sock_diag", stats, |c, h| {
            c.pump(now, &mut h);
            c.drain(now, &mut h)
        });
    }

    /// Whether keys wait for their turn's dumps.
    pub fn batch_due(&self) -> bool {
        !self.st.batch.is_empty()
    }

    /// Starts the dumps of every key banned since the last call (module
    /// docs).
    pub fn start_batch(&mut self, now: Micros, stats: &mut EnforceStats) {
        if self.st.batch.is_empty() {
            return;
        }
        let banned = std::mem::take(&mut self.st.batch);
        let mut keys = banned.clone();
        keys.sort_unstable();
        keys.dedup();
        let mut dumps: Vec<(bool, Dump)> = Vec::new();
        if self.tcp.is_some() {
            for family in [AF_INET, AF_INET6] {
                let in_family: Vec<Key> = keys
                    .iter()
                    .copied()
                    .filter(|&k| diag::families(k).contains(&family))
                    .collect();
                if !in_family.is_empty() {
                    dumps.push((true, dump(Scan::Tcp { family }, in_family)));
                }
            }
        }
        if self.udp.is_some() {
            let kernel_filter = !self.st.no_ct_filter;
            for family in [AF_INET, AF_INET6] {
                let in_family: Vec<Key> = keys
                    .iter()
                    .copied()
                    .filter(|&k| conntrack::family(k) == family)
                    .collect();
                if !in_family.is_empty() && !self.ports.is_empty() {
                    let scan = Scan::Udp {
                        family,
                        kernel_filter,
                    };
                    dumps.push((false, dump(scan, in_family)));
                }
            }
        }
        for (tcp, d) in dumps {
            for &k in &d.keys.keys {
                self.st.tallies.open(k, 1);
            }
            let (chan, what) = if tcp {
                (self.tcp.as_mut(), "sock_diag")
            } else {
                (self.udp.as_mut(), "conntrack")
            };
            let chan = chan.expect("dumps only for open channels");
            queue(&mut chan.pipe, what, Req::Dump(d), &mut self.st, stats);
        }
        // The dumps hold the keys' reports open now.
        for k in banned {
            self.st.tallies.close(k, 0, 0);
        }
        with_channel!(self, tcp, "sock_diag", stats, |c, h| c.pump(now, &mut h));
        with_channel!(self, udp, "conntrack", stats, |c, h| c.pump(now, &mut h));
    }

    /// The sock_diag socket is readable.
    pub fn drain_tcp(&mut self, now: Micros, stats: &mut EnforceStats) {
        with_channel!(self, tcp, "sock_diag", stats, |c, h| c.drain(now, &mut h));
    }

    /// The conntrack socket is readable.
    pub fn drain_udp(&mut self, now: Micros, stats: &mut EnforceStats) {
        with_channel!(self, udp, "conntrack", stats, |c, h| c.drain(now, &mut h));
    }

    /// Gives up on requests past their deadline.
    pub fn expire(&mut self, now: Micros, stats: &mut EnforceStats) {
        with_channel!(self, tcp, "sock_diag", stats, |c, h| c.expire(now, &mut h));
        with_channel!(self, udp, "conntrack", stats, |c, h| c.expire(now, &mut h));
    }

    pub fn deadline(&self) -> Option<Micros> {
        [self.tcp.as_ref(), self.udp.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|c| c.pipe.deadline())
            .min()
    }

    /// Whether any kill work is queued, in flight or waiting for its turn.
    pub fn busy(&self) -> bool {
        self.batch_due()
            || [self.tcp.as_ref(), self.udp.as_ref()]
                .into_iter()
                .flatten()
                .any(|c| !c.pipe.is_idle())
    }

    /// Gives up on everything (shutdown budget spent); returns how many
    /// requests were abandoned.
    pub fn abandon(&mut self) -> usize {
        let mut n = 0;
        for k in std::mem::take(&mut self.st.batch) {
            self.st.tallies.close(k, 0, 0);
        }
        for chan in [self.tcp.as_mut(), self.udp.as_mut()].into_iter().flatten() {
            for req in chan.pipe.abandon() {
                n += 1;
                match req {
                    Req::Dump(d) => {
                        for &k in &d.keys.keys {
                            self.st.tallies.close(k, 0, 0);
                        }
                    }
                    Req::Kill { key, .. } | Req::Probe { key, .. } => {
                        self.st.tallies.close(key, 0, 0)
                    }
                }
            }
        }
        n
    }

    /// The kill sockets' round trips (dumps: the whole walk), merged into
    /// `into`.
    pub fn rtt(&self, into: &mut crate::metrics::Histogram) {
        for c in [self.tcp.as_ref(), self.udp.as_ref()].into_iter().flatten() {
            into.merge(c.pipe.rtt());
        }
    }

    pub fn take_reports(&mut self) -> Vec<KillReport> {
        self.st.tallies.done.drain(..).collect()
    }

    /// The sock_diag and conntrack sockets, for registration and the
    /// shutdown poll.
    pub fn sockets(&mut self) -> (Option<&mut NlSocket>, Option<&mut NlSocket>) {
        (
            self.tcp.as_mut().map(|c| &mut c.sock),
            self.udp.as_mut().map(|c| &mut c.sock),
        )
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        [self.tcp.as_ref(), self.udp.as_ref()]
            .into_iter()
            .flatten()
            .map(|c| c.sock.as_fd())
            .collect()
    }
}

fn dump(scan: Scan, keys: Vec<Key>) -> Dump {
    Dump {
        scan,
        keys: KeySet::new(keys),
        restarts: 0,
        found: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(s: &str) -> Key {
        Key::V4(s.parse().unwrap())
    }

    #[test]
    fn key_set_finds_v4_mapped_and_v6_prefixes() {
        let set = KeySet::new(vec![
            v4("192.0.2.7"),
            Key::new("2001:db8:5:6::".parse().unwrap(), 64),
            Key::new("2001:db8::1".parse().unwrap(), 128),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(set.find(ip("192.0.2.7")), Some(v4("192.0.2.7")));
        assert_eq!(set.find(ip("::ffff:192.0.2.7")), Some(v4("192.0.2.7")));
        assert_eq!(set.find(ip("192.0.2.8")), None);
        assert_eq!(set.find(ip("2001:db8:5:6::99")), Some(set.keys[1]));
        assert_eq!(set.find(ip("2001:db8::1")), Some(set.keys[2]));
        assert_eq!(set.find(ip("2001:db8::2")), None);
        assert_eq!(set.to_string(), "3 keys");
    }

    #[test]
    fn tallies_report_once_when_every_unit_is_answered() {
        let k = v4("192.0.2.7");
        let other = v4("192.0.2.8");
        let mut t = Tallies::default();
        t.open(k, 2); // two dumps
        t.open(other, 1);
        t.open(k, 1); // a kill found by the first dump
        t.close(k, 0, 0); // first dump done
        t.close(k, 1, 0); // the kill acked
        assert!(t.done.is_empty());
        t.close(other, 0, 0);
        t.close(k, 0, 0); // second dump done
        let done: Vec<_> = t.done.drain(..).collect();
        assert_eq!(
            done,
            vec![
                KillReport {
                    key: other,
                    tcp: 0,
                    udp: 0
                },
                KillReport {
                    key: k,
                    tcp: 1,
                    udp: 0
                }
            ]
        );
        // Unknown keys and extra closes are ignored.
        t.close(k, 1, 1);
        assert!(t.done.is_empty() && t.open.is_empty());
    }

    #[test]
    fn tallies_keep_a_bounded_number_of_reports() {
        let mut t = Tallies::default();
        for i in 0..(MAX_REPORTS as u32 + 10) {
            let k = Key::V4(Ipv4Addr::from(i));
            t.open(k, 1);
            t.close(k, 0, 0);
        }
        assert_eq!(t.done.len(), MAX_REPORTS);
        assert_eq!(t.done[0].key, Key::V4(Ipv4Addr::from(10)));
    }

    fn sock(n: u8, remote: [u8; 4]) -> SockId {
        let mut dst = [0; 16];
        dst[..4].copy_from_slice(&remote);
        SockId {
            family: AF_INET,
            state: 1,
            sport: 443,
            dport: 40000 + u16::from(n),
            src: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst,
            ifindex: 0,
            cookie: [u32::from(n), 0],
        }
    }

    /// A dump entry as the kernel writes it (`struct inet_diag_msg`).
    fn entry(id: SockId) -> Vec<u8> {
        let mut b = NlBuf::new();
        b.message(diag::SOCK_DIAG_BY_FAMILY, 2, 1, |b| {
            b.put(&[id.family, id.state, 0, 0]);
            b.put(&id.sport.to_be_bytes());
            b.put(&id.dport.to_be_bytes());
            b.put(&id.src);
            b.put(&id.dst);
            b.put_u32(0);
            b.put_u32(id.cookie[0]);
            b.put_u32(id.cookie[1]);
            b.put(&[0; 20]);
        });
        b.as_bytes().to_vec()
    }

    fn answer(b: &mut NlBuf, seq: u32, errno: i32) {
        b.message(crate::nl::consts::NLMSG_ERROR, 0, seq, |b| {
            b.put(&(-errno).to_ne_bytes());
            b.put(&[0; 16]);
        });
    }

    /// A dump's handling without sockets: its data is matched to the
    /// batch's keys, its end queues one kill per socket found (each with
    /// its tally unit), a lossy end repeats it up to MAX_RESTARTS times,
    /// and each key's report waits for every unit.
    #[test]
    fn a_batch_dump_kills_what_it_found_and_repeats_after_a_loss() {
        let (ka, kb) = (v4("192.0.2.7"), v4("192.0.2.9"));
        let mut st = State::default();
        let mut stats = EnforceStats::default();
        let mut pipe: Pipeline<Req> = Pipeline::new(crate::enforce::limits(), 0);
        let mut h = H {
            what: "sock_diag",
            ports: &[443],
            st: &mut st,
            stats: &mut stats,
        };
        h.st.tallies.open(ka, 1);
        h.st.tallies.open(kb, 1);
        let mut req = Req::Dump(dump(Scan::Tcp { family: AF_INET }, vec![ka, kb]));
        // Two sockets of ka, one of an address outside the batch, one of kb
        // on a port not ours.
        let mut other_port = sock(4, [192, 0, 2, 9]);
        other_port.sport = 22;
        for id in [
            sock(1, [192, 0, 2, 7]),
            sock(2, [192, 0, 2, 7]),
            sock(3, [192, 0, 2, 8]),
            other_port,
        ] {
            for_data(&entry(id), |m| h.data(&mut req, m));
        }
        let Req::Dump(d) = req else { unreachable!() };
        assert_eq!(d.found.len(), 2);
        assert_eq!(h.st.locals, ["192.0.2.1".parse::<IpAddr>().unwrap()]);

        // The dump ends lossy: its two kills are queued, and it again.
        let done = Completion {
            tag: Req::Dump(d),
            outcome: Outcome::Lossy,
        };
        h.complete(done, &mut pipe);
        assert_eq!(pipe.queued(), 3);
        let mut buf = NlBuf::new();
        let mut seqs = Vec::new();
        assert_eq!(
            pipe.fill(0, &mut buf, |r, b, seq| {
                seqs.push(seq);
                h.emit(r, b, seq)
            }),
            3
        );
        assert!(pipe.dumping(), "two destroys, then the repeated dump");
        let mut r = NlBuf::new();
        answer(&mut r, seqs[0], 0);
        answer(&mut r, seqs[1], libc::ENOENT);
        r.message(crate::nl::consts::NLMSG_DONE, 2, seqs[2], |b| {
            b.put(&0i32.to_ne_bytes())
        });
        let mut out = Vec::new();
        pipe.receive(r.as_bytes(), |_, _| {}, &mut out);
        assert_eq!(out.len(), 3);
        for c in out.drain(..) {
            h.complete(c, &mut pipe);
        }
        assert!(pipe.is_idle());
        assert_eq!((h.stats.tcp_killed, h.stats.errors), (1, 0));
        let reports: Vec<_> = h.st.tallies.done.drain(..).collect();
        assert_eq!(
            reports,
            [
                KillReport {
                    key: ka,
                    tcp: 1,
                    udp: 0
                },
                KillReport {
                    key: kb,
                    tcp: 0,
                    udp: 0
                }
            ]
        );

        // On its last allowed run a lossy dump is not repeated again.
        h.st.tallies.open(ka, 1);
        let mut d = dump(Scan::Tcp { family: AF_INET }, vec![ka]);
        d.restarts = MAX_RESTARTS;
        let done = Completion {
            tag: Req::Dump(d),
            outcome: Outcome::Lossy,
        };
        h.complete(done, &mut pipe);
        assert!(pipe.is_idle());
        assert_eq!(h.st.tallies.done.len(), 1);
    }

    /// Feeds one datagram's data messages to `f` (a stand-in for the
    /// pipeline's routing by sequence number).
    fn for_data(bytes: &[u8], mut f: impl FnMut(&Msg<'_>)) {
        // The first malformed message ends the iterator with an error: a
        // test datagram has none, so only data replies are left to route.
        for r in crate::nl::msg::Messages::new(bytes).flatten() {
            if let crate::nl::msg::Reply::Data(m) = r {
                f(&m);
            }
        }
    }

    #[test]
    fn a_kernel_refusing_cta_filter_gets_the_plain_dump_once() {
        let k = v4("192.0.2.7");
        let mut st = State::default();
        let mut stats = EnforceStats::default();
        let mut pipe: Pipeline<Req> = Pipeline::new(crate::enforce::limits(), 0);
        let mut h = H {
            what: "conntrack",
            ports: &[443],
            st: &mut st,
            stats: &mut stats,
        };
        h.st.tallies.open(k, 1);
        let scan = Scan::Udp {
            family: AF_INET,
            kernel_filter: true,
        };
        let done = Completion {
            tag: Req::Dump(dump(scan, vec![k])),
            outcome: Outcome::Errno(libc::EINVAL),
        };
        h.complete(done, &mut pipe);
        assert!(h.st.no_ct_filter);
        assert_eq!(h.stats.errors, 0);
        let mut buf = NlBuf::new();
        let mut scans = Vec::new();
        pipe.fill(0, &mut buf, |r, _, _| {
            if let Req::Dump(d) = r {
                scans.push(d.scan)
            }
        });
        assert_eq!(
            scans,
            [Scan::Udp {
                family: AF_INET,
                kernel_filter: false
            }]
        );
        // Refused again without the filter: an error, the unit closes.
        let mut out = Vec::new();
        pipe.expire(u64::MAX, &mut out);
        for c in out {
            h.complete(c, &mut pipe);
        }
        assert_eq!(h.stats.errors, 1);
        assert_eq!(h.st.tallies.done.len(), 1);
    }
}
