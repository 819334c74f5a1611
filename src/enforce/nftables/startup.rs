//! Startup, `refract cleanup` and the `--firewall auto` choice: the
//! synchronous exchanges before (or instead of) the loop, each bounded by
//! [`STARTUP_TIMEOUT`].
//!
//! [`NftEnforcer::new`] takes the instance lock, reads back the elements
//! of `banned4`/`banned6` with their time left (they become
//! [`crate::enforce::Enforcer::existing_bans`]), joins the notification
//! group (before changing anything, so a deletion right after is seen),
//! then sends the keep-or-create batch ([`super::ensure`]); if the kernel
//! refuses it (an object named like ours with another shape), the table is
//! recreated fresh and the bans read back are put into it again.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::enforce::ipset::lock::{self, LockError};
use crate::enforce::kill::{Killer, KILL_RCVBUF};
use crate::enforce::EnforceStats;
use crate::key::Key;
use crate::nl::buf::NlBuf;
use crate::nl::consts::{NETLINK_NETFILTER, NETLINK_SOCK_DIAG};
use crate::nl::nftables::{self as nft, Batch};
use crate::nl::socket::NlSocket;

use super::ops::Ops;
use super::{ensure, log, timeout_ms, NftConfig, NftEnforcer, Watch, ELEMS_PER_MSG, TABLE};

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer of the nftables socket (the element dump at start).
const RCVBUF: usize = 1 << 20;

/// The instance lock's name: one daemon per table per namespace.
const LOCK: &str = "nft:inet:refract";

fn nft_err(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::EPROTONOSUPPORT | libc::EOPNOTSUPP) => " (no nf_tables in this kernel)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("nftables: {what}: {e}{hint}"))
}

fn open() -> io::Result<NlSocket> {
    NlSocket::open(NETLINK_NETFILTER, RCVBUF).map_err(|e| nft_err("netlink socket", e))
}

/// The elements of one of our sets (none when the table or set is
/// missing), as keys with the time they have left.
fn read_set(sock: &mut NlSocket, cfg: &NftConfig, set: &str) -> io::Result<Vec<(Key, Duration)>> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    nft::dump_elems(&mut buf, seq, TABLE, set);
    let msgs = match sock.request(&buf, STARTUP_TIMEOUT) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(nft_err(&format!("list set {set}"), e)),
    };
    let mut out = Vec::new();
    for m in &msgs {
        for el in nft::parse_elems(&m.as_msg()) {
            let key = match el.key.len() {
                4 => Key::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&el.key[..]).expect("4"))),
                16 => {
                    let a = Ipv6Addr::from(<[u8; 16]>::try_from(&el.key[..]).expect("16"));
                    Key::new(a.into(), cfg.v6_prefix)
                }
                _ => continue,
            };
            // No expiration: added by hand without a timeout; the longest
            // ban there is.
            let ms = el.expires_ms.unwrap_or(super::MAX_TIMEOUT_MS);
            out.push((key, Duration::from_millis(ms.max(1))));
        }
    }
    Ok(out)
}

fn send_batch(sock: &mut NlSocket, what: &str, f: impl FnOnce(&mut NlBuf, u32)) -> io::Result<()> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    f(&mut buf, seq);
    sock.request(&buf, STARTUP_TIMEOUT)
        .map(drop)
        .map_err(|e| nft_err(what, e))
}

impl NftEnforcer {
    /// Startup (module docs). Fails with one line naming what is wrong.
    pub fn new(cfg: NftConfig) -> io::Result<NftEnforcer> {
        let held = lock::acquire(&[LOCK]).map_err(|e| match e {
            LockError::Held(_) => io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "nftables: refract is already running on table inet {TABLE} \
                     in this network namespace"
                ),
            ),
            LockError::Io(_, e) => nft_err("instance lock", e),
        })?;
        let mut sock = open()?;
        let mut existing = read_set(&mut sock, &cfg, super::SET_V4)?;
        existing.extend(read_set(&mut sock, &cfg, super::SET_V6)?);
        let own_port = sock.port_id().map_err(|e| nft_err("getsockname", e))?;
        let watch = match Watch::open(own_port) {
            Ok(w) => Some(w),
            Err(e) => {
                log(format_args!(
                    "nftables: cannot watch the ruleset ({e}); a deleted table is rebuilt \
                     only when a ban finds it missing"
                ));
                None
            }
        };
        // Families whose read-back bans go in again: all after a fresh
        // table; IPv6 always, because a changed --ipv6-prefix turns an
        // element into another key (re-adding one that is there is a no-op).
        let mut restore = [false, true];
        if let Err(e) = send_batch(&mut sock, "create table", |b, s| ensure(b, s, &cfg, false)) {
            log(format_args!("{e}; recreating table inet {TABLE}"));
            send_batch(&mut sock, "recreate table", |b, s| ensure(b, s, &cfg, true))?;
            restore[0] = true;
        }
        for v6 in [false, true] {
            if !restore[usize::from(v6)] {
                continue;
            }
            let elems: Vec<(Key, u64)> = existing
                .iter()
                .filter(|(k, _)| k.is_v4() != v6)
                .map(|&(k, d)| (k, timeout_ms(d)))
                .collect();
            for c in elems.chunks(ELEMS_PER_MSG) {
                send_batch(&mut sock, "restore bans", |b, s| {
                    super::elems_batch(b, s, v6, true, c)
                })?;
            }
        }
        let tcp =
            if cfg.protos.tcp {
                Some(NlSocket::open(NETLINK_SOCK_DIAG, KILL_RCVBUF).map_err(|e| {
                    io::Error::new(e.kind(), format!("sock_diag: netlink socket: {e}"))
                })?)
            } else {
                None
            };
        let udp =
            if cfg.protos.udp {
                Some(NlSocket::open(NETLINK_NETFILTER, KILL_RCVBUF).map_err(|e| {
                    io::Error::new(e.kind(), format!("conntrack: netlink socket: {e}"))
                })?)
            } else {
                None
            };
        let now = crate::sys::time::monotonic();
        let mut ops = Ops::new(sock);
        for &(k, d) in &existing {
            ops.remember(k, now + d.as_micros() as u64);
        }
        Ok(NftEnforcer {
            kill: Killer::new(tcp, udp, &cfg.ports),
            cfg,
            ops,
            watch,
            existing: Some(existing),
            turn: Vec::new(),
            sent_first: None,
            first_token: 0,
            now,
            stats: EnforceStats::default(),
            _lock: held,
        })
    }
}

/// Whether table `inet refract` exists.
pub fn table_exists() -> io::Result<bool> {
    has_table(&mut open()?, TABLE).map_err(|e| nft_err("get table", e))
}

/// Whether table `inet NAME` exists (`ENOENT` is "no"; any other error is
/// the kernel's, as it came). The ban table's and the shaper's check.
pub fn has_table(sock: &mut NlSocket, table: &str) -> io::Result<bool> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    nft::get_table(&mut buf, seq, table);
    match sock.request(&buf, STARTUP_TIMEOUT) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `refract cleanup` for nftables: deletes table `inet refract` (with
/// `dry_run`, only says whether it would); the command's whole output.
pub fn cleanup_report(dry_run: bool) -> io::Result<String> {
    if lock::held(&[LOCK])
        .map_err(|e| nft_err("instance lock", e))?
        .is_some()
    {
        return Ok(format!(
            "refuses: refract is running on table inet {TABLE}; stop it first (systemctl stop refract)\n"
        ));
    }
    if !table_exists()? {
        return Ok(format!("nothing to clean up: no table inet {TABLE}\n"));
    }
    if dry_run {
        return Ok(format!(
            "would delete: table inet {TABLE}\n(dry run: nothing was changed)\n"
        ));
    }
    let mut sock = open()?;
    send_batch(&mut sock, "delete table", |buf, seq| {
        let mut b = Batch::begin(buf, seq);
        b.del_table(TABLE, true);
        b.end();
    })?;
    Ok(format!("deleted: table inet {TABLE}\n"))
}
