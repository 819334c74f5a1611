//! The nf_tables half of per-user bandwidth caps: refract's table
//! `inet refract_shape` puts a capped user's mark on the conntrack entries
//! of their connections, copies it to the packet mark of the replies (the
//! download, which the HTB classes on the WAN egress shape by
//! `skb->mark`), and polices the upload. Sent over nfnetlink only
//! ([`crate::nl::nftables`]); `nft` is a witness in tests, never run.
//!
//! # Marks
//!
//! A user's mark is [`MARK_TAG`] `| minor`, minor 1..=0xfffe: the same
//! minor names the user's HTB class `5246:minor`, and the tag lets every
//! rule tell refract's marks from anyone else's with one mask.
//!
//! # The table (one atomic batch, [`table_batch`])
//!
//! - set `ports` (`inet_service`): the proxy's inbound ports.
//! - maps `peers4` (`ipv4_addr . inet_service : mark`) and `peers6`
//!   (`ipv6_addr . inet_service : mark`), flag `timeout`: the client's
//!   address and source port, as the access log's `from` names a
//!   connection, to the user's mark. One element per attributed
//!   connection ([`peers_batch`]), for [`PEER_TIMEOUT`]: once the
//!   connection's next packet has marked its conntrack entry, the element
//!   is no longer needed (the mark stays on the entry). In the kernel's
//!   registers each field of a concatenation takes a multiple of 4 bytes,
//!   so a key is the address, the port in network order and 2 zero bytes
//!   (8 bytes for IPv4, 20 for IPv6). A mark on an entry stays: a later
//!   element for the same peer marks only new connections.
//! - set `users` (`mark`): each capped user's mark with the user's email
//!   in the element's comment (nft's element user data), so a restarted
//!   daemon reads back whose each mark is ([`read_users`]): marks persist
//!   on conntrack entries across restarts, and a mark given to another
//!   user would shape their connections.
//! - upload: one limit object per user with a cap, `up_<minor hex>`
//!   (`rate over R bytes/second burst B bytes`), and the object map `up`
//!   (`mark : limit`) from the mark to it.
//! - chain `prerouting` (filter, hook prerouting, priority mangle, -150:
//!   after conntrack at -200, so `ct` is there): per family and protocol
//!   `meta nfproto F meta l4proto P th dport @ports ct direction original
//!   ct mark 0 ct mark set <saddr> . th sport map @peersN` (a key missing
//!   from the map ends the rule: the entry stays unmarked and is looked up
//!   again on its next packet), then `ct direction original limit name ct
//!   mark map @up drop` (a mark without an object: no limit).
//! - chain `postrouting` (filter, hook postrouting, priority mangle): per
//!   protocol `meta l4proto P th sport @ports ct direction reply ct mark
//!   and 0xffff0000 == 0x52460000 meta mark set ct mark`. A filter chain:
//!   no reroute (that is the route type's, on the output hook).
//!
//! The chains are named after their hooks because `mark` and `out` are
//! keywords of nft's grammar: a chain so named would be listed in a form
//! `nft -f` cannot read back.
//!
//! # Why the upload is policed, not shaped
//!
//! Shaping the upload would need a queue on the way in: tc ingress, or an
//! IFB device fed from it. Both run before conntrack, so the packet mark
//! is 0 there and the user cannot be told. Here, after conntrack, the
//! entry's mark names the user, and a token bucket (the limit object)
//! drops what exceeds the rate; TCP backs off to it. The kernel's bucket
//! holds one second of the rate plus the burst (`nft_limit_init()`), so a
//! sender that pauses less than a second loses no tokens.
//!
//! The policer counts every packet of the original direction, a
//! download's ACKs too. TCP's ACKs are cumulative, so losing most of them
//! costs little: a download in MTU-sized segments across a veth pair kept
//! 600 to 900 Mbit/s under a 1 Mbit/s upload cap (its ACKs alone were
//! over 10 Mbit/s).
//!
//! # Changing a rate
//!
//! The kernel cannot update a limit object: `nf_tables_newobj()` on an
//! existing name calls `obj->ops->update`, and the limit objects have
//! none (`nft_limit_obj_bytes_ops`, `net/netfilter/nft_limit.c`), so it
//! returns 0 and keeps the old rate. [`UserChange::Rate`] replaces it in
//! one batch: the map element, the object, a new object, a new element
//! (the element goes first: an object in use cannot be deleted).
//!
//! Builders write into an [`NlBuf`] with a given sequence number, asking
//! for one ack on the last message, like [`crate::nl::nftables::Batch`]:
//! the daemon sends them on its own non-blocking socket through
//! [`crate::nl::pipeline`], one batch to a datagram (the kernel runs the
//! first batch of a datagram only; see the [`crate::nl::nftables`] docs).
//! [`read_users`], [`ensure`] and [`remove`] are the blocking startup and
//! cleanup exchanges.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::nl::buf::NlBuf;
use crate::nl::consts::{NETLINK_NETFILTER, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::nl::nftables::{
    self as nft, concat_type, Batch, Item, Limit, MarkRule, RestoreRule, SetRef, SetSpec, Value,
    NFT_OBJECT_LIMIT, NFT_SET_MAP, NFT_SET_OBJECT, NFT_SET_TIMEOUT, NF_INET_POST_ROUTING,
    NF_INET_PRE_ROUTING, TYPE_INET_SERVICE, TYPE_IP6ADDR, TYPE_IPADDR, TYPE_MARK,
    USERDATA_CONCAT_TO_MARK, USERDATA_HOST_ENDIAN, USERDATA_OBJMAP_MARK,
};
use crate::nl::socket::NlSocket;

/// The table (family `inet`), apart from the ban table `inet refract`, so
/// that turning shaping off or cleaning up removes just this.
pub const TABLE: &str = "refract_shape";

pub use super::marks::{mark as user_mark, minor_of, MARK_TAG, MARK_TAG_MASK};

/// How long a peer element stays: long enough for the connection's next
/// packet after the log line (the mark then stays on its conntrack
/// entry), short enough that the map holds only recent connections.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// Bound of each peer map: more than a busy node's new connections in
/// [`PEER_TIMEOUT`] (an addition past it fails with `ENFILE`).
pub const PEERS_SIZE: u32 = 65_536;

/// Peer elements per NEWSETELEM message: a message's element list is one
/// attribute with a 16-bit length, and an IPv6 peer element (timeout,
/// 20-byte key, 4-byte data) takes 64 bytes.
pub const PEERS_PER_MSG: usize = 512;

/// Peers per batch ([`peers_batch`]): about 64 KiB of IPv6 elements, one
/// datagram well below the kernel's bound on it (`netlink_sendmsg()`:
/// the send buffer, about 208 KiB by default).
pub const PEERS_PER_BATCH: usize = 1024;

/// Users per batch in [`ensure`]: a user takes three messages' worth
/// (element, object, object map element), under 300 bytes, so a batch
/// stays far below the socket's send buffer.
pub const USERS_PER_BATCH: usize = 256;

pub const CHAIN_MARK: &str = "prerouting";
pub const CHAIN_OUT: &str = "postrouting";

/// `NF_IP_PRI_MANGLE`: after conntrack (`NF_IP_PRI_CONNTRACK`, -200), so
/// `ct mark` reads the entry of the packet's connection.
pub const PRIORITY: i32 = -150;

/// The sets with their ids in the creating batch (the ids `nft` gives
/// them in the same order, so later batches name them alike).
pub const PORTS: SetRef<'static> = SetRef {
    name: "ports",
    id: 1,
};
pub const PEERS4: SetRef<'static> = SetRef {
    name: "peers4",
    id: 2,
};
pub const PEERS6: SetRef<'static> = SetRef {
    name: "peers6",
    id: 3,
};
pub const USERS: SetRef<'static> = SetRef {
    name: "users",
    id: 4,
};
pub const UP: SetRef<'static> = SetRef { name: "up", id: 5 };

/// The protocols the rules cover: Xray inbounds take both.
const PROTOS: [u8; 2] = [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8];

/// Bound on every synchronous exchange here.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A capped user as the table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User<'a> {
    pub mark: u32,
    /// Kept as the element's comment, cut to 127 bytes (see
    /// [`Item::comment`]): [`read_users`] gives back what was kept.
    pub email: &'a str,
    /// The upload cap in bytes per second; `None`: not policed.
    pub up_bytes_per_s: Option<u64>,
}

/// One change to the users of a table that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserChange<'a> {
    /// A user new to the table (its mark not there yet).
    Add(User<'a>),
    /// A user's upload cap goes from `from` to `to` (what the table
    /// holds now and what it should).
    Rate {
        mark: u32,
        from: Option<u64>,
        to: Option<u64>,
    },
    /// A user leaves the table; `up` is the cap it holds now.
    Remove { mark: u32, up: Option<u64> },
}

/// The limit object's name for a mark: `up_` and the minor in hex.
pub fn up_name(mark: u32) -> String {
    format!("up_{:04x}", mark & !MARK_TAG_MASK)
}

/// The policer's burst, beyond the second of the rate the kernel's bucket
/// always holds. Measured with a TCP upload across a veth pair
/// (`tests/kernel/shape_nft.rs`, 4 s after 1 s of warm-up, then 3 s from
/// 2 s after a change to 10 Mbit/s): with 16 KiB, 4.93 to 5.29 Mbit/s for
/// a 5 Mbit/s cap and 9.40 to 10.48 for 10 over ten runs (one beside a
/// busy loop); a quarter, a half and a whole second of the rate gave
/// 4.69, 5.26 and 5.10 (9.99, 11.01 and 10.04): a larger burst only lets
/// more through at once.
pub const UP_BURST: u32 = 16 * 1024;

fn limit(bytes_per_s: u64) -> Limit {
    Limit {
        bytes_per_s: bytes_per_s.max(1),
        burst_bytes: UP_BURST,
        over: true,
    }
}

/// The key of a peer element: the address, the port (network order) and
/// 2 bytes of padding. An IPv4-mapped IPv6 address is the IPv4 client of
/// a dual-stack listener: its packets are IPv4.
pub fn peer_key(client: SocketAddr) -> (bool, Vec<u8>) {
    let ip = match client.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        a => a,
    };
    let mut key = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    key.extend_from_slice(&client.port().to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    (ip.is_ipv6(), key)
}

/// Writes the batch that makes the table fresh: `NEWTABLE` (so the delete
/// cannot fail on a missing table), `DELTABLE`, then everything anew with
/// `users` in it. Atomic: packets see the old table or the new one.
/// Peer elements are not kept (connections marked already keep their
/// marks); limit objects start with a full bucket.
pub fn table_batch(buf: &mut NlBuf, seq: u32, ports: &[u16], users: &[User<'_>]) {
    let mut b = Batch::begin(buf, seq);
    b.new_table(TABLE, false);
    b.del_table(TABLE, false);
    b.new_table(TABLE, false);
    // nft's order: table, chains, sets with their elements, rules.
    b.new_chain(TABLE, CHAIN_MARK, NF_INET_PRE_ROUTING, PRIORITY, false);
    b.new_chain(TABLE, CHAIN_OUT, NF_INET_POST_ROUTING, PRIORITY, false);
    sets(&mut b, ports);
    add_users(&mut b, users);
    rules(&mut b);
    b.end_acked();
}

fn sets(b: &mut Batch<'_>, ports: &[u16]) {
    b.new_set(
        TABLE,
        PORTS.name,
        TYPE_INET_SERVICE,
        2,
        0,
        0,
        PORTS.id,
        false,
    );
    b.port_elems(TABLE, PORTS, ports, false);
    for (set, addr_type, key_len) in [(PEERS4, TYPE_IPADDR, 8), (PEERS6, TYPE_IP6ADDR, 20)] {
        b.set(
            TABLE,
            &SetSpec {
                name: set.name,
                id: set.id,
                flags: NFT_SET_MAP | NFT_SET_TIMEOUT,
                key_type: concat_type(addr_type, TYPE_INET_SERVICE),
                key_len,
                data: Some((TYPE_MARK, 4)),
                obj_type: None,
                size: PEERS_SIZE,
                userdata: &USERDATA_CONCAT_TO_MARK,
            },
            false,
        );
    }
    b.set(
        TABLE,
        &SetSpec {
            name: USERS.name,
            id: USERS.id,
            flags: 0,
            key_type: TYPE_MARK,
            key_len: 4,
            data: None,
            obj_type: None,
            size: 0,
            userdata: &USERDATA_HOST_ENDIAN,
        },
        false,
    );
    b.set(
        TABLE,
        &SetSpec {
            name: UP.name,
            id: UP.id,
            flags: NFT_SET_OBJECT,
            key_type: TYPE_MARK,
            key_len: 4,
            data: None,
            obj_type: Some(NFT_OBJECT_LIMIT),
            size: 0,
            userdata: &USERDATA_OBJMAP_MARK,
        },
        false,
    );
}

fn rules(b: &mut Batch<'_>) {
    for (nfproto, peers) in [(NFPROTO_IPV4, PEERS4), (NFPROTO_IPV6, PEERS6)] {
        for l4proto in PROTOS {
            let r = MarkRule {
                table: TABLE,
                chain: CHAIN_MARK,
                nfproto,
                l4proto,
                ports_set: PORTS,
                peers,
            };
            b.mark_rule(&r, false);
        }
    }
    b.police_rule(TABLE, CHAIN_MARK, UP, false);
    for l4proto in PROTOS {
        let r = RestoreRule {
            table: TABLE,
            chain: CHAIN_OUT,
            l4proto,
            ports_set: PORTS,
            mask: MARK_TAG_MASK,
            tag: MARK_TAG,
        };
        b.restore_rule(&r, false);
    }
}

/// The `users` elements of `users` in one message, then each cap's
/// object, then the `up` elements in one message.
fn add_users(b: &mut Batch<'_>, users: &[User<'_>]) {
    if users.is_empty() {
        return;
    }
    let marks: Vec<[u8; 4]> = users.iter().map(|u| u.mark.to_ne_bytes()).collect();
    let items: Vec<Item<'_>> = users
        .iter()
        .zip(&marks)
        .map(|(u, m)| Item {
            comment: Some(u.email),
            ..Item::key(m)
        })
        .collect();
    b.items(TABLE, USERS, true, &items, false);
    let capped: Vec<(usize, u64)> = users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| Some((i, u.up_bytes_per_s?)))
        .collect();
    let names: Vec<String> = capped
        .iter()
        .map(|&(i, _)| up_name(users[i].mark))
        .collect();
    for (&(_, rate), name) in capped.iter().zip(&names) {
        b.new_limit(TABLE, name, &limit(rate), false);
    }
    let refs: Vec<Item<'_>> = capped
        .iter()
        .zip(&names)
        .map(|(&(i, _), name)| Item {
            value: Value::Object(name),
            ..Item::key(&marks[i])
        })
        .collect();
    if !refs.is_empty() {
        b.items(TABLE, UP, true, &refs, false);
    }
}

/// Deletes a mark's `up` element, then its object.
fn del_up(b: &mut Batch<'_>, mark: u32) {
    let key = mark.to_ne_bytes();
    b.items(TABLE, UP, false, &[Item::key(&key)], false);
    b.del_obj(TABLE, &up_name(mark), NFT_OBJECT_LIMIT, false);
}

/// A new object for a mark, then its `up` element.
fn add_up(b: &mut Batch<'_>, mark: u32, rate: u64) {
    let name = up_name(mark);
    b.new_limit(TABLE, &name, &limit(rate), false);
    let key = mark.to_ne_bytes();
    let item = Item {
        value: Value::Object(&name),
        ..Item::key(&key)
    };
    b.items(TABLE, UP, true, &[item], false);
}

/// Writes one batch applying `changes` in order (nothing when empty). It
/// fails whole if the table does not hold what a change says it holds
/// (`ENOENT` for a missing element or object, `EEXIST` for an `Add` of a
/// mark that is there with another object).
pub fn users_batch(buf: &mut NlBuf, seq: u32, changes: &[UserChange<'_>]) {
    if changes.is_empty() {
        return;
    }
    let mut b = Batch::begin(buf, seq);
    for c in changes {
        match *c {
            UserChange::Add(u) => add_users(&mut b, &[u]),
            UserChange::Rate { mark, from, to } => {
                if from == to {
                    continue;
                }
                if from.is_some() {
                    del_up(&mut b, mark);
                }
                if let Some(rate) = to {
                    add_up(&mut b, mark, rate);
                }
            }
            UserChange::Remove { mark, up } => {
                if up.is_some() {
                    del_up(&mut b, mark);
                }
                let key = mark.to_ne_bytes();
                b.items(TABLE, USERS, false, &[Item::key(&key)], false);
            }
        }
    }
    b.end_acked();
}

/// Writes one batch adding a peer element per `(client, mark)` of the
/// first [`PEERS_PER_BATCH`] of `peers`, each for [`PEER_TIMEOUT`],
/// packed [`PEERS_PER_MSG`] to a message per family; returns how many it
/// took (the rest go in the next batch; nothing is written for none).
/// An element already there with the same mark only has its timeout
/// renewed; with another mark the batch fails whole with `EEXIST`
/// (`nft_add_set_elem()`), and [`replace_peer_batch`] is the way to
/// give that peer its new mark.
pub fn peers_batch(buf: &mut NlBuf, seq: u32, peers: &[(SocketAddr, u32)]) -> usize {
    let peers = &peers[..peers.len().min(PEERS_PER_BATCH)];
    if peers.is_empty() {
        return 0;
    }
    let ms = PEER_TIMEOUT.as_millis() as u64;
    let keyed: Vec<(bool, Vec<u8>, [u8; 4])> = peers
        .iter()
        .map(|&(c, mark)| {
            let (v6, key) = peer_key(c);
            (v6, key, mark.to_ne_bytes())
        })
        .collect();
    let mut b = Batch::begin(buf, seq);
    for (v6, set) in [(false, PEERS4), (true, PEERS6)] {
        let items: Vec<Item<'_>> = keyed
            .iter()
            .filter(|(f, _, _)| *f == v6)
            .map(|(_, key, mark)| Item {
                timeout_ms: Some(ms),
                value: Value::Data(mark),
                ..Item::key(key)
            })
            .collect();
        for chunk in items.chunks(PEERS_PER_MSG) {
            b.items(TABLE, set, true, chunk, false);
        }
    }
    b.end_acked();
    peers.len()
}

/// Writes one batch that gives a peer another mark: its element is
/// deleted and added again (for the `EEXIST` of [`peers_batch`]; the
/// delete fails with `ENOENT` if the element expired meanwhile, and a
/// plain [`peers_batch`] then does).
pub fn replace_peer_batch(buf: &mut NlBuf, seq: u32, client: SocketAddr, mark: u32) {
    let (v6, key) = peer_key(client);
    let set = if v6 { PEERS6 } else { PEERS4 };
    let data = mark.to_ne_bytes();
    let item = Item {
        timeout_ms: Some(PEER_TIMEOUT.as_millis() as u64),
        value: Value::Data(&data),
        ..Item::key(&key)
    };
    let mut b = Batch::begin(buf, seq);
    b.items(TABLE, set, false, &[item], false);
    b.items(TABLE, set, true, &[item], true);
    b.end();
}

/// Writes the batch deleting the table (`ENOENT` when there is none).
pub fn delete_batch(buf: &mut NlBuf, seq: u32) {
    let mut b = Batch::begin(buf, seq);
    b.del_table(TABLE, true);
    b.end();
}

/// Writes the dump request of the `users` set.
pub fn dump_users(buf: &mut NlBuf, seq: u32) {
    nft::dump_elems(buf, seq, TABLE, USERS.name);
}

/// The users in one message of that dump: each of refract's marks with
/// the email in its comment (elements without one, or with another's
/// mark, are skipped).
pub fn parse_users(msg: &crate::nl::msg::Msg<'_>) -> Vec<(u32, String)> {
    nft::parse_elems(msg)
        .into_iter()
        .filter_map(|el| {
            let mark = u32::from_ne_bytes(el.key.as_slice().try_into().ok()?);
            minor_of(mark)?;
            let email = nft::udata_comment(&el.userdata)?;
            Some((mark, email.to_owned()))
        })
        .collect()
}

fn err(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::EPROTONOSUPPORT | libc::EOPNOTSUPP) => " (no nf_tables in this kernel)",
        Some(libc::ENOENT) => " (a kernel without nft_limit, nft_objref or nft_ct?)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("shape: nftables: {what}: {e}{hint}"))
}

/// A netlink socket for the exchanges below.
pub fn open() -> io::Result<NlSocket> {
    NlSocket::open(NETLINK_NETFILTER, 1 << 20).map_err(|e| err("netlink socket", e))
}

/// Sends one batch and waits for its answer (the kernel's errno as is).
fn send(sock: &mut NlSocket, f: impl FnOnce(&mut NlBuf, u32)) -> io::Result<()> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    f(&mut buf, seq);
    sock.request(&buf, TIMEOUT).map(drop)
}

/// The users the table names (mark, email); empty when there is no
/// table.
pub fn read_users(sock: &mut NlSocket) -> io::Result<Vec<(u32, String)>> {
    let mut buf = NlBuf::new();
    let seq = sock.next_seq();
    dump_users(&mut buf, seq);
    let msgs = match sock.request(&buf, TIMEOUT) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(err("list set users", e)),
    };
    Ok(msgs.iter().flat_map(|m| parse_users(&m.as_msg())).collect())
}

/// Whether the table exists.
pub fn exists(sock: &mut NlSocket) -> io::Result<bool> {
    crate::enforce::nftables::startup::has_table(sock, TABLE).map_err(|e| err("get table", e))
}

/// Makes the table fresh with `ports` and `users` (see [`table_batch`]):
/// the table and the first [`USERS_PER_BATCH`] users in one atomic
/// batch, the rest in batches of as many.
pub fn ensure(sock: &mut NlSocket, ports: &[u16], users: &[User<'_>]) -> io::Result<()> {
    let first = users.len().min(USERS_PER_BATCH);
    send(sock, |b, s| table_batch(b, s, ports, &users[..first]))
        .map_err(|e| err("create table", e))?;
    for chunk in users[first..].chunks(USERS_PER_BATCH) {
        let adds: Vec<UserChange<'_>> = chunk.iter().map(|&u| UserChange::Add(u)).collect();
        send(sock, |b, s| users_batch(b, s, &adds)).map_err(|e| err("add users", e))?;
    }
    Ok(())
}

/// Deletes the table; none there is no error.
pub fn remove(sock: &mut NlSocket) -> io::Result<()> {
    match send(sock, delete_batch) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map_err(|e| err("delete table", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::msg::{Messages, Reply};
    use crate::nl::nftables::tests::{assert_same, capture, ours};
    use crate::nl::nftables::{msg_type, NFT_MSG_DELTABLE, NFT_MSG_NEWOBJ, NFT_MSG_NEWRULE};
    use crate::nl::nftables::{NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE};

    const ALICE: u32 = user_mark(5);

    fn fixture(name: &str) -> Vec<(u16, Vec<u8>)> {
        let text = match name {
            "create" => include_str!("../../tests/fixtures/nftables/shape_create.mnl"),
            "peers4" => include_str!("../../tests/fixtures/nftables/shape_peers4.mnl"),
            "peers6" => include_str!("../../tests/fixtures/nftables/shape_peers6.mnl"),
            "user" => include_str!("../../tests/fixtures/nftables/shape_user.mnl"),
            "rate" => include_str!("../../tests/fixtures/nftables/shape_rate.mnl"),
            "deluser" => include_str!("../../tests/fixtures/nftables/shape_deluser.mnl"),
            _ => unreachable!(),
        };
        capture(text)
    }

    fn alice(up: Option<u64>) -> User<'static> {
        User {
            mark: ALICE,
            email: "alice@example.com",
            up_bytes_per_s: up,
        }
    }

    #[test]
    fn marks_carry_the_tag_and_the_minor() {
        assert_eq!(user_mark(5), 0x5246_0005);
        assert_eq!(minor_of(0x5246_0005), Some(5));
        assert_eq!(minor_of(0x5246_fffe), Some(0xfffe));
        for other in [0, 0x5246_0000, 0x5246_ffff, 0x5247_0005, 5] {
            assert_eq!(minor_of(other), None, "{other:#x}");
        }
        assert_eq!(up_name(ALICE), "up_0005");
        assert_eq!(up_name(user_mark(0xabc)), "up_0abc");
    }

    #[test]
    fn peer_keys_pad_the_port_to_four_bytes() {
        let (v6, k) = peer_key("10.0.0.1:40000".parse().unwrap());
        assert_eq!((v6, k), (false, vec![10, 0, 0, 1, 0x9c, 0x40, 0, 0]));
        // An IPv4 client of a dual-stack listener is an IPv4 key.
        let (v6, k) = peer_key("[::ffff:10.0.0.1]:40000".parse().unwrap());
        assert_eq!((v6, k), (false, vec![10, 0, 0, 1, 0x9c, 0x40, 0, 0]));
        let (v6, k) = peer_key("[2001:db8::7]:50000".parse().unwrap());
        assert!(v6);
        assert_eq!(k.len(), 20);
        assert_eq!(&k[16..], &[0xc3, 0x50, 0, 0]);
    }

    #[test]
    fn the_fresh_table_is_what_nft_sends_after_the_delete() {
        let mut buf = NlBuf::new();
        table_batch(&mut buf, 7, &[443, 8443], &[]);
        let mut ours = ours(&buf, 7);
        // NEWTABLE, DELTABLE, then what nft sends for the table file.
        assert_eq!(ours[1].0, msg_type(NFT_MSG_NEWTABLE));
        assert_eq!(ours[2].0, msg_type(NFT_MSG_DELTABLE as u8));
        ours.drain(1..3);
        assert_same(&ours, &fixture("create"));
    }

    #[test]
    fn a_fresh_table_with_users_puts_them_before_the_rules() {
        let bob = User {
            mark: user_mark(6),
            email: "bob@example.com",
            up_bytes_per_s: None,
        };
        let mut buf = NlBuf::new();
        table_batch(&mut buf, 7, &[443], &[alice(Some(625_000)), bob]);
        let types: Vec<u16> = ours(&buf, 7).iter().map(|m| m.0).collect();
        let elems = msg_type(NFT_MSG_NEWSETELEM);
        let (obj, rule) = (msg_type(NFT_MSG_NEWOBJ), msg_type(NFT_MSG_NEWRULE));
        let first_rule = types.iter().position(|&t| t == rule).unwrap();
        // ports, users, the one object, up; then 7 rules, END.
        let n_obj = types.iter().filter(|&&t| t == obj).count();
        assert_eq!(n_obj, 1);
        assert_eq!(types.iter().filter(|&&t| t == elems).count(), 3);
        assert!(types[..first_rule].contains(&obj));
        assert_eq!(types.len() - 1 - first_rule, 7);
    }

    #[test]
    fn peers_user_rate_and_removal_are_what_nft_sends() {
        let mut buf = NlBuf::new();
        peers_batch(
            &mut buf,
            1,
            &[
                ("10.0.0.1:40000".parse().unwrap(), ALICE),
                ("10.0.0.2:40001".parse().unwrap(), user_mark(6)),
            ],
        );
        assert_same(&ours(&buf, 1), &fixture("peers4"));

        buf.clear();
        peers_batch(
            &mut buf,
            1,
            &[("[2001:db8::7]:50000".parse().unwrap(), ALICE)],
        );
        assert_same(&ours(&buf, 1), &fixture("peers6"));

        buf.clear();
        users_batch(&mut buf, 1, &[UserChange::Add(alice(Some(625_000)))]);
        assert_same(&ours(&buf, 1), &fixture("user"));

        buf.clear();
        let rate = UserChange::Rate {
            mark: ALICE,
            from: Some(625_000),
            to: Some(1_250_000),
        };
        users_batch(&mut buf, 1, &[rate]);
        assert_same(&ours(&buf, 1), &fixture("rate"));

        buf.clear();
        let gone = UserChange::Remove {
            mark: ALICE,
            up: Some(1_250_000),
        };
        users_batch(&mut buf, 1, &[gone]);
        assert_same(&ours(&buf, 1), &fixture("deluser"));

        // Nothing to do writes nothing.
        buf.clear();
        users_batch(&mut buf, 1, &[]);
        assert_eq!(peers_batch(&mut buf, 1, &[]), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_replaced_peer_is_deleted_then_added_in_one_batch() {
        let mut buf = NlBuf::new();
        replace_peer_batch(&mut buf, 4, "[2001:db8::7]:50000".parse().unwrap(), ALICE);
        let got = ours(&buf, 4);
        let types: Vec<u16> = got.iter().map(|m| m.0).collect();
        let del = msg_type(crate::nl::nftables::NFT_MSG_DELSETELEM);
        assert_eq!(types[1..3], [del, msg_type(NFT_MSG_NEWSETELEM)]);
        // The addition is the one peers_batch writes.
        let mut one = NlBuf::new();
        peers_batch(
            &mut one,
            4,
            &[("[2001:db8::7]:50000".parse().unwrap(), ALICE)],
        );
        assert_eq!(got[2], ours(&one, 4)[1]);
    }

    #[test]
    fn many_peers_are_packed_per_message_and_family() {
        let peers: Vec<(SocketAddr, u32)> = (0..(PEERS_PER_MSG as u16 + 10))
            .map(|i| (SocketAddr::from(([10, 0, 0, 1], 1000 + i)), ALICE))
            .chain(std::iter::once(("[2001:db8::1]:7".parse().unwrap(), ALICE)))
            .collect();
        let mut buf = NlBuf::new();
        assert_eq!(peers_batch(&mut buf, 2, &peers), peers.len());
        let types: Vec<u16> = ours(&buf, 2).iter().map(|m| m.0).collect();
        let elems = msg_type(NFT_MSG_NEWSETELEM);
        assert_eq!(types.iter().filter(|&&t| t == elems).count(), 3);
        // At most PEERS_PER_BATCH in one batch, in a datagram far below
        // the kernel's bound.
        let many: Vec<(SocketAddr, u32)> = (0..3000u16)
            .map(|i| {
                (
                    SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 7)),
                    ALICE,
                )
            })
            .collect();
        buf.clear();
        assert_eq!(peers_batch(&mut buf, 2, &many), PEERS_PER_BATCH);
        assert!(buf.len() < 100 << 10, "{}", buf.len());
        assert_eq!(ours(&buf, 2).len(), 2 + PEERS_PER_BATCH / PEERS_PER_MSG);
    }

    #[test]
    fn the_users_dump_reads_back_refracts_marks_with_their_emails() {
        // What the kernel answers a GETSETELEM dump of `users` with.
        let mut buf = NlBuf::new();
        buf.message(msg_type(NFT_MSG_NEWSETELEM), 0x02, 3, |b| {
            b.put(&[crate::nl::consts::NFPROTO_INET, 0, 0, 0]);
            b.attr_str(nft::NFTA_SET_ELEM_LIST_TABLE, TABLE);
            b.attr_str(nft::NFTA_SET_ELEM_LIST_SET, "users");
            b.nested(nft::NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                let mut elem = |mark: u32, comment: Option<&str>| {
                    b.nested(nft::NFTA_LIST_ELEM, |b| {
                        b.nested(nft::NFTA_SET_ELEM_KEY, |b| {
                            b.attr(nft::NFTA_DATA_VALUE, &mark.to_ne_bytes())
                        });
                        if let Some(c) = comment {
                            b.attr(nft::NFTA_SET_ELEM_USERDATA, &nft::comment_udata(c));
                        }
                    });
                };
                elem(ALICE, Some("alice@example.com"));
                elem(user_mark(6), None); // no comment: whose is unknown
                elem(0x1234, Some("not ours"));
                elem(user_mark(7), Some("bob@example.com"));
            });
        });
        let Some(Ok(Reply::Data(m))) = Messages::new(buf.as_bytes()).next() else {
            panic!()
        };
        assert_eq!(
            parse_users(&m),
            vec![
                (ALICE, "alice@example.com".to_owned()),
                (user_mark(7), "bob@example.com".to_owned())
            ]
        );
    }
}
