//! What each control request does to the running daemon
//! ([`crate::control::protocol`] for the wire, [`crate::control::server`]
//! for the socket). Requests run between log lines in the one loop, each
//! to completion without waiting: a ban by hand goes to the enforcer like
//! any ban (the set entry inside this turn's `sendmsg`, the kills after),
//! an unban leaves the policy at once, so the next line from that address
//! is judged afresh.
//!
//! Every change names the peer's uid (`SO_PEERCRED`) in the daemon's log
//! and in the audit log, in words refract 0.2's greps never count as a
//! violation (`manual ban of …`, `manual unban of …`).

use std::time::Duration;

use super::core::{BanInfo, Reason};
use super::Daemon;
use crate::clock::{Micros, SECOND};
use crate::control::json::Value;
use crate::control::protocol::{self, Code, Request, Unban};
use crate::control::server::{Incoming, MAX_CLIENTS};
use crate::key::Key;
use crate::logger;
use crate::policy::Ban;

/// Most entries `status` lists of users online and of bans (the counts
/// are always whole).
pub const LIST_MAX: usize = 1000;

/// The kernel's longest entry timeout (`IPSET_MAX_TIMEOUT` in
/// `include/linux/netfilter/ipset/ip_set_timeout.h`: `(UINT_MAX >> 1) /
/// MSEC_PER_SEC`).
pub const MAX_BAN_SECS: u64 = 2_147_483;

fn secs(us: Micros) -> Value {
    Value::from(us / SECOND)
}

fn text(b: &[u8]) -> Value {
    Value::Str(String::from_utf8_lossy(b).into_owned())
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Vec<(String, Value)> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl Daemon {
    /// Handles the requests that came in this turn, at most
    /// `server::PER_TURN` per connection.
    pub(super) fn control_turn(&mut self, now: Micros) {
        let mut budget = [0usize; MAX_CLIENTS];
        loop {
            let Some(server) = self.control.as_mut() else {
                return;
            };
            let Some(Incoming { conn, uid, line }) =
                server.next(self.poll.registry(), &mut budget, now)
            else {
                return;
            };
            let reply = match protocol::parse_request(&line) {
                Ok(req) => self.request(uid, req, now),
                Err(e) => e,
            };
            if let Some(server) = self.control.as_mut() {
                server.reply(self.poll.registry(), conn, &reply);
            }
        }
    }

    fn request(&mut self, uid: u32, req: Request, now: Micros) -> Value {
        match req {
            Request::Status => self.status(now),
            Request::User(email) => self.user(&email, now),
            Request::Ban {
                addr,
                for_s,
                reason,
            } => self.manual_ban(uid, &addr, for_s, reason, now),
            Request::Unban(what) => self.manual_unban(uid, what, now),
            Request::Reload => match self.reload() {
                Ok(n) => protocol::ok(fields([("limits", n.into())])),
                Err(e) => protocol::error(Code::Failed, e),
            },
        }
    }

    fn ban_entry(&self, key: Key, start: Micros, until: Micros, now: Micros) -> Value {
        let info = self.core.book.get(key);
        let user = info
            .and_then(|i| i.user.as_deref())
            .map_or(Value::Null, text);
        let reason = info.map_or(Reason::Limit, |i| i.reason).name();
        let origin: Vec<String> = info
            .map(|i| i.origins.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        let note = info
            .and_then(|i| i.note.clone())
            .map_or(Value::Null, Value::Str);
        Value::obj([
            ("addr", key.to_string().into()),
            ("user", user),
            ("reason", reason.into()),
            ("remaining_s", secs(until.saturating_sub(now))),
            ("since_s", secs(now.saturating_sub(start))),
            ("origin", origin.into()),
            ("note", note),
        ])
    }

    /// The bans in force, newest first.
    fn ban_list(&self, now: Micros, only: Option<&[u8]>) -> Vec<(Key, Micros, Micros)> {
        let mut bans = self.core.policy.bans(now);
        if let Some(user) = only {
            bans.retain(|&(k, _, _)| {
                self.core
                    .book
                    .get(k)
                    .and_then(|i| i.user.as_deref())
                    .is_some_and(|u| u == user)
            });
        }
        bans.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        bans
    }

    fn settings(&self) -> Value {
        let c = &self.cfg;
        let mut proto = Vec::new();
        if c.protos.tcp {
            proto.push("tcp");
        }
        if c.protos.udp {
            proto.push("udp");
        }
        let ports: Vec<Value> = c.ports.iter().map(|&p| Value::from(u32::from(p))).collect();
        let p = self.core.policy.config();
        Value::obj([
            ("access_log", c.access_log.display().to_string().into()),
            ("block_log", c.block_log.display().to_string().into()),
            ("proto", proto.join(",").into()),
            ("dport", Value::Arr(ports)),
            ("window_s", Value::from(p.window as f64 / SECOND as f64)),
            ("timeout_s", Value::from(p.ban as f64 / SECOND as f64)),
            ("limit", p.limit.into()),
            (
                "limits_file",
                c.limits_file
                    .as_ref()
                    .map_or(Value::Null, |f| f.display().to_string().into()),
            ),
            ("users_with_own_limit", p.limits.len().into()),
            ("ipv6_prefix", u32::from(p.v6_prefix).into()),
            ("confirm", p.confirm.into()),
            ("dry_run", c.dry_run.into()),
            (
                "firewall",
                format!("{:?}", c.firewall).to_lowercase().into(),
            ),
            ("set_v4", c.set_v4.as_str().into()),
            ("set_v6", c.set_v6.as_str().into()),
            ("liveness", self.core.live.is_some().into()),
            (
                "fleet",
                match (self.core.fleet.as_ref(), c.fleet.as_ref()) {
                    (Some(f), Some(fc)) => format!(
                        "node {} on {}, {}",
                        f.node(),
                        match &fc.target {
                            crate::fleet::Target::Tcp(a) => a.to_string(),
                            crate::fleet::Target::Unix(p) => p.display().to_string(),
                        },
                        if f.stats.up {
                            "up"
                        } else {
                            "down: deciding alone"
                        }
                    )
                    .into(),
                    _ => "off".into(),
                },
            ),
            (
                "shape",
                match self.core.shape.as_ref() {
                    Some(sh) => format!(
                        "{}, {} user(s) capped now; {}",
                        sh.dev().name,
                        sh.marks.len(),
                        c.shape.summary()
                    ),
                    None => c.shape.summary(),
                }
                .into(),
            ),
        ])
    }

    fn status(&self, now: Micros) -> Value {
        // The stats line's counters, by the same names.
        let line = self.stats_line();
        let counters: Vec<(String, Value)> = line
            .trim_start_matches("stats: ")
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), Value::from(v.parse::<u64>().ok()?)))
            })
            .collect();
        let mut online = self.core.policy.online(now);
        online.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let users_online = online.len();
        let keys_online: usize = online.iter().map(|(_, k)| k.len()).sum();
        let listed: Vec<Value> = online
            .iter()
            .take(LIST_MAX)
            .map(|(u, keys)| {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                Value::obj([("user", text(u)), ("keys", keys.into())])
            })
            .collect();
        let bans = self.ban_list(now, None);
        let bans_total = bans.len();
        let ban_values: Vec<Value> = bans
            .iter()
            .take(LIST_MAX)
            .map(|&(k, start, until)| self.ban_entry(k, start, until, now))
            .collect();
        protocol::ok(fields([
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("pid", std::process::id().into()),
            ("uptime_s", secs(now.saturating_sub(self.started))),
            ("settings", self.settings()),
            ("counters", Value::Obj(counters)),
            ("users_online", users_online.into()),
            ("keys_online", keys_online.into()),
            ("online", Value::Arr(listed)),
            ("online_truncated", (users_online > LIST_MAX).into()),
            ("bans_total", bans_total.into()),
            ("bans", Value::Arr(ban_values)),
            ("bans_truncated", (bans_total > LIST_MAX).into()),
        ]))
    }

    fn user(&self, email: &str, now: Micros) -> Value {
        let user = email.as_bytes();
        let keys = self.core.policy.user(now, user);
        let conns = self
            .core
            .live
            .as_ref()
            .map(|l| l.tracker.user_conns(user))
            .unwrap_or_default();
        let bans = self.ban_list(now, Some(user));
        let shape = self.core.shape.as_ref().map(|sh| sh.user(user));
        let marked = shape.is_some_and(|(_, m)| m.is_some());
        if keys.is_none() && conns.is_empty() && bans.is_empty() && !marked {
            return protocol::error(Code::NotFound, format!("no user {email:?} is known now"));
        }
        let mut listed: Vec<Key> = keys
            .iter()
            .flatten()
            .map(|&(k, _, _)| k)
            .chain(conns.iter().map(|(k, _)| *k))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let key_values: Vec<Value> = listed
            .iter()
            .map(|&k| {
                let entry = keys.iter().flatten().find(|e| e.0 == k);
                let state = match entry {
                    Some((_, true, _)) => "candidate",
                    Some((_, false, _)) => "admitted",
                    // Not online by the window rule, but connected.
                    None => "connected",
                };
                let seen = entry.map_or(Value::Null, |&(_, _, t)| secs(now.saturating_sub(t)));
                let cs: Vec<Value> = conns
                    .iter()
                    .filter(|(ck, _)| *ck == k)
                    .flat_map(|(_, v)| v)
                    .map(|&(peer, in_use)| {
                        Value::obj([
                            ("peer", peer.to_string().into()),
                            ("in_use", in_use.map_or(Value::Null, Value::Bool)),
                        ])
                    })
                    .collect();
                Value::obj([
                    ("key", k.to_string().into()),
                    ("state", state.into()),
                    ("last_seen_s", seen),
                    ("connections", Value::Arr(cs)),
                ])
            })
            .collect();
        let ban_values: Vec<Value> = bans
            .iter()
            .map(|&(k, start, until)| self.ban_entry(k, start, until, now))
            .collect();
        let rate = |r: Option<crate::shape::rate::Rate>| r.map_or(Value::Null, |r| r.bits().into());
        let shape = match shape {
            None => Value::Null,
            Some((caps, mark)) => Value::obj([
                ("down_bps", rate(caps.down)),
                ("up_bps", rate(caps.up)),
                (
                    "mark",
                    mark.map_or(Value::Null, |m| format!("{m:#010x}").into()),
                ),
            ]),
        };
        protocol::ok(fields([
            ("user", email.into()),
            ("limit", self.core.policy.limit(user).into()),
            ("shape", shape),
            ("keys", Value::Arr(key_values)),
            ("bans", Value::Arr(ban_values)),
        ]))
    }

    fn manual_ban(
        &mut self,
        uid: u32,
        addr: &str,
        for_s: Option<u64>,
        note: Option<String>,
        now: Micros,
    ) -> Value {
        let prefix = self.core.policy.config().v6_prefix;
        let key = match protocol::parse_key(addr, prefix) {
            Ok(k) => k,
            Err(e) => return protocol::error(Code::Invalid, e),
        };
        let secs_for = for_s
            .unwrap_or(self.core.policy.config().ban / SECOND)
            .max(1);
        if secs_for > MAX_BAN_SECS {
            return protocol::error(
                Code::Invalid,
                format!("for_s: at most {MAX_BAN_SECS} (the kernel's longest entry timeout)"),
            );
        }
        let until = self
            .core
            .policy
            .manual_ban(now, key, secs_for.saturating_mul(SECOND));
        let ban = Ban {
            key,
            user: Box::default(),
            origins: Vec::new(),
            tag: Box::default(),
            until,
        };
        let ttl = Duration::from_micros(until.saturating_sub(now).max(SECOND));
        self.core.enforcer.ban(&ban, ttl, now);
        self.core.stats.bans_by[Reason::Manual as usize] += 1;
        if let Some(ev) = self.core.events.as_mut() {
            let d = ttl.as_secs();
            let ev_ban = crate::hooks::Event::ban(
                key.to_string(),
                String::new(),
                Vec::new(),
                String::new(),
                d,
                "manual",
            );
            ev.push(ev_ban);
        }
        self.core.book.record(
            key,
            BanInfo {
                user: None,
                reason: Reason::Manual,
                origins: Vec::new(),
                note: note.clone(),
            },
        );
        let why = note.map(|n| format!(": {n}")).unwrap_or_default();
        let line = format!(
            "manual ban of {key} for {}s by uid {uid}{why}",
            ttl.as_secs()
        );
        self.audit_note(&line);
        let (k, s, u) = (key.to_string(), ttl.as_secs().to_string(), uid.to_string());
        logger::notice(format_args!(
            "{line} {}",
            logger::kv(&[
                ("event", "ban"),
                ("addr", &k),
                ("duration_s", &s),
                ("reason", "manual"),
                ("uid", &u),
            ])
        ));
        protocol::ok(fields([
            ("addr", addr.into()),
            ("key", key.to_string().into()),
            ("for_s", ttl.as_secs().into()),
        ]))
    }

    fn manual_unban(&mut self, uid: u32, what: Unban, now: Micros) -> Value {
        let prefix = self.core.policy.config().v6_prefix;
        let keys: Vec<Key> = match what {
            Unban::Addrs(addrs) => {
                let mut keys = Vec::with_capacity(addrs.len());
                for a in &addrs {
                    match protocol::parse_key(a, prefix) {
                        Ok(k) => keys.push(k),
                        Err(e) => return protocol::error(Code::Invalid, e),
                    }
                }
                keys
            }
            Unban::User(u) => self
                .ban_list(now, Some(u.as_bytes()))
                .into_iter()
                .map(|(k, _, _)| k)
                .collect(),
            Unban::All => self
                .core
                .policy
                .bans(now)
                .into_iter()
                .map(|(k, _, _)| k)
                .collect(),
        };
        let mut lifted = Vec::new();
        for key in keys {
            if !self.core.policy.unban(now, key) {
                continue;
            }
            self.core.enforcer.unban(key, now);
            self.core.stats.unbans_manual += 1;
            if let Some(ev) = self.core.events.as_mut() {
                let user = self.core.book.get(key).and_then(|i| i.user.as_deref());
                ev.push(crate::hooks::Event::unban(key.to_string(), user, "manual"));
            }
            self.core.book.remove(key);
            lifted.push(key.to_string());
            let line = format!("manual unban of {key} by uid {uid}");
            self.audit_note(&line);
            let (k, u) = (key.to_string(), uid.to_string());
            logger::notice(format_args!(
                "{line} {}",
                logger::kv(&[
                    ("event", "unban"),
                    ("addr", &k),
                    ("reason", "manual"),
                    ("uid", &u)
                ])
            ));
        }
        if lifted.is_empty() {
            return protocol::error(Code::NotFound, "nothing of that is banned");
        }
        protocol::ok(fields([("unbanned", lifted.into())]))
    }

    fn audit_note(&mut self, line: &str) {
        if let Err(e) = self.core.audit.note(line) {
            self.core.stats.audit_errors += 1;
            logger::error(format_args!("{e}"));
        }
    }
}
