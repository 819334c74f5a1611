//! Daemon messages: to syslog (facility `daemon`, ident `refract`) when
//! standard error is not a terminal, else to standard error; `REFRACT_LOG`
//! (`auto`, `stderr`, `syslog`) overrides the choice.
//!
//! One process-wide sink behind a mutex (refract is single-threaded, the
//! lock is never contended): any module may log without threading a handle
//! through every call. When syslog cannot be reached (no `/dev/log`, as in
//! many containers) messages go to standard error, which systemd and
//! container runtimes capture anyway.
//!
//! Warnings about misconfiguration (loopback sources, masked addresses,
//! X-Forwarded-For sources) would otherwise be written once per log line;
//! [`RateLimit`] lets one per class through per period and counts the rest.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use crate::clock::Micros;

/// Where messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Syslog unless standard error is a terminal.
    Auto,
    Stderr,
    Syslog,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "auto" | "" => Some(Target::Auto),
            "stderr" => Some(Target::Stderr),
            "syslog" => Some(Target::Syslog),
            _ => None,
        }
    }

    /// `REFRACT_LOG`, or [`Target::Auto`] when unset or invalid.
    pub fn from_env() -> Target {
        std::env::var("REFRACT_LOG")
            .ok()
            .and_then(|v| Target::parse(&v))
            .unwrap_or(Target::Auto)
    }
}

/// Severity, mapped onto syslog's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Notice,
    Info,
}

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

enum Sink {
    Stderr,
    Syslog(Box<Syslog>),
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Chooses the sink. Until called (and in tests), messages go to stderr.
/// Returns the name of the sink chosen, for the startup line.
pub fn init(target: Target) -> &'static str {
    let want_syslog = match target {
        Target::Stderr => false,
        Target::Syslog => true,
        Target::Auto => !crate::sys::process::isatty(std::os::fd::AsFd::as_fd(&std::io::stderr())),
    };
    let mut sink = Sink::Stderr;
    let mut failed = None;
    if want_syslog {
        let fmt = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "refract".into(),
            pid: std::process::id(),
        };
        match syslog::unix(fmt) {
            Ok(l) => sink = Sink::Syslog(Box::new(l)),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    let name = match sink {
        Sink::Stderr => "stderr",
        Sink::Syslog(_) => "syslog",
    };
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    if let Some(e) = failed {
        log(
            Level::Warning,
            format_args!("log: syslog unavailable ({e}); writing to stderr"),
        );
    }
    name
}

/// Writes one message. Never fails: a message that cannot be delivered is
/// dropped (there is nowhere left to report it).
pub fn log(level: Level, msg: fmt::Arguments<'_>) {
    let mut guard = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(Sink::Syslog(l)) = guard.as_mut() {
        let msg = msg.to_string();
        let r = match level {
            Level::Error => l.err(msg),
            Level::Warning => l.warning(msg),
            Level::Notice => l.notice(msg),
            Level::Info => l.info(msg),
        };
        if r.is_ok() {
            return;
        }
    }
    let prefix = match level {
        Level::Error => "error: ",
        Level::Warning => "warning: ",
        Level::Notice | Level::Info => "",
    };
    // One write per message so concurrent writers to the same stderr (a
    // supervisor's pipe) never interleave halves of lines.
    let line = format!("refract: {prefix}{msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn error(msg: fmt::Arguments<'_>) {
    log(Level::Error, msg)
}

pub fn warning(msg: fmt::Arguments<'_>) {
    log(Level::Warning, msg)
}

pub fn notice(msg: fmt::Arguments<'_>) {
    log(Level::Notice, msg)
}

pub fn info(msg: fmt::Arguments<'_>) {
    log(Level::Info, msg)
}

/// Lets one event per class through per `period` and counts the rest, so a
/// misconfiguration that shows on every log line costs one message per
/// period, not one per line.
#[derive(Debug)]
pub struct RateLimit<const N: usize> {
    period: Micros,
    last: [Option<Micros>; N],
    suppressed: [u64; N],
}

impl<const N: usize> RateLimit<N> {
    pub fn new(period: Micros) -> Self {
        RateLimit {
            period,
            last: [None; N],
            suppressed: [0; N],
        }
    }

    /// `Some(suppressed since the last message)` when a message of `class`
    /// may be written at `now`; `None` (and counted) otherwise.
    pub fn check(&mut self, class: usize, now: Micros) -> Option<u64> {
        let due = match self.last[class] {
            None => true,
            Some(t) => now.saturating_sub(t) >= self.period,
        };
        if due {
            self.last[class] = Some(now);
            Some(std::mem::take(&mut self.suppressed[class]))
        } else {
            self.suppressed[class] += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_one_per_class_per_period() {
        let mut r = RateLimit::<2>::new(100);
        assert_eq!(r.check(0, 1000), Some(0));
        assert_eq!(r.check(0, 1050), None);
        assert_eq!(r.check(0, 1099), None);
        assert_eq!(r.check(1, 1099), Some(0), "classes are independent");
        assert_eq!(r.check(0, 1100), Some(2));
        assert_eq!(r.check(0, 1150), None);
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("stderr"), Some(Target::Stderr));
        assert_eq!(Target::parse("syslog"), Some(Target::Syslog));
        assert_eq!(Target::parse("auto"), Some(Target::Auto));
        assert_eq!(Target::parse("journal"), None);
    }
}
