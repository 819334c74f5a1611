//! Fleet mode with the kernel enforcer: two nodes, each a daemon in a
//! network namespace of its own with its own sets, sharing a real Redis on
//! a unix socket (reachable from both: a path, not an address). Alice's
//! device on node A and her second device on node B: the address lands in
//! B's set, not A's; with `--limit 2` a third node's newcomer is banned
//! there while the first two nodes admit theirs.

use std::time::Instant;

use crate::support::daemon::*;
use crate::support::netns::{Netns, FIREWALL};
use crate::support::redis::Redis;
use crate::support::{wait_until, TempDir, PROMPT};

fn in_set(ns: &Netns, addr: &str) -> bool {
    ns.exec(&["ipset", "test", "refract_banned_users", addr])
        .status
        .success()
}

#[test]
fn a_second_device_on_another_node_lands_in_that_nodes_set() {
    let Some(na) = Netns::with_tools("fleeta", FIREWALL) else {
        return;
    };
    let Some(nb) = Netns::with_tools("fleetb", FIREWALL) else {
        return;
    };
    let Some(nc) = Netns::with_tools("fleetc", FIREWALL) else {
        return;
    };
    let rdir = TempDir::new("kfleet-redis");
    let Some(redis) = Redis::start(&rdir) else {
        return;
    };
    let fleet = format!("--fleet=unix://{}", redis.sock.display());
    let dirs = [
        TempDir::new("kfleet-a"),
        TempDir::new("kfleet-b"),
        TempDir::new("kfleet-c"),
    ];
    let start = |ns: &Netns, dir: &TempDir, node: &str, limit: &str| {
        let d = Daemon::start_in(
            ns,
            dir,
            &[&fleet, &format!("--node={node}"), limit, "--window=1h"],
        );
        d.wait_log("fleet: connected as node");
        d
    };
    let mut a = start(&na, &dirs[0], "a", "--limit=1");
    let b = start(&nb, &dirs[1], "b", "--limit=1");
    append(&a.access, &access_line("alice@example.com", "192.0.2.11"));
    wait_until(PROMPT, "alice's device on A in the fleet", || {
        (a.stats()["fleet_admitted"] == 1).then_some(())
    });
    let t = Instant::now();
    append(
        &b.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    wait_until(PROMPT, "the second device in B's set", || {
        in_set(&nb, "198.51.100.12").then_some(())
    });
    eprintln!("line on B → B's set: {:?}", t.elapsed());
    assert!(!in_set(&na, "198.51.100.12") && !in_set(&na, "192.0.2.11"));
    assert!(!in_set(&nb, "192.0.2.11"));
    b.wait_log("192.0.2.11 on a");

    // --limit 2 over three nodes: bob's devices on A and B are admitted,
    // the third on C is banned in C's set.
    let c = start(&nc, &dirs[2], "c", "--limit=2");
    drop((a, b));
    let mut a2 = start(&na, &dirs[0], "a", "--limit=2");
    let mut b2 = start(&nb, &dirs[1], "b", "--limit=2");
    append(&a2.access, &access_line("bob@example.com", "203.0.113.1"));
    wait_until(PROMPT, "bob on A", || {
        (a2.stats()["fleet_admitted"] >= 1).then_some(())
    });
    append(&b2.access, &access_line("bob@example.com", "203.0.113.2"));
    wait_until(PROMPT, "bob on B", || {
        (b2.stats()["fleet_admitted"] >= 1).then_some(())
    });
    append(&c.access, &access_line("bob@example.com", "203.0.113.3"));
    wait_until(PROMPT, "bob's third device in C's set", || {
        in_set(&nc, "203.0.113.3").then_some(())
    });
    assert!(!in_set(&na, "203.0.113.1") && !in_set(&nb, "203.0.113.2"));
}

/// The benchmark behind `scripts/fleet-latency.sh` (ignored by default):
/// line appended on node B → the newcomer's key in B's set, while node A
/// holds the user's first device, over N users (REFRACT_FLEET_N, default
/// 1000), with Redis on a local unix socket; beside it, in the same run,
/// the same measure for a violation B sees alone (no fleet round trip).
/// Prints `fleet-latency …` lines with p50 and p99 in µs.
#[test]
#[ignore = "benchmark: scripts/fleet-latency.sh"]
fn fleet_latency() {
    use refract::key::Key;
    use refract::nl::buf::NlBuf;
    use refract::nl::consts::NETLINK_NETFILTER;
    use refract::nl::ipset::Test;
    use refract::nl::socket::NlSocket;

    let n: usize = std::env::var("REFRACT_FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (Some(na), Some(nb)) = (
        Netns::with_tools("flata", FIREWALL),
        Netns::with_tools("flatb", FIREWALL),
    ) else {
        return;
    };
    let rdir = TempDir::new("flat-redis");
    let Some(redis) = Redis::start(&rdir) else {
        return;
    };
    let fleet = format!("--fleet=unix://{}", redis.sock.display());
    let (da, db) = (TempDir::new("flat-a"), TempDir::new("flat-b"));
    let flags = |node: &str| {
        vec![
            fleet.clone(),
            format!("--node={node}"),
            "--window=1h".to_string(),
            "--timeout=1h".to_string(),
            "--set-size=1048576".to_string(),
            // A benchmark, not a fault test: a stall of this loaded machine
            // must not turn into a local decision.
            "--fleet-timeout=5s".to_string(),
        ]
    };
    let fa = flags("a");
    let fb = flags("b");
    let mut a = Daemon::start_in(&na, &da, &fa.iter().map(String::as_str).collect::<Vec<_>>());
    let b = Daemon::start_in(&nb, &db, &fb.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = |net: u8, i: usize| format!("10.{net}.{}.{}", i / 250, i % 250 + 1);
    // Every user's first device on A, registered in the fleet.
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&access_line(&format!("u{i}@example.com"), &addr(1, i)));
    }
    append(&a.access, &lines);
    wait_until(PROMPT * 3, "A's devices in the fleet", || {
        (a.stats()["fleet_admitted"] as usize == n).then_some(())
    });
    let b_access = b.access.clone();
    let b_log = b.stderr.clone();
    let (fleet_us, local_us) = nb.in_netns(move || {
        let mut sock = NlSocket::open(NETLINK_NETFILTER, 0).unwrap();
        let mut buf = NlBuf::new();
        let mut present = |ip: &str| {
            let seq = sock.next_seq();
            let key = Key::new(ip.parse().unwrap(), 64);
            buf.clear();
            Test {
                set: "refract_banned_users",
                key,
            }
            .emit(&mut buf, seq);
            sock.request(&buf, PROMPT).is_ok()
        };
        let mut measure = |user: &str, ip: &str| {
            let t = Instant::now();
            append(&b_access, &access_line(user, ip));
            while !present(ip) {
                assert!(
                    t.elapsed() < PROMPT,
                    "{ip} never in B's set:\n{}",
                    std::fs::read_to_string(&b_log).unwrap_or_default()
                );
            }
            t.elapsed().as_micros() as u64
        };
        let mut fleet_us = Vec::with_capacity(n);
        let mut local_us = Vec::with_capacity(n);
        for i in 0..n {
            // Alternate the two kinds so machine noise hits both alike.
            fleet_us.push(measure(&format!("u{i}@example.com"), &addr(2, i)));
            let local = format!("l{i}@example.com");
            append(&b_access, &access_line(&local, &addr(3, i)));
            local_us.push(measure(&local, &addr(4, i)));
        }
        (fleet_us, local_us)
    });
    let pct = |v: &[u64], p: usize| {
        let mut s = v.to_vec();
        s.sort_unstable();
        s[(s.len() * p / 100).min(s.len() - 1)]
    };
    let (f50, f99, l50, l99) = (
        pct(&fleet_us, 50),
        pct(&fleet_us, 99),
        pct(&local_us, 50),
        pct(&local_us, 99),
    );
    println!("fleet-latency fleet n={n} p50_us={f50} p99_us={f99}");
    println!("fleet-latency local n={n} p50_us={l50} p99_us={l99}");
    let s = a.stats();
    println!(
        "fleet-latency redis_requests_a={} (lines written on A: {n})",
        s["fleet_requests"]
    );
    drop(b);
}
