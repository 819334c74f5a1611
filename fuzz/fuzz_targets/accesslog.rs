//! `refract::accesslog::parse` on arbitrary bytes: never panics, and what it
//! returns is consistent with the input.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use refract::accesslog::{parse, Source};

/// Whether `inner` is a sub-slice of `outer` (same memory, not equal bytes):
/// the parser is zero-copy, so every field must borrow from the line.
fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    o.start <= i.start && i.end <= o.end
}

fuzz_target!(|data: &[u8]| {
    let got = parse(data);
    // Pure: the same bytes give the same answer.
    assert_eq!(got, parse(data));
    // Trailing `\r`, `\n` and spaces are trimmed before parsing, so a
    // CRLF line means exactly what the LF line means.
    let mut crlf = data.to_vec();
    crlf.push(b'\r');
    assert_eq!(got, parse(&crlf));

    let Ok(a) = got else { return };
    for field in [a.inbound, a.detour, a.email].into_iter().flatten() {
        assert!(inside(data, field), "field borrowed from outside the line");
    }
    if let (Some(inbound), Some(detour)) = (a.inbound, a.detour) {
        assert!(inside(detour, inbound), "inbound tag outside its bracket");
    }
    assert!(
        a.inbound.is_none() || a.detour.is_some(),
        "inbound without a bracket"
    );
    if let Some(email) = a.email {
        assert!(!email.is_empty(), "an empty value is no email");
    }
    if let Source::Ip(ip, _) = a.source {
        // One canonical address per client: unspecified ones are Unix,
        // IPv4-mapped IPv6 is returned as IPv4.
        assert!(!ip.is_unspecified(), "unspecified address as a client");
        if let IpAddr::V6(v6) = ip {
            assert!(
                v6.to_ipv4_mapped().is_none(),
                "IPv4-mapped address kept as IPv6"
            );
        }
    }
});
