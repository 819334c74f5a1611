//! Process helpers: whether a descriptor is a terminal (the logger's
//! choice between stderr and syslog) and sending a signal (tests and
//! scripts that drive the daemon).

use std::io;

/// Whether `fd` is a terminal (`isatty(3)`).
pub fn isatty(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: isatty only inspects the descriptor, which `BorrowedFd`
    // guarantees is open for the duration of the call.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// Sends `sig` to process `pid` (`kill(2)`); for tests and scripts that
/// drive the daemon.
pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
