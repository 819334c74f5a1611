//! The client commands against a fake daemon: a thread in this test that
//! serves the control protocol on a unix socket in a temp dir, one
//! connection, one canned reply. What is checked is the client's side of
//! the contract: the request line it sends, its exit code (0/1/2/3/4), its
//! `--json` output (the reply object on one line) and its text, and the one
//! line it prints when there is no daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::daemon::BIN;
use crate::support::{TempDir, PROMPT};

const HELLO: &str = r#"{"refract":"0.3.0","protocol":1}"#;

/// The real binary with no `REFRACT_*` variable of ours and no
/// environment file, talking to `sock`.
fn client(sock: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--control")
        .arg(sock)
        .arg("--env-file=none");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REFRACT_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run refract")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fake daemon: accepts one connection (waiting at most [`PROMPT`]),
/// sends `hello`, reads one request line, answers `reply` (nothing when
/// `None`: a stuck daemon, which holds the connection until the client
/// closes it, at most three [`PROMPT`]s). Joining it gives the request line.
struct Fake {
    sock: PathBuf,
    thread: Option<JoinHandle<String>>,
    _dir: TempDir,
}

impl Fake {
    fn new(hello: &'static str, reply: Option<&'static str>) -> Fake {
        let dir = TempDir::new("control");
        let sock = dir.path("control.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(start.elapsed() < PROMPT, "no client connected");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(PROMPT)).unwrap();
            let mut w = stream.try_clone().unwrap();
            writeln!(w, "{hello}").unwrap();
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            match reply {
                Some(reply) => {
                    let _ = writeln!(w, "{reply}");
                }
                None => {
                    r.get_ref().set_read_timeout(Some(PROMPT * 3)).unwrap();
                    let _ = r.read_line(&mut String::new());
                }
            }
            line.trim_end().to_string()
        });
        Fake {
            sock,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn answering(reply: &'static str) -> Fake {
        Fake::new(HELLO, Some(reply))
    }

    /// The request line the client sent.
    fn request(mut self) -> String {
        self.thread.take().unwrap().join().expect("fake daemon")
    }
}

const STATUS: &str = r#"{"ok":true,"version":"0.3.0","pid":1234,"uptime_s":3600,"settings":{"access_log":"/var/log/xray/access.log","proto":"tcp","dport":[443],"window_s":5,"timeout_s":60,"limit":1,"limits_file":null,"dry_run":false},"counters":{"lines":10,"bans":1},"users_online":1,"keys_online":1,"online":[{"user":"alice@example.com","keys":["192.0.2.1"]}],"bans":[{"addr":"192.0.2.7","user":"alice@example.com","reason":"limit","remaining_s":52,"since_s":8,"origin":["192.0.2.1"],"note":null}]}"#;

#[test]
fn status_json_is_the_reply_on_one_line() {
    let fake = Fake::answering(STATUS);
    let o = client(&fake.sock, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{STATUS}\n"));
    assert_eq!(fake.request(), r#"{"cmd":"status"}"#);
}

#[test]
fn status_text_for_people() {
    let fake = Fake::answering(STATUS);
    let o = client(&fake.sock, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("refract 0.3.0, pid 1234, up 1h\n"), "{out}");
    assert!(out.contains("  dport        443\n"), "{out}");
    assert!(
        out.contains("online: 1 users, 1 keys\n  alice@example.com  192.0.2.1\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "bans: 1\n  ADDR       USER               REASON  REMAINING  SINCE   NOTE\n  \
             192.0.2.7  alice@example.com  limit   52s        8s ago\n"
        ),
        "{out}"
    );
}

#[test]
fn ban_sends_its_flags() {
    let fake = Fake::answering(r#"{"ok":true,"addr":"192.0.2.7","key":"192.0.2.7","for_s":7200}"#);
    let o = client(
        &fake.sock,
        &[
            "ban",
            "192.0.2.7",
            "--for",
            "2h",
            "--reason",
            "abuse ticket 17",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "banned 192.0.2.7 (key 192.0.2.7) for 2h\n");
    assert_eq!(
        fake.request(),
        r#"{"cmd":"ban","addr":"192.0.2.7","for_s":7200,"reason":"abuse ticket 17"}"#
    );
}

#[test]
fn unban_of_what_is_not_banned_is_not_found() {
    let fake = Fake::answering(
        r#"{"ok":false,"error":"not banned: 192.0.2.7, 2001:db8:1::/64","code":"not_found"}"#,
    );
    let o = client(&fake.sock, &["unban", "192.0.2.7", "2001:db8:1::/64"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "refract: not banned: 192.0.2.7, 2001:db8:1::/64\n"
    );
    assert_eq!(stdout(&o), "");
    assert_eq!(
        fake.request(),
        r#"{"cmd":"unban","addrs":["192.0.2.7","2001:db8:1::/64"]}"#
    );
}

#[test]
fn unknown_user_is_not_found_also_in_json() {
    const REPLY: &str =
        r#"{"ok":false,"error":"unknown user nobody@example.com","code":"not_found"}"#;
    let fake = Fake::answering(REPLY);
    let o = client(&fake.sock, &["user", "nobody@example.com", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{REPLY}\n"));
    assert_eq!(
        fake.request(),
        r#"{"cmd":"user","email":"nobody@example.com"}"#
    );
}

#[test]
fn a_failed_reload_exits_1() {
    let fake = Fake::answering(
        r#"{"ok":false,"code":"failed","error":"limits file /etc/refract/limits: line 3: invalid limit \"x\""}"#,
    );
    let o = client(&fake.sock, &["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "refract: limits file /etc/refract/limits: line 3: invalid limit \"x\"\n"
    );
    assert_eq!(fake.request(), r#"{"cmd":"reload"}"#);
    let fake = Fake::answering(r#"{"ok":true,"limits":12}"#);
    let o = client(&fake.sock, &["reload"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "reloaded: 12 per-user limits\n");
    let fake = Fake::answering(r#"{"ok":true,"unbanned":["192.0.2.7"]}"#);
    let o = client(&fake.sock, &["unban", "--all"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(fake.request(), r#"{"cmd":"unban","all":true}"#);
}

#[test]
fn invalid_input_is_a_usage_error_before_anything_is_sent() {
    // No socket at all: a usage error must not even get to "not running".
    let dir = TempDir::new("control-usage");
    let sock = dir.path("control.sock");
    for args in [
        &["ban", "192.0.2.300"][..],
        &["ban", "192.0.2.7", "--for", "5x"],
        &["ban", "192.0.2.7", "--for", "30d"],
        &["unban"],
        &["unban", "--all", "--user", "a"],
        &["user"],
        &["status", "extra"],
        &["status", "--dport", "443"],
    ] {
        let o = client(&sock, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("refract: ") && err.lines().count() == 1,
            "{err}"
        );
    }
}

#[test]
fn no_daemon_is_exit_4_with_one_line() {
    let dir = TempDir::new("control-none");
    let sock = dir.path("control.sock");
    for cmd in [
        &["status"][..],
        &["user", "a@b"],
        &["ban", "192.0.2.7"],
        &["reload"],
    ] {
        let o = client(&sock, cmd);
        assert_eq!(o.status.code(), Some(4), "{cmd:?}");
        assert_eq!(
            stderr(&o),
            format!(
                "refract is not running (no control socket at {})\n",
                sock.display()
            )
        );
        assert_eq!(stdout(&o), "");
    }
    // A stale socket of a killed daemon: the file is there, nobody listens.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let o = client(&sock, &["status"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).starts_with("refract is not running"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_control_socket_comes_from_the_environment_too() {
    let fake = Fake::answering(r#"{"ok":true,"limits":0}"#);
    let o = Command::new(BIN)
        .args(["reload", "--env-file=none"])
        .env("REFRACT_CONTROL", &fake.sock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fake.request(), r#"{"cmd":"reload"}"#);
    // ... and from the environment file.
    let fake = Fake::answering(r#"{"ok":true,"limits":0}"#);
    let dir = TempDir::new("control-envfile");
    let env = dir.path("refract.env");
    std::fs::write(
        &env,
        format!("REFRACT_CONTROL=\"{}\"\n", fake.sock.display()),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("reload").arg("--env-file").arg(&env);
    cmd.env_remove("REFRACT_CONTROL");
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fake.request(), r#"{"cmd":"reload"}"#);
}

#[test]
fn another_protocol_is_refused() {
    let fake = Fake::new(
        r#"{"refract":"9.0.0","protocol":2}"#,
        Some(r#"{"ok":true}"#),
    );
    let o = client(&fake.sock, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("the daemon speaks protocol 2 (refract 9.0.0), this refract speaks 1"),
        "{err}"
    );
    // It sent nothing: the fake reads end of file.
    assert_eq!(fake.request(), "");
}

#[test]
fn a_stuck_daemon_is_given_up_on() {
    let fake = Fake::new(HELLO, None);
    let start = Instant::now();
    let o = client(&fake.sock, &["status"]);
    let took = start.elapsed();
    eprintln!("stuck daemon: the client gave up after {took:?}");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no reply on") && stderr(&o).contains("within 5s"),
        "{}",
        stderr(&o)
    );
    // The client's bound is 5 s for the whole exchange; the fake would
    // hold the connection for 30 s.
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert!(took < Duration::from_secs(5) + PROMPT, "{took:?}");
    assert_eq!(fake.request(), r#"{"cmd":"status"}"#);
}

#[test]
fn a_socket_that_refuses_us_is_exit_4_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("control-denied");
    let sock = dir.path("control.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    // The daemon's socket is 0660 root:refract; 0600 keeps everyone but the
    // owner out.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = if crate::support::is_root() {
        // Root passes every permission check: ask as nobody.
        if !crate::support::have_tool("setpriv") {
            crate::support::skip("running as root without setpriv(1) to drop to nobody");
            return;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let o = cmd
        .args(["status", "--env-file=none", "--control"])
        .arg(&sock)
        .env_remove("REFRACT_CONTROL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "refract: permission denied on {}: run as root or as a member of group refract\n",
            sock.display()
        )
    );
}
