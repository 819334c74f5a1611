//! The audit line, byte-compatible with refract 0.2 so existing greps and
//! fail2ban filters keep matching:
//!
//! `YYYY/MM/DD HH:MM:SS disallowed concurrent connection from KEY w/ origin KEY[,KEY…] [TAG] email: USER`

use std::io::Write;

use crate::clock::Timestamp;
use crate::policy::Ban;

/// Appends the audit line for `ban` decided at `ts` (without the newline) to
/// `out`. Invalid UTF-8 in the tag or user is written as it came.
pub fn write_line(out: &mut Vec<u8>, ts: Timestamp, ban: &Ban) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{ts} disallowed concurrent connection from {} w/ origin ",
        ban.key
    );
    for (i, k) in ban.origins.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{k}");
    }
    out.extend_from_slice(b" [");
    out.extend_from_slice(&ban.tag);
    out.extend_from_slice(b"] email: ");
    out.extend_from_slice(&ban.user);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Civil;
    use crate::key::Key;

    #[test]
    fn matches_refract_0_2() {
        let ts = Timestamp::from_civil(
            Civil {
                year: 2026,
                month: 11,
                day: 21,
                hour: 10,
                minute: 0,
                second: 4,
            },
            0,
        )
        .unwrap();
        let ban = Ban {
            key: Key::V4("192.0.2.44".parse().unwrap()),
            user: b"alice@example.com"[..].into(),
            origins: vec![
                Key::V4("198.51.100.23".parse().unwrap()),
                Key::new("2001:db8:5:6::a".parse().unwrap(), 64),
            ],
            tag: b"vless-in"[..].into(),
            until: 0,
        };
        let mut out = Vec::new();
        write_line(&mut out, ts, &ban);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026/11/21 10:00:04 disallowed concurrent connection from 192.0.2.44 \
             w/ origin 198.51.100.23,2001:db8:5:6::/64 [vless-in] email: alice@example.com"
        );
    }
}
