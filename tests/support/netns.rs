//! Network namespace fixtures for kernel tests.
//!
//! [`Netns::with_tools`] creates a namespace named `rf-<tag>-<pid>-<n>`
//! (unique per test run, since several people run tests on one machine)
//! with `lo` up, and deletes it on drop after killing whatever still runs
//! inside. It returns `None`, after showing why, when the test cannot run
//! (not root, no `ip`, or one of the tools the test names missing): the
//! caller then returns early, which is the skip. [`Netns::new`] is the same
//! with no tools beyond `ip`; [`FIREWALL`] names what refract's kernel
//! enforcer runs or is witnessed by.
//!
//! Everything that touches kernel state (ipset, iptables, conntrack, ss,
//! servers, clients) runs inside a namespace: through [`Netns::exec`] /
//! [`Netns::spawn`] (`ip netns exec NAME …`) for processes, or
//! [`Netns::in_netns`] for in-process code (a thread that `setns(2)`s into
//! the namespace first, so sockets it opens live there).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{skip, wait_until, PROMPT};

/// The tools of a test that runs the kernel enforcer (or its parts) and
/// checks the sets and DROP rules from outside.
pub const FIREWALL: &[&str] = &["ipset", "iptables", "ip6tables"];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that lives as long as this guard.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `rf-<tag>-<pid>-<n>` with loopback up; `None` (with the
    /// reason shown, see [`skip`]) when not root or `ip` is missing.
    pub fn new(tag: &str) -> Option<Netns> {
        Netns::with_tools(tag, &[])
    }

    /// Like [`Netns::new`], for a test that also runs `tools` (inside the
    /// namespace, or as witnesses): `None`, with the reason shown, when one
    /// of them is not installed.
    pub fn with_tools(tag: &str, tools: &[&str]) -> Option<Netns> {
        super::root_with(&[&["ip"], tools].concat())?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rf-{tag}-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("spawn ip");
        if !out.status.success() {
            skip(&format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        // No duplicate address detection on interfaces created later (the
        // link-local address too), so IPv6 works as soon as links are up.
        ns.ok(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        Some(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, the bind mount `setns(2)` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `args` inside the namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    /// Runs `args` inside the namespace, panics (with its stderr) unless it
    /// succeeds, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` inside the namespace (stdin null, stdout/stderr piped).
    /// Drop kills whatever is left in the namespace, but tests should still
    /// kill and wait for their children.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    /// Runs `f` on a new thread that has first joined this namespace, and
    /// returns its result (a panic in `f` is propagated). Sockets opened in
    /// `f` live in the namespace; the calling thread is unaffected.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                refract::sys::netlink::setns_net(file.as_fd())
                    .unwrap_or_else(|e| panic!("setns: {e}"));
                drop(file);
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what tests left running in the namespace (only processes in
        // our own namespace, by pid), then delete it.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill")
                    .args(["-9", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Wires a veth pair: `a_if` in `a` with `a_addrs`, `b_if` in `b` with
/// `b_addrs` (CIDR strings, v4 or v6), both up. IPv6 addresses get
/// `nodad` so they are usable at once.
pub fn veth(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) {
    a.ok(&[
        "ip",
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ok(&["ip", "-6", "addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ns.ok(&["ip", "addr", "add", addr, "dev", ifname]);
            }
        }
        ns.ok(&["ip", "link", "set", ifname, "up"]);
    }
    // Wait (bounded) for carrier on both ends and no tentative address.
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        wait_until(
            PROMPT,
            &format!("{ifname} in {} to come up", ns.name()),
            || {
                let link = ns.ok(&["ip", "-o", "link", "show", "dev", ifname]);
                let tentative = ns.ok(&["ip", "-o", "addr", "show", "dev", ifname, "tentative"]);
                (link.contains("LOWER_UP") && tentative.trim().is_empty()).then_some(())
            },
        );
    }
}

/// One end of a [`wired`] pair: the namespace's tag, its end of the veth
/// and that end's addresses (CIDR).
pub type End<'a> = (&'a str, &'a str, &'a [&'a str]);

/// The usual topology of the kernel tests: a node namespace that needs
/// `tools` and a client namespace, wired by a veth pair ([`veth`]). `None`
/// (with the reason printed) where the node cannot be made.
pub fn wired(node: End<'_>, tools: &[&str], client: End<'_>) -> Option<(Netns, Netns)> {
    let n = Netns::with_tools(node.0, tools)?;
    let c = Netns::new(client.0)?;
    veth(&n, node.1, node.2, &c, client.1, client.2);
    Some((n, c))
}

/// Adds a default-free route in `ns` to `dst` (CIDR) via `dev`, for
/// topologies with more than two namespaces.
pub fn route(ns: &Netns, dst: &str, dev: &str) {
    let fam = if dst.contains(':') { "-6" } else { "-4" };
    ns.ok(&["ip", fam, "route", "add", dst, "dev", dev]);
}
