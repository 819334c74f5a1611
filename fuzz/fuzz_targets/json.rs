//! `refract::control::json::parse` on arbitrary bytes (what a control
//! socket client can send): never panics; what it accepts writes back as
//! one line that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refract::control::json::{parse, Value};

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // NaN cannot come out of the parser; -0 and 0 print alike.
        (Value::Num(x), Value::Num(y)) => x == y,
        (Value::Arr(x), Value::Arr(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Obj(x), Value::Obj(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, a), (l, b))| k == l && same(a, b))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse(data) {
        let line = v.to_line();
        assert!(!line.contains('\n'), "{line}");
        let back = parse(line.as_bytes()).expect("own output parses");
        // Numbers beyond f64's integer range may print differently; the
        // value they stand for is the same.
        assert!(same(&v, &back), "{v:?} vs {back:?}");
    }
});
