//! The shaper in the loop: the mark table ([`Marks`]) turned into kernel
//! requests on two non-blocking netlink sockets, each a
//! [`crate::nl::pipeline`] channel with its token:
//!
//! - `NETLINK_ROUTE`: the HTB classes on `--shape-dev` (one per user with
//!   a download cap, created or changed in place with one
//!   `RTM_NEWTCLASS`, deleted when the user is released), and the repair
//!   of the root qdisc and its filter.
//! - `NETLINK_NETFILTER`: the nftables batches of `inet refract_shape`
//!   (users and their upload limits, the turn's peer elements) and the
//!   conntrack dumps by mark that decide a release.
//!
//! Per line of a capped user: at most one peer element, gathered for the
//! turn; a turn's peers go out as one batch (one datagram, packed per
//! family), so a line costs no round trip of its own. The kernel runs a
//! batch inside `sendmsg`: the connection's next packet after that takes
//! the mark.
//!
//! Self-repair: two more sockets listen to the kernel's notifications
//! (`RTNLGRP_TC`, `NFNLGRP_NFTABLES`). Someone else deleting the root
//! qdisc, the filter or one of the classes on the device, or anything in
//! the table, brings it back: the root with its filter and every class,
//! or the whole table with every user (peers are not kept: connections
//! marked already keep their conntrack marks). Requests that fail are
//! logged (rate-limited) and counted, never fatal.
//!
//! Release: while users are capped, every [`RELEASE_IDLE`] the users idle
//! that long are checked, at most [`CHECKS_PER_SWEEP`] at a time, each by
//! one conntrack dump by mark; a mark no connection carries is released.
//! So an idle daemon with capped users wakes up once per
//! [`RELEASE_IDLE`], and never without them.

use std::io;
use std::net::SocketAddr;

use super::marks::{self, Marks, Op, RELEASE_IDLE};
use super::nft::{self, UserChange};
use super::rate::Caps;
use super::tc::{self, Dev};
use super::ShapeConfig;
use crate::clock::Micros;
use crate::enforce::ipset::lock::{self, InstanceLock, LockError};
use crate::enforce::nftables::Watch;
use crate::logger::RateLimit;
use crate::nl::buf::NlBuf;
use crate::nl::channel::{Channel, Fault, Handler};
use crate::nl::conntrack::MarkDump;
use crate::nl::consts::NLM_F_CREATE;
use crate::nl::msg::{Messages, Msg, Reply};
use crate::nl::pipeline::{Completion, Kind, Limits, Outcome, Pipeline};
use crate::nl::rtnl;
use crate::nl::socket::NlSocket;
use libc::NETLINK_ROUTE;

/// The instance lock's name: one shaper per network namespace (two would
/// hand out the same marks and fight over the root qdisc).
pub const LOCK: &str = "shape";

/// `RTNLGRP_TC` (`include/uapi/linux/rtnetlink.h`, `enum rtnetlink_groups`).
pub const RTNLGRP_TC: u32 = 4;
/// Release checks one sweep starts at most.
pub const CHECKS_PER_SWEEP: usize = 64;
/// Tokens the shaper owns from its first.
pub const TOKENS: usize = 4;
/// Receive buffer of each socket.
const RCVBUF: usize = 1 << 20;
/// Kernel errors are logged at most this often (each counted).
const WARN_PERIOD: Micros = 60 * crate::clock::SECOND;

/// What the shaper did, for `stats:` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShapeStats {
    /// Connections handed a mark (peer elements sent).
    pub marked: u64,
    /// Users given a mark, changed in place, released.
    pub added: u64,
    pub changed: u64,
    pub released: u64,
    /// A peer still mapped to another user's mark (`EEXIST`), given the
    /// new one.
    pub clashes: u64,
    /// Requests the kernel refused or did not answer.
    pub errors: u64,
    /// Repairs after someone else deleted refract's objects.
    pub repairs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RtOp {
    /// The class of `minor` at `rate` bytes/s, created or changed.
    Class {
        minor: u16,
        rate: u64,
    },
    DelClass {
        minor: u16,
    },
    /// The root qdisc again (after a deletion), then its filter and classes.
    Root,
    Filter,
}

/// An owned [`UserChange`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    Add {
        mark: u32,
        email: String,
        up: Option<u64>,
    },
    Rate {
        mark: u32,
        from: Option<u64>,
        to: Option<u64>,
    },
    Remove {
        mark: u32,
        up: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NfOp {
    Users(Vec<Change>),
    /// At most [`nft::PEERS_PER_BATCH`].
    Peers(Vec<(SocketAddr, u32)>),
    /// A peer that another user's mark still holds, given this mark.
    Replace(SocketAddr, u32),
    /// The table made fresh with every user.
    Table,
    /// Does conntrack hold a flow with the mark of `minor`?
    Check {
        minor: u16,
        found: usize,
    },
}

struct State {
    dev: Dev,
    ports: Vec<u16>,
    now: Micros,
    warn: RateLimit<1>,
    /// A table rebuild is queued or running.
    rebuilding: bool,
    root_rebuilding: bool,
}

impl State {
    fn failed(&mut self, stats: &mut ShapeStats, what: &str, why: std::fmt::Arguments<'_>) {
        stats.errors += 1;
        if let Some(n) = self.warn.check(0, self.now) {
            let more = if n > 0 {
                format!(" ({n} more errors since the last message)")
            } else {
                String::new()
            };
            crate::logger::warning(format_args!("shape: {what}: {why}{more}"));
        }
    }
}

fn errno_text(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn outcome_errno(o: Outcome) -> Result<i32, String> {
    match o {
        Outcome::Done | Outcome::Lossy => Ok(0),
        Outcome::Errno(e) => Ok(e),
        Outcome::Expired => Err("no answer from the kernel".to_string()),
        Outcome::Unsent(e) => Err(errno_text(e).to_string()),
    }
}

struct Rt<'a> {
    st: &'a mut State,
    marks: &'a Marks,
    stats: &'a mut ShapeStats,
}

impl Rt<'_> {
    fn queue(&mut self, pipe: &mut Pipeline<RtOp>, op: RtOp) {
        if let Err(op) = pipe.push(op, Kind::Ack) {
            // A rebuild that never went out is not running.
            if op == RtOp::Root {
                self.st.root_rebuilding = false;
            }
            let n = pipe.limits().max_queued;
            self.st.failed(
                self.stats,
                "tc",
                format_args!("dropped a request: {n} already waiting"),
            );
        }
    }

    fn rebuild_root(&mut self, pipe: &mut Pipeline<RtOp>) {
        if !self.st.root_rebuilding {
            self.st.root_rebuilding = true;
            self.queue(pipe, RtOp::Root);
        }
    }
}

impl Handler<RtOp> for Rt<'_> {
    fn emit(&mut self, op: &RtOp, buf: &mut NlBuf, seq: u32) {
        let ifindex = self.st.dev.index;
        match *op {
            RtOp::Class { minor, rate } => {
                rtnl::htb_class(buf, seq, ifindex, tc::HTB_MAJOR, minor, rate, NLM_F_CREATE)
            }
            RtOp::DelClass { minor } => {
                rtnl::del_class(buf, seq, ifindex, rtnl::tc_handle(tc::HTB_MAJOR, minor))
            }
            RtOp::Root => rtnl::new_htb_root(
                buf,
                seq,
                ifindex,
                tc::HTB_MAJOR,
                NLM_F_CREATE | crate::nl::consts::NLM_F_EXCL,
            ),
            RtOp::Filter => tc::filter(ifindex).emit(buf, seq, NLM_F_CREATE),
        }
    }

    fn data(&mut self, _op: &mut RtOp, _msg: &Msg<'_>) {}

    fn complete(&mut self, done: Completion<RtOp>, pipe: &mut Pipeline<RtOp>) {
        let errno = match outcome_errno(done.outcome) {
            Ok(e) => e,
            Err(why) => {
                if done.tag == RtOp::Root {
                    self.st.root_rebuilding = false;
                }
                return self
                    .st
                    .failed(self.stats, &describe_rt(&done.tag), format_args!("{why}"));
            }
        };
        match (done.tag, errno) {
            (RtOp::Root, 0) => {
                self.st.root_rebuilding = false;
                self.stats.repairs += 1;
                crate::logger::warning(format_args!(
                    "shape: the root qdisc on {} was deleted behind our back and has been rebuilt {}",
                    self.st.dev.name,
                    crate::logger::kv(&[("event", "repair"), ("what", "qdisc")])
                ));
                self.queue(pipe, RtOp::Filter);
                let classes: Vec<RtOp> = self
                    .marks
                    .users()
                    .filter_map(|(_, minor, caps)| {
                        caps.down.map(|r| RtOp::Class { minor, rate: r.0 })
                    })
                    .collect();
                for c in classes {
                    self.queue(pipe, c);
                }
            }
            (RtOp::Root, e) => {
                self.st.root_rebuilding = false;
                let dev = self.st.dev.name.clone();
                self.st.failed(
                    self.stats,
                    "rebuild the root qdisc",
                    format_args!(
                        "{} (someone else's root qdisc on {}? shaping there stops until it is gone and refract restarts)",
                        errno_text(e),
                        dev
                    ),
                );
            }
            (RtOp::Class { .. }, libc::ENOENT) | (RtOp::Filter, libc::ENOENT) => {
                // The qdisc is gone: the repair sends this again.
                self.rebuild_root(pipe);
            }
            (RtOp::DelClass { .. }, 0 | libc::ENOENT) | (_, 0) => {}
            (op, e) => self.st.failed(
                self.stats,
                &describe_rt(&op),
                format_args!("{}", errno_text(e)),
            ),
        }
    }

    fn fault(&mut self, fault: Fault) {
        let why = describe_fault(&fault);
        self.st
            .failed(self.stats, "tc socket", format_args!("{why}"));
    }
}

fn describe_rt(op: &RtOp) -> String {
    match op {
        RtOp::Class { minor, rate } => format!(
            "class {} at {}",
            tc::handle_str(rtnl::tc_handle(tc::HTB_MAJOR, *minor)),
            super::rate::Rate(*rate)
        ),
        RtOp::DelClass { minor } => format!(
            "delete class {}",
            tc::handle_str(rtnl::tc_handle(tc::HTB_MAJOR, *minor))
        ),
        RtOp::Root => "rebuild the root qdisc".to_string(),
        RtOp::Filter => "the mark filter".to_string(),
    }
}

fn describe_fault(f: &Fault) -> String {
    match f {
        Fault::Overrun(n) => format!("receive queue overflowed (ENOBUFS); re-sending {n} requests"),
        Fault::Malformed => "malformed reply".to_string(),
        Fault::Recv(e) => format!("receive: {e}"),
    }
}

struct Nf<'a> {
    st: &'a mut State,
    marks: &'a mut Marks,
    ops: &'a mut Vec<Op>,
    stats: &'a mut ShapeStats,
}

impl Nf<'_> {
    fn queue(&mut self, pipe: &mut Pipeline<NfOp>, op: NfOp) {
        let kind = if matches!(op, NfOp::Check { .. }) {
            Kind::Dump
        } else {
            Kind::Ack
        };
        if let Err(op) = pipe.push(op, kind) {
            match op {
                NfOp::Check { minor, .. } => self.marks.still_used(self.st.now, minor),
                // A rebuild that never went out is not running.
                NfOp::Table => self.st.rebuilding = false,
                _ => {}
            }
            let n = pipe.limits().max_queued;
            self.st.failed(
                self.stats,
                "nftables",
                format_args!("dropped a request: {n} already waiting"),
            );
        }
    }

    fn rebuild(&mut self, pipe: &mut Pipeline<NfOp>) {
        if !self.st.rebuilding {
            self.st.rebuilding = true;
            self.queue(pipe, NfOp::Table);
        }
    }
}

impl Handler<NfOp> for Nf<'_> {
    fn emit(&mut self, op: &NfOp, buf: &mut NlBuf, seq: u32) {
        match op {
            NfOp::Users(changes) => {
                let changes: Vec<UserChange<'_>> = changes
                    .iter()
                    .map(|c| match c {
                        Change::Add { mark, email, up } => UserChange::Add(nft::User {
                            mark: *mark,
                            email,
                            up_bytes_per_s: *up,
                        }),
                        Change::Rate { mark, from, to } => UserChange::Rate {
                            mark: *mark,
                            from: *from,
                            to: *to,
                        },
                        Change::Remove { mark, up } => UserChange::Remove {
                            mark: *mark,
                            up: *up,
                        },
                    })
                    .collect();
                nft::users_batch(buf, seq, &changes);
            }
            NfOp::Peers(peers) => {
                nft::peers_batch(buf, seq, peers);
            }
            NfOp::Replace(peer, mark) => nft::replace_peer_batch(buf, seq, *peer, *mark),
            NfOp::Table => {
                let emails: Vec<(String, u16, Caps)> = self
                    .marks
                    .users()
                    .map(|(e, m, c)| (String::from_utf8_lossy(e).into_owned(), m, c))
                    .collect();
                let users: Vec<nft::User<'_>> = emails
                    .iter()
                    .map(|(e, m, c)| nft::User {
                        mark: marks::mark(*m),
                        email: e,
                        up_bytes_per_s: c.up.map(|r| r.0),
                    })
                    .collect();
                nft::table_batch(buf, seq, &self.st.ports, &users);
            }
            NfOp::Check { minor, .. } => MarkDump {
                mark: marks::mark(*minor),
                mask: u32::MAX,
            }
            .emit(buf, seq),
        }
    }

    fn data(&mut self, op: &mut NfOp, msg: &Msg<'_>) {
        if let NfOp::Check { found, .. } = op {
            if crate::nl::conntrack::parse_flow(msg).is_some() {
                *found += 1;
            }
        }
    }

    fn complete(&mut self, done: Completion<NfOp>, pipe: &mut Pipeline<NfOp>) {
        let outcome = done.outcome;
        let errno = match outcome_errno(outcome) {
            Ok(e) => e,
            Err(why) => {
                match &done.tag {
                    NfOp::Table => self.st.rebuilding = false,
                    NfOp::Check { minor, .. } => self.marks.still_used(self.st.now, *minor),
                    _ => {}
                }
                return self
                    .st
                    .failed(self.stats, &describe_nf(&done.tag), format_args!("{why}"));
            }
        };
        match (done.tag, errno) {
            (NfOp::Check { minor, found }, 0) => {
                if found == 0 && outcome == Outcome::Done {
                    self.marks.release(minor, self.ops);
                } else {
                    self.marks.still_used(self.st.now, minor);
                }
            }
            (NfOp::Check { minor, .. }, e) => {
                self.marks.still_used(self.st.now, minor);
                self.st.failed(
                    self.stats,
                    "conntrack dump by mark",
                    format_args!("{}", errno_text(e)),
                );
            }
            (NfOp::Table, 0) => {
                self.st.rebuilding = false;
            }
            (NfOp::Table, e) => {
                self.st.rebuilding = false;
                self.st.failed(
                    self.stats,
                    "rebuild table inet refract_shape",
                    format_args!("{}", errno_text(e)),
                );
            }
            (NfOp::Peers(peers), libc::EEXIST) if peers.len() > 1 => {
                // One clash refuses the whole batch: each alone, so only
                // the clashing one is lost.
                for p in peers {
                    self.queue(pipe, NfOp::Peers(vec![p]));
                }
            }
            (NfOp::Peers(peers), libc::EEXIST) => {
                // The peer (address and port) was another user's within
                // the element's timeout (a NAT reusing the port): the
                // newer line names its connection now.
                self.stats.clashes += 1;
                if let Some(&(p, m)) = peers.first() {
                    self.queue(pipe, NfOp::Replace(p, m));
                }
            }
            (NfOp::Replace(p, m), libc::ENOENT) => {
                // Expired meanwhile: a plain addition does.
                self.queue(pipe, NfOp::Peers(vec![(p, m)]));
            }
            (NfOp::Peers(peers), libc::ENOENT) => {
                self.rebuild(pipe);
                self.queue(pipe, NfOp::Peers(peers));
            }
            (NfOp::Users(_), e) if e != 0 => {
                // The table does not hold what the change expected: make
                // it what the mark table says.
                self.st.failed(
                    self.stats,
                    "users",
                    format_args!("{}; rebuilding the table", errno_text(e)),
                );
                self.rebuild(pipe);
            }
            (_, 0) => {}
            (op, e) => self.st.failed(
                self.stats,
                &describe_nf(&op),
                format_args!("{}", errno_text(e)),
            ),
        }
    }

    fn fault(&mut self, fault: Fault) {
        let why = describe_fault(&fault);
        self.st
            .failed(self.stats, "nftables socket", format_args!("{why}"));
    }
}

fn describe_nf(op: &NfOp) -> String {
    match op {
        NfOp::Users(c) => format!("{} user change(s)", c.len()),
        NfOp::Peers(p) => format!("{} peer element(s)", p.len()),
        NfOp::Replace(p, m) => format!("give peer {p} mark {m:#x}"),
        NfOp::Table => "rebuild table inet refract_shape".to_string(),
        NfOp::Check { minor, .. } => format!("conntrack dump of mark {:#x}", marks::mark(*minor)),
    }
}

/// Why shaping could not start (the daemon does not start either: the
/// operator asked for caps).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shaper. See the module docs.
pub struct Shaper {
    _lock: InstanceLock,
    pub cfg: ShapeConfig,
    pub marks: Marks,
    ops: Vec<Op>,
    rt: Channel<RtOp>,
    nf: Channel<NfOp>,
    rt_watch: NlSocket,
    nf_watch: Watch,
    rt_port: u32,
    rx: Vec<u8>,
    st: State,
    next_sweep: Micros,
    pub stats: ShapeStats,
}

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper")
            .field("dev", &self.st.dev)
            .field("users", &self.marks.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn limits() -> Limits {
    Limits {
        // One nftables batch per datagram (the kernel runs one batch per
        // datagram); rtnetlink takes the same bound for simplicity.
        max_batch_bytes: 1,
        ..crate::enforce::limits()
    }
}

fn open_watch(protocol: i32, group: u32) -> io::Result<NlSocket> {
    let s = NlSocket::open(protocol, RCVBUF)?;
    s.join_group(group)?;
    Ok(s)
}

impl Shaper {
    /// Sets shaping up before the loop (blocking, bounded): the device,
    /// the root qdisc (adopted if it is refract's), the users a previous
    /// run left in the table (they keep their marks), the table made fresh
    /// with them and today's caps, their classes set, stray classes
    /// removed. Then the notification sockets, joined before anything can
    /// be deleted behind our back unseen.
    pub fn start(cfg: &ShapeConfig, ports: &[u16], now: Micros) -> Result<Shaper, StartError> {
        let err = |what: &str, e: &dyn std::fmt::Display| StartError(format!("shape: {what}: {e}"));
        let dev_name = match &cfg.dev {
            super::Dev::Auto => "auto",
            super::Dev::Named(n) => n.as_str(),
        };
        let lock = lock::acquire(&[LOCK]).map_err(|e| {
            match e {
            LockError::Held(_) => StartError(
                "shape: another refract shapes in this network namespace (one shaper per namespace)"
                    .to_string(),
            ),
            LockError::Io(_, e) => err("instance lock", &e),
        }
        })?;
        let dev = tc::resolve_dev(dev_name).map_err(|e| StartError(format!("{e}")))?;
        let rt_watch = open_watch(NETLINK_ROUTE, RTNLGRP_TC).map_err(|e| err("rtnetlink", &e))?;
        let mut nf_sock = nft::open().map_err(|e| err("nftables", &e))?;
        let nf_port = nf_sock.port_id().map_err(|e| err("nfnetlink", &e))?;
        // Notifications caused by our own request socket are ours.
        let nf_watch = Watch::for_table(nft::TABLE, nf_port).map_err(|e| err("nfnetlink", &e))?;
        let mut rt_sock = tc::open().map_err(|e| err("rtnetlink", &e))?;
        let adopted =
            tc::ensure_root(&mut rt_sock, &dev).map_err(|e| StartError(format!("{e}")))?;
        let previous = nft::read_users(&mut nf_sock).map_err(|e| err("nftables", &e))?;
        let mut m = Marks::new();
        m.restore(
            now,
            previous.into_iter().map(|(mark, email)| {
                (mark, email.into_bytes().into_boxed_slice(), Caps::default())
            }),
        );
        // Today's caps: users not capped any more are released (their
        // objects are not in the fresh table, their classes go below).
        let mut ops = Vec::new();
        m.reload(|e| cfg.caps_of(e), &mut ops);
        let emails: Vec<(String, u16, Caps)> = m
            .users()
            .map(|(e, minor, c)| (String::from_utf8_lossy(e).into_owned(), minor, c))
            .collect();
        let users: Vec<nft::User<'_>> = emails
            .iter()
            .map(|(e, minor, c)| nft::User {
                mark: marks::mark(*minor),
                email: e,
                up_bytes_per_s: c.up.map(|r| r.0),
            })
            .collect();
        nft::ensure(&mut nf_sock, ports, &users).map_err(|e| err("nftables", &e))?;
        for (_, minor, c) in &emails {
            if let Some(r) = c.down {
                tc::set_class(&mut rt_sock, dev.index, *minor, r.0)
                    .map_err(|e| err("tc class", &e))?;
            }
        }
        for &(minor, _) in &adopted.classes {
            let wanted = emails
                .iter()
                .any(|(_, m, c)| *m == minor && c.down.is_some());
            if !wanted {
                tc::del_class(&mut rt_sock, dev.index, minor).map_err(|e| err("tc class", &e))?;
            }
        }
        let rt_port = rt_sock.port_id().map_err(|e| err("rtnetlink", &e))?;
        crate::logger::notice(format_args!(
            "shape: {} on {} (root qdisc {}), {} user(s) kept from before",
            if adopted.created { "set up" } else { "adopted" },
            dev.name,
            tc::handle_str(rtnl::tc_handle(tc::HTB_MAJOR, 0)),
            m.len()
        ));
        Ok(Shaper {
            _lock: lock,
            cfg: cfg.clone(),
            marks: m,
            ops: Vec::new(),
            rt: Channel::new(rt_sock, limits()),
            nf: Channel::new(nf_sock, limits()),
            rt_watch,
            nf_watch,
            rt_port,
            rx: Vec::new(),
            st: State {
                dev,
                ports: ports.to_vec(),
                now,
                warn: RateLimit::new(WARN_PERIOD),
                rebuilding: false,
                root_rebuilding: false,
            },
            next_sweep: now + RELEASE_IDLE,
            stats: ShapeStats::default(),
        })
    }

    /// The device shaped.
    pub fn dev(&self) -> &Dev {
        &self.st.dev
    }

    /// An accepted line of `email` from `peer`.
    pub fn line(&mut self, now: Micros, email: &[u8], peer: Option<SocketAddr>) {
        let cfg = &self.cfg;
        self.marks
            .line(now, email, peer, || cfg.caps_of(email), &mut self.ops);
    }

    /// The limits file was re-read: new caps apply at once.
    pub fn reload(&mut self, rates: crate::hash::Map<Box<[u8]>, super::rate::Fields>) {
        self.cfg.rates = rates;
        let cfg = &self.cfg;
        self.marks.reload(|e| cfg.caps_of(e), &mut self.ops);
    }

    fn rt_with(&mut self, now: Micros, f: impl FnOnce(&mut Channel<RtOp>, &mut Rt<'_>)) {
        self.st.now = self.st.now.max(now);
        let mut h = Rt {
            st: &mut self.st,
            marks: &self.marks,
            stats: &mut self.stats,
        };
        f(&mut self.rt, &mut h);
    }

    fn nf_with(&mut self, now: Micros, f: impl FnOnce(&mut Channel<NfOp>, &mut Nf<'_>)) {
        self.st.now = self.st.now.max(now);
        let mut h = Nf {
            st: &mut self.st,
            marks: &mut self.marks,
            ops: &mut self.ops,
            stats: &mut self.stats,
        };
        f(&mut self.nf, &mut h);
    }

    /// End of a loop turn: the turn's changes become requests and go out;
    /// release checks start when due.
    pub fn turn(&mut self, now: Micros) {
        if now >= self.next_sweep {
            self.next_sweep = now + RELEASE_IDLE;
            let due = self.marks.idle(now, CHECKS_PER_SWEEP);
            self.nf_with(now, |c, h| {
                for minor in due {
                    h.queue(&mut c.pipe, NfOp::Check { minor, found: 0 });
                }
            });
        }
        // Completions (a release) may add ops: two rounds at most.
        for _ in 0..2 {
            if self.ops.is_empty() {
                break;
            }
            self.flush_ops(now);
        }
        self.rt_with(now, |c, h| c.pump(now, h));
        self.nf_with(now, |c, h| c.pump(now, h));
    }

    fn flush_ops(&mut self, now: Micros) {
        let mut rt = Vec::new();
        let mut changes = Vec::new();
        let mut peers = Vec::new();
        for op in std::mem::take(&mut self.ops) {
            match op {
                Op::AddUser { minor, email, caps } => {
                    self.stats.added += 1;
                    if let Some(r) = caps.down {
                        rt.push(RtOp::Class { minor, rate: r.0 });
                    }
                    changes.push(Change::Add {
                        mark: marks::mark(minor),
                        email: String::from_utf8_lossy(&email).into_owned(),
                        up: caps.up.map(|r| r.0),
                    });
                }
                Op::ChangeUser {
                    minor, old, new, ..
                } => {
                    self.stats.changed += 1;
                    match (old.down, new.down) {
                        (o, Some(r)) if o != Some(r) => rt.push(RtOp::Class { minor, rate: r.0 }),
                        (Some(_), None) => rt.push(RtOp::DelClass { minor }),
                        _ => {}
                    }
                    if old.up != new.up {
                        changes.push(Change::Rate {
                            mark: marks::mark(minor),
                            from: old.up.map(|r| r.0),
                            to: new.up.map(|r| r.0),
                        });
                    }
                }
                Op::DelUser { minor, caps, .. } => {
                    self.stats.released += 1;
                    if caps.down.is_some() {
                        rt.push(RtOp::DelClass { minor });
                    }
                    changes.push(Change::Remove {
                        mark: marks::mark(minor),
                        up: caps.up.map(|r| r.0),
                    });
                }
                Op::Peer { peer, minor } => {
                    self.stats.marked += 1;
                    peers.push((peer, marks::mark(minor)));
                }
            }
        }
        self.rt_with(now, |c, h| {
            for op in rt {
                h.queue(&mut c.pipe, op);
            }
        });
        self.nf_with(now, |c, h| {
            // A batch is one datagram: bounded like the startup's.
            for chunk in changes.chunks(nft::USERS_PER_BATCH) {
                h.queue(&mut c.pipe, NfOp::Users(chunk.to_vec()));
            }
            for chunk in peers.chunks(nft::PEERS_PER_BATCH) {
                h.queue(&mut c.pipe, NfOp::Peers(chunk.to_vec()));
            }
        });
    }

    /// The next time [`Shaper::expire`] must run.
    pub fn deadline(&self) -> Option<Micros> {
        let sweep = (!self.marks.is_empty()).then_some(self.next_sweep);
        [self.rt.pipe.deadline(), self.nf.pipe.deadline(), sweep]
            .into_iter()
            .flatten()
            .min()
    }

    /// Requests past their deadline.
    pub fn expire(&mut self, now: Micros) {
        self.rt_with(now, |c, h| c.expire(now, h));
        self.nf_with(now, |c, h| c.expire(now, h));
    }

    /// Registers the four sockets as tokens `first..first + TOKENS`: the
    /// tc requests, the nftables/conntrack requests, the tc notifications,
    /// the nftables notifications.
    pub fn register(&mut self, registry: &mio::Registry, first: usize) -> io::Result<()> {
        let r = mio::Interest::READABLE;
        registry.register(&mut self.rt.sock, mio::Token(first), r)?;
        registry.register(&mut self.nf.sock, mio::Token(first + 1), r)?;
        registry.register(&mut self.rt_watch, mio::Token(first + 2), r)?;
        registry.register(&mut self.nf_watch.sock, mio::Token(first + 3), r)
    }

    /// Token `i` (0..[`TOKENS`]) is readable.
    pub fn ready(&mut self, i: usize, now: Micros) {
        match i {
            0 => self.rt_with(now, |c, h| c.drain(now, h)),
            1 => self.nf_with(now, |c, h| c.drain(now, h)),
            2 => self.rt_notifications(now),
            3 => self.nf_notifications(now),
            _ => {}
        }
        if !self.ops.is_empty() {
            self.turn(now);
        }
    }

    fn rt_notifications(&mut self, now: Micros) {
        let (mut root, mut filter, mut classes) = (false, false, Vec::new());
        let ifindex = self.st.dev.index;
        for _ in 0..100_000 {
            match self.rt_watch.recv(&mut self.rx) {
                Ok(n) => {
                    for m in Messages::new(&self.rx[..n]).flatten() {
                        let Reply::Data(m) = m else { continue };
                        if m.pid == self.rt_port {
                            continue;
                        }
                        match deleted(&m, ifindex) {
                            Some(Deleted::Root) => root = true,
                            Some(Deleted::Filter) => filter = true,
                            Some(Deleted::Class(minor)) => classes.push(minor),
                            None => {}
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Lost notifications may have said anything: rebuild.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => root = true,
                Err(e) => {
                    self.st
                        .failed(&mut self.stats, "tc notifications", format_args!("{e}"));
                    break;
                }
            }
        }
        let users: Vec<(u16, Caps)> = self.marks.users().map(|(_, m, c)| (m, c)).collect();
        self.rt_with(now, |c, h| {
            if root {
                h.rebuild_root(&mut c.pipe);
                return;
            }
            if filter {
                h.stats.repairs += 1;
                crate::logger::warning(format_args!(
                    "shape: the mark filter on {} was deleted behind our back and has been restored",
                    h.st.dev.name
                ));
                h.queue(&mut c.pipe, RtOp::Filter);
            }
            for minor in classes {
                if let Some((_, caps)) = users.iter().find(|(m, _)| *m == minor) {
                    if let Some(r) = caps.down {
                        h.stats.repairs += 1;
                        h.queue(&mut c.pipe, RtOp::Class { minor, rate: r.0 });
                    }
                }
            }
            c.pump(now, h);
        });
    }

    fn nf_notifications(&mut self, now: Micros) {
        let (lost, err) = self.nf_watch.drain();
        if let Some(e) = err {
            self.st.failed(
                &mut self.stats,
                "nftables notifications",
                format_args!("{e}"),
            );
        }
        if lost {
            self.nf_with(now, |c, h| {
                h.stats.repairs += 1;
                crate::logger::warning(format_args!(
                    "shape: table inet {} was changed behind our back and is being rebuilt {}",
                    nft::TABLE,
                    crate::logger::kv(&[("event", "repair"), ("what", "shape-table")])
                ));
                h.rebuild(&mut c.pipe);
                c.pump(now, h);
            });
        }
    }

    /// What `refract user` shows: the caps in force and the mark, if the
    /// user has one now.
    pub fn user(&self, email: &[u8]) -> (Caps, Option<u32>) {
        (
            self.cfg.caps_of(email),
            self.marks.user(email).map(|u| u.mark),
        )
    }
}

enum Deleted {
    Root,
    Filter,
    Class(u16),
}

/// A notification that deletes refract's root qdisc, its filter or one of
/// its classes on `ifindex` (`struct tcmsg`: family, pad, ifindex,
/// handle, parent, info; `include/uapi/linux/rtnetlink.h`).
fn deleted(m: &Msg<'_>, ifindex: u32) -> Option<Deleted> {
    let p = m.payload;
    if p.len() < rtnl::TCMSG_LEN {
        return None;
    }
    let word = |at: usize| u32::from_ne_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    if word(4) != ifindex {
        return None;
    }
    let (handle, parent) = (word(8), word(12));
    let ours = rtnl::tc_major(handle) == tc::HTB_MAJOR;
    match m.ty {
        rtnl::RTM_DELQDISC if ours && parent == rtnl::TC_H_ROOT => Some(Deleted::Root),
        rtnl::RTM_DELTFILTER if rtnl::tc_major(parent) == tc::HTB_MAJOR => Some(Deleted::Filter),
        rtnl::RTM_DELTCLASS if ours && rtnl::tc_minor(handle) != 0 => {
            Some(Deleted::Class(rtnl::tc_minor(handle)))
        }
        _ => None,
    }
}
