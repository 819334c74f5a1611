//! Hooks of the real daemon (`--dry-run`): a command on every ban and
//! unban, with the event on stdin and in its environment; a flood of 1,000
//! bans with `--hook-max 4` and a hook that sleeps leaves the loop as
//! responsive as before (SIGUSR1 answered, every ban audited), every event
//! is run or counted as dropped, and no zombie is left; a hook that hangs
//! is killed at `--hook-timeout`.

use std::time::{Duration, Instant};

use crate::support::daemon::*;
use crate::support::{heavy, wait_until, TempDir, PROMPT, STALL};

/// Children of `pid` in state Z (from /proc).
fn zombies(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces: split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[0] == "Z" && f[1] == pid.to_string() {
            out.push(stat);
        }
    }
    out
}

#[test]
fn hooks_see_the_event_on_stdin_and_in_their_environment() {
    let dir = TempDir::new("hooks");
    let out = dir.path("events");
    let script = format!(
        "sh -c 'cat >> {0}; echo \"env $REFRACT_EVENT $REFRACT_ADDR $REFRACT_USER \
         $REFRACT_ORIGIN $REFRACT_REASON $REFRACT_DURATION\" >> {0}'",
        out.display()
    );
    let on_ban = format!("--on-ban={script}");
    let on_unban = format!("--on-unban={script}");
    let d = Daemon::start(&dir, &["--window=5s", "--timeout=2s", &on_ban, &on_unban]);
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    // The ban, then (after --timeout) its unban.
    let text = wait_until(PROMPT, "both hooks' output", || {
        let t = std::fs::read_to_string(&out).ok()?;
        (t.lines().count() >= 4).then_some(t)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(
            r#"{"event":"ban","addr":"198.51.100.12","user":"alice@example.com","origin":["192.0.2.11"],"tag":"vless-in >> direct","duration_s":2,"reason":"limit","time":""#
        ),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "env ban 198.51.100.12 alice@example.com 192.0.2.11 limit 2"
    );
    assert!(
        lines[2]
            .starts_with(r#"{"event":"unban","addr":"198.51.100.12","user":"alice@example.com""#),
        "{text}"
    );
    assert_eq!(
        lines[3],
        "env unban 198.51.100.12 alice@example.com  expired 0"
    );
    let mut d = d;
    let s = d.stats();
    assert_eq!((s["hooks_started"], s["hooks_ok"]), (2, 2), "{s:?}");
}

#[test]
fn a_flood_of_bans_with_slow_hooks_keeps_the_loop_responsive() {
    let _heavy = heavy();
    let dir = TempDir::new("hooks-flood");
    let ran = dir.path("ran");
    let hook = format!("--on-ban=sh -c 'sleep 0.05; echo x >> {}'", ran.display());
    let mut d = Daemon::start(
        &dir,
        &["--window=1h", "--timeout=1h", "--hook-max=4", &hook],
    );
    const BANS: usize = 1000;
    let mut text = access_line("alice@example.com", "10.0.0.1");
    for i in 0..BANS {
        text.push_str(&access_line(
            "alice@example.com",
            &format!("10.1.{}.{}", i / 250, i % 250 + 1),
        ));
    }
    append(&d.access, &text);
    // While the hooks run: the loop answers a signal at once and every ban
    // is decided.
    let t = Instant::now();
    let s = d.stats();
    let answered = t.elapsed();
    eprintln!("SIGUSR1 answered in {answered:?} during the flood: {s:?}");
    assert!(answered < PROMPT, "{answered:?}");
    d.wait_audit(BANS, PROMPT);
    // Every event ran or was dropped, and counted; nothing still running.
    let s = wait_until(STALL, "every hook done", || {
        let s = d.stats();
        (s["hooks_running"] == 0 && s["hooks_queued"] == 0).then_some(s)
    });
    eprintln!("after the flood: {s:?}");
    assert_eq!(
        s["hooks_started"] + s["hooks_dropped"],
        BANS as u64,
        "{s:?}"
    );
    assert!(
        s["hooks_dropped"] > 0,
        "the queue bound was never reached: {s:?}"
    );
    assert_eq!(s["hooks_ok"], s["hooks_started"], "{s:?}");
    let runs = std::fs::read_to_string(&ran)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(runs as u64, s["hooks_ok"]);
    assert!(zombies(d.pid()).is_empty(), "{:?}", zombies(d.pid()));
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout() {
    let dir = TempDir::new("hooks-hang");
    let d = Daemon::start(
        &dir,
        &["--on-ban=sleep 600", "--hook-timeout=1s", "--window=1h"],
    );
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    d.wait_audit(1, PROMPT);
    let mut d = d;
    let s = wait_until(Duration::from_secs(1) + PROMPT, "the hook killed", || {
        let s = d.stats();
        (s["hooks_timeout"] == 1).then_some(s)
    });
    assert_eq!(s["hooks_running"], 0, "{s:?}");
    d.wait_log("killed after --hook-timeout 1s");
    assert!(zombies(d.pid()).is_empty());
}
