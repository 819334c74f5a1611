//! Readiness means ready: once refract has sent `READY=1` to
//! `$NOTIFY_SOCKET` (a path socket here, as systemd's `/run/systemd/notify`)
//! a line appended to the access log is decided at once. The daemon runs
//! with `--dry-run` (no kernel state, no root needed); the proof that it
//! followed the line is its audit line in `--block-log`.
//!
//! Self-contained on purpose (no shared test support): it pins the
//! contract the other tests' fixtures rely on. Every wait is bounded.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: a loaded 2-core machine starts the daemon in milliseconds,
/// but the bound must never be what a test measures.
const WAIT: Duration = Duration::from_secs(20);

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("refract-ready-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon, killed and reaped on drop (also when an assertion fails).
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, notify: &Path) -> Daemon {
        let stderr = dir.join("refract.err");
        let child = Command::new(env!("CARGO_BIN_EXE_refract"))
            .args(["--dry-run", "--window=30s", "--timeout=1m"])
            .arg(format!("--access-log={}", dir.join("access.log").display()))
            .arg(format!("--block-log={}", dir.join("block.log").display()))
            // Nothing from the caller's environment (REFRACT_* twins of
            // flags) may change what is tested.
            .env_clear()
            .env("REFRACT_LOG", "stderr")
            .env("NOTIFY_SOCKET", notify)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM (as the service manager stops it) and the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "refract ignored SIGTERM for {WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bound notification socket, as the service manager holds it.
fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    (sock, path)
}

/// The next datagram, or a failure naming what the daemon logged.
fn recv(sock: &UnixDatagram, d: &Daemon, waiting_for: &str) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification within {WAIT:?} waiting for {waiting_for} ({e}); refract's log:\n{}",
            d.log()
        ),
    }
}

/// Two devices of one user, the second one a violation at `--limit 1`.
fn append_violation(log: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    for (i, src) in ["192.0.2.11:51000", "198.51.100.12:40000"]
        .iter()
        .enumerate()
    {
        writeln!(
            f,
            "2026/12/01 09:00:0{i}.000000 from {src} accepted tcp:example.com:443 \
             [vless-in >> direct] email: alice@example.com"
        )
        .unwrap();
    }
}

/// Waits (bounded) for the audit line of the violation.
fn wait_audit(dir: &Path, d: &Daemon, started: Instant) {
    let audit = dir.join("block.log");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains(
            "disallowed concurrent connection from 198.51.100.12 w/ origin 192.0.2.11 \
             [vless-in] email: alice@example.com",
        ) {
            eprintln!(
                "audit line {:?} after the lines were appended",
                started.elapsed()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no audit line within {WAIT:?} for lines appended after READY=1; audit log: \
             {text:?}; refract's log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The one `ready:` line, after every other startup line.
fn check_ready_line(d: &Daemon, log: &Path, state: &str) {
    let text = d.log();
    let ready: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("refract: ready: "))
        .collect();
    assert_eq!(ready.len(), 1, "one ready line expected:\n{text}");
    let want = format!(
        "refract: ready: following {} from its end{state}, ",
        log.display()
    );
    assert!(
        ready[0].starts_with(&want),
        "{:?} does not start {want:?}",
        ready[0]
    );
    assert!(ready[0].contains("enforcer dry-run"), "{}", ready[0]);
    // Started as root the capabilities line comes first: dropping them is
    // part of getting ready.
    let first = text.lines().position(|l| l.starts_with("refract: ready: "));
    if let Some(caps) = text.lines().position(|l| l.contains("capabilit")) {
        assert!(
            caps < first.unwrap(),
            "ready before the privilege drop:\n{text}"
        );
    }
}

/// Stops the daemon and checks that it never said `READY=1` again.
fn stop(mut d: Daemon, sock: &UnixDatagram) {
    let status = d.terminate();
    assert!(status.success(), "exit {status}:\n{}", d.log());
    loop {
        let msg = recv(sock, &d, "STOPPING=1");
        assert_ne!(msg, "READY=1", "a second READY=1 without a reload");
        if msg == "STOPPING=1" {
            break;
        }
    }
}

#[test]
fn line_appended_right_after_ready_is_decided() {
    let dir = Dir::new("existing");
    let log = dir.0.join("access.log");
    // An old line that must not count: the daemon starts at the end.
    std::fs::write(
        &log,
        "2026/12/01 08:00:00.000000 from 203.0.113.9:1000 accepted tcp:example.com:443 \
         [vless-in >> direct] email: alice@example.com\n",
    )
    .unwrap();
    let (sock, path) = notify_socket(&dir.0);
    let spawned = Instant::now();
    let d = Daemon::start(&dir.0, &path);
    assert_eq!(recv(&sock, &d, "READY=1"), "READY=1");
    eprintln!("READY=1 {:?} after spawn", spawned.elapsed());
    // At once: no sleep between the signal and the write.
    let appended = Instant::now();
    append_violation(&log);
    wait_audit(&dir.0, &d, appended);
    check_ready_line(&d, &log, "");
    let audit = std::fs::read_to_string(dir.0.join("block.log")).unwrap();
    assert_eq!(
        audit.lines().count(),
        1,
        "the line before start counted:\n{audit}"
    );
    stop(d, &sock);
}

#[test]
fn log_created_after_ready_is_read_from_its_start() {
    let dir = Dir::new("absent");
    let log = dir.0.join("access.log");
    let (sock, path) = notify_socket(&dir.0);
    let d = Daemon::start(&dir.0, &path);
    assert_eq!(recv(&sock, &d, "READY=1"), "READY=1");
    let appended = Instant::now();
    append_violation(&log);
    wait_audit(&dir.0, &d, appended);
    check_ready_line(&d, &log, " (not there yet)");
    stop(d, &sock);
}
