//! `refract::policy::limits::parse_limits` on arbitrary bytes: never panics; on
//! success every limit is at least 1 and every email is non-empty of
//! surrounding blanks; on failure every line number is within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refract::policy::limits::parse_limits;

fuzz_target!(|data: &[u8]| {
    match parse_limits(data) {
        Ok(parsed) => {
            for (email, &n) in &parsed.limits {
                assert!(n >= 1, "limit {n} below 1");
                assert!(!email.contains(&b'\n') && !email.contains(&b'#'));
                assert_eq!(email.trim_ascii(), &email[..], "email not trimmed");
            }
        }
        Err(bad) => {
            assert!(!bad.is_empty());
            let lines = data.split(|&b| b == b'\n').count();
            for (line, why) in bad {
                assert!(
                    (1..=lines).contains(&line),
                    "error on line {line} of {lines}"
                );
                assert!(!why.is_empty());
            }
        }
    }
});
