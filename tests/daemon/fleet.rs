//! Fleet mode with the real daemon (`--dry-run`): two daemons as two nodes,
//! each with its own log, sharing a real Redis (started here on a unix
//! socket, always stopped). A user's device on node A and a second device
//! on node B: B bans its newcomer (reason fleet). Redis killed: both nodes
//! keep deciding alone (a local violation is still banned at once) and say
//! the fleet is down; Redis back: they reconnect, register their devices
//! again, and fleet decisions resume.

use std::time::{Duration, Instant};

use crate::support::daemon::*;
use crate::support::redis::Redis;
use crate::support::{wait_until, TempDir, PROMPT};

#[test]
fn two_nodes_share_one_limit_and_survive_redis_going_away() {
    let rdir = TempDir::new("fleet-redis");
    let Some(mut redis) = Redis::start(&rdir) else {
        return;
    };
    let fleet = format!("--fleet=unix://{}", redis.sock.display());
    let (da, db) = (TempDir::new("fleet-a"), TempDir::new("fleet-b"));
    let mut a = Daemon::start(&da, &[&fleet, "--node=node-a", "--window=1h"]);
    let mut b = Daemon::start(&db, &[&fleet, "--node=node-b", "--window=1h"]);
    for d in [&a, &b] {
        d.wait_log("fleet: connected as node");
    }

    // Device 1 on A, then device 2 of the same user on B.
    append(&a.access, &access_line("alice@example.com", "192.0.2.11"));
    wait_until(PROMPT, "A's device registered", || {
        (a.stats()["fleet_admitted"] == 1).then_some(())
    });
    let t = Instant::now();
    append(
        &b.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    let audit = b.wait_audit(1, PROMPT);
    let took = t.elapsed();
    eprintln!("line on B → B's ban of the fleet's second device: {took:?}");
    assert!(
        audit[0].contains("concurrent connection from 198.51.100.12 w/ origin 192.0.2.11"),
        "{audit:?}"
    );
    b.wait_log("192.0.2.11 on node-a");
    assert!(a.audit().is_empty(), "A banned: {:?}", a.audit());

    // Redis gone: both nodes decide alone; a local violation on B is still
    // banned at once; the stats say the fleet is down.
    redis.stop();
    wait_until(
        PROMPT + Duration::from_secs(1),
        "B sees the fleet down",
        || {
            append(&b.access, &access_line("carol@example.com", "203.0.113.1"));
            (b.stats()["fleet_up"] == 0).then_some(())
        },
    );
    let t = Instant::now();
    append(&b.access, &access_line("carol@example.com", "203.0.113.2"));
    b.wait_audit(2, PROMPT);
    eprintln!("local ban with the fleet down: {:?}", t.elapsed());

    // Redis back, empty: A reconnects and registers its device again, so
    // a new second device of alice's on B is banned again.
    let Some(_redis2) = Redis::start(&rdir) else {
        return;
    };
    for d in [&mut a, &mut b] {
        wait_until(Duration::from_secs(12), "the fleet back", || {
            (d.stats()["fleet_up"] == 1).then_some(())
        });
    }
    wait_until(PROMPT, "A's device registered again", || {
        (a.stats()["fleet_requests"] >= 2).then_some(())
    });
    append(
        &b.access,
        &access_line("alice@example.com", "198.51.100.13"),
    );
    let audit = b.wait_audit(3, PROMPT);
    assert!(
        audit[2].contains("from 198.51.100.13 w/ origin 192.0.2.11"),
        "{audit:?}"
    );
}
