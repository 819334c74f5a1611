//! The kernel enforcer: bans go into ipsets over netlink, matched by the
//! DROP rule from [`crate::firewall`].
//!
//! Startup ([`KernelEnforcer::new`]) is synchronous and may block briefly:
//! it probes ip_set (permission and kernel support), creates the sets or
//! verifies the existing ones, installs the DROP rules, and reads back the
//! bans already in the sets. It fails with one clear line when any of that
//! cannot work.
//!
//! After that nothing blocks. [`Enforcer::ban`] writes an ipset ADD with the
//! ban's own timeout and records it in a small queue of pending requests
//! keyed by sequence number; the kernel executes nfnetlink requests inside
//! `sendmsg`, so the entry is in the set when `ban` returns, and the ACK
//! waits in the socket until the loop reports it readable and calls
//! [`Enforcer::ready`]. There replies are matched by sequence number:
//!
//! - ACK: done.
//! - `ENOENT` on ADD: the set was destroyed behind our back. Recreate it
//!   (one CREATE per family however many ADDs failed), retry each ADD once,
//!   and re-check the DROP rule once the CREATE is acknowledged (`repairs`).
//! - `ENOBUFS` from `recv`: the receive queue overflowed and some answers
//!   are lost; every pending request is idempotent, so all are sent again.
//! - anything else: logged and counted in `errors`, never fatal.
//!
//! A request unanswered after [`REPLY_TIMEOUT`] is dropped and counted.
//! Invariant: every sent request is either in `pending` or already counted.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::clock::{Micros, SECOND};
use crate::config::{Config, Protos};
use crate::enforce::{EnforceStats, Enforcer};
use crate::firewall::{Firewall, FirewallMode};
use crate::key::Key;
use crate::nl::buf::NlBuf;
use crate::nl::consts::*;
use crate::nl::ipset::{self, Family};
use crate::nl::msg::{Messages, Reply};
use crate::nl::socket::NlSocket;
use crate::policy::Ban;

/// Tokens the enforcer registers, starting at the `first` given to
/// [`Enforcer::register`]: `first` is the ipset socket.
pub const TOKENS: usize = 1;

/// How long a request may stay unanswered before it is counted as failed.
pub const REPLY_TIMEOUT: Micros = 5 * SECOND;

/// Most requests in flight; beyond that a ban is counted as an error
/// rather than queued (the kernel answers in microseconds, so reaching this
/// means the loop is not draining the socket).
const MAX_PENDING: usize = 4096;

/// Receive buffer of the ipset socket: room for thousands of ACKs between
/// two loop iterations, and for the list dump at startup.
const RCVBUF: usize = 1 << 20;

/// Timeout for the blocking startup exchanges.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the kernel enforcer needs from the configuration.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    pub set_v4: String,
    pub set_v6: String,
    /// `maxelem` of sets refract creates.
    pub maxelem: u32,
    /// Default timeout of sets refract creates (`--timeout`); every ban
    /// carries its own timeout, so this only matters for entries added by
    /// hand.
    pub default_timeout: Duration,
    pub firewall: FirewallMode,
    pub protos: Protos,
    pub ports: Vec<u16>,
}

impl KernelConfig {
    pub fn from_config(c: &Config) -> KernelConfig {
        KernelConfig {
            set_v4: c.set_v4.clone(),
            set_v6: c.set_v6.clone(),
            maxelem: c.set_size,
            default_timeout: c.timeout,
            firewall: c.firewall,
            protos: c.protos,
            ports: c.ports.clone(),
        }
    }

    fn set(&self, f: Family) -> &str {
        match f {
            Family::V4 => &self.set_v4,
            Family::V6 => &self.set_v6,
        }
    }
}

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

/// One request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add {
        key: Key,
        secs: u32,
        /// Already retried after a repair: a second `ENOENT` is an error.
        retried: bool,
    },
    Del {
        key: Key,
    },
    /// Recreating a set that vanished.
    Create {
        family: Family,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u32,
    op: Op,
    deadline: Micros,
}

/// Logging goes through here so the daemon can redirect it in one place.
fn log(msg: fmt::Arguments<'_>) {
    eprintln!("refract: {msg}");
}

/// Bans in ipsets over netlink. See the module docs.
#[derive(Debug)]
pub struct KernelEnforcer {
    cfg: KernelConfig,
    ipset: NlSocket,
    /// Type revisions to create sets with (from `IPSET_CMD_TYPE`).
    revision: [u8; 2],
    firewall: Firewall,
    pending: VecDeque<Pending>,
    /// A repair CREATE is in flight for this family (index: v4, v6).
    repairing: [bool; 2],
    existing: Option<Vec<(Key, Duration)>>,
    first_token: usize,
    /// The latest `now` the loop gave us (for deadlines set in `ready`).
    now: Micros,
    buf: NlBuf,
    rx: Vec<u8>,
    stats: EnforceStats,
}

fn fidx(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Seconds for an ipset timeout: rounded up (a ban never ends early), at
/// least 1 (0 would make the entry permanent), at most the kernel's limit.
pub fn timeout_secs(ttl: Duration) -> u32 {
    let s = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    s.clamp(1, u64::from(ipset::MAX_TIMEOUT)) as u32
}

fn startup_io(what: &str, e: io::Error) -> StartError {
    match e.raw_os_error() {
        Some(libc::EPERM) => StartError::Permission,
        Some(errno) => StartError::Other(format!("ipset: {what}: {}", ipset::strerror(errno))),
        None => StartError::Other(format!("ipset: {what}: {e}")),
    }
}

impl KernelEnforcer {
    /// Startup: probes ip_set, creates or verifies both sets, installs the
    /// DROP rules (unless `--firewall none`) and reads back existing bans.
    pub fn new(cfg: KernelConfig) -> Result<KernelEnforcer, StartError> {
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
            revision[fidx(family)] = max;
        }

        let firewall = Firewall::new(
            cfg.firewall,
            cfg.protos,
            &cfg.ports,
            &cfg.set_v4,
            &cfg.set_v6,
        );
        let mut me = KernelEnforcer {
            cfg,
            ipset,
            revision,
            firewall,
            pending: VecDeque::new(),
            repairing: [false; 2],
            existing: None,
            first_token: 0,
            now: 0,
            buf,
            rx: Vec::new(),
            stats: EnforceStats::default(),
        };

        let mut existing = Vec::new();
        for family in [Family::V4, Family::V6] {
            match me.list(family)? {
                Some(set) => {
                    me.verify(family, &set)?;
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
                None => me.create_blocking(family)?,
            }
        }
        // The sets exist now, so iptables can reference them.
        me.firewall.install().map_err(StartError::Firewall)?;
        me.existing = Some(existing);
        Ok(me)
    }

    /// Lists one set (header and members); `None` when it does not exist.
    fn list(&mut self, family: Family) -> Result<Option<ipset::SetInfo>, StartError> {
        let name = self.cfg.set(family).to_string();
        self.buf.clear();
        let seq = self.ipset.next_seq();
        ipset::List {
            set: Some(&name),
            header_only: false,
        }
        .emit(&mut self.buf, seq);
        let msgs = match self.ipset.request(&self.buf, STARTUP_TIMEOUT) {
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
    fn verify(&self, family: Family, set: &ipset::SetInfo) -> Result<(), StartError> {
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
                let create = create_request(&self.cfg, self.revision, family);
                Err(StartError::WrongSet(format!(
                    "ipset: set {name} {p}; remove it with `ipset destroy {name}` \
                     (first delete the iptables rules that use it) and start refract \
                     again, or name another set; refract creates it as `{}`",
                    create.command()
                )))
            }
        }
    }

    fn create_blocking(&mut self, family: Family) -> Result<(), StartError> {
        let mut buf = NlBuf::new();
        let seq = self.ipset.next_seq();
        let create = create_request(&self.cfg, self.revision, family);
        create.emit(&mut buf, seq);
        let cmd = create.command();
        self.ipset
            .request(&buf, STARTUP_TIMEOUT)
            .map(drop)
            .map_err(|e| startup_io(&format!("create ({cmd})"), e))
    }

    /// The DROP rules this enforcer manages (for logs and `--firewall none`
    /// documentation).
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// Requests still waiting for the kernel's answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends one request and records it as pending.
    fn send(&mut self, op: Op) {
        if self.pending.len() >= MAX_PENDING {
            self.stats.errors += 1;
            log(format_args!(
                "ipset: {}: dropped, {MAX_PENDING} requests already waiting for the kernel",
                describe(&op, &self.cfg)
            ));
            return;
        }
        let seq = self.ipset.next_seq();
        self.buf.clear();
        match op {
            Op::Add { key, secs, .. } => ipset::Add {
                set: self.cfg.set(Family::of(key)),
                key,
                timeout: Some(secs),
            }
            .emit(&mut self.buf, seq),
            Op::Del { key } => ipset::Del {
                set: self.cfg.set(Family::of(key)),
                key,
            }
            .emit(&mut self.buf, seq),
            Op::Create { family } => {
                create_request(&self.cfg, self.revision, family).emit(&mut self.buf, seq)
            }
        }
        match self.ipset.send(&self.buf) {
            Ok(()) => self.pending.push_back(Pending {
                seq,
                op,
                deadline: self.now + REPLY_TIMEOUT,
            }),
            Err(e) => {
                self.stats.errors += 1;
                log(format_args!("ipset: {}: {e}", describe(&op, &self.cfg)));
            }
        }
    }

    /// Drains the ipset socket to `WouldBlock`, handling every reply.
    fn drain_ipset(&mut self) {
        // Bounded: each datagram is consumed; the cap only guards against a
        // kernel that floods us.
        for _ in 0..100_000 {
            let mut rx = std::mem::take(&mut self.rx);
            match self.ipset.recv(&mut rx) {
                Ok(_) => {
                    self.handle(&rx);
                    self.rx = rx;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx = rx;
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.rx = rx;
                    self.resend_all();
                }
                Err(e) => {
                    self.rx = rx;
                    self.stats.errors += 1;
                    log(format_args!("ipset: receive: {e}"));
                    return;
                }
            }
        }
    }

    /// After an overrun some answers are lost: send every pending request
    /// again (all are idempotent) under new sequence numbers.
    fn resend_all(&mut self) {
        let ops: Vec<Op> = self.pending.drain(..).map(|p| p.op).collect();
        log(format_args!(
            "ipset: receive queue overflowed (ENOBUFS); re-sending {} requests",
            ops.len()
        ));
        for op in ops {
            self.send(op);
        }
    }

    fn handle(&mut self, datagram: &[u8]) {
        for reply in Messages::new(datagram) {
            let (seq, errno) = match reply {
                Ok(Reply::Ack(seq)) | Ok(Reply::Done(seq)) => (seq, 0),
                Ok(Reply::Error { seq, errno }) => (seq, errno),
                Ok(Reply::Data(_)) => continue, // nothing we send asks for data
                Err(m) => {
                    self.stats.errors += 1;
                    log(format_args!("ipset: malformed reply at byte {}", m.at));
                    return;
                }
            };
            let Some(i) = self.pending.iter().position(|p| p.seq == seq) else {
                continue; // stale: timed out or from before a resend
            };
            let p = self.pending.remove(i).expect("index from position");
            self.complete(p.op, errno);
        }
    }

    fn complete(&mut self, op: Op, errno: i32) {
        match (op, errno) {
            (Op::Create { family }, 0) => {
                self.repairing[fidx(family)] = false;
                self.stats.repairs += 1;
                log(format_args!(
                    "ipset: set {} was missing and has been recreated",
                    self.cfg.set(family)
                ));
                // The rule cannot outlive its set (iptables holds a
                // reference), so it is gone too: put it back. Rare, so
                // spawning iptables here is acceptable.
                if let Err(e) = self.firewall.install() {
                    self.stats.errors += 1;
                    log(format_args!("{e}"));
                }
            }
            (Op::Add { .. }, 0) | (Op::Del { .. }, 0) => {}
            // Unbanning something already gone (expired) is fine.
            (Op::Del { .. }, IPSET_ERR_EXIST) => {}
            (
                Op::Add {
                    key,
                    secs,
                    retried: false,
                },
                libc::ENOENT,
            ) => {
                let family = Family::of(key);
                if !self.repairing[fidx(family)] {
                    self.repairing[fidx(family)] = true;
                    self.send(Op::Create { family });
                }
                // The kernel runs requests in order: this ADD follows the
                // CREATE.
                self.send(Op::Add {
                    key,
                    secs,
                    retried: true,
                });
            }
            (op, errno) => {
                if let Op::Create { family } = op {
                    self.repairing[fidx(family)] = false;
                }
                self.stats.errors += 1;
                log(format_args!(
                    "ipset: {}: {}",
                    describe(&op, &self.cfg),
                    ipset::strerror(errno)
                ));
            }
        }
    }

    /// Drops requests past their deadline, counting each as an error.
    fn expire(&mut self, now: Micros) {
        while let Some(p) = self.pending.front() {
            if p.deadline > now {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            if let Op::Create { family } = p.op {
                self.repairing[fidx(family)] = false;
            }
            self.stats.errors += 1;
            log(format_args!(
                "ipset: {}: no answer from the kernel",
                describe(&p.op, &self.cfg)
            ));
        }
    }
}

/// The CREATE refract sends for `family`.
fn create_request(cfg: &KernelConfig, revision: [u8; 2], family: Family) -> ipset::Create<'_> {
    let name = cfg.set(family);
    let rev = revision[fidx(family)];
    let t = timeout_secs(cfg.default_timeout);
    match family {
        Family::V4 => ipset::Create::v4(name, rev, t, cfg.maxelem),
        Family::V6 => ipset::Create::v6(name, rev, t, cfg.maxelem),
    }
}

fn typename(f: Family) -> &'static str {
    match f {
        Family::V4 => "hash:ip",
        Family::V6 => "hash:net",
    }
}

fn describe(op: &Op, cfg: &KernelConfig) -> String {
    match *op {
        Op::Add { key, secs, .. } => {
            format!("add {key} to {} (timeout {secs})", cfg.set(Family::of(key)))
        }
        Op::Del { key } => format!("del {key} from {}", cfg.set(Family::of(key))),
        Op::Create { family } => format!("create {}", cfg.set(family)),
    }
}

impl Enforcer for KernelEnforcer {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn existing_bans(&mut self) -> io::Result<Vec<(Key, Duration)>> {
        Ok(self.existing.take().unwrap_or_default())
    }

    fn ban(&mut self, ban: &Ban, ttl: Duration, now: Micros) {
        self.now = self.now.max(now);
        self.stats.bans += 1;
        self.send(Op::Add {
            key: ban.key,
            secs: timeout_secs(ttl),
            retried: false,
        });
    }

    fn unban(&mut self, key: Key, now: Micros) {
        self.now = self.now.max(now);
        self.stats.unbans += 1;
        self.send(Op::Del { key });
    }

    fn register(&mut self, registry: &mio::Registry, first: usize) -> io::Result<()> {
        self.first_token = first;
        registry.register(&mut self.ipset, mio::Token(first), mio::Interest::READABLE)
    }

    fn ready(&mut self, token: usize, now: Micros) {
        self.now = self.now.max(now);
        let _ = token; // one socket today; drain it whichever token fired
        self.drain_ipset();
    }

    fn next_deadline(&self) -> Option<Micros> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    fn tick(&mut self, now: Micros) {
        self.now = self.now.max(now);
        self.drain_ipset();
        self.expire(now);
    }

    fn flush(&mut self, budget: Duration) {
        let end = Instant::now() + budget;
        while !self.pending.is_empty() {
            self.drain_ipset();
            if self.pending.is_empty() {
                break;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let n = self.pending.len();
                self.stats.errors += n as u64;
                log(format_args!(
                    "ipset: shutting down with {n} requests unanswered"
                ));
                self.pending.clear();
                break;
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            if let Err(e) = crate::sys::netlink::poll_readable_any(&[self.ipset.as_fd()], ms) {
                log(format_args!("ipset: poll: {e}"));
                break;
            }
        }
    }

    fn stats(&self) -> EnforceStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_never_zero() {
        assert_eq!(timeout_secs(Duration::from_secs(60)), 60);
        assert_eq!(timeout_secs(Duration::from_millis(60_001)), 61);
        assert_eq!(timeout_secs(Duration::ZERO), 1);
        assert_eq!(
            timeout_secs(Duration::from_secs(u64::MAX)),
            ipset::MAX_TIMEOUT
        );
    }

    #[test]
    fn start_errors_are_one_line_with_their_subsystem() {
        let p = StartError::Permission.to_string();
        assert!(p.starts_with("ipset: ") && p.contains("CAP_NET_ADMIN"));
        let n = StartError::NoIpset(io::Error::from_raw_os_error(libc::EOPNOTSUPP)).to_string();
        assert!(n.contains("no ip_set support") && !n.contains('\n'));
    }
}
