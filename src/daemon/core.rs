//! What the loop drives, apart from the follower: the policy, the enforcer,
//! the audit log and the loop's counters. [`Core`] is separate from the
//! follower so that the follower can lend each line to [`Core::line`]
//! while both are borrowed from the daemon.
//!
//! Per complete line: `accesslog::parse` → `Policy::observe(now)` → on a
//! ban: the audit line ([`AuditLog::write`], one `write(2)`),
//! `Enforcer::ban_conn`, one log line. Inside the loop errors are logged
//! (rate-limited) and counted, never propagated.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::accesslog;
use crate::audit::AuditLog;
use crate::clock::{Micros, SECOND};
use crate::enforce::Enforcer;
use crate::key::{canonical, Key};
use crate::liveness::kernel::Liveness;
use crate::liveness::track::Locals;
use crate::logger::{self, RateLimit};
use crate::policy::skip::Skip;
use crate::policy::{Ban, Policy, PolicyConfig, Verdict};
use crate::sys::time::monotonic;
use crate::tail::TailStats;

use super::WARN_PERIOD;

/// Counters of the loop (the follower and the policy keep their own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonStats {
    pub lines: u64,
    pub skipped: [u64; Skip::ALL.len()],
    pub bans: u64,
    pub expired: u64,
    pub audit_errors: u64,
    pub wakeups: u64,
    /// Bans decided by a liveness fact.
    pub liveness_bans: u64,
    /// Deferred lines decided by the window rule alone because their
    /// check ran out of time.
    pub deferred_timeouts: u64,
    /// `users_refused + keys_refused` of the policy at the last check.
    pub refused_seen: u64,
    /// Counted lines by verdict: admitted, refreshed, ignored (banned
    /// already), candidate, banned.
    pub verdicts: [u64; 5],
    /// Bans by [`Reason`] (restored ones are not new bans).
    pub bans_by: [u64; 5],
    /// Bans lifted by hand.
    pub unbans_manual: u64,
    /// The newest parsed line's own time (for the log lag).
    pub last_ts: Option<crate::clock::Timestamp>,
}

/// Verdict names in [`DaemonStats::verdicts`] order.
pub const VERDICTS: [&str; 5] = ["admitted", "refreshed", "ignored", "candidate", "banned"];

/// What a line touches: everything but the follower, so the follower can
/// lend lines to it.
pub(super) struct Core {
    pub(super) policy: Policy,
    pub(super) enforcer: Box<dyn Enforcer>,
    pub(super) audit: AuditLog,
    /// Liveness from the kernel (`None`: the window rule alone).
    pub(super) live: Option<Liveness>,
    warn: RateLimit<{ Skip::ALL.len() }>,
    audit_warn: RateLimit<1>,
    /// The memory caps (`--max-users`/`--max-keys`) refused state: one
    /// warning per [`WARN_PERIOD`].
    caps_warn: RateLimit<1>,
    pub(super) stats: DaemonStats,
    /// Who and why, for the bans in force (`refract status`).
    pub(super) book: BanBook,
    /// Line read → its ban's set entry in the kernel.
    pub(super) latency: crate::metrics::Histogram,
    /// Bans and unbans for the hooks (only with `--on-ban`/`--on-unban`);
    /// the daemon hands them over every turn.
    pub(super) events: Option<Vec<crate::hooks::Event>>,
    /// `--fleet`: the client, the admissions waiting for an answer, and
    /// when each known device was last refreshed.
    pub(super) fleet: Option<crate::fleet::Fleet>,
    fleet_pending: crate::hash::Map<u64, FleetAsk>,
    fleet_refreshed: crate::hash::Map<(Box<[u8]>, Key), Micros>,
    /// `--rate-down`/`--rate-up`/limits-file caps (`crate::shape`).
    pub shape: Option<crate::shape::kernel::Shaper>,
    /// The parser's per-second timestamp cache (lines of one second share
    /// their stamp).
    ts: accesslog::TsCache,
}

/// An admission the fleet was asked about.
#[derive(Debug)]
struct FleetAsk {
    user: Box<[u8]>,
    key: Key,
    tag: Box<[u8]>,
    conn: Option<SocketAddr>,
}

/// Why a key is banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    /// The window rule: a newcomer beyond the limit.
    Limit,
    /// A newcomer beyond the limit that only the kernel's liveness facts
    /// showed (the window rule alone had admitted it).
    Liveness,
    /// `refract ban`.
    Manual,
    /// The fleet: the user's devices on other nodes fill the limit.
    Fleet,
    /// Found in the set at start (who and why were not kept).
    Restored,
}

impl Reason {
    pub(super) fn name(self) -> &'static str {
        match self {
            Reason::Limit => "limit",
            Reason::Liveness => "liveness",
            Reason::Manual => "manual",
            Reason::Fleet => "fleet",
            Reason::Restored => "restored",
        }
    }
}

/// What `refract status` shows of a ban beyond its key and times.
#[derive(Clone, Debug)]
pub(super) struct BanInfo {
    pub(super) user: Option<Box<[u8]>>,
    pub(super) reason: Reason,
    pub(super) origins: Vec<crate::key::Key>,
    pub(super) note: Option<String>,
}

/// [`BanInfo`] of the most recent [`BanBook::MAX`] bans: bounded, so a
/// flood of bans costs at most that much here (older ones show only key
/// and times, reason `limit`).
#[derive(Debug, Default)]
pub(super) struct BanBook {
    info: crate::hash::Map<crate::key::Key, BanInfo>,
    order: std::collections::VecDeque<crate::key::Key>,
}

impl BanBook {
    pub(super) const MAX: usize = 4096;

    pub(super) fn record(&mut self, key: crate::key::Key, info: BanInfo) {
        if self.info.insert(key, info).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.info.remove(&old);
            }
        }
    }

    pub(super) fn remove(&mut self, key: crate::key::Key) {
        if self.info.remove(&key).is_some() {
            self.order.retain(|k| *k != key);
        }
    }

    pub(super) fn get(&self, key: crate::key::Key) -> Option<&BanInfo> {
        self.info.get(&key)
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("enforcer", &self.enforcer.name())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core on `config`, with the bans the enforcer finds already in
    /// force (a restart) restored into the policy.
    pub(super) fn new(
        config: PolicyConfig,
        mut enforcer: Box<dyn Enforcer>,
        audit: AuditLog,
        live: Option<Liveness>,
    ) -> Core {
        let mut policy = Policy::new(config);
        let now = monotonic();
        let mut book = BanBook::default();
        match enforcer.existing_bans() {
            Ok(bans) => {
                let n = bans.len();
                for (key, left) in bans {
                    let left = left.as_micros().min(u128::from(u64::MAX)) as u64;
                    policy.restore_ban(key, now.saturating_add(left));
                    if book.order.len() < BanBook::MAX {
                        let info = BanInfo {
                            user: None,
                            reason: Reason::Restored,
                            origins: Vec::new(),
                            note: None,
                        };
                        book.record(key, info);
                    }
                }
                if n > 0 {
                    logger::notice(format_args!("restored {n} bans in force"));
                }
            }
            Err(e) => logger::error(format_args!("reading existing bans: {e}")),
        }
        Core {
            policy,
            enforcer,
            audit,
            live,
            warn: RateLimit::new(WARN_PERIOD),
            audit_warn: RateLimit::new(60 * SECOND),
            caps_warn: RateLimit::new(WARN_PERIOD),
            stats: DaemonStats::default(),
            book,
            latency: crate::metrics::Histogram::new(crate::metrics::LATENCY_BOUNDS),
            events: None,
            fleet: None,
            fleet_pending: crate::hash::Map::default(),
            fleet_refreshed: crate::hash::Map::default(),
            ts: accesslog::TsCache::default(),
            shape: None,
        }
    }

    pub(super) fn line(&mut self, now: Micros, line: &[u8]) {
        self.stats.lines += 1;
        let access = match accesslog::parse_with(line, &mut self.ts) {
            Ok(a) => a,
            Err(e) => return self.skipped(now, e.into()),
        };
        self.stats.last_ts = Some(access.ts);
        if let Some(sh) = self.shape.as_mut() {
            // Marked at once, whatever the verdict (a banned connection is
            // ended anyway): a new connection is shaped from its line on.
            if let (accesslog::Status::Accepted, Some(email), accesslog::Source::Ip(ip, port)) =
                (access.status, access.email, access.source)
            {
                sh.line(now, email, Some(SocketAddr::new(canonical(ip), port)));
            }
        }
        if let (Some(live), Some(probe)) = (self.live.as_mut(), self.policy.probe(now, &access)) {
            let t = &mut live.tracker;
            if let accesslog::Source::Ip(ip, port) = access.source {
                let tag = access.audit_tag();
                let limit = self.policy.limit(probe.user);
                t.record(
                    now,
                    probe.user,
                    probe.key,
                    SocketAddr::new(ip, port),
                    tag,
                    limit,
                );
            }
            // A line of a user whose check is in flight waits behind it (its
            // verdict may depend on the facts); a newcomer the window rule
            // would admit waits for a check of the user's other keys.
            let waits = if t.pending(probe.user) {
                t.defer(probe.user, line)
            } else {
                probe.newcomer && t.check_newcomer(now, probe.user, probe.key, line)
            };
            if waits {
                return;
            }
        }
        self.decide(now, &access);
    }

    /// The policy's verdict on a parsed line, and what it sets off; the
    /// key it banned, if it did.
    fn decide(&mut self, now: Micros, access: &accesslog::Access<'_>) -> Option<Key> {
        let verdict = self.policy.observe(now, access);
        let i = match verdict {
            Verdict::Skipped(_) => None,
            Verdict::Admitted(_) => Some(0),
            Verdict::Refreshed(_) => Some(1),
            Verdict::Ignored(_) => Some(2),
            Verdict::Candidate(_) => Some(3),
            Verdict::Banned(_) => Some(4),
        };
        if let Some(i) = i {
            self.stats.verdicts[i] += 1;
        }
        if self.fleet.is_some() {
            if let (Verdict::Admitted(k) | Verdict::Refreshed(k), Some(user)) =
                (&verdict, access.email)
            {
                if matches!(verdict, Verdict::Admitted(_)) {
                    self.fleet_admit(now, user, *k, access);
                } else {
                    self.fleet_refresh(now, user, *k);
                }
            }
        }
        match verdict {
            Verdict::Skipped(skip) => self.skipped(now, skip),
            Verdict::Banned(ban) => {
                // The line that made the newcomer names its connection: the
                // enforcer can end that one by exact lookup first.
                let conn = match access.source {
                    accesslog::Source::Ip(ip, port) if ban.key.contains(ip) => {
                        Some(SocketAddr::new(ip, port))
                    }
                    _ => None,
                };
                self.ban(now, &ban, conn, Reason::Limit);
                return Some(ban.key);
            }
            // A refusal at the memory caps is reported as `Admitted`.
            Verdict::Admitted(_) => self.caps(now),
            Verdict::Ignored(_) | Verdict::Refreshed(_) | Verdict::Candidate(_) => {}
        }
        None
    }

    /// A first sighting here: the fleet decides whether it is one device
    /// too many.
    fn fleet_admit(&mut self, now: Micros, user: &[u8], k: Key, access: &accesslog::Access<'_>) {
        let limit = self.policy.limit(user);
        let ttl = self.policy.config().window;
        let Some(f) = self.fleet.as_mut() else {
            return;
        };
        if let Some(id) = f.admit(now, user, k, limit, ttl) {
            let conn = match access.source {
                accesslog::Source::Ip(ip, port) => Some(SocketAddr::new(ip, port)),
                _ => None,
            };
            let ask = FleetAsk {
                user: user.into(),
                key: k,
                tag: access.audit_tag().into(),
                conn,
            };
            self.fleet_pending.insert(id, ask);
        }
    }

    /// Refreshes a known device in the fleet, at most once per half window.
    fn fleet_refresh(&mut self, now: Micros, user: &[u8], k: Key) {
        let limit = self.policy.limit(user);
        let ttl = self.policy.config().window;
        let Some(f) = self.fleet.as_mut() else {
            return;
        };
        let id = (Box::<[u8]>::from(user), k);
        let due = self
            .fleet_refreshed
            .get(&id)
            .map_or(true, |&t| now.saturating_sub(t) >= ttl / 2);
        if due {
            if self.fleet_refreshed.len() >= 1 << 16 {
                self.fleet_refreshed
                    .retain(|_, t| now.saturating_sub(*t) < ttl);
            }
            f.refresh(now, user, k, limit, ttl);
            self.fleet_refreshed.insert(id, now);
        }
    }

    /// The fleet's answers: a device over the fleet's limit is banned here
    /// (reason `fleet`; the log line names the devices and their nodes, the
    /// audit line stays refract 0.2's). After a reconnect, every device
    /// online here is registered again.
    pub(super) fn fleet_turn(&mut self, now: Micros) {
        let Some(f) = self.fleet.as_mut() else {
            return;
        };
        let answers = f.take_answers();
        let reregister = std::mem::take(&mut f.reregister);
        for (id, answer) in answers {
            let Some(ask) = self.fleet_pending.remove(&id) else {
                continue;
            };
            let crate::fleet::Answer::Over(devices) = answer else {
                continue;
            };
            let origins: Vec<Key> = devices
                .iter()
                .filter_map(|(k, _)| {
                    crate::control::protocol::parse_key(k, self.policy.config().v6_prefix).ok()
                })
                .collect();
            let Some(ban) = self
                .policy
                .ban_now(now, &ask.user, ask.key, origins, &ask.tag)
            else {
                continue;
            };
            let elsewhere: Vec<String> =
                devices.iter().map(|(k, n)| format!("{k} on {n}")).collect();
            logger::notice(format_args!(
                "fleet: {} of user {} is one device too many; online elsewhere: {}",
                ban.key,
                String::from_utf8_lossy(&ban.user),
                elsewhere.join(", ")
            ));
            self.ban(now, &ban, ask.conn, Reason::Fleet);
        }
        if reregister {
            let ttl = self.policy.config().window;
            let online = self.policy.online(now);
            if let Some(f) = self.fleet.as_mut() {
                for (user, keys) in &online {
                    let limit = self.policy.limit(user);
                    for &k in keys {
                        f.refresh(now, user, k, limit, ttl);
                    }
                }
            }
            self.fleet_refreshed.clear();
        }
        // Asked and never answered (the fleet went down): decided alone.
        if self.fleet.as_ref().is_some_and(|f| !f.stats.up) {
            self.fleet_pending.clear();
        }
    }

    /// Sends the lookups planned this turn and applies every check that
    /// finished: its facts first (keys the policy holds as active first,
    /// so a key that came back is the newcomer; then oldest key first),
    /// then its waiting lines, in their order.
    pub(super) fn liveness(&mut self, now: Micros) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.tracker.has_lookups() {
            live.pump(now);
        }
        let resolved = live.tracker.take_resolved();
        for r in resolved {
            // The newcomer banned after facts were applied was banned by
            // liveness (the window rule alone admitted it: `probe`).
            let by_facts = !r.facts.is_empty();
            let mut facts = r.facts;
            facts.sort_by_key(|f| (!self.policy.is_active(now, &r.user, f.key), f.first, f.key));
            for f in facts {
                match self.policy.live(now, &r.user, f.key, f.at, &f.tag) {
                    Some(Verdict::Banned(ban)) => {
                        self.stats.liveness_bans += 1;
                        self.ban(now, &ban, Some(f.peer), Reason::Liveness);
                    }
                    // A device online by the kernel's word stays online in
                    // the fleet too.
                    Some(Verdict::Refreshed(k) | Verdict::Admitted(k)) => {
                        self.fleet_refresh(now, &r.user, k);
                    }
                    _ => {}
                }
            }
            if r.timed_out {
                self.stats.deferred_timeouts += r.lines.len() as u64;
            }
            for d in r.lines {
                match accesslog::parse(&d.line) {
                    Ok(access) => {
                        let banned = self.decide(now, &access);
                        if let Some(k) = banned.filter(|_| by_facts && d.newcomer) {
                            self.stats.liveness_bans += 1;
                            if let Some(i) = self.book.info.get_mut(&k) {
                                i.reason = Reason::Liveness;
                            }
                            self.stats.bans_by[Reason::Limit as usize] -= 1;
                            self.stats.bans_by[Reason::Liveness as usize] += 1;
                        }
                    }
                    Err(e) => self.skipped(now, e.into()),
                }
            }
        }
    }

    /// Warns (rate-limited) when the memory caps refused new state since
    /// the last line: those users and addresses are not tracked, so they
    /// cannot be banned (fail-open) until state expires.
    fn caps(&mut self, now: Micros) {
        let p = self.policy.stats();
        let refused = p.users_refused + p.keys_refused;
        if refused == self.stats.refused_seen {
            return;
        }
        self.stats.refused_seen = refused;
        if self.caps_warn.check(0, now).is_some() {
            let (users, keys) = self.policy.tracked();
            let cfg = self.policy.config();
            logger::warning(format_args!(
                "memory cap reached ({users} users of --max-users {}, {keys} addresses of \
                 --max-keys {}): new users and addresses are not tracked until state expires \
                 (users_refused={} keys_refused={} so far)",
                cfg.max_users, cfg.max_keys, p.users_refused, p.keys_refused
            ));
        }
    }

    fn skipped(&mut self, now: Micros, skip: Skip) {
        self.stats.skipped[skip.index()] += 1;
        let why = match skip {
            Skip::Loopback => {
                "loopback client addresses in the access log: a reverse proxy or fallback \
                 without PROXY protocol hides the real clients; these lines never count"
            }
            Skip::Masked => {
                "masked client addresses in the access log (Xray log.maskAddress): \
                 refract cannot ban what it cannot see; turn masking off"
            }
            Skip::XffPort0 => {
                "client addresses from X-Forwarded-For (port 0) in the access log: \
                 packets come from the CDN, a kernel ban cannot work; these lines never count"
            }
            _ => return,
        };
        if let Some(suppressed) = self.warn.check(skip.index(), now) {
            logger::warning(format_args!(
                "{why} ({} lines so far, {suppressed} since the last warning)",
                self.stats.skipped[skip.index()]
            ));
        }
    }

    fn ban(&mut self, now: Micros, ban: &Ban, conn: Option<std::net::SocketAddr>, why: Reason) {
        self.stats.bans += 1;
        self.stats.bans_by[why as usize] += 1;
        self.book.record(
            ban.key,
            BanInfo {
                user: Some(ban.user.clone()),
                reason: why,
                origins: ban.origins.clone(),
                note: None,
            },
        );
        if let Some(live) = self.live.as_mut() {
            live.tracker.banned(now, &ban.user, ban.key);
        }
        if let Err(e) = self.audit.write(ban) {
            self.stats.audit_errors += 1;
            // A full disk fails every ban: one message per period.
            if let Some(n) = self.audit_warn.check(0, now) {
                logger::error(format_args!(
                    "{e} ({n} more failures since the last message)"
                ));
            }
        }
        let ttl = match ban.until.checked_sub(now) {
            Some(t) if t > 0 => Duration::from_micros(t),
            _ => Duration::from_micros(self.policy.config().ban),
        };
        self.enforcer.ban_conn(ban, ttl, now, conn);
        // Line read → set entry: the ADD ran inside that sendmsg.
        self.latency.observe_micros(monotonic().saturating_sub(now));
        let origins: Vec<String> = ban.origins.iter().map(|k| k.to_string()).collect();
        let (key, user, origin) = (
            ban.key.to_string(),
            String::from_utf8_lossy(&ban.user),
            origins.join(","),
        );
        if let Some(ev) = self.events.as_mut() {
            ev.push(crate::hooks::Event::ban(
                key.clone(),
                user.to_string(),
                origins,
                String::from_utf8_lossy(&ban.tag).into_owned(),
                ttl.as_secs(),
                why.name(),
            ));
        }
        let secs = ttl.as_secs().to_string();
        logger::notice(format_args!(
            "ban {key} for {secs}s: user {user} already online from {origin} {}",
            logger::kv(&[
                ("event", "ban"),
                ("addr", &key),
                ("user", &user),
                ("origin", &origin),
                ("duration_s", &secs),
                ("reason", why.name()),
            ])
        ));
    }

    /// The earliest deadline of the policy and the enforcer.
    pub(super) fn next_deadline(&self) -> Option<Micros> {
        [
            self.policy.next_deadline(),
            self.enforcer.next_deadline(),
            self.live.as_ref().and_then(|l| l.deadline()),
            self.fleet.as_ref().and_then(|f| f.deadline()),
            self.shape.as_ref().and_then(|s| s.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the policy's and the enforcer's work whose deadline has passed.
    pub(super) fn deadlines(&mut self, now: Micros) {
        if self.policy.next_deadline().is_some_and(|d| d <= now) {
            let ended = self.policy.expire(now);
            self.stats.expired += ended.len() as u64;
            for k in ended {
                let key = k.to_string();
                logger::notice(format_args!(
                    "unban {key}: its ban expired {}",
                    logger::kv(&[("event", "unban"), ("addr", &key), ("reason", "expired")])
                ));
                if let Some(ev) = self.events.as_mut() {
                    let user = self.book.get(k).and_then(|i| i.user.as_deref());
                    ev.push(crate::hooks::Event::unban(key.clone(), user, "expired"));
                }
                self.book.remove(k);
            }
        }
        if self.enforcer.next_deadline().is_some_and(|d| d <= now) {
            self.enforcer.tick(now);
        }
        if let Some(live) = self.live.as_mut() {
            if live.deadline().is_some_and(|d| d <= now) {
                live.tick(now);
            }
        }
        if let Some(sh) = self.shape.as_mut() {
            if sh.deadline().is_some_and(|d| d <= now) {
                sh.expire(now);
            }
        }
    }

    /// Logs how many open connections each finished ban ended (the kill
    /// work completes a few hundred microseconds after the ban itself).
    pub(super) fn kill_reports(&mut self) {
        for r in self.enforcer.take_reports() {
            let (key, tcp, udp) = (r.key.to_string(), r.tcp.to_string(), r.udp.to_string());
            logger::notice(format_args!(
                "ban {key}: ended {tcp} tcp connection(s), {udp} udp flow(s) {}",
                logger::kv(&[
                    ("event", "kill"),
                    ("addr", &key),
                    ("tcp", &tcp),
                    ("udp", &udp)
                ])
            ));
        }
    }

    /// SIGHUP's part here: reopen the audit log, re-read `limits_file`
    /// (a bad file keeps the previous limits and logs one error).
    /// Returns how many per-user limits are in force, or the limits file's
    /// error (the previous limits are kept then).
    pub(super) fn reload(&mut self, limits_file: Option<&Path>) -> Result<usize, String> {
        if let Err(e) = self.audit.reopen() {
            self.stats.audit_errors += 1;
            logger::error(format_args!("reload: {e}"));
        }
        // Addresses added since the start (DHCP, a new IPv6 prefix) become
        // local ends lookups try.
        if let Some(live) = self.live.as_mut() {
            match crate::sys::ifaddrs::local_addresses() {
                Ok(addrs) => {
                    live.tracker.locals = Locals::new(&addrs);
                    logger::notice(format_args!(
                        "reloaded: liveness looks up connections on {} local addresses",
                        live.tracker.locals.len()
                    ));
                }
                Err(e) => logger::error(format_args!(
                    "reload: liveness: cannot list local addresses ({e}); keeping the old ones"
                )),
            }
        }
        let Some(path) = limits_file else {
            logger::notice(format_args!("reloaded: audit log reopened"));
            return Ok(0);
        };
        match crate::policy::limits::read_file(path) {
            Ok((parsed, _)) => {
                let limits = parsed.limits;
                let n = limits.len();
                let mut pc = self.policy.config().clone();
                pc.limits = limits;
                self.policy.reconfigure(pc);
                if let Some(sh) = self.shape.as_mut() {
                    sh.reload(parsed.rates);
                } else if parsed
                    .rates
                    .values()
                    .any(|f| f.caps(crate::shape::rate::Caps::default()).is_capped())
                {
                    logger::warning(format_args!(
                        "reload: {} gives rates, but shaping was not set up at start \
                         (no --rate-down, --rate-up, --shape-dev or rates then, or --shape off); \
                         restart refract to shape",
                        path.display()
                    ));
                }
                logger::notice(format_args!(
                    "reloaded: {n} per-user limits from {}, audit log reopened {}",
                    path.display(),
                    logger::kv(&[("event", "reload"), ("limits", &n.to_string())])
                ));
                Ok(n)
            }
            Err(e) => {
                logger::error(format_args!("reload: {e}; keeping the previous limits"));
                Err(e.to_string())
            }
        }
    }

    /// Every counter on one line: `stats: lines=N …` (SIGUSR1, exit); `t`
    /// are the follower's.
    pub(super) fn stats_line(&self, t: &TailStats) -> String {
        let s = &self.stats;
        let p = self.policy.stats();
        let e = self.enforcer.stats();
        let (users, keys) = self.policy.tracked();
        let mut out = format!(
            "stats: lines={} bytes={} too_long={} rotations={} truncations={} read_errors={} \
             parsed_lines={} bans={} expired={} audit_errors={} users={users} keys={keys} \
             policy_bans={} users_refused={} keys_refused={} enforcer_bans={} \
             enforcer_errors={} set_full={} wakeups={}",
            t.lines,
            t.bytes,
            t.too_long,
            t.rotations,
            t.truncations,
            t.errors,
            s.lines,
            s.bans,
            s.expired,
            s.audit_errors,
            p.bans,
            p.users_refused,
            p.keys_refused,
            e.bans,
            e.errors,
            e.set_full,
            s.wakeups,
        );
        if let Some(live) = self.live.as_ref() {
            let l = &live.tracker.stats;
            let (conns, lusers) = live.tracker.tracked();
            out.push_str(&format!(
                " attributed={} unattributed={} liveness_checks={} liveness_rechecks={} \
                 liveness_lookups={} liveness_facts={} liveness_bans={} deferred={} \
                 deferred_timeouts={} deferred_full={} conns={conns} conn_users={lusers} \
                 suspects={} conns_gone={} conns_refused={} conns_evicted={} liveness_errors={}",
                l.attributed,
                l.unattributed,
                l.checks,
                l.rechecks,
                l.lookups,
                l.facts,
                s.liveness_bans,
                l.deferred,
                s.deferred_timeouts,
                l.deferred_full,
                live.tracker.suspects(),
                l.gone,
                l.refused,
                l.evicted,
                live.stats.errors,
            ));
        }
        if let Some(sh) = self.shape.as_ref() {
            let x = &sh.stats;
            out.push_str(&format!(
                " shaped_users={} shape_marked={} shape_added={} shape_changed={} \
                 shape_released={} shape_full={} shape_clashes={} shape_errors={} \
                 shape_repairs={}",
                sh.marks.len(),
                x.marked,
                x.added,
                x.changed,
                x.released,
                sh.marks.full,
                x.clashes,
                x.errors,
                x.repairs,
            ));
        }
        for skip in Skip::ALL {
            let n = s.skipped[skip.index()];
            if n > 0 {
                out.push_str(&format!(" skipped_{}={n}", skip.name().replace('-', "_")));
            }
        }
        out
    }
}
