//! The validated configuration: what `cli` turns the command line (and the
//! `REFRACT_*` environment) into. Everything here has been checked; the
//! daemon and `replay` never see a raw string.

use std::path::PathBuf;
use std::time::Duration;

use crate::nl::ipset::{DEFAULT_MAXELEM, DEFAULT_SET_V4, DEFAULT_SET_V6};
use crate::policy::PolicyConfig;

/// Transport protocols the DROP rule and the connection killer cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protos {
    pub tcp: bool,
    pub udp: bool,
}

/// How the DROP rule is managed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirewallMode {
    /// `iptables`/`ip6tables` at startup, checked with `-C` first.
    Iptables,
    /// The operator writes the rule; refract only fills the sets.
    None,
    /// refract's own nftables table `inet refract` over nfnetlink
    /// (`crate::enforce::nftables`): sets, chain and rules, no ipset.
    Nftables,
    /// ipset when refract 0.2's set exists or `xt_set` works, else
    /// nftables (`crate::enforce::choose`).
    Auto,
}

impl FirewallMode {
    /// The `--firewall` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallMode::Iptables => "iptables",
            FirewallMode::None => "none",
            FirewallMode::Nftables => "nftables",
            FirewallMode::Auto => "auto",
        }
    }
}

/// The whole configuration. [`Config::default`] is what refract runs with
/// when no flag and no `REFRACT_*` variable is set: the one definition of
/// every default (`cli` falls back to it, `--help` and the README name it).
#[derive(Clone, Debug)]
pub struct Config {
    pub access_log: PathBuf,
    pub block_log: PathBuf,
    /// Per-user limits file (`EMAIL N` lines), re-read on SIGHUP.
    pub limits_file: Option<PathBuf>,
    pub protos: Protos,
    /// Inbound ports, deduplicated, in the order given.
    pub ports: Vec<u16>,
    pub window: Duration,
    pub timeout: Duration,
    /// Decision parameters (window, ban, limits, allowlist, confirm, caps),
    /// with the limits file already loaded.
    pub policy: PolicyConfig,
    pub dry_run: bool,
    /// Read the log from its beginning instead of its end.
    pub from_start: bool,
    pub firewall: FirewallMode,
    pub set_v4: String,
    pub set_v6: String,
    /// `maxelem` of the sets.
    pub set_size: u32,
    /// Longest log line accepted; longer lines are counted and skipped.
    pub max_line: usize,
    /// The control socket (`--control`; `None`: `none`, no socket).
    pub control: Option<PathBuf>,
    /// `--metrics ADDR:PORT`: the Prometheus scrape listener.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--metrics-file PATH`: the same text, for a textfile collector.
    pub metrics_file: Option<PathBuf>,
    /// `--on-ban`, `--on-unban`, `--hook-timeout`, `--hook-max`.
    pub hooks: crate::hooks::HookConfig,
    /// `--fleet URL` and friends; `None`: this node decides alone.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// `--shape`, `--shape-dev`, `--rate-down`, `--rate-up` and the limits
    /// file's rates.
    pub shape: crate::shape::ShapeConfig,
}

/// Where the control socket is unless `--control` says otherwise.
pub const DEFAULT_CONTROL: &str = "/run/refract/control.sock";

impl Default for Config {
    fn default() -> Config {
        let policy = PolicyConfig::default();
        Config {
            access_log: PathBuf::from("/var/log/xray/access.log"),
            block_log: PathBuf::from("/var/log/refract/block.log"),
            limits_file: None,
            protos: Protos {
                tcp: true,
                udp: false,
            },
            ports: vec![443],
            // The policy owns the decision parameters; the durations here
            // are the same values.
            window: Duration::from_micros(policy.window),
            timeout: Duration::from_micros(policy.ban),
            policy,
            dry_run: false,
            from_start: false,
            firewall: FirewallMode::Iptables,
            set_v4: DEFAULT_SET_V4.to_string(),
            set_v6: DEFAULT_SET_V6.to_string(),
            set_size: DEFAULT_MAXELEM,
            max_line: 64 << 10,
            control: Some(PathBuf::from(DEFAULT_CONTROL)),
            metrics: None,
            metrics_file: None,
            hooks: crate::hooks::HookConfig {
                on_ban: None,
                on_unban: None,
                timeout: 10 * crate::clock::SECOND,
                max: 4,
            },
            fleet: None,
            shape: crate::shape::ShapeConfig::default(),
        }
    }
}

impl Config {
    /// The settings in force on one line, for the daemon's start message and
    /// `refract check`: every value an operator may have set, in the flags'
    /// own spellings (durations as `--window` takes them).
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let proto = match (self.protos.tcp, self.protos.udp) {
            (true, true) => "tcp,udp",
            (false, true) => "udp",
            _ => "tcp",
        };
        let on = |b: bool| if b { "on" } else { "off" };
        let limits = match &self.limits_file {
            Some(p) => format!(
                " ({} per-user from {})",
                self.policy.limits.len(),
                p.display()
            ),
            None => String::new(),
        };
        let firewall = self.firewall.as_str();
        let allow: Vec<String> = self.policy.allow.iter().map(ToString::to_string).collect();
        format!(
            "settings: access-log {}, block-log {}, proto {proto}, dport {}, window {}, \
             timeout {}, limit {}{limits}, ipv6-prefix {}, allow {}, confirm {}, dry-run {}, \
             from-start {}, firewall {firewall}, sets {}/{} (size {}), max-line {}, \
             max-users {}, max-keys {}, control {}, {}",
            self.access_log.display(),
            self.block_log.display(),
            ports.join(","),
            format_duration(self.window),
            format_duration(self.timeout),
            self.policy.limit,
            self.policy.v6_prefix,
            if allow.is_empty() {
                "none".to_string()
            } else {
                allow.join(",")
            },
            on(self.policy.confirm),
            on(self.dry_run),
            on(self.from_start),
            self.set_v4,
            self.set_v6,
            self.set_size,
            self.max_line,
            self.policy.max_users,
            self.policy.max_keys,
            self.control
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string()),
            self.shape.summary(),
        )
    }
}

/// A duration as `--window` takes it back: `500ms`, `5s`, `1m`, `1h30m`,
/// `2d`, `1w` (whole units, largest first; sub-second rest in ms).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back() {
        let f = |ms| format_duration(Duration::from_millis(ms));
        assert_eq!(f(0), "0s");
        assert_eq!(f(500), "500ms");
        assert_eq!(f(5000), "5s");
        assert_eq!(f(60_000), "1m");
        assert_eq!(f(5_400_000), "1h30m");
        assert_eq!(f(86_400_000 * 9), "1w2d");
        assert_eq!(f(1500), "1s500ms");
    }

    #[test]
    fn summary_is_one_line_with_every_setting() {
        let s = Config::default().summary();
        assert!(!s.contains('\n'));
        assert_eq!(
            s,
            "settings: access-log /var/log/xray/access.log, block-log /var/log/refract/block.log, \
             proto tcp, dport 443, window 5s, timeout 1m, limit 1, ipv6-prefix 64, allow none, \
             confirm off, dry-run off, from-start off, firewall iptables, \
             sets refract_banned_users/refract_banned_users6 (size 65536), max-line 65536, \
             max-users 50000, max-keys 250000, control /run/refract/control.sock, shape none"
        );
        let c = Config {
            control: None,
            dry_run: true,
            ports: vec![443, 8443],
            ..Config::default()
        };
        let s = c.summary();
        assert!(
            s.contains("dport 443,8443") && s.contains("dry-run on"),
            "{s}"
        );
        assert!(s.ends_with("control none, shape none"), "{s}");
    }
}
