//! The follower inside the real daemon, against every way a log file gets
//! rotated, truncated, deleted or replaced. Each test writes lines before
//! and after and checks the exact number of lines the daemon read (its
//! SIGUSR1 `stats:` line), then that the number stays put (nothing
//! re-read).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::daemon::*;
use crate::support::{heavy, TempDir};

#[test]
fn starts_at_the_end_and_reads_appends() {
    let dir = TempDir::new("rot-end");
    append(&dir.path("access.log"), &lines("old", 5));
    let mut d = Daemon::start(&dir, &[]);
    append(&d.access, &lines("new", 3));
    d.expect_lines(3);
    // A last line without its newline waits for it.
    append(&d.access, "partial");
    d.expect_lines(3);
    append(&d.access, " line\n");
    d.expect_lines(4);
    let (st, _) = d.terminate();
    assert!(st.success());
}

#[test]
fn from_start_reads_existing_content() {
    let dir = TempDir::new("rot-start");
    append(&dir.path("access.log"), &lines("old", 5));
    let mut d = Daemon::start(&dir, &["--from-start"]);
    d.expect_lines(5);
    append(&d.access, &lines("new", 2));
    d.expect_lines(7);
}

#[test]
fn logrotate_create_with_writes_to_the_old_inode() {
    let dir = TempDir::new("rot-create");
    // The log exists when the daemon starts (a file created and rotated
    // away before the daemon ever opened it cannot be followed).
    append(&dir.path("access.log"), "");
    let mut d = Daemon::start(&dir, &[]);
    append(&d.access, &lines("before", 10));
    // No wait: rename, the writer still appends to the renamed file (Xray
    // keeps its fd until it is idle), and a new file appears.
    std::fs::rename(&d.access, dir.path("access.log.1")).unwrap();
    append(&dir.path("access.log.1"), &lines("late", 3));
    append(&d.access, &lines("after", 4));
    let s = d.expect_lines(17);
    assert_eq!(s["rotations"], 1, "{s:?}");
    append(&dir.path("access.log.1"), &lines("later", 2));
    append(&d.access, &lines("after2", 1));
    d.expect_lines(20);
}

#[test]
fn copytruncate_and_truncation_in_place() {
    let dir = TempDir::new("rot-trunc");
    let mut d = Daemon::start(&dir, &[]);
    append(&d.access, &lines("before", 10));
    d.expect_lines(10);
    // logrotate copytruncate
    std::fs::copy(&d.access, dir.path("access.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&d.access)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&d.access, &lines("after", 3));
    let s = d.expect_lines(13);
    assert_eq!(s["truncations"], 1, "{s:?}");
    // Truncated and refilled past the old size before the daemon can look
    // (3x-ui truncates; Xray writes at once): one write of a longer text.
    let mut f = OpenOptions::new().write(true).open(&d.access).unwrap();
    f.set_len(0).unwrap();
    f.write_all(lines("refill-longer-than-before", 5).as_bytes())
        .unwrap();
    drop(f);
    let s = d.expect_lines(18);
    assert_eq!(s["truncations"], 2, "{s:?}");
    assert_eq!(s["rotations"], 0, "{s:?}");
}

#[test]
fn deletion_and_later_recreation() {
    let dir = TempDir::new("rot-delete");
    let mut d = Daemon::start(&dir, &[]);
    append(&d.access, &lines("before", 6));
    d.expect_lines(6);
    std::fs::remove_file(&d.access).unwrap();
    d.expect_lines(6);
    std::thread::sleep(Duration::from_millis(50));
    append(&d.access, &lines("after", 2));
    let s = d.expect_lines(8);
    assert_eq!(s["rotations"], 1, "{s:?}");
    // Deleted with unread lines, recreated at once.
    append(&d.access, &lines("unread", 3));
    std::fs::remove_file(&d.access).unwrap();
    append(&d.access, &lines("again", 1));
    d.expect_lines(12);
    // The deleted files are closed, not held open (their space is freed).
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("access.log"))
        .collect();
    assert_eq!(fds.len(), 1, "{fds:?}");
    assert!(!fds[0].contains("(deleted)"), "{fds:?}");
}

#[test]
fn file_missing_at_startup() {
    let dir = TempDir::new("rot-missing");
    let mut d = Daemon::start(&dir, &[]);
    d.wait_log("not there yet");
    append(&d.access, &lines("first", 4));
    let s = d.expect_lines(4);
    assert_eq!(s["rotations"], 0, "{s:?}");
}

#[test]
fn path_replaced_by_another_inode() {
    let dir = TempDir::new("rot-replace");
    append(&dir.path("access.log"), "");
    let mut d = Daemon::start(&dir, &[]);
    append(&d.access, &lines("before", 5));
    let other = dir.path("access.log.new");
    append(&other, &lines("other", 3));
    std::fs::rename(&other, &d.access).unwrap();
    let s = d.expect_lines(8);
    assert_eq!(s["rotations"], 1, "{s:?}");
    append(&d.access, &lines("after", 2));
    d.expect_lines(10);
}

#[test]
fn xray_reopen_after_idle_is_nothing() {
    let dir = TempDir::new("rot-reopen");
    let mut d = Daemon::start(&dir, &[]);
    for round in 0..5 {
        // open O_APPEND, write, close: what Xray does around an idle period
        append(&d.access, &lines(&format!("round{round}"), 2));
    }
    let s = d.expect_lines(10);
    assert_eq!((s["rotations"], s["truncations"]), (0, 0), "{s:?}");
}

#[test]
fn hundred_rotations_lose_no_line() {
    let dir = TempDir::new("rot-100");
    append(&dir.path("access.log"), "");
    let mut d = Daemon::start(&dir, &[]);
    let rotated = dir.path("access.log.1");
    let mut want = 0;
    let start = Instant::now();
    for i in 0..100 {
        append(&d.access, &lines(&format!("r{i}"), 3));
        // rename over the previous rotated file (which unlinks it)
        std::fs::rename(&d.access, &rotated).unwrap();
        append(&rotated, &lines(&format!("late{i}"), 1));
        append(&d.access, &lines(&format!("new{i}"), 1));
        want += 5;
        // Rotation happens at most hourly in real life: let the daemon see
        // each new file before the next rotation.
        d.wait_lines(want);
    }
    let s = d.expect_lines(500);
    assert_eq!(s["lines"], 500, "{s:?}");
    assert_eq!(s["rotations"], 100, "{s:?}");
    eprintln!("100 rotations in {:?}", start.elapsed());
    let (st, _) = d.terminate();
    assert!(st.success());
}

/// A 1 GiB sparse file: started at its end, the daemon reads only what is
/// appended; truncated to nothing, it starts over; read from the start, the
/// gigabyte of NULs is one over-long line skipped in bounded memory.
#[test]
fn one_gib_sparse_file_and_truncation() {
    const GIB: u64 = 1 << 30;
    let _heavy = heavy();
    let dir = TempDir::new("rot-gib");
    let access = dir.path("access.log");
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&access)
        .unwrap()
        .set_len(GIB)
        .unwrap();
    let mut d = Daemon::start(&dir, &[]);
    // The file ends in the middle of a (NUL) line: its newline first.
    append(&access, &format!("\n{}", lines("after-gib", 3)));
    let s = d.expect_lines(3);
    assert_eq!(s["bytes"], lines("after-gib", 3).len() as u64 + 1, "{s:?}");
    OpenOptions::new()
        .write(true)
        .open(&access)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&access, &lines("fresh", 2));
    let s = d.expect_lines(5);
    assert_eq!(s["truncations"], 1, "{s:?}");
    assert!(d.terminate().0.success());

    // From the start: 1 GiB of NULs without a newline, then lines.
    let f = OpenOptions::new().write(true).open(&access).unwrap();
    f.set_len(0).unwrap();
    f.set_len(GIB).unwrap();
    drop(f);
    append(&access, &format!("\n{}", lines("tail", 4)));
    let start = Instant::now();
    let mut d = Daemon::start(&dir, &["--from-start"]);
    let s = d.expect_lines(4);
    eprintln!("1 GiB sparse read from the start in {:?}", start.elapsed());
    assert_eq!(s["too_long"], 1, "{s:?}");
    assert!(s["bytes"] > GIB, "{s:?}");
    // Bounded memory: one mapped window at a time, nothing buffered whole.
    let hwm = vm_hwm(d.pid());
    eprintln!("peak RSS {hwm} kB");
    assert!(hwm < 64 * 1024, "peak RSS {hwm} kB");
    assert!(d.terminate().0.success());
}
