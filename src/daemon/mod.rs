//! The live daemon: one `mio::Poll`, constant tokens, one `match`.
//!
//! | token                 | source                                   |
//! |-----------------------|------------------------------------------|
//! | [`TAIL`]              | inotify on the access log and its dir    |
//! | [`TIMER`]             | timerfd (`CLOCK_MONOTONIC`), one-shot    |
//! | [`SIGNAL`]            | signal-hook self-pipe (`signals.rs`)     |
//! | [`LIVENESS`]          | sock_diag lookups ([`crate::liveness`])  |
//! | [`LIVENESS_UDP`]      | conntrack lookups (`--proto udp`)        |
//! | [`FLEET`]             | the Redis/Valkey connection (`--fleet`)  |
//! | [`SHAPE_FIRST`]..     | the shaper's sockets (`--rate-down`, …)  |
//! | [`CONTROL_FIRST`]..   | the control socket and its connections   |
//! | [`METRICS_FIRST`]..   | the metrics listener (`--metrics`)       |
//! | [`HOOKS_FIRST`]..     | hook children's pidfds (`--on-ban`)      |
//! | [`ENFORCER_FIRST`]..  | the enforcer's sockets ([`ENFORCER_TOKENS`]) |
//!
//! Every handler drains its source to `WouldBlock` (mio is edge-triggered).
//! What a line does (parse, policy, audit, enforcer) is in `core.rs`; this
//! module owns the sources and the order of a loop turn.
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
//! # Readiness
//!
//! The daemon says it is ready — `READY=1` on `$NOTIFY_SOCKET` (systemd
//! `Type=notify`, sd_notify(3)) and one log line starting with `ready:` —
//! exactly once at start, and only when a line appended to the log from
//! then on is certain to be decided and enforced:
//!
//! 1. the sets and DROP rules exist and the kernel sockets are open
//!    (`KernelEnforcer::new`, before [`run`] is called) and registered
//!    with the poll (`Daemon::new`);
//! 2. the log is followed: [`Tail::open`] has put the inotify watches on
//!    the directory and on the file *before* taking the file's size as the
//!    starting offset, so a write after that offset raises an event, and a
//!    missing file is known absent with its directory watched;
//! 3. the audit log is open, lost bans are restored, and the capabilities
//!    the loop does not need are dropped ([`crate::privilege`]).
//!
//! Nothing before that point may be taken as readiness (the sets exist
//! before the log is followed).
//!
//! Signals (`signals.rs`; each sets a flag, then wakes the loop):
//! - SIGTERM, SIGINT: finish the batch, flush the audit log and the
//!   enforcer (at most [`FLUSH_BUDGET`]), log the counters, exit 0.
//! - SIGHUP: re-read `--limits` (a bad file keeps the old limits and logs
//!   one error naming file and line), reopen the audit log, re-read the
//!   time zone.
//! - SIGUSR1: log one `stats:` line with every counter (what the tests and
//!   operators read); the same line is logged at exit.
//!
//! At the memory caps the policy refuses new state; the loop warns once per
//! [`WARN_PERIOD`] and counts it in `stats:`.
//!
//! Messages go to syslog or stderr ([`crate::logger`], `REFRACT_LOG`); the
//! audit line's time is the local time of the decision
//! ([`crate::clock::localtime_now`]), as refract 0.2 wrote it. How the
//! follower survives rotation and contains SIGBUS: [`crate::tail`].

mod control;
mod core;
mod metrics;
mod signals;

use std::io;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::audit::AuditLog;
use crate::clock::{Micros, SECOND};
use crate::config::Config;
use crate::control::server::{BindError, Server};
use crate::enforce::Enforcer;
use crate::liveness::kernel::Liveness;
use crate::liveness::track::{Locals, Tracker};
use crate::logger;
use crate::sys::time::{monotonic, reload_timezone};
use crate::sys::timerfd::TimerFd;
use crate::tail::Tail;

use self::core::Core;
pub use self::core::DaemonStats;
use self::signals::Signals;

pub const TAIL: Token = Token(0);
pub const TIMER: Token = Token(1);
pub const SIGNAL: Token = Token(2);
pub const LIVENESS: Token = Token(3);
pub const LIVENESS_UDP: Token = Token(4);
pub const FLEET: Token = Token(5);
/// The shaper owns `SHAPE_FIRST .. SHAPE_FIRST + shape::kernel::TOKENS`.
pub const SHAPE_FIRST: usize = 8;
const _: () = assert!(SHAPE_FIRST + crate::shape::kernel::TOKENS <= ENFORCER_FIRST);
/// The enforcer owns `ENFORCER_FIRST .. ENFORCER_FIRST + ENFORCER_TOKENS`.
pub const ENFORCER_FIRST: usize = 16;
pub const ENFORCER_TOKENS: usize = 16;
/// The control server owns `CONTROL_FIRST .. CONTROL_FIRST + server::TOKENS`.
pub const CONTROL_FIRST: usize = 64;
/// The metrics listener owns `METRICS_FIRST .. METRICS_FIRST + metrics::TOKENS`.
pub const METRICS_FIRST: usize = 96;
const _: () = assert!(CONTROL_FIRST + crate::control::server::TOKENS <= METRICS_FIRST);
/// Hook children own `HOOKS_FIRST .. HOOKS_FIRST + hooks::TOKENS`.
pub const HOOKS_FIRST: usize = 112;
const _: () = assert!(METRICS_FIRST + crate::metrics::TOKENS <= HOOKS_FIRST);
const _: () = assert!(crate::enforce::TOKENS <= ENFORCER_TOKENS);

/// How long shutdown waits for the enforcer's queued work.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(1);
/// One misconfiguration warning per class per this period.
pub const WARN_PERIOD: Micros = 10 * 60 * SECOND;

/// Exit code when the daemon cannot start (log directory missing, audit
/// log not writable, …).
pub const EXIT_START: i32 = 1;

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code. `cli`
/// chooses the enforcer (`DryRun` for `--dry-run`, the kernel one else)
/// and has made it (sets, rules, sockets) before calling this.
pub fn run(cfg: Config, enforcer: Box<dyn Enforcer>) -> i32 {
    let sink = logger::init(logger::Target::from_env());
    match Daemon::new(cfg, enforcer) {
        Ok(mut d) => {
            // Sets, rules and both logs are in place: give up what the loop
            // does not need (started as root only; see `privilege`).
            match crate::privilege::drop_after_startup(&d.cfg) {
                Ok(Some(line)) => logger::notice(format_args!("{line}")),
                Ok(None) => {}
                Err(e) => logger::error(format_args!("capabilities: could not drop: {e}")),
            }
            d.ready(sink);
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

/// The shaper, when caps are configured (not under `--dry-run`, which
/// changes nothing in the kernel), registered with the poll; `--shape off`
/// removes what an earlier run set up instead. A shaper that cannot start
/// stops the daemon: the operator asked for caps.
fn open_shaper(cfg: &Config, poll: &Poll) -> io::Result<Option<crate::shape::kernel::Shaper>> {
    if cfg.shape.off {
        if crate::enforce::ipset::lock::held(&[crate::shape::kernel::LOCK])?.is_some() {
            logger::warning(format_args!(
                "shape off: another refract shapes in this namespace; its shaping is left alone"
            ));
            return Ok(None);
        }
        match crate::shape::remove_all() {
            Ok(removed) if removed.is_empty() => {
                logger::notice(format_args!("shape off: nothing of refract's to remove"))
            }
            Ok(removed) => {
                logger::notice(format_args!("shape off: removed {}", removed.join(", ")))
            }
            Err(e) => logger::error(format_args!("shape off: {e}")),
        }
        return Ok(None);
    }
    if !cfg.shape.enabled() {
        return Ok(None);
    }
    if cfg.dry_run {
        logger::notice(format_args!(
            "shape: dry run: no classes, marks or limits are set (caps configured: {})",
            cfg.shape.summary()
        ));
        return Ok(None);
    }
    let mut sh = crate::shape::kernel::Shaper::start(&cfg.shape, &cfg.ports, monotonic())
        .map_err(|e| io::Error::other(e.0))?;
    sh.register(poll.registry(), SHAPE_FIRST)?;
    Ok(Some(sh))
}

struct Daemon {
    cfg: Config,
    poll: Poll,
    /// The control socket (`--control`), when there is one.
    control: Option<Server>,
    /// When the daemon started (monotonic), for `status`.
    started: Micros,
    /// The Prometheus listener (`--metrics`).
    metrics: Option<crate::metrics::Http>,
    /// `--on-ban`/`--on-unban`.
    hooks: Option<crate::hooks::Hooks>,
    /// `STATUS=` for the service manager: what was sent last, when, and a
    /// pending update (at most one a second; none without `$NOTIFY_SOCKET`).
    status_sent: (String, Micros),
    status_due: Option<Micros>,
    status_on: bool,
    /// `--metrics-file`: the fingerprint last written, the next write.
    metrics_written: Option<u64>,
    metrics_due: Option<Micros>,
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
        let mut audit = AuditLog::open(&cfg.block_log)?;
        audit.set_dry_run(cfg.dry_run);
        let mut live = open_liveness(&cfg);
        if let Some(l) = live.as_mut() {
            poll.registry()
                .register(l.socket(), LIVENESS, Interest::READABLE)?;
            if let Some(s) = l.udp_socket() {
                poll.registry()
                    .register(s, LIVENESS_UDP, Interest::READABLE)?;
            }
        }
        let mut core = Core::new(cfg.policy.clone(), enforcer, audit, live);
        core.shape = open_shaper(&cfg, &poll)?;
        if let Some(fc) = cfg.fleet.clone() {
            let mut f = crate::fleet::Fleet::new(fc);
            f.set_token(FLEET);
            core.fleet = Some(f);
        }
        let hooks = cfg.hooks.enabled().then(|| {
            let mut h = crate::hooks::Hooks::new(cfg.hooks.clone());
            h.set_first_token(HOOKS_FIRST);
            core.events = Some(Vec::new());
            h
        });
        let mut control = open_control(&cfg)?;
        if let Some(c) = control.as_mut() {
            c.register(poll.registry(), CONTROL_FIRST)?;
        }
        let mut metrics = match cfg.metrics {
            Some(addr) => Some(crate::metrics::Http::bind(addr)?),
            None => None,
        };
        if let Some(m) = metrics.as_mut() {
            m.register(poll.registry(), METRICS_FIRST)?;
        }
        let now = monotonic();
        Ok(Daemon {
            status_sent: (String::new(), 0),
            status_due: None,
            status_on: std::env::var_os("NOTIFY_SOCKET").is_some(),
            hooks,
            metrics,
            metrics_written: None,
            // The file exists from the start, then follows changes.
            metrics_due: cfg.metrics_file.as_ref().map(|_| now),
            cfg,
            poll,
            control,
            started: now,
            tail,
            timer,
            armed: None,
            signals,
            core,
        })
    }

    /// Says the daemon is ready (see "Readiness" above): one `ready:` log
    /// line, then `READY=1` to the service manager (a no-op outside
    /// systemd). Called once, after [`Daemon::new`] and the privilege drop.
    fn ready(&self, sink: &str) {
        // The settings in force, in one line, before the ready line.
        logger::notice(format_args!("{}", self.cfg.summary()));
        logger::notice(format_args!(
            "ready: following {} from its {}{}, audit log {}, enforcer {}, liveness {}, \
             control {}, metrics {}, logging to {sink}, refract {}",
            self.cfg.access_log.display(),
            if self.cfg.from_start { "start" } else { "end" },
            if self.tail.is_open() {
                ""
            } else {
                " (not there yet)"
            },
            self.cfg.block_log.display(),
            self.core.enforcer.name(),
            match self.core.live.as_ref() {
                Some(l) => format!("on ({} local addresses)", l.tracker.locals.len()),
                None => "off".to_string(),
            },
            self.control
                .as_ref()
                .map_or("none".to_string(), |c| c.path().display().to_string()),
            match (
                self.metrics.as_ref().and_then(|m| m.local_addr().ok()),
                &self.cfg.metrics_file
            ) {
                (Some(a), _) => format!("http://{a}/metrics"),
                (None, Some(f)) => f.display().to_string(),
                (None, None) => "off".to_string(),
            },
            env!("CARGO_PKG_VERSION"),
        ));
        self.notify("READY=1");
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        // Whatever `--from-start` asks for, and a file that appeared
        // between open and register.
        self.pump(monotonic());
        loop {
            self.rearm();
            // Work left over: a log backlog, or control requests beyond
            // this turn's share.
            let more =
                self.tail.has_more() || self.control.as_ref().is_some_and(|c| c.has_pending());
            let timeout = more.then_some(Duration::ZERO);
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
                    LIVENESS => {
                        if let Some(l) = self.core.live.as_mut() {
                            l.ready(now);
                        }
                    }
                    FLEET => {
                        if let Some(f) = self.core.fleet.as_mut() {
                            f.event(now);
                        }
                    }
                    Token(t)
                        if (SHAPE_FIRST..SHAPE_FIRST + crate::shape::kernel::TOKENS)
                            .contains(&t) =>
                    {
                        if let Some(sh) = self.core.shape.as_mut() {
                            sh.ready(t - SHAPE_FIRST, now);
                        }
                    }
                    LIVENESS_UDP => {
                        if let Some(l) = self.core.live.as_mut() {
                            l.ready_udp(now);
                        }
                    }
                    Token(t) if (ENFORCER_FIRST..ENFORCER_FIRST + ENFORCER_TOKENS).contains(&t) => {
                        self.core.enforcer.ready(t, now)
                    }
                    t if self.hooks.as_ref().is_some_and(|h| h.owns(t)) => {
                        if let Some(h) = self.hooks.as_mut() {
                            h.ready(self.poll.registry(), t, now);
                        }
                    }
                    t if self.metrics.as_ref().is_some_and(|m| m.owns(t)) => {
                        if let Some(mut m) = self.metrics.take() {
                            m.event(self.poll.registry(), t, now, &mut || {
                                self.render_metrics(now)
                            });
                            self.metrics = Some(m);
                        }
                    }
                    t if self.control.as_ref().is_some_and(|c| c.owns(t)) => {
                        if let Some(c) = self.control.as_mut() {
                            c.event(self.poll.registry(), t, now);
                        }
                    }
                    Token(_) => {}
                }
            }
            if events.is_empty() && self.tail.has_more() {
                self.pump(now);
            }
            self.deadlines(now);
            self.core.liveness(now);
            self.control_turn(now);
            self.core.fleet_turn(now);
            if let Some(sh) = self.core.shape.as_mut() {
                sh.turn(now);
            }
            self.hooks_turn(now);
            self.metrics_file_turn(now);
            self.status_turn(now);
            self.core.kill_reports();
            if self.signals.term() {
                self.shutdown();
                return Ok(());
            }
            if self.signals.hup() {
                // A bad limits file is logged; SIGHUP has no one to tell.
                let _ = self.reload();
            }
            if self.signals.usr1() {
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
            self.core.next_deadline(),
            self.tail.next_deadline(),
            self.control.as_ref().and_then(Server::deadline),
            self.metrics
                .as_ref()
                .and_then(crate::metrics::Http::deadline),
            self.metrics_due,
            self.hooks.as_ref().and_then(crate::hooks::Hooks::deadline),
            self.status_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every component whose deadline has passed.
    fn deadlines(&mut self, now: Micros) {
        self.core.deadlines(now);
        if let Some(f) = self.core.fleet.as_mut() {
            if f.deadline().is_some_and(|d| d <= now) {
                f.tick(self.poll.registry(), now);
            }
        }
        if let Some(c) = self.control.as_mut() {
            if c.deadline().is_some_and(|d| d <= now) {
                c.tick(self.poll.registry(), now);
            }
        }
        if let Some(m) = self.metrics.as_mut() {
            if m.deadline().is_some_and(|d| d <= now) {
                m.tick(self.poll.registry(), now);
            }
        }
        if let Some(h) = self.hooks.as_mut() {
            if h.deadline().is_some_and(|d| d <= now) {
                h.tick(self.poll.registry(), now);
            }
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
            logger::warning(format_args!("notify: {state}: {e}"));
        }
    }

    /// SIGHUP and `refract reload`: the limits in force, or why the limits
    /// file was refused (the previous ones are kept).
    fn reload(&mut self) -> Result<usize, String> {
        self.notify("RELOADING=1");
        reload_timezone();
        let r = self.core.reload(self.cfg.limits_file.as_deref());
        self.cfg.policy = self.core.policy.config().clone();
        // Changed caps go to the kernel now, not at the next event.
        if let Some(sh) = self.core.shape.as_mut() {
            sh.turn(monotonic());
        }
        self.notify("READY=1");
        r
    }

    /// `STATUS=` (systemctl status shows it): a short summary, sent when it
    /// changed, at most once a second; a change inside the second is sent
    /// when the second is over.
    fn status_turn(&mut self, now: Micros) {
        if !self.status_on {
            return;
        }
        let (users, _) = self.core.policy.tracked();
        let summary = format!(
            "{users} users tracked, {} bans in force, {} lines read",
            self.core.policy.ban_count(),
            self.core.stats.lines
        );
        if summary == self.status_sent.0 {
            self.status_due = None;
            return;
        }
        let next = self.status_sent.1.saturating_add(SECOND);
        if now < next && self.status_sent.1 != 0 {
            self.status_due = Some(next);
            return;
        }
        self.notify(&format!("STATUS={summary}"));
        self.status_sent = (summary, now);
        self.status_due = None;
    }

    /// Hands this turn's bans and unbans to the hooks and starts what fits.
    fn hooks_turn(&mut self, now: Micros) {
        let (Some(h), Some(events)) = (self.hooks.as_mut(), self.core.events.as_mut()) else {
            return;
        };
        for ev in events.drain(..) {
            h.push(ev);
        }
        h.start(self.poll.registry(), now);
    }

    fn shutdown(&mut self) {
        self.notify("STOPPING=1");
        if let Some(h) = self.hooks.as_mut() {
            h.shutdown();
        }
        if let Some(c) = self.control.as_ref() {
            c.remove();
        }
        self.core.enforcer.flush(FLUSH_BUDGET);
        self.core.audit.flush();
        logger::notice(format_args!("exiting: {}", self.stats_line()));
    }

    fn stats_line(&self) -> String {
        let mut line = self.core.stats_line(self.tail.stats());
        if let Some(f) = self.core.fleet.as_ref() {
            let s = &f.stats;
            line.push_str(&format!(
                " fleet_up={} fleet_requests={} fleet_admitted={} fleet_over={} \
                 fleet_timeouts={} fleet_errors={} fleet_connects={}",
                u8::from(s.up),
                s.requests,
                s.admitted,
                s.over,
                s.timeouts,
                s.errors,
                s.connects
            ));
        }
        if let Some(h) = self.hooks.as_ref() {
            let s = &h.stats;
            let (running, queued) = h.busy();
            line.push_str(&format!(
                " hooks_started={} hooks_ok={} hooks_failed={} hooks_timeout={} \
                 hooks_spawn_errors={} hooks_dropped={} hooks_running={running} \
                 hooks_queued={queued}",
                s.started, s.ok, s.failed, s.timeout, s.spawn_errors, s.dropped
            ));
        }
        line
    }
}

/// The control socket `--control` names. Another daemon answering on it
/// stops this one; so does any failure on a path the operator gave (its
/// directory is created if missing). The default path is used only when
/// its directory exists (the service manager makes it: the unit's
/// `RuntimeDirectory=refract`, the OpenRC script): a daemon started by
/// hand, or by a test, never takes the service's socket by accident, and
/// without that directory, or on a failure there, runs without a control
/// socket and says so.
fn open_control(cfg: &Config) -> io::Result<Option<Server>> {
    let Some(path) = cfg.control.as_deref() else {
        return Ok(None);
    };
    let default = path == std::path::Path::new(crate::config::DEFAULT_CONTROL);
    if default && !path.parent().is_some_and(std::path::Path::is_dir) {
        logger::notice(format_args!(
            "control: {} does not exist (the service manager creates it); running without a \
             control socket (--control PATH to have one)",
            path.parent().unwrap_or(path).display()
        ));
        return Ok(None);
    }
    match Server::bind(path) {
        Ok(s) => Ok(Some(s)),
        Err(e @ BindError::Running(_)) => {
            Err(io::Error::new(io::ErrorKind::AddrInUse, e.to_string()))
        }
        Err(e) if default => {
            logger::warning(format_args!("{e}; running without a control socket"));
            Ok(None)
        }
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// The liveness side (see [`crate::liveness`]) when TCP is enforced: the
/// namespace's addresses and a sock_diag socket. Without them the window
/// rule decides alone, which is logged.
fn open_liveness(cfg: &Config) -> Option<Liveness> {
    if !(cfg.protos.tcp || cfg.protos.udp) || cfg.ports.is_empty() {
        return None;
    }
    let addrs = match crate::sys::ifaddrs::local_addresses() {
        Ok(a) => a,
        Err(e) => {
            logger::error(format_args!(
                "liveness: cannot list local addresses ({e}); the window rule decides alone"
            ));
            return None;
        }
    };
    let locals = Locals::new(&addrs);
    if locals.is_empty() {
        logger::warning(format_args!(
            "liveness: no usable local address; the window rule decides alone"
        ));
    }
    // Conntrack answers only with CAP_NET_ADMIN, which --dry-run gives up:
    // UDP lines keep the window rule there.
    let (tcp, udp) = (cfg.protos.tcp, cfg.protos.udp && !cfg.dry_run);
    let tracker = Tracker::with_protos(cfg.policy.window, &cfg.ports, locals, tcp, udp);
    match Liveness::open(tracker, udp) {
        Ok(l) => Some(l),
        Err(e) => {
            logger::error(format_args!("{e}; the window rule decides alone"));
            None
        }
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
