//! The hook scripts refract ships (`packaging/hooks/`), against a real
//! local HTTP receiver on loopback (`receiver.py`): the webhook's HMAC is
//! verified, a 503 with Retry-After is retried, a replayed request and a
//! tampered one are rejected; the real daemon delivers its ban through the
//! webhook; the Telegram notifier coalesces a burst of events into fewer
//! messages, spaced by its interval. Skips without python3, curl or
//! openssl.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::daemon::{access_line, append, Daemon};
use crate::support::{have_tool, skip, wait_until, TempDir, PROMPT};

const RECEIVER: &str = include_str!("receiver.py");

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/hooks")
        .join(name)
}

/// The receiver, its port, and everything it logged so far.
struct Receiver {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(dir: &TempDir, fail_first: u32) -> Receiver {
        let py = dir.path("receiver.py");
        std::fs::write(&py, RECEIVER).unwrap();
        let mut child = Command::new("python3")
            .arg(&py)
            .arg(dir.path("secret"))
            .arg(fail_first.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first.trim().strip_prefix("port ").unwrap().parse().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Receiver { child, port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools() -> bool {
    for t in ["python3", "curl", "openssl"] {
        if !have_tool(t) {
            skip(&format!("{t} not installed"));
            return false;
        }
    }
    true
}

const EVENT: &str = r#"{"event":"ban","addr":"198.51.100.12","user":"alice@example.com","origin":["192.0.2.11"],"tag":"vless-in >> direct","duration_s":60,"reason":"limit","time":"2026/12/01 12:00:00"}"#;

#[test]
fn the_webhook_signs_retries_and_cannot_be_replayed() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("hook-webhook");
    std::fs::write(dir.path("secret"), "s3cret-of-the-operator\n").unwrap();
    let rx = Receiver::start(&dir, 1);
    let url = format!("http://127.0.0.1:{}/hook", rx.port);
    // Run as refract runs it: the event on stdin. Trace curl to capture
    // the request for the replay below.
    let mut child = Command::new(script("webhook"))
        .args([&url, dir.path("secret").to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(EVENT.as_bytes())
        .unwrap();
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let took = t.elapsed();
    let lines = rx.lines();
    eprintln!("webhook: {took:?}, receiver: {lines:?}");
    assert_eq!(lines[0], "busy", "{lines:?}");
    // Retry-After: 1 was honoured.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let delivered = lines
        .iter()
        .find_map(|l| l.strip_prefix("delivered "))
        .expect("no delivery");
    let (id, body) = delivered.split_once(' ').unwrap();
    assert_eq!(body, EVENT);

    // A replay of a good request (same id, timestamp, signature) and a
    // tampered body are both refused.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sign = |id: &str, ts: &str, body: &str| {
        let mut c = Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", "s3cret-of-the-operator", "-r"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        write!(c.stdin.take().unwrap(), "{id}.{ts}.{body}").unwrap();
        let out = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let post = |id: &str, ts: &str, sig: &str, body: &str| -> String {
        let o = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(["-H", &format!("X-Refract-Id: {id}")])
            .args(["-H", &format!("X-Refract-Timestamp: {ts}")])
            .args(["-H", &format!("X-Refract-Signature: sha256={sig}")])
            .args(["--data-binary", body, &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let fresh = "0123456789abcdef0123456789abcdef";
    assert_eq!(post(fresh, &ts, &sign(fresh, &ts, EVENT), EVENT), "200");
    assert_eq!(
        post(fresh, &ts, &sign(fresh, &ts, EVENT), EVENT),
        "409",
        "replay"
    );
    let other = "fedcba9876543210fedcba9876543210";
    let tampered = EVENT.replace("198.51.100.12", "198.51.100.13");
    assert_eq!(post(other, &ts, &sign(other, &ts, EVENT), &tampered), "401");
    // The script's own id cannot be used again either.
    let _ = id;
}

#[test]
fn the_daemon_delivers_its_ban_through_the_webhook() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("hook-daemon");
    std::fs::write(dir.path("secret"), "daemon-secret\n").unwrap();
    let rx = Receiver::start(&dir, 0);
    let hook = format!(
        "--on-ban={} http://127.0.0.1:{}/hook {}",
        script("webhook").display(),
        rx.port,
        dir.path("secret").display()
    );
    let d = Daemon::start(&dir, &[&hook]);
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    let got = wait_until(PROMPT, "the ban at the receiver", || {
        rx.lines().into_iter().find(|l| l.starts_with("delivered "))
    });
    assert!(
        got.contains(r#""event":"ban","addr":"198.51.100.12","user":"alice@example.com""#),
        "{got}"
    );
}

#[test]
fn telegram_coalesces_a_burst_into_few_spaced_messages() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("hook-telegram");
    std::fs::write(dir.path("secret"), "unused\n").unwrap();
    std::fs::write(dir.path("token"), "123:abc\n").unwrap();
    let rx = Receiver::start(&dir, 0);
    let api = format!("http://127.0.0.1:{}", rx.port);
    let spool = dir.path("spool");
    // Ten events at once, as ten hook processes (refract runs them side by
    // side, up to --hook-max).
    let mut kids = Vec::new();
    for i in 0..10 {
        let mut c = Command::new(script("telegram"))
            .args([
                dir.path("token").to_str().unwrap(),
                "-100123",
                "1",
                spool.to_str().unwrap(),
                &api,
            ])
            .env("REFRACT_EVENT", "ban")
            .env("REFRACT_ADDR", format!("203.0.113.{i}"))
            .env("REFRACT_USER", "alice@example.com")
            .env("REFRACT_REASON", "limit")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(EVENT.as_bytes()).unwrap();
        kids.push(c);
    }
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let msgs: Vec<String> = rx
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("telegram "))
        .collect();
    eprintln!("telegram messages: {msgs:#?}");
    assert!(
        !msgs.is_empty() && msgs.len() < 10,
        "not coalesced: {msgs:?}"
    );
    for i in 0..10 {
        let addr = format!("ban 203.0.113.{i} user alice@example.com (limit)");
        assert_eq!(
            msgs.iter().filter(|m| m.contains(&addr)).count(),
            1,
            "{addr} not sent exactly once: {msgs:?}"
        );
    }
    assert!(msgs.iter().all(|m| m.contains(" -100123 refract: ")));
    // Spaced by the interval (1 s).
    let times: Vec<u64> = msgs
        .iter()
        .map(|m| m.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= 900, "{times:?}");
    }
}
