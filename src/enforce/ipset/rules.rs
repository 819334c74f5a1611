//! The DROP rule that makes the sets bite: one `iptables`/`ip6tables` rule
//! per protocol and family,
//!
//! ```text
//! iptables  -I INPUT 1 -p tcp --dport 443 -m set --match-set refract_banned_users  src -j DROP
//! ip6tables -I INPUT 1 -p tcp --dport 443 -m set --match-set refract_banned_users6 src -j DROP
//! ```
//!
//! with `-m multiport --dports a,b,…` for several ports (at most 15 per
//! rule, the multiport limit, so more ports make more rules).
//!
//! Rules are managed by running the firewall binaries: at startup, for
//! `refract cleanup`, and after the ruleset lost something (a set recreated,
//! or an nf_tables deletion notification: [`Watch`]); nothing per ban
//! spawns a process. Installation is
//! idempotent: `-C` first, `-I INPUT 1` only when the rule is missing.
//! Rules stay in place on exit (bans persist across restarts);
//! [`Firewall::remove`] deletes this configuration's rules (`-D` until `-C`
//! says none is left), and `refract cleanup` every rule on the sets
//! (below). Child processes inherit the calling thread's network
//! namespace, which is what the tests use.
//!
//! # The ruleset watch
//!
//! The DROP rule deleted while running (`iptables -D`, `iptables -F`, an
//! `iptables-restore` or `nft flush ruleset` that drops it) is restored:
//! refract joins the nf_tables notification group (`NFNLGRP_NFTABLES`) on
//! its own netlink socket, and a `DELRULE`, `DELCHAIN` or `DELTABLE`
//! notification ([`crate::nl::nftables::is_deletion`]), or `ENOBUFS` on
//! that socket (notifications lost), schedules one [`Firewall::install`]
//! [`RULE_SETTLE`] later (a burst of changes is one check). Why this and
//! not the alternatives: a periodic `iptables -C` would wake an idle
//! daemon; a rate-limited `-C` on each ban would spawn processes on the ban
//! path and leave the node open until the next ban; parsing the rules
//! themselves over nfnetlink means decoding iptables-nft's xt-compat
//! expressions. The notification costs nothing while nobody touches the
//! ruleset, and the processes run only when somebody deleted something.
//! Limit: legacy (non-nf_tables) iptables sends no notifications; there the
//! rule is re-checked only after a set repair.
//!
//! # Finding the rules by set name (`refract cleanup`)
//!
//! [`Firewall::remove`] deletes the rules this configuration would make;
//! rules made by an earlier run with other ports or protocols would be
//! missed, and the set then cannot be destroyed (`set is in use`). So
//! cleanup lists the ruleset instead ([`referencing`]): `iptables-save` /
//! `ip6tables-save` (every table the kernel has, without loading modules
//! the way `iptables -t nat -S` may), falling back to `iptables -S` (the
//! filter table) where the save binaries are missing, and keeps each rule
//! whose spec has `--match-set NAME` for one of refract's sets
//! ([`parse_listing`], pure). Each one is deleted by its own spec as
//! listed (`iptables -t TABLE -D CHAIN SPEC…`: iptables-save's output is
//! the input format of iptables, iptables-save(8)). Why the binaries and
//! not nfnetlink: the same reason as above (xt-compat expressions), and
//! they work for iptables-legacy too.

use std::fmt;
use std::io;
use std::process::{Command, Stdio};

use crate::clock::{Micros, SECOND};
pub use crate::config::FirewallMode;
use crate::config::Protos;
use crate::enforce::EnforceStats;
use crate::nl::consts::{NETLINK_NETFILTER, NFNLGRP_NFTABLES};
use crate::nl::msg::{Messages, Reply};
use crate::nl::socket::NlSocket;

/// How long after a ruleset deletion the DROP rules are checked: coalesces
/// the notifications of one `iptables-restore`, and lets an operator's
/// `iptables -D …; ipset destroy …` finish before the rule comes back (the
/// set is recreated by the next ban).
pub const RULE_SETTLE: Micros = SECOND / 2;

/// `xt_multiport` takes at most 15 ports (`XT_MULTI_PORTS`,
/// `/usr/include/linux/netfilter/xt_multiport.h`).
pub const MULTIPORT_MAX: usize = 15;

/// How long iptables may wait for the xtables lock (`-w SECONDS`).
const LOCK_WAIT: &str = "5";

/// One DROP rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `ip6tables` instead of `iptables`.
    pub v6: bool,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// One port, or up to [`MULTIPORT_MAX`] for a multiport match.
    pub ports: Vec<u16>,
    pub set: String,
}

impl Rule {
    pub fn binary(&self) -> &'static str {
        if self.v6 {
            "ip6tables"
        } else {
            "iptables"
        }
    }

    /// The rule specification after the chain name.
    pub fn spec(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["-p".into(), self.proto.into()];
        if self.ports.len() == 1 {
            v.extend(["--dport".into(), self.ports[0].to_string()]);
        } else {
            let list: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            v.extend([
                "-m".into(),
                "multiport".into(),
                "--dports".into(),
                list.join(","),
            ]);
        }
        v.extend(
            ["-m", "set", "--match-set", &self.set, "src", "-j", "DROP"]
                .iter()
                .map(|s| s.to_string()),
        );
        v
    }
}

/// The command that installs the rule, as an operator would type it.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -I INPUT 1 {}", self.binary(), self.spec().join(" "))
    }
}

/// The rules for a configuration: for each protocol, one IPv4 rule on
/// `set_v4` and one IPv6 rule on `set_v6` per group of up to 15 ports.
pub fn rules(protos: Protos, ports: &[u16], set_v4: &str, set_v6: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    if protos.tcp {
        names.push("tcp");
    }
    if protos.udp {
        names.push("udp");
    }
    for (v6, set) in [(false, set_v4), (true, set_v6)] {
        for &proto in &names {
            for chunk in ports.chunks(MULTIPORT_MAX) {
                out.push(Rule {
                    v6,
                    proto,
                    ports: chunk.to_vec(),
                    set: set.to_string(),
                });
            }
        }
    }
    out
}

/// The DROP rules refract manages (or, with [`FirewallMode::None`],
/// only describes).
#[derive(Clone, Debug)]
pub struct Firewall {
    pub mode: FirewallMode,
    pub rules: Vec<Rule>,
}

/// What `-C` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Present,
    Absent,
}

/// Runs a firewall binary (stdin closed) and collects its output; a
/// missing binary is one line saying what to do.
fn output(mut cmd: Command, binary: &str) -> io::Result<std::process::Output> {
    cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("firewall: {binary} not found in PATH: install iptables"),
            )
        } else {
            io::Error::new(e.kind(), format!("firewall: {binary}: {e}"))
        }
    })
}

fn run(rule: &Rule, op: &str) -> io::Result<std::process::Output> {
    let mut cmd = Command::new(rule.binary());
    cmd.args(["-w", LOCK_WAIT, op, "INPUT"]);
    if op == "-I" {
        cmd.arg("1");
    }
    cmd.args(rule.spec());
    output(cmd, rule.binary()).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "firewall: {} not found in PATH: install iptables, or run with \
                     --firewall none and add the rule yourself: {rule}",
                    rule.binary()
                ),
            )
        } else {
            e
        }
    })
}

/// iptables says why it failed on stderr only.
fn permission_or_other(out: &std::process::Output) -> io::ErrorKind {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") || stderr.contains("you must be root") {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::Other
    }
}

fn failed(rule: &Rule, op: &str, out: &std::process::Output) -> io::Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    io::Error::new(
        permission_or_other(out),
        format!(
            "firewall: {} {op} INPUT {}: {} ({})",
            rule.binary(),
            rule.spec().join(" "),
            stderr.trim(),
            out.status
        ),
    )
}

fn check(rule: &Rule) -> io::Result<Check> {
    let out = run(rule, "-C")?;
    match out.status.code() {
        Some(0) => Ok(Check::Present),
        // iptables: 1 = "Bad rule (does a matching rule exist in that
        // chain?)"; anything else (2: bad arguments, missing set or module)
        // is an error worth reporting.
        Some(1) => Ok(Check::Absent),
        _ => Err(failed(rule, "-C", &out)),
    }
}

impl Firewall {
    pub fn new(
        mode: FirewallMode,
        protos: Protos,
        ports: &[u16],
        set_v4: &str,
        set_v6: &str,
    ) -> Firewall {
        Firewall {
            mode,
            rules: rules(protos, ports, set_v4, set_v6),
        }
    }

    /// Installs every missing rule at the top of INPUT. Returns how many
    /// were added (0 when all were present, or with `--firewall none`).
    /// The sets must exist first: iptables refuses a rule on a missing set.
    pub fn install(&self) -> io::Result<usize> {
        if self.mode == FirewallMode::None {
            return Ok(0);
        }
        let mut added = 0;
        for rule in &self.rules {
            if check(rule)? == Check::Absent {
                let out = run(rule, "-I")?;
                if !out.status.success() {
                    return Err(failed(rule, "-I", &out));
                }
                added += 1;
            }
        }
        Ok(added)
    }

    /// Whether every rule is in place (always true with `--firewall none`:
    /// the operator's rule is theirs to check).
    pub fn is_installed(&self) -> io::Result<bool> {
        if self.mode == FirewallMode::None {
            return Ok(true);
        }
        for rule in &self.rules {
            if check(rule)? == Check::Absent {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes every copy of every rule of this configuration (`-D` until
    /// `-C` finds none; at most 64 copies per rule). Returns how many were
    /// deleted. A missing set counts as "no rule": iptables cannot have a
    /// rule on it. Rules on the sets with other ports or protocols stay:
    /// `refract cleanup` uses [`referencing`] instead.
    pub fn remove(&self) -> io::Result<usize> {
        if self.mode == FirewallMode::None {
            return Ok(0);
        }
        let mut removed = 0;
        for rule in &self.rules {
            for _ in 0..64 {
                match check(rule) {
                    Ok(Check::Present) => {}
                    Ok(Check::Absent) => break,
                    Err(e) if e.to_string().contains("doesn't exist") => break,
                    Err(e) => return Err(e),
                }
                let out = run(rule, "-D")?;
                if !out.status.success() {
                    return Err(failed(rule, "-D", &out));
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The commands an operator running `--firewall none` needs (one per
    /// line), for the documentation and the startup log.
    pub fn describe(&self) -> String {
        let lines: Vec<String> = self.rules.iter().map(Rule::to_string).collect();
        lines.join("\n")
    }
}

/// A rule found in the ruleset that references one of refract's sets,
/// as `iptables-save` listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Found by `ip6tables-save` rather than `iptables-save`.
    pub v6: bool,
    pub table: String,
    pub chain: String,
    /// The words after `-A CHAIN`, unquoted.
    pub spec: Vec<String>,
}

impl Listed {
    pub fn binary(&self) -> &'static str {
        if self.v6 {
            "ip6tables"
        } else {
            "iptables"
        }
    }

    /// Deletes this rule (one copy: `-D` removes the first match).
    pub fn delete(&self) -> io::Result<()> {
        let mut cmd = Command::new(self.binary());
        cmd.args(["-w", LOCK_WAIT, "-t", &self.table, "-D", &self.chain])
            .args(&self.spec);
        let out = output(cmd, self.binary())?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::new(
            permission_or_other(&out),
            format!(
                "firewall: {self}: {} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        ))
    }
}

/// The command that deletes the rule, as an operator would type it into a
/// shell (words with other characters single-quoted).
impl fmt::Display for Listed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -t {} -D {}", self.binary(), self.table, self.chain)?;
        for w in &self.spec {
            f.write_str(" ")?;
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.,:/!".contains(&b))
            {
                f.write_str(w)?;
            } else {
                // Shell single quotes: nothing inside them is special.
                write!(f, "'{}'", w.replace('\'', "'\\''"))?;
            }
        }
        Ok(())
    }
}

/// Splits one line of iptables-save output into words: blanks separate
/// them, and a value with other characters than `[A-Za-z0-9_-]` is
/// printed in double quotes with `"`, `\` and `'` escaped by a backslash
/// (`xtables_save_string()`, iptables' libxtables/xtables.c). `None` for an
/// unterminated quote.
fn words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut w = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '\\' => w.push(chars.next()?),
                c if c.is_ascii_whitespace() && !quoted => break,
                c => w.push(c),
            }
        }
        if quoted {
            return None;
        }
        out.push(w);
    }
}

/// The rules of an `iptables-save` (or `iptables -S`, which has no table
/// lines: the filter table) listing that name one of `sets` after
/// `--match-set`, in listing order. Pure: the tests feed it text.
pub fn parse_listing(text: &str, v6: bool, sets: &[&str]) -> Vec<Listed> {
    let mut table = "filter".to_string();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        let Some(w) = words(line) else { continue };
        let [a, chain, spec @ ..] = &w[..] else {
            continue;
        };
        let ours = spec
            .windows(2)
            .any(|p| p[0] == "--match-set" && sets.contains(&p[1].as_str()));
        if a == "-A" && ours {
            out.push(Listed {
                v6,
                table: table.clone(),
                chain: chain.clone(),
                spec: spec.to_vec(),
            });
        }
    }
    out
}

/// Every rule in the running ruleset (IPv4 and IPv6, every table) that
/// matches on one of `sets`: module docs.
pub fn referencing(sets: &[&str]) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (v6, bin, save) in [
        (false, "iptables", "iptables-save"),
        (true, "ip6tables", "ip6tables-save"),
    ] {
        let listing = match output(Command::new(save), save) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut c = Command::new(bin);
                c.args(["-w", LOCK_WAIT, "-S"]);
                output(c, bin)?
            }
            Err(e) => return Err(e),
        };
        if !listing.status.success() {
            return Err(io::Error::new(
                permission_or_other(&listing),
                format!(
                    "firewall: listing the {bin} rules: {} ({})",
                    String::from_utf8_lossy(&listing.stderr).trim(),
                    listing.status
                ),
            ));
        }
        out.extend(parse_listing(
            &String::from_utf8_lossy(&listing.stdout),
            v6,
            sets,
        ));
    }
    Ok(out)
}

/// The nf_tables notification socket and the rule check it schedules
/// (module docs).
#[derive(Debug, Default)]
pub struct Watch {
    sock: Option<NlSocket>,
    /// A ruleset deletion was seen: check the DROP rules at this time.
    check_at: Option<Micros>,
    rx: Vec<u8>,
}

impl Watch {
    /// Joins `NFNLGRP_NFTABLES`. Call before installing the rules, so a
    /// deletion right after is seen.
    pub fn open() -> io::Result<Watch> {
        let sock = NlSocket::open(NETLINK_NETFILTER, 0)?;
        sock.join_group(NFNLGRP_NFTABLES)?;
        Ok(Watch {
            sock: Some(sock),
            check_at: None,
            rx: Vec::new(),
        })
    }

    pub fn socket(&mut self) -> Option<&mut NlSocket> {
        self.sock.as_mut()
    }

    /// Drains the socket; a deletion schedules a rule check.
    pub fn drain(&mut self, now: Micros, stats: &mut EnforceStats) {
        let Some(sock) = &self.sock else { return };
        let mut changed = false;
        // Bounded: each datagram is consumed; the cap only guards against
        // a ruleset that changes faster than we read.
        for _ in 0..100_000 {
            match sock.recv(&mut self.rx) {
                Ok(n) => {
                    for m in Messages::new(&self.rx[..n]).flatten() {
                        if let Reply::Data(m) = m {
                            changed |= crate::nl::nftables::is_deletion(&m);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Notifications were lost: one of them may have been ours.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(e) => {
                    stats.errors += 1;
                    crate::logger::warning(format_args!("firewall: ruleset watch: {e}"));
                    break;
                }
            }
        }
        if changed && self.check_at.is_none() {
            self.check_at = Some(now + RULE_SETTLE);
        }
    }

    pub fn deadline(&self) -> Option<Micros> {
        self.check_at
    }

    /// At the deadline: puts back DROP rules deleted behind our back (runs
    /// iptables: only after a ruleset deletion, never per ban).
    pub fn check(&mut self, now: Micros, firewall: &Firewall, stats: &mut EnforceStats) {
        if !self.check_at.is_some_and(|t| t <= now) {
            return;
        }
        self.check_at = None;
        match firewall.install() {
            Ok(0) => {}
            Ok(n) => {
                stats.repairs += 1;
                crate::logger::warning(format_args!(
                    "firewall: {n} DROP rule(s) were deleted and have been restored {}",
                    crate::logger::kv(&[
                        ("event", "repair"),
                        ("what", "rule"),
                        ("count", &n.to_string())
                    ])
                ));
            }
            Err(e) => {
                stats.errors += 1;
                crate::logger::warning(format_args!("{e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: Protos = Protos {
        tcp: true,
        udp: false,
    };

    #[test]
    fn single_port_rule() {
        let r = rules(TCP, &[443], "refract_banned_users", "refract_banned_users6");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].to_string(),
            "iptables -I INPUT 1 -p tcp --dport 443 -m set --match-set \
             refract_banned_users src -j DROP"
        );
        assert_eq!(
            r[1].to_string(),
            "ip6tables -I INPUT 1 -p tcp --dport 443 -m set --match-set \
             refract_banned_users6 src -j DROP"
        );
    }

    #[test]
    fn several_ports_use_multiport_and_both_protos() {
        let both = Protos {
            tcp: true,
            udp: true,
        };
        let r = rules(both, &[443, 8443], "a", "b");
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[1].spec().join(" "),
            "-p udp -m multiport --dports 443,8443 -m set --match-set a src -j DROP"
        );
        assert!(r[2].v6 && r[3].v6);
    }

    #[test]
    fn more_than_fifteen_ports_split() {
        let ports: Vec<u16> = (1000..1020).collect();
        let r = rules(TCP, &ports, "a", "b");
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].ports.len(), 15);
        assert_eq!(r[1].ports, (1015..1020).collect::<Vec<_>>());
    }

    /// iptables-save v1.8.9 (nf_tables) as it printed these rules in a
    /// test namespace: a rule made with other ports (multiport), one with
    /// a quoted comment, one in another table, someone else's rule.
    const SAVE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Tue Dec  1 11:51:38 2026
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m set ! --match-set s4 src -j ACCEPT
COMMIT
# Completed on Tue Dec  1 11:51:38 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 8443,2053 -m set --match-set s4 src -j DROP
-A INPUT -p udp -m udp --dport 443 -m set --match-set s4 src -m comment --comment "my \"odd\" rule" -j DROP
-A INPUT -m set --match-set other src -j DROP
-A INPUT -m set --match-set s4x src -j DROP
COMMIT
"#;

    #[test]
    fn listing_finds_every_rule_on_the_sets_in_every_table() {
        let found = parse_listing(SAVE, false, &["s4", "s6"]);
        let shown: Vec<String> = found.iter().map(Listed::to_string).collect();
        assert_eq!(
            shown,
            [
                "iptables -t raw -D PREROUTING -m set ! --match-set s4 src -j ACCEPT",
                "iptables -t filter -D INPUT -p tcp -m multiport --dports 8443,2053 -m set \
                 --match-set s4 src -j DROP",
                "iptables -t filter -D INPUT -p udp -m udp --dport 443 -m set --match-set s4 \
                 src -m comment --comment 'my \"odd\" rule' -j DROP",
            ]
        );
        // The quoted comment is one word again, unescaped.
        assert!(found[2].spec.contains(&"my \"odd\" rule".to_string()));
        assert_eq!(found[1].chain, "INPUT");
        assert!(!found[0].v6);
        // `iptables -S` has no table lines: the filter table.
        let s = "-P INPUT ACCEPT\n-A INPUT -p tcp -m set --match-set s6 src -j DROP\n";
        let found = parse_listing(s, true, &["s4", "s6"]);
        assert_eq!(
            found,
            vec![Listed {
                v6: true,
                table: "filter".into(),
                chain: "INPUT".into(),
                spec: [
                    "-p",
                    "tcp",
                    "-m",
                    "set",
                    "--match-set",
                    "s6",
                    "src",
                    "-j",
                    "DROP"
                ]
                .map(String::from)
                .to_vec(),
            }]
        );
        assert!(parse_listing(SAVE, false, &["nothing"]).is_empty());
    }

    #[test]
    fn words_unquote_like_xtables_save_string() {
        assert_eq!(
            words(r#"a "b c" "d\"e\\f" 'g'"#).unwrap(),
            ["a", "b c", "d\"e\\f", "'g'"]
        );
        assert_eq!(words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(words(r#"-A "open"#), None);
        let l = Listed {
            v6: false,
            table: "filter".into(),
            chain: "INPUT".into(),
            spec: vec!["it's".into()],
        };
        assert_eq!(l.to_string(), r"iptables -t filter -D INPUT 'it'\''s'");
    }

    #[test]
    fn none_mode_touches_nothing() {
        let f = Firewall::new(FirewallMode::None, TCP, &[443], "a", "b");
        assert_eq!(f.install().unwrap(), 0);
        assert_eq!(f.remove().unwrap(), 0);
        assert!(f.is_installed().unwrap());
        assert_eq!(f.describe().lines().count(), 2);
    }
}
