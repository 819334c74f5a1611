//! Process helpers: whether a descriptor is a terminal (the logger's
//! choice between stderr and syslog) and sending a signal (tests and
//! scripts that drive the daemon), and the uid of a unix socket peer (the
//! control socket logs who changed what).

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

/// The user id of the process at the other end of a connected unix socket
/// (`SO_PEERCRED`, `unix(7)`: the credentials it had at `connect`).
pub fn peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given;
    // the descriptor is open (`BorrowedFd`).
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(cred.uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A pidfd for child `pid` (`pidfd_open(2)`, Linux 5.3+): readable once
/// the process has exited, so the loop reaps children by readiness, not by
/// signal. `ENOSYS` on older kernels (the caller then polls).
pub fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags, no pointers; a negative
    // return is an error. The descriptor is new and ours (close-on-exec by
    // definition of pidfd_open).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}
