//! Per-user bandwidth caps, refract's own parts against the kernel: the
//! conntrack mark dump the shaper asks before it gives a mark back, and
//! (below) the daemon shaping real transfers between namespaces.

use std::time::Duration;

use refract::nl::buf::NlBuf;
use refract::nl::conntrack::{self, MarkDump};
use refract::nl::consts::NETLINK_NETFILTER;
use refract::nl::socket::NlSocket;

use crate::support::netns::{veth, Netns};
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
    let Some(server) = Netns::with_tools("shmd", &["conntrack", "nft"]) else {
        return;
    };
    let Some(client) = Netns::new("shmdc") else {
        return;
    };
    veth(
        &server,
        "md0",
        &["10.78.0.1/24", "fd78::1/64"],
        &client,
        "md1",
        &["10.78.0.2/24", "fd78::2/64"],
    );
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
