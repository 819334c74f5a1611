//! The nftables enforcer against the real kernel, driven directly inside
//! throwaway network namespaces, with `nft` only as the witness. Skips
//! when not root or without `nft`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use refract::config::Protos;
use refract::enforce::nftables::cleanup_report;
use refract::enforce::{Enforcer, NftConfig, NftEnforcer};
use refract::key::Key;
use refract::policy::Ban;

use crate::support::netns::Netns;
use crate::support::PROMPT;

fn ns(tag: &str) -> Option<Netns> {
    Netns::with_tools(tag, &["nft"])
}

fn cfg() -> NftConfig {
    NftConfig {
        protos: Protos {
            tcp: true,
            udp: true,
        },
        ports: vec![443, 8443],
        v6_prefix: 64,
        set_size: 65536,
    }
}

fn ban(key: Key) -> Ban {
    Ban {
        key,
        user: b"alice@example.com".to_vec().into(),
        origins: vec![],
        tag: b"vless-in".to_vec().into(),
        until: 0,
    }
}

fn v4(s: &str) -> Key {
    Key::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn set_json(n: &Netns, set: &str) -> String {
    n.ok(&["nft", "-j", "list", "set", "inet", "refract", set])
}

#[test]
fn bans_land_with_timeouts_and_a_restart_reads_them_back() {
    let Some(n) = ns("nfb") else { return };
    let k6 = Key::new("2001:db8:5:6::77".parse().unwrap(), 64);
    let stats = n.in_netns(|| {
        let mut e = NftEnforcer::new(cfg()).unwrap();
        assert!(e.existing_bans().unwrap().is_empty());
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(300), 1);
        e.ban(&ban(k6), Duration::from_secs(200), 1);
        e.ban(&ban(v4("198.51.100.9")), Duration::from_secs(100), 1);
        e.tick(2);
        e.unban(v4("198.51.100.9"), 3);
        // Unbanning something not there is not an error.
        e.unban(v4("203.0.113.1"), 3);
        e.flush(PROMPT);
        e.stats()
    });
    assert_eq!(
        (stats.bans, stats.unbans, stats.errors),
        (3, 2, 0),
        "{stats:?}"
    );
    let j4 = set_json(&n, "banned4");
    assert!(
        j4.contains("\"192.0.2.7\"") && j4.contains("\"timeout\": 300"),
        "{j4}"
    );
    assert!(!j4.contains("198.51.100.9"), "{j4}");
    let j6 = set_json(&n, "banned6");
    assert!(
        j6.contains("\"2001:db8:5:6::\"") && j6.contains("\"timeout\": 200"),
        "{j6}"
    );
    let chain = n.ok(&["nft", "list", "chain", "inet", "refract", "input"]);
    for want in [
        "hook input priority filter - 10",
        // nft prints `meta l4proto tcp th dport` as `tcp dport`, and the
        // masked lookup with an explicit `==`.
        "tcp dport @ports ip saddr @banned4 drop",
        "udp dport @ports ip6 saddr & ffff:ffff:ffff:ffff:: == @banned6 drop",
    ] {
        assert!(chain.contains(want), "{want}\n{chain}");
    }
    // Restart: the table is kept with its elements, read back with their
    // time left.
    let mut back = n.in_netns(|| {
        let mut e = NftEnforcer::new(cfg()).unwrap();
        e.existing_bans().unwrap()
    });
    back.sort();
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!(back[0].0, v4("192.0.2.7"));
    assert!(back[0].1 > Duration::from_secs(290), "{back:?}");
    assert_eq!(back[1].0, k6);
    assert!(back[1].1 > Duration::from_secs(190), "{back:?}");
    let chain2 = n.ok(&["nft", "list", "chain", "inet", "refract", "input"]);
    assert_eq!(
        chain2.matches(" drop").count(),
        4,
        "no duplicate rules\n{chain2}"
    );
}

#[test]
fn flush_ruleset_is_repaired_with_the_bans_within_a_second() {
    let Some(n) = ns("nfr") else { return };
    let mut e = n.in_netns(|| {
        let mut e = NftEnforcer::new(cfg()).unwrap();
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(300), 1);
        e.tick(1);
        e.flush(PROMPT);
        e
    });
    n.ok(&["nft", "flush", "ruleset"]);
    let t0 = Instant::now();
    let (stats, e) = n.in_netns(move || {
        // The loop would call ready() on the watch token; an unknown
        // token drains every socket.
        for _ in 0..100 {
            e.ready(usize::MAX, 2);
            e.tick(2);
            if e.stats().repairs > 0 && !e.busy() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        e.flush(PROMPT);
        (e.stats(), e)
    });
    let took = t0.elapsed();
    println!("repair after nft flush ruleset: {took:?}");
    assert!(stats.repairs >= 1, "{stats:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let j4 = set_json(&n, "banned4");
    assert!(j4.contains("\"192.0.2.7\""), "{j4}");
    drop(e);
}

#[test]
fn a_flood_of_bans_is_a_few_datagrams_and_all_land() {
    let Some(n) = ns("nff") else { return };
    let _heavy = crate::support::heavy();
    const N: u32 = 20_000;
    let (stats, rate) = n.in_netns(|| {
        let mut e = NftEnforcer::new(NftConfig {
            protos: Protos {
                tcp: false,
                udp: false,
            },
            ..cfg()
        })
        .unwrap();
        let t0 = Instant::now();
        for i in 0..N {
            let k = Key::V4(Ipv4Addr::from(0x0a00_0000 + i));
            e.ban(&ban(k), Duration::from_secs(600), 1);
        }
        e.tick(2);
        e.flush(Duration::from_secs(10));
        let dt = t0.elapsed();
        (e.stats(), f64::from(N) / dt.as_secs_f64())
    });
    println!("nftables flood: {N} bans at {rate:.0} bans/s");
    assert_eq!(stats.errors, 0, "{stats:?}");
    let j4 = set_json(&n, "banned4");
    assert_eq!(j4.matches("\"timeout\": 600").count(), N as usize);
}

#[test]
fn cleanup_deletes_the_table_and_leaves_nothing() {
    let Some(n) = ns("nfc") else { return };
    n.in_netns(|| {
        let mut e = NftEnforcer::new(cfg()).unwrap();
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(300), 1);
        e.tick(1);
        e.flush(PROMPT);
    });
    let out = n.in_netns(|| cleanup_report(false).unwrap());
    assert!(out.contains("deleted: table inet refract"), "{out}");
    assert_eq!(n.ok(&["nft", "list", "ruleset"]).trim(), "");
    let again = n.in_netns(|| cleanup_report(false).unwrap());
    assert!(again.contains("nothing to clean up"), "{again}");
}
