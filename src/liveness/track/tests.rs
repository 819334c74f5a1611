use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::nl::diag::TCP_LISTEN;

const S: Micros = SECOND;
const W: Micros = 5 * S;
const T0: Micros = 1_000 * S;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key(s: &str) -> Key {
    Key::new(ip(s), 64)
}

/// A node with one IPv4 and one IPv6 address (plus the ones that never
/// count), listening on 443 and 8443.
fn tracker() -> Tracker {
    let locals = Locals::new(&[
        ip("127.0.0.1"),
        ip("198.51.100.254"),
        ip("::1"),
        ip("fe80::1"),
        ip("2001:db8::fe"),
    ]);
    Tracker::new(W, &[443, 8443, 443], locals)
}

fn info(unacked: u32, data_ms: u32, ack_ms: u32) -> TcpInfo {
    TcpInfo {
        state: TCP_ESTABLISHED,
        unacked,
        last_data_sent_ms: 60_000,
        last_data_recv_ms: data_ms,
        last_ack_recv_ms: ack_ms,
        bytes_acked: Some(1000),
    }
}

#[test]
fn locals_keep_what_a_client_can_reach() {
    let t = tracker();
    assert_eq!(t.locals.for_peer(sa("192.0.2.1:1")), [ip("198.51.100.254")]);
    assert_eq!(
        t.locals.for_peer(sa("[::ffff:192.0.2.1]:1")),
        [ip("198.51.100.254")]
    );
    assert_eq!(
        t.locals.for_peer(sa("[2001:db8:5::1]:1")),
        [ip("2001:db8::fe")]
    );
    let mut l = Locals::new(&[ip("192.0.2.10"), ip("192.0.2.11")]);
    l.learn(ip("::ffff:192.0.2.11"));
    assert_eq!(
        l.for_peer(sa("1.2.3.4:5")),
        [ip("192.0.2.11"), ip("192.0.2.10")]
    );
}

#[test]
fn attribution_in_both_families_once_per_connection() {
    let mut t = tracker();
    // IPv4, the same client as IPv4-mapped IPv6 (one connection: a mux
    // sub-stream repeats its connection's address and port), IPv6.
    t.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("192.0.2.1:40000"),
        b"in",
        1,
    );
    t.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("[::ffff:192.0.2.1]:40000"),
        b"in",
        1,
    );
    t.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("192.0.2.1:40001"),
        b"in",
        1,
    );
    t.record(
        T0,
        b"bob",
        key("2001:db8:5::1"),
        sa("[2001:db8:5::1]:50000"),
        b"in",
        1,
    );
    assert_eq!(t.tracked(), (3, 2));
    assert_eq!(t.stats.attributed, 4);
    // Port 0 (X-Forwarded-For) names no connection.
    t.record(T0, b"carol", key("192.0.2.9"), sa("192.0.2.9:0"), b"in", 1);
    assert_eq!(t.stats.unattributed, 1);
    assert_eq!(t.tracked(), (3, 2));
    // Nothing is asked of the kernel for lines alone, and nothing is due.
    assert!(!t.has_lookups());
    assert_eq!(t.deadline(), None);
}

#[test]
fn a_family_without_a_local_address_is_not_attributed() {
    let mut t = Tracker::new(W, &[443], Locals::new(&[ip("198.51.100.254")]));
    t.record(
        T0,
        b"bob",
        key("2001:db8:5::1"),
        sa("[2001:db8:5::1]:1"),
        b"",
        1,
    );
    assert_eq!((t.stats.attributed, t.stats.unattributed), (0, 1));
}

#[test]
fn a_newcomer_waits_for_the_lookups_of_the_other_keys() {
    let mut t = tracker();
    t.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("192.0.2.1:40000"),
        b"vless-in",
        1,
    );
    // The same key again is no newcomer check (nothing on other keys).
    assert!(!t.check_newcomer(T0, b"alice", key("192.0.2.1"), b"line0"));
    let now = T0 + 16 * S;
    t.record(
        now,
        b"alice",
        key("198.51.100.2"),
        sa("198.51.100.2:5000"),
        b"vless-in",
        1,
    );
    assert!(t.check_newcomer(now, b"alice", key("198.51.100.2"), b"line1"));
    assert!(t.pending(b"alice"));
    assert!(t.defer(b"alice", b"line2"));
    // One lookup per local address of the family and port; none for the
    // newcomer's own key.
    let lookups = t.take_lookups();
    assert_eq!(lookups.len(), 2, "{lookups:?}");
    assert!(lookups.iter().all(|l| l.peer == sa("192.0.2.1:40000")));
    assert_eq!(t.deadline(), Some(now + CHECK_DEADLINE));
    // Found on 8443, downloading (data in flight, ACKed 30 ms ago).
    let (hit, miss) = if lookups[0].port == 8443 {
        (&lookups[0], &lookups[1])
    } else {
        (&lookups[1], &lookups[0])
    };
    t.answer(now, miss, Answer::Gone);
    assert!(t.take_resolved().is_empty(), "resolved before every answer");
    t.answer(now, hit, Answer::Found(info(10, 16_000, 30)));
    let r = t.take_resolved();
    assert_eq!(r.len(), 1);
    assert!(!r[0].timed_out);
    assert_eq!(&*r[0].user, b"alice");
    assert_eq!(
        r[0].facts,
        [Fact {
            key: key("192.0.2.1"),
            at: now - 30_000,
            tag: (*b"vless-in").into(),
            peer: sa("192.0.2.1:40000"),
            first: T0,
        }]
    );
    let lines: Vec<&[u8]> = r[0].lines.iter().map(|d| &*d.line).collect();
    assert_eq!(lines, [&b"line1"[..], b"line2"]);
    assert!(!t.pending(b"alice"));
    assert_eq!(t.stats.deferred, 2);
    // Alice now has connections on two keys, over her limit of 1: a
    // suspect, re-checked every period.
    assert_eq!(t.suspects(), 1);
    assert_eq!(t.deadline(), Some(now + recheck_period(W)));
}

#[test]
fn connections_found_nowhere_are_forgotten_and_rechecks_stop() {
    let mut t = tracker();
    t.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("192.0.2.1:40000"),
        b"",
        1,
    );
    t.record(
        T0 + S,
        b"alice",
        key("192.0.2.2"),
        sa("192.0.2.2:40000"),
        b"",
        1,
    );
    assert_eq!(t.suspects(), 1);
    let due = T0 + S + recheck_period(W);
    assert_eq!(t.deadline(), Some(due));
    t.tick(due - 1);
    assert!(!t.has_lookups(), "re-check before its time");
    t.tick(due);
    assert_eq!(t.stats.rechecks, 1);
    // Both of alice's connections, on both ports.
    assert_eq!(t.take_lookups().len(), 4);
    // Unanswered, it resolves at its deadline; the next re-check comes a
    // period after the last.
    t.tick(due + CHECK_DEADLINE);
    assert!(t.take_resolved()[0].timed_out);
    assert_eq!(t.deadline(), Some(due + recheck_period(W)));

    // 192.0.2.2 still open, idle (keepalive only): no fact, kept.
    // 192.0.2.1 answered by the wildcard listener and ENOENT: gone.
    let mut t2 = tracker();
    t2.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("192.0.2.1:40000"),
        b"",
        1,
    );
    t2.record(
        T0 + S,
        b"alice",
        key("192.0.2.2"),
        sa("192.0.2.2:40000"),
        b"",
        1,
    );
    t2.tick(due);
    for l in t2.take_lookups() {
        let a = if l.peer == sa("192.0.2.2:40000") && l.port == 443 {
            Answer::Found(info(0, 600_000, 3_000))
        } else if l.port == 443 {
            let mut listener = info(0, 0, 0);
            listener.state = TCP_LISTEN;
            Answer::Found(listener)
        } else {
            Answer::Gone
        };
        t2.answer(due, &l, a);
    }
    let r = t2.take_resolved();
    assert_eq!(r.len(), 1);
    assert!(r[0].facts.is_empty(), "{:?}", r[0].facts);
    assert_eq!(t2.tracked(), (1, 1));
    assert_eq!(t2.stats.gone, 1);
    // One key left: no suspect, no deadline, no wakeup.
    assert_eq!(t2.suspects(), 0);
    assert_eq!(t2.deadline(), None);
}

#[test]
fn an_unanswered_check_resolves_at_its_deadline_and_keeps_its_connections() {
    let mut t = tracker();
    t.record(
        T0,
        b"alice",
        key("192.0.2.1"),
        sa("192.0.2.1:40000"),
        b"",
        1,
    );
    let now = T0 + 10 * S;
    assert!(t.check_newcomer(now, b"alice", key("192.0.2.7"), b"l"));
    let lookups = t.take_lookups();
    t.answer(now, &lookups[0], Answer::Unknown);
    t.tick(now + CHECK_DEADLINE - 1);
    assert!(t.take_resolved().is_empty());
    t.tick(now + CHECK_DEADLINE);
    let r = t.take_resolved();
    assert!(r[0].timed_out && r[0].facts.is_empty() && r[0].lines.len() == 1);
    assert_eq!(t.stats.timeouts, 1);
    assert_eq!(t.tracked(), (1, 1));
    // A late answer finds no check: ignored.
    t.answer(now + S, &lookups[1], Answer::Gone);
    assert_eq!(t.tracked(), (1, 1));
}

#[test]
fn the_bounds_hold() {
    let mut t = tracker();
    for port in 1..=(MAX_PER_KEY as u16 + 4) {
        t.record(
            T0,
            b"alice",
            key("192.0.2.1"),
            SocketAddr::new(ip("192.0.2.1"), port),
            b"",
            1,
        );
    }
    assert_eq!(t.tracked(), (MAX_PER_KEY, 1));
    for i in 0..(MAX_KEYS as u8 + 3) {
        let a = IpAddr::from([192, 0, 2, 100 + i]);
        t.record(
            T0,
            b"bob",
            Key::new(a, 64),
            SocketAddr::new(a, 1000),
            b"",
            10,
        );
    }
    assert_eq!(t.tracked(), (MAX_PER_KEY + MAX_KEYS, 2));
    assert_eq!(t.stats.refused, 3);
    // Deferred lines are bounded too.
    t.record(T0, b"carol", key("192.0.2.50"), sa("192.0.2.50:1"), b"", 1);
    assert!(t.check_newcomer(T0, b"carol", key("192.0.2.51"), b"x"));
    for _ in 1..MAX_DEFERRED {
        assert!(t.defer(b"carol", b"x"));
    }
    assert!(!t.defer(b"carol", b"x"));
    assert_eq!(t.stats.deferred_full, 1);
}

#[test]
fn recheck_period_follows_the_window() {
    assert_eq!(recheck_period(5 * S), S);
    assert_eq!(recheck_period(S), S / 2);
    assert_eq!(recheck_period(10_000), S / 10);
}

#[test]
fn log_lines_name_connections_mux_and_mapped_alike() {
    use crate::accesslog::{parse, Source};
    use crate::policy::{Policy, PolicyConfig};
    let p = Policy::new(PolicyConfig::default());
    let mut t = tracker();
    let lines: [&[u8]; 4] = [
        // Direct VLESS: a Go net.Addr.
        b"2026/01/30 17:03:38.067799 from 198.51.100.23:58676 accepted tcp:www.google.com:443 \
          [vless-in >> direct] email: alice@example.com",
        // A mux sub-stream of the same connection: an Xray Destination.
        b"2026/01/30 17:03:38.100000 from tcp:198.51.100.23:58676 accepted udp:1.1.1.1:53 \
          [vless-in -> dns-out] email: alice@example.com",
        // IPv6 mux: bracketed.
        b"2026/01/30 17:03:39.100001 from tcp:[2001:db8:5:6::a]:40112 accepted udp:1.1.1.1:53 \
          [vless-in -> dns-out] email: 12.bob",
        // Behind a CDN: port 0 names nothing (and the policy skips it).
        b"2024/10/01 08:00:00 from 203.0.113.9:0 accepted tcp:example.org:443 [ws-in >> direct] \
          email: carol",
    ];
    for l in lines {
        let a = parse(l).unwrap();
        let Some(probe) = p.probe(T0, &a) else {
            assert!(matches!(a.source, Source::Ip(_, 0)), "{a:?}");
            continue;
        };
        let Source::Ip(ip, port) = a.source else {
            panic!("{a:?}")
        };
        t.record(T0, probe.user, probe.key, SocketAddr::new(ip, port), b"", 1);
    }
    // Two connections (the direct line and its mux sub-stream are one).
    assert_eq!(t.tracked(), (2, 2));
    assert_eq!(t.stats.attributed, 3);
    // A newcomer of alice's looks up exactly that connection.
    assert!(t.check_newcomer(T0, b"alice@example.com", key("192.0.2.1"), b"l"));
    let peers: Vec<SocketAddr> = t.take_lookups().iter().map(|l| l.peer).collect();
    assert_eq!(peers, [sa("198.51.100.23:58676"); 2]);
}

#[test]
fn a_full_table_forgets_the_oldest_connection_not_known_in_use() {
    let mut t = tracker();
    let peer = |i: usize| SocketAddr::new(IpAddr::from([10, 1, (i >> 8) as u8, i as u8]), 1000);
    // user0's connection is looked at and found in use: it is kept.
    t.record(T0, b"user0", key("10.1.0.0"), peer(0), b"", 1);
    t.record(T0, b"user0", key("10.9.9.9"), sa("10.9.9.9:1"), b"", 1);
    assert!(t.check_newcomer(T0, b"user0", key("10.9.9.9"), b"l"));
    for l in t.take_lookups() {
        let a = if l.peer == peer(0) && l.port == 443 {
            Answer::Found(info(5, 10, 10))
        } else {
            Answer::Gone
        };
        t.answer(T0, &l, a);
    }
    assert_eq!(t.take_resolved()[0].facts.len(), 1);
    for i in 1..MAX_CONNS + 10 {
        t.record(
            T0,
            format!("user{i}").as_bytes(),
            key("10.2.0.1"),
            peer(i),
            b"",
            1,
        );
    }
    assert!(t.tracked().0 <= MAX_CONNS, "{:?}", t.tracked());
    assert!(t.stats.evicted >= 10, "{:?}", t.stats);
    // The one in use survived; the oldest unknown ones went first.
    assert_eq!(
        t.user_conns(b"user0").len(),
        1,
        "{:?}",
        t.user_conns(b"user0")
    );
    assert!(t.user_conns(b"user1").is_empty());
    assert!(!t.has_lookups(), "making room cost kernel lookups");
}
