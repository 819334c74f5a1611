//! The fleet client (`refract::fleet`) against a real Redis server (the
//! Debian binary, started here on a unix socket in a temp dir and always
//! stopped): the admission script admits exactly `limit` devices across
//! nodes, refreshes a known one, answers "over the limit" with the devices
//! that fill it; a server that goes away makes every waiting request
//! `Unavailable` at once, and the client comes back by itself.

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use refract::clock::SECOND;
use refract::fleet::{Answer, Fleet, FleetConfig, Target};
use refract::key::Key;
use refract::sys::time::monotonic;

use crate::support::redis::Redis;
use crate::support::{TempDir, PROMPT};

/// A client as node `node`, driven by its own poll.
struct Node {
    poll: Poll,
    fleet: Fleet,
}

impl Node {
    fn new(sock: &std::path::Path, node: &str) -> Node {
        let poll = Poll::new().unwrap();
        let mut fleet = Fleet::new(FleetConfig {
            target: Target::Unix(sock.to_path_buf()),
            user: None,
            password: None,
            db: 0,
            node: node.to_string(),
            prefix: "refract:".into(),
            timeout: 200_000,
        });
        fleet.set_token(Token(1));
        let mut n = Node { poll, fleet };
        n.until(|f| f.stats.up);
        n
    }

    /// Runs the client until `done` (bounded by PROMPT).
    fn until(&mut self, mut done: impl FnMut(&mut Fleet) -> bool) {
        let mut events = Events::with_capacity(8);
        let start = Instant::now();
        while !done(&mut self.fleet) {
            assert!(start.elapsed() < PROMPT, "fleet: {:?}", self.fleet.stats);
            self.fleet.tick(self.poll.registry(), monotonic());
            self.poll
                .poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for _ in events.iter() {
                self.fleet.event(monotonic());
            }
        }
    }

    fn admit(&mut self, user: &str, key: &str, limit: usize) -> Answer {
        let k = Key::new(key.parse().unwrap(), 64);
        let id = self
            .fleet
            .admit(monotonic(), user.as_bytes(), k, limit, 10 * SECOND)
            .expect("fleet up");
        let mut got = None;
        self.until(|f| {
            for (i, a) in f.take_answers() {
                if i == id {
                    got = Some(a);
                }
            }
            got.is_some()
        });
        got.unwrap()
    }
}

#[test]
fn exactly_limit_devices_across_nodes() {
    let dir = TempDir::new("fleet");
    let Some(mut redis) = Redis::start(&dir) else {
        return;
    };
    let mut a = Node::new(&redis.sock, "node-a");
    let mut b = Node::new(&redis.sock, "node-b");
    let mut c = Node::new(&redis.sock, "node-c");
    // limit 1: a device on A, a second one on B is over the limit and B
    // learns which device (and node) fills it.
    let t = Instant::now();
    assert_eq!(a.admit("alice", "192.0.2.1", 1), Answer::Admitted);
    assert_eq!(
        b.admit("alice", "198.51.100.2", 1),
        Answer::Over(vec![("192.0.2.1".into(), "node-a".into())])
    );
    eprintln!("two admissions, one refused, in {:?}", t.elapsed());
    // The known device refreshes from any node.
    assert_eq!(b.admit("alice", "192.0.2.1", 1), Answer::Admitted);
    // limit 2 across three nodes: exactly two.
    assert_eq!(a.admit("bob", "203.0.113.1", 2), Answer::Admitted);
    assert_eq!(b.admit("bob", "203.0.113.2", 2), Answer::Admitted);
    match c.admit("bob", "203.0.113.3", 2) {
        Answer::Over(d) => assert_eq!(d.len(), 2, "{d:?}"),
        other => panic!("third device admitted: {other:?}"),
    }
    // IPv6 keys are /64s, as everywhere.
    assert_eq!(a.admit("carol", "2001:db8:1::1", 1), Answer::Admitted);
    assert_eq!(b.admit("carol", "2001:db8:1::2", 1), Answer::Admitted);

    // The server goes away: what waits is Unavailable at once, nothing
    // new is accepted (decide alone), and the stats say so.
    let k = Key::new("192.0.2.9".parse().unwrap(), 64);
    let id = a
        .fleet
        .admit(monotonic(), b"dave", k, 1, 10 * SECOND)
        .unwrap();
    redis.stop();
    let mut gone = None;
    a.until(|f| {
        for (i, ans) in f.take_answers() {
            if i == id {
                gone = Some(ans);
            }
        }
        gone.is_some() || !f.stats.up
    });
    assert!(!a.fleet.stats.up);
    assert!(a.fleet.admit(monotonic(), b"dave", k, 1, SECOND).is_none());
    // Back: the client reconnects by itself and asks to re-register.
    let Some(_redis2) = Redis::start(&dir) else {
        return;
    };
    a.until(|f| f.stats.up);
    assert!(a.fleet.reregister);
    assert_eq!(a.admit("alice", "192.0.2.1", 1), Answer::Admitted);
}

/// The README's minimal ACL is enough: a client that logs in as that user
/// (`redis://refract:s3cret@…`) admits and refuses as usual; with a wrong
/// password it never comes up (and the node decides alone).
#[test]
fn the_readmes_acl_is_enough_and_a_wrong_password_is_refused() {
    let dir = TempDir::new("fleet-acl");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let Some(_redis) = crate::support::redis::Redis::start_with_acl(&dir, port) else {
        return;
    };
    let client = |password: &str| {
        let poll = Poll::new().unwrap();
        let mut fleet = Fleet::new(FleetConfig {
            target: Target::Tcp(format!("127.0.0.1:{port}").parse().unwrap()),
            user: Some("refract".into()),
            password: Some(password.into()),
            db: 0,
            node: "n".into(),
            prefix: "refract:".into(),
            timeout: 200_000,
        });
        fleet.set_token(Token(1));
        Node { poll, fleet }
    };
    let mut good = client("s3cret");
    good.until(|f| f.stats.up);
    assert_eq!(good.admit("alice", "192.0.2.1", 1), Answer::Admitted);
    assert!(matches!(
        good.admit("alice", "192.0.2.2", 1),
        Answer::Over(_)
    ));
    let mut bad = client("wrong");
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        let mut events = Events::with_capacity(8);
        bad.fleet.tick(bad.poll.registry(), monotonic());
        bad.poll
            .poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        for _ in events.iter() {
            bad.fleet.event(monotonic());
        }
    }
    assert!(!bad.fleet.stats.up, "{:?}", bad.fleet.stats);
    assert!(bad.fleet.stats.errors > 0, "{:?}", bad.fleet.stats);
}
