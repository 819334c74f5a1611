//! The live daemon: one `mio::Poll`, constant tokens, one `match`.
//!
//! | token                 | source                                   |
//! |-----------------------|------------------------------------------|
//! | [`TAIL`]              | inotify on the access log and its dir    |
//! | [`TIMER`]             | timerfd (`CLOCK_MONOTONIC`), one-shot    |
//! | [`SIGNAL`]            | signal-hook self-pipe                    |
//! | [`ENFORCER_FIRST`]..  | the enforcer's sockets ([`ENFORCER_TOKENS`]) |
//!
//! Every handler drains its source to `WouldBlock` (mio is edge-triggered).
//! Per complete line: `accesslog::parse` → `Policy::observe(now)` → on a
//! ban: the audit line (flushed: one `write(2)` per line on an unbuffered
//! `O_APPEND` file), `Enforcer::ban`, one log line.
//!
//! Invariant: no wakeup without work. The timerfd is armed to the earliest
//! deadline the policy, the enforcer or the follower reports and disarmed
//! when there is none; there is no periodic tick, so with no log activity
//! and no pending window or ban the process sleeps in `epoll_wait` forever.
//! The one exception is a missing log directory: inotify cannot watch what
//! does not exist, so the follower asks to be woken once a second until the
//! directory is back (`tail::Tail::next_deadline`).
//! The poll timeout is zero only while the follower has a backlog left
//! (it reads at most [`crate::tail::STEP`] bytes per turn).
//!
//! Signals (set a flag, then wake the loop through the pipe):
//! - SIGTERM, SIGINT: finish the batch, flush the audit log and the
//!   enforcer (at most [`FLUSH_BUDGET`]), log the counters, exit 0.
//! - SIGHUP: re-read `--limits` (a bad file keeps the old limits and logs
//!   one error naming file and line), reopen the audit log, re-read the
//!   time zone.
//! - SIGUSR1: log one `stats:` line with every counter (what the tests and
//!   operators read); the same line is logged at exit.
//!
//! Started as root, the daemon drops every capability it does not need
//! once the sets, the rules and both logs are in place
//! ([`crate::privilege`]). At the memory caps the policy refuses new state;
//! the loop warns once per [`WARN_PERIOD`] and counts it in `stats:`.
//!
//! Messages go to syslog or stderr ([`crate::logger`], `REFRACT_LOG`); the
//! audit line's time is the local time of the decision
//! ([`crate::sys::time::localtime_now`]), as refract 0.2 wrote it. How the
//! follower survives rotation and contains SIGBUS: [`crate::tail`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::accesslog::{self, Skip};
use crate::clock::{Micros, SECOND};
use crate::config::Config;
use crate::enforce::Enforcer;
use crate::logger::{self, RateLimit};
use crate::policy::{Ban, Policy, Verdict};
use crate::sys::time::{localtime_now, monotonic, reload_timezone};
use crate::sys::timerfd::TimerFd;
use crate::tail::Tail;

pub const TAIL: Token = Token(0);
pub const TIMER: Token = Token(1);
pub const SIGNAL: Token = Token(2);
/// The enforcer owns `ENFORCER_FIRST .. ENFORCER_FIRST + ENFORCER_TOKENS`.
pub const ENFORCER_FIRST: usize = 16;
pub const ENFORCER_TOKENS: usize = 16;
const _: () = assert!(crate::enforce::TOKENS <= ENFORCER_TOKENS);

/// How long shutdown waits for the enforcer's queued work.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(1);
/// One misconfiguration warning per class per this period.
pub const WARN_PERIOD: Micros = 10 * 60 * SECOND;

/// Exit code when the daemon cannot start (log directory missing, audit
/// log not writable, …).
pub const EXIT_START: i32 = 1;

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code. `cli`
/// chooses the enforcer (`DryRun` for `--dry-run`, the kernel one else).
pub fn run(cfg: Config, enforcer: Box<dyn Enforcer>) -> i32 {
    let sink = logger::init(logger::Target::from_env());
    match Daemon::new(cfg, enforcer) {
        Ok(mut d) => {
            logger::notice(format_args!(
                "refract {} following {} from its {}{}, audit log {}, enforcer {}, logging to {sink}",
                env!("CARGO_PKG_VERSION"),
                d.cfg.access_log.display(),
                if d.cfg.from_start { "start" } else { "end" },
                if d.tail.is_open() {
                    ""
                } else {
                    " (not there yet)"
                },
                d.cfg.block_log.display(),
                d.core.enforcer.name(),
            ));
            // Sets, rules and both logs are in place: give up what the loop
            // does not need (started as root only; see `privilege`).
            match crate::privilege::drop_after_startup(&d.cfg) {
                Ok(Some(line)) => logger::notice(format_args!("{line}")),
                Ok(None) => {}
                Err(e) => logger::error(format_args!("capabilities: could not drop: {e}")),
            }
            // systemd `Type=notify`: ready once the log is watched and the
            // audit log open (a no-op outside systemd).
            d.notify("READY=1");
            match d.run() {
                Ok(()) => 0,
                Err(e) => {
                    logger::error(format_args!("{e}"));
                    EXIT_START
                }
            }
        }
        Err(e) => {
            logger::error(format_args!("{e}"));
            EXIT_START
        }
    }
}

/// Counters of the loop (the follower and the policy keep their own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonStats {
    pub lines: u64,
    pub skipped: [u64; Skip::ALL.len()],
    pub bans: u64,
    pub expired: u64,
    pub audit_errors: u64,
    pub wakeups: u64,
    /// `users_refused + keys_refused` of the policy at the last check.
    pub refused_seen: u64,
}

/// The audit log (`--block.log`): append-only, created `0640`, reopened on
/// SIGHUP or when found rotated away (checked with one `stat` per ban).
#[derive(Debug)]
struct AuditLog {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    buf: Vec<u8>,
}

impl AuditLog {
    fn open(path: &Path) -> io::Result<AuditLog> {
        let mut a = AuditLog {
            path: path.to_path_buf(),
            file: None,
            buf: Vec::with_capacity(256),
        };
        a.reopen()?;
        Ok(a)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let open = || {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .open(&self.path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    // As systemd's LogsDirectoryMode: the audit log names
                    // users, so not world-readable.
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o750)
                        .create(dir)?;
                }
                open()
            }
            r => r,
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("audit: open {}: {e}", self.path.display()),
            )
        })?;
        let m = file.metadata()?;
        self.file = Some((file, (m.dev(), m.ino())));
        Ok(())
    }

    /// Whether the path still names the file we hold.
    fn rotated_away(&self) -> bool {
        let Some((_, id)) = &self.file else {
            return true;
        };
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != *id,
            Err(_) => true,
        }
    }

    fn write(&mut self, ban: &Ban) -> io::Result<()> {
        if self.rotated_away() {
            self.reopen()?;
        }
        self.buf.clear();
        crate::audit::write_line(&mut self.buf, localtime_now(), ban);
        self.buf.push(b'\n');
        let (file, _) = self.file.as_mut().expect("reopened above");
        // Unbuffered: one write(2) per line, so the line is on disk (in the
        // page cache) when this returns and a crash loses nothing.
        file.write_all(&self.buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("audit: write {}: {e}", self.path.display()),
            )
        })
    }
}

/// Flags set by signal handlers, and the pipe that wakes the loop.
#[derive(Debug)]
struct Signals {
    rx: mio::net::UnixStream,
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let mut s = Signals {
            rx: mio::net::UnixStream::from_std(rx),
            term: Arc::default(),
            hup: Arc::default(),
            usr1: Arc::default(),
            ids: Vec::new(),
        };
        for (sig, flag) in [
            (SIGTERM, &s.term),
            (SIGINT, &s.term),
            (SIGHUP, &s.hup),
            (SIGUSR1, &s.usr1),
        ] {
            // The flag first: signal-hook runs a signal's actions in the
            // order they were registered, so the loop woken by the pipe
            // always sees the flag set.
            s.ids
                .push(signal_hook::flag::register(sig, Arc::clone(flag))?);
            s.ids.push(signal_hook::low_level::pipe::register(
                sig,
                tx.try_clone()?,
            )?);
        }
        Ok(s)
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match self.rx.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// What a line touches: everything but the follower, so the follower can
/// lend lines to it.
struct Core {
    policy: Policy,
    enforcer: Box<dyn Enforcer>,
    audit: AuditLog,
    warn: RateLimit<{ Skip::ALL.len() }>,
    audit_warn: RateLimit<1>,
    /// The memory caps (`--max-users`/`--max-keys`) refused state: one
    /// warning per [`WARN_PERIOD`].
    caps_warn: RateLimit<1>,
    stats: DaemonStats,
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
    fn line(&mut self, now: Micros, line: &[u8]) {
        self.stats.lines += 1;
        let access = match accesslog::parse(line) {
            Ok(a) => a,
            Err(skip) => return self.skipped(now, skip),
        };
        match self.policy.observe(now, &access) {
            Verdict::Skipped(skip) => self.skipped(now, skip),
            Verdict::Banned(ban) => {
                // The line that made the newcomer names its connection: the
                // enforcer can end that one by exact lookup first.
                let conn = match access.source {
                    accesslog::Source::Ip(ip, port) if ban.key.contains(ip) => {
                        Some(std::net::SocketAddr::new(ip, port))
                    }
                    _ => None,
                };
                self.ban(now, &ban, conn)
            }
            // A refusal at the memory caps is reported as `Admitted`.
            Verdict::Admitted(_) => self.caps(now),
            Verdict::Ignored(_) | Verdict::Refreshed(_) | Verdict::Candidate(_) => {}
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

    fn ban(&mut self, now: Micros, ban: &Ban, conn: Option<std::net::SocketAddr>) {
        self.stats.bans += 1;
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
        let origins: Vec<String> = ban.origins.iter().map(|k| k.to_string()).collect();
        logger::notice(format_args!(
            "ban {} for {}s: user {} already online from {}",
            ban.key,
            ttl.as_secs(),
            String::from_utf8_lossy(&ban.user),
            origins.join(",")
        ));
    }
}

struct Daemon {
    cfg: Config,
    poll: Poll,
    tail: Tail,
    timer: TimerFd,
    armed: Option<Micros>,
    signals: Signals,
    core: Core,
}

impl Daemon {
    fn new(cfg: Config, mut enforcer: Box<dyn Enforcer>) -> io::Result<Daemon> {
        reload_timezone();
        let poll = Poll::new()?;
        let tail = Tail::open(&cfg.access_log, cfg.from_start, cfg.max_line)?;
        tail.register(poll.registry(), TAIL)?;
        let mut timer = TimerFd::new()?;
        poll.registry()
            .register(&mut timer, TIMER, Interest::READABLE)?;
        let mut signals = Signals::new()?;
        poll.registry()
            .register(&mut signals.rx, SIGNAL, Interest::READABLE)?;
        enforcer.register(poll.registry(), ENFORCER_FIRST)?;
        let audit = AuditLog::open(&cfg.block_log)?;
        let mut policy = Policy::new(cfg.policy.clone());
        let now = monotonic();
        match enforcer.existing_bans() {
            Ok(bans) => {
                let n = bans.len();
                for (key, left) in bans {
                    let left = left.as_micros().min(u128::from(u64::MAX)) as u64;
                    policy.restore_ban(key, now.saturating_add(left));
                }
                if n > 0 {
                    logger::notice(format_args!("restored {n} bans in force"));
                }
            }
            Err(e) => logger::error(format_args!("reading existing bans: {e}")),
        }
        Ok(Daemon {
            cfg,
            poll,
            tail,
            timer,
            armed: None,
            signals,
            core: Core {
                policy,
                enforcer,
                audit,
                warn: RateLimit::new(WARN_PERIOD),
                audit_warn: RateLimit::new(60 * SECOND),
                caps_warn: RateLimit::new(WARN_PERIOD),
                stats: DaemonStats::default(),
            },
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        // Whatever `--from-start` asks for, and a file that appeared
        // between open and register.
        self.pump(monotonic());
        loop {
            self.rearm();
            let timeout = self.tail.has_more().then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io::Error::new(e.kind(), format!("poll: {e}")));
            }
            self.core.stats.wakeups += 1;
            let now = monotonic();
            for ev in events.iter() {
                match ev.token() {
                    TAIL => {
                        let core = &mut self.core;
                        self.tail.on_event(now, &mut |l| core.line(now, l));
                        self.tail_errors();
                    }
                    TIMER => {
                        // Fired: rearm() must set it again even if a
                        // component reports the same deadline.
                        self.armed = None;
                        self.drain_timer();
                    }
                    SIGNAL => self.signals.drain(),
                    Token(t) if (ENFORCER_FIRST..ENFORCER_FIRST + ENFORCER_TOKENS).contains(&t) => {
                        self.core.enforcer.ready(t, now)
                    }
                    Token(_) => {}
                }
            }
            if events.is_empty() && self.tail.has_more() {
                self.pump(now);
            }
            self.deadlines(now);
            self.kill_reports();
            if self.signals.term.swap(false, Ordering::Relaxed) {
                self.shutdown();
                return Ok(());
            }
            if self.signals.hup.swap(false, Ordering::Relaxed) {
                self.reload();
            }
            if self.signals.usr1.swap(false, Ordering::Relaxed) {
                logger::notice(format_args!("{}", self.stats_line()));
            }
        }
    }

    fn drain_timer(&mut self) {
        loop {
            match self.timer.read() {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Nothing else can happen on a timerfd;
                // the deadline check after the batch runs regardless.
                Err(_) => break,
            }
        }
    }

    /// Logs how many open connections each finished ban ended (the kill
    /// work completes a few hundred microseconds after the ban itself).
    fn kill_reports(&mut self) {
        for r in self.core.enforcer.take_reports() {
            logger::notice(format_args!(
                "ban {}: ended {} tcp connection(s), {} udp flow(s)",
                r.key, r.tcp, r.udp
            ));
        }
    }

    /// Reads what is new in the log; a backlog left over (`has_more`) is
    /// read on the next turn, after a zero-timeout poll.
    fn pump(&mut self, now: Micros) {
        let core = &mut self.core;
        self.tail.pump(now, &mut |l| core.line(now, l));
        self.tail_errors();
    }

    fn tail_errors(&mut self) {
        if let Some(e) = self.tail.take_error() {
            logger::error(format_args!("{e}"));
        }
    }

    fn next_deadline(&self) -> Option<Micros> {
        [
            self.core.policy.next_deadline(),
            self.core.enforcer.next_deadline(),
            self.tail.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every component whose deadline has passed.
    fn deadlines(&mut self, now: Micros) {
        if self.core.policy.next_deadline().is_some_and(|d| d <= now) {
            let ended = self.core.policy.expire(now);
            self.core.stats.expired += ended.len() as u64;
        }
        if self.core.enforcer.next_deadline().is_some_and(|d| d <= now) {
            self.core.enforcer.tick(now);
        }
        if self.tail.next_deadline().is_some_and(|d| d <= now) {
            let core = &mut self.core;
            self.tail.expire(now, &mut |l| core.line(now, l));
            self.tail_errors();
        }
    }

    /// Arms the timerfd to the earliest deadline, or disarms it: the only
    /// thing that can wake an idle daemon is work.
    fn rearm(&mut self) {
        let want = self.next_deadline();
        if want == self.armed {
            return;
        }
        let r = match want {
            // Never in the past by more than a millisecond: a component
            // whose deadline does not move after it ran must not spin.
            Some(d) => self.timer.arm_at(d.max(monotonic() + 1_000)),
            None => self.timer.disarm(),
        };
        match r {
            Ok(()) => self.armed = want,
            Err(e) => logger::error(format_args!("timer: {e}")),
        }
    }

    fn notify(&self, state: &str) {
        if let Err(e) = crate::notify::notify(state) {
            logger::warning(format_args!("{e}"));
        }
    }

    fn reload(&mut self) {
        self.notify("RELOADING=1");
        self.reload_inner();
        self.notify("READY=1");
    }

    fn reload_inner(&mut self) {
        reload_timezone();
        if let Err(e) = self.core.audit.reopen() {
            self.core.stats.audit_errors += 1;
            logger::error(format_args!("reload: {e}"));
        }
        let Some(path) = self.cfg.limits_file.clone() else {
            logger::notice(format_args!("reloaded: audit log reopened"));
            return;
        };
        match crate::config::load_limits(&path) {
            Ok(limits) => {
                let n = limits.len();
                let mut pc = self.core.policy.config().clone();
                pc.limits = limits;
                self.cfg.policy = pc.clone();
                self.core.policy.reconfigure(pc);
                logger::notice(format_args!(
                    "reloaded: {n} per-user limits from {}, audit log reopened",
                    path.display()
                ));
            }
            Err(e) => logger::error(format_args!("reload: {e}; keeping the previous limits")),
        }
    }

    fn shutdown(&mut self) {
        self.notify("STOPPING=1");
        self.core.enforcer.flush(FLUSH_BUDGET);
        if let Some((f, _)) = self.core.audit.file.as_mut() {
            let _ = f.flush();
        }
        logger::notice(format_args!("exiting: {}", self.stats_line()));
    }

    /// Every counter on one line: `stats: lines=N …` (SIGUSR1, exit).
    fn stats_line(&self) -> String {
        let t = self.tail.stats();
        let s = &self.core.stats;
        let p = self.core.policy.stats();
        let e = self.core.enforcer.stats();
        let (users, keys) = self.core.policy.tracked();
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
        for skip in Skip::ALL {
            let n = s.skipped[skip.index()];
            if n > 0 {
                out.push_str(&format!(" skipped_{}={n}", skip.name().replace('-', "_")));
            }
        }
        out
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("tail", &self.tail)
            .field("armed", &self.armed)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
