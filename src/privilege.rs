//! Least privilege: which capabilities the daemon keeps once started, and
//! dropping the rest ([`crate::sys::caps::drop_to`]).
//!
//! Started as root (euid 0), after the sets exist, the DROP rules are in
//! place and both logs are open, the daemon keeps only:
//!
//! - `CAP_NET_ADMIN` (not with `--dry-run`): ipset, `SOCK_DESTROY` and
//!   conntrack over netlink, and `iptables` when a repair must put the DROP
//!   rule back (iptables-nft talks netlink too).
//! - `CAP_NET_RAW` with `--firewall iptables` (not with `none`): a repair
//!   re-runs `iptables -C`/`-I … -m set --match-set NAME`, and the `set`
//!   match's userspace half (libxt_set) resolves NAME through
//!   `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)` + `getsockopt(SO_IP_SET)`,
//!   whatever the variant: iptables-nft fails with "Can't open socket to
//!   ipset" without it (measured, `tests/bounds_privilege.rs`).
//!   iptables-legacy needs the same raw socket for libiptc anyway.
//! - `CAP_DAC_READ_SEARCH` only when the access log or its directory is
//!   owned by another user (Xray's unit runs as `nobody` and creates its
//!   log `0600`, `common/log/logger.go`): after a rotation the next file
//!   may be unreadable to root without it. Read access only; writing
//!   anywhere (`CAP_DAC_OVERRIDE`) is dropped, so the audit log must live
//!   in a directory root owns (the default `/var/log/refract` does) for its
//!   reopening after rotation to work.
//!
//! Everything else goes, from the bounding set too, and `no_new_privs` is
//! set: an `iptables` spawned for a repair runs with exactly the kept set.
//! Not root (a unit with `User=` and ambient capabilities): nothing is
//! changed; the unit's bounding set is the limit then.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::{Config, FirewallMode};
use crate::sys::caps::{self, CAP_DAC_READ_SEARCH, CAP_NET_ADMIN, CAP_NET_RAW};

/// What the daemon needs, and why (for the log line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub mask: u64,
    pub reasons: Vec<String>,
}

/// Facts about the system the decision depends on (gathered by
/// [`probe`]; separate so the decision is testable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Owner of the access log, or of its directory when it does not exist
    /// yet: `Some(uid)` if someone other than us owns either.
    pub log_foreign_owner: Option<u32>,
}

/// The capabilities `cfg` needs after startup, given `facts`.
pub fn needs(cfg: &Config, facts: &Facts) -> Needs {
    let mut n = Needs::default();
    if !cfg.dry_run {
        n.mask |= 1 << CAP_NET_ADMIN;
        n.reasons
            .push("cap_net_admin for ipset, sock_diag, conntrack and iptables-nft".into());
        if matches!(cfg.firewall, FirewallMode::Iptables | FirewallMode::Auto) {
            n.mask |= 1 << CAP_NET_RAW;
            n.reasons.push(
                "cap_net_raw for iptables' set match when a repair re-installs the DROP rule"
                    .into(),
            );
        }
    }
    if let Some(uid) = facts.log_foreign_owner {
        n.mask |= 1 << CAP_DAC_READ_SEARCH;
        n.reasons.push(format!(
            "cap_dac_read_search to read {} (owned by uid {uid}) after rotations",
            cfg.access_log.display()
        ));
    }
    n
}

/// Owner of `path` if it is not `me`.
fn foreign(path: &Path, me: u32) -> Option<u32> {
    let uid = std::fs::metadata(path).ok()?.uid();
    (uid != me).then_some(uid)
}

/// Looks at the system: the access log's owner and its directory's.
pub fn probe(cfg: &Config) -> Facts {
    let me = caps::euid();
    let dir = cfg
        .access_log
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Facts {
        log_foreign_owner: foreign(&cfg.access_log, me).or_else(|| foreign(dir, me)),
    }
}

/// Started as root: drops every capability but the needed ones and returns
/// the line to log; `Ok(None)` when not root (nothing to do).
pub fn drop_after_startup(cfg: &Config) -> std::io::Result<Option<String>> {
    if caps::euid() != 0 {
        return Ok(None);
    }
    let needs = needs(cfg, &probe(cfg));
    let d = caps::drop_to(needs.mask)?;
    let bounding = if d.bounding_left == 0 {
        "the bounding set included".to_string()
    } else {
        format!(
            "but {} stay in the bounding set (no cap_setpcap to drop them)",
            caps::names(d.bounding_left)
        )
    };
    let line = format!(
        "capabilities: kept {} ({}); dropped the rest, {bounding}; no_new_privs set",
        caps::names(d.kept),
        if needs.reasons.is_empty() {
            "nothing needed".to_string()
        } else {
            needs.reasons.join("; ")
        }
    );
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dry_run: bool, firewall: FirewallMode) -> Config {
        let args = crate::cli::parse_args(&["--dry-run".to_string()])
            .unwrap()
            .1;
        let getenv = |_: &str| None;
        let mut c = crate::cli::build_config(
            crate::cli::Command::Daemon,
            &args,
            &crate::cli::Env::new(&getenv),
        )
        .unwrap();
        c.dry_run = dry_run;
        c.firewall = firewall;
        c
    }

    #[test]
    fn net_admin_always_net_raw_only_when_refract_runs_iptables() {
        let f = Facts::default();
        let k = cfg(false, FirewallMode::Iptables);
        assert_eq!(
            needs(&k, &f).mask,
            (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
        );
        // The operator's rule: refract never runs iptables.
        let none = cfg(false, FirewallMode::None);
        assert_eq!(needs(&none, &f).mask, 1 << CAP_NET_ADMIN);
        // --dry-run touches nothing in the kernel.
        assert_eq!(needs(&cfg(true, FirewallMode::Iptables), &f).mask, 0);
    }

    #[test]
    fn dac_read_search_only_for_a_log_someone_else_owns() {
        let k = cfg(false, FirewallMode::Iptables);
        let f = Facts {
            log_foreign_owner: Some(65534),
        };
        let n = needs(&k, &f);
        assert_eq!(
            n.mask,
            (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_DAC_READ_SEARCH)
        );
        assert!(n.reasons[2].contains("uid 65534"), "{:?}", n.reasons);
    }
}
