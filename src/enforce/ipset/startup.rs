//! Startup, `refract check` and `refract cleanup`: the synchronous
//! exchanges with the kernel before (or instead of) the loop. They may
//! block briefly (each exchange has [`STARTUP_TIMEOUT`]).
//!
//! [`probe`] learns without changing anything: it probes ip_set
//! (permission: nfnetlink checks `CAP_NET_ADMIN` for every message, and
//! kernel support), the set types' revisions, the existing sets (verified
//! to be usable: type, family, timeout support), and whether the kernel
//! can destroy sockets. [`KernelEnforcer::new`] then creates the missing
//! sets, watches the ruleset, installs the DROP rules and reads back the
//! bans already in the sets, so a restart forgets nothing. Each failure is
//! one clear line ([`StartError`]).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::config::FirewallMode;
use crate::enforce::kill::{Killer, KILL_RCVBUF};
use crate::enforce::EnforceStats;
use crate::nl::buf::NlBuf;
use crate::nl::consts::{IPSET_ERR_BUSY, NETLINK_NETFILTER, NETLINK_SOCK_DIAG};
use crate::nl::diag::{self, SockId};
use crate::nl::ipset::{self, Family};
use crate::nl::socket::NlSocket;

use super::ops::Ops;
use super::rules::Watch;
use super::{create_request, log, KernelConfig, KernelEnforcer};

/// Timeout for the blocking startup exchanges.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer of the ipset socket: room for thousands of ACKs between
/// two loop iterations, and for the list dump at startup.
const RCVBUF: usize = 1 << 20;

const TCP: u8 = libc::IPPROTO_TCP as u8;

/// Why startup failed. The `Display` form is the one line the daemon
/// prints before exiting.
#[derive(Debug)]
pub enum StartError {
    /// No `CAP_NET_ADMIN` (netlink said `EPERM`).
    Permission,
    /// The kernel has no ip_set (nfnetlink subsystem 6 missing).
    NoIpset(io::Error),
    /// A set with our name exists with the wrong type, family or without
    /// timeout support: the message carries the command that fixes it.
    WrongSet(String),
    /// The DROP rule could not be installed (missing binary, …).
    Firewall(io::Error),
    /// Anything else, already prefixed with its subsystem.
    Other(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Permission => write!(
                f,
                "ipset: permission denied: refract needs CAP_NET_ADMIN \
                 (run it as root or grant the capability)"
            ),
            StartError::NoIpset(e) => write!(
                f,
                "ipset: the kernel has no ip_set support ({e}); load it with \
                 `modprobe ip_set` or use a kernel with CONFIG_IP_SET"
            ),
            StartError::WrongSet(s) | StartError::Other(s) => f.write_str(s),
            StartError::Firewall(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        let kind = match e {
            StartError::Permission => io::ErrorKind::PermissionDenied,
            StartError::Firewall(ref e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}

fn startup_io(what: &str, e: io::Error) -> StartError {
    match e.raw_os_error() {
        Some(libc::EPERM) => StartError::Permission,
        Some(errno) => StartError::Other(format!("ipset: {what}: {}", ipset::strerror(errno))),
        None => StartError::Other(format!("ipset: {what}: {e}")),
    }
}

/// What startup learns from the kernel without changing anything: shared by
/// [`KernelEnforcer::new`] and `refract check`.
#[derive(Debug)]
pub struct Probe {
    ipset: NlSocket,
    /// Newest revision of `hash:ip` and `hash:net` the kernel offers.
    pub revision: [u8; 2],
    /// The sets as they exist now (already verified to be usable); `None`
    /// for a set that startup will create.
    pub sets: [Option<ipset::SetInfo>; 2],
    /// Whether the kernel can destroy sockets (`CONFIG_INET_DIAG_DESTROY`);
    /// `None` without `--proto tcp`.
    pub destroy: Option<bool>,
    tcp: Option<NlSocket>,
    udp: Option<NlSocket>,
}

/// Probes ip_set (permission and kernel support), the set types' revisions,
/// the existing sets (verified), and socket destruction. Changes nothing.
pub fn probe(cfg: &KernelConfig) -> Result<Probe, StartError> {
    let mut ipset = NlSocket::open(NETLINK_NETFILTER, RCVBUF)
        .map_err(|e| StartError::Other(format!("ipset: netlink socket: {e}")))?;
    let mut buf = NlBuf::new();

    // Protocol probe: nfnetlink checks CAP_NET_ADMIN for every message
    // (nfnetlink_rcv()), and a missing subsystem fails here too.
    let seq = ipset.next_seq();
    ipset::Protocol.emit(&mut buf, seq);
    if let Err(e) = ipset.request(&buf, STARTUP_TIMEOUT) {
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => StartError::Permission,
            Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::ENOENT | libc::EINVAL) => {
                StartError::NoIpset(e)
            }
            _ => startup_io("protocol probe", e),
        });
    }

    let mut revision = [0u8; 2];
    for family in [Family::V4, Family::V6] {
        let typename = typename(family);
        buf.clear();
        let seq = ipset.next_seq();
        ipset::TypeQuery { typename, family }.emit(&mut buf, seq);
        let msgs = ipset
            .request(&buf, STARTUP_TIMEOUT)
            .map_err(|e| startup_io(&format!("type {typename}"), e))?;
        let (_, max) = msgs
            .first()
            .and_then(|m| ipset::parse_type(&m.as_msg()))
            .ok_or_else(|| {
                StartError::Other(format!("ipset: type {typename}: no revision in reply"))
            })?;
        revision[family.index()] = max;
    }

    let mut sets = [None, None];
    for family in [Family::V4, Family::V6] {
        if let Some(set) = list_set(&mut ipset, cfg.set(family))? {
            verify_set(cfg, revision, family, &set)?;
            sets[family.index()] = Some(set);
        }
    }

    let (tcp, destroy) = if cfg.protos.tcp {
        let mut k = NlSocket::open(NETLINK_SOCK_DIAG, KILL_RCVBUF)
            .map_err(|e| StartError::Other(format!("sock_diag: netlink socket: {e}")))?;
        let ok = probe_destroy(&mut k)?;
        (Some(k), Some(ok))
    } else {
        (None, None)
    };
    let udp = if cfg.protos.udp {
        let k = NlSocket::open(NETLINK_NETFILTER, KILL_RCVBUF)
            .map_err(|e| StartError::Other(format!("conntrack: netlink socket: {e}")))?;
        Some(k)
    } else {
        None
    };
    Ok(Probe {
        ipset,
        revision,
        sets,
        destroy,
        tcp,
        udp,
    })
}

impl Probe {
    /// The `ipset create` command startup would run for `family`.
    pub fn create_command(&self, cfg: &KernelConfig, family: Family) -> String {
        create_request(cfg, self.revision, family).command()
    }
}

/// Lists one set (header and members); `None` when it does not exist.
fn list_set(sock: &mut NlSocket, name: &str) -> Result<Option<ipset::SetInfo>, StartError> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    ipset::List {
        set: Some(name),
        header_only: false,
    }
    .emit(&mut buf, seq);
    let msgs = match sock.request(&buf, STARTUP_TIMEOUT) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(startup_io(&format!("list {name}"), e)),
    };
    let mut p = ipset::ListParser::new();
    for m in &msgs {
        p.feed(&m.as_msg())
            .map_err(|e| StartError::Other(format!("{e} (set {name})")))?;
    }
    Ok(p.sets.into_iter().find(|s| s.name == name))
}

/// Checks that an existing set is one refract can use.
fn verify_set(
    cfg: &KernelConfig,
    revision: [u8; 2],
    family: Family,
    set: &ipset::SetInfo,
) -> Result<(), StartError> {
    let want = typename(family);
    let fam = Family::from_nfproto(set.family);
    let problem = if set.typename != want || fam != Some(family) {
        Some(format!(
            "is {} family {}, refract needs {want} family {}",
            set.typename,
            fam.map_or("?", Family::ipset_word),
            family.ipset_word()
        ))
    } else if set.timeout.is_none() {
        Some("has no timeout support (created without `timeout`)".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => {
            let name = &set.name;
            let create = create_request(cfg, revision, family);
            Err(StartError::WrongSet(format!(
                "ipset: set {name} {p}; remove it with `ipset destroy {name}` \
                 (first delete the iptables rules that use it) and start refract \
                 again, or name another set; refract creates it as `{}`",
                create.command()
            )))
        }
    }
}

impl KernelEnforcer {
    /// Startup: [`probe`], then creates the missing sets, installs the DROP
    /// rules (unless `--firewall none`) and reads back existing bans.
    pub fn new(cfg: KernelConfig) -> Result<KernelEnforcer, StartError> {
        let probe = probe(&cfg)?;
        if probe.destroy == Some(false) {
            log(format_args!(
                "sock_diag: this kernel cannot destroy sockets \
                 (CONFIG_INET_DIAG_DESTROY is off): bans stop new packets, \
                 but open TCP connections stay up until they close"
            ));
        }
        let firewall = cfg.firewall();
        let Probe {
            mut ipset,
            revision,
            sets,
            tcp,
            udp,
            ..
        } = probe;

        let mut existing = Vec::new();
        for (family, set) in [Family::V4, Family::V6].into_iter().zip(sets) {
            match set {
                Some(set) => {
                    existing.extend(set.members.iter().map(|m| {
                        // 0 = a permanent entry (added by hand without a
                        // timeout): report it as the longest ban there is.
                        let secs = match m.timeout {
                            Some(0) | None => ipset::MAX_TIMEOUT,
                            Some(s) => s,
                        };
                        (m.key, Duration::from_secs(u64::from(secs)))
                    }));
                }
                None => create_blocking(&mut ipset, &cfg, revision, family)?,
            }
        }
        let mut rules = Watch::default();
        if cfg.firewall != FirewallMode::None {
            // Watching before installing: a deletion right after is seen.
            match Watch::open() {
                Ok(w) => rules = w,
                Err(e) => log(format_args!(
                    "firewall: cannot watch the ruleset ({e}); a deleted DROP rule \
                     is restored only when a set is recreated"
                )),
            }
        }
        // The sets exist now, so iptables can reference them.
        firewall.install().map_err(StartError::Firewall)?;
        if cfg.firewall == FirewallMode::None {
            log(format_args!(
                "firewall none: refract fills the sets; the DROP rules are yours, e.g. {}",
                firewall.describe().replace('\n', " ; ")
            ));
        }
        Ok(KernelEnforcer {
            kill: Killer::new(tcp, udp, &cfg.ports),
            cfg,
            ops: Ops::new(ipset, revision),
            firewall,
            rules,
            existing: Some(existing),
            first_token: 0,
            now: 0,
            stats: EnforceStats::default(),
        })
    }
}

fn create_blocking(
    ipset: &mut NlSocket,
    cfg: &KernelConfig,
    revision: [u8; 2],
    family: Family,
) -> Result<(), StartError> {
    let mut buf = NlBuf::new();
    let seq = ipset.next_seq();
    let create = create_request(cfg, revision, family);
    create.emit(&mut buf, seq);
    let cmd = create.command();
    ipset
        .request(&buf, STARTUP_TIMEOUT)
        .map(drop)
        .map_err(|e| startup_io(&format!("create ({cmd})"), e))
}

/// What [`cleanup`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub rules_removed: usize,
    /// Names of the sets destroyed (absent ones are skipped).
    pub sets_destroyed: Vec<String>,
}

/// `refract cleanup`: deletes the DROP rules (unless `--firewall none`),
/// then destroys both sets with everything in them. Idempotent: missing
/// rules and sets are not errors. Runs synchronously; not for the loop.
pub fn cleanup(cfg: &KernelConfig) -> io::Result<Cleanup> {
    let firewall = cfg.firewall();
    // Rules first: a set referenced by a rule cannot be destroyed.
    let rules_removed = firewall.remove()?;
    let mut sock = NlSocket::open(NETLINK_NETFILTER, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("ipset: netlink socket: {e}")))?;
    let mut sets_destroyed = Vec::new();
    for name in [&cfg.set_v4, &cfg.set_v6] {
        let mut buf = NlBuf::new();
        let seq = sock.next_seq();
        ipset::Destroy { set: name }.emit(&mut buf, seq);
        match sock.request(&buf, STARTUP_TIMEOUT) {
            Ok(_) => sets_destroyed.push(name.clone()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                let hint = if errno == IPSET_ERR_BUSY {
                    " (an iptables rule still uses it: list them with \
                     `iptables -S INPUT` and delete them with `iptables -D INPUT …`)"
                } else {
                    ""
                };
                let msg = format!("ipset: destroy {name}: {}{hint}", ipset::strerror(errno));
                let kind = if errno == libc::EPERM {
                    io::ErrorKind::PermissionDenied
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(kind, msg));
            }
        }
    }
    Ok(Cleanup {
        rules_removed,
        sets_destroyed,
    })
}

/// Asks the kernel to destroy a socket that cannot exist: `ENOENT` means
/// `SOCK_DESTROY` works; `EOPNOTSUPP` means the kernel lacks
/// `CONFIG_INET_DIAG_DESTROY` (bans still work, open connections are not
/// ended: logged once); `EPERM` means no `CAP_NET_ADMIN`.
fn probe_destroy(sock: &mut NlSocket) -> Result<bool, StartError> {
    let mut buf = NlBuf::new();
    let id = SockId {
        cookie: [0; 2],
        ..SockId::any(libc::AF_INET as u8)
    };
    let seq = sock.next_seq();
    diag::DestroyRequest { protocol: TCP, id }.emit(&mut buf, seq);
    match sock.request(&buf, STARTUP_TIMEOUT) {
        Ok(_) => Ok(true),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(true),
            Some(libc::EPERM) => Err(StartError::Permission),
            Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(StartError::Other(format!("sock_diag: destroy probe: {e}"))),
        },
    }
}

fn typename(f: Family) -> &'static str {
    match f {
        Family::V4 => "hash:ip",
        Family::V6 => "hash:net",
    }
}
