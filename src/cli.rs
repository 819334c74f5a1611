//! The command line: argh for the flags, a normaliser in front of it for
//! refract 0.2's spellings, the `REFRACT_*` environment twins, and the
//! validation that turns strings into a [`Config`].
//!
//! refract 0.2 was a Go program using the standard `flag` package, and its
//! unit file passes `--proto=tcp --dport=443 --window=5s --timeout=1m
//! --access.log=PATH --block.log=PATH`. Go's `flag` accepts `-name`,
//! `--name`, `-name=value` and `--name=value`, and `--bool=true|false`. argh
//! accepts only `--name value` with dashes, so [`normalize`] rewrites the
//! argument vector first: `--access.log=X` → `--access-log X`. Both
//! spellings keep working.
//!
//! Precedence: a flag on the command line, else its `REFRACT_*` variable,
//! else the default. Every invalid value stops the program with one line
//! naming the flag and exit code 2, before anything is touched.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use ipnet::IpNet;

use crate::config::{Config, FirewallMode, Protos};
use crate::enforce::ipset::rules::MULTIPORT_MAX;
use crate::nl::consts::IPSET_MAXNAMELEN;
use crate::policy::limits::{load_limits, Limits};
use crate::policy::PolicyConfig;

/// Exit code for a usage error (bad flag or value), as with BSD `EX_USAGE`'s
/// common shell convention and refract 0.2's `flag.ExitOnError`.
pub const EXIT_USAGE: i32 = 2;

#[derive(FromArgs, Debug, Default, PartialEq)]
/// per-user session limits for Xray-core and V2Ray, enforced in the kernel.
#[argh(
    note = "Commands:\n  refract [flags]                   follow the access log and enforce (the daemon)\n  refract replay FILE [--explain]   print what a live run would have banned (- reads stdin)\n  refract check [flags]             validate config, log and kernel support; change nothing\n  refract cleanup [flags]           remove the sets and the DROP rules\n\nEvery flag also reads REFRACT_<NAME> (REFRACT_DPORT, REFRACT_ACCESS_LOG, ...) when not given.\nrefract 0.2 spellings are accepted: --access.log=PATH --block.log=PATH --window=5s."
)]
pub struct Args {
    /// protocols to police: tcp, udp or tcp,udp (default tcp)
    #[argh(option)]
    pub proto: Option<String>,
    /// inbound port(s), comma-separated (default 443)
    #[argh(option)]
    pub dport: Option<String>,
    /// how long an address stays online after its last line: 500ms, 5s, 1m,
    /// 1h30m (default 5s)
    #[argh(option)]
    pub window: Option<String>,
    /// how long a ban lasts (default 1m)
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
    /// decide and audit, but change nothing in the kernel
    #[argh(switch)]
    pub dry_run: bool,
    /// read the access log from its beginning (default: from its end)
    #[argh(switch)]
    pub from_start: bool,
    /// DROP rule management: iptables or none (default iptables)
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
    /// replay: print one line per input line with what happened
    #[argh(switch)]
    pub explain: bool,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    /// the log file for `replay` (- for standard input)
    #[argh(positional)]
    pub file: Vec<String>,
}

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Daemon,
    Replay,
    Check,
    Cleanup,
}

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
];

/// Switches, in their canonical spelling.
const SWITCHES: &[&str] = &[
    "confirm",
    "dry-run",
    "from-start",
    "explain",
    "version",
    "help",
];

/// Rewrites refract 0.2 / Go `flag` spellings into argh's:
/// `--access.log=X` and `-access.log X` → `--access-log X`, `--dport=443` →
/// `--dport 443`, `--confirm=true` → `--confirm`, `--confirm=false` → (gone).
/// Unknown flags pass through untouched so argh names them in its error.
/// Everything after a bare `--` is left alone.
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
        let body = a
            .strip_prefix("--")
            .or_else(|| a.strip_prefix('-'))
            .unwrap_or(a);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let canon = name.replace(['.', '_'], "-");
        let single_dash = !a.starts_with("--");
        let known_value = VALUE_FLAGS.contains(&canon.as_str());
        let known_switch = SWITCHES.contains(&canon.as_str());
        if single_dash && !known_value && !known_switch {
            // `-V`, `-h` and unknown short flags: argh decides.
            out.push(a.clone());
            continue;
        }
        if known_switch {
            match value {
                None => out.push(format!("--{canon}")),
                Some(v) => match v {
                    "true" | "1" | "t" | "T" | "TRUE" | "True" => out.push(format!("--{canon}")),
                    "false" | "0" | "f" | "F" | "FALSE" | "False" => {}
                    _ => {
                        return Err(usage(format!(
                            "--{canon}: invalid boolean {v:?} (use true or false)"
                        )))
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
        out.push(match value {
            Some(_) => format!("--{canon}"),
            None => a.clone(),
        });
    }
    Ok(out)
}

/// Parses the normalised argument vector (without the program name).
pub fn parse_args(argv: &[String]) -> Result<(Command, Args), Result<String, UsageError>> {
    let (command, rest) = match argv.first().map(String::as_str) {
        Some("replay") => (Command::Replay, &argv[1..]),
        Some("check") => (Command::Check, &argv[1..]),
        Some("cleanup") => (Command::Cleanup, &argv[1..]),
        _ => (Command::Daemon, argv),
    };
    let normalized = normalize(rest).map_err(Err)?;
    // argh takes a lone `-` for a flag; carry it past argh as a placeholder.
    let strs: Vec<&str> = normalized
        .iter()
        .map(|a| if a == "-" { STDIN_MARK } else { a.as_str() })
        .collect();
    let name = match command {
        Command::Daemon => "refract",
        Command::Replay => "refract replay",
        Command::Check => "refract check",
        Command::Cleanup => "refract cleanup",
    };
    match Args::from_args(&[name], &strs) {
        Ok(mut args) => {
            for f in &mut args.file {
                if f == STDIN_MARK {
                    *f = "-".to_string();
                }
            }
            Ok((command, args))
        }
        Err(e) => match e.status {
            Ok(()) => Err(Ok(e.output)),
            Err(()) => Err(Err(usage(first_line(&e.output)))),
        },
    }
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

/// Looks up flag values in the environment through `env` (injected so
/// tests need not touch the process environment).
pub struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl<'a> Env<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { get }
    }

    fn var(&self, flag: &str) -> Option<String> {
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
                    "{}: invalid boolean {v:?} (use true or false)",
                    env_name(flag)
                ))
            }),
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "t" => Some(true),
        "0" | "false" | "no" | "off" | "f" => Some(false),
        _ => None,
    }
}

/// Parses a Go-style duration: `500ms`, `5s`, `1m`, `1h`, `1h30m`, `1.5s`.
/// Units: `ms`, `s`, `m`, `h` (and `us`/`µs`). Zero is allowed by the
/// parser; callers decide whether it makes sense.
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

/// Turns parsed arguments and the environment into a validated [`Config`].
///
/// One function per flag group, called in the order the groups are checked
/// (so the first invalid value named is always the same one); a flag that is
/// neither given nor in the environment takes its value from
/// [`Config::default`], the one place defaults are defined.
pub fn build_config(command: Command, args: &Args, env: &Env<'_>) -> Result<Config, UsageError> {
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
    let (limits_file, limits) = limits_file(args, env)?;
    let confirm = env.switch(args.confirm, "confirm")?;
    let dry_run = env.switch(args.dry_run, "dry-run")?;
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
    operands(command, args)?;

    let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
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
    if timeout.as_secs() > u64::from(u32::MAX) {
        return Err(usage(
            "--timeout: longer than the kernel's ipset timeout (136 years)",
        ));
    }
    Ok((window, timeout))
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

/// `--firewall`: iptables or none.
fn firewall(args: &Args, env: &Env<'_>, default: FirewallMode) -> Result<FirewallMode, UsageError> {
    let Some((firewall, l)) = env.value(&args.firewall, "firewall") else {
        return Ok(default);
    };
    match firewall.as_str() {
        "iptables" => Ok(FirewallMode::Iptables),
        "none" => Ok(FirewallMode::None),
        other => Err(usage(format!(
            "{l}: invalid value {other:?} (use iptables or none)"
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

/// `--limits FILE`, read now so that a bad file stops the start.
fn limits_file(args: &Args, env: &Env<'_>) -> Result<(Option<PathBuf>, Limits), UsageError> {
    let Some((path, _)) = env.pick(&args.limits, "limits") else {
        return Ok((None, Limits::default()));
    };
    let path = PathBuf::from(path);
    let limits = load_limits(&path).map_err(usage)?;
    Ok((Some(path), limits))
}

/// The positional FILE (replay only) and `--explain` (replay only).
fn operands(command: Command, args: &Args) -> Result<(), UsageError> {
    match command {
        Command::Replay => {
            if args.file.len() != 1 {
                return Err(usage(
                    "replay: expected exactly one FILE (or - for standard input)",
                ));
            }
        }
        _ => {
            if let Some(f) = args.file.first() {
                return Err(usage(format!("unexpected argument {f:?}")));
            }
            if args.explain {
                return Err(usage("--explain: only with replay"));
            }
        }
    }
    Ok(())
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
}

/// The process's argv and environment → an [`Invocation`], or the exit code
/// when there is nothing to run: 0 after `--help` or `--version` (printed
/// here), [`EXIT_USAGE`] after one line naming what is wrong.
pub fn invocation() -> Result<Invocation, i32> {
    let argv: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(OsString::into_string)
        .collect()
    {
        Ok(v) => v,
        Err(bad) => {
            eprintln!(
                "refract: argument is not valid UTF-8: {}",
                bad.to_string_lossy()
            );
            return Err(EXIT_USAGE);
        }
    };
    let (command, args) = match parse_args(&argv) {
        Ok(x) => x,
        Err(Ok(help)) => {
            println!("{help}");
            return Err(0);
        }
        Err(Err(e)) => {
            eprintln!("refract: {e}");
            return Err(EXIT_USAGE);
        }
    };
    if args.version {
        println!("refract {}", env!("CARGO_PKG_VERSION"));
        return Err(0);
    }
    let getenv = |k: &str| std::env::var(k).ok();
    match build_config(command, &args, &Env::new(&getenv)) {
        Ok(cfg) => Ok(Invocation {
            command,
            cfg,
            file: args.file.first().cloned().unwrap_or_default(),
            explain: args.explain,
        }),
        Err(e) => {
            eprintln!("refract: {e}");
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
        let firewall = match d.firewall {
            FirewallMode::Iptables => "iptables",
            FirewallMode::None => "none",
        };
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
            (
                &["--set-name=this-name-is-far-too-long-for-ipset"],
                "--set-name: invalid set name",
            ),
            (&["--max-line=1"], "--max-line: invalid size"),
            (&["--bogus=1"], "--bogus"),
            (
                &["--limits=/nonexistent/limits"],
                "limits: /nonexistent/limits:",
            ),
            (&["--explain"], "--explain: only with replay"),
            (&["replay"], "replay: expected exactly one FILE"),
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
    fn subcommands_and_help() {
        let (cmd, args) =
            parse_args(&s(&["replay", "--window=10s", "x.log", "--explain"])).unwrap();
        assert_eq!(cmd, Command::Replay);
        assert_eq!(args.file, vec!["x.log".to_string()]);
        assert!(args.explain);
        assert_eq!(parse_args(&s(&["check"])).unwrap().0, Command::Check);
        assert_eq!(parse_args(&s(&["cleanup"])).unwrap().0, Command::Cleanup);
        let help = match parse_args(&s(&["--help"])) {
            Err(Ok(h)) => h,
            other => panic!("{other:?}"),
        };
        for flag in VALUE_FLAGS
            .iter()
            .chain(SWITCHES.iter().filter(|s| **s != "help"))
        {
            assert!(help.contains(&format!("--{flag}")), "help lacks --{flag}");
        }
        assert!(help.contains("default 5s") && help.contains("default 443"));
    }
}
