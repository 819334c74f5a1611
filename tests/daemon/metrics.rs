//! Prometheus metrics of the real daemon (`--dry-run`): scraped over HTTP
//! as Prometheus would after a ban, an unban and a skipped line, the values
//! read back with a parser of the text format, the exposition checked by
//! `promtool check metrics` (Debian's, fetched by `scripts/deps.sh`;
//! skipped with the reason when it is not there); other paths 404; the
//! `--metrics-file` written atomically and only while something changes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::daemon::*;
use crate::support::{wait_until, TempDir, PROMPT};

/// `GET path` on `addr`: status code and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PROMPT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The text format's samples: `name{labels}` → value (comments skipped;
/// every other line must be `series value`).
fn samples(text: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{line}")),
        };
        assert!(m.insert(series.to_string(), v).is_none(), "twice: {series}");
    }
    m
}

#[test]
fn a_scrape_shows_what_happened_and_promtool_accepts_it() {
    let dir = TempDir::new("metrics");
    let d = Daemon::start(&dir, &["--metrics=127.0.0.1:0"]);
    let ready = d.wait_log("metrics http://");
    let addr = ready
        .split("metrics http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();

    // A ban, a skipped line (port 0), then a manual unban.
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    append(
        &d.access,
        "2026/01/30 17:03:38 from 203.0.113.9:0 accepted tcp:a.example:443 [in >> out] email: bob\n",
    );
    d.wait_audit(1, PROMPT);
    {
        use std::io::BufRead;
        let s = std::os::unix::net::UnixStream::connect(&d.control).unwrap();
        s.set_read_timeout(Some(PROMPT)).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap(); // hello
        (&s).write_all(b"{\"cmd\":\"unban\",\"addrs\":[\"198.51.100.12\"]}\n")
            .unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
    }

    let text = wait_until(PROMPT, "the skipped line counted", || {
        let (code, body) = get(&addr, "/metrics");
        assert_eq!(code, 200);
        body.contains("refract_log_skipped_lines_total{reason=\"xff-port0\"} 1")
            .then_some(body)
    });
    let m = samples(&text);
    let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(v("refract_log_lines_total{verdict=\"admitted\"}"), 1.0);
    assert_eq!(v("refract_log_lines_total{verdict=\"banned\"}"), 1.0);
    assert_eq!(v("refract_log_lines_total{verdict=\"skipped\"}"), 1.0);
    assert_eq!(v("refract_bans_total{reason=\"limit\"}"), 1.0);
    assert_eq!(v("refract_unbans_total{reason=\"manual\"}"), 1.0);
    assert_eq!(v("refract_bans_active{family=\"ipv4\"}"), 0.0);
    assert_eq!(v("refract_users_online"), 1.0);
    assert_eq!(v("refract_decision_latency_seconds_count"), 1.0);
    assert_eq!(
        v("refract_decision_latency_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(v("refract_log_lag_seconds") > 0.0);
    assert_eq!(
        v(&format!(
            "refract_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // No series carries a user or an address.
    assert!(
        !text.contains("alice") && !text.contains("192.0.2"),
        "{text}"
    );

    let (code, _) = get(&addr, "/");
    assert_eq!(code, 404);

    crate::support::promtool_check(&text);
}

#[test]
fn the_metrics_file_follows_changes_and_only_changes() {
    let dir = TempDir::new("metrics-file");
    let file = dir.path("refract.prom");
    let flag = format!("--metrics-file={}", file.display());
    let d = Daemon::start(&dir, &[&flag]);
    // Written at start.
    let first = wait_until(PROMPT, "the metrics file", || {
        std::fs::read_to_string(&file).ok()
    });
    assert!(
        first.contains("refract_log_lines_total{verdict=\"banned\"} 0"),
        "{first}"
    );
    append(&d.access, &access_line("alice@example.com", "192.0.2.11"));
    append(
        &d.access,
        &access_line("alice@example.com", "198.51.100.12"),
    );
    d.wait_audit(1, PROMPT);
    // Rewritten within the period (5 s) plus slack, atomically: every read
    // sees a whole exposition.
    let second = wait_until(
        Duration::from_secs(5) + PROMPT,
        "the file to show the ban",
        || {
            let t = std::fs::read_to_string(&file).ok()?;
            assert!(
                t.ends_with('\n') && t.contains("refract_wakeups_total"),
                "half a file: {t}"
            );
            t.contains("refract_log_lines_total{verdict=\"banned\"} 1")
                .then_some(t)
        },
    );
    // Nothing changes: the file is not rewritten.
    let at = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), at);
    assert!(!second.is_empty());
    drop(d);
}
