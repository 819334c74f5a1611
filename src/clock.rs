//! Wall-clock timestamps as the proxy writes them, and the monotonic time the
//! policy runs on.
//!
//! Xray and V2Ray log the *local* time of the proxy host with no zone
//! (Go's `log` with `Ldate|Ltime[|Lmicroseconds]`). refract never converts
//! that to UTC: a [`Timestamp`] is the civil date and time counted as if it
//! were UTC ("naive seconds"), which keeps the arithmetic exact and makes the
//! printed audit line show exactly what the log showed. A DST change shows up
//! as a jump in replay input, which the policy tolerates like any clock jump.
//!
//! The policy itself only sees [`Micros`]: microseconds on some monotonic
//! scale. The daemon feeds it `CLOCK_MONOTONIC`; `replay` feeds it the log's
//! naive timestamps.

use std::fmt;

use crate::sys::time;

/// Microseconds on a monotonic scale chosen by the caller.
pub type Micros = u64;

/// One second in [`Micros`].
pub const SECOND: Micros = 1_000_000;

/// A civil local time with microseconds, stored as naive seconds since
/// 1970-01-01 00:00:00 (no zone) plus a sub-second part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 00:00:00 in the log's own local time.
    pub secs: i64,
    /// Microseconds within the second, `0..1_000_000`.
    pub micros: u32,
}

/// The fields of a civil date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// The local civil time now, as the audit line prints it (refract 0.2 used
/// Go's `log`, i.e. local time).
pub fn localtime_now() -> Timestamp {
    let (secs, micros) = time::realtime();
    localtime(secs, micros).unwrap_or(Timestamp {
        // A time localtime_r cannot represent: print UTC rather than nothing.
        secs,
        micros: 0,
    })
}

/// `secs` since the Unix epoch as local civil time (`localtime_r`).
pub fn localtime(secs: i64, micros: u32) -> Option<Timestamp> {
    let tm = time::localtime(secs)?;
    Timestamp::from_civil(
        Civil {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
        },
        micros,
    )
}

impl Timestamp {
    /// Builds a timestamp from civil fields; `None` when a field is out of
    /// range (month 13, day 32, hour 24, …). Day 31 of a 30-day month is not
    /// rejected (it rolls over), as Go's `time.Date` would.
    pub fn from_civil(c: Civil, micros: u32) -> Option<Timestamp> {
        if !(1..=12).contains(&c.month)
            || !(1..=31).contains(&c.day)
            || c.hour > 23
            || c.minute > 59
            || c.second > 60
            || micros >= 1_000_000
        {
            return None;
        }
        let days = days_from_civil(c.year, c.month, c.day);
        let secs = days * 86_400 + i64::from(c.hour * 3600 + c.minute * 60 + c.second);
        Some(Timestamp { secs, micros })
    }

    /// The civil fields of this timestamp.
    pub fn civil(self) -> Civil {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// Microseconds since the naive epoch, clamped at zero: the clock the
    /// policy runs on in `replay`.
    pub fn as_micros(self) -> Micros {
        if self.secs < 0 {
            return 0;
        }
        (self.secs as u64)
            .saturating_mul(SECOND)
            .saturating_add(u64::from(self.micros))
    }
}

/// `YYYY/MM/DD HH:MM:SS`, the audit line's (and Go's `log`'s) format.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.civil();
        write!(
            f,
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, public domain).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localtime_is_the_zone_offset_away() {
        // With TZ unset or UTC the civil time is the epoch arithmetic; with a
        // zone it differs by the zone offset, at most 26 hours.
        crate::sys::time::reload_timezone();
        let t = localtime(1_763_719_204, 5).unwrap();
        assert!((t.secs - 1_763_719_204).abs() <= 26 * 3600, "{t:?}");
        assert_eq!(t.micros, 5);
        assert!(localtime_now().secs > 1_600_000_000);
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000_i64, -1, 0, 1, 10_957, 20_000, 20_513, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn formats_like_go_log() {
        let c = Civil {
            year: 2026,
            month: 11,
            day: 21,
            hour: 10,
            minute: 0,
            second: 4,
        };
        let t = Timestamp::from_civil(c, 123).unwrap();
        assert_eq!(t.to_string(), "2026/11/21 10:00:04");
        assert_eq!(t.civil(), c);
        assert_eq!(t.as_micros() % SECOND, 123);
    }

    #[test]
    fn rejects_out_of_range_fields() {
        let ok = Civil {
            year: 2026,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert!(Timestamp::from_civil(ok, 0).is_some());
        assert!(Timestamp::from_civil(Civil { month: 13, ..ok }, 0).is_none());
        assert!(Timestamp::from_civil(Civil { day: 0, ..ok }, 0).is_none());
        assert!(Timestamp::from_civil(Civil { hour: 24, ..ok }, 0).is_none());
        assert!(Timestamp::from_civil(ok, 1_000_000).is_none());
    }
}
