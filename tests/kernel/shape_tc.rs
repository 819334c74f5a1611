//! The tc half of the bandwidth caps against the real kernel
//! (`refract::shape::tc`, `refract::nl::rtnl`): our HTB root on a veth in
//! a server namespace, a class per capped user, the classic cls_bpf
//! filter sending packets to their class by mark. The mark is set here by
//! a test-only `nft` rule in the server's postrouting (what the nftables
//! half does from the connection's mark); `tc` witnesses what the kernel
//! holds. Downloads are real TCP transfers between two namespaces
//! (`support::transfer`), measured at the receiver.
//!
//! Rates are asserted (±15%) only where the kernel enforces them: a cap
//! of a few Mbit/s is far below what any machine moves over a veth, so an
//! unshaped flow is only required to beat the cap tenfold. HTB counts
//! whole frames (Ethernet header included), the receiver counts TCP
//! payload: about 96% of the cap with 1500-byte frames, inside the
//! tolerance. Each test makes its own namespaces and removes them; the
//! host's qdiscs are never touched.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use refract::nl::rtnl;
use refract::shape::tc::{self, Dev, ShapeError};

use crate::support::heavy;
use crate::support::netns::{wired, Netns};
use crate::support::transfer::{self, Dir, Flow};

const MBIT: f64 = 1_000_000.0;
/// 2 Mbit/s in bytes/s, as the class takes it.
const CAP_2M: u64 = 250_000;
const CAP_4M: u64 = 500_000;

/// A server and a client namespace joined by a veth (`s0` on the server,
/// both families), the server's end resolved.
struct Pair {
    server: Netns,
    client: Netns,
    dev: Dev,
}

fn pair(tag: &str) -> Option<Pair> {
    let (server, client) = wired(
        (&format!("{tag}s"), "s0", &["10.9.0.1/24", "fd00:9::1/64"]),
        &["tc", "nft"],
        (&format!("{tag}c"), "c0", &["10.9.0.2/24", "fd00:9::2/64"]),
    )?;
    // A veth hands TCP 64 KB super-packets (GSO), each 1/4 s of a 2 Mbit/s
    // cap: the receiver would count in steps of 7% of a 4 s window. 16 KB
    // ones keep the measurement smooth; the kernel's rate is the same.
    server.ok(&["ip", "link", "set", "s0", "gso_max_size", "16384"]);
    let dev = server.in_netns(|| tc::resolve_dev("s0").unwrap());
    Some(Pair {
        server,
        client,
        dev,
    })
}

impl Pair {
    fn ensure(&self) -> Result<tc::Adopted, ShapeError> {
        self.server.in_netns(|| {
            let mut sock = tc::open().unwrap();
            tc::ensure_root(&mut sock, &self.dev)
        })
    }

    fn set_class(&self, minor: u16, rate: u64) {
        self.server.in_netns(|| {
            let mut sock = tc::open().unwrap();
            tc::set_class(&mut sock, self.dev.index, minor, rate).unwrap()
        })
    }

    fn classes(&self) -> Vec<rtnl::Class> {
        self.server.in_netns(|| {
            let mut sock = tc::open().unwrap();
            tc::classes(&mut sock, self.dev.index).unwrap()
        })
    }

    fn root(&self) -> rtnl::Qdisc {
        self.server.in_netns(|| {
            let mut sock = tc::open().unwrap();
            tc::qdiscs(&mut sock)
                .unwrap()
                .into_iter()
                .find(|q| q.ifindex == self.dev.index && q.is_root())
                .expect("a root qdisc")
        })
    }

    /// Test-only setup: the server's packets from TCP port `sport` get
    /// `mark` in postrouting (before the egress qdisc).
    fn mark(&self, sport: u16, mark: u32) {
        let s = &self.server;
        if !s
            .exec(&["nft", "list", "table", "inet", "t"])
            .status
            .success()
        {
            s.ok(&["nft", "add", "table", "inet", "t"]);
            s.ok(&[
                "nft",
                "add chain inet t post { type filter hook postrouting priority -150; }",
            ]);
        }
        s.ok(&[
            "nft",
            &format!("add rule inet t post tcp sport {sport} meta mark set {mark:#x}"),
        ]);
    }

    fn download(&self, addr: &str) -> Flow {
        let listen: SocketAddr = addr.parse().unwrap();
        transfer::start(&self.server, listen, &self.client, Dir::Down)
    }

    fn tc(&self, args: &str) -> String {
        let argv: Vec<&str> = std::iter::once("tc").chain(args.split(' ')).collect();
        self.server.ok(&argv)
    }
}

/// The rate of `flow` over 4 s after 1 s of warm-up, printed.
fn measure(what: &str, flow: &Flow) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let r = flow.rate_bps(Duration::from_secs(4));
    eprintln!("{what}: {:.3} Mbit/s", r / MBIT);
    r
}

/// `Sent N bytes` of class `5246:minor` in `tc -s class show`.
fn tc_class_sent(p: &Pair, minor: u16) -> u64 {
    let out = p.tc("-s class show dev s0");
    let head = format!("class htb 5246:{minor:x} ");
    let mut lines = out.lines().skip_while(|l| !l.starts_with(&head));
    lines.next().unwrap_or_else(|| panic!("no {head} in {out}"));
    let sent = lines.next().unwrap().trim();
    sent.strip_prefix("Sent ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{sent}"))
}

fn assert_capped(p: &Pair, listen: &str, sport: u16, family: &str) {
    let _heavy = heavy();
    let a = p.ensure().unwrap();
    assert!(a.created && a.filter_added, "{a:?}");
    assert_eq!(a.replaced.as_deref(), Some("noqueue"));
    p.set_class(5, CAP_2M);
    p.mark(sport, tc::MARK_TAG | 5);
    let capped = p.download(&format!("{listen}:{sport}"));
    let free = p.download(&format!("{listen}:{}", sport + 1));
    let r = measure(&format!("{family} marked, cap 2 Mbit/s"), &capped);
    let f = measure(&format!("{family} unmarked, beside it"), &free);
    assert!(transfer::within(r, 2.0 * MBIT, 0.15), "{r} bit/s");
    assert!(
        f > 10.0 * 2.0 * MBIT,
        "the unmarked flow was slowed: {f} bit/s"
    );
    // The class carried the capped flow (whole frames: more than the
    // payload received), and only it: the free flow moved far more.
    let got = capped.received();
    let sent = tc_class_sent(p, 5);
    assert!(sent >= got, "class sent {sent} B, client got {got} B");
    assert!(sent < free.received(), "{sent} vs {}", free.received());
    let ours = p.classes();
    assert_eq!(ours.len(), 1);
    assert!(ours[0].bytes.unwrap() >= got);
}

#[test]
fn a_marked_download_is_capped_and_an_unmarked_one_is_not() {
    let Some(p) = pair("tcv4") else { return };
    assert_capped(&p, "10.9.0.1", 5001, "IPv4");
}

#[test]
fn ipv6_is_capped_the_same() {
    let Some(p) = pair("tcv6") else { return };
    assert_capped(&p, "[fd00:9::1]", 5001, "IPv6");
}

/// The rates of `flows` over the same 4 s, after 1 s of warm-up.
fn measure_together(flows: &[&Flow]) -> Vec<f64> {
    std::thread::sleep(Duration::from_secs(1));
    let (b0, t0): (Vec<u64>, Instant) =
        (flows.iter().map(|f| f.received()).collect(), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let secs = t0.elapsed().as_secs_f64();
    flows
        .iter()
        .zip(b0)
        .map(|(f, b)| (f.received() - b) as f64 * 8.0 / secs)
        .collect()
}

#[test]
fn two_users_get_their_own_caps_at_once() {
    let Some(p) = pair("tctwo") else { return };
    let _heavy = heavy();
    p.ensure().unwrap();
    p.set_class(5, CAP_2M);
    p.set_class(6, CAP_4M);
    p.mark(5001, tc::MARK_TAG | 5);
    p.mark(5003, tc::MARK_TAG | 6);
    let a = p.download("10.9.0.1:5001");
    let b = p.download("10.9.0.1:5003");
    let r = measure_together(&[&a, &b]);
    eprintln!(
        "user 5 (2 Mbit/s): {:.3} Mbit/s, user 6 (4 Mbit/s): {:.3} Mbit/s, together",
        r[0] / MBIT,
        r[1] / MBIT
    );
    assert!(transfer::within(r[0], 2.0 * MBIT, 0.15), "{r:?}");
    assert!(transfer::within(r[1], 4.0 * MBIT, 0.15), "{r:?}");
}

#[test]
fn a_class_changed_in_place_caps_at_the_new_rate() {
    let Some(p) = pair("tcchg") else { return };
    let _heavy = heavy();
    p.ensure().unwrap();
    p.set_class(5, CAP_2M);
    p.mark(5001, tc::MARK_TAG | 5);
    let flow = p.download("10.9.0.1:5001");
    let r = measure("before the change, cap 2 Mbit/s", &flow);
    assert!(transfer::within(r, 2.0 * MBIT, 0.15), "{r} bit/s");
    let before = p.classes();
    let t = Instant::now();
    p.set_class(5, CAP_4M);
    // The change is in place: the queue keeps its packets, so the new
    // rate shows at once; measured from 0.5 s to 2 s after it.
    std::thread::sleep(Duration::from_millis(500));
    let r = flow.rate_bps(Duration::from_millis(1500));
    eprintln!(
        "after the change to 4 Mbit/s: {:.3} Mbit/s ({:?} after it)",
        r / MBIT,
        t.elapsed()
    );
    assert!(transfer::within(r, 4.0 * MBIT, 0.15), "{r} bit/s");
    let after = p.classes();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].handle, before[0].handle);
    assert_eq!(after[0].rate, Some(CAP_4M));
    // Same class, so its counter kept going.
    assert!(after[0].bytes >= before[0].bytes);
    assert_eq!(p.tc("class show dev s0").lines().count(), 1);
}

#[test]
fn a_mark_without_a_class_goes_out_unshaped() {
    let Some(p) = pair("tcnocl") else { return };
    let _heavy = heavy();
    p.ensure().unwrap();
    p.set_class(5, CAP_2M);
    p.mark(5001, tc::MARK_TAG | 7); // no class 5246:7
    let direct = p.root().direct_packets.unwrap();
    let flow = p.download("10.9.0.1:5001");
    let r = measure("marked for a missing class", &flow);
    assert!(r > 10.0 * 2.0 * MBIT, "{r} bit/s");
    let now = p.root().direct_packets.unwrap();
    assert!(now > direct + 100, "direct packets {direct} → {now}");
    assert_eq!(tc_class_sent(&p, 5), 0);
}

/// The lines of `tc qdisc show dev s0`, without the refcount (the kernel's
/// bookkeeping, not the setup).
fn qdisc_show(p: &Pair) -> Vec<String> {
    p.tc("qdisc show dev s0")
        .lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.starts_with("refcnt"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn ensure_root_adopts_repairs_and_refuses_a_foreign_root() {
    let Some(p) = pair("tcadopt") else { return };
    let first = p.ensure().unwrap();
    p.set_class(5, CAP_2M);
    p.set_class(9, 3 * CAP_4M);
    let again = p.ensure().unwrap();
    assert_eq!(
        again,
        tc::Adopted {
            created: false,
            replaced: None,
            filter_added: false,
            classes: vec![(5, CAP_2M), (9, 3 * CAP_4M)],
        },
        "after {first:?}"
    );
    let roots: Vec<String> = qdisc_show(&p)
        .into_iter()
        .filter(|l| l.contains(" root"))
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(roots[0].starts_with("qdisc htb 5246: root"), "{roots:?}");
    let filters = p.tc("filter show dev s0 parent 5246:");
    assert_eq!(filters.matches("handle 0x1 ").count(), 1, "{filters}");
    let (gone, again) = p.server.in_netns(|| {
        let mut sock = tc::open().unwrap();
        let gone = tc::del_class(&mut sock, p.dev.index, 9).unwrap();
        (gone, tc::del_class(&mut sock, p.dev.index, 9).unwrap())
    });
    assert!(gone && !again);
    assert!(!p.tc("class show dev s0").contains("5246:9"));

    // Deleted behind our back: rebuilt, filter and all (the classes went
    // with the qdisc).
    p.tc("qdisc del dev s0 root");
    let rebuilt = p.ensure().unwrap();
    assert!(rebuilt.created && rebuilt.filter_added, "{rebuilt:?}");
    assert!(rebuilt.classes.is_empty());
    // Only the filter deleted: put back, the root kept.
    p.tc("filter del dev s0 parent 5246: prio 1");
    let refilled = p.ensure().unwrap();
    assert!(!refilled.created && refilled.filter_added, "{refilled:?}");
    let filters = p.tc("filter show dev s0 parent 5246:");
    assert_eq!(filters.matches("handle 0x1 ").count(), 1, "{filters}");

    // Someone else's root: refused, named, untouched.
    p.tc("qdisc del dev s0 root");
    p.tc("qdisc add dev s0 root handle 1: htb default 10");
    let before = qdisc_show(&p);
    let e = p.ensure().unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(&e, ShapeError::Foreign { kind, handle, .. } if kind == "htb" && *handle == 0x1_0000),
        "{e:?}"
    );
    assert!(msg.contains("s0") && msg.contains("htb 1:"), "{msg}");
    assert_eq!(qdisc_show(&p), before);
    let removed = p.server.in_netns(|| {
        let mut sock = tc::open().unwrap();
        tc::remove_root(&mut sock, p.dev.index).unwrap()
    });
    assert!(!removed);
    assert_eq!(qdisc_show(&p), before);
    // Another kind under our handle is not ours either.
    p.tc("qdisc del dev s0 root");
    p.tc("qdisc add dev s0 root handle 5246: pfifo");
    assert!(matches!(p.ensure(), Err(ShapeError::Foreign { .. })));
}

#[test]
fn remove_root_restores_the_default_and_remove_everywhere_only_ours() {
    let Some(p) = pair("tcclean") else { return };
    let before = qdisc_show(&p);
    p.ensure().unwrap();
    p.set_class(5, CAP_2M);
    assert_ne!(qdisc_show(&p), before);
    let removed = p.server.in_netns(|| {
        let mut sock = tc::open().unwrap();
        tc::remove_root(&mut sock, p.dev.index).unwrap()
    });
    assert!(removed);
    assert_eq!(qdisc_show(&p), before);
    assert_eq!(p.tc("class show dev s0"), "");

    // Three more links in the server: ours on two, a foreign root on one.
    let s = &p.server;
    for (a, b) in [("a0", "a1"), ("b0", "b1"), ("f0", "f1")] {
        s.ok(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        s.ok(&["ip", "link", "set", a, "up"]);
    }
    s.ok(&[
        "tc", "qdisc", "add", "dev", "f0", "root", "handle", "1:", "htb",
    ]);
    s.in_netns(|| {
        let mut sock = tc::open().unwrap();
        for name in ["a0", "b0"] {
            let dev = tc::resolve_dev(name).unwrap();
            tc::ensure_root(&mut sock, &dev).unwrap();
        }
    });
    let mut removed = s.in_netns(|| {
        let mut sock = tc::open().unwrap();
        tc::remove_everywhere(&mut sock).unwrap()
    });
    removed.sort();
    assert_eq!(removed, ["htb 5246: on a0", "htb 5246: on b0"]);
    let all = s.ok(&["tc", "qdisc", "show"]);
    assert!(!all.contains("5246:"), "{all}");
    assert!(all.contains("qdisc htb 1: dev f0 root"), "{all}");
    let again = s.in_netns(|| {
        let mut sock = tc::open().unwrap();
        tc::remove_everywhere(&mut sock).unwrap()
    });
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn resolve_dev_by_name_and_auto() {
    let Some(p) = pair("tcdev") else { return };
    assert_eq!(p.dev.name, "s0");
    let index = p.server.ok(&["cat", "/sys/class/net/s0/ifindex"]);
    assert_eq!(p.dev.index.to_string(), index.trim());
    p.server.in_netns(|| {
        let e = tc::resolve_dev("eth9").unwrap_err();
        assert_eq!(e.to_string(), "--shape-dev eth9: no such interface");
        let e = tc::resolve_dev("auto").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--shape-dev auto: no default route"),
            "{e}"
        );
    });
    // An IPv6 default route alone is enough.
    p.server.ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:9::2",
        "dev",
        "s0",
    ]);
    assert_eq!(
        p.server.in_netns(|| tc::resolve_dev("auto").unwrap()),
        p.dev
    );
    p.server
        .ok(&["ip", "route", "add", "default", "via", "10.9.0.2"]);
    assert_eq!(
        p.server.in_netns(|| tc::resolve_dev("auto").unwrap()),
        p.dev
    );
}

#[test]
fn check_kernel_tries_everything_in_a_scratch_namespace() {
    let Some(p) = pair("tcchk") else { return };
    let before = p.server.ok(&["tc", "qdisc", "show"]);
    // From inside the test's namespace: the check goes to a namespace of
    // its own and back; nothing it does shows here.
    let findings = p.server.in_netns(tc::check_kernel);
    eprintln!("{findings:?}");
    let names: Vec<&str> = findings.iter().map(|f| f.0).collect();
    assert_eq!(names, ["htb qdisc", "htb class", "cls_bpf classic filter"]);
    for (what, r) in &findings {
        assert!(r.is_ok(), "{what}: {r:?}");
    }
    assert_eq!(p.server.ok(&["tc", "qdisc", "show"]), before);
    // The thread came back: its sockets are in the test's namespace.
    let dev = p.server.in_netns(|| {
        tc::check_kernel();
        tc::resolve_dev("s0").unwrap()
    });
    assert_eq!(dev, p.dev);
}
