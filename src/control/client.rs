//! The client side of the control socket: what `refract status`, `user`,
//! `ban`, `unban` and `reload` send, how they wait, and how they print the
//! reply.
//!
//! One connection per command: read the server's hello and check
//! `"protocol":1` ([`PROTOCOL`]), send one request line, read one reply
//! line, close. The client is not the daemon, so it blocks, but bounded:
//! [`TIMEOUT`] for the whole exchange (connect included: a full listen
//! backlog makes a non-blocking connect fail with `EAGAIN`, retried until
//! the deadline, where a blocking one would wait unbounded); the hello at
//! most [`MAX_HELLO`] bytes, the reply at most [`MAX_REPLY`] (a `status`
//! with a thousand users online is large).
//!
//! Exit codes ([`EXIT_FAILED`]...): 0 done; 1 failed (`"ok":false` with
//! code `failed` or `invalid`, or no proper reply); 2 usage (caught by
//! [`crate::cli`] before anything is sent); 3 not found (code
//! `not_found`); 4 not running or refused (`ENOENT`/`ECONNREFUSED` on
//! connect: no daemon; `EACCES`: not root and not in group `refract`),
//! with one line saying which and what to do.
//!
//! `--json` prints the reply object as the daemon sent it, re-serialised
//! on one line; without it, aligned text for people ([`render`]), a pure
//! function of the request and the reply.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::json::{self, Value};
use crate::config::format_duration;

/// The protocol version this client speaks (the hello's `protocol`).
pub const PROTOCOL: u64 = 1;
/// The whole exchange, connect to reply.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest hello line read.
pub const MAX_HELLO: usize = 64 << 10;
/// The longest reply line read.
pub const MAX_REPLY: usize = 16 << 20;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_NOT_RUNNING: i32 = 4;

pub use super::protocol::{Request, Unban};

/// Why there is no reply.
#[derive(Debug)]
pub enum ClientError {
    /// No socket, or nobody listening on it.
    NotRunning(PathBuf),
    /// The socket's mode refuses us.
    Denied(PathBuf),
    /// No complete answer within [`TIMEOUT`].
    Timeout(PathBuf),
    /// The daemon closed the connection, or sent what is not the protocol.
    Protocol(PathBuf, String),
    Io(PathBuf, io::Error),
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotRunning(_) | ClientError::Denied(_) => EXIT_NOT_RUNNING,
            _ => EXIT_FAILED,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(p) => write!(
                f,
                "refract is not running (no control socket at {})",
                p.display()
            ),
            ClientError::Denied(p) => write!(
                f,
                "refract: permission denied on {}: run as root or as a member of group refract",
                p.display()
            ),
            ClientError::Timeout(p) => write!(
                f,
                "refract: control: no reply on {} within {}s",
                p.display(),
                TIMEOUT.as_secs()
            ),
            ClientError::Protocol(p, why) => {
                write!(f, "refract: control: {}: {why}", p.display())
            }
            ClientError::Io(p, e) => write!(f, "refract: control: {}: {e}", p.display()),
        }
    }
}

/// Connects without blocking past `deadline`.
fn connect(path: &Path, deadline: Instant) -> Result<std::os::unix::net::UnixStream, ClientError> {
    loop {
        match mio::net::UnixStream::connect(path) {
            Ok(s) => {
                let s = std::os::unix::net::UnixStream::from(s);
                s.set_nonblocking(false)
                    .map_err(|e| ClientError::Io(path.to_path_buf(), e))?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The listen backlog is full (unix(7): EAGAIN).
                if Instant::now() >= deadline {
                    return Err(ClientError::Timeout(path.to_path_buf()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(match e.raw_os_error() {
                    Some(libc::ENOENT | libc::ECONNREFUSED) => {
                        ClientError::NotRunning(path.to_path_buf())
                    }
                    Some(libc::EACCES | libc::EPERM) => ClientError::Denied(path.to_path_buf()),
                    _ => ClientError::Io(path.to_path_buf(), e),
                })
            }
        }
    }
}

/// What is left before `deadline`, as a socket timeout (never zero, which
/// would mean "no timeout").
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Reads one `\n`-terminated line of at most `max` bytes; `buf` keeps what
/// came after it.
fn read_line<R: Read>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    set_timeout: &mut dyn FnMut() -> Result<(), ClientError>,
    path: &Path,
) -> Result<Vec<u8>, ClientError> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(nl + 1);
            let mut line = std::mem::replace(buf, rest);
            line.pop();
            return Ok(line);
        }
        if buf.len() > max {
            return Err(ClientError::Protocol(
                path.to_path_buf(),
                format!("a line longer than {max} bytes"),
            ));
        }
        set_timeout()?;
        match r.read(&mut chunk) {
            Ok(0) => {
                return Err(ClientError::Protocol(
                    path.to_path_buf(),
                    "the daemon closed the connection".to_string(),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Timeout(path.to_path_buf()))
            }
            Err(e) => return Err(ClientError::Io(path.to_path_buf(), e)),
        }
    }
}

/// One exchange: hello, request, reply (an object with `ok`).
pub fn exchange(path: &Path, req: &Value) -> Result<Value, ClientError> {
    let deadline = Instant::now() + TIMEOUT;
    let mut s = connect(path, deadline)?;
    let p = path.to_path_buf();
    let sock = s.try_clone().map_err(|e| ClientError::Io(p.clone(), e))?;
    let mut set_read = || match remaining(deadline) {
        Some(left) => sock
            .set_read_timeout(Some(left))
            .map_err(|e| ClientError::Io(p.clone(), e)),
        None => Err(ClientError::Timeout(p.clone())),
    };
    let mut buf = Vec::new();
    let hello = read_line(&mut s, &mut buf, MAX_HELLO, &mut set_read, path)?;
    let hello = json::parse(&hello)
        .map_err(|e| ClientError::Protocol(path.to_path_buf(), format!("hello: {e}")))?;
    match hello.get("protocol").and_then(Value::as_u64) {
        Some(PROTOCOL) => {}
        Some(n) => {
            return Err(ClientError::Protocol(
                path.to_path_buf(),
                format!(
                    "the daemon speaks protocol {n} (refract {}), this refract speaks {PROTOCOL}: use the daemon's own binary",
                    hello.get("refract").and_then(Value::as_str).unwrap_or("?")
                ),
            ))
        }
        None => {
            return Err(ClientError::Protocol(
                path.to_path_buf(),
                "no refract hello on this socket".to_string(),
            ))
        }
    }
    let mut line = req.to_line();
    line.push('\n');
    match remaining(deadline) {
        Some(left) => s
            .set_write_timeout(Some(left))
            .map_err(|e| ClientError::Io(path.to_path_buf(), e))?,
        None => return Err(ClientError::Timeout(path.to_path_buf())),
    }
    s.write_all(line.as_bytes()).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError::Timeout(path.to_path_buf())
        }
        _ => ClientError::Io(path.to_path_buf(), e),
    })?;
    let reply = read_line(&mut s, &mut buf, MAX_REPLY, &mut set_read, path)?;
    let reply = json::parse(&reply)
        .map_err(|e| ClientError::Protocol(path.to_path_buf(), format!("reply: {e}")))?;
    if reply.get("ok").and_then(Value::as_bool).is_none() {
        return Err(ClientError::Protocol(
            path.to_path_buf(),
            "a reply without \"ok\"".to_string(),
        ));
    }
    Ok(reply)
}

/// The exit code an answered request ends with.
pub fn exit_code(reply: &Value) -> i32 {
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        return EXIT_OK;
    }
    match reply.get("code").and_then(Value::as_str) {
        Some("not_found") => EXIT_NOT_FOUND,
        _ => EXIT_FAILED,
    }
}

/// Runs one client command: the exchange, the output, the exit code.
/// `out` and `err` take whole texts (stdout, stderr).
pub fn run(
    path: &Path,
    req: &Request,
    json_out: bool,
    out: &dyn Fn(&str),
    err: &dyn Fn(&str),
) -> i32 {
    let reply = match exchange(path, &req.to_value()) {
        Ok(r) => r,
        Err(e) => {
            err(&format!("{e}\n"));
            return e.exit_code();
        }
    };
    let code = exit_code(&reply);
    if json_out {
        out(&format!("{}\n", reply.to_line()));
    } else if code == EXIT_OK {
        out(&render(req, &reply));
    } else {
        let why = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the daemon refused the request");
        err(&format!("refract: {why}\n"));
    }
    code
}

/// Aligned columns, two spaces apart, indented by two; the last column is
/// not padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (i, c) in r.iter().enumerate() {
            line.push(' ');
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = width[i] - c.chars().count() + 1;
                line.extend(std::iter::repeat(' ').take(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds as a duration (`window_s` may be a fraction: `0.5` is `500ms`).
fn secs(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(s) if (0.0..1e12).contains(&s) => format_duration(Duration::from_secs_f64(s)),
        _ => "-".to_string(),
    }
}

fn ago(v: Option<&Value>) -> String {
    match secs(v) {
        s if s == "-" => s,
        s => format!("{s} ago"),
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "on" } else { "off" }.to_string(),
        Some(Value::Arr(a)) => {
            let parts: Vec<String> = a.iter().map(|x| text(Some(x))).collect();
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(",")
            }
        }
        Some(other) => other.to_line(),
    }
}

fn items(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(<[Value]>::to_vec)
        .unwrap_or_default()
}

/// The bans table (status and user).
fn bans(v: &Value) -> String {
    let list = items(v, "bans");
    if list.is_empty() {
        return "bans: none\n".to_string();
    }
    let mut rows = vec![vec![
        "ADDR".to_string(),
        "USER".into(),
        "REASON".into(),
        "REMAINING".into(),
        "SINCE".into(),
        "NOTE".into(),
    ]];
    for b in &list {
        let note = match b.get("note") {
            None | Some(Value::Null) => String::new(),
            n => text(n),
        };
        rows.push(vec![
            text(b.get("addr")),
            text(b.get("user")),
            text(b.get("reason")),
            secs(b.get("remaining_s")),
            ago(b.get("since_s")),
            note,
        ]);
    }
    let total = v
        .get("bans_total")
        .and_then(Value::as_u64)
        .unwrap_or(list.len() as u64);
    let mut out = format!("bans: {total}\n{}", table(&rows));
    if v.get("bans_truncated").and_then(Value::as_bool) == Some(true) {
        out.push_str(&format!(
            "  ... the newest {} only (--json has the same; ipset list has them all)\n",
            list.len()
        ));
    }
    out
}

/// The text for people of a successful reply.
pub fn render(req: &Request, reply: &Value) -> String {
    match req {
        Request::Status => render_status(reply),
        Request::User(_) => render_user(reply),
        Request::Ban { .. } => format!(
            "banned {} (key {}) for {}\n",
            text(reply.get("addr")),
            text(reply.get("key")),
            secs(reply.get("for_s"))
        ),
        Request::Unban(_) => {
            let list = items(reply, "unbanned");
            let names: Vec<String> = list.iter().map(|a| text(Some(a))).collect();
            if names.is_empty() {
                "unbanned nothing\n".to_string()
            } else {
                format!("unbanned {}: {}\n", names.len(), names.join(", "))
            }
        }
        Request::Reload => match reply.get("limits").and_then(Value::as_u64) {
            Some(n) => format!("reloaded: {n} per-user limits\n"),
            None => "reloaded\n".to_string(),
        },
    }
}

fn render_status(v: &Value) -> String {
    let mut out = format!(
        "refract {}, pid {}, up {}\n",
        text(v.get("version")),
        text(v.get("pid")),
        secs(v.get("uptime_s"))
    );
    if let Some(Value::Obj(settings)) = v.get("settings") {
        out.push_str("settings\n");
        let rows: Vec<Vec<String>> = settings
            .iter()
            .map(|(k, val)| {
                let shown = if k.ends_with("_s") {
                    secs(Some(val))
                } else {
                    text(Some(val))
                };
                let label = k.strip_suffix("_s").unwrap_or(k).replace('_', " ");
                vec![label, shown]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    if let Some(Value::Obj(counters)) = v.get("counters") {
        // Three name/value pairs a line: the stats line has some forty.
        out.push_str("counters\n");
        let rows: Vec<Vec<String>> = counters
            .chunks(3)
            .map(|c| {
                c.iter()
                    .flat_map(|(k, val)| [k.clone(), text(Some(val))])
                    .collect()
            })
            .collect();
        out.push_str(&table(&rows));
    }
    out.push_str(&format!(
        "online: {} users, {} keys\n",
        text(v.get("users_online")),
        text(v.get("keys_online"))
    ));
    let online = items(v, "online");
    if !online.is_empty() {
        let rows: Vec<Vec<String>> = online
            .iter()
            .map(|u| {
                let keys: Vec<String> = items(u, "keys").iter().map(|k| text(Some(k))).collect();
                vec![text(u.get("user")), keys.join(", ")]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    if v.get("online_truncated").and_then(Value::as_bool) == Some(true) {
        out.push_str(&format!(
            "  ... the first {} users only (refract user EMAIL shows any one)\n",
            online.len()
        ));
    }
    out.push_str(&bans(v));
    out
}

fn render_user(v: &Value) -> String {
    let mut out = format!(
        "user {}, limit {}\n",
        text(v.get("user")),
        text(v.get("limit"))
    );
    if let Some(s) = v.get("shape").filter(|s| !matches!(s, Value::Null)) {
        out.push_str(&shape_line(s));
    }
    let keys = items(v, "keys");
    if keys.is_empty() {
        out.push_str("keys: none\n");
    } else {
        let mut rows = vec![vec![
            "KEY".to_string(),
            "STATE".into(),
            "LAST SEEN".into(),
            "CONNECTION".into(),
            "IN USE".into(),
            "LAST USE".into(),
        ]];
        for k in &keys {
            let head = vec![
                text(k.get("key")),
                text(k.get("state")),
                ago(k.get("last_seen_s")),
            ];
            let conns = items(k, "connections");
            if conns.is_empty() {
                let mut r = head;
                r.extend(["-".to_string(), String::new(), String::new()]);
                rows.push(r);
                continue;
            }
            for (i, c) in conns.iter().enumerate() {
                let mut r = if i == 0 {
                    head.clone()
                } else {
                    vec![String::new(), String::new(), String::new()]
                };
                let in_use = match c.get("in_use").and_then(Value::as_bool) {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                };
                r.extend([
                    text(c.get("peer")),
                    in_use.to_string(),
                    ago(c.get("last_use_s")),
                ]);
                rows.push(r);
            }
        }
        out.push_str(&format!("keys: {}\n", keys.len()));
        out.push_str(&table(&rows));
    }
    out.push_str(&bans(v));
    out
}

/// `rate down 20mbit, up 5mbit, mark 0x52460005` (or `not capped`).
fn shape_line(s: &Value) -> String {
    let rate = |k: &str| {
        s.get(k)
            .and_then(Value::as_u64)
            .map(|bits| crate::shape::rate::Rate(bits / 8).to_string())
    };
    let (down, up) = (rate("down_bps"), rate("up_bps"));
    if down.is_none() && up.is_none() {
        return "rate: not capped\n".to_string();
    }
    let mark = match s.get("mark") {
        Some(Value::Str(m)) => m.clone(),
        _ => "none yet (no connection since the start or the last release)".to_string(),
    };
    format!(
        "rate down {}, up {}, mark {mark}\n",
        down.as_deref().unwrap_or("not capped"),
        up.as_deref().unwrap_or("not capped")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(s: &str) -> Value {
        json::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn requests_are_the_contracts_lines() {
        let line = |r: Request| r.to_value().to_line();
        assert_eq!(line(Request::Status), r#"{"cmd":"status"}"#);
        assert_eq!(
            line(Request::User("alice@example.com".into())),
            r#"{"cmd":"user","email":"alice@example.com"}"#
        );
        assert_eq!(
            line(Request::Ban {
                addr: "192.0.2.7".into(),
                for_s: Some(3600),
                reason: Some("abuse ticket 17".into())
            }),
            r#"{"cmd":"ban","addr":"192.0.2.7","for_s":3600,"reason":"abuse ticket 17"}"#
        );
        assert_eq!(
            line(Request::Ban {
                addr: "2001:db8:1::/64".into(),
                for_s: None,
                reason: None
            }),
            r#"{"cmd":"ban","addr":"2001:db8:1::/64"}"#
        );
        assert_eq!(
            line(Request::Unban(Unban::Addrs(vec![
                "192.0.2.7".into(),
                "2001:db8:1::/64".into()
            ]))),
            r#"{"cmd":"unban","addrs":["192.0.2.7","2001:db8:1::/64"]}"#
        );
        assert_eq!(
            line(Request::Unban(Unban::User("a@b".into()))),
            r#"{"cmd":"unban","user":"a@b"}"#
        );
        assert_eq!(
            line(Request::Unban(Unban::All)),
            r#"{"cmd":"unban","all":true}"#
        );
        assert_eq!(line(Request::Reload), r#"{"cmd":"reload"}"#);
    }

    #[test]
    fn exit_codes_follow_the_reply_code() {
        assert_eq!(exit_code(&reply(r#"{"ok":true}"#)), 0);
        for (code, want) in [("failed", 1), ("invalid", 1), ("not_found", 3), ("new", 1)] {
            let r = reply(&format!(r#"{{"ok":false,"error":"x","code":"{code}"}}"#));
            assert_eq!(exit_code(&r), want, "{code}");
        }
    }

    pub(crate) const STATUS: &str = r#"{"ok":true,"version":"0.3.0","pid":1234,"uptime_s":3725,
        "settings":{"access_log":"/var/log/xray/access.log","block_log":"/var/log/refract/block.log",
          "proto":"tcp","dport":[443,8443],"window_s":5,"timeout_s":60,"limit":1,"limits_file":null,
          "users_with_own_limit":0,"ipv6_prefix":64,"confirm":false,"dry_run":false,
          "firewall":"iptables","set_v4":"refract_banned_users","set_v6":"refract_banned_users6",
          "liveness":true},
        "counters":{"lines":120,"bans":2,"expired":0,"audit_errors":0},
        "users_online":2,"keys_online":3,
        "online":[{"user":"alice@example.com","keys":["192.0.2.1","2001:db8:1::/64"]},
                  {"user":"bob","keys":["198.51.100.9"]}],
        "bans":[{"addr":"192.0.2.7","user":"alice@example.com","reason":"limit","remaining_s":52,
                 "since_s":8,"origin":["192.0.2.1"],"note":null},
                {"addr":"203.0.113.5","user":null,"reason":"manual","remaining_s":3540,
                 "since_s":60,"origin":[],"note":"abuse ticket 17"}]}"#;

    #[test]
    fn status_text() {
        let text = render(&Request::Status, &reply(STATUS));
        let want = "\
refract 0.3.0, pid 1234, up 1h2m5s
settings
  access log            /var/log/xray/access.log
  block log             /var/log/refract/block.log
  proto                 tcp
  dport                 443,8443
  window                5s
  timeout               1m
  limit                 1
  limits file           -
  users with own limit  0
  ipv6 prefix           64
  confirm               off
  dry run               off
  firewall              iptables
  set v4                refract_banned_users
  set v6                refract_banned_users6
  liveness              on
counters
  lines         120  bans  2  expired  0
  audit_errors  0
online: 2 users, 3 keys
  alice@example.com  192.0.2.1, 2001:db8:1::/64
  bob                198.51.100.9
bans: 2
  ADDR         USER               REASON  REMAINING  SINCE   NOTE
  192.0.2.7    alice@example.com  limit   52s        8s ago
  203.0.113.5  -                  manual  59m        1m ago  abuse ticket 17
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn status_text_without_bans_and_truncated_online() {
        let r = reply(
            r#"{"ok":true,"version":"0.3.0","pid":1,"uptime_s":0,"users_online":1001,
                "keys_online":1001,"online":[{"user":"a","keys":["192.0.2.1"]}],
                "online_truncated":true,"bans":[]}"#,
        );
        let text = render(&Request::Status, &r);
        assert!(text.starts_with("refract 0.3.0, pid 1, up 0s\n"), "{text}");
        assert!(
            text.contains("online: 1001 users, 1001 keys\n  a  192.0.2.1\n"),
            "{text}"
        );
        assert!(text.contains("the first 1 users only"), "{text}");
        assert!(text.ends_with("bans: none\n"), "{text}");
    }

    #[test]
    fn fractions_of_seconds_and_truncated_bans() {
        let r = reply(
            r#"{"ok":true,"version":"0.3.0","pid":1,"uptime_s":0,"settings":{"window_s":0.5},
                "users_online":0,"keys_online":0,"online":[],"online_truncated":false,
                "bans_total":1500,"bans_truncated":true,
                "bans":[{"addr":"192.0.2.7","user":null,"reason":"restored","remaining_s":9,
                         "since_s":1,"origin":[],"note":null}]}"#,
        );
        let text = render(&Request::Status, &r);
        assert!(text.contains("settings\n  window  500ms\n"), "{text}");
        assert!(text.contains("bans: 1500\n"), "{text}");
        assert!(
            text.ends_with(
                "  ... the newest 1 only (--json has the same; ipset list has them all)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("the first"), "{text}");
    }

    #[test]
    fn user_text() {
        let r = reply(
            r#"{"ok":true,"user":"alice@example.com","limit":2,
                "keys":[{"key":"192.0.2.1","state":"admitted","last_seen_s":3,
                         "connections":[{"peer":"192.0.2.1:51234","in_use":true,"last_use_s":1},
                                        {"peer":"192.0.2.1:51240","in_use":null,"last_use_s":null}]},
                        {"key":"2001:db8:1::/64","state":"candidate","last_seen_s":125,"connections":[]}],
                "bans":[]}"#,
        );
        let text = render(&Request::User("alice@example.com".into()), &r);
        let want = "\
user alice@example.com, limit 2
keys: 2
  KEY              STATE      LAST SEEN  CONNECTION       IN USE   LAST USE
  192.0.2.1        admitted   3s ago     192.0.2.1:51234  yes      1s ago
                                         192.0.2.1:51240  unknown  -
  2001:db8:1::/64  candidate  2m5s ago   -
bans: none
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn ban_unban_reload_text() {
        let ban = Request::Ban {
            addr: "192.0.2.7".into(),
            for_s: None,
            reason: None,
        };
        assert_eq!(
            render(
                &ban,
                &reply(r#"{"ok":true,"addr":"192.0.2.7","key":"192.0.2.7","for_s":3600}"#)
            ),
            "banned 192.0.2.7 (key 192.0.2.7) for 1h\n"
        );
        assert_eq!(
            render(
                &Request::Unban(Unban::All),
                &reply(r#"{"ok":true,"unbanned":["192.0.2.7","2001:db8:1::/64"]}"#)
            ),
            "unbanned 2: 192.0.2.7, 2001:db8:1::/64\n"
        );
        assert_eq!(
            render(&Request::Reload, &reply(r#"{"ok":true,"limits":12}"#)),
            "reloaded: 12 per-user limits\n"
        );
    }

    #[test]
    fn no_socket_is_not_running() {
        let dir = std::env::temp_dir().join(format!("refract-client-{}", std::process::id()));
        let path = dir.join("control.sock");
        let e = exchange(&path, &Request::Status.to_value()).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_NOT_RUNNING);
        assert_eq!(
            e.to_string(),
            format!(
                "refract is not running (no control socket at {})",
                path.display()
            )
        );
    }
}
