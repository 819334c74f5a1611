//! The real daemon with the kernel enforcer, inside a throwaway network
//! namespace (never the host's firewall): a violating line appended to the
//! log puts the address into the ipset within milliseconds, the DROP rule
//! is in place, and SIGTERM still exits 0. Skips when not root or when
//! `ip`, `ipset` or `iptables` are missing.

mod common;
mod daemon_util;

use std::time::{Duration, Instant};

use common::netns::{have_tool, Netns};
use daemon_util::*;

#[test]
fn violation_lands_in_the_ipset() {
    for tool in ["ipset", "iptables", "ip6tables"] {
        if !have_tool(tool, &["--version"]) {
            eprintln!("skip: `{tool}` not installed");
            return;
        }
    }
    let Some(ns) = Netns::new("daemon") else {
        return;
    };
    let dir = TempDir::new("kernel");
    let access = dir.path("access.log");
    let block = dir.path("block.log");
    let stderr = dir.path("refract.stderr");
    append(&access, "");
    let cmd = format!(
        "REFRACT_LOG=stderr exec {BIN} --dport=443 --window=1h --timeout=1m \
         --access.log={} --block.log={} 2>{}",
        access.display(),
        block.display(),
        stderr.display()
    );
    let mut child = ns.spawn(&["sh", "-c", &cmd]);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    wait_until(Duration::from_secs(10), "the startup line", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("refract exited at startup ({st}): {}", log());
        }
        log().contains(" following ").then_some(())
    });
    assert!(log().contains("enforcer kernel"), "{}", log());
    let rules = ns.ok(&["iptables", "-S", "INPUT"]);
    assert!(
        rules.contains("--match-set refract_banned_users src") && rules.contains("-j DROP"),
        "{rules}"
    );

    append(&access, &access_line("alice@example.com", "198.51.100.7"));
    let start = Instant::now();
    append(&access, &access_line("alice@example.com", "203.0.113.9"));
    let listed = wait_until(Duration::from_secs(5), "the ipset entry", || {
        let out = ns.ok(&["ipset", "list", "refract_banned_users"]);
        out.contains("203.0.113.9 timeout").then_some(out)
    });
    eprintln!("line to ipset entry in {:?}", start.elapsed());
    assert!(!listed.contains("198.51.100.7"), "{listed}");
    let audit = std::fs::read_to_string(&block).unwrap();
    assert!(
        audit.contains(
            "from 203.0.113.9 w/ origin 198.51.100.7 [vless-in] email: alice@example.com"
        ),
        "{audit}"
    );

    refract::sys::process::kill(child.id(), libc::SIGTERM).unwrap();
    let st = wait_until(Duration::from_secs(5), "exit", || child.try_wait().unwrap());
    assert_eq!(st.code(), Some(0), "{}", log());
    assert!(log().contains("enforcer_bans=1"), "{}", log());
}
