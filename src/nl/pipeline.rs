//! [`Pipeline`]: the one netlink request state machine every kernel user
//! of refract goes through (ipset operations, connection kills, and the
//! later netlink users of milestone 2). It does no I/O: its owner asks it
//! for the bytes of the next datagram ([`Pipeline::fill`]), sends them,
//! and feeds it every datagram it receives ([`Pipeline::receive`]); the
//! pipeline says which request each reply answers ([`Completion`]).
//! [`crate::nl::channel`] binds one to its socket for the loop.
//!
//! What it keeps, per socket:
//!
//! - an outbox of requests not yet sent, bounded by [`Limits::max_queued`]
//!   (a request beyond that is refused and counted in
//!   [`PipelineStats::dropped`], so memory stays bounded if the kernel
//!   stops answering);
//! - the requests sent and unanswered, by sequence number, at most
//!   [`Limits::window`] of them: every answer holds receive buffer until
//!   read, and a receive queue that overflows drops answers (`ENOBUFS`,
//!   `netlink(7)`);
//! - at most one dump in flight: the kernel runs one dump per socket and
//!   answers `EBUSY` to a second (`netlink_dump_start()` in
//!   `net/netlink/af_netlink.c`), so further dumps wait in the outbox while
//!   acked requests pass them.
//!
//! Batching: one datagram carries every request that fits
//! ([`Limits::max_batch_bytes`], the window). nfnetlink and sock_diag run
//! every message of a datagram (`netlink_rcv_skb()` loops over them, a dump
//! start included, `-EINTR` from it skips only that message's ack), so a
//! batch costs one `sendmsg` instead of one each. A dump is the last
//! message of its datagram: what follows it would run while the kernel
//! walks the table the dump reads.
//!
//! Replies (`include/uapi/linux/netlink.h`): `NLMSG_ERROR` with error 0 is
//! an ACK, a negative error is the request's errno; `NLMSG_DONE` ends a
//! dump, and one carrying a negative status is the dump's errno; a data
//! message belongs to the dump with its sequence number (multipart,
//! `NLM_F_MULTI`) and goes to the owner as it arrives; so does the one data
//! message that answers a [`Kind::Get`] before its ack. A reply whose
//! sequence number matches nothing in flight (answered before, expired,
//! from before a resend, a notification with seq 0) is counted in
//! [`PipelineStats::stale`] and ignored. The first malformed message ends
//! its datagram ([`crate::nl::msg::Messages`]): what was lost may include
//! a dump's data, so the running dump completes as [`Outcome::Lossy`].
//!
//! `ENOBUFS` from `recv` ([`Pipeline::overrun`]): answers were dropped and
//! nobody knows which. Every request refract sends is idempotent (ipset
//! ADD and CREATE under `IPSET_FLAG_EXIST`, DEL, `SOCK_DESTROY` and
//! conntrack DELETE of one named object: a repeat answers the same or
//! `ENOENT`), so every
//! unanswered acked request goes back to the front of the outbox, in
//! order, and is sent again under a new sequence number; late answers to
//! the old numbers are stale. A running dump is not resent (the kernel
//! flow-controls dumps: `netlink_dump()` waits for room instead of
//! dropping), but it completes as [`Outcome::Lossy`] and its owner decides
//! whether to run it again.
//!
//! A request unanswered [`Limits::timeout`] after it was sent completes as
//! [`Outcome::Expired`]. Invariants: every request pushed is, at any time,
//! in exactly one of outbox and in flight, or has been handed back in
//! exactly one [`Completion`] (or refused by `push`); sequence numbers of
//! requests in flight are distinct and never 0.

use std::collections::VecDeque;

use crate::clock::Micros;
use crate::nl::buf::NlBuf;
use crate::nl::msg::{Messages, Msg, Reply};

/// What answer a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `NLM_F_ACK`: one `NLMSG_ERROR` (0 or an errno).
    Ack,
    /// `NLM_F_DUMP`: data messages, then `NLMSG_DONE` (or an errno).
    Dump,
    /// A get of one object with `NLM_F_ACK` (a sock_diag exact lookup,
    /// `inet_diag_dump_one_icsk()`): its one data message, then the ack;
    /// or only an errno (`ENOENT`: no such object). Sent and requeued like
    /// [`Kind::Ack`] (a get is idempotent), its data goes to the owner
    /// like a dump's.
    Get,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged, or the dump ended with `NLMSG_DONE`.
    Done,
    /// The dump ended, but answers were lost while it ran (`ENOBUFS`, a
    /// malformed datagram): its data may be incomplete.
    Lossy,
    /// The kernel's errno (positive).
    Errno(i32),
    /// No answer within [`Limits::timeout`].
    Expired,
    /// `sendmsg` failed with this errno: the kernel never saw it.
    Unsent(i32),
}

/// One finished request: its owner's tag and how it ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<T> {
    pub tag: T,
    pub outcome: Outcome,
}

/// The bounds of one pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most requests in flight (a running dump counts as one).
    pub window: usize,
    /// Most requests waiting in the outbox.
    pub max_queued: usize,
    /// How long a sent request may stay unanswered.
    pub timeout: Micros,
    /// A datagram is closed once it holds this many bytes. Far below the
    /// kernel's limit (`netlink_sendmsg()`: `sk_sndbuf - 32`, about 208 KiB
    /// by default), so a message that starts below it always fits.
    pub max_batch_bytes: usize,
}

/// Counters of what the pipeline absorbed on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Requests refused because the outbox was full.
    pub dropped: u64,
    /// Replies to no request in flight.
    pub stale: u64,
    /// `ENOBUFS` reports.
    pub overruns: u64,
    /// Requests sent again after an overrun.
    pub requeued: u64,
    /// Datagrams cut short by a malformed message.
    pub malformed: u64,
    /// Requests that expired.
    pub expired: u64,
    /// Datagrams handed out by [`Pipeline::fill`].
    pub datagrams: u64,
}

#[derive(Debug)]
struct InFlight<T> {
    seq: u32,
    kind: Kind,
    deadline: Micros,
    /// Answers were lost while this dump ran.
    lossy: bool,
    tag: T,
}

/// The request pipeline of one netlink socket. See the module docs.
#[derive(Debug)]
pub struct Pipeline<T> {
    limits: Limits,
    seq: u32,
    /// [`Kind::Ack`] and [`Kind::Get`] requests, in order.
    acks: VecDeque<(T, Kind)>,
    dumps: VecDeque<T>,
    /// In send order (so deadlines never decrease along it).
    in_flight: VecDeque<InFlight<T>>,
    /// Index into `in_flight` of the first request of the last `fill`.
    batch_start: usize,
    stats: PipelineStats,
    /// Sent → answered, per request (the owner says when "now" is:
    /// [`Pipeline::received_at`]).
    rtt: crate::metrics::Histogram,
    /// When the datagram being fed was received.
    clock: Micros,
}

impl<T> Pipeline<T> {
    /// An empty pipeline whose first request gets `first_seq + 1` (0 is
    /// skipped: kernel notifications carry seq 0).
    pub fn new(limits: Limits, first_seq: u32) -> Pipeline<T> {
        Pipeline {
            limits,
            seq: first_seq,
            acks: VecDeque::new(),
            dumps: VecDeque::new(),
            in_flight: VecDeque::new(),
            batch_start: 0,
            stats: PipelineStats::default(),
            rtt: crate::metrics::Histogram::new(crate::metrics::LATENCY_BOUNDS),
            clock: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// The round trips of the requests answered so far: sent (the `now` of
    /// [`Pipeline::fill`]) to answered (the time given to
    /// [`Pipeline::received_at`] before the answer was fed).
    pub fn rtt(&self) -> &crate::metrics::Histogram {
        &self.rtt
    }

    /// The datagrams fed next were received at `now`.
    pub fn received_at(&mut self, now: Micros) {
        self.clock = now;
    }

    /// Requests waiting to be sent.
    pub fn queued(&self) -> usize {
        self.acks.len() + self.dumps.len()
    }

    /// Requests sent and unanswered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Nothing queued, nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.acks.is_empty() && self.dumps.is_empty()
    }

    /// Whether a dump is in flight.
    pub fn dumping(&self) -> bool {
        self.in_flight.iter().any(|p| p.kind == Kind::Dump)
    }

    /// Whether requests wait because [`Limits::window`] are in flight
    /// (not merely because a dump waits behind the running one).
    pub fn window_full(&self) -> bool {
        self.queued() > 0 && self.in_flight.len() >= self.limits.window
    }

    /// Queues a request at the back of the outbox; refused (and counted in
    /// `dropped`) when [`Limits::max_queued`] are already waiting.
    pub fn push(&mut self, tag: T, kind: Kind) -> Result<(), T> {
        if self.queued() >= self.limits.max_queued {
            self.stats.dropped += 1;
            return Err(tag);
        }
        match kind {
            Kind::Ack | Kind::Get => self.acks.push_back((tag, kind)),
            Kind::Dump => self.dumps.push_back(tag),
        }
        Ok(())
    }

    /// Queues a request at the front of the outbox, past the bound: for a
    /// request that replaces one that just completed (a dump run again, a
    /// retry), so the number of units of work does not grow.
    pub fn push_front(&mut self, tag: T, kind: Kind) {
        match kind {
            Kind::Ack | Kind::Get => self.acks.push_front((tag, kind)),
            Kind::Dump => self.dumps.push_front(tag),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Writes the next datagram into `buf` (cleared first): acked requests
    /// in outbox order while the window and [`Limits::max_batch_bytes`]
    /// allow, then at most one dump when none is running. `emit` appends
    /// one request's message with the sequence number given. Returns how
    /// many requests the datagram holds (0: nothing to send now). They
    /// count as in flight from `now`; if sending fails, hand them back
    /// with [`Pipeline::unsent`].
    pub fn fill(
        &mut self,
        now: Micros,
        buf: &mut NlBuf,
        mut emit: impl FnMut(&T, &mut NlBuf, u32),
    ) -> usize {
        buf.clear();
        self.batch_start = self.in_flight.len();
        let deadline = now.saturating_add(self.limits.timeout);
        let mut n = 0;
        while self.in_flight.len() < self.limits.window
            && buf.as_bytes().len() < self.limits.max_batch_bytes
        {
            let (tag, kind) = if let Some(front) = self.acks.pop_front() {
                front
            } else if !self.dumping() {
                match self.dumps.pop_front() {
                    Some(tag) => (tag, Kind::Dump),
                    None => break,
                }
            } else {
                break;
            };
            let seq = self.next_seq();
            emit(&tag, buf, seq);
            self.in_flight.push_back(InFlight {
                seq,
                kind,
                deadline,
                lossy: false,
                tag,
            });
            n += 1;
            if kind == Kind::Dump {
                break; // the dump ends its datagram (module docs)
            }
        }
        if n > 0 {
            self.stats.datagrams += 1;
        }
        n
    }

    /// The datagram of the last [`Pipeline::fill`] could not be sent
    /// (`errno`): its requests complete as [`Outcome::Unsent`].
    pub fn unsent(&mut self, errno: i32, out: &mut Vec<Completion<T>>) {
        let at = self.batch_start.min(self.in_flight.len());
        for p in self.in_flight.drain(at..) {
            out.push(Completion {
                tag: p.tag,
                outcome: Outcome::Unsent(errno),
            });
        }
    }

    fn position(&self, seq: u32) -> Option<usize> {
        // Answers come in send order nearly always: the front first.
        if self.in_flight.front().is_some_and(|p| p.seq == seq) {
            return Some(0);
        }
        self.in_flight.iter().position(|p| p.seq == seq)
    }

    fn finish(&mut self, seq: u32, errno: i32, out: &mut Vec<Completion<T>>) {
        let Some(i) = self.position(seq) else {
            self.stats.stale += 1;
            return;
        };
        let p = self.in_flight.remove(i).expect("index from position");
        let sent = p.deadline.saturating_sub(self.limits.timeout);
        self.rtt.observe_micros(self.clock.saturating_sub(sent));
        let outcome = match (errno, p.kind, p.lossy) {
            (0, Kind::Dump, true) => Outcome::Lossy,
            (0, _, _) => Outcome::Done,
            (e, _, _) => Outcome::Errno(e),
        };
        out.push(Completion {
            tag: p.tag,
            outcome,
        });
    }

    /// Feeds one received datagram. Data messages of a running dump go to
    /// `data` with that dump's tag as they are read; finished requests are
    /// appended to `out`.
    pub fn receive(
        &mut self,
        datagram: &[u8],
        mut data: impl FnMut(&mut T, &Msg<'_>),
        out: &mut Vec<Completion<T>>,
    ) {
        for reply in Messages::new(datagram) {
            match reply {
                Ok(Reply::Data(m)) => {
                    match self.position(m.seq).map(|i| &mut self.in_flight[i]) {
                        Some(p) if p.kind != Kind::Ack => data(&mut p.tag, &m),
                        // Data for an acked request: nothing we send asks
                        // for it (an echo, a notification).
                        Some(_) => {}
                        None => self.stats.stale += 1,
                    }
                }
                Ok(Reply::Ack(seq)) | Ok(Reply::Done(seq)) => self.finish(seq, 0, out),
                Ok(Reply::Error { seq, errno }) => self.finish(seq, errno, out),
                Err(_) => {
                    self.stats.malformed += 1;
                    self.mark_dumps_lossy();
                    return;
                }
            }
        }
    }

    fn mark_dumps_lossy(&mut self) {
        for p in self.in_flight.iter_mut().filter(|p| p.kind == Kind::Dump) {
            p.lossy = true;
        }
    }

    /// `recv` said `ENOBUFS`: every acked request in flight goes back to
    /// the front of the outbox in its order (to be sent again under a new
    /// sequence number); a running dump stays and will complete as
    /// [`Outcome::Lossy`]. Returns how many requests were requeued.
    pub fn overrun(&mut self) -> usize {
        self.stats.overruns += 1;
        self.mark_dumps_lossy();
        let mut n = 0;
        let mut keep = VecDeque::new();
        while let Some(p) = self.in_flight.pop_back() {
            match p.kind {
                Kind::Ack | Kind::Get => {
                    self.acks.push_front((p.tag, p.kind));
                    n += 1;
                }
                Kind::Dump => keep.push_front(p),
            }
        }
        self.in_flight = keep;
        self.batch_start = self.in_flight.len();
        self.stats.requeued += n as u64;
        n
    }

    /// When the oldest request in flight expires.
    pub fn deadline(&self) -> Option<Micros> {
        self.in_flight.iter().map(|p| p.deadline).min()
    }

    /// Completes every request in flight whose deadline is at or before
    /// `now` as [`Outcome::Expired`].
    pub fn expire(&mut self, now: Micros, out: &mut Vec<Completion<T>>) {
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].deadline <= now {
                let p = self.in_flight.remove(i).expect("index checked");
                self.stats.expired += 1;
                out.push(Completion {
                    tag: p.tag,
                    outcome: Outcome::Expired,
                });
            } else {
                i += 1;
            }
        }
        self.batch_start = self.batch_start.min(self.in_flight.len());
    }

    /// Gives up on everything (shutdown): every request in flight and
    /// queued, in that order.
    pub fn abandon(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.in_flight.drain(..).map(|p| p.tag).collect();
        all.extend(self.acks.drain(..).map(|(t, _)| t));
        all.extend(self.dumps.drain(..));
        self.batch_start = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::consts::{NLMSG_DONE, NLMSG_ERROR, NLM_F_MULTI};

    const LIMITS: Limits = Limits {
        window: 4,
        max_queued: 8,
        timeout: 1000,
        max_batch_bytes: 4096,
    };

    /// A request is a 20-byte message of type 0x10 carrying its tag.
    fn emit(tag: &u32, buf: &mut NlBuf, seq: u32) {
        buf.message(0x10, 0x05, seq, |b| b.put_u32(*tag));
    }

    /// The (tag, seq) pairs of a datagram `fill` wrote.
    fn sent(buf: &NlBuf) -> Vec<(u32, u32)> {
        Messages::new(buf.as_bytes())
            .map(|r| match r {
                Ok(Reply::Data(m)) => (
                    u32::from_ne_bytes(m.payload[..4].try_into().unwrap()),
                    m.seq,
                ),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn ack(b: &mut NlBuf, seq: u32, errno: i32) {
        b.message(NLMSG_ERROR, 0, seq, |b| {
            b.put(&(-errno).to_ne_bytes());
            b.put(&[0; 16]); // the request's header
        });
    }

    fn done(b: &mut NlBuf, seq: u32, status: i32) {
        b.message(NLMSG_DONE, NLM_F_MULTI, seq, |b| {
            b.put(&status.to_ne_bytes())
        });
    }

    fn data(b: &mut NlBuf, seq: u32, v: u32) {
        b.message(0x20, NLM_F_MULTI, seq, |b| b.put_u32(v));
    }

    /// (tag, outcome) of each completion; (dump tag, value) of each data
    /// message.
    type Fed = (Vec<(u32, Outcome)>, Vec<(u32, u32)>);

    /// Feeds `b`; returns the completions and the data values seen, each
    /// with the tag of the dump it went to.
    fn feed(p: &mut Pipeline<u32>, b: &NlBuf) -> Fed {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        p.receive(
            b.as_bytes(),
            |tag, m| seen.push((*tag, u32::from_ne_bytes(m.payload[..4].try_into().unwrap()))),
            &mut out,
        );
        (out.into_iter().map(|c| (c.tag, c.outcome)).collect(), seen)
    }

    #[test]
    fn batches_up_to_the_window_and_matches_acks_in_any_order() {
        let mut p = Pipeline::new(LIMITS, 100);
        for t in 1..=6 {
            p.push(t, Kind::Ack).unwrap();
        }
        let mut buf = NlBuf::new();
        assert_eq!(p.fill(0, &mut buf, emit), 4);
        assert_eq!(sent(&buf), [(1, 101), (2, 102), (3, 103), (4, 104)]);
        assert!(p.window_full());
        assert_eq!(p.fill(0, &mut buf, emit), 0, "window full");
        // Answers out of order, one an errno.
        let mut r = NlBuf::new();
        ack(&mut r, 103, 0);
        ack(&mut r, 101, libc::ENOENT);
        let (got, _) = feed(&mut p, &r);
        assert_eq!(got, [(3, Outcome::Done), (1, Outcome::Errno(libc::ENOENT))]);
        assert_eq!(p.in_flight(), 2);
        // Two slots free: the rest goes out in one datagram.
        assert_eq!(p.fill(5, &mut buf, emit), 2);
        assert_eq!(sent(&buf), [(5, 105), (6, 106)]);
        assert_eq!(p.stats().datagrams, 2);
    }

    #[test]
    fn a_get_passes_its_data_on_ends_with_its_ack_and_is_resent_after_an_overrun() {
        let mut p = Pipeline::new(LIMITS, 0);
        p.push(1, Kind::Dump).unwrap();
        for t in 2..=4 {
            p.push(t, Kind::Get).unwrap();
        }
        let mut buf = NlBuf::new();
        // Gets go ahead of the dump and share its datagram, like acks.
        assert_eq!(p.fill(0, &mut buf, emit), 4);
        assert_eq!(sent(&buf), [(2, 1), (3, 2), (4, 3), (1, 4)]);
        let mut r = NlBuf::new();
        data(&mut r, 1, 20); // the get's one answer (not multipart)
        ack(&mut r, 1, 0);
        ack(&mut r, 2, libc::ENOENT); // no such socket: no data
        data(&mut r, 4, 10); // the dump's
        let (got, seen) = feed(&mut p, &r);
        assert_eq!(got, [(2, Outcome::Done), (3, Outcome::Errno(libc::ENOENT))]);
        assert_eq!(seen, [(2, 20), (1, 10)]);
        // ENOBUFS: the unanswered get goes back, the dump stays.
        assert_eq!(p.overrun(), 1);
        assert_eq!(p.fill(1, &mut buf, emit), 1);
        assert_eq!(sent(&buf), [(4, 5)]);
        r = NlBuf::new();
        data(&mut r, 5, 40);
        ack(&mut r, 5, 0);
        done(&mut r, 4, 0);
        let (got, seen) = feed(&mut p, &r);
        assert_eq!(got, [(4, Outcome::Done), (1, Outcome::Lossy)]);
        assert_eq!(seen, [(4, 40)]);
        assert!(p.is_idle());
    }

    #[test]
    fn round_trips_are_measured_from_send_to_answer() {
        let mut p = Pipeline::new(LIMITS, 0);
        p.push(1, Kind::Ack).unwrap();
        p.push(2, Kind::Ack).unwrap();
        let mut buf = NlBuf::new();
        p.fill(100, &mut buf, emit);
        let mut r = NlBuf::new();
        ack(&mut r, 1, 0);
        p.received_at(350);
        feed(&mut p, &r);
        r = NlBuf::new();
        ack(&mut r, 2, 0);
        p.received_at(1100);
        feed(&mut p, &r);
        let mut want = crate::metrics::Histogram::new(crate::metrics::LATENCY_BOUNDS);
        want.observe_micros(250);
        want.observe_micros(1000);
        assert_eq!(p.rtt(), &want);
    }

    #[test]
    fn a_partial_batch_leaves_the_rest_in_flight_until_answered_or_expired() {
        let mut p = Pipeline::new(LIMITS, 0);
        for t in 1..=3 {
            p.push(t, Kind::Ack).unwrap();
        }
        let mut buf = NlBuf::new();
        assert_eq!(p.fill(10, &mut buf, emit), 3);
        assert_eq!(sent(&buf)[0], (1, 1), "seq 0 is never used");
        let mut r = NlBuf::new();
        ack(&mut r, 2, 0);
        assert_eq!(feed(&mut p, &r).0, [(2, Outcome::Done)]);
        assert_eq!(p.deadline(), Some(1010));
        let mut out = Vec::new();
        p.expire(1009, &mut out);
        assert!(out.is_empty());
        p.expire(1010, &mut out);
        let got: Vec<_> = out.iter().map(|c| (c.tag, c.outcome)).collect();
        assert_eq!(got, [(1, Outcome::Expired), (3, Outcome::Expired)]);
        assert!(p.is_idle());
        assert_eq!(p.stats().expired, 2);
        // A late answer to an expired request is stale.
        ack(&mut r, 1, 0);
        assert!(feed(&mut p, &r).0.is_empty());
        assert_eq!(p.stats().stale, 2); // seq 2 again, and seq 1
    }

    #[test]
    fn unknown_sequence_numbers_and_notifications_are_ignored() {
        let mut p = Pipeline::new(LIMITS, 7);
        p.push(1, Kind::Ack).unwrap();
        let mut buf = NlBuf::new();
        p.fill(0, &mut buf, emit);
        let mut r = NlBuf::new();
        ack(&mut r, 99, 0);
        data(&mut r, 0, 5); // a multicast notification
        done(&mut r, 1234, 0);
        ack(&mut r, 8, 0);
        let (got, seen) = feed(&mut p, &r);
        assert_eq!(got, [(1, Outcome::Done)]);
        assert!(seen.is_empty());
        assert_eq!(p.stats().stale, 3);
    }

    #[test]
    fn a_dump_collects_its_multipart_data_until_done() {
        let mut p = Pipeline::new(LIMITS, 0);
        p.push(50, Kind::Dump).unwrap();
        p.push(1, Kind::Ack).unwrap();
        let mut buf = NlBuf::new();
        // The acked request goes first; the dump closes the datagram.
        assert_eq!(p.fill(0, &mut buf, emit), 2);
        assert_eq!(sent(&buf), [(1, 1), (50, 2)]);
        let mut r = NlBuf::new();
        data(&mut r, 2, 10);
        ack(&mut r, 1, 0);
        data(&mut r, 2, 11);
        let (got, seen) = feed(&mut p, &r);
        assert_eq!(got, [(1, Outcome::Done)]);
        assert_eq!(seen, [(50, 10), (50, 11)]);
        r.clear();
        data(&mut r, 2, 12);
        done(&mut r, 2, 0);
        let (got, seen) = feed(&mut p, &r);
        assert_eq!(seen, [(50, 12)]);
        assert_eq!(got, [(50, Outcome::Done)]);
        assert!(p.is_idle());
    }

    #[test]
    fn nlmsg_done_with_a_negative_status_is_the_dumps_errno() {
        let mut p = Pipeline::new(LIMITS, 0);
        p.push(50, Kind::Dump).unwrap();
        let mut buf = NlBuf::new();
        p.fill(0, &mut buf, emit);
        let mut r = NlBuf::new();
        done(&mut r, 1, -libc::EINVAL);
        assert_eq!(feed(&mut p, &r).0, [(50, Outcome::Errno(libc::EINVAL))]);
    }

    #[test]
    fn one_dump_at_a_time_while_acked_requests_pass_the_waiting_one() {
        let mut p = Pipeline::new(LIMITS, 0);
        p.push(50, Kind::Dump).unwrap();
        p.push(51, Kind::Dump).unwrap();
        let mut buf = NlBuf::new();
        assert_eq!(p.fill(0, &mut buf, emit), 1);
        assert_eq!(sent(&buf), [(50, 1)]);
        assert!(p.dumping() && !p.window_full());
        assert_eq!(
            p.fill(0, &mut buf, emit),
            0,
            "a second dump would get EBUSY"
        );
        p.push(1, Kind::Ack).unwrap();
        assert_eq!(p.fill(0, &mut buf, emit), 1);
        assert_eq!(sent(&buf), [(1, 2)]);
        let mut r = NlBuf::new();
        done(&mut r, 1, 0);
        assert_eq!(feed(&mut p, &r).0, [(50, Outcome::Done)]);
        assert_eq!(p.fill(0, &mut buf, emit), 1);
        assert_eq!(sent(&buf), [(51, 3)]);
    }

    #[test]
    fn overrun_mid_dump_requeues_the_acked_requests_and_marks_the_dump() {
        let mut p = Pipeline::new(LIMITS, 0);
        for t in 1..=3 {
            p.push(t, Kind::Ack).unwrap();
        }
        p.push(50, Kind::Dump).unwrap();
        let mut buf = NlBuf::new();
        assert_eq!(p.fill(0, &mut buf, emit), 4);
        assert_eq!(sent(&buf), [(1, 1), (2, 2), (3, 3), (50, 4)]);
        let mut r = NlBuf::new();
        data(&mut r, 4, 10);
        ack(&mut r, 2, 0);
        let (got, seen) = feed(&mut p, &r);
        assert_eq!((got, seen), (vec![(2, Outcome::Done)], vec![(50, 10)]));
        // Answers to 1 and 3 were dropped.
        assert_eq!(p.overrun(), 2);
        assert_eq!((p.in_flight(), p.queued()), (1, 2));
        // Resent in order under new numbers, beside the running dump.
        assert_eq!(p.fill(1, &mut buf, emit), 2);
        assert_eq!(sent(&buf), [(1, 5), (3, 6)]);
        r.clear();
        ack(&mut r, 1, 0); // late answer of the lost round: stale
        data(&mut r, 4, 11);
        done(&mut r, 4, 0);
        ack(&mut r, 6, 0);
        ack(&mut r, 5, libc::ENOENT);
        let (got, seen) = feed(&mut p, &r);
        assert_eq!(seen, [(50, 11)]);
        assert_eq!(
            got,
            [
                (50, Outcome::Lossy),
                (3, Outcome::Done),
                (1, Outcome::Errno(libc::ENOENT))
            ]
        );
        assert!(p.is_idle());
        let s = p.stats();
        assert_eq!((s.overruns, s.requeued, s.stale), (1, 2, 1));
    }

    #[test]
    fn a_malformed_datagram_stops_there_and_makes_the_dump_lossy() {
        let mut p = Pipeline::new(LIMITS, 0);
        p.push(50, Kind::Dump).unwrap();
        let mut buf = NlBuf::new();
        p.fill(0, &mut buf, emit);
        let mut r = NlBuf::new();
        data(&mut r, 1, 10);
        let mut bytes = r.as_bytes().to_vec();
        bytes.extend_from_slice(&[200, 0, 0, 0, 0, 0, 0, 0]); // bad header
        let mut out = Vec::new();
        let mut seen = 0;
        p.receive(&bytes, |_, _| seen += 1, &mut out);
        assert_eq!((seen, out.len(), p.stats().malformed), (1, 0, 1));
        r.clear();
        done(&mut r, 1, 0);
        assert_eq!(feed(&mut p, &r).0, [(50, Outcome::Lossy)]);
    }

    #[test]
    fn the_outbox_is_bounded_and_refusals_are_counted() {
        let mut p = Pipeline::new(LIMITS, 0);
        for t in 0..8 {
            p.push(t, Kind::Ack).unwrap();
        }
        assert_eq!(p.push(8, Kind::Ack), Err(8));
        assert_eq!(p.push(9, Kind::Dump), Err(9));
        assert_eq!(p.stats().dropped, 2);
        // A replacement goes to the front, past the bound.
        p.push_front(100, Kind::Ack);
        let mut buf = NlBuf::new();
        p.fill(0, &mut buf, emit);
        assert_eq!(sent(&buf)[0], (100, 1));
    }

    #[test]
    fn a_failed_send_hands_back_exactly_that_datagram() {
        let mut p = Pipeline::new(LIMITS, 0);
        for t in 1..=5 {
            p.push(t, Kind::Ack).unwrap();
        }
        let mut buf = NlBuf::new();
        p.fill(0, &mut buf, emit); // 1..=4 in flight
        let mut r = NlBuf::new();
        ack(&mut r, 1, 0);
        feed(&mut p, &r);
        assert_eq!(p.fill(0, &mut buf, emit), 1); // 5
        let mut out = Vec::new();
        p.unsent(libc::ENOBUFS, &mut out);
        let got: Vec<_> = out.iter().map(|c| (c.tag, c.outcome)).collect();
        assert_eq!(got, [(5, Outcome::Unsent(libc::ENOBUFS))]);
        assert_eq!(p.in_flight(), 3);
    }

    #[test]
    fn datagrams_close_at_the_byte_bound() {
        let limits = Limits {
            window: 100,
            max_batch_bytes: 50, // a request is 20 bytes
            ..LIMITS
        };
        let mut p = Pipeline::new(limits, 0);
        for t in 0..5 {
            p.push(t, Kind::Ack).unwrap();
        }
        let mut buf = NlBuf::new();
        assert_eq!(p.fill(0, &mut buf, emit), 3); // 0, 20, 40 < 50
        assert_eq!(p.fill(0, &mut buf, emit), 2);
    }

    #[test]
    fn abandon_returns_everything_once() {
        let mut p = Pipeline::new(LIMITS, 0);
        for t in 1..=6 {
            p.push(t, Kind::Ack).unwrap();
        }
        p.push(50, Kind::Dump).unwrap();
        let mut buf = NlBuf::new();
        p.fill(0, &mut buf, emit);
        assert_eq!(p.abandon(), [1, 2, 3, 4, 5, 6, 50]);
        assert!(p.is_idle());
    }
}
