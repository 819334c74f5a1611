//! [`NlSocket`]: one non-blocking, bound netlink socket with its own
//! sequence numbers, usable as a mio event source.
//!
//! In the loop a [`crate::nl::channel::Channel`] sends the requests its
//! [`crate::nl::pipeline::Pipeline`] hands out and, on readiness, calls
//! [`NlSocket::recv`] until `WouldBlock`; the pipeline matches each reply
//! by `nlmsg_seq`. Outside the loop (startup, shutdown, tests)
//! [`NlSocket::request`] sends one request and waits, with a deadline, for
//! everything the kernel answers to it.
//!
//! Invariants: the fd is `CLOEXEC | NONBLOCK` and bound with a
//! kernel-assigned port id; sequence numbers start at a per-socket value
//! and never repeat 0, so a reply with seq 0 (kernel notifications) never
//! matches a request.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::nl::buf::NlBuf;
use crate::nl::msg::{Messages, Msg, Reply};
use crate::sys::netlink as sys;

/// The receive buffer every `recv` reads into: netlink dumps fill
/// datagrams up to about 32 KiB (`netlink_dump()` sizes them from the
/// reader's buffer, capped at 32 KiB), so 64 KiB never truncates.
pub const RECV_BUF: usize = 64 * 1024;

/// A bound, non-blocking netlink socket.
#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    seq: u32,
}

/// A reply message copied out of the receive buffer (for [`NlSocket::request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedMsg {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: Vec<u8>,
}

impl OwnedMsg {
    /// A borrowed view, as the parsers take it.
    pub fn as_msg(&self) -> Msg<'_> {
        Msg {
            ty: self.ty,
            flags: self.flags,
            seq: self.seq,
            pid: 0,
            payload: &self.payload,
        }
    }
}

impl NlSocket {
    /// Opens a socket for `protocol` (`NETLINK_NETFILTER`,
    /// `NETLINK_SOCK_DIAG`, …) with a receive buffer of `rcvbuf_bytes`
    /// (0 keeps the system default). Extended acks are turned on when the
    /// kernel supports them.
    pub fn open(protocol: i32, rcvbuf_bytes: usize) -> io::Result<NlSocket> {
        let fd = sys::netlink_socket(protocol)?;
        if rcvbuf_bytes > 0 {
            sys::set_rcvbuf(fd.as_fd(), rcvbuf_bytes)?;
        }
        // Best effort: only improves error reports (kernel >= 4.12).
        let _ = sys::set_ext_ack(fd.as_fd(), true);
        // Start sequence numbers somewhere other than 1 so replies from a
        // previous socket (same port id reused) are unlikely to match.
        let seq = (std::process::id() << 12) | (fd.as_raw_fd() as u32 & 0xfff);
        Ok(NlSocket {
            fd,
            seq: seq.max(1),
        })
    }

    /// Joins multicast `group` (kernel notifications arrive with seq 0).
    pub fn join_group(&self, group: u32) -> io::Result<()> {
        sys::add_membership(self.fd.as_fd(), group)
    }

    /// The socket's netlink port id (see [`sys::port_id`]).
    pub fn port_id(&self) -> io::Result<u32> {
        sys::port_id(self.fd.as_fd())
    }

    /// A fresh sequence number (never 0).
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Sends every message in `buf` as one datagram.
    pub fn send(&self, buf: &NlBuf) -> io::Result<()> {
        self.send_bytes(buf.as_bytes())
    }

    /// Sends raw bytes as one datagram. A short send cannot happen on a
    /// datagram socket; it is reported as an error all the same.
    pub fn send_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let n = sys::send(self.fd.as_fd(), bytes)?;
        if n != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("netlink: short send ({n} of {} bytes)", bytes.len()),
            ));
        }
        Ok(())
    }

    /// Receives one datagram into `buf` and returns its length: the
    /// datagram is `buf[..n]`. `buf` is grown to [`RECV_BUF`] the first
    /// time (zero-filled once) and keeps that length, so reusing one buffer
    /// costs no per-call fill. `WouldBlock` when nothing is queued;
    /// `ENOBUFS` when the kernel dropped messages (the caller repeats what
    /// was lost); `EMSGSIZE` when the datagram did not fit (cannot happen
    /// with [`RECV_BUF`]).
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if buf.len() < RECV_BUF {
            buf.resize(RECV_BUF, 0);
        }
        let r = sys::recv(self.fd.as_fd(), buf)?;
        if r.truncated {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        Ok(r.len)
    }

    /// Waits up to `timeout` for the socket to become readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        sys::poll_readable(self.fd.as_fd(), ms)
    }

    /// Blocking convenience for startup, shutdown and tests, never the
    /// loop: sends `req` (whose first message's sequence number identifies
    /// the exchange) and collects the data messages answering it until the
    /// kernel acks, errors or ends the dump. `req` must ask for an answer
    /// (`NLM_F_ACK` or a dump). An `NLMSG_ERROR` becomes
    /// `io::Error::from_raw_os_error(errno)`; the deadline `TimedOut`.
    pub fn request(&mut self, req: &NlBuf, timeout: Duration) -> io::Result<Vec<OwnedMsg>> {
        let bytes = req.as_bytes();
        if bytes.len() < 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "netlink: empty request",
            ));
        }
        let seq = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        self.send(req)?;
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let n = match self.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "netlink: no answer from the kernel",
                        ));
                    }
                    self.wait_readable(left)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for reply in Messages::new(&buf[..n]) {
                match reply {
                    Ok(Reply::Data(m)) if m.seq == seq => out.push(OwnedMsg {
                        ty: m.ty,
                        flags: m.flags,
                        seq: m.seq,
                        payload: m.payload.to_vec(),
                    }),
                    Ok(Reply::Ack(s)) | Ok(Reply::Done(s)) if s == seq => return Ok(out),
                    Ok(Reply::Error { seq: s, errno }) if s == seq => {
                        return Err(io::Error::from_raw_os_error(errno))
                    }
                    Ok(_) => {} // a stale reply to an earlier request
                    Err(m) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("netlink: malformed reply at byte {}", m.at),
                        ))
                    }
                }
            }
        }
    }

    /// Discards everything queued (after a timeout, so stale replies do not
    /// confuse the next exchange). Returns how many datagrams were dropped.
    pub fn drain(&self) -> usize {
        let mut buf = Vec::new();
        let mut n = 0;
        // Bounded: the receive queue is finite and we never send here.
        while n < 1 << 16 {
            match self.recv(&mut buf) {
                Ok(_) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => n += 1,
            }
        }
        n
    }
}

impl AsFd for NlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl mio::event::Source for NlSocket {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::consts::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

    /// RTM_GETLINK dump on NETLINK_ROUTE: unprivileged, always answered,
    /// so it exercises request() end to end (loopback always exists).
    #[test]
    fn request_collects_a_dump_until_done() {
        let mut s = match NlSocket::open(libc::NETLINK_ROUTE, 0) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skip: no netlink: {e}");
                return;
            }
        };
        let seq = s.next_seq();
        let mut b = NlBuf::new();
        // RTM_GETLINK = 18 (linux/rtnetlink.h); struct ifinfomsg is 16 bytes.
        b.message(18, NLM_F_REQUEST | NLM_F_DUMP, seq, |b| b.put(&[0; 16]));
        let msgs = s.request(&b, Duration::from_secs(2)).unwrap();
        assert!(!msgs.is_empty());
        assert!(msgs.iter().all(|m| m.seq == seq && m.ty == 16)); // RTM_NEWLINK
    }

    #[test]
    fn request_maps_nlmsg_error_to_errno() {
        let mut s = match NlSocket::open(libc::NETLINK_ROUTE, 0) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skip: no netlink: {e}");
                return;
            }
        };
        let seq = s.next_seq();
        let mut b = NlBuf::new();
        // RTM_GETLINK for ifindex 0x7fffffff, which does not exist: ENODEV.
        b.message(18, NLM_F_REQUEST | NLM_F_ACK, seq, |b| {
            b.put(&[0, 0, 0, 0]);
            b.put(&0x7fff_ffffi32.to_ne_bytes());
            b.put(&[0; 8]);
        });
        let e = s.request(&b, Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
        assert!(s.next_seq() != seq);
    }

    #[test]
    fn drain_discards_queued_replies() {
        let mut s = match NlSocket::open(libc::NETLINK_ROUTE, 0) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skip: no netlink: {e}");
                return;
            }
        };
        let mut b = NlBuf::new();
        for _ in 0..3 {
            // RTM_GETLINK of ifindex 1 (lo) with an ACK: two messages each.
            let seq = s.next_seq();
            b.message(18, NLM_F_REQUEST | NLM_F_ACK, seq, |b| {
                b.put(&[0, 0, 0, 0]);
                b.put(&1i32.to_ne_bytes());
                b.put(&[0; 8]);
            });
        }
        s.send(&b).unwrap();
        assert!(s.wait_readable(Duration::from_secs(2)).unwrap());
        assert!(s.drain() >= 1);
        let mut buf = Vec::new();
        let e = s.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(buf.len(), RECV_BUF);
    }
}
