//! The DROP rules as refract itself spells them: built with the code's own
//! rule spec (`refract::enforce::ipset::rules::rules`, [`Rule::binary`] and
//! [`Rule::spec`]), never typed by hand in a test, so a test checks the
//! rule the daemon installs and not a copy that could drift from it.
//!
//! Witnesses run inside a namespace: `-C` (is it there), `-D` (an operator
//! deletes it), `-A` (someone adds a duplicate), and [`count`], which reads
//! `iptables -S INPUT` back and counts the lines that are this rule
//! (iptables prints `-p tcp` with its implicit `-m tcp`, see
//! iptables-extensions(8): the protocol match is loaded by `-p`).

use refract::config::Protos;
use refract::enforce::ipset::rules::{self as firewall, Rule};

use super::netns::Netns;

/// The chain refract's rules live in (`-I INPUT 1`, see `refract::enforce::ipset::rules`).
pub const CHAIN: &str = "INPUT";

/// The one rule for `proto` (`"tcp"` or `"udp"`) and `ports` (up to the
/// multiport maximum) on `set`, in the IPv6 table when `v6`.
pub fn rule(v6: bool, proto: &str, ports: &[u16], set: &str) -> Rule {
    let protos = Protos {
        tcp: proto == "tcp",
        udp: proto == "udp",
    };
    let mut all = firewall::rules(protos, ports, set, set);
    all.retain(|r| r.v6 == v6);
    assert_eq!(all.len(), 1, "one rule for {proto} {ports:?}: {all:?}");
    all.remove(0)
}

/// The IPv4 TCP rule on `set` for `port`: what most tests watch.
pub fn tcp4(port: u16, set: &str) -> Rule {
    rule(false, "tcp", &[port], set)
}

/// `BINARY OP INPUT SPEC…`, e.g. `iptables -C INPUT -p tcp --dport 443 -m
/// set --match-set refract_banned_users src -j DROP`.
pub fn argv(rule: &Rule, op: &str) -> Vec<String> {
    let mut v = vec![rule.binary().to_string(), op.to_string(), CHAIN.to_string()];
    v.extend(rule.spec());
    v
}

fn run(ns: &Netns, rule: &Rule, op: &str) -> std::process::Output {
    let v = argv(rule, op);
    let args: Vec<&str> = v.iter().map(String::as_str).collect();
    ns.exec(&args)
}

/// Whether the rule is in place in `ns` (`-C`).
pub fn present(ns: &Netns, rule: &Rule) -> bool {
    run(ns, rule, "-C").status.success()
}

/// Deletes one copy of the rule in `ns` (`-D`), which must be there.
pub fn delete(ns: &Netns, rule: &Rule) {
    let out = run(ns, rule, "-D");
    assert!(
        out.status.success(),
        "{}: {}",
        argv(rule, "-D").join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Appends a copy of the rule in `ns` (`-A`): a duplicate made by hand.
pub fn append(ns: &Netns, rule: &Rule) {
    let out = run(ns, rule, "-A");
    assert!(
        out.status.success(),
        "{}: {}",
        argv(rule, "-A").join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rule as `iptables -S` prints it back: `-A INPUT` and the spec with
/// the implicit protocol match after `-p PROTO` when the spec has none.
fn listed(rule: &Rule) -> Vec<String> {
    let mut v = vec!["-A".to_string(), CHAIN.to_string()];
    let spec = rule.spec();
    let mut i = 0;
    while i < spec.len() {
        v.push(spec[i].clone());
        if spec[i] == "-p" && i + 1 < spec.len() {
            let proto = spec[i + 1].clone();
            v.push(proto.clone());
            i += 2;
            if spec.get(i).map(String::as_str) == Some("--dport") {
                v.extend(["-m".to_string(), proto]);
            }
            continue;
        }
        i += 1;
    }
    v
}

/// How many lines of `iptables -S INPUT` (or ip6tables) in `ns` are this
/// rule: 1 when installed once, 0 when gone, more for duplicates.
pub fn count(ns: &Netns, rule: &Rule) -> usize {
    let want = listed(rule);
    ns.ok(&[rule.binary(), "-S", CHAIN])
        .lines()
        .filter(|l| l.split_whitespace().eq(want.iter().map(String::as_str)))
        .count()
}

/// Turns connection tracking on in `ns`: the kernel tracks a namespace's
/// flows only once something there uses conntrack, so this appends a
/// conntrack match to INPUT in both tables. Its `ESTABLISHED … ACCEPT`
/// changes nothing for a namespace whose policy accepts anyway, and it is
/// also why a banned client's stale entries must go.
pub fn track_connections(ns: &Netns) {
    for bin in ["iptables", "ip6tables"] {
        ns.ok(&[
            bin,
            "-A",
            CHAIN,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED",
            "-j",
            "ACCEPT",
        ]);
    }
}
