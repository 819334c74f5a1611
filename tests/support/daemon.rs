//! The real `refract` binary against real files: a daemon process that is
//! killed if a test fails, ready when it says so, and the `stats:` line it
//! logs on SIGUSR1.
//!
//! Readiness is the daemon's own signal, as systemd sees it (the unit is
//! `Type=notify`, sd_notify(3)): [`Notify`] binds a unix datagram socket in
//! the test's temp dir, its path goes to the daemon as `$NOTIFY_SOCKET`
//! (a path, so it works from inside `ip netns exec`, `setpriv` and a
//! private mount namespace alike), and [`Daemon::start_with`] returns once
//! a datagram with `READY=1` came, or fails when the daemon exits first or
//! says nothing within [`READY_WITHIN`]. Like systemd, [`Notify`] keeps
//! reading for the daemon's whole life: a unix datagram socket holds only
//! `net.unix.max_dgram_qlen` (10 by default) unread messages, and the
//! daemon sends two per SIGHUP.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{poll_until, wait_progress, wait_until, TempDir, PROMPT, STALL};

pub const BIN: &str = env!("CARGO_BIN_EXE_refract");

/// How long startup may take before `READY=1` (it runs `iptables` in
/// kernel mode, which a loaded machine can make slow; seen: well under a
/// second).
pub const READY_WITHIN: Duration = Duration::from_secs(30);

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

static SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// The service manager's end of sd_notify(3): a datagram socket at a path,
/// read on a thread of its own until drop, every message kept.
#[derive(Debug)]
pub struct Notify {
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Notify {
    /// Binds a new socket in `dir` (a new name each time: a daemon
    /// restarted in the same dir gets its own).
    pub fn bind(dir: &Path) -> Notify {
        let n = SOCKETS.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("notify-{n}.sock"));
        let sock =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        // Sending needs write permission on the socket file (unix(7)); the
        // daemon may run as another user (setpriv).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (messages, stop) = (messages.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Bounded by drop: `stop` is checked at least every 50 ms.
                while !stop.load(Ordering::Relaxed) {
                    match sock.recv(&mut buf) {
                        Ok(n) => messages
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                        // The read timeout, or a signal to this process
                        // (recv(2): EINTR): read on.
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => panic!("notify socket: {e}"),
                    }
                }
            })
        };
        Notify {
            path,
            messages,
            stop,
            reader: Some(reader),
        }
    }

    /// The value for `$NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram received so far, in order.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// How many datagrams so far had the line `state` (e.g. `READY=1`).
    pub fn count(&self, state: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.lines().any(|l| l == state))
            .count()
    }

    /// Waits (at most [`READY_WITHIN`]) for the first `READY=1`. `exited`
    /// says why the daemon cannot send it any more (it exited, with its
    /// output), which fails the wait at once. Returns how long it took.
    pub fn wait_ready(&self, mut exited: impl FnMut() -> Option<String>) -> Duration {
        let start = Instant::now();
        let ready = poll_until(READY_WITHIN, || {
            if self.count("READY=1") > 0 {
                return Some(true);
            }
            exited().map(|why| panic!("refract exited before READY=1: {why}"))
        });
        assert!(
            ready.is_some(),
            "refract sent no READY=1 within {READY_WITHIN:?} (got {:?})",
            self.messages()
        );
        start.elapsed()
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A running `refract` (`--dry-run` unless started in a namespace), stderr
/// captured in a file.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub access: PathBuf,
    pub block: PathBuf,
    pub stderr: PathBuf,
    /// Its control socket (unless the test named another with `--control`).
    pub control: PathBuf,
    /// Its `$NOTIFY_SOCKET`, read for its whole life.
    pub notify: Notify,
    /// From spawn to `READY=1`.
    pub ready_in: Duration,
    /// Where in `stderr` the next `stats:` line is looked for.
    stats_pos: u64,
    /// Bytes of `stderr` that are `stats:` lines asked for by the test.
    stats_bytes: u64,
}

impl Daemon {
    /// Starts the daemon on `dir/access.log` and `dir/block.log` with
    /// `--dry-run` and `extra` flags, and waits until it is ready.
    pub fn start(dir: &TempDir, extra: &[&str]) -> Daemon {
        Daemon::start_with(
            dir,
            &dir.path("access.log"),
            &dir.path("block.log"),
            &[],
            &[&["--dry-run"], extra].concat(),
        )
    }

    /// The kernel enforcer inside `ns` (`ip netns exec`) on a new empty
    /// `dir/access.log` and `dir/block.log`, with `extra` flags; returns
    /// once the daemon sent `READY=1`.
    pub fn start_in(ns: &super::netns::Netns, dir: &TempDir, extra: &[&str]) -> Daemon {
        let access = dir.path("access.log");
        append(&access, "");
        Daemon::start_with(
            dir,
            &access,
            &dir.path("block.log"),
            &["ip", "netns", "exec", ns.name()],
            extra,
        )
    }

    /// Like [`Daemon::start`] with the access log at `access`, the audit
    /// log at `block`, and the
    /// binary run through `prefix` (e.g. `setpriv …` or `unshare -m sh -c
    /// SCRIPT`: the binary's path follows the prefix, then the flags; the
    /// pid stays the daemon's as long as every wrapper `exec`s). Unlike
    /// [`Daemon::start`], `--dry-run` is not implied: pass it, or run the
    /// kernel enforcer inside a namespace (`ip netns exec NAME`). Returns
    /// once the daemon sent `READY=1`.
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
        let notify = Notify::bind(dir.root());
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        // The daemon reads only its flags: keep the caller's REFRACT_*
        // settings out of it. Its messages go to the stderr file.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REFRACT_") {
                cmd.env_remove(k);
            }
        }
        let start = Instant::now();
        // Its own control socket, in its own dir: never the service's, never
        // another test's (a test may name its own or `none`).
        let control = dir.path("control.sock");
        if !extra.iter().any(|a| a.starts_with("--control")) {
            cmd.arg(format!("--control={}", control.display()));
        }
        let child = cmd
            .arg(format!("--access.log={}", access.display()))
            .arg(format!("--block.log={}", block.display()))
            .args(extra)
            .env("REFRACT_LOG", "stderr")
            .env("NOTIFY_SOCKET", notify.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            access,
            block,
            control,
            stderr,
            notify,
            ready_in: Duration::ZERO,
            stats_pos: 0,
            stats_bytes: 0,
        };
        let (child, notify, stderr) = (&mut d.child, &d.notify, &d.stderr);
        notify.wait_ready(|| {
            let st = child.try_wait().unwrap()?;
            Some(format!(
                "{st}: {}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            ))
        });
        d.ready_in = start.elapsed();
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

    /// Waits (at most [`PROMPT`]) until a line of the log contains
    /// `needle`, and returns that line.
    pub fn wait_log(&self, needle: &str) -> String {
        wait_until(PROMPT, &format!("a log line with {needle:?}"), || {
            self.log()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
    }

    /// Panics (with the log) if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("refract exited ({st}): {}", self.log());
        }
    }

    /// Asks for a `stats:` line (SIGUSR1) and parses its `name=value`
    /// pairs. Waits at most [`PROMPT`] for the answer; reads the log only
    /// past the previous answer (a flood's log is megabytes).
    pub fn stats(&mut self) -> HashMap<String, u64> {
        self.signal(libc::SIGUSR1);
        let (child, path, pos) = (&mut self.child, &self.stderr, self.stats_pos);
        let (line, end) = wait_until(PROMPT, "a stats line", || {
            if let Some((line, end)) = next_stats_line(path, pos) {
                return Some((line, end));
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "refract exited ({st}) before its stats line: {}",
                    std::fs::read_to_string(path).unwrap_or_default()
                );
            }
            None
        });
        self.stats_pos = end;
        self.stats_bytes += line.len() as u64 + 1;
        parse_stats(&line)
    }

    /// How much the daemon logged of its own accord (its log's length, less
    /// the `stats:` lines the test asked for): grows while it reports
    /// bans, kills and errors, a progress measure for a flood's wait.
    pub fn activity(&self) -> u64 {
        let len = std::fs::metadata(&self.stderr).map_or(0, |m| m.len());
        len.saturating_sub(self.stats_bytes)
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

    /// Waits until the follower has handed out `n` lines (never more), for
    /// as long as it reads on (lines or bytes move; see [`wait_progress`]).
    pub fn wait_lines(&mut self, n: u64) -> HashMap<String, u64> {
        wait_progress(STALL, &format!("{n} lines"), || {
            let s = self.stats();
            assert!(
                s["lines"] <= n,
                "read {} lines, expected {n}: {s:?}",
                s["lines"]
            );
            if s["lines"] == n {
                Ok(s)
            } else {
                Err((s["lines"], s["bytes"]))
            }
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

    /// SIGTERM, and the exit status and how long the exit took (waits at
    /// most three [`PROMPT`]s: shutdown may spend a flush budget first).
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        self.signal(libc::SIGTERM);
        let st = wait_until(PROMPT * 3, "exit", || self.child.try_wait().unwrap());
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

/// The first complete `stats:` line in `path` after byte `pos`, and the
/// offset just past it.
fn next_stats_line(path: &Path, pos: u64) -> Option<(String, u64)> {
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(pos)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let mut off = 0;
    while let Some(nl) = buf[off..].iter().position(|&b| b == b'\n') {
        let line = &buf[off..off + nl];
        off += nl + 1;
        // After the time stamp a file's lines start with.
        let line = String::from_utf8_lossy(line);
        if let Some(at) = line.find("refract: stats: ") {
            return Some((line[at..].to_string(), pos + off as u64));
        }
    }
    None
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
