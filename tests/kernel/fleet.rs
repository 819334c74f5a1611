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
