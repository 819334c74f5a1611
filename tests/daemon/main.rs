//! Tests of the real daemon (`--dry-run`: no kernel state) against real
//! files: what it reads, how it follows a log through everything that
//! happens to it, how it answers signals, what it does when the files or
//! the disk go wrong, and the bounds it keeps. Each test starts its own
//! daemon in its own temp dir, ready on `READY=1`, and watches it through
//! its `stats:` line, its log and its audit log. Tests that need root or a
//! tool skip with the reason.
//!
//! The flood tests take `support::heavy()`: they run one at a time.

#[path = "../support/mod.rs"]
mod support;

/// Readiness: `READY=1` and the one `ready:` line come only once the log
/// is followed; a line appended right after is decided.
mod ready;

/// The follower: every kind of rotation, truncation, deletion and
/// replacement of the log, a 1 GiB sparse file; exact line counts.
mod rotation;

/// Signals and the audit log: SIGTERM/SIGINT exit 0, SIGHUP reloads the
/// limits and reopens the audit log, a violation reaches the audit log,
/// misconfiguration warnings are rate-limited, startup errors are one line.
mod signals;

/// Faults injected from outside: the log directory removed, the log made
/// unreadable, a full audit filesystem, binary garbage, a 100 MiB line, a
/// SIGHUP storm.
mod faults;

/// The control socket: status, user, ban, unban, reload; a flooding
/// client; one daemon per socket, a stale one replaced.
mod control;

/// Prometheus metrics: a scrape after a ban, an unban and a skipped line,
/// `promtool check metrics`, the metrics file.
mod metrics;

/// Hooks on bans and unbans: the event on stdin and in the environment,
/// a flood with slow hooks (bounded, no zombies), a hung hook killed.
mod hooks;

/// Fleet mode: two nodes sharing a real Redis, Redis gone and back.
mod fleet;

/// An idle daemon never wakes up (context switches over 10 s).
mod idle;

/// Peak memory under a flood of users and addresses stays under the
/// documented cap (heavy).
mod memory;
