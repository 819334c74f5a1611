//! Operator control: the control socket's protocol (one JSON request per
//! line, one JSON reply per line, [`json`]), served from the daemon's one
//! loop, and the commands that talk to it.

pub mod client;
pub mod json;
