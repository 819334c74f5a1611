//! Tests of what runs without the daemon and without privileges: the real
//! binary's `replay` subcommand on real and made-up logs. Fast; no root, no
//! namespace, no timing.

#[path = "../support/mod.rs"]
mod support;

/// `refract replay FILE|-` as an operator runs it: the fixture logs
/// (Xray and V2Ray 4), `--explain` with every skip reason, stdin,
/// policy flags, errors and exit codes, garbage, clock jumps.
mod replay;
