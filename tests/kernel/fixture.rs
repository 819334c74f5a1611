//! Self-test of the namespace fixture: creation, exec, in_netns, veth,
//! and cleanup on drop.

use std::net::{TcpListener, TcpStream};

use crate::support::netns::{veth, Netns};
use crate::support::PROMPT;

#[test]
fn netns_lifecycle_veth_and_in_netns() {
    let Some(a) = Netns::new("fixa") else { return };
    let Some(b) = Netns::new("fixb") else { return };
    assert!(a.path().exists());
    veth(
        &a,
        "va",
        &["10.99.0.1/24", "2001:db8:99::1/64"],
        &b,
        "vb",
        &["10.99.0.2/24", "2001:db8:99::2/64"],
    );
    // Traffic crosses the pair, v4 and v6: a listener in `b`, a client in `a`.
    for (bind, dst) in [
        ("10.99.0.2:4000", "10.99.0.2:4000"),
        ("[2001:db8:99::2]:4000", "[2001:db8:99::2]:4000"),
    ] {
        let l = b.in_netns(|| TcpListener::bind(bind).unwrap());
        let c = a.in_netns(|| TcpStream::connect_timeout(&dst.parse().unwrap(), PROMPT));
        c.unwrap_or_else(|e| panic!("connect {dst}: {e}"));
        let (_, peer) = l.accept().unwrap();
        assert!(peer.ip().to_string().starts_with(if bind.starts_with('[') {
            "2001:db8:99::1"
        } else {
            "10.99.0.1"
        }));
    }
    // in_netns: a thread inside `a` sees va, the host does not.
    let names = a.in_netns(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    assert!(names.contains("va:"), "{names}");
    let host = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    assert!(!host.contains(" va:"), "host sees the veth: {host}");
    // Drop removes the namespace.
    let path = a.path();
    drop(a);
    assert!(!path.exists());
}

/// The measured transfer of the bandwidth tests moves bytes both ways
/// across a veth pair and stops when dropped.
#[test]
fn transfer_moves_bytes_both_ways_and_stops() {
    use crate::support::transfer::{self, Dir};
    let Some(a) = Netns::new("xfa") else { return };
    let Some(b) = Netns::new("xfb") else { return };
    veth(&a, "xa0", &["10.77.0.1/24"], &b, "xb0", &["10.77.0.2/24"]);
    for dir in [Dir::Down, Dir::Up] {
        let f = transfer::start(&a, "10.77.0.1:0".parse().unwrap(), &b, dir);
        assert_eq!(f.client.ip().to_string(), "10.77.0.2");
        let rate = f.rate_bps(std::time::Duration::from_millis(300));
        eprintln!("{dir:?}: {:.0} Mbit/s unshaped", rate / 1e6);
        assert!(rate > 0.0 && f.received() > 0, "{dir:?}: nothing moved");
    }
}
