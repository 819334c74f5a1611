//! What an operator reads and types besides the binary: the man page
//! renders without a warning and documents exactly the flags the binary
//! accepts (both ways, read from `refract --help` and `refract COMMAND
//! --help` of every command) and every `REFRACT_*` variable of them; the
//! bash completion parses and completes commands, flags per command,
//! values and file names; the logrotate file passes `logrotate -d` and
//! reopens the log through `refract reload`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::support::daemon::BIN;
use crate::support::{have_tool as have, skip, TempDir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn man_source() -> String {
    std::fs::read_to_string(repo().join("packaging/man/refract.8")).unwrap()
}

/// The commands of the contract (docs: the control protocol), each with
/// its own `--help`; the daemon is `refract` alone.
const COMMANDS: &[&str] = &[
    "status", "user", "ban", "unban", "reload", "check", "replay", "cleanup",
];

/// `refract ARGS… --help`: its output, which must come with exit 0.
fn help(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).arg("--help").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "refract {args:?} --help: {}{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The flags of a help text: the lines that begin (after blanks) with a
/// dash, and on each the leading words that are flags (`-V, --version`,
/// `--for <duration>`, `--help, help`).
fn help_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') || t == line {
            continue;
        }
        for w in t.split_whitespace() {
            let w = w.trim_end_matches(',');
            let w = w.split('=').next().unwrap_or(w);
            if !w.starts_with('-') || w == "--" {
                break;
            }
            out.insert(w.to_string());
        }
    }
    out
}

/// The flags the man page defines: every word that starts with a dash on
/// the tag line of a `.TP` entry (the line after `.TP`), font escapes
/// and `\-` undone.
fn man_flags(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = src.lines().collect();
    for w in lines.windows(2) {
        if w[0].trim() != ".TP" {
            continue;
        }
        let tag = plain(w[1]);
        for word in tag.split(|c: char| c.is_whitespace() || c == ',') {
            let word = word.trim_matches('"');
            if word.starts_with('-') && word.len() > 1 {
                out.insert(word.to_string());
            }
        }
    }
    out
}

/// A roff line without its macro name, font escapes, quotes and `\-`.
fn plain(line: &str) -> String {
    let body = match line.strip_prefix('.') {
        Some(rest) => rest.split_once(' ').map_or("", |(_, b)| b),
        None => line,
    };
    body.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace('"', "")
}

#[test]
fn man_page_renders_without_warnings() {
    if !have("man") {
        skip("man not installed (scripts/deps.sh test installs man-db)");
        return;
    }
    let o = Command::new("man")
        .args(["-l", "--warnings"])
        .arg(repo().join("packaging/man/refract.8"))
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "man -l: {err}");
    assert!(err.trim().is_empty(), "warnings: {err}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "COMMANDS",
        "SETTINGS",
        "OPTIONS",
        "ENVIRONMENT",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
    ] {
        assert!(
            out.lines().any(|l| l == section),
            "no {section} section:\n{out}"
        );
    }
}

#[test]
fn man_page_documents_exactly_the_flags_the_binary_accepts() {
    let mut binary = help_flags(&help(&[]));
    for cmd in COMMANDS {
        binary.extend(help_flags(&help(&[cmd])));
    }
    let man = man_flags(&man_source());
    let undocumented: Vec<&String> = binary.difference(&man).collect();
    let unknown: Vec<&String> = man.difference(&binary).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "flags of the binary missing from the man page: {undocumented:?}; \
         flags in the man page the binary does not accept: {unknown:?}"
    );
}

#[test]
fn man_page_documents_every_command_signal_file_and_exit_code() {
    let src = man_source();
    let tags: Vec<String> = {
        let lines: Vec<&str> = src.lines().collect();
        lines
            .windows(2)
            .filter(|w| w[0].trim() == ".TP")
            .map(|w| plain(w[1]))
            .collect()
    };
    let has_tag = |t: &str| tags.iter().any(|tag| tag.starts_with(t));
    for cmd in COMMANDS.iter().chain(["help"].iter()) {
        assert!(
            has_tag(&format!("refract {cmd}")),
            "command {cmd}: {tags:?}"
        );
    }
    for sig in ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"] {
        assert!(
            tags.iter().any(|t| t.split([' ', ',']).any(|w| w == sig)),
            "signal {sig}"
        );
    }
    for file in [
        "/etc/default/refract",
        "/etc/conf.d/refract",
        "/run/refract/control.sock",
        "/var/log/refract/block.log",
        "/etc/refract/limits",
    ] {
        assert!(has_tag(file), "file {file}");
    }
    for code in 0..=4 {
        assert!(has_tag(&code.to_string()), "exit code {code}");
    }
}

/// Every setting's `REFRACT_*` twin is documented, and every variable the
/// man page names is one of them or one refract reads otherwise.
#[test]
fn man_page_documents_every_refract_variable() {
    let src = plain(&man_source());
    let named: BTreeSet<String> = src
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("REFRACT_") && w.len() > "REFRACT_".len())
        .map(str::to_string)
        .collect();
    // The settings: the daemon's flags that take a value or are switches of
    // its own (not --help/--version, not the client-only ones).
    let client_only = ["--help", "--version", "--explain", "--env-file"];
    let mut twins = BTreeSet::new();
    for f in help_flags(&help(&[])) {
        if f.starts_with("--") && !client_only.contains(&f.as_str()) {
            twins.insert(format!(
                "REFRACT_{}",
                f[2..].to_ascii_uppercase().replace('-', "_")
            ));
        }
    }
    let missing: Vec<&String> = twins.difference(&named).collect();
    assert!(missing.is_empty(), "man page lacks {missing:?}");
    // Besides settings: the logger's, OpenRC's, the client's, and the ones
    // a hook's environment carries (set by refract, not read).
    let other = [
        "REFRACT_LOG",
        "REFRACT_ARGS",
        "REFRACT_CONTROL",
        "REFRACT_EVENT",
        "REFRACT_ADDR",
        "REFRACT_USER",
        "REFRACT_ORIGIN",
        "REFRACT_TAG",
        "REFRACT_DURATION",
        "REFRACT_REASON",
    ];
    let extra: Vec<&String> = named
        .iter()
        .filter(|v| !twins.contains(*v) && !other.contains(&v.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "man page names unknown variables {extra:?}"
    );
}

/// Runs the completion function as bash would for the words `line` (the
/// last one is the word being completed) and returns the candidates.
fn complete(line: &[&str]) -> Vec<String> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source '{}' || exit 9\n\
         complete -p refract >/dev/null || exit 8\n\
         COMP_WORDS=({})\n\
         COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
         _refract\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        repo().join("packaging/completion/refract.bash").display(),
        words.join(" ")
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{line:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_parses_and_completes() {
    let file = repo().join("packaging/completion/refract.bash");
    let o = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if have("shellcheck") {
        let o = Command::new("shellcheck")
            .args(["-s", "bash"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    assert_eq!(complete(&["refract", "st"]), ["status"]);
    assert_eq!(complete(&["refract", "re"]), ["reload", "replay"]);
    assert_eq!(complete(&["refract", "help", "cl"]), ["cleanup"]);
    assert_eq!(complete(&["refract", "cleanup", "--dr"]), ["--dry-run"]);
    // Flags per command: ban's, not unban's or replay's.
    let ban = complete(&["refract", "ban", "--"]);
    assert!(ban.contains(&"--for".to_string()) && ban.contains(&"--reason".to_string()));
    assert!(!ban.contains(&"--all".to_string()) && !ban.contains(&"--explain".to_string()));
    assert_eq!(complete(&["refract", "unban", "--a"]), ["--all"]);
    assert_eq!(complete(&["refract", "replay", "--ex"]), ["--explain"]);
    assert_eq!(complete(&["refract", "status", "--j"]), ["--json"]);
    // Values, also after `--flag=` (bash splits the word at `=`).
    assert_eq!(
        complete(&["refract", "--proto", ""]),
        ["tcp", "udp", "tcp,udp"]
    );
    assert_eq!(
        complete(&["refract", "--firewall", "=", "n"]),
        ["none", "nftables"]
    );
    assert_eq!(complete(&["refract", "--shape", "o"]), ["on", "off"]);
    // Every flag the completion offers without a command is one the man
    // page documents.
    let man = man_flags(&man_source());
    for f in complete(&["refract", "-"]) {
        assert!(
            man.contains(&f),
            "completion offers {f}, the man page lacks it"
        );
    }
    // File names: the paths of --access-log and replay's FILE.
    let dir = TempDir::new("completion");
    std::fs::write(dir.path("access.log"), "").unwrap();
    let prefix = format!("{}/acc", dir.0.display());
    let want = format!("{}/access.log", dir.0.display());
    for line in [
        ["refract", "replay", &prefix],
        ["refract", "--access-log", &prefix],
    ] {
        assert_eq!(complete(&line), std::slice::from_ref(&want), "{line:?}");
    }
}

#[test]
fn logrotate_file_passes_logrotate_debug_and_reopens_through_reload() {
    let file = repo().join("packaging/logrotate/refract");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("/var/log/refract/block.log {"), "{text}");
    assert!(
        text.contains("/usr/local/bin/refract reload"),
        "postrotate reopens the log through refract reload: {text}"
    );
    if !have("logrotate") {
        skip("logrotate not installed (scripts/deps.sh test installs it)");
        return;
    }
    let state = TempDir::new("logrotate");
    // As installed (install -m644): logrotate ignores a config file that
    // is group- or world-writable, which a checkout made with umask 002
    // would be.
    let conf = state.path("refract");
    std::fs::write(&conf, &text).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new("logrotate")
        .arg("-d")
        .arg("-s")
        .arg(state.path("state"))
        .arg(&conf)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "logrotate -d: {out}");
    assert!(!out.contains("error"), "logrotate -d: {out}");
    assert!(
        out.contains("rotating pattern: /var/log/refract/block.log"),
        "{out}"
    );
}
