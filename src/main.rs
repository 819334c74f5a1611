//! The `refract` binary: [`cli::invocation`] reads argv, the environment
//! and the service's environment file into a validated configuration, and
//! this file runs the subcommand it names. Nothing else lives here.
//!
//! Output goes through [`cli::out`] and [`cli::err`], which ignore a closed
//! stdout or stderr instead of panicking as `println!` does.

use refract::cli::{self, Command, Invocation};
use refract::config::{Config, FirewallMode};
use refract::control::client;
use refract::enforce::{
    self, DryRun, Enforcer, KernelConfig, KernelEnforcer, NftConfig, NftEnforcer,
};

fn main() {
    let code = match cli::invocation() {
        Ok(inv) => run(inv),
        Err(code) => code,
    };
    std::process::exit(code);
}

/// Runs the subcommand; returns the exit code.
fn run(inv: Invocation) -> i32 {
    match inv.command {
        Command::Replay => refract::replay::main(&inv.cfg, &inv.file, inv.explain),
        Command::Check => {
            let (report, ok) = refract::check::run(&inv.cfg, inv.env_file.as_ref());
            cli::out(&report);
            if ok {
                0
            } else {
                1
            }
        }
        Command::Cleanup => cleanup(&inv.cfg),
        Command::Daemon => daemon(inv.cfg),
        Command::Status | Command::User | Command::Ban | Command::Unban | Command::Reload => {
            // `cli` refuses a client command without a socket or request.
            match (&inv.cfg.control, &inv.request) {
                (Some(path), Some(req)) => client::run(path, req, inv.json, &cli::out, &|e| {
                    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), e.as_bytes());
                }),
                _ => cli::EXIT_USAGE,
            }
        }
    }
}

/// The live daemon with the enforcer `--dry-run` picks; the kernel one
/// fails here, before the loop, with one line naming what is wrong.
fn daemon(cfg: Config) -> i32 {
    let enforcer: Box<dyn Enforcer> = if cfg.dry_run {
        Box::new(DryRun::default())
    } else {
        let (mode, why) = enforce::choose(&cfg);
        if cfg.firewall == FirewallMode::Auto {
            refract::logger::info(format_args!("firewall {why}"));
        }
        let made: Result<Box<dyn Enforcer>, String> = match mode {
            FirewallMode::Nftables => NftEnforcer::new(NftConfig::from_config(&cfg))
                .map(|k| Box::new(k) as Box<dyn Enforcer>)
                .map_err(|e| e.to_string()),
            _ => KernelEnforcer::new(KernelConfig {
                firewall: mode,
                ..KernelConfig::from_config(&cfg)
            })
            .map(|k| Box::new(k) as Box<dyn Enforcer>)
            .map_err(|e| e.to_string()),
        };
        match made {
            Ok(k) => k,
            Err(e) => {
                cli::err(&e);
                return 1;
            }
        }
    };
    refract::daemon::run(cfg, enforcer)
}

/// `refract cleanup [--dry-run]`: the rules on refract's sets and both
/// sets go (or, with `--dry-run`, are only listed).
fn cleanup(cfg: &Config) -> i32 {
    let report = match cfg.firewall {
        FirewallMode::Nftables => enforce::nftables::cleanup_report(cfg.dry_run),
        // auto may have run either backend: both are cleaned up.
        FirewallMode::Auto => enforce::nftables::cleanup_report(cfg.dry_run).and_then(|n| {
            let kcfg = KernelConfig {
                firewall: FirewallMode::Iptables,
                ..KernelConfig::from_config(cfg)
            };
            // A host without ip_set (OpenWrt's default images) has no
            // ipset side to clean up.
            match enforce::probe(&kcfg) {
                Ok(_) => enforce::cleanup_report(&kcfg, cfg.dry_run).map(|i| n + &i),
                Err(e) => Ok(format!(
                    "{n}ipset: not usable here ({e}); nothing to clean up\n"
                )),
            }
        }),
        _ => enforce::cleanup_report(&KernelConfig::from_config(cfg), cfg.dry_run),
    };
    // The bandwidth shaping, after the sets: their cleanup refuses while a
    // daemon runs, and so this is not pulled from under one either.
    let report = report.and_then(|r| refract::shape::cleanup_report(cfg.dry_run).map(|s| r + &s));
    match report {
        Ok(report) => {
            cli::out(&report);
            0
        }
        Err(e) => {
            cli::err(&format!("cleanup: {e}"));
            1
        }
    }
}
