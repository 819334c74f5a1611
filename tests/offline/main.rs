//! Tests of what runs without the daemon and without privileges: the real
//! binary's `replay` subcommand on real and made-up logs, the client
//! commands against a fake daemon on a unix socket, the command line itself
//! and the environment file. No root, no namespace; fast, but for one test
//! that waits out the client's 5 s bound on a stuck daemon.

#[path = "../support/mod.rs"]
mod support;

/// `refract replay FILE|-` as an operator runs it: the fixture logs
/// (Xray and V2Ray 4), `--explain` with every skip reason, stdin,
/// policy flags, errors and exit codes, garbage, clock jumps.
mod replay;

/// `refract status/user/ban/unban/reload` against a fake daemon speaking
/// the control protocol: requests, exit codes, `--json`, "not running".
mod control;

/// The command line as an operator meets it: `-h`, per-command help, a
/// closed stdout, "did you mean", the environment file read by `check`
/// and `replay` with its precedence.
mod settings;

/// The fleet client against a real Redis: exact admission across nodes,
/// a server that goes away and comes back.
mod fleet;
