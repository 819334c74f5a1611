//! [`Channel`]: a [`Pipeline`] bound to its non-blocking [`NlSocket`], the
//! send/receive glue every netlink user in the loop shares. Nothing here
//! blocks: a send that the kernel refuses and a receive queue that is
//! empty both return at once.
//!
//! The owner implements [`Handler`]: how a request is written, what a
//! dump's data messages mean, and what a finished request does (it may
//! queue more requests into the pipeline it is given; the channel sends
//! them on its next round, so handlers never re-enter the channel).
//!
//! nfnetlink and sock_diag run requests inside `sendmsg` and queue their
//! answers before it returns, so a full window is freed by reading right
//! after sending ([`Channel::pump`]); a burst is not held back until the
//! loop reports the socket readable.

use std::io;

use crate::clock::Micros;
use crate::nl::buf::NlBuf;
use crate::nl::msg::Msg;
use crate::nl::pipeline::{Completion, Limits, Pipeline};
use crate::nl::socket::NlSocket;

/// Rounds of send-and-read one call may make. Each round sends at least
/// one datagram or reads at least one answer, so this bounds the work of
/// one call (a million requests at the usual window), not its progress:
/// what is left waits for the next call.
const MAX_ROUNDS: usize = 8192;

/// Datagrams read per [`Channel::drain`] before returning to the loop.
const MAX_READS: usize = 100_000;

/// Something the channel absorbed that its owner counts and logs.
#[derive(Debug)]
pub enum Fault {
    /// `ENOBUFS`: the receive queue overflowed; this many requests were
    /// queued to be sent again.
    Overrun(usize),
    /// A datagram was cut short at a malformed message.
    Malformed,
    /// `recv` failed otherwise.
    Recv(io::Error),
}

/// The owner's side of a [`Channel`].
pub trait Handler<T> {
    /// Appends the request `tag` as one message with sequence number `seq`.
    fn emit(&mut self, tag: &T, buf: &mut NlBuf, seq: u32);
    /// A data message of the dump `tag`.
    fn data(&mut self, tag: &mut T, msg: &Msg<'_>);
    /// A request finished; `pipe` takes follow-up requests.
    fn complete(&mut self, done: Completion<T>, pipe: &mut Pipeline<T>);
    /// See [`Fault`].
    fn fault(&mut self, fault: Fault);
}

/// A netlink socket with its request pipeline.
#[derive(Debug)]
pub struct Channel<T> {
    pub sock: NlSocket,
    pub pipe: Pipeline<T>,
    buf: NlBuf,
    rx: Vec<u8>,
    done: Vec<Completion<T>>,
}

impl<T> Channel<T> {
    pub fn new(mut sock: NlSocket, limits: Limits) -> Channel<T> {
        let first = sock.next_seq();
        Channel {
            sock,
            pipe: Pipeline::new(limits, first),
            buf: NlBuf::new(),
            rx: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Sends datagrams while the pipeline hands some out. Returns how many
    /// requests went out.
    fn send(&mut self, now: Micros, h: &mut impl Handler<T>) -> usize {
        let mut sent = 0;
        for _ in 0..MAX_ROUNDS {
            let n = self
                .pipe
                .fill(now, &mut self.buf, |tag, buf, seq| h.emit(tag, buf, seq));
            if n == 0 {
                break;
            }
            if let Err(e) = self.sock.send(&self.buf) {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.pipe.unsent(errno, &mut self.done);
                break;
            }
            sent += n;
        }
        sent
    }

    /// Reads datagrams until `WouldBlock` (bounded), feeding the pipeline.
    fn read(&mut self, h: &mut impl Handler<T>) {
        for _ in 0..MAX_READS {
            match self.sock.recv(&mut self.rx) {
                Ok(n) => {
                    self.pipe.received_at(crate::sys::time::monotonic());
                    let malformed = self.pipe.stats().malformed;
                    self.pipe
                        .receive(&self.rx[..n], |tag, m| h.data(tag, m), &mut self.done);
                    if self.pipe.stats().malformed != malformed {
                        h.fault(Fault::Malformed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    let n = self.pipe.overrun();
                    h.fault(Fault::Overrun(n));
                }
                Err(e) => {
                    h.fault(Fault::Recv(e));
                    return;
                }
            }
        }
    }

    /// Hands every finished request to the handler; true if there was one.
    fn complete(&mut self, h: &mut impl Handler<T>) -> bool {
        let any = !self.done.is_empty();
        let mut done = std::mem::take(&mut self.done);
        for c in done.drain(..) {
            h.complete(c, &mut self.pipe);
        }
        self.done = done;
        any
    }

    /// Sends what waits. While the window stays full, reads the answers the
    /// kernel already queued and sends on; stops when nothing waits, when
    /// only a dump waits behind the running one, or when the kernel has not
    /// answered yet: the socket's readiness brings the rest
    /// ([`Channel::drain`]), so a dump's answers do not hold up the loop
    /// turn that started it.
    pub fn pump(&mut self, now: Micros, h: &mut impl Handler<T>) {
        for _ in 0..MAX_ROUNDS {
            self.send(now, h);
            let progressed = self.complete(h);
            if !self.pipe.window_full() {
                if progressed {
                    continue; // completions may have queued more
                }
                return;
            }
            self.read(h);
            if !self.complete(h) {
                return;
            }
        }
    }

    /// The socket is readable (or the loop asks anyway): reads everything,
    /// completes it, and sends what that queued.
    pub fn drain(&mut self, now: Micros, h: &mut impl Handler<T>) {
        self.read(h);
        self.complete(h);
        self.pump(now, h);
    }

    /// Completes requests past their deadline, then sends on.
    pub fn expire(&mut self, now: Micros, h: &mut impl Handler<T>) {
        self.pipe.expire(now, &mut self.done);
        self.complete(h);
        self.pump(now, h);
    }
}
