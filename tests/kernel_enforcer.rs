//! The kernel enforcer against the real kernel, driven directly (no
//! daemon) inside throwaway network namespaces, with `ipset` and
//! `iptables` as independent witnesses. Skips when not root or when a tool
//! is missing.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::netns::{have_tool, Netns};
use refract::config::Protos;
use refract::enforce::kernel::{KernelConfig, KernelEnforcer, StartError};
use refract::enforce::Enforcer;
use refract::firewall::FirewallMode;
use refract::key::Key;
use refract::policy::Ban;

const S4: &str = "refract_banned_users";
const S6: &str = "refract_banned_users6";

fn ns(tag: &str) -> Option<Netns> {
    for tool in ["ipset", "iptables", "ip6tables"] {
        if !have_tool(tool, &["--version"]) {
            eprintln!("skip: `{tool}` not installed");
            return None;
        }
    }
    Netns::new(tag)
}

fn cfg(timeout_secs: u64, firewall: FirewallMode) -> KernelConfig {
    KernelConfig {
        set_v4: S4.into(),
        set_v6: S6.into(),
        maxelem: 1000,
        default_timeout: Duration::from_secs(timeout_secs),
        firewall,
        protos: Protos {
            tcp: true,
            udp: false,
        },
        ports: vec![443],
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

/// The timeout `ipset list` shows for `member` in `set`.
fn member_timeout(n: &Netns, set: &str, member: &str) -> Option<u32> {
    let out = n.ok(&["ipset", "list", set]);
    out.lines().find_map(|l| {
        let rest = l.strip_prefix(member)?.strip_prefix(" timeout ")?;
        rest.trim().parse().ok()
    })
}

fn drop_rules(n: &Netns) -> usize {
    n.ok(&["iptables", "-S", "INPUT"])
        .lines()
        .filter(|l| l.contains("--match-set refract_banned_users src -j DROP"))
        .count()
}

#[test]
fn bans_v4_and_v6_then_restart_reads_them_back() {
    let Some(n) = ns("enf") else { return };
    let k6 = Key::new("2001:db8:5:6::77".parse().unwrap(), 64);
    let stats = n.in_netns(|| {
        let mut e = KernelEnforcer::new(cfg(60, FirewallMode::Iptables)).unwrap();
        assert!(e.existing_bans().unwrap().is_empty());
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(300), 1);
        e.ban(&ban(k6), Duration::from_secs(200), 1);
        e.ban(&ban(v4("198.51.100.9")), Duration::from_secs(100), 1);
        e.unban(v4("198.51.100.9"), 2);
        // Unbanning something not there is not an error.
        e.unban(v4("203.0.113.1"), 2);
        e.flush(Duration::from_secs(2));
        assert_eq!(e.pending(), 0);
        e.stats()
    });
    assert_eq!((stats.bans, stats.unbans, stats.errors), (3, 2, 0));
    let t = member_timeout(&n, S4, "192.0.2.7").expect("v4 ban in the set");
    assert!((295..=300).contains(&t), "{t}");
    assert_eq!(member_timeout(&n, S4, "198.51.100.9"), None);
    let t = member_timeout(&n, S6, "2001:db8:5:6::/64").expect("v6 /64 in the set");
    assert!((195..=200).contains(&t), "{t}");
    assert_eq!(drop_rules(&n), 1);
    let v6rules = n.ok(&["ip6tables", "-S", "INPUT"]);
    assert!(
        v6rules.contains("--match-set refract_banned_users6 src -j DROP"),
        "{v6rules}"
    );

    // Restart: bans come back with their remaining time; no second rule;
    // the set was verified, not recreated.
    let mut back = n.in_netns(|| {
        let mut e = KernelEnforcer::new(cfg(60, FirewallMode::Iptables)).unwrap();
        e.existing_bans().unwrap()
    });
    back.sort();
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!(back[0].0, v4("192.0.2.7"));
    assert!(back[0].1 > Duration::from_secs(290), "{back:?}");
    assert_eq!(back[1].0, k6);
    assert!(back[1].1 > Duration::from_secs(190), "{back:?}");
    assert_eq!(drop_rules(&n), 1);
}

#[test]
fn changed_timeout_applies_to_the_next_ban_without_recreating_the_set() {
    let Some(n) = ns("enft") else { return };
    n.in_netns(|| {
        let mut e = KernelEnforcer::new(cfg(60, FirewallMode::None)).unwrap();
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(60), 1);
        e.flush(Duration::from_secs(2));
    });
    // Restart with --timeout 1h: the set (default 60) is kept as it is, and
    // a re-ban of the same address gets the new timeout.
    n.in_netns(|| {
        let mut e = KernelEnforcer::new(cfg(3600, FirewallMode::None)).unwrap();
        assert_eq!(e.existing_bans().unwrap().len(), 1);
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(3600), 1);
        e.ban(&ban(v4("192.0.2.8")), Duration::from_secs(3600), 1);
        e.flush(Duration::from_secs(2));
        assert_eq!(e.stats().errors, 0);
    });
    let out = n.ok(&["ipset", "list", S4]);
    assert!(out.contains("timeout 60 "), "set default kept: {out}");
    for m in ["192.0.2.7", "192.0.2.8"] {
        let t = member_timeout(&n, S4, m).unwrap();
        assert!(t > 3500, "{m}: {t}\n{out}");
    }
    // --firewall none: no rule was installed.
    assert_eq!(drop_rules(&n), 0);
}

#[test]
fn set_destroyed_behind_its_back_is_recreated_with_its_rule() {
    let Some(n) = ns("enfr") else { return };
    // Set up in one thread, act from another: the enforcer is Send.
    let mut e = n.in_netns(|| KernelEnforcer::new(cfg(60, FirewallMode::Iptables)).unwrap());
    assert_eq!(drop_rules(&n), 1);
    // An operator removes the rule (the set is busy while it exists) and
    // the set.
    n.ok(&[
        "iptables",
        "-D",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-m",
        "set",
        "--match-set",
        S4,
        "src",
        "-j",
        "DROP",
    ]);
    n.ok(&["ipset", "destroy", S4]);
    let stats = n.in_netns(move || {
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(120), 1);
        e.ban(&ban(v4("192.0.2.9")), Duration::from_secs(120), 1);
        // The replies (ENOENT ×2) are already queued: one ready() call
        // recreates the set and retries both adds; flush waits for those.
        e.ready(0, 2);
        e.flush(Duration::from_secs(3));
        e.stats()
    });
    assert_eq!((stats.repairs, stats.errors), (1, 0), "{stats:?}");
    let out = n.ok(&["ipset", "list", S4]);
    assert!(
        out.contains("Type: hash:ip") && out.contains("timeout 60 "),
        "{out}"
    );
    assert!(member_timeout(&n, S4, "192.0.2.7").unwrap() > 100, "{out}");
    assert!(member_timeout(&n, S4, "192.0.2.9").unwrap() > 100, "{out}");
    assert_eq!(drop_rules(&n), 1);
}

#[test]
fn wrong_type_set_fails_with_the_fix_command() {
    let Some(n) = ns("enfw") else { return };
    n.ok(&["ipset", "create", S4, "hash:net", "timeout", "60"]);
    let err = n.in_netns(|| KernelEnforcer::new(cfg(60, FirewallMode::Iptables)).unwrap_err());
    assert!(matches!(err, StartError::WrongSet(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("ipset: set refract_banned_users is hash:net"),
        "{msg}"
    );
    assert!(
        msg.contains("`ipset destroy refract_banned_users`"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    // Nothing was installed on a failed start.
    assert_eq!(drop_rules(&n), 0);

    // Right type without timeout support is refused the same way.
    n.ok(&["ipset", "destroy", S4]);
    n.ok(&["ipset", "create", S4, "hash:ip"]);
    let msg = n
        .in_netns(|| KernelEnforcer::new(cfg(60, FirewallMode::None)).unwrap_err())
        .to_string();
    assert!(
        msg.contains("no timeout support") && msg.contains("ipset destroy"),
        "{msg}"
    );
}
