//! The validated configuration: what `cli` turns the command line (and the
//! `REFRACT_*` environment) into. Everything here has been checked; the
//! daemon and `replay` never see a raw string.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::PolicyConfig;

/// Per-user limits: raw email bytes → addresses allowed.
pub type Limits = crate::hash::Map<Box<[u8]>, u32>;

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

/// The whole configuration.
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
}

/// Reads a per-user limits file: one `EMAIL N` per line (separated by
/// spaces or tabs), `#` starts a comment, blank lines are ignored. The email
/// is everything before the last field, so a name containing spaces works.
pub fn load_limits(path: &Path) -> Result<Limits, String> {
    let text = std::fs::read(path).map_err(|e| format!("limits: {}: {e}", path.display()))?;
    parse_limits(&text).map_err(|(line, why)| format!("limits: {}:{line}: {why}", path.display()))
}

/// `<[u8]>::trim_ascii`, which needs Rust 1.80 (Ubuntu 24.04 ships 1.75).
fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// The parser behind [`load_limits`]; errors carry the 1-based line number.
pub fn parse_limits(text: &[u8]) -> Result<Limits, (usize, String)> {
    let mut out = Limits::default();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = match raw.iter().position(|&b| b == b'#') {
            Some(p) => &raw[..p],
            None => raw,
        };
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        let split = line.iter().rposition(|&b| b == b' ' || b == b'\t');
        let Some(split) = split else {
            return Err((i + 1, "expected \"EMAIL N\"".into()));
        };
        let email = trim(&line[..split]);
        let n = &line[split + 1..];
        let n = std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                (
                    i + 1,
                    format!(
                        "invalid limit {:?} (a whole number >= 1)",
                        String::from_utf8_lossy(n)
                    ),
                )
            })?;
        out.insert(email.into(), n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_file() {
        let text =
            b"# per-user limits\nalice@example.com 2\n\n12.bob\t3  # family\nname with spaces 4\n";
        let m = parse_limits(text).unwrap();
        assert_eq!(m.get(&b"alice@example.com"[..]), Some(&2));
        assert_eq!(m.get(&b"12.bob"[..]), Some(&3));
        assert_eq!(m.get(&b"name with spaces"[..]), Some(&4));
        assert_eq!(parse_limits(b"ok 1\nbroken\n").unwrap_err().0, 2);
        assert_eq!(parse_limits(b"a 0\n").unwrap_err().0, 1);
        assert_eq!(parse_limits(b"a -1\n").unwrap_err().0, 1);
    }
}
