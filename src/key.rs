//! The unit refract counts and bans: a client *key*.
//!
//! An IPv4 client is its own address. An IPv6 client is its address masked
//! to `--ipv6-prefix` bits (default 64), because one device rotates privacy
//! addresses inside its /64 (RFC 8981) and a provider hands a subscriber a
//! whole prefix. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is IPv4.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A client key. Ordered and hashable; `Copy` and 20 bytes, so the policy's
/// tables hold it inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    V4(Ipv4Addr),
    /// The network address (host bits zero) and the prefix length, `1..=128`.
    V6(Ipv6Addr, u8),
}

impl Key {
    /// The key of a client address with IPv6 grouped to `v6_prefix` bits
    /// (clamped to `1..=128`).
    #[inline]
    pub fn new(ip: IpAddr, v6_prefix: u8) -> Key {
        match canonical(ip) {
            IpAddr::V4(a) => Key::V4(a),
            IpAddr::V6(a) => {
                let p = v6_prefix.clamp(1, 128);
                let mask = u128::MAX << (128 - u32::from(p));
                Key::V6(Ipv6Addr::from(u128::from(a) & mask), p)
            }
        }
    }

    /// The key as a network: `/32` for IPv4, `/prefix` for IPv6.
    pub fn net(self) -> IpNet {
        match self {
            Key::V4(a) => IpNet::V4(Ipv4Net::new(a, 32).expect("32 is a valid prefix")),
            Key::V6(a, p) => IpNet::V6(Ipv6Net::new(a, p).expect("prefix checked in Key::new")),
        }
    }

    /// The (network) address of the key.
    pub fn addr(self) -> IpAddr {
        match self {
            Key::V4(a) => IpAddr::V4(a),
            Key::V6(a, _) => IpAddr::V6(a),
        }
    }

    /// Whether `ip` falls under this key (the same IPv4 address, or inside
    /// the IPv6 prefix; IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(self, ip: IpAddr) -> bool {
        match self {
            Key::V4(_) => Key::new(ip, 128) == self,
            Key::V6(_, p) => Key::new(ip, p) == self,
        }
    }

    pub fn is_v4(self) -> bool {
        matches!(self, Key::V4(_))
    }
}

/// The one spelling of an address: IPv4-mapped IPv6 (`::ffff:a.b.c.d`, how
/// a dual-stack socket names an IPv4 peer) becomes the IPv4 address; every
/// other address is returned unchanged.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    }
}

/// One `write_u64` for an IPv4 key (the derived hash made four: the
/// variant, the octets' length, the octets, in [`crate::hash`] each a
/// multiply), two for IPv6. Equal keys write equal words, as `Eq` needs; a
/// collision between unequal keys costs only a probe (`Eq` decides).
impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match *self {
            Key::V4(a) => h.write_u64(u64::from(u32::from(a)) | 1 << 40),
            Key::V6(a, p) => {
                let v = u128::from(a);
                h.write_u64((v >> 64) as u64);
                h.write_u64(v as u64 ^ u64::from(p));
            }
        }
    }
}

/// IPv4 and a full-length IPv6 key print as a plain address; a shorter IPv6
/// prefix prints in CIDR form (`2001:db8:5:6::/64`), as the audit line wants.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Key::V4(a) => write!(f, "{a}"),
            Key::V6(a, 128) => write!(f, "{a}"),
            Key::V6(a, p) => write!(f, "{a}/{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v6_groups_by_prefix() {
        let a = Key::new(ip("2001:db8:5:6::a"), 64);
        let b = Key::new(ip("2001:db8:5:6:8c1e:2ff:fe00:1"), 64);
        let c = Key::new(ip("2001:db8:5:7::a"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:5:6::/64");
        assert_eq!(Key::new(ip("2001:db8::1"), 128).to_string(), "2001:db8::1");
        assert!(a.contains(ip("2001:db8:5:6::ffff")));
        assert!(!a.contains(ip("2001:db8:5:7::1")));
    }

    #[test]
    fn mapped_v4_is_v4() {
        let k = Key::new(ip("::ffff:192.0.2.7"), 64);
        assert_eq!(k, Key::V4("192.0.2.7".parse().unwrap()));
        assert_eq!(k.to_string(), "192.0.2.7");
        assert!(k.contains(ip("192.0.2.7")));
        assert!(k.contains(ip("::ffff:192.0.2.7")));
        assert_eq!(k.net().to_string(), "192.0.2.7/32");
    }

    #[test]
    fn canonical_unmaps_v4() {
        assert_eq!(canonical(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(canonical(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        // Only the mapped form is IPv4; the deprecated compatible form is not.
        assert_eq!(canonical(ip("::192.0.2.7")), ip("::192.0.2.7"));
    }

    #[test]
    fn prefix_is_clamped() {
        assert_eq!(Key::new(ip("2001:db8::1"), 0), Key::new(ip("::1"), 1));
        assert_eq!(
            Key::new(ip("2001:db8::1"), 200),
            Key::new(ip("2001:db8::1"), 128)
        );
    }
}
