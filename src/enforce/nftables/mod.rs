//! The nftables enforcer: bans go into the sets of refract's own table
//! `inet refract` over nfnetlink (never by running `nft`), matched by one
//! rule per protocol and family in a base chain on the input hook; a
//! ban's open connections are ended by [`crate::enforce::kill`], as with
//! ipset.
//!
//! - [`startup`]: reads back the bans in the sets, creates or keeps the
//!   table in one atomic batch, and `refract cleanup` (deletes the table).
//! - [`ops`]: element batches from the loop, and the repair that rebuilds
//!   the table when it vanished (`nft flush ruleset`, a restart of
//!   `nftables.service`), told by [`Watch`] or by an `ENOENT`.
//!
//! The objects ([`ensure`]): set `ports` (the inbound ports), set
//! `banned4` (`ipv4_addr`, flag `timeout`), set `banned6` (`ipv6_addr`,
//! flag `timeout`, holding each key's network address: the rule masks
//! `ip6 saddr` to `--ipv6-prefix` bits before the lookup, so a /64 is one
//! hash element; see the README for why not an interval set), and chain
//! `input` (filter, hook input, priority [`PRIORITY`]) with
//! `meta l4proto P th dport @ports ip saddr @banned4 drop` and its IPv6
//! twin per protocol.
//!
//! Per loop turn, every ban of the turn goes out as one NEWSETELEM per
//! family (more only past [`ELEMS_PER_MSG`]) in its own batch datagram,
//! before the turn's connection search starts ([`Killer::start_batch`]):
//! the search runs only once the keys cannot reconnect.
//!
//! Invariant: every request sent is either in flight in its pipeline or
//! already answered, expired or abandoned, and then counted.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::clock::Micros;
use crate::config::{Config, Protos};
use crate::enforce::kill::Killer;
use crate::enforce::{EnforceStats, Enforcer, KillReport};
use crate::key::Key;
use crate::nl::buf::NlBuf;
use crate::nl::consts::{NFPROTO_IPV4, NFPROTO_IPV6};
use crate::nl::msg::{Messages, Reply};
use crate::nl::nftables::{
    self as nft, Batch, Rule, SetRef, NFT_SET_TIMEOUT, NF_INET_LOCAL_IN, TYPE_INET_SERVICE,
    TYPE_IP6ADDR, TYPE_IPADDR,
};
use crate::nl::socket::NlSocket;
use crate::policy::Ban;

pub mod ops;
pub mod startup;

use ops::{Op, Ops};
pub use startup::STARTUP_TIMEOUT;
pub use startup::{cleanup_report, table_exists};

/// refract's table (family `inet`) and the objects in it.
pub const TABLE: &str = "refract";
pub const SET_V4: &str = "banned4";
pub const SET_V6: &str = "banned6";
pub const SET_PORTS: &str = "ports";
/// The sets with their ids in the creating batch (the ids `nft` gives
/// them in the same order).
pub const PORTS: SetRef<'static> = SetRef {
    name: SET_PORTS,
    id: 1,
};
pub const BANNED4: SetRef<'static> = SetRef {
    name: SET_V4,
    id: 2,
};
pub const BANNED6: SetRef<'static> = SetRef {
    name: SET_V6,
    id: 3,
};
pub const CHAIN: &str = "input";

/// The base chain's priority: `filter - 10`. Below fw4's `input` chain
/// and the host's `inet filter` (both `filter`, 0) and iptables-nft's
/// `INPUT` (`NF_IP_PRI_FILTER`, 0), so refract's drop is seen first; a
/// drop in any base chain is final for the packet, while an accept only
/// ends the chain that says it, so whatever those chains accept later
/// does not let a banned address in.
pub const PRIORITY: i32 = -10;

/// Elements per NEWSETELEM: a message's element list is one attribute
/// whose `nla_len` is 16 bits, and an IPv6 element with its timeout takes
/// 40 bytes; 1024 of them stay far below 64 KiB.
pub const ELEMS_PER_MSG: usize = 1024;

/// Tokens the enforcer registers (the same layout as ipset's).
pub const TOKENS: usize = 4;
const TOKEN_NFT: usize = 0;
const TOKEN_DIAG: usize = 1;
const TOKEN_CONNTRACK: usize = 2;
const TOKEN_WATCH: usize = 3;

/// Longest element timeout refract asks for: the same cap as ipset's.
pub const MAX_TIMEOUT_MS: u64 = crate::nl::ipset::MAX_TIMEOUT as u64 * 1000;

/// What the nftables enforcer needs from the configuration.
#[derive(Clone, Debug)]
pub struct NftConfig {
    pub protos: Protos,
    pub ports: Vec<u16>,
    /// `--ipv6-prefix`: the mask of the IPv6 rule and of keys read back.
    pub v6_prefix: u8,
    /// `--set-size`: each address set's size bound.
    pub set_size: u32,
}

impl NftConfig {
    pub fn from_config(c: &Config) -> NftConfig {
        NftConfig {
            protos: c.protos,
            ports: c.ports.clone(),
            v6_prefix: c.policy.v6_prefix.clamp(1, 128),
            set_size: c.set_size,
        }
    }

    fn v6_mask(&self) -> [u8; 16] {
        (u128::MAX << (128 - u32::from(self.v6_prefix))).to_be_bytes()
    }

    fn protos(&self) -> Vec<u8> {
        let mut p = Vec::new();
        if self.protos.tcp {
            p.push(libc::IPPROTO_TCP as u8);
        }
        if self.protos.udp {
            p.push(libc::IPPROTO_UDP as u8);
        }
        p
    }
}

/// The key bytes of a set element (network order; IPv6 keys are already
/// their network address).
pub fn key_bytes(key: Key) -> Vec<u8> {
    match key {
        Key::V4(a) => a.octets().to_vec(),
        Key::V6(a, _) => a.octets().to_vec(),
    }
}

/// An element timeout in ms: at least 1 (0 is refused), capped.
pub fn timeout_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).clamp(1, MAX_TIMEOUT_MS)
}

/// Writes the batch that makes refract's table right: with `fresh`, the
/// table is deleted and created again (`NEWTABLE` first so the delete
/// cannot fail on a missing table); without, every object is created if
/// missing and kept if it is there (with its elements), and only the port
/// set and the chain's rules are rewritten. Atomic either way.
pub fn ensure(buf: &mut NlBuf, seq: u32, cfg: &NftConfig, fresh: bool) {
    let mut b = Batch::begin(buf, seq);
    b.new_table(TABLE, false);
    if fresh {
        b.del_table(TABLE, false);
        b.new_table(TABLE, false);
    }
    // nft's order: table, chain, sets with their elements, rules.
    b.new_chain(TABLE, CHAIN, NF_INET_LOCAL_IN, PRIORITY, false);
    b.new_set(TABLE, SET_PORTS, TYPE_INET_SERVICE, 2, 0, 0, 1, false);
    b.elems(TABLE, PORTS, false, &[], false);
    // (`--dport` is never empty.)
    b.port_elems(TABLE, PORTS, &cfg.ports, false);
    b.new_set(
        TABLE,
        SET_V4,
        TYPE_IPADDR,
        4,
        NFT_SET_TIMEOUT,
        cfg.set_size,
        2,
        false,
    );
    b.new_set(
        TABLE,
        SET_V6,
        TYPE_IP6ADDR,
        16,
        NFT_SET_TIMEOUT,
        cfg.set_size,
        3,
        false,
    );
    let protos = cfg.protos();
    // Without rules (no protocol), the flush is the last message.
    b.flush_chain(TABLE, CHAIN, protos.is_empty());
    let mask = cfg.v6_mask();
    let n = protos.len() * 2;
    let mut i = 0;
    for &l4proto in &protos {
        for (nfproto, v6_mask, addr_set) in [
            (NFPROTO_IPV4, None, BANNED4),
            (NFPROTO_IPV6, Some(mask), BANNED6),
        ] {
            i += 1;
            let rule = Rule {
                table: TABLE,
                chain: CHAIN,
                l4proto,
                ports_set: PORTS,
                nfproto,
                v6_mask,
                addr_set,
            };
            // The last message asks for the batch's one ack.
            b.new_rule(&rule, i == n);
        }
    }
    b.end();
}

/// Writes a batch adding (or deleting) `elems` in one message.
pub fn elems_batch(buf: &mut NlBuf, seq: u32, v6: bool, add: bool, elems: &[(Key, u64)]) {
    let keys: Vec<Vec<u8>> = elems.iter().map(|(k, _)| key_bytes(*k)).collect();
    let list: Vec<nft::Elem<'_>> = keys
        .iter()
        .zip(elems)
        .map(|(k, (_, ms))| nft::Elem {
            key: k,
            timeout_ms: add.then_some(*ms),
        })
        .collect();
    let mut b = Batch::begin(buf, seq);
    b.elems(TABLE, if v6 { BANNED6 } else { BANNED4 }, add, &list, true);
    b.end();
}

/// Kernel errors and repairs are warnings in the daemon's log.
fn log(msg: std::fmt::Arguments<'_>) {
    crate::logger::warning(msg);
}

/// The nf_tables notification socket: a deletion in one of refract's
/// tables by someone else schedules a rebuild. The ban table's enforcer
/// watches `inet refract`, the shaper `inet refract_shape`.
#[derive(Debug)]
pub struct Watch {
    pub(crate) sock: NlSocket,
    own_port: u32,
    table: &'static str,
    rx: Vec<u8>,
}

impl Watch {
    /// Joins `NFNLGRP_NFTABLES` for the ban table; notifications caused
    /// by `own_port` (the enforcer's request socket) are ours and ignored.
    pub fn open(own_port: u32) -> io::Result<Watch> {
        Watch::for_table(TABLE, own_port)
    }

    /// [`Watch::open`] for `table` (family `inet`).
    pub fn for_table(table: &'static str, own_port: u32) -> io::Result<Watch> {
        let sock = NlSocket::open(crate::nl::consts::NETLINK_NETFILTER, 1 << 20)?;
        sock.join_group(crate::nl::consts::NFNLGRP_NFTABLES)?;
        Ok(Watch {
            sock,
            own_port,
            table,
            rx: Vec::new(),
        })
    }

    /// Drains the socket: whether the table lost something (or
    /// notifications were lost, `ENOBUFS`: one of them may have said so),
    /// and the error that stopped the reading, if one did (the caller
    /// counts and logs it).
    pub fn drain(&mut self) -> (bool, Option<io::Error>) {
        let mut lost = false;
        for _ in 0..100_000 {
            match self.sock.recv(&mut self.rx) {
                Ok(n) => {
                    for m in Messages::new(&self.rx[..n]).flatten() {
                        if let Reply::Data(m) = m {
                            lost |= nft::deletes_table_objects(&m, self.table, self.own_port);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                Err(e) => return (lost, Some(e)),
            }
        }
        (lost, None)
    }
}

/// Bans in nftables sets over nfnetlink. See the module docs.
#[derive(Debug)]
pub struct NftEnforcer {
    cfg: NftConfig,
    ops: Ops,
    kill: Killer,
    watch: Option<Watch>,
    existing: Option<Vec<(Key, Duration)>>,
    /// Bans of this turn, not sent yet: (key, timeout ms, logged connection).
    turn: Vec<(Key, u64, Option<SocketAddr>)>,
    /// The loop turn (its `now`) whose first ban went out at once.
    sent_first: Option<Micros>,
    first_token: usize,
    now: Micros,
    stats: EnforceStats,
    _lock: crate::enforce::ipset::lock::InstanceLock,
}

impl NftEnforcer {
    pub fn busy(&self) -> bool {
        !self.turn.is_empty() || self.ops.busy() || self.kill.busy()
    }

    /// Sends the turn's bans (one batch per family), then hands the keys
    /// to the killer: their connections are searched for once they
    /// cannot reconnect.
    fn send_turn(&mut self) {
        if self.turn.is_empty() {
            return;
        }
        let turn = std::mem::take(&mut self.turn);
        for v6 in [false, true] {
            let elems: Vec<(Key, u64)> = turn
                .iter()
                .filter(|(k, _, _)| k.is_v4() != v6)
                .map(|&(k, ms, _)| (k, ms))
                .collect();
            for chunk in elems.chunks(ELEMS_PER_MSG) {
                self.ops.push(
                    Op::Add {
                        v6,
                        elems: chunk.to_vec(),
                    },
                    &self.cfg,
                    &mut self.stats,
                );
            }
        }
        self.ops.pump(self.now, &self.cfg, &mut self.stats);
        for (key, _, conn) in turn {
            self.kill.ban(key, conn, self.now, &mut self.stats);
        }
    }

    fn drain_nft(&mut self) {
        self.ops.drain(self.now, &self.cfg, &mut self.stats);
    }

    fn drain_watch(&mut self) {
        if let Some(w) = &mut self.watch {
            let (lost, err) = w.drain();
            if let Some(e) = err {
                self.stats.errors += 1;
                log(format_args!("nftables: ruleset watch: {e}"));
            }
            if lost {
                self.ops.repair(self.now, &self.cfg, &mut self.stats);
            }
        }
    }

    fn drain_all(&mut self) {
        self.drain_nft();
        self.send_turn();
        self.kill.start_batch(self.now, &mut self.stats);
        self.kill.drain_tcp(self.now, &mut self.stats);
        self.kill.drain_udp(self.now, &mut self.stats);
    }
}

impl crate::enforce::Flush for NftEnforcer {
    fn drain_all(&mut self) {
        NftEnforcer::drain_all(self);
    }

    fn busy(&self) -> bool {
        NftEnforcer::busy(self)
    }

    fn abandon(&mut self) -> usize {
        self.ops.abandon() + self.kill.abandon()
    }

    fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        let mut fds = vec![self.ops.fd()];
        fds.extend(self.kill.fds());
        fds
    }

    fn stats_mut(&mut self) -> &mut EnforceStats {
        &mut self.stats
    }
}

impl Enforcer for NftEnforcer {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn existing_bans(&mut self) -> io::Result<Vec<(Key, Duration)>> {
        Ok(self.existing.take().unwrap_or_default())
    }

    fn ban(&mut self, ban: &Ban, ttl: Duration, now: Micros) {
        self.ban_conn(ban, ttl, now, None);
    }

    fn ban_conn(&mut self, ban: &Ban, ttl: Duration, now: Micros, conn: Option<SocketAddr>) {
        self.now = self.now.max(now);
        self.stats.bans += 1;
        let ms = timeout_ms(ttl);
        self.ops
            .remember(ban.key, self.now + ms.saturating_mul(1000));
        self.turn.push((ban.key, ms, conn));
        // A turn's first ban goes out at once, as ipset's do (a lone ban
        // does not wait for the turn's end); the rest of the turn's bans
        // share one batch per family ([`Enforcer::tick`] is due now).
        if self.sent_first != Some(now) {
            self.sent_first = Some(now);
            self.send_turn();
        }
    }

    fn unban(&mut self, key: Key, now: Micros) {
        self.now = self.now.max(now);
        self.stats.unbans += 1;
        // A ban of this very turn is not sent at all.
        self.turn.retain(|(k, _, _)| *k != key);
        self.ops.forget(key);
        self.ops.push(Op::Del { key }, &self.cfg, &mut self.stats);
        self.ops.pump(self.now, &self.cfg, &mut self.stats);
    }

    fn register(&mut self, registry: &mio::Registry, first: usize) -> io::Result<()> {
        self.first_token = first;
        let r = mio::Interest::READABLE;
        registry.register(self.ops.socket(), mio::Token(first + TOKEN_NFT), r)?;
        let (diag, conntrack) = self.kill.sockets();
        if let Some(s) = diag {
            registry.register(s, mio::Token(first + TOKEN_DIAG), r)?;
        }
        if let Some(s) = conntrack {
            registry.register(s, mio::Token(first + TOKEN_CONNTRACK), r)?;
        }
        if let Some(w) = &mut self.watch {
            registry.register(&mut w.sock, mio::Token(first + TOKEN_WATCH), r)?;
        }
        Ok(())
    }

    fn ready(&mut self, token: usize, now: Micros) {
        self.now = self.now.max(now);
        match token.wrapping_sub(self.first_token) {
            TOKEN_NFT => self.drain_nft(),
            TOKEN_DIAG => self.kill.drain_tcp(self.now, &mut self.stats),
            TOKEN_CONNTRACK => self.kill.drain_udp(self.now, &mut self.stats),
            TOKEN_WATCH => self.drain_watch(),
            _ => {
                self.drain_all();
                self.drain_watch();
            }
        }
        self.send_turn();
        self.kill.start_batch(self.now, &mut self.stats);
    }

    fn next_deadline(&self) -> Option<Micros> {
        [
            (!self.turn.is_empty() || self.kill.batch_due()).then_some(self.now),
            self.ops.deadline(),
            self.kill.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn tick(&mut self, now: Micros) {
        self.now = self.now.max(now);
        self.drain_nft();
        self.send_turn();
        self.kill.start_batch(self.now, &mut self.stats);
        self.ops.expire(self.now, &self.cfg, &mut self.stats);
        self.kill.expire(self.now, &mut self.stats);
    }

    fn flush(&mut self, budget: Duration) {
        crate::enforce::flush_within(self, budget);
    }

    fn take_reports(&mut self) -> Vec<KillReport> {
        self.kill.take_reports()
    }

    fn stats(&self) -> EnforceStats {
        self.stats.clone()
    }

    fn rtt(&self, into: &mut crate::metrics::Histogram) {
        into.merge(self.ops.rtt());
        self.kill.rtt(into);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::msg::{Messages, Reply};
    use crate::nl::nftables::msg_type;

    fn cfg(tcp: bool, udp: bool) -> NftConfig {
        NftConfig {
            protos: Protos { tcp, udp },
            ports: vec![443, 8443],
            v6_prefix: 64,
            set_size: 1024,
        }
    }

    /// (type, acked) of every message in `buf`, each checked to carry `seq`.
    fn shape(buf: &NlBuf, seq: u32) -> Vec<(u16, bool)> {
        Messages::new(buf.as_bytes())
            .map(|r| match r {
                Ok(Reply::Data(m)) => {
                    assert_eq!(m.seq, seq);
                    (m.ty, m.flags & crate::nl::consts::NLM_F_ACK != 0)
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn timeouts_are_milliseconds_never_zero_and_capped() {
        assert_eq!(timeout_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(timeout_ms(Duration::ZERO), 1);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), MAX_TIMEOUT_MS);
    }

    #[test]
    fn the_v6_mask_follows_the_prefix() {
        let m = cfg(true, false).v6_mask();
        assert_eq!(
            m,
            [255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let c = NftConfig {
            v6_prefix: 56,
            ..cfg(true, false)
        };
        assert_eq!(c.v6_mask()[6..8], [255, 0]);
    }

    #[test]
    fn ensure_is_one_batch_with_one_ack_on_its_last_message() {
        let t = |cmd: u8| msg_type(cmd);
        use crate::nl::nftables::*;
        let mut buf = NlBuf::new();
        ensure(&mut buf, 5, &cfg(true, true), false);
        let s = shape(&buf, 5);
        let types: Vec<u16> = s.iter().map(|x| x.0).collect();
        assert_eq!(
            types,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_NEWCHAIN),
                t(NFT_MSG_NEWSET),
                t(NFT_MSG_DELSETELEM), // the port set flushed…
                t(NFT_MSG_NEWSETELEM), // …and filled again
                t(NFT_MSG_NEWSET),
                t(NFT_MSG_NEWSET),
                t(NFT_MSG_DELRULE as u8), // the chain flushed
                t(NFT_MSG_NEWRULE),       // tcp v4, tcp v6, udp v4, udp v6
                t(NFT_MSG_NEWRULE),
                t(NFT_MSG_NEWRULE),
                t(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END,
            ]
        );
        let acked: Vec<usize> = (0..s.len()).filter(|&i| s[i].1).collect();
        assert_eq!(acked, vec![s.len() - 2]);

        // Fresh: the table is deleted and created again first.
        buf.clear();
        ensure(&mut buf, 6, &cfg(true, false), true);
        let s = shape(&buf, 6);
        assert_eq!(
            s[1..4].iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_DELTABLE as u8),
                t(NFT_MSG_NEWTABLE)
            ]
        );
        assert_eq!(s.iter().filter(|x| x.0 == t(NFT_MSG_NEWRULE)).count(), 2);
        assert!(s[s.len() - 2].1);

        // No protocol: no rule, the chain's flush carries the ack.
        buf.clear();
        ensure(&mut buf, 7, &cfg(false, false), false);
        let s = shape(&buf, 7);
        assert_eq!(s[s.len() - 2], (t(NFT_MSG_DELRULE as u8), true));
    }

    #[test]
    fn a_turn_of_bans_is_one_message_per_family() {
        let mut buf = NlBuf::new();
        let keys: Vec<(Key, u64)> = (0..300u32)
            .map(|i| (Key::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 60_000))
            .collect();
        elems_batch(&mut buf, 9, false, true, &keys);
        let s = shape(&buf, 9);
        assert_eq!(s.len(), 3, "BEGIN, one NEWSETELEM, END");
        assert_eq!(
            s[1],
            (msg_type(crate::nl::nftables::NFT_MSG_NEWSETELEM), true)
        );
        // 300 elements of 28 bytes each (list entry 4, timeout 12, key
        // nest 4 and value 8), plus the headers.
        assert!(
            buf.len() > 300 * 28 && buf.len() < 300 * 28 + 200,
            "{}",
            buf.len()
        );
        assert_eq!(
            key_bytes(Key::new("2001:db8:1:2::9".parse().unwrap(), 64)),
            "2001:db8:1:2::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
