//! The daemon's Prometheus metrics with the kernel enforcer in a throwaway
//! namespace, scraped there over HTTP after a ban (with an open connection
//! it kills), a manual unban and a skipped line: the counters' values and
//! the histograms' counts, read with a parser of the text format.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use crate::support::daemon::*;
use crate::support::netns::{wired, FIREWALL};
use crate::support::{wait_until, TempDir, PROMPT};

fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            let v = if v == "+Inf" {
                f64::INFINITY
            } else {
                v.parse().unwrap()
            };
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn a_scrape_in_the_namespace_counts_the_ban_the_kill_and_the_unban() {
    let Some((node, client)) = wired(
        ("metnode", "c0", &["192.0.2.1/24"]),
        FIREWALL,
        ("metcli", "n0", &["192.0.2.2/24"]),
    ) else {
        return;
    };
    node.ok(&["ip", "link", "set", "lo", "up"]);
    let dir = TempDir::new("kmetrics");
    let d = Daemon::start_in(&node, &dir, &["--dport=443", "--metrics=127.0.0.1:9433"]);
    // alice's first device, then her second with an open connection.
    let listener = node.in_netns(|| TcpListener::bind("0.0.0.0:443").unwrap());
    let conn = client.in_netns(|| TcpStream::connect("192.0.2.1:443").unwrap());
    let (_srv, _) = listener.accept().unwrap();
    let port = conn.local_addr().unwrap().port();
    append(&d.access, &access_line("alice@example.com", "198.51.100.7"));
    append(
        &d.access,
        &format!(
            "2026/01/30 17:03:38 from 192.0.2.2:{port} accepted tcp:a.example:443 [in >> out] \
             email: alice@example.com\n"
        ),
    );
    append(
        &d.access,
        "2026/01/30 17:03:38 from 203.0.113.9:0 accepted tcp:a.example:443 [in >> out] email: bob\n",
    );
    d.wait_log("ended 1 tcp connection(s)");
    let o = std::process::Command::new(BIN)
        .args([
            "unban",
            "192.0.2.2",
            &format!("--control={}", d.control.display()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let scrape = || {
        node.in_netns(|| {
            let mut s = TcpStream::connect("127.0.0.1:9433").unwrap();
            s.set_read_timeout(Some(PROMPT)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out.split_once("\r\n\r\n").unwrap().1.to_string()
        })
    };
    let text = wait_until(PROMPT, "the unban counted", || {
        let t = scrape();
        t.contains("refract_unbans_total{reason=\"manual\"} 1")
            .then_some(t)
    });
    let m = samples(&text);
    let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k}:\n{text}"));
    assert_eq!(v("refract_bans_total{reason=\"limit\"}"), 1.0);
    assert_eq!(v("refract_connections_killed_total{proto=\"tcp\"}"), 1.0);
    assert_eq!(
        v("refract_log_skipped_lines_total{reason=\"xff-port0\"}"),
        1.0
    );
    assert_eq!(v("refract_bans_active{family=\"ipv4\"}"), 0.0);
    assert_eq!(v("refract_decision_latency_seconds_count"), 1.0);
    // ipset ADD and DEL, the kill's lookups and dumps: all measured.
    assert!(v("refract_netlink_rtt_seconds_count") >= 3.0, "{text}");
    assert_eq!(
        v("refract_kernel_errors_total{subsystem=\"enforcer\"}"),
        0.0
    );
    drop(conn);
}
