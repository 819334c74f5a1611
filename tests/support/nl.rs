//! Blocking kills of one key, for the tests that check the kernel side of
//! them (`tests/kernel/kill.rs`): [`find_sockets`] and [`kill_tcp`]
//! (sock_diag), [`find_flows`] and [`kill_udp`] (ctnetlink).
//!
//! They are built only from refract's wire formats (`refract::nl::diag`,
//! `refract::nl::conntrack`) and its one blocking exchange,
//! [`NlSocket::request`], so the kernel sees exactly the requests the loop
//! sends through its pipeline (`refract::enforce::kill`), one key at a
//! time and waited for: a dump, then, after its `Done`, one destroy or
//! delete per entry, with `ENOENT` meaning "already gone". The daemon
//! itself never blocks on a kill; that is why these live here and not in
//! `src/nl`.
//!
//! Every call is bounded by its `timeout` (per request, `TimedOut` past
//! it).

use std::io;
use std::time::Duration;

use refract::key::Key;
use refract::nl::buf::NlBuf;
use refract::nl::conntrack::{self, DeleteRequest, Flow};
use refract::nl::diag::{self, DestroyRequest, Remote, SockId};
use refract::nl::socket::NlSocket;

/// The sockets of `key` on local `ports` in one `family`, as the kernel's
/// filter selects them (nothing re-checked here, so tests see exactly what
/// the bytecode matched). `protocol` is `IPPROTO_TCP`.
pub fn find_sockets(
    sock: &mut NlSocket,
    family: u8,
    protocol: u8,
    key: Key,
    ports: &[u16],
    timeout: Duration,
) -> io::Result<Vec<SockId>> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    diag::DumpRequest {
        family,
        protocol,
        ports,
        remote: Remote::In(std::slice::from_ref(&key)),
        ext: 0,
    }
    .emit(&mut buf, seq)?;
    let replies = sock
        .request(&buf, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("sock_diag: dump for {key}: {e}")))?;
    Ok(replies
        .iter()
        .filter_map(|m| diag::parse_socket(&m.as_msg()))
        .collect())
}

/// Destroys every TCP socket of `key` on local `ports` in `family` and
/// returns how many the kernel aborted. A socket that closed between dump
/// and destroy (`ENOENT`) is not counted and not an error. Each socket is
/// checked again in process before it is destroyed, so a filter bug could
/// only ever spare a socket, never kill a wrong one.
pub fn kill_tcp(
    sock: &mut NlSocket,
    family: u8,
    key: Key,
    ports: &[u16],
    timeout: Duration,
) -> io::Result<usize> {
    let protocol = libc::IPPROTO_TCP as u8;
    let mut killed = 0;
    let mut buf = NlBuf::new();
    for id in find_sockets(sock, family, protocol, key, ports, timeout)? {
        if !ports.contains(&id.sport) || !key.contains(id.remote().ip()) {
            continue;
        }
        buf.clear();
        let seq = sock.next_seq();
        DestroyRequest { protocol, id }.emit(&mut buf, seq);
        match sock.request(&buf, timeout) {
            Ok(_) => killed += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("sock_diag: destroy {} -> {}: {e}", id.remote(), id.local()),
                ))
            }
        }
    }
    Ok(killed)
}

/// The `protocol` flows from inside `key` to one of `ports`: one dump per
/// distinct port, every entry checked in process ([`conntrack::matches`]).
/// A kernel that refuses `CTA_FILTER` (`EINVAL`/`EOPNOTSUPP`) gets the
/// plain dump of the family instead, as the loop does it.
pub fn find_flows(
    sock: &mut NlSocket,
    protocol: u8,
    key: Key,
    ports: &[u16],
    timeout: Duration,
) -> io::Result<Vec<Flow>> {
    let mut flows = Vec::new();
    let mut buf = NlBuf::new();
    for (i, &port) in ports.iter().enumerate() {
        if ports[..i].contains(&port) {
            continue;
        }
        let mut req = conntrack::DumpRequest {
            family: conntrack::family(key),
            protocol,
            port: Some(port),
            key: Some(key),
            kernel_filter: true,
        };
        let replies = loop {
            buf.clear();
            req.emit(&mut buf, sock.next_seq());
            match sock.request(&buf, timeout) {
                Err(e)
                    if req.kernel_filter
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
                {
                    req.kernel_filter = false;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("conntrack: dump for {key} port {port}: {e}"),
                    ))
                }
                Ok(r) => break r,
            }
        };
        flows.extend(
            replies
                .iter()
                .filter_map(|m| conntrack::parse_flow(&m.as_msg()))
                .filter(|f| {
                    f.family == req.family && conntrack::matches(f, key, protocol, &[port])
                }),
        );
    }
    Ok(flows)
}

/// Deletes the UDP conntrack entries from inside `key` to one of `ports`
/// and returns how many the kernel removed. An entry gone between dump and
/// delete (`ENOENT`) is not counted and not an error.
pub fn kill_udp(
    sock: &mut NlSocket,
    key: Key,
    ports: &[u16],
    timeout: Duration,
) -> io::Result<usize> {
    let mut deleted = 0;
    let mut buf = NlBuf::new();
    for flow in find_flows(sock, libc::IPPROTO_UDP as u8, key, ports, timeout)? {
        buf.clear();
        DeleteRequest { flow }.emit(&mut buf, sock.next_seq());
        match sock.request(&buf, timeout) {
            Ok(_) => deleted += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "conntrack: delete {}:{} -> {}:{}: {e}",
                        flow.orig.src, flow.orig.sport, flow.orig.dst, flow.orig.dport
                    ),
                ))
            }
        }
    }
    Ok(deleted)
}
