//! The traffic-control half of the bandwidth caps: refract's HTB root on
//! the shaped (WAN) device, one class per capped user, and the one filter
//! that sends a packet to its user's class by its mark. Synchronous
//! exchanges for startup, `refract cleanup` and `refract check`, each
//! bounded by [`TIMEOUT`]; the messages are [`crate::nl::rtnl`]'s, which
//! the loop can also send through the pipeline (class changes).
//!
//! The shape on the device, fixed (other parts depend on it):
//!
//! - Packets of a capped user's connections carry `skb->mark = MARK_TAG |
//!   minor` ([`MARK_TAG`], minor in `1..=`[`MAX_MINOR`]), set by the
//!   nftables half from the connection's mark in postrouting, which runs
//!   before the egress qdisc.
//! - The device's root qdisc is HTB `5246:` ([`HTB_MAJOR`]) with `default
//!   0`: unclassified packets are sent directly, unshaped (HTB's direct
//!   queue, `tc -s qdisc` counts them as `direct_packets_stat`).
//! - Class `5246:minor` per capped user, rate = ceil = the user's cap,
//!   no parent class, so no borrowing (burst and quantum:
//!   [`crate::nl::rtnl::htb_class`]).
//! - One classic cls_bpf filter on `5246:` ([`FILTER_PRIO`],
//!   [`FILTER_HANDLE`]) running [`crate::nl::rtnl::mark_classifier`]: the
//!   mark is the class id. A mark whose class does not exist (a user whose
//!   class is not there yet, or any stray `0x5246xxxx` mark) goes to the
//!   default, which does not exist either, so it goes out unshaped: never
//!   dropped.
//!
//! Ownership: refract changes only a root qdisc it made (handle `5246:`,
//! kind `htb`) or the kernel's default root (handle `0:`, whatever its
//! kind: `pfifo_fast`, `mq`, `fq_codel`, `noqueue`, `noop` on a device
//! that was never up). A root someone created (any other handle) is
//! refused with [`ShapeError::Foreign`] and left as it was; the kernel
//! enforces the same (an add without `NLM_F_REPLACE` never overrides a
//! created root). Removing our root puts the kernel's default back.
//!
//! Cost: HTB is one queue, under one lock, for the whole device.
//! Unshaped traffic goes through its direct queue (the device's
//! `txqueuelen` packets, FIFO) instead of the default qdisc (`fq_codel`,
//! or `mq` with one per TX queue). Each class has the kernel's default
//! leaf, a `pfifo` of the same length: a capped user's own backlog delays
//! that user's packets (measured: about 230 KB queued, 0.9 s, behind one
//! TCP download at 2 Mbit/s; TCP small queues is what bounds it), never
//! anyone else's.
//!
//! From the loop: a class is created or changed with
//! [`crate::nl::rtnl::htb_class`] and `NLM_F_CREATE` (idempotent, so the
//! pipeline may send it again after `ENOBUFS`), deleted with
//! [`crate::nl::rtnl::del_class`] (`ENOENT` on a repeat: gone); both ask
//! for an ack ([`crate::nl::pipeline::Kind::Ack`]).

use std::fmt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::nl::buf::NlBuf;
use crate::nl::consts::{NLM_F_CREATE, NLM_F_EXCL};
use crate::nl::rtnl::{self, BpfClassicFilter, Class, Qdisc};
use crate::nl::socket::{NlSocket, OwnedMsg};

pub use super::marks::{MARK_TAG, MARK_TAG_MASK, MAX_MINOR};

/// The major of our root qdisc (`5246:`, "RF") and of its classes.
pub const HTB_MAJOR: u16 = 0x5246;
/// Our filter's priority on `5246:`.
pub const FILTER_PRIO: u16 = 1;
/// Our filter's handle in that priority.
pub const FILTER_HANDLE: u32 = 1;
/// The bound on every exchange here.
pub const TIMEOUT: Duration = Duration::from_secs(5);

// The classifier returns the mark as the class id: the tag is the major.
const _: () = assert!(MARK_TAG == (HTB_MAJOR as u32) << 16);
const _: () = assert!(MARK_TAG & !MARK_TAG_MASK == 0);

/// Our classifier program.
pub const PROGRAM: [rtnl::SockFilter; 9] = rtnl::mark_classifier(MARK_TAG);

/// Where a device's public addresses would be routed: `--shape-dev auto`
/// shapes the device of the route to these (Cloudflare's resolvers; any
/// public address would do, a route lookup sends nothing).
pub const PUBLIC_V4: &str = "1.1.1.1";
pub const PUBLIC_V6: &str = "2606:4700:4700::1111";

/// The shaped device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dev {
    pub index: u32,
    pub name: String,
}

/// Why [`ensure_root`] did not set up the device.
#[derive(Debug)]
pub enum ShapeError {
    /// The root qdisc is someone else's: left alone.
    Foreign {
        dev: String,
        kind: String,
        handle: u32,
    },
    /// A kernel exchange failed (the message says which).
    Io(io::Error),
}

/// `maj:` or `maj:min` in hex, as `tc` prints a handle.
pub fn handle_str(h: u32) -> String {
    match rtnl::tc_minor(h) {
        0 => format!("{:x}:", rtnl::tc_major(h)),
        m => format!("{:x}:{m:x}", rtnl::tc_major(h)),
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::Foreign { dev, kind, handle } => write!(
                f,
                "shape: {dev} already has a root qdisc refract did not create \
                 ({kind} {}); refract leaves it alone: remove it \
                 (tc qdisc del dev {dev} root) or shape another device (--shape-dev)",
                handle_str(*handle)
            ),
            ShapeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ShapeError {}

impl From<io::Error> for ShapeError {
    fn from(e: io::Error) -> ShapeError {
        ShapeError::Io(e)
    }
}

fn tc_err(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::ENOENT) if what.contains("qdisc") => {
            " (no HTB in this kernel: CONFIG_NET_SCH_HTB)"
        }
        Some(libc::ENOENT) if what.contains("filter") => {
            " (no cls_bpf in this kernel: CONFIG_NET_CLS_BPF)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("shape: {what}: {e}{hint}"))
}

/// A route socket for the functions here.
pub fn open() -> io::Result<NlSocket> {
    NlSocket::open(libc::NETLINK_ROUTE, 0).map_err(|e| tc_err("netlink socket", e))
}

/// One request and its answer, the kernel's errno kept (callers that
/// branch on it); [`exchange`] for the rest.
fn raw(sock: &mut NlSocket, f: impl FnOnce(&mut NlBuf, u32)) -> io::Result<Vec<OwnedMsg>> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    f(&mut buf, seq);
    let r = sock.request(&buf, TIMEOUT);
    if matches!(&r, Err(e) if e.kind() == io::ErrorKind::TimedOut) {
        sock.drain(); // a late answer must not be taken for the next one's
    }
    r
}

/// [`raw`] with the error saying what failed.
fn exchange(
    sock: &mut NlSocket,
    what: &str,
    f: impl FnOnce(&mut NlBuf, u32),
) -> io::Result<Vec<OwnedMsg>> {
    raw(sock, f).map_err(|e| tc_err(what, e))
}

/// `--shape-dev NAME` or `--shape-dev auto` (the device of the route to a
/// public address, IPv4 first, then IPv6).
pub fn resolve_dev(name_or_auto: &str) -> io::Result<Dev> {
    let mut sock = open()?;
    if name_or_auto != "auto" {
        return link_by_name(&mut sock, name_or_auto);
    }
    for dst in [PUBLIC_V4, PUBLIC_V6] {
        let dst: IpAddr = dst.parse().expect("a literal address");
        let msgs = match raw(&mut sock, |b, s| rtnl::get_route(b, s, dst)) {
            Ok(m) => m,
            Err(e) if is_unreachable(&e) => continue,
            Err(e) => return Err(tc_err("route lookup", e)),
        };
        let Some(oif) = msgs.iter().find_map(|m| rtnl::parse_route_oif(&m.as_msg())) else {
            continue; // a blackhole or unreachable route: no device
        };
        return link_by_index(&mut sock, oif);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "--shape-dev auto: no default route (name the device: --shape-dev eth0)",
    ))
}

fn is_unreachable(e: &io::Error) -> bool {
    // ENETUNREACH: no route; EHOSTUNREACH/EACCES/EINVAL: an unreachable,
    // prohibit or blackhole route; EAFNOSUPPORT: no IPv6.
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENETUNREACH
                | libc::EHOSTUNREACH
                | libc::EACCES
                | libc::EINVAL
                | libc::EAFNOSUPPORT
                | libc::ENETDOWN
        )
    )
}

fn link_by_name(sock: &mut NlSocket, name: &str) -> io::Result<Dev> {
    if name.is_empty() || name.len() >= rtnl::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--shape-dev {name:?}: not an interface name"),
        ));
    }
    let msgs = match raw(sock, |b, s| rtnl::get_link_by_name(b, s, name)) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("--shape-dev {name}: no such interface"),
            ))
        }
        Err(e) => return Err(tc_err(&format!("get link {name}"), e)),
    };
    msgs.iter()
        .filter_map(|m| rtnl::parse_link(&m.as_msg()))
        .map(|l| Dev {
            index: l.index,
            name: l.name,
        })
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "shape: get link: no answer"))
}

fn links(sock: &mut NlSocket) -> io::Result<Vec<Dev>> {
    let msgs = exchange(sock, "list links", rtnl::dump_links)?;
    Ok(msgs
        .iter()
        .filter_map(|m| rtnl::parse_link(&m.as_msg()))
        .map(|l| Dev {
            index: l.index,
            name: l.name,
        })
        .collect())
}

fn link_by_index(sock: &mut NlSocket, index: u32) -> io::Result<Dev> {
    links(sock)?
        .into_iter()
        .find(|d| d.index == index)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("shape: no link {index}")))
}

/// Every qdisc of every link (the kernel dumps them all, see
/// [`rtnl::dump_qdiscs`]).
pub fn qdiscs(sock: &mut NlSocket) -> io::Result<Vec<Qdisc>> {
    let msgs = exchange(sock, "list qdiscs", |b, s| rtnl::dump_qdiscs(b, s, 0))?;
    Ok(msgs
        .iter()
        .filter_map(|m| rtnl::parse_qdisc(&m.as_msg()))
        .collect())
}

fn root_of(qdiscs: &[Qdisc], ifindex: u32) -> Option<&Qdisc> {
    qdiscs.iter().find(|q| q.ifindex == ifindex && q.is_root())
}

/// Whether `q` is our root qdisc.
pub fn is_ours(q: &Qdisc) -> bool {
    q.is_root() && q.handle == rtnl::tc_handle(HTB_MAJOR, 0) && q.kind == "htb"
}

/// What [`ensure_root`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopted {
    /// The root was the kernel's default and is ours now (false: it was
    /// ours already, from an earlier run).
    pub created: bool,
    /// The kind of the default root we replaced (`noqueue`, …).
    pub replaced: Option<String>,
    /// Our filter was missing (or not ours) and was put in.
    pub filter_added: bool,
    /// The classes under our root: (minor, rate in bytes/s), by minor.
    pub classes: Vec<(u16, u64)>,
}

/// Makes the root qdisc of `dev` ours and our filter present (module
/// docs): adopts our root of an earlier run with its classes, replaces
/// the kernel's default, refuses anyone else's.
pub fn ensure_root(sock: &mut NlSocket, dev: &Dev) -> Result<Adopted, ShapeError> {
    let all = qdiscs(sock)?;
    let mut adopted = Adopted {
        created: false,
        replaced: None,
        filter_added: false,
        classes: Vec::new(),
    };
    match root_of(&all, dev.index) {
        Some(q) if is_ours(q) => {}
        Some(q) if q.handle != 0 => {
            return Err(ShapeError::Foreign {
                dev: dev.name.clone(),
                kind: q.kind.clone(),
                handle: q.handle,
            })
        }
        default => {
            let r = exchange(sock, &format!("add htb qdisc on {}", dev.name), |b, s| {
                rtnl::new_htb_root(b, s, dev.index, HTB_MAJOR, NLM_F_CREATE | NLM_F_EXCL)
            });
            match r {
                Ok(_) => {
                    adopted.created = true;
                    adopted.replaced = default.map(|q| q.kind.clone());
                }
                Err(e) => match root_of(&qdiscs(sock)?, dev.index) {
                    // Another refract won the race: adopt its root.
                    Some(q) if is_ours(q) => {}
                    // Someone put a root in place since the dump: say whose.
                    Some(q) if q.handle != 0 => {
                        return Err(ShapeError::Foreign {
                            dev: dev.name.clone(),
                            kind: q.kind.clone(),
                            handle: q.handle,
                        })
                    }
                    _ => return Err(e.into()),
                },
            }
        }
    }
    match ensure_filter(sock, dev) {
        Ok(added) => adopted.filter_added = added,
        Err(e) => {
            // A root we just made is no use without its filter (every
            // packet would go direct): leave the device as it was found.
            if adopted.created {
                let _ = remove_root(sock, dev.index);
            }
            return Err(e.into());
        }
    }
    adopted.classes = classes(sock, dev.index)?
        .iter()
        .filter_map(|c| Some((rtnl::tc_minor(c.handle), c.rate?)))
        .collect();
    adopted.classes.sort_unstable();
    Ok(adopted)
}

/// Whether `f` is our filter, exactly.
pub fn is_our_filter(f: &rtnl::Filter) -> bool {
    f.kind == "bpf"
        && f.parent == rtnl::tc_handle(HTB_MAJOR, 0)
        && f.prio == FILTER_PRIO
        && f.handle == FILTER_HANDLE
        && f.protocol == rtnl::ETH_P_ALL
        && f.bpf_flags == 0
        && f.program.as_deref() == Some(&PROGRAM[..])
}

/// The filters on our root (the per-priority entries with handle 0
/// left out).
pub fn filters(sock: &mut NlSocket, ifindex: u32) -> io::Result<Vec<rtnl::Filter>> {
    let msgs = exchange(sock, "list filters", |b, s| {
        rtnl::dump_filters(b, s, ifindex, HTB_MAJOR)
    })?;
    Ok(msgs
        .iter()
        .filter_map(|m| rtnl::parse_filter(&m.as_msg()))
        .filter(|f| f.handle != 0 && f.ifindex == ifindex)
        .collect())
}

/// Puts our filter on our root unless it is there; whether it had to.
/// Whatever else sits at [`FILTER_PRIO`] under our root is replaced: the
/// qdisc is ours, and so is that priority.
fn ensure_filter(sock: &mut NlSocket, dev: &Dev) -> io::Result<bool> {
    let present = filters(sock, dev.index)?;
    if present.iter().any(is_our_filter) {
        return Ok(false);
    }
    if present.iter().any(|f| f.prio == FILTER_PRIO) {
        exchange(sock, &format!("delete filters on {}", dev.name), |b, s| {
            rtnl::del_filters(b, s, dev.index, HTB_MAJOR, FILTER_PRIO)
        })?;
    }
    let filter = filter(dev.index);
    exchange(sock, &format!("add bpf filter on {}", dev.name), |b, s| {
        filter.emit(b, s, NLM_F_CREATE)
    })?;
    Ok(true)
}

/// Our filter on `ifindex`: the mark classifier at [`FILTER_PRIO`],
/// handle [`FILTER_HANDLE`], on `5246:`.
pub fn filter(ifindex: u32) -> BpfClassicFilter<'static> {
    BpfClassicFilter {
        ifindex,
        parent_major: HTB_MAJOR,
        prio: FILTER_PRIO,
        handle: FILTER_HANDLE,
        program: &PROGRAM,
    }
}

/// Our classes on `ifindex` (HTB, major [`HTB_MAJOR`], minor not 0).
pub fn classes(sock: &mut NlSocket, ifindex: u32) -> io::Result<Vec<Class>> {
    let msgs = exchange(sock, "list classes", |b, s| {
        rtnl::dump_classes(b, s, ifindex)
    })?;
    Ok(msgs
        .iter()
        .filter_map(|m| rtnl::parse_class(&m.as_msg()))
        .filter(|c| {
            c.ifindex == ifindex
                && c.kind == "htb"
                && rtnl::tc_major(c.handle) == HTB_MAJOR
                && rtnl::tc_minor(c.handle) != 0
        })
        .collect())
}

fn check_minor(minor: u16) -> io::Result<()> {
    if minor == 0 || minor > MAX_MINOR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("shape: class minor {minor:#x} outside 1..={MAX_MINOR:#x}"),
        ));
    }
    Ok(())
}

/// Creates class `5246:minor` at `rate` bytes/s, or changes its rate in
/// place (same handle, same queue, counters kept).
pub fn set_class(sock: &mut NlSocket, ifindex: u32, minor: u16, rate: u64) -> io::Result<()> {
    check_minor(minor)?;
    if rate == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "shape: a class rate of 0",
        ));
    }
    let what = format!(
        "set class {}",
        handle_str(rtnl::tc_handle(HTB_MAJOR, minor))
    );
    exchange(sock, &what, |b, s| {
        rtnl::htb_class(b, s, ifindex, HTB_MAJOR, minor, rate, NLM_F_CREATE)
    })
    .map(drop)
}

/// Deletes class `5246:minor`; `false` when it was not there.
pub fn del_class(sock: &mut NlSocket, ifindex: u32, minor: u16) -> io::Result<bool> {
    check_minor(minor)?;
    let handle = rtnl::tc_handle(HTB_MAJOR, minor);
    match raw(sock, |b, s| rtnl::del_class(b, s, ifindex, handle)) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(tc_err(&format!("delete class {}", handle_str(handle)), e)),
    }
}

/// Removes our root from `ifindex` (with its classes and filter; the
/// kernel puts the default qdisc back); `false` when the root is not ours
/// (left alone) or gone.
pub fn remove_root(sock: &mut NlSocket, ifindex: u32) -> io::Result<bool> {
    let all = qdiscs(sock)?;
    if !root_of(&all, ifindex).is_some_and(is_ours) {
        return Ok(false);
    }
    let handle = rtnl::tc_handle(HTB_MAJOR, 0);
    match raw(sock, |b, s| rtnl::del_root_qdisc(b, s, ifindex, handle)) {
        Ok(_) => Ok(true),
        // Replaced or removed since the dump (the kernel checks the
        // handle: someone else's root is never deleted).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(false),
        Err(e) => Err(tc_err("delete root qdisc", e)),
    }
}

/// `refract cleanup`: removes our root from every link of this namespace
/// that has it; what it removed ("htb 5246: on eth0").
pub fn remove_everywhere(sock: &mut NlSocket) -> io::Result<Vec<String>> {
    let ours: Vec<u32> = qdiscs(sock)?
        .iter()
        .filter(|q| is_ours(q))
        .map(|q| q.ifindex)
        .collect();
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    let names = links(sock)?;
    let mut removed = Vec::new();
    for ifindex in ours {
        if remove_root(sock, ifindex)? {
            let name = names
                .iter()
                .find(|d| d.index == ifindex)
                .map_or_else(|| format!("ifindex {ifindex}"), |d| d.name.clone());
            removed.push(format!(
                "htb {} on {name}",
                handle_str(rtnl::tc_handle(HTB_MAJOR, 0))
            ));
        }
    }
    Ok(removed)
}

/// One line of [`check_kernel`]: what was tried, and how it went.
pub type Finding = (&'static str, Result<(), String>);

/// `refract check`: can this kernel shape? Tries the real thing (our HTB
/// root, a class, our filter) on the loopback device of a scratch network
/// namespace: the calling thread enters a new namespace just long enough
/// to open a netlink socket there and comes back; every request then goes
/// through that socket, and the namespace, with whatever the check made
/// in it, disappears when the socket is closed. No device of the host is
/// touched, even if refract dies halfway. Without `CAP_SYS_ADMIN` (no
/// scratch namespace), says so and tries nothing.
pub fn check_kernel() -> Vec<Finding> {
    let sock = match scratch_socket(libc::NETLINK_ROUTE) {
        Ok(s) => s,
        Err(e) => {
            return vec![(
                "scratch namespace",
                Err(format!(
                    "cannot test shaping without a scratch network namespace: {e}"
                )),
            )]
        }
    };
    check_in(sock)
}

/// A netlink socket of `protocol` in a new, empty network namespace, the
/// thread back in its own (the namespace lives as long as the socket).
pub fn scratch_socket(protocol: i32) -> io::Result<NlSocket> {
    let home = File::open("/proc/thread-self/ns/net")?;
    crate::sys::netlink::unshare_net().map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (needs CAP_SYS_ADMIN)"
        } else {
            ""
        };
        io::Error::new(e.kind(), format!("unshare: {e}{hint}"))
    })?;
    let sock = NlSocket::open(protocol, 0);
    if let Err(e) = crate::sys::netlink::setns_net(home.as_fd()) {
        // Cannot happen (we came from there, with the rights to leave); a
        // thread stranded in an empty namespace must not carry on.
        panic!("shape check: cannot return to the original network namespace: {e}");
    }
    sock
}

fn check_in(mut sock: NlSocket) -> Vec<Finding> {
    let lo = match link_by_name(&mut sock, "lo") {
        Ok(d) => d,
        Err(e) => return vec![("scratch namespace", Err(e.to_string()))],
    };
    let filter = BpfClassicFilter {
        ifindex: lo.index,
        parent_major: HTB_MAJOR,
        prio: FILTER_PRIO,
        handle: FILTER_HANDLE,
        program: &PROGRAM,
    };
    type Step<'a> = (
        &'static str,
        &'static str,
        Box<dyn Fn(&mut NlBuf, u32) + 'a>,
    );
    let steps: [Step<'_>; 3] = [
        (
            "htb qdisc",
            "add htb qdisc",
            Box::new(|b, s| {
                rtnl::new_htb_root(b, s, lo.index, HTB_MAJOR, NLM_F_CREATE | NLM_F_EXCL)
            }),
        ),
        (
            "htb class",
            "add htb class",
            Box::new(|b, s| {
                rtnl::htb_class(
                    b,
                    s,
                    lo.index,
                    HTB_MAJOR,
                    1,
                    125_000,
                    NLM_F_CREATE | NLM_F_EXCL,
                )
            }),
        ),
        (
            "cls_bpf classic filter",
            "add bpf filter",
            Box::new(|b, s| filter.emit(b, s, NLM_F_CREATE | NLM_F_EXCL)),
        ),
    ];
    let mut out: Vec<Finding> = Vec::new();
    let mut failed: Option<&str> = None;
    for (feature, what, f) in &steps {
        let r = match failed {
            Some(earlier) => Err(format!("not tried ({earlier} failed)")),
            None => exchange(&mut sock, what, f)
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if r.is_err() && failed.is_none() {
            failed = Some(feature);
        }
        out.push((feature, r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_print_as_tc_prints_them() {
        assert_eq!(handle_str(0x5246_0000), "5246:");
        assert_eq!(handle_str(0x5246_000a), "5246:a");
        assert_eq!(handle_str(0x0001_0000), "1:");
        assert_eq!(handle_str(0), "0:");
    }

    #[test]
    fn the_program_classifies_our_marks() {
        assert_eq!(
            rtnl::run_classic(&PROGRAM, 1514, MARK_TAG | 5),
            Some(MARK_TAG | 5)
        );
        assert_eq!(rtnl::run_classic(&PROGRAM, 1514, MARK_TAG), Some(0));
        assert_eq!(rtnl::run_classic(&PROGRAM, 1514, 5), Some(0));
    }

    #[test]
    fn foreign_root_error_names_kind_handle_and_the_way_out() {
        let e = ShapeError::Foreign {
            dev: "eth0".into(),
            kind: "htb".into(),
            handle: 0x0001_0000,
        };
        let s = e.to_string();
        assert!(s.starts_with("shape: eth0 already has a root qdisc"), "{s}");
        assert!(
            s.contains("(htb 1:)") && s.contains("tc qdisc del dev eth0 root"),
            "{s}"
        );
    }

    #[test]
    fn ours_is_htb_5246_at_the_root() {
        let q = |handle, parent, kind: &str| Qdisc {
            ifindex: 2,
            handle,
            parent,
            kind: kind.into(),
            direct_packets: None,
        };
        assert!(is_ours(&q(0x5246_0000, rtnl::TC_H_ROOT, "htb")));
        assert!(!is_ours(&q(0x5246_0000, rtnl::TC_H_ROOT, "fq")));
        assert!(!is_ours(&q(0x0001_0000, rtnl::TC_H_ROOT, "htb")));
        assert!(!is_ours(&q(0x5246_0000, 0x0001_0001, "htb")));
    }

    #[test]
    fn bad_names_and_minors_are_refused_before_the_kernel() {
        for name in ["", "a/b", "sixteen-chars-xx"] {
            let e = match open() {
                Ok(mut s) => link_by_name(&mut s, name).unwrap_err(),
                Err(_) => return, // no netlink here
            };
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}: {e}");
        }
        assert!(check_minor(0).is_err() && check_minor(0xffff).is_err());
        assert!(check_minor(1).is_ok() && check_minor(MAX_MINOR).is_ok());
    }
}
