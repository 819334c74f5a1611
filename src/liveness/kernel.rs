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
//!
//! With `--proto udp`, a lookup can also be a UDP flow: an exact
//! `IPCTNL_MSG_CT_GET` of the original tuple `client:port → local:dport`
//! ([`conntrack::GetRequest`], a hash lookup in the kernel) on a
//! `NETLINK_NETFILTER` socket of its own. The entry says how many seconds
//! it has left (`CTA_TIMEOUT`); every packet, either way, sets that back to
//! the flow's full timeout (`nf_conntrack_udp_timeout_stream` once
//! `IPS_ASSURED`, else `nf_conntrack_udp_timeout`, read at start from
//! `/proc/sys/net/netfilter/`), so the last packet was `full - left`
//! seconds ago (to the second; conntrack cannot tell who sent it).
//! Without conntrack in the namespace there are no entries and UDP lines
//! keep the window rule alone.

use std::io;
use std::net::IpAddr;

use super::track::{Answer, Lookup, Tracker};
use crate::clock::Micros;
use crate::nl::buf::NlBuf;
use crate::nl::channel::{Channel, Fault, Handler};
use crate::nl::conntrack::{self, FlowState, Tuple, IPS_ASSURED};
use crate::nl::consts::{NETLINK_NETFILTER, NETLINK_SOCK_DIAG};
use crate::nl::diag::{self, SockId, TcpInfo, WITH_TCP_INFO};
use crate::nl::msg::Msg;
use crate::nl::pipeline::{Completion, Kind, Outcome, Pipeline};
use crate::nl::socket::NlSocket;

const TCP: u8 = libc::IPPROTO_TCP as u8;
const UDP: u8 = libc::IPPROTO_UDP as u8;

/// The UDP timeouts of this namespace's conntrack, seconds (the kernel's
/// defaults when the sysctls cannot be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTimeouts {
    /// `nf_conntrack_udp_timeout` (30).
    pub unreplied: u32,
    /// `nf_conntrack_udp_timeout_stream` (120).
    pub stream: u32,
}

impl UdpTimeouts {
    pub fn read() -> UdpTimeouts {
        let get = |name: &str, default: u32| {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(default)
        };
        UdpTimeouts {
            unreplied: get("nf_conntrack_udp_timeout", 30),
            stream: get("nf_conntrack_udp_timeout_stream", 120),
        }
    }

    /// How long ago the flow's last packet was, from its entry.
    pub fn ago(&self, st: &FlowState) -> Micros {
        let full = if st.status & IPS_ASSURED != 0 {
            self.stream
        } else {
            self.unreplied
        };
        u64::from(full.saturating_sub(st.timeout_s)) * crate::clock::SECOND
    }
}

/// One UDP flow lookup on the wire.
#[derive(Debug)]
struct FlowReq {
    lookup: Lookup,
    family: u8,
    orig: Tuple,
    found: Option<FlowState>,
}

struct HU<'a> {
    tracker: &'a mut Tracker,
    stats: &'a mut KernelStats,
    timeouts: UdpTimeouts,
    now: Micros,
}

impl Handler<FlowReq> for HU<'_> {
    fn emit(&mut self, req: &FlowReq, buf: &mut NlBuf, seq: u32) {
        conntrack::GetRequest {
            family: req.family,
            orig: req.orig,
        }
        .emit(buf, seq);
    }

    fn data(&mut self, req: &mut FlowReq, msg: &Msg<'_>) {
        if let Some(st) = conntrack::parse_flow_state(msg) {
            if st.flow.orig == req.orig {
                req.found = Some(st);
            }
        }
    }

    fn complete(&mut self, done: Completion<FlowReq>, _pipe: &mut Pipeline<FlowReq>) {
        let req = done.tag;
        let answer = match (done.outcome, req.found) {
            (Outcome::Done | Outcome::Lossy, Some(st)) => Answer::Flow {
                ago: self.timeouts.ago(&st),
            },
            (Outcome::Done | Outcome::Lossy, None) | (Outcome::Errno(libc::ENOENT), _) => {
                Answer::Gone
            }
            (outcome, _) => {
                lookup_error(self.stats, &req.lookup, outcome);
                Answer::Unknown
            }
        };
        self.tracker.answer(self.now, &req.lookup, answer);
    }

    fn fault(&mut self, fault: Fault) {
        channel_fault(self.stats, "conntrack", fault);
    }
}

fn lookup_error(stats: &mut KernelStats, l: &Lookup, outcome: Outcome) {
    stats.errors += 1;
    if stats.errors.is_power_of_two() {
        crate::logger::warning(format_args!(
            "liveness: lookup of {} {} on {}:{}: {outcome:?} ({} errors so far)",
            if l.udp { "udp" } else { "tcp" },
            l.peer,
            l.local,
            l.port,
            stats.errors
        ));
    }
}

fn channel_fault(stats: &mut KernelStats, what: &str, fault: Fault) {
    stats.errors += 1;
    match fault {
        Fault::Overrun(n) => crate::logger::warning(format_args!(
            "liveness: {what}: receive queue overflowed (ENOBUFS); re-sending {n} lookups"
        )),
        Fault::Malformed => {
            crate::logger::warning(format_args!("liveness: {what}: malformed reply"))
        }
        Fault::Recv(e) => crate::logger::warning(format_args!("liveness: {what}: receive: {e}")),
    }
}

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

/// The original tuple of the UDP flow `lookup` names: the client sends to
/// the node (conntrack has no mapped addresses: both ends in one family).
fn flow_tuple(lookup: &Lookup) -> Option<(u8, Tuple)> {
    let src = crate::key::canonical(lookup.peer.ip());
    let dst = crate::key::canonical(lookup.local);
    let family = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
        _ => return None,
    };
    Some((
        family,
        Tuple {
            proto: UDP,
            src,
            dst,
            sport: lookup.peer.port(),
            dport: lookup.port,
        },
    ))
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
                lookup_error(self.stats, &req.lookup, outcome);
                Answer::Unknown
            }
        };
        self.tracker.answer(self.now, &req.lookup, answer);
    }

    fn fault(&mut self, fault: Fault) {
        channel_fault(self.stats, "sock_diag", fault);
    }
}

/// Runs `Channel::$op` on the sock_diag channel with its handler.
macro_rules! tcp {
    ($l:expr, $now:expr, $op:ident) => {{
        let mut h = H {
            tracker: &mut $l.tracker,
            stats: &mut $l.stats,
            now: $now,
        };
        $l.chan.$op($now, &mut h);
    }};
}

/// Runs `Channel::$op` on the conntrack channel, if any, with its handler.
macro_rules! udp {
    ($l:expr, $now:expr, $op:ident) => {{
        if let Some(chan) = $l.udp.as_mut() {
            let mut h = HU {
                tracker: &mut $l.tracker,
                stats: &mut $l.stats,
                timeouts: $l.timeouts,
                now: $now,
            };
            chan.$op($now, &mut h);
        }
    }};
}

/// The tracker and its socket.
#[derive(Debug)]
pub struct Liveness {
    chan: Channel<Req>,
    /// With `--proto udp`: conntrack lookups.
    udp: Option<Channel<FlowReq>>,
    timeouts: UdpTimeouts,
    pub tracker: Tracker,
    pub stats: KernelStats,
}

impl Liveness {
    /// Opens the sock_diag socket (and the conntrack one when `udp`);
    /// `tracker` says what to look up.
    pub fn open(tracker: Tracker, udp: bool) -> io::Result<Liveness> {
        let sock = NlSocket::open(NETLINK_SOCK_DIAG, RCVBUF)
            .map_err(|e| io::Error::new(e.kind(), format!("liveness: sock_diag socket: {e}")))?;
        let udp = if udp {
            let s = NlSocket::open(NETLINK_NETFILTER, RCVBUF).map_err(|e| {
                io::Error::new(e.kind(), format!("liveness: conntrack socket: {e}"))
            })?;
            Some(Channel::new(s, crate::enforce::limits()))
        } else {
            None
        };
        Ok(Liveness {
            chan: Channel::new(sock, crate::enforce::limits()),
            udp,
            timeouts: UdpTimeouts::read(),
            tracker,
            stats: KernelStats::default(),
        })
    }

    pub fn socket(&mut self) -> &mut NlSocket {
        &mut self.chan.sock
    }

    /// The conntrack socket, with `--proto udp`.
    pub fn udp_socket(&mut self) -> Option<&mut NlSocket> {
        self.udp.as_mut().map(|c| &mut c.sock)
    }

    /// Sends the lookups the tracker asked for (and reads the answers the
    /// kernel queued meanwhile).
    pub fn pump(&mut self, now: Micros) {
        for lookup in self.tracker.take_lookups() {
            if lookup.udp {
                self.push_flow(now, lookup);
                continue;
            }
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
        // The kernel answers inside sendmsg: read at once, so a check
        // resolves in this loop turn instead of costing another wakeup.
        tcp!(self, now, pump);
        tcp!(self, now, drain);
        udp!(self, now, pump);
        udp!(self, now, drain);
    }

    fn push_flow(&mut self, now: Micros, lookup: Lookup) {
        let (Some(chan), Some((family, orig))) = (self.udp.as_mut(), flow_tuple(&lookup)) else {
            self.tracker.answer(now, &lookup, Answer::Unknown);
            return;
        };
        let req = FlowReq {
            lookup,
            family,
            orig,
            found: None,
        };
        if let Err(req) = chan.pipe.push(req, Kind::Get) {
            self.stats.errors += 1;
            self.tracker.answer(now, &req.lookup, Answer::Unknown);
        }
    }

    /// The conntrack socket is readable.
    pub fn ready_udp(&mut self, now: Micros) {
        udp!(self, now, drain);
        if self.tracker.has_lookups() {
            self.pump(now);
        }
    }

    /// The socket is readable.
    pub fn ready(&mut self, now: Micros) {
        tcp!(self, now, drain);
        if self.tracker.has_lookups() {
            self.pump(now);
        }
    }

    /// The lookups' round trips, merged into `into`.
    pub fn rtt(&self, into: &mut crate::metrics::Histogram) {
        into.merge(self.chan.pipe.rtt());
        if let Some(c) = self.udp.as_ref() {
            into.merge(c.pipe.rtt());
        }
    }

    /// When [`Liveness::tick`] is due.
    pub fn deadline(&self) -> Option<Micros> {
        [
            self.tracker.deadline(),
            self.chan.pipe.deadline(),
            self.udp.as_ref().and_then(|c| c.pipe.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Expires unanswered lookups, resolves late checks, starts re-checks.
    pub fn tick(&mut self, now: Micros) {
        tcp!(self, now, expire);
        udp!(self, now, expire);
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
