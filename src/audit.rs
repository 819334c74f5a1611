//! The audit log (`--block.log`, and `replay`'s stdout): its line format,
//! byte-compatible with refract 0.2 so existing greps and fail2ban filters
//! keep matching, and [`AuditLog`], the file the daemon appends it to.
//!
//! `YYYY/MM/DD HH:MM:SS disallowed concurrent connection from KEY w/ origin KEY[,KEY…] [TAG] email: USER`
//!
//! `TAG` is what refract 0.2 printed: the text between the access line's
//! first `[` and the first `]` after it (the whole detour, `vless-in >>
//! direct`), or `unknown` ([`crate::accesslog::Access::audit_tag`]).
//!
//! [`write_line`] is pure (the time is passed in). [`AuditLog`] writes each
//! line with one unbuffered `write(2)` on an `O_APPEND` file, so a line is
//! whole in the page cache when the ban goes to the kernel, and a crash
//! loses nothing already decided.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::clock::localtime_now;
use crate::clock::Timestamp;
use crate::policy::Ban;

const DISALLOWED: &[u8] = b"disallowed concurrent connection from ";

/// Appends the audit line for `ban` decided at `ts` (without the newline) to
/// `out`. Invalid UTF-8 in the tag or user is written as it came.
pub fn write_line(out: &mut Vec<u8>, ts: Timestamp, ban: &Ban) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{ts} disallowed concurrent connection from {} w/ origin ",
        ban.key
    );
    for (i, k) in ban.origins.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{k}");
    }
    out.extend_from_slice(b" [");
    out.extend_from_slice(&ban.tag);
    out.extend_from_slice(b"] email: ");
    out.extend_from_slice(&ban.user);
}

/// The audit log (`--block.log`): append-only, created `0640`, reopened on
/// SIGHUP or when found rotated away (checked with one `stat` per ban).
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    buf: Vec<u8>,
    /// `--dry-run`: lines say nothing was banned ([`DRY_RUN_PREFIX`]).
    dry_run: bool,
}

/// What a `--dry-run` daemon writes before the rest of each audit line,
/// instead of `disallowed`: `… dry run, not banned: concurrent connection
/// from KEY w/ origin …`. refract 0.2's greps and fail2ban filters look
/// for `disallowed concurrent connection from`, so they never take a dry
/// run's decision for a ban; a person reading the line sees why.
pub const DRY_RUN_PREFIX: &str = "dry run, not banned: concurrent connection from ";

impl AuditLog {
    /// Opens (creating it and its directory if needed) the audit log.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let mut a = AuditLog {
            path: path.to_path_buf(),
            file: None,
            buf: Vec::with_capacity(256),
            dry_run: false,
        };
        a.reopen()?;
        Ok(a)
    }

    /// Opens the path again (SIGHUP, or after a rotation).
    pub fn reopen(&mut self) -> io::Result<()> {
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

    /// Appends the line for `ban`, stamped with the local time now.
    pub fn write(&mut self, ban: &Ban) -> io::Result<()> {
        let dry_run = self.dry_run;
        self.append(|buf| {
            write_line(buf, localtime_now(), ban);
            if dry_run {
                let at = buf
                    .windows(DISALLOWED.len())
                    .position(|w| w == DISALLOWED)
                    .expect("write_line writes it");
                buf.splice(at..at + DISALLOWED.len(), DRY_RUN_PREFIX.bytes());
            }
        })
    }

    /// Writes the line `fill` puts into the buffer, and a newline, with one
    /// `write(2)`, reopening the file first if it was rotated away.
    fn append(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        if self.rotated_away() {
            self.reopen()?;
        }
        self.buf.clear();
        fill(&mut self.buf);
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

    /// `--dry-run`: every later line says that nothing was banned.
    pub fn set_dry_run(&mut self, on: bool) {
        self.dry_run = on;
    }

    /// Appends `YYYY/MM/DD HH:MM:SS TEXT`: what an operator did by hand
    /// (`refract ban`/`unban`). Worded so that refract 0.2's greps and
    /// fail2ban filters, which match `disallowed concurrent connection`,
    /// never count it as a violation.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        self.append(|buf| {
            let _ = write!(buf, "{} {text}", localtime_now());
        })
    }

    /// Flushes the file (at exit; a no-op for an unbuffered `File`, kept so
    /// the exit path does not depend on that).
    pub fn flush(&mut self) {
        if let Some((f, _)) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Civil;
    use crate::key::Key;

    #[test]
    fn matches_refract_0_2() {
        let ts = Timestamp::from_civil(
            Civil {
                year: 2026,
                month: 11,
                day: 21,
                hour: 10,
                minute: 0,
                second: 4,
            },
            0,
        )
        .unwrap();
        let ban = Ban {
            key: Key::V4("192.0.2.44".parse().unwrap()),
            user: b"alice@example.com"[..].into(),
            origins: vec![
                Key::V4("198.51.100.23".parse().unwrap()),
                Key::new("2001:db8:5:6::a".parse().unwrap(), 64),
            ],
            tag: b"vless-in >> direct"[..].into(),
            until: 0,
        };
        let mut out = Vec::new();
        write_line(&mut out, ts, &ban);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026/11/21 10:00:04 disallowed concurrent connection from 192.0.2.44 \
             w/ origin 198.51.100.23,2001:db8:5:6::/64 [vless-in >> direct] email: alice@example.com"
        );
    }

    #[test]
    fn a_dry_run_line_never_reads_as_a_ban() {
        let dir = std::env::temp_dir().join(format!("refract-audit-dry-{}", std::process::id()));
        let path = dir.join("block.log");
        let mut log = AuditLog::open(&path).unwrap();
        log.set_dry_run(true);
        let ban = Ban {
            key: Key::V4("192.0.2.44".parse().unwrap()),
            user: b"alice"[..].into(),
            origins: vec![Key::V4("198.51.100.23".parse().unwrap())],
            tag: b"vless-in >> direct"[..].into(),
            until: 0,
        };
        log.write(&ban).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!text.contains("disallowed"), "{text}");
        assert!(
            text.trim_end().ends_with(
                " dry run, not banned: concurrent connection from 192.0.2.44 w/ origin \
                 198.51.100.23 [vless-in >> direct] email: alice"
            ),
            "{text}"
        );
    }
}
