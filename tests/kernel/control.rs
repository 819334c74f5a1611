//! The control commands as an operator runs them (`refract status`,
//! `user`, `ban`, `unban`, `--json`) against the real daemon with the
//! kernel enforcer in a throwaway namespace; the kernel (`ipset test`) and
//! the client's own socket are the witnesses. A ban by hand lands in the
//! set and ends an open connection; an unban takes it out of the set and
//! the daemon judges the address afresh; a restart keeps a manual ban and
//! does not bring back a lifted one.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use refract::control::json::{parse, Value};

use crate::support::daemon::*;
use crate::support::netns::{wired, Netns, FIREWALL};
use crate::support::{wait_until, TempDir, PROMPT};

const S4: &str = "refract_banned_users";

/// `refract ARGS --json --control SOCK` (a client command: no namespace
/// needed, the socket is a file); its exit code and parsed reply.
fn ctl(control: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let o = std::process::Command::new(BIN)
        .args(args)
        .arg("--json")
        .arg(format!("--control={}", control.display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let v = parse(out.trim().as_bytes()).unwrap_or_else(|e| {
        panic!(
            "refract {args:?}: {e}: {out} / {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

fn in_set(ns: &Netns, addr: &str) -> bool {
    ns.exec(&["ipset", "test", S4, addr]).status.success()
}

fn ban_reasons(status: &Value) -> Vec<(String, String)> {
    status
        .get("bans")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|b| {
            let s = |k| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("addr"), s("reason"))
        })
        .collect()
}

#[test]
fn ban_unban_status_and_restart_in_the_kernel() {
    let Some((node, client)) = wired(
        ("ctlnode", "c0", &["192.0.2.1/24"]),
        FIREWALL,
        ("ctlcli", "n0", &["192.0.2.2/24", "192.0.2.3/24"]),
    ) else {
        return;
    };
    let dir = TempDir::new("kctl");
    let flags = ["--dport=443", "--window=2s", "--timeout=1m"];
    let mut d = Daemon::start_in(&node, &dir, &flags);
    let control = d.control.clone();

    // An open connection from 192.0.2.2 to node:443.
    let listener = node.in_netns(|| TcpListener::bind("0.0.0.0:443").unwrap());
    let mut conn = client.in_netns(|| TcpStream::connect("192.0.2.1:443").unwrap());
    let (_server_side, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(PROMPT)).unwrap();

    // A ban by hand: in the set, the connection ended (RST), listed.
    let (code, r) = ctl(&control, &["ban", "192.0.2.2", "--reason", "ticket 17"]);
    assert_eq!(code, 0, "{r:?}");
    assert!(in_set(&node, "192.0.2.2"));
    let mut buf = [0u8; 1];
    let got = conn.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the open connection was not reset: {got:?}"
    );
    let (code, s) = ctl(&control, &["status"]);
    assert_eq!(code, 0);
    assert!(
        ban_reasons(&s).contains(&("192.0.2.2".into(), "manual".into())),
        "{s:?}"
    );

    // A violation from the log; unban lifts it from the set and the
    // policy: alone later, the same address is admitted.
    append(&d.access, &access_line("alice@example.com", "198.51.100.7"));
    append(&d.access, &access_line("alice@example.com", "203.0.113.9"));
    wait_until(PROMPT, "the violation in the set", || {
        in_set(&node, "203.0.113.9").then_some(())
    });
    let (code, r) = ctl(&control, &["unban", "203.0.113.9"]);
    assert_eq!(code, 0, "{r:?}");
    assert!(!in_set(&node, "203.0.113.9"));
    let (code, _) = ctl(&control, &["unban", "203.0.113.9"]);
    assert_eq!(code, 3, "unbanning what is not banned: not found");
    std::thread::sleep(Duration::from_millis(2_500)); // alice's window
    append(&d.access, &access_line("alice@example.com", "203.0.113.9"));
    let u = wait_until(PROMPT, "203.0.113.9 admitted afresh", || {
        let (code, u) = ctl(&control, &["user", "alice@example.com"]);
        assert_eq!(code, 0, "{u:?}");
        let line = u.to_line();
        line.contains("\"key\":\"203.0.113.9\",\"state\":\"admitted\"")
            .then_some(line)
    });
    assert!(!in_set(&node, "203.0.113.9"), "banned again: {u}");

    // Restart: the manual ban is read back from the set, the lifted one
    // stays lifted.
    let (code, _) = ctl(&control, &["ban", "192.0.2.3"]);
    assert_eq!(code, 0);
    let (code, _) = ctl(&control, &["unban", "192.0.2.3"]);
    assert_eq!(code, 0);
    let (st, _) = d.terminate();
    assert!(st.success(), "{}", d.log());
    let d2 = Daemon::start_in(&node, &dir, &flags);
    let (code, s) = ctl(&d2.control, &["status"]);
    assert_eq!(code, 0);
    let bans = ban_reasons(&s);
    assert!(
        bans.contains(&("192.0.2.2".into(), "restored".into())),
        "{bans:?}"
    );
    assert!(!bans.iter().any(|(a, _)| a == "192.0.2.3"), "{bans:?}");
    assert!(in_set(&node, "192.0.2.2") && !in_set(&node, "192.0.2.3"));
}
