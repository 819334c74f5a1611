//! Splitting bytes into lines, and the byte search under it.
//!
//! [`Lines`] cuts a stream that arrives in chunks (mmap windows, `pread`
//! buffers, stdin reads) into lines: a line split across chunks is carried
//! (copied once) until its newline, a line longer than `max_line` is skipped
//! up to its newline and reported once as [`TooLong`], never buffered whole,
//! and a last line without its newline is handed out by [`Lines::finish`].
//! `tail` (the live follower) and `replay` both read through it, so the
//! daemon and a replay see the same lines.
//!
//! [`find_byte`] and [`rfind_byte`] look at eight bytes per step (SWAR, in
//! safe code); `find_byte` hands slices of 32 bytes or more to libc's
//! vectorized memchr ([`crate::sys::mem`]). The newline search here and the
//! parser's scans for ` `, `:`, `]` and `>` use them.

/// A line longer than the `max_line` cap: skipped, not buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

/// Splits a byte stream into lines, carrying a partial line between chunks
/// and skipping (not buffering) lines longer than `max_line`.
#[derive(Debug)]
pub struct Lines {
    carry: Vec<u8>,
    max_line: usize,
    /// Inside an over-long line: drop bytes until its newline.
    skipping: bool,
}

impl Lines {
    pub fn new(max_line: usize) -> Lines {
        Lines {
            carry: Vec::new(),
            max_line,
            skipping: false,
        }
    }

    /// Feeds `chunk`; calls `f` with each complete line (without `\n`), or
    /// with `Err(TooLong)` once per over-long line.
    pub fn feed(&mut self, mut chunk: &[u8], f: &mut impl FnMut(Result<&[u8], TooLong>)) {
        while let Some(nl) = find_byte(chunk, b'\n') {
            let (head, tail) = (&chunk[..nl], &chunk[nl + 1..]);
            if self.skipping {
                self.skipping = false;
            } else if self.carry.is_empty() {
                if head.len() > self.max_line {
                    f(Err(TooLong));
                } else {
                    f(Ok(head));
                }
            } else if self.carry.len() + head.len() > self.max_line {
                self.carry.clear();
                f(Err(TooLong));
            } else {
                self.carry.extend_from_slice(head);
                f(Ok(&self.carry));
                self.carry.clear();
            }
            chunk = tail;
        }
        if chunk.is_empty() || self.skipping {
            return;
        }
        if self.carry.len() + chunk.len() > self.max_line {
            self.carry.clear();
            self.skipping = true;
            f(Err(TooLong));
        } else {
            self.carry.extend_from_slice(chunk);
        }
    }

    /// End of input: a last line without its newline still counts.
    pub fn finish(&mut self, f: &mut impl FnMut(Result<&[u8], TooLong>)) {
        if !self.carry.is_empty() {
            f(Ok(&self.carry));
            self.carry.clear();
        }
        self.skipping = false;
    }

    /// Bytes of an incomplete line held back.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }
}

/// Word-at-a-time byte search (SWAR): the scans over a line are most of the
/// parser's work, and eight bytes per step beats one. Safe code only:
/// `chunks_exact` words, an exact zero-byte test (no false positives, so it
/// also works right-to-left).
const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// The high bit of every byte; the parser's timestamp check uses it too.
pub(crate) const HI: u64 = 0x8080_8080_8080_8080;

/// Eight bytes as one little-endian word (`c` is exactly 8 bytes long).
#[inline]
pub(crate) fn word(c: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    u64::from_le_bytes(a)
}

/// The high bit of every byte of `v` that is zero.
#[inline]
fn zero_bytes(v: u64) -> u64 {
    !(((v & LO7).wrapping_add(LO7)) | v) & HI
}

/// Index of the first `b` in `hay`.
#[inline]
pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    // Past a few words libc's vectorized memchr wins, call included (the
    // newline search, the parser's scans over the rest of a line); below,
    // the call costs more than it saves (benches/NOTES.md).
    if hay.len() >= 32 {
        return crate::sys::mem::memchr(hay, b);
    }
    let pat = u64::from(b) * 0x0101_0101_0101_0101;
    let mut chunks = hay.chunks_exact(8);
    let mut off = 0;
    for c in &mut chunks {
        let z = zero_bytes(word(c) ^ pat);
        if z != 0 {
            return Some(off + (z.trailing_zeros() / 8) as usize);
        }
        off += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == b)
        .map(|p| off + p)
}

/// Index of the last `b` in `hay`.
#[inline]
pub fn rfind_byte(hay: &[u8], b: u8) -> Option<usize> {
    let pat = u64::from(b) * 0x0101_0101_0101_0101;
    let mut chunks = hay.rchunks_exact(8);
    let mut end = hay.len();
    for c in &mut chunks {
        end -= 8;
        let z = zero_bytes(word(c) ^ pat);
        if z != 0 {
            return Some(end + (63 - z.leading_zeros()) as usize / 8);
        }
    }
    chunks.remainder().iter().rposition(|&x| x == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]], max: usize) -> Vec<Result<Vec<u8>, TooLong>> {
        let mut l = Lines::new(max);
        let mut out = Vec::new();
        let mut f = |r: Result<&[u8], TooLong>| out.push(r.map(|x| x.to_vec()));
        for c in chunks {
            l.feed(c, &mut f);
        }
        l.finish(&mut f);
        out
    }

    #[test]
    fn lines_across_chunks() {
        let got = collect(&[b"ab", b"c\nde", b"f\n\ng", b"h"], 100);
        let want: Vec<Result<Vec<u8>, TooLong>> = vec![
            Ok(b"abc".to_vec()),
            Ok(b"def".to_vec()),
            Ok(b"".to_vec()),
            Ok(b"gh".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn over_long_lines_are_skipped_once() {
        let got = collect(&[b"12345\nab", b"cdefgh", b"ij\nok\n123456789\nz"], 5);
        let want: Vec<Result<Vec<u8>, TooLong>> = vec![
            Ok(b"12345".to_vec()),
            Err(TooLong),
            Ok(b"ok".to_vec()),
            Err(TooLong),
            Ok(b"z".to_vec()),
        ];
        assert_eq!(got, want);
    }

    /// Both searches agree with `std` at every length and position around
    /// the 8-byte word boundaries, with the byte absent, once, or repeated,
    /// and with bytes that differ from it only in the high bit.
    #[test]
    fn byte_search_matches_std() {
        // Both sides of find_byte's 32-byte switch to memchr.
        for len in 0..72 {
            for a in 0..=len {
                for b in a..=len {
                    let mut hay: Vec<u8> = (0..len)
                        .map(|i| if i % 3 == 0 { 0x8a } else { b'x' })
                        .collect();
                    for p in [a, b] {
                        if p < len {
                            hay[p] = b'\n';
                        }
                    }
                    assert_eq!(
                        find_byte(&hay, b'\n'),
                        hay.iter().position(|&c| c == b'\n'),
                        "{hay:?}"
                    );
                    assert_eq!(
                        rfind_byte(&hay, b'\n'),
                        hay.iter().rposition(|&c| c == b'\n'),
                        "{hay:?}"
                    );
                }
            }
        }
    }
}
