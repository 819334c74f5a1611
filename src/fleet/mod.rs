//! Fleet mode: one device limit across many nodes, on Redis or Valkey
//! (`--fleet URL`). Each node keeps deciding on its own; the fleet adds a
//! shared view of each user's devices.
//!
//! Data: per user one sorted set `PREFIX{USER}:devices` (the `{…}` hash tag
//! keeps a user in one Redis Cluster slot) whose members are `KEY|NODE`,
//! scored by when they expire (server time, ms). Nothing else is written:
//! user, key, node and expiry.
//!
//! Admission is one server-side script ([`SCRIPT`], loaded once, run by its
//! SHA): it drops expired devices, refreshes a known key (whichever node
//! has it), admits a new one only while the user has fewer than `limit`,
//! and otherwise answers "over the limit" with the devices that fill it.
//! Redis runs a script atomically, so two nodes can never both admit the
//! last slot. A node asks on the first sighting of a (user, key) pair (the
//! key its own policy just admitted), and refreshes known pairs at most
//! once per half window (pipelined with everything else).
//!
//! Failure is local: every request has a deadline ([`FleetConfig::timeout`],
//! default 200 ms); past it, or while the connection is down, the node's
//! own decision stands, and the stats say the fleet is down. The client
//! reconnects with backoff (100 ms doubling to 10 s) and then registers
//! again every device its policy holds. The loop never waits: the
//! connection is a non-blocking socket with a token of its own.

pub mod resp;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::clock::{Micros, SECOND};
use crate::key::Key;
use resp::Reply;

/// The admission script (Lua, Redis ≥ 3.2 / Valkey). KEYS[1] the user's
/// set; ARGV: key, node, limit, ttl (ms). Returns `{1}` (admitted or
/// refreshed) or `{0, "KEY|NODE", …}` (over the limit: the devices that
/// fill it).
pub const SCRIPT: &str = r#"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local key, node = ARGV[1], ARGV[2]
local limit, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local prefix = key .. '|'
for _, m in ipairs(members) do
  if string.sub(m, 1, #prefix) == prefix then
    redis.call('ZADD', KEYS[1], now + ttl, m)
    redis.call('PEXPIRE', KEYS[1], ttl * 2)
    return {1}
  end
end
if #members < limit then
  redis.call('ZADD', KEYS[1], now + ttl, key .. '|' .. node)
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return {1}
end
local over = {0}
for _, m in ipairs(members) do over[#over + 1] = m end
return over
"#;

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// `--fleet` and friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    pub target: Target,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `--node`: this node's name (default: the host name).
    pub node: String,
    /// `--fleet-prefix` (default `refract:`).
    pub prefix: String,
    /// How long a request may take before the node decides alone.
    pub timeout: Micros,
}

/// Parses `redis://[user:password@]host:port[/db]` or `unix:///path`.
pub fn parse_url(url: &str) -> Result<(Target, Option<String>, Option<String>, u32), String> {
    if let Some(path) = url.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!("{url:?}: unix:// needs an absolute path"));
        }
        return Ok((Target::Unix(PathBuf::from(path)), None, None, 0));
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("{url:?}: use redis://host:port[/db] or unix:///path"))?;
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((h, d)) if !d.is_empty() => (
            h,
            d.parse::<u32>()
                .map_err(|_| format!("{url:?}: bad database number {d:?}"))?,
        ),
        Some((h, _)) => (h, 0),
        None => (hostpart, 0),
    };
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| format!("{url:?}: {hostport:?} is not ADDRESS:PORT (a literal address)"))?;
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (None, Some(a.to_string())),
        },
    };
    Ok((Target::Tcp(addr), user, password, db))
}

/// What the fleet said of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Admitted,
    /// Over the limit: the devices that fill it, as (key, node).
    Over(Vec<(String, String)>),
    /// No answer in time, or the connection is down: decide alone.
    Unavailable,
}

/// Counters (the `stats:` line, metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub requests: u64,
    pub admitted: u64,
    pub over: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub connects: u64,
    pub up: bool,
}

#[derive(Debug)]
enum Kind {
    /// AUTH, SELECT, SCRIPT LOAD: part of getting ready.
    Setup,
    /// An admission the caller waits for.
    Admit(u64),
    /// A refresh nobody waits for.
    Refresh,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    deadline: Micros,
}

#[derive(Debug)]
enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// Most requests waiting for an answer (beyond: decided alone, counted).
pub const MAX_PENDING: usize = 8192;
/// Reconnect backoff bounds.
pub const BACKOFF_MIN: Micros = SECOND / 10;
pub const BACKOFF_MAX: Micros = 10 * SECOND;

/// The client (module docs).
#[derive(Debug)]
pub struct Fleet {
    cfg: FleetConfig,
    stream: Option<Stream>,
    token: mio::Token,
    /// Setup answered: admissions may go out.
    ready: bool,
    sha: String,
    tx: Vec<u8>,
    rx: Vec<u8>,
    pending: VecDeque<Pending>,
    next_id: u64,
    answers: Vec<(u64, Answer)>,
    retry_at: Option<Micros>,
    backoff: Micros,
    /// A reconnect happened: the daemon should register its devices again.
    pub reregister: bool,
    pub stats: FleetStats,
}

/// The script's SHA-1, as `SCRIPT LOAD` answers it: computed by the
/// server; until it answered, `EVAL` with the body is used.
fn user_set(prefix: &str, user: &[u8]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.push(b'{');
    k.extend_from_slice(user);
    k.extend_from_slice(b"}:devices");
    k
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Fleet {
        Fleet {
            cfg,
            stream: None,
            token: mio::Token(0),
            ready: false,
            sha: String::new(),
            tx: Vec::new(),
            rx: Vec::new(),
            pending: VecDeque::new(),
            next_id: 0,
            answers: Vec::new(),
            retry_at: Some(0),
            backoff: BACKOFF_MIN,
            reregister: false,
            stats: FleetStats::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    pub fn owns(&self, token: mio::Token) -> bool {
        token == self.token
    }

    /// Connects (non-blocking) when due.
    fn connect(&mut self, registry: &mio::Registry, now: Micros) {
        let s = match &self.cfg.target {
            Target::Tcp(a) => mio::net::TcpStream::connect(*a).map(Stream::Tcp),
            Target::Unix(p) => mio::net::UnixStream::connect(p).map(Stream::Unix),
        };
        let mut s = match s {
            Ok(s) => s,
            Err(_) => return self.down(now),
        };
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        if registry.register(s.source(), self.token, interest).is_err() {
            return self.down(now);
        }
        self.stats.connects += 1;
        self.stream = Some(s);
        self.ready = false;
        self.tx.clear();
        self.rx.clear();
        let deadline = now.saturating_add(self.cfg.timeout.max(SECOND));
        if let Some(p) = self.cfg.password.clone() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = self.cfg.user.as_deref() {
                args.push(u.as_bytes());
            }
            args.push(p.as_bytes());
            resp::encode(&mut self.tx, &args);
            self.pending.push_back(Pending {
                kind: Kind::Setup,
                deadline,
            });
        }
        if self.cfg.db != 0 {
            let db = self.cfg.db.to_string();
            resp::encode(&mut self.tx, &[b"SELECT", db.as_bytes()]);
            self.pending.push_back(Pending {
                kind: Kind::Setup,
                deadline,
            });
        }
        resp::encode(&mut self.tx, &[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]);
        self.pending.push_back(Pending {
            kind: Kind::Setup,
            deadline,
        });
        self.flush(now);
    }

    /// The connection failed: everything waiting is answered
    /// [`Answer::Unavailable`]; a reconnect is scheduled.
    fn down(&mut self, now: Micros) {
        if self.stream.is_some() || self.stats.up {
            self.stats.errors += 1;
        }
        self.stream = None;
        self.ready = false;
        self.stats.up = false;
        for p in self.pending.drain(..) {
            if let Kind::Admit(id) = p.kind {
                self.answers.push((id, Answer::Unavailable));
            }
        }
        self.retry_at = Some(now.saturating_add(self.backoff));
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Registers the socket's token (the first connect happens in `tick`).
    pub fn set_token(&mut self, token: mio::Token) {
        self.token = token;
    }

    /// Asks whether `key` may be a device of `user` (limit `limit`, a
    /// device lasting `ttl`). `None`: the fleet is down, decide alone.
    pub fn admit(
        &mut self,
        now: Micros,
        user: &[u8],
        key: Key,
        limit: usize,
        ttl: Micros,
    ) -> Option<u64> {
        if !self.ready || self.pending.len() >= MAX_PENDING {
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.script(user, key, limit, ttl);
        self.pending.push_back(Pending {
            kind: Kind::Admit(id),
            deadline: now.saturating_add(self.cfg.timeout),
        });
        self.stats.requests += 1;
        self.flush(now);
        Some(id)
    }

    /// Refreshes a known device (fire and forget).
    pub fn refresh(&mut self, now: Micros, user: &[u8], key: Key, limit: usize, ttl: Micros) {
        if !self.ready || self.pending.len() >= MAX_PENDING {
            return;
        }
        self.script(user, key, limit, ttl);
        self.pending.push_back(Pending {
            kind: Kind::Refresh,
            deadline: now.saturating_add(self.cfg.timeout),
        });
        self.stats.requests += 1;
        self.flush(now);
    }

    fn script(&mut self, user: &[u8], key: Key, limit: usize, ttl: Micros) {
        let set = user_set(&self.cfg.prefix, user);
        let k = key.to_string();
        let limit = limit.to_string();
        let ttl = (ttl / 1000).max(1).to_string();
        resp::encode(
            &mut self.tx,
            &[
                b"EVALSHA",
                self.sha.as_bytes(),
                b"1",
                &set,
                k.as_bytes(),
                self.cfg.node.as_bytes(),
                limit.as_bytes(),
                ttl.as_bytes(),
            ],
        );
    }

    fn flush(&mut self, now: Micros) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        while !self.tx.is_empty() {
            match s.write(&self.tx) {
                Ok(0) => return self.down(now),
                Ok(n) => {
                    self.tx.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Not connected yet (a non-blocking connect in progress).
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => return self.down(now),
            }
        }
    }

    /// The socket is ready: reads answers, writes what waits.
    pub fn event(&mut self, now: Micros) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let mut buf = [0u8; 16 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return self.down(now),
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(_) => return self.down(now),
            }
        }
        loop {
            match resp::decode(&self.rx) {
                Ok(Some((reply, n))) => {
                    self.rx.drain(..n);
                    self.answer(reply, now);
                }
                Ok(None) => break,
                Err(_) => return self.down(now),
            }
        }
        self.flush(now);
    }

    fn answer(&mut self, reply: Reply, now: Micros) {
        let Some(p) = self.pending.pop_front() else {
            return self.down(now); // an answer nobody asked for
        };
        match p.kind {
            Kind::Setup => match reply {
                Reply::Error(e) => {
                    crate::logger::warning(format_args!("fleet: setup refused: {e}"));
                    self.down(now);
                }
                Reply::Bulk(Some(sha)) => {
                    // SCRIPT LOAD: the last setup step.
                    self.sha = String::from_utf8_lossy(&sha).into_owned();
                    self.ready = true;
                    self.stats.up = true;
                    self.backoff = BACKOFF_MIN;
                    if self.stats.connects > 1 {
                        self.reregister = true;
                    }
                    crate::logger::notice(format_args!(
                        "fleet: connected as node {} {}",
                        self.cfg.node,
                        crate::logger::kv(&[("event", "fleet_up"), ("node", &self.cfg.node)])
                    ));
                }
                _ => {}
            },
            Kind::Refresh => {}
            Kind::Admit(id) => {
                let a = match reply {
                    Reply::Array(Some(v)) => match v.first() {
                        Some(Reply::Int(1)) => {
                            self.stats.admitted += 1;
                            Answer::Admitted
                        }
                        Some(Reply::Int(0)) => {
                            self.stats.over += 1;
                            let devices = v[1..]
                                .iter()
                                .filter_map(|r| match r {
                                    Reply::Bulk(Some(b)) => {
                                        let s = String::from_utf8_lossy(b).into_owned();
                                        let (k, n) = s.split_once('|')?;
                                        Some((k.to_string(), n.to_string()))
                                    }
                                    _ => None,
                                })
                                .collect();
                            Answer::Over(devices)
                        }
                        _ => Answer::Unavailable,
                    },
                    _ => {
                        self.stats.errors += 1;
                        Answer::Unavailable
                    }
                };
                self.answers.push((id, a));
            }
        }
    }

    /// When [`Fleet::tick`] is due: a reconnect, or the oldest deadline.
    pub fn deadline(&self) -> Option<Micros> {
        let oldest = self.pending.front().map(|p| p.deadline);
        [self.retry_at, oldest].into_iter().flatten().min()
    }

    /// Reconnects when due; a request past its deadline means the server
    /// is too slow: the connection is dropped (answers to it would come
    /// out of order) and everything waiting decided alone.
    pub fn tick(&mut self, registry: &mio::Registry, now: Micros) {
        if self.pending.front().is_some_and(|p| p.deadline <= now) {
            self.stats.timeouts += 1;
            crate::logger::warning(format_args!(
                "fleet: no answer within {} ms; deciding alone until it is back {}",
                self.cfg.timeout / 1000,
                crate::logger::kv(&[("event", "fleet_down"), ("node", &self.cfg.node)])
            ));
            if let Some(mut s) = self.stream.take() {
                let _ = registry.deregister(s.source());
            }
            self.down(now);
        }
        if self.stream.is_none() && self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.connect(registry, now);
        }
    }

    /// Answers that came in since the last call.
    pub fn take_answers(&mut self) -> Vec<(u64, Answer)> {
        std::mem::take(&mut self.answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6379").unwrap(),
            (
                Target::Tcp("127.0.0.1:6379".parse().unwrap()),
                None,
                None,
                0
            )
        );
        assert_eq!(
            parse_url("redis://refract:s3cret@[::1]:6380/2").unwrap(),
            (
                Target::Tcp("[::1]:6380".parse().unwrap()),
                Some("refract".into()),
                Some("s3cret".into()),
                2
            )
        );
        assert_eq!(
            parse_url("redis://:pw@10.0.0.1:6379").unwrap().2,
            Some("pw".into())
        );
        assert_eq!(
            parse_url("unix:///run/redis/redis.sock").unwrap().0,
            Target::Unix("/run/redis/redis.sock".into())
        );
        for bad in [
            "http://x",
            "redis://host:6379",
            "redis://1.2.3.4:1/x",
            "unix://rel",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_users_set_is_one_cluster_slot() {
        assert_eq!(
            user_set("refract:", b"alice@example.com"),
            b"refract:{alice@example.com}:devices"
        );
    }
}
