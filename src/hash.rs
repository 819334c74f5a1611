//! The hasher behind refract's tables: a keyed folded-multiply hash.
//!
//! std's default SipHash-1-3 was an eighth of replay's instructions (one
//! user lookup and a few key lookups per line). This hash mixes eight bytes
//! per step with a 64×64→128 multiply folded back to 64 bits (the
//! construction of foldhash and wyhash), keyed per process from std's
//! `RandomState`. Keys come partly from the network (client addresses), so
//! the seed matters: without it an attacker who controls many source
//! addresses could aim them all at one bucket. It is not a MAC; it only has
//! to make collisions hard to predict from outside the process.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` with the fast keyed hasher.
pub type Map<K, V> = HashMap<K, V, Keyed>;
/// A `HashSet` with the fast keyed hasher.
pub type Set<K> = HashSet<K, Keyed>;

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// The last 0–7 bytes as a little-endian word, zero-padded, without the
/// variable-length copy (a `memcpy` call per hash): two overlapping loads
/// that agree where they overlap.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    let le32 = |s: &[u8]| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    if n >= 4 {
        le32(rest) | le32(&rest[n - 4..]) << (8 * (n - 4))
    } else if n > 0 {
        u64::from(rest[0])
            | u64::from(rest[n / 2]) << (8 * (n / 2))
            | u64::from(rest[n - 1]) << (8 * (n - 1))
    } else {
        0
    }
}

/// The per-process key. Every table built from it hashes alike.
#[derive(Clone, Copy, Debug)]
pub struct Keyed {
    seed: u64,
}

impl Default for Keyed {
    fn default() -> Keyed {
        // RandomState is seeded from the OS once per thread and then
        // incremented, so hashing a constant through it gives fresh bits.
        let seed = RandomState::new().hash_one(0x0072_6566_7261_6374_u64);
        Keyed { seed: seed | 1 }
    }
}

impl BuildHasher for Keyed {
    type Hasher = Folded;

    #[inline]
    fn build_hasher(&self) -> Folded {
        Folded {
            h: self.seed,
            seed: self.seed,
        }
    }
}

/// The hasher state.
#[derive(Clone, Copy, Debug)]
pub struct Folded {
    h: u64,
    seed: u64,
}

impl Hasher for Folded {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.h = fold(self.h ^ u64::from_le_bytes(w), MUL);
        }
        // The length goes in too, so "a" and "a\0" differ.
        self.h = fold(
            self.h ^ tail_word(chunks.remainder()),
            MUL ^ bytes.len() as u64,
        );
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.h = fold(self.h ^ i, MUL);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.h, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn h<T: Hash>(k: &Keyed, v: T) -> u64 {
        k.hash_one(v)
    }

    #[test]
    fn deterministic_per_key_and_spread() {
        let k = Keyed::default();
        assert_eq!(h(&k, b"alice@example.com"), h(&k, b"alice@example.com"));
        assert_ne!(h(&k, &b"a"[..]), h(&k, &b"a\0"[..]));
        assert_ne!(h(&k, 1u32), h(&k, 2u32));
        // Sequential IPv4 keys fill the low bits (which hashbrown uses) evenly.
        let mut buckets = [0u32; 64];
        for i in 0..64_000u32 {
            buckets[(h(&k, crate::key::Key::V4(i.into())) & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (700..1300).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn tail_word_is_the_zero_padded_word() {
        let bytes = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
        for n in 0..=7 {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(tail_word(&bytes[..n]), u64::from_le_bytes(w), "{n}");
        }
    }

    #[test]
    fn processes_get_different_keys() {
        let a = Keyed::default();
        let b = Keyed::default();
        assert_ne!(h(&a, 42u64), h(&b, 42u64));
    }
}
