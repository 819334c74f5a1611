//! nf_tables over nfnetlink: the messages the nftables backend sends (its
//! table, sets, chain and rules, set elements, all inside batches) and the
//! ones it reads (element dumps, ruleset change notifications); and those
//! of the shaper's table ([`crate::shape::nft`]): maps and object maps,
//! elements with data, objects and comments, limit objects, and its
//! conntrack-mark rules.
//!
//! Constants are from `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h` (installed under `/usr/include/linux/netfilter/`). Every
//! change to nf_tables must travel in a batch: `NFNL_MSG_BATCH_BEGIN`
//! (`res_id` `NFNL_SUBSYS_NFTABLES`), the messages, `NFNL_MSG_BATCH_END`;
//! the kernel runs one batch per datagram (`nfnetlink_rcv()` hands a
//! datagram that starts with BEGIN to `nfnetlink_rcv_batch()`, which stops
//! at END) and commits or aborts it as a whole. Errors of a batch are
//! queued and delivered after it, in message order, each with its
//! message's sequence number, followed by the acks of messages that asked
//! for one (`nfnl_err_add()`/`nfnl_err_deliver()`). So [`Batch`] gives
//! every message of a batch the request's sequence number and asks for an
//! ack only on the last one: the first answer carrying that number is the
//! first failing message's errno, or, if nothing failed, the ack.
//! Attribute values the kernel reads with `ntohl`/`be64_to_cpu` are
//! written in network order, as libnftnl does.
//!
//! Notifications ([`is_deletion`], [`deletes_table_objects`]): iptables-nft,
//! `nft` and every `iptables-restore` change the ruleset through nf_tables,
//! which announces each change to `NFNLGRP_NFTABLES`
//! (`nf_tables_table_notify()` and friends in
//! `net/netfilter/nf_tables_api.c`), with the port id of the socket that
//! asked for it.

use crate::nl::buf::NlBuf;
use crate::nl::consts::{
    nfnl_msg_type, NFNETLINK_V0, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFPROTO_UNSPEC, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::nl::msg::{Attrs, Msg};

// ---- /usr/include/linux/netfilter/nfnetlink.h ----

/// `NFNL_MSG_BATCH_BEGIN` (`NLMSG_MIN_TYPE`, 0x10) and `NFNL_MSG_BATCH_END`.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

// ---- /usr/include/linux/netlink.h ----

/// NEW requests: append (a rule goes at the end of its chain).
pub const NLM_F_APPEND: u16 = 0x800;

// ---- /usr/include/linux/netfilter/nf_tables.h ----

// enum nf_tables_msg_types
pub const NFT_MSG_NEWTABLE: u8 = 0;
pub const NFT_MSG_GETTABLE: u8 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u8 = 3;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u8 = 6;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u8 = 9;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWSETELEM: u8 = 12;
pub const NFT_MSG_GETSETELEM: u8 = 13;
pub const NFT_MSG_DELSETELEM: u8 = 14;
pub const NFT_MSG_NEWOBJ: u8 = 18;
pub const NFT_MSG_DELOBJ: u8 = 20;

/// `enum nft_list_attributes`.
pub const NFTA_LIST_ELEM: u16 = 1;

// enum nft_table_attributes
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_FLAGS: u16 = 2;

// enum nft_chain_attributes, enum nft_hook_attributes
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;

// enum nft_rule_attributes
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;

// enum nft_set_attributes, enum nft_set_flags, enum nft_set_desc_attributes
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_DATA_TYPE: u16 = 6;
pub const NFTA_SET_DATA_LEN: u16 = 7;
pub const NFTA_SET_DESC: u16 = 9;
/// Required by `nf_tables_newset()` (the set's id within its batch).
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_USERDATA: u16 = 13;
/// The object type of a set with `NFT_SET_OBJECT` (`NFT_OBJECT_*`).
pub const NFTA_SET_OBJ_TYPE: u16 = 15;
pub const NFTA_SET_DESC_SIZE: u16 = 1;
/// A map: each element carries data (`NFTA_SET_ELEM_DATA`).
pub const NFT_SET_MAP: u32 = 0x8;
pub const NFT_SET_TIMEOUT: u32 = 0x10;
/// An object map: each element names a stateful object
/// (`NFTA_SET_ELEM_OBJREF`).
pub const NFT_SET_OBJECT: u32 = 0x40;

// enum nft_set_elem_list_attributes, enum nft_set_elem_attributes
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_DATA: u16 = 2;
pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
pub const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub const NFTA_SET_ELEM_OBJREF: u16 = 9;

// enum nft_object_attributes, NFT_OBJECT_* (nf_tables.h)
pub const NFTA_OBJ_TABLE: u16 = 1;
pub const NFTA_OBJ_NAME: u16 = 2;
pub const NFTA_OBJ_TYPE: u16 = 3;
pub const NFTA_OBJ_DATA: u16 = 4;
pub const NFT_OBJECT_LIMIT: u32 = 4;

// enum nft_limit_attributes, enum nft_limit_type, enum nft_limit_flags
pub const NFTA_LIMIT_RATE: u16 = 1;
pub const NFTA_LIMIT_UNIT: u16 = 2;
pub const NFTA_LIMIT_BURST: u16 = 3;
pub const NFTA_LIMIT_TYPE: u16 = 4;
pub const NFTA_LIMIT_FLAGS: u16 = 5;
pub const NFT_LIMIT_PKT_BYTES: u32 = 1;
/// `limit rate over`: the expression (or object) matches past the rate.
pub const NFT_LIMIT_F_INV: u32 = 1;

// enum nft_data_attributes, enum nft_verdict_attributes
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;

// enum nft_expr_attributes
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;

// enum nft_meta_attributes, enum nft_meta_keys
pub const NFTA_META_DREG: u16 = 1;
pub const NFTA_META_KEY: u16 = 2;
pub const NFTA_META_SREG: u16 = 3;
/// The packet mark (`skb->mark`).
pub const NFT_META_MARK: u32 = 3;
pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;

// enum nft_cmp_attributes, enum nft_cmp_ops
pub const NFTA_CMP_SREG: u16 = 1;
pub const NFTA_CMP_OP: u16 = 2;
pub const NFTA_CMP_DATA: u16 = 3;
pub const NFT_CMP_EQ: u32 = 0;

// enum nft_payload_attributes, enum nft_payload_bases
pub const NFTA_PAYLOAD_DREG: u16 = 1;
pub const NFTA_PAYLOAD_BASE: u16 = 2;
pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub const NFTA_PAYLOAD_LEN: u16 = 4;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

// enum nft_bitwise_attributes
pub const NFTA_BITWISE_SREG: u16 = 1;
pub const NFTA_BITWISE_DREG: u16 = 2;
pub const NFTA_BITWISE_LEN: u16 = 3;
pub const NFTA_BITWISE_MASK: u16 = 4;
pub const NFTA_BITWISE_XOR: u16 = 5;
pub const NFTA_BITWISE_OP: u16 = 6;
/// `enum nft_bitwise_ops`: mask-and-xor.
pub const NFT_BITWISE_BOOL: u32 = 0;

// enum nft_lookup_attributes
pub const NFTA_LOOKUP_SET: u16 = 1;
pub const NFTA_LOOKUP_SREG: u16 = 2;
/// A map lookup: the element's data goes to this register.
pub const NFTA_LOOKUP_DREG: u16 = 3;
pub const NFTA_LOOKUP_SET_ID: u16 = 4;

// enum nft_ct_attributes, enum nft_ct_keys
pub const NFTA_CT_DREG: u16 = 1;
pub const NFTA_CT_KEY: u16 = 2;
pub const NFTA_CT_SREG: u16 = 4;
/// `ct direction`: `IP_CT_DIR_ORIGINAL` (0) or `IP_CT_DIR_REPLY` (1), one byte.
pub const NFT_CT_DIRECTION: u32 = 1;
/// `ct mark`: the conntrack entry's mark, a host-order `u32`.
pub const NFT_CT_MARK: u32 = 3;
/// `enum ip_conntrack_dir` (`linux/netfilter/nf_conntrack_tuple_common.h`).
pub const IP_CT_DIR_ORIGINAL: u8 = 0;
pub const IP_CT_DIR_REPLY: u8 = 1;

// enum nft_objref_attributes: the object named by a map lookup.
pub const NFTA_OBJREF_SET_SREG: u16 = 3;
pub const NFTA_OBJREF_SET_NAME: u16 = 4;
pub const NFTA_OBJREF_SET_ID: u16 = 5;

// enum nft_immediate_attributes
pub const NFTA_IMMEDIATE_DREG: u16 = 1;
pub const NFTA_IMMEDIATE_DATA: u16 = 2;

/// `enum nft_registers`: the verdict register, the first two 128-bit
/// ones, and the second 32-bit one (bytes 4..8 of `NFT_REG_1`; a
/// concatenation puts each field in its own 4-byte-aligned slot, so the
/// port after an IPv4 address goes to `NFT_REG32_01` and the one after an
/// IPv6 address to `NFT_REG_2`, as `nft` writes them).
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG_2: u32 = 2;
pub const NFT_REG32_01: u32 = 9;

/// `NF_DROP`, `NF_ACCEPT` (`/usr/include/linux/netfilter.h`).
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
/// `enum nf_inet_hooks` (netfilter.h).
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_POST_ROUTING: u32 = 4;

// ---- nft's own data types (nftables `include/datatype.h`, `enum
// datatypes`): stored in NFTA_SET_KEY_TYPE so `nft list` prints the keys as
// addresses and ports; the kernel only keeps them. ----

pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_INET_SERVICE: u32 = 13;
/// `mark` (a host-order `u32`: packet and conntrack marks).
pub const TYPE_MARK: u32 = 19;

/// nft's type of a concatenation `a . b` (`concat_subtype_add()`,
/// `TYPE_BITS` = 6): `ipv4_addr . inet_service` is 461, so `nft list`
/// prints the key as the two types.
pub const fn concat_type(a: u32, b: u32) -> u32 {
    (a << 6) | b
}

/// nft's set user data saying the key is big-endian
/// (`NFTNL_UDATA_SET_KEYBYTEORDER` = 0, length 4, `BYTEORDER_BIG_ENDIAN`
/// = 2 in host order), copied from what `nft` sends.
pub const USERDATA_BIG_ENDIAN: [u8; 6] = {
    let v = 2u32.to_ne_bytes();
    [0, 4, v[0], v[1], v[2], v[3]]
};

/// nft's set user data for a key of host byte order (`mark`):
/// `NFTNL_UDATA_SET_KEYBYTEORDER` = `BYTEORDER_HOST_ENDIAN` (1).
pub const USERDATA_HOST_ENDIAN: [u8; 6] = {
    let v = 1u32.to_ne_bytes();
    [0, 4, v[0], v[1], v[2], v[3]]
};

/// nft 1.0.6's set user data for a `mark : limit` object map: the key in
/// host order, then `NFTNL_UDATA_SET_DATA_INTERVAL` (6) = 0. Copied from
/// what `nft` sends.
pub const USERDATA_OBJMAP_MARK: [u8; 12] = {
    let v = 1u32.to_ne_bytes();
    [0, 4, v[0], v[1], v[2], v[3], 6, 4, 0, 0, 0, 0]
};

/// nft 1.0.6's set user data for a concatenation map `… : mark`, copied
/// from what `nft` sends: key byte order 0 (a concatenation has none),
/// data byte order host (`NFTNL_UDATA_SET_DATABYTEORDER` = 1), the key's
/// `NFTNL_UDATA_SET_KEY_TYPEOF` (3) record of a concatenation, and
/// `NFTNL_UDATA_SET_DATA_INTERVAL` = 0. Only nft reads it (to print).
pub const USERDATA_CONCAT_TO_MARK: [u8; 28] = {
    let h = 1u32.to_ne_bytes();
    let c = 13u32.to_ne_bytes();
    [
        0, 4, 0, 0, 0, 0, // key byte order: none
        1, 4, h[0], h[1], h[2], h[3], // data byte order: host
        3, 8, 0, 4, c[0], c[1], c[2], c[3], 1, 0, // key typeof: concat
        6, 4, 0, 0, 0, 0, // data interval: no
    ]
};

/// The element user data nft writes for `comment "…"`
/// (`NFTNL_UDATA_SET_ELEM_COMMENT` = 0, the string with its NUL); nft
/// refuses longer comments on input (`NFTNL_UDATA_COMMENT_MAXLEN`), so a
/// listed ruleset stays loadable only below it.
pub const UDATA_SET_ELEM_COMMENT: u8 = 0;
pub const COMMENT_MAXLEN: usize = 128;

/// The nfnetlink type of an nf_tables command.
pub const fn msg_type(cmd: u8) -> u16 {
    nfnl_msg_type(NFNL_SUBSYS_NFTABLES, cmd)
}

/// `struct nfgenmsg` for nf_tables objects of `family` (`res_id` 0).
fn nfgen(b: &mut NlBuf, family: u8) {
    b.put(&[family, NFNETLINK_V0, 0, 0]);
}

/// A named set as a batch refers to it: by name (found first, also when
/// created earlier in the same batch) and by its batch id (`NFTA_*_SET_ID`,
/// what `nft` sends too; the kernel uses it only when the name is unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetRef<'a> {
    pub name: &'a str,
    pub id: u32,
}

/// A set element: its key bytes (network order) and its timeout in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elem<'a> {
    pub key: &'a [u8],
    pub timeout_ms: Option<u64>,
}

/// The shape of a set, map or object map ([`Batch::set`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetSpec<'a> {
    pub name: &'a str,
    /// Its id within the creating batch.
    pub id: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft's data type of the key (`TYPE_*`, [`concat_type`]).
    pub key_type: u32,
    /// Key bytes; a concatenation's fields each take a multiple of 4.
    pub key_len: u32,
    /// A map's data: nft's type and the length in bytes.
    pub data: Option<(u32, u32)>,
    /// An object map's object type (`NFT_OBJECT_*`).
    pub obj_type: Option<u32>,
    /// Element bound; 0: none.
    pub size: u32,
    /// nft's user data (how `nft list` prints the set).
    pub userdata: &'a [u8],
}

/// What an [`Item`] carries beside its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    None,
    /// A map's data (`NFTA_SET_ELEM_DATA`), as the rule's register holds it.
    Data(&'a [u8]),
    /// An object map's object, by name (`NFTA_SET_ELEM_OBJREF`).
    Object(&'a str),
}

/// An element of a map, an object map or a set with comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub key: &'a [u8],
    pub timeout_ms: Option<u64>,
    pub value: Value<'a>,
    /// Kept in the element's user data as nft keeps `comment "…"`; cut
    /// to [`COMMENT_MAXLEN`] - 1 bytes (at a character boundary).
    pub comment: Option<&'a str>,
}

impl<'a> Item<'a> {
    /// An element by its key alone (a set's element, or any deletion).
    pub fn key(key: &'a [u8]) -> Item<'a> {
        Item {
            key,
            timeout_ms: None,
            value: Value::None,
            comment: None,
        }
    }
}

/// A byte-rate limit object ([`Batch::new_limit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes_per_s: u64,
    /// Bytes allowed beyond the rate. The kernel's bucket holds one
    /// second of the rate plus this (`nft_limit_init()`: `tokens_max =
    /// unit * (rate + burst) / rate`).
    pub burst_bytes: u32,
    /// `rate over`: the object matches the packets past the rate.
    pub over: bool,
}

/// `comment` as element user data: one TLV, type
/// [`UDATA_SET_ELEM_COMMENT`], the string with its NUL.
pub fn comment_udata(comment: &str) -> Vec<u8> {
    let mut end = comment.len().min(COMMENT_MAXLEN - 1);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    let c = &comment.as_bytes()[..end];
    let mut v = Vec::with_capacity(c.len() + 3);
    v.push(UDATA_SET_ELEM_COMMENT);
    v.push(c.len() as u8 + 1);
    v.extend_from_slice(c);
    v.push(0);
    v
}

/// The comment in element user data (nft's TLVs: type, length, value),
/// without its NUL; `None` without one or when malformed.
pub fn udata_comment(udata: &[u8]) -> Option<&str> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if ty == UDATA_SET_ELEM_COMMENT {
            let s = value.strip_suffix(&[0])?;
            return std::str::from_utf8(s).ok();
        }
        rest = &rest[2 + len..];
    }
    None
}

/// How [`Rule`] matches the source address: the set, and (IPv6) the mask
/// applied before the lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<'a> {
    pub table: &'a str,
    pub chain: &'a str,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub l4proto: u8,
    /// The set of destination ports (`th dport @ports`).
    pub ports_set: SetRef<'a>,
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
    pub nfproto: u8,
    /// IPv6: the prefix mask (`ip6 saddr & mask`); `None` for IPv4.
    pub v6_mask: Option<[u8; 16]>,
    pub addr_set: SetRef<'a>,
}

/// The conntrack marking rule ([`Batch::mark_rule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkRule<'a> {
    pub table: &'a str,
    pub chain: &'a str,
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`: the key is `ip saddr . th sport`
    /// or `ip6 saddr . th sport`.
    pub nfproto: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub l4proto: u8,
    /// The set of destination ports (`th dport @ports`).
    pub ports_set: SetRef<'a>,
    /// The map from the client's address and port to the mark.
    pub peers: SetRef<'a>,
}

/// The rule that copies a conntrack mark to the packet mark
/// ([`Batch::restore_rule`]) on replies from the ports in `ports_set`
/// whose conntrack mark has `tag` under `mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreRule<'a> {
    pub table: &'a str,
    pub chain: &'a str,
    pub l4proto: u8,
    pub ports_set: SetRef<'a>,
    pub mask: u32,
    pub tag: u32,
}

/// One batch: [`Batch::begin`], the messages, [`Batch::end`]. Every
/// message carries `seq`; only the ones written with `ack` ask for an
/// ack (the module docs say why only the last should).
#[derive(Debug)]
pub struct Batch<'a> {
    pub buf: &'a mut NlBuf,
    pub seq: u32,
    /// Where the last message written starts.
    last: usize,
}

impl<'a> Batch<'a> {
    /// Writes `NFNL_MSG_BATCH_BEGIN` (`res_id` = `NFNL_SUBSYS_NFTABLES`
    /// in network order, as `nfnetlink_rcv_skb_batch()` reads it).
    pub fn begin(buf: &'a mut NlBuf, seq: u32) -> Batch<'a> {
        buf.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, |b| {
            let r = NFNL_SUBSYS_NFTABLES.to_be_bytes();
            b.put(&[NFPROTO_UNSPEC, NFNETLINK_V0, r[0], r[1]]);
        });
        let last = buf.len();
        Batch { buf, seq, last }
    }

    /// Writes one message of the batch, remembering where it starts.
    fn msg(&mut self, ty: u16, flags: u16, body: impl FnOnce(&mut NlBuf)) {
        self.last = self.buf.len();
        self.buf.message(ty, flags, self.seq, body);
    }

    /// Like [`Batch::end`], after asking for an ack on the last message
    /// written (for builders that learn which one is last only at the
    /// end; the messages were written with `ack` false).
    pub fn end_acked(self) {
        self.buf.add_flags_at(self.last, NLM_F_ACK);
        self.end();
    }

    pub fn end(self) {
        self.buf
            .message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.seq, |b| {
                let r = NFNL_SUBSYS_NFTABLES.to_be_bytes();
                b.put(&[NFPROTO_UNSPEC, NFNETLINK_V0, r[0], r[1]]);
            });
    }

    fn flags(ack: bool, extra: u16) -> u16 {
        NLM_F_REQUEST | extra | if ack { NLM_F_ACK } else { 0 }
    }

    /// `NFT_MSG_NEWTABLE`, creating it if missing (no `NLM_F_EXCL`: an
    /// existing table is kept).
    pub fn new_table(&mut self, table: &str, ack: bool) {
        let f = Self::flags(ack, NLM_F_CREATE);
        self.msg(msg_type(NFT_MSG_NEWTABLE), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_TABLE_NAME, table);
            b.attr_u32_be(NFTA_TABLE_FLAGS, 0);
        });
    }

    /// `NFT_MSG_DELTABLE`: the table and everything in it.
    pub fn del_table(&mut self, table: &str, ack: bool) {
        let f = Self::flags(ack, 0);
        self.msg(msg_type(NFT_MSG_DELTABLE as u8), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_TABLE_NAME, table);
        });
    }

    /// `NFT_MSG_NEWSET`: a named set of `key_len`-byte keys; an existing
    /// set of the same shape is kept (`nf_tables_newset()` without
    /// `NLM_F_EXCL`). `size` 0: no bound.
    #[allow(clippy::too_many_arguments)]
    pub fn new_set(
        &mut self,
        table: &str,
        set: &str,
        key_type: u32,
        key_len: u32,
        flags: u32,
        size: u32,
        id: u32,
        ack: bool,
    ) {
        let spec = SetSpec {
            name: set,
            id,
            flags,
            key_type,
            key_len,
            data: None,
            obj_type: None,
            size,
            userdata: &USERDATA_BIG_ENDIAN,
        };
        self.set(table, &spec, ack);
    }

    /// `NFT_MSG_NEWSET` of any shape (sets, maps, object maps), with
    /// the attributes in nft's order; kept if it exists with that shape.
    pub fn set(&mut self, table: &str, s: &SetSpec<'_>, ack: bool) {
        let f = Self::flags(ack, NLM_F_CREATE);
        self.msg(msg_type(NFT_MSG_NEWSET), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_SET_TABLE, table);
            b.attr_str(NFTA_SET_NAME, s.name);
            b.attr_u32_be(NFTA_SET_FLAGS, s.flags);
            b.attr_u32_be(NFTA_SET_KEY_TYPE, s.key_type);
            b.attr_u32_be(NFTA_SET_KEY_LEN, s.key_len);
            if let Some((ty, len)) = s.data {
                b.attr_u32_be(NFTA_SET_DATA_TYPE, ty);
                b.attr_u32_be(NFTA_SET_DATA_LEN, len);
            }
            if let Some(ty) = s.obj_type {
                b.attr_u32_be(NFTA_SET_OBJ_TYPE, ty);
            }
            b.attr_u32_be(NFTA_SET_ID, s.id);
            if s.size > 0 {
                b.nested(NFTA_SET_DESC, |b| b.attr_u32_be(NFTA_SET_DESC_SIZE, s.size));
            }
            b.attr(NFTA_SET_USERDATA, s.userdata);
        });
    }

    /// `NFT_MSG_NEWSETELEM` (`add = true`) or `NFT_MSG_DELSETELEM` of
    /// `elems`, all in one message; with no element, a DELSETELEM flushes
    /// the set (`nf_tables_delsetelem()`: no `NFTA_SET_ELEM_LIST_ELEMENTS`
    /// → `nft_set_flush()`). A NEWSETELEM without `NLM_F_EXCL` accepts an
    /// element that is already there.
    pub fn elems(
        &mut self,
        table: &str,
        set: SetRef<'_>,
        add: bool,
        elems: &[Elem<'_>],
        ack: bool,
    ) {
        self.elem_list(table, set, add, elems, ack, |b, e| {
            if let Some(ms) = e.timeout_ms {
                b.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
            }
            b.nested(NFTA_SET_ELEM_KEY, |b| b.attr(NFTA_DATA_VALUE, e.key));
        });
    }

    /// The NEWSETELEM of a port set (`inet_service` keys in network
    /// order); nothing for no port (an empty NEWSETELEM is refused).
    pub fn port_elems(&mut self, table: &str, set: SetRef<'_>, ports: &[u16], ack: bool) {
        let keys: Vec<[u8; 2]> = ports.iter().map(|p| p.to_be_bytes()).collect();
        let elems: Vec<Elem<'_>> = keys
            .iter()
            .map(|k| Elem {
                key: k,
                timeout_ms: None,
            })
            .collect();
        if !elems.is_empty() {
            self.elems(table, set, true, &elems, ack);
        }
    }

    /// Like [`Batch::elems`], for elements of maps and object maps and
    /// elements with a comment ([`Item`]). A deletion names only the
    /// keys, as nft writes it.
    ///
    /// An addition whose key is already there is accepted only when it
    /// carries the same data or object (`nft_add_set_elem()`: otherwise
    /// `EEXIST`, and the whole batch is refused); its comment is not
    /// compared and the old one stays.
    pub fn items(
        &mut self,
        table: &str,
        set: SetRef<'_>,
        add: bool,
        items: &[Item<'_>],
        ack: bool,
    ) {
        self.elem_list(table, set, add, items, ack, |b, e| {
            if !add {
                b.nested(NFTA_SET_ELEM_KEY, |b| b.attr(NFTA_DATA_VALUE, e.key));
                return;
            }
            if let Some(ms) = e.timeout_ms {
                b.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
            }
            b.nested(NFTA_SET_ELEM_KEY, |b| b.attr(NFTA_DATA_VALUE, e.key));
            match e.value {
                Value::None => {}
                Value::Data(d) => b.nested(NFTA_SET_ELEM_DATA, |b| b.attr(NFTA_DATA_VALUE, d)),
                Value::Object(name) => b.attr_str(NFTA_SET_ELEM_OBJREF, name),
            }
            if let Some(c) = e.comment {
                b.attr(NFTA_SET_ELEM_USERDATA, &comment_udata(c));
            }
        });
    }

    fn elem_list<T>(
        &mut self,
        table: &str,
        set: SetRef<'_>,
        add: bool,
        list: &[T],
        ack: bool,
        one: impl Fn(&mut NlBuf, &T),
    ) {
        let (cmd, f) = if add {
            (NFT_MSG_NEWSETELEM, Self::flags(ack, NLM_F_CREATE))
        } else {
            (NFT_MSG_DELSETELEM, Self::flags(ack, 0))
        };
        self.msg(msg_type(cmd), f, |b| {
            nfgen(b, NFPROTO_INET);
            if list.is_empty() {
                // A flush names the set first, as nft writes it (the
                // kernel reads attributes in any order).
                b.attr_str(NFTA_SET_ELEM_LIST_SET, set.name);
                b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
                return;
            }
            b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            b.attr_str(NFTA_SET_ELEM_LIST_SET, set.name);
            // nft names the set's batch id on additions only.
            if add {
                b.attr_u32_be(NFTA_SET_ELEM_LIST_SET_ID, set.id);
            }
            b.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                // Numbered from 1 as libnftnl does; the kernel reads any
                // type here (`nla_for_each_nested()`).
                for (i, e) in list.iter().enumerate() {
                    b.nested(i as u16 + 1, |b| one(b, e));
                }
            });
        });
    }

    /// `NFT_MSG_NEWOBJ` of a limit object (`NFT_OBJECT_LIMIT`, counting
    /// bytes, per second). An object of that name that is already there
    /// is kept as it is: `nf_tables_newobj()` updates an existing object
    /// only through `obj->ops->update`, and the limit objects have none
    /// (`nft_limit_obj_bytes_ops` in `net/netfilter/nft_limit.c`), so it
    /// returns 0 and changes nothing. A new rate takes a delete and a new
    /// object in one batch.
    pub fn new_limit(&mut self, table: &str, name: &str, l: &Limit, ack: bool) {
        let f = Self::flags(ack, NLM_F_CREATE);
        self.msg(msg_type(NFT_MSG_NEWOBJ), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_OBJ_TABLE, table);
            b.attr_str(NFTA_OBJ_NAME, name);
            b.attr_u32_be(NFTA_OBJ_TYPE, NFT_OBJECT_LIMIT);
            b.nested(NFTA_OBJ_DATA, |b| {
                b.attr(NFTA_LIMIT_RATE, &l.bytes_per_s.to_be_bytes());
                b.attr(NFTA_LIMIT_UNIT, &1u64.to_be_bytes());
                b.attr_u32_be(NFTA_LIMIT_BURST, l.burst_bytes);
                b.attr_u32_be(NFTA_LIMIT_TYPE, NFT_LIMIT_PKT_BYTES);
                b.attr_u32_be(NFTA_LIMIT_FLAGS, if l.over { NFT_LIMIT_F_INV } else { 0 });
            });
        });
    }

    /// `NFT_MSG_DELOBJ` by name (`ENOENT` if missing; `EBUSY` while a
    /// rule or an element refers to it, so an object map's element goes
    /// first, in the same batch).
    pub fn del_obj(&mut self, table: &str, name: &str, obj_type: u32, ack: bool) {
        let f = Self::flags(ack, 0);
        self.msg(msg_type(NFT_MSG_DELOBJ), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_OBJ_TABLE, table);
            b.attr_str(NFTA_OBJ_NAME, name);
            b.attr_u32_be(NFTA_OBJ_TYPE, obj_type);
            // nft sends an empty data attribute; the kernel ignores it.
            b.nested(NFTA_OBJ_DATA, |_| {});
        });
    }

    /// `NFT_MSG_NEWCHAIN`: a base chain of type `filter` on `hook` at
    /// `priority` (policy accept, the default); kept if it exists.
    pub fn new_chain(&mut self, table: &str, chain: &str, hook: u32, priority: i32, ack: bool) {
        let f = Self::flags(ack, NLM_F_CREATE);
        self.msg(msg_type(NFT_MSG_NEWCHAIN), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_CHAIN_TABLE, table);
            b.attr_str(NFTA_CHAIN_NAME, chain);
            b.attr_str(NFTA_CHAIN_TYPE, "filter");
            b.attr_u32_be(NFTA_CHAIN_POLICY, NF_ACCEPT);
            b.nested(NFTA_CHAIN_HOOK, |b| {
                b.attr_u32_be(NFTA_HOOK_HOOKNUM, hook);
                b.attr(NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
            });
        });
    }

    /// `NFT_MSG_DELRULE` without a handle: every rule of the chain
    /// (`nf_tables_delrule()` → `nft_delrule_by_chain()`).
    pub fn flush_chain(&mut self, table: &str, chain: &str, ack: bool) {
        let f = Self::flags(ack, 0);
        self.msg(msg_type(NFT_MSG_DELRULE as u8), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_RULE_TABLE, table);
            b.attr_str(NFTA_RULE_CHAIN, chain);
        });
    }

    /// `NFT_MSG_NEWRULE`, appended:
    /// `meta l4proto P th dport @ports meta nfproto F <saddr> [& mask] @set drop`,
    /// the expressions `nft --debug=netlink` shows for it (tests compare).
    pub fn new_rule(&mut self, r: &Rule<'_>, ack: bool) {
        self.rule(r.table, r.chain, ack, |b| {
            l4proto_port_in(b, r.l4proto, 2, r.ports_set);
            expr_meta(b, NFT_META_NFPROTO);
            expr_cmp(b, &[r.nfproto]);
            match r.v6_mask {
                // ip6 saddr: 16 bytes at offset 8 of the IPv6 header.
                Some(mask) => {
                    expr_payload(b, NFT_PAYLOAD_NETWORK_HEADER, 8, 16);
                    expr_bitwise(b, &mask);
                }
                // ip saddr: 4 bytes at offset 12 of the IPv4 header.
                None => expr_payload(b, NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
            }
            expr_lookup(b, r.addr_set);
            expr_drop(b);
        });
    }

    /// `NFT_MSG_NEWRULE`, appended, with the expressions `exprs` writes.
    fn rule(&mut self, table: &str, chain: &str, ack: bool, exprs: impl FnOnce(&mut NlBuf)) {
        let f = Self::flags(ack, NLM_F_CREATE | NLM_F_APPEND);
        self.msg(msg_type(NFT_MSG_NEWRULE), f, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_RULE_TABLE, table);
            b.attr_str(NFTA_RULE_CHAIN, chain);
            b.nested(NFTA_RULE_EXPRESSIONS, exprs);
        });
    }

    /// The conntrack marking rule ([`MarkRule`]):
    /// `meta nfproto F meta l4proto P th dport @ports ct direction original
    /// ct mark 0 ct mark set <saddr> . th sport map @peers`. A key missing
    /// from the map ends the rule (`nft_lookup_eval()`: `NFT_BREAK`), so
    /// unknown connections keep mark 0 and are looked up again on their
    /// next packet; a marked one is not looked up again.
    pub fn mark_rule(&mut self, r: &MarkRule<'_>, ack: bool) {
        self.rule(r.table, r.chain, ack, |b| {
            expr_meta(b, NFT_META_NFPROTO);
            expr_cmp(b, &[r.nfproto]);
            l4proto_port_in(b, r.l4proto, 2, r.ports_set);
            expr_ct_load(b, NFT_CT_DIRECTION);
            expr_cmp(b, &[IP_CT_DIR_ORIGINAL]);
            expr_ct_load(b, NFT_CT_MARK);
            expr_cmp(b, &0u32.to_ne_bytes());
            // The key `saddr . th sport`: the address from reg 1 on, the
            // port in the next 4-byte slot (see NFT_REG32_01).
            if r.nfproto == crate::nl::consts::NFPROTO_IPV6 {
                expr_payload_to(b, NFT_PAYLOAD_NETWORK_HEADER, 8, 16, NFT_REG_1);
                expr_payload_to(b, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG_2);
            } else {
                expr_payload_to(b, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG_1);
                expr_payload_to(b, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG32_01);
            }
            expr(b, "lookup", |b| {
                b.attr_u32_be(NFTA_LOOKUP_SREG, NFT_REG_1);
                b.attr_u32_be(NFTA_LOOKUP_DREG, NFT_REG_1);
                b.attr_str(NFTA_LOOKUP_SET, r.peers.name);
                b.attr_u32_be(NFTA_LOOKUP_SET_ID, r.peers.id);
            });
            expr(b, "ct", |b| {
                b.attr_u32_be(NFTA_CT_KEY, NFT_CT_MARK);
                b.attr_u32_be(NFTA_CT_SREG, NFT_REG_1);
            });
        });
    }

    /// The policing rule:
    /// `ct direction original limit name ct mark map @objects drop`. The
    /// object map lookup (`nft_objref_map_eval()`) ends the rule on a
    /// missing key (no limit for that mark); a found limit object ends it
    /// while under its rate (a `rate over` object matches only past it),
    /// so only the packets past the rate reach the drop.
    pub fn police_rule(&mut self, table: &str, chain: &str, objects: SetRef<'_>, ack: bool) {
        self.rule(table, chain, ack, |b| {
            expr_ct_load(b, NFT_CT_DIRECTION);
            expr_cmp(b, &[IP_CT_DIR_ORIGINAL]);
            expr_ct_load(b, NFT_CT_MARK);
            expr(b, "objref", |b| {
                b.attr_u32_be(NFTA_OBJREF_SET_SREG, NFT_REG_1);
                // nft writes this name without its NUL (an NLA_STRING
                // either way for the kernel's policy).
                b.attr(NFTA_OBJREF_SET_NAME, objects.name.as_bytes());
                b.attr_u32_be(NFTA_OBJREF_SET_ID, objects.id);
            });
            expr_drop(b);
        });
    }

    /// The packet mark rule ([`RestoreRule`]):
    /// `meta l4proto P th sport @ports ct direction reply
    /// ct mark and MASK == TAG meta mark set ct mark`.
    pub fn restore_rule(&mut self, r: &RestoreRule<'_>, ack: bool) {
        self.rule(r.table, r.chain, ack, |b| {
            l4proto_port_in(b, r.l4proto, 0, r.ports_set);
            expr_ct_load(b, NFT_CT_DIRECTION);
            expr_cmp(b, &[IP_CT_DIR_REPLY]);
            expr_ct_load(b, NFT_CT_MARK);
            expr_bitwise_len(b, &r.mask.to_ne_bytes(), &[0; 4]);
            expr_cmp(b, &r.tag.to_ne_bytes());
            expr_ct_load(b, NFT_CT_MARK);
            expr(b, "meta", |b| {
                b.attr_u32_be(NFTA_META_KEY, NFT_META_MARK);
                b.attr_u32_be(NFTA_META_SREG, NFT_REG_1);
            });
        });
    }
}

/// `meta l4proto P th (sport|dport) @ports`: the port at `offset` (0
/// source, 2 destination) of the transport header.
fn l4proto_port_in(b: &mut NlBuf, l4proto: u8, offset: u32, ports: SetRef<'_>) {
    expr_meta(b, NFT_META_L4PROTO);
    expr_cmp(b, &[l4proto]);
    expr_payload(b, NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2);
    expr_lookup(b, ports);
}

fn expr(b: &mut NlBuf, name: &str, data: impl FnOnce(&mut NlBuf)) {
    b.nested(NFTA_LIST_ELEM, |b| {
        b.attr_str(NFTA_EXPR_NAME, name);
        b.nested(NFTA_EXPR_DATA, data);
    });
}

fn expr_meta(b: &mut NlBuf, key: u32) {
    expr(b, "meta", |b| {
        b.attr_u32_be(NFTA_META_KEY, key);
        b.attr_u32_be(NFTA_META_DREG, NFT_REG_1);
    });
}

fn expr_cmp(b: &mut NlBuf, value: &[u8]) {
    expr(b, "cmp", |b| {
        b.attr_u32_be(NFTA_CMP_SREG, NFT_REG_1);
        b.attr_u32_be(NFTA_CMP_OP, NFT_CMP_EQ);
        b.nested(NFTA_CMP_DATA, |b| b.attr(NFTA_DATA_VALUE, value));
    });
}

fn expr_payload(b: &mut NlBuf, base: u32, offset: u32, len: u32) {
    expr_payload_to(b, base, offset, len, NFT_REG_1);
}

fn expr_payload_to(b: &mut NlBuf, base: u32, offset: u32, len: u32, dreg: u32) {
    expr(b, "payload", |b| {
        b.attr_u32_be(NFTA_PAYLOAD_DREG, dreg);
        b.attr_u32_be(NFTA_PAYLOAD_BASE, base);
        b.attr_u32_be(NFTA_PAYLOAD_OFFSET, offset);
        b.attr_u32_be(NFTA_PAYLOAD_LEN, len);
    });
}

/// `ct <key>` into reg1.
fn expr_ct_load(b: &mut NlBuf, key: u32) {
    expr(b, "ct", |b| {
        b.attr_u32_be(NFTA_CT_KEY, key);
        b.attr_u32_be(NFTA_CT_DREG, NFT_REG_1);
    });
}

/// `reg1 = (reg1 & mask) ^ 0` over 16 bytes (`NFT_BITWISE_BOOL`, also
/// the kernel's default when `NFTA_BITWISE_OP` is absent: kernels before
/// 5.6, which do not know the attribute, ignore it and do the same).
fn expr_bitwise(b: &mut NlBuf, mask: &[u8; 16]) {
    expr_bitwise_len(b, mask, &[0; 16]);
}

/// `reg1 = (reg1 & mask) ^ xor` over `mask.len()` bytes.
fn expr_bitwise_len(b: &mut NlBuf, mask: &[u8], xor: &[u8]) {
    expr(b, "bitwise", |b| {
        b.attr_u32_be(NFTA_BITWISE_SREG, NFT_REG_1);
        b.attr_u32_be(NFTA_BITWISE_DREG, NFT_REG_1);
        b.attr_u32_be(NFTA_BITWISE_OP, NFT_BITWISE_BOOL);
        b.attr_u32_be(NFTA_BITWISE_LEN, mask.len() as u32);
        b.nested(NFTA_BITWISE_MASK, |b| b.attr(NFTA_DATA_VALUE, mask));
        b.nested(NFTA_BITWISE_XOR, |b| b.attr(NFTA_DATA_VALUE, xor));
    });
}

/// A lookup of reg1 in a named set of the same table (found by name even
/// when the set is created in the same batch).
fn expr_lookup(b: &mut NlBuf, set: SetRef<'_>) {
    expr(b, "lookup", |b| {
        b.attr_u32_be(NFTA_LOOKUP_SREG, NFT_REG_1);
        b.attr_str(NFTA_LOOKUP_SET, set.name);
        b.attr_u32_be(NFTA_LOOKUP_SET_ID, set.id);
    });
}

fn expr_drop(b: &mut NlBuf) {
    expr(b, "immediate", |b| {
        b.attr_u32_be(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        b.nested(NFTA_IMMEDIATE_DATA, |b| {
            b.nested(NFTA_DATA_VERDICT, |b| {
                b.attr_u32_be(NFTA_VERDICT_CODE, NF_DROP);
            })
        });
    });
}

/// `NFT_MSG_GETSETELEM` dump of one set (not a batch: reads are plain
/// requests).
pub fn dump_elems(buf: &mut NlBuf, seq: u32, table: &str, set: &str) {
    buf.message(
        msg_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        |b| {
            nfgen(b, NFPROTO_INET);
            // nft's order: the set, then its table.
            b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        },
    );
}

/// `NFT_MSG_GETSETELEM` of one element by its key, acked (what `nft get
/// element` asks; `nf_tables_getsetelem()` without `NLM_F_DUMP` answers
/// the element, then the ack, or `ENOENT`).
pub fn get_elem(buf: &mut NlBuf, seq: u32, table: &str, set: &str, key: &[u8]) {
    buf.message(
        msg_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            b.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                b.nested(NFTA_LIST_ELEM, |b| {
                    b.nested(NFTA_SET_ELEM_KEY, |b| b.attr(NFTA_DATA_VALUE, key));
                });
            });
        },
    );
}

/// `NFT_MSG_GETTABLE` of one table, acked: `ENOENT` when it is missing.
pub fn get_table(buf: &mut NlBuf, seq: u32, table: &str) {
    buf.message(
        msg_type(NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_TABLE_NAME, table);
        },
    );
}

/// One element of a dump: key bytes, the time left in ms (`None`: no
/// timeout, a permanent element), and its user data (empty without;
/// [`udata_comment`] reads nft's comment from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: Vec<u8>,
    pub expires_ms: Option<u64>,
    pub userdata: Vec<u8>,
}

fn be64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

/// The elements of one `NFT_MSG_NEWSETELEM` message of a dump.
pub fn parse_elems(msg: &Msg<'_>) -> Vec<Listed> {
    let mut out = Vec::new();
    if msg.ty != msg_type(NFT_MSG_NEWSETELEM) || msg.payload.len() < 4 {
        return out;
    }
    for a in Attrs::new(&msg.payload[4..]) {
        if a.ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for e in a.attrs().filter(|e| e.ty == NFTA_LIST_ELEM) {
            let mut key = None;
            let mut expires = None;
            let mut userdata = Vec::new();
            for f in e.attrs() {
                match f.ty {
                    NFTA_SET_ELEM_KEY => {
                        key = f
                            .attrs()
                            .find(|v| v.ty == NFTA_DATA_VALUE)
                            .map(|v| v.payload.to_vec())
                    }
                    NFTA_SET_ELEM_EXPIRATION => expires = be64(f.payload),
                    NFTA_SET_ELEM_USERDATA => userdata = f.payload.to_vec(),
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push(Listed {
                    key,
                    expires_ms: expires,
                    userdata,
                });
            }
        }
    }
    out
}

/// Whether `msg`, a notification, deletes a table, set, chain or rule of
/// table `table` in family `inet`, and was caused by another socket than
/// `own_port` (the table name is attribute 1 in all four:
/// `NFTA_TABLE_NAME`, `NFTA_SET_TABLE`, `NFTA_CHAIN_TABLE`,
/// `NFTA_RULE_TABLE`).
pub fn deletes_table_objects(msg: &Msg<'_>, table: &str, own_port: u32) -> bool {
    if msg.ty >> 8 != NFNL_SUBSYS_NFTABLES
        || !matches!(
            msg.ty & 0xff,
            NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE | NFT_MSG_DELSET
        )
        || msg.pid == own_port
        || msg.payload.len() < 4
        || msg.payload[0] != NFPROTO_INET
    {
        return false;
    }
    Attrs::new(&msg.payload[4..]).any(|a| a.ty == 1 && a.str() == table.as_bytes())
}
/// Whether `msg` (a notification of subsystem `NFNL_SUBSYS_NFTABLES`,
/// type `subsys << 8 | msg`) deletes a table, a chain or a rule.
pub fn is_deletion(msg: &Msg<'_>) -> bool {
    msg.ty >> 8 == NFNL_SUBSYS_NFTABLES
        && matches!(
            msg.ty & 0xff,
            NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE
        )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The batch messages of a `nft --debug=mnl` capture (the fixtures in
    /// `tests/fixtures/nftables/`): each message's type and payload (the
    /// `nfgenmsg` and the attributes, rebuilt from the annotated lines:
    /// `|len|flags|type|` attribute headers and 4-byte data rows, padding
    /// included). Only what lies between BATCH_BEGIN and BATCH_END: the
    /// rest is nft reading its cache.
    pub(crate) fn capture(text: &str) -> Vec<(u16, Vec<u8>)> {
        let msgs = capture_all(text);
        let begin = msgs
            .iter()
            .position(|m| m.0 == NFNL_MSG_BATCH_BEGIN)
            .unwrap();
        let end = msgs
            .iter()
            .rposition(|m| m.0 == NFNL_MSG_BATCH_END)
            .unwrap();
        msgs[begin..=end].to_vec()
    }

    /// Every message of a capture, nft's cache reads included.
    fn capture_all(text: &str) -> Vec<(u16, Vec<u8>)> {
        let mut msgs: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut cur: Option<(u16, Vec<u8>)> = None;
        let mut take_type = false;
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if line.contains("| message length |") {
                if let Some(m) = cur.take() {
                    msgs.push(m);
                }
                take_type = true;
            } else if take_type && line.contains("|  type | flags  |") {
                cur = Some((cells[1].parse().unwrap(), Vec::new()));
                take_type = false;
            } else if line.contains("|len |flags| type|") {
                let len: u16 = cells[1].parse().unwrap();
                let mut ty: u16 = cells[3].parse().unwrap();
                if cells[2].starts_with('N') {
                    ty |= libc::NLA_F_NESTED as u16;
                }
                if cells[2].ends_with('B') {
                    ty |= libc::NLA_F_NET_BYTEORDER as u16;
                }
                let p = &mut cur.as_mut().unwrap().1;
                p.extend_from_slice(&len.to_ne_bytes());
                p.extend_from_slice(&ty.to_ne_bytes());
            } else if line.contains("|      data      |") || line.contains("|  extra header  |") {
                let p = &mut cur.as_mut().unwrap().1;
                for h in cells[1].split_whitespace() {
                    p.push(u8::from_str_radix(h, 16).unwrap());
                }
            }
        }
        msgs.extend(cur);
        msgs
    }

    /// Our batch's messages as (type, payload), checking that every one
    /// carries `seq` and that only the last before END asks for an ack.
    pub(crate) fn ours(buf: &NlBuf, seq: u32) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut acks = Vec::new();
        for r in crate::nl::msg::Messages::new(buf.as_bytes()) {
            let Ok(crate::nl::msg::Reply::Data(m)) = r else {
                panic!("unexpected {r:?}")
            };
            assert_eq!(m.seq, seq);
            assert_ne!(m.flags & NLM_F_REQUEST, 0);
            acks.push(m.flags & NLM_F_ACK != 0);
            out.push((m.ty, m.payload.to_vec()));
        }
        let n = acks.len();
        assert!(n >= 3);
        let want: Vec<bool> = (0..n).map(|i| i == n - 2).collect();
        assert_eq!(acks, want, "one ack, on the last message before END");
        out
    }

    pub(crate) fn assert_same(ours: &[(u16, Vec<u8>)], nft: &[(u16, Vec<u8>)]) {
        assert_eq!(ours.len(), nft.len(), "message count");
        for (i, (a, b)) in ours.iter().zip(nft).enumerate() {
            assert_eq!(a.0, b.0, "message {i}: type");
            assert_eq!(a.1, b.1, "message {i} (type {:#x}): payload", a.0);
        }
    }

    const PORTS: SetRef<'static> = SetRef {
        name: "ports",
        id: 1,
    };
    const B4: SetRef<'static> = SetRef {
        name: "banned4",
        id: 2,
    };
    const B6: SetRef<'static> = SetRef {
        name: "banned6",
        id: 3,
    };

    #[test]
    fn table_sets_chain_and_rules_are_what_nft_sends() {
        let nft = capture(include_str!("../../tests/fixtures/nftables/create.mnl"));
        let mut buf = NlBuf::new();
        let mut b = Batch::begin(&mut buf, 7);
        b.new_table("refract", false);
        // nft's order: table, chain, sets with their elements, rules.
        b.new_chain("refract", "input", NF_INET_LOCAL_IN, -10, false);
        b.new_set("refract", "ports", TYPE_INET_SERVICE, 2, 0, 0, 1, false);
        let (p1, p2) = (443u16.to_be_bytes(), 8443u16.to_be_bytes());
        let ports = [
            Elem {
                key: &p1,
                timeout_ms: None,
            },
            Elem {
                key: &p2,
                timeout_ms: None,
            },
        ];
        b.elems("refract", PORTS, true, &ports, false);
        b.new_set(
            "refract",
            "banned4",
            TYPE_IPADDR,
            4,
            NFT_SET_TIMEOUT,
            0,
            2,
            false,
        );
        b.new_set(
            "refract",
            "banned6",
            TYPE_IP6ADDR,
            16,
            NFT_SET_TIMEOUT,
            0,
            3,
            false,
        );
        let mut rule = Rule {
            table: "refract",
            chain: "input",
            l4proto: libc::IPPROTO_TCP as u8,
            ports_set: PORTS,
            nfproto: crate::nl::consts::NFPROTO_IPV4,
            v6_mask: None,
            addr_set: B4,
        };
        b.new_rule(&rule, false);
        rule.l4proto = libc::IPPROTO_UDP as u8;
        rule.nfproto = crate::nl::consts::NFPROTO_IPV6;
        rule.v6_mask = Some((u128::MAX << 64).to_be_bytes());
        rule.addr_set = B6;
        b.new_rule(&rule, true);
        b.end();
        assert_same(&ours(&buf, 7), &nft);
    }

    #[test]
    fn element_additions_and_deletions_are_what_nft_sends() {
        let ms = |s: u64| Some(s * 1000);
        let mut buf = NlBuf::new();
        let mut b = Batch::begin(&mut buf, 9);
        let (a, c) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let elems = [
            Elem {
                key: &a,
                timeout_ms: ms(60),
            },
            Elem {
                key: &c,
                timeout_ms: ms(30),
            },
        ];
        b.elems("refract", B4, true, &elems, true);
        b.end();
        let nft = capture(include_str!("../../tests/fixtures/nftables/add4.mnl"));
        assert_same(&ours(&buf, 9), &nft);

        buf.clear();
        let mut b = Batch::begin(&mut buf, 9);
        let k6: [u8; 16] = "2001:db8:1:2::"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let e6 = [Elem {
            key: &k6,
            timeout_ms: ms(90),
        }];
        b.elems("refract", B6, true, &e6, true);
        b.end();
        let nft = capture(include_str!("../../tests/fixtures/nftables/add6.mnl"));
        assert_same(&ours(&buf, 9), &nft);

        buf.clear();
        let mut b = Batch::begin(&mut buf, 9);
        let del = [Elem {
            key: &a,
            timeout_ms: None,
        }];
        b.elems("refract", B4, false, &del, true);
        b.end();
        let nft = capture(include_str!("../../tests/fixtures/nftables/del4.mnl"));
        assert_same(&ours(&buf, 9), &nft);

        buf.clear();
        let mut b = Batch::begin(&mut buf, 9);
        b.del_table("refract", true);
        b.end();
        let nft = capture(include_str!("../../tests/fixtures/nftables/deltable.mnl"));
        assert_same(&ours(&buf, 9), &nft);
    }

    #[test]
    fn flushes_and_the_element_dump_are_what_nft_sends() {
        let mut buf = NlBuf::new();
        let mut b = Batch::begin(&mut buf, 4);
        b.elems("refract", PORTS, false, &[], true);
        b.end();
        let nft = capture(include_str!("../../tests/fixtures/nftables/flushset.mnl"));
        assert_same(&ours(&buf, 4), &nft);

        buf.clear();
        let mut b = Batch::begin(&mut buf, 4);
        b.flush_chain("refract", "input", true);
        b.end();
        let nft = capture(include_str!("../../tests/fixtures/nftables/flushchain.mnl"));
        assert_same(&ours(&buf, 4), &nft);

        // The dump is a plain request (no batch): the GETSETELEM nft sends
        // to list the set.
        buf.clear();
        dump_elems(&mut buf, 4, "refract", "banned4");
        let nft = capture_all(include_str!("../../tests/fixtures/nftables/listset.mnl"));
        let want = nft
            .iter()
            .find(|m| m.0 == msg_type(NFT_MSG_GETSETELEM))
            .expect("nft lists the elements");
        let m = crate::nl::msg::Messages::new(buf.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let crate::nl::msg::Reply::Data(m) = m else {
            panic!()
        };
        assert_eq!((m.ty, m.payload), (want.0, &want.1[..]));
        assert_eq!(m.flags, NLM_F_REQUEST | NLM_F_DUMP);
    }

    #[test]
    fn a_dumped_element_reads_back_with_its_expiration() {
        // What the kernel answers a GETSETELEM dump with (nf_tables_fill_setelem()).
        let mut buf = NlBuf::new();
        buf.message(msg_type(NFT_MSG_NEWSETELEM), NLM_F_MULTI_TEST, 3, |b| {
            b.put(&[NFPROTO_INET, 0, 0, 0]);
            b.attr_str(NFTA_SET_ELEM_LIST_TABLE, "refract");
            b.attr_str(NFTA_SET_ELEM_LIST_SET, "banned4");
            b.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                b.nested(NFTA_LIST_ELEM, |b| {
                    b.nested(NFTA_SET_ELEM_KEY, |b| {
                        b.attr(NFTA_DATA_VALUE, &[192, 0, 2, 7])
                    });
                    b.attr(NFTA_SET_ELEM_TIMEOUT, &60_000u64.to_be_bytes());
                    b.attr(NFTA_SET_ELEM_EXPIRATION, &59_500u64.to_be_bytes());
                });
                b.nested(NFTA_LIST_ELEM, |b| {
                    b.nested(NFTA_SET_ELEM_KEY, |b| {
                        b.attr(NFTA_DATA_VALUE, &[192, 0, 2, 8])
                    });
                });
            });
        });
        let m = crate::nl::msg::Messages::new(buf.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let crate::nl::msg::Reply::Data(m) = m else {
            panic!()
        };
        assert_eq!(
            parse_elems(&m),
            vec![
                Listed {
                    key: vec![192, 0, 2, 7],
                    expires_ms: Some(59_500),
                    userdata: vec![],
                },
                Listed {
                    key: vec![192, 0, 2, 8],
                    expires_ms: None,
                    userdata: vec![],
                },
            ]
        );
    }

    #[test]
    fn a_comment_is_nfts_element_user_data_and_reads_back() {
        // What nft sends for `comment "alice@example.com"`.
        let mut want = vec![0, 18];
        want.extend_from_slice(b"alice@example.com\0");
        assert_eq!(comment_udata("alice@example.com"), want);
        assert_eq!(udata_comment(&want), Some("alice@example.com"));
        // Other records before it are skipped; a torn one is nothing.
        let mut two = vec![7, 2, 0xaa, 0xbb];
        two.extend_from_slice(&want);
        assert_eq!(udata_comment(&two), Some("alice@example.com"));
        assert_eq!(udata_comment(&want[..10]), None);
        assert_eq!(udata_comment(&[]), None);
        // Cut below nft's limit, at a character boundary.
        let long = "é".repeat(100);
        let u = comment_udata(&long);
        assert_eq!(usize::from(u[1]), u.len() - 2);
        let back = udata_comment(&u).unwrap();
        assert!(
            back.len() < COMMENT_MAXLEN && long.starts_with(back),
            "{back}"
        );
        assert_eq!(back.len(), 126);
    }

    #[test]
    fn concatenation_types_are_nfts() {
        // `nft --debug=netlink` shows these for the two peer maps.
        assert_eq!(concat_type(TYPE_IPADDR, TYPE_INET_SERVICE), 461);
        assert_eq!(concat_type(TYPE_IP6ADDR, TYPE_INET_SERVICE), 525);
    }

    #[test]
    fn end_acked_asks_for_an_ack_on_the_last_message_only() {
        let mut buf = NlBuf::new();
        let mut b = Batch::begin(&mut buf, 3);
        b.new_table("t", false);
        b.del_table("t", false);
        b.end_acked();
        ours(&buf, 3);
    }

    #[test]
    fn only_others_deletions_in_our_table_count() {
        let mut buf = NlBuf::new();
        let mut note = |cmd: u16, family: u8, table: &str, pid: u32| {
            buf.clear();
            buf.message(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, cmd as u8), 0, 0, |b| {
                b.put(&[family, 0, 0, 0]);
                b.attr_str(1, table);
            });
            let mut bytes = buf.as_bytes().to_vec();
            bytes[12..16].copy_from_slice(&pid.to_ne_bytes());
            let m = crate::nl::msg::Messages::new(&bytes)
                .next()
                .unwrap()
                .unwrap();
            let crate::nl::msg::Reply::Data(m) = m else {
                panic!()
            };
            deletes_table_objects(&m, "refract", 42)
        };
        for cmd in [
            NFT_MSG_DELTABLE,
            NFT_MSG_DELCHAIN,
            NFT_MSG_DELRULE,
            NFT_MSG_DELSET,
        ] {
            assert!(note(cmd, NFPROTO_INET, "refract", 7), "{cmd}");
        }
        // Ours (our port id), another table, another family, an addition.
        assert!(!note(NFT_MSG_DELTABLE, NFPROTO_INET, "refract", 42));
        assert!(!note(NFT_MSG_DELTABLE, NFPROTO_INET, "fw4", 7));
        assert!(!note(
            NFT_MSG_DELTABLE,
            crate::nl::consts::NFPROTO_IPV4,
            "refract",
            7
        ));
        assert!(!note(NFT_MSG_NEWRULE as u16, NFPROTO_INET, "refract", 7));
    }

    /// `NLM_F_MULTI` (netlink.h), as dump answers carry it.
    const NLM_F_MULTI_TEST: u16 = 0x02;
    use crate::nl::consts::{nfnl_msg_type, NFNL_SUBSYS_IPSET};

    fn msg(ty: u16) -> Msg<'static> {
        Msg {
            ty,
            flags: 0,
            seq: 0,
            pid: 0,
            payload: &[],
        }
    }

    #[test]
    fn deletions_of_nf_tables_objects_only() {
        for cmd in [NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE] {
            assert!(is_deletion(&msg(nfnl_msg_type(
                NFNL_SUBSYS_NFTABLES,
                cmd as u8
            ))));
        }
        // NFT_MSG_NEWRULE (6), NFT_MSG_NEWGEN (15): additions are no loss.
        for cmd in [6u8, 15] {
            assert!(!is_deletion(&msg(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, cmd))));
        }
        // The same command number of another subsystem.
        assert!(!is_deletion(&msg(nfnl_msg_type(NFNL_SUBSYS_IPSET, 8))));
    }
}
