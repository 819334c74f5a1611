//! `NlBuf`: a small writer for netlink requests.
//!
//! Layout rules from `include/uapi/linux/netlink.h`: every message starts
//! with a 16-byte `struct nlmsghdr` whose `nlmsg_len` covers the whole
//! message; attributes are `struct nlattr` (`nla_len: u16`, `nla_type: u16`)
//! followed by the payload, each padded to `NLA_ALIGNTO` (4) bytes; a nested
//! attribute's `nla_len` covers its children. Lengths are unknown until the
//! contents are written, so the writer reserves the header and back-patches
//! the length when the closure that fills it returns. Everything is in host
//! byte order except where a family says otherwise (ipset and conntrack
//! carry addresses and many integers in network order, flagged with
//! `NLA_F_NET_BYTEORDER`).

/// `NLMSG_ALIGNTO` and `NLA_ALIGNTO` (netlink.h): both 4.
pub const ALIGNTO: usize = 4;
/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nlattr)`.
pub const NLA_HDRLEN: usize = 4;

/// Rounds `len` up to the netlink alignment.
pub const fn align(len: usize) -> usize {
    (len + ALIGNTO - 1) & !(ALIGNTO - 1)
}

/// A growable buffer holding one or more netlink messages.
#[derive(Clone, Debug, Default)]
pub struct NlBuf {
    buf: Vec<u8>,
}

impl NlBuf {
    pub fn new() -> NlBuf {
        NlBuf {
            buf: Vec::with_capacity(256),
        }
    }

    /// Appends one message: `nlmsghdr { len, ty, flags, seq, pid: 0 }`, then
    /// whatever `body` writes, with `nlmsg_len` patched afterwards.
    pub fn message(&mut self, ty: u16, flags: u16, seq: u32, body: impl FnOnce(&mut NlBuf)) {
        self.pad();
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]); // nlmsg_len, patched below
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it
        body(self);
        self.pad();
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Raw bytes (a family header such as `struct nfgenmsg`), unpadded.
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    /// Pads to the netlink alignment with zeros.
    pub fn pad(&mut self) {
        let n = align(self.buf.len()) - self.buf.len();
        self.buf.extend_from_slice(&[0; ALIGNTO][..n]);
    }

    /// One attribute with a raw payload. `ty` may carry `NLA_F_NESTED` or
    /// `NLA_F_NET_BYTEORDER`.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) {
        self.pad();
        let len = (NLA_HDRLEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    pub fn attr_u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    /// A host-order `u16`.
    pub fn attr_u16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// A host-order `u32`.
    pub fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// A network-order `u16` (the caller adds `NLA_F_NET_BYTEORDER` where the
    /// family wants it).
    pub fn attr_u16_be(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A network-order `u32`.
    pub fn attr_u32_be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string (`NLA_NUL_STRING`).
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        self.pad();
        let len = (NLA_HDRLEN + s.len() + 1) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// A nested attribute: `ty | NLA_F_NESTED`, children written by `body`,
    /// `nla_len` patched afterwards.
    pub fn nested(&mut self, ty: u16, body: impl FnOnce(&mut NlBuf)) {
        self.pad();
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 2]);
        self.buf
            .extend_from_slice(&(ty | libc::NLA_F_NESTED as u16).to_ne_bytes());
        body(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }

    /// A nested attribute without `NLA_F_NESTED` (the kernel's
    /// `nla_nest_start_noflag()`): how iproute2 writes, and the kernel
    /// dumps, traffic control's `TCA_OPTIONS` (tc parses it with
    /// `nla_parse_nested_deprecated()`, which takes either form).
    pub fn nested_noflag(&mut self, ty: u16, body: impl FnOnce(&mut NlBuf)) {
        self.pad();
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 2]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        body(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }

    /// Adds `flags` to the `nlmsg_flags` of the message that starts at
    /// byte `start` (an offset [`NlBuf::len`] gave before it was written,
    /// aligned): for a request whose last message is known only after it
    /// was written (an nf_tables batch acks only its last).
    pub fn add_flags_at(&mut self, start: usize, flags: u16) {
        let at = align(start) + 6;
        let old = u16::from_ne_bytes([self.buf[at], self.buf[at + 1]]);
        self.buf[at..at + 2].copy_from_slice(&(old | flags).to_ne_bytes());
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_and_nested_lengths_are_patched() {
        let mut b = NlBuf::new();
        b.message(0x0605, 0x0005, 7, |b| {
            b.put(&[2, 0, 0, 0]); // a 4-byte family header
            b.attr_u8(1, 6);
            b.nested(7, |b| {
                b.attr_u32_be(6 | libc::NLA_F_NET_BYTEORDER as u16, 60);
            });
            b.attr_str(2, "ab");
        });
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &48u32.to_ne_bytes()[..], &0x0605u16.to_ne_bytes(), &5u16.to_ne_bytes(),
            &7u32.to_ne_bytes(), &0u32.to_ne_bytes(),           // nlmsghdr
            &[2, 0, 0, 0],                                        // family header
            &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[6, 0, 0, 0], // u8 attr + pad
            &12u16.to_ne_bytes(), &(7u16 | 0x8000).to_ne_bytes(),  // nested
            &8u16.to_ne_bytes(), &(6u16 | 0x4000).to_ne_bytes(), &[0, 0, 0, 60],
            &7u16.to_ne_bytes(), &2u16.to_ne_bytes(), b"ab\0", &[0], // string + pad
        ]
        .concat();
        assert_eq!(b.as_bytes(), &want[..]);
    }

    #[test]
    fn messages_are_aligned_back_to_back() {
        let mut b = NlBuf::new();
        b.message(1, 0, 1, |b| b.put(&[1, 2, 3]));
        assert_eq!(b.len(), 20);
        b.message(2, 0, 2, |_| {});
        assert_eq!(b.len(), 36);
        assert_eq!(&b.as_bytes()[20..24], &16u32.to_ne_bytes());
    }
}
