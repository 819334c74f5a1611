//! The log follower: hands every complete line appended to the access log to
//! a callback, exactly once, across rotation, truncation and recreation.
//!
//! # How it watches
//!
//! One inotify instance watches the log's *directory* (`IN_CREATE`,
//! `IN_MOVED_TO`, `IN_MOVED_FROM`, `IN_DELETE`, filtered by the file's name)
//! and every *inode* being followed (`IN_MODIFY`, `IN_ATTRIB`,
//! `IN_MOVE_SELF`, `IN_DELETE_SELF`; inotify watches follow the inode, so a
//! renamed file keeps reporting writes). Events are only a hint: after
//! draining them the follower re-derives everything from `fstat`/`stat`
//! ([`Tail::pump`]), so coalesced events or a queue overflow lose nothing.
//!
//! # Invariants
//!
//! - Each followed file has an offset: every byte below it was handed out
//!   (as part of a complete line) or is held as the partial last line.
//! - `fstat` before every read; a size below the offset is a truncation
//!   (copy-truncate, 3x-ui's hourly truncation, `: > access.log`): restart
//!   at 0 and drop the partial line, which will never be completed. A file
//!   truncated and written past the old offset before the follower looks
//!   has the same or a larger size, so the last [`SIG_LEN`] bytes read are
//!   remembered and compared (one small `pread`) before reading on.
//! - The path's inode is compared after the known files are read to their
//!   end. A different inode (logrotate `create`, a new file after deletion,
//!   `mv other access.log`) becomes the current file, read from offset 0;
//!   the previous one stays followed as *rotated*: Xray keeps writing to the
//!   old inode until it closes it after about a minute idle
//!   ([`crate::accesslog`], "The log as a stream"), so those lines are not
//!   lost either.
//!   A rotated file is closed when it has been read to its end and is either
//!   unlinked (`st_nlink == 0`), idle for [`ROTATED_GRACE`], or pushed out
//!   by [`MAX_ROTATED`] newer ones; an unlinked current file is closed the
//!   same way, so deleting a big log frees its space. When a file is
//!   closed, a last line without its newline is handed out.
//! - Lines longer than `max_line` are counted and skipped up to their
//!   newline, never buffered whole ([`crate::lines::Lines`]).
//! - Memory is bounded: no read is larger than [`WINDOW`], and one
//!   [`Tail::pump`] reads at most [`STEP`] bytes before returning
//!   [`Progress::More`], so a 1 GiB backlog neither grows the process nor
//!   starves signals and timers.
//! - Starting: the current file is read from its end (refract 0.2's
//!   behaviour; if that end is in the middle of a line being written, the
//!   rest of that line is dropped, not handed out as a line) unless
//!   `from_start`; a file that appears later is read from its beginning.
//!   Xray's reopen-after-idle opens the same inode: nothing changes.
//!
//! - The directory watch dies with the directory (`rm -rf` of the log
//!   directory, a package purge): the follower then retries watching the
//!   path's directory once per [`REWATCH_RETRY`] until it exists again
//!   (the only periodic wakeup, and only in that state), and picks up the
//!   log created in it.
//! - A log that cannot be opened (`EACCES`: rotated to a file refract's
//!   user may not read) is one error, not one per event; the directory
//!   watch includes `IN_ATTRIB`, so the `chmod`/`chown` that fixes it is
//!   noticed at once and the file is read from its start.
//!
//! # Known limits
//!
//! - A file created *and* renamed away before the follower first opened it
//!   (microseconds apart) is never seen; real rotations are hours apart.
//! - copytruncate loses, by its nature, lines written between the copy and
//!   the truncation (they are in the copy only).
//! - Writes into a deleted file after it was closed are lost; a writer
//!   keeping a deleted log open is a misconfiguration the space leak would
//!   show anyway.
//! - If the path is a symlink, events in the target's directory are not
//!   watched; writes to the followed inode still are.
//!
//! # SIGBUS
//!
//! Touching a page of a shared file mapping that lies past the file's
//! current end raises SIGBUS, and another process may truncate the log at
//! any moment. The follower contains this three ways: it `fstat`s before
//! every window and maps only `[offset, size)` of the size just seen; the
//! map lives only while one window is scanned (lines are handed to the
//! callback, which parses them at once, and the map is dropped before the
//! next `fstat`); and increments up to [`PREAD_MAX`] — the steady state of
//! a live log, where the follower reads within microseconds of the writer
//! and a truncation is most likely to coincide — are read with `pread`
//! into a reused buffer instead of being mapped, which cannot fault (a
//! concurrent truncation shows up as a short read). What remains is a
//! truncation landing during the scan of one large window (catching up on
//! more than 64 KiB at once: `--from-start`, or a burst while the loop was
//! busy): a race of a few milliseconds per window, accepted because
//! `pread` for those sizes would copy every byte of a backlog the design
//! wants mapped, and systemd restarts a crashed refract, which then reads
//! its bans back from the kernel.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use inotify::{Inotify, WatchDescriptor, WatchMask};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::clock::{Micros, SECOND};
use crate::lines::Lines;

/// Largest mapped window.
pub const WINDOW: usize = 16 << 20;
/// Increments up to this size are read with `pread` (see the module doc).
pub const PREAD_MAX: usize = 64 << 10;
/// Bytes read per [`Tail::pump`] before yielding to the loop. Small enough
/// that one turn of a backlog (about 1,000 lines, each possibly a ban with
/// its syscalls) stays well under the 100 ms the loop promises for signals
/// (`tests/bounds_bans.rs`); a turn costs one `epoll_wait` and an `fstat`,
/// noise next to parsing 256 KiB.
pub const STEP: u64 = 256 << 10;
/// A rotated file idle this long is closed (Xray closes its log after about
/// a minute without writes and reopens the path).
pub const ROTATED_GRACE: Micros = 120 * SECOND;
/// Bytes remembered below the offset to recognise a rewritten file.
pub const SIG_LEN: usize = 32;
/// Rotated files followed at most; older ones are closed.
pub const MAX_ROTATED: usize = 2;
/// While the log's directory is missing, how often to try watching it.
pub const REWATCH_RETRY: Micros = SECOND;

/// What the follower counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Complete lines handed out.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines longer than `max_line`, skipped.
    pub too_long: u64,
    /// A new inode picked up at the path after the first one.
    pub rotations: u64,
    /// A followed file found shorter than what was read.
    pub truncations: u64,
    /// Failed reads, stats or watches (logged by the caller).
    pub errors: u64,
}

/// Whether [`Tail::pump`] stopped with bytes left to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    More,
}

#[derive(Debug)]
struct Followed {
    file: File,
    wd: Option<WatchDescriptor>,
    id: (u64, u64),
    offset: u64,
    lines: Lines,
    /// The last up to [`SIG_LEN`] bytes below `offset`, to notice a file
    /// truncated and refilled past `offset` between two looks.
    sig: Vec<u8>,
    /// Started at the end of a file whose last line had no newline yet:
    /// the first line handed out would be its tail, not a line.
    mid_line: bool,
    /// Last time bytes were read (or the file was picked up).
    active: Micros,
}

/// The follower of one path.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    name: OsString,
    max_line: usize,
    inotify: Inotify,
    dir: PathBuf,
    dir_wd: WatchDescriptor,
    /// The directory watch is gone (`IN_IGNORED`: the directory was
    /// removed); retry at this time.
    rewatch_at: Option<Micros>,
    /// The last error opening or stating the path, reported once until the
    /// path can be opened again.
    path_error: Option<String>,
    current: Option<Followed>,
    rotated: Vec<Followed>,
    opened_once: bool,
    more: bool,
    buf: Vec<u8>,
    events: Vec<u8>,
    stats: TailStats,
    /// The last error, for the caller to log once (taken by `take_error`).
    error: Option<String>,
}

const FILE_MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DELETE_SELF);
const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::ONLYDIR);

impl Tail {
    /// Starts following `path`; its directory must exist, the file need not.
    /// Call [`Tail::pump`] once after registering to read what `from_start`
    /// asks for.
    pub fn open(path: &Path, from_start: bool, max_line: usize) -> io::Result<Tail> {
        let name = path
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("tail: {}: not a file path", path.display()),
                )
            })?
            .to_owned();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let inotify =
            Inotify::init().map_err(|e| io::Error::new(e.kind(), format!("tail: inotify: {e}")))?;
        let dir_wd = inotify
            .watches()
            .add(&dir, DIR_MASK)
            .map_err(|e| io::Error::new(e.kind(), format!("tail: watch {}: {e}", dir.display())))?;
        let mut tail = Tail {
            path: path.to_path_buf(),
            name,
            max_line,
            inotify,
            dir,
            dir_wd,
            rewatch_at: None,
            path_error: None,
            current: None,
            rotated: Vec::new(),
            opened_once: false,
            more: from_start,
            buf: Vec::new(),
            events: vec![0; 4096],
            stats: TailStats::default(),
            error: None,
        };
        match File::open(path) {
            Ok(file) => {
                let mut f = tail.follow(file, 0)?;
                if !from_start {
                    f.offset = f.file.metadata()?.len();
                    let n = (f.offset as usize).min(SIG_LEN);
                    f.sig.resize(n, 0);
                    if f.file
                        .read_exact_at(&mut f.sig, f.offset - n as u64)
                        .is_err()
                    {
                        f.sig.clear();
                    }
                    f.mid_line = f.sig.last().is_some_and(|&b| b != b'\n');
                }
                tail.current = Some(f);
                tail.opened_once = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("tail: open {}: {e}", path.display()),
                ))
            }
        }
        Ok(tail)
    }

    fn follow(&mut self, file: File, now: Micros) -> io::Result<Followed> {
        let meta = file.metadata()?;
        // Watch the inode we opened, not whatever the path names by now.
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let wd = match self.inotify.watches().add(&proc_path, FILE_MASK) {
            Ok(wd) => Some(wd),
            // No /proc: the path, which names the same inode unless it was
            // replaced in the last microseconds (then a directory event
            // follows and the new file is picked up).
            Err(_) => match self.inotify.watches().add(&self.path, FILE_MASK) {
                Ok(wd) => Some(wd),
                Err(e) => {
                    // ENOSPC: fs.inotify.max_user_watches is exhausted.
                    // Writes are then noticed only with the next directory
                    // event: say so loudly.
                    self.fail(format!(
                        "tail: watch {}: {e}; new lines are read late \
                         (raise fs.inotify.max_user_watches)",
                        self.path.display()
                    ));
                    None
                }
            },
        };
        Ok(Followed {
            file,
            wd,
            id: (meta.dev(), meta.ino()),
            offset: 0,
            lines: Lines::new(self.max_line),
            sig: Vec::new(),
            mid_line: false,
            active: now,
        })
    }

    /// Registers the inotify fd with the loop (readable, edge-triggered).
    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.inotify.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    pub fn stats(&self) -> &TailStats {
        &self.stats
    }

    /// The path being followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a file is open at the path (for the startup message).
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Whether the last [`Tail::pump`] left bytes unread.
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// The last error met (a failed read or stat), once.
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    /// The inotify fd is readable: drains its events to `WouldBlock`, then
    /// reads whatever is new, calling `f` per complete line.
    pub fn on_event(&mut self, now: Micros, f: &mut impl FnMut(&[u8])) -> Progress {
        let mut relevant = false;
        loop {
            match self.inotify.read_events(&mut self.events) {
                Ok(events) => {
                    let mut any = false;
                    for ev in events {
                        any = true;
                        if ev.wd == self.dir_wd && ev.mask.contains(inotify::EventMask::IGNORED) {
                            // The directory is gone: watch it again (in
                            // pump) once it is back.
                            self.rewatch_at = Some(now);
                        }
                        // Directory events about other files (error.log,
                        // rotated siblings) are not ours.
                        if ev.wd != self.dir_wd
                            || ev.name.map_or(true, |n| n == self.name.as_os_str())
                            || ev.mask.contains(inotify::EventMask::Q_OVERFLOW)
                        {
                            relevant = true;
                        }
                    }
                    if !any {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(format!("tail: inotify read: {e}"));
                    relevant = true;
                    break;
                }
            }
        }
        if relevant || self.more {
            self.pump(now, f)
        } else {
            Progress::Done
        }
    }

    fn fail(&mut self, msg: String) {
        self.stats.errors += 1;
        self.error = Some(msg);
    }

    /// Reads everything new (up to [`STEP`] bytes), checks the path for a
    /// new inode and closes finished rotated files. Idempotent: with nothing
    /// new it costs two `fstat`s and one `stat`.
    pub fn pump(&mut self, now: Micros, f: &mut impl FnMut(&[u8])) -> Progress {
        self.rewatch(now);
        let mut budget = STEP;
        let mut more = false;
        // Older lines first: rotated files, oldest first, then the current.
        for i in 0..self.rotated.len() {
            more |= self.drain(Slot::Rotated(i), now, &mut budget, f);
        }
        if self.current.is_some() {
            more |= self.drain(Slot::Current, now, &mut budget, f);
        }
        if !more {
            self.check_path(now, &mut budget, f, &mut more);
        }
        if !more {
            self.retire(now, false, f);
        }
        self.more = more;
        if more {
            Progress::More
        } else {
            Progress::Done
        }
    }

    /// When a rotated file will have been idle for [`ROTATED_GRACE`], or
    /// the next try to watch a directory that was removed.
    pub fn next_deadline(&self) -> Option<Micros> {
        let idle = self.rotated.iter().map(|r| r.active + ROTATED_GRACE).min();
        match (idle, self.rewatch_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Watches the directory again after it was removed, once it exists.
    fn rewatch(&mut self, now: Micros) {
        if !self.rewatch_at.is_some_and(|t| t <= now) {
            return;
        }
        match self.inotify.watches().add(&self.dir, DIR_MASK) {
            Ok(wd) => {
                self.dir_wd = wd;
                self.rewatch_at = None;
                if self.path_error.take().is_some() {
                    crate::logger::notice(format_args!(
                        "tail: directory {} is back",
                        self.dir.display()
                    ));
                }
            }
            Err(e) => {
                let msg = if e.kind() == io::ErrorKind::NotFound {
                    format!(
                        "tail: directory {} was removed; following {} again once it is back",
                        self.dir.display(),
                        self.path.display()
                    )
                } else {
                    format!("tail: watch {}: {e}", self.dir.display())
                };
                self.fail_path(msg);
                self.rewatch_at = Some(now + REWATCH_RETRY);
            }
        }
    }

    /// Reports an error about the path once, until the path works again.
    fn fail_path(&mut self, msg: String) {
        if self.path_error.as_ref() == Some(&msg) {
            self.stats.errors += 1;
            return;
        }
        self.fail(msg.clone());
        self.path_error = Some(msg);
    }

    /// Closes rotated files idle since [`ROTATED_GRACE`] (after reading
    /// them to their end).
    pub fn expire(&mut self, now: Micros, f: &mut impl FnMut(&[u8])) {
        if self.pump(now, f) == Progress::Done {
            self.retire(now, true, f);
        }
    }

    fn slot(&mut self, s: Slot) -> &mut Followed {
        match s {
            Slot::Current => self.current.as_mut().expect("slot exists"),
            Slot::Rotated(i) => &mut self.rotated[i],
        }
    }

    /// Reads one followed file towards its end; `true` when the budget ran
    /// out first.
    fn drain(&mut self, s: Slot, now: Micros, budget: &mut u64, f: &mut impl FnMut(&[u8])) -> bool {
        let max_line = self.max_line;
        loop {
            let fol = self.slot(s);
            let size = match fol.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    self.fail(format!("tail: fstat {}: {e}", self.path.display()));
                    return false;
                }
            };
            if size < fol.offset || !fol.same_prefix() {
                fol.offset = 0;
                fol.sig.clear();
                fol.mid_line = false;
                fol.lines = Lines::new(max_line);
                self.stats.truncations += 1;
                let path = self.path.display().to_string();
                crate::logger::notice(format_args!(
                    "tail: {path} was truncated; reading it from its start {}",
                    crate::logger::kv(&[("event", "truncation"), ("path", &path)])
                ));
                continue;
            }
            if size == fol.offset {
                return false;
            }
            if *budget == 0 {
                return true;
            }
            let len = (size - fol.offset).min(WINDOW as u64).min(*budget) as usize;
            let mut buf = std::mem::take(&mut self.buf);
            let stats = &mut self.stats;
            let fol = match s {
                Slot::Current => self.current.as_mut().expect("slot exists"),
                Slot::Rotated(i) => &mut self.rotated[i],
            };
            let (lines, sig, mid_line) = (&mut fol.lines, &mut fol.sig, &mut fol.mid_line);
            let r = read_window(&fol.file, fol.offset, len, &mut buf, &mut |chunk| {
                let tail = &chunk[chunk.len().saturating_sub(SIG_LEN)..];
                sig.extend_from_slice(tail);
                let excess = sig.len().saturating_sub(SIG_LEN);
                sig.drain(..excess);
                lines.feed(chunk, &mut |line| match line {
                    // The rest of a line that began before we started.
                    _ if std::mem::take(mid_line) => {}
                    Ok(l) => {
                        stats.lines += 1;
                        f(l)
                    }
                    Err(_) => stats.too_long += 1,
                })
            });
            self.buf = buf;
            match r {
                Ok(0) => return false,
                Ok(n) => {
                    let fol = self.slot(s);
                    fol.offset += n as u64;
                    fol.active = now;
                    self.stats.bytes += n as u64;
                    *budget = budget.saturating_sub(n as u64);
                }
                Err(e) => {
                    self.fail(format!("tail: read {}: {e}", self.path.display()));
                    return false;
                }
            }
        }
    }

    fn check_path(
        &mut self,
        now: Micros,
        budget: &mut u64,
        f: &mut impl FnMut(&[u8]),
        more: &mut bool,
    ) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                self.fail_path(format!("tail: stat {}: {e}", self.path.display()));
                return;
            }
        };
        let id = (meta.dev(), meta.ino());
        if self.current.as_ref().is_some_and(|c| c.id == id) {
            return;
        }
        let file = match File::open(&self.path) {
            Ok(file) => file,
            // Gone again between stat and open: the next event tells.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                self.fail_path(format!("tail: open {}: {e}", self.path.display()));
                return;
            }
        };
        if self.path_error.take().is_some() {
            crate::logger::notice(format_args!(
                "tail: {} can be read again",
                self.path.display()
            ));
        }
        let new = match self.follow(file, now) {
            Ok(n) => n,
            Err(e) => {
                self.fail(format!("tail: fstat {}: {e}", self.path.display()));
                return;
            }
        };
        if self.current.as_ref().is_some_and(|c| c.id == new.id) {
            return;
        }
        if let Some(mut old) = self.current.take() {
            // The grace period runs from the rotation: a writer that still
            // holds the old inode gets it in full.
            old.active = now;
            self.rotated.push(old);
        }
        if self.opened_once {
            self.stats.rotations += 1;
            let path = self.path.display().to_string();
            crate::logger::notice(format_args!(
                "tail: {path} was replaced (rotated or recreated); following the new file {}",
                crate::logger::kv(&[("event", "rotation"), ("path", &path)])
            ));
        }
        self.opened_once = true;
        self.current = Some(new);
        *more |= self.drain(Slot::Current, now, budget, f);
    }

    /// Closes files that are read to their end and finished: unlinked, or
    /// (rotated only) idle past the grace period when `idle` is set, or
    /// beyond [`MAX_ROTATED`].
    fn retire(&mut self, now: Micros, idle: bool, f: &mut impl FnMut(&[u8])) {
        let unlinked = |fol: &Followed| fol.file.metadata().map(|m| m.nlink() == 0).unwrap_or(true);
        let mut i = 0;
        while i < self.rotated.len() {
            let r = &self.rotated[i];
            let done = unlinked(r)
                || (idle && now >= r.active + ROTATED_GRACE)
                || self.rotated.len() - i > MAX_ROTATED;
            if done {
                let r = self.rotated.remove(i);
                self.close(r, f);
            } else {
                i += 1;
            }
        }
        if self.current.as_ref().is_some_and(unlinked) {
            let c = self.current.take().expect("checked");
            self.close(c, f);
        }
    }

    fn close(&mut self, mut fol: Followed, f: &mut impl FnMut(&[u8])) {
        let stats = &mut self.stats;
        fol.lines.finish(&mut |line| {
            if let Ok(l) = line {
                stats.lines += 1;
                f(l)
            }
        });
        if let Some(wd) = fol.wd.take() {
            // Fails with EINVAL when the kernel already dropped the watch
            // (inode freed); nothing to do then.
            let _ = self.inotify.watches().remove(wd);
        }
    }
}

impl Followed {
    /// Whether the bytes just below `offset` are still the ones read there.
    /// A mismatch means the file was truncated and written past `offset`
    /// again before the follower looked (3x-ui truncates hourly; Xray may
    /// write the next line at once); the size alone cannot tell that.
    fn same_prefix(&self) -> bool {
        if self.sig.is_empty() {
            return true;
        }
        let mut now = [0u8; SIG_LEN];
        let now = &mut now[..self.sig.len()];
        let at = self.offset - self.sig.len() as u64;
        match self.file.read_exact_at(now, at) {
            Ok(()) => now == &self.sig[..],
            // Shrunk under us: the size check on the next round sees it.
            Err(_) => true,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Current,
    Rotated(usize),
}

/// Hands `[offset, offset + len)` of `file` to `feed` in one piece and
/// returns the bytes consumed (fewer than `len` only when the file shrank
/// under a `pread`). Small increments are `pread` into `buf`, large ones
/// mapped (see the module doc on SIGBUS). `len` must be at most the size
/// just `fstat`ed minus `offset`.
fn read_window(
    file: &File,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
    feed: &mut impl FnMut(&[u8]),
) -> io::Result<usize> {
    if len <= PREAD_MAX {
        buf.resize(len, 0);
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        feed(&buf[..got]);
        // Keep the buffer for the next increment, but never more than
        // PREAD_MAX of it.
        buf.truncate(0);
        return Ok(got);
    }
    let map = crate::sys::mmap::map_window(file, offset, len)?;
    feed(&map);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("refract-tail-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn append(p: &Path, s: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn collect(t: &mut Tail, out: &mut Vec<String>) {
        let mut f = |l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        while t.on_event(1, &mut f) == Progress::More {}
    }

    #[test]
    fn starts_at_end_and_carries_partial_lines() {
        let d = TempDir::new("end");
        let p = d.0.join("access.log");
        append(&p, "old 1\nold 2\n");
        let mut t = Tail::open(&p, false, 100).unwrap();
        let mut out = Vec::new();
        collect(&mut t, &mut out);
        assert!(out.is_empty());
        append(&p, "new 1\nnew ");
        collect(&mut t, &mut out);
        assert_eq!(out, ["new 1"]);
        append(&p, "2\n");
        collect(&mut t, &mut out);
        assert_eq!(out, ["new 1", "new 2"]);
        assert_eq!(t.stats().lines, 2);
    }

    #[test]
    fn starting_mid_line_skips_the_rest_of_that_line() {
        let d = TempDir::new("midline");
        let p = d.0.join("access.log");
        append(&p, "old 1\nold 2 is being writ");
        let mut t = Tail::open(&p, false, 100).unwrap();
        append(&p, "ten\nnew 1\n");
        let mut out = Vec::new();
        collect(&mut t, &mut out);
        assert_eq!(out, ["new 1"]);
    }

    #[test]
    fn from_start_reads_existing() {
        let d = TempDir::new("start");
        let p = d.0.join("access.log");
        append(&p, "a\nb\n");
        let mut t = Tail::open(&p, true, 100).unwrap();
        let mut out = Vec::new();
        let mut f = |l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        while t.pump(1, &mut f) == Progress::More {}
        assert_eq!(out, ["a", "b"]);
    }

    #[test]
    fn too_long_lines_are_counted_and_skipped() {
        let d = TempDir::new("long");
        let p = d.0.join("access.log");
        let mut t = Tail::open(&p, false, 10).unwrap();
        append(&p, "short\n");
        append(&p, &"x".repeat(25));
        append(&p, &"y".repeat(25));
        append(&p, "z\nok\n");
        let mut out = Vec::new();
        collect(&mut t, &mut out);
        assert_eq!(out, ["short", "ok"]);
        assert_eq!(t.stats().too_long, 1);
    }

    #[test]
    fn rotation_truncation_deletion() {
        let d = TempDir::new("rot");
        let p = d.0.join("access.log");
        let mut t = Tail::open(&p, false, 100).unwrap();
        let mut out = Vec::new();
        append(&p, "1\n2\n");
        collect(&mut t, &mut out);
        // logrotate create; the writer still appends to the old inode.
        std::fs::rename(&p, d.0.join("access.log.1")).unwrap();
        append(&d.0.join("access.log.1"), "3\n");
        append(&p, "4\n");
        collect(&mut t, &mut out);
        append(&d.0.join("access.log.1"), "5\n");
        collect(&mut t, &mut out);
        // truncation in place
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&p, "6\n");
        collect(&mut t, &mut out);
        // deletion and recreation
        std::fs::remove_file(&p).unwrap();
        collect(&mut t, &mut out);
        append(&p, "7\n");
        collect(&mut t, &mut out);
        out.sort();
        assert_eq!(out, ["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(t.stats().rotations, 2);
        assert_eq!(t.stats().truncations, 1);
        // The unlinked rotated file was closed once read; the renamed one is
        // still followed until idle.
        t.expire(ROTATED_GRACE + 10, &mut |_| {});
        assert!(t.rotated.is_empty());
    }

    #[test]
    fn rotated_file_is_followed_until_idle_then_closed() {
        let d = TempDir::new("grace");
        let p = d.0.join("access.log");
        let old = d.0.join("access.log.1");
        append(&p, "");
        let mut t = Tail::open(&p, false, 100).unwrap();
        std::fs::rename(&p, &old).unwrap();
        append(&p, "new\n");
        let mut out = Vec::new();
        let mut f = |l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        t.on_event(1_000, &mut f);
        assert_eq!(t.next_deadline(), Some(1_000 + ROTATED_GRACE));
        // The writer still holds the old inode: read, and the grace restarts.
        append(&old, "late\nno newline");
        t.on_event(2_000, &mut f);
        assert_eq!(t.next_deadline(), Some(2_000 + ROTATED_GRACE));
        t.expire(2_000 + ROTATED_GRACE - 1, &mut f);
        assert_eq!(t.rotated.len(), 1);
        // Idle past the grace: closed, and its unterminated last line counts.
        t.expire(2_000 + ROTATED_GRACE, &mut f);
        assert!(t.rotated.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert_eq!(out, ["new", "late", "no newline"]);
    }

    #[test]
    fn removed_directory_is_watched_again_when_it_comes_back() {
        let d = TempDir::new("rmdir");
        let sub = d.0.join("xray");
        std::fs::create_dir(&sub).unwrap();
        let p = sub.join("access.log");
        let mut t = Tail::open(&p, false, 100).unwrap();
        let mut out = Vec::new();
        append(&p, "1\n");
        collect(&mut t, &mut out);
        std::fs::remove_dir_all(&sub).unwrap();
        collect(&mut t, &mut out);
        // The open log pinned the directory's inode: its IN_IGNORED comes
        // once the log is closed (the loop sees the fd readable again).
        collect(&mut t, &mut out);
        // Gone: one retry per REWATCH_RETRY, nothing else wakes us.
        assert!(!t.is_open());
        assert_eq!(t.next_deadline(), Some(1 + REWATCH_RETRY));
        std::fs::create_dir(&sub).unwrap();
        append(&p, "2\n");
        t.expire(1 + REWATCH_RETRY, &mut |l| {
            out.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(t.next_deadline(), None);
        // Watched again: a file created later in it is picked up by event.
        std::fs::remove_file(&p).unwrap();
        collect(&mut t, &mut out);
        append(&p, "3\n");
        collect(&mut t, &mut out);
        assert_eq!(out, ["1", "2", "3"]);
    }

    #[test]
    fn missing_file_is_picked_up_when_created() {
        let d = TempDir::new("missing");
        let p = d.0.join("access.log");
        let mut t = Tail::open(&p, false, 100).unwrap();
        assert!(!t.is_open());
        append(&p, "first\n");
        let mut out = Vec::new();
        collect(&mut t, &mut out);
        assert_eq!(out, ["first"]);
        assert_eq!(t.stats().rotations, 0);
    }
}
