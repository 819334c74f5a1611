//! The control socket of the real daemon (`--dry-run`), spoken to as a
//! client would: the hello, `status`, `user`, a ban by hand, unbans that
//! make the daemon judge an address afresh, `reload` with a broken and a
//! fixed limits file, a flooding client that never reads (dropped, and
//! bans go on), one instance per socket, and a stale socket replaced.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use refract::control::json::{parse, Value};

use crate::support::daemon::*;
use crate::support::{wait_until, TempDir, PROMPT};

/// One client connection: the hello read, then request → reply.
struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(PROMPT)).unwrap();
        let mut c = Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        };
        let hello = c.read();
        assert_eq!(
            hello.get("protocol").and_then(Value::as_u64),
            Some(1),
            "{hello:?}"
        );
        assert_eq!(
            hello.get("refract").and_then(Value::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
        c
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("a reply line");
        assert!(line.ends_with('\n'), "reply not a whole line: {line:?}");
        parse(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn ask(&mut self, req: &str) -> Value {
        writeln!(self.w, "{req}").unwrap();
        self.read()
    }
}

fn ok(v: &Value) -> bool {
    v.get("ok").and_then(Value::as_bool) == Some(true)
}

fn code(v: &Value) -> Option<&str> {
    v.get("code").and_then(Value::as_str)
}

fn bans(status: &Value) -> Vec<Value> {
    status
        .get("bans")
        .and_then(Value::as_array)
        .unwrap()
        .to_vec()
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or_else(|| panic!("no {k} in {v:?}"))
}

#[test]
fn status_ban_unban_user_and_reload_over_the_socket() {
    let dir = TempDir::new("control");
    let limits = dir.path("limits");
    std::fs::write(&limits, "bob@example.com 2\n").unwrap();
    let limits_flag = format!("--limits={}", limits.display());
    let d = Daemon::start(&dir, &[&limits_flag]);
    let mut c = Client::connect(&d.control);

    // Settings in force and counters.
    let s = c.ask(r#"{"cmd":"status"}"#);
    assert!(ok(&s), "{s:?}");
    let set = field(&s, "settings");
    assert_eq!(field(set, "window_s").as_f64(), Some(5.0));
    assert_eq!(field(set, "dry_run").as_bool(), Some(true));
    assert_eq!(field(set, "users_with_own_limit").as_u64(), Some(1));
    assert!(field(field(&s, "counters"), "lines").as_u64().is_some());
    assert!(bans(&s).is_empty());

    // A violation: the ban shows with its user and remaining time.
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    d.wait_audit(1, PROMPT);
    let s = c.ask(r#"{"cmd":"status"}"#);
    let b = bans(&s);
    assert_eq!(b.len(), 1, "{s:?}");
    assert_eq!(field(&b[0], "addr").as_str(), Some("198.51.100.12"));
    assert_eq!(field(&b[0], "user").as_str(), Some("alice@example.com"));
    assert_eq!(field(&b[0], "reason").as_str(), Some("limit"));
    let left = field(&b[0], "remaining_s").as_u64().unwrap();
    assert!((50..=60).contains(&left), "{left}");
    assert_eq!(field(&s, "users_online").as_u64(), Some(1));

    // The user's view.
    let u = c.ask(r#"{"cmd":"user","email":"alice@example.com"}"#);
    assert!(ok(&u), "{u:?}");
    let keys = field(&u, "keys").as_array().unwrap();
    assert_eq!(field(&keys[0], "key").as_str(), Some("192.0.2.11"));
    assert_eq!(field(&keys[0], "state").as_str(), Some("admitted"));
    assert_eq!(field(&u, "bans").as_array().unwrap().len(), 1);
    let none = c.ask(r#"{"cmd":"user","email":"nobody"}"#);
    assert_eq!(code(&none), Some("not_found"));

    // Unban: out of the policy, so the address is judged afresh — while
    // alice's first device is online it is a second device again.
    let un = c.ask(r#"{"cmd":"unban","addrs":["198.51.100.12"]}"#);
    assert!(ok(&un), "{un:?}");
    assert!(bans(&c.ask(r#"{"cmd":"status"}"#)).is_empty());
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    let audit = d.wait_audit(2, PROMPT);
    assert!(
        audit[1].contains("manual unban of 198.51.100.12 by uid "),
        "{audit:?}"
    );
    d.wait_audit(3, PROMPT);
    let again = c.ask(r#"{"cmd":"unban","addrs":["198.51.100.12"]}"#);
    assert!(ok(&again), "{again:?}");
    let gone = c.ask(r#"{"cmd":"unban","addrs":["198.51.100.12"]}"#);
    assert_eq!(code(&gone), Some("not_found"), "{gone:?}");

    // A ban by hand, with a reason; unban --user lifts only alice's.
    let mb = c.ask(r#"{"cmd":"ban","addr":"203.0.113.9","for_s":600,"reason":"ticket 17"}"#);
    assert!(ok(&mb), "{mb:?}");
    assert_eq!(field(&mb, "for_s").as_u64(), Some(600));
    let s = c.ask(r#"{"cmd":"status"}"#);
    let listed = bans(&s);
    let manual: Vec<&Value> = listed
        .iter()
        .filter(|b| b.get("reason").and_then(Value::as_str) == Some("manual"))
        .collect();
    assert_eq!(manual.len(), 1, "{s:?}");
    assert_eq!(field(manual[0], "note").as_str(), Some("ticket 17"));
    assert!(d
        .audit()
        .iter()
        .any(|l| l.contains("manual ban of 203.0.113.9 for 600s by uid ")
            && l.ends_with(": ticket 17")));
    // Lines from a manually banned address are ignored.
    append(&d.access, &access_line("carol@example.com", "203.0.113.9"));
    let bad = c.ask(r#"{"cmd":"ban","addr":"192.0.2.0/24"}"#);
    assert_eq!(code(&bad), Some("invalid"), "{bad:?}");
    let all = c.ask(r#"{"cmd":"unban","all":true}"#);
    assert!(ok(&all), "{all:?}");
    assert!(bans(&c.ask(r#"{"cmd":"status"}"#)).is_empty());

    // reload: a broken limits file fails (and the old limits stay), a
    // fixed one is taken.
    std::fs::write(&limits, "bob@example.com two\n").unwrap();
    let r = c.ask(r#"{"cmd":"reload"}"#);
    assert_eq!(code(&r), Some("failed"), "{r:?}");
    let why = field(&r, "error").as_str().unwrap();
    assert!(why.contains("limits") && why.contains("two"), "{r:?}");
    std::fs::write(&limits, "bob@example.com 2\ncarol@example.com 3\n").unwrap();
    let r = c.ask(r#"{"cmd":"reload"}"#);
    assert_eq!(field(&r, "limits").as_u64(), Some(2), "{r:?}");

    // Garbage gets an error reply, and the connection stays usable.
    let g = c.ask("{not json");
    assert_eq!(code(&g), Some("invalid"));
    assert!(ok(&c.ask(r#"{"cmd":"status"}"#)));
}

/// A client that floods requests and never reads its replies is dropped
/// once its replies pile up; meanwhile bans are decided as usual.
#[test]
fn a_flooding_client_cannot_hold_up_a_ban() {
    let dir = TempDir::new("control-flood");
    let d = Daemon::start(&dir, &[]);
    let flood = UnixStream::connect(&d.control).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        let mut f = flood;
        let req = b"{\"cmd\":\"status\"}\n".repeat(1000);
        let mut sent = 0usize;
        let start = Instant::now();
        // Until the daemon drops us (EPIPE/ECONNRESET) or a bound passes.
        while start.elapsed() < Duration::from_secs(30) {
            match f.write(&req) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    d.wait_audit(1, PROMPT);
    eprintln!("ban decided {:?} into the flood", t.elapsed());
    let (sent, dropped) = writer.join().unwrap();
    eprintln!("flood: {sent} bytes of requests sent, dropped={dropped}");
    assert!(dropped, "a client that never reads was never dropped");
    // The daemon still answers everyone else.
    let mut c = Client::connect(&d.control);
    assert!(ok(&c.ask(r#"{"cmd":"status"}"#)));
}

#[test]
fn one_daemon_per_socket_and_a_stale_socket_is_replaced() {
    let dir = TempDir::new("control-one");
    let mut d = Daemon::start(&dir, &[]);
    let control = format!("--control={}", d.control.display());
    // A second daemon on the same socket refuses to start.
    let other = TempDir::new("control-two");
    append(&other.path("access.log"), "");
    let o = std::process::Command::new(BIN)
        .args([
            "--dry-run",
            &control,
            &format!("--access.log={}", other.path("access.log").display()),
            &format!("--block.log={}", other.path("block.log").display()),
        ])
        .env("REFRACT_LOG", "stderr")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("another refract is running"), "{err}");
    // The first is unharmed.
    assert!(ok(&Client::connect(&d.control).ask(r#"{"cmd":"status"}"#)));

    // Killed without a chance to clean up: its socket file stays, nobody
    // answers on it; the next daemon replaces it.
    d.signal(libc::SIGKILL);
    let _ = d.child.wait();
    assert!(d.control.exists());
    let d2 = Daemon::start(&dir, &[&control]);
    assert!(ok(&Client::connect(&d2.control).ask(r#"{"cmd":"status"}"#)));
    wait_until(PROMPT, "the log says which socket", || {
        d2.log().contains("control ").then_some(())
    });
}

/// `refract reload` (the unit's `ExecReload=`) fails on a broken limits
/// file, so `systemctl reload` does, and succeeds once it is fixed.
#[test]
fn refract_reload_fails_on_a_broken_limits_file() {
    let dir = TempDir::new("control-reload");
    let limits = dir.path("limits");
    std::fs::write(&limits, "bob@example.com 2\n").unwrap();
    let limits_flag = format!("--limits={}", limits.display());
    let d = Daemon::start(&dir, &[&limits_flag]);
    let reload = || {
        std::process::Command::new(BIN)
            .args(["reload", &format!("--control={}", d.control.display())])
            .args(["--env-file=none"])
            .output()
            .unwrap()
    };
    std::fs::write(&limits, "bob@example.com 2\nbob@example.com zwei\n").unwrap();
    let o = reload();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("zwei"), "{err}");
    std::fs::write(&limits, "bob@example.com 3\n").unwrap();
    let o = reload();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
