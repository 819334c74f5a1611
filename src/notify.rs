//! systemd readiness (`Type=notify`) without libsystemd: one datagram to
//! `$NOTIFY_SOCKET` (sd_notify(3): a path, or an abstract socket when it
//! starts with `@`). Outside systemd the variable is unset and nothing
//! happens.
//!
//! The send never blocks the loop: a datagram socket whose receiver does
//! not read fills its queue (`net.unix.max_dgram_qlen`, 10 by default), and
//! a blocking `sendto` would then wait in `unix_wait_for_peer()` for as long
//! as the manager does not read, with SIGHUPs and bans piling up behind it.
//! Non-blocking, a full queue is `WouldBlock`: the caller logs it and the
//! state is lost, which a manager that does not read could not use anyway.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `READY=1`, `RELOADING=1`, `STOPPING=1`,
/// `STATUS=…`, newline-separated) to the service manager. `Ok(false)` when
/// there is no `$NOTIFY_SOCKET`.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send_to(path.to_str().unwrap_or_default(), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket at `path`.
pub fn send_to(path: &str, state: &str) -> io::Result<()> {
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())?
    } else if path.starts_with('/') {
        SocketAddr::from_pathname(path)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is not a socket path",
        ));
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets() {
        let path = std::env::temp_dir().join(format!("refract-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&path).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("refract-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(send_to("relative", "READY=1").is_err());
    }

    #[test]
    fn a_receiver_that_does_not_read_never_blocks_the_sender() {
        let path = std::env::temp_dir().join(format!("refract-notify-full-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let _rx = UnixDatagram::bind(&path).unwrap();
        let target = path.to_str().unwrap().to_string();
        // On a thread, so a regression fails the test instead of hanging it.
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let results: Vec<_> = (0..1000).map(|_| send_to(&target, "RELOADING=1")).collect();
            tx.send(results).unwrap();
        });
        let results = done
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("send_to blocked on a full notification queue");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        let full = results.iter().filter(|r| r.is_err()).count();
        assert!(full > 0, "a queue that nobody reads never filled");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.kind(), io::ErrorKind::WouldBlock, "{r}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
