//! Netlink sockets at the syscall level: create and bind, socket options,
//! send and receive on a non-blocking `AF_NETLINK` socket, and `setns(2)`
//! into a network namespace (tests create sockets inside their namespaces).
//!
//! Everything returns `io::Result` with the errno of the failing call;
//! callers add the subsystem prefix. Sockets are always `SOCK_CLOEXEC |
//! SOCK_NONBLOCK` and owned by an [`OwnedFd`], so they close exactly once.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `setsockopt` level (`/usr/include/linux/socket.h`).
pub const SOL_NETLINK: i32 = 270;

// ---- socket options, /usr/include/linux/netlink.h ----

/// Joins a multicast group.
pub const NETLINK_ADD_MEMBERSHIP: i32 = 1;
pub const NETLINK_CAP_ACK: i32 = 10;
pub const NETLINK_EXT_ACK: i32 = 11;
pub const NETLINK_GET_STRICT_CHK: i32 = 12;

/// Opens an `AF_NETLINK` raw socket for `protocol` (`NETLINK_NETFILTER`,
/// `NETLINK_SOCK_DIAG`, …) and binds it with `nl_pid = 0`, so the kernel
/// assigns a unique port id (`netlink(7)`).
pub fn netlink_socket(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a negative return is an error.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own and nobody else has seen.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value
    // (family set below, pid 0 = let the kernel choose, no groups).
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a live sockaddr_nl and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The port id the kernel gave the socket at bind time (`getsockname(2)`
/// on a netlink socket returns its `sockaddr_nl`, `netlink(7)`):
/// notifications name the port id of the socket whose request caused them.
pub fn port_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are live locals; the kernel writes at most
    // `len` bytes into `addr`.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_nl).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.nl_pid)
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives across the call and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast::<libc::c_void>(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; the kernel writes at most
    // `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut i32).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

/// Sets the receive buffer to `bytes`: `SO_RCVBUFFORCE` first (root may go
/// past `net.core.rmem_max`, which matters for large dumps), else
/// `SO_RCVBUF` (clamped by the kernel). Returns what the kernel reports
/// (`socket(7)`: it doubles the value for bookkeeping overhead).
pub fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let v = i32::try_from(bytes).unwrap_or(i32::MAX);
    let raw = fd.as_raw_fd();
    if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, v)?;
    }
    Ok(getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF)?.max(0) as usize)
}

/// `NETLINK_ADD_MEMBERSHIP`: receive the multicast `group`'s
/// notifications (`netlink(7)`).
pub fn add_membership(fd: BorrowedFd<'_>, group: u32) -> io::Result<()> {
    let g = i32::try_from(group).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    setsockopt_int(fd.as_raw_fd(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g)
}

/// `NETLINK_EXT_ACK`: error messages carry the kernel's extended ack TLVs
/// (a message string, the offending attribute).
pub fn set_ext_ack(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt_int(fd.as_raw_fd(), SOL_NETLINK, NETLINK_EXT_ACK, i32::from(on))
}

/// `NETLINK_GET_STRICT_CHK`: the kernel rejects malformed dump requests
/// instead of ignoring unknown bits (only some families honour it).
pub fn set_strict_chk(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt_int(
        fd.as_raw_fd(),
        SOL_NETLINK,
        NETLINK_GET_STRICT_CHK,
        i32::from(on),
    )
}

/// Sends one datagram to the kernel (`nl_pid` 0). `WouldBlock` when the
/// socket's send queue is full.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sockaddr_nl all-zero is valid; family set below, pid 0 = kernel.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `buf` and `addr` are live for the call, lengths match them.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            (&addr as *const libc::sockaddr_nl).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The result of one [`recv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer (`MSG_TRUNC`): its tail is
    /// lost, so the caller must treat the datagram as incomplete.
    pub truncated: bool,
}

/// Receives one datagram without blocking (`MSG_DONTWAIT`). `WouldBlock`
/// when nothing is queued; `ENOBUFS` when the kernel dropped messages
/// because the receive buffer overflowed (`netlink(7)`).
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    // SAFETY: `hdr` points at `iov`, which points into `buf`; both outlive
    // the call and the kernel writes at most `buf.len()` bytes.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Received {
        len: (n as usize).min(buf.len()),
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// Waits until `fd` is readable or `timeout_ms` passes (`poll(2)`).
/// `Ok(false)` on timeout. Used only outside the loop (startup, shutdown,
/// tests); `EINTR` is reported as `Ok(false)` so callers re-check their
/// own deadline.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0)
}

/// Waits until any of `fds` is readable or `timeout_ms` passes; returns
/// how many are readable (0 on timeout or `EINTR`). Outside the loop only
/// (shutdown flush, tests). At most 8 descriptors.
pub fn poll_readable_any(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<usize> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 8];
    let n = fds.len().min(pfds.len());
    for (p, fd) in pfds.iter_mut().zip(fds) {
        p.fd = fd.as_raw_fd();
    }
    // SAFETY: `pfds` is a live array and `n` never exceeds its length.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}

/// Moves the calling thread into the network namespace `fd` refers to
/// (`setns(2)` with `CLONE_NEWNET`). Sockets created afterwards on this
/// thread live in that namespace. Tests call it on a dedicated thread.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag; no memory is shared.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling thread into a new, empty network namespace
/// (`unshare(2)` with `CLONE_NEWNET`; only this thread: the namespaces of
/// a task are its own). Needs `CAP_SYS_ADMIN`. `refract check` opens a
/// socket there and goes back with [`setns_net`]: the namespace lives as
/// long as the socket and vanishes with it, whatever the check did in it.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare takes a flag; no memory is shared.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn open_nonblocking_and_would_block() {
        let fd = match netlink_socket(libc::NETLINK_ROUTE) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("skip: no netlink socket: {e}");
                return;
            }
        };
        let mut buf = [0u8; 64];
        let e = recv(fd.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(!poll_readable(fd.as_fd(), 0).unwrap());
        let got = set_rcvbuf(fd.as_fd(), 1 << 16).unwrap();
        assert!(got >= 4096, "{got}");
    }
}
