//! The command line: argh for the flags, a normaliser in front of it for
//! refract 0.2's spellings, the `REFRACT_*` environment twins, the service's
//! environment file, and the validation that turns strings into a
//! [`Config`].
//!
//! refract 0.2 was a Go program using the standard `flag` package, and its
//! unit file passes `--proto=tcp --dport=443 --window=5s --timeout=1m
//! --access.log=PATH --block.log=PATH`. Go's `flag` accepts `-name`,
//! `--name`, `-name=value` and `--name=value`, and `--bool=true|false`; a
//! flag given twice takes its last value (`flag.Set` runs once per
//! occurrence and a string flag keeps the last). argh accepts only
//! `--name value` with dashes and refuses a repeated option, so
//! [`normalize`] rewrites the argument vector first (`--access.log=X` →
//! `--access-log X`) and [`parse_args`] keeps the last of a repeated flag
//! (`--dport 443 --dport 8443` is port 8443, as in 0.2; only `--allow`
//! accumulates). Both spellings keep working.
//!
//! Every subcommand has its own set of flags ([`COMMANDS`]): its `--help`
//! shows only those, and a flag of another command is refused with its
//! name; a misspelled flag gets the nearest one suggested.
//!
//! Precedence: a flag on the command line, else its `REFRACT_*` variable in
//! the process environment, else the same variable in the service's
//! environment file ([`EnvFile`]: `--env-file PATH`, default
//! `/etc/default/refract`, else `/etc/conf.d/refract`), else the default.
//! Every invalid value stops the program with one line naming the flag (or
//! the variable) and exit code 2, before anything is touched.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;
use ipnet::IpNet;

use crate::config::{format_duration, Config, FirewallMode, Protos};
use crate::control::client::{Request, Unban};
use crate::enforce::ipset::rules::MULTIPORT_MAX;
use crate::nl::consts::IPSET_MAXNAMELEN;
use crate::policy::limits::{read_file, Limits};
use crate::policy::PolicyConfig;

/// Exit code for a usage error (bad flag or value), as with BSD `EX_USAGE`'s
/// common shell convention and refract 0.2's `flag.ExitOnError`.
pub const EXIT_USAGE: i32 = 2;

/// The longest entry timeout the kernel keeps, in seconds:
/// `IPSET_MAX_TIMEOUT`, `(UINT_MAX >> 1) / MSEC_PER_SEC`
/// (include/linux/netfilter/ipset/ip_set_timeout.h; `ip_set_timeout_uget`
/// silently lowers a larger value to it, "to fit into jiffies").
pub const IPSET_MAX_TIMEOUT: u64 = (u32::MAX as u64 >> 1) / 1000;

/// The longest path a unix socket address holds: `sun_path[108]` with its
/// terminating NUL (sys/un.h, unix(7)).
const SUN_PATH_MAX: usize = 107;

/// Where the service's environment file is looked for, in order, when
/// `--env-file` is not given: Debian's `EnvironmentFile=` and OpenRC's
/// conf.d.
pub const ENV_FILES: &[&str] = &["/etc/default/refract", "/etc/conf.d/refract"];

#[derive(FromArgs, Debug, Default, PartialEq)]
/// per-user session limits for Xray-core and V2Ray, enforced in the kernel.
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// protocols to police: tcp, udp or tcp,udp (default tcp)
    #[argh(option)]
    pub proto: Option<String>,
    /// inbound port(s), comma-separated (default 443)
    #[argh(option)]
    pub dport: Option<String>,
    /// how long an address stays online after its last line: 500ms, 5s, 1m,
    /// 1h30m, 1d, 1w (default 5s)
    #[argh(option)]
    pub window: Option<String>,
    /// how long a ban lasts, at most 2147483s, the kernel's longest ipset
    /// timeout (default 1m)
    #[argh(option)]
    pub timeout: Option<String>,
    /// the proxy's access log (default /var/log/xray/access.log); also
    /// --access.log
    #[argh(option)]
    pub access_log: Option<String>,
    /// the audit log of bans (default /var/log/refract/block.log); also
    /// --block.log
    #[argh(option)]
    pub block_log: Option<String>,
    /// addresses allowed per user (default 1)
    #[argh(option)]
    pub limit: Option<String>,
    /// per-user limits file, one "EMAIL N" per line, # comments; re-read on
    /// SIGHUP (default none)
    #[argh(option)]
    pub limits: Option<String>,
    /// IPv6 addresses count as one device per prefix of this length, 1-128
    /// (default 64)
    #[argh(option)]
    pub ipv6_prefix: Option<String>,
    /// never count or ban this network (CIDR or address); repeatable
    #[argh(option)]
    pub allow: Vec<String>,
    /// ban a newcomer only once an old device is seen again while it is
    /// online (no bans for WiFi to LTE switches)
    #[argh(switch)]
    pub confirm: bool,
    /// decide and audit, but change nothing in the kernel (cleanup: say what
    /// would be removed)
    #[argh(switch)]
    pub dry_run: bool,
    /// read the access log from its beginning (default: from its end)
    #[argh(switch)]
    pub from_start: bool,
    /// how bans are enforced: iptables (ipset sets and DROP rules), none
    /// (sets only), nftables (own table inet refract), auto (default iptables)
    #[argh(option)]
    pub firewall: Option<String>,
    /// ipset for IPv4 bans (default refract_banned_users)
    #[argh(option)]
    pub set_name: Option<String>,
    /// ipset for IPv6 bans (default refract_banned_users6)
    #[argh(option)]
    pub set_name6: Option<String>,
    /// maximum entries per ipset (default 65536)
    #[argh(option)]
    pub set_size: Option<String>,
    /// longest log line read; longer ones are skipped, e.g. 64k, 1m
    /// (default 64k)
    #[argh(option)]
    pub max_line: Option<String>,
    /// most users tracked at once (default 50000)
    #[argh(option)]
    pub max_users: Option<String>,
    /// most addresses tracked at once, bans included (default 250000)
    #[argh(option)]
    pub max_keys: Option<String>,
    /// the control socket (default /run/refract/control.sock; none: no
    /// socket)
    #[argh(option)]
    pub control: Option<String>,
    /// serve Prometheus metrics on ADDR:PORT (GET /metrics; default off)
    #[argh(option)]
    pub metrics: Option<String>,
    /// write the metrics to PATH every few seconds while they change, for
    /// node_exporter's textfile collector (default off)
    #[argh(option)]
    pub metrics_file: Option<String>,
    /// run this command on every ban (split into words, no shell; the event
    /// as JSON on stdin and REFRACT_* variables) (default none)
    #[argh(option)]
    pub on_ban: Option<String>,
    /// run this command on every unban, like --on-ban (default none)
    #[argh(option)]
    pub on_unban: Option<String>,
    /// a hook still running after this long is killed (default 10s)
    #[argh(option)]
    pub hook_timeout: Option<String>,
    /// most hooks running at once, 1-64 (default 4)
    #[argh(option)]
    pub hook_max: Option<String>,
    /// share the device limit with other nodes on Redis or Valkey:
    /// redis://[user:password@]host:port[/db] or unix:///path (default off)
    #[argh(option)]
    pub fleet: Option<String>,
    /// this node's name in the fleet (default: the host name)
    #[argh(option)]
    pub node: Option<String>,
    /// prefix of the fleet's Redis keys (default refract:)
    #[argh(option)]
    pub fleet_prefix: Option<String>,
    /// how long a fleet answer may take before this node decides alone
    /// (default 200ms)
    #[argh(option)]
    pub fleet_timeout: Option<String>,
    /// cap each user's bandwidth (on, the default when a rate is set) or
    /// remove refract's shaping and do none (off)
    #[argh(option)]
    pub shape: Option<String>,
    /// the interface the clients' traffic goes out on, or auto (the route
    /// to the default gateway) (default auto)
    #[argh(option)]
    pub shape_dev: Option<String>,
    /// download cap of users the limits file gives none, e.g. 20mbit
    /// (default none)
    #[argh(option)]
    pub rate_down: Option<String>,
    /// upload cap of users the limits file gives none, e.g. 5mbit (default
    /// none)
    #[argh(option)]
    pub rate_up: Option<String>,
    /// replay: print one line per input line with what happened
    #[argh(switch)]
    pub explain: bool,
    /// the service's environment file of REFRACT_* settings, or none (default
    /// /etc/default/refract, else /etc/conf.d/refract, when it exists)
    #[argh(option)]
    pub env_file: Option<String>,
    /// print the daemon's reply as one JSON object on one line
    #[argh(switch)]
    pub json: bool,
    /// ban: how long (default the daemon's --timeout), e.g. 1h, 2d, 1w
    #[argh(option, long = "for")]
    pub ban_for: Option<String>,
    /// ban: why, one line kept with the ban (default manual)
    #[argh(option)]
    pub reason: Option<String>,
    /// unban: every ban of this user
    #[argh(option)]
    pub user: Option<String>,
    /// unban: every ban
    #[argh(switch)]
    pub all: bool,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    /// the command's operands (replay FILE, user EMAIL, ban ADDR, unban
    /// ADDR...)
    #[argh(positional)]
    pub operands: Vec<String>,
}

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Daemon,
    Replay,
    Check,
    Cleanup,
    Status,
    User,
    Ban,
    Unban,
    Reload,
}

impl Command {
    /// Whether the command talks to the running daemon.
    pub fn is_client(self) -> bool {
        matches!(
            self,
            Command::Status | Command::User | Command::Ban | Command::Unban | Command::Reload
        )
    }

    /// The command's entry in [`COMMANDS`].
    pub fn spec(self) -> &'static Spec {
        COMMANDS
            .iter()
            .find(|s| s.command == self)
            .unwrap_or(&COMMANDS[0])
    }
}

/// One subcommand: its name, what it takes and which flags.
#[derive(Debug)]
pub struct Spec {
    pub command: Command,
    /// `""` for the daemon.
    pub name: &'static str,
    /// The usage line after `refract NAME`.
    pub usage: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Its flags, canonical spelling, without `help` and `version` (every
    /// command takes those).
    pub flags: &'static [&'static str],
}

/// The settings the daemon runs with: the daemon's and `check`'s flags.
const DAEMON_FLAGS: &[&str] = &[
    "proto",
    "dport",
    "window",
    "timeout",
    "access-log",
    "block-log",
    "limit",
    "limits",
    "ipv6-prefix",
    "allow",
    "confirm",
    "dry-run",
    "from-start",
    "firewall",
    "set-name",
    "set-name6",
    "set-size",
    "max-line",
    "max-users",
    "max-keys",
    "control",
    "metrics",
    "metrics-file",
    "on-ban",
    "on-unban",
    "hook-timeout",
    "hook-max",
    "fleet",
    "node",
    "fleet-prefix",
    "fleet-timeout",
    "shape",
    "shape-dev",
    "rate-down",
    "rate-up",
    "env-file",
];

/// The decision parameters `replay` uses, and `--explain`.
const REPLAY_FLAGS: &[&str] = &[
    "window",
    "timeout",
    "limit",
    "limits",
    "ipv6-prefix",
    "allow",
    "confirm",
    "max-line",
    "max-users",
    "max-keys",
    "env-file",
    "explain",
];

/// What names the sets and rules `cleanup` removes.
const CLEANUP_FLAGS: &[&str] = &[
    "proto",
    "dport",
    "firewall",
    "set-name",
    "set-name6",
    "dry-run",
    "env-file",
];

/// Every client command's flags.
const CLIENT_FLAGS: &[&str] = &["json", "control", "env-file"];

/// Every subcommand; the daemon first.
pub const COMMANDS: &[Spec] = &[
    Spec {
        command: Command::Daemon,
        name: "",
        usage: "[flags]",
        about: "follow the access log and enforce (the daemon)",
        flags: DAEMON_FLAGS,
    },
    Spec {
        command: Command::Status,
        name: "status",
        usage: "[--json]",
        about: "settings in force, uptime, counters, users online, bans",
        flags: CLIENT_FLAGS,
    },
    Spec {
        command: Command::User,
        name: "user",
        usage: "EMAIL [--json]",
        about: "one user's keys, their state, last sight and live connections, and bans",
        flags: CLIENT_FLAGS,
    },
    Spec {
        command: Command::Ban,
        name: "ban",
        usage: "ADDR [--for DURATION] [--reason TEXT] [--json]",
        about: "ban an address (IPv4, IPv6: its prefix, or a key's CIDR) by hand",
        flags: &["for", "reason", "json", "control", "env-file"],
    },
    Spec {
        command: Command::Unban,
        name: "unban",
        usage: "ADDR... | --user EMAIL | --all [--json]",
        about: "lift bans: out of the set and out of the policy (judged afresh)",
        flags: &["user", "all", "json", "control", "env-file"],
    },
    Spec {
        command: Command::Reload,
        name: "reload",
        usage: "[--json]",
        about: "what SIGHUP does; exit 1 when the limits file is invalid",
        flags: CLIENT_FLAGS,
    },
    Spec {
        command: Command::Check,
        name: "check",
        usage: "[flags]",
        about: "validate settings, logs and kernel support; change nothing",
        flags: DAEMON_FLAGS,
    },
    Spec {
        command: Command::Replay,
        name: "replay",
        usage: "FILE [--explain] [flags]",
        about: "print what a live run would have banned (FILE - reads stdin)",
        flags: REPLAY_FLAGS,
    },
    Spec {
        command: Command::Cleanup,
        name: "cleanup",
        usage: "[--dry-run] [flags]",
        about: "remove the sets and the DROP rules",
        flags: CLEANUP_FLAGS,
    },
];

/// The exit codes of the client commands, for `--help` (the contract in
/// [`crate::control::client`]).
const CLIENT_EXIT_CODES: &str = "Exit codes: 0 done, 1 failed, 2 usage, 3 not found (unknown user or\n  address), 4 the daemon is not running or the socket refuses you.";

/// A usage error: one line for the operator, exit code 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Flags that take a value, in their canonical (argh) spelling.
const VALUE_FLAGS: &[&str] = &[
    "control",
    "metrics",
    "metrics-file",
    "on-ban",
    "on-unban",
    "hook-timeout",
    "hook-max",
    "fleet",
    "node",
    "fleet-prefix",
    "fleet-timeout",
    "shape",
    "shape-dev",
    "rate-down",
    "rate-up",
    "proto",
    "dport",
    "window",
    "timeout",
    "access-log",
    "block-log",
    "limit",
    "limits",
    "ipv6-prefix",
    "allow",
    "firewall",
    "set-name",
    "set-name6",
    "set-size",
    "max-line",
    "max-users",
    "max-keys",
    "env-file",
    "for",
    "reason",
    "user",
];

/// Switches, in their canonical spelling.
const SWITCHES: &[&str] = &[
    "confirm",
    "dry-run",
    "from-start",
    "explain",
    "json",
    "all",
    "version",
    "help",
];

/// The one flag that accumulates when repeated; every other keeps its last.
const REPEATABLE: &[&str] = &["allow"];

/// Rewrites refract 0.2 / Go `flag` spellings into argh's:
/// `--access.log=X` and `-access.log X` → `--access-log X`, `--dport=443` →
/// `--dport 443`, `--confirm=true` → `--confirm`, `--confirm=false` → (gone),
/// `-h` → `--help`, `-V` → `--version`. Unknown flags pass through
/// untouched so [`parse_args`] names them in its error. Everything after a
/// bare `--` is left alone.
pub fn normalize(args: &[String]) -> Result<Vec<String>, UsageError> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut rest = false;
    for a in args {
        if rest || !a.starts_with('-') || a == "-" {
            out.push(a.clone());
            continue;
        }
        if a == "--" {
            rest = true;
            out.push(a.clone());
            continue;
        }
        match a.as_str() {
            "-h" => {
                out.push("--help".to_string());
                continue;
            }
            "-V" => {
                out.push("--version".to_string());
                continue;
            }
            _ => {}
        }
        let body = a
            .strip_prefix("--")
            .or_else(|| a.strip_prefix('-'))
            .unwrap_or(a);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let canon = name.replace(['.', '_'], "-");
        let known_value = VALUE_FLAGS.contains(&canon.as_str());
        let known_switch = SWITCHES.contains(&canon.as_str());
        if known_switch {
            match value {
                None => out.push(format!("--{canon}")),
                Some(v) => match parse_bool(v) {
                    Some(true) => out.push(format!("--{canon}")),
                    Some(false) => {}
                    None => {
                        return Err(usage(format!("--{canon}: invalid boolean {v:?} ({BOOLS})")))
                    }
                },
            }
            continue;
        }
        if known_value {
            out.push(format!("--{canon}"));
            if let Some(v) = value {
                out.push(v.to_string());
            }
            continue;
        }
        out.push(a.clone());
    }
    Ok(out)
}

/// The edit distance of two short strings (flag names): insertions,
/// deletions, substitutions and swaps of neighbours each count one (the
/// optimal string alignment distance), so `--dprot` is one from `--dport`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance of a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate nearest to `word`, if it is near enough to be a typo: at
/// most 2 edits, and fewer than half of the word's letters.
fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = distance(word, c);
        if best.map_or(true, |(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.filter(|&(d, _)| d <= 2 && d * 2 < word.len().max(2))
        .map(|(_, c)| c)
}

/// `refract NAME` for messages (`refract` for the daemon).
fn display_name(spec: &Spec) -> String {
    if spec.name.is_empty() {
        "refract".to_string()
    } else {
        format!("refract {}", spec.name)
    }
}

/// Checks every flag of a normalised argument vector against the command's
/// own ([`Spec::flags`]), and keeps only the last of a repeated one. A flag
/// of another command is named as such; an unknown one gets the nearest
/// flag of this command suggested.
fn command_flags(spec: &Spec, argv: &[String]) -> Result<Vec<String>, UsageError> {
    let takes = |f: &str| f == "help" || f == "version" || spec.flags.contains(&f);
    // (flag, its value or None, index of the first token) per occurrence.
    let mut out: Vec<Vec<String>> = Vec::with_capacity(argv.len());
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "--" {
            out.extend(argv[i - 1..].iter().map(|x| vec![x.clone()]));
            break;
        }
        if !a.starts_with('-') || a == "-" {
            out.push(vec![a.clone()]);
            continue;
        }
        let name = a.trim_start_matches('-');
        let name = name.split_once('=').map_or(name, |(n, _)| n);
        if !takes(name) {
            let cmd = display_name(spec);
            let known = VALUE_FLAGS.contains(&name) || SWITCHES.contains(&name);
            if known {
                let owners: Vec<String> = COMMANDS
                    .iter()
                    .filter(|s| s.flags.contains(&name))
                    .map(display_name)
                    .collect();
                return Err(usage(format!(
                    "--{name}: not a flag of {cmd} (it is one of {}); see {cmd} --help",
                    owners.join(", ")
                )));
            }
            let mut msg = format!("unknown flag {a} for {cmd}");
            let flags = spec.flags.iter().copied().chain(["help", "version"]);
            if let Some(near) = nearest(name, flags) {
                msg.push_str(&format!(" (did you mean --{near}?)"));
            } else {
                msg.push_str(&format!("; see {cmd} --help"));
            }
            return Err(usage(msg));
        }
        let mut tokens = vec![a.clone()];
        if VALUE_FLAGS.contains(&name) {
            match argv.get(i) {
                Some(v) => tokens.push(v.clone()),
                None => return Err(usage(format!("--{name}: missing value"))),
            }
            i += 1;
        }
        if !REPEATABLE.contains(&name) {
            if let Some(&(_, at)) = seen.iter().find(|(n, _)| n == name) {
                // Go's flag: the last occurrence wins.
                out[at].clear();
            }
            seen.retain(|(n, _)| n != name);
            seen.push((name.to_string(), out.len()));
        }
        out.push(tokens);
    }
    Ok(out.into_iter().flatten().collect())
}

/// The command named by the first argument, if it names one.
fn command_of(first: Option<&str>) -> Option<&'static Spec> {
    let first = first?;
    COMMANDS
        .iter()
        .find(|s| !s.name.is_empty() && s.name == first)
}

/// Parses the argument vector (without the program name): the command and
/// its arguments, or `Err(Ok(text))` for help to print (exit 0), or
/// `Err(Err(_))` for a usage error.
pub fn parse_args(argv: &[String]) -> Result<(Command, Args), Result<String, UsageError>> {
    if argv.first().map(String::as_str) == Some("help") {
        return Err(match argv.get(1).map(String::as_str) {
            None => Ok(help(&COMMANDS[0])),
            Some(name) => match command_of(Some(name)) {
                Some(spec) => Ok(help(spec)),
                None => Err(unknown_command(name)),
            },
        });
    }
    let (spec, rest) = match command_of(argv.first().map(String::as_str)) {
        Some(spec) => (spec, &argv[1..]),
        None => (&COMMANDS[0], argv),
    };
    let normalized = normalize(rest).map_err(Err)?;
    if normalized
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help")
    {
        return Err(Ok(help(spec)));
    }
    let normalized = command_flags(spec, &normalized).map_err(Err)?;
    // argh takes a lone `-` for a flag; carry it past argh as a placeholder.
    let strs: Vec<&str> = normalized
        .iter()
        .map(|a| if a == "-" { STDIN_MARK } else { a.as_str() })
        .collect();
    let name = display_name(spec);
    match Args::from_args(&[&name], &strs) {
        Ok(mut args) => {
            for f in &mut args.operands {
                if f == STDIN_MARK {
                    *f = "-".to_string();
                }
            }
            Ok((spec.command, args))
        }
        Err(e) => match e.status {
            Ok(()) => Err(Ok(help(spec))),
            Err(()) => Err(Err(usage(first_line(&e.output)))),
        },
    }
}

fn unknown_command(name: &str) -> UsageError {
    let names = COMMANDS.iter().map(|s| s.name).filter(|n| !n.is_empty());
    let mut msg = format!("unknown command {name:?}");
    if let Some(near) = nearest(name, names.clone()) {
        msg.push_str(&format!(" (did you mean refract {near}?)"));
    } else {
        msg.push_str(&format!(
            " (commands: {})",
            names.collect::<Vec<_>>().join(", ")
        ));
    }
    usage(msg)
}

/// The help of one command: its usage line, what it does, and its own
/// flags only (argh's descriptions, filtered from the one flag struct).
pub fn help(spec: &Spec) -> String {
    let full = match Args::from_args(&["refract"], &["--help"]) {
        Err(e) => e.output,
        Ok(_) => String::new(),
    };
    let options = full
        .find("\nOptions:\n")
        .map_or("", |at| &full[at + "\nOptions:\n".len()..]);
    // An entry starts with two spaces and a dash; its continuation lines are
    // indented further.
    let mut entries: Vec<String> = Vec::new();
    for line in options.lines() {
        if line.starts_with("  -") {
            entries.push(format!("{line}\n"));
        } else if line.starts_with("   ") {
            if let Some(last) = entries.last_mut() {
                last.push_str(line);
                last.push('\n');
            }
        } else if !line.trim().is_empty() {
            break;
        }
    }
    let flag_of = |entry: &str| -> String {
        let head = entry.split_whitespace().collect::<Vec<_>>();
        // "-V, --version" or "--proto".
        let flag = head
            .iter()
            .find(|w| w.starts_with("--"))
            .copied()
            .unwrap_or("");
        flag.trim_start_matches('-')
            .trim_end_matches(',')
            .to_string()
    };
    let mut out = format!(
        "Usage: {} {}\n\n{}\n\nOptions:\n",
        display_name(spec),
        spec.usage,
        spec.about
    );
    for e in &entries {
        let f = flag_of(e);
        if f == "help" || f == "version" || spec.flags.contains(&f.as_str()) {
            out.push_str(e);
        }
    }
    out.push_str("\nNotes:\n");
    if spec.command == Command::Daemon {
        out.push_str("  Commands:\n");
        for s in &COMMANDS[1..] {
            out.push_str(&format!("    refract {:<8} {}\n", s.name, s.about));
        }
        out.push_str(
            "  refract help COMMAND (or refract COMMAND --help) shows one command's flags.\n",
        );
    }
    if spec.command.is_client() {
        out.push_str(&format!("  {CLIENT_EXIT_CODES}\n"));
    }
    out.push_str(
        "  Every setting also reads REFRACT_<NAME> (REFRACT_DPORT, REFRACT_CONTROL, ...) when not\n  \
         given, then the service's environment file (/etc/default/refract, else\n  \
         /etc/conf.d/refract). Booleans: true/false, yes/no, on/off, 1/0.\n",
    );
    if matches!(spec.command, Command::Daemon | Command::Check) {
        out.push_str(
            "  refract 0.2 spellings are accepted: --access.log=PATH --block.log=PATH --window=5s.\n",
        );
    }
    out
}

/// Stands in for `-` while argh parses (no real argument contains a NUL).
const STDIN_MARK: &str = "\0stdin";

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim()
        .to_string()
}

/// The environment twin of a flag: `access-log` → `REFRACT_ACCESS_LOG`.
pub fn env_name(flag: &str) -> String {
    format!("REFRACT_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// The flags that are settings, with a `REFRACT_*` twin. The others
/// (`--json`, `--for`, `--reason`, `--user`, `--all`, `--explain`) are
/// operands of one invocation: from an environment file, `REFRACT_ALL`
/// would turn every `refract unban` into "unban everything".
const SETTINGS: &[&str] = DAEMON_FLAGS;

/// `REFRACT_*` variables that are not flags: the log target
/// ([`crate::logger`]) and the ones refract's own scripts and tests read
/// (`scripts/demo.sh`, `scripts/footprint.sh`, the policy tests), which
/// reach refract in their environment; and the event a hook's environment
/// carries ([`crate::hooks`]), for a hook that runs `refract status`.
const OTHER_VARS: &[&str] = &[
    "REFRACT_LOG",
    "REFRACT_BIN",
    "REFRACT_GEN_LOG",
    "REFRACT_RUST_MIN",
    "REFRACT_POLICY_TRACE",
    "REFRACT_TOOLS",
    "REFRACT_EVENT",
    "REFRACT_ADDR",
    "REFRACT_USER",
    "REFRACT_ORIGIN",
    "REFRACT_TAG",
    "REFRACT_DURATION",
    "REFRACT_REASON",
];

/// Why a `REFRACT_*` variable deserves a warning: unknown (with the nearest
/// known name), or an invalid `REFRACT_LOG`. `None`: nothing to say.
pub fn check_variable(name: &str, value: &str) -> Option<String> {
    if name == "REFRACT_LOG" {
        if crate::logger::Target::parse(value.trim()).is_none() {
            return Some(format!(
                "REFRACT_LOG: invalid value {value:?} (use auto, stderr or syslog); logging to auto"
            ));
        }
        return None;
    }
    if !name.starts_with("REFRACT_") || OTHER_VARS.contains(&name) {
        return None;
    }
    let known: Vec<String> = SETTINGS.iter().map(|f| env_name(f)).collect();
    if known.iter().any(|k| k == name) {
        return None;
    }
    let mut msg = format!("unknown variable {name}, ignored");
    let names = known
        .iter()
        .map(String::as_str)
        .chain(OTHER_VARS.iter().copied());
    if let Some(near) = nearest(name, names) {
        msg.push_str(&format!(" (did you mean {near}?)"));
    }
    Some(msg)
}

/// Looks up flag values in the environment through `get` (injected so
/// tests need not touch the process environment), and only for the flags of
/// the command at hand (a command does not read, nor fail on, settings it
/// does not use: `cleanup` never opens the limits file).
pub struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    flags: Option<&'static [&'static str]>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl<'a> Env<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { get, flags: None }
    }

    /// The same lookup, answering only for `command`'s flags.
    fn for_command(&self, command: Command) -> Env<'a> {
        Env {
            get: self.get,
            flags: Some(command.spec().flags),
        }
    }

    fn var(&self, flag: &str) -> Option<String> {
        if self.flags.is_some_and(|f| !f.contains(&flag)) {
            return None;
        }
        (self.get)(&env_name(flag)).filter(|v| !v.trim().is_empty())
    }

    /// The flag's value if given, else its environment twin, with the name
    /// an error about it uses (`--flag`, or `REFRACT_FLAG` for a value from
    /// the environment); `None`: neither, the default applies.
    fn value(&self, given: &Option<String>, flag: &str) -> Option<(String, String)> {
        self.pick(given, flag).map(|(v, from_env)| {
            let label = if from_env {
                env_name(flag)
            } else {
                format!("--{flag}")
            };
            (v, label)
        })
    }

    /// The flag's value if given, else its environment twin.
    fn pick(&self, given: &Option<String>, flag: &str) -> Option<(String, bool)> {
        match given {
            Some(v) => Some((v.clone(), false)),
            None => self.var(flag).map(|v| (v, true)),
        }
    }

    fn switch(&self, given: bool, flag: &str) -> Result<bool, UsageError> {
        if given {
            return Ok(true);
        }
        match self.var(flag) {
            None => Ok(false),
            Some(v) => parse_bool(&v).ok_or_else(|| {
                usage(format!(
                    "{}: invalid boolean {v:?} ({BOOLS})",
                    env_name(flag)
                ))
            }),
        }
    }
}

/// The boolean spellings, the same for `--flag=V` and `REFRACT_FLAG=V`.
const BOOLS: &str = "use true/false, yes/no, on/off or 1/0";

/// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` in any case, and Go's
/// `t`/`f` (refract 0.2's `strconv.ParseBool`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "t" => Some(true),
        "0" | "false" | "no" | "off" | "f" => Some(false),
        _ => None,
    }
}

/// Parses a Go-style duration: `500ms`, `5s`, `1m`, `1h`, `1h30m`, `1.5s`,
/// and days and weeks: `2d`, `1w`, `1w2d`. Units: `w`, `d`, `h`, `m`, `s`,
/// `ms` (and `us`/`µs`). Zero is allowed by the parser; callers decide
/// whether it makes sense. At most ten years.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "w" => 7.0 * 86_400.0,
            "d" => 86_400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    if !total.is_finite() || total > 10.0 * 365.0 * 86_400.0 {
        return None;
    }
    Some(Duration::from_micros((total * 1e6).round() as u64))
}

/// Parses a size: `65536`, `64k`, `1m` (binary units).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.strip_suffix(['k', 'm']) {
        Some(n) if s.ends_with('k') => (n, 1024),
        Some(n) => (n, 1024 * 1024),
        None => (s.as_str(), 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// The service's environment file: the `KEY=VALUE` lines systemd's
/// `EnvironmentFile=` (systemd.exec(5)) and an OpenRC conf.d file (sourced
/// by sh) both read: `#` and `;` comment lines, blank lines, an optional
/// `export ` prefix, values optionally in double quotes (backslash escapes
/// `\"`, `\\`, `\$`, `` \` ``) or single quotes (literal). An unquoted value
/// ends at a ` #` comment, as in sh. A line that is none of these is skipped
/// with a warning, as systemd does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvFile {
    pub path: PathBuf,
    /// In file order; a later line for the same key wins ([`EnvFile::get`]).
    pub vars: Vec<(String, String)>,
    /// `(line, why)` for every line skipped.
    pub skipped: Vec<(usize, String)>,
}

impl EnvFile {
    /// Parses the text of an environment file.
    pub fn parse(path: &Path, text: &str) -> EnvFile {
        let mut out = EnvFile {
            path: path.to_path_buf(),
            ..EnvFile::default()
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let line = line.strip_prefix("export ").map_or(line, str::trim_start);
            let Some((key, value)) = line.split_once('=') else {
                out.skipped.push((i + 1, "expected KEY=VALUE".to_string()));
                continue;
            };
            let key = key.trim_end();
            let valid_key = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_key {
                out.skipped
                    .push((i + 1, format!("invalid variable name {key:?}")));
                continue;
            }
            match unquote(value.trim_start()) {
                Some(v) => out.vars.push((key.to_string(), v)),
                None => out
                    .skipped
                    .push((i + 1, format!("unterminated quote in {key}"))),
            }
        }
        out
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> std::io::Result<EnvFile> {
        let text = std::fs::read(path)?;
        Ok(EnvFile::parse(path, &String::from_utf8_lossy(&text)))
    }

    /// The value of `key` (the last line that sets it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One value of an environment file line; `None`: an unterminated quote.
fn unquote(v: &str) -> Option<String> {
    if let Some(body) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.chars();
        loop {
            match chars.next()? {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    c @ ('"' | '\\' | '$' | '`') => out.push(c),
                    c => {
                        out.push('\\');
                        out.push(c);
                    }
                },
                c => out.push(c),
            }
        }
    }
    if let Some(body) = v.strip_prefix('\'') {
        return body.find('\'').map(|end| body[..end].to_string());
    }
    let end = v
        .char_indices()
        .find(|&(i, c)| c == '#' && i > 0 && v[..i].ends_with([' ', '\t']))
        .map_or(v.len(), |(i, _)| i);
    Some(v[..end].trim_end().to_string())
}

/// Which environment file to read: `--env-file PATH` (or
/// `REFRACT_ENV_FILE`), which must exist; `none` for none; else the first
/// of [`ENV_FILES`] that exists.
pub fn env_file(
    given: Option<&str>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Option<PathBuf>, UsageError> {
    match given.map(str::trim) {
        Some("none") => Ok(None),
        Some("") => Err(usage("--env-file: empty path (use none for no file)")),
        Some(p) => {
            let p = PathBuf::from(p);
            if exists(&p) {
                Ok(Some(p))
            } else {
                Err(usage(format!(
                    "--env-file: {} does not exist (use none for no file)",
                    p.display()
                )))
            }
        }
        None => Ok(ENV_FILES.iter().map(PathBuf::from).find(|p| exists(p))),
    }
}

/// Turns parsed arguments and the environment into a validated [`Config`].
///
/// One function per flag group, called in the order the groups are checked
/// (so the first invalid value named is always the same one); a flag that is
/// neither given nor in the environment takes its value from
/// [`Config::default`], the one place defaults are defined.
pub fn build_config(command: Command, args: &Args, env: &Env<'_>) -> Result<Config, UsageError> {
    build(command, args, env, &mut Vec::new()).map(|(cfg, _)| cfg)
}

/// [`build_config`], with the client request the operands make and the
/// warnings to print (duplicate emails in the limits file) appended to
/// `warnings`.
fn build(
    command: Command,
    args: &Args,
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<(Config, Option<Request>), UsageError> {
    let env = &env.for_command(command);
    let cfg = config(command, args, env, warnings)?;
    // Pure, and `config` has checked the operands already.
    let request = operands(command, args)?;
    if command.is_client() && cfg.control.is_none() {
        return Err(usage(
            "--control none: there is no control socket to talk to",
        ));
    }
    Ok((cfg, request))
}

/// The body of [`build`]: every flag group, then the operands.
fn config(
    command: Command,
    args: &Args,
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<Config, UsageError> {
    let d = Config::default();
    let protos = protocols(args, env, d.protos)?;
    let ports = ports(args, env, &d.ports)?;
    let (window, timeout) = durations(args, env, d.window, d.timeout)?;
    let counts = counts(args, env, &d)?;
    let max_line = max_line(args, env, d.max_line)?;
    let allow = allowlist(args, env)?;
    let firewall = firewall(args, env, d.firewall)?;
    let (set_v4, set_v6) = set_names(args, env, d.set_v4, d.set_v6)?;
    let (access_log, block_log) = log_paths(args, env, d.access_log, d.block_log)?;
    let (limits_file, limits, rates) = limits_file(args, env, warnings)?;
    let confirm = env.switch(args.confirm, "confirm")?;
    // `cleanup --dry-run` only from its own command line: a REFRACT_DRY_RUN
    // meant for the daemon (in the environment file) must not turn an
    // uninstall's cleanup into a no-op.
    let dry_run = if command == Command::Cleanup {
        args.dry_run
    } else {
        env.switch(args.dry_run, "dry-run")?
    };
    let from_start = env.switch(args.from_start, "from-start")?;
    let control = match env.value(&args.control, "control") {
        None => d.control,
        Some((v, _)) if v == "none" => None,
        Some((v, _)) if v.is_empty() => return Err(usage("--control: empty path")),
        Some((v, _)) => Some(PathBuf::from(v)),
    };
    let metrics = match env.value(&args.metrics, "metrics") {
        None => None,
        Some((v, l)) => Some(v.parse::<std::net::SocketAddr>().map_err(|_| {
            usage(format!(
                "{l}: {v:?} is not ADDR:PORT (e.g. 127.0.0.1:9433 or [::1]:9433)"
            ))
        })?),
    };
    let metrics_file = match env.value(&args.metrics_file, "metrics-file") {
        None => None,
        Some((v, _)) if v.is_empty() => return Err(usage("--metrics-file: empty path")),
        Some((v, _)) => Some(PathBuf::from(v)),
    };
    let hooks = hooks(args, env, d.hooks.clone())?;
    let fleet = fleet(args, env)?;
    let shape = shape(args, env, rates)?;
    operands(command, args)?;

    let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
    let control = socket_path(args, env, control)?;
    let policy = PolicyConfig {
        window: micros(window),
        ban: micros(timeout),
        limit: counts.limit,
        limits,
        v6_prefix: counts.v6_prefix,
        allow,
        confirm,
        max_users: counts.max_users,
        max_keys: counts.max_keys,
    };
    Ok(Config {
        access_log,
        block_log,
        limits_file,
        protos,
        ports,
        window,
        timeout,
        policy,
        dry_run,
        from_start,
        firewall,
        set_v4,
        set_v6,
        set_size: counts.set_size,
        max_line,
        control,
        metrics,
        metrics_file,
        hooks,
        fleet,
        shape,
    })
}

/// `--shape`, `--shape-dev`, `--rate-down`, `--rate-up`.
fn shape(
    args: &Args,
    env: &Env<'_>,
    rates: crate::hash::Map<Box<[u8]>, crate::shape::rate::Fields>,
) -> Result<crate::shape::ShapeConfig, UsageError> {
    use crate::shape::{rate, Dev, ShapeConfig};
    let off = match env.value(&args.shape, "shape") {
        None => false,
        Some((v, _)) if v == "on" => false,
        Some((v, _)) if v == "off" => true,
        Some((v, l)) => return Err(usage(format!("{l}: {v:?}: expected on or off"))),
    };
    let (dev, dev_given) = match env.value(&args.shape_dev, "shape-dev") {
        None => (Dev::Auto, false),
        Some((v, _)) if v == "auto" => (Dev::Auto, true),
        Some((v, l)) if v.is_empty() || v.len() > 15 || v.contains(['/', ' ', '\0']) => {
            return Err(usage(format!(
                "{l}: {v:?} is not an interface name (at most 15 characters, no / or spaces) or auto"
            )))
        }
        Some((v, _)) => (Dev::Named(v), true),
    };
    let rate = |given: &Option<String>, flag: &str| -> Result<Option<rate::Rate>, UsageError> {
        match env.value(given, flag) {
            None => Ok(None),
            Some((v, l)) => rate::parse(&v)
                .map(Some)
                .map_err(|e| usage(format!("{l}: {e}"))),
        }
    };
    let defaults = rate::Caps {
        down: rate(&args.rate_down, "rate-down")?,
        up: rate(&args.rate_up, "rate-up")?,
    };
    Ok(ShapeConfig {
        off,
        dev,
        defaults,
        rates,
        dev_given,
    })
}

/// `--fleet`, `--node`, `--fleet-prefix`, `--fleet-timeout`.
fn fleet(args: &Args, env: &Env<'_>) -> Result<Option<crate::fleet::FleetConfig>, UsageError> {
    let Some((url, l)) = env.value(&args.fleet, "fleet") else {
        return Ok(None);
    };
    let (target, user, password, db) =
        crate::fleet::parse_url(&url).map_err(|e| usage(format!("{l}: {e}")))?;
    let node = match env.value(&args.node, "node") {
        Some((n, l)) if n.is_empty() || n.contains(['|', ' ']) => {
            return Err(usage(format!("{l}: {n:?}: a name without spaces or |")))
        }
        Some((n, _)) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_string()),
    };
    let prefix = env
        .value(&args.fleet_prefix, "fleet-prefix")
        .map_or("refract:".to_string(), |(p, _)| p);
    let timeout = match env.value(&args.fleet_timeout, "fleet-timeout") {
        None => 200_000,
        Some((v, l)) => parse_duration(&v)
            .filter(|t| !t.is_zero())
            .map(|t| t.as_micros().min(u128::from(u64::MAX)) as u64)
            .ok_or_else(|| usage(format!("{l}: invalid duration {v:?} (e.g. 200ms)")))?,
    };
    Ok(Some(crate::fleet::FleetConfig {
        target,
        user,
        password,
        db,
        node,
        prefix,
        timeout,
    }))
}

/// `--on-ban`, `--on-unban`, `--hook-timeout`, `--hook-max`.
fn hooks(
    args: &Args,
    env: &Env<'_>,
    d: crate::hooks::HookConfig,
) -> Result<crate::hooks::HookConfig, UsageError> {
    let command = |given: &Option<String>, flag: &str| -> Result<Option<Vec<String>>, UsageError> {
        match env.value(given, flag) {
            None => Ok(None),
            Some((v, l)) => crate::hooks::split_argv(&v)
                .map(Some)
                .map_err(|e| usage(format!("{l}: {e} in {v:?}"))),
        }
    };
    let timeout = match env.value(&args.hook_timeout, "hook-timeout") {
        None => d.timeout,
        Some((v, l)) => parse_duration(&v)
            .filter(|t| !t.is_zero())
            .map(|t| t.as_micros().min(u128::from(u64::MAX)) as u64)
            .ok_or_else(|| usage(format!("{l}: invalid duration {v:?} (use e.g. 10s, 1m)")))?,
    };
    let max = match env.value(&args.hook_max, "hook-max") {
        None => d.max,
        Some((v, l)) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::hooks::MAX_SLOTS).contains(n))
            .ok_or_else(|| {
                usage(format!(
                    "{l}: invalid value {v:?} (a whole number from 1 to {})",
                    crate::hooks::MAX_SLOTS
                ))
            })?,
    };
    Ok(crate::hooks::HookConfig {
        on_ban: command(&args.on_ban, "on-ban")?,
        on_unban: command(&args.on_unban, "on-unban")?,
        timeout,
        max,
    })
}

/// `--proto`: tcp, udp or both.
fn protocols(args: &Args, env: &Env<'_>, default: Protos) -> Result<Protos, UsageError> {
    let Some((proto, l)) = env.value(&args.proto, "proto") else {
        return Ok(default);
    };
    let mut protos = Protos {
        tcp: false,
        udp: false,
    };
    for p in proto.split(',').map(str::trim) {
        match p.to_ascii_lowercase().as_str() {
            "tcp" => protos.tcp = true,
            "udp" => protos.udp = true,
            _ => {
                return Err(usage(format!(
                    "{l}: invalid protocol {p:?} (use tcp, udp or tcp,udp)"
                )))
            }
        }
    }
    Ok(protos)
}

/// `--dport`: deduplicated, in the order given, as many as the DROP rule's
/// multiport match takes.
fn ports(args: &Args, env: &Env<'_>, default: &[u16]) -> Result<Vec<u16>, UsageError> {
    let Some((dport, l)) = env.value(&args.dport, "dport") else {
        return Ok(default.to_vec());
    };
    let mut ports = Vec::new();
    for p in dport.split(',').map(str::trim) {
        let port: u16 = p
            .parse()
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| usage(format!("{l}: invalid port {p:?} (1-65535)")))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if ports.len() > MULTIPORT_MAX {
        return Err(usage(format!(
            "{l}: at most {MULTIPORT_MAX} ports, got {}",
            ports.len()
        )));
    }
    Ok(ports)
}

/// `--window` and `--timeout`: Go durations, not zero.
fn durations(
    args: &Args,
    env: &Env<'_>,
    window: Duration,
    timeout: Duration,
) -> Result<(Duration, Duration), UsageError> {
    let duration = |given: &Option<String>, flag: &str, default: Duration| {
        let Some((v, l)) = env.value(given, flag) else {
            return Ok(default);
        };
        parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
            usage(format!(
                "{l}: invalid duration {v:?} (use e.g. 500ms, 5s, 1m, 1h30m)"
            ))
        })
    };
    let window = duration(&args.window, "window", window)?;
    let timeout = duration(&args.timeout, "timeout", timeout)?;
    if let Some((v, l)) = env.value(&args.timeout, "timeout") {
        max_timeout(timeout, &l, &v)?;
    }
    Ok((window, timeout))
}

/// A ban the kernel would silently shorten is refused instead.
fn max_timeout(d: Duration, label: &str, given: &str) -> Result<(), UsageError> {
    // A fraction of a second is rounded up to whole seconds when banning.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs > IPSET_MAX_TIMEOUT {
        return Err(usage(format!(
            "{label}: {given:?} is longer than the kernel's longest ipset timeout, {IPSET_MAX_TIMEOUT}s ({})",
            format_duration(Duration::from_secs(IPSET_MAX_TIMEOUT))
        )));
    }
    Ok(())
}

/// The whole-number flags.
#[derive(Debug)]
struct Counts {
    limit: u32,
    v6_prefix: u8,
    set_size: u32,
    max_users: usize,
    max_keys: usize,
}

/// `--limit`, `--ipv6-prefix`, `--set-size`, `--max-users`, `--max-keys`.
fn counts(args: &Args, env: &Env<'_>, d: &Config) -> Result<Counts, UsageError> {
    let number = |given: &Option<String>, flag: &str, default: u64, min: u64, max: u64| {
        let Some((v, l)) = env.value(given, flag) else {
            return Ok(default);
        };
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                usage(format!(
                    "{l}: invalid value {v:?} (a whole number from {min} to {max})"
                ))
            })
    };
    let p = &d.policy;
    Ok(Counts {
        limit: number(&args.limit, "limit", p.limit.into(), 1, 1_000_000)? as u32,
        v6_prefix: number(&args.ipv6_prefix, "ipv6-prefix", p.v6_prefix.into(), 1, 128)? as u8,
        set_size: number(&args.set_size, "set-size", d.set_size.into(), 128, 1 << 26)? as u32,
        max_users: number(&args.max_users, "max-users", p.max_users as u64, 1, 1 << 32)? as usize,
        max_keys: number(&args.max_keys, "max-keys", p.max_keys as u64, 1, 1 << 34)? as usize,
    })
}

/// `--max-line`: a size, `256` to `256m`.
fn max_line(args: &Args, env: &Env<'_>, default: usize) -> Result<usize, UsageError> {
    let Some((ml, l)) = env.value(&args.max_line, "max-line") else {
        return Ok(default);
    };
    parse_size(&ml)
        .filter(|n| (256..=256 << 20).contains(n))
        .ok_or_else(|| usage(format!("{l}: invalid size {ml:?} (256 to 256m, e.g. 64k)")))
}

/// `--allow` (repeatable), or `REFRACT_ALLOW` as a list: networks with their
/// host bits cleared.
fn allowlist(args: &Args, env: &Env<'_>) -> Result<Vec<IpNet>, UsageError> {
    let mut allow_strs: Vec<(String, String)> = args
        .allow
        .iter()
        .map(|a| (a.clone(), "--allow".to_string()))
        .collect();
    if args.allow.is_empty() {
        if let Some(v) = env.var("allow") {
            for a in v.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
                allow_strs.push((a.to_string(), env_name("allow")));
            }
        }
    }
    let mut allow = Vec::new();
    for (a, l) in allow_strs {
        let net = a
            .parse::<IpNet>()
            .or_else(|_| a.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                usage(format!(
                    "{l}: invalid network {a:?} (use a CIDR like 10.0.0.0/8 or an address)"
                ))
            })?;
        allow.push(net.trunc());
    }
    Ok(allow)
}

/// `--firewall`: iptables, none, nftables or auto.
fn firewall(args: &Args, env: &Env<'_>, default: FirewallMode) -> Result<FirewallMode, UsageError> {
    let Some((firewall, l)) = env.value(&args.firewall, "firewall") else {
        return Ok(default);
    };
    match firewall.as_str() {
        "iptables" => Ok(FirewallMode::Iptables),
        "none" => Ok(FirewallMode::None),
        "nftables" => Ok(FirewallMode::Nftables),
        "auto" => Ok(FirewallMode::Auto),
        other => Err(usage(format!(
            "{l}: invalid value {other:?} (use iptables, none, nftables or auto)"
        ))),
    }
}

/// `--set-name` and `--set-name6`: valid ipset names, different from each
/// other.
fn set_names(
    args: &Args,
    env: &Env<'_>,
    v4: String,
    v6: String,
) -> Result<(String, String), UsageError> {
    let set_name = |given: &Option<String>, flag: &str, default: String| {
        let Some((v, l)) = env.value(given, flag) else {
            return Ok(default);
        };
        // The kernel's limit counts the terminating NUL.
        let max = IPSET_MAXNAMELEN - 1;
        if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(usage(format!(
                "{l}: invalid set name {v:?} (1-{max} printable characters)"
            )));
        }
        Ok(v)
    };
    let set_v4 = set_name(&args.set_name, "set-name", v4)?;
    let set_v6 = set_name(&args.set_name6, "set-name6", v6)?;
    if set_v4 == set_v6 {
        return Err(usage("--set-name6: must differ from --set-name"));
    }
    Ok((set_v4, set_v6))
}

/// `--access-log` and `--block-log`.
fn log_paths(
    args: &Args,
    env: &Env<'_>,
    access: PathBuf,
    block: PathBuf,
) -> Result<(PathBuf, PathBuf), UsageError> {
    let path = |given: &Option<String>, flag: &str, default: PathBuf| {
        env.value(given, flag)
            .map_or(default, |(v, _)| PathBuf::from(v))
    };
    let access_log = path(&args.access_log, "access-log", access);
    let block_log = path(&args.block_log, "block-log", block);
    if access_log.as_os_str().is_empty() {
        return Err(usage("--access-log: empty path"));
    }
    Ok((access_log, block_log))
}

/// The limits file's rates, by email.
type Rates = crate::hash::Map<Box<[u8]>, crate::shape::rate::Fields>;

/// `--limits FILE`, read now so that a bad file stops the start.
fn limits_file(
    args: &Args,
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<(Option<PathBuf>, Limits, Rates), UsageError> {
    let Some((path, _)) = env.pick(&args.limits, "limits") else {
        return Ok((None, Limits::default(), Rates::default()));
    };
    let path = PathBuf::from(path);
    let (parsed, w) = read_file(&path).map_err(usage)?;
    warnings.extend(w);
    Ok((Some(path), parsed.limits, parsed.rates))
}

/// `--control PATH`: a path a unix socket address can hold (`none` and
/// the empty path are dealt with where it is read).
fn socket_path(
    args: &Args,
    env: &Env<'_>,
    control: Option<PathBuf>,
) -> Result<Option<PathBuf>, UsageError> {
    let Some(p) = control else {
        return Ok(None);
    };
    let len = p.as_os_str().len();
    if len > SUN_PATH_MAX || p.as_os_str().to_string_lossy().contains('\0') {
        let l = env
            .value(&args.control, "control")
            .map_or_else(|| "--control".to_string(), |(_, l)| l);
        return Err(usage(format!(
            "{l}: invalid socket path {:?} (1-{SUN_PATH_MAX} bytes, or none)",
            p.display()
        )));
    }
    Ok(Some(p))
}

/// An address `ban` and `unban` take: IPv4, IPv6, or a CIDR (a key's
/// network, e.g. `2001:db8:1::/64`). Sent as given; the daemon maps it to
/// its key.
fn addr(command: &str, a: &str) -> Result<String, UsageError> {
    let a = a.trim();
    if a.parse::<std::net::IpAddr>().is_ok() || a.parse::<IpNet>().is_ok() {
        return Ok(a.to_string());
    }
    Err(usage(format!(
        "{command}: invalid address {a:?} (an IPv4 or IPv6 address, or a CIDR like 2001:db8:1::/64)"
    )))
}

/// A line of text for the daemon (an email, a reason): not empty, no
/// control characters (it lands in one log line), bounded.
fn text(what: &str, t: &str, max: usize) -> Result<String, UsageError> {
    if t.is_empty() || t.len() > max || t.chars().any(char::is_control) {
        return Err(usage(format!(
            "{what}: invalid value {t:?} (1-{max} bytes of one line)"
        )));
    }
    Ok(t.to_string())
}

/// The positional operands and the per-invocation flags of each command;
/// for a client command, the request they make.
fn operands(command: Command, args: &Args) -> Result<Option<Request>, UsageError> {
    let ops = &args.operands;
    let none = || match ops.first() {
        None => Ok(()),
        Some(f) => {
            let mut msg = format!("unexpected argument {f:?}");
            let names = COMMANDS.iter().map(|s| s.name).filter(|n| !n.is_empty());
            match nearest(f, names) {
                Some(near) if near == f => {
                    msg.push_str(&format!(
                        " (the command comes first: refract {near} [flags])"
                    ));
                }
                Some(near) => msg.push_str(&format!(" (did you mean refract {near}?)")),
                None => {}
            }
            Err(usage(msg))
        }
    };
    let one = |what: &str| match ops.as_slice() {
        [x] => Ok(x.clone()),
        _ => Err(usage(format!(
            "{}: expected exactly one {what}",
            command.spec().name
        ))),
    };
    Ok(match command {
        Command::Replay => {
            one("FILE (or - for standard input)")?;
            None
        }
        Command::Daemon | Command::Check | Command::Cleanup => {
            none()?;
            None
        }
        Command::Status => {
            none()?;
            Some(Request::Status)
        }
        Command::Reload => {
            none()?;
            Some(Request::Reload)
        }
        Command::User => Some(Request::User(text("user", &one("EMAIL")?, 1024)?)),
        Command::Ban => {
            let a = addr("ban", &one("ADDR")?)?;
            let for_s = match &args.ban_for {
                None => None,
                Some(v) => {
                    let d = parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
                        usage(format!(
                            "--for: invalid duration {v:?} (use e.g. 30m, 12h, 2d, 1w)"
                        ))
                    })?;
                    max_timeout(d, "--for", v)?;
                    Some(d.as_secs() + u64::from(d.subsec_nanos() > 0))
                }
            };
            let reason = match &args.reason {
                None => None,
                Some(r) => Some(text("--reason", r.trim(), 256)?),
            };
            Some(Request::Ban {
                addr: a,
                for_s,
                reason,
            })
        }
        Command::Unban => {
            let given = usize::from(!ops.is_empty())
                + usize::from(args.user.is_some())
                + usize::from(args.all);
            if given != 1 {
                return Err(usage(
                    "unban: give ADDR..., --user EMAIL or --all (exactly one of them)",
                ));
            }
            if let Some(u) = &args.user {
                Some(Request::Unban(Unban::User(text("--user", u, 1024)?)))
            } else if args.all {
                Some(Request::Unban(Unban::All))
            } else {
                let addrs = ops
                    .iter()
                    .map(|a| addr("unban", a))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Request::Unban(Unban::Addrs(addrs)))
            }
        }
    })
}

/// What one run of refract is asked to do: the subcommand, its validated
/// configuration, and the subcommand's own arguments.
#[derive(Debug)]
pub struct Invocation {
    pub command: Command,
    pub cfg: Config,
    /// `replay FILE` (`-` is standard input); the configuration check
    /// requires exactly one for `replay`, and it is empty for the others.
    pub file: String,
    /// `replay --explain`.
    pub explain: bool,
    /// `--json` (client commands).
    pub json: bool,
    /// What a client command asks the daemon.
    pub request: Option<Request>,
    /// The environment file read, if any (`refract check` reports it).
    pub env_file: Option<EnvFile>,
}

/// Writes to standard output, ignoring errors: a closed pipe
/// (`refract --help | head -1`) ends the output, not the program with a
/// panic (`println!` panics on `EPIPE`; Rust ignores `SIGPIPE`).
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
}

/// [`out`] for standard error, one line, `refract: ` first.
pub fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "refract: {line}");
}

/// The process's argv and environment (and the environment file) → an
/// [`Invocation`], or the exit code when there is nothing to run: 0 after
/// `--help` or `--version` (printed here), [`EXIT_USAGE`] after one line
/// naming what is wrong. Warnings (unknown `REFRACT_*` variables, an
/// invalid `REFRACT_LOG`, skipped environment file lines, duplicate emails
/// in the limits file) go to standard error, one line each.
pub fn invocation() -> Result<Invocation, i32> {
    let argv: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(OsString::into_string)
        .collect()
    {
        Ok(v) => v,
        Err(bad) => {
            err(&format!(
                "argument is not valid UTF-8: {}",
                bad.to_string_lossy()
            ));
            return Err(EXIT_USAGE);
        }
    };
    let (command, args) = match parse_args(&argv) {
        Ok(x) => x,
        Err(Ok(help)) => {
            out(&help);
            return Err(0);
        }
        Err(Err(e)) => {
            err(&e.0);
            return Err(EXIT_USAGE);
        }
    };
    if args.version {
        out(&format!("refract {}\n", env!("CARGO_PKG_VERSION")));
        return Err(0);
    }
    let given = args
        .env_file
        .clone()
        .or_else(|| std::env::var("REFRACT_ENV_FILE").ok());
    let env_file = match env_file(given.as_deref(), &|p: &Path| p.exists()) {
        Ok(p) => p,
        Err(e) => {
            err(&e.0);
            return Err(EXIT_USAGE);
        }
    };
    let file = match env_file.map(|p| (EnvFile::read(&p), p)) {
        None => None,
        Some((Ok(f), _)) => Some(f),
        Some((Err(e), p)) => {
            err(&format!("env file {}: {e}", p.display()));
            return Err(EXIT_USAGE);
        }
    };
    for (k, v) in std::env::vars_os() {
        let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
            continue;
        };
        if let Some(w) = check_variable(k, v) {
            err(&format!("warning: {w}"));
        }
    }
    if let Some(f) = &file {
        for (line, why) in &f.skipped {
            err(&format!(
                "warning: {}:{line}: {why}, line skipped",
                f.path.display()
            ));
        }
        for (k, v) in &f.vars {
            if std::env::var_os(k).is_some() {
                continue;
            }
            if let Some(w) = check_variable(k, v) {
                err(&format!("warning: {}: {w}", f.path.display()));
            }
        }
        // The logger reads REFRACT_LOG itself: give it the file's value
        // (the process environment still wins). Single-threaded here.
        if let (None, Some(v)) = (std::env::var_os("REFRACT_LOG"), f.get("REFRACT_LOG")) {
            std::env::set_var("REFRACT_LOG", v);
        }
    }
    let getenv = |k: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| file.as_ref().and_then(|f| f.get(k)).map(str::to_string))
    };
    let mut warnings = Vec::new();
    match build(command, &args, &Env::new(&getenv), &mut warnings) {
        Ok((cfg, request)) => {
            for w in warnings {
                err(&format!("warning: {w}"));
            }
            Ok(Invocation {
                command,
                cfg,
                file: args.operands.first().cloned().unwrap_or_default(),
                explain: args.explain,
                json: args.json,
                request,
                env_file: file,
            })
        }
        Err(e) => {
            err(&e.0);
            Err(EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn cfg(argv: &[&str]) -> Result<Config, String> {
        let (cmd, args) = parse_args(&s(argv)).map_err(|e| match e {
            Ok(help) => help,
            Err(u) => u.0,
        })?;
        build_config(cmd, &args, &Env::new(&no_env)).map_err(|e| e.0)
    }

    /// Everything of a Config that can be compared.
    fn shape(c: &Config) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {} {:?} {} {} {} {}",
            c.access_log,
            c.block_log,
            c.protos,
            c.ports,
            c.window,
            c.timeout,
            c.firewall,
            c.dry_run,
            c.from_start,
            c.limits_file,
            c.set_v4,
            c.set_v6,
            c.max_line,
            format_args!(
                "{} {} {} {} {:?} {}",
                c.policy.window,
                c.policy.ban,
                c.policy.limit,
                c.policy.v6_prefix,
                c.policy.allow,
                c.policy.confirm
            )
        )
    }

    #[test]
    fn refract_0_2_unit_file_strings_parse_like_new_spellings() {
        let old = cfg(&[
            "--proto=tcp",
            "--dport=443",
            "--window=5s",
            "--timeout=1m",
            "--access.log=/var/log/xray/access.log",
            "--block.log=/var/log/xray/block.log",
        ])
        .unwrap();
        let new = cfg(&[
            "--proto",
            "tcp",
            "--dport",
            "443",
            "--window",
            "5s",
            "--timeout",
            "1m",
            "--access-log",
            "/var/log/xray/access.log",
            "--block-log",
            "/var/log/xray/block.log",
        ])
        .unwrap();
        assert_eq!(shape(&old), shape(&new));
        assert_eq!(old.ports, vec![443]);
        assert_eq!(old.window, Duration::from_secs(5));
        assert_eq!(old.timeout, Duration::from_secs(60));
        assert_eq!(old.access_log, PathBuf::from("/var/log/xray/access.log"));
        assert_eq!(old.block_log, PathBuf::from("/var/log/xray/block.log"));
        // Go's flag package also takes a single dash.
        let single = cfg(&[
            "-proto=tcp",
            "-dport",
            "443",
            "-access.log=/var/log/xray/access.log",
            "-block.log=/var/log/xray/block.log",
            "-window=5s",
            "-timeout=1m",
        ])
        .unwrap();
        assert_eq!(shape(&single), shape(&old));
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.ports, vec![443]);
        assert_eq!(
            c.protos,
            Protos {
                tcp: true,
                udp: false
            }
        );
        assert_eq!(c.window, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.policy.limit, 1);
        assert_eq!(c.policy.v6_prefix, 64);
        assert_eq!(c.set_v4, "refract_banned_users");
        assert_eq!(c.set_v6, "refract_banned_users6");
        assert_eq!(c.firewall, FirewallMode::Iptables);
        assert!(!c.dry_run && !c.from_start && !c.policy.confirm);
        assert_eq!(c.access_log, PathBuf::from("/var/log/xray/access.log"));
        assert_eq!(c.max_line, 64 * 1024);
    }

    /// `--help` and the README's flag table spell the defaults out (argh
    /// takes the help text from doc comments, literals): they must name the
    /// values `Config::default` defines.
    #[test]
    fn help_and_readme_name_the_defaults() {
        let d = Config::default();
        let go = |t: Duration| match t.as_secs() {
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        let size = |n: usize| match n {
            n if n % 1024 == 0 => format!("{}k", n / 1024),
            n => n.to_string(),
        };
        let proto = match (d.protos.tcp, d.protos.udp) {
            (true, false) => "tcp",
            (false, true) => "udp",
            _ => "tcp,udp",
        };
        let firewall = d.firewall.as_str();
        let ports: Vec<String> = d.ports.iter().map(u16::to_string).collect();
        let table = [
            ("proto", proto.to_string()),
            ("dport", ports.join(",")),
            ("window", go(d.window)),
            ("timeout", go(d.timeout)),
            ("access-log", d.access_log.display().to_string()),
            ("block-log", d.block_log.display().to_string()),
            ("limit", d.policy.limit.to_string()),
            ("ipv6-prefix", d.policy.v6_prefix.to_string()),
            ("firewall", firewall.to_string()),
            ("set-name", d.set_v4.clone()),
            ("set-name6", d.set_v6.clone()),
            ("set-size", d.set_size.to_string()),
            ("max-line", size(d.max_line)),
            ("max-users", d.policy.max_users.to_string()),
            ("max-keys", d.policy.max_keys.to_string()),
        ];
        let help = match parse_args(&s(&["--help"])) {
            Err(Ok(help)) => help,
            other => panic!("--help: {other:?}"),
        };
        // argh wraps descriptions: compare with whitespace collapsed.
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let help = &help[help.find("Options:").expect("--help lists options")..];
        let readme = include_str!("../README.md");
        for (flag, value) in table {
            let at = help
                .find(&format!("--{flag} "))
                .unwrap_or_else(|| panic!("--help has no --{flag}"));
            let rest = &help[at + flag.len() + 3..];
            let desc = &rest[..rest.find(" --").unwrap_or(rest.len())];
            assert!(
                desc.contains(&format!("(default {value})")),
                "--help: --{flag} should name its default {value}: {desc:?}"
            );
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `--{flag}`")))
                .unwrap_or_else(|| panic!("README: no row for --{flag}"));
            assert!(
                row.contains(&format!("| `{value}` |")),
                "README: --{flag} should name its default {value}: {row:?}"
            );
        }
        // The policy's own default is the same configuration.
        let p = PolicyConfig::default();
        assert_eq!((p.max_users, p.max_keys), (50_000, 250_000));
        assert_eq!(d.window, Duration::from_micros(p.window));
        assert_eq!(d.timeout, Duration::from_micros(p.ban));
    }

    /// Every flag has its row in the README's flags table, and a setting's
    /// row names its `REFRACT_*` twin.
    #[test]
    fn readme_has_a_row_for_every_flag() {
        let readme = include_str!("../README.md");
        for flag in VALUE_FLAGS
            .iter()
            .chain(SWITCHES)
            .filter(|f| !matches!(**f, "help" | "version"))
        {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `--{flag}`")))
                .unwrap_or_else(|| panic!("README: no row for --{flag}"));
            if SETTINGS.contains(flag) {
                assert!(
                    row.contains(&format!("`{}`", env_name(flag))),
                    "README: --{flag} lacks {}: {row}",
                    env_name(flag)
                );
            }
        }
        // And every flag is some command's.
        for flag in VALUE_FLAGS.iter().chain(SWITCHES) {
            assert!(
                matches!(*flag, "help" | "version")
                    || COMMANDS.iter().any(|c| c.flags.contains(flag)),
                "--{flag} belongs to no command"
            );
        }
    }

    #[test]
    fn new_flags() {
        let c = cfg(&[
            "--dport=443,8443,443",
            "--proto=tcp,udp",
            "--limit=3",
            "--ipv6-prefix=56",
            "--allow=10.0.0.0/8",
            "--allow",
            "2001:db8::1",
            "--confirm",
            "--dry-run=true",
            "--from-start=false",
            "--firewall=none",
        ])
        .unwrap();
        assert_eq!(c.ports, vec![443, 8443]);
        assert_eq!(
            c.protos,
            Protos {
                tcp: true,
                udp: true
            }
        );
        assert_eq!(c.policy.limit, 3);
        assert_eq!(c.policy.v6_prefix, 56);
        assert_eq!(c.policy.allow.len(), 2);
        assert_eq!(c.policy.allow[1].to_string(), "2001:db8::1/128");
        assert!(c.policy.confirm && c.dry_run && !c.from_start);
        assert_eq!(c.firewall, FirewallMode::None);
    }

    #[test]
    fn shaping_flags() {
        use crate::shape::rate::Rate;
        use crate::shape::Dev;
        let c = cfg(&[]).unwrap();
        assert!(!c.shape.enabled(), "no rate, no --shape-dev: no shaping");
        let c = cfg(&["--rate-down=20mbit", "--rate-up=5mbit"]).unwrap();
        assert!(c.shape.enabled());
        assert_eq!(c.shape.dev, Dev::Auto);
        assert_eq!(c.shape.defaults.down, Some(Rate(2_500_000)));
        assert_eq!(c.shape.caps_of(b"anyone").up, Some(Rate(625_000)));
        assert!(c
            .summary()
            .ends_with("shape auto (rate-down 20mbit, rate-up 5mbit, 0 per-user)"));
        let c = cfg(&["--shape-dev=eth1"]).unwrap();
        assert!(c.shape.enabled());
        assert_eq!(c.shape.dev, Dev::Named("eth1".into()));
        let c = cfg(&["--rate-down=20mbit", "--shape=off"]).unwrap();
        assert!(c.shape.off && !c.shape.enabled());
        assert!(c.summary().ends_with("shape off"));
    }

    #[test]
    fn durations() {
        let d = |x| parse_duration(x);
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("5s"), Some(Duration::from_secs(5)));
        assert_eq!(d("1m"), Some(Duration::from_secs(60)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("2m3s4ms"), Some(Duration::from_millis(123_004)));
        for bad in ["", "5", "s", "5x", "-5s", "5s5", "1e9h", "ms5"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--window=5x"], "--window: invalid duration \"5x\""),
            (&["--timeout=0s"], "--timeout: invalid duration"),
            (&["--dport=0"], "--dport: invalid port \"0\""),
            (&["--dport=443,http"], "--dport: invalid port \"http\""),
            (&["--proto=sctp"], "--proto: invalid protocol \"sctp\""),
            (&["--limit=0"], "--limit: invalid value \"0\""),
            (
                &["--ipv6-prefix=129"],
                "--ipv6-prefix: invalid value \"129\"",
            ),
            (
                &["--allow=10.0.0.0/33"],
                "--allow: invalid network \"10.0.0.0/33\"",
            ),
            (&["--firewall=nft"], "--firewall: invalid value \"nft\""),
            (&["--confirm=maybe"], "--confirm: invalid boolean"),
            (&["--timeout=25d"], "--timeout: \"25d\" is longer than the kernel's longest ipset timeout, 2147483s (3w3d20h31m23s)"),
            (
                &["--set-name=this-name-is-far-too-long-for-ipset"],
                "--set-name: invalid set name",
            ),
            (&["--max-line=1"], "--max-line: invalid size"),
            (&["--bogus=1"], "unknown flag --bogus=1 for refract"),
            (
                &["--limits=/nonexistent/limits"],
                "limits: /nonexistent/limits:",
            ),
            (&["--explain"], "--explain: not a flag of refract (it is one of refract replay)"),
            (&["replay"], "replay: expected exactly one FILE"),
            (&["--control="], "--control: empty path"),
            (&["status", "--control=none"], "--control none: there is no control socket"),
            (&["ban", "192.0.2.300"], "ban: invalid address \"192.0.2.300\""),
            (&["ban", "192.0.2.7", "--for=4w"], "--for: \"4w\" is longer than the kernel's longest"),
            (&["ban", "192.0.2.7", "--reason=a\nb"], "--reason: invalid value"),
            (&["unban"], "unban: give ADDR..., --user EMAIL or --all"),
            (&["unban", "--all", "192.0.2.7"], "exactly one of them"),
            (&["user"], "user: expected exactly one EMAIL"),
            (&["stauts"], "unexpected argument \"stauts\" (did you mean refract status?)"),
            (&["help", "stauts"], "unknown command \"stauts\" (did you mean refract status?)"),
            (&["--dprot=443"], "unknown flag --dprot=443 for refract (did you mean --dport?)"),
            (&["-dprot", "443"], "(did you mean --dport?)"),
            (&["check", "--acces-log", "x"], "(did you mean --access-log?)"),
            (&["cleanup", "--limit=2"], "--limit: not a flag of refract cleanup"),
            (&["status", "--for=1h"], "--for: not a flag of refract status (it is one of refract ban)"),
            (&["--dport"], "--dport: missing value"),
            (&["--shape=maybe"], "--shape: \"maybe\": expected on or off"),
            (&["--shape-dev=eth0/1"], "--shape-dev: \"eth0/1\" is not an interface name"),
            (&["--rate-down=fast"], "--rate-down: invalid rate \"fast\""),
            (&["--rate-up=1kbit"], "--rate-up: rate \"1kbit\" is below the lowest, 8kbit"),
            (&["replay", "x", "--rate-up=1mbit"], "--rate-up: not a flag of refract replay"),
        ];
        for (argv, want) in cases {
            let err = cfg(argv).unwrap_err();
            assert!(err.contains(want), "{argv:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn environment_twins_fill_missing_flags() {
        let env = |k: &str| -> Option<String> {
            match k {
                "REFRACT_DPORT" => Some("8443".into()),
                "REFRACT_WINDOW" => Some("10s".into()),
                "REFRACT_CONFIRM" => Some("true".into()),
                "REFRACT_ALLOW" => Some("10.0.0.0/8, 192.0.2.1".into()),
                "REFRACT_LIMIT" => Some("many".into()),
                _ => None,
            }
        };
        let (cmd, args) = parse_args(&s(&["--window=7s", "--limit=2"])).unwrap();
        let c = build_config(cmd, &args, &Env::new(&env)).unwrap();
        assert_eq!(c.ports, vec![8443]);
        assert_eq!(c.window, Duration::from_secs(7), "the flag wins");
        assert!(c.policy.confirm);
        assert_eq!(c.policy.allow.len(), 2);
        let (cmd, args) = parse_args(&s(&[])).unwrap();
        let err = build_config(cmd, &args, &Env::new(&env)).unwrap_err();
        assert!(
            err.0.starts_with("REFRACT_LIMIT: invalid value \"many\""),
            "{err}"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(distance("dprot", "dport"), 1);
        assert_eq!(distance("acces-log", "access-log"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(
            nearest("dprot", DAEMON_FLAGS.iter().copied()),
            Some("dport")
        );
        assert_eq!(nearest("limt", DAEMON_FLAGS.iter().copied()), Some("limit"));
        assert_eq!(nearest("xyzzy", DAEMON_FLAGS.iter().copied()), None);
    }

    #[test]
    fn subcommands_and_help() {
        let (cmd, args) =
            parse_args(&s(&["replay", "--window=10s", "x.log", "--explain"])).unwrap();
        assert_eq!(cmd, Command::Replay);
        assert_eq!(args.operands, vec!["x.log".to_string()]);
        assert!(args.explain);
        assert_eq!(parse_args(&s(&["check"])).unwrap().0, Command::Check);
        assert_eq!(parse_args(&s(&["cleanup"])).unwrap().0, Command::Cleanup);
        let help = match parse_args(&s(&["--help"])) {
            Err(Ok(h)) => h,
            other => panic!("{other:?}"),
        };
        for flag in DAEMON_FLAGS {
            assert!(help.contains(&format!("--{flag}")), "help lacks --{flag}");
        }
        assert!(help.contains("default 5s") && help.contains("default 443"));
    }

    #[test]
    fn days_and_weeks() {
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(
            parse_duration("1w2d3h"),
            Some(Duration::from_secs(604_800 + 2 * 86_400 + 3 * 3600))
        );
        let c = cfg(&["--timeout=2d"]).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(172_800));
        // The kernel's maximum itself is accepted; one second more is not.
        assert!(cfg(&["--timeout=2147483s"]).is_ok());
        let err = cfg(&["--timeout=2147484s"]).unwrap_err();
        assert!(err.contains("2147483s"), "{err}");
    }

    #[test]
    fn a_repeated_flag_keeps_its_last_value_as_go_flag_does() {
        let c = cfg(&["--dport", "443", "--dport", "8443"]).unwrap();
        assert_eq!(c.ports, vec![8443]);
        let c = cfg(&["--dport=443", "--limit=2", "--dport=2053,8443"]).unwrap();
        assert_eq!(c.ports, vec![2053, 8443]);
        assert_eq!(c.policy.limit, 2);
        // --allow accumulates.
        let c = cfg(&["--allow=10.0.0.0/8", "--allow=192.0.2.0/24"]).unwrap();
        assert_eq!(c.policy.allow.len(), 2);
        // A switch given twice is given.
        assert!(cfg(&["--confirm", "--confirm"]).unwrap().policy.confirm);
    }

    #[test]
    fn the_same_booleans_for_flags_and_variables() {
        for (v, want) in [
            ("1", true),
            ("0", false),
            ("true", true),
            ("False", false),
            ("yes", true),
            ("NO", false),
            ("on", true),
            ("off", false),
        ] {
            let c = cfg(&[&format!("--confirm={v}")]).unwrap();
            assert_eq!(c.policy.confirm, want, "--confirm={v}");
            let env = |k: &str| (k == "REFRACT_CONFIRM").then(|| v.to_string());
            let (cmd, args) = parse_args(&[]).unwrap();
            let c = build_config(cmd, &args, &Env::new(&env)).unwrap();
            assert_eq!(c.policy.confirm, want, "REFRACT_CONFIRM={v}");
        }
        let err = cfg(&["--dry-run=maybe"]).unwrap_err();
        assert_eq!(
            err,
            "--dry-run: invalid boolean \"maybe\" (use true/false, yes/no, on/off or 1/0)"
        );
    }

    #[test]
    fn each_command_shows_and_takes_only_its_flags() {
        let help_of = |argv: &[&str]| match parse_args(&s(argv)) {
            Err(Ok(h)) => h,
            other => panic!("{argv:?}: {other:?}"),
        };
        let status = help_of(&["status", "--help"]);
        assert_eq!(status, help_of(&["help", "status"]));
        assert_eq!(status, help_of(&["status", "-h"]));
        assert!(
            status.starts_with("Usage: refract status [--json]\n"),
            "{status}"
        );
        for f in ["--json", "--control", "--env-file", "--help"] {
            assert!(status.contains(f), "status help lacks {f}");
        }
        for f in ["--dport", "--window", "--explain", "--for "] {
            assert!(!status.contains(f), "status help has {f}");
        }
        let ban = help_of(&["ban", "--help"]);
        assert!(ban.contains("--for ") && ban.contains("--reason"), "{ban}");
        let replay = help_of(&["replay", "-h"]);
        assert!(replay.contains("--explain") && replay.contains("--window"));
        assert!(!replay.contains("--firewall") && !replay.contains("--json"));
        let cleanup = help_of(&["cleanup", "--help"]);
        assert!(cleanup.contains("--set-name") && cleanup.contains("--dry-run"));
        assert!(!cleanup.contains("--limits") && !cleanup.contains("--window"));
        let daemon = help_of(&["-h"]);
        assert_eq!(daemon, help_of(&["help"]));
        assert!(!daemon.contains("--json") && !daemon.contains("--explain"));
        assert!(daemon.contains("refract status") && daemon.contains("refract cleanup"));
        for spec in COMMANDS {
            let h = help(spec);
            for f in spec.flags {
                assert!(h.contains(&format!("--{f} ")), "{}: lacks --{f}", spec.name);
            }
        }
    }

    #[test]
    fn client_commands_make_their_requests() {
        let req = |argv: &[&str]| {
            let (cmd, args) = parse_args(&s(argv)).unwrap();
            build(cmd, &args, &Env::new(&no_env), &mut Vec::new())
                .map(|(_, r)| r.unwrap())
                .map_err(|e| e.0)
        };
        assert_eq!(req(&["status"]), Ok(Request::Status));
        assert_eq!(req(&["reload", "--json"]), Ok(Request::Reload));
        assert_eq!(
            req(&["user", "alice@example.com"]),
            Ok(Request::User("alice@example.com".into()))
        );
        assert_eq!(
            req(&[
                "ban",
                "192.0.2.7",
                "--for=1h",
                "--reason",
                "abuse ticket 17"
            ]),
            Ok(Request::Ban {
                addr: "192.0.2.7".into(),
                for_s: Some(3600),
                reason: Some("abuse ticket 17".into())
            })
        );
        assert_eq!(
            req(&["ban", "2001:db8:1::/64", "--for=1.5s"]),
            Ok(Request::Ban {
                addr: "2001:db8:1::/64".into(),
                for_s: Some(2),
                reason: None
            })
        );
        assert_eq!(
            req(&["unban", "192.0.2.7", "2001:db8::1"]),
            Ok(Request::Unban(Unban::Addrs(vec![
                "192.0.2.7".into(),
                "2001:db8::1".into()
            ])))
        );
        assert_eq!(
            req(&["unban", "--user", "bob"]),
            Ok(Request::Unban(Unban::User("bob".into())))
        );
        assert_eq!(req(&["unban", "--all"]), Ok(Request::Unban(Unban::All)));
        let (cmd, args) = parse_args(&s(&["status", "--control", "/tmp/x.sock"])).unwrap();
        let c = build_config(cmd, &args, &Env::new(&no_env)).unwrap();
        assert_eq!(c.control, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(cfg(&["--control=none"]).unwrap().control, None);
        let long = format!("--control=/{}", "x".repeat(107));
        assert!(cfg(&[&long]).unwrap_err().contains("1-107 bytes"));
    }

    #[test]
    fn a_command_reads_only_its_own_variables() {
        let env = |k: &str| -> Option<String> {
            match k {
                "REFRACT_LIMITS" => Some("/nonexistent/limits".into()),
                "REFRACT_LIMIT" => Some("many".into()),
                "REFRACT_DPORT" => Some("8443".into()),
                "REFRACT_CONTROL" => Some("/tmp/c.sock".into()),
                _ => None,
            }
        };
        let (cmd, args) = parse_args(&s(&["cleanup"])).unwrap();
        let c = build_config(cmd, &args, &Env::new(&env)).unwrap();
        assert_eq!(c.ports, vec![8443]);
        assert!(c.limits_file.is_none());
        let (cmd, args) = parse_args(&s(&["status"])).unwrap();
        let c = build_config(cmd, &args, &Env::new(&env)).unwrap();
        assert_eq!(c.control, Some(PathBuf::from("/tmp/c.sock")));
        let (cmd, args) = parse_args(&s(&["check"])).unwrap();
        let err = build_config(cmd, &args, &Env::new(&env)).unwrap_err();
        assert!(err.0.starts_with("REFRACT_LIMIT: invalid value"), "{err}");
    }

    #[test]
    fn unknown_variables_and_an_invalid_log_target_are_named() {
        assert_eq!(check_variable("REFRACT_DPORT", "443"), None);
        assert_eq!(check_variable("REFRACT_CONTROL", "none"), None);
        assert_eq!(check_variable("REFRACT_LOG", "stderr"), None);
        assert_eq!(check_variable("PATH", "/bin"), None);
        assert_eq!(
            check_variable("REFRACT_DPROT", "443").as_deref(),
            Some("unknown variable REFRACT_DPROT, ignored (did you mean REFRACT_DPORT?)")
        );
        assert_eq!(
            check_variable("REFRACT_XYZZY", "1").as_deref(),
            Some("unknown variable REFRACT_XYZZY, ignored")
        );
        assert_eq!(
            check_variable("REFRACT_LOG", "journal").as_deref(),
            Some("REFRACT_LOG: invalid value \"journal\" (use auto, stderr or syslog); logging to auto")
        );
        // Operands have no twin: from a file, REFRACT_ALL would unban everything.
        assert!(check_variable("REFRACT_ALL", "1").is_some());
    }

    #[test]
    fn environment_file_syntax() {
        let text = "\u{feff}# refract settings\n\
                    ; also a comment\n\
                    \n\
                    REFRACT_DPORT=8443\n\
                    export REFRACT_PROTO=tcp,udp\n\
                    REFRACT_ACCESS_LOG=\"/var/log/xray/access log\"\n\
                    REFRACT_BLOCK_LOG='/var/log/$x'\n\
                    REFRACT_LIMIT=2 # two devices\n\
                    REFRACT_SET_NAME=\"a\\\"b\"\n\
                      REFRACT_WINDOW = 10s\n\
                    not a setting\n\
                    1BAD=x\n\
                    REFRACT_FIREWALL=\"none\n\
                    REFRACT_DPORT=2053\n";
        let f = EnvFile::parse(Path::new("/etc/default/refract"), text);
        assert_eq!(f.get("REFRACT_DPORT"), Some("2053"), "the later line wins");
        assert_eq!(f.get("REFRACT_PROTO"), Some("tcp,udp"));
        assert_eq!(
            f.get("REFRACT_ACCESS_LOG"),
            Some("/var/log/xray/access log")
        );
        assert_eq!(f.get("REFRACT_BLOCK_LOG"), Some("/var/log/$x"));
        assert_eq!(f.get("REFRACT_LIMIT"), Some("2"));
        assert_eq!(f.get("REFRACT_SET_NAME"), Some("a\"b"));
        assert_eq!(f.get("REFRACT_WINDOW"), Some("10s"));
        assert_eq!(f.get("REFRACT_FIREWALL"), None);
        let skipped: Vec<usize> = f.skipped.iter().map(|(l, _)| *l).collect();
        assert_eq!(skipped, vec![11, 12, 13]);
        assert_eq!(f.skipped[0].1, "expected KEY=VALUE");
        assert_eq!(f.skipped[2].1, "unterminated quote in REFRACT_FIREWALL");
        // A value with # inside (not after a blank) is kept.
        let f = EnvFile::parse(Path::new("f"), "REFRACT_SET_NAME=a#b\n");
        assert_eq!(f.get("REFRACT_SET_NAME"), Some("a#b"));
    }

    #[test]
    fn which_environment_file() {
        let only = |want: &'static str| move |p: &Path| p == Path::new(want);
        assert_eq!(
            env_file(None, &only("/etc/conf.d/refract")),
            Ok(Some(PathBuf::from("/etc/conf.d/refract")))
        );
        assert_eq!(
            env_file(None, &|_: &Path| true),
            Ok(Some(PathBuf::from("/etc/default/refract")))
        );
        assert_eq!(env_file(None, &|_: &Path| false), Ok(None));
        assert_eq!(env_file(Some("none"), &|_: &Path| true), Ok(None));
        assert_eq!(
            env_file(Some("/srv/refract.env"), &only("/srv/refract.env")),
            Ok(Some(PathBuf::from("/srv/refract.env")))
        );
        let err = env_file(Some("/srv/missing"), &|_: &Path| false).unwrap_err();
        assert_eq!(
            err.0,
            "--env-file: /srv/missing does not exist (use none for no file)"
        );
    }

    /// Random argument vectors from the flags' own vocabulary (and some
    /// junk) never panic the parser, and what it accepts builds or is
    /// refused with one line. A small in-tree stand-in for the `args` fuzz
    /// target, deterministic (xorshift), bounded.
    #[test]
    fn random_argument_vectors_never_panic() {
        let mut words: Vec<String> = Vec::new();
        for f in VALUE_FLAGS.iter().chain(SWITCHES) {
            words.push(format!("--{f}"));
            words.push(format!("-{f}=1"));
            words.push(format!("--{f}=yes"));
        }
        for c in COMMANDS.iter().filter(|c| !c.name.is_empty()) {
            words.push(c.name.to_string());
        }
        for w in [
            "-",
            "--",
            "-h",
            "-V",
            "help",
            "443",
            "0",
            "1h",
            "4w",
            "none",
            "192.0.2.7",
            "2001:db8::/64",
            "x",
            "",
            "=",
            "--=",
            "---",
            "-x",
            "\u{e9}",
            "a b",
            "/tmp/s",
        ] {
            words.push(w.to_string());
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let n = (next() % 7) as usize;
            let argv: Vec<String> = (0..n)
                .map(|_| words[(next() % words.len() as u64) as usize].clone())
                .collect();
            match parse_args(&argv) {
                Ok((cmd, args)) => {
                    if args.limits.is_some() {
                        continue;
                    }
                    if let Err(e) = build(cmd, &args, &Env::new(&no_env), &mut Vec::new()) {
                        assert!(!e.0.contains('\n'), "{argv:?}: {e}");
                    }
                }
                Err(Ok(help)) => assert!(help.starts_with("Usage: refract"), "{argv:?}"),
                Err(Err(e)) => assert!(!e.0.is_empty() && !e.0.contains('\n'), "{argv:?}: {e}"),
            }
        }
    }
}
