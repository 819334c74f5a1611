//! The command-line front end on arbitrary argument vectors:
//! `refract::cli::normalize`, `parse_args` and, when they succeed,
//! `build_config` with an empty injected environment. Never panics.
//!
//! The input is split on NUL bytes into arguments (lossy UTF-8, as a real
//! `argv` cannot hold a NUL either). `build_config` reads the `--limits`
//! file from disk; to keep the fuzzer off the filesystem, an input whose
//! parsed `limits` option is set is not passed to `build_config` (the
//! limits parser has its own target, `limits`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use refract::cli::{build_config, normalize, parse_args, Env};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let argv: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\0').map(str::to_owned).collect()
    };
    // Pure: the same arguments normalise the same way.
    if let Ok(once) = normalize(&argv) {
        assert_eq!(normalize(&argv).as_ref(), Ok(&once));
    }
    let Ok((command, args)) = parse_args(&argv) else {
        return;
    };
    if args.limits.is_some() {
        return;
    }
    let no_env = |_: &str| None;
    if let Ok(config) = build_config(command, &args, &Env::new(&no_env)) {
        assert!(!config.ports.is_empty() && !config.ports.contains(&0));
        assert!(config.protos.tcp || config.protos.udp);
        assert!(!config.window.is_zero() && !config.timeout.is_zero());
        assert!(config.policy.limit >= 1);
        assert_ne!(config.set_v4, config.set_v6);
    }
});
