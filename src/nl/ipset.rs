//! ipset over nfnetlink (`NFNL_SUBSYS_IPSET`): one request type per kernel
//! command, each with `emit(&self, buf, seq)`, and a parser for list
//! replies.
//!
//! Wire format (`/usr/include/linux/netfilter/ipset/ip_set.h`, kernel
//! `net/netfilter/ipset/ip_set_core.c`): `nlmsghdr` with type
//! `NFNL_SUBSYS_IPSET << 8 | cmd`, a 4-byte `struct nfgenmsg` (family
//! `NFPROTO_IPV4`, as libipset sends it: the set's family travels in
//! `IPSET_ATTR_FAMILY`), then attributes with `IPSET_ATTR_PROTOCOL` first.
//! The kernel rejects a request without the protocol attribute, or with a
//! value below `IPSET_PROTOCOL_MIN`, with `IPSET_ERR_PROTOCOL`. Element data
//! sits in a nested `IPSET_ATTR_DATA`; addresses are a nested `IPSET_ATTR_IP`
//! holding `IPSET_ATTR_IPADDR_IPV4`/`_IPV6` flagged `NLA_F_NET_BYTEORDER`;
//! 32-bit numbers inside data (timeout, maxelem, hashsize) are big-endian
//! and must carry `NLA_F_NET_BYTEORDER` too (`ip_set_attr_netorder()`), or
//! the kernel answers `IPSET_ERR_PROTOCOL`.
//!
//! Semantics worth knowing (ip_set_core.c): without `NLM_F_EXCL` the kernel
//! sets `IPSET_FLAG_EXIST`, so ADD of a present element *updates* its
//! timeout (that is how a changed `--timeout` reaches old bans) and CREATE of
//! an identical set succeeds; CREATE of a same-named set with any other
//! parameter (even the default timeout) fails with `EEXIST`. TEST answers
//! an ACK when the element is present and `IPSET_ERR_EXIST` when not.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::key::Key;
use crate::nl::buf::NlBuf;
use crate::nl::consts::*;
use crate::nl::msg::{Attr, Attrs, Msg};

/// The IPv4 set: the Go version's name, so its DROP rule keeps matching.
pub const DEFAULT_SET_V4: &str = "refract_banned_users";
/// The IPv6 set (`hash:net`, one entry per banned prefix).
pub const DEFAULT_SET_V6: &str = "refract_banned_users6";
/// Default `maxelem` (the kernel's own default too).
pub const DEFAULT_MAXELEM: u32 = 65536;
/// Largest timeout the kernel accepts, in seconds
/// (`IPSET_MAX_TIMEOUT` in `include/linux/netfilter/ipset/ip_set_timeout.h`:
/// `(UINT_MAX >> 1) / MSEC_PER_SEC`).
pub const MAX_TIMEOUT: u32 = (u32::MAX >> 1) / 1000;

/// The set families refract uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `NFPROTO_IPV4` / `NFPROTO_IPV6`.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::V4 => NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        }
    }

    pub fn from_nfproto(v: u8) -> Option<Family> {
        match v {
            NFPROTO_IPV4 => Some(Family::V4),
            NFPROTO_IPV6 => Some(Family::V6),
            _ => None,
        }
    }

    /// The word `ipset` uses (`family inet6`).
    pub fn ipset_word(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    /// The index of the family in per-family arrays: v4 first, v6 second.
    pub fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    pub fn of(key: Key) -> Family {
        if key.is_v4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Writes the message header, the `nfgenmsg` and `IPSET_ATTR_PROTOCOL`,
/// then `body`.
fn message(buf: &mut NlBuf, cmd: u8, flags: u16, seq: u32, body: impl FnOnce(&mut NlBuf)) {
    buf.message(ipset_msg_type(cmd), NLM_F_REQUEST | flags, seq, |b| {
        // struct nfgenmsg: family, version, res_id (be16, 0).
        b.put(&[NFPROTO_IPV4, NFNETLINK_V0, 0, 0]);
        b.attr_u8(IPSET_ATTR_PROTOCOL, IPSET_PROTOCOL);
        body(b);
    });
}

/// `IPSET_ATTR_IP { IPSET_ATTR_IPADDR_IPV4|6 (net order) }`.
fn put_ip(b: &mut NlBuf, ip: IpAddr) {
    b.nested(IPSET_ATTR_IP, |b| match ip {
        IpAddr::V4(a) => b.attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
        IpAddr::V6(a) => b.attr(IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
    });
}

/// The element data of a key: the address, and for an IPv6 prefix shorter
/// than 128 its `IPSET_ATTR_CIDR` (the v6 set is `hash:net`).
fn put_key(b: &mut NlBuf, key: Key) {
    put_ip(b, key.addr());
    if let Key::V6(_, p) = key {
        b.attr_u8(IPSET_ATTR_CIDR, p);
    }
}

fn put_be32(b: &mut NlBuf, ty: u16, v: u32) {
    b.attr_u32_be(ty | NLA_F_NET_BYTEORDER, v);
}

/// `IPSET_CMD_PROTOCOL`: asks the kernel for its protocol range. The
/// cheapest way to learn at startup whether ip_set exists at all. Asks
/// for an ACK after the data reply so a waiting caller knows it is over.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protocol;

impl Protocol {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_PROTOCOL, NLM_F_ACK, seq, |_| {});
    }
}

/// `IPSET_CMD_TYPE`: the revision range of a set type for a family
/// (the answer carries `IPSET_ATTR_REVISION` = max, `_REVISION_MIN`),
/// followed by an ACK.
#[derive(Clone, Copy, Debug)]
pub struct TypeQuery<'a> {
    pub typename: &'a str,
    pub family: Family,
}

impl TypeQuery<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_TYPE, NLM_F_ACK, seq, |b| {
            b.attr_str(IPSET_ATTR_TYPENAME, self.typename);
            b.attr_u8(IPSET_ATTR_FAMILY, self.family.nfproto());
        });
    }
}

/// Parses a `TypeQuery` answer: `(revision_min, revision_max)`.
pub fn parse_type(msg: &Msg<'_>) -> Option<(u8, u8)> {
    let (mut min, mut max) = (None, None);
    for a in Attrs::new(msg.payload.get(NFGENMSG_LEN..)?) {
        match a.ty {
            IPSET_ATTR_REVISION => max = a.u8(),
            IPSET_ATTR_REVISION_MIN => min = a.u8(),
            _ => {}
        }
    }
    Some((min.unwrap_or(0), max?))
}

/// `IPSET_CMD_CREATE` of a set with timeout support.
#[derive(Clone, Copy, Debug)]
pub struct Create<'a> {
    pub name: &'a str,
    /// `hash:ip`, `hash:net`.
    pub typename: &'a str,
    pub family: Family,
    /// The type revision (ask with [`TypeQuery`]; the kernel refuses one
    /// outside the type's range with `IPSET_ERR_FIND_TYPE`).
    pub revision: u8,
    /// Default entry timeout in seconds. Every ADD refract sends carries
    /// its own timeout; this only makes the set timeout-capable and covers
    /// entries added by hand.
    pub timeout: u32,
    pub maxelem: u32,
}

impl<'a> Create<'a> {
    /// The v4 set: `hash:ip family inet`.
    pub fn v4(name: &'a str, revision: u8, timeout: u32, maxelem: u32) -> Create<'a> {
        Create {
            name,
            typename: "hash:ip",
            family: Family::V4,
            revision,
            timeout,
            maxelem,
        }
    }

    /// The v6 set: `hash:net family inet6`.
    pub fn v6(name: &'a str, revision: u8, timeout: u32, maxelem: u32) -> Create<'a> {
        Create {
            name,
            typename: "hash:net",
            family: Family::V6,
            revision,
            timeout,
            maxelem,
        }
    }

    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_CREATE, NLM_F_ACK | NLM_F_CREATE, seq, |b| {
            b.attr_str(IPSET_ATTR_SETNAME, self.name);
            b.attr_str(IPSET_ATTR_TYPENAME, self.typename);
            b.attr_u8(IPSET_ATTR_REVISION, self.revision);
            b.attr_u8(IPSET_ATTR_FAMILY, self.family.nfproto());
            b.nested(IPSET_ATTR_DATA, |b| {
                put_be32(b, IPSET_ATTR_TIMEOUT, self.timeout.min(MAX_TIMEOUT));
                put_be32(b, IPSET_ATTR_MAXELEM, self.maxelem);
            });
        });
    }

    /// The shell command that creates the same set (for messages).
    pub fn command(&self) -> String {
        format!(
            "ipset create {} {} family {} timeout {} maxelem {}",
            self.name,
            self.typename,
            self.family.ipset_word(),
            self.timeout,
            self.maxelem
        )
    }
}

/// `IPSET_CMD_ADD`: one element, with its own timeout (seconds, clamped
/// to [`MAX_TIMEOUT`]; `None` = the set's default). Re-adding a present
/// element updates its timeout.
#[derive(Clone, Copy, Debug)]
pub struct Add<'a> {
    pub set: &'a str,
    pub key: Key,
    pub timeout: Option<u32>,
}

impl Add<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_ADD, NLM_F_ACK, seq, |b| {
            b.attr_str(IPSET_ATTR_SETNAME, self.set);
            b.nested(IPSET_ATTR_DATA, |b| {
                put_key(b, self.key);
                if let Some(t) = self.timeout {
                    put_be32(b, IPSET_ATTR_TIMEOUT, t.min(MAX_TIMEOUT));
                }
            });
        });
    }
}

/// `IPSET_CMD_DEL`: one element. Sent without `NLM_F_EXCL`, so deleting an
/// absent element is not an error (`call_ad()` forgives `IPSET_ERR_EXIST`
/// under `IPSET_FLAG_EXIST`).
#[derive(Clone, Copy, Debug)]
pub struct Del<'a> {
    pub set: &'a str,
    pub key: Key,
}

impl Del<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_DEL, NLM_F_ACK, seq, |b| {
            b.attr_str(IPSET_ATTR_SETNAME, self.set);
            b.nested(IPSET_ATTR_DATA, |b| put_key(b, self.key));
        });
    }
}

/// `IPSET_CMD_TEST`: ACK when the element is in the set,
/// `IPSET_ERR_EXIST` when not.
#[derive(Clone, Copy, Debug)]
pub struct Test<'a> {
    pub set: &'a str,
    pub key: Key,
}

impl Test<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_TEST, NLM_F_ACK, seq, |b| {
            b.attr_str(IPSET_ATTR_SETNAME, self.set);
            b.nested(IPSET_ATTR_DATA, |b| put_key(b, self.key));
        });
    }
}

/// `IPSET_CMD_LIST` (a dump): one set or all, with members or the header
/// only (`IPSET_FLAG_LIST_HEADER`). Parse the answer with [`ListParser`].
#[derive(Clone, Copy, Debug)]
pub struct List<'a> {
    pub set: Option<&'a str>,
    pub header_only: bool,
}

impl List<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        // NLM_F_ACK too: an unknown set name fails in the dump's start
        // callback, which only reports the error when the ack was asked for.
        message(buf, IPSET_CMD_LIST, NLM_F_DUMP | NLM_F_ACK, seq, |b| {
            if let Some(name) = self.set {
                b.attr_str(IPSET_ATTR_SETNAME, name);
            }
            if self.header_only {
                // Host-order u32 per the policy (NLA_U32) but read with
                // ip_set_get_h32(), i.e. as big-endian.
                b.attr_u32_be(IPSET_ATTR_FLAGS, IPSET_FLAG_LIST_HEADER);
            }
        });
    }
}

/// `IPSET_CMD_FLUSH`: removes every element of one set.
#[derive(Clone, Copy, Debug)]
pub struct Flush<'a> {
    pub set: &'a str,
}

impl Flush<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_FLUSH, NLM_F_ACK, seq, |b| {
            b.attr_str(IPSET_ATTR_SETNAME, self.set);
        });
    }
}

/// `IPSET_CMD_DESTROY`: removes one set (`IPSET_ERR_BUSY` while an
/// iptables rule references it). Sent with `NLM_F_EXCL` so an absent set
/// answers `ENOENT`: without it the kernel acks silently
/// (`ip_set_destroy()` under `IPSET_FLAG_EXIST`) and the caller could not
/// tell what it removed.
#[derive(Clone, Copy, Debug)]
pub struct Destroy<'a> {
    pub set: &'a str,
}

impl Destroy<'_> {
    pub fn emit(&self, buf: &mut NlBuf, seq: u32) {
        message(buf, IPSET_CMD_DESTROY, NLM_F_ACK | NLM_F_EXCL, seq, |b| {
            b.attr_str(IPSET_ATTR_SETNAME, self.set);
        });
    }
}

/// One member of a listed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub key: Key,
    /// Seconds left (`None` in a set without timeouts; `Some(0)` is a
    /// permanent entry in a timeout set).
    pub timeout: Option<u32>,
}

/// One set as the kernel lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    pub typename: String,
    /// `NFPROTO_*` (see [`Family::from_nfproto`]).
    pub family: u8,
    pub revision: u8,
    /// The set's default timeout: `Some` when the set supports timeouts.
    pub timeout: Option<u32>,
    pub maxelem: Option<u32>,
    pub elements: Option<u32>,
    /// `References:` (iptables rules and list:set sets using it).
    pub references: Option<u32>,
    pub members: Vec<Member>,
}

/// A list reply that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadList(pub &'static str);

impl fmt::Display for BadList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ipset: malformed list reply: {}", self.0)
    }
}

/// Accumulates the data messages of a list dump. A set too large for one
/// datagram arrives as several messages with the same `SETNAME`; the first
/// carries the header.
#[derive(Clone, Debug, Default)]
pub struct ListParser {
    pub sets: Vec<SetInfo>,
}

impl ListParser {
    pub fn new() -> ListParser {
        ListParser::default()
    }

    /// Feeds one `IPSET_CMD_LIST` data message.
    pub fn feed(&mut self, msg: &Msg<'_>) -> Result<(), BadList> {
        if msg.ty != ipset_msg_type(IPSET_CMD_LIST) {
            return Err(BadList("unexpected message type"));
        }
        let attrs = msg
            .payload
            .get(NFGENMSG_LEN..)
            .ok_or(BadList("short nfgenmsg"))?;
        let name = Attrs::new(attrs)
            .find(|a| a.ty == IPSET_ATTR_SETNAME)
            .ok_or(BadList("no set name"))?;
        let name = String::from_utf8_lossy(name.str()).into_owned();
        let idx = match self.sets.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.sets.push(SetInfo {
                    name,
                    ..SetInfo::default()
                });
                self.sets.len() - 1
            }
        };
        let set = &mut self.sets[idx];
        for a in Attrs::new(attrs) {
            match a.ty {
                IPSET_ATTR_TYPENAME => set.typename = String::from_utf8_lossy(a.str()).into(),
                IPSET_ATTR_FAMILY => set.family = a.u8().ok_or(BadList("family"))?,
                IPSET_ATTR_REVISION => set.revision = a.u8().ok_or(BadList("revision"))?,
                IPSET_ATTR_DATA => {
                    for d in a.attrs() {
                        match d.ty {
                            IPSET_ATTR_TIMEOUT => set.timeout = d.u32_be(),
                            IPSET_ATTR_MAXELEM => set.maxelem = d.u32_be(),
                            IPSET_ATTR_ELEMENTS => set.elements = d.u32_be(),
                            IPSET_ATTR_REFERENCES => set.references = d.u32_be(),
                            _ => {}
                        }
                    }
                }
                IPSET_ATTR_ADT => {
                    for e in a.attrs().filter(|e| e.ty == IPSET_ATTR_DATA) {
                        set.members.push(parse_member(&e)?);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn parse_member(data: &Attr<'_>) -> Result<Member, BadList> {
    let mut ip = None;
    let mut cidr = None;
    let mut timeout = None;
    for a in data.attrs() {
        match a.ty {
            IPSET_ATTR_IP => {
                for x in a.attrs() {
                    ip = match (x.ty, x.payload.len()) {
                        (IPSET_ATTR_IPADDR_IPV4, 4) => {
                            let o: [u8; 4] = x.payload.try_into().expect("length checked");
                            Some(IpAddr::V4(Ipv4Addr::from(o)))
                        }
                        (IPSET_ATTR_IPADDR_IPV6, 16) => {
                            let o: [u8; 16] = x.payload.try_into().expect("length checked");
                            Some(IpAddr::V6(Ipv6Addr::from(o)))
                        }
                        _ => return Err(BadList("member address")),
                    };
                }
            }
            IPSET_ATTR_CIDR => cidr = a.u8(),
            IPSET_ATTR_TIMEOUT => timeout = a.u32_be(),
            _ => {}
        }
    }
    let ip = ip.ok_or(BadList("member without address"))?;
    let key = match ip {
        IpAddr::V4(a) => Key::V4(a),
        IpAddr::V6(a) => Key::new(IpAddr::V6(a), cidr.unwrap_or(128)),
    };
    Ok(Member { key, timeout })
}

/// What an ipset errno means, in `ipset`'s own words where it has them
/// (`lib/errcode.c` of ipset and `ip_set.h`), else the OS string.
pub fn strerror(errno: i32) -> String {
    let s = match errno {
        libc::ENOENT => "the set does not exist",
        libc::EEXIST => "a set with the same name already exists with other parameters",
        libc::EPERM => "operation not permitted (needs CAP_NET_ADMIN)",
        libc::EPROTONOSUPPORT => "the kernel has no ip_set support",
        IPSET_ERR_PROTOCOL => "kernel rejected the request (protocol error)",
        IPSET_ERR_FIND_TYPE => "set type or revision not supported by the kernel",
        IPSET_ERR_MAX_SETS => "kernel ran out of set slots",
        IPSET_ERR_BUSY => "set is in use by a firewall rule",
        IPSET_ERR_TYPE_MISMATCH => "set type mismatch",
        IPSET_ERR_EXIST => "element is not in the set / already added",
        IPSET_ERR_INVALID_CIDR => "invalid prefix length",
        IPSET_ERR_INVALID_FAMILY => "address family does not match the set",
        IPSET_ERR_TIMEOUT => "the set has no timeout support",
        IPSET_ERR_REFERENCED => "set is referenced",
        IPSET_ERR_IPADDR_IPV4 => "invalid IPv4 address",
        IPSET_ERR_IPADDR_IPV6 => "invalid IPv6 address",
        IPSET_ERR_HASH_FULL => "the set is full (maxelem reached)",
        IPSET_ERR_HASH_ELEM => "invalid element for this set type",
        _ => return std::io::Error::from_raw_os_error(errno).to_string(),
    };
    s.to_string()
}

/// Annotated byte fixtures. Netlink headers are host order; the fixtures
/// are written for little-endian hosts (x86, arm64), where the kernel tests
/// in `tests/kernel_ipset.rs` prove the kernel takes them.
#[cfg(all(test, target_endian = "little"))]
mod tests {

    use super::*;
    use crate::nl::buf::NlBuf;

    fn emit(f: impl FnOnce(&mut NlBuf)) -> Vec<u8> {
        let mut b = NlBuf::new();
        f(&mut b);
        b.as_bytes().to_vec()
    }

    const V4: Key = Key::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[rustfmt::skip]
    #[test]
    fn add_v4_with_timeout() {
        let got = emit(|b| Add { set: "refract_banned_users", key: V4, timeout: Some(300) }.emit(b, 0x0102_0304));
        let want: &[u8] = &[
            // nlmsghdr
            80, 0, 0, 0,             // nlmsg_len = 80
            0x09, 0x06,              // type = NFNL_SUBSYS_IPSET(6) << 8 | IPSET_CMD_ADD(9)
            0x05, 0x00,              // flags = NLM_F_REQUEST | NLM_F_ACK
            0x04, 0x03, 0x02, 0x01,  // seq
            0, 0, 0, 0,              // pid
            // nfgenmsg
            2, 0, 0, 0,              // NFPROTO_IPV4, NFNETLINK_V0, res_id 0
            // IPSET_ATTR_PROTOCOL = 7
            5, 0, 1, 0, 7, 0, 0, 0,
            // IPSET_ATTR_SETNAME "refract_banned_users\0" (21 bytes) + 3 pad
            25, 0, 2, 0,
            b'r', b'e', b'f', b'r', b'a', b'c', b't', b'_', b'b', b'a', b'n', b'n',
            b'e', b'd', b'_', b'u', b's', b'e', b'r', b's', 0, 0, 0, 0,
            // IPSET_ATTR_DATA | NLA_F_NESTED, len 24
            24, 0, 0x07, 0x80,
            //   IPSET_ATTR_IP | NLA_F_NESTED, len 12
            12, 0, 0x01, 0x80,
            //     IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER: 192.0.2.7
            8, 0, 0x01, 0x40, 192, 0, 2, 7,
            //   IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER: be32 300
            8, 0, 0x06, 0x40, 0, 0, 0x01, 0x2c,
        ];
        assert_eq!(got, want);
    }

    #[rustfmt::skip]
    #[test]
    fn add_v6_prefix_with_cidr() {
        let key = Key::new("2001:db8:5:6::1".parse().unwrap(), 64);
        let got = emit(|b| Add { set: "s6", key, timeout: Some(60) }.emit(b, 1));
        let want: &[u8] = &[
            80, 0, 0, 0, 0x09, 0x06, 0x05, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
            2, 0, 0, 0,                                      // nfgenmsg
            5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7
            7, 0, 2, 0, b's', b'6', 0, 0,                    // SETNAME "s6\0" + pad
            44, 0, 0x07, 0x80,                               // DATA (nested), len 44
            24, 0, 0x01, 0x80,                               //   IP (nested), len 24
            20, 0, 0x02, 0x40,                               //     IPADDR_IPV6 | NET_BYTEORDER
            0x20, 0x01, 0x0d, 0xb8, 0, 5, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:5:6::
            5, 0, 0x03, 0x00, 64, 0, 0, 0,                   //   CIDR u8 64 + pad
            8, 0, 0x06, 0x40, 0, 0, 0, 60,                   //   TIMEOUT be32 60
        ];
        assert_eq!(got, want);
    }

    #[rustfmt::skip]
    #[test]
    fn del_and_test() {
        let del = emit(|b| Del { set: "s", key: V4 }.emit(b, 2));
        let want: &[u8] = &[
            52, 0, 0, 0, 0x0a, 0x06, 0x05, 0x00, 2, 0, 0, 0, 0, 0, 0, 0, // type IPSET_CMD_DEL(10)
            2, 0, 0, 0,
            5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7
            6, 0, 2, 0, b's', 0, 0, 0,                       // SETNAME "s\0" + pad
            16, 0, 0x07, 0x80,                               // DATA
            12, 0, 0x01, 0x80,                               //   IP
            8, 0, 0x01, 0x40, 192, 0, 2, 7,                  //     IPADDR_IPV4
        ];
        assert_eq!(del, want);
        let test = emit(|b| Test { set: "s", key: V4 }.emit(b, 2));
        let mut want = want.to_vec();
        want[4] = 0x0b; // IPSET_CMD_TEST(11); everything else identical
        assert_eq!(test, want);
    }

    #[rustfmt::skip]
    #[test]
    fn create_hash_ip_with_timeout_and_maxelem() {
        let got = emit(|b| Create::v4("s", 6, 3600, 65536).emit(b, 3));
        let want: &[u8] = &[
            84, 0, 0, 0,
            0x02, 0x06,                                      // IPSET_CMD_CREATE(2)
            0x05, 0x04,                                      // REQUEST | ACK | NLM_F_CREATE(0x400)
            3, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
            5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7
            6, 0, 2, 0, b's', 0, 0, 0,                       // SETNAME "s"
            12, 0, 3, 0, b'h', b'a', b's', b'h', b':', b'i', b'p', 0, // TYPENAME "hash:ip\0"
            5, 0, 4, 0, 6, 0, 0, 0,                          // REVISION 6
            5, 0, 5, 0, 2, 0, 0, 0,                          // FAMILY NFPROTO_IPV4
            20, 0, 0x07, 0x80,                               // DATA
            8, 0, 0x06, 0x40, 0, 0, 0x0e, 0x10,              //   TIMEOUT be32 3600
            8, 0, 0x13, 0x40, 0, 1, 0, 0,                    //   MAXELEM(19) be32 65536
        ];
        assert_eq!(got, want);
        let v6 = emit(|b| Create::v6("s", 7, 60, 10).emit(b, 3));
        assert_eq!(&v6[36..52], b"\x0d\x00\x03\x00hash:net\x00\x00\x00\x00");
        assert_eq!(&v6[52..60], &[5, 0, 4, 0, 7, 0, 0, 0]);  // REVISION 7
        assert_eq!(&v6[60..68], &[5, 0, 5, 0, 10, 0, 0, 0]); // FAMILY NFPROTO_IPV6
        assert_eq!(Create::v6("s", 7, 60, 10).command(),
                   "ipset create s hash:net family inet6 timeout 60 maxelem 10");
    }

    #[rustfmt::skip]
    #[test]
    fn list_flush_destroy_protocol_type() {
        let list = emit(|b| List { set: Some("s"), header_only: true }.emit(b, 4));
        let want: &[u8] = &[
            44, 0, 0, 0,
            0x07, 0x06,                                      // IPSET_CMD_LIST(7)
            0x05, 0x03,                                      // REQUEST | ACK | NLM_F_DUMP(0x300)
            4, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
            5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7
            6, 0, 2, 0, b's', 0, 0, 0,                       // SETNAME "s"
            8, 0, 6, 0, 0, 0, 0, 4,                          // FLAGS be32 IPSET_FLAG_LIST_HEADER
        ];
        assert_eq!(list, want);
        let all = emit(|b| List { set: None, header_only: false }.emit(b, 4));
        assert_eq!(all.len(), 28); // header, nfgenmsg, protocol only

        let flush = emit(|b| Flush { set: "s" }.emit(b, 5));
        let want: &[u8] = &[
            36, 0, 0, 0, 0x04, 0x06, 0x05, 0x00, 5, 0, 0, 0, 0, 0, 0, 0, // IPSET_CMD_FLUSH(4)
            2, 0, 0, 0,
            5, 0, 1, 0, 7, 0, 0, 0,
            6, 0, 2, 0, b's', 0, 0, 0,
        ];
        assert_eq!(flush, want);
        let destroy = emit(|b| Destroy { set: "s" }.emit(b, 5));
        let mut want = want.to_vec();
        want[4] = 0x03; // IPSET_CMD_DESTROY(3)
        want[7] = 0x02; // flags 0x0205: REQUEST | ACK | NLM_F_EXCL(0x200)
        assert_eq!(destroy, want);

        let proto = emit(|b| Protocol.emit(b, 6));
        let want: &[u8] = &[
            28, 0, 0, 0, 0x01, 0x06, 0x05, 0x00, 6, 0, 0, 0, 0, 0, 0, 0, // PROTOCOL(1), REQUEST|ACK
            2, 0, 0, 0,
            5, 0, 1, 0, 7, 0, 0, 0,
        ];
        assert_eq!(proto, want);
        let ty = emit(|b| TypeQuery { typename: "hash:ip", family: Family::V4 }.emit(b, 7));
        let want: &[u8] = &[
            48, 0, 0, 0, 0x0d, 0x06, 0x05, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, // TYPE(13)
            2, 0, 0, 0,
            5, 0, 1, 0, 7, 0, 0, 0,
            12, 0, 3, 0, b'h', b'a', b's', b'h', b':', b'i', b'p', 0,
            5, 0, 5, 0, 2, 0, 0, 0,                          // FAMILY
        ];
        assert_eq!(ty, want);
    }

    /// A list reply as the kernel writes it (`ip_set_dump_do()` and
    /// `mtype_list()` in `ip_set_hash_gen.h`), built with the writer.
    fn list_reply(b: &mut NlBuf, with_header: bool, members: &[(IpAddr, Option<u8>, u32)]) {
        b.message(ipset_msg_type(IPSET_CMD_LIST), NLM_F_MULTI, 9, |b| {
            b.put(&[NFPROTO_IPV4, 0, 0, 0]);
            b.attr_u8(IPSET_ATTR_PROTOCOL, 7);
            b.attr_str(IPSET_ATTR_SETNAME, "s6");
            if with_header {
                b.attr_str(IPSET_ATTR_TYPENAME, "hash:net");
                b.attr_u8(IPSET_ATTR_FAMILY, NFPROTO_IPV6);
                b.attr_u8(IPSET_ATTR_REVISION, 7);
                b.nested(IPSET_ATTR_DATA, |b| {
                    put_be32(b, IPSET_ATTR_MAXELEM, 65536);
                    put_be32(b, IPSET_ATTR_TIMEOUT, 60);
                    put_be32(b, IPSET_ATTR_REFERENCES, 1);
                    put_be32(b, IPSET_ATTR_ELEMENTS, 2);
                });
            }
            b.nested(IPSET_ATTR_ADT, |b| {
                for &(ip, cidr, t) in members {
                    b.nested(IPSET_ATTR_DATA, |b| {
                        put_ip(b, ip);
                        if let Some(c) = cidr {
                            b.attr_u8(IPSET_ATTR_CIDR, c);
                        }
                        put_be32(b, IPSET_ATTR_TIMEOUT, t);
                    });
                }
            });
        });
    }

    #[test]
    fn list_parser_joins_messages_of_one_set() {
        let mut b = NlBuf::new();
        list_reply(
            &mut b,
            true,
            &[("2001:db8:5:6::".parse().unwrap(), Some(64), 59)],
        );
        list_reply(&mut b, false, &[("2001:db8::1".parse().unwrap(), None, 7)]);
        let mut p = ListParser::new();
        for r in crate::nl::msg::Messages::new(b.as_bytes()) {
            let crate::nl::msg::Reply::Data(m) = r.unwrap() else {
                panic!()
            };
            p.feed(&m).unwrap();
        }
        assert_eq!(p.sets.len(), 1);
        let s = &p.sets[0];
        assert_eq!(
            (s.name.as_str(), s.typename.as_str(), s.family, s.revision),
            ("s6", "hash:net", NFPROTO_IPV6, 7)
        );
        assert_eq!(
            (s.timeout, s.maxelem, s.references, s.elements),
            (Some(60), Some(65536), Some(1), Some(2))
        );
        assert_eq!(
            s.members,
            vec![
                Member {
                    key: Key::new("2001:db8:5:6::".parse().unwrap(), 64),
                    timeout: Some(59)
                },
                Member {
                    key: Key::new("2001:db8::1".parse().unwrap(), 128),
                    timeout: Some(7)
                },
            ]
        );
    }

    #[test]
    fn list_parser_rejects_garbage() {
        let mut b = NlBuf::new();
        b.message(ipset_msg_type(IPSET_CMD_LIST), 0, 1, |b| {
            b.put(&[2, 0, 0, 0]);
            b.attr_u8(IPSET_ATTR_PROTOCOL, 7);
        });
        let m = crate::nl::msg::Messages::new(b.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let crate::nl::msg::Reply::Data(m) = m else {
            panic!()
        };
        assert_eq!(ListParser::new().feed(&m), Err(BadList("no set name")));
    }

    #[test]
    fn timeouts_are_clamped_to_the_kernel_maximum() {
        let got = emit(|b| {
            Add {
                set: "s",
                key: V4,
                timeout: Some(u32::MAX),
            }
            .emit(b, 1)
        });
        let t = &got[got.len() - 4..];
        assert_eq!(u32::from_be_bytes(t.try_into().unwrap()), MAX_TIMEOUT);
        assert_eq!(MAX_TIMEOUT, 2_147_483);
    }
}
