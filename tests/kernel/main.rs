//! Tests against the real kernel, each inside network namespaces it
//! creates and always removes (never the host's firewall, sets or
//! sockets): netlink ipset, the DROP rules, connection kills, the kernel
//! enforcer driven directly, and the real daemon enforcing in a namespace.
//! Independent witnesses (`ipset`, `iptables`, `ss`, `conntrack`, the
//! clients' own sockets) check what the kernel holds. Every test needs
//! root and the tools it names (`Netns::with_tools`); without them it
//! skips with the reason.
//!
//! Tests that load the machine (floods of bans or connections) take
//! `support::heavy()`: they run one at a time. In-process namespace work
//! runs on threads of its own (`Netns::in_netns`): no test changes the
//! process's namespace, cwd or environment.

#[path = "../support/mod.rs"]
mod support;

/// The namespace fixture itself: creation, exec, `in_netns`, veth,
/// cleanup on drop.
mod fixture;

/// ipset over netlink (`refract::nl::ipset`): create, add, test, del,
/// list, flush, destroy, v4 and v6, error codes; the `ipset` CLI witnesses.
mod ipset;

/// The DROP rules against real iptables/ip6tables (`refract::enforce::ipset::rules`):
/// idempotent install, removal, clear errors.
mod firewall;

/// Ending a banned key's connections: SOCK_DESTROY through sock_diag
/// (TCP, IPv4 and dual-stack listeners) and conntrack deletes (UDP).
mod kill;

/// Liveness facts: the `tcp_info` refract reads from a sock_diag dump is
/// what `ss -ti` reads; a download judged in use, an idle connection not.
mod liveness;

/// The nftables enforcer driven directly: bans with timeouts, restart
/// read-back, repair after `nft flush ruleset`, a flood, cleanup.
mod nftables;

/// The nf_tables half of bandwidth caps (`refract::shape::nft`): the
/// table, users read back, conntrack and packet marks on real TCP and
/// UDP flows, upload policing and a rate changed in place, a download
/// untouched by a small upload cap, hundreds of users and thousands of
/// peers.
mod shape_nft;

/// The kernel enforcer driven directly (no daemon): bans, restart
/// read-back, repair, startup errors, kills, a mio loop, cleanup.
mod enforcer;

/// The real daemon with the kernel enforcer: a violation lands in the
/// set; `check`, run, restart and `cleanup` as an operator runs them.
mod daemon;

/// `refract cleanup` finds rules by set name (other ports, both
/// protocols), its dry run, and one daemon per set (the instance lock).
mod cleanup;

/// Faults against the running daemon in a namespace: the set destroyed,
/// the rule deleted, thousands of connections of one key, SIGTERM during
/// a burst of bans.
mod faults;

/// A flood of 100,000 bans into a small set: responsive to signals,
/// nothing lost, the set within maxelem (heavy).
mod bans;

/// The control commands (`refract ban`, `unban`, `status`, `user`)
/// against the kernel enforcer: set entries, a reset connection, restart.
mod control;

/// Prometheus metrics scraped inside the namespace after a ban with a
/// kill, an unban and a skipped line.
mod metrics;

/// Fleet mode across namespaces: a second device on another node lands in
/// that node's set; --limit 2 over three nodes.
mod fleet;

/// Bandwidth caps: the conntrack mark dump behind a mark's release, and
/// the daemon shaping real transfers through HTB and nftables.
mod shape;

/// Least privilege: the capabilities the daemon keeps, and that they are
/// enough for a ban and a repair.
mod privilege;

/// The tc half of the bandwidth caps (`refract::shape::tc`): our HTB root,
/// a class per user and the mark classifier on a veth; marked downloads
/// capped (IPv4, IPv6, two users at once, changed in place), unmarked and
/// unclassed ones not;
/// adoption, repair, a foreign root refused, cleanup, `refract check`'s
/// scratch-namespace test.
mod shape_tc;
