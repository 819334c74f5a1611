//! Per-user bandwidth caps: a capped user's connections are marked by the
//! nftables half (conntrack mark → packet mark), and the marked packets
//! are shaped on the WAN device's egress by an HTB class per user
//! ([`tc`]: the qdisc, classes and classifier, their startup and cleanup).
pub mod tc;
