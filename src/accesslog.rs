//! The Xray / V2Ray access-log parser.
//!
//! Role: turn one log line (bytes, without its `\n`) into an [`Access`] that
//! borrows from the line, or say it is not an access line
//! ([`ParseError`]). Pure, zero-copy, no allocation, no regex; every scan is
//! a single forward or backward pass, so a 1 MiB line costs O(n) and nothing
//! panics on any input (the tests feed truncations, mutations and random
//! bytes). Whether a well-formed line counts is the policy's decision
//! ([`crate::policy::skip`]).
//!
//! # The access log, as the proxies write it
//!
//! Read from Xray-core (`common/log/access.go`, `common/log/logger.go`,
//! `app/dispatcher/default.go`, `common/net/destination.go`,
//! `app/log/log.go`) at release v26.7.28, and from v2fly/v2ray-core at
//! v4.34.0 (the version Debian packages) and v5. Where a fact changed over
//! time, the release is given: all of these shapes are in the wild today.
//!
//! ```text
//! [FOREIGN PREFIX] TS [from ]FROM STATUS TO[ [DETOUR]][ REASON][ email: EMAIL]
//! ```
//!
//! - **TS**: Go's `log` with `Ldate|Ltime|Lmicroseconds`:
//!   `2026/01/30 17:03:38.067799` (Xray ≥ v25.1.30) or `2026/01/30 17:03:38`
//!   (older Xray, all V2Ray). Local time of the proxy host, no zone. Then
//!   one space.
//! - **`from `**: written by Xray ≥ v1.8.24. Absent in older Xray and in
//!   V2Ray v4/v5 (`2021/02/01 12:00:00 203.0.113.5:51234 accepted …`).
//! - **FROM**, two renderings that coexist in every version (the protocol's
//!   code path decides, not the release):
//!   - a Go `net.Addr`: `198.51.100.7:51234` or `[2001:db8::1]:51234`
//!     (direct VLESS, VMess, Trojan and Shadowsocks TCP, HTTP, dokodemo,
//!     Hysteria, Shadowsocks-2022);
//!   - an Xray `Destination`: `tcp:198.51.100.7:51234`, `udp:…`,
//!     `tcp:[2001:db8::1]:51234`, `unix:…` (mux/XUDP sub-connections of
//!     VLESS and VMess *with* the user's email, SOCKS, Shadowsocks and
//!     Trojan UDP, TUN, WireGuard).
//!
//!   IPv6 is always bracketed and compressed; IPv4-mapped IPv6 is printed as
//!   plain IPv4. Host and port split at the **last** colon. Special values:
//!   port `0` = taken from `X-Forwarded-For` (a CDN in front; the kernel
//!   never sees that address); `0.0.0.0:0` = unix-socket listener
//!   (≥ v25.2.18; older printed `@`); `127.0.0.1:port` = reverse proxy or
//!   fallback without PROXY protocol, or the panel's API inbound; `DNS` =
//!   Xray's own DNS client; empty (`from  accepted`); masked by
//!   `log.maskAddress` (≥ v24.9.16): `203.0.*.*:51234`,
//!   `[Masked IPv4]:51234`, `[2001:db8::/32]:51234`, `[Masked IPv6]:51234`
//!   (the real address is gone).
//! - **STATUS**: `accepted` or `rejected`. A rejected line has an empty TO,
//!   so two spaces follow `rejected`, then a free-text REASON (may contain
//!   `:`, `>`, `[`, `]`, spaces); it never has a detour and (in Xray) never
//!   an email. V2Ray's VMess "Insecure encryption" rejection is the one
//!   rejected line with an email. Traffic routed to a blackhole is still
//!   `accepted`.
//! - **TO**: `tcp:host:port`, `udp:host:port`, `tcp:[v6]:port`; the HTTP
//!   inbound's CONNECT prints `//host:port`, plain HTTP prints the whole URL
//!   (`http://149.154.165.120:80/api`); Shadowsocks-2022 prints `host:port`
//!   with no network prefix; domains may start with digits.
//! - **DETOUR**: Xray: `[in -> out]` (a routing rule matched), `[in >> out]`
//!   (default route), `[in ==> out]` (forced outbound), `[out]` (the inbound
//!   has no tag); no bracket when the outbound has no tag. V2Ray: `[out]`
//!   only. Tags may contain spaces (`VLESS TCP REALITY`), colons and dots
//!   (`inbound-127.0.0.1:3010`), Unicode.
//! - **EMAIL**: ` email: ` then the raw configured string, always the last
//!   field. Arbitrary text: `alice@example.com`, Marzban's `12.alice`,
//!   Remnawave's numeric `4065`, panel-generated random strings. Missing on
//!   SOCKS, HTTP, dokodemo, TUN, WireGuard and DNS lines. Xray ≤ v1.1.4 and
//!   V2Ray v4.21–v4.33 wrote `email:alice ` (no space after the colon, one
//!   trailing space). Lines may end in `\r\n`.
//!
//! Other lines share the file: the DNS query log (`"dnsLog": true`:
//! `UDP:8.8.8.8:53 got answer: example.com -> [93.184.215.14] 12.3ms`, also
//! `cache HIT:` / `cache OPTIMISTE:`), `from DNS accepted udp:1.1.1.1:53
//! [direct]` (no email), panel API polling (`from 127.0.0.1:39946 accepted
//! tcp:127.0.0.1:0 [api -> api]`), and, when access and error logs share a
//! stream, `[Info] …`/`[Warning] …` lines and the startup banner. A
//! supervisor may prefix each line: journald `Jun 30 14:16:59 host
//! xray[2634]: `, OpenWrt syslog `Thu Oct 13 07:50:02 2022 daemon.info
//! xray[23519]: `.
//!
//! Examples (addresses are documentation ranges):
//!
//! ```text
//! 2026/01/30 17:03:38.067799 from 198.51.100.23:58676 accepted tcp:www.google.com:443 [vless-in >> direct] email: alice@example.com
//! 2026/01/30 17:03:39.100001 from tcp:[2001:db8:5:6::a]:40112 accepted udp:1.1.1.1:53 [vless-in -> dns-out] email: 12.bob
//! 2024/10/01 08:00:00 from 203.0.113.9:0 accepted tcp:example.org:443 [ws-in >> direct] email: carol
//! 2021/02/01 12:00:00 203.0.113.5:51234 accepted tcp:www.google.com:443 [direct] email: dave
//! 2026/01/30 17:03:40.000000 from 203.0.113.76:57676 rejected  proxy/vless/encoding: invalid request user id
//! 2026/01/30 17:03:41.000000 from 127.0.0.1:39946 accepted tcp:127.0.0.1:0 [api -> api]
//! ```
//!
//! # The log as a stream (what the follower relies on)
//!
//! - One line per dispatched connection (per mux sub-stream, per new UDP
//!   destination), written when it starts. Nothing marks its end.
//! - Under bursts Xray drops lines (a 128-message channel, 16 before
//!   v26.3.27). The log is a sample, not a ledger.
//! - Xray opens the file `O_APPEND`, closes it after about a minute without
//!   writes and reopens the path on the next line. Panels and logrotate
//!   rename it, or truncate it in place (3x-ui truncated hourly). The
//!   follower ([`crate::tail`]) must survive rename-and-recreate,
//!   truncation, deletion, a file that does not exist yet, and a last line
//!   without its newline.
//!
//! # Grammar accepted
//!
//! ```text
//! line   = [prefix " "] TS ["." 1*6DIGIT] " " rest [ws]      ; ws = trailing "\r", "\n", " "
//! TS     = 4DIGIT "/" 2DIGIT "/" 2DIGIT " " 2DIGIT ":" 2DIGIT ":" 2DIGIT
//! rest   = ["from "] FROM " " ("accepted" " " TO tail | "rejected" [" " rtail])
//! FROM   = "" | "DNS" | "@"* | "/"* | "unix:"* | ["tcp:" | "udp:"] addr
//! addr   = IPv4 ":" port | "[" IPv6["%" zone] "]" ":" port | masked ":" port
//! masked = IPv4 with "*" octets | "[Masked IPv4]" | "[Masked IPv6]" | "[" v6 "/" len "]"
//! port   = 1*5DIGIT, <= 65535
//! TO     = 1*(any byte but " ")
//! tail   = [" [" DETOUR "]"] [" " reason] [" email:" [" "] EMAIL]
//! ```
//!
//! Why each rule (the Xray sources are `common/log/access.go` for the field
//! order, `common/log/logger.go` + Go's `log` flags for the timestamp,
//! `common/net/destination.go` for the `tcp:`/`udp:`/`unix:` renderings,
//! `app/dispatcher/default.go` for the detour separators and `app/log/log.go`
//! for `maskAddress`):
//!
//! - **TS** is tried at byte 0 first (the hot path). Only when that fails is
//!   a foreign prefix assumed (journald `Jun 30 14:16:59 host xray[2634]: `,
//!   OpenWrt `Thu Oct 13 07:50:02 2022 daemon.info xray[23519]: `): the first
//!   `YYYY/MM/DD HH:MM:SS` that follows a space within the first
//!   [`MAX_PREFIX`] bytes. Bounding the prefix keeps garbage lines cheap and
//!   stops a timestamp quoted deep inside some message from being taken for
//!   a line start. Go's `Lmicroseconds` writes 6 digits; 1–6 are accepted and
//!   scaled to microseconds, anything else (7 digits, a bare `.`) is garbage.
//! - **Error-log lines** share the stream: a `[Debug] `, `[Info] `,
//!   `[Warning] ` or `[Error] ` right after the timestamp is not access.
//!   Everything else that is not `FROM accepted|rejected` (DNS answers,
//!   banners, blank lines) fails the grammar and is not access either.
//! - **`from `** is optional: Xray ≥ v1.8.24 writes it, older Xray and V2Ray
//!   do not. FROM is the token up to the next space, except a bracketed
//!   FROM, which runs to its `]` (`[Masked IPv4]` contains a space). Host and
//!   port split at the *last* colon; a port above 65535 or a host that is
//!   neither an IP nor a known masked form makes the line not access.
//! - **Sources that name no client**: empty and `DNS` are Xray itself
//!   ([`Source::Internal`]); `@…` (unnamed/abstract unix socket), `/…` (a unix
//!   path as Go prints a `net.UnixAddr`), `unix:…`, and any *unspecified*
//!   address (`0.0.0.0:0`, `[::]:0`, whatever the port) are
//!   [`Source::Unix`]. IPv4-mapped IPv6 is returned as IPv4 and an IPv6 zone
//!   id (`%eth0`) is dropped, so the policy sees one canonical address.
//!   Port 0 stays `Source::Ip(ip, 0)`: the policy classifies it.
//! - **Email** is the last field and arbitrary text, and a rejection reason
//!   (free text) or a tag may contain `email:` too, so the email starts after
//!   the *last* ` email:` found after TO (a backward scan): a reason or a tag
//!   containing ` email:` cannot steal the email. The price is that an email
//!   that itself contains ` email:` is cut at its last occurrence; no panel
//!   generates such names. One space after the colon is skipped (Xray ≥
//!   v1.2 and V2Ray ≥ v4.34 write `email: x`; older ones `email:x `), the line
//!   was already trimmed of trailing spaces and `\r`. An empty value is no
//!   email.
//! - **TO** never contains a space (destinations, `//host:port`, URLs), so it
//!   ends at the first space after the status. The **detour** is the bracket
//!   right after TO: it starts at TO's space and ends at the `]` right before
//!   the email marker (or the end of the line), so tags may hold spaces,
//!   colons, dots, `[`, `]` and any bytes. The inbound tag is the text before
//!   the *rightmost* ` -> `, ` >> ` or ` ==> ` in the bracket (inbound tags
//!   are the operator-named ones like `VLESS TCP REALITY`; outbound tags are
//!   usually plain); a bracket without a separator (`[out]`, V2Ray) has no
//!   inbound. If something other than the email follows the bracket (an old
//!   accepted line with a reason) the bracket ends at its first `] `.
//! - **Rejected** lines have an empty TO (two spaces) and a free-text reason
//!   that may contain `[`, `]`, `:`, `>`; they never carry a detour, and only
//!   V2Ray's VMess rejection carries an email (found as above).
//!
//! # Cost
//!
//! The scans for ` `, `:`, `]`, `>` go eight bytes at a time (safe SWAR on
//! `chunks_exact`), IPv4 and IPv6 are parsed by hand from bytes (`std`'s
//! parsers want `&str`; the IPv6 one is checked against `std` in the tests),
//! and the timestamp's fixed part is validated as three words. A typical
//! IPv4 line costs about 60–70 ns on the 2-core build VM (`cargo bench
//! --bench replay`), of which ~9 ns is [`Timestamp::from_civil`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::clock::{Civil, Timestamp};
use crate::key::canonical;
use crate::lines::{find_byte, rfind_byte, word, HI};

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
    /// What refract 0.2 printed between the audit line's brackets: the text
    /// from the first `[` of the access line (from its timestamp on, so
    /// not a syslog prefix's `xray[2634]:`) to the first `]` after it —
    /// usually the detour (`vless-in >> direct`), but an IPv6 source or
    /// destination's address when one comes first. `None` without a `[`
    /// and `]` (the audit line prints `unknown`, as 0.2 did).
    pub bracket: Option<&'a [u8]>,
}

impl<'a> Access<'a> {
    /// [`Access::bracket`], or `unknown`: the audit line's `[…]` content.
    pub fn audit_tag(&self) -> &'a [u8] {
        self.bracket.unwrap_or(b"unknown")
    }
}

/// Why [`parse`] did not return an [`Access`]. The parser only tells what a
/// line *is*; whether a well-formed line counts is the policy's decision
/// (`crate::policy::skip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not an access line: DNS answers, `[Info]`/`[Warning]` lines, banners,
    /// blank lines, garbage.
    NotAccess,
}

/// How far into a line the timestamp may start when a supervisor prefixed
/// it (journald, syslog). Real prefixes are well under 100 bytes; a hostname
/// is at most 255.
pub const MAX_PREFIX: usize = 512;

/// Parses one line (without its `\n`; a trailing `\r` is tolerated).
///
/// Returns an [`Access`] for every well-formed access line, accepted or
/// rejected, with or without email; `Err(ParseError::NotAccess)` for anything else.
/// Address classification beyond syntax (port 0, loopback, allowlist) is the
/// policy's job. The grammar is in the module documentation.
pub fn parse(line: &[u8]) -> Result<Access<'_>, ParseError> {
    parse_with(line, &mut TsCache::default())
}

/// [`parse`] with a timestamp cache kept by the caller across lines: a log
/// writes many lines per second, and a line whose `YYYY/MM/DD HH:MM:SS`
/// bytes equal the previous stamp's reuses its seconds (no digit checks, no
/// calendar arithmetic). The result is always the one [`parse`] gives.
pub fn parse_with<'a>(line: &'a [u8], cache: &mut TsCache) -> Result<Access<'a>, ParseError> {
    parse_opt(trim_end(line), cache).ok_or(ParseError::NotAccess)
}

/// The last well-formed `YYYY/MM/DD HH:MM:SS` seen by [`parse_with`] (its
/// 19 bytes as the three overlapping words the parser reads) and its
/// seconds. A plain value: no clock, no I/O, so the parser stays pure.
#[derive(Clone, Copy, Debug, Default)]
pub struct TsCache {
    /// `t[0..8]`, `t[8..16]`, `t[11..19]` of the last valid stamp.
    words: [u64; 3],
    secs: i64,
    /// False until the first valid stamp (any bytes may equal `words`).
    valid: bool,
}

fn parse_opt<'a>(line: &'a [u8], cache: &mut TsCache) -> Option<Access<'a>> {
    let (ts, mut i) = find_timestamp(line, cache)?;
    let rest = &line[i..];
    if is_error_log(rest) {
        return None;
    }
    if rest.starts_with(b"from ") {
        i += 5;
    }
    let (source, from_end) = parse_source(line, i)?;
    // One space, then the status word.
    let status_at = from_end + 1;
    if line.get(from_end) != Some(&b' ') {
        return None;
    }
    let word = line.get(status_at..status_at + 8)?;
    let after = status_at + 8;
    let status = match word {
        b"accepted" => Status::Accepted,
        b"rejected" => Status::Rejected,
        _ => return None,
    };
    let bracket = find_byte(&line[i..], b'[').and_then(|o| {
        let open = i + o + 1;
        find_byte(&line[open..], b']').map(|c| &line[open..open + c])
    });
    let mut access = Access {
        ts,
        source,
        status,
        inbound: None,
        detour: None,
        email: None,
        bracket,
    };
    if status == Status::Rejected {
        match line.get(after) {
            None => return Some(access),
            Some(b' ') => {}
            Some(_) => return None,
        }
        if let Some((_, email)) = find_email(line, after) {
            access.email = email;
        }
        return Some(access);
    }
    // accepted: " " TO, TO non-empty and without spaces.
    if line.get(after) != Some(&b' ') {
        return None;
    }
    let to_start = after + 1;
    let to_len = find_byte(&line[to_start..], b' ').unwrap_or(line.len() - to_start);
    if to_len == 0 {
        return None;
    }
    let to_end = to_start + to_len;
    let tail_end = match find_email(line, to_end) {
        Some((marker, email)) => {
            access.email = email;
            marker
        }
        None => line.len(),
    };
    let seg = trim_spaces_end(&line[to_end..tail_end]);
    if let Some(inner) = seg.strip_prefix(b" [") {
        let detour = match inner.strip_suffix(b"]") {
            Some(d) => Some(d),
            // Something after the bracket (a reason): the bracket ends at
            // its first "] ".
            None => inner
                .windows(2)
                .position(|w| w == b"] ")
                .map(|p| &inner[..p]),
        };
        if let Some(d) = detour.filter(|d| !d.is_empty()) {
            access.detour = Some(d);
            access.inbound = inbound_of(d);
        }
    }
    Some(access)
}

/// Strips trailing `\n`, `\r` and spaces.
#[inline]
fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [head @ .., b'\n' | b'\r' | b' '] = line {
        line = head;
    }
    line
}

#[inline]
fn trim_spaces_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b' '] = s {
        s = head;
    }
    s
}

/// The timestamp and the index just after its trailing space: at byte 0, or
/// after a foreign prefix (see [`MAX_PREFIX`]).
fn find_timestamp(line: &[u8], cache: &mut TsCache) -> Option<(Timestamp, usize)> {
    if let Some(found) = parse_timestamp(line, 0, cache) {
        return Some(found);
    }
    let last = line.len().saturating_sub(20).min(MAX_PREFIX);
    (1..=last)
        .filter(|&i| line[i - 1] == b' ' && line[i + 4] == b'/' && line[i + 7] == b'/')
        .find_map(|i| parse_timestamp(line, i, cache))
}

/// `YYYY/MM/DD HH:MM:SS[.f{1,6}] ` at `at`; the fixed part through `cache`
/// ([`stamp_secs`] on a miss).
#[inline]
fn parse_timestamp(line: &[u8], at: usize, cache: &mut TsCache) -> Option<(Timestamp, usize)> {
    let t = line.get(at..at + 19)?;
    let words = [word(&t[0..8]), word(&t[8..16]), word(&t[11..19])];
    let secs = if cache.valid && words == cache.words {
        cache.secs
    } else {
        let secs = stamp_secs(words)?;
        *cache = TsCache {
            words,
            secs,
            valid: true,
        };
        secs
    };
    let i = at + 19;
    // Xray's `.dddddd ` (Go's Lmicroseconds): one word, same template trick.
    if let Some(w) = line.get(i..i + 8) {
        let v = word(w).wrapping_sub(u64::from_le_bytes(*b".000000 "));
        if (v.wrapping_add(0x7676_7676_7676_7676) | v) & HI == 0 {
            let m = v.to_le_bytes();
            let micros = m[1..7]
                .iter()
                .fold(0u32, |acc, &dig| acc * 10 + u32::from(dig));
            return Some((Timestamp { secs, micros }, i + 8));
        }
    }
    let mut i = i;
    let mut micros = 0;
    if line.get(i) == Some(&b'.') {
        i += 1;
        let mut n = 0;
        while let Some(&b) = line.get(i + n) {
            let dig = b.wrapping_sub(b'0');
            if dig > 9 || n == 6 {
                break;
            }
            micros = micros * 10 + u32::from(dig);
            n += 1;
        }
        if n == 0 {
            return None;
        }
        micros *= [100_000, 10_000, 1_000, 100, 10, 1][n - 1];
        i += n;
    }
    if line.get(i) != Some(&b' ') {
        return None;
    }
    Some((Timestamp { secs, micros }, i + 1))
}

/// The seconds of a `YYYY/MM/DD HH:MM:SS` given as the words `t[0..8]`,
/// `t[8..16]`, `t[11..19]`; `None` unless well-formed and in range.
///
/// The fixed part is checked eight bytes at a time: subtracting a template
/// (`'0'` at digit positions, the separator itself elsewhere) leaves every
/// byte of a well-formed stamp in `0..=9`. A byte below its template byte
/// underflows to `>= 0xC6` and one above `'9'` stays `>= 10`, so the lowest
/// bad byte is always caught (a borrow only disturbs bytes above it).
fn stamp_secs(words: [u64; 3]) -> Option<i64> {
    const TEMPLATE: &[u8; 19] = b"0000/00/00 00:00:00";
    let mut d = [0u8; 24];
    for (k, &off) in [0usize, 8, 11].iter().enumerate() {
        let v = words[k].wrapping_sub(word(&TEMPLATE[off..off + 8]));
        if (v.wrapping_add(0x7676_7676_7676_7676) | v) & HI != 0 {
            return None;
        }
        d[k * 8..k * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    // d[0..8] = t[0..8], d[8..16] = t[8..16], d[16..24] = t[11..19].
    let n2 = |hi: u8, lo: u8| u32::from(hi) * 10 + u32::from(lo);
    let civil = Civil {
        year: (n2(d[0], d[1]) * 100 + n2(d[2], d[3])) as i32,
        month: n2(d[5], d[6]),
        day: n2(d[8], d[9]),
        hour: n2(d[16], d[17]),
        minute: n2(d[19], d[20]),
        second: n2(d[22], d[23]),
    };
    Timestamp::from_civil(civil, 0).map(|t| t.secs)
}

/// The value of 1–9 ASCII digits.
#[inline]
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    Some(v)
}

/// An error-log line (`[Info] …`) written into the same stream.
#[inline]
fn is_error_log(rest: &[u8]) -> bool {
    rest.first() == Some(&b'[')
        && [&b"[Debug] "[..], b"[Info] ", b"[Warning] ", b"[Error] "]
            .iter()
            .any(|lvl| rest.starts_with(lvl))
}

/// Reads FROM starting at `i`; returns the source and the index of the byte
/// after it (the space before the status).
fn parse_source(line: &[u8], i: usize) -> Option<(Source, usize)> {
    let rest = &line[i..];
    match rest.first() {
        None => return None,
        Some(b' ') => return Some((Source::Internal, i)),
        _ => {}
    }
    // Xray's Destination prefix; a bracketed address may follow.
    let net_len = if rest.starts_with(b"tcp:") || rest.starts_with(b"udp:") {
        4
    } else {
        0
    };
    if rest.get(net_len) == Some(&b'[') {
        let inner_start = net_len + 1;
        let close = inner_start + find_byte(&rest[inner_start..], b']')?;
        let inner = &rest[inner_start..close];
        if rest.get(close + 1) != Some(&b':') {
            return None;
        }
        let port_start = close + 2;
        let port_len = find_byte(&rest[port_start..], b' ').unwrap_or(rest.len() - port_start);
        let port = parse_port(&rest[port_start..port_start + port_len])?;
        let end = i + port_start + port_len;
        let source = if inner == b"Masked IPv4" || inner == b"Masked IPv6" || inner.contains(&b'/')
        {
            Source::Masked
        } else {
            // A zone id (`fe80::1%eth0`) names the interface, not the client.
            let addr = match inner.iter().position(|&b| b == b'%') {
                Some(p) => &inner[..p],
                None => inner,
            };
            let ip = parse_ipv6(addr)?;
            ip_source(IpAddr::V6(ip), port)
        };
        return Some((source, end));
    }
    let len = find_byte(rest, b' ').unwrap_or(rest.len());
    let tok = &rest[..len];
    let end = i + len;
    if tok == b"DNS" {
        return Some((Source::Internal, end));
    }
    if tok[0] == b'@' || tok[0] == b'/' || tok.starts_with(b"unix:") {
        return Some((Source::Unix, end));
    }
    let addr = &tok[net_len..];
    let colon = rfind_byte(addr, b':')?;
    let (host, port) = (&addr[..colon], parse_port(&addr[colon + 1..])?);
    if let Some(ip) = parse_ipv4(host) {
        return Some((ip_source(IpAddr::V4(ip), port), end));
    }
    if host.contains(&b'*')
        && host
            .iter()
            .all(|&b| b == b'*' || b == b'.' || b.is_ascii_digit())
    {
        return Some((Source::Masked, end));
    }
    None
}

#[inline]
fn ip_source(ip: IpAddr, port: u16) -> Source {
    let ip = canonical(ip);
    if ip.is_unspecified() {
        Source::Unix
    } else {
        Source::Ip(ip, port)
    }
}

#[inline]
fn parse_port(s: &[u8]) -> Option<u16> {
    if s.len() > 5 {
        return None;
    }
    u16::try_from(digits(s)?).ok()
}

/// Dotted quad, no leading zeros (as Go prints it and as `std` accepts).
/// Octet by octet, at most three digits each, no per-byte state machine:
/// this runs on nearly every line.
#[inline]
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    if s.len() < 7 || s.len() > 15 {
        return None;
    }
    let digit = |i: usize| s.get(i).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9);
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, o) in octets.iter_mut().enumerate() {
        if k > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let mut v = u32::from(digit(i)?);
        i += 1;
        if let Some(d) = digit(i) {
            if v == 0 {
                return None; // a leading zero
            }
            v = v * 10 + u32::from(d);
            i += 1;
            if let Some(d) = digit(i) {
                v = v * 10 + u32::from(d);
                i += 1;
            }
        }
        *o = u8::try_from(v).ok()?;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

/// RFC 4291 text form, as `std` accepts it (hex groups, one `::`, an
/// optional dotted quad at the end). Hand-written because `std`'s parser
/// wants `&str` and costs about 100 ns on a full address.
fn parse_ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    /// Hex digit values; 0xff for every other byte (one load per byte
    /// instead of three range tests).
    const HEX: [u8; 256] = {
        let mut t = [0xff; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let mut g = [0u16; 8];
    let mut n = 0; // groups written
    let mut gap = None; // where `::` stands, in groups
    let mut i = 0;
    if s.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < s.len() || gap.is_none() {
        let start = i;
        let mut v = 0u32;
        while let Some(&b) = s.get(i) {
            let d = HEX[usize::from(b)];
            if d > 15 {
                break;
            }
            v = (v << 4) | u32::from(d);
            i += 1;
        }
        if s.get(i) == Some(&b'.') {
            // An embedded IPv4 address ends the text.
            if n > 6 {
                return None;
            }
            let o = parse_ipv4(&s[start..])?.octets();
            g[n] = u16::from_be_bytes([o[0], o[1]]);
            g[n + 1] = u16::from_be_bytes([o[2], o[3]]);
            n += 2;
            break;
        }
        let len = i - start;
        if len == 0 || len > 4 || n == 8 {
            return None;
        }
        g[n] = v as u16;
        n += 1;
        if i == s.len() {
            break;
        }
        if s[i] != b':' {
            return None;
        }
        i += 1;
        if s.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            i += 1;
        } else if i == s.len() {
            return None;
        }
    }
    match gap {
        Some(at) if n <= 7 => {
            let tail = n - at;
            g.copy_within(at..n, 8 - tail);
            g[at..8 - tail].fill(0);
        }
        None if n == 8 => {}
        _ => return None,
    }
    Some(Ipv6Addr::from(g))
}

/// The last ` email:` at or after `from`: its position and the value (after
/// one optional space; `None` when empty).
fn find_email(line: &[u8], from: usize) -> Option<(usize, Option<&[u8]>)> {
    let hay = &line[from..];
    let mut end = hay.len();
    while let Some(colon) = rfind_byte(&hay[..end], b':') {
        if colon >= 6 && &hay[colon - 6..colon] == b" email" {
            let mut value = &hay[colon + 1..];
            if let [b' ', v @ ..] = value {
                value = v;
            }
            let email = if value.is_empty() { None } else { Some(value) };
            return Some((from + colon - 6, email));
        }
        end = colon;
    }
    None
}

/// The inbound tag of a detour: the text before the rightmost ` -> `,
/// ` >> ` or ` ==> ` (`app/dispatcher/default.go`), `None` for `[out]`.
#[inline]
fn inbound_of(d: &[u8]) -> Option<&[u8]> {
    let mut end = d.len();
    while let Some(p) = rfind_byte(&d[..end], b'>') {
        if d.get(p + 1) == Some(&b' ') && p >= 2 {
            let start = match (d[p - 2], d[p - 1]) {
                (b' ', b'-' | b'>') => Some(p - 2),
                (b'=', b'=') if p >= 3 && d[p - 3] == b' ' => Some(p - 3),
                _ => None,
            };
            if let Some(s) = start {
                return if s == 0 { None } else { Some(&d[..s]) };
            }
        }
        end = p;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> Timestamp {
        let c = Civil {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
        };
        Timestamp::from_civil(c, us).unwrap()
    }

    fn ok(line: &[u8]) -> Access<'_> {
        match parse(line) {
            Ok(a) => a,
            Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(line)),
        }
    }

    fn ip(s: &str, port: u16) -> Source {
        Source::Ip(s.parse().unwrap(), port)
    }

    fn not_access(line: &[u8]) {
        assert_eq!(
            parse(line),
            Err(ParseError::NotAccess),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }

    /// Asserts every field of an accepted line.
    fn check(
        line: &[u8],
        t: Timestamp,
        source: Source,
        inbound: Option<&str>,
        detour: Option<&str>,
        email: Option<&str>,
    ) {
        let a = ok(line);
        let want = Access {
            ts: t,
            source,
            status: Status::Accepted,
            inbound: inbound.map(str::as_bytes),
            detour: detour.map(str::as_bytes),
            email: email.map(str::as_bytes),
            // Checked on its own (`the_audit_bracket_is_refract_0_2s`).
            bracket: a.bracket,
        };
        assert_eq!(a, want, "{:?}", String::from_utf8_lossy(line));
    }

    const T0: (i32, u32, u32, u32, u32, u32) = (2026, 1, 30, 17, 3, 38);

    fn t0(us: u32) -> Timestamp {
        ts(T0.0, T0.1, T0.2, T0.3, T0.4, T0.5, us)
    }

    #[test]
    fn xray_from_with_micros() {
        check(
            b"2026/01/30 17:03:38.067799 from 198.51.100.23:58676 accepted tcp:www.google.com:443 [vless-in >> direct] email: alice@example.com",
            t0(67_799),
            ip("198.51.100.23", 58676),
            Some("vless-in"),
            Some("vless-in >> direct"),
            Some("alice@example.com"),
        );
    }

    #[test]
    fn xray_mux_source_ipv6() {
        check(
            b"2026/01/30 17:03:38.100001 from tcp:[2001:db8:5:6::a]:40112 accepted udp:1.1.1.1:53 [vless-in -> dns-out] email: 12.bob",
            t0(100_001),
            ip("2001:db8:5:6::a", 40112),
            Some("vless-in"),
            Some("vless-in -> dns-out"),
            Some("12.bob"),
        );
        check(
            b"2026/01/30 17:03:38 from udp:198.51.100.7:1 accepted udp:1.1.1.1:53 [a ==> b] email: x",
            t0(0),
            ip("198.51.100.7", 1),
            Some("a"),
            Some("a ==> b"),
            Some("x"),
        );
    }

    #[test]
    fn xray_seconds_only_and_port0() {
        check(
            b"2024/10/01 08:00:00 from 203.0.113.9:0 accepted tcp:example.org:443 [ws-in >> direct] email: carol",
            ts(2024, 10, 1, 8, 0, 0, 0),
            ip("203.0.113.9", 0),
            Some("ws-in"),
            Some("ws-in >> direct"),
            Some("carol"),
        );
    }

    #[test]
    fn v2ray_no_from() {
        check(
            b"2021/02/01 12:00:00 203.0.113.5:51234 accepted tcp:www.google.com:443 [direct] email: dave",
            ts(2021, 2, 1, 12, 0, 0, 0),
            ip("203.0.113.5", 51234),
            None,
            Some("direct"),
            Some("dave"),
        );
        // v4.21–v4.33 / Xray ≤ v1.1.4: `email:x ` and `] ` before it.
        check(
            b"2021/01/05 09:00:00 203.0.113.5:51234 accepted tcp:www.google.com:443 [direct] email:dave \r",
            ts(2021, 1, 5, 9, 0, 0, 0),
            ip("203.0.113.5", 51234),
            None,
            Some("direct"),
            Some("dave"),
        );
        // Old form without detour nor email: `TO ` then nothing.
        check(
            b"2021/01/05 09:00:00 203.0.113.5:51234 accepted tcp:a.example:443 ",
            ts(2021, 1, 5, 9, 0, 0, 0),
            ip("203.0.113.5", 51234),
            None,
            None,
            None,
        );
        check(
            b"2021/01/05 09:00:00 tcp:198.51.100.23:58680 accepted udp:1.1.1.1:53 email:bob ",
            ts(2021, 1, 5, 9, 0, 0, 0),
            ip("198.51.100.23", 58680),
            None,
            None,
            Some("bob"),
        );
    }

    #[test]
    fn rejected_lines() {
        let a = ok(b"2026/01/30 17:03:38.000000 from 203.0.113.76:57676 rejected  proxy/vless/encoding: invalid request user id");
        assert_eq!(a.status, Status::Rejected);
        assert_eq!(a.source, ip("203.0.113.76", 57676));
        assert_eq!((a.inbound, a.detour, a.email), (None, None, None));
        assert_eq!(a.ts, t0(0));
        // Reason with brackets, colons, arrows: never a detour.
        let a = ok(b"2026/01/30 17:03:38 from 203.0.113.76:1 rejected  common/drain: [a -> b] failed: x > y [direct]");
        assert_eq!(
            (a.status, a.detour, a.inbound, a.email),
            (Status::Rejected, None, None, None)
        );
        // V2Ray's VMess rejection carries an email.
        let a = ok(b"2021/01/05 09:00:00 203.0.113.76:57676 rejected  v2ray.com/core/proxy/vmess/encoding: insecure encryption email: eve@example.com");
        assert_eq!(a.status, Status::Rejected);
        assert_eq!(a.email, Some(&b"eve@example.com"[..]));
        // A reason mentioning `email:` earlier does not steal the real one.
        let a =
            ok(b"2026/01/30 17:03:38 from 203.0.113.76:1 rejected  bad email: header email: real");
        assert_eq!(a.email, Some(&b"real"[..]));
        // No reason at all.
        let a = ok(b"2026/01/30 17:03:38 from 203.0.113.76:1 rejected");
        assert_eq!((a.status, a.email), (Status::Rejected, None));
        not_access(b"2026/01/30 17:03:38 from 203.0.113.76:1 rejectedx");
    }

    #[test]
    fn internal_sources() {
        check(
            b"2026/01/30 17:03:38.004450 from DNS accepted udp:1.1.1.1:53 [direct]",
            t0(4_450),
            Source::Internal,
            None,
            Some("direct"),
            None,
        );
        check(
            b"2026/01/30 17:03:38.004450 from  accepted udp:1.1.1.1:53 [dns-in >> direct]",
            t0(4_450),
            Source::Internal,
            Some("dns-in"),
            Some("dns-in >> direct"),
            None,
        );
        check(
            b"2026/01/30 17:03:38  accepted udp:1.1.1.1:53",
            t0(0),
            Source::Internal,
            None,
            None,
            None,
        );
        check(
            b"2026/01/30 17:03:41.000000 from 127.0.0.1:39946 accepted tcp:127.0.0.1:0 [api -> api]",
            ts(2026, 1, 30, 17, 3, 41, 0),
            ip("127.0.0.1", 39946),
            Some("api"),
            Some("api -> api"),
            None,
        );
    }

    #[test]
    fn unix_sources() {
        for from in [
            "0.0.0.0:0",
            "[::]:0",
            "@",
            "@xray.sock",
            "/run/xray/in.sock",
            "unix:/run/xray/in.sock",
            "tcp:0.0.0.0:0",
            "0.0.0.0:443",
        ] {
            let line = format!("2026/01/30 17:03:38 from {from} accepted tcp:example.org:443 [uds >> direct] email: carol");
            check(
                line.as_bytes(),
                t0(0),
                Source::Unix,
                Some("uds"),
                Some("uds >> direct"),
                Some("carol"),
            );
        }
    }

    #[test]
    fn masked_sources() {
        for from in [
            "203.0.*.*:51234",
            "192.0.2.*:51234",
            "*.*.*.*:1",
            "[Masked IPv4]:51234",
            "[Masked IPv6]:51234",
            "[2001:db8::/32]:51234",
            "tcp:203.0.*.*:51234",
            "tcp:[2001:db8:5:6::/64]:51234",
        ] {
            let line = format!(
                "2026/01/30 17:03:38 from {from} accepted tcp:example.org:443 [in >> out] email: c"
            );
            check(
                line.as_bytes(),
                t0(0),
                Source::Masked,
                Some("in"),
                Some("in >> out"),
                Some("c"),
            );
        }
        not_access(b"2026/01/30 17:03:38 from [Masked IPv4] accepted tcp:x:1 email: c");
        not_access(b"2026/01/30 17:03:38 from 203.0.*.x:5 accepted tcp:x:1 email: c");
    }

    #[test]
    fn addresses() {
        let cases: &[(&str, Source)] = &[
            ("[2001:db8::1]:443", ip("2001:db8::1", 443)),
            ("[::ffff:192.0.2.7]:443", ip("192.0.2.7", 443)),
            ("tcp:[::ffff:192.0.2.7]:443", ip("192.0.2.7", 443)),
            ("[fe80::1%eth0]:443", ip("fe80::1", 443)),
            ("[::1]:5", ip("::1", 5)),
            ("255.255.255.255:65535", ip("255.255.255.255", 65535)),
            ("1.2.3.4:00080", ip("1.2.3.4", 80)),
        ];
        for (from, want) in cases {
            let line = format!("2026/01/30 17:03:38 from {from} accepted tcp:x:1 email: e");
            assert_eq!(ok(line.as_bytes()).source, *want, "{from}");
        }
        for from in [
            "1.2.3.4:65536",
            "1.2.3.4:123456",
            "1.2.3.4:",
            "1.2.3.4",
            "1.2.3.256:1",
            "1.2.3:1",
            "1.2.3.4.5:1",
            "01.2.3.4:1",
            "1.2.3.4:-1",
            "[2001:db8::1]",
            "[2001:db8::1]:",
            "[2001:db8::1]:70000",
            "[2001:db8::g]:1",
            "[1.2.3.4]:1",
            "2001:db8::1:443",
            "localhost:1",
            "tcp:",
            "udp:DNS",
        ] {
            not_access(
                format!("2026/01/30 17:03:38 from {from} accepted tcp:x:1 email: e").as_bytes(),
            );
        }
    }

    #[test]
    fn prefixes() {
        let want = ts(2026, 11, 21, 10, 0, 1, 120_331);
        for prefix in [
            "Jun 30 14:16:59 host xray[2634]: ",
            "Thu Oct 13 07:50:02 2022 daemon.info xray[23519]: ",
            "2026-11-21T10:00:01+0000 node1 xray[812]: ",
        ] {
            let line = format!("{prefix}2026/11/21 10:00:01.120331 from 198.51.100.23:58676 accepted tcp:www.google.com:443 [vless-in >> direct] email: alice@example.com\r\n");
            check(
                line.as_bytes(),
                want,
                ip("198.51.100.23", 58676),
                Some("vless-in"),
                Some("vless-in >> direct"),
                Some("alice@example.com"),
            );
        }
        // A prefix longer than MAX_PREFIX is not looked through.
        let long = format!(
            "{} 2026/11/21 10:00:01 from 1.2.3.4:5 accepted tcp:x:1 email: e",
            "x".repeat(MAX_PREFIX)
        );
        not_access(long.as_bytes());
        not_access(b"Nov 21 10:00:00 node1 xray[812]: Xray 26.7.28 (Xray, Penetrates Everything.) 2b19e0b (go1.25.4 linux/amd64)");
    }

    #[test]
    fn timestamps() {
        let line = |t: &str| format!("{t} from 1.2.3.4:5 accepted tcp:x:1 email: e");
        for (t, us) in [
            ("2026/01/30 17:03:38.1", 100_000),
            ("2026/01/30 17:03:38.12", 120_000),
            ("2026/01/30 17:03:38.000001", 1),
            ("2026/01/30 17:03:38.999999", 999_999),
        ] {
            assert_eq!(ok(line(t).as_bytes()).ts, t0(us), "{t}");
        }
        for t in [
            "2026/01/30 17:03:38.",
            "2026/01/30 17:03:38.1234567",
            "2026/01/30 17:03:38.12a",
            "2026/13/30 17:03:38",
            "2026/01/32 17:03:38",
            "2026/01/30 24:03:38",
            "2026/01/30 17:60:38",
            "2026/1/30 17:03:38",
            "2026-01-30 17:03:38",
            "2026/01/30 17:03:3x",
            "+026/01/30 17:03:38",
        ] {
            not_access(line(t).as_bytes());
        }
    }

    #[test]
    fn targets() {
        for to in [
            "//www.google.com:443",
            "http://149.154.165.120:80/api?x=[1]&email:2",
            "example.com:443",
            "tcp:[2001:db8::1]:443",
            "1password.com:443",
        ] {
            let line = format!("2026/01/30 17:03:38 from 1.2.3.4:5 accepted {to} [inbound-127.0.0.1:3010 >> direct] email: e");
            check(
                line.as_bytes(),
                t0(0),
                ip("1.2.3.4", 5),
                Some("inbound-127.0.0.1:3010"),
                Some("inbound-127.0.0.1:3010 >> direct"),
                Some("e"),
            );
        }
    }

    #[test]
    fn detours_and_tags() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "[VLESS TCP REALITY >> direct]",
                Some("VLESS TCP REALITY"),
                Some("VLESS TCP REALITY >> direct"),
            ),
            (
                "[входящий 🚀 -> прямой]",
                Some("входящий 🚀"),
                Some("входящий 🚀 -> прямой"),
            ),
            ("[a]b [c] >> d]", Some("a]b [c]"), Some("a]b [c] >> d")),
            ("[in->out]", None, Some("in->out")),
            ("[a -> b -> c]", Some("a -> b"), Some("a -> b -> c")),
            ("[ -> out]", None, Some(" -> out")),
            ("[direct]", None, Some("direct")),
            ("[]", None, None),
            ("", None, None),
        ];
        for (bracket, inbound, detour) in cases {
            let sep = if bracket.is_empty() { "" } else { " " };
            let line = format!(
                "2026/01/30 17:03:38 from 1.2.3.4:5 accepted tcp:x:1{sep}{bracket} email: e"
            );
            check(
                line.as_bytes(),
                t0(0),
                ip("1.2.3.4", 5),
                *inbound,
                *detour,
                Some("e"),
            );
            // And at the end of the line, no email.
            let line = format!("2026/01/30 17:03:38 from 1.2.3.4:5 accepted tcp:x:1{sep}{bracket}");
            check(
                line.as_bytes(),
                t0(0),
                ip("1.2.3.4", 5),
                *inbound,
                *detour,
                None,
            );
        }
        // An accepted line with text after the bracket (old format reason).
        check(
            b"2021/01/05 09:00:00 1.2.3.4:5 accepted tcp:x:1 [a >> b] some reason email:e ",
            ts(2021, 1, 5, 9, 0, 0, 0),
            ip("1.2.3.4", 5),
            Some("a"),
            Some("a >> b"),
            Some("e"),
        );
    }

    #[test]
    fn emails() {
        let line = |tail: &str| {
            format!("2026/01/30 17:03:38 from 1.2.3.4:5 accepted tcp:x:1 [in >> out]{tail}")
        };
        let cases: &[(&str, Option<&[u8]>)] = &[
            (" email: alice@example.com\r\n", Some(b"alice@example.com")),
            (" email: 4065   ", Some(b"4065")),
            (" email: a b  c", Some(b"a b  c")),
            (" email:  spaced", Some(b" spaced")),
            (" email: ", None),
            (" email:", None),
            (" email: x:y:z", Some(b"x:y:z")),
            // The last marker wins: an email that contains ` email: ` is cut.
            (" email: a email: b", Some(b"b")),
            ("email: glued", None),
        ];
        for (tail, want) in cases {
            assert_eq!(ok(line(tail).as_bytes()).email, *want, "{tail:?}");
        }
        // A tag containing ` email: ` does not steal the email.
        let a = ok(
            b"2026/01/30 17:03:38 from 1.2.3.4:5 accepted tcp:x:1 [in email: x >> out] email: real",
        );
        assert_eq!(a.email, Some(&b"real"[..]));
        assert_eq!(a.detour, Some(&b"in email: x >> out"[..]));
        assert_eq!(a.inbound, Some(&b"in email: x"[..]));
        // Invalid UTF-8 anywhere.
        let mut l = b"2026/01/30 17:03:38 from 1.2.3.4:5 accepted tcp:\xff\xfe:1 [\xc3( >> out] email: \xff\xc0bob\x80".to_vec();
        let a = ok(&l);
        assert_eq!(a.email, Some(&b"\xff\xc0bob\x80"[..]));
        assert_eq!(a.inbound, Some(&b"\xc3("[..]));
        l[25] = 0xff; // inside the source address
        not_access(&l);
    }

    #[test]
    fn not_access_lines() {
        for line in [
            &b""[..],
            b"\r",
            b"   ",
            b"2026/11/21 10:00:00.000100 [Warning] core: Xray 26.7.28 started",
            b"2026/11/21 10:00:00 [Info] [1234] proxy/vless/inbound: 1.2.3.4:5 accepted x",
            b"2026/11/21 10:00:00 [Debug] x",
            b"2026/11/21 10:00:00 [Error] x",
            b"2026/11/21 10:00:01.900000 UDP:8.8.8.8:53 got answer: example.com -> [93.184.215.14] 12.3ms",
            b"2026/11/21 10:00:01 cache HIT: example.com -> [93.184.215.14]",
            b"2026/11/21 10:00:01 DOHL//one.one.one.one got answer: a -> [1.1.1.1] 1ms",
            b"2026/11/21 10:00:01 localhost got answer: a -> [127.0.0.1] 1ms",
            b"Xray 26.7.28 (Xray, Penetrates Everything.) 2b19e0b (go1.25.4 linux/amd64)",
            b"A unified platform for anti-censorship.",
            b"2026/11/21 10:00:01",
            b"2026/11/21 10:00:01 ",
            b"2026/11/21 10:00:01 from",
            b"2026/11/21 10:00:01 from ",
            b"2026/11/21 10:00:01 from 1.2.3.4:5",
            b"2026/11/21 10:00:01 from 1.2.3.4:5 ",
            b"2026/11/21 10:00:01 from 1.2.3.4:5 accepted",
            b"2026/11/21 10:00:01 from 1.2.3.4:5 accepted ",
            b"2026/11/21 10:00:01 from 1.2.3.4:5 accepted  [a >> b] email: x",
            b"2026/11/21 10:00:01 from 1.2.3.4:5 acceptedtcp:x:1",
            b"2026/11/21 10:00:01 from 1.2.3.4:5  accepted tcp:x:1",
            b"2026/11/21 10:00:01 fromage 1.2.3.4:5 accepted tcp:x:1",
            b"2026/11/21 10:00:01 from 1.2.3.4:5x accepted tcp:x:1",
            b"2026/11/21 10:00:01 from from 1.2.3.4:5 accepted tcp:x:1",
        ] {
            not_access(line);
        }
    }

    /// Every line of the shared samples (copied into `tests/fixtures`), with
    /// every field asserted.
    #[test]
    fn sample_files() {
        type Want = Option<(Source, Status, Option<&'static str>, Option<&'static str>)>;
        let mixed: &[u8] = include_bytes!("../tests/fixtures/mixed.log");
        let v2ray: &[u8] = include_bytes!("../tests/fixtures/v2ray-4.34.log");
        let a = Status::Accepted;
        let alice = Some("alice@example.com");
        let mixed_want: &[(u32, u32, Want)] = &[
            (0, 0, None),
            (0, 100, None),
            (
                1,
                120_331,
                Some((
                    ip("198.51.100.23", 58676),
                    a,
                    Some("vless-in >> direct"),
                    alice,
                )),
            ),
            (
                1,
                250_004,
                Some((ip("127.0.0.1", 39946), a, Some("api -> api"), None)),
            ),
            (
                1,
                300_871,
                Some((
                    ip("198.51.100.23", 58680),
                    a,
                    Some("vless-in -> dns-out"),
                    alice,
                )),
            ),
            (1, 900_000, None),
            (2, 4_450, Some((Source::Internal, a, Some("direct"), None))),
            (
                2,
                500_100,
                Some((
                    ip("2001:db8:5:6::a", 40112),
                    a,
                    Some("VLESS TCP REALITY >> direct"),
                    Some("12.bob"),
                )),
            ),
            (
                2,
                700_200,
                Some((
                    ip("2001:db8:5:6:8c1e:2ff:fe00:1", 40200),
                    a,
                    Some("VLESS TCP REALITY >> direct"),
                    Some("12.bob"),
                )),
            ),
            (
                3,
                0,
                Some((ip("203.0.113.76", 57676), Status::Rejected, None, None)),
            ),
            (
                3,
                100_000,
                Some((
                    ip("203.0.113.9", 0),
                    a,
                    Some("ws-in >> direct"),
                    Some("carol"),
                )),
            ),
            (
                3,
                200_000,
                Some((Source::Unix, a, Some("xhttp-uds >> direct"), Some("carol"))),
            ),
            (
                3,
                300_000,
                Some((Source::Masked, a, Some("vless-in >> direct"), Some("carol"))),
            ),
            (
                4,
                0,
                Some((
                    ip("192.0.2.44", 61000),
                    a,
                    Some("vless-in >> direct"),
                    alice,
                )),
            ),
            (
                4,
                500_000,
                Some((
                    ip("198.51.100.23", 58690),
                    a,
                    Some("inbound-127.0.0.1:3010 >> direct"),
                    alice,
                )),
            ),
            (
                11,
                0,
                Some((
                    ip("192.0.2.45", 61010),
                    a,
                    Some("vless-in >> direct"),
                    alice,
                )),
            ),
        ];
        let lines: Vec<&[u8]> = mixed
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), mixed_want.len());
        for (line, (sec, us, want)) in lines.iter().zip(mixed_want) {
            let got = parse(line);
            let Some((source, status, detour, email)) = want else {
                assert_eq!(
                    got,
                    Err(ParseError::NotAccess),
                    "{}",
                    String::from_utf8_lossy(line)
                );
                continue;
            };
            let got = got.unwrap();
            let inbound = detour
                .and_then(|d| d.split_once(" >> ").or(d.split_once(" -> ")))
                .map(|(i, _)| i.as_bytes());
            assert_eq!(
                got,
                Access {
                    ts: ts(2026, 11, 21, 10, 0, *sec, *us),
                    source: *source,
                    status: *status,
                    inbound,
                    detour: detour.map(str::as_bytes),
                    email: email.map(str::as_bytes),
                    bracket: got.bracket,
                },
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let v2_want: &[(Timestamp, Source, Status, Option<&str>)] = &[
            (
                ts(2026, 11, 21, 10, 0, 1, 0),
                ip("198.51.100.23", 58676),
                a,
                alice,
            ),
            (
                ts(2026, 11, 21, 10, 0, 1, 0),
                ip("198.51.100.23", 58680),
                a,
                alice,
            ),
            (
                ts(2026, 11, 21, 10, 0, 2, 0),
                ip("2001:db8:5:6::a", 40112),
                a,
                Some("bob"),
            ),
            (
                ts(2026, 11, 21, 10, 0, 2, 0),
                ip("203.0.113.76", 57676),
                Status::Rejected,
                None,
            ),
            (
                ts(2026, 11, 21, 10, 0, 3, 0),
                ip("192.0.2.44", 61000),
                a,
                alice,
            ),
            (
                ts(2021, 1, 5, 9, 0, 0, 0),
                ip("203.0.113.5", 51234),
                a,
                Some("dave"),
            ),
        ];
        let lines: Vec<&[u8]> = v2ray
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), v2_want.len());
        for (line, (t, source, status, email)) in lines.iter().zip(v2_want) {
            let rejected = *status == Status::Rejected;
            let bracket = parse(line).ok().and_then(|a| a.bracket);
            assert_eq!(
                parse(line),
                Ok(Access {
                    ts: *t,
                    source: *source,
                    status: *status,
                    inbound: None,
                    detour: if rejected { None } else { Some(b"direct") },
                    email: email.map(str::as_bytes),
                    bracket,
                }),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// refract 0.2's rule (`strings.Index(line, "[")` to the first `]`),
    /// on the access line: what its audit line printed.
    #[test]
    fn the_audit_bracket_is_refract_0_2s() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"2026/01/30 17:03:38.067799 from 198.51.100.23:58676 accepted tcp:www.google.com:443 [vless-in >> direct] email: a", b"vless-in >> direct"),
            (b"2026/01/30 17:03:38 from 198.51.100.23:58676 accepted tcp:a.example:443 [direct] email: a", b"direct"),
            (b"2026/01/30 17:03:38 from 198.51.100.23:58676 accepted tcp:a.example:443 [in -> out] email: a", b"in -> out"),
            (b"2026/01/30 17:03:38 from 198.51.100.23:58676 accepted tcp:a.example:443 [VLESS TCP REALITY ==> direct] email: a", b"VLESS TCP REALITY ==> direct"),
            // An IPv6 destination comes first: 0.2 printed the address.
            (b"2026/01/30 17:03:38 from 198.51.100.23:58676 accepted tcp:[2001:db8::1]:443 [in >> direct] email: a", b"2001:db8::1"),
            // A syslog prefix's brackets are not the access line's.
            (b"Jun 30 14:16:59 host xray[2634]: 2026/01/30 17:03:38 from 198.51.100.23:1 accepted tcp:a:443 [in >> out] email: a", b"in >> out"),
        ];
        for (line, want) in cases {
            let a = ok(line);
            assert_eq!(a.audit_tag(), *want, "{}", String::from_utf8_lossy(line));
        }
        // No bracket at all: "unknown", as 0.2 printed it.
        let a =
            ok(b"2026/01/30 17:03:38 from 198.51.100.23:58676 accepted tcp:a.example:443 email: a");
        assert_eq!((a.bracket, a.audit_tag()), (None, &b"unknown"[..]));
    }

    const VALID: &[&[u8]] = &[
        b"2026/01/30 17:03:38.067799 from 198.51.100.23:58676 accepted tcp:www.google.com:443 [vless-in >> direct] email: alice@example.com\r",
        b"Thu Oct 13 07:50:02 2022 daemon.info xray[23519]: 2026/01/30 17:03:38.1 from tcp:[2001:db8::1%eth0]:40112 accepted udp:1.1.1.1:53 [a b -> c] email:dave ",
        b"2026/01/30 17:03:38 from [Masked IPv4]:51234 rejected  proxy/vless: [x] email: y",
    ];

    /// The hand-written IPv6 parser agrees with `std` on printed addresses
    /// and on random strings over its alphabet.
    #[test]
    fn ipv6_matches_std() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let std_parse = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<Ipv6Addr>().ok();
        for fixed in [
            "::",
            "::1",
            "1::",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            ":::",
            "1:::2",
            ":1::",
            "1::2::3",
            "12345::",
            "::1.2.3.4",
            "1.2.3.4",
            "::1.2.3.4:5",
            "fe80::",
            "FE80::ABCD",
            "",
            ":",
            "1:",
            "1:2:3:4:5:6:7",
            "::ffff:01.2.3.4",
            "::ffff:1.2.3",
            "1:2:3:4:5:6:7:1.2.3.4",
        ] {
            assert_eq!(
                parse_ipv6(fixed.as_bytes()),
                std_parse(fixed.as_bytes()),
                "{fixed:?}"
            );
        }
        let alphabet = b"0123456789abcdefABCDEF:::...g";
        for _ in 0..100_000 {
            // A printed address (std's compressed form, sometimes mapped).
            let a = Ipv6Addr::from(
                (u128::from(rng.next()) << (rng.below(64) as u32))
                    | u128::from(rng.next() & 0xffff),
            );
            let text = a.to_string();
            assert_eq!(parse_ipv6(text.as_bytes()), Some(a), "{text}");
            // Random text.
            let len = rng.below(24);
            let r: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            assert_eq!(
                parse_ipv6(&r),
                std_parse(&r),
                "{:?}",
                String::from_utf8_lossy(&r)
            );
            // A printed address with one byte changed, removed or added.
            let mut m = text.into_bytes();
            let at = rng.below(m.len() + 1);
            let b = alphabet[rng.below(alphabet.len())];
            match rng.below(3) {
                0 if at < m.len() => m[at] = b,
                1 if at < m.len() => {
                    m.remove(at);
                }
                _ => m.insert(at, b),
            }
            assert_eq!(
                parse_ipv6(&m),
                std_parse(&m),
                "{:?}",
                String::from_utf8_lossy(&m)
            );
        }
    }

    #[test]
    fn truncations_never_panic() {
        for line in VALID {
            assert!(parse(line).is_ok());
            for n in 0..=line.len() {
                let _ = parse(&line[..n]);
                let _ = parse(&line[n..]);
            }
        }
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_lines_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        // Bytes that matter to the grammar, so mutations hit real branches.
        let alphabet = b" :[]/.>-=*@%0123456789emailfromacceptedrejectedtcpudp\r\n\xff";
        let mut buf = Vec::with_capacity(512);
        let mut parsed = 0;
        // One cache across all lines, as replay keeps it: a mutated stamp
        // next to a cached one must still parse exactly as without it.
        let mut cache = TsCache::default();
        for round in 0..100_000 {
            buf.clear();
            if round % 2 == 0 {
                buf.extend_from_slice(VALID[rng.below(VALID.len())]);
                for _ in 0..=rng.below(4) {
                    let at = rng.below(buf.len() + 1);
                    match rng.below(3) {
                        0 if at < buf.len() => buf[at] = alphabet[rng.below(alphabet.len())],
                        1 if at < buf.len() => {
                            buf.remove(at);
                        }
                        _ => buf.insert(at, alphabet[rng.below(alphabet.len())]),
                    }
                }
            } else {
                for _ in 0..rng.below(200) {
                    let b = if rng.below(4) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    };
                    buf.push(b);
                }
            }
            let plain = parse(&buf);
            assert_eq!(parse_with(&buf, &mut cache), plain, "{buf:?}");
            if plain.is_ok() {
                parsed += 1;
            }
        }
        // The mutations keep many lines valid: the test really reaches the
        // end of the grammar, not just the timestamp check.
        assert!(parsed > 10_000, "{parsed}");
    }

    #[test]
    fn ipv4_matches_std() {
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        let alphabet = b"0123456789.....:x";
        let mut fixed: Vec<Vec<u8>> = [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1000.1.1.1",
            "1.2.3.255",
            "10.0.0.1x",
            "198.51.100.7",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for round in 0..200_000 {
            if round % 2 == 0 {
                let n = rng.below(17);
                fixed.push(
                    (0..n)
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect(),
                );
            } else {
                // Near-valid quads: octets up to 300, sometimes zero-padded.
                let mut q = Vec::new();
                for k in 0..3 + rng.below(3) {
                    if k > 0 {
                        q.push(b'.');
                    }
                    let o = rng.below(301);
                    let text = if rng.below(10) == 0 {
                        format!("0{o}")
                    } else {
                        o.to_string()
                    };
                    q.extend_from_slice(text.as_bytes());
                }
                fixed.push(q);
            }
        }
        let mut ok = 0;
        for s in &fixed {
            let want = std::str::from_utf8(s).unwrap().parse::<Ipv4Addr>().ok();
            assert_eq!(parse_ipv4(s), want, "{:?}", String::from_utf8_lossy(s));
            ok += usize::from(want.is_some());
        }
        assert!(ok > 10_000, "{ok}");
    }

    #[test]
    fn the_timestamp_cache_keeps_results() {
        let mut c = TsCache::default();
        let a = b"2026/01/30 17:03:38.067799 from 198.51.100.7:1 accepted tcp:x:443 email: a";
        let b = b"2026/01/30 17:03:38.500000 from 198.51.100.7:1 accepted tcp:x:443 email: a";
        let c2 = b"2026/01/30 17:03:39 198.51.100.7:1 accepted tcp:x:443 email: a";
        let bad = b"2026/01/30 17:03:39.5x from 198.51.100.7:1 accepted tcp:x:443 email: a";
        let zeros = [0u8; 40];
        assert_eq!(parse_with(&zeros, &mut c), Err(ParseError::NotAccess));
        for line in [&a[..], b, c2, bad, a, &zeros, b] {
            assert_eq!(parse_with(line, &mut c), parse(line), "{line:?}");
        }
        assert_eq!(parse_with(b, &mut c).unwrap().ts.micros, 500_000);
        assert_eq!(parse_with(b, &mut c).unwrap().ts, {
            let mut t = parse(a).unwrap().ts;
            t.micros = 500_000;
            t
        });
    }

    #[test]
    fn huge_lines_are_linear() {
        let mib = 1 << 20;
        let start = std::time::Instant::now();
        // A tag of 1 MiB of colons and `>`s (worst case for the backward scans).
        let mut l = b"2026/01/30 17:03:38 from 1.2.3.4:5 accepted tcp:x:1 [".to_vec();
        l.extend(std::iter::repeat(&b": >"[..]).take(mib / 3).flatten());
        l.extend_from_slice(b" >> out] email: u");
        let a = ok(&l);
        assert_eq!(a.email, Some(&b"u"[..]));
        assert_eq!(a.inbound.map(<[u8]>::len), Some(mib / 3 * 3));
        // No email, a huge colon-filled reason.
        let mut l = b"2026/01/30 17:03:38 from 1.2.3.4:5 rejected  ".to_vec();
        l.extend(std::iter::repeat(b':').take(mib));
        assert_eq!(ok(&l).email, None);
        // Garbage: 1 MiB of timestamp-looking fragments and brackets.
        let mut l = Vec::new();
        while l.len() < mib {
            l.extend_from_slice(b" 2026/01/30 17:03:3x [");
        }
        not_access(&l);
        let mut l = b"2026/01/30 17:03:38 from [".to_vec();
        l.extend(std::iter::repeat(b'1').take(mib));
        not_access(&l);
        let mut l = b"2026/01/30 17:03:38 from 1.2.3.4:5 accepted ".to_vec();
        l.extend(std::iter::repeat(b'x').take(mib));
        assert!(parse(&l).is_ok());
        // Generous even for a debug build on a shared machine: a quadratic
        // scan over 1 MiB would take minutes.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
