//! The DROP rule against real iptables/ip6tables, inside a throwaway
//! network namespace (never the host's firewall). Skips when not root or
//! when `ip`, `ipset`, `iptables` or `ip6tables` are missing.

use refract::config::FirewallMode;
use refract::config::Protos;
use refract::enforce::Firewall;

use crate::support::netns::{Netns, FIREWALL};
use crate::support::rules::{self, rule};

fn count(n: &Netns, bin: &str, needle: &str) -> usize {
    n.ok(&[bin, "-S", "INPUT"])
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn install_is_idempotent_and_remove_cleans_up_v4_and_v6() {
    let Some(n) = Netns::with_tools("fw", FIREWALL) else {
        return;
    };
    n.ok(&["ipset", "create", "s4", "hash:ip", "timeout", "60"]);
    n.ok(&[
        "ipset", "create", "s6", "hash:net", "family", "inet6", "timeout", "60",
    ]);
    // Someone else's rule at the top must survive untouched.
    n.ok(&[
        "iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
    ]);
    let protos = Protos {
        tcp: true,
        udp: true,
    };
    let one = Firewall::new(FirewallMode::Iptables, protos, &[443], "s4", "s6");
    let multi = Firewall::new(FirewallMode::Iptables, protos, &[443, 8443], "s4", "s6");
    n.in_netns(|| {
        assert!(!one.is_installed().unwrap());
        assert_eq!(one.install().unwrap(), 4); // tcp+udp × v4+v6
        assert_eq!(one.install().unwrap(), 0); // second run: all present
        assert!(one.is_installed().unwrap());
        assert_eq!(multi.install().unwrap(), 4);
    });
    let v4 = n.ok(&["iptables", "-S", "INPUT"]);
    // iptables -S prints the rule back in its canonical form: the one
    // spelling written out here, as the witness of what iptables itself
    // makes of the spec (the rest is counted from the code's own spec).
    assert_eq!(
        count(
            &n,
            "iptables",
            "-p tcp -m tcp --dport 443 -m set --match-set s4 src -j DROP"
        ),
        1,
        "{v4}"
    );
    // Each of the 8 rules exactly once, and nothing else on the sets.
    for v6 in [false, true] {
        let set = if v6 { "s6" } else { "s4" };
        for proto in ["tcp", "udp"] {
            for ports in [&[443][..], &[443, 8443]] {
                let r = rule(v6, proto, ports, set);
                assert_eq!(rules::count(&n, &r), 1, "{r}: {v4}");
            }
        }
    }
    assert_eq!(
        count(&n, "iptables", "--match-set s4 src -j DROP"),
        4,
        "{v4}"
    );
    assert_eq!(count(&n, "ip6tables", "--match-set s6 src -j DROP"), 4);
    assert_eq!(count(&n, "ip6tables", "--match-set s4"), 0);
    // The first rule is ours (-I INPUT 1), the operator's ACCEPT still there.
    let first = v4.lines().nth(1).unwrap_or("");
    assert!(first.contains("-j DROP"), "{v4}");
    assert_eq!(count(&n, "iptables", "--dport 22 -j ACCEPT"), 1);

    // A duplicate added by hand is removed too.
    let dup = rules::tcp4(443, "s4");
    rules::append(&n, &dup);
    assert_eq!(rules::count(&n, &dup), 2);
    n.in_netns(|| {
        assert_eq!(one.remove().unwrap(), 5);
        assert_eq!(one.remove().unwrap(), 0);
        assert_eq!(multi.remove().unwrap(), 4);
        assert!(!one.is_installed().unwrap());
    });
    assert_eq!(count(&n, "iptables", "--match-set"), 0);
    assert_eq!(count(&n, "ip6tables", "--match-set"), 0);
    assert_eq!(count(&n, "iptables", "--dport 22 -j ACCEPT"), 1);
    // With the rules gone the sets can be destroyed (no references left).
    n.ok(&["ipset", "destroy", "s4"]);
    n.ok(&["ipset", "destroy", "s6"]);
}

#[test]
fn missing_set_is_a_clear_error() {
    let Some(n) = Netns::with_tools("fwnoset", FIREWALL) else {
        return;
    };
    let tcp = Protos {
        tcp: true,
        udp: false,
    };
    let fw = Firewall::new(
        FirewallMode::Iptables,
        tcp,
        &[443],
        "nosuchset",
        "nosuchset6",
    );
    n.in_netns(|| {
        let e = fw.install().unwrap_err().to_string();
        assert!(
            e.starts_with("firewall: iptables -C INPUT -p tcp --dport 443"),
            "{e}"
        );
        assert!(e.contains("nosuchset"), "{e}");
        // Removing rules on sets that do not exist is not an error.
        assert_eq!(fw.remove().unwrap(), 0);
    });
}
