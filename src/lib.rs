//! refract: per-user session limits for Xray-core and V2Ray nodes, enforced
//! in the kernel.
//!
//! refract follows the proxy's access log, notices one user identity (the
//! `email:` field) online from more client addresses than allowed, and shuts
//! the extra address out: an ipset entry matched by a DROP rule stops new
//! packets, and netlink `SOCK_DESTROY` (plus a conntrack delete for UDP)
//! tears down the connections already open.
//!
//! # Data flow
//!
//! ```text
//! access.log ──inotify──▶ tail (mmap window) ──lines──▶ accesslog::parse ──Access──▶
//! policy (pure; time passed in) ──Ban──▶ enforce (ipset + SOCK_DESTROY/conntrack)
//!         ▲  next_deadline()                 └──▶ audit (block.log), counters
//!         └── timer
//! signals: TERM/INT graceful exit · HUP reload · USR1 stats line
//! ```
//!
//! `refract replay FILE` runs the same parser and policy over a finished log
//! with the log's own timestamps as the clock and touches nothing in the
//! kernel ([`replay`]); `refract check` validates without changing anything
//! ([`check`]).
//!
//! # Where things live
//!
//! - Input: [`cli`] turns argv and the `REFRACT_*` environment into a
//!   validated [`config::Config`] (every default is defined once, in
//!   [`config::Config::default`]). [`tail`] follows the log through bounded mmap
//!   windows and survives rotation, truncation and deletion; [`lines`]
//!   splits the bytes into lines for it and for `replay`.
//! - Decisions: [`accesslog`] is the parser (its grammar is in its module
//!   docs); [`policy`] is the engine, with the normative semantics in its
//!   module docs ([`policy::skip`]: why a line does not count,
//!   [`policy::limits`]: the per-user limits file). [`key`] is the unit that
//!   is counted and banned (an IPv4 address or an IPv6 prefix).
//!   [`liveness`] says whether a user's device is still online from the
//!   kernel's view of its connections: the "in use" rule, attribution of
//!   lines to connections, and the exact sock_diag lookups.
//! - Effects: [`enforce`] is the boundary the loop talks to (a kernel
//!   enforcer and a dry-run one; [`enforce::ipset::rules`] the DROP rule,
//!   [`enforce::kill`] the batched kills); [`nl`] holds the netlink wire
//!   formats (ipset, sock_diag, conntrack, nf_tables notifications) and the
//!   one request [`nl::pipeline`] every kernel exchange goes through;
//!   [`shape`] the per-user bandwidth caps (conntrack marks and upload
//!   policing in nf_tables, [`shape::nft`]);
//!   [`audit`] the audit line and log; [`daemon`] the one loop that ties
//!   them together.
//! - Support: [`clock`] (time as plain numbers), [`hash`], [`logger`],
//!   [`notify`], [`privilege`]; [`sys`] wraps the syscalls std and the
//!   dependencies do not cover.
//!
//! # Rules that hold everywhere
//!
//! - One synchronous, single-threaded `mio::Poll` loop: no async runtime, no
//!   threads, nothing that blocks inside the loop; every handler drains its
//!   source until `WouldBlock`. Every netlink exchange is non-blocking and
//!   driven by the loop; kernel errors are logged and counted, never fatal
//!   in the loop.
//! - Sans-I/O cores: the parser and the policy are pure (no clock, no I/O;
//!   the policy takes `now` and reports `next_deadline()`), so they are
//!   tested with real log lines and a fake clock, and the daemon and
//!   `replay` decide exactly alike.
//! - Memory is bounded: the log is read through bounded windows, expired
//!   state is dropped, tracked users and keys have caps with counters.
//! - `unsafe` lives only under [`sys`] (including the one mmap call), each
//!   block with a `// SAFETY:` comment; the rest of the crate is compiled
//!   with `unsafe_code` denied.
//! - Wire formats through views and a small writer, never pointer casts;
//!   kernel constants keep their kernel names and cite their uapi header.
//! - Errors are `io::Result` at the syscall layer and small enums where a
//!   caller branches, with lowercase messages prefixed by the subsystem.
#![deny(unsafe_code)]

pub mod accesslog;
pub mod audit;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod enforce;
pub mod fleet;
pub mod hash;
pub mod hooks;
pub mod key;
pub mod lines;
pub mod liveness;
pub mod logger;
pub mod metrics;
pub mod nl;
pub mod notify;
pub mod policy;
pub mod privilege;
pub mod replay;
pub mod shape;
// The syscall wrappers are where the crate's `unsafe` is meant to be; each
// block there carries its own `// SAFETY:` argument.
#[allow(unsafe_code)]
pub mod sys;
pub mod tail;
