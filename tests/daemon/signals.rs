//! The real daemon's signals and audit log: SIGTERM/SIGINT exit 0 at once,
//! SIGHUP reloads `--limits` (a bad file keeps the old limits) and reopens
//! the audit log, and a violating line shows up in the audit log at once
//! (milliseconds here; the bound is [`PROMPT`], the times are printed).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::daemon::*;
use crate::support::{wait_until, TempDir, PROMPT};

#[test]
fn sigterm_and_sigint_exit_zero_promptly() {
    for (tag, sig) in [("term", libc::SIGTERM), ("int", libc::SIGINT)] {
        let dir = TempDir::new(&format!("sig-{tag}"));
        let mut d = Daemon::start(&dir, &[]);
        append(&d.access, &lines("x", 3));
        d.expect_lines(3);
        let start = Instant::now();
        d.signal(sig);
        let st = wait_until(PROMPT, "exit", || d.child.try_wait().unwrap());
        let took = start.elapsed();
        eprintln!("{tag}: exited {st} in {took:?}");
        assert_eq!(st.code(), Some(0), "{}", d.log());
        assert!(d.log().contains("exiting: stats: lines=3 "), "{}", d.log());
    }
}

#[test]
fn sighup_reopens_the_audit_log() {
    let dir = TempDir::new("sig-reopen");
    let d = Daemon::start(&dir, &[]);
    let mode = std::fs::metadata(&d.block).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "audit log created 0640");
    std::fs::rename(&d.block, dir.path("block.log.1")).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(PROMPT, "reopened audit log", || {
        d.block.exists().then_some(())
    });
    d.wait_log("reloaded");
}

/// The line that makes `user` go over a limit of 1: first `a`, then `b`.
fn violation(d: &Daemon, user: &str, a: &str, b: &str) {
    append(&d.access, &access_line(user, a));
    append(&d.access, &access_line(user, b));
}

#[test]
fn audit_line_appears_promptly() {
    let dir = TempDir::new("sig-latency");
    let d = Daemon::start(&dir, &["--window=1h"]);
    let mut worst = Duration::ZERO;
    let mut all = Vec::new();
    for i in 1..=20 {
        let user = format!("user{i}@example.com");
        append(&d.access, &access_line(&user, "198.51.100.1"));
        let start = Instant::now();
        append(&d.access, &access_line(&user, &format!("203.0.113.{i}")));
        let audit = d.wait_audit(i, PROMPT);
        let took = start.elapsed();
        worst = worst.max(took);
        all.push(took);
        let last = audit.last().unwrap();
        assert!(
            last.ends_with(&format!(
                // --dry-run: worded so that 0.2's filters never count it.
                " dry run, not banned: concurrent connection from 203.0.113.{i} w/ origin 198.51.100.1 [vless-in >> direct] email: {user}"
            )),
            "{last}"
        );
    }
    all.sort();
    // Each one within PROMPT (the wait above); how fast is printed.
    eprintln!(
        "audit latency: median {:?}, worst {worst:?}",
        all[all.len() / 2]
    );
    // The audit log rotated away is reopened at the next ban.
    std::fs::rename(&d.block, dir.path("block.log.1")).unwrap();
    violation(&d, "late@example.com", "198.51.100.2", "192.0.2.99");
    let audit = d.wait_audit(1, PROMPT);
    assert!(audit[0].contains("from 192.0.2.99 "), "{audit:?}");
}

#[test]
fn sighup_reloads_limits_and_keeps_them_on_a_bad_file() {
    let dir = TempDir::new("sig-limits");
    let limits = dir.path("limits");
    std::fs::write(&limits, "# test\nalice@example.com 1\n").unwrap();
    let mut d = Daemon::start(
        &dir,
        &["--window=1h", &format!("--limits={}", limits.display())],
    );
    // Limit 1: A admitted, B banned.
    violation(&d, "alice@example.com", "198.51.100.10", "198.51.100.11");
    d.wait_audit(1, PROMPT);

    // Limit 3: C admitted (A and C online).
    std::fs::write(&limits, "alice@example.com 3\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded: 1 per-user limits");
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );

    // A bad file: one error naming file and line, the limit stays 3.
    std::fs::write(&limits, "alice@example.com 3\nbob many\n").unwrap();
    d.signal(libc::SIGHUP);
    let err = d.wait_log("keeping the previous limits");
    assert!(
        err.contains(&format!("{}:2", limits.display())),
        "names file and line: {err}"
    );
    // D is the third address: admitted under 3 (it would be banned under
    // the default 1); E is the fourth: banned.
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.13"),
    );
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.14"),
    );
    let audit = d.wait_audit(2, PROMPT);
    // Every line decided (not a pause that a slow machine could outlast):
    // none of them made a further ban.
    d.expect_lines(5);
    let audit2 = d.audit();
    assert_eq!(audit, audit2, "no further bans");
    let banned: Vec<&str> = audit
        .iter()
        .map(|l| l.split(" from ").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(banned, ["198.51.100.11", "198.51.100.14"], "{audit:?}");
}

#[test]
fn misconfiguration_warnings_are_rate_limited() {
    let dir = TempDir::new("sig-warn");
    let mut d = Daemon::start(&dir, &[]);
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&access_line(&format!("u{i}"), "127.0.0.1"));
        text.push_str(&format!(
            "2026/01/30 17:03:38 from 203.0.113.{}:0 accepted tcp:example.org:443 [ws-in >> direct] email: u{i}\n",
            i + 1
        ));
        text.push_str(&access_line(&format!("u{i}"), "[Masked IPv4]"));
    }
    append(&d.access, &text);
    let s = d.expect_lines(150);
    assert_eq!(
        (
            s["skipped_loopback"],
            s["skipped_xff_port0"],
            s["skipped_masked"]
        ),
        (50, 50, 50),
        "{s:?}"
    );
    let log = d.log();
    let count = |word: &str| {
        log.lines()
            .filter(|l| l.contains("warning:") && l.contains(word))
            .count()
    };
    assert_eq!(count("loopback"), 1, "{log}");
    assert_eq!(count("X-Forwarded-For"), 1, "{log}");
    assert_eq!(count("maskAddress"), 1, "{log}");
    assert!(d.audit().is_empty(), "skipped lines never ban");
}

#[test]
fn missing_log_directory_is_a_clear_startup_error() {
    let dir = TempDir::new("sig-nodir");
    let out = std::process::Command::new(BIN)
        .arg("--dry-run")
        .arg(format!(
            "--access.log={}",
            dir.path("no/such/dir/access.log").display()
        ))
        .arg(format!("--block.log={}", dir.path("block.log").display()))
        .env("REFRACT_LOG", "stderr")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tail: watch ") && err.contains("no/such/dir"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}
