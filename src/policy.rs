//! The policy engine: who is online from where, and who gets banned.
//!
//! SKELETON: the API below is the contract; the engine is being written in
//! its own branch. Semantics: `shared/design.md`, "Policy semantics".

use std::collections::HashMap;

use ipnet::IpNet;

use crate::accesslog::{Access, Skip};
use crate::clock::Micros;
use crate::key::Key;

/// Everything the policy needs to decide; plain data, swapped whole on reload.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// A key stays active while `now - last_seen <= window`.
    pub window: Micros,
    /// How long a ban lasts.
    pub ban: Micros,
    /// Default number of keys per user.
    pub limit: u32,
    /// Per-user overrides (`--limits FILE`), keyed by the raw email bytes.
    pub limits: HashMap<Box<[u8]>, u32>,
    /// IPv6 grouping, `1..=128`.
    pub v6_prefix: u8,
    /// Networks that never count and are never banned.
    pub allow: Vec<IpNet>,
    /// Over-limit newcomers become candidates instead of being banned.
    pub confirm: bool,
    /// Cap on tracked users (memory bound); beyond it new users are not
    /// tracked and a counter says so.
    pub max_users: usize,
    /// Cap on tracked keys over all users, bans included.
    pub max_keys: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            window: 5 * crate::clock::SECOND,
            ban: 60 * crate::clock::SECOND,
            limit: 1,
            limits: HashMap::new(),
            v6_prefix: 64,
            allow: Vec::new(),
            confirm: false,
            max_users: 1_000_000,
            max_keys: 4_000_000,
        }
    }
}

/// A decision to ban `key`, with what the audit line needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub key: Key,
    pub user: Box<[u8]>,
    /// The user's other active keys at the moment of the ban (the "origin").
    pub origins: Vec<Key>,
    /// The tag printed in the audit line's brackets (the newcomer's line).
    pub tag: Box<[u8]>,
    /// Until when (policy clock).
    pub until: Micros,
}

/// What one accepted line did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The line does not count.
    Skipped(Skip),
    /// The key is banned already; ignored.
    Ignored(Key),
    /// The key was active for the user: `last_seen` refreshed.
    Refreshed(Key),
    /// A new active key for the user, within the limit.
    Admitted(Key),
    /// `--confirm`: over the limit, held as a candidate.
    Candidate(Key),
    /// Over the limit: banned. With `--confirm` the banned key may be a
    /// candidate other than this line's (the line's key is in `Ban::origins`
    /// then).
    Banned(Ban),
}

/// Counters the policy keeps (plain data for the summary and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyStats {
    pub bans: u64,
    pub promotions: u64,
    pub users_evicted: u64,
    pub keys_evicted: u64,
    pub users_refused: u64,
    pub keys_refused: u64,
}

/// The engine. Pure: no clock, no I/O; `now` comes in with every call.
#[derive(Debug)]
pub struct Policy {
    cfg: PolicyConfig,
    stats: PolicyStats,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy {
            cfg,
            stats: PolicyStats::default(),
        }
    }

    /// Replaces the configuration (SIGHUP), keeping all state.
    pub fn reconfigure(&mut self, cfg: PolicyConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Feeds one parsed line at time `now`.
    pub fn observe(&mut self, now: Micros, access: &Access<'_>) -> Verdict {
        let _ = (now, access);
        Verdict::Skipped(Skip::NotAccess)
    }

    /// Records a ban that already exists (read back from the kernel at
    /// startup), so its key is ignored until `until`.
    pub fn restore_ban(&mut self, key: Key, until: Micros) {
        let _ = (key, until);
    }

    /// Drops expired state (windows, candidates, bans) at `now` and returns
    /// the keys whose bans ended.
    pub fn expire(&mut self, now: Micros) -> Vec<Key> {
        let _ = now;
        Vec::new()
    }

    /// The earliest time at which [`Policy::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Micros> {
        None
    }

    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// Number of users with state, and number of tracked keys (bans included).
    pub fn tracked(&self) -> (usize, usize) {
        (0, 0)
    }
}
