//! Per-user bandwidth caps: conntrack marks and upload policing in nf_tables, qdiscs and classes by mark.

pub mod nft;
