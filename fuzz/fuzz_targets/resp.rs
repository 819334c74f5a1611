//! `refract::fleet::resp::decode` on arbitrary bytes (what a Redis server,
//! or anything answering in its place, can send): never panics, never
//! claims more bytes than it was given, and a decoded prefix decodes the
//! same when more bytes follow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refract::fleet::resp::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((reply, n))) = decode(data) {
        assert!(n > 0 && n <= data.len(), "{n} of {}", data.len());
        let mut longer = data[..n].to_vec();
        longer.extend_from_slice(b"+OK\r\n");
        assert_eq!(decode(&longer), Ok(Some((reply, n))));
    }
});
