//! The realistic mix of issue 17: a deterministic log shaped like the one a
//! new user tried, so bans and audit lines are part of the measured cost.
//!
//! `generate(lines, seed)` always yields the same bytes for the same
//! arguments (the xorshift PRNG of [`super::Rng`], no clock). Shape, for
//! 1,000,000 lines (shares of all lines, approximate):
//! - ~10,000 users over a pool of ~50,000 client addresses (~15% IPv6, a
//!   stable /64 per device with rotating host bits); sessions of one user
//!   from one address, [`ACTIVE`] of them interleaved, a mean gap of
//!   86.4 ms between lines (1M lines span a day);
//! - ~2.5% of the user lines come from the user's *second* address (a
//!   second device, half of the time a fixed one, otherwise anywhere in the
//!   pool) while the first is still online: with the default policy (limit
//!   1, window 5 s) most of them ban, ~21,000 bans per million lines, each
//!   writing an audit line;
//! - a fifth of the user lines with mux `tcp:` sources, ~15% UDP
//!   destinations, some IPv6 destinations, several inbound tags (with
//!   spaces, colons), `>>`, `->` and `==>` detours;
//! - ~4% panel API polling (`from 127.0.0.1:P accepted tcp:127.0.0.1:62789
//!   [api -> api]`), ~2% `rejected` lines, ~1% `from DNS accepted`.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544) and 2001:db8::/32
//! (documentation): nothing in a generated log is a real host.

use std::io::Write;

use super::{push_addr, push_ts, Addr, Rng};

/// Users in the population.
pub const USERS: usize = 10_000;
/// Client addresses in the pool.
pub const ADDRESSES: usize = 50_000;
/// Sessions running at once (interleaved in the log).
const ACTIVE: usize = 48;
/// Mean gap between lines: 86_400 s / 1_000_000 lines.
const MEAN_GAP_US: u64 = 86_400;

const INBOUNDS: &[&str] = &[
    "vless-reality",
    "VLESS TCP REALITY",
    "inbound-443",
    "inbound-127.0.0.1:3010",
    "vmess-ws",
    "trojan-grpc",
    "Shadowsocks TCP",
    "hysteria2",
];
const OUTBOUNDS: &[&str] = &["direct", "direct", "direct", "direct", "WARP", "blackhole"];
const TCP_DESTS: &[&str] = &[
    "www.google.com:443",
    "www.youtube.com:443",
    "rr3---sn-4g5lznez.googlevideo.com:443",
    "api.telegram.org:443",
    "149.154.167.51:443",
    "graph.instagram.com:443",
    "www.netflix.com:443",
    "open.spotify.com:443",
    "github.com:443",
    "chat.openai.com:443",
    "[2a03:2880:f12f:83:face:b00c:0:25de]:443",
    "[2606:4700::6810:84e5]:443",
    "cdn.jsdelivr.net:443",
    "mtalk.google.com:5228",
    "93.184.215.14:80",
];
const UDP_DESTS: &[&str] = &[
    "1.1.1.1:53",
    "8.8.8.8:53",
    "www.youtube.com:443",
    "[2001:4860:4860::8888]:53",
    "stun.l.google.com:19302",
    "149.154.167.51:443",
];

struct User {
    email: String,
    inbound: &'static str,
    home: usize,
    second: usize,
}

struct Session {
    user: usize,
    addr: usize,
    left: u32,
}

fn make_users(rng: &mut Rng) -> Vec<User> {
    (0..USERS)
        .map(|i| {
            let email = match i % 5 {
                0 => format!("user{i}@example.com"),
                1 => format!("{i}.{}", ["alice", "bob", "carol", "dave", "erin"][i % 5]),
                2 => format!("{}", 4000 + i),
                3 => format!("tg_{}", 100_000_000 + i * 7919),
                _ => {
                    let r = rng.next();
                    format!("{:08x}{:04x}", r as u32, (r >> 32) as u16)
                }
            };
            User {
                email,
                inbound: INBOUNDS[rng.below(INBOUNDS.len())],
                home: rng.below(ADDRESSES),
                second: rng.below(ADDRESSES),
            }
        })
        .collect()
}

fn make_addrs(rng: &mut Rng) -> Vec<Addr> {
    (0..ADDRESSES)
        .map(|_| {
            if rng.chance(150) {
                Addr::V6(0x2001_0db8_0000_0000 | (rng.next() & 0xffff_ffff))
            } else {
                Addr::V4(0xC612_0000 | (rng.next() as u32 & 0x1_ffff))
            }
        })
        .collect()
}

fn new_session(rng: &mut Rng, users: &[User]) -> Session {
    // Half uniform, half skewed towards low indices: heavy users and a
    // long tail, nearly all of them seen in a million lines.
    let user = if rng.chance(500) {
        rng.below(USERS)
    } else {
        rng.below(USERS).min(rng.below(USERS))
    };
    let addr = if rng.chance(900) {
        users[user].home
    } else {
        rng.below(ADDRESSES)
    };
    Session {
        user,
        addr,
        left: 5 + rng.below(60) as u32,
    }
}

/// `lines` lines of the realistic mix, each ending in `\n`; the same
/// `(lines, seed)` always gives the same bytes.
pub fn generate(lines: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ 0x5EED_0017);
    let users = make_users(&mut rng);
    let addrs = make_addrs(&mut rng);
    let mut sessions: Vec<Session> = (0..ACTIVE).map(|_| new_session(&mut rng, &users)).collect();
    let mut out = Vec::with_capacity(lines * 150);
    let mut t: u64 = 0;
    for _ in 0..lines {
        t += rng.below(2 * MEAN_GAP_US as usize) as u64;
        push_ts(&mut out, t, true);
        let kind = rng.below(1000);
        if kind < 70 {
            other_line(&mut out, &mut rng, kind);
            out.push(b'\n');
            continue;
        }
        let si = rng.below(ACTIVE);
        let s = &sessions[si];
        let u = &users[s.user];
        // A second device while the first is online: 2.5% of user lines.
        let addr = if rng.chance(28) {
            if rng.chance(500) {
                u.second
            } else {
                rng.below(ADDRESSES)
            }
        } else {
            s.addr
        };
        out.extend_from_slice(b" from ");
        let mux = rng.chance(200);
        if mux {
            out.extend_from_slice(b"tcp:");
        }
        let p = 1024 + rng.below(64_000) as u16;
        push_addr(&mut out, &mut rng, addrs[addr], p);
        out.extend_from_slice(b" accepted ");
        if rng.chance(150) {
            let _ = write!(out, "udp:{}", rng.pick(UDP_DESTS));
        } else {
            let _ = write!(out, "tcp:{}", rng.pick(TCP_DESTS));
        }
        let sep = match rng.below(20) {
            0..=13 => ">>",
            14..=18 => "->",
            _ => "==>",
        };
        let _ = write!(
            out,
            " [{} {sep} {}] email: {}",
            u.inbound,
            rng.pick(OUTBOUNDS),
            u.email
        );
        out.push(b'\n');
        let s = &mut sessions[si];
        s.left -= 1;
        if s.left == 0 {
            sessions[si] = new_session(&mut rng, &users);
        }
    }
    out
}

/// Lines that are not a user's connection (after the timestamp).
fn other_line(out: &mut Vec<u8>, rng: &mut Rng, kind: usize) {
    let _ = match kind {
        0..=39 => write!(
            out,
            " from 127.0.0.1:{} accepted tcp:127.0.0.1:62789 [api -> api]",
            30_000 + rng.below(30_000)
        ),
        40..=59 => {
            out.extend_from_slice(b" from ");
            let a = Addr::V4(0xC612_0000 | (rng.next() as u32 & 0x1_ffff));
            let p = 1024 + rng.below(64_000) as u16;
            push_addr(out, rng, a, p);
            write!(
                out,
                " rejected  proxy/vless/encoding: invalid request user id"
            )
        }
        _ => write!(out, " from DNS accepted udp:1.1.1.1:53 [dns-out]"),
    };
}
