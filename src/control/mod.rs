//! Operator control: the control socket's protocol (one JSON request per
//! line, one JSON reply per line: [`protocol`], [`json`]) and its server
//! ([`server`]), served from the daemon's one loop; what each request does
//! to the running daemon is `crate::daemon`'s (`control.rs`).

pub mod client;
pub mod json;
pub mod protocol;
pub mod server;
