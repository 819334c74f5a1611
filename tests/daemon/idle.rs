//! An idle daemon never wakes up: no periodic timer, the timerfd disarmed
//! when nothing is pending. Measured with the kernel's context-switch
//! counters of the process over 10 seconds (the one long test).

use std::time::Duration;

use crate::support::daemon::*;
use crate::support::{wait_until, TempDir, PROMPT};

#[test]
fn zero_wakeups_while_idle() {
    let dir = TempDir::new("idle");
    let mut d = Daemon::start(&dir, &["--window=200ms", "--timeout=300ms"]);
    // Some activity first: a user online (window state) and a ban, both of
    // which expire within a second; then nothing is pending.
    append(&d.access, &access_line("idle@example.com", "198.51.100.1"));
    append(&d.access, &access_line("idle@example.com", "198.51.100.2"));
    append(&d.access, &lines("noise", 3));
    d.expect_lines(5);
    // The timer did its work: the ban was decided and has expired (the
    // window's entries, 100 ms earlier, with it).
    let s = wait_until(PROMPT, "the ban to expire", || {
        let s = d.stats();
        (s["expired"] >= 1).then_some(s)
    });
    assert_eq!((s["bans"], s["expired"]), (1, 1), "{s:?}");
    // The last STATUS= update (at most one a second) goes out within a
    // second of the last change; then nothing is pending.
    std::thread::sleep(Duration::from_millis(1500));
    let (before, rss) = proc_status(d.pid());
    std::thread::sleep(Duration::from_secs(10));
    let (after, _) = proc_status(d.pid());
    eprintln!(
        "idle: {} context switches in 10 s, VmRSS {rss} kB",
        after - before
    );
    assert_eq!(after, before, "the daemon woke up while idle");
    assert!(d.terminate().0.success());
}
