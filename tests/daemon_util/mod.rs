//! Helpers for the tests that run the real `refract` binary against real
//! files: a temp dir that removes itself, a daemon process that is killed
//! if a test fails, and the `stats:` line the daemon logs on SIGUSR1.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_refract");

/// A directory under the system temp dir, unique per process and test,
/// removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("refract-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An access line of user `user` from `ip` (IPv6 bracketed by the caller
/// or not: `ip` is printed as given after `from `).
pub fn access_line(user: &str, ip: &str) -> String {
    format!("2026/01/30 17:03:38.067799 from {ip}:58676 accepted tcp:www.example.com:443 [vless-in >> direct] email: {user}\n")
}

/// Appends `text` with one `write(2)` (as Xray does, `O_APPEND`).
pub fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `n` distinct lines (not access lines: the follower counts them, the
/// parser skips them).
pub fn lines(tag: &str, n: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for i in 0..n {
        // Writing to a String cannot fail.
        let _ = writeln!(s, "{tag} line {i}");
    }
    s
}

pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A running `refract` (`--dry-run` unless started in a namespace), stderr
/// captured in a file.
pub struct Daemon {
    pub child: Child,
    pub access: PathBuf,
    pub block: PathBuf,
    pub stderr: PathBuf,
    stats_seen: usize,
}

impl Daemon {
    /// Starts the daemon on `dir/access.log` and `dir/block.log` with
    /// `extra` flags and waits until it follows the log.
    pub fn start(dir: &TempDir, extra: &[&str]) -> Daemon {
        Daemon::start_with(
            dir,
            &dir.path("access.log"),
            &dir.path("block.log"),
            &[],
            &[&["--dry-run"], extra].concat(),
        )
    }

    /// Like [`Daemon::start`] with the access log at `access`, the audit
    /// log at `block`, and the
    /// binary run through `prefix` (e.g. `setpriv …` or `unshare -m sh -c
    /// SCRIPT`: the binary's path follows the prefix, then the flags; the
    /// pid stays the daemon's as long as every wrapper `exec`s). Unlike
    /// [`Daemon::start`], `--dry-run` is not implied: pass it, or run the
    /// kernel enforcer inside a namespace (`ip netns exec NAME`).
    pub fn start_with(
        dir: &TempDir,
        access: &Path,
        block: &Path,
        prefix: &[&str],
        extra: &[&str],
    ) -> Daemon {
        let access = access.to_path_buf();
        let block = block.to_path_buf();
        let stderr = dir.path("refract.stderr");
        let err = File::create(&stderr).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .arg(format!("--access.log={}", access.display()))
            .arg(format!("--block.log={}", block.display()))
            .args(extra)
            .env("REFRACT_LOG", "stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            access,
            block,
            stderr,
            stats_seen: 0,
        };
        wait_until(Duration::from_secs(10), "the startup line", || {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("refract exited at startup ({st}): {}", d.log());
            }
            d.log().contains(" following ").then_some(())
        });
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        refract::sys::process::kill(self.pid(), sig).unwrap();
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Asks for a `stats:` line (SIGUSR1) and parses its `name=value` pairs.
    pub fn stats(&mut self) -> HashMap<String, u64> {
        let before = self.stats_seen;
        self.signal(libc::SIGUSR1);
        let line = wait_until(Duration::from_secs(10), "a stats line", || {
            let log = self.log();
            let all: Vec<&str> = log
                .lines()
                .filter(|l| l.starts_with("refract: stats: "))
                .collect();
            all.get(before).map(|l| l.to_string())
        });
        self.stats_seen = before + 1;
        parse_stats(&line)
    }

    /// Waits until the follower has handed out exactly `n` lines, then
    /// checks that the count stays there (nothing re-read).
    pub fn expect_lines(&mut self, n: u64) -> HashMap<String, u64> {
        self.wait_lines(n);
        std::thread::sleep(Duration::from_millis(100));
        let s = self.stats();
        assert_eq!(s["lines"], n, "lines re-read: {s:?}");
        s
    }

    /// Waits until the follower has handed out `n` lines (never more).
    pub fn wait_lines(&mut self, n: u64) -> HashMap<String, u64> {
        wait_until(Duration::from_secs(60), &format!("{n} lines"), || {
            let s = self.stats();
            assert!(
                s["lines"] <= n,
                "read {} lines, expected {n}: {s:?}",
                s["lines"]
            );
            (s["lines"] == n).then_some(s)
        })
    }

    pub fn audit(&self) -> Vec<String> {
        std::fs::read_to_string(&self.block)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn wait_audit(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_until(timeout, &format!("{n} audit lines"), || {
            let a = self.audit();
            (a.len() >= n).then_some(a)
        })
    }

    /// SIGTERM, and the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        self.signal(libc::SIGTERM);
        let st = wait_until(Duration::from_secs(10), "exit", || {
            self.child.try_wait().unwrap()
        });
        (st, start.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn parse_stats(line: &str) -> HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// `(voluntary + nonvoluntary context switches, VmRSS kB)` of `pid`.
pub fn proc_status(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (
        field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:"),
        field("VmRSS:"),
    )
}

pub fn vm_hwm(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
