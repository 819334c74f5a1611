//! nf_tables over nfnetlink: the messages the nftables backend sends (its
//! table, sets, chain and rules, set elements, all inside batches) and the
//! ones it reads (element dumps, ruleset change notifications).
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

/// `enum nft_list_attributes`.
pub const NFTA_LIST_ELEM: u16 = 1;

// enum nft_table_attributes
pub const NFTA_TABLE_NAME: u16 = 1;

// enum nft_chain_attributes, enum nft_hook_attributes
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
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
pub const NFTA_SET_DESC: u16 = 9;
/// Required by `nf_tables_newset()` (the set's id within its batch).
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_USERDATA: u16 = 13;
pub const NFTA_SET_DESC_SIZE: u16 = 1;
pub const NFT_SET_TIMEOUT: u32 = 0x10;

// enum nft_set_elem_list_attributes, enum nft_set_elem_attributes
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;

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

// enum nft_lookup_attributes
pub const NFTA_LOOKUP_SET: u16 = 1;
pub const NFTA_LOOKUP_SREG: u16 = 2;

// enum nft_immediate_attributes
pub const NFTA_IMMEDIATE_DREG: u16 = 1;
pub const NFTA_IMMEDIATE_DATA: u16 = 2;

/// `enum nft_registers`: the verdict register and the first 128-bit one.
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;

/// `NF_DROP` (`/usr/include/linux/netfilter.h`).
pub const NF_DROP: u32 = 0;
/// `NF_INET_LOCAL_IN` (`enum nf_inet_hooks`, netfilter.h).
pub const NF_INET_LOCAL_IN: u32 = 1;

// ---- nft's own data types (nftables `include/datatype.h`, `enum
// datatypes`): stored in NFTA_SET_KEY_TYPE so `nft list` prints the keys as
// addresses and ports; the kernel only keeps them. ----

pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_INET_SERVICE: u32 = 13;

/// nft's set user data saying the key is big-endian
/// (`NFTNL_UDATA_SET_KEYBYTEORDER` = 0, length 4, `BYTEORDER_BIG_ENDIAN`
/// = 2 in host order), copied from what `nft` sends.
pub const USERDATA_BIG_ENDIAN: [u8; 6] = {
    let v = 2u32.to_ne_bytes();
    [0, 4, v[0], v[1], v[2], v[3]]
};

/// The nfnetlink type of an nf_tables command.
pub const fn msg_type(cmd: u8) -> u16 {
    nfnl_msg_type(NFNL_SUBSYS_NFTABLES, cmd)
}

/// `struct nfgenmsg` for nf_tables objects of `family` (`res_id` 0).
fn nfgen(b: &mut NlBuf, family: u8) {
    b.put(&[family, NFNETLINK_V0, 0, 0]);
}

/// A set element: its key bytes (network order) and its timeout in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elem<'a> {
    pub key: &'a [u8],
    pub timeout_ms: Option<u64>,
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
    pub ports_set: &'a str,
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
    pub nfproto: u8,
    /// IPv6: the prefix mask (`ip6 saddr & mask`); `None` for IPv4.
    pub v6_mask: Option<[u8; 16]>,
    pub addr_set: &'a str,
}

/// One batch: [`Batch::begin`], the messages, [`Batch::end`]. Every
/// message carries `seq`; only the ones written with `ack` ask for an
/// ack (the module docs say why only the last should).
#[derive(Debug)]
pub struct Batch<'a> {
    pub buf: &'a mut NlBuf,
    pub seq: u32,
}

impl<'a> Batch<'a> {
    /// Writes `NFNL_MSG_BATCH_BEGIN` (`res_id` = `NFNL_SUBSYS_NFTABLES`
    /// in network order, as `nfnetlink_rcv_skb_batch()` reads it).
    pub fn begin(buf: &'a mut NlBuf, seq: u32) -> Batch<'a> {
        buf.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, |b| {
            let r = NFNL_SUBSYS_NFTABLES.to_be_bytes();
            b.put(&[NFPROTO_UNSPEC, NFNETLINK_V0, r[0], r[1]]);
        });
        Batch { buf, seq }
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
        self.buf
            .message(msg_type(NFT_MSG_NEWTABLE), f, self.seq, |b| {
                nfgen(b, NFPROTO_INET);
                b.attr_str(NFTA_TABLE_NAME, table);
            });
    }

    /// `NFT_MSG_DELTABLE`: the table and everything in it.
    pub fn del_table(&mut self, table: &str, ack: bool) {
        let f = Self::flags(ack, 0);
        self.buf
            .message(msg_type(NFT_MSG_DELTABLE as u8), f, self.seq, |b| {
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
        let f = Self::flags(ack, NLM_F_CREATE);
        self.buf
            .message(msg_type(NFT_MSG_NEWSET), f, self.seq, |b| {
                nfgen(b, NFPROTO_INET);
                b.attr_str(NFTA_SET_TABLE, table);
                b.attr_str(NFTA_SET_NAME, set);
                b.attr_u32_be(NFTA_SET_FLAGS, flags);
                b.attr_u32_be(NFTA_SET_KEY_TYPE, key_type);
                b.attr_u32_be(NFTA_SET_KEY_LEN, key_len);
                if size > 0 {
                    b.nested(NFTA_SET_DESC, |b| b.attr_u32_be(NFTA_SET_DESC_SIZE, size));
                }
                b.attr_u32_be(NFTA_SET_ID, id);
                b.attr(NFTA_SET_USERDATA, &USERDATA_BIG_ENDIAN);
            });
    }

    /// `NFT_MSG_NEWSETELEM` (`add = true`) or `NFT_MSG_DELSETELEM` of
    /// `elems`, all in one message; with no element, a DELSETELEM flushes
    /// the set (`nf_tables_delsetelem()`: no `NFTA_SET_ELEM_LIST_ELEMENTS`
    /// → `nft_set_flush()`). A NEWSETELEM without `NLM_F_EXCL` accepts an
    /// element that is already there.
    pub fn elems(&mut self, table: &str, set: &str, add: bool, elems: &[Elem<'_>], ack: bool) {
        let (cmd, f) = if add {
            (NFT_MSG_NEWSETELEM, Self::flags(ack, NLM_F_CREATE))
        } else {
            (NFT_MSG_DELSETELEM, Self::flags(ack, 0))
        };
        self.buf.message(msg_type(cmd), f, self.seq, |b| {
            nfgen(b, NFPROTO_INET);
            b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            if elems.is_empty() {
                return;
            }
            b.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for e in elems {
                    b.nested(NFTA_LIST_ELEM, |b| {
                        if let Some(ms) = e.timeout_ms {
                            b.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                        }
                        b.nested(NFTA_SET_ELEM_KEY, |b| b.attr(NFTA_DATA_VALUE, e.key));
                    });
                }
            });
        });
    }

    /// `NFT_MSG_NEWCHAIN`: a base chain of type `filter` on `hook` at
    /// `priority` (policy accept, the default); kept if it exists.
    pub fn new_chain(&mut self, table: &str, chain: &str, hook: u32, priority: i32, ack: bool) {
        let f = Self::flags(ack, NLM_F_CREATE);
        self.buf
            .message(msg_type(NFT_MSG_NEWCHAIN), f, self.seq, |b| {
                nfgen(b, NFPROTO_INET);
                b.attr_str(NFTA_CHAIN_TABLE, table);
                b.attr_str(NFTA_CHAIN_NAME, chain);
                b.attr_str(NFTA_CHAIN_TYPE, "filter");
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
        self.buf
            .message(msg_type(NFT_MSG_DELRULE as u8), f, self.seq, |b| {
                nfgen(b, NFPROTO_INET);
                b.attr_str(NFTA_RULE_TABLE, table);
                b.attr_str(NFTA_RULE_CHAIN, chain);
            });
    }

    /// `NFT_MSG_NEWRULE`, appended:
    /// `meta l4proto P th dport @ports meta nfproto F <saddr> [& mask] @set drop`,
    /// the expressions `nft --debug=netlink` shows for it (tests compare).
    pub fn new_rule(&mut self, r: &Rule<'_>, ack: bool) {
        let f = Self::flags(ack, NLM_F_CREATE | NLM_F_APPEND);
        self.buf
            .message(msg_type(NFT_MSG_NEWRULE), f, self.seq, |b| {
                nfgen(b, NFPROTO_INET);
                b.attr_str(NFTA_RULE_TABLE, r.table);
                b.attr_str(NFTA_RULE_CHAIN, r.chain);
                b.nested(NFTA_RULE_EXPRESSIONS, |b| {
                    expr_meta(b, NFT_META_L4PROTO);
                    expr_cmp(b, &[r.l4proto]);
                    // th dport: 2 bytes at offset 2 of the transport header.
                    expr_payload(b, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                    expr_lookup(b, r.ports_set);
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
            });
    }
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
    expr(b, "payload", |b| {
        b.attr_u32_be(NFTA_PAYLOAD_DREG, NFT_REG_1);
        b.attr_u32_be(NFTA_PAYLOAD_BASE, base);
        b.attr_u32_be(NFTA_PAYLOAD_OFFSET, offset);
        b.attr_u32_be(NFTA_PAYLOAD_LEN, len);
    });
}

/// `reg1 = (reg1 & mask) ^ 0` over 16 bytes (the boolean bitwise, the
/// kernel's default when `NFTA_BITWISE_OP` is absent, so kernels before
/// 5.6 take it too).
fn expr_bitwise(b: &mut NlBuf, mask: &[u8; 16]) {
    expr(b, "bitwise", |b| {
        b.attr_u32_be(NFTA_BITWISE_SREG, NFT_REG_1);
        b.attr_u32_be(NFTA_BITWISE_DREG, NFT_REG_1);
        b.attr_u32_be(NFTA_BITWISE_LEN, 16);
        b.nested(NFTA_BITWISE_MASK, |b| b.attr(NFTA_DATA_VALUE, mask));
        b.nested(NFTA_BITWISE_XOR, |b| b.attr(NFTA_DATA_VALUE, &[0; 16]));
    });
}

/// A lookup of reg1 in a named set of the same table (found by name even
/// when the set is created in the same batch).
fn expr_lookup(b: &mut NlBuf, set: &str) {
    expr(b, "lookup", |b| {
        b.attr_u32_be(NFTA_LOOKUP_SREG, NFT_REG_1);
        b.attr_str(NFTA_LOOKUP_SET, set);
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
            b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
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

/// One element of a dump: key bytes, and the time left in ms (`None`: no
/// timeout, a permanent element).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: Vec<u8>,
    pub expires_ms: Option<u64>,
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
            for f in e.attrs() {
                match f.ty {
                    NFTA_SET_ELEM_KEY => {
                        key = f
                            .attrs()
                            .find(|v| v.ty == NFTA_DATA_VALUE)
                            .map(|v| v.payload.to_vec())
                    }
                    NFTA_SET_ELEM_EXPIRATION => expires = be64(f.payload),
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push(Listed {
                    key,
                    expires_ms: expires,
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
mod tests {
    use super::*;
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
