//! The Xray / V2Ray access-log parser (see `shared/xray-log-format.md`).
//!
//! SKELETON: the types are the contract the rest of refract builds on; the
//! parser body is being written in its own branch.

use std::net::IpAddr;

use crate::clock::Timestamp;

/// Where a connection came from, as the line tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A client address and port (port 0 = taken from X-Forwarded-For).
    Ip(IpAddr, u16),
    /// Hidden by `log.maskAddress`: `203.0.*.*`, `[Masked IPv4]`, `[2001:db8::/32]`.
    Masked,
    /// A unix-socket listener: `0.0.0.0:0` (Xray ≥ v25.2.18), `@`, `unix:…`.
    Unix,
    /// Xray's own traffic: `DNS`, or an empty source (`from  accepted`).
    Internal,
}

/// `accepted` or `rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Rejected,
}

/// One access line, borrowed from the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access<'a> {
    pub ts: Timestamp,
    pub source: Source,
    pub status: Status,
    /// The inbound tag from the detour bracket (`vless-in` of
    /// `[vless-in >> direct]`); `None` when Xray printed only an outbound or
    /// no bracket (V2Ray always).
    pub inbound: Option<&'a [u8]>,
    /// The bracket's raw content, e.g. `vless-in >> direct` (the audit line
    /// prints this as `[…]`); `None` without a bracket.
    pub detour: Option<&'a [u8]>,
    /// The `email:` value, raw bytes (may be any text, even invalid UTF-8).
    pub email: Option<&'a [u8]>,
}

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

/// Parses one line (without its `\n`; a trailing `\r` is tolerated).
///
/// Returns an [`Access`] for every well-formed access line, accepted or
/// rejected, with or without email; `Err(Skip::NotAccess)` for anything else.
/// Address classification beyond syntax (port 0, loopback, allowlist) is the
/// policy's job.
pub fn parse(line: &[u8]) -> Result<Access<'_>, Skip> {
    let _ = line;
    Err(Skip::NotAccess)
}
