//! Killing a banned key's live connections against the real kernel:
//! SOCK_DESTROY through a kernel-filtered sock_diag dump (TCP) and
//! ctnetlink deletes (UDP), in throwaway namespaces.
//!
//! Topology: a "node" namespace with two veths, one to client namespace A
//! (192.0.2.10, 2001:db8:1::10) and one to client namespace B
//! (198.51.100.10, 2001:db8:2::10). Servers are opened on a thread inside
//! the node namespace and clients on threads inside A and B (a socket
//! stays in the namespace it was created in). Independent witnesses: the
//! client's own socket (reset/EOF), `ss` and `conntrack` run inside the
//! node namespace. Skips (with the reason) when not root or a tool is
//! missing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use refract::key::Key;
use refract::nl::consts::{NETLINK_NETFILTER, NETLINK_SOCK_DIAG};
use refract::nl::diag;
use refract::nl::socket::NlSocket;

use crate::support::netns::{veth, wired, Netns};
use crate::support::nl::{find_flows, find_sockets, kill_tcp, kill_udp};
use crate::support::rules;
use crate::support::{poll_until, wait_until, PROMPT};

/// How long a request, a connect or an accept may take (microseconds on a
/// veth; the bound catches a lost answer, not a slow one).
const T: Duration = PROMPT;
/// How long a killed connection may take to show it on the client side
/// (the RST is sent before the kill's ack: it is there at once).
const KILL_BOUND: Duration = PROMPT;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const TCP: u8 = libc::IPPROTO_TCP as u8;

const NODE_A4: &str = "192.0.2.1";
const NODE_B4: &str = "198.51.100.1";
const NODE_A6: &str = "2001:db8:1::1";
const NODE_B6: &str = "2001:db8:2::1";
const A4: &str = "192.0.2.10";
const B4: &str = "198.51.100.10";
const A6: &str = "2001:db8:1::10";
const B6: &str = "2001:db8:2::10";

struct Net {
    node: Netns,
    a: Netns,
    b: Netns,
}

/// The three namespaces; `tools` are what the test runs in the node.
fn net(tag: &str, tools: &[&str]) -> Option<Net> {
    let node = Netns::with_tools(&format!("{tag}-n"), tools)?;
    let a = Netns::new(&format!("{tag}-a"))?;
    let b = Netns::new(&format!("{tag}-b"))?;
    veth(
        &node,
        "va",
        &["192.0.2.1/24", "2001:db8:1::1/64"],
        &a,
        "eth0",
        &["192.0.2.10/24", "2001:db8:1::10/64"],
    );
    veth(
        &node,
        "vb",
        &["198.51.100.1/24", "2001:db8:2::1/64"],
        &b,
        "eth0",
        &["198.51.100.10/24", "2001:db8:2::10/64"],
    );
    Some(Net { node, a, b })
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn key(ip: &str, v6_prefix: u8) -> Key {
    Key::new(ip.parse().unwrap(), v6_prefix)
}

fn listen(ns: &Netns, addr: SocketAddr) -> TcpListener {
    ns.in_netns(|| {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    })
}

/// One established connection: the client's end (in A or B) and the
/// server's accepted end (in the node).
struct Conn {
    client: TcpStream,
    server: TcpStream,
    what: String,
}

fn accept(l: &TcpListener, from: SocketAddr) -> TcpStream {
    let s = wait_until(T, &format!("a connection from {from}"), || {
        match l.accept() {
            Ok((s, peer)) => {
                assert_eq!(peer, from, "accepted an unexpected peer");
                Some(s)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("accept: {e}"),
        }
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(KILL_BOUND)).unwrap();
    s
}

fn connect(client_ns: &Netns, l: &TcpListener, to: SocketAddr) -> Conn {
    let client = client_ns.in_netns(|| {
        TcpStream::connect_timeout(&to, T).unwrap_or_else(|e| panic!("connect {to}: {e}"))
    });
    client.set_read_timeout(Some(KILL_BOUND)).unwrap();
    let from = client.local_addr().unwrap();
    // A dual-stack listener reports an IPv4 peer as ::ffff:a.b.c.d.
    let from_seen = match (l.local_addr().unwrap(), from) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => from,
    };
    let server = accept(l, from_seen);
    Conn {
        client,
        server,
        what: format!("{from} -> {to}"),
    }
}

impl Conn {
    /// One byte client → server → client.
    fn echo(&mut self) -> io::Result<()> {
        self.client.write_all(b"x")?;
        let mut b = [0u8];
        self.server.read_exact(&mut b)?;
        self.server.write_all(&b)?;
        b[0] = 0;
        self.client.read_exact(&mut b)?;
        assert_eq!(&b, b"x");
        Ok(())
    }

    fn assert_alive(&mut self) {
        if let Err(e) = self.echo() {
            panic!("{} should still work: {e}", self.what);
        }
    }

    /// The client sees the kill: a reset (or EOF) on read within the
    /// bound, not a timeout; the server's end is dead as well.
    fn assert_killed(&mut self) {
        let start = Instant::now();
        let mut b = [0u8; 16];
        match self.client.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("{}: client read {n} bytes after the kill", self.what),
            Err(e) => panic!(
                "{}: client not reset after {:?}: {e}",
                self.what,
                start.elapsed()
            ),
        }
        assert!(start.elapsed() < KILL_BOUND);
        // The aborted server socket reports ECONNABORTED (tcp_abort()).
        match self.server.read(&mut b) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            other => panic!("{}: server end after the kill: {other:?}", self.what),
        }
    }
}

fn diag_socket(ns: &Netns) -> NlSocket {
    ns.in_netns(|| NlSocket::open(NETLINK_SOCK_DIAG, 0).unwrap())
}

/// Remote addresses of the node's established connections to `port`, per
/// `ss` (the independent witness).
fn ss_peers(ns: &Netns, port: u16) -> Vec<String> {
    let filter = format!("( sport = :{port} )");
    let out = ns.ok(&["ss", "-Htn", "state", "established", &filter]);
    out.lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

fn peer_listed(peers: &[String], ip: &str) -> bool {
    peers.iter().any(|p| {
        p.starts_with(&format!("{ip}:"))
            || p.starts_with(&format!("[{ip}]:"))
            || p.starts_with(&format!("[::ffff:{ip}]:"))
    })
}

#[test]
fn tcp_ipv4_only_listener() {
    let Some(Net { node, a, b }) = net("kill4", &["ss"]) else {
        return;
    };
    let l443 = listen(&node, sa("0.0.0.0", 443));
    let l8443 = listen(&node, sa("0.0.0.0", 8443));
    let mut a443 = connect(&a, &l443, sa(NODE_A4, 443));
    let mut b443 = connect(&b, &l443, sa(NODE_B4, 443));
    let mut a8443 = connect(&a, &l8443, sa(NODE_A4, 8443));
    for c in [&mut a443, &mut b443, &mut a8443] {
        c.assert_alive();
    }
    let mut s = diag_socket(&node);
    let ka = key(A4, 64);

    // The kernel filter alone selects exactly A's connection to 443.
    let found = find_sockets(&mut s, AF_INET, TCP, ka, &[443], T).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].remote(), a443.client.local_addr().unwrap());
    assert_eq!(found[0].local(), sa(NODE_A4, 443));
    assert_eq!(found[0].state, diag::TCP_ESTABLISHED);
    assert!(find_sockets(&mut s, AF_INET6, TCP, ka, &[443], T)
        .unwrap()
        .is_empty());

    assert_eq!(kill_tcp(&mut s, AF_INET, ka, &[443], T).unwrap(), 1);
    assert_eq!(kill_tcp(&mut s, AF_INET6, ka, &[443], T).unwrap(), 0);
    a443.assert_killed();

    let peers = ss_peers(&node, 443);
    assert!(!peer_listed(&peers, A4), "ss still lists A: {peers:?}");
    assert!(peer_listed(&peers, B4), "ss lost B: {peers:?}");
    b443.assert_alive();
    a8443.assert_alive(); // another port of the same key is untouched
                          // The listener survived and still accepts, from B and from A.
    let mut b_new = connect(&b, &l443, sa(NODE_B4, 443));
    let mut a_new = connect(&a, &l443, sa(NODE_A4, 443));
    b_new.assert_alive();
    a_new.assert_alive();
    // A second kill finds only the new connection from A.
    assert_eq!(kill_tcp(&mut s, AF_INET, ka, &[443], T).unwrap(), 1);
    a_new.assert_killed();
    b_new.assert_alive();
    b443.assert_alive();
    // Several ports: the kernel runs the JMP branches of the filter (8443
    // matches a port in the middle of the list).
    let ports = [80, 8443, 443];
    assert_eq!(kill_tcp(&mut s, AF_INET, ka, &ports, T).unwrap(), 1);
    a8443.assert_killed();
    b443.assert_alive();
    let kb = key(B4, 64);
    assert_eq!(kill_tcp(&mut s, AF_INET, kb, &ports, T).unwrap(), 2);
    b443.assert_killed();
    b_new.assert_killed();
}

#[test]
fn tcp_dual_stack_listener_ipv4_clients_and_ipv6_prefix() {
    let Some(Net { node, a, b }) = net("kill6", &["ss"]) else {
        return;
    };
    // std leaves IPV6_V6ONLY alone: net.ipv6.bindv6only is 0 in a fresh
    // namespace, so these listeners are dual-stack.
    let l443 = listen(&node, sa("::", 443));
    let l8443 = listen(&node, sa("::", 8443));
    let mut a4 = connect(&a, &l443, sa(NODE_A4, 443));
    let mut b4 = connect(&b, &l443, sa(NODE_B4, 443));
    let mut a6 = connect(&a, &l443, sa(NODE_A6, 443));
    let mut b6 = connect(&b, &l443, sa(NODE_B6, 443));
    let mut a4_8443 = connect(&a, &l8443, sa(NODE_A4, 8443));
    for c in [&mut a4, &mut b4, &mut a6, &mut b6, &mut a4_8443] {
        c.assert_alive();
    }
    let mut s = diag_socket(&node);

    // An IPv4 key: nothing in AF_INET, its mapped socket in AF_INET6.
    let ka4 = key(A4, 64);
    assert!(find_sockets(&mut s, AF_INET, TCP, ka4, &[443], T)
        .unwrap()
        .is_empty());
    let found = find_sockets(&mut s, AF_INET6, TCP, ka4, &[443], T).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].family, AF_INET6);
    assert_eq!(
        found[0].remote(),
        sa(
            &format!("::ffff:{A4}"),
            a4.client.local_addr().unwrap().port()
        )
    );
    let killed: usize = diag::families(ka4)
        .iter()
        .map(|&f| kill_tcp(&mut s, f, ka4, &[443], T).unwrap())
        .sum();
    assert_eq!(killed, 1);
    a4.assert_killed();
    b4.assert_alive();
    a6.assert_alive(); // an IPv4 key never touches the same host's IPv6
    a4_8443.assert_alive();

    // A /64 key (built from a different address inside A's /64).
    let ka6 = key("2001:db8:1::ffff", 64);
    assert_eq!(ka6, Key::V6("2001:db8:1::".parse().unwrap(), 64));
    assert_eq!(diag::families(ka6), &[AF_INET6]);
    assert_eq!(kill_tcp(&mut s, AF_INET6, ka6, &[443], T).unwrap(), 1);
    a6.assert_killed();
    b6.assert_alive();
    b4.assert_alive();

    let peers = ss_peers(&node, 443);
    assert!(
        !peer_listed(&peers, A4) && !peer_listed(&peers, A6),
        "{peers:?}"
    );
    assert!(
        peer_listed(&peers, B4) && peer_listed(&peers, B6),
        "{peers:?}"
    );
    connect(&a, &l443, sa(NODE_A6, 443)).assert_alive();
    connect(&b, &l443, sa(NODE_B4, 443)).assert_alive();
}

/// Original-direction UDP flows in the node's conntrack table, per the
/// `conntrack` tool: (source address, destination port).
fn ct_flows(ns: &Netns, family: &str) -> Vec<(String, u16)> {
    let out = ns.exec(&["conntrack", "-L", "-f", family, "-p", "udp"]);
    assert!(out.status.success(), "conntrack -L: {:?}", out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(str::to_owned)
            };
            Some((field("src=")?, field("dport=")?.parse().ok()?))
        })
        .collect()
}

#[test]
fn udp_conntrack_entries_of_the_key_are_deleted() {
    let tools = ["conntrack", "iptables", "ip6tables"];
    let Some(Net { node, a, b }) = net("killudp", &tools) else {
        return;
    };
    rules::track_connections(&node);
    let _servers: Vec<UdpSocket> = node.in_netns(|| {
        [443, 8443]
            .iter()
            .map(|&p| UdpSocket::bind(sa("::", p)).unwrap())
            .collect()
    });
    let send = |ns: &Netns, to: SocketAddr| {
        ns.in_netns(|| {
            let any = if to.is_ipv4() { "0.0.0.0" } else { "::" };
            let s = UdpSocket::bind(sa(any, 0)).unwrap();
            s.send_to(b"hello", to).unwrap();
        })
    };
    send(&a, sa(NODE_A4, 443));
    send(&a, sa(NODE_A4, 8443));
    send(&b, sa(NODE_B4, 443));
    send(&a, sa(NODE_A6, 443));
    send(&b, sa(NODE_B6, 443));
    let ok = poll_until(T, || {
        (ct_flows(&node, "ipv4").len() == 3 && ct_flows(&node, "ipv6").len() == 2).then_some(())
    });
    assert!(
        ok.is_some(),
        "conntrack did not track the datagrams: {:?} {:?}",
        ct_flows(&node, "ipv4"),
        ct_flows(&node, "ipv6")
    );

    let mut s = node.in_netns(|| NlSocket::open(NETLINK_NETFILTER, 0).unwrap());
    let ka4 = key(A4, 64);
    let udp = libc::IPPROTO_UDP as u8;
    let found = find_flows(&mut s, udp, ka4, &[443], T).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].orig.dst,
        NODE_A4.parse::<std::net::IpAddr>().unwrap()
    );
    assert!(found[0].id.is_some());

    assert_eq!(kill_udp(&mut s, ka4, &[443], T).unwrap(), 1);
    let v4 = ct_flows(&node, "ipv4");
    assert!(!v4.contains(&(A4.into(), 443)), "{v4:?}");
    assert!(v4.contains(&(A4.into(), 8443)), "{v4:?}");
    assert!(v4.contains(&(B4.into(), 443)), "{v4:?}");
    assert_eq!(ct_flows(&node, "ipv6").len(), 2);

    let ka6 = key("2001:db8:1::abcd", 64);
    assert_eq!(kill_udp(&mut s, ka6, &[443, 8443], T).unwrap(), 1);
    let v6 = ct_flows(&node, "ipv6");
    assert_eq!(v6, vec![(B6.to_string(), 443)]);
    // Nothing left to delete: a second pass is a no-op, not an error.
    assert_eq!(kill_udp(&mut s, ka6, &[443], T).unwrap(), 0);
    assert_eq!(kill_udp(&mut s, ka4, &[443], T).unwrap(), 0);
    assert_eq!(ct_flows(&node, "ipv4").len(), 2);
}

/// A ban whose logged connection no longer exists must not touch the
/// proxy's listener: an exact lookup of a connection that is gone falls
/// back to the listening socket in the kernel (`inet_lookup()`), and a
/// `SOCK_DESTROY` of that would close it, so the enforcer destroys only
/// what an exact get found, by its cookie. Found by the benchmark's
/// listener check.
#[test]
fn a_ban_of_a_gone_connection_leaves_the_listener_alone() {
    let Some((node, client)) = wired(
        ("lstnode", "c0", &["192.0.2.1/24"]),
        crate::support::netns::FIREWALL,
        ("lstcli", "n0", &["192.0.2.3/24"]),
    ) else {
        return;
    };
    let dir = crate::support::TempDir::new("lst");
    let d = crate::support::daemon::Daemon::start_in(&node, &dir, &["--dport=443", "--window=1h"]);
    let listener = node.in_netns(|| TcpListener::bind("0.0.0.0:443").unwrap());
    listener.set_nonblocking(false).unwrap();
    // A real connection of a second device, banned: the enforcer learns the
    // node's local address from its kill.
    let line = |user: &str, peer: &str| {
        format!(
            "2026/01/30 17:03:38 from {peer} accepted tcp:a.example:443 [in >> out] email: {user}\n"
        )
    };
    let c = client.in_netns(|| TcpStream::connect("192.0.2.1:443").unwrap());
    let (_srv, _) = listener.accept().unwrap();
    let port = c.local_addr().unwrap().port();
    crate::support::daemon::append(&d.access, &line("a@example.com", "192.0.2.2:40000"));
    crate::support::daemon::append(
        &d.access,
        &line("a@example.com", &format!("192.0.2.3:{port}")),
    );
    d.wait_log("ban 192.0.2.3: ended 1 tcp connection(s)");
    // Now a ban whose logged connection (192.0.2.4:5555) does not exist.
    crate::support::daemon::append(&d.access, &line("b@example.com", "192.0.2.2:40001"));
    crate::support::daemon::append(&d.access, &line("b@example.com", "192.0.2.4:5555"));
    d.wait_log("ban 192.0.2.4: ended 0 tcp connection(s)");
    // The listener is alive: it is listed and accepts a new connection.
    let listed = node.ok(&["ss", "-ltnH", "sport = :443"]);
    assert!(
        listed.contains("LISTEN"),
        "the listener is gone: {listed:?}"
    );
    // (From the node itself: the client's own address is banned now.)
    let _c2 = node.in_netns(|| TcpStream::connect("192.0.2.1:443").unwrap());
    let (s2, _) = listener.accept().expect("accept after the ban");
    drop(s2);
}
