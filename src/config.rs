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
        }
    }
}
