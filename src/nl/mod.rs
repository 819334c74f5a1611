//! Netlink: the wire format (`buf`, `msg`), the one request pipeline every
//! kernel user goes through (`pipeline`, bound to its socket by `channel`),
//! and the kernel families refract speaks (ipset over nfnetlink, sock_diag,
//! conntrack, nf_tables notifications, rtnetlink links, routes and traffic
//! control for the bandwidth caps). Wire formats only: nothing here decides
//! what to send.

pub mod buf;
pub mod channel;
pub mod conntrack;
pub mod consts;
pub mod diag;
pub mod ipset;
pub mod msg;
pub mod nftables;
pub mod pipeline;
pub mod rtnl;
pub mod socket;
