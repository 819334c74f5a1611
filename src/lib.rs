//! refract: per-user session limits for Xray-core and V2Ray nodes, enforced
//! in the kernel.
//!
//! ```text
//! access.log ──inotify──▶ tail (mmap window) ──lines──▶ accesslog::parse ──Access──▶
//! policy (pure; time passed in) ──Ban──▶ enforce (ipset + SOCK_DESTROY/conntrack)
//!         ▲  next_deadline()                 └──▶ audit (block.log), counters
//!         └── timer
//! ```
//!
//! The parser and the policy are pure (no clock, no I/O); the daemon's loop
//! is the only place that touches file descriptors, and `sys` is the only
//! place with `unsafe`.

pub mod accesslog;
pub mod audit;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod enforce;
pub mod hash;
pub mod key;
pub mod logger;
pub mod nl;
pub mod notify;
pub mod policy;
pub mod privilege;
pub mod replay;
pub mod sys;
pub mod tail;
