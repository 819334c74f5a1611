//! Fault injection against the real daemon with the kernel enforcer, each
//! inside throwaway network namespaces (never the host's firewall): the
//! ipset destroyed while running, the DROP rule deleted while running,
//! thousands of connections from one banned key, and SIGTERM in the middle
//! of a burst of bans. Witnesses: `ipset`, `iptables` and `ss` run inside
//! the namespace, the audit log, the client sockets. Skips when not root or
//! a tool is missing.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use refract::enforce::ipset::rules::Rule;

use crate::support::daemon::*;
use crate::support::netns::{veth, Netns, FIREWALL};
use crate::support::rules;
use crate::support::{heavy, wait_progress, wait_until, TempDir, PROMPT, STALL};

const S4: &str = "refract_banned_users";
const S6: &str = "refract_banned_users6";

/// The rule refract installs for `--dport=443` (tcp, IPv4).
fn rule4() -> Rule {
    rules::tcp4(443, S4)
}

fn ns(tag: &str) -> Option<Netns> {
    Netns::with_tools(tag, &[FIREWALL, &["ss"]].concat())
}

/// The real daemon with the kernel enforcer inside `n`.
fn start(n: &Netns, dir: &TempDir, extra: &[&str]) -> Daemon {
    let access = dir.path("access.log");
    append(&access, "");
    let prefix = ["ip", "netns", "exec", n.name()];
    let d = Daemon::start_with(dir, &access, &dir.path("block.log"), &prefix, extra);
    d.wait_log("enforcer kernel");
    d
}

fn drop_rules(n: &Netns) -> usize {
    rules::count(n, &rule4())
}

fn in_set(n: &Netns, ip: &str) -> bool {
    let out = n.exec(&["ipset", "list", S4]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(&format!("{ip} timeout")))
}

/// Runs `script` (deleting the rule, then the set) in `n`. The daemon puts
/// a deleted rule back after `enforce::ipset::rules::RULE_SETTLE`; on a loaded machine the
/// rule can be back before `ipset destroy` runs ("in use"): an operator
/// would run it again, and so does this (bounded).
fn remove_rule_and_set(n: &Netns, script: &str) {
    for _ in 0..5 {
        let out = n.exec(&["sh", "-c", script]);
        if out.status.success() {
            return;
        }
        eprintln!("retrying: {}", String::from_utf8_lossy(&out.stderr).trim());
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{script} kept failing");
}

fn violation(d: &Daemon, user: &str, a: &str, b: &str) {
    append(&d.access, &access_line(user, a));
    append(&d.access, &access_line(user, b));
}

/// SIGTERM: exit 0, within the flush budget (1 s) and a wide margin.
fn stop(d: &mut Daemon) {
    let (st, took) = d.terminate();
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(took < PROMPT, "{took:?}");
}

// ---- 1. The set destroyed while running ----

#[test]
fn destroyed_set_is_recreated_by_the_next_ban() {
    let Some(n) = ns("fset") else { return };
    let dir = TempDir::new("fault-set");
    let mut d = start(&n, &dir, &["--window=1h", "--timeout=1m"]);
    violation(&d, "alice@example.com", "198.51.100.1", "203.0.113.1");
    wait_until(PROMPT, "the first ban", || {
        in_set(&n, "203.0.113.1").then_some(())
    });
    // What an operator does to get rid of the set: the rule that
    // references it first (the set is busy otherwise), then the set.
    let del = rules::argv(&rule4(), "-D").join(" ");
    // `;`: on a retry the rule may be gone already.
    let script = format!("{del} 2>/dev/null; ipset destroy {S4}");
    remove_rule_and_set(&n, &script);
    assert!(!n.exec(&["ipset", "list", S4]).status.success());

    violation(&d, "bob@example.com", "198.51.100.2", "203.0.113.2");
    wait_until(PROMPT, "the ban in the recreated set", || {
        in_set(&n, "203.0.113.2").then_some(())
    });
    wait_until(PROMPT, "the DROP rule back", || {
        (drop_rules(&n) == 1).then_some(())
    });
    let out = n.ok(&["ipset", "list", S4]);
    assert!(out.contains("Type: hash:ip"), "{out}");
    assert!(
        d.log()
            .contains(&format!("set {S4} was missing and has been recreated")),
        "{}",
        d.log()
    );
    assert_eq!(d.audit().len(), 2);

    // Flushed and destroyed with the rule gone the other way round
    // (`iptables -F`): the same.
    remove_rule_and_set(
        &n,
        &format!("iptables -F INPUT; ipset flush {S4}; ipset destroy {S4}"),
    );
    violation(&d, "carol@example.com", "198.51.100.3", "203.0.113.3");
    wait_until(PROMPT, "the third ban", || {
        (in_set(&n, "203.0.113.3") && drop_rules(&n) == 1).then_some(())
    });
    let s = d.stats();
    assert_eq!(s["enforcer_bans"], 3, "{s:?}");
    stop(&mut d);
}

// ---- 2. The DROP rule deleted while running ----

#[test]
fn deleted_drop_rule_is_restored() {
    let Some(n) = ns("frule") else { return };
    let dir = TempDir::new("fault-rule");
    let mut d = start(&n, &dir, &["--window=1h", "--timeout=1m"]);
    assert_eq!(drop_rules(&n), 1);
    let rule6 = rules::rule(true, "tcp", &[443], S6);
    let v6_rules = || rules::count(&n, &rule6);
    assert_eq!(v6_rules(), 1);
    let before = d.stats()["wakeups"];

    // iptables -D: back at once (within a second here), no ban needed.
    let start = Instant::now();
    rules::delete(&n, &rule4());
    wait_until(PROMPT, "the rule restored", || {
        (drop_rules(&n) == 1).then_some(())
    });
    eprintln!("rule restored after {:?}", start.elapsed());
    // The whole chain flushed, both families.
    n.ok(&["iptables", "-F", "INPUT"]);
    n.ok(&["ip6tables", "-F", "INPUT"]);
    wait_until(PROMPT, "both rules restored", || {
        (drop_rules(&n) == 1 && v6_rules() == 1).then_some(())
    });
    assert!(
        d.log()
            .contains("DROP rule(s) were deleted and have been restored"),
        "{}",
        d.log()
    );
    // The rule works: a ban after the restore lands in the set it matches.
    violation(&d, "alice@example.com", "198.51.100.1", "203.0.113.9");
    wait_until(PROMPT, "the ban", || {
        in_set(&n, "203.0.113.9").then_some(())
    });
    // Unrelated rules changing does not spawn anything visible, and an
    // idle daemon stays idle: a handful of wakeups for all of the above.
    let s = d.stats();
    assert_eq!(s["enforcer_errors"], 0, "{}", d.log());
    assert!(s["wakeups"] - before < 40, "{s:?}");
    // The last STATUS= update (at most one a second) goes out within a
    // second of the last change; after that nothing is pending.
    std::thread::sleep(Duration::from_millis(1500));
    let idle = d.stats()["wakeups"];
    std::thread::sleep(Duration::from_millis(1000));
    assert!(d.stats()["wakeups"] - idle <= 1, "woke up while idle");
    assert_eq!(drop_rules(&n), 1);
    stop(&mut d);
}

// ---- 3. Thousands of connections from one banned key ----
//
// The issue asks for a receive-buffer overflow (ENOBUFS) during a large
// socket dump. It cannot be provoked from outside the daemon: a sock_diag
// dump is flow-controlled by the kernel (`netlink_dump()` queues the next
// part only when the reader's queue has room, so a dump never overflows),
// and the SOCK_DESTROY acks are windowed (at most `enforce::WINDOW`, 128,
// unanswered per socket, each well under 1 KiB of a 512 KiB buffer set with
// SO_RCVBUFFORCE, which a test cannot shrink in another process). So this
// test drives the dump and kill path at scale (2000 connections from one
// key: all killed, no error, no crash), and the recovery from ENOBUFS is
// tested with made-up replies in `src/nl/pipeline.rs`
// (`overrun_mid_dump_requeues_the_acked_requests_and_marks_the_dump`) and
// `src/enforce/kill.rs` (`a_batch_dump_kills_what_it_found_and_repeats_after_a_loss`).

const CONNS: usize = 2000;

#[test]
fn thousands_of_connections_from_one_key_are_all_killed() {
    let _heavy = heavy();
    let Some(node) = ns("fconn-n") else { return };
    let Some(a) = Netns::new("fconn-a") else {
        return;
    };
    veth(
        &node,
        "va",
        &["192.0.2.1/24"],
        &a,
        "eth0",
        &["192.0.2.10/24"],
    );
    let l = node.in_netns(|| TcpListener::bind("0.0.0.0:443").unwrap());
    l.set_nonblocking(true).unwrap();
    let to: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let mut clients = Vec::with_capacity(CONNS);
    let mut servers = Vec::with_capacity(CONNS);
    a.in_netns(|| {
        for _ in 0..CONNS {
            let c = TcpStream::connect_timeout(&to, PROMPT).unwrap();
            let s = wait_until(PROMPT, "accept", || match l.accept() {
                Ok((s, _)) => Some(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("accept: {e}"),
            });
            clients.push(c);
            servers.push(s);
        }
    });
    let established = |ns: &Netns| {
        ns.ok(&[
            "ss",
            "-Htn",
            "state",
            "established",
            "( sport = :443 or dport = :443 )",
        ])
        .lines()
        .count()
    };
    assert_eq!(established(&node), CONNS);

    let dir = TempDir::new("fault-conns");
    let mut d = start(&node, &dir, &["--window=1h", "--timeout=1m"]);
    let start_kill = Instant::now();
    violation(&d, "alice@example.com", "198.51.100.1", "192.0.2.10");
    // However long it takes, as long as connections keep going away.
    wait_progress(STALL, "every connection killed", || {
        match established(&node) {
            0 => Ok(()),
            n => Err(n),
        }
    });
    eprintln!("{CONNS} connections killed in {:?}", start_kill.elapsed());
    assert!(in_set(&node, "192.0.2.10"));
    // The clients were reset, not merely dropped.
    for c in &mut clients {
        c.set_read_timeout(Some(PROMPT)).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("client not reset: {other:?}"),
        }
    }
    // The daemon's own account: one report with every connection.
    let want = format!("ban 192.0.2.10: ended {CONNS} tcp connection(s), 0 udp flow(s)");
    d.wait_log(&want);
    let s = d.stats();
    assert_eq!(
        (s["enforcer_bans"], s["enforcer_errors"]),
        (1, 0),
        "{}",
        d.log()
    );
    stop(&mut d);
}

// ---- 11. SIGTERM during a burst of bans ----

#[test]
fn sigterm_during_a_burst_of_bans_loses_no_reported_ban() {
    let _heavy = heavy();
    let Some(n) = ns("fterm") else { return };
    let dir = TempDir::new("fault-term");
    let mut d = start(&n, &dir, &["--window=1h", "--timeout=10m"]);
    // A writer appends violations one pair at a time (many small batches,
    // as a busy proxy writes), and SIGTERM lands while it is going.
    let stop_writing = std::sync::atomic::AtomicBool::new(false);
    let (st, took) = std::thread::scope(|scope| {
        let access = d.access.clone();
        let stop_writing = &stop_writing;
        scope.spawn(move || {
            for i in 0..3000u32 {
                if stop_writing.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let user = format!("u{i}@example.com");
                let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
                let pair = access_line(&user, "198.51.100.1") + &access_line(&user, &ip);
                append(&access, &pair);
                if i % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        wait_until(3 * PROMPT, "bans under way", || {
            (d.audit().len() >= 100).then_some(())
        });
        let r = d.terminate();
        stop_writing.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    assert_eq!(st.code(), Some(0), "{}", d.log());
    // Within the flush budget (1 s) and a wide margin.
    eprintln!("exited in {took:?}");
    assert!(took < PROMPT, "{took:?}");
    let audit = d.audit();
    assert!(!audit.is_empty());
    let listed = n.ok(&["ipset", "list", S4]);
    let members: std::collections::HashSet<&str> = listed
        .lines()
        .filter_map(|l| l.split_once(" timeout ").map(|(ip, _)| ip))
        .collect();
    for line in &audit {
        let ip = line
            .split(" from ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert!(members.contains(ip), "{ip} reported but not in the set");
    }
    eprintln!(
        "{} bans reported before the exit, all in the set ({} members)",
        audit.len(),
        members.len()
    );
    let log = d.log();
    let exit = log.lines().find(|l| l.contains("exiting: stats:")).unwrap();
    let s = parse_stats(exit);
    assert_eq!(s["bans"], audit.len() as u64, "{exit}");
    assert_eq!(s["enforcer_bans"], audit.len() as u64, "{exit}");
    // Kill dumps still queued when the flush budget ends are abandoned
    // (and counted): the banned keys' packets are dropped regardless.
    assert!(!log.contains("ipset: "), "{log}");
}
