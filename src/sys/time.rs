//! Clocks: the monotonic clock the live policy runs on, and the local civil
//! time printed in the audit line ([`crate::clock::localtime_now`] turns it
//! into a timestamp; this layer returns the C library's values as they are
//! and imports nothing from above it).
//!
//! The policy, the timerfd and the enforcer all share `CLOCK_MONOTONIC`, so a
//! deadline computed by the policy can be handed to the timerfd unchanged
//! (`TFD_TIMER_ABSTIME`) and a wall-clock step (NTP, an operator's `date`)
//! never shortens or lengthens a window or a ban.

/// Microseconds in a second.
const MICROS: u64 = 1_000_000;

extern "C" {
    /// POSIX `tzset(3)`; the `libc` crate does not declare it for Linux.
    fn tzset();
}

/// `CLOCK_MONOTONIC` now, in microseconds (the scale of `crate::clock::Micros`).
pub fn monotonic() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always
    // supported on Linux, so the call cannot fail (checked anyway below).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    (ts.tv_sec as u64) * MICROS + (ts.tv_nsec as u64) / 1_000
}

/// Re-reads the time zone (`TZ`, `/etc/localtime`). POSIX does not require
/// `localtime_r` to do it, so the daemon calls this at startup and on SIGHUP.
pub fn reload_timezone() {
    // SAFETY: tzset only updates libc's internal zone state; refract is
    // single-threaded, so no other thread reads that state concurrently.
    unsafe { tzset() }
}

/// `CLOCK_REALTIME` now: seconds since the Unix epoch and microseconds.
pub fn realtime() -> (i64, u32) {
    let mut now: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid writable timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    (now.tv_sec, (now.tv_nsec / 1_000) as u32)
}

/// `secs` since the Unix epoch as local civil time, through `localtime_r`
/// (`tm_year` counts from 1900, `tm_mon` from 0, as in `localtime(3)`).
pub fn localtime(secs: i64) -> Option<libc::tm> {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is plain old data; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call;
    // localtime_r is the re-entrant variant and writes only to `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
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
        let tm = localtime(1_763_719_204).unwrap();
        assert!(
            (2025..=2026).contains(&(tm.tm_year + 1900)),
            "{}",
            tm.tm_year
        );
        let (secs, micros) = realtime();
        assert!(secs > 1_600_000_000 && micros < 1_000_000);
    }
}
