//! The mark table, without I/O: which capped user has which mark, which
//! connections were handed which mark, and what must change in the kernel
//! when lines arrive, the limits file is re-read, or a mark falls idle.
//!
//! - A **mark** is `MARK_TAG | minor`, minor in `1..=MAX_MINOR`; the minor
//!   is also the user's HTB class (`5246:minor`). One per capped user, from
//!   a table: no two users share one (no checksum of the email, so no
//!   collisions). Minors are handed out round-robin, so a released one is
//!   reused as late as possible.
//! - A line of a capped user with a client port names one connection: its
//!   `(address, port)` becomes a *peer* element (→ the user's mark) unless
//!   the same peer was handed the same mark within [`PEER_REFRESH`] (mux
//!   sub-streams repeat their connection's peer). At most [`MAX_PEERS`]
//!   are remembered; beyond, the oldest is forgotten (it is only sent again).
//! - A mark is **released** when its user has had no line for
//!   [`RELEASE_IDLE`] and the kernel holds no connection with the mark
//!   (the daemon asks conntrack, [`Marks::idle`] lists the candidates;
//!   [`Marks::release`] or [`Marks::still_used`] is the answer). A mark
//!   still on a live connection is never given to someone else.
//! - The limits file re-read ([`Marks::reload`]): users whose caps changed
//!   are changed in place, users without caps any more are released.
//!
//! Every change comes out as an [`Op`] for the daemon to send.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::rate::Caps;
use crate::clock::{Micros, SECOND};
use crate::hash::Map;

/// The high 16 bits of every mark refract sets: a mark from someone else
/// (a VPN's fwmark, a router's policy routing) is never taken for a user.
pub const MARK_TAG: u32 = 0x5246_0000;
/// The mask of [`MARK_TAG`].
pub const MARK_TAG_MASK: u32 = 0xffff_0000;
/// Highest minor (0xffff is kept clear of: minors from `0xffe0` on name
/// special handles in `pkt_sched.h`, and 0 is the qdisc itself).
pub const MAX_MINOR: u16 = 0xfffe;
/// A peer handed the same mark within this long is not sent again.
pub const PEER_REFRESH: Micros = 60 * SECOND;
/// Peers remembered at most.
pub const MAX_PEERS: usize = 8192;
/// A user without a line for this long is a candidate for release.
pub const RELEASE_IDLE: Micros = 10 * 60 * SECOND;

/// The mark of `minor`.
pub const fn mark(minor: u16) -> u32 {
    MARK_TAG | minor as u32
}

/// The minor of a mark refract set, or `None` for anyone else's.
pub fn minor_of(mark: u32) -> Option<u16> {
    let minor = (mark & 0xffff) as u16;
    (mark & MARK_TAG_MASK == MARK_TAG && (1..=MAX_MINOR).contains(&minor)).then_some(minor)
}

/// A change the kernel must make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new capped user: its class (if `caps.down`), its element in the
    /// users set, its upload limit (if `caps.up`).
    AddUser {
        minor: u16,
        email: Box<[u8]>,
        caps: Caps,
    },
    /// A user's caps changed.
    ChangeUser {
        minor: u16,
        email: Box<[u8]>,
        old: Caps,
        new: Caps,
    },
    /// A user released: everything [`Op::AddUser`] made goes.
    DelUser {
        minor: u16,
        email: Box<[u8]>,
        caps: Caps,
    },
    /// A connection of the user with `minor`.
    Peer { peer: SocketAddr, minor: u16 },
}

#[derive(Clone, Debug)]
struct User {
    minor: u16,
    caps: Caps,
    last_line: Micros,
    /// When conntrack was last found holding the mark (release checks).
    checked: Micros,
    /// A release check is in flight.
    checking: bool,
}

/// What `refract user` shows of a capped user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserView {
    pub mark: u32,
    pub caps: Caps,
}

/// The table. See the module docs.
#[derive(Debug, Default)]
pub struct Marks {
    users: Map<Box<[u8]>, User>,
    by_minor: Map<u16, Box<[u8]>>,
    /// The next minor to try.
    next: u16,
    peers: Map<SocketAddr, (u16, Micros)>,
    peer_order: VecDeque<SocketAddr>,
    /// Lines of capped users that found every minor taken.
    pub full: u64,
}

impl Marks {
    pub fn new() -> Marks {
        Marks {
            next: 1,
            ..Marks::default()
        }
    }

    /// Capped users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Takes back what a previous run left in the kernel (the users set:
    /// mark and email), before any line: those users keep their marks,
    /// which connections in conntrack still carry. `caps` are what they
    /// were made with, as far as known (the daemon reconciles them with
    /// the configuration through [`Marks::reload`]). Marks not refract's,
    /// and a second email for a mark, are skipped.
    pub fn restore(
        &mut self,
        now: Micros,
        users: impl IntoIterator<Item = (u32, Box<[u8]>, Caps)>,
    ) {
        for (m, email, caps) in users {
            let Some(minor) = minor_of(m) else { continue };
            if self.by_minor.contains_key(&minor) || self.users.contains_key(&email) {
                continue;
            }
            self.by_minor.insert(minor, email.clone());
            self.users.insert(
                email,
                User {
                    minor,
                    caps,
                    last_line: now,
                    checked: now,
                    checking: false,
                },
            );
            if minor >= self.next {
                self.next = if minor == MAX_MINOR { 1 } else { minor + 1 };
            }
        }
    }

    fn allocate(&mut self) -> Option<u16> {
        if self.by_minor.len() >= usize::from(MAX_MINOR) {
            return None;
        }
        loop {
            let m = self.next;
            self.next = if m >= MAX_MINOR { 1 } else { m + 1 };
            if !self.by_minor.contains_key(&m) {
                return Some(m);
            }
        }
    }

    /// An accepted line of `email` from `peer` (`None`: no client port, so
    /// no connection to mark); `caps` gives the user's caps, asked only
    /// for a user without a mark yet (the common line, a user's further
    /// one, costs one lookup here). Returns the user's minor, if capped
    /// and one could be had.
    pub fn line(
        &mut self,
        now: Micros,
        email: &[u8],
        peer: Option<SocketAddr>,
        caps: impl FnOnce() -> Caps,
        ops: &mut Vec<Op>,
    ) -> Option<u16> {
        let minor = match self.users.get_mut(email) {
            Some(u) => {
                u.last_line = now;
                u.minor
            }
            None => {
                let caps = caps();
                if !caps.is_capped() {
                    return None;
                }
                let Some(minor) = self.allocate() else {
                    self.full += 1;
                    return None;
                };
                let email: Box<[u8]> = email.into();
                self.by_minor.insert(minor, email.clone());
                self.users.insert(
                    email.clone(),
                    User {
                        minor,
                        caps,
                        last_line: now,
                        checked: now,
                        checking: false,
                    },
                );
                ops.push(Op::AddUser { minor, email, caps });
                minor
            }
        };
        if let Some(peer) = peer.filter(|p| p.port() != 0) {
            let fresh = matches!(
                self.peers.get(&peer),
                Some(&(m, at)) if m == minor && now.saturating_sub(at) < PEER_REFRESH
            );
            if !fresh {
                if self.peers.insert(peer, (minor, now)).is_none() {
                    self.peer_order.push_back(peer);
                    while self.peer_order.len() > MAX_PEERS {
                        if let Some(old) = self.peer_order.pop_front() {
                            self.peers.remove(&old);
                        }
                    }
                }
                ops.push(Op::Peer { peer, minor });
            }
        }
        Some(minor)
    }

    /// The limits file (or the defaults) changed: `caps_of` gives each
    /// user's caps now. Changed users are changed, uncapped ones released.
    pub fn reload(&mut self, caps_of: impl Fn(&[u8]) -> Caps, ops: &mut Vec<Op>) {
        let mut gone = Vec::new();
        for (email, u) in &mut self.users {
            let new = caps_of(email);
            if !new.is_capped() {
                gone.push(u.minor);
            } else if new != u.caps {
                ops.push(Op::ChangeUser {
                    minor: u.minor,
                    email: email.clone(),
                    old: u.caps,
                    new,
                });
                u.caps = new;
            }
        }
        gone.sort_unstable();
        for minor in gone {
            self.release(minor, ops);
        }
    }

    /// Users idle for [`RELEASE_IDLE`] whose mark was not checked within
    /// that time either, at most `max`; each is marked as being checked
    /// until [`Marks::release`] or [`Marks::still_used`].
    pub fn idle(&mut self, now: Micros, max: usize) -> Vec<u16> {
        let mut out = Vec::new();
        for u in self.users.values_mut() {
            if out.len() >= max {
                break;
            }
            if !u.checking
                && now.saturating_sub(u.last_line) >= RELEASE_IDLE
                && now.saturating_sub(u.checked) >= RELEASE_IDLE
            {
                u.checking = true;
                out.push(u.minor);
            }
        }
        out.sort_unstable();
        out
    }

    /// Conntrack still holds connections with the mark of `minor` (or the
    /// check failed: nothing is released on doubt).
    pub fn still_used(&mut self, now: Micros, minor: u16) {
        if let Some(u) = self
            .by_minor
            .get(&minor)
            .and_then(|e| self.users.get_mut(e))
        {
            u.checking = false;
            u.checked = now;
        }
    }

    /// Releases `minor`: its user, peers and kernel objects go.
    pub fn release(&mut self, minor: u16, ops: &mut Vec<Op>) {
        let Some(email) = self.by_minor.remove(&minor) else {
            return;
        };
        if let Some(u) = self.users.remove(&email) {
            ops.push(Op::DelUser {
                minor,
                email,
                caps: u.caps,
            });
        }
        self.peers.retain(|_, (m, _)| *m != minor);
        let peers = &self.peers;
        self.peer_order.retain(|p| peers.contains_key(p));
    }

    /// The mark and caps of `email`, if it has one.
    pub fn user(&self, email: &[u8]) -> Option<UserView> {
        self.users.get(email).map(|u| UserView {
            mark: mark(u.minor),
            caps: u.caps,
        })
    }

    /// Every capped user with its minor and caps (for a rebuild).
    pub fn users(&self) -> impl Iterator<Item = (&[u8], u16, Caps)> {
        self.users.iter().map(|(e, u)| (&e[..], u.minor, u.caps))
    }
}

#[cfg(test)]
mod tests {
    use super::super::rate::Rate;
    use super::*;

    fn caps(down: u64, up: u64) -> Caps {
        let r = |v| (v > 0).then_some(Rate(v));
        Caps {
            down: r(down),
            up: r(up),
        }
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn marks_are_tagged_and_checked() {
        assert_eq!(mark(5), 0x5246_0005);
        assert_eq!(minor_of(0x5246_0005), Some(5));
        assert_eq!(minor_of(0x5246_0000), None);
        assert_eq!(minor_of(0x5246_ffff), None);
        assert_eq!(minor_of(0xca6c), None, "WireGuard's fwmark is not ours");
        assert_eq!(minor_of(0x1234_0005), None);
    }

    #[test]
    fn one_mark_per_capped_user_and_one_peer_per_connection() {
        let mut m = Marks::new();
        let mut ops = Vec::new();
        let c = caps(1000, 0);
        // Uncapped users get nothing.
        assert_eq!(
            m.line(0, b"bob", peer("192.0.2.1:1000"), Caps::default, &mut ops),
            None
        );
        assert!(ops.is_empty());
        let a = m
            .line(0, b"alice", peer("192.0.2.2:1000"), || c, &mut ops)
            .unwrap();
        assert_eq!(a, 1);
        assert_eq!(
            ops,
            vec![
                Op::AddUser {
                    minor: 1,
                    email: b"alice"[..].into(),
                    caps: c
                },
                Op::Peer {
                    peer: peer("192.0.2.2:1000").unwrap(),
                    minor: 1
                }
            ]
        );
        ops.clear();
        // A mux line of the same connection: nothing new.
        assert_eq!(
            m.line(SECOND, b"alice", peer("192.0.2.2:1000"), || c, &mut ops),
            Some(1)
        );
        assert!(ops.is_empty());
        // After PEER_REFRESH it is sent again (the element's timeout).
        m.line(
            PEER_REFRESH + SECOND,
            b"alice",
            peer("192.0.2.2:1000"),
            || c,
            &mut ops,
        );
        assert_eq!(ops.len(), 1);
        ops.clear();
        // A second user gets the next minor; a line without a port marks nothing.
        assert_eq!(
            m.line(0, b"carol", peer("[2001:db8::1]:0"), || c, &mut ops),
            Some(2)
        );
        assert!(matches!(ops[..], [Op::AddUser { minor: 2, .. }]));
        assert_eq!(m.user(b"carol").unwrap().mark, 0x5246_0002);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn release_waits_for_idle_and_conntrack_and_minors_are_reused_late() {
        let mut m = Marks::new();
        let mut ops = Vec::new();
        let c = caps(1000, 1000);
        m.line(0, b"alice", peer("192.0.2.2:1000"), || c, &mut ops);
        m.line(0, b"bob", peer("192.0.2.3:1000"), || c, &mut ops);
        ops.clear();
        assert!(m.idle(RELEASE_IDLE - 1, 10).is_empty());
        m.line(RELEASE_IDLE / 2, b"bob", None, || c, &mut ops);
        assert_eq!(m.idle(RELEASE_IDLE, 10), vec![1]);
        // In flight: not listed twice.
        assert!(m.idle(RELEASE_IDLE + 1, 10).is_empty());
        // Conntrack still has alice's connection: kept, checked again later.
        m.still_used(RELEASE_IDLE, 1);
        // bob's turn (idle since RELEASE_IDLE / 2, never checked); alice's
        // next check is a whole RELEASE_IDLE after the last.
        assert_eq!(m.idle(2 * RELEASE_IDLE - 1, 10), vec![2]);
        m.still_used(2 * RELEASE_IDLE - 1, 2);
        assert_eq!(m.idle(2 * RELEASE_IDLE, 10), vec![1]);
        m.release(1, &mut ops);
        assert_eq!(
            ops,
            vec![Op::DelUser {
                minor: 1,
                email: b"alice"[..].into(),
                caps: c
            }]
        );
        assert!(m.user(b"alice").is_none());
        // alice comes back: a new minor, not the one just released.
        ops.clear();
        assert_eq!(
            m.line(3 * RELEASE_IDLE, b"alice", None, || c, &mut ops),
            Some(3)
        );
    }

    #[test]
    fn reload_changes_in_place_and_releases_the_uncapped() {
        let mut m = Marks::new();
        let mut ops = Vec::new();
        m.line(0, b"alice", None, || caps(1000, 0), &mut ops);
        m.line(0, b"bob", None, || caps(1000, 0), &mut ops);
        ops.clear();
        m.reload(
            |e| {
                if e == b"alice" {
                    caps(2000, 500)
                } else {
                    Caps::default()
                }
            },
            &mut ops,
        );
        assert_eq!(
            ops,
            vec![
                Op::ChangeUser {
                    minor: 1,
                    email: b"alice"[..].into(),
                    old: caps(1000, 0),
                    new: caps(2000, 500)
                },
                Op::DelUser {
                    minor: 2,
                    email: b"bob"[..].into(),
                    caps: caps(1000, 0)
                }
            ]
        );
        ops.clear();
        m.reload(|_| caps(2000, 500), &mut ops);
        assert!(ops.is_empty(), "nothing changed: nothing sent");
    }

    #[test]
    fn restore_keeps_previous_marks_and_skips_foreign_ones() {
        let mut m = Marks::new();
        let c = caps(1000, 0);
        m.restore(
            0,
            [
                (0x5246_0007, b"alice"[..].into(), c),
                (0xca6c, b"wg"[..].into(), c),
                (0x5246_0007, b"twice"[..].into(), c),
            ],
        );
        assert_eq!(m.user(b"alice").unwrap().mark, 0x5246_0007);
        assert_eq!(m.len(), 1);
        let mut ops = Vec::new();
        // The next new user gets a minor after the restored ones.
        assert_eq!(m.line(0, b"bob", None, || c, &mut ops), Some(8));
    }

    #[test]
    fn every_minor_taken_is_counted_not_shared() {
        let mut m = Marks::new();
        let mut ops = Vec::new();
        let c = caps(1000, 0);
        for i in 0..u32::from(MAX_MINOR) {
            assert!(m
                .line(0, format!("u{i}").as_bytes(), None, || c, &mut ops)
                .is_some());
        }
        assert_eq!(m.line(0, b"one-too-many", None, || c, &mut ops), None);
        assert_eq!(m.full, 1);
        m.release(7, &mut ops);
        assert_eq!(m.line(0, b"one-too-many", None, || c, &mut ops), Some(7));
    }

    #[test]
    fn peers_are_bounded() {
        let mut m = Marks::new();
        let mut ops = Vec::new();
        let c = caps(1000, 0);
        for i in 0..(MAX_PEERS + 10) {
            let p = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1000));
            m.line(0, b"alice", Some(p), || c, &mut ops);
        }
        assert_eq!(m.peers.len(), MAX_PEERS);
        assert_eq!(m.peer_order.len(), MAX_PEERS);
    }
}
