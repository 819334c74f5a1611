use std::net::IpAddr;

use super::*;
use crate::accesslog::{Source, Status};
use crate::clock::{Civil, Timestamp, SECOND};

const S: Micros = SECOND;
const W: Micros = 5 * S;
const BAN: Micros = 60 * S;
/// An arbitrary start, far from zero so steps back stay positive.
const T0: Micros = 1_000_000 * S;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(s: &str) -> Key {
    Key::new(ip(s), 64)
}

fn line<'a>(user: &'a str, addr: &str, port: u16, tag: &'a str) -> Access<'a> {
    Access {
        ts: Timestamp::default(),
        source: Source::Ip(ip(addr), port),
        status: Status::Accepted,
        inbound: Some(tag.as_bytes()),
        detour: None,
        email: Some(user.as_bytes()),
        bracket: Some(tag.as_bytes()),
    }
}

/// One line from `user` at `addr` at time `t`, driven like the daemon
/// and replay drive it (expire when the deadline passed, then observe).
fn at(p: &mut Policy, t: Micros, user: &str, addr: &str) -> Verdict {
    if p.next_deadline().is_some_and(|d| d <= t) {
        p.expire(t);
    }
    p.observe(t, &line(user, addr, 40000, "in"))
}

fn policy(f: impl FnOnce(&mut PolicyConfig)) -> Policy {
    let mut cfg = PolicyConfig::default();
    f(&mut cfg);
    Policy::new(cfg)
}

fn ban_of(v: Verdict) -> Ban {
    match v {
        Verdict::Banned(b) => b,
        other => panic!("expected a ban, got {other:?}"),
    }
}

/// `user`'s entries as (key, last_seen on the internal clock, candidate),
/// sorted by key.
fn view(p: &Policy, user: &str) -> Vec<(Key, Micros, bool)> {
    let Some(&slot) = p.users.get(user.as_bytes()) else {
        return Vec::new();
    };
    let u = p.slots[slot as usize].user.as_ref().unwrap();
    let mut v: Vec<_> = u
        .entries
        .as_slice()
        .iter()
        .map(|e| (e.key, e.last_seen, e.candidate))
        .collect();
    v.sort();
    v
}

/// The earliest natural expiry or ban end, on the caller's clock.
fn earliest_expiry(p: &Policy) -> Option<Micros> {
    let w = p.cfg.window;
    let entries = p
        .slots
        .iter()
        .filter_map(|s| s.user.as_ref())
        .flat_map(|u| {
            u.entries
                .as_slice()
                .iter()
                .map(move |e| e.last_seen.saturating_add(w).saturating_add(1))
        });
    let bans = p.bans.values().map(|b| b.until);
    entries
        .chain(bans)
        .min()
        .map(|d| d.saturating_sub(p.offset))
}

#[test]
fn skip_rules_in_order() {
    let mut p = policy(|c| {
        c.allow = vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8:bb::1/128".parse().unwrap(),
        ]
    });
    let mut a = line("alice", "127.0.0.1", 0, "in");
    a.status = Status::Rejected;
    assert_eq!(p.observe(T0, &a), Verdict::Skipped(Skip::Rejected));
    let mut a = line("alice", "192.0.2.1", 1, "in");
    a.email = None;
    assert_eq!(p.observe(T0, &a), Verdict::Skipped(Skip::NoEmail));
    a.email = Some(b"");
    assert_eq!(p.observe(T0, &a), Verdict::Skipped(Skip::NoEmail));
    for (source, skip) in [
        (Source::Masked, Skip::Masked),
        (Source::Unix, Skip::Unspecified),
        (Source::Internal, Skip::Unspecified),
        (Source::Ip(ip("0.0.0.0"), 0), Skip::Unspecified),
        (Source::Ip(ip("::"), 443), Skip::Unspecified),
        (Source::Ip(ip("::ffff:0.0.0.0"), 443), Skip::Unspecified),
        (Source::Ip(ip("192.0.2.1"), 0), Skip::XffPort0),
        (Source::Ip(ip("127.0.0.1"), 0), Skip::XffPort0),
        (Source::Ip(ip("127.3.2.1"), 5), Skip::Loopback),
        (Source::Ip(ip("::1"), 5), Skip::Loopback),
        (Source::Ip(ip("::ffff:127.0.0.1"), 5), Skip::Loopback),
        (Source::Ip(ip("203.0.113.9"), 5), Skip::Allowlisted),
        (Source::Ip(ip("::ffff:203.0.113.9"), 5), Skip::Allowlisted),
        // Same /64 as an allowlisted /128: banning the key would ban it.
        (Source::Ip(ip("2001:db8:bb::2"), 5), Skip::Allowlisted),
    ] {
        let a = Access {
            source,
            ..line("alice", "192.0.2.1", 1, "in")
        };
        assert_eq!(p.observe(T0, &a), Verdict::Skipped(skip), "{source:?}");
    }
    assert_eq!(p.tracked(), (0, 0));
    assert_eq!(p.next_deadline(), None);
    // The neighbour /64 is not allowlisted.
    assert_eq!(
        at(&mut p, T0, "alice", "2001:db8:bb:1::2"),
        Verdict::Admitted(key("2001:db8:bb:1::"))
    );
}

#[test]
fn wifi_to_lte_after_the_window_is_no_ban() {
    let mut p = policy(|_| {});
    assert_eq!(
        at(&mut p, T0, "alice", "192.0.2.1"),
        Verdict::Admitted(key("192.0.2.1"))
    );
    assert_eq!(
        at(&mut p, T0 + W + 1, "alice", "198.51.100.2"),
        Verdict::Admitted(key("198.51.100.2"))
    );
    assert_eq!(p.stats().bans, 0);
    assert_eq!(p.tracked(), (1, 1));
}

#[test]
fn switch_within_the_window_is_a_ban() {
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    let mut a = line("alice", "198.51.100.2", 4000, "x");
    a.inbound = None;
    a.detour = Some(b">> direct");
    a.bracket = Some(b">> direct");
    let b = ban_of(p.observe(T0 + 2 * S, &a));
    assert_eq!(
        b,
        Ban {
            key: key("198.51.100.2"),
            user: b"alice"[..].into(),
            origins: vec![key("192.0.2.1")],
            tag: b">> direct"[..].into(),
            until: T0 + 2 * S + BAN,
        }
    );
    // The banned key is ignored for everyone, and not banned again.
    assert_eq!(
        at(&mut p, T0 + 3 * S, "alice", "198.51.100.2"),
        Verdict::Ignored(key("198.51.100.2"))
    );
    assert_eq!(
        at(&mut p, T0 + 3 * S, "bob", "198.51.100.2"),
        Verdict::Ignored(key("198.51.100.2"))
    );
    assert_eq!(p.stats().bans, 1);
    // No bracket in the line: "unknown", as refract 0.2 printed it.
    let mut a = line("alice", "198.51.100.3", 4000, "x");
    a.inbound = None;
    a.bracket = None;
    assert_eq!(&*ban_of(p.observe(T0 + 4 * S, &a)).tag, b"unknown");
}

#[test]
fn confirm_switch_within_the_window_is_promoted() {
    let mut p = policy(|c| c.confirm = true);
    at(&mut p, T0, "alice", "192.0.2.1");
    assert_eq!(
        at(&mut p, T0 + 2 * S, "alice", "198.51.100.2"),
        Verdict::Candidate(key("198.51.100.2"))
    );
    assert_eq!(
        at(&mut p, T0 + 4 * S, "alice", "198.51.100.2"),
        Verdict::Candidate(key("198.51.100.2"))
    );
    // The promotion moment is a deadline: the old key's window end.
    assert_eq!(p.next_deadline(), Some(T0 + W + 1));
    assert!(p.expire(T0 + W + 1).is_empty());
    assert_eq!(p.stats().promotions, 1);
    assert_eq!(
        view(&p, "alice"),
        vec![(key("198.51.100.2"), T0 + 4 * S, false)]
    );
    assert_eq!(
        at(&mut p, T0 + 6 * S, "alice", "198.51.100.2"),
        Verdict::Refreshed(key("198.51.100.2"))
    );
    assert_eq!(p.stats().bans, 0);
}

#[test]
fn confirm_promotion_does_not_need_expire() {
    let mut p = policy(|c| c.confirm = true);
    p.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
    p.observe(T0 + 2 * S, &line("alice", "198.51.100.2", 1, "in"));
    assert_eq!(
        p.observe(T0 + 7 * S, &line("alice", "198.51.100.2", 1, "in")),
        Verdict::Refreshed(key("198.51.100.2"))
    );
    assert_eq!(p.stats().promotions, 1);
    // The promotion happened when the admitted key ended, even if the
    // promoted key has ended too by the time anyone looks.
    let mut q = policy(|c| c.confirm = true);
    q.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
    q.observe(T0 + S, &line("alice", "198.51.100.2", 1, "in"));
    q.observe(T0 + 9 * S, &line("alice", "198.51.100.3", 1, "in"));
    assert_eq!(q.stats().promotions, 1);
    assert_eq!(
        view(&q, "alice"),
        vec![(key("198.51.100.3"), T0 + 9 * S, false)]
    );
    // A candidate that ends with (or before) the admitted key is not
    // promoted: it was not active after the admitted key ended.
    let mut p = policy(|c| c.confirm = true);
    p.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
    p.observe(T0, &line("alice", "198.51.100.2", 1, "in"));
    p.observe(T0 + W + 1, &line("bob", "192.0.2.9", 1, "in"));
    p.expire(T0 + W + 1);
    assert_eq!(p.stats().promotions, 0);
    assert_eq!(p.tracked(), (1, 1));
}

#[test]
fn confirm_true_sharing_is_banned_when_the_old_device_speaks() {
    let mut p = policy(|c| c.confirm = true);
    at(&mut p, T0, "alice", "192.0.2.1");
    let cand = line("alice", "198.51.100.2", 1, "phone-in");
    assert_eq!(
        p.observe(T0 + S, &cand),
        Verdict::Candidate(key("198.51.100.2"))
    );
    let b = ban_of(at(&mut p, T0 + 2 * S, "alice", "192.0.2.1"));
    assert_eq!(b.key, key("198.51.100.2"));
    assert_eq!(b.origins, vec![key("192.0.2.1")]);
    assert_eq!(&*b.tag, b"phone-in", "the candidate's line's tag");
    assert_eq!(b.until, T0 + 2 * S + BAN);
    assert_eq!(
        at(&mut p, T0 + 3 * S, "alice", "198.51.100.2"),
        Verdict::Ignored(key("198.51.100.2"))
    );
    assert_eq!(
        view(&p, "alice"),
        vec![(key("192.0.2.1"), T0 + 2 * S, false)]
    );
    assert_eq!((p.stats().bans, p.stats().promotions), (1, 0));
}

#[test]
fn confirm_candidates_go_oldest_first() {
    let mut p = policy(|c| c.confirm = true);
    at(&mut p, T0, "alice", "192.0.2.1");
    at(&mut p, T0 + S, "alice", "192.0.2.2");
    at(&mut p, T0 + 2 * S, "alice", "192.0.2.3");
    let b = ban_of(at(&mut p, T0 + 3 * S, "alice", "192.0.2.1"));
    assert_eq!(b.key, key("192.0.2.2"));
    let b = ban_of(at(&mut p, T0 + 4 * S, "alice", "192.0.2.1"));
    assert_eq!(b.key, key("192.0.2.3"));

    // Promotion: the oldest candidate takes the freed place; the other
    // stays a candidate until the promoted key speaks again.
    let mut p = policy(|c| c.confirm = true);
    at(&mut p, T0, "alice", "192.0.2.1");
    at(&mut p, T0 + S, "alice", "192.0.2.2");
    at(&mut p, T0 + 2 * S, "alice", "192.0.2.3");
    p.expire(T0 + W + 1);
    assert_eq!(
        view(&p, "alice"),
        vec![
            (key("192.0.2.2"), T0 + S, false),
            (key("192.0.2.3"), T0 + 2 * S, true)
        ]
    );
    let b = ban_of(at(&mut p, T0 + 6 * S, "alice", "192.0.2.2"));
    assert_eq!(b.key, key("192.0.2.3"));
    assert_eq!(b.origins, vec![key("192.0.2.2")]);
}

#[test]
fn confirm_with_limit_two_needs_both_admitted_keys() {
    let mut p = policy(|c| {
        c.confirm = true;
        c.limit = 2;
    });
    at(&mut p, T0, "alice", "192.0.2.1");
    at(&mut p, T0, "alice", "192.0.2.2");
    assert!(matches!(
        at(&mut p, T0 + S, "alice", "192.0.2.3"),
        Verdict::Candidate(_)
    ));
    // One admitted device talking could be the one that moved.
    assert_eq!(
        at(&mut p, T0 + 2 * S, "alice", "192.0.2.2"),
        Verdict::Refreshed(key("192.0.2.2"))
    );
    assert_eq!(
        at(&mut p, T0 + 3 * S, "alice", "192.0.2.2"),
        Verdict::Refreshed(key("192.0.2.2"))
    );
    // Both speaking after the candidate appeared: three devices.
    let b = ban_of(at(&mut p, T0 + 4 * S, "alice", "192.0.2.1"));
    assert_eq!(b.key, key("192.0.2.3"));
    assert_eq!(b.origins, vec![key("192.0.2.1"), key("192.0.2.2")]);
}

#[test]
fn limit_two_and_a_third_device() {
    let mut p = policy(|c| c.limit = 2);
    at(&mut p, T0, "alice", "198.51.100.9");
    assert!(matches!(
        at(&mut p, T0 + S, "alice", "192.0.2.1"),
        Verdict::Admitted(_)
    ));
    let b = ban_of(at(&mut p, T0 + 2 * S, "alice", "192.0.2.5"));
    assert_eq!(b.key, key("192.0.2.5"));
    assert_eq!(b.origins, vec![key("192.0.2.1"), key("198.51.100.9")]);
}

#[test]
fn per_user_limits_override_the_default() {
    let mut p = policy(|c| {
        c.limits.insert(b"family"[..].into(), 3);
    });
    for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert!(matches!(at(&mut p, T0, "family", a), Verdict::Admitted(_)));
    }
    assert!(matches!(
        at(&mut p, T0, "family", "192.0.2.4"),
        Verdict::Banned(_)
    ));
    at(&mut p, T0, "solo", "198.51.100.1");
    assert!(matches!(
        at(&mut p, T0, "solo", "198.51.100.2"),
        Verdict::Banned(_)
    ));
    // Reconfigure: the new limit applies from the next line.
    let mut cfg = p.config().clone();
    cfg.limit = 2;
    p.reconfigure(cfg);
    assert!(matches!(
        at(&mut p, T0 + S, "solo", "198.51.100.3"),
        Verdict::Admitted(_)
    ));
}

#[test]
fn two_users_behind_one_address() {
    let mut p = policy(|_| {});
    assert!(matches!(
        at(&mut p, T0, "alice", "192.0.2.7"),
        Verdict::Admitted(_)
    ));
    assert!(matches!(
        at(&mut p, T0, "bob", "192.0.2.7"),
        Verdict::Admitted(_)
    ));
    assert!(matches!(
        at(&mut p, T0 + S, "alice", "192.0.2.7"),
        Verdict::Refreshed(_)
    ));
    assert!(matches!(
        at(&mut p, T0 + S, "bob", "192.0.2.7"),
        Verdict::Refreshed(_)
    ));
    assert_eq!(p.tracked(), (2, 2));
    // alice's second device is banned; bob is unaffected.
    let b = ban_of(at(&mut p, T0 + 2 * S, "alice", "198.51.100.1"));
    assert_eq!(b.origins, vec![key("192.0.2.7")]);
    assert!(matches!(
        at(&mut p, T0 + 2 * S, "bob", "192.0.2.7"),
        Verdict::Refreshed(_)
    ));
}

#[test]
fn a_ban_counts_for_nobody() {
    // carol's phone shares 192.0.2.7 with dave; carol's ban of it must
    // not make dave's next address a violation.
    let mut p = policy(|_| {});
    at(&mut p, T0, "dave", "192.0.2.7");
    at(&mut p, T0, "carol", "198.51.100.1");
    let b = ban_of(at(&mut p, T0 + S, "carol", "192.0.2.7"));
    assert_eq!(b.key, key("192.0.2.7"));
    assert_eq!(
        at(&mut p, T0 + 2 * S, "dave", "203.0.113.3"),
        Verdict::Admitted(key("203.0.113.3"))
    );
}

#[test]
fn a_banned_address_reappearing() {
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    let b = ban_of(at(&mut p, T0 + S, "alice", "192.0.2.2"));
    for t in [T0 + 2 * S, T0 + S + BAN - 1] {
        assert_eq!(at(&mut p, t, "alice", "192.0.2.2"), Verdict::Ignored(b.key));
    }
    assert_eq!(p.stats().bans, 1);
    assert_eq!(p.next_deadline(), Some(b.until));
    assert_eq!(p.expire(b.until - 1), Vec::<Key>::new());
    assert_eq!(p.expire(b.until), vec![b.key]);
    assert_eq!(p.tracked(), (0, 0));
    assert_eq!(p.next_deadline(), None);
    // Afterwards it is a new key like any other.
    assert_eq!(
        at(&mut p, b.until, "alice", "192.0.2.2"),
        Verdict::Admitted(b.key)
    );
    // Without an `expire` call in between the result is the same.
    let mut q = policy(|_| {});
    q.observe(T0, &line("alice", "192.0.2.1", 1, "in"));
    q.observe(T0 + S, &line("alice", "192.0.2.2", 1, "in"));
    assert_eq!(
        q.observe(b.until, &line("alice", "192.0.2.2", 1, "in")),
        Verdict::Admitted(b.key)
    );
}

#[test]
fn restored_bans_are_ignored_until_they_end() {
    let mut p = policy(|_| {});
    p.restore_ban(key("192.0.2.9"), T0 + 10 * S);
    assert!(p.is_banned(key("192.0.2.9"), T0));
    assert_eq!(p.next_deadline(), Some(T0 + 10 * S));
    assert_eq!(
        at(&mut p, T0, "alice", "192.0.2.9"),
        Verdict::Ignored(key("192.0.2.9"))
    );
    assert_eq!(p.expire(T0 + 10 * S), vec![key("192.0.2.9")]);
    assert!(!p.is_banned(key("192.0.2.9"), T0 + 10 * S));
}

#[test]
fn allowlisted_and_loopback_never_count() {
    let mut p = policy(|c| c.allow = vec!["10.0.0.0/8".parse().unwrap()]);
    at(&mut p, T0, "alice", "192.0.2.1");
    for a in [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "::ffff:10.9.9.9",
    ] {
        assert!(matches!(
            at(&mut p, T0 + S, "alice", a),
            Verdict::Skipped(Skip::Loopback | Skip::Allowlisted)
        ));
    }
    assert_eq!(p.tracked(), (1, 1));
    assert_eq!(p.stats().bans, 0);
}

#[test]
fn reconfigured_allowlist_applies_at_once() {
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    let mut cfg = p.config().clone();
    cfg.allow = vec!["::ffff:192.0.2.0/120".parse().unwrap()];
    p.reconfigure(cfg);
    assert_eq!(p.tracked(), (1, 0));
    assert_eq!(
        at(&mut p, T0 + S, "alice", "198.51.100.1"),
        Verdict::Admitted(key("198.51.100.1"))
    );
    // A mapped network allows the plain IPv4 address too.
    assert_eq!(
        at(&mut p, T0 + S, "alice", "192.0.2.1"),
        Verdict::Skipped(Skip::Allowlisted)
    );
}

#[test]
fn ipv6_privacy_rotation_is_one_device() {
    let mut p = policy(|_| {});
    assert!(matches!(
        at(&mut p, T0, "bob", "2001:db8:5:6::a"),
        Verdict::Admitted(_)
    ));
    assert_eq!(
        at(&mut p, T0 + S, "bob", "2001:db8:5:6:8c1e:2ff:fe00:1"),
        Verdict::Refreshed(key("2001:db8:5:6::"))
    );
    let b = ban_of(at(&mut p, T0 + 2 * S, "bob", "2001:db8:5:7::1"));
    assert_eq!(b.key.to_string(), "2001:db8:5:7::/64");
    assert_eq!(b.origins, vec![key("2001:db8:5:6::")]);
    assert_eq!(b.origins[0].to_string(), "2001:db8:5:6::/64");
}

#[test]
fn window_boundary() {
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    assert!(matches!(
        at(&mut p, T0 + W, "alice", "192.0.2.2"),
        Verdict::Banned(_)
    ));
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    assert_eq!(
        at(&mut p, T0 + W, "alice", "192.0.2.1"),
        Verdict::Refreshed(key("192.0.2.1"))
    );
    assert_eq!(
        at(&mut p, T0 + 2 * W + 1, "alice", "192.0.2.2"),
        Verdict::Admitted(key("192.0.2.2"))
    );
}

#[test]
fn next_deadline_after_each_event() {
    let mut p = policy(|c| c.confirm = true);
    assert_eq!(p.next_deadline(), None);
    at(&mut p, T0, "alice", "192.0.2.1");
    assert_eq!(p.next_deadline(), Some(T0 + W + 1));
    // A refresh leaves an early deadline; expiring there finds the real one.
    at(&mut p, T0 + 2 * S, "alice", "192.0.2.1");
    assert_eq!(p.next_deadline(), Some(T0 + W + 1));
    assert!(p.expire(T0 + W + 1).is_empty());
    assert_eq!(p.next_deadline(), Some(T0 + 2 * S + W + 1));
    // A candidate: its promotion moment is the admitted key's end.
    at(&mut p, T0 + 6 * S, "alice", "192.0.2.2");
    assert_eq!(p.next_deadline(), Some(T0 + 2 * S + W + 1));
    // A ban adds its end; the user's (early) deadline stays first.
    let b = ban_of(at(&mut p, T0 + 7 * S, "alice", "192.0.2.1"));
    assert_eq!(b.until, T0 + 7 * S + BAN);
    assert_eq!(p.next_deadline(), Some(T0 + 2 * S + W + 1));
    assert!(p.expire(T0 + 2 * S + W + 1).is_empty());
    assert_eq!(p.next_deadline(), Some(T0 + 7 * S + W + 1));
    assert!(p.expire(T0 + 7 * S + W + 1).is_empty());
    assert_eq!(p.tracked(), (0, 1));
    assert_eq!(p.next_deadline(), Some(b.until));
    assert_eq!(p.expire(b.until), vec![b.key]);
    assert_eq!(p.next_deadline(), None);
    assert_eq!(p.tracked(), (0, 0));
    // A shrinking window moves deadlines earlier.
    at(&mut p, T0 + 100 * S, "alice", "192.0.2.1");
    let mut cfg = p.config().clone();
    cfg.window = S;
    p.reconfigure(cfg);
    assert_eq!(p.next_deadline(), Some(T0 + 101 * S + 1));
}

#[test]
fn memory_caps_refuse_and_never_ban() {
    let mut p = policy(|c| c.max_users = 1);
    at(&mut p, T0, "alice", "192.0.2.1");
    assert_eq!(
        at(&mut p, T0, "bob", "192.0.2.2"),
        Verdict::Admitted(key("192.0.2.2"))
    );
    assert_eq!(
        at(&mut p, T0, "bob", "192.0.2.3"),
        Verdict::Admitted(key("192.0.2.3"))
    );
    assert_eq!(p.stats().users_refused, 2);
    assert_eq!(p.tracked(), (1, 1));

    let mut p = policy(|c| {
        c.max_keys = 2;
        c.limit = 3;
        c.confirm = true;
    });
    at(&mut p, T0, "alice", "192.0.2.1");
    at(&mut p, T0, "alice", "192.0.2.2");
    assert_eq!(
        at(&mut p, T0, "alice", "192.0.2.3"),
        Verdict::Admitted(key("192.0.2.3"))
    );
    assert_eq!(
        at(&mut p, T0, "bob", "192.0.2.4"),
        Verdict::Admitted(key("192.0.2.4"))
    );
    assert_eq!(p.stats().keys_refused, 2);
    assert_eq!(p.stats().bans, 0);
    assert_eq!(p.tracked(), (1, 2));
    // Room again once state expires.
    assert_eq!(
        at(&mut p, T0 + W + 1, "bob", "192.0.2.4"),
        Verdict::Admitted(key("192.0.2.4"))
    );
    assert_eq!(p.tracked(), (1, 1));

    // A ban is state: at the key cap an over-limit newcomer is refused
    // (not banned), so one user rotating addresses cannot grow the ban
    // table past the cap.
    let mut p = policy(|c| c.max_keys = 3);
    at(&mut p, T0, "alice", "192.0.2.1");
    assert!(matches!(
        at(&mut p, T0, "alice", "192.0.2.2"),
        Verdict::Banned(_)
    ));
    assert!(matches!(
        at(&mut p, T0, "alice", "192.0.2.3"),
        Verdict::Banned(_)
    ));
    assert_eq!(
        at(&mut p, T0, "alice", "192.0.2.4"),
        Verdict::Admitted(key("192.0.2.4"))
    );
    assert_eq!(p.stats().keys_refused, 1);
    assert_eq!(p.stats().bans, 2);
    assert_eq!(p.tracked(), (1, 3));
}

#[test]
fn clock_jumps() {
    // Back by an hour: no time passes at the jump.
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    let back = T0 - 3600 * S;
    let b = ban_of(at(&mut p, back + S, "alice", "192.0.2.2"));
    assert_eq!(b.until, back + S + BAN, "reported on the caller's clock");
    assert_eq!(p.next_deadline(), Some(back + S + W + 1));
    // After the jump, time runs again from the caller's new clock.
    assert_eq!(
        at(&mut p, back + S + W + 1, "alice", "192.0.2.3"),
        Verdict::Admitted(key("192.0.2.3"))
    );
    assert_eq!(p.expire(b.until), vec![b.key]);

    // A line slightly out of order counts as seen at the latest time.
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    assert_eq!(
        at(&mut p, T0 - 1000, "alice", "192.0.2.1"),
        Verdict::Refreshed(key("192.0.2.1"))
    );
    assert_eq!(view(&p, "alice"), vec![(key("192.0.2.1"), T0, false)]);
    assert!(matches!(
        at(&mut p, T0 + W, "alice", "192.0.2.2"),
        Verdict::Banned(_)
    ));

    // Forward by a day: everything ended.
    let day = 86_400 * S;
    assert!(matches!(
        at(&mut p, T0 + day, "alice", "192.0.2.2"),
        Verdict::Admitted(_)
    ));
    p.expire(T0 + day);
    assert_eq!(p.tracked(), (1, 1));

    // The ends of the scale: no panic, no wrap.
    let mut p = policy(|_| {});
    at(&mut p, Micros::MAX, "alice", "192.0.2.1");
    assert!(matches!(
        at(&mut p, Micros::MAX, "alice", "192.0.2.2"),
        Verdict::Banned(_)
    ));
    at(&mut p, 0, "alice", "192.0.2.3");
    p.expire(0);
    p.expire(Micros::MAX);
    let _ = p.next_deadline();
}

/// `tests/fixtures/mixed.log`, line by line, with the defaults.
#[test]
fn mixed_log_scenario() {
    fn ts(s: u32, us: u32) -> Timestamp {
        let c = Civil {
            year: 2026,
            month: 11,
            day: 21,
            hour: 10,
            minute: 0,
            second: s,
        };
        Timestamp::from_civil(c, us).unwrap()
    }
    let ip_line =
        |t: Timestamp, user: Option<&'static str>, addr: &str, port: u16, detour: &'static str| {
            Access {
                ts: t,
                source: Source::Ip(ip(addr), port),
                status: Status::Accepted,
                inbound: detour
                    .split(" >> ")
                    .next()
                    .filter(|_| detour.contains(" >> "))
                    .map(str::as_bytes),
                detour: Some(detour.as_bytes()),
                email: user.map(str::as_bytes),
                bracket: Some(detour.as_bytes()),
            }
        };
    let alice = Some("alice@example.com");
    let lines: Vec<(Access<'_>, Verdict)> = vec![
        (
            ip_line(
                ts(1, 120_331),
                alice,
                "198.51.100.23",
                58676,
                "vless-in >> direct",
            ),
            Verdict::Admitted(key("198.51.100.23")),
        ),
        (
            ip_line(ts(1, 250_004), None, "127.0.0.1", 39946, "api -> api"),
            Verdict::Skipped(Skip::NoEmail),
        ),
        (
            ip_line(
                ts(1, 300_871),
                alice,
                "198.51.100.23",
                58680,
                "vless-in -> dns-out",
            ),
            Verdict::Refreshed(key("198.51.100.23")),
        ),
        (
            Access {
                source: Source::Internal,
                ..ip_line(ts(2, 4_450), None, "0.0.0.0", 0, "direct")
            },
            Verdict::Skipped(Skip::NoEmail),
        ),
        (
            ip_line(
                ts(2, 500_100),
                Some("12.bob"),
                "2001:db8:5:6::a",
                40112,
                "VLESS TCP REALITY >> direct",
            ),
            Verdict::Admitted(key("2001:db8:5:6::")),
        ),
        (
            ip_line(
                ts(2, 700_200),
                Some("12.bob"),
                "2001:db8:5:6:8c1e:2ff:fe00:1",
                40200,
                "VLESS TCP REALITY >> direct",
            ),
            Verdict::Refreshed(key("2001:db8:5:6::")),
        ),
        (
            Access {
                status: Status::Rejected,
                detour: None,
                inbound: None,
                ..ip_line(ts(3, 0), None, "203.0.113.76", 57676, "")
            },
            Verdict::Skipped(Skip::Rejected),
        ),
        (
            ip_line(
                ts(3, 100_000),
                Some("carol"),
                "203.0.113.9",
                0,
                "ws-in >> direct",
            ),
            Verdict::Skipped(Skip::XffPort0),
        ),
        (
            Access {
                source: Source::Unix,
                ..ip_line(
                    ts(3, 200_000),
                    Some("carol"),
                    "0.0.0.0",
                    0,
                    "xhttp-uds >> direct",
                )
            },
            Verdict::Skipped(Skip::Unspecified),
        ),
        (
            Access {
                source: Source::Masked,
                ..ip_line(
                    ts(3, 300_000),
                    Some("carol"),
                    "0.0.0.0",
                    0,
                    "vless-in >> direct",
                )
            },
            Verdict::Skipped(Skip::Masked),
        ),
        (
            ip_line(ts(4, 0), alice, "192.0.2.44", 61000, "vless-in >> direct"),
            Verdict::Banned(Ban {
                key: key("192.0.2.44"),
                user: b"alice@example.com"[..].into(),
                origins: vec![key("198.51.100.23")],
                tag: b"vless-in >> direct"[..].into(),
                until: ts(4, 0).as_micros() + BAN,
            }),
        ),
        (
            ip_line(
                ts(4, 500_000),
                alice,
                "198.51.100.23",
                58690,
                "inbound-127.0.0.1:3010 >> direct",
            ),
            Verdict::Refreshed(key("198.51.100.23")),
        ),
        (
            ip_line(ts(11, 0), alice, "192.0.2.45", 61010, "vless-in >> direct"),
            Verdict::Admitted(key("192.0.2.45")),
        ),
    ];
    let mut p = policy(|_| {});
    let mut audit = Vec::new();
    for (i, (a, want)) in lines.iter().enumerate() {
        let now = a.ts.as_micros();
        if p.next_deadline().is_some_and(|d| d <= now) {
            p.expire(now);
        }
        let got = p.observe(now, a);
        assert_eq!(&got, want, "line {i}");
        if let Verdict::Banned(b) = &got {
            crate::audit::write_line(&mut audit, a.ts, b);
        }
    }
    assert_eq!(
        String::from_utf8(audit).unwrap(),
        "2026/11/21 10:00:04 disallowed concurrent connection from 192.0.2.44 \
         w/ origin 198.51.100.23 [vless-in >> direct] email: alice@example.com"
    );
    assert_eq!(p.stats().bans, 1);
}

/// xorshift64*: small, deterministic, good enough to shuffle tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
/// Ordinary client addresses: v4, mapped v4, and v6 in three /64s.
const NORMAL: [&str; 12] = [
    "192.0.2.1",
    "192.0.2.2",
    "192.0.2.3",
    "::ffff:192.0.2.3",
    "192.0.2.4",
    "198.51.100.7",
    "2001:db8:1::1",
    "2001:db8:1::2",
    "2001:db8:1:0:ffff::9",
    "2001:db8:2::1",
    "2001:db8:2::abcd",
    "2001:db8:3::5",
];
/// Addresses that must never count: loopback, unspecified, allowlisted
/// (directly, mapped, inside an allowed /48, beside an allowed /128).
const SPECIAL: [&str; 10] = [
    "127.0.0.1",
    "::1",
    "::ffff:127.0.0.2",
    "0.0.0.0",
    "::",
    "::ffff:0.0.0.0",
    "203.0.113.5",
    "::ffff:203.0.113.6",
    "2001:db8:aa::7",
    "2001:db8:bb::2",
];

/// One random run; checks the invariants after every step. `twin` is
/// fed the same lines but never `expire`d: its verdicts must be equal
/// (only asked when bans outlast the window, see `end_of`).
fn run(seed: u64, steps: usize, seen: &mut [u64; 7]) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let window = [S, 5 * S][rng.below(2) as usize];
    let ban = [S / 2, 2 * S, 60 * S][rng.below(3) as usize];
    let mut cfg = PolicyConfig {
        window,
        ban,
        limit: 1 + rng.below(3) as u32,
        confirm: rng.below(2) == 0,
        allow: vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8:aa::/48".parse().unwrap(),
            "2001:db8:bb::1/128".parse().unwrap(),
        ],
        ..PolicyConfig::default()
    };
    for u in USERS {
        if rng.below(3) == 0 {
            cfg.limits
                .insert(u.as_bytes().into(), 1 + rng.below(3) as u32);
        }
    }
    let limit_of = |u: &str| *cfg.limits.get(u.as_bytes()).unwrap_or(&cfg.limit) as usize;
    let special: Vec<Key> = SPECIAL.iter().map(|a| key(a)).collect();
    let mut p = Policy::new(cfg.clone());
    let mut twin = (ban > window).then(|| Policy::new(cfg.clone()));
    let mut now = T0 + rng.below(1000 * S);
    // To debug a failing seed: every step on stderr.
    let trace = std::env::var_os("REFRACT_POLICY_TRACE").is_some();
    // (user, key) → step at which it first became a candidate.
    let mut candidate_since: std::collections::HashMap<(&str, Key), usize> = Default::default();

    for step in 0..steps {
        now = match rng.below(100) {
            0..=59 => now + rng.below(5 * S / 2),
            60..=69 => now,
            70..=74 => now + window,
            75..=79 => now + window + 1,
            80..=87 => now.saturating_sub(rng.below(S)),
            88..=91 => now.saturating_sub(3600 * S),
            92..=94 => now + 86_400 * S,
            _ => now + rng.below(10 * S),
        };
        if rng.below(3) == 0 {
            p.expire(now);
        }
        let user = USERS[rng.below(USERS.len() as u64) as usize];
        let special_line = rng.below(5) == 0;
        let addr = if special_line {
            SPECIAL[rng.below(SPECIAL.len() as u64) as usize]
        } else {
            NORMAL[rng.below(NORMAL.len() as u64) as usize]
        };
        let port = if rng.below(15) == 0 { 0 } else { 1024 };
        let a = line(user, addr, port, "in");
        let lkey = key(addr);

        let before = view(&p, user);
        let banned_before: Vec<Key> = p.bans.keys().copied().collect();
        // A quarter of the counted steps are liveness facts instead of
        // lines: the same rules must hold for keys made active by the
        // kernel's word.
        let fact = !special_line && port != 0 && rng.below(4) == 0;
        let refused = p.stats().keys_refused + p.stats().users_refused;
        let v = if fact {
            let at = now.saturating_sub(rng.below(2 * window));
            let got = p.live(now, user.as_bytes(), lkey, at, b"in");
            if let Some(q) = twin.as_mut() {
                let want = q.live(now, user.as_bytes(), lkey, at, b"in");
                assert_eq!(got, want, "seed {seed} step {step}: twin fact");
            }
            got.unwrap_or(Verdict::Skipped(Skip::NotAccess))
        } else {
            let probe = p.probe(now, &a);
            let v = p.observe(now, &a);
            if let Some(q) = twin.as_mut() {
                assert_eq!(v, q.observe(now, &a), "seed {seed} step {step}: twin");
            }
            let ctx = format!("seed {seed} step {step} {user} {addr}:{port}: {probe:?} -> {v:?}");
            match probe {
                None => assert!(matches!(v, Verdict::Skipped(_)), "{ctx}"),
                Some(pr) => {
                    assert_eq!(pr.key, lkey, "{ctx}");
                    if pr.newcomer && !cfg.confirm {
                        assert_eq!(v, Verdict::Admitted(lkey), "{ctx}");
                    }
                    if pr.newcomer {
                        assert!(
                            matches!(v, Verdict::Admitted(_) | Verdict::Candidate(_)),
                            "{ctx}"
                        );
                    }
                    let refused_now = p.stats().keys_refused + p.stats().users_refused;
                    if !pr.newcomer && !cfg.confirm && refused_now == refused {
                        assert!(!matches!(v, Verdict::Admitted(_)), "{ctx}");
                    }
                }
            }
            v
        };
        let t = p.clock;
        let ctx = format!("seed {seed} step {step} {user} {addr}:{port} fact={fact} -> {v:?}");
        if trace {
            eprintln!(
                "{ctx} now={now} t={t} before={before:?} cfg={window} {ban} {} {}",
                cfg.limit, cfg.confirm
            );
        }

        if special_line || port == 0 {
            assert!(matches!(v, Verdict::Skipped(_)), "{ctx}");
        }
        if fact && matches!(v, Verdict::Banned(_)) {
            seen[6] += 1;
        }
        seen[match &v {
            Verdict::Banned(b) if b.key != lkey => 0,
            Verdict::Banned(_) => 1,
            Verdict::Ignored(_) => 2,
            Verdict::Candidate(_) => 3,
            _ => 5,
        }] += 1;
        match &v {
            Verdict::Banned(b) => {
                assert!(!special.contains(&b.key), "{ctx}");
                assert_eq!(&*b.user, user.as_bytes(), "{ctx}");
                assert!(b.origins.len() >= limit_of(user), "{ctx}");
                assert!(!b.origins.contains(&b.key), "{ctx}");
                // Origins: keys of this user active at the ban (admitted
                // then, maybe promoted while settling at this line).
                let after = view(&p, user);
                for o in &b.origins {
                    let was = before.iter().any(|&(k, seen, _)| {
                        k == *o && (k == lkey || seen.saturating_add(window) >= t)
                    });
                    assert!(was, "{ctx}: origin {o} was not an active key");
                    let admitted = after.iter().any(|&(k, _, cand)| k == *o && !cand);
                    assert!(admitted, "{ctx}: origin {o} is not admitted");
                    assert!(!banned_before.contains(o) || !p.banned(*o, t), "{ctx}");
                }
                if b.key == lkey {
                    assert!(!cfg.confirm, "{ctx}: confirm bans only candidates");
                } else {
                    assert!(cfg.confirm, "{ctx}");
                    assert!(b.origins.contains(&lkey), "{ctx}");
                    let since = candidate_since.get(&(user, b.key));
                    assert!(since.is_some_and(|&s| s < step), "{ctx}");
                    assert!(before.iter().any(|&(k, _, c)| k == b.key && c), "{ctx}");
                }
                assert!(p.is_banned(b.key, now), "{ctx}");
            }
            Verdict::Ignored(k) => assert!(banned_before.contains(k), "{ctx}"),
            Verdict::Candidate(k) => {
                assert!(cfg.confirm || !before.is_empty(), "{ctx}");
                candidate_since.entry((user, *k)).or_insert(step);
            }
            _ => {}
        }

        // After every step: limits hold, deadlines are not late, the
        // counts add up.
        let mut entries = 0;
        for u in USERS {
            let vu = view(&p, u);
            entries += vu.len();
            let admitted = vu
                .iter()
                .filter(|&&(k, seen, cand)| {
                    !cand && seen.saturating_add(window) >= t && !p.banned(k, t)
                })
                .count();
            assert!(admitted <= limit_of(u), "{ctx}: {u} has {vu:?}");
        }
        if let Some(e) = earliest_expiry(&p) {
            let d = p.next_deadline().expect("state without a deadline");
            assert!(d <= e, "{ctx}: next_deadline {d} after expiry {e}");
        }
        assert_eq!(
            p.tracked(),
            (p.users.len(), entries + p.bans.len()),
            "{ctx}"
        );
        p.bans.check();
    }
    seen[4] += p.stats().promotions;
    // Everything ends: a day later, after expire, nothing is left.
    let later = now + 86_400 * S;
    p.expire(later);
    assert_eq!(p.tracked(), (0, 0), "seed {seed}");
    if let Some(mut q) = twin {
        q.expire(later);
        assert_eq!(p.stats(), q.stats(), "seed {seed}: twin");
    }
    assert_eq!(p.next_deadline(), None, "seed {seed}");
}

#[test]
fn random_interleavings_keep_the_invariants() {
    // Confirm bans, plain bans, ignored, candidates, promotions, other,
    // bans made by a liveness fact.
    let mut seen = [0; 7];
    for seed in 1..=1000 {
        run(seed, 120, &mut seen);
    }
    assert!(seen.iter().all(|&n| n > 20), "coverage {seen:?}");
}

#[test]
fn a_live_connection_keeps_a_silent_key_online() {
    // Device 1's one line, then 16 s of silence while its download runs;
    // device 2 arrives. The window rule alone admits device 2 ...
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    let t = T0 + 16 * S;
    let a2 = line("alice", "198.51.100.2", 40000, "in");
    let probe = p.probe(t, &a2).unwrap();
    assert!(probe.newcomer);
    assert_eq!(probe.key, key("198.51.100.2"));
    // ... but the kernel says device 1's connection was in use 200 ms ago:
    // device 1 is online, device 2 is the second device.
    let fact = p.live(t, b"alice", key("192.0.2.1"), t - S / 5, b"in");
    assert_eq!(fact, Some(Verdict::Admitted(key("192.0.2.1"))));
    assert!(!p.probe(t, &a2).unwrap().newcomer);
    let ban = ban_of(p.observe(t, &a2));
    assert_eq!(ban.key, key("198.51.100.2"));
    assert_eq!(ban.origins, [key("192.0.2.1")]);
    // The fact counts from its own time: device 1 is active until
    // t - 200 ms + W, not t + W.
    assert_eq!(view(&p, "alice"), [(key("192.0.2.1"), t - S / 5, false)]);
    assert!(p.next_deadline().unwrap() <= t - S / 5 + W + 1);
}

#[test]
fn a_stale_or_allowlisted_fact_changes_nothing() {
    let mut p = policy(|c| c.allow = vec!["203.0.113.0/24".parse().unwrap()]);
    let t = T0;
    assert_eq!(p.live(t, b"alice", key("192.0.2.1"), t - W - 1, b""), None);
    assert_eq!(p.live(t, b"alice", key("203.0.113.9"), t, b""), None);
    assert_eq!(p.tracked(), (0, 0));
}

#[test]
fn an_idle_connection_that_resumes_is_the_newcomer() {
    // Device 1 idle (no fact), device 2 admitted and kept online by its
    // own live connection; then device 1's old connection carries data
    // again: device 1 is banned, device 2 named as the origin.
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    at(&mut p, T0 + 20 * S, "alice", "198.51.100.2");
    let t = T0 + 40 * S;
    let kept = p.live(t, b"alice", key("198.51.100.2"), t - S, b"in");
    assert_eq!(kept, Some(Verdict::Admitted(key("198.51.100.2"))));
    let back = p.live(t, b"alice", key("192.0.2.1"), t - S / 2, b"vless-in");
    let ban = ban_of(back.unwrap());
    assert_eq!(ban.key, key("192.0.2.1"));
    assert_eq!(ban.origins, [key("198.51.100.2")]);
    assert_eq!(&*ban.tag, b"vless-in");
}

#[test]
fn manual_bans_and_unbans_are_judged_like_any_ban() {
    let mut p = policy(|_| {});
    at(&mut p, T0, "alice", "192.0.2.1");
    // A ban by hand: the key counts for nobody, lines from it are ignored.
    let until = p.manual_ban(T0 + S, key("192.0.2.1"), 3600 * S);
    assert_eq!(until, T0 + S + 3600 * S);
    assert_eq!(
        at(&mut p, T0 + 2 * S, "alice", "192.0.2.1"),
        Verdict::Ignored(key("192.0.2.1"))
    );
    // Alice's other device is admitted: the banned key holds no slot.
    assert_eq!(
        at(&mut p, T0 + 3 * S, "alice", "198.51.100.2"),
        Verdict::Admitted(key("198.51.100.2"))
    );
    assert_eq!(p.bans(T0 + 3 * S), [(key("192.0.2.1"), T0 + S, until)]);
    // Lifted: judged afresh. While the other device is online it is a
    // second device again; alone later, it is admitted.
    assert!(p.unban(T0 + 4 * S, key("192.0.2.1")));
    assert!(!p.unban(T0 + 4 * S, key("192.0.2.1")), "unbanned twice");
    assert!(p.bans(T0 + 4 * S).is_empty());
    let again = ban_of(at(&mut p, T0 + 5 * S, "alice", "192.0.2.1"));
    assert_eq!(again.origins, [key("198.51.100.2")]);
    assert!(p.unban(T0 + 6 * S, key("192.0.2.1")));
    assert_eq!(
        at(&mut p, T0 + 60 * S, "alice", "192.0.2.1"),
        Verdict::Admitted(key("192.0.2.1"))
    );
    // What status and user show.
    let now = T0 + 61 * S;
    at(&mut p, now, "bob", "203.0.113.5");
    let mut online = p.online(now);
    online.sort();
    assert_eq!(online.len(), 2);
    assert_eq!(&*online[0].0, b"alice");
    assert_eq!(online[0].1, [key("192.0.2.1")]);
    assert_eq!(
        p.user(now, b"bob"),
        Some(vec![(key("203.0.113.5"), false, now)])
    );
    assert_eq!(p.user(now, b"carol"), None);
    // The stale timers of the lifted bans end nothing.
    assert!(p.expire(T0 + 7200 * S).is_empty());
}
