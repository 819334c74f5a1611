//! systemd readiness (`Type=notify`) without libsystemd: one datagram to
//! `$NOTIFY_SOCKET` (sd_notify(3): a path, or an abstract socket when it
//! starts with `@`). Outside systemd the variable is unset and nothing
//! happens.

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
            "notify: NOTIFY_SOCKET is not a socket path",
        ));
    };
    let sock = UnixDatagram::unbound()?;
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
}
