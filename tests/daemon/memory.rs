//! Resource bounds of the real daemon (`--dry-run`, real files): a flood
//! of 1,000,000 distinct users and 5,000,000 distinct addresses keeps the
//! peak RSS (`VmHWM`) under the cap the README documents, with the default
//! `--max-users`/`--max-keys`; the policy refuses what does not fit, the
//! `stats:` line counts it, and the daemon says so once.
//!
//! Worst case on purpose: `--window=1h` and `--timeout=1h`, so nothing
//! expires during the flood and every cap is reached; limit 1, so each
//! tracked user's further addresses are bans (bans are state too, and
//! count against `--max-keys`).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::daemon::*;
use crate::support::{heavy, wait_progress, TempDir, STALL};

const USERS: u64 = 1_000_000;
const ADDRESSES: u64 = 5_000_000;

/// The documented cap (README, "Reliability"): peak RSS with the default
/// caps, whatever the log holds. Measured: see the README.
const RSS_CAP_KB: u64 = 48 * 1024;

/// Default `--max-users` and `--max-keys`.
const MAX_USERS: u64 = 50_000;
const MAX_KEYS: u64 = 250_000;

/// Line `i` comes from its own /64 (`2001:db8:HI:LO::1`): every line is a
/// new address. The first `USERS` lines are `USERS` distinct users (the
/// first `MAX_USERS` are tracked); the rest come from the tracked users,
/// each already at its limit, so every one is a ban until the key cap
/// refuses more.
fn flood_line(out: &mut Vec<u8>, i: u64) {
    let user = if i < USERS { i } else { i % MAX_USERS };
    let (hi, lo) = (i >> 16, i & 0xffff);
    writeln!(
        out,
        "2026/01/30 17:03:38 from [2001:db8:{hi:x}:{lo:x}::1]:443 accepted tcp:a.example:443 \
         [in >> direct] email: u{user}@example.com"
    )
    .unwrap();
}

#[test]
fn flood_of_users_and_addresses_stays_under_the_rss_cap() {
    let _heavy = heavy();
    let dir = TempDir::new("bounds-mem");
    append(&dir.path("access.log"), "");
    let mut d = Daemon::start(&dir, &["--window=1h", "--timeout=1h", "--from-start"]);
    let start = Instant::now();
    let mut log = OpenOptions::new().append(true).open(&d.access).unwrap();
    let mut chunk = Vec::with_capacity(8 << 20);
    for i in 0..ADDRESSES {
        flood_line(&mut chunk, i);
        if chunk.len() >= 8 << 20 {
            log.write_all(&chunk).unwrap();
            chunk.clear();
        }
    }
    log.write_all(&chunk).unwrap();
    drop(log);
    let written = start.elapsed();
    // As long as it takes, while the daemon reads on.
    let s = wait_progress(STALL, "the whole flood read", || {
        d.assert_running();
        std::thread::sleep(Duration::from_millis(500));
        let s = d.stats();
        if s["parsed_lines"] == ADDRESSES {
            Ok(s)
        } else {
            Err((s["parsed_lines"], s["bytes"]))
        }
    });
    let took = start.elapsed();
    let hwm = vm_hwm(d.pid());
    eprintln!(
        "flood: {ADDRESSES} lines written in {written:?}, read in {took:?}; VmHWM {hwm} kB; \
         users={} keys={} users_refused={} keys_refused={} bans={}",
        s["users"], s["keys"], s["users_refused"], s["keys_refused"], s["bans"]
    );

    // The caps held and were reached: what did not fit was refused, counted.
    assert_eq!(s["users"], MAX_USERS, "{s:?}");
    assert_eq!(s["keys"], MAX_KEYS, "{s:?}");
    assert_eq!(s["users_refused"], USERS - MAX_USERS, "{s:?}");
    // Entries for the tracked users, bans until the cap, then refusals.
    assert_eq!(s["bans"], MAX_KEYS - MAX_USERS, "{s:?}");
    assert_eq!(s["keys_refused"], ADDRESSES - USERS - s["bans"], "{s:?}");
    // Said once, not once per refused line.
    let warnings = d.log().matches("memory cap reached").count();
    assert_eq!(warnings, 1, "{}", d.log());

    assert!(
        hwm < RSS_CAP_KB,
        "VmHWM {hwm} kB over the documented cap {RSS_CAP_KB} kB"
    );
    let (st, _) = d.terminate();
    assert!(st.success(), "{}", d.log());
}
