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

/// `refract check`'s part for shaping: the device and its root qdisc, and
/// every kernel piece the data plane needs, each tried in a scratch
/// network namespace (HTB, its class and the classic cls_bpf filter; the
/// table with its conntrack-mark rules, a limit object and the objref map;
/// the conntrack dump by mark). `(what, Ok(detail) | Err(problem))`.
pub fn check(cfg: &ShapeConfig, ports: &[u16]) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    let dev = match &cfg.dev {
        Dev::Auto => "auto",
        Dev::Named(n) => n.as_str(),
    };
    match tc::resolve_dev(dev) {
        Ok(d) => {
            let root = tc::open()
                .and_then(|mut s| tc::qdiscs(&mut s))
                .map(|qs| qs.into_iter().find(|q| q.ifindex == d.index && q.is_root()));
            let r = match root {
                Ok(Some(q)) if tc::is_ours(&q) => {
                    Ok(format!("{}: refract's root qdisc 5246: is there", d.name))
                }
                Ok(Some(q)) if q.handle == 0 => Ok(format!(
                    "{}: the kernel's default root qdisc ({}) will be replaced by refract's",
                    d.name, q.kind
                )),
                Ok(Some(q)) => Err(format!(
                    "{}: the root qdisc is someone else's ({} {}); refract will not replace it",
                    d.name,
                    q.kind,
                    tc::handle_str(q.handle)
                )),
                Ok(None) => Ok(format!("{}: no root qdisc yet", d.name)),
                Err(e) => Err(e.to_string()),
            };
            out.push(("shape device".to_string(), r));
        }
        Err(e) => out.push(("shape device".to_string(), Err(e.to_string()))),
    }
    for (feature, r) in tc::check_kernel() {
        out.push((format!("shape: {feature}"), r.map(|()| "works".to_string())));
    }
    let nft = tc::scratch_socket(libc::NETLINK_NETFILTER).and_then(|mut s| {
        let user = nft::User {
            mark: marks::mark(1),
            email: "check@refract",
            up_bytes_per_s: Some(125_000),
        };
        nft::ensure(&mut s, ports, &[user])?;
        let mut buf = crate::nl::buf::NlBuf::new();
        crate::nl::conntrack::MarkDump {
            mark: marks::mark(1),
            mask: u32::MAX,
        }
        .emit(&mut buf, s.next_seq());
        s.request(&buf, std::time::Duration::from_secs(5))
            .map_err(|e| std::io::Error::new(e.kind(), format!("conntrack dump by mark: {e}")))?;
        Ok(())
    });
    out.push((
        "shape: nftables marks and limits".to_string(),
        nft.map(|()| "works (ct mark rules, concatenation maps, limit objects, objref map, conntrack by mark)".to_string())
            .map_err(|e| e.to_string()),
    ));
    out
}
