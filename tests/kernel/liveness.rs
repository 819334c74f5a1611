//! The liveness facts against the real kernel: the `struct tcp_info` that
//! refract reads out of a sock_diag dump (`INET_DIAG_INFO`,
//! `refract::nl::diag::parse_tcp_info`) is what `ss -ti` (iproute2, an
//! independent reader of the same attribute) prints for the same socket,
//! and `refract::liveness::in_use` judges a download in flight as in use
//! and the same connection idle as not. In a throwaway namespace, over its
//! loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use refract::clock::SECOND;
use refract::key::Key;
use refract::liveness::in_use;
use refract::nl::buf::NlBuf;
use refract::nl::consts::NETLINK_SOCK_DIAG;
use refract::nl::diag::{self, DumpRequest, Remote, TcpInfo, WITH_TCP_INFO};
use refract::nl::socket::NlSocket;

use refract::liveness::kernel::Liveness;
use refract::liveness::track::{Locals, Resolved, TrackStats, Tracker};
use refract::sys::time::monotonic;

use crate::support::netns::{veth, Netns};
use crate::support::PROMPT;

const AF_INET: u8 = libc::AF_INET as u8;
const TCP: u8 = libc::IPPROTO_TCP as u8;

/// The `tcp_info` of the server side of the connection from 127.0.0.1 to
/// port 443, from one dump that asks for it.
fn look(ns: &Netns) -> TcpInfo {
    ns.in_netns(|| {
        let mut sock = NlSocket::open(NETLINK_SOCK_DIAG, 0).unwrap();
        let mut buf = NlBuf::new();
        let seq = sock.next_seq();
        let key = Key::V4("127.0.0.1".parse().unwrap());
        DumpRequest {
            family: AF_INET,
            protocol: TCP,
            ports: &[443],
            remote: Remote::In(std::slice::from_ref(&key)),
            ext: WITH_TCP_INFO,
        }
        .emit(&mut buf, seq)
        .unwrap();
        let replies = sock.request(&buf, PROMPT).unwrap();
        let infos: Vec<TcpInfo> = replies
            .iter()
            .filter_map(|m| diag::parse_tcp_info(&m.as_msg()))
            .collect();
        assert_eq!(infos.len(), 1, "one server-side socket: {infos:?}");
        infos[0]
    })
}

/// `name:VALUE` of `ss -tin` for the server side of the connection.
fn ss_field(ns: &Netns, name: &str) -> u64 {
    let out = ns.ok(&["ss", "-tinH", "state", "established", "sport", "= :443"]);
    let field = format!("{name}:");
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&field))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in ss -ti:\n{out}"))
}

#[test]
fn tcp_info_is_what_ss_reads_and_judges_a_download() {
    let Some(ns) = Netns::with_tools("live", &["ss"]) else {
        return;
    };
    let (server, client) = ns.in_netns(|| {
        let l = TcpListener::bind("127.0.0.1:443").unwrap();
        let c = TcpStream::connect("127.0.0.1:443").unwrap();
        let (s, _) = l.accept().unwrap();
        (s, c)
    });
    let (mut server, mut client) = (server, client);
    // A download of 100,000 bytes, read to the end by the client: all of
    // it acknowledged, nothing in flight.
    let chunk = vec![7u8; 100_000];
    server.write_all(&chunk).unwrap();
    let mut got = vec![0u8; chunk.len()];
    client.set_read_timeout(Some(PROMPT)).unwrap();
    client.read_exact(&mut got).unwrap();
    // Until the last ACK is in: unacked back to 0.
    let mut idle = look(&ns);
    for _ in 0..100 {
        if idle.unacked == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        idle = look(&ns);
    }
    assert_eq!(idle.state, diag::TCP_ESTABLISHED);
    assert_eq!(idle.unacked, 0, "{idle:?}");
    assert_eq!(Some(ss_field(&ns, "bytes_acked")), idle.bytes_acked);
    // The client never sent data: `ss` prints lastrcv since the handshake.
    let lastrcv = ss_field(&ns, "lastrcv");
    let lastack = ss_field(&ns, "lastack");
    let lastsnd = ss_field(&ns, "lastsnd");
    let near = |a: u64, b: u32| a.abs_diff(u64::from(b)) < 1_000;
    assert!(
        near(lastrcv, idle.last_data_recv_ms),
        "{lastrcv} vs {idle:?}"
    );
    assert!(
        near(lastack, idle.last_ack_recv_ms),
        "{lastack} vs {idle:?}"
    );
    assert!(
        near(lastsnd, idle.last_data_sent_ms),
        "{lastsnd} vs {idle:?}"
    );
    eprintln!(
        "idle after the download: {idle:?}; ss lastsnd={lastsnd} lastrcv={lastrcv} \
         lastack={lastack}"
    );

    // A window of 1 s: once a second and a half has passed without data or
    // anything new acknowledged, the connection is not in use.
    let w = SECOND;
    std::thread::sleep(Duration::from_millis(1_500));
    let later = look(&ns);
    let (used, _) = in_use(None, 0, &later, w);
    assert!(!used, "idle connection judged in use: {later:?}");
    // New data to the client, acknowledged by its kernel (the client
    // process need not read it) since the previous look: in use.
    let first = refract::liveness::Look {
        at: 0,
        bytes_acked: later.bytes_acked,
    };
    server.write_all(&[1u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let busy = look(&ns);
    let (used, _) = in_use(Some(first), SECOND / 10, &busy, w);
    assert!(used, "a download judged idle: {busy:?}");
    drop((server, client));
}

/// A node (192.0.2.1, 2001:db8::1) and a client (…::2) namespace joined
/// by a veth; `None` (skipped, with the reason) without root or `tools`.
fn node_and_client(tag: &str, tools: &[&str]) -> Option<(Netns, Netns)> {
    let node = Netns::with_tools(&format!("{tag}node"), tools)?;
    let client = Netns::new(&format!("{tag}cli"))?;
    veth(
        &node,
        "c0",
        &["192.0.2.1/24", "2001:db8::1/64"],
        &client,
        "n0",
        &["192.0.2.2/24", "2001:db8::2/64"],
    );
    Some((node, client))
}

/// Records `peers` as `user`'s connections (a key each), starts the check
/// of a newcomer's line, sends its lookups and reads the answers until it
/// resolves (the kernel answers inside sendmsg; bounded all the same); the
/// resolved checks, the tracker's table size and counters.
fn run_check(
    live: &mut Liveness,
    user: &[u8],
    peers: &[std::net::SocketAddr],
) -> (Vec<Resolved>, (usize, usize), TrackStats) {
    let now = monotonic();
    let key = |p: std::net::SocketAddr| Key::new(p.ip(), 64);
    // The user's lines, one per connection, then a newcomer's.
    for &p in peers {
        live.tracker.record(now, user, key(p), p, b"in", 1);
    }
    let newcomer: std::net::SocketAddr = "203.0.113.9:4000".parse().unwrap();
    live.tracker
        .record(now, user, key(newcomer), newcomer, b"in", 1);
    assert!(live
        .tracker
        .check_newcomer(now, user, key(newcomer), b"line"));
    live.pump(now);
    let mut resolved = live.tracker.take_resolved();
    let deadline = std::time::Instant::now() + PROMPT;
    while resolved.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        live.ready(monotonic());
        live.ready_udp(monotonic());
        resolved = live.tracker.take_resolved();
    }
    (resolved, live.tracker.tracked(), live.tracker.stats.clone())
}

/// Attribution and lookups end to end against the kernel: a node with a
/// dual-stack listener on [::]:443 and clients in another namespace over
/// IPv4 (seen on the node as `::ffff:` sockets) and IPv6. One user's
/// connections on three keys are recorded like log lines; a newcomer check
/// sends exact lookups (no dump) on the node's own sock_diag socket and
/// must come back with exactly one fact (the IPv4 client that just sent
/// data), keep the idle IPv6 connection without a fact, and forget the
/// connection that was closed.
#[test]
fn exact_lookups_attribute_lines_and_find_what_is_in_use() {
    let Some((node, client)) = node_and_client("live", &[]) else {
        return;
    };
    let listener = node.in_netns(|| std::net::TcpListener::bind("[::]:443").unwrap());
    let connect = |addr: &str| {
        let c = client.in_netns(|| TcpStream::connect(addr).unwrap());
        let (s, peer) = listener.accept().unwrap();
        (c, s, peer)
    };
    let (mut busy_c, _busy_s, busy_peer) = connect("192.0.2.1:443");
    let (_idle_c, _idle_s, idle_peer) = connect("[2001:db8::1]:443");
    let (closed_c, closed_s, closed_peer) = connect("192.0.2.1:443");
    drop((closed_c, closed_s));
    // The node's view: an IPv4 client of a dual-stack listener is mapped.
    assert!(
        busy_peer.ip().to_string().starts_with("::ffff:"),
        "{busy_peer}"
    );
    let window = SECOND;
    // Let the idle connection be idle for longer than the window, then the
    // busy one send data.
    std::thread::sleep(Duration::from_millis(1_300));
    busy_c.write_all(b"hello").unwrap();
    std::thread::sleep(Duration::from_millis(50));

    let (resolved, tracked, stats) = node.in_netns(|| {
        let addrs = refract::sys::ifaddrs::local_addresses().unwrap();
        let locals = Locals::new(&addrs);
        assert_eq!(locals.len(), 2, "{addrs:?}");
        let mut live = Liveness::open(Tracker::new(window, &[443], locals), false).unwrap();
        run_check(&mut live, b"alice", &[busy_peer, idle_peer, closed_peer])
    });
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let r = &resolved[0];
    assert!(!r.timed_out, "{r:?}");
    let facts: Vec<Key> = r.facts.iter().map(|f| f.key).collect();
    assert_eq!(facts, [Key::new(busy_peer.ip(), 64)], "{r:?}");
    assert_eq!(r.lines.len(), 1);
    // The busy and the idle connection and the newcomer's are kept; the
    // closed one is gone (its port answered ENOENT, or TIME_WAIT).
    assert_eq!(tracked, (3, 1), "{stats:?}");
    assert_eq!(stats.gone, 1, "{stats:?}");
    // Two local addresses, one per family: one lookup per connection.
    assert_eq!(stats.lookups, 3, "{stats:?}");
    eprintln!("liveness stats: {stats:?}");
}

/// UDP flows (`--proto udp`): a line's client address and port name a
/// conntrack flow to the node, looked up exactly (`IPCTNL_MSG_CT_GET` of
/// its original tuple); its last packet's age comes from the entry's
/// remaining timeout. A flow that just carried a packet is in use, one
/// silent for longer than the window is kept without a fact, one that
/// never existed is forgotten.
#[test]
fn conntrack_flows_are_looked_up_exactly() {
    let Some((node, client)) = node_and_client("livudp", &["iptables", "ip6tables"]) else {
        return;
    };
    crate::support::rules::track_connections(&node);
    let server = node.in_netns(|| std::net::UdpSocket::bind("0.0.0.0:443").unwrap());
    let send = |sock: &std::net::UdpSocket| sock.send_to(b"ping", "192.0.2.1:443").unwrap();
    let (quiet, busy) = client.in_netns(|| {
        (
            std::net::UdpSocket::bind("192.0.2.2:0").unwrap(),
            std::net::UdpSocket::bind("192.0.2.2:0").unwrap(),
        )
    });
    send(&quiet);
    let window = 2 * SECOND;
    std::thread::sleep(Duration::from_millis(3_200));
    send(&busy);
    // The node saw both (and conntrack has both flows).
    let mut buf = [0u8; 16];
    server.set_read_timeout(Some(PROMPT)).unwrap();
    for _ in 0..2 {
        server.recv_from(&mut buf).unwrap();
    }
    let peer = |s: &std::net::UdpSocket| s.local_addr().unwrap();
    let gone: std::net::SocketAddr = "192.0.2.2:9".parse().unwrap();

    let (resolved, tracked, stats) = node.in_netns(|| {
        let locals = Locals::new(&refract::sys::ifaddrs::local_addresses().unwrap());
        let tracker = Tracker::with_protos(window, &[443], locals, false, true);
        let mut live = Liveness::open(tracker, true).unwrap();
        // One user, one key (the client's address), three flows.
        run_check(&mut live, b"bob", &[peer(&quiet), peer(&busy), gone])
    });
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let r = &resolved[0];
    assert!(!r.timed_out, "{r:?} {stats:?}");
    assert_eq!(r.facts.len(), 1, "{r:?}");
    assert_eq!(r.facts[0].peer, peer(&busy), "{r:?}");
    // quiet and busy kept, the one that never existed forgotten; plus the
    // newcomer's own.
    assert_eq!(stats.gone, 1, "{stats:?}");
    assert_eq!(tracked, (3, 1), "{stats:?}");
    eprintln!("udp liveness: {r:?}; {stats:?}");
}
