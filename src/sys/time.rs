//! Clocks: the monotonic clock the live policy runs on, and the local civil
//! time printed in the audit line.
//!
//! The policy, the timerfd and the enforcer all share `CLOCK_MONOTONIC`, so a
//! deadline computed by the policy can be handed to the timerfd unchanged
//! (`TFD_TIMER_ABSTIME`) and a wall-clock step (NTP, an operator's `date`)
//! never shortens or lengthens a window or a ban.

use crate::clock::{Civil, Micros, Timestamp, SECOND};

extern "C" {
    /// POSIX `tzset(3)`; the `libc` crate does not declare it for Linux.
    fn tzset();
}

/// `CLOCK_MONOTONIC` now, in microseconds.
pub fn monotonic() -> Micros {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always
    // supported on Linux, so the call cannot fail (checked anyway below).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    (ts.tv_sec as u64) * SECOND + (ts.tv_nsec as u64) / 1_000
}

/// Re-reads the time zone (`TZ`, `/etc/localtime`). POSIX does not require
/// `localtime_r` to do it, so the daemon calls this at startup and on SIGHUP.
pub fn reload_timezone() {
    // SAFETY: tzset only updates libc's internal zone state; refract is
    // single-threaded, so no other thread reads that state concurrently.
    unsafe { tzset() }
}

/// The local civil time now, as the audit line prints it (refract 0.2 used
/// Go's `log`, i.e. local time).
pub fn localtime_now() -> Timestamp {
    let mut now: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid writable timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    localtime(now.tv_sec, (now.tv_nsec / 1_000) as u32).unwrap_or(Timestamp {
        // A time localtime_r cannot represent: print UTC rather than nothing.
        secs: now.tv_sec,
        micros: 0,
    })
}

/// `secs` since the Unix epoch as local civil time, through `localtime_r`.
pub fn localtime(secs: i64, micros: u32) -> Option<Timestamp> {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is plain old data; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call;
    // localtime_r is the re-entrant variant and writes only to `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic();
        let b = monotonic();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn localtime_under_utc() {
        // With TZ unset or UTC the civil time is the epoch arithmetic; with a
        // zone it differs by the zone offset, at most 26 hours.
        reload_timezone();
        let t = localtime(1_763_719_204, 5).unwrap();
        assert!((t.secs - 1_763_719_204).abs() <= 26 * 3600, "{t:?}");
        assert_eq!(t.micros, 5);
        let now = localtime_now();
        assert!(now.secs > 1_600_000_000);
    }
}
