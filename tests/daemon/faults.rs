//! Fault injection against the real binary and real files (`--dry-run`:
//! no kernel state): the log directory removed and recreated, the log made
//! unreadable, the audit log on a full filesystem, binary garbage and a
//! 100 MiB line in the log, and a SIGHUP storm (clock jumps in `replay`
//! input are in the offline tests). Each test drives the fault as an
//! operator's machine would and asserts the outcome through the daemon's
//! `stats:` line, its log and the audit log. Tests that need root or a
//! tool skip with the reason.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::daemon::*;
use crate::support::{heavy, root_with, wait_until, TempDir, PROMPT};

/// How long reading a few megabytes to a hundred of the log may take
/// before a test calls it stuck (well under a second here).
const READ_BOUND: Duration = Duration::from_secs(120);

/// `user` online from `a`, then from `b`: with `--limit 1` (the default)
/// and a long window, `b` is banned.
fn violation(access: &Path, user: &str, a: &str, b: &str) {
    append(access, &access_line(user, a));
    append(access, &access_line(user, b));
}

fn banned(audit: &[String]) -> Vec<String> {
    audit
        .iter()
        .map(|l| {
            l.split(" from ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or_else(|| panic!("not an audit line: {l}"))
                .to_string()
        })
        .collect()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

// ---- 4. The log directory removed and recreated ----

#[test]
fn log_directory_removed_and_recreated() {
    let dir = TempDir::new("fault-rmdir");
    let xray = dir.path("xray");
    std::fs::create_dir(&xray).unwrap();
    let access = xray.join("access.log");
    append(&access, "");
    let mut d = Daemon::start_with(
        &dir,
        &access,
        &dir.path("block.log"),
        &[],
        &["--dry-run", "--window=1h"],
    );
    append(&access, &lines("before", 3));
    d.expect_lines(3);

    // rm -rf; mkdir; the proxy (restarted) writes a new log.
    std::fs::remove_dir_all(&xray).unwrap();
    std::fs::create_dir(&xray).unwrap();
    append(&access, &lines("after", 2));
    // The directory watch died with the directory: the follower re-watches
    // it (retrying while it is missing) and picks up the new file.
    d.wait_lines(5);
    // And follows it: a later write to the new file is read too.
    append(&access, &lines("later", 2));
    d.expect_lines(7);

    // Removed and recreated again, the new file created after a pause (the
    // directory alone first).
    let gone = format!("error: tail: directory {} was removed", xray.display());
    let said = count(&d.log(), &gone);
    std::fs::remove_dir_all(&xray).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(&xray).unwrap();
    let back = format!("tail: directory {} is back", xray.display());
    wait_until(PROMPT, "the directory seen back", || {
        (count(&d.log(), &back) == said + 1).then_some(())
    });
    // Said once while it was gone (not once per retry), and when it was
    // back.
    assert_eq!(count(&d.log(), &gone), said + 1, "{}", d.log());
    assert_eq!(count(&d.log(), &back), said + 1, "{}", d.log());
    violation(&access, "alice@example.com", "198.51.100.1", "203.0.113.1");
    let audit = d.wait_audit(1, PROMPT);
    assert_eq!(banned(&audit), ["203.0.113.1"]);
    d.expect_lines(9);
    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
}

// ---- 5. The log made unreadable ----

#[test]
fn unreadable_log_is_one_clear_error_and_recovers() {
    // Root, to run refract as another user (root ignores file modes).
    if root_with(&["setpriv"]).is_none() {
        return;
    }
    // refract runs as nobody; root (the test, like the proxy) owns the log.
    let dir = TempDir::new("fault-unreadable");
    std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).unwrap();
    let access = dir.path("access.log");
    append(&access, "");
    std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o644)).unwrap();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let mut d = Daemon::start_with(
        &dir,
        &access,
        &dir.path("block.log"),
        &nobody,
        &["--dry-run", "--window=1h"],
    );
    append(&access, &lines("readable", 2));
    d.expect_lines(2);

    // chmod on the open file changes nothing: permissions are checked at
    // open(2), and refract holds the file open.
    std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o000)).unwrap();
    append(&access, &lines("chmodded", 1));
    d.expect_lines(3);

    // Rotated, and the new file created unreadable (a `create 0600 root`
    // logrotate stanza): one clear error naming the file.
    let old = dir.path("access.log.1");
    std::fs::rename(&access, &old).unwrap();
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(&access)
        .unwrap();
    f.write_all(lines("unreadable", 2).as_bytes()).unwrap();
    let want = format!("error: tail: open {}: Permission denied", access.display());
    d.wait_log(&want);
    // The rotated file is still followed, and every write to it re-checks
    // the path: the error is not repeated per event.
    for i in 0..5 {
        append(&old, &lines(&format!("old{i}"), 1));
        std::thread::sleep(Duration::from_millis(20));
    }
    d.expect_lines(8);
    assert_eq!(count(&d.log(), &want), 1, "{}", d.log());

    // Fixed (chmod): the lines written meanwhile are read, then new ones.
    std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.wait_lines(10);
    let again = format!("refract: tail: {} can be read again", access.display());
    assert_eq!(count(&d.log(), &again), 1, "{}", d.log());
    violation(&access, "alice@example.com", "198.51.100.2", "203.0.113.2");
    let audit = d.wait_audit(1, PROMPT);
    assert_eq!(banned(&audit), ["203.0.113.2"]);
    d.expect_lines(12);
    drop(f);
    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
}

// ---- 6. The audit log on a full filesystem ----

#[test]
fn full_audit_filesystem_keeps_enforcing_and_logs_once() {
    // Root, to mount a tmpfs.
    if root_with(&["unshare"]).is_none() {
        return;
    }
    let dir = TempDir::new("fault-enospc");
    let audit_dir = dir.path("audit");
    std::fs::create_dir(&audit_dir).unwrap();
    let block = audit_dir.join("block.log");
    // A private mount namespace for refract alone: the 64 KiB tmpfs exists
    // only there and vanishes with the process (nothing to clean up on the
    // host). Filled to the last page before refract starts.
    let script = format!(
        "mount -t tmpfs -o size=64k refract-test {0} || exit 97; \
         dd if=/dev/zero of={0}/fill bs=4k 2>/dev/null; \
         exec \"$0\" \"$@\"",
        audit_dir.display()
    );
    let prefix = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    let mut d = Daemon::start_with(
        &dir,
        &dir.path("access.log"),
        &block,
        &prefix,
        &["--dry-run", "--window=1h"],
    );
    // Seen from inside refract's mount namespace.
    let inside =
        Path::new(&format!("/proc/{}/root", d.pid())).join(block.strip_prefix("/").unwrap());
    assert!(inside.exists(), "audit log created on the tmpfs");
    let n = 20;
    for i in 1..=n {
        violation(
            &d.access,
            &format!("user{i}@example.com"),
            "198.51.100.3",
            &format!("203.0.113.{i}"),
        );
    }
    let s = d.expect_lines(2 * n);
    // Every ban decided and enforced (the dry-run enforcer counts them),
    // every audit write failed, one message for all of them.
    assert_eq!(
        (s["bans"], s["enforcer_bans"], s["audit_errors"]),
        (n, n, n),
        "{s:?}"
    );
    let log = d.log();
    assert_eq!(count(&log, "audit: write"), 1, "{log}");
    assert!(
        log.contains(&format!(
            "error: audit: write {}: No space left on device",
            block.display()
        )),
        "{log}"
    );
    assert_eq!(count(&log, "refract: ban "), n as usize, "{log}");
    assert_eq!(std::fs::metadata(&inside).unwrap().len(), 0);
    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
}

// ---- 8. Binary garbage in the log ----

/// xorshift64*: deterministic garbage without a dependency.
fn garbage(len: usize, seed: u64, newlines: bool) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        for b in v.to_le_bytes() {
            out.push(if !newlines && b == b'\n' { 0 } else { b });
        }
    }
    out.truncate(len);
    out
}

/// (lines handed out, lines over `max_line`) for `text`, which starts at a
/// line boundary and ends with a newline.
fn split_counts(text: &[u8], max_line: usize) -> (u64, u64) {
    assert_eq!(text.last(), Some(&b'\n'));
    let mut ok = 0;
    let mut long = 0;
    for seg in text[..text.len() - 1].split(|&b| b == b'\n') {
        if seg.len() > max_line {
            long += 1;
        } else {
            ok += 1;
        }
    }
    (ok, long)
}

#[test]
fn binary_garbage_is_counted_and_skipped() {
    let _heavy = heavy();
    let dir = TempDir::new("fault-garbage");
    let mut d = Daemon::start(&dir, &["--window=1h"]);
    // 10 MB: random bytes (lines of a few hundred bytes), then runs
    // without any newline (over-long lines), then random again.
    let mut text = garbage(4 << 20, 0x9e37_79b9_7f4a_7c15, true);
    for i in 0..8 {
        text.extend(garbage(200_000 + i * 1000, 7 + i as u64, false));
        text.push(b'\n');
    }
    text.extend(garbage(10_000_000 - text.len() - 1, 42, true));
    text.push(b'\n');
    assert_eq!(text.len(), 10_000_000);
    let (ok, long) = split_counts(&text, 64 * 1024);
    assert_eq!(long, 8);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&d.access)
        .unwrap();
    for chunk in text.chunks(1 << 20) {
        f.write_all(chunk).unwrap();
    }
    violation(
        &d.access,
        "alice@example.com",
        "198.51.100.4",
        "203.0.113.4",
    );
    let start = Instant::now();
    let audit = d.wait_audit(1, READ_BOUND);
    eprintln!("10 MB of garbage read in {:?}", start.elapsed());
    assert_eq!(banned(&audit), ["203.0.113.4"]);
    let s = d.expect_lines(ok + 2);
    assert_eq!(s["too_long"], long, "{s:?}");
    assert_eq!(s["parsed_lines"], ok + 2, "{s:?}");
    assert_eq!(s["bans"], 1, "{s:?}");
    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
}

// ---- 9. A line of 100 MiB ----

#[test]
fn hundred_mib_line_keeps_memory_bounded() {
    let _heavy = heavy();
    let dir = TempDir::new("fault-longline");
    let mut d = Daemon::start(&dir, &["--window=1h"]);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&d.access)
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\n").unwrap();
    drop(f);
    violation(
        &d.access,
        "alice@example.com",
        "198.51.100.5",
        "203.0.113.5",
    );
    let start = Instant::now();
    let audit = d.wait_audit(1, READ_BOUND);
    eprintln!("the 100 MiB line skipped in {:?}", start.elapsed());
    assert_eq!(banned(&audit), ["203.0.113.5"]);
    let s = d.expect_lines(2);
    let valid = access_line("alice@example.com", "198.51.100.5").len()
        + access_line("alice@example.com", "203.0.113.5").len();
    assert_eq!(
        (s["too_long"], s["bytes"]),
        (1, (100 << 20) + 1 + valid as u64),
        "{s:?}"
    );
    let hwm = vm_hwm(d.pid());
    eprintln!("VmHWM after a 100 MiB line: {hwm} kB");
    assert!(hwm < 32 * 1024, "VmHWM {hwm} kB");
    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
}

// ---- 10. SIGHUP storm ----

#[test]
fn sighup_storm_then_sigterm() {
    let dir = TempDir::new("fault-hupstorm");
    let limits = dir.path("limits");
    std::fs::write(&limits, "bob@example.com 2\n").unwrap();
    let mut d = Daemon::start(
        &dir,
        &["--window=1h", &format!("--limits={}", limits.display())],
    );
    let start = Instant::now();
    for i in 0..1000 {
        d.signal(libc::SIGHUP);
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(9));
        }
    }
    let took = start.elapsed();
    // A storm, not a drizzle: 1000 signals within seconds (0.9 s of it
    // the pauses above). The bound is the test's own pace on a slow
    // machine, far above what it takes.
    eprintln!("1000 SIGHUPs in {took:?}");
    assert!(took < 3 * PROMPT, "{took:?}");
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log());
    // Still reading and deciding, with the limits it reloaded.
    violation(
        &d.access,
        "alice@example.com",
        "198.51.100.6",
        "203.0.113.6",
    );
    violation(&d.access, "bob@example.com", "198.51.100.7", "203.0.113.7");
    append(&d.access, &access_line("bob@example.com", "203.0.113.8"));
    let audit = d.wait_audit(2, PROMPT);
    assert_eq!(banned(&audit), ["203.0.113.6", "203.0.113.8"]);
    d.expect_lines(5);
    let reloads = count(&d.log(), "reloaded: 1 per-user limits");
    eprintln!("{reloads} reloads for 1000 SIGHUPs");
    assert!((1..=1000).contains(&reloads), "{}", d.log());
    assert!(!d.log().contains("error:"), "{}", d.log());
    let (st, took) = d.terminate();
    eprintln!("SIGTERM after the storm: exited in {took:?}");
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(took < PROMPT, "{took:?}");
}
