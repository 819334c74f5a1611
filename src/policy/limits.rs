//! Per-user limits: how many keys each user may have, and the limits file
//! they come from (`--limits FILE`, re-read on SIGHUP).
//!
//! The file is one `EMAIL N` per line (separated by spaces or tabs); `#`
//! starts a comment and blank lines are ignored. The email is everything
//! before the last field, so a name containing spaces works; `N` is a whole
//! number >= 1. A user without an entry gets `--limit`.
//!
//! Bandwidth caps may follow: `EMAIL N down=RATE up=RATE` (either or both,
//! in any order; RATE in tc's units, e.g. `20mbit`, or `off` for "not
//! capped" when `--rate-down`/`--rate-up` set a default; see
//! [`crate::shape::rate`]). Those fields are the ones after `N` that
//! contain `=`; a field with `=` that is not `down=` or `up=` is an error.
//!
//! Invariants of the parser: a file with any bad line is rejected as a
//! whole, and the error lists every bad line with its number (an operator
//! fixes them in one pass, not one per reload); a UTF-8 byte order mark at
//! the start is skipped (editors on Windows write one); an email listed
//! twice keeps its later limit, and the parse says so ([`Parsed::duplicates`]).

use std::path::Path;

use super::PolicyConfig;
use crate::shape::rate::{self, Fields};

/// Per-user limits: raw email bytes → addresses allowed.
pub type Limits = crate::hash::Map<Box<[u8]>, u32>;

/// The UTF-8 encoding of U+FEFF, the byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bad lines listed in one error message at most; the count says the rest.
const MAX_LISTED: usize = 20;

/// A parsed limits file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub limits: Limits,
    /// `(line, earlier line, email)` for every email given again: the
    /// limit on `line` is the one in force.
    pub duplicates: Vec<(usize, usize, String)>,
    /// The `down=`/`up=` fields of the lines that have some, by email (the
    /// later line wins, as for the limit).
    pub rates: crate::hash::Map<Box<[u8]>, Fields>,
}

impl Parsed {
    /// One warning line per duplicate, naming the file.
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        self.duplicates
            .iter()
            .map(|(line, earlier, email)| {
                format!(
                    "limits: {}:{line}: {email:?} is also on line {earlier}; the later limit (line {line}) wins",
                    path.display()
                )
            })
            .collect()
    }
}

/// Reads a per-user limits file (see the module docs); the error is one
/// line naming every bad line. Duplicate emails are not errors: see
/// [`read_limits`] for the warnings about them.
pub fn load_limits(path: &Path) -> Result<Limits, String> {
    read_limits(path).map(|(limits, _)| limits)
}

/// [`load_limits`] with the warnings (duplicate emails) a caller should
/// print or log, one line each.
pub fn read_limits(path: &Path) -> Result<(Limits, Vec<String>), String> {
    read_file(path).map(|(p, warnings)| (p.limits, warnings))
}

/// The whole parse of a limits file (limits and rates) with its warnings.
pub fn read_file(path: &Path) -> Result<(Parsed, Vec<String>), String> {
    let text = std::fs::read(path).map_err(|e| format!("limits: {}: {e}", path.display()))?;
    match parse_limits(&text) {
        Ok(p) => {
            let warnings = p.warnings(path);
            Ok((p, warnings))
        }
        Err(bad) => Err(format_errors(path, &bad)),
    }
}

/// Splits the trailing `key=value` fields off a line: the rest, and the
/// fields parsed (or why one is bad).
fn rate_fields(line: &[u8]) -> Result<(&[u8], Option<Fields>), String> {
    let mut rest = line;
    let mut fields: Option<Fields> = None;
    loop {
        let split = rest.iter().rposition(|&b| b == b' ' || b == b'\t');
        let Some(split) = split else { break };
        let last = &rest[split + 1..];
        let Some(eq) = last.iter().position(|&b| b == b'=') else {
            break;
        };
        let (name, value) = (&last[..eq], &last[eq + 1..]);
        let value = std::str::from_utf8(value)
            .map_err(|_| format!("{:?}: not UTF-8", String::from_utf8_lossy(last)))?;
        let f = fields.get_or_insert_with(Fields::default);
        let slot = match &name.to_ascii_lowercase()[..] {
            b"down" => &mut f.down,
            b"up" => &mut f.up,
            _ => {
                return Err(format!(
                    "unknown field {:?} (down=RATE or up=RATE)",
                    String::from_utf8_lossy(last)
                ))
            }
        };
        *slot = rate::parse_field(value)?;
        rest = trim(&rest[..split]);
    }
    Ok((rest, fields))
}

/// `limits: PATH:3: why` for one bad line; for more,
/// `limits: PATH:3: why; line 7: why (2 bad lines)` (the first keeps the
/// `PATH:LINE:` shape editors and grep know).
fn format_errors(path: &Path, bad: &[(usize, String)]) -> String {
    let mut out = format!("limits: {}:", path.display());
    for (i, (line, why)) in bad.iter().take(MAX_LISTED).enumerate() {
        if i == 0 {
            out.push_str(&format!("{line}: {why}"));
        } else {
            out.push_str(&format!("; line {line}: {why}"));
        }
    }
    if bad.len() > MAX_LISTED {
        out.push_str(&format!("; and {} more", bad.len() - MAX_LISTED));
    }
    if bad.len() > 1 {
        out.push_str(&format!(" ({} bad lines)", bad.len()));
    }
    out
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

/// The parser behind [`load_limits`]: the limits, or every bad line as
/// `(1-based line number, why)`, in file order.
pub fn parse_limits(text: &[u8]) -> Result<Parsed, Vec<(usize, String)>> {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    let mut out = Parsed::default();
    let mut first_seen: crate::hash::Map<Box<[u8]>, usize> = crate::hash::Map::default();
    let mut bad = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let line = match raw.iter().position(|&b| b == b'#') {
            Some(p) => &raw[..p],
            None => raw,
        };
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        let (line, fields) = match rate_fields(line) {
            Ok(v) => v,
            Err(why) => {
                bad.push((n, why));
                continue;
            }
        };
        let split = line.iter().rposition(|&b| b == b' ' || b == b'\t');
        let Some(split) = split else {
            bad.push((n, "expected \"EMAIL N\"".to_string()));
            continue;
        };
        let email = trim(&line[..split]);
        let limit = &line[split + 1..];
        let Some(limit) = std::str::from_utf8(limit)
            .ok()
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|&l| l >= 1)
        else {
            bad.push((
                n,
                format!(
                    "invalid limit {:?} (a whole number >= 1)",
                    String::from_utf8_lossy(limit)
                ),
            ));
            continue;
        };
        match first_seen.get(email) {
            Some(&earlier) => {
                out.duplicates
                    .push((n, earlier, String::from_utf8_lossy(email).into_owned()))
            }
            None => {
                first_seen.insert(email.into(), n);
            }
        }
        out.limits.insert(email.into(), limit);
        match fields {
            Some(f) => {
                out.rates.insert(email.into(), f);
            }
            None => {
                out.rates.remove(email);
            }
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

/// `limit(user)`: the per-user entry, else the default; at least 1.
#[inline]
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
        let m = parse_limits(text).unwrap().limits;
        assert_eq!(m.get(&b"alice@example.com"[..]), Some(&2));
        assert_eq!(m.get(&b"12.bob"[..]), Some(&3));
        assert_eq!(m.get(&b"name with spaces"[..]), Some(&4));
        assert_eq!(parse_limits(b"ok 1\nbroken\n").unwrap_err()[0].0, 2);
        assert_eq!(parse_limits(b"a 0\n").unwrap_err()[0].0, 1);
        assert_eq!(parse_limits(b"a -1\n").unwrap_err()[0].0, 1);
    }

    #[test]
    fn every_bad_line_is_reported() {
        let bad = parse_limits(b"ok 1\nbroken\nb 0\nc 2\nd x\n").unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3, 5]);
        let msg = format_errors(Path::new("/etc/refract/limits"), &bad);
        assert_eq!(
            msg,
            "limits: /etc/refract/limits:2: expected \"EMAIL N\"; \
             line 3: invalid limit \"0\" (a whole number >= 1); \
             line 5: invalid limit \"x\" (a whole number >= 1) (3 bad lines)"
        );
        assert!(!msg.contains('\n'));
        let one = format_errors(Path::new("f"), &bad[..1]);
        assert_eq!(one, "limits: f:2: expected \"EMAIL N\"");
        // A flood of bad lines stays one bounded line.
        let many: Vec<u8> = b"x\n".repeat(1000);
        let msg = format_errors(Path::new("f"), &parse_limits(&many).unwrap_err());
        assert!(msg.starts_with("limits: f:1: expected"), "{msg}");
        assert!(msg.ends_with("; and 980 more (1000 bad lines)"), "{msg}");
        assert!(msg.len() < 2000, "{}", msg.len());
    }

    #[test]
    fn duplicates_warn_and_the_later_wins() {
        let p = parse_limits(b"alice 2\nbob 1\nalice 5\n").unwrap();
        assert_eq!(p.limits.get(&b"alice"[..]), Some(&5));
        assert_eq!(p.duplicates, vec![(3, 1, "alice".to_string())]);
        assert_eq!(
            p.warnings(Path::new("/etc/refract/limits")),
            vec![
                "limits: /etc/refract/limits:3: \"alice\" is also on line 1; the later limit (line 3) wins"
                    .to_string()
            ]
        );
    }

    #[test]
    fn rate_fields_follow_the_limit() {
        use crate::shape::rate::{Field, Rate};
        let p = parse_limits(
            b"alice@example.com 2 down=20mbit up=5mbit\n\
              bob 1\n\
              name with spaces 3\tUP=1mbps\n\
              carol 1 down=off\n",
        )
        .unwrap();
        assert_eq!(p.limits.get(&b"alice@example.com"[..]), Some(&2));
        let alice = p.rates.get(&b"alice@example.com"[..]).unwrap();
        assert_eq!(alice.down, Field::Set(Rate(2_500_000)));
        assert_eq!(alice.up, Field::Set(Rate(625_000)));
        assert!(!p.rates.contains_key(&b"bob"[..]));
        let spaces = p.rates.get(&b"name with spaces"[..]).unwrap();
        assert_eq!(
            (spaces.down, spaces.up),
            (Field::Default, Field::Set(Rate(1_000_000)))
        );
        assert_eq!(p.limits.get(&b"name with spaces"[..]), Some(&3));
        assert_eq!(p.rates.get(&b"carol"[..]).unwrap().down, Field::Off);
        // A later line without fields drops the earlier fields, as a later
        // limit replaces the earlier one.
        let p = parse_limits(b"a 1 down=1mbit\na 2\n").unwrap();
        assert!(p.rates.is_empty());
        // Bad fields are bad lines, every one listed.
        let bad =
            parse_limits(b"a 1 down=fast\nb 1 speed=1mbit\nc down=1mbit\nd 1 up=\n").unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 2, 3, 4], "{bad:?}");
        assert!(bad[0].1.contains("invalid rate \"fast\""), "{}", bad[0].1);
        assert!(
            bad[1].1.contains("unknown field \"speed=1mbit\""),
            "{}",
            bad[1].1
        );
        assert!(bad[2].1.contains("expected \"EMAIL N\""), "{}", bad[2].1);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let p = parse_limits(b"\xEF\xBB\xBFalice@example.com 3\n").unwrap();
        assert_eq!(p.limits.get(&b"alice@example.com"[..]), Some(&3));
        // Only at the start: elsewhere it is part of a line.
        assert!(parse_limits(b"a 1\n\xEF\xBB\xBF\n").is_err());
    }
}
