//! Rates as operators write them: `--rate-down`, `--rate-up` and the
//! `down=`/`up=` fields of the limits file.
//!
//! The units are tc's (`tc(8)`, "UNITS"), so that a plan written for tc
//! means the same here: `bit`, `kbit`, `mbit`, `gbit`, `tbit` are bits per
//! second in powers of 1000, `kibit`, `mibit`, `gibit`, `tibit` in powers
//! of 1024; `bps`, `kbps`, `mbps`, `gbps`, `tbps` are **bytes** per second
//! (as in tc: `mbps` is megabytes, not megabits), `kibps`… in powers of
//! 1024. Case does not matter; a bare number is bits per second. The value
//! may have a fraction (`2.5mbit`). `off` (or `none`) in the limits file
//! means "not capped", also when a default is given.

use std::fmt;

/// A rate, in bytes per second (what HTB and nftables' limit take).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(pub u64);

/// Lowest rate accepted: 8 kbit/s. Below a packet or two per second a cap
/// is an outage, and HTB's arithmetic loses precision.
pub const MIN: Rate = Rate(1000);
/// Highest rate accepted: 100 Gbit/s.
pub const MAX: Rate = Rate(12_500_000_000);

/// A user's caps: download (server to client, shaped on the egress) and
/// upload (client to server, policed). `None`: not capped that way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Caps {
    pub down: Option<Rate>,
    pub up: Option<Rate>,
}

impl Caps {
    pub fn is_capped(&self) -> bool {
        self.down.is_some() || self.up.is_some()
    }
}

/// One field of the limits file, before the defaults apply: a rate, `off`
/// (not capped even if a default is set), or absent (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Field {
    #[default]
    Default,
    Off,
    Set(Rate),
}

impl Field {
    /// The rate in force, given the flag's default.
    pub fn or(self, default: Option<Rate>) -> Option<Rate> {
        match self {
            Field::Default => default,
            Field::Off => None,
            Field::Set(r) => Some(r),
        }
    }
}

/// The `down=`/`up=` fields of one limits-file line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fields {
    pub down: Field,
    pub up: Field,
}

impl Fields {
    pub fn caps(&self, defaults: Caps) -> Caps {
        Caps {
            down: self.down.or(defaults.down),
            up: self.up.or(defaults.up),
        }
    }
}

const UNITS: &[(&str, f64)] = &[
    ("bit", 1.0 / 8.0),
    ("kbit", 1e3 / 8.0),
    ("mbit", 1e6 / 8.0),
    ("gbit", 1e9 / 8.0),
    ("tbit", 1e12 / 8.0),
    ("kibit", 1024.0 / 8.0),
    ("mibit", 1_048_576.0 / 8.0),
    ("gibit", 1_073_741_824.0 / 8.0),
    ("tibit", 1_099_511_627_776.0 / 8.0),
    ("bps", 1.0),
    ("kbps", 1e3),
    ("mbps", 1e6),
    ("gbps", 1e9),
    ("tbps", 1e12),
    ("kibps", 1024.0),
    ("mibps", 1_048_576.0),
    ("gibps", 1_073_741_824.0),
    ("tibps", 1_099_511_627_776.0),
];

/// Parses a rate (see the module docs). The error says what is wrong and
/// gives an example.
pub fn parse(s: &str) -> Result<Rate, String> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let bad = || format!("invalid rate {s:?} (e.g. 20mbit, 512kbit, 2.5mbit; tc's units)");
    let value: f64 = num.parse().map_err(|_| bad())?;
    let per = if unit.is_empty() {
        1.0 / 8.0
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(bad)?
    };
    let bytes = value * per;
    if !bytes.is_finite() || bytes < MIN.0 as f64 {
        return Err(format!("rate {s:?} is below the lowest, {MIN}"));
    }
    if bytes > MAX.0 as f64 {
        return Err(format!("rate {s:?} is above the highest, {MAX}"));
    }
    Ok(Rate(bytes.round() as u64))
}

/// A limits-file field value: a rate, or `off`/`none`.
pub fn parse_field(s: &str) -> Result<Field, String> {
    match s.to_ascii_lowercase().as_str() {
        "off" | "none" => Ok(Field::Off),
        _ => parse(s).map(Field::Set),
    }
}

impl fmt::Display for Rate {
    /// In bits per second with the largest decimal unit that keeps it
    /// whole, else with up to three decimals (`20mbit`, `2.5mbit`,
    /// `512kbit`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0 as f64 * 8.0;
        for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
            if bits >= scale {
                let v = bits / scale;
                let s = format!("{v:.3}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                return write!(f, "{s}{unit}");
            }
        }
        write!(f, "{bits:.0}bit")
    }
}

impl Rate {
    /// Bits per second (for JSON and metrics).
    pub fn bits(self) -> u64 {
        self.0.saturating_mul(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_units() {
        assert_eq!(parse("20mbit"), Ok(Rate(2_500_000)));
        assert_eq!(parse("20Mbit"), Ok(Rate(2_500_000)));
        assert_eq!(parse("2.5mbit"), Ok(Rate(312_500)));
        assert_eq!(parse("512kbit"), Ok(Rate(64_000)));
        assert_eq!(parse("1gbit"), Ok(Rate(125_000_000)));
        assert_eq!(parse("1mibit"), Ok(Rate(131_072)));
        // bps is bytes per second, as in tc.
        assert_eq!(parse("1mbps"), Ok(Rate(1_000_000)));
        assert_eq!(parse("64kibps"), Ok(Rate(65_536)));
        // A bare number is bits per second.
        assert_eq!(parse("8000000"), Ok(Rate(1_000_000)));
    }

    #[test]
    fn bad_rates_say_why() {
        for s in [
            "",
            "fast",
            "20 mbit",
            "20mbits",
            "-1mbit",
            "1.2.3mbit",
            "mbit",
        ] {
            let e = parse(s).unwrap_err();
            assert!(
                e.contains("invalid rate") && e.contains("20mbit"),
                "{s}: {e}"
            );
        }
        assert!(parse("1kbit")
            .unwrap_err()
            .contains("below the lowest, 8kbit"));
        assert!(parse("0").unwrap_err().contains("below"));
        assert!(parse("1tbit")
            .unwrap_err()
            .contains("above the highest, 100gbit"));
    }

    #[test]
    fn display_reads_back() {
        for s in ["20mbit", "2.5mbit", "512kbit", "1gbit", "8kbit", "100gbit"] {
            let r = parse(s).unwrap();
            assert_eq!(r.to_string(), s);
            assert_eq!(parse(&r.to_string()), Ok(r));
        }
        assert_eq!(Rate(2_500_000).bits(), 20_000_000);
    }

    #[test]
    fn fields_and_defaults() {
        assert_eq!(parse_field("off"), Ok(Field::Off));
        assert_eq!(parse_field("NONE"), Ok(Field::Off));
        let d = Caps {
            down: Some(Rate(1000)),
            up: None,
        };
        let f = Fields {
            down: Field::Default,
            up: Field::Set(Rate(2000)),
        };
        assert_eq!(
            f.caps(d),
            Caps {
                down: Some(Rate(1000)),
                up: Some(Rate(2000))
            }
        );
        let off = Fields {
            down: Field::Off,
            up: Field::Default,
        };
        assert!(!off.caps(d).is_capped());
    }
}
