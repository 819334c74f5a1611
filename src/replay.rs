//! `refract replay FILE`: parser and policy over a finished log, with the
//! log's own timestamps as the clock, touching nothing in the kernel.
//!
//! It prints the audit lines a live run would have written (stdout) and a
//! summary (stderr); `--explain` prints one line per input line instead. The
//! file is read through bounded mmap windows ([`WINDOW`] bytes at a time),
//! so a log of any size replays in constant memory; `-` reads standard
//! input in chunks.
//!
//! Replay has no kernel: it decides by the window rule alone, without the
//! liveness facts the daemon adds ([`crate::policy`], "Liveness"); with
//! `--explain` it says so first ([`LIVENESS_OFFLINE`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::accesslog;
use crate::audit;
use crate::clock::Micros;
use crate::config::Config;
use crate::key::Key;
use crate::lines::{Lines, TooLong};
use crate::policy::skip::Skip;
use crate::policy::{Policy, Verdict};

/// What `--explain` says first (stderr): the daemon's decisions can
/// differ from replay's where the kernel kept a key online.
pub const LIVENESS_OFFLINE: &str = "replay: liveness is not available offline: a key is online \
     here only while its last line is within --window; the daemon also counts it online while \
     the kernel shows one of its connections in use, so it can ban where replay admits";

/// Bytes mapped at a time.
pub const WINDOW: usize = 16 << 20;

/// What a replay counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub counted: u64,
    pub skipped: [u64; Skip::ALL.len()],
    pub users: u64,
    pub bans: u64,
}

impl Summary {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
}

/// Parser + policy + output for one replay; feed it lines.
#[derive(Debug)]
pub struct Replayer<W: Write> {
    policy: Policy,
    users: crate::hash::Set<Box<[u8]>>,
    explain: bool,
    out: W,
    buf: Vec<u8>,
    /// The parser's per-second timestamp cache (see [`accesslog::parse_with`]).
    ts: accesslog::TsCache,
    pub summary: Summary,
}

impl<W: Write> Replayer<W> {
    pub fn new(cfg: &Config, explain: bool, out: W) -> Replayer<W> {
        Replayer {
            policy: Policy::new(cfg.policy.clone()),
            users: crate::hash::Set::default(),
            explain,
            out,
            buf: Vec::with_capacity(256),
            ts: accesslog::TsCache::default(),
            summary: Summary::default(),
        }
    }

    /// One input line (or a reader's verdict on it).
    pub fn line(&mut self, line: Result<&[u8], TooLong>) -> io::Result<()> {
        self.summary.lines += 1;
        let n = self.summary.lines;
        let ts = &mut self.ts;
        let parsed = line
            .map_err(Skip::from)
            .and_then(|l| accesslog::parse_with(l, ts).map_err(Skip::from));
        let access = match parsed {
            Ok(a) => a,
            Err(skip) => return self.skip(n, skip, None, None),
        };
        let now: Micros = access.ts.as_micros();
        if self.policy.next_deadline().is_some_and(|d| d <= now) {
            self.policy.expire(now);
        }
        let verdict = self.policy.observe(now, &access);
        if let Verdict::Skipped(skip) = verdict {
            let key = match access.source {
                accesslog::Source::Ip(ip, _) => Some(Key::new(ip, self.policy.config().v6_prefix)),
                _ => None,
            };
            return self.skip(n, skip, key, access.email);
        }
        self.summary.counted += 1;
        // Refreshed, Candidate and Banned need state of the user already
        // (seen before): only the other verdicts can bring a new user.
        let maybe_new = matches!(verdict, Verdict::Admitted(_) | Verdict::Ignored(_));
        if let Some(email) = access.email.filter(|_| maybe_new) {
            if !self.users.contains(email) {
                self.users.insert(email.into());
                self.summary.users += 1;
            }
        }
        let email = access.email.unwrap_or_default();
        self.buf.clear();
        match &verdict {
            Verdict::Banned(ban) => {
                self.summary.bans += 1;
                if self.explain {
                    self.explain_line(n, "banned", Some(ban.key), &ban.user);
                    self.buf.extend_from_slice(b" origin=");
                    for (i, k) in ban.origins.iter().enumerate() {
                        if i > 0 {
                            self.buf.push(b',');
                        }
                        let _ = write!(self.buf, "{k}");
                    }
                } else {
                    audit::write_line(&mut self.buf, access.ts, ban);
                }
            }
            Verdict::Admitted(k) if self.explain => {
                self.explain_line(n, "admitted", Some(*k), email)
            }
            Verdict::Refreshed(k) if self.explain => {
                self.explain_line(n, "refreshed", Some(*k), email)
            }
            Verdict::Candidate(k) if self.explain => {
                self.explain_line(n, "candidate", Some(*k), email)
            }
            Verdict::Ignored(k) if self.explain => {
                self.explain_line(n, "ignored-banned", Some(*k), email)
            }
            _ => return Ok(()),
        }
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)
    }

    fn explain_line(&mut self, n: u64, what: &str, key: Option<Key>, user: &[u8]) {
        let _ = write!(self.buf, "{n} {what}");
        if let Some(k) = key {
            let _ = write!(self.buf, " {k}");
        }
        if !user.is_empty() {
            self.buf.push(b' ');
            self.buf.extend_from_slice(user);
        }
    }

    fn skip(
        &mut self,
        n: u64,
        skip: Skip,
        key: Option<Key>,
        user: Option<&[u8]>,
    ) -> io::Result<()> {
        self.summary.skipped[skip.index()] += 1;
        if !self.explain {
            return Ok(());
        }
        self.buf.clear();
        let _ = write!(self.buf, "{n} skipped:{}", skip.name());
        if let Some(k) = key {
            let _ = write!(self.buf, " {k}");
        }
        if let Some(u) = user {
            self.buf.push(b' ');
            self.buf.extend_from_slice(u);
        }
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Replays everything `src` yields through `rep`.
pub fn replay_reader<W: Write>(
    rep: &mut Replayer<W>,
    mut src: impl Read,
    max_line: usize,
) -> io::Result<()> {
    let mut lines = Lines::new(max_line);
    let mut chunk = vec![0u8; 1 << 20];
    let mut err = Ok(());
    let mut sink = |l: Result<&[u8], TooLong>| {
        if err.is_ok() {
            err = rep.line(l);
        }
    };
    loop {
        let n = match src.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines.feed(&chunk[..n], &mut sink);
    }
    lines.finish(&mut sink);
    err
}

/// Replays a regular file through mmap windows of at most [`WINDOW`] bytes.
pub fn replay_file<W: Write>(
    rep: &mut Replayer<W>,
    file: &File,
    max_line: usize,
) -> io::Result<()> {
    let size = file.metadata()?.len();
    let mut lines = Lines::new(max_line);
    let mut err = Ok(());
    let mut sink = |l: Result<&[u8], TooLong>| {
        if err.is_ok() {
            err = rep.line(l);
        }
    };
    let mut off = 0u64;
    while off < size {
        let len = (size - off).min(WINDOW as u64) as usize;
        let map = crate::sys::mmap::map_window(file, off, len)?;
        lines.feed(&map, &mut sink);
        drop(map);
        off += len as u64;
    }
    lines.finish(&mut sink);
    err
}

/// `refract replay`: returns the exit code.
pub fn main(cfg: &Config, path: &str, explain: bool) -> i32 {
    if explain {
        // Not `eprintln!`, which panics when standard error is closed.
        let _ = writeln!(io::stderr().lock(), "{LIVENESS_OFFLINE}");
    }
    let stdout = io::stdout();
    let mut rep = Replayer::new(
        cfg,
        explain,
        io::BufWriter::with_capacity(64 << 10, stdout.lock()),
    );
    let res = if path == "-" {
        replay_reader(&mut rep, io::stdin().lock(), cfg.max_line)
    } else {
        match File::open(Path::new(path)) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {
                replay_file(&mut rep, &f, cfg.max_line)
            }
            Ok(f) => replay_reader(&mut rep, f, cfg.max_line),
            Err(e) => Err(e),
        }
    };
    let summary = rep.summary.clone();
    let flushed = rep.into_inner().flush();
    if let Err(e) = res.and(flushed) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return 0;
        }
        let _ = writeln!(io::stderr().lock(), "refract: replay: {path}: {e}");
        return 1;
    }
    let _ = writeln!(io::stderr().lock(), "{}", format_summary(&summary));
    0
}

/// The one-line summary printed on stderr.
pub fn format_summary(s: &Summary) -> String {
    let mut out = format!(
        "replay: {} lines, {} counted, {} skipped",
        s.lines,
        s.counted,
        s.skipped_total()
    );
    let parts: Vec<String> = Skip::ALL
        .iter()
        .filter(|k| s.skipped[k.index()] > 0)
        .map(|k| format!("{} {}", k.name(), s.skipped[k.index()]))
        .collect();
    if !parts.is_empty() {
        out.push_str(&format!(" ({})", parts.join(", ")));
    }
    out.push_str(&format!(", {} users, {} bans", s.users, s.bans));
    out
}
