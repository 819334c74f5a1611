//! The control socket's server: a non-blocking unix stream listener and
//! its connections, driven by the daemon's loop (tokens
//! `first .. first + 1 + MAX_CLIENTS`). It frames lines and queues
//! replies; what a request means is the daemon's.
//!
//! Bounds, so a client can never hold up a ban:
//! - at most [`MAX_CLIENTS`] connections (one more is told so and closed);
//! - a request line is at most [`MAX_LINE`] bytes (longer: an error reply,
//!   then the connection is closed, since its framing is lost);
//! - at most [`PER_TURN`] requests per connection per loop turn; what is
//!   left waits for the next turn ([`Server::has_pending`] makes the loop
//!   poll without sleeping), so a flood of requests costs a ban at most a
//!   turn's worth of work;
//! - replies a client does not read are kept up to [`MAX_OUT`] bytes, then
//!   the client is dropped; a connection with nothing asked and nothing to
//!   send for [`IDLE`] is closed. Nothing ever waits for a client.
//!
//! The socket file: created `0660`, group `refract` when that group
//! exists (so its members may use it without root); its directory is
//! created if missing. A socket file left by a killed daemon (nobody
//! answers on it) is replaced; one that answers means another daemon
//! runs, and this one must not start ([`BindError::Running`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::json::Value;
use super::protocol::{self, Code};
use crate::clock::{Micros, SECOND};

/// Most connections at once.
pub const MAX_CLIENTS: usize = 16;
/// Longest request line.
pub const MAX_LINE: usize = 64 << 10;
/// Most reply bytes queued for one client.
pub const MAX_OUT: usize = 16 << 20;
/// Requests handled per connection per loop turn.
pub const PER_TURN: usize = 32;
/// A connection quiet this long is closed.
pub const IDLE: Micros = 60 * SECOND;
/// Tokens the server takes: the listener and one per connection.
pub const TOKENS: usize = 1 + MAX_CLIENTS;

/// Why the socket could not be set up.
#[derive(Debug)]
pub enum BindError {
    /// Another daemon answers on the path.
    Running(PathBuf),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::Running(p) => write!(
                f,
                "control: another refract is running (its control socket {} answers); \
                 stop it first, or give this one its own --control",
                p.display()
            ),
            BindError::Io(p, e) => write!(f, "control: {}: {e}", p.display()),
        }
    }
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    uid: u32,
    rx: Vec<u8>,
    tx: VecDeque<u8>,
    /// Complete request lines not handled yet.
    lines: VecDeque<Vec<u8>>,
    last_active: Micros,
    /// Close once `tx` is written (after an unrecoverable request).
    closing: bool,
    /// Reading stopped with [`PER_TURN`] lines waiting: the socket may
    /// hold more, and no new readiness event will say so (edge-triggered).
    paused: bool,
}

/// A request to handle: which connection, who sent it, the line.
#[derive(Debug)]
pub struct Incoming {
    pub conn: usize,
    pub uid: u32,
    pub line: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Option<Conn>>,
    first: usize,
    /// Connections refused at [`MAX_CLIENTS`], dropped as stuck or too
    /// long, requests served.
    pub refused: u64,
    pub dropped: u64,
    pub served: u64,
}

/// The gid of group `name` from `/etc/group`, if it exists.
fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

impl Server {
    /// Creates the socket at `path` (module docs).
    pub fn bind(path: &Path) -> Result<Server, BindError> {
        let io_err = |e: io::Error| BindError::Io(path.to_path_buf(), e);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => return Err(BindError::Running(path.to_path_buf())),
                    // Nobody listens: left by a daemon that was killed.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::fs::remove_file(path).map_err(io_err)?;
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
            Ok(_) => {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket; refusing to replace it",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(io_err)?;
            }
        }
        let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
        std_listener.set_nonblocking(true).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
        if let Some(gid) = group_id("refract") {
            // Best effort: without CAP_CHOWN the socket stays root's.
            let _ = std::os::unix::fs::chown(path, None, Some(gid));
        }
        Ok(Server {
            listener: UnixListener::from_std(std_listener),
            path: path.to_path_buf(),
            conns: (0..MAX_CLIENTS).map(|_| None).collect(),
            first: 0,
            refused: 0,
            dropped: 0,
            served: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers the listener; connections take the tokens after it.
    pub fn register(&mut self, registry: &Registry, first: usize) -> io::Result<()> {
        self.first = first;
        registry.register(&mut self.listener, Token(first), Interest::READABLE)
    }

    /// Whether `token` is one of the server's.
    pub fn owns(&self, token: Token) -> bool {
        (self.first..self.first + TOKENS).contains(&token.0)
    }

    /// Handles a readiness event on one of the server's tokens.
    pub fn event(&mut self, registry: &Registry, token: Token, now: Micros) {
        if token.0 == self.first {
            self.accept(registry, now);
        } else {
            let i = token.0 - self.first - 1;
            self.pump(registry, i, now);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Micros) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::logger::warning(format_args!("control: accept: {e}"));
                    return;
                }
            };
            let Some(i) = self.conns.iter().position(Option::is_none) else {
                self.refused += 1;
                let mut line = protocol::error(
                    Code::Failed,
                    format!("too many control connections (at most {MAX_CLIENTS})"),
                )
                .to_line();
                line.push('\n');
                let _ = stream.write(line.as_bytes());
                continue;
            };
            let uid = crate::sys::process::peer_uid(stream.as_fd()).unwrap_or(u32::MAX);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut stream, Token(self.first + 1 + i), interest) {
                crate::logger::warning(format_args!("control: register: {e}"));
                continue;
            }
            let mut c = Conn {
                stream,
                uid,
                rx: Vec::new(),
                tx: VecDeque::new(),
                lines: VecDeque::new(),
                last_active: now,
                closing: false,
                paused: false,
            };
            queue(&mut c, &protocol::hello());
            self.conns[i] = Some(c);
            self.pump(registry, i, now);
        }
    }

    /// Reads what connection `i` sent (to `WouldBlock`) and writes what it
    /// has queued; closes it on EOF, error or a broken bound.
    fn pump(&mut self, registry: &Registry, i: usize, now: Micros) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut close = false;
        let mut buf = [0u8; 4096];
        c.paused = false;
        while !c.closing {
            // Flow control: a client gets no more read than a turn's share
            // ahead; the rest waits in its socket (its writes block there).
            if c.lines.len() >= PER_TURN {
                c.paused = true;
                break;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    close = true;
                    break;
                }
                Ok(n) => {
                    c.last_active = now;
                    c.rx.extend_from_slice(&buf[..n]);
                    while let Some(nl) = c.rx.iter().position(|&b| b == b'\n') {
                        let mut line: Vec<u8> = c.rx.drain(..=nl).collect();
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        if !line.is_empty() {
                            c.lines.push_back(line);
                        }
                    }
                    if c.rx.len() > MAX_LINE {
                        let e = protocol::error(
                            Code::Invalid,
                            format!("request line longer than {MAX_LINE} bytes"),
                        );
                        queue(c, &e);
                        c.rx.clear();
                        c.closing = true;
                        self.dropped += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    close = true;
                    break;
                }
            }
        }
        if !close {
            close = flush(c).is_err() || (c.closing && c.tx.is_empty());
        }
        if close {
            self.close(registry, i);
        }
    }

    fn close(&mut self, registry: &Registry, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// The next request to handle this turn, at most [`PER_TURN`] per
    /// connection per turn (`budget` counts them; the loop resets it). A
    /// connection paused by flow control reads on once its queue ran dry.
    pub fn next(
        &mut self,
        registry: &Registry,
        budget: &mut [usize; MAX_CLIENTS],
        now: Micros,
    ) -> Option<Incoming> {
        let resume: Vec<usize> = (0..MAX_CLIENTS)
            .filter(|&i| {
                self.conns[i]
                    .as_ref()
                    .is_some_and(|c| c.paused && c.lines.is_empty() && budget[i] < PER_TURN)
            })
            .collect();
        for i in resume {
            self.pump(registry, i, now);
        }
        for (i, slot) in self.conns.iter_mut().enumerate() {
            let Some(c) = slot.as_mut() else { continue };
            if c.closing || budget[i] >= PER_TURN {
                continue;
            }
            if let Some(line) = c.lines.pop_front() {
                budget[i] += 1;
                self.served += 1;
                return Some(Incoming {
                    conn: i,
                    uid: c.uid,
                    line,
                });
            }
        }
        None
    }

    /// Queues `reply` for connection `conn` and writes what it can.
    pub fn reply(&mut self, registry: &Registry, conn: usize, reply: &Value) {
        let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) else {
            return;
        };
        queue(c, reply);
        if c.tx.len() > MAX_OUT {
            // Not reading its replies: dropped, never waited for.
            self.dropped += 1;
            self.close(registry, conn);
            return;
        }
        if flush(c).is_err() {
            self.close(registry, conn);
        }
    }

    /// Whether requests wait for the next turn (queued, or left in a
    /// paused connection's socket).
    pub fn has_pending(&self) -> bool {
        self.conns
            .iter()
            .flatten()
            .any(|c| !c.closing && (!c.lines.is_empty() || c.paused))
    }

    /// When the quietest connection becomes idle.
    pub fn deadline(&self) -> Option<Micros> {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.last_active.saturating_add(IDLE))
            .min()
    }

    /// Closes connections idle since [`IDLE`].
    pub fn tick(&mut self, registry: &Registry, now: Micros) {
        for i in 0..MAX_CLIENTS {
            let idle = self.conns[i]
                .as_ref()
                .is_some_and(|c| c.last_active.saturating_add(IDLE) <= now);
            if idle {
                self.close(registry, i);
            }
        }
    }

    /// Shutdown: the socket file goes.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn queue(c: &mut Conn, v: &Value) {
    let mut line = v.to_line();
    line.push('\n');
    c.tx.extend(line.as_bytes());
}

/// Writes what the socket takes; `Err` when the connection is broken.
fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.tx.is_empty() {
        let (a, _) = c.tx.as_slices();
        match c.stream.write(a) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.tx.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
