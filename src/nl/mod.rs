//! Netlink: the wire format (`buf`, `msg`) and the kernel families refract
//! speaks (ipset over nfnetlink, sock_diag, conntrack).

pub mod buf;
pub mod channel;
pub mod conntrack;
pub mod consts;
pub mod diag;
pub mod ipset;
pub mod msg;
pub mod pipeline;
pub mod socket;
