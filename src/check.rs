//! `refract check`: would the daemon start with this configuration, and
//! what would it set up? Validates the log and audit paths, permissions and
//! kernel support, and prints the sets and rules startup would create,
//! without changing anything. Exit code 0: it would start; 1: it would not.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::cli::{EnvFile, ENV_FILES};
use crate::config::{Config, FirewallMode};
use crate::enforce::{self, Firewall, KernelConfig};
use crate::nl::ipset::Family;

/// One finding: `ok` lines describe, problem lines explain what to do.
#[derive(Debug)]
struct Report {
    out: String,
    problems: usize,
}

impl Report {
    fn ok(&mut self, what: &str, msg: impl AsRef<str>) {
        let _ = writeln!(self.out, "ok    {what}: {}", msg.as_ref());
    }
    fn note(&mut self, what: &str, msg: impl AsRef<str>) {
        let _ = writeln!(self.out, "note  {what}: {}", msg.as_ref());
    }
    fn fail(&mut self, what: &str, msg: impl AsRef<str>) {
        self.problems += 1;
        let _ = writeln!(self.out, "FAIL  {what}: {}", msg.as_ref());
    }
}

fn access_log(r: &mut Report, path: &Path) {
    match File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => r.ok(
                "access log",
                format!("{} readable, {} bytes", path.display(), m.len()),
            ),
            Ok(_) => r.fail(
                "access log",
                format!("{} is not a regular file", path.display()),
            ),
            Err(e) => r.fail("access log", format!("{}: {e}", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if dir.is_dir() {
                r.note(
                    "access log",
                    format!(
                        "{} does not exist yet; refract waits for it (is Xray's \"log\": {{\"access\": ...}} set to this path?)",
                        path.display()
                    ),
                );
            } else {
                r.fail(
                    "access log",
                    format!("{} does not exist, nor does its directory", path.display()),
                );
            }
        }
        Err(e) => r.fail("access log", format!("{}: {e}", path.display())),
    }
}

fn audit_log(r: &mut Report, path: &Path) {
    if path.exists() {
        match OpenOptions::new().append(true).open(path) {
            Ok(_) => r.ok("audit log", format!("{} writable", path.display())),
            Err(e) => r.fail("audit log", format!("{}: {e}", path.display())),
        }
        return;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let probe = dir.join(format!(".refract-check-{}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    r.ok(
                        "audit log",
                        format!("{} will be created (mode 0640)", path.display()),
                    );
                }
                Err(e) => r.fail(
                    "audit log",
                    format!("cannot create files in {}: {e}", dir.display()),
                ),
            }
        }
        Ok(_) => r.fail("audit log", format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => r.note(
            "audit log",
            format!(
                "{} will be created with its directory {} (mode 0750)",
                path.display(),
                dir.display()
            ),
        ),
        Err(e) => r.fail("audit log", format!("{}: {e}", dir.display())),
    }
}

fn kernel(r: &mut Report, cfg: &Config) {
    let (mode, why) = enforce::choose(cfg);
    if cfg.firewall == FirewallMode::Auto {
        r.ok("backend", why);
    }
    if mode == FirewallMode::Nftables {
        match enforce::nftables::table_exists() {
            Ok(true) => r.ok(
                "nftables",
                "nf_tables reachable; table inet refract exists (kept with its bans)",
            ),
            Ok(false) => r.ok(
                "nftables",
                "nf_tables reachable; would create table inet refract",
            ),
            Err(e) => r.fail("nftables", e.to_string()),
        }
        match crate::enforce::ipset::startup::destroy_works() {
            Ok(can) => sock_diag(r, Some(can)),
            Err(e) => r.fail("sock_diag", e),
        }
        return;
    }
    let cfg = &Config {
        firewall: mode,
        ..cfg.clone()
    };
    let kcfg = KernelConfig::from_config(cfg);
    let probe = match enforce::probe(&kcfg) {
        Ok(p) => p,
        Err(e) => {
            r.fail("kernel", e.to_string());
            return;
        }
    };
    r.ok("kernel", "netlink ipset reachable, CAP_NET_ADMIN present");
    for (family, name) in [(Family::V4, &cfg.set_v4), (Family::V6, &cfg.set_v6)] {
        let i = match family {
            Family::V4 => 0,
            Family::V6 => 1,
        };
        match &probe.sets[i] {
            Some(set) => r.ok(
                "set",
                format!(
                    "{name} exists ({} {}, {} entries); existing bans are kept",
                    set.typename,
                    family.ipset_word(),
                    set.members.len()
                ),
            ),
            None => r.note(
                "set",
                format!("would create: {}", probe.create_command(&kcfg, family)),
            ),
        }
    }
    sock_diag(r, probe.destroy);
    let fw = Firewall::new(
        cfg.firewall,
        cfg.protos,
        &cfg.ports,
        &cfg.set_v4,
        &cfg.set_v6,
    );
    if cfg.firewall == FirewallMode::None {
        r.note(
            "firewall",
            format!(
                "--firewall none: add the DROP rules yourself: {}",
                fw.describe().replace('\n', " ; ")
            ),
        );
        return;
    }
    // The rules reference the sets: with a set still to be created, `-C`
    // cannot tell, so only ask when both exist.
    if probe.sets.iter().all(Option::is_some) {
        match fw.is_installed() {
            Ok(true) => r.ok("firewall", "DROP rules in place"),
            Ok(false) => r.note(
                "firewall",
                format!("would insert: {}", fw.describe().replace('\n', " ; ")),
            ),
            Err(e) => r.fail("firewall", e.to_string()),
        }
    } else {
        match ["iptables", "ip6tables"].into_iter().find(|b| !which(b)) {
            None => r.note(
                "firewall",
                format!("would insert: {}", fw.describe().replace('\n', " ; ")),
            ),
            Some(b) => r.fail(
                "firewall",
                format!("{b} is not installed (apt-get install iptables)"),
            ),
        }
    }
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Where the settings came from: the environment file the service reads
/// and the `REFRACT_*` variables it set, so that what `check` checks is
/// visibly what the service runs.
fn settings_source(r: &mut Report, env_file: Option<&EnvFile>) {
    match env_file {
        Some(f) => {
            let mut keys: Vec<&str> = f
                .vars
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with("REFRACT_"))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let vars: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}={}", f.get(k).unwrap_or_default()))
                .collect();
            r.ok(
                "env file",
                format!(
                    "{}: {}",
                    f.path.display(),
                    if vars.is_empty() {
                        "no REFRACT_* settings".to_string()
                    } else {
                        vars.join(" ")
                    }
                ),
            );
            for (line, why) in &f.skipped {
                r.note(
                    "env file",
                    format!("{}:{line}: {why}, line skipped", f.path.display()),
                );
            }
        }
        None => r.note(
            "env file",
            format!(
                "none read (the service reads the first of {} that exists)",
                ENV_FILES.join(", ")
            ),
        ),
    }
}

/// Whether the kernel can end a banned address's open connections.
fn sock_diag(r: &mut Report, destroy: Option<bool>) {
    match destroy {
        Some(true) => r.ok("sock_diag", "the kernel can destroy sockets (open TCP connections are ended)"),
        Some(false) => r.note(
            "sock_diag",
            "this kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY off): bans only stop new packets",
        ),
        None => {}
    }
}

/// Bandwidth caps: off, not configured, or each piece tried.
fn shape(r: &mut Report, cfg: &Config) {
    if cfg.shape.off {
        r.note(
            "shape",
            "--shape off: refract's shaping is removed at start",
        );
        return;
    }
    if !cfg.shape.enabled() {
        r.note("shape", "no rate configured: no shaping");
        return;
    }
    for (what, res) in crate::shape::check(&cfg.shape, &cfg.ports) {
        match res {
            Ok(m) => r.ok(&what, m),
            Err(e) => r.fail(&what, e),
        }
    }
}

/// Runs the checks; returns the report and whether the daemon would start.
/// `env_file` is the environment file the settings were read from.
pub fn run(cfg: &Config, env_file: Option<&EnvFile>) -> (String, bool) {
    let mut r = Report {
        out: String::new(),
        problems: 0,
    };
    settings_source(&mut r, env_file);
    r.ok("settings", cfg.summary().trim_start_matches("settings: "));
    access_log(&mut r, &cfg.access_log);
    audit_log(&mut r, &cfg.block_log);
    if cfg.dry_run {
        r.note("kernel", "--dry-run: nothing is set up in the kernel");
    } else {
        kernel(&mut r, cfg);
        shape(&mut r, cfg);
    }
    let ok = r.problems == 0;
    let _ = writeln!(
        r.out,
        "{}",
        if ok {
            "refract would start".to_string()
        } else {
            format!("refract would not start: {} problem(s) above", r.problems)
        }
    );
    (r.out, ok)
}
