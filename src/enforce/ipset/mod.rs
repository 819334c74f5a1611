//! The kernel enforcer: bans go into ipsets over netlink, matched by the
//! DROP rules of [`rules`]; a ban's open connections are ended by
//! [`crate::enforce::kill`].
//!
//! - [`startup`]: probe, verify, create, read back ([`KernelEnforcer::new`],
//!   `refract check`), and `refract cleanup`; synchronous, may block
//!   briefly, fails with one clear line.
//! - [`ops`]: ADD/DEL from the loop and the repair of a set destroyed
//!   behind our back.
//! - [`rules`]: the DROP rules and the watch that restores them.
//! - [`lock`]: one enforcer per set in a network namespace.
//!
//! After startup nothing blocks. Every kernel socket is one mio token
//! ([`TOKENS`]) and one [`crate::nl::channel::Channel`]; sockets are told
//! apart by their token alone. Per ban: the ADD is sent at once (it runs
//! inside `sendmsg`, so the key cannot reconnect from then on), the logged
//! connection is destroyed by exact lookup, and the key joins the turn's
//! kill batch; [`Enforcer::next_deadline`] is then `now`, so the daemon
//! calls [`Enforcer::tick`] at the end of the turn and one search per
//! family and protocol covers every key banned in it.
//!
//! Invariant: every request sent is either in flight in its pipeline or
//! already answered, expired or abandoned, and then counted.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::clock::Micros;
use crate::config::{Config, FirewallMode, Protos};
use crate::enforce::kill::Killer;
use crate::enforce::{EnforceStats, Enforcer, KillReport};
use crate::key::Key;
use crate::nl::ipset::{self as nl_ipset, Family};
use crate::policy::Ban;

pub mod lock;
pub mod ops;
pub mod rules;
pub mod startup;

use ops::{Effect, Op, Ops};
use rules::{Firewall, Watch};
pub use startup::{
    cleanup, cleanup_plan, cleanup_report, probe, Cleanup, CleanupPlan, Probe, StartError,
};

/// Tokens the enforcer registers, starting at the `first` given to
/// [`Enforcer::register`] (offsets below).
pub const TOKENS: usize = 4;
/// The ipset socket.
const TOKEN_IPSET: usize = 0;
/// The sock_diag socket (with `--proto tcp`).
const TOKEN_DIAG: usize = 1;
/// The conntrack socket (with `--proto udp`).
const TOKEN_CONNTRACK: usize = 2;
/// The ruleset watch (with `--firewall iptables`).
const TOKEN_RULES: usize = 3;

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

    /// The DROP rules for these sets, ports and protocols.
    pub fn firewall(&self) -> Firewall {
        Firewall::new(
            self.firewall,
            self.protos,
            &self.ports,
            &self.set_v4,
            &self.set_v6,
        )
    }

    fn set(&self, f: Family) -> &str {
        match f {
            Family::V4 => &self.set_v4,
            Family::V6 => &self.set_v6,
        }
    }
}

/// Kernel errors and repairs are warnings in the daemon's log.
fn log(msg: std::fmt::Arguments<'_>) {
    crate::logger::warning(msg);
}

/// Seconds for an ipset timeout: rounded up (a ban never ends early), at
/// least 1 (0 would make the entry permanent), at most the kernel's limit.
pub fn timeout_secs(ttl: Duration) -> u32 {
    let s = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    s.clamp(1, u64::from(nl_ipset::MAX_TIMEOUT)) as u32
}

/// The CREATE refract sends for `family`.
fn create_request(cfg: &KernelConfig, revision: [u8; 2], family: Family) -> nl_ipset::Create<'_> {
    let name = cfg.set(family);
    let rev = revision[family.index()];
    let t = timeout_secs(cfg.default_timeout);
    match family {
        Family::V4 => nl_ipset::Create::v4(name, rev, t, cfg.maxelem),
        Family::V6 => nl_ipset::Create::v6(name, rev, t, cfg.maxelem),
    }
}

/// Bans in ipsets over netlink. See the module docs.
#[derive(Debug)]
pub struct KernelEnforcer {
    cfg: KernelConfig,
    ops: Ops,
    kill: Killer,
    firewall: Firewall,
    rules: Watch,
    existing: Option<Vec<(Key, Duration)>>,
    first_token: usize,
    /// The latest `now` the loop gave us (for deadlines set in `ready`).
    now: Micros,
    stats: EnforceStats,
    /// Held for the enforcer's life: no second one on these sets.
    _lock: lock::InstanceLock,
}

impl KernelEnforcer {
    /// The DROP rules this enforcer manages (for logs and `--firewall none`
    /// documentation).
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// ipset requests still waiting for the kernel's answer.
    pub fn pending(&self) -> usize {
        self.ops.in_flight()
    }

    /// Whether any request (ipset, dump or kill) is unanswered or waiting.
    pub fn busy(&self) -> bool {
        self.ops.busy() || self.kill.busy()
    }

    /// Carries out what finished ipset requests asked for.
    fn effects(&mut self) {
        for e in self.ops.take_effects() {
            match e {
                // The rule cannot outlive its set (iptables holds a
                // reference), so it is gone too: put it back. Rare, so
                // spawning iptables here is acceptable.
                Effect::Reinstall => {
                    if let Err(e) = self.firewall.install() {
                        self.stats.errors += 1;
                        log(format_args!("{e}"));
                    }
                }
                Effect::Kill(key) => self.kill.ban(key, None, self.now, &mut self.stats),
            }
        }
    }

    fn drain_ipset(&mut self) {
        self.ops.drain(self.now, &self.cfg, &mut self.stats);
        self.effects();
    }

    /// Everything readable, and the turn's kill batch started.
    fn drain_all(&mut self) {
        self.drain_ipset();
        self.kill.start_batch(self.now, &mut self.stats);
        self.kill.drain_tcp(self.now, &mut self.stats);
        self.kill.drain_udp(self.now, &mut self.stats);
    }
}

impl crate::enforce::Flush for KernelEnforcer {
    fn drain_all(&mut self) {
        KernelEnforcer::drain_all(self);
    }

    fn busy(&self) -> bool {
        KernelEnforcer::busy(self)
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

impl Enforcer for KernelEnforcer {
    fn name(&self) -> &'static str {
        "kernel"
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
        let op = Op::Add {
            key: ban.key,
            secs: timeout_secs(ttl),
            retried: false,
        };
        self.ops.send(op, self.now, &self.cfg, &mut self.stats);
        self.effects();
        // The ADD already ran inside sendmsg: the key cannot reconnect.
        self.kill.ban(ban.key, conn, self.now, &mut self.stats);
    }

    fn unban(&mut self, key: Key, now: Micros) {
        self.now = self.now.max(now);
        self.stats.unbans += 1;
        self.ops
            .send(Op::Del { key }, self.now, &self.cfg, &mut self.stats);
        self.effects();
    }

    fn register(&mut self, registry: &mio::Registry, first: usize) -> io::Result<()> {
        self.first_token = first;
        let r = mio::Interest::READABLE;
        registry.register(self.ops.socket(), mio::Token(first + TOKEN_IPSET), r)?;
        let (diag, conntrack) = self.kill.sockets();
        if let Some(s) = diag {
            registry.register(s, mio::Token(first + TOKEN_DIAG), r)?;
        }
        if let Some(s) = conntrack {
            registry.register(s, mio::Token(first + TOKEN_CONNTRACK), r)?;
        }
        if let Some(s) = self.rules.socket() {
            registry.register(s, mio::Token(first + TOKEN_RULES), r)?;
        }
        Ok(())
    }

    /// `token` is the mio token value; any token of ours drains its socket
    /// (an unknown one drains all, which is always correct). Any call also
    /// starts the turn's kill batch: the loop may not reach `tick` first.
    fn ready(&mut self, token: usize, now: Micros) {
        self.now = self.now.max(now);
        match token.wrapping_sub(self.first_token) {
            TOKEN_IPSET => self.drain_ipset(),
            TOKEN_DIAG => self.kill.drain_tcp(self.now, &mut self.stats),
            TOKEN_CONNTRACK => self.kill.drain_udp(self.now, &mut self.stats),
            TOKEN_RULES => self.rules.drain(self.now, &mut self.stats),
            _ => {
                self.drain_all();
                self.rules.drain(self.now, &mut self.stats);
            }
        }
        self.kill.start_batch(self.now, &mut self.stats);
    }

    fn next_deadline(&self) -> Option<Micros> {
        [
            // Keys banned this turn: their dumps start when it ends.
            self.kill.batch_due().then_some(self.now),
            self.ops.deadline(),
            self.kill.deadline(),
            self.rules.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn tick(&mut self, now: Micros) {
        self.now = self.now.max(now);
        // The ADDs of the turn first (answered inside sendmsg), then the
        // turn's kill batch; its answers come with the sockets' readiness.
        self.drain_ipset();
        self.kill.start_batch(self.now, &mut self.stats);
        self.ops.expire(self.now, &self.cfg, &mut self.stats);
        self.effects();
        self.kill.expire(self.now, &mut self.stats);
        self.rules.check(self.now, &self.firewall, &mut self.stats);
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

    #[test]
    fn timeouts_round_up_and_never_zero() {
        assert_eq!(timeout_secs(Duration::from_secs(60)), 60);
        assert_eq!(timeout_secs(Duration::from_millis(60_001)), 61);
        assert_eq!(timeout_secs(Duration::ZERO), 1);
        assert_eq!(
            timeout_secs(Duration::from_secs(u64::MAX)),
            nl_ipset::MAX_TIMEOUT
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
