//! Readiness means ready: once refract has sent `READY=1` to
//! `$NOTIFY_SOCKET` (a path socket, as systemd's `/run/systemd/notify`),
//! which is what [`Daemon::start`] returns on, a line appended to the
//! access log is decided at once, for a log that exists and for one created
//! later. One `ready:` line, after the privilege drop, and no second
//! `READY=1` before `STOPPING=1`. `--dry-run`: no root needed.

use std::time::{Duration, Instant};

use crate::support::daemon::{access_line, append, Daemon};
use crate::support::{wait_until, TempDir, PROMPT};

/// Two devices of one user, the second one a violation at `--limit 1`.
fn violation() -> String {
    let mut text = String::new();
    for (i, src) in ["192.0.2.11:51000", "198.51.100.12:40000"]
        .iter()
        .enumerate()
    {
        text += &format!(
            "2026/12/01 09:00:0{i}.000000 from {src} accepted tcp:example.com:443 \
             [vless-in >> direct] email: alice@example.com\n"
        );
    }
    text
}

/// Appends the violation at once (no sleep after `READY=1`) and waits,
/// bounded, for its audit line.
fn violation_is_decided(d: &Daemon) {
    let appended = Instant::now();
    append(&d.access, &violation());
    wait_until(
        PROMPT,
        "the audit line of lines appended after READY=1",
        || {
            d.audit()
                .iter()
                .any(|l| {
                    l.contains(
                        "dry run, not banned: concurrent connection from 198.51.100.12 w/ origin \
                     192.0.2.11 \
                     [vless-in >> direct] email: alice@example.com",
                    )
                })
                .then_some(())
        },
    );
    eprintln!(
        "READY=1 {:?} after spawn; audit line {:?} after the append",
        d.ready_in,
        appended.elapsed()
    );
}

/// The one `ready:` line, after every other startup line; `state` is what
/// it says of the log after "from its end".
fn check_ready_line(d: &Daemon, state: &str) {
    // Written to a file: every line starts with the local time, then
    // `refract: ` (checked here, then stripped).
    let raw = d.log();
    for l in raw.lines() {
        let (stamp, rest) = l.split_at(l.find("refract: ").unwrap_or(0));
        assert!(
            stamp.len() == 24 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[19] == b'.',
            "no time stamp: {l:?}"
        );
        assert!(rest.starts_with("refract: "), "{l:?}");
    }
    let text: String = raw
        .lines()
        .map(|l| &l[l.find("refract: ").unwrap_or(0)..])
        .collect::<Vec<_>>()
        .join("\n");
    let ready: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("refract: ready: "))
        .collect();
    assert_eq!(ready.len(), 1, "one ready line expected:\n{text}");
    let want = format!(
        "refract: ready: following {} from its end{state}, ",
        d.access.display()
    );
    assert!(
        ready[0].starts_with(&want),
        "{:?} does not start {want:?}",
        ready[0]
    );
    assert!(ready[0].contains("enforcer dry-run"), "{}", ready[0]);
    // The settings in force, in one line, just before.
    let settings = text
        .lines()
        .position(|l| l.starts_with("refract: settings: "));
    let ready_at = text.lines().position(|l| l.starts_with("refract: ready: "));
    assert!(
        settings.is_some() && settings < ready_at,
        "no settings line before the ready line:\n{text}"
    );
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

/// Stops the daemon: exit 0, `STOPPING=1` said, and `READY=1` said once.
fn stop(mut d: Daemon) {
    let (st, _) = d.terminate();
    assert!(st.success(), "exit {st}:\n{}", d.log());
    wait_until(PROMPT, "STOPPING=1", || {
        (d.notify.count("STOPPING=1") == 1).then_some(())
    });
    assert_eq!(d.notify.count("READY=1"), 1, "{:?}", d.notify.messages());
}

#[test]
fn line_appended_right_after_ready_is_decided() {
    let dir = TempDir::new("ready-existing");
    // An old line that must not count: the daemon starts at the end.
    append(
        &dir.path("access.log"),
        "2026/12/01 08:00:00.000000 from 203.0.113.9:1000 accepted tcp:example.com:443 \
         [vless-in >> direct] email: alice@example.com\n",
    );
    let d = Daemon::start(&dir, &["--window=30s", "--timeout=1m"]);
    violation_is_decided(&d);
    check_ready_line(&d, "");
    assert_eq!(
        d.audit().len(),
        1,
        "the line before start counted: {:?}",
        d.audit()
    );
    stop(d);
}

#[test]
fn log_created_after_ready_is_read_from_its_start() {
    let dir = TempDir::new("ready-absent");
    let d = Daemon::start(&dir, &["--window=30s", "--timeout=1m"]);
    violation_is_decided(&d);
    check_ready_line(&d, " (not there yet)");
    stop(d);
}

/// `STATUS=` tells the service manager a short summary, updated as bans
/// happen, at most once a second (systemctl status shows it).
#[test]
fn status_follows_the_bans() {
    let dir = TempDir::new("status");
    let d = Daemon::start(&dir, &[]);
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    d.wait_audit(1, PROMPT);
    let status = wait_until(
        Duration::from_secs(1) + PROMPT,
        "STATUS= with the ban",
        || {
            d.notify
                .messages()
                .into_iter()
                .find(|m| m.starts_with("STATUS=") && m.contains("1 bans in force"))
        },
    );
    assert_eq!(
        status,
        "STATUS=1 users tracked, 1 bans in force, 2 lines read"
    );
    stop(d);
}
