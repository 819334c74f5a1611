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
//!
//! Every message is one line: a newline inside one (a tool's multi-line
//! error) is folded into ` / `. On standard error a line starts with the
//! local time (`2026-12-01 12:00:00.123 refract: …`) unless journald reads
//! it (`JOURNAL_STREAM` names standard error's device and inode,
//! systemd.exec(5)): journald and syslog stamp lines themselves. Event
//! lines (a ban, an unban, a kill's result, a reload, a rotation, a kernel
//! repair) end in a stable `| key=value …` part ([`kv`]) for log
//! pipelines, after the text for people.

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

/// The local syslog socket, spoken to as `syslog(3)` does: one datagram
/// per message, `<PRI>Mmm dd hh:mm:ss refract[PID]: MSG` (RFC 3164's
/// format without the host name, which the local daemon adds), facility
/// `daemon`. Written here, not with a crate: the `syslog` crate pulled in
/// `time` with its formatting machinery, about 60 KB of the binary, for
/// this one line.
struct Syslog {
    sock: std::os::unix::net::UnixDatagram,
    path: &'static str,
    pid: u32,
}

/// Where syslog daemons listen (journald's `/dev/log` link, rsyslog,
/// busybox syslogd; BSD-style paths last).
const SYSLOG_PATHS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

/// `LOG_DAEMON` (`<syslog.h>`: facility 3, shifted by 3).
const LOG_DAEMON: u8 = 3 << 3;

impl Syslog {
    fn connect() -> std::io::Result<Syslog> {
        Syslog::connect_to(&SYSLOG_PATHS)
    }

    fn connect_to(paths: &[&'static str]) -> std::io::Result<Syslog> {
        let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
        for &path in paths {
            let sock = std::os::unix::net::UnixDatagram::unbound()?;
            match sock.connect(path) {
                Ok(()) => {
                    return Ok(Syslog {
                        sock,
                        path,
                        pid: std::process::id(),
                    })
                }
                Err(e) => last = std::io::Error::new(e.kind(), format!("{path}: {e}")),
            }
        }
        Err(last)
    }

    /// Sends one message; after a failure (the syslog daemon restarted:
    /// `ECONNREFUSED`, `ENOTCONN`) connects again once and retries.
    fn send(&mut self, level: Level, msg: &str) -> std::io::Result<()> {
        let severity = match level {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Notice => 5,
            Level::Info => 6,
        };
        let t = crate::clock::localtime_now().civil();
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS[t.month.clamp(1, 12) as usize - 1];
        let line = format!(
            "<{}>{month} {:>2} {:02}:{:02}:{:02} refract[{}]: {msg}",
            LOG_DAEMON | severity,
            t.day,
            t.hour,
            t.minute,
            t.second,
            self.pid
        );
        match self.sock.send(line.as_bytes()) {
            Ok(_) => Ok(()),
            Err(_) => {
                let sock = std::os::unix::net::UnixDatagram::unbound()?;
                sock.connect(self.path)?;
                self.sock = sock;
                self.sock.send(line.as_bytes()).map(drop)
            }
        }
    }
}

enum Sink {
    Stderr,
    Syslog(Box<Syslog>),
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Whether stderr lines get a time stamp (module docs).
static STAMP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether journald reads standard error: `JOURNAL_STREAM=DEV:INODE` is
/// standard error's own (systemd sets it for the service's stdout/stderr;
/// a child's redirected stderr no longer matches).
fn journald_reads_stderr() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// `| key=value …`: the stable part of an event line. A value with a space,
/// `=`, `"`, `\` or nothing at all is quoted, `"` and `\` escaped (logfmt).
pub fn kv(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("|");
    for (k, v) in pairs {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        let plain = !v.is_empty()
            && !v
                .chars()
                .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
        if plain {
            out.push_str(v);
            continue;
        }
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() => out.push(' '),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

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
        match Syslog::connect() {
            Ok(l) => sink = Sink::Syslog(Box::new(l)),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    let name = match sink {
        Sink::Stderr => "stderr",
        Sink::Syslog(_) => "syslog",
    };
    STAMP.store(
        matches!(sink, Sink::Stderr) && !journald_reads_stderr(),
        std::sync::atomic::Ordering::Relaxed,
    );
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
    let mut msg = msg.to_string();
    if msg.contains('\n') {
        msg = msg.trim_end().replace('\n', " / ");
    }
    let mut guard = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(Sink::Syslog(l)) = guard.as_mut() {
        if l.send(level, &msg).is_ok() {
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
    let line = if STAMP.load(std::sync::atomic::Ordering::Relaxed) {
        let t = crate::clock::localtime_now();
        let c = t.civil();
        let ms = t.as_micros() % 1_000_000 / 1000;
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{ms:03} refract: {prefix}{msg}\n",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    } else {
        format!("refract: {prefix}{msg}\n")
    };
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

#[cfg(test)]
mod kv_tests {
    use super::kv;

    #[test]
    fn kv_quotes_what_needs_it() {
        assert_eq!(
            kv(&[
                ("event", "ban"),
                ("user", "a b"),
                ("tag", "x=\"y\""),
                ("none", "")
            ]),
            r#"| event=ban user="a b" tag="x=\"y\"" none="""#
        );
        assert_eq!(kv(&[("k", "line\nbreak")]), r#"| k="line\nbreak""#);
    }
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

    /// The datagram a syslog daemon receives: priority (daemon.notice is
    /// 3 << 3 | 5), the local time as RFC 3164 writes it, ident and pid;
    /// after the daemon went away and came back, the next message
    /// reconnects.
    #[test]
    fn syslog_datagrams_are_rfc3164_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("refract-syslog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path: &'static str = Box::leak(dir.join("log").display().to_string().into_boxed_str());
        let _ = std::fs::remove_file(path);
        let server = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        let mut l = Syslog::connect_to(&["/nonexistent/refract-log", path]).unwrap();
        l.send(Level::Notice, "hello").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<29>"), "{got}");
        assert!(
            got.ends_with(&format!(" refract[{}]: hello", std::process::id())),
            "{got}"
        );
        // `<29>Mmm dd hh:mm:ss`: the month, the day padded to two.
        let stamp = &got[4..19];
        assert!(
            stamp.as_bytes()[3] == b' ' && stamp.as_bytes()[6] == b' ',
            "{stamp:?}"
        );
        assert_eq!(&stamp[9..10], ":", "{stamp:?}");
        // The daemon restarts: a new socket at the same path.
        drop(server);
        std::fs::remove_file(path).unwrap();
        let server = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        l.send(Level::Error, "again").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("<27>"));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
