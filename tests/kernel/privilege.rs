//! Least privilege of the real daemon, started as root: after startup it
//! holds exactly the capabilities `src/privilege.rs` documents, read from
//! `/proc/PID/status` (CapEff, CapPrm, CapBnd, CapInh, CapAmb,
//! NoNewPrivs), and what it kept is enough: a ban lands in the set, and a
//! repair (set destroyed, DROP rule gone) recreates the set and re-runs
//! `iptables` with the dropped set. With a log owned by another user it
//! keeps `CAP_DAC_READ_SEARCH` and follows a rotation to a `0600` file of
//! that user. Skips when not root or tools are missing.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use crate::support::daemon::*;
use crate::support::netns::{Netns, FIREWALL};
use crate::support::rules;
use crate::support::{root_with, wait_until, TempDir, PROMPT};

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
/// `nobody`, the user Xray's unit runs as.
const NOBODY: u32 = 65534;

/// The `Cap*` masks and `NoNewPrivs` of `pid`.
fn caps(pid: u32) -> HashMap<String, u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = v.trim();
            if k.starts_with("Cap") {
                Some((k.to_string(), u64::from_str_radix(v, 16).ok()?))
            } else if k == "NoNewPrivs" {
                Some((k.to_string(), v.parse().ok()?))
            } else {
                None
            }
        })
        .collect()
}

fn assert_exactly(pid: u32, want: u64, log: &str) {
    let c = caps(pid);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(c[set], want, "{set}={:x}, want {want:x}: {log}", c[set]);
    }
    assert_eq!(c["CapInh"], 0, "{c:?}");
    assert_eq!(c["CapAmb"], 0, "{c:?}");
    assert_eq!(c["NoNewPrivs"], 1, "{c:?}");
}

#[test]
fn kernel_mode_keeps_net_admin_and_net_raw_and_still_repairs() {
    let Some(ns) = Netns::with_tools("privs", FIREWALL) else {
        return;
    };
    let dir = TempDir::new("bounds-privs");
    let mut d = Daemon::start_in(&ns, &dir, &["--dport=443", "--window=1h", "--timeout=1m"]);
    let access = d.access.clone();
    let pid = d.pid();
    let kept = d.wait_log("capabilities: kept");
    // cap_net_raw: iptables' set match needs a raw socket, even iptables-nft.
    let want = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW);
    assert_exactly(pid, want, &d.log());
    eprintln!("{kept}");

    // A ban still works.
    append(&access, &access_line("alice@example.com", "198.51.100.7"));
    append(&access, &access_line("alice@example.com", "203.0.113.9"));
    wait_until(PROMPT, "the ban in the set", || {
        let out = ns.ok(&["ipset", "list", "refract_banned_users"]);
        out.contains("203.0.113.9 timeout").then_some(())
    });

    // A repair: rule and set gone behind our back. The next ban recreates
    // the set and runs iptables again, with the capabilities we kept.
    let rule = rules::tcp4(443, "refract_banned_users");
    rules::delete(&ns, &rule);
    ns.ok(&["ipset", "destroy", "refract_banned_users"]);
    append(&access, &access_line("bob@example.com", "198.51.100.8"));
    append(&access, &access_line("bob@example.com", "203.0.113.10"));
    wait_until(PROMPT, "the set recreated with the ban", || {
        let out = ns.exec(&["ipset", "list", "refract_banned_users"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("203.0.113.10 timeout")
            .then_some(())
    });
    wait_until(PROMPT, "the DROP rule back", || {
        rules::present(&ns, &rule).then_some(())
    });
    assert!(d.log().contains("has been recreated"), "{}", d.log());
    assert!(!d.log().contains("firewall:"), "{}", d.log());
    // Still exactly the kept set after the repair.
    assert_exactly(pid, want, &d.log());

    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
}

#[test]
fn dry_run_keeps_nothing() {
    if root_with(&[]).is_none() {
        return;
    }
    let dir = TempDir::new("bounds-privs-dry");
    append(&dir.path("access.log"), "");
    let d = Daemon::start(&dir, &[]);
    d.wait_log("capabilities: kept none");
    assert_exactly(d.pid(), 0, &d.log());
}

#[test]
fn a_log_owned_by_the_proxy_user_keeps_dac_read_search() {
    if root_with(&[]).is_none() {
        return;
    }
    let dir = TempDir::new("bounds-privs-nobody");
    let access = dir.path("access.log");
    append(&access, "");
    std::os::unix::fs::chown(&dir.0, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(&access, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(&dir, &["--window=1h"]);
    d.wait_log("capabilities: kept");
    assert_exactly(d.pid(), 1 << CAP_DAC_READ_SEARCH, &d.log());

    // Rotation as Xray does it: a new 0600 file of the proxy's user.
    let next = dir.path("access.log.new");
    append(
        &next,
        &(access_line("carol@example.com", "198.51.100.9")
            + &access_line("carol@example.com", "203.0.113.11")),
    );
    std::os::unix::fs::chown(&next, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&next, &access).unwrap();
    let audit = d.wait_audit(1, PROMPT);
    assert!(audit[0].contains("from 203.0.113.11"), "{audit:?}");
}

/// Files the daemon creates are not world-readable (the audit log names
/// users): the audit log `0640`, its missing directory `0750`, whatever
/// the umask lets through (modes are upper bounds). Also after a SIGHUP
/// reopen, which runs with the capabilities dropped.
#[test]
fn created_files_have_restrictive_modes() {
    let dir = TempDir::new("bounds-modes");
    append(&dir.path("access.log"), "");
    let audit_dir = dir.path("audit");
    let audit = audit_dir.join("block.log");
    let d = Daemon::start_with(&dir, &dir.path("access.log"), &audit, &[], &["--dry-run"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&audit_dir), 0o750);
    assert_eq!(mode(&audit), 0o640);
    std::fs::rename(&audit, audit_dir.join("block.log.1")).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(PROMPT, "the reopened audit log", || {
        audit.exists().then_some(())
    });
    assert_eq!(mode(&audit), 0o640);
}

/// Under a unit that bounds the capabilities already (systemd's
/// `CapabilityBoundingSet=`), there is no `CAP_SETPCAP` to shrink the
/// bounding set further: what cannot go is left there, said in the log,
/// and still removed from every other set.
#[test]
fn without_setpcap_the_rest_still_goes() {
    if root_with(&["setpriv"]).is_none() {
        return;
    }
    let dir = TempDir::new("bounds-privs-unit");
    append(&dir.path("access.log"), "");
    let d = Daemon::start_with(
        &dir,
        &dir.path("access.log"),
        &dir.path("block.log"),
        &["setpriv", "--bounding-set=-all,+net_admin,+net_raw"],
        &["--dry-run"],
    );
    d.wait_log("capabilities: kept");
    let c = caps(d.pid());
    assert_eq!(c["CapEff"], 0, "{c:?}");
    assert_eq!(c["CapPrm"], 0, "{c:?}");
    assert_eq!(
        c["CapBnd"],
        (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW),
        "{c:?}"
    );
    assert_eq!(c["NoNewPrivs"], 1, "{c:?}");
    assert!(
        d.log()
            .contains("but cap_net_admin,cap_net_raw stay in the bounding set"),
        "{}",
        d.log()
    );
}
