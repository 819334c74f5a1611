//! RESP2, the Redis serialization protocol (redis.io/docs/reference/
//! protocol-spec), sans-I/O: commands are written as arrays of bulk
//! strings ([`encode`]); replies are read from a byte buffer as they
//! arrive ([`decode`]: a complete reply and its length, or "need more").
//! Valkey speaks the same.
//!
//! The decoder is the one place bytes from the server reach: it bounds a
//! bulk string ([`MAX_BULK`]), an array's length ([`MAX_ARRAY`]) and the
//! nesting depth ([`MAX_DEPTH`]), never allocates more than the input
//! holds, and never panics (fuzzed in `fuzz/`).

/// Longest bulk string accepted.
pub const MAX_BULK: usize = 1 << 20;
/// Most elements in one array.
pub const MAX_ARRAY: usize = 1 << 16;
/// Deepest nesting.
pub const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`, `-NOSCRIPT …`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nfoo`; `None`: the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n…`; `None`: the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// Why the bytes are not RESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a RESP type byte, a bad length, a missing `\r\n`.
    Malformed,
    /// Past [`MAX_BULK`], [`MAX_ARRAY`] or [`MAX_DEPTH`].
    TooBig,
}

/// Appends the command `args` (an array of bulk strings) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first complete reply in `buf` and how many bytes it took;
/// `Ok(None)` when `buf` holds only part of one.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, DecodeError> {
    let mut at = 0;
    match value(buf, &mut at, 0)? {
        Some(r) => Ok(Some((r, at))),
        None => Ok(None),
    }
}

/// The line from `*at` to `\r\n` (exclusive), moving `*at` past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, DecodeError> {
    let rest = &buf[*at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(n) => {
            *at += n + 2;
            Ok(Some(&rest[..n]))
        }
        // A line longer than any length or simple reply we accept.
        None if rest.len() > 64 << 10 => Err(DecodeError::TooBig),
        None => Ok(None),
    }
}

fn int(s: &[u8]) -> Result<i64, DecodeError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(DecodeError::Malformed)
}

fn value(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooBig);
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    *at += 1;
    let Some(head) = line(buf, at)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(Some(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(int(head)?),
        b'$' => {
            let n = int(head)?;
            if n == -1 {
                return Ok(Some(Reply::Bulk(None)));
            }
            let n = usize::try_from(n).map_err(|_| DecodeError::Malformed)?;
            if n > MAX_BULK {
                return Err(DecodeError::TooBig);
            }
            if buf.len() < *at + n + 2 {
                return Ok(None);
            }
            if &buf[*at + n..*at + n + 2] != b"\r\n" {
                return Err(DecodeError::Malformed);
            }
            let v = buf[*at..*at + n].to_vec();
            *at += n + 2;
            Reply::Bulk(Some(v))
        }
        b'*' => {
            let n = int(head)?;
            if n == -1 {
                return Ok(Some(Reply::Array(None)));
            }
            let n = usize::try_from(n).map_err(|_| DecodeError::Malformed)?;
            if n > MAX_ARRAY {
                return Err(DecodeError::TooBig);
            }
            // No allocation beyond what the input can hold: each element
            // takes at least 3 bytes.
            let mut v = Vec::with_capacity(n.min((buf.len() - *at) / 3));
            for _ in 0..n {
                match value(buf, at, depth + 1)? {
                    Some(r) => v.push(r),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(v))
        }
        _ => return Err(DecodeError::Malformed),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"EVALSHA", b"abc", b"1", b"refract:{alice}"]);
        assert_eq!(
            out,
            b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$15\r\nrefract:{alice}\r\n"
        );
    }

    #[test]
    fn every_reply_type_whole_and_in_pieces() {
        let wire: &[u8] =
            b"+OK\r\n-NOSCRIPT No matching script\r\n:-7\r\n$3\r\nfoo\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n";
        let want = [
            Reply::Simple("OK".into()),
            Reply::Error("NOSCRIPT No matching script".into()),
            Reply::Int(-7),
            Reply::Bulk(Some(b"foo".to_vec())),
            Reply::Bulk(None),
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(Vec::new()))])),
            ])),
            Reply::Array(None),
        ];
        let mut at = 0;
        for w in &want {
            let (r, n) = decode(&wire[at..]).unwrap().unwrap();
            assert_eq!(&r, w);
            at += n;
        }
        assert_eq!(at, wire.len());
        // Cut anywhere: never a wrong reply, only "need more".
        for cut in 0..wire.len() {
            let mut at = 0;
            while let Some((_, n)) = decode(&wire[at..cut]).unwrap() {
                at += n;
            }
        }
    }

    #[test]
    fn garbage_and_huge_lengths_are_refused() {
        assert_eq!(decode(b"?x\r\n"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"$x\r\n"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"$3\r\nfooXX"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"$99999999\r\n"), Err(DecodeError::TooBig));
        assert_eq!(decode(b"*99999999\r\n"), Err(DecodeError::TooBig));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert_eq!(decode(deep.as_bytes()), Err(DecodeError::TooBig));
    }

    /// A cheap stand-in for the fuzzer in every test run: random bytes and
    /// random cuts of valid replies never panic, and a reply never claims
    /// more than it was given.
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"+-:$*\r\n0123456789-abc";
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(Some((_, n))) = decode(&buf) {
                assert!(n <= buf.len());
            }
        }
    }
}
