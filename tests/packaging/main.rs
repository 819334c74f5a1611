//! Tests of what ships besides the binary, as CI can check it on this
//! machine: the systemd unit, the shell scripts, the installer, the Debian
//! package, the container and Alpine files, and the README's demo.

#[path = "../support/mod.rs"]
mod support;

/// `systemd-analyze verify`, `sh -n`/`bash -n` and shellcheck,
/// `scripts/install.sh` in a DESTDIR, `scripts/build-deb.sh`, static
/// checks of the Dockerfile and APKBUILD, and `scripts/demo.sh` (root).
mod checks;

/// The man page against the binary's flags, the bash completion driven in
/// a bash subprocess, the logrotate file through `logrotate -d`.
mod docs;

/// The hook scripts (`packaging/hooks/`) against a local receiver: the
/// webhook's signature, retries and replay protection; the daemon's ban
/// delivered through it; the Telegram notifier's coalescing.
mod hooks;
