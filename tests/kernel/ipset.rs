//! ipset over netlink against the real kernel, inside a throwaway network
//! namespace, with the `ipset` CLI as the independent witness. Skips (with
//! the reason printed) when not root or when `ip`/`ipset` are missing.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::netns::Netns;
use crate::support::PROMPT;
use refract::key::Key;
use refract::nl::buf::NlBuf;
use refract::nl::consts::*;
use refract::nl::ipset::*;
use refract::nl::socket::NlSocket;

/// How long one request may wait for the kernel's answer (microseconds).
const T: Duration = PROMPT;

/// Sends one request built by `f` and waits for the answer.
fn req(
    s: &mut NlSocket,
    f: impl FnOnce(&mut NlBuf, u32),
) -> io::Result<Vec<refract::nl::socket::OwnedMsg>> {
    let seq = s.next_seq();
    let mut b = NlBuf::new();
    f(&mut b, seq);
    s.request(&b, T)
}

fn revision(s: &mut NlSocket, typename: &str, family: Family) -> u8 {
    let msgs = req(s, |b, q| TypeQuery { typename, family }.emit(b, q)).unwrap();
    parse_type(&msgs[0].as_msg()).unwrap().1
}

fn list(s: &mut NlSocket, set: &str, header_only: bool) -> io::Result<SetInfo> {
    let msgs = req(s, |b, q| {
        List {
            set: Some(set),
            header_only,
        }
        .emit(b, q)
    })?;
    let mut p = ListParser::new();
    for m in &msgs {
        p.feed(&m.as_msg()).unwrap();
    }
    assert_eq!(p.sets.len(), 1);
    Ok(p.sets.remove(0))
}

fn v4(s: &str) -> Key {
    Key::V4(s.parse::<Ipv4Addr>().unwrap())
}

#[test]
fn v4_create_add_test_del_list_flush_destroy() {
    let Some(n) = Netns::with_tools("ipset4", &["ipset"]) else {
        return;
    };
    let set = DEFAULT_SET_V4;
    n.in_netns(|| {
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0).unwrap();
        let msgs = req(&mut s, |b, q| Protocol.emit(b, q)).unwrap();
        assert_eq!(msgs.len(), 1);
        let rev = revision(&mut s, "hash:ip", Family::V4);
        req(&mut s, |b, q| Create::v4(set, rev, 600, 1000).emit(b, q)).unwrap();
        // Creating the identical set again is fine (no NLM_F_EXCL).
        req(&mut s, |b, q| Create::v4(set, rev, 600, 1000).emit(b, q)).unwrap();
        for (ip, t) in [("192.0.2.7", 300), ("198.51.100.9", 40)] {
            req(&mut s, |b, q| {
                Add {
                    set,
                    key: v4(ip),
                    timeout: Some(t),
                }
                .emit(b, q)
            })
            .unwrap();
        }
        req(&mut s, |b, q| {
            Test {
                set,
                key: v4("192.0.2.7"),
            }
            .emit(b, q)
        })
        .unwrap();
        let e = req(&mut s, |b, q| {
            Test {
                set,
                key: v4("192.0.2.8"),
            }
            .emit(b, q)
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(IPSET_ERR_EXIST), "{e}");
        let info = list(&mut s, set, false).unwrap();
        assert_eq!(
            (info.typename.as_str(), info.family),
            ("hash:ip", NFPROTO_IPV4)
        );
        assert_eq!((info.timeout, info.maxelem), (Some(600), Some(1000)));
        let mut m = info.members.clone();
        m.sort_by_key(|m| m.key);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].key, v4("192.0.2.7"));
        assert!((295..=300).contains(&m[0].timeout.unwrap()), "{m:?}");
        assert!((35..=40).contains(&m[1].timeout.unwrap()), "{m:?}");
        req(&mut s, |b, q| {
            Del {
                set,
                key: v4("198.51.100.9"),
            }
            .emit(b, q)
        })
        .unwrap();
    });
    // Witness: the CLI sees the set, its header and the one entry left.
    let out = n.ok(&["ipset", "list", set]);
    assert!(out.contains("Type: hash:ip"), "{out}");
    assert!(
        out.contains("family inet ") && out.contains("maxelem 1000 timeout 600"),
        "{out}"
    );
    assert!(out.contains("192.0.2.7 timeout "), "{out}");
    assert!(!out.contains("198.51.100.9"), "{out}");
    n.in_netns(|| {
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0).unwrap();
        req(&mut s, |b, q| Flush { set }.emit(b, q)).unwrap();
        // Deleting an absent element is not an error (no NLM_F_EXCL).
        req(&mut s, |b, q| {
            Del {
                set,
                key: v4("192.0.2.7"),
            }
            .emit(b, q)
        })
        .unwrap();
    });
    let out = n.ok(&["ipset", "list", set]);
    assert!(out.contains("Number of entries: 0"), "{out}");
    n.in_netns(|| {
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0).unwrap();
        req(&mut s, |b, q| Destroy { set }.emit(b, q)).unwrap();
        let e = req(&mut s, |b, q| Destroy { set }.emit(b, q)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        let e = list(&mut s, set, true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        let e = req(&mut s, |b, q| {
            Add {
                set,
                key: v4("192.0.2.7"),
                timeout: None,
            }
            .emit(b, q)
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    });
    assert!(!n.exec(&["ipset", "list", set]).status.success());
}

#[test]
fn v6_prefix_entries_and_timeout_update_on_readd() {
    let Some(n) = Netns::with_tools("ipset6", &["ipset"]) else {
        return;
    };
    let set = DEFAULT_SET_V6;
    let key = Key::new("2001:db8:5:6::abcd".parse().unwrap(), 64);
    n.in_netns(|| {
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0).unwrap();
        let rev = revision(&mut s, "hash:net", Family::V6);
        req(&mut s, |b, q| {
            Create::v6(set, rev, 60, DEFAULT_MAXELEM).emit(b, q)
        })
        .unwrap();
        req(&mut s, |b, q| {
            Add {
                set,
                key,
                timeout: Some(30),
            }
            .emit(b, q)
        })
        .unwrap();
        // An address inside the /64 matches; one outside does not.
        let inside = Key::new("2001:db8:5:6::1".parse().unwrap(), 128);
        let outside = Key::new("2001:db8:5:7::1".parse().unwrap(), 128);
        req(&mut s, |b, q| Test { set, key: inside }.emit(b, q)).unwrap();
        let e = req(&mut s, |b, q| Test { set, key: outside }.emit(b, q)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(IPSET_ERR_EXIST));
        // A changed timeout reaches the existing entry on the next add,
        // without touching the set (its default stays 60).
        req(&mut s, |b, q| {
            Add {
                set,
                key,
                timeout: Some(5000),
            }
            .emit(b, q)
        })
        .unwrap();
        let info = list(&mut s, set, false).unwrap();
        assert_eq!(info.timeout, Some(60));
        assert_eq!(info.members.len(), 1);
        assert_eq!(info.members[0].key, key);
        assert!(info.members[0].timeout.unwrap() > 4990, "{info:?}");
    });
    let out = n.ok(&["ipset", "list", set]);
    assert!(
        out.contains("Type: hash:net") && out.contains("family inet6"),
        "{out}"
    );
    // 5000 s, minus the time since the add (the witness may list within
    // the same second, or a little later).
    let left: u32 = out
        .split("2001:db8:5:6::/64 timeout ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no /64 entry with a timeout: {out}"));
    assert!((4990..=5000).contains(&left), "{out}");
}

#[test]
fn header_list_reports_wrong_type_and_missing_timeout() {
    let Some(n) = Netns::with_tools("ipsetw", &["ipset"]) else {
        return;
    };
    n.ok(&["ipset", "create", DEFAULT_SET_V4, "hash:net"]);
    n.ok(&["ipset", "create", "plain", "hash:ip"]);
    n.in_netns(|| {
        let mut s = NlSocket::open(NETLINK_NETFILTER, 0).unwrap();
        let info = list(&mut s, DEFAULT_SET_V4, true).unwrap();
        assert_eq!(info.typename, "hash:net");
        assert!(info.members.is_empty());
        let info = list(&mut s, "plain", true).unwrap();
        assert_eq!((info.typename.as_str(), info.timeout), ("hash:ip", None));
        // A per-entry timeout on a set without timeout support.
        let e = req(&mut s, |b, q| {
            Add {
                set: "plain",
                key: v4("192.0.2.1"),
                timeout: Some(5),
            }
            .emit(b, q)
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(IPSET_ERR_TIMEOUT), "{e}");
        // Creating ours over a same-named set of other parameters: EEXIST.
        let rev = revision(&mut s, "hash:ip", Family::V4);
        let e = req(&mut s, |b, q| {
            Create::v4(DEFAULT_SET_V4, rev, 60, 10).emit(b, q)
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    });
}
