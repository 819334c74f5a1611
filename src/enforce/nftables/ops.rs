//! nftables requests from the loop, each one batch in one datagram
//! ([`crate::nl::nftables`]): the turn's element additions per family, a
//! deletion per unban, and the repair that rebuilds refract's table.
//!
//! Answers:
//!
//! - ACK: done.
//! - `ENOENT` on an addition: the table or set vanished. Repair (below).
//! - `ENFILE` on an addition: the set holds `--set-size` elements; the
//!   whole batch was refused, so a batch of several elements is split into
//!   one batch per element, and each refused one is counted in `set_full`
//!   (logged once per [`FULL_WARN_PERIOD`]). Room comes back as bans expire.
//! - `ENOENT` on a deletion: already gone (expired); fine.
//! - anything else, no answer in time, a failed send: logged, counted.
//!
//! Repair: refract remembers every ban it sent with its end
//! ([`Ops::remember`]); a repair sends the keep-or-create batch
//! ([`super::ensure`]) and then every remembered ban that has time left,
//! with that time. A rebuild that fails (an object of ours with the wrong
//! shape) is tried once more as a fresh table. One repair at a time; a
//! request for another while one runs is done after it.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};

use crate::clock::{Micros, SECOND};
use crate::enforce::EnforceStats;
use crate::key::Key;
use crate::logger::RateLimit;
use crate::nl::buf::NlBuf;
use crate::nl::channel::{Channel, Fault, Handler};
use crate::nl::msg::Msg;
use crate::nl::pipeline::{Completion, Kind, Limits, Outcome, Pipeline};
use crate::nl::socket::NlSocket;

use super::{elems_batch, ensure, log, NftConfig, ELEMS_PER_MSG};

/// A full set is reported once per this period.
pub const FULL_WARN_PERIOD: Micros = 10 * 60 * SECOND;

/// One nftables request (one batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Elements with their timeouts in ms, all of one family.
    Add {
        v6: bool,
        elems: Vec<(Key, u64)>,
    },
    Del {
        key: Key,
    },
    /// The table made right; `fresh`: deleted and created again.
    Ensure {
        fresh: bool,
    },
}

fn describe(op: &Op) -> String {
    match op {
        Op::Add { v6, elems } => format!(
            "add {} element(s) to {}",
            elems.len(),
            if *v6 { super::SET_V6 } else { super::SET_V4 }
        ),
        Op::Del { key } => format!("delete {key}"),
        Op::Ensure { fresh: false } => format!("rebuild table inet {}", super::TABLE),
        Op::Ensure { fresh: true } => format!("recreate table inet {}", super::TABLE),
    }
}

#[derive(Debug)]
struct State {
    /// Bans sent, with the time each ends (for repairs).
    known: HashMap<Key, Micros>,
    /// `known`'s size after its last pruning.
    pruned_at: usize,
    repairing: bool,
    /// Another repair was asked for while one ran.
    again: bool,
    full_warn: RateLimit<1>,
    now: Micros,
}

impl State {
    /// Every remembered ban with time left, as additions.
    fn known_adds(&mut self) -> Vec<Op> {
        let now = self.now;
        self.known.retain(|_, end| *end > now);
        self.pruned_at = self.known.len();
        let mut ops = Vec::new();
        for v6 in [false, true] {
            let elems: Vec<(Key, u64)> = self
                .known
                .iter()
                .filter(|(k, _)| k.is_v4() != v6)
                .map(|(k, end)| (*k, ((end - now) / 1000).max(1)))
                .collect();
            for c in elems.chunks(ELEMS_PER_MSG) {
                ops.push(Op::Add {
                    v6,
                    elems: c.to_vec(),
                });
            }
        }
        ops
    }
}

struct H<'a> {
    cfg: &'a NftConfig,
    st: &'a mut State,
    stats: &'a mut EnforceStats,
}

impl H<'_> {
    fn queue(&mut self, pipe: &mut Pipeline<Op>, op: Op) {
        if let Err(op) = pipe.push(op, Kind::Ack) {
            if matches!(op, Op::Ensure { .. }) {
                self.st.repairing = false;
            }
            self.stats.errors += 1;
            log(format_args!(
                "nftables: {}: dropped, {} requests already waiting to be sent",
                describe(&op),
                pipe.limits().max_queued
            ));
        }
    }

    fn repair(&mut self, pipe: &mut Pipeline<Op>) {
        if self.st.repairing {
            self.st.again = true;
            return;
        }
        self.st.repairing = true;
        self.queue(pipe, Op::Ensure { fresh: false });
    }

    fn failed(&mut self, op: &Op, why: fmt::Arguments<'_>) {
        if matches!(op, Op::Ensure { .. }) {
            self.st.repairing = false;
        }
        self.stats.errors += 1;
        log(format_args!("nftables: {}: {why}", describe(op)));
    }
}

impl Handler<Op> for H<'_> {
    fn emit(&mut self, op: &Op, buf: &mut NlBuf, seq: u32) {
        match op {
            Op::Add { v6, elems } => elems_batch(buf, seq, *v6, true, elems),
            Op::Del { key } => elems_batch(buf, seq, !key.is_v4(), false, &[(*key, 0)]),
            Op::Ensure { fresh } => ensure(buf, seq, self.cfg, *fresh),
        }
    }

    fn data(&mut self, _op: &mut Op, _msg: &Msg<'_>) {}

    fn complete(&mut self, done: Completion<Op>, pipe: &mut Pipeline<Op>) {
        let errno = match done.outcome {
            Outcome::Done | Outcome::Lossy => 0,
            Outcome::Errno(e) => e,
            Outcome::Expired => {
                return self.failed(&done.tag, format_args!("no answer from the kernel"))
            }
            Outcome::Unsent(e) => {
                let e = std::io::Error::from_raw_os_error(e);
                return self.failed(&done.tag, format_args!("{e}"));
            }
        };
        match (done.tag, errno) {
            (Op::Ensure { .. }, 0) => {
                self.stats.repairs += 1;
                log(format_args!(
                    "nftables: table inet {} was changed behind our back and has been rebuilt {}",
                    super::TABLE,
                    crate::logger::kv(&[("event", "repair"), ("what", "table")])
                ));
                for op in self.st.known_adds() {
                    self.queue(pipe, op);
                }
                self.st.repairing = false;
                if std::mem::take(&mut self.st.again) {
                    self.repair(pipe);
                }
            }
            (Op::Ensure { fresh: false }, e) => {
                let e = std::io::Error::from_raw_os_error(e);
                log(format_args!(
                    "nftables: rebuild table inet {}: {e}; recreating it",
                    super::TABLE
                ));
                self.queue(pipe, Op::Ensure { fresh: true });
            }
            (Op::Add { .. }, 0) | (Op::Del { .. }, 0) | (Op::Del { .. }, libc::ENOENT) => {}
            (Op::Add { .. }, libc::ENOENT) => self.repair(pipe),
            (Op::Add { v6, elems }, libc::ENFILE) if elems.len() > 1 => {
                for e in elems {
                    self.queue(pipe, Op::Add { v6, elems: vec![e] });
                }
            }
            (Op::Add { elems, .. }, libc::ENFILE) => {
                self.stats.errors += 1;
                self.stats.set_full += 1;
                if let Some(n) = self.st.full_warn.check(0, self.st.now) {
                    let key = elems.first().map(|e| e.0.to_string()).unwrap_or_default();
                    log(format_args!(
                        "nftables: add {key}: set is full (--set-size {}); bans are refused \
                         until elements expire ({} refused so far, {n} since the last message)",
                        self.cfg.set_size, self.stats.set_full
                    ));
                }
            }
            (op, e) => {
                let e = std::io::Error::from_raw_os_error(e);
                self.failed(&op, format_args!("{e}"))
            }
        }
    }

    fn fault(&mut self, fault: Fault) {
        self.stats.errors += 1;
        match fault {
            Fault::Overrun(n) => log(format_args!(
                "nftables: receive queue overflowed (ENOBUFS); re-sending {n} requests"
            )),
            Fault::Malformed => log(format_args!("nftables: malformed reply")),
            Fault::Recv(e) => log(format_args!("nftables: receive: {e}")),
        }
    }
}

/// The pipeline bounds of the nftables socket: the enforcer's, except
/// that a datagram holds exactly one request (the kernel runs one batch
/// per datagram, and each request is a batch).
pub fn limits() -> Limits {
    Limits {
        max_batch_bytes: 1,
        ..crate::enforce::limits()
    }
}

/// The nftables socket with its pipeline. See the module docs.
#[derive(Debug)]
pub struct Ops {
    chan: Channel<Op>,
    st: State,
}

impl Ops {
    pub fn new(sock: NlSocket) -> Ops {
        Ops {
            chan: Channel::new(sock, limits()),
            st: State {
                known: HashMap::new(),
                pruned_at: 0,
                repairing: false,
                again: false,
                full_warn: RateLimit::new(FULL_WARN_PERIOD),
                now: 0,
            },
        }
    }

    fn with(
        &mut self,
        now: Micros,
        cfg: &NftConfig,
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

    /// Remembers a ban until `end` (for repairs). Expired entries are
    /// pruned whenever the map has doubled since the last pruning, so it
    /// stays within twice the bans in force.
    pub fn remember(&mut self, key: Key, end: Micros) {
        self.st.known.insert(key, end);
        if self.st.known.len() > 2 * self.st.pruned_at.max(1024) {
            let now = self.st.now;
            self.st.known.retain(|_, e| *e > now);
            self.st.pruned_at = self.st.known.len();
        }
    }

    pub fn forget(&mut self, key: Key) {
        self.st.known.remove(&key);
    }

    /// Queues `op` without sending.
    pub fn push(&mut self, op: Op, cfg: &NftConfig, stats: &mut EnforceStats) {
        let now = self.st.now;
        self.with(now, cfg, stats, |c, h| h.queue(&mut c.pipe, op));
    }

    /// Sends what the window allows.
    pub fn pump(&mut self, now: Micros, cfg: &NftConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| c.pump(now, h));
    }

    /// Rebuilds the table with the bans still in force (module docs).
    pub fn repair(&mut self, now: Micros, cfg: &NftConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| {
            h.repair(&mut c.pipe);
            c.pump(now, h);
        });
    }

    pub fn drain(&mut self, now: Micros, cfg: &NftConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| c.drain(now, h));
    }

    pub fn expire(&mut self, now: Micros, cfg: &NftConfig, stats: &mut EnforceStats) {
        self.with(now, cfg, stats, |c, h| c.expire(now, h));
    }

    pub fn deadline(&self) -> Option<Micros> {
        self.chan.pipe.deadline()
    }

    pub fn busy(&self) -> bool {
        !self.chan.pipe.is_idle()
    }

    pub fn abandon(&mut self) -> usize {
        self.st.repairing = false;
        self.chan.pipe.abandon().len()
    }

    pub fn socket(&mut self) -> &mut NlSocket {
        &mut self.chan.sock
    }

    pub fn rtt(&self) -> &crate::metrics::Histogram {
        self.chan.pipe.rtt()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.chan.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_re_adds_the_bans_in_force_with_their_time_left() {
        let mut st = State {
            known: HashMap::new(),
            pruned_at: 0,
            repairing: false,
            again: false,
            full_warn: RateLimit::new(FULL_WARN_PERIOD),
            now: 100 * SECOND,
        };
        let k4 = Key::V4("192.0.2.7".parse().unwrap());
        let gone = Key::V4("192.0.2.8".parse().unwrap());
        let k6 = Key::new("2001:db8::1".parse().unwrap(), 64);
        st.known.insert(k4, 130 * SECOND);
        st.known.insert(gone, 90 * SECOND);
        st.known.insert(k6, 101 * SECOND);
        for i in 0..(ELEMS_PER_MSG as u32 + 1) {
            st.known
                .insert(Key::V4((0x0a00_0000 + i).into()), 200 * SECOND);
        }
        let ops = st.known_adds();
        assert!(!st.known.contains_key(&gone), "expired bans are pruned");
        // v4: ELEMS_PER_MSG + 2 elements in two messages; v6: one.
        assert_eq!(ops.len(), 3, "{}", ops.len());
        let all: Vec<(Key, u64)> = ops
            .iter()
            .flat_map(|op| match op {
                Op::Add { elems, .. } => elems.clone(),
                _ => panic!("{op:?}"),
            })
            .collect();
        assert!(all.contains(&(k4, 30_000)));
        assert!(all.contains(&(k6, 1_000)));
        assert!(matches!(&ops[2], Op::Add { v6: true, elems } if elems == &[(k6, 1_000)]));
    }
}
