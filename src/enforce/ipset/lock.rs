//! One kernel enforcer per set: the instance lock.
//!
//! Two daemons filling the same sets would each read the other's bans back
//! as their own, expire them on their own clocks and fight over the DROP
//! rules. So the kernel enforcer, before it touches anything, binds one
//! abstract unix socket per set name, `@refract:set:NAME` (unix(7):
//! "Abstract sockets"), and keeps it for its life. A second enforcer's
//! `bind` fails with `EADDRINUSE` and it refuses to start
//! ([`StartError::Running`]).
//!
//! Why an abstract socket and not a lock file with `flock(2)`:
//!
//! - Its scope is the network namespace, like the sets themselves (ipset
//!   names are per network namespace; so is the abstract socket namespace,
//!   unix(7)): daemons in two namespaces (containers, the tests) do not
//!   block each other, and a lock file in `/run` would (it lives in the
//!   mount namespace).
//! - The kernel releases it when the process dies, however it dies
//!   (`SIGKILL` included): no stale file to detect, no pid to check, and
//!   nothing to clean up. The socket is `SOCK_CLOEXEC` (std), so the
//!   iptables children refract runs never inherit it.
//! - It needs no writable directory (the unit runs `ProtectSystem=strict`)
//!   and no capability.
//!
//! The name is the set's name, not the pair: the IPv4 and IPv6 sets share
//! the kernel's set namespace, so a daemon whose `--set-name6` is another
//! one's `--set-name` is refused too. `ss -xlp | grep @refract:set:` shows
//! who holds it (the socket is a listener that never accepts, so `ss`
//! lists it with its process).
//!
//! [`StartError::Running`]: super::StartError::Running

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// The abstract name (without the leading NUL) of the lock of `set`.
pub fn name(set: &str) -> String {
    format!("refract:set:{set}")
}

/// Held while the enforcer lives: dropping it (or the process dying)
/// releases every set.
#[derive(Debug)]
pub struct InstanceLock {
    _held: Vec<UnixListener>,
}

/// Why [`acquire`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process in this network namespace holds the lock of this
    /// set.
    Held(String),
    Io(String, io::Error),
}

fn bind(set: &str) -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name(set).as_bytes())?;
    UnixListener::bind_addr(&addr)
}

/// [`bind`], tried again a few times over 100 ms when the name is taken. A
/// daemon that just exited can leave its lock behind for a moment: a child
/// forked by another thread of the parent between its `fork` and its
/// `exec` holds copies of every descriptor, `SOCK_CLOEXEC` ones included,
/// until the `exec` (a test harness that starts daemons in parallel does
/// this; so can a supervisor). A real second daemon holds the name for
/// longer than that and is still refused.
fn bind_patiently(set: &str) -> io::Result<UnixListener> {
    let mut tries = 0;
    loop {
        match bind(set) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Takes the lock of every set in `sets`, or none of them.
pub fn acquire(sets: &[&str]) -> Result<InstanceLock, LockError> {
    let mut held = Vec::with_capacity(sets.len());
    for &set in sets {
        match bind_patiently(set) {
            Ok(l) => held.push(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(LockError::Held(set.to_string()))
            }
            Err(e) => return Err(LockError::Io(set.to_string(), e)),
        }
    }
    Ok(InstanceLock { _held: held })
}

/// The first of `sets` whose lock another process holds now (for
/// `refract cleanup`, which must not pull the sets from under a running
/// daemon). Takes and releases each lock at once.
pub fn held(sets: &[&str]) -> io::Result<Option<String>> {
    for &set in sets {
        match bind(set) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(Some(set.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abstract sockets need no privilege, so this runs anywhere; the
    /// names carry the pid so that concurrent test runs do not meet.
    #[test]
    fn second_acquire_is_refused_until_the_first_is_dropped() {
        let a = format!("unit-a-{}", std::process::id());
        let b = format!("unit-b-{}", std::process::id());
        let first = acquire(&[&a, &b]).unwrap();
        assert_eq!(held(&[&a]).unwrap(), Some(a.clone()));
        match acquire(&[&b]) {
            Err(LockError::Held(s)) => assert_eq!(s, b),
            other => panic!("{other:?}"),
        }
        // All or nothing: refused on a, c is free again.
        let c = format!("unit-c-{}", std::process::id());
        assert!(matches!(acquire(&[&c, &a]), Err(LockError::Held(_))));
        assert_eq!(held(&[&c]).unwrap(), None);
        drop(first);
        assert_eq!(held(&[&a, &b]).unwrap(), None);
        let again = acquire(&[&a, &b]);
        assert!(again.is_ok(), "{again:?}");
    }
}
