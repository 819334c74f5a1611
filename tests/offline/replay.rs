//! `refract replay` as an operator runs it: the real binary on real logs.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::support::daemon::BIN;
use crate::support::TempDir;

fn bin() -> Command {
    Command::new(BIN)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run refract")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn mixed_sample_has_exactly_one_ban() {
    let f = fixture("mixed.log");
    let o = run(&["replay", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "2026/11/21 10:00:04 disallowed concurrent connection from 192.0.2.44 \
         w/ origin 198.51.100.23 [vless-in >> direct] email: alice@example.com\n"
    );
    let err = stderr(&o);
    assert!(err.contains("16 lines"), "{err}");
    assert!(err.contains("1 bans"), "{err}");
}

#[test]
fn explain_shows_every_line_and_every_skip_reason() {
    let f = fixture("mixed.log");
    let o = run(&["replay", "--explain", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 16, "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("{} ", i + 1)), "line {}: {l}", i + 1);
    }
    let want = [
        "1 skipped:not-access",
        "2 skipped:not-access",
        "3 admitted 198.51.100.23 alice@example.com",
        "4 skipped:no-email 127.0.0.1",
        "5 refreshed 198.51.100.23 alice@example.com",
        "6 skipped:not-access",
        "7 skipped:no-email",
        "8 admitted 2001:db8:5:6::/64 12.bob",
        "9 refreshed 2001:db8:5:6::/64 12.bob",
        "10 skipped:rejected 203.0.113.76",
        "11 skipped:xff-port0 203.0.113.9 carol",
        "12 skipped:unspecified carol",
        "13 skipped:masked carol",
        "14 banned 192.0.2.44 alice@example.com origin=198.51.100.23",
        "15 refreshed 198.51.100.23 alice@example.com",
        "16 admitted 192.0.2.45 alice@example.com",
    ];
    for (got, want) in lines.iter().zip(want) {
        assert_eq!(*got, want);
    }
    // Offline there is no kernel to ask: replay says its verdicts are the
    // window rule's alone, before anything else.
    let err = stderr(&o);
    assert!(
        err.starts_with("replay: liveness is not available offline"),
        "{err}"
    );
}

#[test]
fn v2ray_sample_parses_fully() {
    let f = fixture("v2ray-4.34.log");
    let o = run(&["replay", "--explain", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        !out.contains("not-access"),
        "every V2Ray line is an access line:\n{out}"
    );
    assert!(
        out.contains("1 admitted 198.51.100.23 alice@example.com"),
        "{out}"
    );
    assert!(out.contains("3 admitted 2001:db8:5:6::/64 bob"), "{out}");
    assert!(out.contains("4 skipped:rejected"), "{out}");
    assert!(
        out.contains("5 banned 192.0.2.44 alice@example.com origin=198.51.100.23"),
        "{out}"
    );
    assert!(
        out.contains("6 admitted 203.0.113.5 dave"),
        "the old `email:dave ` form: {out}"
    );
}

#[test]
fn stdin_and_settings() {
    // Limit 2 on stdin: the same log bans nobody.
    let f = std::fs::read(fixture("mixed.log")).unwrap();
    let mut child = bin()
        .args(["replay", "--limit=2", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&f).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("0 bans"), "{}", stderr(&o));

    // A window of 1s: 192.0.2.44 comes 2.7 s after 198.51.100.23 and is
    // admitted; 198.51.100.23 returning 0.5 s later is now the newcomer.
    let o = run(&[
        "replay",
        "--window=1s",
        fixture("mixed.log").to_str().unwrap(),
    ]);
    assert_eq!(
        stdout(&o),
        "2026/11/21 10:00:04 disallowed concurrent connection from 198.51.100.23 \
         w/ origin 192.0.2.44 [inbound-127.0.0.1:3010 >> direct] email: alice@example.com\n"
    );

    // Allowlisting the newcomer.
    let o = run(&[
        "replay",
        "--allow=192.0.2.0/24",
        fixture("mixed.log").to_str().unwrap(),
    ]);
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("allowlisted 2"), "{}", stderr(&o));
}

#[test]
fn errors_are_one_line_with_exit_codes() {
    let o = run(&["replay", "/nonexistent/access.log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("refract: replay: /nonexistent/access.log: "),
        "{}",
        stderr(&o)
    );
    let o = run(&["replay", "--window=soon", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1);
    assert!(stderr(&o).contains("--window"));
}

#[test]
fn garbage_and_long_lines_are_counted_not_fatal() {
    let dir = TempDir::new("replay");
    let path = dir.path("garbage.log");
    let mut data = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push((x >> 24) as u8);
    }
    data.extend_from_slice(b"\n");
    data.extend(std::iter::repeat(b'a').take(200_000));
    data.extend_from_slice(
        b"\n2026/11/21 10:00:01 from 198.51.100.1:1 accepted tcp:x:443 [in >> out] email: u\n",
    );
    std::fs::write(&path, &data).unwrap();
    let o = run(&["replay", "--explain", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("skipped:too-long"),
        "the 200 kB line is skipped"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .ends_with("admitted 198.51.100.1 u"),
        "{out}"
    );
}

/// Clock jumps in the input (a fault of the log, not of the daemon): set
/// back, forward by a day, lines a few milliseconds out of order.
#[test]
fn replay_survives_clock_jumps() {
    let line = |ts: &str, ip: &str, user: &str| {
        format!(
            "{ts} from {ip}:5000 accepted tcp:example.com:443 [vless-in >> direct] email: {user}\n"
        )
    };
    let log: String = [
        line("2026/11/21 10:00:00", "198.51.100.1", "alice"),
        // The clock is set back an hour: treated as no time passing.
        line("2026/11/21 09:00:01", "198.51.100.2", "bob"),
        line("2026/11/21 09:00:03", "198.51.100.3", "bob"),
        // Half an hour later (in log time after the jump): alice's first
        // address, seen "in the future", has expired; a naive clock
        // would still count it online and ban this one.
        line("2026/11/21 09:30:00", "198.51.100.4", "alice"),
        line("2026/11/21 09:30:02", "198.51.100.5", "alice"),
        // Lines a few milliseconds out of order are not a jump.
        line("2026/11/21 09:30:02.500000", "198.51.100.6", "carol"),
        line("2026/11/21 09:30:02.400000", "198.51.100.6", "carol"),
        // Forward by a day: everything expired, nobody banned for it.
        line("2026/11/22 09:30:03", "198.51.100.4", "alice"),
        line("2026/11/22 09:30:04", "198.51.100.2", "bob"),
        line("2026/11/22 09:30:05", "198.51.100.7", "alice"),
    ]
    .concat();
    let dir = TempDir::new("fault-clock");
    let f = dir.path("access.log");
    std::fs::write(&f, &log).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .arg("replay")
            .args(args)
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let (out, err) = run(&["--window=5s", "--timeout=1m"]);
    assert_eq!(
        out,
        "2026/11/21 09:00:03 disallowed concurrent connection from 198.51.100.3 \
         w/ origin 198.51.100.2 [vless-in >> direct] email: bob\n\
         2026/11/21 09:30:02 disallowed concurrent connection from 198.51.100.5 \
         w/ origin 198.51.100.4 [vless-in >> direct] email: alice\n\
         2026/11/22 09:30:05 disallowed concurrent connection from 198.51.100.7 \
         w/ origin 198.51.100.4 [vless-in >> direct] email: alice\n"
    );
    assert_eq!(
        err,
        "replay: 10 lines, 10 counted, 0 skipped, 3 users, 3 bans\n"
    );
    let (explain, _) = run(&["--window=5s", "--timeout=1m", "--explain"]);
    assert_eq!(
        explain,
        "1 admitted 198.51.100.1 alice\n\
         2 admitted 198.51.100.2 bob\n\
         3 banned 198.51.100.3 bob origin=198.51.100.2\n\
         4 admitted 198.51.100.4 alice\n\
         5 banned 198.51.100.5 alice origin=198.51.100.4\n\
         6 admitted 198.51.100.6 carol\n\
         7 refreshed 198.51.100.6 carol\n\
         8 admitted 198.51.100.4 alice\n\
         9 admitted 198.51.100.2 bob\n\
         10 banned 198.51.100.7 alice origin=198.51.100.4\n"
    );
}

/// The audit line is refract 0.2's, byte for byte, for the bracket shapes
/// Xray writes. 0.2 printed `log.Printf("disallowed concurrent connection
/// from %s w/ origin %s [%s] email: %s\n", ip, lastIP, tag, email)` with
/// `tag` the text between the line's first `[` and first `]` (`unknown`
/// without), under `log`'s default `2006/01/02 15:04:05 ` prefix; replay
/// writes the line's own time there.
#[test]
fn audit_lines_are_refract_0_2s_for_every_bracket_shape() {
    let shapes = [
        ("[vless-in >> direct]", "vless-in >> direct"),
        ("[direct]", "direct"),
        ("[vless-in -> block]", "vless-in -> block"),
        (
            "[VLESS TCP REALITY ==> direct]",
            "VLESS TCP REALITY ==> direct",
        ),
        (
            "[inbound-127.0.0.1:3010 >> direct]",
            "inbound-127.0.0.1:3010 >> direct",
        ),
        ("", "unknown"),
    ];
    let mut log = String::new();
    let mut want = String::new();
    for (i, (bracket, tag)) in shapes.iter().enumerate() {
        let user = format!("u{i}");
        let sp = if bracket.is_empty() { "" } else { " " };
        for (s, ip) in [(0, "198.51.100.1"), (1, "203.0.113.1")] {
            log.push_str(&format!(
                "2026/11/21 10:0{i}:0{s} from {ip}:5000{s} accepted tcp:example.com:443{sp}{bracket} \
                 email: {user}\n"
            ));
        }
        want.push_str(&format!(
            "2026/11/21 10:0{i}:01 disallowed concurrent connection from 203.0.113.1 w/ origin \
             198.51.100.1 [{tag}] email: {user}\n"
        ));
    }
    let dir = TempDir::new("audit-shapes");
    let f = dir.path("access.log");
    std::fs::write(&f, &log).unwrap();
    let o = run(&["replay", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), want, "log:\n{log}");
}
