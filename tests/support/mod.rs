//! The one support module of the integration tests. Every test binary
//! (`tests/<subject>/main.rs`) includes it with
//! `#[path = "../support/mod.rs"] mod support;` and uses what it needs:
//!
//! - [`netns`]: network namespaces a test creates and always removes, with
//!   the tools it needs checked first ([`netns::Netns::with_tools`]);
//! - [`daemon`]: the real `refract` binary on real files, ready when it
//!   says so (`READY=1` on `$NOTIFY_SOCKET`), its `stats:` line on SIGUSR1;
//! - [`rules`]: the DROP rules as the code spells them
//!   (`refract::enforce::ipset::rules::rules`), as argv for `-C`/`-D`/`-A` and counted in
//!   `iptables -S`;
//! - [`nl`]: a banned key's TCP sockets and UDP conntrack entries found and
//!   killed one blocking request at a time, from refract's wire formats
//!   (the daemon sends the same requests without blocking);
//! - [`transfer`]: a real TCP transfer between two namespaces, its rate
//!   measured at the receiver (the bandwidth tests).
//!
//! And here, what every subject shares: skipping with a reason that shows,
//! the one bounded wait ([`wait_until`], [`poll_until`], and
//! [`wait_progress`] for floods), the temp dir, and the lock that keeps the
//! heavy tests of one binary from running at the same time.
//!
//! Green on any machine: no test asserts this machine's speed. What must
//! happen is waited for with a bound far above anything seen (see
//! [`PROMPT`]), or, for work whose length depends on the machine, for as
//! long as it makes progress ([`wait_progress`]); the times are printed.

#![allow(dead_code)] // reason: each test binary uses a different subset

pub mod daemon;
pub mod netns;
pub mod nl;
pub mod redis;
pub mod rules;
pub mod transfer;

use std::fmt::Debug;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long something the daemon does "at once" (answer a signal, exit,
/// write an audit line, put a ban in the set) may take before a test calls
/// it lost. Far above what it takes (milliseconds; the tests print their
/// measurements) so that a busy 2-core machine or a slow CI runner does not
/// fail a test: the bound catches a hang or a lost event, not slowness.
pub const PROMPT: Duration = Duration::from_secs(10);

/// How long a flood may go without any progress before a test calls it
/// stuck (see [`wait_progress`]).
pub const STALL: Duration = Duration::from_secs(60);

/// Whether we run as root (effective uid 0), read from /proc so that the
/// test crate needs no `unsafe`.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Where `tool` is on `$PATH`, if it is.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// `promtool` (Prometheus' own checker of the exposition format): on
/// `$PATH`, or where `scripts/deps.sh` puts it (`$REFRACT_TOOLS`, default
/// `/var/cache/refract-tools`).
pub fn promtool() -> Option<PathBuf> {
    which("promtool").or_else(|| {
        let p = PathBuf::from(
            std::env::var("REFRACT_TOOLS").unwrap_or_else(|_| "/var/cache/refract-tools".into()),
        )
        .join("promtool");
        p.exists().then_some(p)
    })
}

/// `promtool check metrics` on `text` must pass (skipped, with the
/// reason printed, without promtool).
pub fn promtool_check(text: &str) {
    let Some(p) = promtool() else {
        return skip("promtool not installed (scripts/deps.sh test fetches it)");
    };
    let mut child = std::process::Command::new(p)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Whether `tool` is installed (on `$PATH`).
pub fn have_tool(tool: &str) -> bool {
    which(tool).is_some()
}

/// Says why a test does not run. Written to the stderr handle, not with
/// `eprintln!` (which libtest captures and hides for a passing test): a
/// skip must show in every run's output, not pass silently.
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// `None` (after [`skip`]) unless we are root and every tool in `tools` is
/// installed: the check of a test that runs as root outside a namespace.
pub fn root_with(tools: &[&str]) -> Option<()> {
    if !is_root() {
        skip("needs root");
        return None;
    }
    for tool in tools {
        if !have_tool(tool) {
            skip(&format!("`{tool}` not installed"));
            return None;
        }
    }
    Some(())
}

/// Polls `f` until it returns `Some` or `timeout` passes; `None` then. The
/// one polling loop of the suite: every wait in a test is bounded. Polls
/// at once, then every 1, 2, 4 … up to 20 ms (fine enough to time a ban,
/// coarse enough not to load the machine while waiting for a long one).
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Like [`poll_until`], but a timeout fails the test, naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Waits for work whose length depends on the machine (a flood): `f`
/// returns `Ok(result)` when done, or `Err(progress)`, a snapshot of the
/// counters that move while the work goes on. Fails only when the snapshot
/// has not changed for `stall` (nothing moves: lost, not slow), or after a
/// hard cap of 60 stalls, so that even a wait on progress is bounded.
pub fn wait_progress<T, P: PartialEq + Debug>(
    stall: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, P>,
) -> T {
    let start = Instant::now();
    let cap = stall * 60;
    let mut last: Option<(P, Instant)> = None;
    loop {
        match f() {
            Ok(v) => return v,
            Err(p) => {
                let now = Instant::now();
                match &last {
                    Some((q, since)) if *q == p => assert!(
                        now.duration_since(*since) < stall,
                        "{what}: no progress for {stall:?} (at {p:?}, after {:?})",
                        start.elapsed()
                    ),
                    _ => last = Some((p, now)),
                }
                assert!(
                    start.elapsed() < cap,
                    "{what}: not done after {cap:?} (at {:?})",
                    last.as_ref().map(|l| &l.0)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static HEAVY: Mutex<()> = Mutex::new(());

/// Held by the tests that load the machine (floods of lines, bans or
/// connections): within one test binary they run one after the other, as
/// they did when each was a binary of its own. A heavy test that failed
/// does not poison the others.
pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A directory under the system temp dir, unique per process and test
/// (tests of one binary run at the same time), removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("refract-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
