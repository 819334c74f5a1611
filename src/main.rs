//! The `refract` binary: [`cli::invocation`] reads argv and the
//! environment into a validated configuration, and this file runs the
//! subcommand it names. Nothing else lives here.

use refract::cli::{self, Command, Invocation};
use refract::config::Config;
use refract::enforce::{self, DryRun, Enforcer, KernelConfig, KernelEnforcer};

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
            let (report, ok) = refract::check::run(&inv.cfg);
            print!("{report}");
            if ok {
                0
            } else {
                1
            }
        }
        Command::Cleanup => cleanup(&inv.cfg),
        Command::Daemon => daemon(inv.cfg),
    }
}

/// The live daemon with the enforcer `--dry-run` picks; the kernel one
/// fails here, before the loop, with one line naming what is wrong.
fn daemon(cfg: Config) -> i32 {
    let enforcer: Box<dyn Enforcer> = if cfg.dry_run {
        Box::new(DryRun::default())
    } else {
        match KernelEnforcer::new(KernelConfig::from_config(&cfg)) {
            Ok(k) => Box::new(k),
            Err(e) => {
                eprintln!("refract: {e}");
                return 1;
            }
        }
    };
    refract::daemon::run(cfg, enforcer)
}

/// `refract cleanup [--dry-run]`: the rules on refract's sets and both
/// sets go (or, with `--dry-run`, are only listed).
fn cleanup(cfg: &Config) -> i32 {
    match enforce::cleanup_report(&KernelConfig::from_config(cfg), cfg.dry_run) {
        Ok(report) => {
            print!("{report}");
            0
        }
        Err(e) => {
            eprintln!("refract: cleanup: {e}");
            1
        }
    }
}
