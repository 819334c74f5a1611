//! The daemon's signals: each one sets a flag, then wakes the loop through a
//! self-pipe registered as [`super::SIGNAL`]. The handlers do nothing else
//! (signal-safety(7)); the loop reads the flags after every batch of events.
//!
//! - SIGTERM, SIGINT: [`Signals::term`] (finish the batch, flush, exit 0).
//! - SIGHUP: [`Signals::hup`] (re-read `--limits`, reopen the audit log,
//!   re-read the time zone).
//! - SIGUSR1: [`Signals::usr1`] (log one `stats:` line).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Flags set by signal handlers, and the pipe that wakes the loop.
#[derive(Debug)]
pub(super) struct Signals {
    /// The read end of the self-pipe, registered with the loop.
    pub(super) rx: mio::net::UnixStream,
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    pub(super) fn new() -> io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let mut s = Signals {
            rx: mio::net::UnixStream::from_std(rx),
            term: Arc::default(),
            hup: Arc::default(),
            usr1: Arc::default(),
            ids: Vec::new(),
        };
        for (sig, flag) in [
            (SIGTERM, &s.term),
            (SIGINT, &s.term),
            (SIGHUP, &s.hup),
            (SIGUSR1, &s.usr1),
        ] {
            // The flag first: signal-hook runs a signal's actions in the
            // order they were registered, so the loop woken by the pipe
            // always sees the flag set.
            s.ids
                .push(signal_hook::flag::register(sig, Arc::clone(flag))?);
            s.ids.push(signal_hook::low_level::pipe::register(
                sig,
                tx.try_clone()?,
            )?);
        }
        Ok(s)
    }

    /// Empties the pipe (mio is edge-triggered: read to `WouldBlock`).
    pub(super) fn drain(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match self.rx.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// SIGTERM or SIGINT arrived since the last call.
    pub(super) fn term(&self) -> bool {
        self.term.swap(false, Ordering::Relaxed)
    }

    /// SIGHUP arrived since the last call.
    pub(super) fn hup(&self) -> bool {
        self.hup.swap(false, Ordering::Relaxed)
    }

    /// SIGUSR1 arrived since the last call.
    pub(super) fn usr1(&self) -> bool {
        self.usr1.swap(false, Ordering::Relaxed)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
