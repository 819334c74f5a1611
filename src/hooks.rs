//! Hooks: a command run on every ban (`--on-ban`) and unban
//! (`--on-unban`), without ever holding up the loop.
//!
//! - The command line is split into words here ([`split_argv`]: spaces
//!   separate, `'…'` and `"…"` quote, `\` escapes), never by a shell; an
//!   operator who wants one writes `sh -c '…'`. Nothing from the log ever
//!   reaches an argv or a shell: the event goes to the child as one JSON
//!   object on its stdin and as `REFRACT_EVENT`, `REFRACT_ADDR`,
//!   `REFRACT_USER`, `REFRACT_ORIGIN`, `REFRACT_TAG`, `REFRACT_DURATION`,
//!   `REFRACT_REASON` in an environment that holds only those and `PATH`.
//! - One child per event, at most `--hook-max` at once; more events wait
//!   in a queue of [`QUEUE_PER_SLOT`] × `--hook-max`, and beyond that are
//!   dropped and counted. A child still running after `--hook-timeout` is
//!   killed (`SIGKILL`).
//! - Children are reaped through a pidfd each (`pidfd_open(2)`, a token of
//!   the loop, readable when the child exits); on a kernel without
//!   pidfds the loop looks every [`POLL_EVERY`] while children run. No
//!   zombie outlives its event, and exit reaps (after killing) all.
//! - A failing hook is logged once per class and [`WARN_PERIOD`] (exit
//!   status, timeout, could not start), never retried.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::clock::{Micros, SECOND};
use crate::control::json::Value;
use crate::logger::{self, RateLimit};

/// Queued events per running slot.
pub const QUEUE_PER_SLOT: usize = 64;
/// Most hooks at once (`--hook-max` is checked against it).
pub const MAX_SLOTS: usize = 64;
/// How often children are looked at without pidfds.
pub const POLL_EVERY: Micros = SECOND / 10;
/// One warning per class per this long.
pub const WARN_PERIOD: Micros = 10 * 60 * SECOND;
/// Longest user or tag passed on (bytes; longer ones are cut).
pub const MAX_FIELD: usize = 1024;

/// The hook settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookConfig {
    pub on_ban: Option<Vec<String>>,
    pub on_unban: Option<Vec<String>>,
    /// `--hook-timeout`.
    pub timeout: Micros,
    /// `--hook-max`.
    pub max: usize,
}

impl HookConfig {
    pub fn enabled(&self) -> bool {
        self.on_ban.is_some() || self.on_unban.is_some()
    }
}

/// One ban or unban, as a hook sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `ban` or `unban`.
    pub kind: &'static str,
    pub addr: String,
    pub user: String,
    pub origin: Vec<String>,
    pub tag: String,
    /// Seconds the ban lasts (0 for an unban).
    pub duration_s: u64,
    /// `limit`, `liveness`, `manual`, `expired`.
    pub reason: &'static str,
    /// Local time, as the audit line writes it.
    pub time: String,
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Event {
    /// A ban, stamped with the local time now.
    pub fn ban(
        addr: String,
        user: String,
        origin: Vec<String>,
        tag: String,
        duration_s: u64,
        reason: &'static str,
    ) -> Event {
        Event {
            kind: "ban",
            addr,
            user,
            origin,
            tag,
            duration_s,
            reason,
            time: crate::clock::localtime_now().to_string(),
        }
    }

    /// An unban (`expired` or `manual`), stamped with the local time now.
    pub fn unban(addr: String, user: Option<&[u8]>, reason: &'static str) -> Event {
        Event {
            kind: "unban",
            addr,
            user: user
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default(),
            origin: Vec::new(),
            tag: String::new(),
            duration_s: 0,
            reason,
            time: crate::clock::localtime_now().to_string(),
        }
    }

    /// The JSON object on the child's stdin.
    pub fn to_value(&self) -> Value {
        Value::obj([
            ("event", self.kind.into()),
            ("addr", self.addr.as_str().into()),
            ("user", cut(&self.user).into()),
            ("origin", self.origin.clone().into()),
            ("tag", cut(&self.tag).into()),
            ("duration_s", self.duration_s.into()),
            ("reason", self.reason.into()),
            ("time", self.time.as_str().into()),
        ])
    }

    fn env(&self) -> [(&'static str, String); 7] {
        [
            ("REFRACT_EVENT", self.kind.to_string()),
            ("REFRACT_ADDR", self.addr.clone()),
            ("REFRACT_USER", cut(&self.user)),
            ("REFRACT_ORIGIN", self.origin.join(",")),
            ("REFRACT_TAG", cut(&self.tag)),
            ("REFRACT_DURATION", self.duration_s.to_string()),
            ("REFRACT_REASON", self.reason.to_string()),
        ]
    }
}

/// Splits a command line into words, without a shell (module docs).
pub fn split_argv(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unclosed '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unclosed \"".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("\\ at the end".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        return Err("empty command".into());
    }
    Ok(out)
}

/// Counters (the `stats:` line, metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub started: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeout: u64,
    pub spawn_errors: u64,
    pub dropped: u64,
}

#[derive(Debug)]
struct Running {
    child: Child,
    pidfd: Option<OwnedFd>,
    deadline: Micros,
    killed: bool,
    kind: &'static str,
}

/// The hook runner (module docs).
#[derive(Debug)]
pub struct Hooks {
    cfg: HookConfig,
    queue: VecDeque<Event>,
    slots: Vec<Option<Running>>,
    first: usize,
    /// Children without a pidfd run: look every [`POLL_EVERY`].
    polling: bool,
    warn: RateLimit<3>,
    pub stats: HookStats,
}

/// Tokens the runner takes.
pub const TOKENS: usize = MAX_SLOTS;

impl Hooks {
    pub fn new(cfg: HookConfig) -> Hooks {
        let n = cfg.max.clamp(1, MAX_SLOTS);
        Hooks {
            cfg,
            queue: VecDeque::new(),
            slots: (0..n).map(|_| None).collect(),
            first: 0,
            polling: false,
            warn: RateLimit::new(WARN_PERIOD),
            stats: HookStats::default(),
        }
    }

    pub fn set_first_token(&mut self, first: usize) {
        self.first = first;
    }

    pub fn owns(&self, token: Token) -> bool {
        (self.first..self.first + self.slots.len()).contains(&token.0)
    }

    /// Running children and queued events.
    pub fn busy(&self) -> (usize, usize) {
        (self.slots.iter().flatten().count(), self.queue.len())
    }

    /// An event happened: queued (or dropped and counted beyond the bound)
    /// when its kind has a hook.
    pub fn push(&mut self, ev: Event) {
        let wanted = match ev.kind {
            "ban" => self.cfg.on_ban.is_some(),
            _ => self.cfg.on_unban.is_some(),
        };
        if !wanted {
            return;
        }
        if self.queue.len() >= QUEUE_PER_SLOT * self.slots.len() {
            self.stats.dropped += 1;
            return;
        }
        self.queue.push_back(ev);
    }

    /// Starts queued events in free slots.
    pub fn start(&mut self, registry: &Registry, now: Micros) {
        while let Some(i) = self.slots.iter().position(Option::is_none) {
            let Some(ev) = self.queue.pop_front() else {
                return;
            };
            let argv = match ev.kind {
                "ban" => self.cfg.on_ban.as_ref(),
                _ => self.cfg.on_unban.as_ref(),
            };
            let Some(argv) = argv else { continue };
            match self.spawn(argv, &ev) {
                Ok(child) => {
                    self.stats.started += 1;
                    let pidfd = crate::sys::process::pidfd_open(child.id()).ok();
                    if let Some(fd) = pidfd.as_ref() {
                        let raw = fd.as_raw_fd();
                        let token = Token(self.first + i);
                        if registry
                            .register(&mut SourceFd(&raw), token, Interest::READABLE)
                            .is_err()
                        {
                            self.polling = true;
                        }
                    } else {
                        self.polling = true;
                    }
                    self.slots[i] = Some(Running {
                        child,
                        pidfd,
                        deadline: now.saturating_add(self.cfg.timeout),
                        killed: false,
                        kind: ev.kind,
                    });
                }
                Err(e) => {
                    self.stats.spawn_errors += 1;
                    if let Some(n) = self.warn.check(0, now) {
                        logger::warning(format_args!(
                            "hook: --on-{} {:?}: cannot start: {e} ({n} more since the last \
                             message)",
                            ev.kind, argv[0]
                        ));
                    }
                }
            }
        }
    }

    fn spawn(&self, argv: &[String], ev: &Event) -> io::Result<Child> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(ev.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // A few hundred bytes into an empty pipe (64 KiB): never blocks.
            let mut line = ev.to_value().to_line();
            line.push('\n');
            let _ = stdin.write_all(line.as_bytes());
        }
        Ok(child)
    }

    /// A child's pidfd is readable (it exited): reap it.
    pub fn ready(&mut self, registry: &Registry, token: Token, now: Micros) {
        let i = token.0 - self.first;
        self.reap(registry, i, now);
        self.start(registry, now);
    }

    fn reap(&mut self, registry: &Registry, i: usize, now: Micros) {
        let Some(r) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let status = match r.child.try_wait() {
            Ok(Some(st)) => st,
            Ok(None) => return,
            Err(_) => return,
        };
        let r = self.slots[i].take().expect("checked above");
        if let Some(fd) = r.pidfd.as_ref() {
            let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        let (class, what) = if r.killed {
            self.stats.timeout += 1;
            (
                1,
                format!("killed after --hook-timeout {}s", self.cfg.timeout / SECOND),
            )
        } else if status.success() {
            self.stats.ok += 1;
            return;
        } else {
            self.stats.failed += 1;
            (2, format!("{status}"))
        };
        if let Some(n) = self.warn.check(class, now) {
            logger::warning(format_args!(
                "hook: --on-{}: {what} ({n} more since the last message)",
                r.kind
            ));
        }
    }

    /// When [`Hooks::tick`] is due: the earliest timeout, or the next look
    /// without pidfds.
    pub fn deadline(&self) -> Option<Micros> {
        let timeouts = self
            .slots
            .iter()
            .flatten()
            .filter(|r| !r.killed)
            .map(|r| r.deadline)
            .min();
        let running = self.slots.iter().any(Option::is_some);
        match (timeouts, self.polling && running) {
            (t, false) => t,
            // A look every POLL_EVERY: the earliest of the two.
            (Some(t), true) => Some(t.min(self.poll_at())),
            (None, true) => Some(self.poll_at()),
        }
    }

    fn poll_at(&self) -> Micros {
        crate::sys::time::monotonic().saturating_add(POLL_EVERY)
    }

    /// Kills children past their timeout; reaps what exited (for kernels
    /// without pidfds, and killed children whose pidfd already fired).
    pub fn tick(&mut self, registry: &Registry, now: Micros) {
        for r in self.slots.iter_mut().flatten() {
            if !r.killed && r.deadline <= now {
                let _ = r.child.kill();
                r.killed = true;
            }
        }
        for i in 0..self.slots.len() {
            self.reap(registry, i, now);
        }
        self.start(registry, now);
    }

    /// Shutdown: queued events are dropped (counted), running children
    /// killed and reaped.
    pub fn shutdown(&mut self) {
        self.stats.dropped += self.queue.len() as u64;
        self.queue.clear();
        for r in self.slots.iter_mut().filter_map(Option::take) {
            let mut child = r.child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_without_a_shell() {
        let s = |x: &str| split_argv(x).unwrap();
        assert_eq!(
            s("/usr/bin/notify --to ops"),
            ["/usr/bin/notify", "--to", "ops"]
        );
        assert_eq!(
            s(r#"sh -c 'echo "$REFRACT_ADDR" >> /tmp/x'"#),
            ["sh", "-c", r#"echo "$REFRACT_ADDR" >> /tmp/x"#]
        );
        assert_eq!(
            s(r#"a "b c" d\ e "f\"g" 'h\i'"#),
            ["a", "b c", "d e", "f\"g", "h\\i"]
        );
        assert_eq!(s("  a\t b  "), ["a", "b"]);
        assert_eq!(s("''"), [""]);
        for bad in ["", "   ", "'open", "\"open", "end\\"] {
            assert!(split_argv(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_event_as_json_and_environment() {
        let ev = Event {
            kind: "ban",
            addr: "192.0.2.7".into(),
            user: "alice@example.com".into(),
            origin: vec!["198.51.100.1".into(), "198.51.100.2".into()],
            tag: "vless-in >> direct".into(),
            duration_s: 60,
            reason: "limit",
            time: "2026/12/01 12:00:00".into(),
        };
        assert_eq!(
            ev.to_value().to_line(),
            r#"{"event":"ban","addr":"192.0.2.7","user":"alice@example.com","origin":["198.51.100.1","198.51.100.2"],"tag":"vless-in >> direct","duration_s":60,"reason":"limit","time":"2026/12/01 12:00:00"}"#
        );
        let env = ev.env();
        assert!(env.contains(&("REFRACT_ORIGIN", "198.51.100.1,198.51.100.2".into())));
        assert!(env.contains(&("REFRACT_DURATION", "60".into())));
        let long = Event {
            user: "ü".repeat(MAX_FIELD),
            ..ev
        };
        assert!(cut(&long.user).len() <= MAX_FIELD);
    }
}
