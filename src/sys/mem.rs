//! `memchr(3)` from libc, for the byte searches over more than a few words
//! (the newline at the end of every line, the parser's scans over the rest
//! of a line): glibc picks a vectorized version (SSE2, AVX2 or EVEX) when
//! it loads, which safe Rust on stable cannot match without SIMD
//! intrinsics, `unsafe` too. `crate::lines` keeps its word-at-a-time search
//! for short slices, where the call costs more than it saves, and for the
//! backward searches, where memrchr(3) gained nothing (measured:
//! benches/NOTES.md).

/// Index of the first `b` in `hay`.
#[inline]
pub fn memchr(hay: &[u8], b: u8) -> Option<usize> {
    if hay.is_empty() {
        return None;
    }
    // SAFETY: `hay` is `hay.len()` initialized bytes, borrowed for the whole
    // call; memchr(3) reads at most that many bytes from its start and
    // returns either null or a pointer to one of them, never writes.
    let p = unsafe { libc::memchr(hay.as_ptr().cast(), libc::c_int::from(b), hay.len()) };
    if p.is_null() {
        None
    } else {
        Some(p as usize - hay.as_ptr() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_position() {
        let mut hay = vec![b'a'; 300];
        assert_eq!(memchr(&hay, b'\n'), None);
        assert_eq!(memchr(&[], b'\n'), None);
        for at in [0, 1, 7, 8, 15, 16, 31, 32, 63, 64, 199, 299] {
            hay[at] = b'\n';
            for start in [0, 1, 3, 17] {
                let want = hay[start..].iter().position(|&x| x == b'\n');
                assert_eq!(memchr(&hay[start..], b'\n'), want, "at {at} from {start}");
            }
            hay[at] = b'a';
        }
    }
}
