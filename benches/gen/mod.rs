//! A deterministic Xray access-log generator for the benchmarks and scripts.
//!
//! `generate(lines, seed)` always yields the same bytes for the same
//! arguments (its own xorshift PRNG, no external crates, no clock). The log
//! looks like a busy node's day: ~10k users, a pool of ~50k client
//! addresses, lines arriving ~11.6 per second on average (1M lines span
//! about one day from 2026/11/21 00:00:00), connections in bursts
//! ("sessions") of one user from one address.
//!
//! Mix (approximate shares of all lines):
//! - ~90% user lines, of which most are Xray ≥ v25 `from IP:port accepted …
//!   email: …` with microseconds, ~10% mux `tcp:` sources, ~15% of the
//!   addresses IPv6 (privacy addresses rotating inside one /64 per device),
//!   ~2% V2Ray-style (no `from`, seconds only, `[direct]`, sometimes the old
//!   `email:x ` form), ~1% port 0 (X-Forwarded-For), ~1% journald-prefixed;
//! - a few percent of everything else: DNS answers, `from DNS accepted`,
//!   panel API polling from 127.0.0.1, `rejected` lines, SOCKS lines without
//!   email, `[Info]` error-log lines.
//!
//! Sharing is rare but present: about 1% of the users are "shared
//! accounts" whose sessions sometimes run in parallel from another address,
//! so the default policy (limit 1, window 5s) bans a few hundred times per
//! million lines. Ordinary users also switch networks now and then, but
//! sequentially, which the policy must not ban.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range) and
//! 2001:db8::/32 (documentation): nothing in a generated log is a real host.

use std::io::Write;

pub mod realistic;

use refract::clock::{civil_from_days, days_from_civil};

/// Users in the generated population.
pub const USERS: usize = 10_000;
/// Client addresses in the pool.
pub const ADDRESSES: usize = 50_000;
/// Sessions running at once (interleaved in the log).
const ACTIVE: usize = 48;
/// Mean gap between lines: 86_400 s / 1_000_000 lines.
const MEAN_GAP_US: u64 = 86_400;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so seed 0 and small seeds are fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) % n as u64) as usize
    }

    /// True with probability `permille / 1000`.
    fn chance(&mut self, permille: usize) -> bool {
        self.below(1000) < permille
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Clone, Copy)]
enum Addr {
    V4(u32),
    /// A device's /64 (the high 64 bits); the host part rotates per line.
    V6(u64),
}

struct User {
    email: String,
    inbound: &'static str,
    home: usize,
    mobile: usize,
    shared: bool,
}

struct Session {
    user: usize,
    addr: usize,
    left: u32,
    mux: bool,
    v2ray: bool,
}

const INBOUNDS: &[&str] = &[
    "vless-in",
    "VLESS TCP REALITY",
    "inbound-443",
    "inbound-127.0.0.1:3010",
    "vmess-ws",
    "trojan-in",
    "Shadowsocks TCP",
];
const OUTBOUNDS: &[&str] = &["direct", "direct", "direct", "WARP", "block", "IPv4"];
const DOMAINS: &[&str] = &[
    "www.google.com:443",
    "www.youtube.com:443",
    "i.ytimg.com:443",
    "api.telegram.org:443",
    "149.154.167.51:443",
    "graph.instagram.com:443",
    "www.netflix.com:443",
    "open.spotify.com:443",
    "1password.com:443",
    "github.com:443",
    "example.org:80",
    "chat.openai.com:443",
    "[2001:db8:ffff::53]:443",
    "cdn.jsdelivr.net:443",
    "mtalk.google.com:5228",
];

fn make_users(rng: &mut Rng) -> Vec<User> {
    (0..USERS)
        .map(|i| {
            let email = match i % 4 {
                0 => format!("user{i}@example.com"),
                1 => format!("{i}.{}", ["alice", "bob", "carol", "dave", "erin"][i % 5]),
                2 => format!("{}", 4000 + i),
                _ => {
                    let r = rng.next();
                    format!("{:08x}-{:04x}", r as u32, (r >> 32) as u16)
                }
            };
            User {
                email,
                inbound: INBOUNDS[rng.below(INBOUNDS.len())],
                home: rng.below(ADDRESSES),
                mobile: rng.below(ADDRESSES),
                shared: rng.chance(10),
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
                // 198.18.0.0/15 has 131072 addresses.
                Addr::V4(0xC612_0000 | (rng.next() as u32 & 0x1_ffff))
            }
        })
        .collect()
}

fn new_session(rng: &mut Rng, users: &[User], user: usize, parallel: bool) -> Session {
    let u = &users[user];
    let addr = if parallel {
        // A second device of a shared account: somewhere else entirely.
        rng.below(ADDRESSES)
    } else {
        match rng.below(100) {
            0..=69 => u.home,
            70..=89 => u.mobile,
            _ => rng.below(ADDRESSES),
        }
    };
    Session {
        user,
        addr,
        left: 3 + rng.below(40) as u32,
        mux: rng.chance(100),
        v2ray: rng.chance(20),
    }
}

/// Skewed towards low indices: a few heavy users, a long tail.
fn pick_user(rng: &mut Rng) -> usize {
    rng.below(USERS).min(rng.below(USERS))
}

fn push_ts(out: &mut Vec<u8>, t_us: u64, micros: bool) {
    // The day starts at 2026/11/21 00:00:00.
    let secs = days_from_civil(2026, 11, 21) * 86_400 + (t_us / 1_000_000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}/{mo:02}/{d:02} {:02}:{:02}:{:02}",
        r / 3600,
        r / 60 % 60,
        r % 60
    );
    if micros {
        let _ = write!(out, ".{:06}", t_us % 1_000_000);
    }
}

fn push_addr(out: &mut Vec<u8>, rng: &mut Rng, a: Addr, port: u16) {
    let _ = match a {
        Addr::V4(v) => write!(
            out,
            "{}.{}.{}.{}:{port}",
            v >> 24,
            (v >> 16) & 0xff,
            (v >> 8) & 0xff,
            v & 0xff
        ),
        Addr::V6(net) => {
            let host = rng.next();
            let ip = std::net::Ipv6Addr::from((u128::from(net) << 64) | u128::from(host));
            write!(out, "[{ip}]:{port}")
        }
    };
}

fn port(rng: &mut Rng) -> u16 {
    1024 + rng.below(64_000) as u16
}

/// `lines` lines of a realistic access log, each ending in `\n`; the same
/// `(lines, seed)` always gives the same bytes.
pub fn generate(lines: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let users = make_users(&mut rng);
    let addrs = make_addrs(&mut rng);
    let mut sessions: Vec<Session> = (0..ACTIVE)
        .map(|_| {
            let u = pick_user(&mut rng);
            new_session(&mut rng, &users, u, false)
        })
        .collect();
    let mut out = Vec::with_capacity(lines * 140);
    let mut t: u64 = 0;
    for _ in 0..lines {
        t += rng.below(2 * MEAN_GAP_US as usize) as u64;
        let kind = rng.below(1000);
        if kind < 90 {
            other_line(&mut out, &mut rng, t, kind);
            continue;
        }
        let si = rng.below(ACTIVE);
        let s = &sessions[si];
        let u = &users[s.user];
        let a = addrs[s.addr];
        if s.v2ray {
            push_ts(&mut out, t, false);
            out.push(b' ');
            let p = port(&mut rng);
            push_addr(&mut out, &mut rng, a, p);
            let _ = write!(out, " accepted tcp:{} [direct] ", rng.pick(DOMAINS));
            if rng.chance(300) {
                let _ = write!(out, "email:{} ", u.email);
            } else {
                let _ = write!(out, "email: {}", u.email);
            }
        } else {
            if rng.chance(10) {
                out.extend_from_slice(b"Nov 21 14:16:59 node1 xray[2634]: ");
            }
            push_ts(&mut out, t, true);
            out.extend_from_slice(b" from ");
            let xff = rng.chance(10);
            let p = if xff { 0 } else { port(&mut rng) };
            if s.mux {
                out.extend_from_slice(b"tcp:");
                push_addr(&mut out, &mut rng, a, p);
                let _ = write!(out, " accepted udp:1.1.1.1:53 [{} -> dns-out]", u.inbound);
            } else {
                push_addr(&mut out, &mut rng, a, p);
                let sep = if rng.chance(200) { "->" } else { ">>" };
                let _ = write!(
                    out,
                    " accepted tcp:{} [{} {sep} {}]",
                    rng.pick(DOMAINS),
                    u.inbound,
                    rng.pick(OUTBOUNDS)
                );
            }
            let _ = write!(out, " email: {}", u.email);
        }
        out.push(b'\n');
        let s = &mut sessions[si];
        s.left -= 1;
        if s.left == 0 {
            let user = pick_user(&mut rng);
            sessions[si] = new_session(&mut rng, &users, user, false);
            // A shared account: another device starts at the same time.
            if users[user].shared && rng.chance(500) {
                let other = rng.below(ACTIVE);
                sessions[other] = new_session(&mut rng, &users, user, true);
            }
        }
    }
    out
}

/// The lines that are not a user's connection.
fn other_line(out: &mut Vec<u8>, rng: &mut Rng, t: u64, kind: usize) {
    push_ts(out, t, true);
    let _ = match kind {
        0..=19 => write!(
            out,
            " UDP:8.8.8.8:53 got answer: {} -> [198.18.{}.{}] {}.{}ms",
            rng.pick(DOMAINS).split(':').next().unwrap_or_default(),
            rng.below(256),
            rng.below(256),
            rng.below(90),
            rng.below(10)
        ),
        20..=29 => write!(out, " from DNS accepted udp:1.1.1.1:53 [direct]"),
        30..=54 => write!(
            out,
            " from 127.0.0.1:{} accepted tcp:127.0.0.1:0 [api -> api]",
            port(rng)
        ),
        55..=69 => {
            let _ = write!(out, " from ");
            let a = Addr::V4(0xC612_0000 | (rng.next() as u32 & 0x1_ffff));
            let p = port(rng);
            push_addr(out, rng, a, p);
            write!(
                out,
                " rejected  proxy/vless/encoding: invalid request user id"
            )
        }
        70..=79 => {
            let _ = write!(out, " from ");
            let a = Addr::V4(0xC612_0000 | (rng.next() as u32 & 0x1_ffff));
            let p = port(rng);
            push_addr(out, rng, a, p);
            write!(
                out,
                " accepted tcp:{} [socks-in >> direct]",
                rng.pick(DOMAINS)
            )
        }
        _ => write!(
            out,
            " [Info] [{}] proxy/vless/inbound: firstLen = {}",
            rng.next() as u32,
            rng.below(2000)
        ),
    };
    out.push(b'\n');
}
