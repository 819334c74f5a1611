//! The kernel enforcer against the real kernel, driven directly (no
//! daemon) inside throwaway network namespaces, with `ipset` and
//! `iptables` as independent witnesses. Skips when not root or when a tool
//! is missing.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use refract::config::FirewallMode;
use refract::config::Protos;
use refract::enforce::Enforcer;
use refract::enforce::{KernelConfig, KernelEnforcer, StartError};
use refract::key::Key;
use refract::policy::Ban;

use crate::support::netns::{Netns, FIREWALL};
use crate::support::rules::{self, rule};
use crate::support::{root_with, PROMPT, STALL};

const S4: &str = "refract_banned_users";
const S6: &str = "refract_banned_users6";

/// What `flush` may take: it returns as soon as the kernel answered
/// everything (milliseconds), and counts what is left as errors.
const FLUSH: Duration = PROMPT;

fn ns(tag: &str) -> Option<Netns> {
    Netns::with_tools(tag, FIREWALL)
}

/// The libtest name of `f`, a test of this module (for `--exact`).
fn test_name(f: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{f}")
}

/// Runs the ignored helper test `helper` of this binary in `n` behind
/// `prefix` (`setpriv …`, `env PATH=…`), checks that it passed, and
/// returns what it printed.
fn run_helper(n: &Netns, prefix: &[&str], helper: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let name = test_name(helper);
    let tail = [
        exe.to_str().unwrap(),
        "--exact",
        &name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let out = n.exec(&[prefix, &tail].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    stdout
}

fn cfg(timeout_secs: u64, firewall: FirewallMode) -> KernelConfig {
    KernelConfig {
        set_v4: S4.into(),
        set_v6: S6.into(),
        maxelem: 4096,
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

/// How many of refract's IPv4 DROP rules for port 443 (tcp and udp) are
/// in `n`.
fn drop_rules(n: &Netns) -> usize {
    ["tcp", "udp"]
        .iter()
        .map(|p| rules::count(n, &rule(false, p, &[443], S4)))
        .sum()
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
        e.flush(FLUSH);
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
    let v6rule = rule(true, "tcp", &[443], S6);
    assert_eq!(rules::count(&n, &v6rule), 1, "{v6rule}");

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
        e.flush(FLUSH);
    });
    // Restart with --timeout 1h: the set (default 60) is kept as it is, and
    // a re-ban of the same address gets the new timeout.
    n.in_netns(|| {
        let mut e = KernelEnforcer::new(cfg(3600, FirewallMode::None)).unwrap();
        assert_eq!(e.existing_bans().unwrap().len(), 1);
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(3600), 1);
        e.ban(&ban(v4("192.0.2.8")), Duration::from_secs(3600), 1);
        e.flush(FLUSH);
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
    rules::delete(&n, &rules::tcp4(443, S4));
    n.ok(&["ipset", "destroy", S4]);
    let stats = n.in_netns(move || {
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(120), 1);
        e.ban(&ban(v4("192.0.2.9")), Duration::from_secs(120), 1);
        // The replies (ENOENT ×2) are already queued: one ready() call
        // recreates the set and retries both adds; flush waits for those.
        e.ready(0, 2);
        e.flush(FLUSH);
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

// ---- Ending open connections ----

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

use crate::support::netns::veth;
use refract::enforce::KillReport;

/// node ⇄ a (the client to ban) and node ⇄ b (a client that must keep
/// working), each over its own veth pair, v4 and v6.
struct Topo {
    node: Netns,
    a: Netns,
    b: Netns,
}

fn topo(tag: &str) -> Option<Topo> {
    let node = ns(&format!("{tag}n"))?;
    let a = ns(&format!("{tag}a"))?;
    let b = ns(&format!("{tag}b"))?;
    veth(
        &node,
        "na",
        &["10.201.1.1/24", "2001:db8:201:1::1/64"],
        &a,
        "a0",
        &["10.201.1.2/24", "2001:db8:201:1::2/64"],
    );
    veth(
        &node,
        "nb",
        &["10.201.2.1/24", "2001:db8:201:2::1/64"],
        &b,
        "b0",
        &["10.201.2.2/24", "2001:db8:201:2::2/64"],
    );
    Some(Topo { node, a, b })
}

/// A connect that must fail (the SYN is dropped): 700 ms without an
/// answer is enough, a handshake on a veth takes microseconds.
const DROPPED: Duration = Duration::from_millis(700);

fn connect(from: &Netns, to: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let to: SocketAddr = to.parse().unwrap();
    from.in_netns(|| TcpStream::connect_timeout(&to, timeout))
}

/// A connected pair: (client end, server end).
fn pair(from: &Netns, l: &TcpListener, to: &str) -> (TcpStream, TcpStream) {
    let c = connect(from, to, PROMPT).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let (s, _) = l.accept().unwrap();
    c.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_read_timeout(Some(PROMPT)).unwrap();
    (c, s)
}

/// The client end was reset by the node (SOCK_DESTROY sends a RST).
fn was_reset(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 8];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The pair still carries data both ways.
fn works(c: &mut TcpStream, s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4];
    c.write_all(b"ping").is_ok()
        && s.read_exact(&mut b).is_ok()
        && s.write_all(b"pong").is_ok()
        && c.read_exact(&mut b).is_ok()
        && &b == b"pong"
}

#[test]
fn ban_resets_tcp_connections_on_dual_stack_and_v4_listeners() {
    let Some(t) = topo("kt") else { return };
    // 443: dual-stack (IPv4 clients appear as ::ffff:a.b.c.d in AF_INET6);
    // 8443: IPv4 only.
    let dual = t.node.in_netns(|| TcpListener::bind("[::]:443").unwrap());
    let v4only = t
        .node
        .in_netns(|| TcpListener::bind("0.0.0.0:8443").unwrap());
    let (mut a443, _s1) = pair(&t.a, &dual, "10.201.1.1:443");
    let (mut a8443, _s2) = pair(&t.a, &v4only, "10.201.1.1:8443");
    let (mut a6, mut s6) = pair(&t.a, &dual, "[2001:db8:201:1::1]:443");
    let (mut b443, mut sb) = pair(&t.b, &dual, "10.201.2.1:443");

    let mut c = cfg(60, FirewallMode::Iptables);
    c.ports = vec![443, 8443];
    let mut e = t.node.in_netns(|| KernelEnforcer::new(c).unwrap());

    let key_a = v4("10.201.1.2");
    e.ban(&ban(key_a), Duration::from_secs(60), 1);
    e.flush(FLUSH);
    assert_eq!(
        e.take_reports(),
        vec![KillReport {
            key: key_a,
            tcp: 2,
            udp: 0
        }]
    );
    assert!(
        was_reset(&mut a443),
        "dual-stack connection of the banned v4 client"
    );
    assert!(
        was_reset(&mut a8443),
        "v4-only connection of the banned client"
    );
    // Other keys are untouched: a's IPv6 connection and b.
    assert!(works(&mut a6, &mut s6));
    assert!(works(&mut b443, &mut sb));
    // New connections from the banned address are dropped; b still connects.
    assert!(connect(&t.a, "10.201.1.1:443", DROPPED).is_err());
    let (mut b2, mut sb2) = pair(&t.b, &dual, "10.201.2.1:443");
    assert!(works(&mut b2, &mut sb2));

    // Now a's /64.
    let key6 = Key::new("2001:db8:201:1::2".parse().unwrap(), 64);
    e.ban(&ban(key6), Duration::from_secs(60), 2);
    e.flush(FLUSH);
    assert_eq!(
        e.take_reports(),
        vec![KillReport {
            key: key6,
            tcp: 1,
            udp: 0
        }]
    );
    assert!(was_reset(&mut a6));
    assert!(works(&mut b443, &mut sb));
    let st = e.stats();
    assert_eq!((st.tcp_killed, st.errors), (3, 0), "{st:?}");
    // A ban with nothing open reports zero kills.
    e.ban(&ban(v4("203.0.113.5")), Duration::from_secs(60), 3);
    e.flush(FLUSH);
    let r = e.take_reports();
    assert_eq!((r.len(), r[0].tcp), (1, 0), "{r:?}");
}

#[test]
fn ban_deletes_udp_conntrack_entries() {
    if root_with(&["conntrack"]).is_none() {
        return;
    }
    let Some(t) = topo("ku") else { return };
    rules::track_connections(&t.node);
    // Dual-stack: IPv4 clients arrive as ::ffff:a.b.c.d, but conntrack
    // tracks their packets as IPv4.
    let server = t.node.in_netns(|| UdpSocket::bind("[::]:443").unwrap());
    server.set_read_timeout(Some(PROMPT)).unwrap();
    let sends = [
        (&t.a, "10.201.1.2", "10.201.1.1:443"),
        (&t.b, "10.201.2.2", "10.201.2.1:443"),
        (&t.a, "2001:db8:201:1::2", "[2001:db8:201:1::1]:443"),
        (&t.b, "2001:db8:201:2::2", "[2001:db8:201:2::1]:443"),
    ];
    for (n, peer, dst) in sends {
        n.in_netns(|| {
            let any = if dst.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(any).unwrap();
            s.send_to(b"hello", dst).unwrap();
        });
        let mut b = [0u8; 16];
        let (_, from) = server.recv_from(&mut b).unwrap();
        let peer: std::net::IpAddr = peer.parse().unwrap();
        assert_eq!(Key::new(from.ip(), 128), Key::new(peer, 128));
    }
    let flows = |src: &str| {
        let fam = if src.contains(':') { "ipv6" } else { "ipv4" };
        let out = t
            .node
            .exec(&["conntrack", "-L", "-f", fam, "-p", "udp", "--orig-src", src]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("dport=443"))
            .count()
    };
    for (_, peer, _) in sends {
        assert_eq!(flows(peer), 1, "{peer}");
    }

    let mut c = cfg(60, FirewallMode::Iptables);
    c.protos = Protos {
        tcp: false,
        udp: true,
    };
    let mut e = t.node.in_netns(|| KernelEnforcer::new(c).unwrap());
    let key = v4("10.201.1.2");
    let key6 = Key::new("2001:db8:201:1::99".parse().unwrap(), 64);
    e.ban(&ban(key), Duration::from_secs(60), 1);
    e.ban(&ban(key6), Duration::from_secs(60), 1);
    e.flush(FLUSH);
    let mut r = e.take_reports();
    r.sort_by_key(|r| r.key);
    assert_eq!(
        r,
        vec![
            KillReport {
                key,
                tcp: 0,
                udp: 1
            },
            KillReport {
                key: key6,
                tcp: 0,
                udp: 1
            }
        ]
    );
    assert_eq!(flows("10.201.1.2"), 0);
    assert_eq!(flows("2001:db8:201:1::2"), 0);
    assert_eq!(flows("10.201.2.2"), 1);
    assert_eq!(flows("2001:db8:201:2::2"), 1);
    assert_eq!((e.stats().udp_killed, e.stats().errors), (2, 0));
    let udp = rule(false, "udp", &[443], S4);
    assert_eq!(rules::count(&t.node, &udp), 1, "{udp}");
}

// ---- Driven like the daemon drives it ----

/// Registers with a mio Poll, bans `keys` all at once, then polls and calls
/// `ready` for every event until nothing is outstanding (for as long as
/// the stats move: at most [`STALL`] without progress).
fn drive(e: &mut KernelEnforcer, keys: &[Key]) -> Vec<KillReport> {
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(16);
    const FIRST: usize = 10;
    e.register(poll.registry(), FIRST).unwrap();
    // Nothing drained in between: the acks pile up in the socket (an
    // overflow is survived by re-sending).
    for (i, &k) in keys.iter().enumerate() {
        e.ban(&ban(k), Duration::from_secs(600), i as u64);
    }
    let start = Instant::now();
    let mut reports = Vec::new();
    let mut last = (format!("{:?}", e.stats()), 0, Instant::now());
    while e.busy() && last.2.elapsed() < STALL {
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .unwrap();
        for ev in events.iter() {
            let t = ev.token().0;
            assert!((FIRST..FIRST + refract::enforce::TOKENS).contains(&t));
            e.ready(t, 10_000);
        }
        reports.extend(e.take_reports());
        let now = (format!("{:?}", e.stats()), reports.len());
        if (&now.0, now.1) != (&last.0, last.1) {
            last = (now.0, now.1, Instant::now());
        }
    }
    assert!(
        !e.busy(),
        "still busy, nothing moved for {STALL:?}: {:?}",
        e.stats()
    );
    eprintln!("{} bans driven in {:?}", keys.len(), start.elapsed());
    reports
}

fn keys(n: u32) -> Vec<Key> {
    (0..n)
        .map(|i| Key::V4(Ipv4Addr::from(0x0a63_0000 + i))) // 10.99.x.y
        .collect()
}

#[test]
fn mio_loop_drives_three_thousand_set_adds() {
    let Some(n) = ns("enfm") else { return };
    let stats = n.in_netns(|| {
        let mut c = cfg(60, FirewallMode::None);
        c.protos = Protos {
            tcp: false,
            udp: false,
        };
        let mut e = KernelEnforcer::new(c).unwrap();
        let reports = drive(&mut e, &keys(3000));
        assert!(reports.is_empty()); // no kill sockets, no reports
        e.stats()
    });
    assert_eq!((stats.bans, stats.errors), (3000, 0), "{stats:?}");
    let out = n.ok(&["ipset", "list", S4, "-terse"]);
    assert!(out.contains("Number of entries: 3000"), "{out}");
}

#[test]
fn mio_loop_drives_bans_with_tcp_and_udp_kills() {
    let Some(n) = ns("enfk") else { return };
    let (stats, reports) = n.in_netns(|| {
        let mut c = cfg(60, FirewallMode::None);
        c.protos = Protos {
            tcp: true,
            udp: true,
        };
        c.ports = vec![443, 8443];
        let mut e = KernelEnforcer::new(c).unwrap();
        let reports = drive(&mut e, &keys(100));
        (e.stats(), reports)
    });
    assert_eq!((stats.bans, stats.errors), (100, 0), "{stats:?}");
    // One report per key once its 2 TCP dumps and 2 UDP dumps are done.
    assert_eq!(reports.len(), 100);
    let out = n.ok(&["ipset", "list", S4, "-terse"]);
    assert!(out.contains("Number of entries: 100"), "{out}");
}

/// Helper for `missing_cap_net_admin_is_one_clear_line`: runs only in the
/// child that test starts without CAP_NET_ADMIN.
#[test]
#[ignore = "helper: run by missing_cap_net_admin_is_one_clear_line"]
fn child_without_cap_net_admin() {
    let err = KernelEnforcer::new(cfg(60, FirewallMode::Iptables)).unwrap_err();
    println!("startup error: {err}");
    assert!(matches!(err, StartError::Permission), "{err:?}");
}

#[test]
fn missing_cap_net_admin_is_one_clear_line() {
    let Some(n) = Netns::with_tools("enfp", &[FIREWALL, &["setpriv"]].concat()) else {
        return;
    };
    // Root without CAP_NET_ADMIN in its bounding set: exec cannot regain it.
    let stdout = run_helper(
        &n,
        &[
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
        ],
        "child_without_cap_net_admin",
    );
    assert!(
        stdout.contains("startup error: ipset: permission denied: refract needs CAP_NET_ADMIN"),
        "{stdout}"
    );
    // Nothing was created.
    assert!(!n.exec(&["ipset", "list", S4]).status.success());
}

#[test]
fn cleanup_removes_rules_and_sets_and_is_idempotent() {
    let Some(n) = ns("enfc") else { return };
    let mut c = cfg(60, FirewallMode::Iptables);
    c.protos = Protos {
        tcp: true,
        udp: true,
    };
    let c2 = c.clone();
    n.in_netns(move || {
        let mut e = KernelEnforcer::new(c2).unwrap();
        e.ban(&ban(v4("192.0.2.7")), Duration::from_secs(60), 1);
        e.flush(FLUSH);
    });
    assert_eq!(drop_rules(&n), 2); // tcp and udp
    let (first, second) = n.in_netns(|| {
        (
            refract::enforce::cleanup(&c).unwrap(),
            refract::enforce::cleanup(&c).unwrap(),
        )
    });
    assert_eq!(first.rules_removed, 4); // tcp+udp × v4+v6
    assert_eq!(first.sets_destroyed, vec![S4.to_string(), S6.to_string()]);
    assert_eq!(second, Default::default());
    assert_eq!(drop_rules(&n), 0);
    assert!(!n.ok(&["ip6tables", "-S", "INPUT"]).contains("--match-set"));
    assert!(!n.exec(&["ipset", "list", S4]).status.success());
    assert!(!n.exec(&["ipset", "list", S6]).status.success());
}

/// A rule on our set on a port this configuration does not name (made
/// by an earlier run, or by hand) is found by the set's name and goes too.
#[test]
fn cleanup_finds_rules_by_set_name_whatever_their_ports() {
    let Some(n) = ns("enfcb") else { return };
    n.ok(&["ipset", "create", S4, "hash:ip", "timeout", "60"]);
    rules::append(&n, &rules::tcp4(22, S4));
    rules::append(&n, &rule(false, "udp", &[8443, 2053], S4));
    let c = cfg(60, FirewallMode::Iptables);
    let plan = n.in_netns(|| refract::enforce::cleanup_plan(&c)).unwrap();
    assert_eq!(plan.rules.len(), 2, "{plan}");
    assert_eq!(plan.sets, vec![(S4.to_string(), Some(0))]);
    assert!(plan.kept.is_empty() && plan.running.is_none());
    assert_eq!(drop_rules(&n), 0);
    assert!(
        rules::present(&n, &rules::tcp4(22, S4)),
        "the plan changed nothing"
    );
    let done = n.in_netns(|| refract::enforce::cleanup(&c)).unwrap();
    assert_eq!(done.rules_removed, 2);
    assert_eq!(done.sets_destroyed, vec![S4.to_string()]);
    assert!(!n.ok(&["iptables", "-S"]).contains("--match-set"));
}

/// With `--firewall none` the rules are the operator's: cleanup keeps them,
/// and then cannot destroy the set they use; the error names them.
#[test]
fn cleanup_with_firewall_none_keeps_your_rules_and_names_them() {
    let Some(n) = ns("enfcn") else { return };
    n.ok(&["ipset", "create", S4, "hash:ip", "timeout", "60"]);
    let yours = rules::tcp4(22, S4);
    rules::append(&n, &yours);
    let c = cfg(60, FirewallMode::None);
    let e = n
        .in_netns(|| refract::enforce::cleanup(&c))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("ipset: destroy refract_banned_users: set is in use"),
        "{e}"
    );
    assert!(
        e.contains("kept because of --firewall none: iptables -t filter -D INPUT -p tcp"),
        "{e}"
    );
    assert!(rules::present(&n, &yours));
}

/// Helper for `missing_iptables_is_one_clear_line`: runs only in the child
/// that test starts with a PATH that has no iptables.
#[test]
#[ignore = "helper: run by missing_iptables_is_one_clear_line"]
fn child_without_iptables() {
    let err = KernelEnforcer::new(cfg(60, FirewallMode::Iptables)).unwrap_err();
    println!("startup error: {err}");
    assert!(matches!(err, StartError::Firewall(_)), "{err:?}");
}

#[test]
fn missing_iptables_is_one_clear_line() {
    let Some(n) = ns("enfi") else { return };
    let stdout = run_helper(&n, &["env", "PATH=/nonexistent"], "child_without_iptables");
    let want = format!(
        "startup error: firewall: iptables not found in PATH: install iptables, or run \
         with --firewall none and add the rule yourself: {}",
        rules::tcp4(443, S4)
    );
    assert!(stdout.contains(&want), "{stdout}");
}

/// With the logged connection's client address and port, the enforcer ends
/// that connection by exact lookup inside `ban_conn` itself (before any
/// reply is read), once it has learned the node's local address from an
/// earlier dump; the key's other connections follow from the dump.
#[test]
fn logged_connection_is_ended_by_exact_lookup_at_once() {
    let Some(t) = topo("kx") else { return };
    let dual = t.node.in_netns(|| TcpListener::bind("[::]:443").unwrap());
    let (mut a1, _s1) = pair(&t.a, &dual, "10.201.1.1:443");
    let mut c = cfg(60, FirewallMode::Iptables);
    c.ports = vec![443];
    let mut e = t.node.in_netns(|| KernelEnforcer::new(c).unwrap());
    let key_a = v4("10.201.1.2");

    // First ban: nothing learned yet, the dump finds a1 (and teaches the
    // enforcer the local address 10.201.1.1).
    let first = a1.local_addr().unwrap();
    e.ban_conn(&ban(key_a), Duration::from_secs(60), 1, Some(first));
    e.flush(FLUSH);
    assert!(was_reset(&mut a1));
    assert_eq!(e.take_reports()[0].tcp, 1);

    // Let a back in; two new connections, one of them in the log line.
    e.unban(key_a, 2);
    e.flush(FLUSH);
    let (mut logged, _s2) = pair(&t.a, &dual, "10.201.1.1:443");
    let (mut other, _s3) = pair(&t.a, &dual, "10.201.1.1:443");
    let conn = logged.local_addr().unwrap();
    e.ban_conn(&ban(key_a), Duration::from_secs(60), 3, Some(conn));
    // No reply has been read yet: only the exact destroy can have run.
    assert!(
        was_reset(&mut logged),
        "the logged connection ends inside ban_conn"
    );
    // The other connection is still open (its packets to the node are
    // dropped by the rule now, but no RST came): the dump's kills wait for
    // the loop to read the dump.
    other
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(!was_reset(&mut other), "the dump's kills wait for the loop");
    other.set_read_timeout(Some(PROMPT)).unwrap();
    e.flush(FLUSH);
    assert!(was_reset(&mut other));
    assert_eq!(
        e.take_reports(),
        vec![KillReport {
            key: key_a,
            tcp: 2,
            udp: 0
        }]
    );
    assert_eq!(e.stats().errors, 0);
}

// ---- Many bans in one loop turn ----

/// Holds TCP connections and sends one UDP datagram from each source
/// address given, then waits to be killed: the clients of the batch test.
const CLIENTS_PY: &str = r#"
import socket, sys, time
node4, node6 = sys.argv[1], sys.argv[2]
held = []
for src in sys.argv[3].split(","):
    v6 = ":" in src
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    node = node6 if v6 else node4
    for port in ([443] if v6 else [443, 8443]):
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.bind((src, 0))
        c.settimeout(3)
        c.connect((node, port))
        held.append(c)
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((src, 0))
    u.sendto(b"x", (node, 443))
    held.append(u)
print("ready", flush=True)
time.sleep(120)
"#;

/// Established TCP peers of the node per peer address (`ss -tn` is the
/// witness; IPv4 peers of the dual-stack listener print as ::ffff:a.b.c.d).
fn tcp_peers(node: &Netns) -> std::collections::HashMap<String, usize> {
    let out = node.ok(&["ss", "-tnH", "state", "established"]);
    let mut per = std::collections::HashMap::new();
    for l in out.lines() {
        // Recv-Q Send-Q Local:Port Peer:Port
        let Some(peer) = l.split_whitespace().nth(3) else {
            continue;
        };
        let addr = peer.rsplit_once(':').map_or(peer, |(a, _)| a);
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr = addr.strip_prefix("::ffff:").unwrap_or(addr);
        *per.entry(addr.to_string()).or_insert(0) += 1;
    }
    per
}

/// UDP conntrack entries to port 443 per original source (`conntrack -L`
/// is the witness).
fn udp_flows(node: &Netns) -> std::collections::HashMap<String, usize> {
    let mut per = std::collections::HashMap::new();
    for fam in ["ipv4", "ipv6"] {
        let out = node.exec(&["conntrack", "-L", "-f", fam, "-p", "udp"]);
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if !l.contains("dport=443") {
                continue;
            }
            if let Some(src) = l.split_whitespace().find_map(|w| w.strip_prefix("src=")) {
                *per.entry(src.to_string()).or_insert(0) += 1;
            }
        }
    }
    per
}

/// Two turns like the daemon's: 40 IPv4 and 10 IPv6 keys banned in one
/// (more than `ADDR_FILTER_MAX`: the dumps filter ports in the kernel and
/// addresses in refract), then 2 + 2 (the OR chain of addresses), each
/// followed by `tick` at the deadline it asked for. Every banned key's TCP
/// connections (dual-stack 443, IPv4-only 8443) and UDP flows end; those
/// of the addresses not banned, on the same client and on another, stay.
#[test]
fn a_turn_of_many_bans_kills_every_banned_key_and_no_other() {
    if root_with(&["conntrack", "ss", "python3"]).is_none() {
        return;
    }
    let Some(t) = topo("kb") else { return };
    rules::track_connections(&t.node);
    let v4s: Vec<String> = (10..70).map(|i| format!("10.201.1.{i}")).collect();
    let v6s: Vec<String> = (0x10..0x24)
        .map(|i| format!("2001:db8:201:1::{i:x}"))
        .collect();
    for a in &v4s {
        t.a.ok(&["ip", "addr", "add", &format!("{a}/32"), "dev", "a0"]);
    }
    for a in &v6s {
        t.a.ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "a0",
            "nodad",
        ]);
    }
    let (dual, v4only, udp) = t.node.in_netns(|| {
        let d = TcpListener::bind("[::]:443").unwrap();
        let v = TcpListener::bind("0.0.0.0:8443").unwrap();
        let u = UdpSocket::bind("[::]:443").unwrap();
        (d, v, u)
    });
    // a: 60 IPv4 sources x (443, 8443) + 20 IPv6 x 443; b: one of each.
    let acceptor = |l: TcpListener, want: usize| {
        std::thread::spawn(move || {
            l.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < end && held.len() < want {
                match l.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            held
        })
    };
    let (h_dual, h_v4) = (acceptor(dual, 60 + 20 + 2), acceptor(v4only, 60 + 1));
    let start_clients = |n: &Netns, node4: &str, node6: &str, srcs: &str| {
        let mut c = n.spawn(&["python3", "-c", CLIENTS_PY, node4, node6, srcs]);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "clients in {} did not start",
            n.name()
        );
        c
    };
    let srcs = [v4s.clone(), v6s.clone()].concat().join(",");
    let mut ca = start_clients(&t.a, "10.201.1.1", "2001:db8:201:1::1", &srcs);
    let mut cb = start_clients(
        &t.b,
        "10.201.2.1",
        "2001:db8:201:2::1",
        "10.201.2.2,2001:db8:201:2::2",
    );
    let held = (h_dual.join().unwrap(), h_v4.join().unwrap());
    assert_eq!((held.0.len(), held.1.len()), (82, 61));
    let others = ["10.201.2.2", "2001:db8:201:2::2"];
    let (tcp0, udp0) = (tcp_peers(&t.node), udp_flows(&t.node));
    for a in v4s.iter().chain(&v6s).map(String::as_str).chain(others) {
        let want = if a.contains(':') { 1 } else { 2 };
        assert_eq!(tcp0.get(a), Some(&want), "tcp from {a}: {tcp0:?}");
        assert_eq!(udp0.get(a), Some(&1), "udp from {a}: {udp0:?}");
    }

    let mut c = cfg(60, FirewallMode::Iptables);
    c.protos = Protos {
        tcp: true,
        udp: true,
    };
    c.ports = vec![443, 8443];
    let mut e = t.node.in_netns(|| KernelEnforcer::new(c).unwrap());
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(16);
    e.register(poll.registry(), 10).unwrap();
    let key = |a: &String| Key::new(a.parse().unwrap(), 128);
    let turns: [Vec<Key>; 2] = [
        v4s[..40].iter().chain(&v6s[..10]).map(key).collect(),
        v4s[40..42].iter().chain(&v6s[10..12]).map(key).collect(),
    ];
    let mut reports = Vec::new();
    for (i, keys) in turns.iter().enumerate() {
        let now = 1_000_000 * (i as u64 + 1);
        for &k in keys {
            e.ban_conn(&ban(k), Duration::from_secs(60), now, None);
        }
        // The turn ends: the enforcer asked for a tick now.
        assert_eq!(e.next_deadline(), Some(now));
        e.tick(now);
        let start = std::time::Instant::now();
        while e.busy() && start.elapsed() < Duration::from_secs(20) {
            poll.poll(&mut events, Some(Duration::from_millis(200)))
                .unwrap();
            for ev in events.iter() {
                e.ready(ev.token().0, now);
            }
            reports.extend(e.take_reports());
        }
        assert!(!e.busy(), "turn {i} still busy after 20 s: {:?}", e.stats());
        reports.extend(e.take_reports());
    }

    // Each banned key: one report with all its connections and its flow.
    let banned: Vec<Key> = turns.concat();
    reports.sort_by_key(|r| r.key);
    let mut want: Vec<KillReport> = banned
        .iter()
        .map(|&k| KillReport {
            key: k,
            tcp: if k.is_v4() { 2 } else { 1 },
            udp: 1,
        })
        .collect();
    want.sort_by_key(|r| r.key);
    assert_eq!(reports, want);
    let s = e.stats();
    assert_eq!(
        (s.tcp_killed, s.udp_killed, s.errors),
        (42 * 2 + 12, 54, 0),
        "{s:?}"
    );

    // The witnesses: nothing of the banned keys left, everything else is.
    let (tcp1, udp1) = (tcp_peers(&t.node), udp_flows(&t.node));
    let is_banned = |a: &str| banned.contains(&Key::new(a.parse().unwrap(), 128));
    for a in v4s.iter().chain(&v6s).map(String::as_str).chain(others) {
        if is_banned(a) {
            assert_eq!(tcp1.get(a), None, "tcp from banned {a} survived");
            assert_eq!(udp1.get(a), None, "udp from banned {a} survived");
        } else {
            assert_eq!(tcp1.get(a), tcp0.get(a), "tcp from {a} was hit");
            assert_eq!(udp1.get(a), Some(&1), "udp from {a} was hit");
        }
    }
    for child in [&mut ca, &mut cb] {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop((udp, held));
}
