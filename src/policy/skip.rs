//! Why a line does not count: every reason a line is skipped, and the
//! policy's rules that pick one.
//!
//! Two of the reasons come from below the policy: the line reader gives up
//! on an over-long line ([`crate::lines::TooLong`]) and the parser on a line
//! that is not an access line ([`crate::accesslog::ParseError`]); both map
//! into [`Skip`] here. The others are policy decisions on a well-formed line
//! (`classify`): what it says (rejected, no email, a masked or unspecified
//! source) or what its address means for enforcement (port 0, loopback, the
//! allowlist). One enum for all of them keeps one counter per reason, in one
//! order, for the daemon's stats line, the replay summary and `--explain`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::PolicyConfig;
use crate::accesslog::{Access, ParseError, Source, Status};
use crate::key::{canonical, Key};
use crate::lines::TooLong;

/// Why a line does not count. Every skipped line has exactly one reason; the
/// order of the variants is the order they are tested in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Longer than the line cap (counted by the reader, never parsed).
    TooLong,
    /// Not an access line: DNS answers, `[Info]`/`[Warning]` lines, banners,
    /// blank lines, garbage.
    NotAccess,
    /// `rejected` (never counts, even V2Ray's VMess rejection with an email).
    Rejected,
    /// Accepted, but no `email:` field (SOCKS, HTTP, dokodemo, TUN, DNS…).
    NoEmail,
    /// The client address was masked (`log.maskAddress`): misconfiguration.
    Masked,
    /// `0.0.0.0:0`, `::`, `@`, `unix:…`, `DNS`, empty: no address to ban.
    Unspecified,
    /// Port 0: the address came from X-Forwarded-For (a CDN in front).
    XffPort0,
    /// A loopback client: a reverse proxy without PROXY protocol.
    Loopback,
    /// Inside an `--allow` network.
    Allowlisted,
}

impl Skip {
    pub const ALL: [Skip; 9] = [
        Skip::TooLong,
        Skip::NotAccess,
        Skip::Rejected,
        Skip::NoEmail,
        Skip::Masked,
        Skip::Unspecified,
        Skip::XffPort0,
        Skip::Loopback,
        Skip::Allowlisted,
    ];

    /// The short name used in `--explain`, the replay summary and counters.
    pub fn name(self) -> &'static str {
        match self {
            Skip::TooLong => "too-long",
            Skip::NotAccess => "not-access",
            Skip::Rejected => "rejected",
            Skip::NoEmail => "no-email",
            Skip::Masked => "masked",
            Skip::Unspecified => "unspecified",
            Skip::XffPort0 => "xff-port0",
            Skip::Loopback => "loopback",
            Skip::Allowlisted => "allowlisted",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<TooLong> for Skip {
    fn from(_: TooLong) -> Skip {
        Skip::TooLong
    }
}

impl From<ParseError> for Skip {
    fn from(e: ParseError) -> Skip {
        match e {
            ParseError::NotAccess => Skip::NotAccess,
        }
    }
}

/// The skip rules, in the order of [`Skip`]; on success the key and user.
pub(super) fn classify<'a>(cfg: &PolicyConfig, a: &Access<'a>) -> Result<(Key, &'a [u8]), Skip> {
    if a.status == Status::Rejected {
        return Err(Skip::Rejected);
    }
    let email = match a.email {
        Some(e) if !e.is_empty() => e,
        _ => return Err(Skip::NoEmail),
    };
    let (ip, port) = match a.source {
        Source::Masked => return Err(Skip::Masked),
        Source::Unix | Source::Internal => return Err(Skip::Unspecified),
        Source::Ip(ip, port) => (ip, port),
    };
    let canon = canonical(ip);
    if canon.is_unspecified() {
        return Err(Skip::Unspecified);
    }
    if port == 0 {
        return Err(Skip::XffPort0);
    }
    if canon.is_loopback() {
        return Err(Skip::Loopback);
    }
    let key = Key::new(ip, cfg.v6_prefix);
    if allowlisted(&cfg.allow, key) {
        return Err(Skip::Allowlisted);
    }
    Ok((key, email))
}

/// Whether `key` touches an allowlisted network: the key inside one, or one
/// inside the key (a /64 key holding an allowed /128: banning the key would
/// ban the allowed address). IPv4 keys also match IPv4-mapped IPv6 networks.
/// Two prefixes overlap exactly when one contains the other.
#[inline]
pub(super) fn allowlisted(allow: &[IpNet], key: Key) -> bool {
    let knet = key.net();
    allow.iter().any(|n| {
        n.contains(&knet)
            || knet.contains(n)
            || matches!(key, Key::V4(a) if n.contains(&IpAddr::V6(a.to_ipv6_mapped())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are what the stats line, the replay summary and
    /// `--explain` print, in this order: operators' greps depend on them.
    #[test]
    fn names_and_order_are_stable() {
        let names: Vec<&str> = Skip::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "too-long",
                "not-access",
                "rejected",
                "no-email",
                "masked",
                "unspecified",
                "xff-port0",
                "loopback",
                "allowlisted",
            ]
        );
        for (i, s) in Skip::ALL.iter().enumerate() {
            assert_eq!(s.index(), i, "{s:?}");
        }
    }

    #[test]
    fn reader_and_parser_errors_map_to_their_reasons() {
        assert_eq!(Skip::from(TooLong), Skip::TooLong);
        assert_eq!(Skip::from(ParseError::NotAccess), Skip::NotAccess);
        assert_eq!(
            crate::accesslog::parse(b"not a log line").map_err(Skip::from),
            Err(Skip::NotAccess)
        );
    }
}
