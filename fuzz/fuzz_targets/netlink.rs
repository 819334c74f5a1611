//! The netlink reply path on arbitrary datagrams: `Messages` over the
//! buffer, and for every data message the family parsers the daemon runs on
//! kernel replies (`ipset::ListParser::feed` and `parse_type`,
//! `diag::parse_socket`, `conntrack::parse_flow`) plus a walk of every
//! attribute run they could see (`Attrs`, nested up to a fixed depth).
//! Never panics; every view stays inside the datagram, and the iterator
//! stops for good at the first malformed header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refract::nl::diag::{parse_socket, DIAG_MSG_LEN};
use refract::nl::ipset::{parse_type, ListParser};
use refract::nl::msg::{Attrs, Messages, Reply};
use refract::nl::{conntrack, consts::NFGENMSG_LEN};

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    o.start <= i.start && i.end <= o.end
}

/// Walks a run of attributes and their children (a nested flag is not
/// required: the family parsers descend by type, not by flag).
fn walk(outer: &[u8], run: &[u8], depth: u32) {
    for a in Attrs::new(run) {
        assert!(inside(run, a.payload), "attribute outside its parent");
        assert!(inside(outer, a.payload));
        let _ = (a.u8(), a.u16(), a.u32(), a.u16_be(), a.u32_be());
        assert!(inside(a.payload, a.str()));
        if depth < 4 {
            walk(outer, a.payload, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut list = ListParser::new();
    let mut malformed = false;
    for r in Messages::new(data) {
        assert!(!malformed, "a message after a malformed header");
        let m = match r {
            Ok(Reply::Data(m)) => m,
            Ok(Reply::Error { errno, .. }) => {
                assert!(errno > 0, "errno {errno} not positive");
                continue;
            }
            Ok(Reply::Ack(_) | Reply::Done(_)) => continue,
            Err(e) => {
                assert!(e.at <= data.len());
                malformed = true;
                continue;
            }
        };
        assert!(inside(data, m.payload));
        let _ = list.feed(&m);
        let _ = parse_type(&m);
        if let Some(id) = parse_socket(&m) {
            let _ = (id.local(), id.remote());
        }
        if let Some(flow) = conntrack::parse_flow(&m) {
            let _ = conntrack::matches(
                &flow,
                refract::key::Key::V4([192, 0, 2, 1].into()),
                17,
                &[443],
            );
        }
        for skip in [0, NFGENMSG_LEN, DIAG_MSG_LEN] {
            if let Some(run) = m.payload.get(skip..) {
                walk(data, run, 0);
            }
        }
    }
    for set in &list.sets {
        for m in &set.members {
            // What the daemon does with a listed member: compare and print it.
            let _ = (m.key.net(), m.key.to_string());
        }
    }
});
