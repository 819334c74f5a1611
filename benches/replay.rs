//! `cargo bench --bench replay`: how fast refract gets through a log.
//!
//! Generates 1,000,000 lines with [`gen::generate`] (deterministic), keeps
//! them in memory and in a temporary file (removed at the end), and prints
//! one table: each case is the median of [`RUNS`] runs over the whole log,
//! as ns/line, lines/s and its ratio to the newline count, the
//! memory-bandwidth floor (nothing that looks at every line can beat it).
//! "parser, 64 KiB hot" parses the log's first 64 KiB of lines over and over
//! (as many parses as the log has lines): the parser's own cost, without
//! streaming 120 MiB through the cache.
//!
//! Adding a measurement is one more `Case::new(..)` line in [`cases`].
//!
//! Two logs, one table each: "realistic" ([`gen::realistic`], the mix of
//! issue 17: bans and audit lines included) and "easy" ([`gen::generate`],
//! few bans). Each table also times `wc -l` and `grep -c email:` on the same
//! file in the same run (external processes, medians too), so ratios to
//! them compare across machines.
//!
//! `cargo bench --bench replay -- --write-log PATH [LINES] [--realistic]`
//! only writes a generated log (default 1,000,000 lines, the easy one unless
//! `--realistic`) to PATH and exits; scripts use it.

mod gen;

use std::fs::File;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use refract::accesslog::{self, Status};
use refract::lines::find_byte;
use refract::{cli, replay};

const LINES: usize = 1_000_000;
const SEED: u64 = 1;
const RUNS: usize = 7;

/// One measured thing: a closure that processes the whole log once and
/// returns a count (checked to be non-zero, and kept alive by `black_box`).
struct Case<'a> {
    name: &'static str,
    run: Box<dyn FnMut() -> u64 + 'a>,
}

impl<'a> Case<'a> {
    fn new(name: &'static str, run: impl FnMut() -> u64 + 'a) -> Case<'a> {
        Case {
            name,
            run: Box::new(run),
        }
    }
}

/// Everything the table reports; the first case is the reference.
fn cases<'a>(log: &'a [u8], path: &'a Path) -> Vec<Case<'a>> {
    vec![
        Case::new("newline count", move || count_newlines(log)),
        Case::new("parser", move || parse_all(log)),
        Case::new("parser, 64 KiB hot", move || parse_hot(log, LINES as u64)),
        Case::new("replay end-to-end", move || replay_end_to_end(path)),
    ]
}

/// The memory-bandwidth reference: one pass, one compare per byte.
fn count_newlines(log: &[u8]) -> u64 {
    log.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Splits the log into lines and parses each; returns the access lines.
fn parse_all(log: &[u8]) -> u64 {
    let mut n = 0;
    for line in lines(log) {
        if black_box(accesslog::parse(line)).is_ok() {
            n += 1;
        }
    }
    n
}

/// `refract replay FILE` as the binary runs it (default flags, audit output
/// discarded): the mmap-window reader, parser and policy together.
fn replay_end_to_end(path: &Path) -> u64 {
    replay_summary(path).lines
}

fn replay_summary(path: &Path) -> replay::Summary {
    let argv = ["replay".to_string(), path.display().to_string()];
    let (cmd, args) = match cli::parse_args(&argv) {
        Ok(parsed) => parsed,
        Err(e) => panic!("bench: replay arguments: {e:?}"),
    };
    let no_env = |_: &str| None;
    let cfg = match cli::build_config(cmd, &args, &cli::Env::new(&no_env)) {
        Ok(c) => c,
        Err(e) => panic!("bench: replay config: {e:?}"),
    };
    let mut rep = replay::Replayer::new(&cfg, false, std::io::sink());
    let file = File::open(path).expect("bench: open the generated log");
    replay::replay_file(&mut rep, &file, cfg.max_line).expect("bench: replay");
    rep.summary
}

/// The lines of `log` (without `\n`; a last line without one counts),
/// found with the word-at-a-time search the reader uses (`slice::split`
/// tests one byte per step and cost as much as the parser).
fn lines(log: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = log;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match find_byte(rest, b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line)
    })
}

/// The first lines of the log (about 64 KiB), parsed round and round until
/// `total` parses: the parser's own cost with the data in cache, no memory
/// streaming.
fn parse_hot(log: &[u8], total: u64) -> u64 {
    let cut = find_byte(&log[64 << 10..], b'\n').map_or(log.len(), |i| (64 << 10) + i);
    let head: Vec<&[u8]> = lines(&log[..cut]).collect();
    let mut ok = 0;
    for line in head.iter().cycle().take(total as usize) {
        if black_box(accesslog::parse(line)).is_ok() {
            ok += 1;
        }
    }
    ok
}

/// Removes the temporary log however the bench ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One external command over the whole file (`wc -l`, `grep -c`): its
/// stdout's first number, which must be non-zero.
fn external(cmd: &'static [&'static str], path: &Path) -> u64 {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("bench: run {}: {e}", cmd[0]));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // cargo passes `--bench`; everything else is ours.
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let realistic = args.iter().any(|a| a == "--realistic");
    args.retain(|a| a != "--realistic");
    if let Some(i) = args.iter().position(|a| a == "--write-log") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("usage: replay --write-log PATH [LINES] [--realistic]");
            std::process::exit(2);
        };
        let n = match args.get(i + 2).map(|s| s.replace('_', "").parse::<usize>()) {
            None => LINES,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                eprintln!("bench: LINES must be a number");
                std::process::exit(2);
            }
        };
        let log = if realistic {
            gen::realistic::generate(n, SEED)
        } else {
            gen::generate(n, SEED)
        };
        if let Err(e) = std::fs::write(path, log) {
            eprintln!("bench: write {path}: {e}");
            std::process::exit(1);
        }
        return;
    }
    table("realistic", gen::realistic::generate);
    println!();
    table("easy", gen::generate);
}

/// Generates one log and prints its table.
fn table(name: &str, generate: fn(usize, u64) -> Vec<u8>) {
    let t = Instant::now();
    let log = generate(LINES, SEED);
    let gen_time = t.elapsed();
    // Same seed, same bytes; a shorter log is a prefix of a longer one.
    assert!(
        log.starts_with(&generate(10_000, SEED)),
        "bench: generator is not deterministic"
    );
    let tmp = TempFile(
        std::env::temp_dir().join(format!("refract-bench-{name}-{}.log", std::process::id())),
    );
    std::fs::write(&tmp.0, &log).expect("bench: write the temporary log");

    let (mut access, mut email, mut rejected) = (0u64, 0u64, 0u64);
    for line in lines(&log) {
        if let Ok(a) = accesslog::parse(line) {
            access += 1;
            email += u64::from(a.email.is_some());
            rejected += u64::from(a.status == Status::Rejected);
        }
    }
    println!(
        "{name} log: {LINES} lines, {:.1} MiB, generated in {:.0} ms; {access} access lines ({email} with email, {rejected} rejected)",
        log.len() as f64 / (1 << 20) as f64,
        gen_time.as_secs_f64() * 1e3
    );
    let summary = replay_summary(&tmp.0);
    println!(
        "replay (default flags): {} counted, {} users, {} bans",
        summary.counted, summary.users, summary.bans
    );
    println!("each case: median of {RUNS} runs over the whole log");
    println!();
    println!(
        "{:<20} {:>10} {:>9} {:>13} {:>10} {:>8}",
        "case", "ms", "ns/line", "lines/s", "x newline", "x wc -l"
    );
    let path = tmp.0.as_path();
    let mut all = cases(&log, path);
    all.push(Case::new("wc -l", move || external(&["wc", "-l"], path)));
    all.push(Case::new("grep -c email:", move || {
        external(&["grep", "-c", "email:"], path)
    }));
    let mut results = Vec::new();
    for mut case in all {
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            let n = black_box((case.run)());
            times.push(t.elapsed());
            assert!(n > 0, "bench: {} counted nothing", case.name);
        }
        results.push((case.name, median(times).as_secs_f64()));
    }
    let reference = results[0].1;
    let wc = results
        .iter()
        .find(|(n, _)| *n == "wc -l")
        .map_or(reference, |r| r.1);
    for (name, m) in results {
        println!(
            "{:<20} {:>10.2} {:>9.1} {:>13.0} {:>10.1} {:>8.1}",
            name,
            m * 1e3,
            m * 1e9 / LINES as f64,
            LINES as f64 / m,
            m / reference,
            m / wc
        );
    }
}
