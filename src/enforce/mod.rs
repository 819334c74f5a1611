//! The boundary between decisions and their effect: the [`Enforcer`].
//!
//! The daemon talks to one enforcer. [`DryRun`] ([`dry_run`]) only counts;
//! the kernel enforcer ([`ipset`]: ipsets, DROP rules, and [`kill`] for
//! open connections over sock_diag and conntrack) and the [`nftables`]
//! one (refract's own nf_tables table, the same `kill`) are behind the
//! same trait; [`choose`] says which one `--firewall` means.
//!
//! Contract: `ban`/`unban` never block. An enforcer that talks to the kernel
//! queues the request, registers its sockets with the loop in [`register`],
//! and finishes the work in [`ready`] when a socket is readable and in
//! [`tick`] when [`next_deadline`] is due. Errors are logged and counted by
//! the enforcer, never returned to the loop. Every netlink exchange goes
//! through [`crate::nl::pipeline`] with the bounds below.
//!
//! [`register`]: Enforcer::register
//! [`ready`]: Enforcer::ready
//! [`tick`]: Enforcer::tick
//! [`next_deadline`]: Enforcer::next_deadline

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::clock::{Micros, SECOND};
use crate::key::Key;
use crate::nl::pipeline::Limits;
use crate::policy::Ban;

pub mod dry_run;
pub mod ipset;
pub mod kill;
pub mod nftables;

pub use dry_run::DryRun;
pub use ipset::rules::Firewall;
pub use ipset::{
    cleanup, cleanup_plan, cleanup_report, probe, Cleanup, CleanupPlan, KernelConfig,
    KernelEnforcer, Probe, StartError, TOKENS,
};
pub use nftables::{NftConfig, NftEnforcer};

/// Most requests sent and not yet answered, per socket. Each answer holds
/// about 1 KiB of the receive buffer until read; staying far below the
/// buffer's size keeps the kernel from dropping answers (`ENOBUFS`).
pub const WINDOW: usize = 128;

/// How long a request may stay unanswered before it is counted as failed.
pub const REPLY_TIMEOUT: Micros = 5 * SECOND;

/// Most requests queued for sending per socket; beyond that a request is
/// counted as an error rather than queued (memory stays bounded if the
/// kernel stops answering).
pub const MAX_QUEUED: usize = 65536;

/// The pipeline bounds every kernel socket of the enforcer runs with.
pub fn limits() -> Limits {
    Limits {
        window: WINDOW,
        max_queued: MAX_QUEUED,
        timeout: REPLY_TIMEOUT,
        // 128 requests of ipset (about 80 bytes) or sock_diag (72) fit;
        // a dump's bytecode may take the datagram past it alone.
        max_batch_bytes: 32 << 10,
    }
}

/// Counters every enforcer keeps (plain data: summary, metrics later).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnforceStats {
    pub bans: u64,
    pub unbans: u64,
    pub tcp_killed: u64,
    pub udp_killed: u64,
    pub errors: u64,
    pub repairs: u64,
    /// Bans the kernel refused because the set was full (`maxelem`).
    pub set_full: u64,
}

/// What ending a banned key's open connections achieved (kernel enforcer),
/// reported once all of that key's dumps and kills are answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillReport {
    pub key: Key,
    /// TCP sockets destroyed (`SOCK_DESTROY` acknowledged).
    pub tcp: u32,
    /// UDP conntrack entries deleted.
    pub udp: u32,
}

/// Something that can keep a key out.
pub trait Enforcer {
    /// For logs: `kernel`, `dry-run`.
    fn name(&self) -> &'static str;

    /// Bans already in force when refract starts (read back from the kernel),
    /// with the time they have left. Called once, before the loop runs; may
    /// block briefly.
    fn existing_bans(&mut self) -> io::Result<Vec<(Key, Duration)>> {
        Ok(Vec::new())
    }

    /// Keeps `ban.key` out for `ttl` and ends its open connections.
    fn ban(&mut self, ban: &Ban, ttl: Duration, now: Micros);

    /// [`Enforcer::ban`], knowing the client connection whose log line made
    /// the newcomer (address and source port, as Xray logged them): an
    /// enforcer can end that connection by exact lookup at once, before it
    /// searches for the key's other connections.
    fn ban_conn(&mut self, ban: &Ban, ttl: Duration, now: Micros, conn: Option<SocketAddr>) {
        let _ = conn;
        self.ban(ban, ttl, now);
    }

    /// Lets `key` back in before its ban runs out.
    fn unban(&mut self, key: Key, now: Micros);

    /// Registers the enforcer's sockets with the loop; it owns the tokens
    /// `first .. first + TOKENS` (see the daemon's token table).
    fn register(&mut self, registry: &mio::Registry, first: usize) -> io::Result<()> {
        let _ = (registry, first);
        Ok(())
    }

    /// One of the enforcer's tokens is ready: drain it to `WouldBlock`.
    fn ready(&mut self, token: usize, now: Micros) {
        let _ = (token, now);
    }

    /// When the enforcer wants [`Enforcer::tick`] (retries, timeouts).
    fn next_deadline(&self) -> Option<Micros> {
        None
    }

    /// Called at or after [`Enforcer::next_deadline`].
    fn tick(&mut self, now: Micros) {
        let _ = now;
    }

    /// Shutdown: finishes queued work, waiting at most `budget`.
    fn flush(&mut self, budget: Duration) {
        let _ = budget;
    }

    /// Connection-kill results finished since the last call (for the
    /// log line that says how many connections a ban ended).
    fn take_reports(&mut self) -> Vec<KillReport> {
        Vec::new()
    }

    fn stats(&self) -> EnforceStats;

    /// Adds the round trips of the enforcer's netlink requests to `into`
    /// (metrics); nothing for an enforcer without sockets.
    fn rtt(&self, into: &mut crate::metrics::Histogram) {
        let _ = into;
    }
}

/// What `--firewall auto` runs: `Iptables` (ipset) when refract 0.2's
/// IPv4 or IPv6 set already exists (an existing installation keeps its backend)
/// or when the ipset subsystem answers and the kernel has the `xt_set`
/// match (loaded, `/proc/net/ip_tables_matches`, or installed as a module)
/// with `iptables` on the `PATH`; otherwise `Nftables`. Any other mode is
/// returned as it is. The second value says why, for the start line and
/// `refract check`.
pub fn choose(cfg: &crate::config::Config) -> (crate::config::FirewallMode, String) {
    use crate::config::FirewallMode;
    if cfg.firewall != FirewallMode::Auto {
        return (
            cfg.firewall,
            format!("--firewall {}", cfg.firewall.as_str()),
        );
    }
    let kcfg = KernelConfig {
        firewall: FirewallMode::Iptables,
        ..KernelConfig::from_config(cfg)
    };
    match probe(&kcfg) {
        Ok(p) if p.sets[0].is_some() || p.sets[1].is_some() => (
            FirewallMode::Iptables,
            format!("auto: ipset, set {} already exists", cfg.set_v4),
        ),
        Ok(_) if xt_set_available() && in_path("iptables") => (
            FirewallMode::Iptables,
            "auto: ipset, the kernel has ip_set and xt_set and iptables is installed".into(),
        ),
        Ok(_) => (
            FirewallMode::Nftables,
            "auto: nftables, no refract set exists and xt_set or iptables is missing".into(),
        ),
        Err(e) => (
            FirewallMode::Nftables,
            format!("auto: nftables, ipset is not usable ({e})"),
        ),
    }
}

/// Whether the `xt_set` match is loaded or installed as a module.
fn xt_set_available() -> bool {
    let loaded = std::fs::read_to_string("/proc/net/ip_tables_matches")
        .map(|s| s.lines().any(|l| l.trim() == "set"))
        .unwrap_or(false);
    if loaded || std::path::Path::new("/sys/module/xt_set").exists() {
        return true;
    }
    // Not loaded yet: installed for the running kernel (modules.dep names it).
    let Ok(rel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    std::fs::read_to_string(format!("/lib/modules/{}/modules.dep", rel.trim()))
        .map(|s| s.contains("/xt_set.ko"))
        .unwrap_or(false)
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// What [`flush_within`] needs of a kernel enforcer (ipset and nftables
/// share the shutdown flush).
pub(crate) trait Flush {
    /// Reads everything readable and sends what that queued.
    fn drain_all(&mut self);
    /// Whether any request is unanswered or waiting.
    fn busy(&self) -> bool;
    /// Gives up on every request; returns how many there were.
    fn abandon(&mut self) -> usize;
    /// The sockets the answers come on.
    fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>>;
    fn stats_mut(&mut self) -> &mut EnforceStats;
}

/// [`Enforcer::flush`] of a kernel enforcer: drains until nothing is
/// waiting or `budget` is spent (then the rest is abandoned, counted and
/// logged), sleeping in `poll` on its sockets in between. Bounded by the
/// budget: every pass either waits or finishes.
pub(crate) fn flush_within(e: &mut impl Flush, budget: Duration) {
    let end = std::time::Instant::now() + budget;
    loop {
        e.drain_all();
        if !e.busy() {
            return;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let n = e.abandon();
            e.stats_mut().errors += n as u64;
            crate::logger::warning(format_args!(
                "enforce: shutting down with {n} kernel requests unanswered"
            ));
            return;
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        if let Err(err) = crate::sys::netlink::poll_readable_any(&e.fds(), ms) {
            crate::logger::warning(format_args!("enforce: poll: {err}"));
            return;
        }
    }
}
