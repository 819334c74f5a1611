//! A `timerfd` on `CLOCK_MONOTONIC` (timerfd_create(2)), registered with the
//! loop like any other fd: the daemon arms it to the earliest deadline any
//! component reports and disarms it when there is none, so an idle daemon
//! never wakes up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{event, Interest, Registry, Token};

/// Microseconds in a second: deadlines are microseconds on
/// `CLOCK_MONOTONIC` (the scale of [`super::time::monotonic`]).
const MICROS: u64 = 1_000_000;

/// A non-blocking, close-on-exec timerfd on `CLOCK_MONOTONIC`.
#[derive(Debug)]
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall; the returned fd is checked and owned below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by timerfd_create and nothing else
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(TimerFd { fd })
    }

    fn settime(&self, flags: libc::c_int, value: u64) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (value / MICROS) as libc::time_t,
                tv_nsec: ((value % MICROS) * 1_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not wanted
        // (null is allowed by timerfd_settime(2)).
        let rc = unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), flags, &spec, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Fires once at `deadline` on `CLOCK_MONOTONIC` (see
    /// [`crate::sys::time::monotonic`]). A deadline in the past fires at once.
    pub fn arm_at(&self, deadline: u64) -> io::Result<()> {
        // An all-zero it_value would disarm; a deadline of 0 is long past.
        self.settime(libc::TFD_TIMER_ABSTIME, deadline.max(1))
    }

    /// Fires once after `delay` (at least one microsecond).
    pub fn arm_after(&self, delay: u64) -> io::Result<()> {
        self.settime(0, delay.max(1))
    }

    /// No more expirations until armed again.
    pub fn disarm(&self) -> io::Result<()> {
        self.settime(0, 0)
    }

    /// Number of expirations since the last read; `WouldBlock` when none.
    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is valid for 8 bytes of writes, the size timerfd
        // reads require.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n != 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "timerfd: short read",
            ));
        }
        Ok(u64::from_ne_bytes(buf))
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl event::Source for TimerFd {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::time::monotonic;

    #[test]
    fn fires_once_then_would_block() {
        let t = TimerFd::new().unwrap();
        assert_eq!(t.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        t.arm_at(monotonic() + 2_000).unwrap();
        let start = std::time::Instant::now();
        loop {
            match t.read() {
                Ok(n) => {
                    assert_eq!(n, 1);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed().as_secs() < 5, "timer never fired");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(t.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        t.arm_after(MICROS).unwrap();
        t.disarm().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(t.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
