//! Per-user limits: how many keys each user may have, and the limits file
//! they come from (`--limits FILE`, re-read on SIGHUP).
//!
//! The file is one `EMAIL N` per line (separated by spaces or tabs); `#`
//! starts a comment and blank lines are ignored. The email is everything
//! before the last field, so a name containing spaces works; `N` is a whole
//! number >= 1. A user without an entry gets `--limit`.

use std::path::Path;

use super::PolicyConfig;

/// Per-user limits: raw email bytes → addresses allowed.
pub type Limits = crate::hash::Map<Box<[u8]>, u32>;

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

/// `limit(user)`: the per-user entry, else the default; at least 1.
pub(super) fn limit_of(cfg: &PolicyConfig, email: &[u8]) -> usize {
    let l = if cfg.limits.is_empty() {
        cfg.limit
    } else {
        cfg.limits.get(email).copied().unwrap_or(cfg.limit)
    };
    l.max(1) as usize
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
