//! The command line and the one source of settings, through the real
//! binary: help and its exit codes, a closed stdout, suggestions for a
//! misspelled flag, and the service's environment file as `check` and
//! `replay` read it (flag > environment > file > default).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::daemon::BIN;
use crate::support::TempDir;

/// The real binary without any `REFRACT_*` variable of ours.
fn bin() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REFRACT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run refract")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn help_everywhere_and_only_the_commands_flags() {
    for args in [&["-h"][..], &["--help"], &["help"]] {
        let o = run(bin().args(args));
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(
            stdout(&o).starts_with("Usage: refract [flags]\n"),
            "{args:?}"
        );
        assert!(stdout(&o).contains("--dport"));
        assert!(!stdout(&o).contains("--json"));
    }
    for cmd in [
        "status", "user", "ban", "unban", "reload", "check", "replay", "cleanup",
    ] {
        let a = run(bin().args([cmd, "--help"]));
        let b = run(bin().args(["help", cmd]));
        let c = run(bin().args([cmd, "-h"]));
        assert_eq!(a.status.code(), Some(0), "{cmd}");
        assert_eq!(stdout(&a), stdout(&b), "{cmd}");
        assert_eq!(stdout(&a), stdout(&c), "{cmd}");
        assert!(
            stdout(&a).starts_with(&format!("Usage: refract {cmd} ")),
            "{cmd}"
        );
    }
    let status = stdout(&run(bin().args(["status", "--help"])));
    assert!(
        !status.contains("--dport") && status.contains("--json"),
        "{status}"
    );
    let o = run(bin().args(["-V"]));
    assert_eq!(
        stdout(&o),
        format!("refract {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// `refract --help | head -1`: the reader goes away before refract
/// writes. Rust ignores SIGPIPE, so the write fails with EPIPE; refract
/// must exit 0 quietly, not panic (101, or 134 with `panic = "abort"`).
#[test]
fn a_closed_stdout_or_stderr_is_not_a_crash() {
    let mut child = bin()
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "");
    // A usage error with stderr closed still exits 2.
    let mut child = bin()
        .arg("--dprot=443")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
    // replay: its audit lines on a closed stdout, its summary on a closed
    // stderr.
    let log = fixture("mixed.log");
    for closed_stdout in [true, false] {
        let mut cmd = bin();
        cmd.args(["replay", "--explain", "--env-file=none"])
            .arg(&log);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if closed_stdout {
            drop(child.stdout.take());
        } else {
            drop(child.stderr.take());
        }
        let code = child.wait().unwrap().code();
        assert_eq!(code, Some(0), "replay, stdout closed: {closed_stdout}");
    }
    // And through a real shell pipe.
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' --help | head -1; exit $?")));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "Usage: refract [flags]\n");
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_misspelled_flag_gets_a_suggestion() {
    let cases: &[(&[&str], &str)] = &[
        (&["--dprot=443"], "refract: unknown flag --dprot=443 for refract (did you mean --dport?)\n"),
        (&["check", "--windwo", "5s"], "refract: unknown flag --windwo for refract check (did you mean --window?)\n"),
        (&["status", "--jsno"], "refract: unknown flag --jsno for refract status (did you mean --json?)\n"),
        (&["replay", "--dport=443", "x"], "refract: --dport: not a flag of refract replay (it is one of refract, refract check, refract cleanup); see refract replay --help\n"),
        (&["stauts"], "refract: unexpected argument \"stauts\" (did you mean refract status?)\n"),
    ];
    for (args, want) in cases {
        let o = run(bin().args(*args).arg("--env-file=none"));
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&o), *want, "{args:?}");
    }
}

/// An environment file as the packages write it, with non-default
/// settings, and a log directory in the temp dir.
fn env_file(dir: &TempDir, extra: &str) -> PathBuf {
    let access = dir.path("access.log");
    std::fs::write(&access, "").unwrap();
    let env = dir.path("refract");
    std::fs::write(
        &env,
        format!(
            "# /etc/default/refract\n\
             REFRACT_DPORT=8443\n\
             REFRACT_LIMIT=2\n\
             export REFRACT_PROTO=\"tcp,udp\"\n\
             REFRACT_DRY_RUN=yes\n\
             REFRACT_ACCESS_LOG={}\n\
             REFRACT_BLOCK_LOG='{}'\n\
             {extra}",
            access.display(),
            dir.path("block.log").display()
        ),
    )
    .unwrap();
    env
}

/// The `settings:` line of `refract check`.
fn settings(o: &Output) -> String {
    stdout(o)
        .lines()
        .find(|l| l.starts_with("ok    settings: "))
        .unwrap_or_else(|| panic!("no settings line: {}{}", stdout(o), stderr(o)))
        .to_string()
}

#[test]
fn check_reports_the_environment_files_settings() {
    let dir = TempDir::new("settings-check");
    let env = env_file(&dir, "");
    // --dry-run from the file keeps check out of the kernel: no root needed.
    let o = run(bin().arg("check").arg("--env-file").arg(&env));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let s = settings(&o);
    assert!(s.contains("proto tcp,udp, dport 8443,"), "{s}");
    assert!(s.contains(", limit 2,"), "{s}");
    assert!(s.contains(", dry-run on,"), "{s}");
    assert!(
        s.contains(&format!("access-log {},", dir.path("access.log").display())),
        "{s}"
    );
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "ok    env file: {}: REFRACT_ACCESS_LOG=",
            env.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("REFRACT_DPORT=8443 REFRACT_DRY_RUN=yes"),
        "{out}"
    );
    assert!(out.ends_with("refract would start\n"), "{out}");
    assert_eq!(stderr(&o), "");
}

#[test]
fn flag_beats_environment_beats_file() {
    let dir = TempDir::new("settings-precedence");
    let env = env_file(&dir, "");
    let o = run(bin()
        .arg("check")
        .arg("--env-file")
        .arg(&env)
        .env("REFRACT_DPORT", "2053")
        .env("REFRACT_LIMIT", "3"));
    let s = settings(&o);
    assert!(s.contains("dport 2053,") && s.contains(", limit 3,"), "{s}");
    assert!(
        s.contains("proto tcp,udp,"),
        "the file still gives the rest: {s}"
    );
    let o = run(bin()
        .args(["check", "--dport", "9443"])
        .arg("--env-file")
        .arg(&env)
        .env("REFRACT_DPORT", "2053"));
    assert!(settings(&o).contains("dport 9443,"), "{}", settings(&o));
    // REFRACT_ENV_FILE names the file too.
    let o = run(bin().arg("check").env("REFRACT_ENV_FILE", &env));
    assert!(settings(&o).contains("dport 8443,"), "{}", settings(&o));
    // --env-file none: the defaults (and no kernel access with --dry-run).
    let o = run(bin().args(["check", "--env-file=none", "--dry-run"]));
    assert!(
        settings(&o).contains("proto tcp, dport 443,"),
        "{}",
        settings(&o)
    );
}

#[test]
fn a_named_environment_file_must_exist() {
    let o = run(bin().args(["check", "--env-file", "/nonexistent/refract"]));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "refract: --env-file: /nonexistent/refract does not exist (use none for no file)\n"
    );
}

#[test]
fn unknown_variables_are_warned_about_once_each() {
    let dir = TempDir::new("settings-warn");
    let env = env_file(&dir, "REFRACT_DPROT=443\nnot a line\n");
    let o = run(bin()
        .arg("check")
        .arg("--env-file")
        .arg(&env)
        .env("REFRACT_LIMTI", "2")
        .env("REFRACT_LOG", "journal"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let want = [
        "refract: warning: unknown variable REFRACT_LIMTI, ignored (did you mean REFRACT_LIMIT?)".to_string(),
        "refract: warning: REFRACT_LOG: invalid value \"journal\" (use auto, stderr or syslog); logging to auto".to_string(),
        format!("refract: warning: {}:9: expected KEY=VALUE, line skipped", env.display()),
        format!("refract: warning: {}: unknown variable REFRACT_DPROT, ignored (did you mean REFRACT_DPORT?)", env.display()),
    ];
    for w in &want {
        assert!(lines.contains(&w.as_str()), "missing {w:?} in\n{err}");
    }
    assert_eq!(lines.len(), want.len(), "{err}");
}

#[test]
fn replay_honours_the_environment_file() {
    let f = fixture("mixed.log");
    let dir = TempDir::new("settings-replay");
    // The fixture has one ban at the default limit of 1 ...
    let o = run(bin().args(["replay", "--env-file=none"]).arg(&f));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    // ... and none with the file's REFRACT_LIMIT=2.
    let env = env_file(&dir, "");
    let o = run(bin().arg("replay").arg("--env-file").arg(&env).arg(&f));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains(", 0 bans"), "{}", stderr(&o));
    // The file's settings replay does not use (ports, firewall) do not matter.
    assert!(!Path::new(&dir.path("block.log")).exists());
}

#[test]
fn the_limits_file_reports_every_bad_line() {
    let dir = TempDir::new("settings-limits");
    let limits = dir.path("limits");
    std::fs::write(&limits, "\u{feff}alice 2\nbroken\nbob 0\nalice 3\n").unwrap();
    let f = fixture("mixed.log");
    let o = run(bin()
        .args(["replay", "--env-file=none", "--limits"])
        .arg(&limits)
        .arg(&f));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "refract: limits: {}:2: expected \"EMAIL N\"; line 3: invalid limit \"0\" (a whole number >= 1) (2 bad lines)\n",
            limits.display()
        )
    );
    std::fs::write(&limits, "\u{feff}alice 2\nalice 3\n").unwrap();
    let o = run(bin()
        .args(["replay", "--env-file=none", "--limits"])
        .arg(&limits)
        .arg(&f));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "refract: warning: limits: {}:2: \"alice\" is also on line 1; the later limit (line 2) wins\n",
            limits.display()
        )),
        "{}",
        stderr(&o)
    );
}
