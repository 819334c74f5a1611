//! Per-user bandwidth caps in the kernel.

pub mod kernel;
pub mod marks;
pub mod nft;
pub mod rate;
pub mod tc;

use rate::{Caps, Fields};

/// Which interface carries the clients' traffic (`--shape-dev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dev {
    /// The interface of the route to the default gateway, found at start.
    Auto,
    Named(String),
}

/// `--shape`, `--shape-dev`, `--rate-down`, `--rate-up` and the limits
/// file's `down=`/`up=` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeConfig {
    /// `--shape off`: remove what refract set up for shaping and do none,
    /// keeping the rates configured (a kill switch).
    pub off: bool,
    pub dev: Dev,
    /// `--rate-down`, `--rate-up`: the caps of users without fields of
    /// their own.
    pub defaults: Caps,
    /// The limits file's fields, by email.
    pub rates: crate::hash::Map<Box<[u8]>, Fields>,
    /// `--shape-dev` was given (shaping is wanted even before any rate).
    pub dev_given: bool,
}

impl Default for ShapeConfig {
    fn default() -> ShapeConfig {
        ShapeConfig {
            off: false,
            dev: Dev::Auto,
            defaults: Caps::default(),
            rates: crate::hash::Map::default(),
            dev_given: false,
        }
    }
}

impl ShapeConfig {
    /// Whether shaping runs: not switched off, and some cap is configured
    /// (a default, a limits-file field) or `--shape-dev` was given.
    pub fn enabled(&self) -> bool {
        !self.off && (self.dev_given || self.defaults.is_capped() || self.any_field())
    }

    fn any_field(&self) -> bool {
        self.rates
            .values()
            .any(|f| f.caps(Caps::default()).is_capped())
    }

    /// The caps of `email`: its fields, else the defaults.
    pub fn caps_of(&self, email: &[u8]) -> Caps {
        match self.rates.get(email) {
            Some(f) => f.caps(self.defaults),
            None => self.defaults,
        }
    }

    /// For the settings line: `shape off`, `shape none`, or
    /// `shape eth0 (down 20mbit, up 5mbit default; 12 per-user)`.
    pub fn summary(&self) -> String {
        if self.off {
            return "shape off".to_string();
        }
        if !self.enabled() {
            return "shape none".to_string();
        }
        let dev = match &self.dev {
            Dev::Auto => "auto",
            Dev::Named(n) => n,
        };
        let r = |r: Option<rate::Rate>| r.map_or("none".to_string(), |r| r.to_string());
        format!(
            "shape {dev} (rate-down {}, rate-up {}, {} per-user)",
            r(self.defaults.down),
            r(self.defaults.up),
            self.rates.len()
        )
    }
}

/// Removes everything refract set up for shaping: its root qdisc (with
/// its classes and filter) on every link, and the table
/// `inet refract_shape`. Returns what was removed, one item each.
pub fn remove_all() -> std::io::Result<Vec<String>> {
    let mut removed = tc::remove_everywhere(&mut tc::open()?)?;
    let mut sock = nft::open()?;
    if nft::exists(&mut sock)? {
        nft::remove(&mut sock)?;
        removed.push(format!("table inet {}", nft::TABLE));
    }
    Ok(removed)
}

/// `refract cleanup`'s part for shaping: what there is, removed unless
/// `dry_run`.
pub fn cleanup_report(dry_run: bool) -> std::io::Result<String> {
    if crate::enforce::ipset::lock::held(&[kernel::LOCK])?.is_some() {
        return Err(std::io::Error::other(
            "shape: a running refract shapes here; stop it first (systemctl stop refract)",
        ));
    }
    if dry_run {
        let mut found: Vec<String> = tc::qdiscs(&mut tc::open()?)?
            .iter()
            .filter(|q| tc::is_ours(q))
            .map(|q| format!("htb {} on link {}", tc::handle_str(q.handle), q.ifindex))
            .collect();
        if nft::exists(&mut nft::open()?)? {
            found.push(format!("table inet {}", nft::TABLE));
        }
        return Ok(if found.is_empty() {
            "shape: nothing of refract's\n".to_string()
        } else {
            format!("shape: would remove {}\n", found.join(", "))
        });
    }
    let removed = remove_all()?;
    Ok(if removed.is_empty() {
        "shape: nothing of refract's\n".to_string()
    } else {
        format!("shape: removed {}\n", removed.join(", "))
    })
}
