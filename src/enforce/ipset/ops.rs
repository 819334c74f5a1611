//! ipset operations from the loop: ADD with the ban's own timeout, DEL, and
//! the CREATE that repairs a set destroyed behind our back.
//!
//! [`Ops::send`] queues the request in the ipset [`Channel`] and sends at
//! once: the kernel executes nfnetlink requests inside `sendmsg`, so the
//! entry is in the set when `ban` returns, and the ACK waits in the socket
//! until the loop reports it readable. A burst fills the window
//! ([`crate::enforce::WINDOW`]); the channel then reads the answers the
//! kernel already queued and sends on, so a burst is not delayed. Answers:
//!
//! - ACK: done.
//! - `ENOENT` on ADD: the set was destroyed behind our back. Recreate it
//!   (one CREATE per family however many ADDs failed), retry each ADD once
//!   (the kernel runs requests in order, so the retry follows the CREATE),
//!   and once the CREATE is acknowledged put the DROP rules back
//!   ([`Effect::Reinstall`]: iptables held a reference to the set, so its
//!   rule went first) and end the key's connections again
//!   ([`Effect::Kill`]: they may have come back meanwhile) (`repairs`).
//! - `IPSET_ERR_HASH_FULL` on ADD: the set holds `maxelem` entries;
//!   counted in `set_full` (and `errors`), logged once per
//!   [`FULL_WARN_PERIOD`], never fatal: room comes back as bans expire.
//! - `IPSET_ERR_EXIST` on DEL: already gone (expired); fine.
//! - anything else, no answer within [`crate::enforce::REPLY_TIMEOUT`], a
//!   failed send: logged and counted in `errors`, never fatal.
//!
//! `ENOBUFS` is absorbed by the pipeline (every unanswered request is sent
//! again, all are idempotent) and counted as one error.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};

use crate::clock::{Micros, SECOND};
use crate::enforce::EnforceStats;
use crate::key::Key;
use crate::logger::RateLimit;
use crate::nl::buf::NlBuf;
use crate::nl::channel::{Channel, Fault, Handler};
use crate::nl::consts::{IPSET_ERR_EXIST, IPSET_ERR_HASH_FULL};
use crate::nl::ipset::{self, Family};
use crate::nl::msg::Msg;
use crate::nl::pipeline::{Completion, Kind, Outcome, Pipeline};
use crate::nl::socket::NlSocket;

use super::create_request;
use super::{log, KernelConfig};

/// A full set (`IPSET_ERR_HASH_FULL`) is reported once per this period:
/// during a ban flood every ADD fails the same way.
pub const FULL_WARN_PERIOD: Micros = 10 * 60 * SECOND;

/// One ipset request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add {
        key: Key,
        secs: u32,
        /// Already retried after a repair: a second `ENOENT` is an error.
        retried: bool,
    },
    Del {
        key: Key,
    },
    /// Recreating a set that vanished.
    Create {
        family: Family,
    },
}

/// What a finished request asks of the enforcer (outside the ipset
/// socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A set was recreated: put the DROP rules back.
    Reinstall,
    /// A ban landed only after a repair: end its connections again.
    Kill(Key),
}

fn describe(op: &Op, cfg: &KernelConfig) -> String {
    match *op {
        Op::Add { key, secs, .. } => {
            format!("add {key} to {} (timeout {secs})", cfg.set(Family::of(key)))
        }
        Op::Del { key } => format!("del {key} from {}", cfg.set(Family::of(key))),
        Op::Create { family } => format!("create {}", cfg.set(family)),
    }
}

/// State the handler needs besides the channel.
#[derive(Debug)]
struct State {
    /// Type revisions to create sets with (from `IPSET_CMD_TYPE`).
    revision: [u8; 2],
    /// A repair CREATE is in flight for this family (index: [`Family::index`]).
    repairing: [bool; 2],
    /// One "set is full" message per [`FULL_WARN_PERIOD`].
    full_warn: RateLimit<1>,
    effects: Vec<Effect>,
    now: Micros,
}

struct H<'a> {
    cfg: &'a KernelConfig,
    st: &'a mut State,
    stats: &'a mut EnforceStats,
}

impl H<'_> {
    fn queue(&mut self, pipe: &mut Pipeline<Op>, op: Op) {
        if let Err(op) = pipe.push(op, Kind::Ack) {
            self.refused(op, pipe.limits().max_queued);
        }
    }

    fn refused(&mut self, op: Op, limit: usize) {
        if let Op::Create { family } = op {
            self.st.repairing[family.index()] = false;
        }
        self.stats.errors += 1;
        log(format_args!(
            "ipset: {}: dropped, {limit} requests already waiting to be sent",
            describe(&op, self.cfg)
        ));
    }

    fn failed(&mut self, op: Op, why: fmt::Arguments<'_>) {
        if let Op::Create { family } = op {
            self.st.repairing[family.index()] = false;
        }
        self.stats.errors += 1;
        log(format_args!("ipset: {}: {why}", describe(&op, self.cfg)));
    }
}

impl Handler<Op> for H<'_> {
    fn emit(&mut self, op: &Op, buf: &mut NlBuf, seq: u32) {
        match *op {
            Op::Add { key, secs, .. } => ipset::Add {
                set: self.cfg.set(Family::of(key)),
                key,
                timeout: Some(secs),
            }
            .emit(buf, seq),
            Op::Del { key } => ipset::Del {
                set: self.cfg.set(Family::of(key)),
                key,
            }
            .emit(buf, seq),
            Op::Create { family } => {
                create_request(self.cfg, self.st.revision, family).emit(buf, seq)
            }
        }
    }

    /// Nothing we send asks for data.
    fn data(&mut self, _op: &mut Op, _msg: &Msg<'_>) {}

    fn complete(&mut self, done: Completion<Op>, pipe: &mut Pipeline<Op>) {
        let errno = match done.outcome {
            Outcome::Done | Outcome::Lossy => 0,
            Outcome::Errno(e) => e,
            Outcome::Expired => {
                return self.failed(done.tag, format_args!("no answer from the kernel"))
            }
            Outcome::Unsent(e) => {
                let e = std::io::Error::from_raw_os_error(e);
                return self.failed(done.tag, format_args!("{e}"));
            }
        };
        match (done.tag, errno) {
            (Op::Create { family }, 0) => {
                self.st.repairing[family.index()] = false;
                self.stats.repairs += 1;
                let set = self.cfg.set(family);
                log(format_args!(
                    "ipset: set {set} was missing and has been recreated {}",
                    crate::logger::kv(&[("event", "repair"), ("what", "set"), ("set", set)])
                ));
                self.st.effects.push(Effect::Reinstall);
            }
            // A ban retried after a repair: connections may have come back
            // while the set was missing.
            (
                Op::Add {
                    key, retried: true, ..
                },
                0,
            ) => self.st.effects.push(Effect::Kill(key)),
            (Op::Add { .. }, 0) | (Op::Del { .. }, 0) => {}
            // Unbanning something already gone (expired) is fine.
            (Op::Del { .. }, IPSET_ERR_EXIST) => {}
            // `maxelem` (`--set-size`) reached: the kernel refuses the entry
            // (entries whose timeout ran out were already reclaimed by the
            // kernel's add path). Not fatal: room comes back as bans expire.
            (Op::Add { key, .. }, IPSET_ERR_HASH_FULL) => {
                self.stats.errors += 1;
                self.stats.set_full += 1;
                if let Some(n) = self.st.full_warn.check(0, self.st.now) {
                    log(format_args!(
                        "ipset: add {key}: set {} is full (--set-size {}); bans are refused \
                         until entries expire ({} refused so far, {n} since the last message)",
                        self.cfg.set(Family::of(key)),
                        self.cfg.maxelem,
                        self.stats.set_full
                    ));
                }
            }
            (
                Op::Add {
                    key,
                    secs,
                    retried: false,
                },
                libc::ENOENT,
            ) => {
                let family = Family::of(key);
                if !self.st.repairing[family.index()] {
                    self.st.repairing[family.index()] = true;
                    self.queue(pipe, Op::Create { family });
                }
                // The kernel runs requests in order: this ADD follows the
                // CREATE.
                self.queue(
                    pipe,
                    Op::Add {
                        key,
                        secs,
                        retried: true,
                    },
                );
            }
            (op, errno) => self.failed(op, format_args!("{}", ipset::strerror(errno))),
        }
    }

    fn fault(&mut self, fault: Fault) {
        self.stats.errors += 1;
        match fault {
            Fault::Overrun(n) => log(format_args!(
                "ipset: receive queue overflowed (ENOBUFS); re-sending {n} requests"
            )),
            Fault::Malformed => log(format_args!("ipset: malformed reply")),
            Fault::Recv(e) => log(format_args!("ipset: receive: {e}")),
        }
    }
}

/// The ipset socket with its pipeline. See the module docs.
#[derive(Debug)]
pub struct Ops {
    chan: Channel<Op>,
    st: State,
}

impl Ops {
    pub fn new(sock: NlSocket, revision: [u8; 2]) -> Ops {
        Ops {
            chan: Channel::new(sock, crate::enforce::limits()),
            st: State {
                revision,
                repairing: [false; 2],
                full_warn: RateLimit::new(FULL_WARN_PERIOD),
                effects: Vec::new(),
                now: 0,
            },
        }
    }

    /// Runs `f` on the channel with its handler.
    fn with(
        &mut self,
        now: Micros,
        cfg: &KernelConfig,
        stats: &mut EnforceStats,
        f: impl FnOnce(&mut Channel<Op>, &mut H<'_>),
    ) {
        self.st.now = self.st.now.max(now);
        let mut h = H {
            cfg,
            st: &mut self.st,
            stats,
        };
        f(&mut self.chan, &mut h);
    }

    /// Queues `op` and sends what the window allows.
    pub fn send(&mut self, op: Op, now: Micros, cfg: &KernelConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| {
            h.queue(&mut c.pipe, op);
            c.pump(now, h);
        });
    }

    /// The socket is readable: handles every answer, sends what waited.
    pub fn drain(&mut self, now: Micros, cfg: &KernelConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| c.drain(now, h));
    }

    /// Drops requests past their deadline, counting each as an error.
    pub fn expire(&mut self, now: Micros, cfg: &KernelConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| c.expire(now, h));
    }

    /// What finished requests ask of the enforcer, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.st.effects)
    }

    pub fn deadline(&self) -> Option<Micros> {
        self.chan.pipe.deadline()
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.chan.pipe.in_flight()
    }

    pub fn busy(&self) -> bool {
        !self.chan.pipe.is_idle()
    }

    /// Gives up on everything; returns how many requests were abandoned.
    pub fn abandon(&mut self) -> usize {
        self.st.repairing = [false; 2];
        self.chan.pipe.abandon().len()
    }

    pub fn socket(&mut self) -> &mut NlSocket {
        &mut self.chan.sock
    }

    /// The ipset requests' round trips.
    pub fn rtt(&self) -> &crate::metrics::Histogram {
        self.chan.pipe.rtt()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.chan.sock.as_fd()
    }
}
