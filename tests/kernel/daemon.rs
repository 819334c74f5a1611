//! The real daemon with the kernel enforcer, inside a throwaway network
//! namespace (never the host's firewall): a violating line appended to the
//! log puts the address into the ipset at once (milliseconds; the time is
//! printed), the DROP rule is in place, and SIGTERM still exits 0. Skips
//! when not root or when `ip`, `ipset` or `iptables` are missing.

use std::time::Instant;

use crate::support::daemon::*;
use crate::support::netns::{Netns, FIREWALL};
use crate::support::rules;
use crate::support::{wait_until, TempDir, PROMPT};

const S4: &str = "refract_banned_users";

#[test]
fn violation_lands_in_the_ipset() {
    let Some(ns) = Netns::with_tools("daemon", FIREWALL) else {
        return;
    };
    let dir = TempDir::new("kernel");
    let mut d = Daemon::start_in(&ns, &dir, &["--dport=443", "--window=1h", "--timeout=1m"]);
    let (access, block) = (d.access.clone(), d.block.clone());
    d.wait_log("enforcer kernel");
    let rule = rules::tcp4(443, S4);
    assert_eq!(rules::count(&ns, &rule), 1, "{rule}");

    append(&access, &access_line("alice@example.com", "198.51.100.7"));
    let start = Instant::now();
    append(&access, &access_line("alice@example.com", "203.0.113.9"));
    let listed = wait_until(PROMPT, "the ipset entry", || {
        let out = ns.ok(&["ipset", "list", "refract_banned_users"]);
        out.contains("203.0.113.9 timeout").then_some(out)
    });
    eprintln!("line to ipset entry in {:?}", start.elapsed());
    assert!(!listed.contains("198.51.100.7"), "{listed}");
    let audit = std::fs::read_to_string(&block).unwrap();
    assert!(
        audit.contains(
            "from 203.0.113.9 w/ origin 198.51.100.7 [vless-in >> direct] email: alice@example.com"
        ),
        "{audit}"
    );

    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(d.log().contains("enforcer_bans=1"), "{}", d.log());
}

/// `refract check` before a run changes nothing and says what startup will
/// create; a run creates it and reports each ban's killed connections; a
/// restart reads the bans back; `refract cleanup` removes sets and rules;
/// `check` then says it would create them again.
#[test]
fn check_run_restart_cleanup() {
    let Some(ns) = Netns::with_tools("lifecycle", FIREWALL) else {
        return;
    };
    let dir = TempDir::new("lifecycle");
    let access = dir.path("access.log");
    let block = dir.path("block.log");
    append(&access, "");
    let paths = [
        format!("--access.log={}", access.display()),
        format!("--block.log={}", block.display()),
    ];
    // check reads the logs' paths; cleanup takes only the sets' flags (a
    // daemon flag is refused by name there).
    let refract = |args: &[&str]| {
        let mut argv = vec![BIN];
        argv.extend_from_slice(args);
        if args[0] != "cleanup" {
            argv.extend(paths.iter().map(String::as_str));
        }
        ns.exec(&argv)
    };

    let o = refract(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("would create: ipset create refract_banned_users hash:ip"),
        "{out}"
    );
    let insert = format!("would insert: {}", rules::tcp4(443, S4));
    assert!(out.contains(&insert), "{out}");
    assert!(out.ends_with("refract would start\n"), "{out}");
    assert_eq!(
        ns.ok(&["ipset", "list", "-n"]).trim(),
        "",
        "check created nothing"
    );

    let run = || {
        Daemon::start_with(
            &dir,
            &access,
            &block,
            &["ip", "netns", "exec", ns.name()],
            &["--window=1h", "--timeout=10m"],
        )
    };
    let mut d = run();
    append(&access, &access_line("bob@example.com", "198.51.100.8"));
    append(&access, &access_line("bob@example.com", "203.0.113.10"));
    // The kill work finishes after the ban: its report is a line of its own.
    d.wait_log("ban 203.0.113.10: ended 0 tcp connection(s), 0 udp flow(s)");
    assert_eq!(d.terminate().0.code(), Some(0), "{}", d.log());

    // Restart: the ban is read back, the rule is not duplicated.
    let mut d = run();
    d.wait_log("restored 1 bans in force");
    let listed = ns.ok(&["iptables", "-S", "INPUT"]);
    assert_eq!(listed.matches(S4).count(), 1, "{listed}");
    assert_eq!(rules::count(&ns, &rules::tcp4(443, S4)), 1, "{listed}");
    assert_eq!(d.terminate().0.code(), Some(0), "{}", d.log());

    let o = refract(&["cleanup"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(
            "removed 2 DROP rule(s), destroyed refract_banned_users, refract_banned_users6"
        ),
        "{out}"
    );
    assert_eq!(ns.ok(&["ipset", "list", "-n"]).trim(), "");
    assert!(!ns.ok(&["iptables", "-S", "INPUT"]).contains("refract"));
    assert!(!ns.ok(&["ip6tables", "-S", "INPUT"]).contains("refract"));
    // Idempotent.
    let o = refract(&["cleanup"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("removed 0 DROP rule(s), destroyed no sets")
    );
}
