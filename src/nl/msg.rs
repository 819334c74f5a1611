//! Reading netlink replies: a message iterator and an attribute iterator,
//! both views over a received buffer (no copies, no pointer casts).
//!
//! The message iterator yields [`Reply`] values and stops for good at the
//! first malformed header (a length shorter than the header or running past
//! the buffer): after that nothing in the datagram can be trusted. An
//! `NLMSG_ERROR` with `error == 0` is an ACK; a negative `error` is mapped
//! to its positive errno (`include/uapi/linux/netlink.h`, `struct
//! nlmsgerr`); a positive one is malformed, so [`Reply::Error`] always
//! carries an errno > 0. `NLMSG_DONE` ends a dump and may carry an `int` status.

use crate::nl::buf::{align, NLA_HDRLEN, NLMSG_HDRLEN};

/// One netlink message header and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the 16-byte header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

/// What one message in a reply means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A data message (a dump entry, a list reply, …).
    Data(Msg<'a>),
    /// `NLMSG_ERROR` with error 0: the request with this sequence succeeded.
    Ack(u32),
    /// `NLMSG_ERROR` with a negative error: errno for this sequence.
    Error { seq: u32, errno: i32 },
    /// `NLMSG_DONE`: the dump with this sequence is complete.
    Done(u32),
}

/// The reply iterator could not read on: the rest of the buffer is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// Byte offset of the bad header.
    pub at: usize,
}

/// Iterates over the messages of one received datagram.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    dead: bool,
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages {
            buf,
            pos: 0,
            dead: false,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Reply<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.dead || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let at = self.pos;
        let bad = |s: &mut Self| {
            s.dead = true;
            Some(Err(Malformed { at }))
        };
        if rest.len() < NLMSG_HDRLEN {
            return bad(self);
        }
        let len = u32_at(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return bad(self);
        }
        let msg = Msg {
            ty: u16_at(rest, 4),
            flags: u16_at(rest, 6),
            seq: u32_at(rest, 8),
            pid: u32_at(rest, 12),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        self.pos += align(len).min(rest.len());
        let reply = match i32::from(msg.ty) {
            libc::NLMSG_ERROR => {
                // struct nlmsgerr { int error; struct nlmsghdr msg; ... }
                if msg.payload.len() < 4 {
                    return bad(self);
                }
                let err = u32_at(msg.payload, 0) as i32;
                if err > 0 {
                    // The kernel writes 0 or -errno; anything else is not
                    // a reply we can pin an errno on (found by fuzzing).
                    return bad(self);
                }
                if err == 0 {
                    Reply::Ack(msg.seq)
                } else {
                    Reply::Error {
                        seq: msg.seq,
                        errno: err.saturating_neg(),
                    }
                }
            }
            libc::NLMSG_DONE => {
                let status = if msg.payload.len() >= 4 {
                    u32_at(msg.payload, 0) as i32
                } else {
                    0
                };
                if status < 0 {
                    Reply::Error {
                        seq: msg.seq,
                        errno: status.saturating_neg(),
                    }
                } else {
                    Reply::Done(msg.seq)
                }
            }
            _ => Reply::Data(msg),
        };
        Some(Ok(reply))
    }
}

/// One attribute: its type without the `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER`
/// flags, and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub ty: u16,
    pub nested: bool,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Option<u8> {
        self.payload.first().copied()
    }
    pub fn u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.payload.get(..2)?.try_into().ok()?))
    }
    pub fn u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
    pub fn u16_be(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.payload.get(..2)?.try_into().ok()?))
    }
    pub fn u32_be(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
    /// A string attribute without its NUL terminator.
    pub fn str(&self) -> &'a [u8] {
        let p = self.payload;
        match p.iter().position(|&b| b == 0) {
            Some(n) => &p[..n],
            None => p,
        }
    }
    /// The children of a nested attribute.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }
}

/// Iterates over a run of attributes; stops at the first malformed one.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Attrs<'a> {
        Attrs { buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if self.buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16_at(self.buf, 0) as usize;
        let raw_ty = u16_at(self.buf, 2);
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let attr = Attr {
            ty: raw_ty & libc::NLA_TYPE_MASK as u16,
            nested: raw_ty & libc::NLA_F_NESTED as u16 != 0,
            payload: &self.buf[NLA_HDRLEN..len],
        };
        self.buf = &self.buf[align(len).min(self.buf.len())..];
        Some(attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::buf::NlBuf;

    #[test]
    fn ack_error_done_and_data() {
        let mut b = NlBuf::new();
        b.message(libc::NLMSG_ERROR as u16, 0, 1, |b| {
            b.put(&0i32.to_ne_bytes());
            b.put(&[0; 16]); // the echoed request header
        });
        b.message(libc::NLMSG_ERROR as u16, 0, 2, |b| {
            b.put(&(-libc::EEXIST).to_ne_bytes());
            b.put(&[0; 16]);
        });
        b.message(0x1234, 2, 3, |b| b.attr_u32(5, 99));
        b.message(libc::NLMSG_DONE as u16, 2, 3, |b| {
            b.put(&0i32.to_ne_bytes())
        });
        let got: Vec<_> = Messages::new(b.as_bytes()).collect();
        assert_eq!(got[0], Ok(Reply::Ack(1)));
        assert_eq!(
            got[1],
            Ok(Reply::Error {
                seq: 2,
                errno: libc::EEXIST
            })
        );
        let Ok(Reply::Data(m)) = got[2] else {
            panic!("{:?}", got[2])
        };
        assert_eq!((m.ty, m.seq), (0x1234, 3));
        let a: Vec<_> = Attrs::new(m.payload).collect();
        assert_eq!((a[0].ty, a[0].u32()), (5, Some(99)));
        assert_eq!(got[3], Ok(Reply::Done(3)));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn stops_at_first_malformed_message() {
        let mut b = NlBuf::new();
        b.message(0x10, 0, 1, |_| {});
        let mut bytes = b.as_bytes().to_vec();
        // A second header claiming 4000 bytes in a 16-byte remainder.
        bytes.extend_from_slice(&4000u32.to_ne_bytes());
        bytes.extend_from_slice(&[0; 12]);
        b.clear();
        b.message(0x10, 0, 3, |_| {});
        bytes.extend_from_slice(b.as_bytes());
        let got: Vec<_> = Messages::new(&bytes).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Ok(Reply::Data(_))));
        assert_eq!(got[1], Err(Malformed { at: 16 }));
        // Truncated header.
        assert_eq!(
            Messages::new(&[1, 2, 3]).collect::<Vec<_>>(),
            vec![Err(Malformed { at: 0 })]
        );
    }

    /// Fuzzer find (`fuzz/fuzz_targets/netlink.rs`): an `NLMSG_ERROR` whose
    /// `error` is positive (33) came out as `Reply::Error` with errno -33.
    /// The kernel never writes that; it is malformed, and what follows is
    /// dropped.
    #[test]
    fn positive_nlmsgerr_error_is_malformed() {
        #[rustfmt::skip]
        let crash: &[u8] = &[
            0x40, 0x00, 0x00, 0x00, 0x0d, 0x06, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x00, 0x00, 0x05, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x03, 0x00,
            0x68, 0x61, 0x73, 0x68, 0x3a, 0x69, 0x70, 0x00, 0x05, 0x00, 0x05, 0x00, 0x02, 0x00, 0x00, 0x00,
            0x05, 0x00, 0x04, 0x00, 0x06, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0xf9, 0xef, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let got: Vec<_> = Messages::new(crash).collect();
        assert_eq!(got.len(), 2);
        let Ok(Reply::Data(m)) = got[0] else {
            panic!("{:?}", got[0])
        };
        assert_eq!((m.ty, m.seq, m.payload.len()), (0x060d, 3, 48));
        assert_eq!(got[1], Err(Malformed { at: 64 }));

        // The same with the error negated is an ordinary errno.
        let mut b = NlBuf::new();
        b.message(libc::NLMSG_ERROR as u16, 0, 3, |b| {
            b.put(&(-33i32).to_ne_bytes());
            b.put(&[0; 16]);
        });
        let got: Vec<_> = Messages::new(b.as_bytes()).collect();
        assert_eq!(got, vec![Ok(Reply::Error { seq: 3, errno: 33 })]);
    }

    #[test]
    fn attrs_stop_at_bad_length_and_strip_flags() {
        let mut b = NlBuf::new();
        b.nested(3, |b| b.attr_str(1, "refract"));
        let mut bytes = b.as_bytes().to_vec();
        bytes.extend_from_slice(&[200, 0, 1, 0]); // nla_len 200: past the end
        let a: Vec<_> = Attrs::new(&bytes).collect();
        assert_eq!(a.len(), 1);
        assert!(a[0].nested);
        assert_eq!(a[0].ty, 3);
        assert_eq!(a[0].attrs().next().unwrap().str(), b"refract");
    }
}
