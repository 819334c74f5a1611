//! Kernel constants for netlink, nfnetlink and ipset, under their kernel
//! names, each group citing the uapi header it comes from. Values were
//! copied from the headers installed on the build host (`/usr/include`);
//! they are ABI and never change once released.
//!
//! sock_diag and conntrack constants live beside their own modules.

// ---- /usr/include/linux/netlink.h ----

pub const NETLINK_NETFILTER: i32 = 12;
pub const NETLINK_SOCK_DIAG: i32 = 4;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
/// GET requests: `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
/// NEW requests.
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

/// Flags on an `NLMSG_ERROR` reply (`nlmsgerr` acks).
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLM_F_ACK_TLVS: u16 = 0x200;

pub const NLMSG_NOOP: u16 = 0x1;
pub const NLMSG_ERROR: u16 = 0x2;
pub const NLMSG_DONE: u16 = 0x3;
pub const NLMSG_OVERRUN: u16 = 0x4;

pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;

/// The socket options live with the syscalls that set them (`sys` imports
/// nothing from above it); named here too so every netlink constant is in
/// one list.
pub use crate::sys::netlink::{
    NETLINK_ADD_MEMBERSHIP, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK, SOL_NETLINK,
};

/// `enum nlmsgerr_attrs`: TLVs after an extended ack.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

// ---- /usr/include/linux/netfilter/nfnetlink.h ----

/// `struct nfgenmsg { __u8 nfgen_family; __u8 version; __be16 res_id; }`.
pub const NFGENMSG_LEN: usize = 4;
pub const NFNETLINK_V0: u8 = 0;
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const NFNL_SUBSYS_IPSET: u16 = 6;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `enum nfnetlink_groups`: nf_tables ruleset change notifications.
pub const NFNLGRP_NFTABLES: u32 = 7;

// ---- /usr/include/linux/netfilter.h ----

pub const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

// ---- /usr/include/linux/netfilter/ipset/ip_set.h ----

/// The protocol version refract speaks; the kernel accepts
/// `IPSET_PROTOCOL_MIN..=IPSET_PROTOCOL` (`ip_set_core.c`,
/// `protocol_min_failed()`).
pub const IPSET_PROTOCOL: u8 = 7;
pub const IPSET_PROTOCOL_MIN: u8 = 6;
/// Including the terminating NUL.
pub const IPSET_MAXNAMELEN: usize = 32;

// enum ipset_cmd
pub const IPSET_CMD_PROTOCOL: u8 = 1;
pub const IPSET_CMD_CREATE: u8 = 2;
pub const IPSET_CMD_DESTROY: u8 = 3;
pub const IPSET_CMD_FLUSH: u8 = 4;
pub const IPSET_CMD_RENAME: u8 = 5;
pub const IPSET_CMD_SWAP: u8 = 6;
pub const IPSET_CMD_LIST: u8 = 7;
pub const IPSET_CMD_SAVE: u8 = 8;
pub const IPSET_CMD_ADD: u8 = 9;
pub const IPSET_CMD_DEL: u8 = 10;
pub const IPSET_CMD_TEST: u8 = 11;
pub const IPSET_CMD_HEADER: u8 = 12;
pub const IPSET_CMD_TYPE: u8 = 13;

// Command-level attributes.
pub const IPSET_ATTR_PROTOCOL: u16 = 1;
pub const IPSET_ATTR_SETNAME: u16 = 2;
pub const IPSET_ATTR_TYPENAME: u16 = 3;
pub const IPSET_ATTR_REVISION: u16 = 4;
pub const IPSET_ATTR_FAMILY: u16 = 5;
pub const IPSET_ATTR_FLAGS: u16 = 6;
pub const IPSET_ATTR_DATA: u16 = 7;
pub const IPSET_ATTR_ADT: u16 = 8;
pub const IPSET_ATTR_LINENO: u16 = 9;
pub const IPSET_ATTR_PROTOCOL_MIN: u16 = 10;
pub const IPSET_ATTR_REVISION_MIN: u16 = 10;
pub const IPSET_ATTR_INDEX: u16 = 11;

// CADT (create/add/del/test) data attributes, inside IPSET_ATTR_DATA.
pub const IPSET_ATTR_IP: u16 = 1;
pub const IPSET_ATTR_IP_TO: u16 = 2;
pub const IPSET_ATTR_CIDR: u16 = 3;
pub const IPSET_ATTR_PORT: u16 = 4;
pub const IPSET_ATTR_TIMEOUT: u16 = 6;
pub const IPSET_ATTR_PROTO: u16 = 7;
pub const IPSET_ATTR_CADT_FLAGS: u16 = 8;
// Create-only.
pub const IPSET_ATTR_INITVAL: u16 = 17;
pub const IPSET_ATTR_HASHSIZE: u16 = 18;
pub const IPSET_ATTR_MAXELEM: u16 = 19;
pub const IPSET_ATTR_NETMASK: u16 = 20;
pub const IPSET_ATTR_BUCKETSIZE: u16 = 21;
pub const IPSET_ATTR_RESIZE: u16 = 22;
pub const IPSET_ATTR_SIZE: u16 = 23;
// Kernel-only (list replies).
pub const IPSET_ATTR_ELEMENTS: u16 = 24;
pub const IPSET_ATTR_REFERENCES: u16 = 25;
pub const IPSET_ATTR_MEMSIZE: u16 = 26;

// Inside IPSET_ATTR_IP.
pub const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

// enum ipset_errno (returned negated in NLMSG_ERROR).
pub const IPSET_ERR_PRIVATE: i32 = 4096;
pub const IPSET_ERR_PROTOCOL: i32 = 4097;
pub const IPSET_ERR_FIND_TYPE: i32 = 4098;
pub const IPSET_ERR_MAX_SETS: i32 = 4099;
pub const IPSET_ERR_BUSY: i32 = 4100;
pub const IPSET_ERR_EXIST_SETNAME2: i32 = 4101;
pub const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
pub const IPSET_ERR_EXIST: i32 = 4103;
pub const IPSET_ERR_INVALID_CIDR: i32 = 4104;
pub const IPSET_ERR_INVALID_NETMASK: i32 = 4105;
pub const IPSET_ERR_INVALID_FAMILY: i32 = 4106;
pub const IPSET_ERR_TIMEOUT: i32 = 4107;
pub const IPSET_ERR_REFERENCED: i32 = 4108;
pub const IPSET_ERR_IPADDR_IPV4: i32 = 4109;
pub const IPSET_ERR_IPADDR_IPV6: i32 = 4110;
pub const IPSET_ERR_COUNTER: i32 = 4111;
pub const IPSET_ERR_COMMENT: i32 = 4112;
pub const IPSET_ERR_INVALID_MARKMASK: i32 = 4113;
pub const IPSET_ERR_SKBINFO: i32 = 4114;
/// Type-specific errors start here (`IPSET_ERR_HASH_FULL` = +0, …:
/// `/usr/include/linux/netfilter/ipset/ip_set_hash.h`).
pub const IPSET_ERR_TYPE_SPECIFIC: i32 = 4352;
pub const IPSET_ERR_HASH_FULL: i32 = 4352;
pub const IPSET_ERR_HASH_ELEM: i32 = 4353;
pub const IPSET_ERR_INVALID_PROTO: i32 = 4354;
pub const IPSET_ERR_MISSING_PROTO: i32 = 4355;
pub const IPSET_ERR_HASH_RANGE_UNSUPPORTED: i32 = 4356;
pub const IPSET_ERR_HASH_RANGE: i32 = 4357;

// enum ipset_cmd_flags (IPSET_ATTR_FLAGS, network order).
pub const IPSET_FLAG_EXIST: u32 = 1 << 0;
pub const IPSET_FLAG_LIST_SETNAME: u32 = 1 << 1;
pub const IPSET_FLAG_LIST_HEADER: u32 = 1 << 2;

// enum ipset_cadt_flags (IPSET_ATTR_CADT_FLAGS in create data).
pub const IPSET_FLAG_WITH_COUNTERS: u32 = 1 << 3;
pub const IPSET_FLAG_WITH_COMMENT: u32 = 1 << 4;
pub const IPSET_FLAG_WITH_FORCEADD: u32 = 1 << 5;

/// The nfnetlink message type of an ipset command:
/// `NFNL_SUBSYS_IPSET << 8 | cmd` (`NFNL_SUBSYS_ID`/`NFNL_MSG_TYPE`).
pub const fn ipset_msg_type(cmd: u8) -> u16 {
    (NFNL_SUBSYS_IPSET << 8) | cmd as u16
}

/// The message type of any nfnetlink subsystem's command.
pub const fn nfnl_msg_type(subsys: u16, cmd: u8) -> u16 {
    (subsys << 8) | cmd as u16
}
