//! Per-user bandwidth caps, refract's own parts against the kernel: the
//! conntrack mark dump the shaper asks before it gives a mark back, and
//! (below) the daemon shaping real transfers between namespaces.

use std::time::Duration;

use refract::nl::buf::NlBuf;
use refract::nl::conntrack::{self, MarkDump};
use refract::nl::consts::NETLINK_NETFILTER;
use refract::nl::socket::NlSocket;

use crate::support::netns::{wired, Netns};
use crate::support::transfer::{self, Dir};

const TIMEOUT: Duration = Duration::from_secs(5);

/// How many flows conntrack holds with `mark` (all bits), through the
/// request the shaper sends.
fn flows_with_mark(ns: &Netns, mark: u32) -> usize {
    ns.in_netns(|| {
        let mut sock = NlSocket::open(NETLINK_NETFILTER, 1 << 20).unwrap();
        let mut buf = NlBuf::new();
        MarkDump {
            mark,
            mask: u32::MAX,
        }
        .emit(&mut buf, sock.next_seq());
        sock.request(&buf, TIMEOUT)
            .unwrap()
            .iter()
            .filter(|m| conntrack::parse_flow(&m.as_msg()).is_some())
            .count()
    })
}

#[test]
fn mark_dump_finds_exactly_the_flows_with_the_mark_in_both_families() {
    let Some((server, client)) = wired(
        ("shmd", "md0", &["10.78.0.1/24", "fd78::1/64"]),
        &["conntrack", "nft"],
        ("shmdc", "md1", &["10.78.0.2/24", "fd78::2/64"]),
    ) else {
        return;
    };
    // Conntrack runs in a namespace once a rule needs it.
    server.ok(&["nft", "add table inet t"]);
    server.ok(&[
        "nft",
        "add chain inet t c { type filter hook prerouting priority 0; }",
    ]);
    server.ok(&["nft", "add rule inet t c ct state new counter"]);
    let f4 = transfer::start(&server, "10.78.0.1:0".parse().unwrap(), &client, Dir::Up);
    let f6 = transfer::start(&server, "[fd78::1]:0".parse().unwrap(), &client, Dir::Up);
    assert_eq!(flows_with_mark(&server, 0x5246_0005), 0);
    for (f, fam) in [(&f4, "ipv4"), (&f6, "ipv6")] {
        let port = f.client.port().to_string();
        server.ok(&[
            "conntrack",
            "-U",
            "-f",
            fam,
            "-p",
            "tcp",
            "--sport",
            &port,
            "--mark",
            "0x52460005",
        ]);
    }
    assert_eq!(flows_with_mark(&server, 0x5246_0005), 2);
    assert_eq!(flows_with_mark(&server, 0x5246_0006), 0);
    drop((f4, f6));
}

// ---- The daemon shaping real transfers ----

use std::path::Path;

use crate::support::daemon::{append, Daemon, BIN};
use crate::support::{heavy, wait_until, TempDir, PROMPT};

/// The proxy's inbound port in these tests (`--dport`).
const PORT: u16 = 8443;
/// An upload is policed: the kernel's bucket holds a second of the rate,
/// which a flow out of a stall (a busy machine) spends at once; measured
/// over 8 s that second is at most 12.5% of the figure.
const POLICED_WINDOW: Duration = Duration::from_secs(8);
/// The kernel enforces the caps; ±15% is the bound.
const TOLERANCE: f64 = 0.15;

struct Node {
    node: Netns,
    client: Netns,
}

/// A node (`shn*`: the daemon, the server) and a client namespace on a
/// veth pair; the node's end `sv0` is the shaped device.
fn node(tag: &str) -> Option<Node> {
    let (node, client) = wired(
        (&format!("shn{tag}"), "sv0", &["10.79.0.1/24", "fd79::1/64"]),
        &["tc", "nft", "conntrack", "ipset"],
        (&format!("shc{tag}"), "sv1", &["10.79.0.2/24", "fd79::2/64"]),
    )?;
    Some(Node { node, client })
}

fn limits(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn start(n: &Node, dir: &TempDir, extra: &[&str]) -> Daemon {
    let args = [
        &[
            "--firewall=none",
            "--dport=8443",
            "--shape-dev=sv0",
            "--window=1h",
        ][..],
        extra,
    ]
    .concat();
    let d = Daemon::start_in(&n.node, dir, &args);
    d.wait_log(" on sv0 (root qdisc 5246:)");
    d
}

/// The access line of a connection from `client` (`[v6]:port` or
/// `v4:port`), `mux`: as a mux sub-stream (`tcp:` source).
fn line(user: &str, client: std::net::SocketAddr, mux: bool) -> String {
    let from = if mux {
        format!("tcp:{client}")
    } else {
        client.to_string()
    };
    format!(
        "2026/01/30 17:03:38.067799 from {from} accepted tcp:www.example.com:443 \
         [vless-in >> direct] email: {user}\n"
    )
}

/// The rate of `f` once it has settled: a second to settle, four to
/// measure.
fn settled_rate(f: &transfer::Flow) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    f.rate_bps(Duration::from_secs(4))
}

fn listen(v6: bool) -> std::net::SocketAddr {
    if v6 {
        format!("[fd79::1]:{PORT}").parse().unwrap()
    } else {
        format!("10.79.0.1:{PORT}").parse().unwrap()
    }
}

fn assert_capped(what: &str, rate: f64, cap: f64) {
    eprintln!("{what}: {:.3} Mbit/s (cap {:.1})", rate / 1e6, cap / 1e6);
    assert!(
        transfer::within(rate, cap, TOLERANCE),
        "{what}: {:.3} Mbit/s is not within ±15% of {:.1} Mbit/s",
        rate / 1e6,
        cap / 1e6
    );
}

/// The device's qdiscs as `tc -s qdisc show` lists them, counters left
/// out (they move with any traffic).
fn qdiscs(ns: &Netns) -> String {
    ns.ok(&["tc", "-s", "qdisc", "show", "dev", "sv0"])
        .lines()
        .filter(|l| l.starts_with("qdisc "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A capped user's download and upload hold their caps while an uncapped
/// user on the same link runs free; a reload changes the cap of the
/// running download; `--shape off` leaves the link as it was.
#[test]
fn capped_user_holds_the_caps_and_an_uncapped_one_runs_free() {
    let Some(n) = node("a") else { return };
    let _heavy = heavy();
    let dir = TempDir::new("shape-a");
    let lim = dir.path("limits");
    limits(
        &lim,
        "alice@example.com 2 down=2mbit up=2mbit\nbob@example.com 2\n",
    );
    let before = qdiscs(&n.node);
    let ruleset = n.node.ok(&["nft", "list", "ruleset"]);
    let lim_arg = format!("--limits={}", lim.display());
    let mut d = start(&n, &dir, &[&lim_arg]);

    // Download: alice's connection is shaped from its line on.
    let alice = transfer::start(&n.node, listen(false), &n.client, Dir::Down);
    append(&d.access, &line("alice@example.com", alice.client, false));
    let bob = {
        let l: std::net::SocketAddr = format!("10.79.0.1:{}", PORT + 1).parse().unwrap();
        transfer::start(&n.node, l, &n.client, Dir::Down)
    };
    append(&d.access, &line("bob@example.com", bob.client, false));
    assert_capped("alice, download", settled_rate(&alice), 2e6);
    let free = bob.rate_bps(Duration::from_secs(1));
    eprintln!("bob, uncapped, beside: {:.0} Mbit/s", free / 1e6);
    assert!(free > 20e6, "bob was slowed: {:.3} Mbit/s", free / 1e6);
    drop(bob);

    // The reload raises the cap of the running download within 2 s.
    limits(&lim, "alice@example.com 2 down=4mbit up=2mbit\n");
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded:");
    std::thread::sleep(Duration::from_secs(2));
    assert_capped(
        "alice, download after reload",
        alice.rate_bps(Duration::from_secs(4)),
        4e6,
    );
    drop(alice);

    // Upload: policed at 2 Mbit/s.
    let up = transfer::start(&n.node, listen(false), &n.client, Dir::Up);
    append(&d.access, &line("alice@example.com", up.client, false));
    std::thread::sleep(Duration::from_secs(1));
    assert_capped("alice, upload", up.rate_bps(POLICED_WINDOW), 2e6);
    drop(up);

    let s = d.stats();
    assert_eq!(s["shape_errors"], 0, "{}", d.log());
    // alice's two connections; bob is not capped.
    assert_eq!(s["shape_marked"], 2, "{s:?}");
    let o = std::process::Command::new(BIN)
        .args(["user", "alice@example.com"])
        .arg(format!("--control={}", d.control.display()))
        .output()
        .unwrap();
    let user = String::from_utf8_lossy(&o.stdout);
    assert!(
        user.contains("rate down 4mbit, up 2mbit, mark 0x5246"),
        "{user}"
    );
    assert!(d.terminate().0.success());

    // --shape off: everything of refract's goes, the link is as it was.
    let mut off = Daemon::start_in(
        &n.node,
        &dir,
        &["--firewall=none", "--dport=8443", "--shape=off", &lim_arg],
    );
    off.wait_log("shape off: removed");
    assert_eq!(qdiscs(&n.node), before);
    assert_eq!(n.node.ok(&["nft", "list", "ruleset"]), ruleset);
    assert!(off.terminate().0.success());
}

/// An IPv6 client and a mux (`tcp:`) line are shaped like the rest.
#[test]
fn ipv6_and_mux_lines_are_shaped() {
    let Some(n) = node("b") else { return };
    let _heavy = heavy();
    let dir = TempDir::new("shape-b");
    let d = start(&n, &dir, &["--rate-down=2mbit"]);
    let v6 = transfer::start(&n.node, listen(true), &n.client, Dir::Down);
    append(&d.access, &line("carol@example.com", v6.client, false));
    assert_capped("carol, IPv6 download", settled_rate(&v6), 2e6);
    drop(v6);
    // A mux sub-stream's line names its connection with `tcp:`.
    let mux = transfer::start(&n.node, listen(false), &n.client, Dir::Down);
    append(&d.access, &line("dave@example.com", mux.client, true));
    assert_capped("dave, mux line", settled_rate(&mux), 2e6);
    drop(mux);
}

/// Deleted behind its back, the root qdisc and the table come back; a
/// restart adopts what is there (the same mark for the same user), and
/// `cleanup` removes it all.
#[test]
fn repairs_restart_and_cleanup() {
    let Some(n) = node("c") else { return };
    let dir = TempDir::new("shape-c");
    let before = qdiscs(&n.node);
    let ruleset = n.node.ok(&["nft", "list", "ruleset"]);
    let prom = dir.path("refract.prom");
    let prom_arg = format!("--metrics-file={}", prom.display());
    let mut d = start(
        &n,
        &dir,
        &["--rate-down=2mbit", "--rate-up=1mbit", &prom_arg],
    );
    let f = transfer::start(&n.node, listen(false), &n.client, Dir::Down);
    append(&d.access, &line("erin@example.com", f.client, false));
    wait_until(PROMPT, "erin's class", || {
        n.node
            .ok(&["tc", "class", "show", "dev", "sv0"])
            .contains("class htb 5246:1 ")
            .then_some(())
    });
    n.node.ok(&["tc", "qdisc", "del", "dev", "sv0", "root"]);
    wait_until(PROMPT, "the root qdisc and the class rebuilt", || {
        n.node
            .ok(&["tc", "class", "show", "dev", "sv0"])
            .contains("class htb 5246:1 ")
            .then_some(())
    });
    n.node
        .ok(&["nft", "delete", "table", "inet", "refract_shape"]);
    wait_until(PROMPT, "the table rebuilt with erin", || {
        let out = n
            .node
            .exec(&["nft", "list", "set", "inet", "refract_shape", "users"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("erin@example.com")
            .then_some(())
    });
    let s = d.stats();
    assert!(s["shape_repairs"] >= 2, "{s:?}\n{}", d.log());
    let text = wait_until(PROMPT, "the metrics with the repairs", || {
        let t = std::fs::read_to_string(&prom).unwrap_or_default();
        t.lines()
            .any(|l| l.starts_with("refract_shape_repairs_total ") && !l.ends_with(" 0"))
            .then_some(t)
    });
    assert!(text.contains("refract_shaped_users 1\n"), "{text}");
    assert!(
        text.contains("refract_shape_connections_marked_total 1\n"),
        "{text}"
    );
    crate::support::promtool_check(&text);
    assert!(d.terminate().0.success());

    // Restart: erin keeps mark 1 (her connection carries it).
    let d = start(&n, &dir, &["--rate-down=2mbit", "--rate-up=1mbit"]);
    d.wait_log("1 user(s) kept from before");
    append(
        &d.access,
        &line(
            "frank@example.com",
            "10.79.0.2:40000".parse().unwrap(),
            false,
        ),
    );
    wait_until(PROMPT, "frank's class, the next minor", || {
        n.node
            .ok(&["tc", "class", "show", "dev", "sv0"])
            .contains("class htb 5246:2 ")
            .then_some(())
    });
    let mut d = d;
    assert!(d.terminate().0.success());
    drop(f);

    // cleanup: the link as it was, no table.
    let out = n.node.ok(&[BIN, "cleanup", "--firewall=none"]);
    assert!(out.contains("shape: removed htb 5246:"), "{out}");
    assert_eq!(qdiscs(&n.node), before);
    assert_eq!(n.node.ok(&["nft", "list", "ruleset"]), ruleset);
}

/// A user downloading and uploading at once gets both caps: the upload's
/// ACKs leave beside the download's queue, not behind it (without that,
/// the uploading client's round trip jumps past its retransmission timeout
/// and the upload stalls for seconds).
#[test]
fn download_and_upload_at_once_each_hold_their_cap() {
    let Some(n) = node("d") else { return };
    let _heavy = heavy();
    let dir = TempDir::new("shape-d");
    let d = start(&n, &dir, &["--rate-down=2mbit", "--rate-up=2mbit"]);
    let down = transfer::start(&n.node, listen(false), &n.client, Dir::Down);
    append(&d.access, &line("gina@example.com", down.client, false));
    let up = {
        let l: std::net::SocketAddr = format!("10.79.0.1:{}", PORT).parse().unwrap();
        transfer::start(&n.node, l, &n.client, Dir::Up)
    };
    append(&d.access, &line("gina@example.com", up.client, false));
    std::thread::sleep(Duration::from_secs(1));
    let (d0, u0, t0) = (down.received(), up.received(), std::time::Instant::now());
    std::thread::sleep(POLICED_WINDOW);
    let s = t0.elapsed().as_secs_f64();
    let rate = |a: u64, b: u64| (b - a) as f64 * 8.0 / s;
    assert_capped(
        "gina, download beside her upload",
        rate(d0, down.received()),
        2e6,
    );
    assert_capped(
        "gina, upload beside her download",
        rate(u0, up.received()),
        2e6,
    );
}

/// `refract check` tries every piece of the data plane in a scratch
/// namespace and names a root qdisc it would not replace.
#[test]
fn check_reports_the_kernel_pieces_and_a_foreign_root() {
    let Some(n) = node("e") else { return };
    let dir = TempDir::new("shape-e");
    let access = dir.path("access.log");
    append(&access, "");
    let run = || {
        let o = n.node.exec(&[
            BIN,
            "check",
            "--firewall=none",
            "--rate-down=2mbit",
            "--shape-dev=sv0",
            &format!("--access-log={}", access.display()),
            &format!("--block-log={}", dir.path("block.log").display()),
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = run();
    for want in [
        "ok    shape device: sv0:",
        "ok    shape: htb qdisc: works",
        "ok    shape: cls_bpf classic filter: works",
        "ok    shape: nftables marks and limits: works",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    n.node.ok(&[
        "tc", "qdisc", "add", "dev", "sv0", "root", "handle", "1:", "htb",
    ]);
    let out = run();
    assert!(
        out.contains("the root qdisc is someone else's (htb 1:); refract will not replace it"),
        "{out}"
    );
    assert!(out.contains("refract would not start"), "{out}");
}

/// Ten thousand capped users: a class, a users element and an upload
/// limit each, every one in the kernel, nothing refused, and the daemon's
/// memory printed (the kernel holds the classes, refract a table entry).
#[test]
fn ten_thousand_capped_users() {
    let Some(n) = node("f") else { return };
    let _heavy = heavy();
    let dir = TempDir::new("shape-f");
    let mut d = start(&n, &dir, &["--rate-down=2mbit", "--rate-up=1mbit"]);
    let (_, rss0) = crate::support::daemon::proc_status(d.pid());
    const USERS: usize = 10_000;
    let mut text = String::new();
    for i in 0..USERS {
        let peer: std::net::SocketAddr =
            format!("10.80.{}.{}:{}", i / 250, i % 250 + 1, 20_000 + i % 30_000)
                .parse()
                .unwrap();
        text.push_str(&line(&format!("user{i}@example.com"), peer, false));
    }
    append(&d.access, &text);
    let start = std::time::Instant::now();
    crate::support::wait_progress(crate::support::STALL, "every class in the kernel", || {
        let classes = n.node.ok(&["tc", "class", "show", "dev", "sv0"]);
        let have = classes
            .lines()
            .filter(|l| l.starts_with("class htb 5246:"))
            .count();
        if have == USERS {
            Ok(())
        } else {
            Err(have)
        }
    });
    let took = start.elapsed();
    let users = n
        .node
        .ok(&["nft", "list", "set", "inet", "refract_shape", "users"]);
    assert_eq!(users.matches("comment \"user").count(), USERS);
    let objects = n
        .node
        .ok(&["nft", "list", "limits", "table", "inet", "refract_shape"]);
    assert_eq!(objects.matches("limit up_").count(), USERS);
    let s = d.stats();
    assert_eq!(
        (s["shape_errors"], s["shaped_users"]),
        (0, USERS as u64),
        "{s:?}"
    );
    let (_, rss1) = crate::support::daemon::proc_status(d.pid());
    eprintln!(
        "{USERS} capped users in the kernel after {took:?}; daemon VmRSS {rss0} kB -> {rss1} kB"
    );
    assert!(d.terminate().0.success());
}

/// The flow's conntrack mark, by an exact `IPCTNL_MSG_CT_GET` of its
/// original tuple (what a tight poll can afford: a hash lookup).
fn ct_mark(
    sock: &mut NlSocket,
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
) -> Option<u32> {
    use refract::nl::conntrack::{GetRequest, Tuple, CTA_MARK};
    let mut buf = NlBuf::new();
    GetRequest {
        family: if client.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        },
        orig: Tuple {
            src: client.ip(),
            dst: server.ip(),
            proto: libc::IPPROTO_TCP as u8,
            sport: client.port(),
            dport: server.port(),
        },
    }
    .emit(&mut buf, sock.next_seq());
    let msgs = sock.request(&buf, TIMEOUT).ok()?;
    msgs.iter().find_map(|m| {
        let m = m.as_msg();
        refract::nl::msg::Attrs::new(m.payload.get(4..)?)
            .find(|a| a.ty == CTA_MARK)
            .and_then(|a| a.u32_be())
    })
}

/// How long from a line to its connection's mark: the line is appended
/// while the connection trickles (a packet every 100 µs, at almost no
/// CPU); the peer's element is polled by exact get until it is in the map
/// (`first`, `next`: refract's part, from then on the next packet takes the
/// mark), then the conntrack entry until it carries the mark
/// (`…-marked`: that next packet included). For a user's first line (a mark, a class and a limit made
/// first) and for a further connection of a user already capped. The
/// reference, in the same run: what the log-following shell designs do
/// per line, one `conntrack -U … --mark` process on a connection of its
/// own. Prints `shape-latency …` lines with p50 and p99 in µs.
#[test]
#[ignore = "benchmark: scripts/shape-latency.sh"]
fn shape_latency() {
    // A packet on the connection every 100 µs: the mark is set by the
    // first one after refract's batch, so this bounds what the kernel adds.
    const PACE: Option<Duration> = Some(Duration::from_micros(100));
    let Some(n) = node("l") else { return };
    let iters: usize = std::env::var("REFRACT_SHAPE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = TempDir::new("shape-l");
    let d = start(&n, &dir, &["--rate-down=100mbit", "--rate-up=100mbit"]);
    let server = listen(false);
    let mut sock = n
        .node
        .in_netns(|| NlSocket::open(NETLINK_NETFILTER, 1 << 20).unwrap());
    let mut first = Vec::new();
    let mut next = Vec::new();
    let mut first_mark = Vec::new();
    let mut next_mark = Vec::new();
    let mut tool = Vec::new();
    // First the peer's element in the map (refract's part: from then on
    // the connection's next packet takes the mark), then the mark on the
    // conntrack entry (the kernel's part: that next packet).
    let poll = |sock: &mut NlSocket, f: &transfer::Flow, t0: std::time::Instant| {
        let deadline = t0 + PROMPT;
        let (v6, key) = refract::shape::nft::peer_key(f.client);
        let set = if v6 { "peers6" } else { "peers4" };
        let mut buf = NlBuf::new();
        let elem = loop {
            buf.clear();
            refract::nl::nftables::get_elem(&mut buf, sock.next_seq(), "refract_shape", set, &key);
            if sock.request(&buf, TIMEOUT).is_ok() {
                break t0.elapsed();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no element for {}",
                f.client
            );
        };
        loop {
            if ct_mark(sock, f.client, server).is_some_and(|m| m >> 16 == 0x5246) {
                return (elem, t0.elapsed());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mark on {}",
                f.client
            );
        }
    };
    for i in 0..iters {
        for (user, out, marked) in [
            (format!("l{i}@example.com"), &mut first, &mut first_mark),
            (format!("l{i}@example.com"), &mut next, &mut next_mark),
        ] {
            let f = transfer::start_paced(&n.node, server, &n.client, Dir::Up, PACE);
            let text = line(&user, f.client, false);
            let t0 = std::time::Instant::now();
            append(&d.access, &text);
            let (e, m) = poll(&mut sock, &f, t0);
            out.push(e);
            marked.push(m);
        }
        // The reference: a process per line.
        let f = transfer::start_paced(&n.node, server, &n.client, Dir::Up, PACE);
        let port = f.client.port().to_string();
        // Run from a thread inside the namespace (a child inherits it), so
        // no `ip netns exec` is counted.
        tool.push(n.node.in_netns(|| {
            let t0 = std::time::Instant::now();
            let o = std::process::Command::new("conntrack")
                .args([
                    "-U",
                    "-f",
                    "ipv4",
                    "-p",
                    "tcp",
                    "--sport",
                    &port,
                    "--mark",
                    "0x52460fff",
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "conntrack -U: {o:?}");
            t0.elapsed()
        }));
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort_unstable();
        v[(v.len() * p / 100).min(v.len() - 1)].as_micros()
    };
    for (what, v) in [
        ("first", &mut first),
        ("next", &mut next),
        ("first-marked", &mut first_mark),
        ("next-marked", &mut next_mark),
        ("conntrack-tool", &mut tool),
    ] {
        println!(
            "shape-latency {what} n={iters} p50_us={} p99_us={}",
            pct(v, 50),
            pct(v, 99)
        );
    }
}
