//! The kernel side of liveness: one non-blocking `NETLINK_SOCK_DIAG`
//! socket of its own (a token in the loop), on which every
//! [`Lookup`] of the [`Tracker`] becomes an exact
//! `SOCK_DIAG_BY_FAMILY` get ([`diag::GetRequest`] with
//! `INET_DIAG_INFO`): one hash lookup in the kernel per socket
//! (`inet_diag_find_one_icsk()`), never a walk of the namespace's sockets.
//! The answer is the socket's `inet_diag_msg` with its `struct tcp_info`,
//! then the ack; or `ENOENT`. A lookup whose local address is not the
//! connection's can match the wildcard listener instead (`inet_lookup()`
//! falls back to the listening hash): that answer is in `TCP_LISTEN` and
//! counts as "not here".
//!
//! Its own socket, not the killer's: a kill dump holds its socket's one
//! dump slot for a whole walk, and a lookup must not wait behind it.
//! Reading socket state needs no capability (`ss` does it unprivileged),
//! so the socket works after the privilege drop and under `--dry-run`.

use std::io;
use std::net::IpAddr;

use super::track::{Answer, Lookup, Tracker};
use crate::clock::Micros;
use crate::nl::buf::NlBuf;
use crate::nl::channel::{Channel, Fault, Handler};
use crate::nl::consts::NETLINK_SOCK_DIAG;
use crate::nl::diag::{self, SockId, TcpInfo, WITH_TCP_INFO};
use crate::nl::msg::Msg;
use crate::nl::pipeline::{Completion, Kind, Outcome, Pipeline};
use crate::nl::socket::NlSocket;

const TCP: u8 = libc::IPPROTO_TCP as u8;

/// Receive buffer: a window of answers (each about 300 bytes with its
/// `tcp_info`) with room to spare.
const RCVBUF: usize = 1 << 18;

/// One lookup on the wire.
#[derive(Debug)]
struct Req {
    lookup: Lookup,
    id: SockId,
    found: Option<TcpInfo>,
}

/// Counters of the socket (the `stats:` line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Lookups that failed otherwise than "no such socket".
    pub errors: u64,
}

struct H<'a> {
    tracker: &'a mut Tracker,
    stats: &'a mut KernelStats,
    now: Micros,
}

/// What an answer to `id` says: the socket's `tcp_info` when the entry is
/// that socket (same peer port and address: the wildcard listener that an
/// exact lookup can fall back to has neither).
pub fn answer_of(id: &SockId, msg: &Msg<'_>) -> Option<TcpInfo> {
    let got = diag::parse_socket(msg)?;
    let same_peer = got.dport == id.dport && canonical_eq(got.remote().ip(), id.remote().ip());
    if !same_peer {
        return None;
    }
    diag::parse_tcp_info(msg)
}

fn canonical_eq(a: IpAddr, b: IpAddr) -> bool {
    crate::key::canonical(a) == crate::key::canonical(b)
}

impl Handler<Req> for H<'_> {
    fn emit(&mut self, req: &Req, buf: &mut NlBuf, seq: u32) {
        diag::GetRequest {
            protocol: TCP,
            id: req.id,
            ext: WITH_TCP_INFO,
        }
        .emit(buf, seq);
    }

    fn data(&mut self, req: &mut Req, msg: &Msg<'_>) {
        if let Some(info) = answer_of(&req.id, msg) {
            req.found = Some(info);
        }
    }

    fn complete(&mut self, done: Completion<Req>, _pipe: &mut Pipeline<Req>) {
        let req = done.tag;
        let answer = match (done.outcome, req.found) {
            (Outcome::Done | Outcome::Lossy, Some(info)) => Answer::Found(info),
            // Acked without our socket: only the listener matched.
            (Outcome::Done | Outcome::Lossy, None) => Answer::Gone,
            (Outcome::Errno(libc::ENOENT), _) => Answer::Gone,
            (outcome, _) => {
                self.stats.errors += 1;
                if self.stats.errors.is_power_of_two() {
                    crate::logger::warning(format_args!(
                        "liveness: lookup of {} on {}:{}: {outcome:?} ({} errors so far)",
                        req.lookup.peer, req.lookup.local, req.lookup.port, self.stats.errors
                    ));
                }
                Answer::Unknown
            }
        };
        self.tracker.answer(self.now, &req.lookup, answer);
    }

    fn fault(&mut self, fault: Fault) {
        self.stats.errors += 1;
        match fault {
            Fault::Overrun(n) => crate::logger::warning(format_args!(
                "liveness: receive queue overflowed (ENOBUFS); re-sending {n} lookups"
            )),
            Fault::Malformed => crate::logger::warning(format_args!("liveness: malformed reply")),
            Fault::Recv(e) => crate::logger::warning(format_args!("liveness: receive: {e}")),
        }
    }
}

/// The tracker and its socket.
#[derive(Debug)]
pub struct Liveness {
    chan: Channel<Req>,
    pub tracker: Tracker,
    pub stats: KernelStats,
}

impl Liveness {
    /// Opens the socket; `tracker` says what to look up.
    pub fn open(tracker: Tracker) -> io::Result<Liveness> {
        let sock = NlSocket::open(NETLINK_SOCK_DIAG, RCVBUF)
            .map_err(|e| io::Error::new(e.kind(), format!("liveness: sock_diag socket: {e}")))?;
        Ok(Liveness {
            chan: Channel::new(sock, crate::enforce::limits()),
            tracker,
            stats: KernelStats::default(),
        })
    }

    pub fn socket(&mut self) -> &mut NlSocket {
        &mut self.chan.sock
    }

    /// Sends the lookups the tracker asked for (and reads the answers the
    /// kernel queued meanwhile).
    pub fn pump(&mut self, now: Micros) {
        for lookup in self.tracker.take_lookups() {
            let Some(id) = SockId::exact(lookup.local, lookup.port, lookup.peer) else {
                self.tracker.answer(now, &lookup, Answer::Unknown);
                continue;
            };
            let req = Req {
                lookup,
                id,
                found: None,
            };
            if let Err(req) = self.chan.pipe.push(req, Kind::Get) {
                self.stats.errors += 1;
                self.tracker.answer(now, &req.lookup, Answer::Unknown);
            }
        }
        let mut h = H {
            tracker: &mut self.tracker,
            stats: &mut self.stats,
            now,
        };
        self.chan.pump(now, &mut h);
    }

    /// The socket is readable.
    pub fn ready(&mut self, now: Micros) {
        let mut h = H {
            tracker: &mut self.tracker,
            stats: &mut self.stats,
            now,
        };
        self.chan.drain(now, &mut h);
        if self.tracker.has_lookups() {
            self.pump(now);
        }
    }

    /// When [`Liveness::tick`] is due.
    pub fn deadline(&self) -> Option<Micros> {
        [self.tracker.deadline(), self.chan.pipe.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Expires unanswered lookups, resolves late checks, starts re-checks.
    pub fn tick(&mut self, now: Micros) {
        let mut h = H {
            tracker: &mut self.tracker,
            stats: &mut self.stats,
            now,
        };
        self.chan.expire(now, &mut h);
        self.tracker.tick(now);
        if self.tracker.has_lookups() {
            self.pump(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::diag::{DIAG_MSG_LEN, INET_DIAG_INFO, SOCK_DIAG_BY_FAMILY, TCP_ESTABLISHED};
    use crate::nl::msg::{Messages, Reply};
    use std::net::SocketAddr;

    const AF_INET: u8 = libc::AF_INET as u8;
    const AF_INET6: u8 = libc::AF_INET6 as u8;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The kernel's answer to a get: one `struct inet_diag_msg`
    /// (`include/uapi/linux/inet_diag.h`) — family, state, timer,
    /// retrans, then `inet_diag_sockid` (sport, dport big-endian; src,
    /// dst 16 bytes each; if; cookie) and expires, rqueue, wqueue, uid,
    /// inode — then `INET_DIAG_INFO` with a `struct tcp_info`
    /// (`include/uapi/linux/tcp.h`, 232 bytes on 6.x).
    fn reply(family: u8, state: u8, local: (&str, u16), peer: (&str, u16)) -> NlBuf {
        let raw = |s: &str| -> [u8; 16] {
            let mut r = [0u8; 16];
            match ip(s) {
                IpAddr::V4(a) => r[..4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => r = a.octets(),
            }
            r
        };
        let mut msg = [0u8; DIAG_MSG_LEN];
        msg[0] = family; // idiag_family
        msg[1] = state; // idiag_state
        msg[4..6].copy_from_slice(&local.1.to_be_bytes()); // idiag_sport
        msg[6..8].copy_from_slice(&peer.1.to_be_bytes()); // idiag_dport
        msg[8..24].copy_from_slice(&raw(local.0)); // idiag_src
        msg[24..40].copy_from_slice(&raw(peer.0)); // idiag_dst
        msg[44..48].copy_from_slice(&0x1234u32.to_ne_bytes()); // idiag_cookie[0]
        let mut info = vec![0u8; 232];
        info[0] = state; // tcpi_state
        info[24..28].copy_from_slice(&7u32.to_ne_bytes()); // tcpi_unacked
        info[44..48].copy_from_slice(&35u32.to_ne_bytes()); // tcpi_last_data_sent
        info[52..56].copy_from_slice(&30_000u32.to_ne_bytes()); // tcpi_last_data_recv
        info[56..60].copy_from_slice(&40u32.to_ne_bytes()); // tcpi_last_ack_recv
        info[120..128].copy_from_slice(&5_000_000u64.to_ne_bytes()); // tcpi_bytes_acked
        let mut b = NlBuf::new();
        // A get's answer is not multipart: flags 0, then the ack.
        b.message(SOCK_DIAG_BY_FAMILY, 0, 9, |b| {
            b.put(&msg);
            b.attr(INET_DIAG_INFO, &info);
        });
        b
    }

    fn answer(id: &SockId, b: &NlBuf) -> Option<TcpInfo> {
        match Messages::new(b.as_bytes()).next() {
            Some(Ok(Reply::Data(m))) => answer_of(id, &m),
            other => panic!("{other:?}"),
        }
    }

    fn lookup(local: &str, port: u16, peer: &str) -> SockId {
        let peer: SocketAddr = peer.parse().unwrap();
        SockId::exact(ip(local), port, peer).unwrap()
    }

    #[test]
    fn an_ipv4_client_is_asked_as_af_inet_and_found_as_af_inet() {
        let id = lookup("198.51.100.254", 443, "192.0.2.1:40000");
        assert_eq!(id.family, AF_INET);
        let b = reply(
            AF_INET,
            TCP_ESTABLISHED,
            ("198.51.100.254", 443),
            ("192.0.2.1", 40000),
        );
        let info = answer(&id, &b).expect("our socket");
        assert_eq!((info.unacked, info.last_ack_recv_ms), (7, 40));
        assert_eq!(info.last_data_sent_ms, 35);
        assert_eq!(info.bytes_acked, Some(5_000_000));
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_an_af_inet6_mapped_socket() {
        // Asked as AF_INET (the kernel hashes it by its IPv4 tuple), the
        // answer is the socket as it is: AF_INET6, ::ffff: addresses.
        let id = lookup("::ffff:198.51.100.254", 443, "[::ffff:192.0.2.1]:40000");
        assert_eq!(id.family, AF_INET);
        let b = reply(
            AF_INET6,
            TCP_ESTABLISHED,
            ("::ffff:198.51.100.254", 443),
            ("::ffff:192.0.2.1", 40000),
        );
        assert!(answer(&id, &b).is_some());
    }

    #[test]
    fn an_ipv6_client_is_asked_and_found_as_af_inet6() {
        let id = lookup("2001:db8::fe", 8443, "[2001:db8:5::1]:50000");
        assert_eq!(id.family, AF_INET6);
        let b = reply(
            AF_INET6,
            TCP_ESTABLISHED,
            ("2001:db8::fe", 8443),
            ("2001:db8:5::1", 50000),
        );
        assert_eq!(answer(&id, &b).unwrap().state, TCP_ESTABLISHED);
    }

    #[test]
    fn the_wildcard_listener_or_another_peer_is_not_the_connection() {
        let id = lookup("198.51.100.9", 443, "192.0.2.1:40000");
        // A wrong local address falls back to the listener on [::]:443.
        let listener = reply(AF_INET6, diag::TCP_LISTEN, ("::", 443), ("::", 0));
        assert_eq!(answer(&id, &listener), None);
        let other = reply(
            AF_INET,
            TCP_ESTABLISHED,
            ("198.51.100.9", 443),
            ("192.0.2.1", 40001),
        );
        assert_eq!(answer(&id, &other), None);
    }
}
