//! `--dry-run`: the enforcer that decides and audits, and touches nothing
//! in the kernel (it counts what it would have done).

use std::time::Duration;

use crate::clock::Micros;
use crate::enforce::{EnforceStats, Enforcer};
use crate::key::Key;
use crate::policy::Ban;

/// `--dry-run`: decides and audits, touches nothing.
#[derive(Debug, Default)]
pub struct DryRun {
    stats: EnforceStats,
}

impl Enforcer for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn ban(&mut self, _ban: &Ban, _ttl: Duration, _now: Micros) {
        self.stats.bans += 1;
    }

    fn unban(&mut self, _key: Key, _now: Micros) {
        self.stats.unbans += 1;
    }

    fn stats(&self) -> EnforceStats {
        self.stats.clone()
    }
}
