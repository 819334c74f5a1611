//! The nf_tables half of bandwidth caps (`refract::shape::nft`) against
//! the real kernel, in namespaces the tests create: a server namespace
//! holding table `inet refract_shape` and a client namespace across a
//! veth pair, real TCP connections between them. `nft` and `conntrack`
//! witness what the kernel holds; the rates are the kernel's policer's,
//! far below what a veth carries, so a busy machine changes nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use refract::nl::socket::NlSocket;
use refract::shape::nft::{self as shape, User, UserChange};

use crate::support::netns::{wired, Netns};
use crate::support::transfer::{self, Dir, Flow};
use crate::support::{wait_until, PROMPT};

const ALICE: u32 = shape::user_mark(5);
const BOB: u32 = shape::user_mark(6);

/// 5 Mbit/s and 10 Mbit/s in bytes per second.
const MBIT5: u64 = 625_000;
const MBIT10: u64 = 1_250_000;

fn pair(tag: &str) -> Option<(Netns, Netns)> {
    wired(
        (&format!("{tag}s"), "sv0", &["10.88.0.1/24", "fd88::1/64"]),
        &["nft", "conntrack"],
        (&format!("{tag}c"), "cl0", &["10.88.0.2/24", "fd88::2/64"]),
    )
}

fn sock() -> NlSocket {
    shape::open().unwrap()
}

fn ensure(n: &Netns, ports: &[u16], users: &[User<'_>]) {
    n.in_netns(|| shape::ensure(&mut sock(), ports, users).unwrap());
}

/// Sends the batch `f` writes from inside `n`; the kernel's answer.
fn send(
    n: &Netns,
    f: impl FnOnce(&mut refract::nl::buf::NlBuf, u32) + Send,
) -> std::io::Result<()> {
    n.in_netns(|| {
        let mut s = sock();
        let mut buf = refract::nl::buf::NlBuf::new();
        let seq = s.next_seq();
        f(&mut buf, seq);
        s.request(&buf, PROMPT).map(drop)
    })
}

fn add_peers(n: &Netns, peers: &[(SocketAddr, u32)]) {
    let mut left = peers;
    while !left.is_empty() {
        let mut took = 0;
        send(n, |b, s| took = shape::peers_batch(b, s, left)).unwrap();
        left = &left[took..];
    }
}

fn change_users(n: &Netns, changes: &[UserChange<'_>]) {
    send(n, |b, s| shape::users_batch(b, s, changes)).unwrap();
}

fn alice(up: Option<u64>) -> User<'static> {
    User {
        mark: ALICE,
        email: "alice@example.com",
        up_bytes_per_s: up,
    }
}

/// The conntrack mark of the TCP connection from `client`, as
/// `conntrack -L` shows it (decimal).
fn ct_mark(n: &Netns, client: SocketAddr) -> Option<u32> {
    ct_mark_of(n, "tcp", client)
}

fn ct_mark_of(n: &Netns, proto: &str, client: SocketAddr) -> Option<u32> {
    let fam = if client.is_ipv4() { "ipv4" } else { "ipv6" };
    let port = client.port().to_string();
    let out = n.exec(&[
        "conntrack",
        "-L",
        "-f",
        fam,
        "-p",
        proto,
        "--orig-port-src",
        &port,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| proto != "tcp" || l.contains("ESTABLISHED"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("mark="))
        .and_then(|m| m.parse().ok())
}

#[test]
fn ensure_builds_the_table_idempotently_and_users_read_back() {
    let Some(n) = Netns::with_tools("shn", &["nft"]) else {
        return;
    };
    let before = n.ok(&["nft", "list", "ruleset"]);
    assert!(!n.in_netns(|| shape::exists(&mut sock()).unwrap()));
    let bob = User {
        mark: BOB,
        email: "bob@example.com",
        up_bytes_per_s: None,
    };
    ensure(&n, &[443, 8443], &[alice(Some(MBIT5)), bob]);
    let first = n.ok(&["nft", "list", "table", "inet", "refract_shape"]);
    assert!(n.in_netns(|| shape::exists(&mut sock()).unwrap()));
    for want in [
        "set ports {",
        "elements = { 443, 8443 }",
        "map peers4 {\n\t\ttype ipv4_addr . inet_service : mark\n\t\tsize 65536\n\t\tflags timeout",
        "map peers6 {\n\t\ttype ipv6_addr . inet_service : mark\n\t\tsize 65536\n\t\tflags timeout",
        "set users {\n\t\ttype mark",
        "0x52460005 comment \"alice@example.com\"",
        "0x52460006 comment \"bob@example.com\"",
        "limit up_0005 {\n\t\trate over 625000 bytes/second burst",
        "map up {\n\t\ttype mark : limit",
        "0x52460005 : \"up_0005\"",
        "type filter hook prerouting priority mangle; policy accept;",
        "tcp dport @ports ct direction original ct mark 0x00000000 ct mark set ip saddr . tcp sport map @peers4",
        "udp dport @ports ct direction original ct mark 0x00000000 ct mark set ip saddr . udp sport map @peers4",
        "tcp dport @ports ct direction original ct mark 0x00000000 ct mark set ip6 saddr . tcp sport map @peers6",
        "udp dport @ports ct direction original ct mark 0x00000000 ct mark set ip6 saddr . udp sport map @peers6",
        "ct direction original limit name ct mark map @up drop",
        "type filter hook postrouting priority mangle; policy accept;",
        "tcp sport @ports ct direction reply ct mark 0x52460000/16 meta mark set ct mark",
        "udp sport @ports ct direction reply ct mark 0x52460000/16 meta mark set ct mark",
    ] {
        assert!(first.contains(want), "missing {want:?} in:\n{first}");
    }
    // The listing loads back into nft (the chains' names are no keywords).
    let dump = n.ok(&["nft", "list", "ruleset"]);
    let path = std::env::temp_dir().join(format!("{}.nft", n.name()));
    std::fs::write(&path, format!("flush ruleset\n{dump}")).unwrap();
    n.ok(&["nft", "-c", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);

    // Again: the same table.
    ensure(&n, &[443, 8443], &[alice(Some(MBIT5)), bob]);
    let again = n.ok(&["nft", "list", "table", "inet", "refract_shape"]);
    assert_eq!(first, again);

    // A restart: a new socket reads the users back.
    let mut users = n.in_netns(|| shape::read_users(&mut sock()).unwrap());
    users.sort();
    assert_eq!(
        users,
        vec![
            (ALICE, "alice@example.com".to_owned()),
            (BOB, "bob@example.com".to_owned())
        ]
    );

    // Remove leaves the ruleset as it was; twice is no error; no table
    // reads as no users.
    n.in_netns(|| shape::remove(&mut sock()).unwrap());
    assert_eq!(n.ok(&["nft", "list", "ruleset"]), before);
    n.in_netns(|| shape::remove(&mut sock()).unwrap());
    assert!(n
        .in_netns(|| shape::read_users(&mut sock()).unwrap())
        .is_empty());
}

/// More users than one batch takes, and thousands of peers: every one
/// lands (each batch within the kernel's datagram bound).
#[test]
fn many_users_and_peers_land() {
    let Some(n) = Netns::with_tools("shy", &["nft"]) else {
        return;
    };
    let emails: Vec<String> = (1..=600).map(|i| format!("user{i}@example.com")).collect();
    let users: Vec<User<'_>> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| User {
            mark: shape::user_mark(i as u16 + 1),
            email: e,
            up_bytes_per_s: (i % 2 == 0).then_some(MBIT5),
        })
        .collect();
    ensure(&n, &[443], &users);
    let back = n.in_netns(|| shape::read_users(&mut sock()).unwrap());
    assert_eq!(back.len(), 600);
    assert!(back.contains(&(shape::user_mark(600), "user600@example.com".to_owned())));
    let peers: Vec<(SocketAddr, u32)> = (0..3000u16)
        .map(|i| {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, i, 1);
            (SocketAddr::new(ip.into(), 1024 + i), ALICE)
        })
        .chain((0..3000u16).map(|i| (SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 9)), BOB)))
        .collect();
    add_peers(&n, &peers);
    for (map, want) in [("peers4", 3000), ("peers6", 3000)] {
        let t = n.ok(&["nft", "-j", "list", "map", "inet", "refract_shape", map]);
        assert_eq!(t.matches("\"concat\"").count(), want, "{map}");
    }
}

#[test]
fn users_are_added_changed_and_removed_in_place() {
    let Some(n) = Netns::with_tools("shu", &["nft"]) else {
        return;
    };
    ensure(&n, &[443], &[alice(Some(MBIT5))]);
    let bob = User {
        mark: BOB,
        email: "bob@example.com",
        up_bytes_per_s: Some(MBIT10),
    };
    change_users(
        &n,
        &[
            UserChange::Add(bob),
            UserChange::Rate {
                mark: ALICE,
                from: Some(MBIT5),
                to: Some(MBIT10),
            },
        ],
    );
    let t = n.ok(&["nft", "list", "table", "inet", "refract_shape"]);
    assert!(t.contains("0x52460006 comment \"bob@example.com\""), "{t}");
    assert!(t.contains("0x52460006 : \"up_0006\""), "{t}");
    assert!(
        t.contains("limit up_0005 {\n\t\trate over 1250000 bytes/second"),
        "{t}"
    );
    change_users(
        &n,
        &[
            UserChange::Rate {
                mark: ALICE,
                from: Some(MBIT10),
                to: None,
            },
            UserChange::Remove {
                mark: BOB,
                up: Some(MBIT10),
            },
        ],
    );
    let t = n.ok(&["nft", "list", "table", "inet", "refract_shape"]);
    assert!(!t.contains("limit up_"), "{t}");
    assert!(!t.contains("bob@"), "{t}");
    assert!(
        t.contains("0x52460005 comment \"alice@example.com\""),
        "{t}"
    );
    // A cap again, after none.
    change_users(
        &n,
        &[UserChange::Rate {
            mark: ALICE,
            from: None,
            to: Some(MBIT5),
        }],
    );
    let t = n.ok(&["nft", "list", "table", "inet", "refract_shape"]);
    assert!(t.contains("0x52460005 : \"up_0005\""), "{t}");
}

/// Counts packets leaving with the packet mark `mark`, IPv4 and IPv6
/// apart: a test-only table whose postrouting chain runs after refract's
/// (priority 100 > -150).
fn witness(n: &Netns, mark: u32) {
    let rules = format!(
        "table inet witness {{\n chain post {{\n type filter hook postrouting priority 100;\n \
         meta nfproto ipv4 meta mark {mark:#x} counter\n \
         meta nfproto ipv6 meta mark {mark:#x} counter\n }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("{}-w.nft", n.name()));
    std::fs::write(&path, rules).unwrap();
    n.ok(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
}

/// The witness's packet counts: (IPv4, IPv6).
fn witnessed(n: &Netns) -> (u64, u64) {
    let t = n.ok(&["nft", "list", "chain", "inet", "witness", "post"]);
    let words: Vec<&str> = t.split_whitespace().collect();
    let counts: Vec<u64> = words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .map(|w| w[1].parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{t}");
    (counts[0], counts[1])
}

#[test]
fn listed_connections_get_the_mark_and_their_replies_carry_it() {
    let Some((srv, cli)) = pair("shm") else {
        return;
    };
    ensure(&srv, &[5301, 5302, 5303], &[alice(None)]);
    witness(&srv, ALICE);
    let marked = transfer::start(&srv, "10.88.0.1:5301".parse().unwrap(), &cli, Dir::Down);
    let other = transfer::start(&srv, "10.88.0.1:5302".parse().unwrap(), &cli, Dir::Down);
    let six = transfer::start(&srv, "[fd88::1]:5303".parse().unwrap(), &cli, Dir::Down);
    // Nothing is marked before the peers are known.
    assert_eq!(ct_mark(&srv, marked.client), Some(0));
    assert_eq!(witnessed(&srv), (0, 0));
    add_peers(&srv, &[(marked.client, ALICE), (six.client, ALICE)]);
    for f in [&marked, &six] {
        wait_until(PROMPT, &format!("the mark on {}", f.client), || {
            (ct_mark(&srv, f.client) == Some(ALICE)).then_some(())
        });
    }
    // The replies (the download) leave with the packet mark, both families.
    let (v4, v6) = witnessed(&srv);
    wait_until(PROMPT, "marked replies", || {
        let (a, b) = witnessed(&srv);
        (a > v4 + 100 && b > v6 + 100).then_some(())
    });
    assert_eq!(ct_mark(&srv, other.client), Some(0), "unlisted: unmarked");
    // An IPv4 client of a dual-stack listener named as ::ffff:a.b.c.d is
    // the same IPv4 key.
    let late = transfer::start(&srv, "10.88.0.1:5302".parse().unwrap(), &cli, Dir::Down);
    let mapped = SocketAddr::new(
        match late.client.ip() {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().into(),
            a => a,
        },
        late.client.port(),
    );
    add_peers(&srv, &[(mapped, BOB)]);
    wait_until(PROMPT, "the mark on a mapped client", || {
        (ct_mark(&srv, late.client) == Some(BOB)).then_some(())
    });
    assert_eq!(ct_mark(&srv, other.client), Some(0), "unlisted: unmarked");

    // A listed peer with another mark is refused (the whole batch), and
    // taken by the replacing batch.
    let clash = send(&srv, |b, s| {
        shape::peers_batch(b, s, &[(other.client, BOB), (marked.client, BOB)]);
    })
    .expect_err("a clash is refused");
    assert_eq!(clash.raw_os_error(), Some(libc::EEXIST), "{clash}");
    add_peers(&srv, &[(other.client, BOB)]);
    send(&srv, |b, s| {
        shape::replace_peer_batch(b, s, marked.client, BOB)
    })
    .unwrap();
    let t = srv.ok(&["nft", "list", "map", "inet", "refract_shape", "peers4"]);
    let at = format!("10.88.0.2 . {} timeout", marked.client.port());
    let elem = &t[t.find(&at).unwrap_or_else(|| panic!("{at} in {t}"))..];
    let elem = &elem[..elem.find([',', '}']).unwrap()];
    assert!(elem.trim_end().ends_with(": 0x52460006"), "{elem}");
    // The mark already on a connection stays (`ct mark 0` is the rule's
    // condition): a map change is for new connections.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ct_mark(&srv, marked.client), Some(ALICE));
    assert_eq!(ct_mark(&srv, other.client), Some(BOB));

    // A restart makes the table fresh (no peers): the marks stay on the
    // entries and the replies keep carrying them.
    ensure(&srv, &[5301, 5302, 5303], &[alice(None)]);
    let (v4, v6) = witnessed(&srv);
    wait_until(PROMPT, "marked replies after a fresh table", || {
        let (a, b) = witnessed(&srv);
        (a > v4 + 100 && b > v6 + 100).then_some(())
    });
    assert_eq!(ct_mark(&srv, marked.client), Some(ALICE));
    assert_eq!(ct_mark(&srv, six.client), Some(ALICE));
}

/// UDP flows are marked alike (Xray inbounds take UDP too).
#[test]
fn a_listed_udp_flow_gets_the_mark() {
    use std::net::UdpSocket;
    let Some((srv, cli)) = pair("shv") else {
        return;
    };
    ensure(&srv, &[5304], &[alice(None)]);
    let server = srv.in_netns(|| UdpSocket::bind("10.88.0.1:5304").unwrap());
    let client = cli.in_netns(|| UdpSocket::bind("10.88.0.2:0").unwrap());
    client.connect("10.88.0.1:5304").unwrap();
    let from = client.local_addr().unwrap();
    client.send(b"hello").unwrap();
    let mut buf = [0; 16];
    server.recv_from(&mut buf).unwrap();
    assert_eq!(ct_mark_of(&srv, "udp", from), Some(0));
    add_peers(&srv, &[(from, ALICE)]);
    wait_until(PROMPT, "the mark on the UDP flow", || {
        client.send(b"again").unwrap();
        (ct_mark_of(&srv, "udp", from) == Some(ALICE)).then_some(())
    });
}

/// How long a policed rate is measured: the kernel's bucket holds a second
/// of the rate beyond the burst (`nft_limit_init()`), which a flow coming
/// out of a stall spends at once; over 8 s that is at most 12.5% of the
/// figure, inside the ±15% asserted.
const POLICED_WINDOW: Duration = Duration::from_secs(8);

/// Both flows' receiver rates over the same `over`, in bit/s.
fn rates(a: &Flow, b: &Flow, over: Duration) -> (f64, f64) {
    let (a0, b0, t0) = (a.received(), b.received(), Instant::now());
    std::thread::sleep(over);
    let (a1, b1, t1) = (a.received(), b.received(), Instant::now());
    let s = (t1 - t0).as_secs_f64();
    ((a1 - a0) as f64 * 8.0 / s, (b1 - b0) as f64 * 8.0 / s)
}

#[test]
fn a_capped_upload_is_policed_to_its_rate_and_the_rate_changes_in_place() {
    let _heavy = crate::support::heavy();
    let Some((srv, cli)) = pair("shp") else {
        return;
    };
    ensure(&srv, &[5301, 5302], &[alice(Some(MBIT5))]);
    let up = transfer::start(&srv, "10.88.0.1:5301".parse().unwrap(), &cli, Dir::Up);
    let free = transfer::start(&srv, "10.88.0.1:5302".parse().unwrap(), &cli, Dir::Up);
    add_peers(&srv, &[(up.client, ALICE)]);
    wait_until(PROMPT, "the mark on the upload", || {
        (ct_mark(&srv, up.client) == Some(ALICE)).then_some(())
    });
    // Warm-up: the bucket starts full (a second of the rate and the burst).
    // The bucket always holds a second of the rate: a flow that stalled
    // (a retransmission timeout on a busy machine) may spend a full one at
    // once, so the window is 8 s: that second is then at most 1/8 of it.
    std::thread::sleep(Duration::from_secs(1));
    let (capped, unmarked) = rates(&up, &free, POLICED_WINDOW);
    eprintln!(
        "upload capped at 5 Mbit/s: {:.2} Mbit/s; unmarked beside it: {:.0} Mbit/s",
        capped / 1e6,
        unmarked / 1e6
    );
    assert!(
        transfer::within(capped, 5e6, 0.15),
        "capped upload at {:.2} Mbit/s",
        capped / 1e6
    );
    assert!(
        unmarked > 50e6,
        "the unmarked upload was slowed: {unmarked}"
    );

    change_users(
        &srv,
        &[UserChange::Rate {
            mark: ALICE,
            from: Some(MBIT5),
            to: Some(MBIT10),
        }],
    );
    let changed = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let (capped, _) = rates(&up, &free, POLICED_WINDOW);
    eprintln!(
        "after the change to 10 Mbit/s ({:?} later): {:.2} Mbit/s",
        changed.elapsed(),
        capped / 1e6
    );
    assert!(
        transfer::within(capped, 10e6, 0.15),
        "capped upload after the change at {:.2} Mbit/s",
        capped / 1e6
    );
}

/// The upload policer sees a download's ACKs too (they travel in the
/// original direction), but TCP's ACKs are cumulative: losing most of
/// them costs the download little. Segments of one MTU (no TSO on the
/// server's veth), as on a real NIC, so the ACKs are many.
#[test]
fn a_small_upload_cap_leaves_the_download_alone() {
    let _heavy = crate::support::heavy();
    let Some((srv, cli)) = pair("shd") else {
        return;
    };
    srv.ok(&["ip", "link", "set", "dev", "sv0", "gso_max_size", "1500"]);
    ensure(&srv, &[5301], &[alice(Some(MBIT5 / 5))]);
    let down = transfer::start(&srv, "10.88.0.1:5301".parse().unwrap(), &cli, Dir::Down);
    add_peers(&srv, &[(down.client, ALICE)]);
    wait_until(PROMPT, "the mark on the download", || {
        (ct_mark(&srv, down.client) == Some(ALICE)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let rate = down.rate_bps(Duration::from_secs(2));
    eprintln!(
        "download with a 1 Mbit/s upload cap: {:.0} Mbit/s",
        rate / 1e6
    );
    assert!(rate > 50e6, "the download was slowed to {rate} bit/s");
}
