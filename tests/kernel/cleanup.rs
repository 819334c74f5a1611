//! `refract cleanup` and the instance lock as an operator meets them, with
//! the real binary inside throwaway network namespaces: rules made by a
//! run with other ports and both protocols are found by their set names
//! and removed by a cleanup with default flags; the dry run changes
//! nothing and says what would go; a second daemon on the same sets is
//! refused (exit 1, one line) while the first keeps enforcing, and after
//! the first is killed with SIGKILL a new one starts. Witnesses:
//! `iptables -S`, `ip6tables -S`, `ipset list -n`. Skips when not root or
//! when `ip`, `ipset`, `iptables` or `ip6tables` are missing.

use std::process::Output;
use std::time::Instant;

use crate::support::daemon::*;
use crate::support::netns::{Netns, FIREWALL};
use crate::support::{wait_until, TempDir, PROMPT};

const S4: &str = "refract_banned_users";
const S6: &str = "refract_banned_users6";

/// What the kernel holds that cleanup is about, as the operator's tools
/// print it.
fn witness(ns: &Netns) -> (String, String, String) {
    (
        ns.ok(&["iptables", "-S"]),
        ns.ok(&["ip6tables", "-S"]),
        ns.ok(&["ipset", "list", "-n"]),
    )
}

/// Runs `refract ARGS…` in `ns` with no `REFRACT_*` variable of the
/// caller's (the flags given are the whole configuration).
fn refract(ns: &Netns, args: &[&str]) -> Output {
    let mut argv = vec!["env"];
    let vars: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("REFRACT_"))
        .collect();
    for v in &vars {
        argv.extend(["-u", v.as_str()]);
    }
    argv.push(BIN);
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cleanup_with_default_flags_removes_rules_made_with_other_ports_and_protocols() {
    let Some(ns) = Netns::with_tools("cleanup", FIREWALL) else {
        return;
    };
    let dir = TempDir::new("cleanup");
    let mut d = Daemon::start_in(
        &ns,
        &dir,
        &["--dport=8443,2053", "--proto=tcp,udp", "--window=1h"],
    );
    append(
        &d.access,
        &access_line("carol@example.com", "198.51.100.21"),
    );
    append(&d.access, &access_line("carol@example.com", "203.0.113.21"));
    wait_until(PROMPT, "the ban", || {
        let out = ns.ok(&["ipset", "list", S4]);
        out.contains("203.0.113.21 timeout").then_some(())
    });
    assert_eq!(d.terminate().0.code(), Some(0), "{}", d.log());
    // Someone else's rule, which cleanup must leave alone.
    ns.ok(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
    ]);
    let before = witness(&ns);
    let ours = |s: &str| s.lines().filter(|l| l.contains("--match-set")).count();
    // tcp and udp on the multiport pair, per family.
    assert_eq!((ours(&before.0), ours(&before.1)), (2, 2), "{before:?}");
    assert!(before.0.contains("--dports 8443,2053"), "{}", before.0);

    // The dry run: every rule and both sets named, nothing changed.
    let t = Instant::now();
    let o = refract(&ns, &["cleanup", "--dry-run"]);
    println!("cleanup --dry-run took {:?}", t.elapsed());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    println!("{out}");
    let deletes: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("would delete: "))
        .collect();
    assert_eq!(deletes.len(), 4, "{out}");
    for l in &deletes {
        assert!(
            l.contains("-D INPUT") && l.contains("--dports 8443,2053"),
            "{l}"
        );
    }
    for (bin, set, proto) in [
        ("iptables", S4, "tcp"),
        ("iptables", S4, "udp"),
        ("ip6tables", S6, "tcp"),
        ("ip6tables", S6, "udp"),
    ] {
        let want = format!("--match-set {set} src -j DROP");
        assert!(
            deletes
                .iter()
                .any(|l| l.starts_with(&format!("would delete: {bin} -t filter"))
                    && l.contains(&format!("-p {proto} "))
                    && l.contains(&want)),
            "{bin} {proto} {set}: {out}"
        );
    }
    assert!(
        out.contains(&format!("would destroy: ipset destroy {S4} (1 entries)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("would destroy: ipset destroy {S6} (0 entries)")),
        "{out}"
    );
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(witness(&ns), before, "the dry run changed something");

    // The real thing, with default flags (port 443, tcp): everything goes.
    let t = Instant::now();
    let o = refract(&ns, &["cleanup"]);
    println!("cleanup of 4 rules and 2 sets took {:?}", t.elapsed());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("removed 4 DROP rule(s), destroyed {S4}, {S6}")),
        "{out}"
    );
    let (v4, v6, sets) = witness(&ns);
    assert!(
        !v4.contains("refract") && !v6.contains("refract"),
        "{v4}{v6}"
    );
    assert_eq!(sets.trim(), "", "{sets}");
    assert!(v4.contains("--dport 22 -j ACCEPT"), "{v4}");

    // Again: nothing to do, still exit 0; the dry run says so.
    let o = refract(&ns, &["cleanup"]);
    assert!(text(&o).contains("removed 0 DROP rule(s), destroyed no sets"));
    let o = refract(&ns, &["cleanup", "--dry-run"]);
    assert!(text(&o).contains("nothing to remove"), "{}", text(&o));
}

#[test]
fn second_daemon_on_the_same_sets_is_refused_and_the_first_keeps_enforcing() {
    let Some(ns) = Netns::with_tools("instance", FIREWALL) else {
        return;
    };
    let dir = TempDir::new("instance");
    let mut first = Daemon::start_in(&ns, &dir, &["--window=1h"]);
    let before = witness(&ns);

    let dir2 = TempDir::new("instance2");
    let access2 = dir2.path("access.log");
    append(&access2, "");
    let logs = [
        format!("--access.log={}", access2.display()),
        format!("--block.log={}", dir2.path("block.log").display()),
    ];
    let second = |extra: &[&str]| {
        let mut args: Vec<&str> = logs.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        refract(&ns, &args)
    };
    for (extra, set) in [
        (&[][..], S4),
        // Its IPv6 set is the first one's: refused too.
        (&["--set-name=other_v4", "--dport=8443"][..], S6),
    ] {
        let t = Instant::now();
        let o = second(extra);
        let out = text(&o);
        println!(
            "second daemon {extra:?} refused in {:?}: {out}",
            t.elapsed()
        );
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains(&format!(
                "refract: ipset: another refract is already running on set {set} in this \
                 network namespace"
            )),
            "{out}"
        );
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    }
    assert_eq!(witness(&ns), before, "a refused daemon changed something");
    // Cleanup refuses too: the running daemon would put everything back.
    let o = refract(&ns, &["cleanup"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("refract is running on set {S4}")),
        "{}",
        text(&o)
    );
    assert_eq!(witness(&ns), before);

    // The first one still bans.
    first.assert_running();
    append(
        &first.access,
        &access_line("dave@example.com", "198.51.100.31"),
    );
    append(
        &first.access,
        &access_line("dave@example.com", "203.0.113.31"),
    );
    wait_until(PROMPT, "the first daemon's ban", || {
        let out = ns.ok(&["ipset", "list", S4]);
        out.contains("203.0.113.31 timeout").then_some(())
    });

    // The same sets in another network namespace are other sets.
    if let Some(other) = Netns::with_tools("instance-other", FIREWALL) {
        let dir3 = TempDir::new("instance3");
        let mut d = Daemon::start_in(&other, &dir3, &[]);
        assert_eq!(d.terminate().0.code(), Some(0), "{}", d.log());
    }

    // SIGKILL (what dropping the fixture sends, then it reaps): no
    // shutdown code runs, and the kernel releases the lock anyway.
    drop(first);
    let dir4 = TempDir::new("instance4");
    let mut next = Daemon::start_in(&ns, &dir4, &[]);
    next.wait_log("restored 1 bans in force");
    assert_eq!(next.terminate().0.code(), Some(0), "{}", next.log());
}
