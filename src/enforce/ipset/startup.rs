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
//! one clear line ([`StartError`]). Before any of it, the enforcer takes the
//! sets' instance lock ([`super::lock`]): a second daemon on the same sets
//! changes nothing and fails with [`StartError::Running`].
//!
//! [`cleanup`] finds refract's rules by the set names they match on (every
//! table, whatever ports and protocols made them: [`rules::referencing`]),
//! deletes them, checks that none is left, then destroys the sets;
//! [`cleanup_plan`] is the same search without any change (`cleanup
//! --dry-run`), and [`cleanup_report`] is the command's whole output.

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

use super::lock::{self, LockError};
use super::ops::Ops;
use super::rules::{self, Listed, Watch};
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
    /// Another refract in this network namespace holds the lock of this
    /// set ([`super::lock`]).
    Running(String),
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
            StartError::Running(set) => write!(
                f,
                "ipset: another refract is already running on set {set} in this network \
                 namespace (`ss -xlp | grep @{}` shows it); stop it first, or give this \
                 one other sets (--set-name, --set-name6)",
                lock::name(set)
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
        // First: a refused second daemon must not have changed anything.
        let held = lock::acquire(&[&cfg.set_v4, &cfg.set_v6]).map_err(|e| match e {
            LockError::Held(set) => StartError::Running(set),
            LockError::Io(set, e) => {
                StartError::Other(format!("ipset: instance lock @{}: {e}", lock::name(&set)))
            }
        })?;
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
            _lock: held,
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

/// What [`cleanup`] would do now ([`cleanup_plan`]); its `Display` is the
/// dry run's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupPlan {
    /// The rules that match on refract's sets: deleted first.
    pub rules: Vec<Listed>,
    /// With `--firewall none`, the rules on the sets are the operator's:
    /// cleanup leaves them, and cannot destroy a set one of them uses.
    pub kept: Vec<Listed>,
    /// The sets that exist, with their number of entries when the kernel
    /// says it.
    pub sets: Vec<(String, Option<u32>)>,
    /// A running refract holds this set's instance lock: cleanup refuses.
    pub running: Option<String>,
}

impl fmt::Display for CleanupPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(set) = &self.running {
            writeln!(
                f,
                "refuses: refract is running on set {set}; stop it first (systemctl stop refract)"
            )?;
        }
        for r in &self.rules {
            writeln!(f, "would delete: {r}")?;
        }
        for r in &self.kept {
            writeln!(f, "would keep (--firewall none: your rule): {r}")?;
        }
        for (name, n) in &self.sets {
            match n {
                Some(n) => writeln!(f, "would destroy: ipset destroy {name} ({n} entries)")?,
                None => writeln!(f, "would destroy: ipset destroy {name}")?,
            }
        }
        if self.rules.is_empty() && self.sets.is_empty() {
            writeln!(f, "nothing to remove")?;
        }
        writeln!(
            f,
            "refract cleanup --dry-run: {} rule(s) and {} set(s) would go; nothing was changed",
            self.rules.len(),
            self.sets.len()
        )
    }
}

fn ipset_error(what: &str, e: io::Error) -> io::Error {
    let errno = e.raw_os_error().unwrap_or(0);
    let kind = if errno == libc::EPERM {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::Other
    };
    let why = if errno == libc::EPERM {
        "permission denied (refract cleanup needs CAP_NET_ADMIN: run it as root)".to_string()
    } else if errno != 0 {
        ipset::strerror(errno).to_string()
    } else {
        e.to_string()
    };
    io::Error::new(kind, format!("ipset: {what}: {why}"))
}

fn cleanup_socket() -> io::Result<NlSocket> {
    NlSocket::open(NETLINK_NETFILTER, RCVBUF)
        .map_err(|e| io::Error::new(e.kind(), format!("ipset: netlink socket: {e}")))
}

/// The rules on refract's sets as the ruleset has them now. Without
/// iptables installed and with `--firewall none` there is nothing to
/// list: refract never made a rule.
fn rules_on_sets(cfg: &KernelConfig) -> io::Result<Vec<Listed>> {
    match rules::referencing(&[&cfg.set_v4, &cfg.set_v6]) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && cfg.firewall == FirewallMode::None => {
            Ok(Vec::new())
        }
        other => other,
    }
}

/// `refract cleanup --dry-run`: what [`cleanup`] would remove, found the
/// same way; changes nothing (it lists rules, lists set headers and binds
/// and releases the instance lock's names).
pub fn cleanup_plan(cfg: &KernelConfig) -> io::Result<CleanupPlan> {
    let running = lock::held(&[&cfg.set_v4, &cfg.set_v6])
        .map_err(|e| io::Error::new(e.kind(), format!("ipset: instance lock: {e}")))?;
    Ok(CleanupPlan {
        running,
        ..find(cfg)?
    })
}

/// The rules and sets [`cleanup`] would remove now (`running` unset: the
/// callers know it).
fn find(cfg: &KernelConfig) -> io::Result<CleanupPlan> {
    let found = rules_on_sets(cfg)?;
    let (rules, kept) = match cfg.firewall {
        FirewallMode::None => (Vec::new(), found),
        // nftables and auto reach the ipset cleanup only as iptables.
        FirewallMode::Iptables | FirewallMode::Nftables | FirewallMode::Auto => (found, Vec::new()),
    };
    let mut sock = cleanup_socket()?;
    let mut sets = Vec::new();
    for name in [&cfg.set_v4, &cfg.set_v6] {
        let mut buf = NlBuf::new();
        let seq = sock.next_seq();
        ipset::List {
            set: Some(name),
            header_only: true,
        }
        .emit(&mut buf, seq);
        let msgs = match sock.request(&buf, STARTUP_TIMEOUT) {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(ipset_error(&format!("list {name}"), e)),
        };
        let mut p = ipset::ListParser::new();
        for m in &msgs {
            p.feed(&m.as_msg())
                .map_err(|e| io::Error::other(format!("{e} (set {name})")))?;
        }
        let elements = p
            .sets
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.elements);
        sets.push((name.clone(), elements));
    }
    Ok(CleanupPlan {
        rules,
        kept,
        sets,
        running: None,
    })
}

/// Passes of delete-then-list before cleanup gives up on rules that keep
/// coming back (someone re-adding them while it runs).
const CLEANUP_PASSES: usize = 3;

/// `refract cleanup`: deletes every rule that matches on refract's sets
/// (unless `--firewall none`), whatever ports and protocols made it, checks
/// that none is left, then destroys both sets with everything in them.
/// Refuses while a refract runs on the sets (it would put them back).
/// Idempotent: missing rules and sets are not errors. An error says what
/// is left. Runs synchronously; not for the loop.
pub fn cleanup(cfg: &KernelConfig) -> io::Result<Cleanup> {
    // Held until cleanup returns: a daemon starting meanwhile is refused
    // rather than racing it.
    let _held = match lock::acquire(&[&cfg.set_v4, &cfg.set_v6]) {
        Ok(l) => l,
        Err(LockError::Held(set)) => {
            return Err(io::Error::other(format!(
                "refract is running on set {set} in this network namespace: stop it first \
                 (systemctl stop refract), then run cleanup again; nothing was removed"
            )))
        }
        Err(LockError::Io(set, e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("ipset: instance lock @{}: {e}", lock::name(&set)),
            ))
        }
    };
    let plan = find(cfg)?;
    let mut rules_removed = 0;
    let mut left = plan.rules;
    // Rules first: a set referenced by a rule cannot be destroyed.
    for _ in 0..CLEANUP_PASSES {
        if left.is_empty() {
            break;
        }
        for r in &left {
            r.delete()?;
            rules_removed += 1;
        }
        left = rules_on_sets(cfg)?;
    }
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(Listed::to_string).collect();
        return Err(io::Error::other(format!(
            "firewall: rules on refract's sets keep coming back after {rules_removed} \
             deletions (is a refract or a firewall manager running?): {}",
            list.join(" ; ")
        )));
    }
    let mut sock = cleanup_socket()?;
    let mut sets_destroyed = Vec::new();
    for name in [&cfg.set_v4, &cfg.set_v6] {
        let mut buf = NlBuf::new();
        let seq = sock.next_seq();
        ipset::Destroy { set: name }.emit(&mut buf, seq);
        match sock.request(&buf, STARTUP_TIMEOUT) {
            Ok(_) => sets_destroyed.push(name.clone()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                let busy = e.raw_os_error() == Some(IPSET_ERR_BUSY);
                let mut err = ipset_error(&format!("destroy {name}"), e);
                if busy {
                    let kept: Vec<String> = plan
                        .kept
                        .iter()
                        .filter(|r| r.spec.iter().any(|w| w == name))
                        .map(Listed::to_string)
                        .collect();
                    let hint = if kept.is_empty() {
                        " (something other than an iptables rule uses it: a list:set \
                         set (`ipset list -t`), or a rule iptables-save cannot show)"
                            .to_string()
                    } else {
                        format!(
                            " (your rules use it, kept because of --firewall none: {})",
                            kept.join(" ; ")
                        )
                    };
                    err = io::Error::new(err.kind(), format!("{err}{hint}"));
                }
                return Err(err);
            }
        }
    }
    Ok(Cleanup {
        rules_removed,
        sets_destroyed,
    })
}

/// `refract cleanup [--dry-run]`, the whole command: the text for standard
/// output, or the one-line error (exit 1). `dry_run` comes from the
/// command's own `--dry-run` flag (not the daemon's `REFRACT_DRY_RUN`: an
/// uninstall of a service that ran as a dry run must still clean up).
pub fn cleanup_report(cfg: &KernelConfig, dry_run: bool) -> io::Result<String> {
    if dry_run {
        return Ok(cleanup_plan(cfg)?.to_string());
    }
    let c = cleanup(cfg)?;
    let sets = if c.sets_destroyed.is_empty() {
        "no sets".to_string()
    } else {
        c.sets_destroyed.join(", ")
    };
    Ok(format!(
        "refract cleanup: removed {} DROP rule(s), destroyed {sets}\n",
        c.rules_removed
    ))
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

/// [`probe_destroy`] on a sock_diag socket of its own, for `refract
/// check` with a backend that has no probe of its own (nftables):
/// whether open connections of a banned address can be ended.
pub fn destroy_works() -> Result<bool, String> {
    let mut sock = NlSocket::open(crate::nl::consts::NETLINK_SOCK_DIAG, 1 << 16)
        .map_err(|e| format!("sock_diag: {e}"))?;
    probe_destroy(&mut sock).map_err(|e| e.to_string())
}

fn typename(f: Family) -> &'static str {
    match f {
        Family::V4 => "hash:ip",
        Family::V6 => "hash:net",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(v6: bool, set: &str) -> Listed {
        Listed {
            v6,
            table: "filter".into(),
            chain: "INPUT".into(),
            spec: ["-m", "set", "--match-set", set, "src", "-j", "DROP"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[test]
    fn dry_run_output_names_each_rule_and_set_and_says_nothing_changed() {
        let plan = CleanupPlan {
            rules: vec![listed(false, "s4"), listed(true, "s6")],
            kept: vec![],
            sets: vec![("s4".into(), Some(3)), ("s6".into(), None)],
            running: Some("s4".into()),
        };
        assert_eq!(
            plan.to_string(),
            "refuses: refract is running on set s4; stop it first (systemctl stop refract)\n\
             would delete: iptables -t filter -D INPUT -m set --match-set s4 src -j DROP\n\
             would delete: ip6tables -t filter -D INPUT -m set --match-set s6 src -j DROP\n\
             would destroy: ipset destroy s4 (3 entries)\n\
             would destroy: ipset destroy s6\n\
             refract cleanup --dry-run: 2 rule(s) and 2 set(s) would go; nothing was changed\n"
        );
        let none = CleanupPlan {
            kept: vec![listed(false, "s4")],
            ..CleanupPlan::default()
        };
        let text = none.to_string();
        assert!(text.starts_with("would keep (--firewall none: your rule): iptables"));
        assert!(text.contains("nothing to remove\n"), "{text}");
    }

    #[test]
    fn running_is_one_line_naming_the_set_and_the_way_out() {
        let e = StartError::Running("refract_banned_users".into()).to_string();
        assert!(
            e.starts_with("ipset: another refract is already running on set refract_banned_users"),
            "{e}"
        );
        assert!(e.contains("@refract:set:refract_banned_users") && !e.contains('\n'));
    }
}
