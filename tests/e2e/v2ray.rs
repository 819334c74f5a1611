//! End-to-end against software nobody here wrote: a real V2Ray node, real
//! V2Ray clients and the real `refract` binary enforcing in the kernel, all
//! inside network namespaces this test creates and always removes.
//!
//! ```text
//!  a1  198.51.100.1  ─┐
//!  a2  198.51.100.2  ─┤ br0  198.51.100.254       node               web
//!  a3  2001:db8:3::1 ─┤      2001:db8:N::fe/64    v2ray vmess :443 ── 203.0.113.2:8080
//!  b1  198.51.100.11 ─┘                           refract             (slow_http.py)
//! ```
//!
//! Each client namespace runs a V2Ray client (SOCKS5 on 127.0.0.1:1080,
//! VMess to node:443 as alice or bob, mux off), so every request the test
//! makes with `curl --socks5-hostname` inside it is one TCP connection from
//! the client's own address to node:443 and one line in the node's access
//! log. Witnesses come from outside refract: the kernel (`ipset test` inside
//! node), the audit log, and what the clients see (curl's exit code and
//! byte count).
//!
//! Online means in use (issue 11): a key counts for its user while its last
//! line is within `--window` or one of its connections is in use in the
//! kernel's eyes (client data, or ACKs of new data, within the window).
//! The first three scenarios run with a short `--window`/`--timeout` and
//! hold under the window rule and under liveness alike, so `refract
//! replay` of their log agrees with the daemon. The three `liveness_…`
//! scenarios run with refract 0.2's default flags and need the kernel:
//! replay keeps the window rule and bans nobody there, which they check.
//! Witnesses of the kernel's side come from `ss -tnoi` inside node: the
//! socket of a vanished client still ESTABLISHED, an idle one's keepalive.
//!
//! Every namespace name carries the pid and the scenario, so the six
//! scenarios run in parallel and never meet anyone else's test. They take
//! 10–36 s each, mostly sleeping: about 70 s in all on two test threads.
//! Without root or without one of the tools, each test prints why and
//! skips.

use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::daemon::{Notify, BIN};
use crate::support::netns::{veth, Netns};
use crate::support::{is_root, poll_until, rules, skip, which, PROMPT};

const SERVER_JSON: &str = include_str!("server.json");
const CLIENT_JSON: &str = include_str!("client.json");
const SLOW_HTTP_PY: &str = include_str!("slow_http.py");

const ALICE_ID: &str = "a11ce000-0000-4000-8000-00000000000a";
const BOB_ID: &str = "b0b00000-0000-4000-8000-00000000000b";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

const WEB_URL: &str = "http://203.0.113.2:8080";
const NODE_V4: &str = "198.51.100.254";
const SET4: &str = "refract_banned_users";
const SET6: &str = "refract_banned_users6";

/// The daemon's policy settings for the scenarios that pass them
/// ([`Sandbox::start_refract`]; the `liveness_…` ones run with the
/// defaults): a short timeout, so the ban's lift fits in the run, and far
/// apart enough that one scheduling hiccup on a loaded machine does not
/// move a verdict.
const WINDOW: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(8);

/// How long a ban may take, first request of the second device → its
/// address in the set: what must hold for the scenarios to mean what they
/// say (the ban lands while the other device is still in its window).
/// Measured here: a few hundred milliseconds (printed); speed is the
/// benchmark's business (`scripts/ban-latency.sh`).
const BAN_WITHIN: Duration = Duration::from_secs(3);

/// How long after its ban a device's open transfer may take to end: the
/// kill resets it at once (printed); the DROP rule alone would stall it
/// until curl's --max-time (exit 28, which is checked apart).
const CUT_WITHIN: Duration = PROMPT;

/// refract 0.2's `--window` (and still the default), which the liveness
/// scenarios run with: they pass no policy flag, as a new user would.
const DEFAULT_WINDOW: Duration = Duration::from_secs(5);

/// How long a liveness ban of a newcomer may take, its request → its
/// address in the set: issue 11's "banned within 2 s". The kernel lookup
/// takes milliseconds (printed).
const LIVE_BAN_WITHIN: Duration = Duration::from_secs(2);

/// How long a ban found with no new line may take, the resume of an idle
/// connection → its address in the set. The README states 2 s; 1 s more
/// here because the resume is estimated from the client's side (request
/// start + the server's pause schedule), which counts the request's setup
/// through two V2Ray hops as part of the latency.
const RESUME_BAN_WITHIN: Duration = Duration::from_secs(3);

fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, ipset, iptables)".into());
    }
    for tool in [
        "v2ray",
        "ip",
        "ss",
        "ipset",
        "iptables",
        "ip6tables",
        "curl",
        "python3",
    ] {
        if which(tool).is_none() {
            return Some(format!("{tool} not found in PATH"));
        }
    }
    // The configs and flags here are V2Ray 4's (Debian's v2ray package);
    // V2Ray 5 has a `run` subcommand and another config schema.
    let version = Command::new("v2ray")
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let first = version.lines().next().unwrap_or_default();
    if !first.starts_with("V2Ray 4.") {
        return Some(format!("needs V2Ray 4.x, `v2ray -version` says {first:?}"));
    }
    None
}

/// Skips the test with its reason (shown in every run, see [`skip`]).
macro_rules! skip_unless_sandbox {
    () => {
        if let Some(why) = skip_reason() {
            skip(&format!("e2e with V2Ray: {why}"));
            return;
        }
    };
}

/// Runs a short command to completion (ip, ipset, iptables and ss do not
/// block) and returns its output.
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Like [`run`], but the command must succeed.
fn must(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn new_ns(tag: &str) -> Netns {
    Netns::new(tag).unwrap_or_else(|| panic!("cannot create namespace {tag}"))
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

/// Polls `cond` until it holds or `bound` passes; returns when it first
/// held.
fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) -> Option<Instant> {
    poll_until(bound, || cond().then(Instant::now))
}

/// Whether `addr` is in `set` inside `ns`, asked of the kernel. A missing
/// set is a failure, not a "no": it would make every negative check pass.
/// With `--firewall nftables` (no ipset set, refract's table instead) the
/// witness is `nft get element` on `banned4`/`banned6` (an IPv6 key is its
/// /64's network address there).
fn in_set(ns: &str, set: &str, addr: IpAddr) -> bool {
    let out = run(in_ns(ns, "ipset").args(["test", set, &addr.to_string()]));
    let msg = String::from_utf8_lossy(&out.stderr);
    if msg.contains("is NOT in set") {
        false
    } else if msg.contains("is in set") {
        true
    } else if run(in_ns(ns, "nft").args(["list", "table", "inet", "refract"]))
        .status
        .success()
    {
        let (nft_set, key) = match addr {
            IpAddr::V4(_) => ("banned4", addr),
            IpAddr::V6(_) => ("banned6", refract::key::Key::new(addr, 64).addr()),
        };
        let elem = format!("{{ {key} }}");
        let out = run(in_ns(ns, "nft").args(["get", "element", "inet", "refract", nft_set, &elem]));
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            true
        } else if err.contains("No such file or directory") {
            false
        } else {
            panic!("nft get element {nft_set} {key} in {ns}: {}", err.trim())
        }
    } else {
        panic!("ipset test {set} {addr} in {ns}: {}", msg.trim())
    }
}

fn set_for(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => SET4,
        IpAddr::V6(_) => SET6,
    }
}

/// One device: a client namespace with its address and its V2Ray client.
#[derive(Clone, Debug)]
struct Client {
    name: &'static str,
    ns: String,
    addr: IpAddr,
    /// node's address as this client dials it.
    server: String,
}

/// How a client reaches node: over IPv4 in the shared /24, or over IPv6 in
/// a /64 of its own (so two IPv6 clients are two keys, not one).
#[derive(Clone, Copy, Debug)]
enum Net {
    V4(u8),
    V6(u16),
}

/// A finished curl through a client's SOCKS inbound.
#[derive(Debug)]
struct Fetch {
    /// curl's exit code (0 ok, 18 partial body, 28 timeout, 52/56 cut).
    code: i32,
    bytes: u64,
    ended: Instant,
    /// curl's message, shown through Debug in assertion messages.
    #[allow(dead_code)] // reason: read only by the derived Debug
    stderr: String,
}

impl Fetch {
    fn ok(&self) -> bool {
        self.code == 0
    }
}

/// A curl still running. Dropping it kills the process.
#[derive(Debug)]
struct Running {
    child: Option<Child>,
    what: String,
    started: Instant,
}

impl Running {
    /// Waits for curl to end (its own `--max-time` bounds it; `bound` is the
    /// backstop) and collects what it saw.
    fn wait(mut self, bound: Duration) -> Fetch {
        let mut child = self.child.take().expect("waited twice");
        let deadline = Instant::now() + bound;
        let status: ExitStatus = loop {
            if let Some(status) = child.try_wait().expect("try_wait curl") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} still running after {bound:?}", self.what);
            }
            sleep_ms(10);
        };
        let ended = Instant::now();
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        Fetch {
            code: status.code().unwrap_or(-1),
            bytes: stdout.trim().parse().unwrap_or(0),
            ended,
            stderr: stderr.trim().to_string(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `curl` for `path` through `client`'s SOCKS inbound.
fn fetch(client: &Client, path: &str, max_time: f64) -> Running {
    let started = Instant::now();
    let child = in_ns(&client.ns, "curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}"])
        .args(["--max-time", &max_time.to_string()])
        .args(["--socks5-hostname", "127.0.0.1:1080"])
        .arg(format!("{WEB_URL}{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    Running {
        child: Some(child),
        what: format!("curl {path} from {}", client.name),
        started,
    }
}

/// Bytes a `/slow/<secs>` download delivers when it is not cut.
fn slow_bytes(secs: u64) -> u64 {
    secs * 10 * 1000
}

/// Bytes a `/pause/<before>/<idle>/<after>` download delivers when it is
/// not cut.
fn pause_bytes(before: u64, after: u64) -> u64 {
    slow_bytes(before) + slow_bytes(after)
}

/// A background thread that, until stopped, checks that none of `watched`
/// is banned and, if given a client, keeps fetching through it: the "keeps
/// working throughout" witness.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    log: Arc<Mutex<ProbeLog>>,
}

#[derive(Debug, Default)]
struct ProbeLog {
    rounds: u32,
    fetches: Vec<Fetch>,
    banned: Vec<String>,
}

impl Prober {
    fn start(node: &str, watched: &[&Client], fetch_via: Option<&Client>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let node = node.to_string();
        let watched: Vec<Client> = watched.iter().map(|c| (*c).clone()).collect();
        let via = fetch_via.cloned();
        let handle = {
            let (stop, log) = (stop.clone(), log.clone());
            thread::spawn(move || {
                // Hard bound in case the test never stops it.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for c in &watched {
                        if in_set(&node, set_for(c.addr), c.addr) {
                            log.lock().unwrap().banned.push(c.name.to_string());
                        }
                    }
                    if let Some(c) = &via {
                        let f = fetch(c, "/", 3.0).wait(Duration::from_secs(5));
                        log.lock().unwrap().fetches.push(f);
                    }
                    log.lock().unwrap().rounds += 1;
                    sleep_ms(250);
                }
            })
        };
        Prober {
            stop,
            handle: Some(handle),
            log,
        }
    }

    fn finish(mut self) -> ProbeLog {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("prober thread panicked");
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A process the sandbox started, with the file its output goes to.
#[derive(Debug)]
struct Proc {
    child: Child,
    log: PathBuf,
}

/// The namespaces, processes and temp dir of one scenario. Drop kills the
/// processes (newest first), deletes the namespaces (which takes their
/// veths, ipsets and iptables rules with them) and the dir; on a failing
/// test it first prints the logs.
#[derive(Debug)]
struct Sandbox {
    tag: String,
    word: String,
    dir: PathBuf,
    procs: Vec<Proc>,
    clients: Vec<Client>,
    /// Dropped after `procs` are killed (Drop below), which deletes them.
    node: Netns,
    others: Vec<Netns>,
    /// refract's `$NOTIFY_SOCKET`, read for its whole life.
    notify: Option<Notify>,
    /// The policy flags refract runs with (`--window`/`--timeout`, or none
    /// for refract 0.2's defaults), which [`Sandbox::replay`] repeats.
    policy: Vec<String>,
}

impl Sandbox {
    /// Creates node and web, links them, and starts the web server.
    fn new(word: &str) -> Sandbox {
        let tag = format!("rfe2e-{}-{word}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        // The guard exists before anything that can fail, so a failure here
        // still removes what was made (the dir too).
        let mut sb = Sandbox {
            tag,
            dir,
            word: word.to_string(),
            procs: Vec::new(),
            clients: Vec::new(),
            node: new_ns(&format!("e2e-{word}-node")),
            others: vec![new_ns(&format!("e2e-{word}-web"))],
            notify: None,
            policy: Vec::new(),
        };
        let (node, web) = (&sb.node, &sb.others[0]);
        veth(
            node,
            "web0",
            &["203.0.113.1/24"],
            web,
            "eth0",
            &["203.0.113.2/24"],
        );
        node.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        node.ok(&["ip", "addr", "add", &format!("{NODE_V4}/24"), "dev", "br0"]);
        node.ok(&["ip", "link", "set", "br0", "up"]);
        let mut cmd = in_ns(web.name(), "python3");
        let script = sb.dir.join("slow_http.py");
        fs::write(&script, SLOW_HTTP_PY).expect("write slow_http.py");
        cmd.arg(&script).args(["203.0.113.2", "8080"]);
        sb.spawn("web", cmd);
        sb
    }

    fn node(&self) -> String {
        self.node.name().to_string()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn spawn(&mut self, what: &str, mut cmd: Command) {
        let log = self.path(&format!("{what}.out"));
        let file = fs::File::create(&log).expect("create process log");
        let err = file.try_clone().expect("clone log fd");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        self.procs.push(Proc { child, log });
    }

    /// Adds a client namespace on node's bridge and starts its V2Ray
    /// client as the user with `user_id`.
    fn add_client(&mut self, name: &'static str, user_id: &str, net: Net) -> Client {
        let ns = new_ns(&format!("e2e-{}-{name}", self.word));
        let port = format!("p{name}");
        let (addr, prefix, server) = match net {
            Net::V4(host) => (format!("198.51.100.{host}"), 24, NODE_V4.to_string()),
            Net::V6(subnet) => {
                let server = format!("2001:db8:{subnet:x}::fe");
                self.node.ok(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{server}/64"),
                    "dev",
                    "br0",
                    "nodad",
                ]);
                (format!("2001:db8:{subnet:x}::1"), 64, server)
            }
        };
        veth(
            &self.node,
            &port,
            &[],
            &ns,
            "eth0",
            &[&format!("{addr}/{prefix}")],
        );
        self.node.ok(&["ip", "link", "set", &port, "master", "br0"]);
        let config = self.path(&format!("{name}.json"));
        let json = CLIENT_JSON
            .replace("@SERVER@", &server)
            .replace("@USER_ID@", user_id);
        fs::write(&config, json).expect("write client config");
        let mut cmd = in_ns(ns.name(), "v2ray");
        cmd.arg("-config").arg(&config);
        self.spawn(&format!("v2ray-{name}"), cmd);
        let client = Client {
            name,
            ns: ns.name().to_string(),
            addr: addr.parse().expect("client address"),
            server,
        };
        self.clients.push(client.clone());
        self.others.push(ns);
        client
    }

    fn access_log(&self) -> PathBuf {
        self.path("access.log")
    }

    fn block_log(&self) -> PathBuf {
        self.path("block.log")
    }

    /// Starts the V2Ray server in node, then waits until it and every
    /// client listen and the web server answers. No request goes through
    /// the proxy before refract runs, so the access log starts empty.
    fn start_proxy(&mut self) {
        let config = self.path("server.json");
        let json = SERVER_JSON
            .replace("@ACCESS_LOG@", &self.access_log().display().to_string())
            .replace(
                "@ERROR_LOG@",
                &self.path("v2ray-error.log").display().to_string(),
            )
            .replace("@ALICE_ID@", ALICE_ID)
            .replace("@BOB_ID@", BOB_ID);
        fs::write(&config, json).expect("write server config");
        let mut cmd = in_ns(&self.node(), "v2ray");
        cmd.arg("-config").arg(&config);
        self.spawn("v2ray-node", cmd);

        let mut waits: Vec<(String, u16)> = vec![(self.node(), 443)];
        waits.extend(self.clients.iter().map(|c| (c.ns.clone(), 1080)));
        for (ns, port) in waits {
            let listening = wait_for(3 * PROMPT, || {
                let out = run(in_ns(&ns, "ss").args(["-Htln", &format!("sport = :{port}")]));
                !out.stdout.is_empty()
            });
            assert!(listening.is_some(), "nothing listens on {ns} :{port}");
        }
        let node = self.node();
        let web_up = wait_for(3 * PROMPT, || {
            run(in_ns(&node, "curl").args(["-sf", "--max-time", "1", &format!("{WEB_URL}/")]))
                .status
                .success()
        });
        assert!(web_up.is_some(), "web server does not answer from node");
    }

    /// Starts refract in node with the short [`WINDOW`] and [`TIMEOUT`]
    /// (see [`Sandbox::launch_refract`]).
    fn start_refract(&mut self, extra: &[&str]) {
        let policy = vec![
            format!("--window={}s", WINDOW.as_secs()),
            format!("--timeout={}s", TIMEOUT.as_secs()),
        ];
        self.launch_refract(policy, extra);
    }

    /// Starts refract in node with no `--window`/`--timeout`: refract 0.2's
    /// defaults ([`DEFAULT_WINDOW`], one minute), as a new user runs it.
    fn start_refract_defaults(&mut self, extra: &[&str]) {
        self.launch_refract(Vec::new(), extra);
    }

    /// Starts refract in node the way the service unit does (refract 0.2's
    /// spellings, Type=notify), kernel enforcement on, with the `policy`
    /// flags and `extra`, and waits for its READY=1.
    fn launch_refract(&mut self, policy: Vec<String>, extra: &[&str]) {
        // v2ray creates the access log on its first line; refract starts
        // at the end of an existing file, so create it empty first: every
        // line the test causes is then after refract's starting offset.
        fs::write(self.access_log(), "").expect("create access log");
        let mut cmd = in_ns(&self.node(), BIN);
        cmd.args([
            "--proto=tcp".to_string(),
            "--dport=443".to_string(),
            format!("--control={}", self.path("control.sock").display()),
            format!("--access.log={}", self.access_log().display()),
            format!("--block.log={}", self.block_log().display()),
        ]);
        cmd.args(&policy);
        cmd.args(extra);
        self.policy = policy;
        // The daemon under test reads only its flags: keep the caller's
        // REFRACT_* variables out of it. Its messages go to its stderr
        // file, not to the host's syslog.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REFRACT_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("REFRACT_LOG", "stderr");
        // Readiness as systemd sees it (the unit is Type=notify): READY=1 on
        // $NOTIFY_SOCKET once the sets and DROP rules exist and the log is
        // followed. A path socket, so it is reachable from inside node.
        let notify = Notify::bind(&self.dir);
        cmd.env("NOTIFY_SOCKET", notify.path());
        self.spawn("refract", cmd);
        let out = self.path("refract.out");
        let refract = self.procs.last_mut().expect("refract spawned");
        let took = notify.wait_ready(|| {
            let st = refract.child.try_wait().expect("try_wait refract")?;
            Some(format!(
                "{st}; its output:\n{}",
                fs::read_to_string(&out).unwrap_or_default()
            ))
        });
        eprintln!("refract ready in {took:?}");
        self.notify = Some(notify);
        // The kernel agrees: the DROP rules are in place (both families
        // when a client speaks IPv6).
        if extra.contains(&"--firewall=nftables") {
            let chain =
                run(in_ns(&self.node(), "nft").args(["list", "chain", "inet", "refract", "input"]));
            let chain = String::from_utf8_lossy(&chain.stdout).into_owned();
            for rule in [
                "tcp dport @ports ip saddr @banned4 drop",
                "tcp dport @ports ip6 saddr & ffff:ffff:ffff:ffff:: == @banned6 drop",
            ] {
                assert!(chain.contains(rule), "not in place: {rule}\n{chain}");
            }
            return;
        }
        let mut want = vec![rules::tcp4(443, SET4)];
        if self.clients.iter().any(|c| c.addr.is_ipv6()) {
            want.push(rules::rule(true, "tcp", &[443], SET6));
        }
        for rule in want {
            assert!(rules::present(&self.node, &rule), "not in place: {rule}");
        }
    }

    /// Stops refract as the service manager does (SIGTERM) and checks that
    /// it exits 0 (at once; the bound is [`PROMPT`]); returns its last
    /// output line (the counters).
    fn stop_refract(&mut self) -> String {
        let log = self.path("refract.out");
        let refract = self
            .procs
            .iter_mut()
            .find(|p| p.log == log)
            .expect("refract running");
        let pid = refract.child.id().to_string();
        must(Command::new("kill").args(["-TERM", &pid]));
        let mut status = None;
        wait_for(PROMPT, || {
            status = refract.child.try_wait().expect("try_wait refract");
            status.is_some()
        });
        let out = fs::read_to_string(&log).unwrap_or_default();
        let status =
            status.unwrap_or_else(|| panic!("refract ignored SIGTERM for {PROMPT:?}:\n{out}"));
        assert!(
            status.success(),
            "refract exited {status} on SIGTERM:\n{out}"
        );
        out.lines().last().unwrap_or_default().to_string()
    }

    /// What a liveness ban of `who` must look like: within `bound` of
    /// what set it off (`latency`), the audit line naming `origin`, and
    /// `who`'s transfer `running` broken by the kill (not stalled by the
    /// DROP rule until curl's --max-time, exit 28) soon after `banned_at`.
    fn check_liveness_ban(
        &self,
        who: &Client,
        origin: &Client,
        latency: Duration,
        bound: Duration,
        banned_at: Instant,
        running: Running,
    ) -> Fetch {
        assert!(
            latency <= bound,
            "{} banned only after {latency:?}",
            who.name
        );
        let audit = self.audit_line(&[
            &format!(
                "disallowed concurrent connection from {} w/ origin {}",
                who.addr, origin.addr
            ),
            &format!("email: {ALICE}"),
        ]);
        eprintln!("audit: {audit}");
        let cut = running.wait(Duration::from_secs(30));
        let after = since(banned_at, cut.ended);
        eprintln!(
            "{}'s transfer: {cut:?}, ended {after:?} after the ban",
            who.name
        );
        assert!(
            !cut.ok() && cut.code != 28,
            "{}'s transfer was not cut: {cut:?}",
            who.name
        );
        assert!(
            after < CUT_WITHIN,
            "{}'s transfer ended only {after:?} after the ban",
            who.name
        );
        cut
    }

    fn banned(&self, c: &Client) -> bool {
        in_set(&self.node(), set_for(c.addr), c.addr)
    }

    /// Waits until `c`'s ban state is `want`; returns when it was seen.
    fn wait_banned(&self, c: &Client, want: bool, bound: Duration) -> Option<Instant> {
        wait_for(bound, || self.banned(c) == want)
    }

    /// The access-log lines that name `addr` (as V2Ray 4.34 writes it: no
    /// `from`, bracketed IPv6).
    fn access_lines(&self, addr: IpAddr) -> Vec<String> {
        let needle = match addr {
            IpAddr::V4(a) => format!(" {a}:"),
            IpAddr::V6(a) => format!(" [{a}]:"),
        };
        fs::read_to_string(self.access_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits (at most [`PROMPT`]) for a block.log line containing every
    /// one of `parts` and returns it.
    fn audit_line(&self, parts: &[&str]) -> String {
        let mut found = None;
        wait_for(PROMPT, || {
            found = fs::read_to_string(self.block_log())
                .unwrap_or_default()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no audit line with {parts:?}; block.log:\n{}",
                fs::read_to_string(self.block_log()).unwrap_or_default()
            )
        })
    }

    /// `c`'s connections as node's kernel sees them: one line per
    /// ESTABLISHED socket on node:443 whose peer is `c` (`ss -o` timers,
    /// `-i` tcp_info folded into the same line).
    fn established(&self, c: &Client) -> Vec<String> {
        let dst = match c.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let out = must(in_ns(&self.node(), "ss").args([
            "-Htnoi",
            "state",
            "established",
            "dst",
            &dst,
            "and",
            "sport",
            "=",
            ":443",
        ]));
        let mut sockets: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // ss prints each socket's tcp_info on an indented next line.
            match sockets.last_mut() {
                Some(last) if line.starts_with(char::is_whitespace) => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                _ => sockets.push(line.trim().to_string()),
            }
        }
        sockets
    }

    /// `c`'s network vanishes without a FIN: its only link goes down inside
    /// its own namespace (node's end loses carrier, its bridge port stops
    /// forwarding). Neither side closes or resets anything: node's socket
    /// stays ESTABLISHED and retransmits into nothing.
    fn vanish(&self, c: &Client) {
        must(in_ns(&c.ns, "ip").args(["link", "set", "eth0", "down"]));
    }

    /// A raw TCP connect from `c` to node:443 (past its V2Ray client).
    /// Returns curl's exit code: 28 when the SYN is dropped (timeout).
    fn raw_connect(&self, c: &Client) -> i32 {
        let target = match c.addr {
            IpAddr::V4(_) => format!("http://{}:443/", c.server),
            IpAddr::V6(_) => format!("http://[{}]:443/", c.server),
        };
        let out = run(in_ns(&c.ns, "curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "1.5",
            &target,
        ]));
        out.status.code().unwrap_or(-1)
    }

    /// What `refract replay` makes of the access log V2Ray wrote during
    /// the scenario, with the same policy flags: its audit lines. Replay
    /// has no kernel: it keeps the window rule, so it agrees with the
    /// daemon only where liveness decided nothing.
    fn replay(&self, extra: &[&str]) -> Vec<String> {
        let out = must(
            Command::new(BIN)
                .arg("replay")
                .args(&self.policy)
                .args(extra)
                .arg(self.access_log()),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn dump_logs(&self) {
        eprintln!("---- e2e sandbox {} ----", self.tag);
        let mut files: Vec<PathBuf> = vec![self.access_log(), self.block_log()];
        files.extend(self.procs.iter().map(|p| p.log.clone()));
        for f in files {
            let text = fs::read_to_string(&f).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("== {} ({} lines)", f.display(), lines.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
        if let Ok(out) = in_ns(&self.node(), "ipset").args(["list"]).output() {
            eprintln!(
                "== ipset list in node\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        for p in self.procs.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `name=N` of refract's exit `stats:` line.
fn stat(line: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn since(a: Instant, b: Instant) -> Duration {
    b.saturating_duration_since(a)
}

/// A second device of alice while her first downloads: banned within
/// [`BAN_WITHIN`] of its first request while the first is online, its
/// transfers cut (that request and one it held open, idle, from before),
/// its new connections dropped; alice's first device and bob never notice;
/// the ban lifts after --timeout and the device may connect again.
///
/// Online is liveness (issue 11): a key counts while its last line is
/// within the window or one of its connections is in use. So the transfer
/// a2 holds open from before is a paused one (`/pause`): idle, it lets a1
/// in; a flowing one would make a1 the second device. The same outcome
/// holds under the window rule alone, so the replay below agrees.
#[test]
fn ban_cuts_and_lifts_the_second_device() {
    skip_unless_sandbox!();
    ban_cuts_and_lifts("ban", &[]);
}

/// The same with refract's own nftables table (`--firewall nftables`).
#[test]
fn ban_cuts_and_lifts_the_second_device_with_nftables() {
    skip_unless_sandbox!();
    if which("nft").is_none() {
        skip("nft not installed (apt-get install nftables)");
        return;
    }
    ban_cuts_and_lifts("bannft", &["--firewall=nftables"]);
}

fn ban_cuts_and_lifts(tag: &str, extra: &[&str]) {
    let mut sb = Sandbox::new(tag);
    let a1 = sb.add_client("a1", ALICE_ID, Net::V4(1));
    let a2 = sb.add_client("a2", ALICE_ID, Net::V4(2));
    let b1 = sb.add_client("b1", BOB_ID, Net::V4(11));
    sb.start_proxy();
    sb.start_refract(extra);

    let bob = Prober::start(&sb.node(), &[&a1, &b1], Some(&b1));
    // a2 alone first: a download that streams 1 s and then idles, held
    // open. The log has no line for the end of a connection, and an idle
    // connection is not in use: a2's key expires after the window while
    // the connection stays open, and a1 then comes online as alice's
    // device. (Two seconds past the window, not one: the replay below
    // sees the log's whole seconds, and must see a2 expired too.)
    let a2_old = fetch(&a2, "/pause/1/30/1", 40.0);
    sleep_ms((Duration::from_secs(1) + WINDOW + Duration::from_secs(2)).as_millis() as u64);
    let a1_download = fetch(&a1, "/slow/8", 15.0);
    sleep_ms(1000);
    assert!(
        !sb.banned(&a1) && !sb.banned(&a2),
        "banned before a second device spoke"
    );

    // a2 speaks again while a1 is online: it is the second device now.
    let a2_new = fetch(&a2, "/slow/14", 20.0);
    let banned_at = sb.wait_banned(&a2, true, BAN_WITHIN);
    let lines = sb.access_lines(a2.addr);
    assert!(
        lines.len() == 2
            && lines
                .iter()
                .all(|l| l.ends_with(&format!("email: {ALICE}"))),
        "v2ray's lines for a2 as alice: {lines:?}"
    );
    let banned_at = banned_at.expect("a2 not banned within BAN_WITHIN of its request");
    let latency = since(a2_new.started, banned_at);
    eprintln!("a2: request -> in {SET4}: {latency:?}");
    assert!(latency <= BAN_WITHIN, "a2 banned only after {latency:?}");

    let audit = sb.audit_line(&[
        &format!(
            "disallowed concurrent connection from {} w/ origin {}",
            a2.addr, a1.addr
        ),
        &format!("email: {ALICE}"),
    ]);
    eprintln!("audit: {audit}");

    // Both of a2's transfers are cut (SOCK_DESTROY → RST → the V2Ray
    // client closes the SOCKS stream): curl ends at once with a short body.
    // The DROP rule alone would stall them until --max-time (28). The one
    // held open got its first second before it paused, 7 s before the ban.
    for (what, running, least, full) in [
        ("new", a2_new, 0, slow_bytes(14)),
        ("held open", a2_old, slow_bytes(1), pause_bytes(1, 1)),
    ] {
        let cut = running.wait(Duration::from_secs(45));
        let after = since(banned_at, cut.ended);
        eprintln!("a2's {what} transfer: {cut:?}, ended {after:?} after the ban");
        assert!(
            !cut.ok() && cut.code != 28,
            "a2's {what} transfer was not cut: {cut:?}"
        );
        assert!(cut.bytes < full, "a2 got the whole body: {cut:?}");
        assert!(
            cut.bytes >= least,
            "a2's {what} transfer had not delivered its start: {cut:?}"
        );
        assert!(
            after < CUT_WITHIN,
            "a2's {what} transfer ended only {after:?} after the ban"
        );
    }

    // a1 opens new connections as before while a2 is banned (its requests
    // refresh its key; after the last one, and once its download ended, it
    // must expire again before a2 may come back).
    let mut a1_last = Instant::now();
    for _ in 0..2 {
        let f = fetch(&a1, "/", 3.0).wait(Duration::from_secs(5));
        assert!(f.ok(), "a1 cannot fetch while a2 is banned: {f:?}");
        a1_last = Instant::now();
        sleep_ms(300);
    }

    // New connections from a2 go nowhere: through its proxy client, and
    // straight at node:443 (dropped, so a timeout rather than a refusal).
    let again = fetch(&a2, "/", 2.0).wait(Duration::from_secs(5));
    assert!(!again.ok(), "a2 fetched while banned: {again:?}");
    let code = sb.raw_connect(&a2);
    assert_eq!(
        code, 28,
        "a2's TCP connect to node:443 while banned: curl exit {code}"
    );

    // a1's download is one connection, logged once at its start, and in
    // use until it ends (about when the ban lifts): it completes intact.
    let whole = a1_download.wait(Duration::from_secs(20));
    assert!(whole.ok(), "a1's download broke: {whole:?}");
    assert_eq!(whole.bytes, slow_bytes(8), "a1's download: {whole:?}");

    // The ban lifts after --timeout (the kernel entry's own timeout and
    // refract's policy agree); not much earlier, not much later.
    let lifted_at = sb
        .wait_banned(&a2, false, TIMEOUT + PROMPT)
        .expect("a2's ban did not lift");
    let held = since(banned_at, lifted_at);
    eprintln!("a2 ban held {held:?} (--timeout={TIMEOUT:?})");
    assert!(
        held + Duration::from_millis(1500) >= TIMEOUT,
        "a2's ban lifted after only {held:?}"
    );
    // a1's key expires WINDOW after its last request, its download having
    // ended; then a2 is admitted. (1.5 s past the window: the replay below
    // sees whole seconds.)
    let quiet = WINDOW + Duration::from_millis(1500);
    sleep_ms(
        quiet
            .saturating_sub(since(a1_last, Instant::now()))
            .as_millis() as u64,
    );
    let back = fetch(&a2, "/", 3.0).wait(Duration::from_secs(5));
    assert!(back.ok(), "a2 cannot fetch after the ban lifted: {back:?}");
    sleep_ms(500);
    assert!(!sb.banned(&a2), "a2 banned again after the lift");

    let probe = bob.finish();
    assert!(
        probe.banned.is_empty(),
        "banned while they should not be: {:?}",
        probe.banned
    );
    let failed: Vec<&Fetch> = probe.fetches.iter().filter(|f| !f.ok()).collect();
    assert!(failed.is_empty(), "bob's fetches failed: {failed:?}");
    assert!(
        probe.fetches.len() >= 10,
        "bob made only {} fetches",
        probe.fetches.len()
    );
    assert!(sb
        .access_lines(b1.addr)
        .iter()
        .all(|l| l.ends_with(&format!("email: {BOB}"))));

    eprintln!("refract at exit: {}", sb.stop_refract());

    let replayed = sb.replay(&[]);
    assert_eq!(replayed.len(), 1, "replay of the real log: {replayed:?}");
    assert!(replayed[0].contains(&format!("from {} w/ origin {}", a2.addr, a1.addr)));
}

/// With `--limit 2` alice's two devices both work; a third (over IPv6) is
/// banned as its /64 and cut off.
#[test]
fn limit_two_bans_the_third_device() {
    skip_unless_sandbox!();
    limit_two("limit", &["--limit=2"]);
}

/// The same with refract's own nftables table (`--firewall nftables`),
/// `nft` as the witness.
#[test]
fn limit_two_bans_the_third_device_with_nftables() {
    skip_unless_sandbox!();
    if which("nft").is_none() {
        skip("nft not installed (apt-get install nftables)");
        return;
    }
    limit_two("limnft", &["--limit=2", "--firewall=nftables"]);
}

fn limit_two(tag: &str, flags: &[&str]) {
    let mut sb = Sandbox::new(tag);
    let a1 = sb.add_client("a1", ALICE_ID, Net::V4(1));
    let a2 = sb.add_client("a2", ALICE_ID, Net::V4(2));
    let a3 = sb.add_client("a3", ALICE_ID, Net::V6(3));
    sb.start_proxy();
    sb.start_refract(flags);

    let watch = Prober::start(&sb.node(), &[&a1, &a2], None);
    let d1 = fetch(&a1, "/slow/8", 15.0);
    sleep_ms(500);
    let d2 = fetch(&a2, "/slow/8", 15.0);
    sleep_ms(1000);
    assert!(
        !sb.banned(&a1) && !sb.banned(&a2),
        "a device within --limit 2 banned"
    );

    let d3 = fetch(&a3, "/slow/8", 15.0);
    let banned_at = sb
        .wait_banned(&a3, true, BAN_WITHIN)
        .unwrap_or_else(|| panic!("a3 not banned; its lines: {:?}", sb.access_lines(a3.addr)));
    let latency = since(d3.started, banned_at);
    eprintln!("a3: first request -> in the IPv6 set: {latency:?}");
    assert!(latency <= BAN_WITHIN, "a3 banned only after {latency:?}");
    let audit = sb.audit_line(&[
        "disallowed concurrent connection from 2001:db8:3::/64 w/ origin ",
        &a1.addr.to_string(),
        &a2.addr.to_string(),
        &format!("email: {ALICE}"),
    ]);
    eprintln!("audit: {audit}");

    let cut = d3.wait(Duration::from_secs(20));
    assert!(
        !cut.ok() && cut.code != 28,
        "a3's transfer was not cut: {cut:?}"
    );
    assert!(
        since(banned_at, cut.ended) < CUT_WITHIN,
        "a3 cut late: {cut:?}"
    );
    let code = sb.raw_connect(&a3);
    assert_eq!(
        code, 28,
        "a3's TCP connect to node:443 while banned: curl exit {code}"
    );

    for (name, d) in [("a1", d1), ("a2", d2)] {
        let f = d.wait(Duration::from_secs(15));
        assert!(
            f.ok() && f.bytes == slow_bytes(8),
            "{name}'s download: {f:?}"
        );
    }
    let probe = watch.finish();
    assert!(
        probe.banned.is_empty(),
        "banned within the limit: {:?}",
        probe.banned
    );
    assert!(probe.rounds >= 10, "watched only {} rounds", probe.rounds);

    eprintln!("refract at exit: {}", sb.stop_refract());

    let replayed = sb.replay(&["--limit=2"]);
    assert_eq!(replayed.len(), 1, "replay of the real log: {replayed:?}");
    assert!(replayed[0].contains("from 2001:db8:3::/64 w/ origin"));
}

/// With `--confirm`, a device that switches address (a1 goes quiet, a2
/// takes over inside the window: WiFi → LTE) is never banned. The control:
/// when the old address comes back while the new one is online and the new
/// one speaks again, two devices are provably online, and the old one is
/// banned.
#[test]
fn confirm_spares_a_switching_device() {
    skip_unless_sandbox!();
    let mut sb = Sandbox::new("confirm");
    let a1 = sb.add_client("a1", ALICE_ID, Net::V4(1));
    let a2 = sb.add_client("a2", ALICE_ID, Net::V4(2));
    sb.start_proxy();
    sb.start_refract(&["--confirm"]);

    // Phase 1: the device on WiFi (a1) makes a few requests, then moves.
    for _ in 0..3 {
        let f = fetch(&a1, "/", 3.0).wait(Duration::from_secs(5));
        assert!(f.ok(), "a1: {f:?}");
        sleep_ms(400);
    }
    // Phase 2: the same device on LTE (a2) starts inside the window and
    // keeps going until a1's key has long expired.
    let watch = Prober::start(&sb.node(), &[&a2], None);
    let switched = Instant::now();
    let d2 = fetch(&a2, "/slow/8", 15.0);
    while since(switched, Instant::now()) < WINDOW + Duration::from_secs(2) {
        let f = fetch(&a2, "/", 3.0).wait(Duration::from_secs(5));
        assert!(f.ok(), "a2 after the switch: {f:?}");
        sleep_ms(700);
    }
    let f = d2.wait(Duration::from_secs(15));
    assert!(f.ok() && f.bytes == slow_bytes(8), "a2's download: {f:?}");
    let probe = watch.finish();
    assert!(probe.banned.is_empty(), "the switching device was banned");
    assert!(probe.rounds >= 10, "watched only {} rounds", probe.rounds);
    assert!(!sb.banned(&a1) && !sb.banned(&a2));

    // Control: a1 comes back while a2 is online. It is only a candidate
    // until a2 (the admitted key) speaks again; then a1 is banned.
    let f = fetch(&a1, "/", 3.0).wait(Duration::from_secs(5));
    assert!(f.ok(), "a1 back, as a candidate: {f:?}");
    assert!(
        sb.wait_banned(&a1, true, Duration::from_millis(800))
            .is_none(),
        "a1 banned before a2 spoke again (--confirm ignored)"
    );
    let spoke = fetch(&a2, "/", 3.0);
    let started = spoke.started;
    let banned_at = sb
        .wait_banned(&a1, true, BAN_WITHIN)
        .expect("a1 not banned after a2 spoke again while a1 was online");
    assert!(
        spoke.wait(Duration::from_secs(5)).ok(),
        "a2 cut off instead of a1"
    );
    let latency = since(started, banned_at);
    eprintln!("confirmation: a2's request -> a1 in {SET4}: {latency:?}");
    assert!(latency <= BAN_WITHIN, "a1 banned only after {latency:?}");
    assert!(!sb.banned(&a2), "a2 banned too");
    sb.audit_line(&[&format!("from {} w/ origin {}", a1.addr, a2.addr)]);

    eprintln!("refract at exit: {}", sb.stop_refract());

    let replayed = sb.replay(&["--confirm"]);
    assert_eq!(replayed.len(), 1, "replay of the real log: {replayed:?}");
    assert!(replayed[0].contains(&format!("from {} w/ origin {}", a1.addr, a2.addr)));
}

/// The number after `key` (e.g. `lastack:`) in one of [`Sandbox::established`]'s
/// lines: ss prints tcp_info's times in milliseconds.
fn ss_field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Issue 11, first "Done when": alice's first device holds one long
/// download (one log line, then silence); after more than three windows of
/// log silence for alice her second device connects and is banned within
/// [`LIVE_BAN_WITHIN`] of its request, its transfer broken; the first
/// device's download completes intact; bob never notices. refract 0.2's
/// default flags. Under the window rule alone a2 was admitted every time
/// (a1's only line is 16 s old): so replay, which has no kernel, bans
/// nobody here.
#[test]
fn liveness_bans_a_second_device_while_the_first_downloads() {
    skip_unless_sandbox!();
    let mut sb = Sandbox::new("live");
    let a1 = sb.add_client("a1", ALICE_ID, Net::V4(1));
    let a2 = sb.add_client("a2", ALICE_ID, Net::V4(2));
    let b1 = sb.add_client("b1", BOB_ID, Net::V4(11));
    sb.start_proxy();
    sb.start_refract_defaults(&[]);

    let bob = Prober::start(&sb.node(), &[&a1, &b1], Some(&b1));
    let d1 = fetch(&a1, "/slow/30", 40.0);
    let silence = 3 * DEFAULT_WINDOW + Duration::from_millis(1500);
    sleep_ms(silence.as_millis() as u64);
    let a1_lines = sb.access_lines(a1.addr);
    assert_eq!(
        a1_lines.len(),
        1,
        "a1's download, logged once: {a1_lines:?}"
    );
    let alice_lines = fs::read_to_string(sb.access_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&format!("email: {ALICE}")))
        .count();
    assert_eq!(alice_lines, 1, "alice's log was not silent");
    assert!(!sb.banned(&a1), "a1 banned alone");

    let d2 = fetch(&a2, "/slow/10", 15.0);
    let silent_for = since(d1.started, d2.started);
    let banned_at = sb
        .wait_banned(&a2, true, LIVE_BAN_WITHIN)
        .unwrap_or_else(|| {
            panic!(
                "a2 not banned within {LIVE_BAN_WITHIN:?} of its request while a1's download \
             flowed (alice's log silent for {silent_for:?}); a1 on node: {:?}",
                sb.established(&a1)
            )
        });
    let latency = since(d2.started, banned_at);
    eprintln!("a2 after {silent_for:?} of alice's silence: request -> in {SET4}: {latency:?}");
    let cut = sb.check_liveness_ban(&a2, &a1, latency, LIVE_BAN_WITHIN, banned_at, d2);
    assert!(cut.bytes < slow_bytes(10), "a2 got the whole body: {cut:?}");

    let whole = d1.wait(Duration::from_secs(30));
    assert!(whole.ok(), "a1's download broke: {whole:?}");
    assert_eq!(whole.bytes, slow_bytes(30), "a1's download: {whole:?}");

    let probe = bob.finish();
    assert!(
        probe.banned.is_empty(),
        "banned while they should not be: {:?}",
        probe.banned
    );
    let failed: Vec<&Fetch> = probe.fetches.iter().filter(|f| !f.ok()).collect();
    assert!(failed.is_empty(), "bob's fetches failed: {failed:?}");
    assert!(
        probe.fetches.len() >= 10,
        "bob made only {} fetches",
        probe.fetches.len()
    );

    let exit = sb.stop_refract();
    eprintln!("refract at exit: {exit}");
    // The ban was liveness's: the window rule alone admitted a2.
    assert_eq!(stat(&exit, "liveness_bans"), 1, "{exit}");
    assert!(stat(&exit, "liveness_facts") >= 1, "{exit}");

    let replayed = sb.replay(&[]);
    assert!(
        replayed.is_empty(),
        "replay (window rule, no kernel) of a log with {silent_for:?} of silence: {replayed:?}"
    );
}

/// Issue 11, second "Done when": alice's first device downloads, and
/// mid-transfer its network vanishes without a FIN (WiFi gone); node's
/// kernel still holds its socket ESTABLISHED, retransmitting into nothing,
/// which the test shows. More than a window later her second device (LTE)
/// connects: not banned, no audit line, its transfer completes. refract
/// 0.2's default flags.
#[test]
fn liveness_spares_a_device_whose_old_network_vanished() {
    skip_unless_sandbox!();
    let mut sb = Sandbox::new("vanish");
    let a1 = sb.add_client("a1", ALICE_ID, Net::V4(1));
    let a2 = sb.add_client("a2", ALICE_ID, Net::V4(2));
    sb.start_proxy();
    sb.start_refract_defaults(&[]);

    let d1 = fetch(&a1, "/slow/30", 40.0);
    sleep_ms(3000);
    let flowing = sb.established(&a1);
    assert_eq!(flowing.len(), 1, "a1's download on node: {flowing:?}");
    sb.vanish(&a1);
    let vanished = Instant::now();

    sleep_ms((DEFAULT_WINDOW + Duration::from_secs(3)).as_millis() as u64);
    // The witness from node's kernel: the socket is still there, and the
    // client has sent it nothing (no data, no ACK) since the vanish.
    let held = sb.established(&a1);
    let gone_for = since(vanished, Instant::now());
    eprintln!("a1 on node {gone_for:?} after its network vanished: {held:?}");
    assert_eq!(
        held.len(),
        1,
        "a1's socket is not ESTABLISHED on node: {held:?}"
    );
    for key in ["lastrcv:", "lastack:"] {
        let ms = ss_field(&held[0], key)
            .unwrap_or_else(|| panic!("no {key} in ss's line for a1: {held:?}"));
        assert!(
            Duration::from_millis(ms) > DEFAULT_WINDOW,
            "a1's socket on node heard from its client {ms} ms ago ({key}): {held:?}"
        );
    }

    let watch = Prober::start(&sb.node(), &[&a1, &a2], None);
    let d2 = fetch(&a2, "/slow/6", 15.0);
    let f = d2.wait(Duration::from_secs(15));
    assert!(
        f.ok() && f.bytes == slow_bytes(6),
        "a2's download after a1 vanished: {f:?}"
    );
    sleep_ms(1000);
    let probe = watch.finish();
    assert!(
        probe.banned.is_empty(),
        "banned after a1's network vanished: {:?}",
        probe.banned
    );
    assert!(probe.rounds >= 10, "watched only {} rounds", probe.rounds);
    let audit = fs::read_to_string(sb.block_log()).unwrap_or_default();
    assert!(audit.trim().is_empty(), "audit lines: {audit}");
    eprintln!("a1 on node at the end: {:?}", sb.established(&a1));
    drop(d1);

    let exit = sb.stop_refract();
    eprintln!("refract at exit: {exit}");
    // a2's newcomer line was checked against a1's connection, found not in
    // use: no fact, no ban.
    assert!(stat(&exit, "liveness_checks") >= 1, "{exit}");
    assert_eq!(stat(&exit, "liveness_bans"), 0, "{exit}");

    let replayed = sb.replay(&[]);
    assert!(replayed.is_empty(), "replay of the real log: {replayed:?}");
}

/// Issue 11, the case with no new line: alice's first device pauses mid-
/// download, idle long enough for Go's 15 s TCP keepalive to probe it
/// (keepalive alone is no use); her second device connects while the first
/// is idle and is admitted; when the first device's transfer resumes, two
/// devices are in use at once and the one that became active again (a1)
/// is banned within [`RESUME_BAN_WITHIN`], origin a2, its transfer broken;
/// a2's completes intact. refract 0.2's default flags. Replay sees only
/// the two lines, 9 s apart, and bans nobody.
#[test]
fn liveness_bans_when_an_idle_connection_resumes() {
    const BEFORE: u64 = 2;
    const IDLE: u64 = 25;
    const AFTER: u64 = 10;
    skip_unless_sandbox!();
    let mut sb = Sandbox::new("resume");
    let a1 = sb.add_client("a1", ALICE_ID, Net::V4(1));
    let a2 = sb.add_client("a2", ALICE_ID, Net::V4(2));
    sb.start_proxy();
    sb.start_refract_defaults(&[]);

    let d1 = fetch(&a1, &format!("/pause/{BEFORE}/{IDLE}/{AFTER}"), 60.0);
    // When the server resumes, at the earliest: the request reaches it
    // after d1.started.
    let resume = d1.started + Duration::from_secs(BEFORE + IDLE);
    let a2_at = d1.started + Duration::from_secs(BEFORE) + DEFAULT_WINDOW + Duration::from_secs(2);
    thread::sleep(a2_at.saturating_duration_since(Instant::now()));
    let idle = sb.established(&a1);
    eprintln!("a1 on node, idle: {idle:?}");
    assert_eq!(idle.len(), 1, "a1's paused download on node: {idle:?}");
    // The idle socket is probed by Go's keepalive (V2Ray sets it on its
    // inbound sockets): the scenario spans a probe and its answer.
    assert!(
        idle[0].contains("timer:(keepalive"),
        "no keepalive timer on a1's socket: {idle:?}"
    );

    let watch = Prober::start(&sb.node(), &[&a1, &a2], None);
    let d2 = fetch(&a2, "/slow/25", 35.0);
    sleep_ms((LIVE_BAN_WITHIN + Duration::from_secs(1)).as_millis() as u64);
    assert!(
        !sb.banned(&a2) && !sb.banned(&a1),
        "a ban while a1 was idle"
    );
    // Just before the resume: node's kernel saw an ACK after the last data
    // it sent, i.e. a keepalive probe and its answer (a probe carries no
    // data, so it leaves `lastsnd` alone). That answer must not count as use.
    thread::sleep((resume - Duration::from_millis(1500)).saturating_duration_since(Instant::now()));
    let probed = sb.established(&a1);
    eprintln!("a1 on node, before the resume: {probed:?}");
    assert_eq!(probed.len(), 1, "a1's paused download on node: {probed:?}");
    let (sent, acked) = (
        ss_field(&probed[0], "lastsnd:"),
        ss_field(&probed[0], "lastack:"),
    );
    assert!(
        matches!((sent, acked), (Some(s), Some(a)) if a + 1000 < s),
        "no keepalive answer on a1's idle socket: {probed:?}"
    );
    thread::sleep(resume.saturating_duration_since(Instant::now()));
    let probe = watch.finish();
    assert!(
        probe.banned.is_empty(),
        "banned before a1's transfer resumed (a keepalive counted as use?): {:?}",
        probe.banned
    );
    assert!(probe.rounds >= 10, "watched only {} rounds", probe.rounds);

    let banned_at = sb
        .wait_banned(&a1, true, RESUME_BAN_WITHIN)
        .unwrap_or_else(|| {
            panic!(
                "a1 not banned within {RESUME_BAN_WITHIN:?} of its resume while a2 downloads; \
                 a1 on node: {:?}",
                sb.established(&a1)
            )
        });
    let latency = since(resume, banned_at);
    eprintln!("a1: resume -> in {SET4}: {latency:?}");
    let cut = sb.check_liveness_ban(&a1, &a2, latency, RESUME_BAN_WITHIN, banned_at, d1);
    assert!(
        cut.bytes >= slow_bytes(BEFORE) && cut.bytes < pause_bytes(BEFORE, AFTER),
        "a1's transfer: {cut:?}"
    );

    let whole = d2.wait(Duration::from_secs(30));
    assert!(whole.ok(), "a2's download broke: {whole:?}");
    assert_eq!(whole.bytes, slow_bytes(25), "a2's download: {whole:?}");
    assert!(!sb.banned(&a2), "a2 banned too");

    let exit = sb.stop_refract();
    eprintln!("refract at exit: {exit}");
    // Found by a re-check (no new line from a1), decided by liveness.
    assert!(stat(&exit, "liveness_rechecks") >= 1, "{exit}");
    assert_eq!(stat(&exit, "liveness_bans"), 1, "{exit}");

    let replayed = sb.replay(&[]);
    assert!(replayed.is_empty(), "replay of the real log: {replayed:?}");
}
