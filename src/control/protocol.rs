//! The control protocol's messages: what a request line may say, and the
//! shapes every reply shares. Pure: bytes in, values out.
//!
//! One JSON object per line each way, one reply per request, in order; the
//! server speaks first with a hello (`{"refract":VERSION,"protocol":1}`).
//! Requests name a `cmd`; unknown members are ignored (a newer client can
//! send more than this server reads), an unknown `cmd` is an error. Every
//! reply has `"ok"`; a failed one also `"error"` (one line for people) and
//! `"code"`: `invalid` (the request is wrong), `not_found` (no such user,
//! address not banned) or `failed` (the daemon could not do it).

use std::net::IpAddr;

use ipnet::IpNet;

use super::json::{self, Value};
use crate::key::Key;

/// The protocol version in the hello; bumped on an incompatible change.
pub const PROTOCOL: u64 = 1;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    User(String),
    Ban {
        addr: String,
        /// Seconds; `None`: `--timeout`.
        for_s: Option<u64>,
        reason: Option<String>,
    },
    Unban(Unban),
    Reload,
}

/// Which bans `unban` lifts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unban {
    Addrs(Vec<String>),
    User(String),
    All,
}

impl Request {
    /// The request object (one line on the wire).
    pub fn to_value(&self) -> Value {
        match self {
            Request::Status => Value::obj([("cmd", "status".into())]),
            Request::Reload => Value::obj([("cmd", "reload".into())]),
            Request::User(email) => {
                Value::obj([("cmd", "user".into()), ("email", email.as_str().into())])
            }
            Request::Ban {
                addr,
                for_s,
                reason,
            } => {
                let mut m = vec![
                    ("cmd".to_string(), Value::from("ban")),
                    ("addr".to_string(), Value::from(addr.as_str())),
                ];
                if let Some(s) = for_s {
                    m.push(("for_s".to_string(), Value::from(*s)));
                }
                if let Some(r) = reason {
                    m.push(("reason".to_string(), Value::from(r.as_str())));
                }
                Value::Obj(m)
            }
            Request::Unban(Unban::Addrs(addrs)) => Value::obj([
                ("cmd", "unban".into()),
                (
                    "addrs",
                    Value::Arr(addrs.iter().map(|a| a.as_str().into()).collect()),
                ),
            ]),
            Request::Unban(Unban::User(u)) => {
                Value::obj([("cmd", "unban".into()), ("user", u.as_str().into())])
            }
            Request::Unban(Unban::All) => {
                Value::obj([("cmd", "unban".into()), ("all", true.into())])
            }
        }
    }
}

/// A failed reply's `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Invalid,
    NotFound,
    Failed,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::Invalid => "invalid",
            Code::NotFound => "not_found",
            Code::Failed => "failed",
        }
    }
}

/// The hello line's object.
pub fn hello() -> Value {
    Value::obj([
        ("refract", env!("CARGO_PKG_VERSION").into()),
        ("protocol", PROTOCOL.into()),
    ])
}

/// A failed reply.
pub fn error(code: Code, msg: impl Into<String>) -> Value {
    Value::obj([
        ("ok", false.into()),
        ("code", code.name().into()),
        ("error", Value::Str(msg.into())),
    ])
}

/// A successful reply: `"ok":true` and then `fields`.
pub fn ok(fields: Vec<(String, Value)>) -> Value {
    let mut m = vec![("ok".to_string(), Value::Bool(true))];
    m.extend(fields);
    Value::Obj(m)
}

fn string(v: &Value, key: &str) -> Result<String, Value> {
    match v.get(key) {
        Some(Value::Str(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(error(
            Code::Invalid,
            format!("{key}: must be a non-empty string"),
        )),
        None => Err(error(Code::Invalid, format!("{key}: missing"))),
    }
}

/// Reads one request line; a reply to send back when it is not one.
pub fn parse_request(line: &[u8]) -> Result<Request, Value> {
    let v = json::parse(line).map_err(|e| error(Code::Invalid, e.to_string()))?;
    if !matches!(v, Value::Obj(_)) {
        return Err(error(Code::Invalid, "a request is a JSON object"));
    }
    let cmd = string(&v, "cmd")?;
    Ok(match cmd.as_str() {
        "status" => Request::Status,
        "user" => Request::User(string(&v, "email")?),
        "reload" => Request::Reload,
        "ban" => {
            let for_s = match v.get("for_s") {
                None | Some(Value::Null) => None,
                Some(n) => match n.as_u64() {
                    Some(s) if s > 0 => Some(s),
                    _ => {
                        return Err(error(
                            Code::Invalid,
                            "for_s: must be a whole number of seconds above 0",
                        ))
                    }
                },
            };
            let reason = match v.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::Str(s)) => Some(s.clone()),
                Some(_) => return Err(error(Code::Invalid, "reason: must be a string")),
            };
            Request::Ban {
                addr: string(&v, "addr")?,
                for_s,
                reason,
            }
        }
        "unban" => {
            if v.get("all").and_then(Value::as_bool) == Some(true) {
                Request::Unban(Unban::All)
            } else if v.get("user").is_some() {
                Request::Unban(Unban::User(string(&v, "user")?))
            } else {
                let addrs = v
                    .get("addrs")
                    .and_then(Value::as_array)
                    .ok_or_else(|| error(Code::Invalid, "unban: addrs, user or all"))?;
                let mut out = Vec::with_capacity(addrs.len());
                for a in addrs {
                    match a.as_str() {
                        Some(s) if !s.is_empty() => out.push(s.to_string()),
                        _ => return Err(error(Code::Invalid, "addrs: strings only")),
                    }
                }
                if out.is_empty() {
                    return Err(error(Code::Invalid, "addrs: empty"));
                }
                Request::Unban(Unban::Addrs(out))
            }
        }
        other => {
            return Err(error(
                Code::Invalid,
                format!("unknown cmd {other:?} (status, user, ban, unban, reload)"),
            ))
        }
    })
}

/// The key an operator's address names: an IPv4 address (or `/32`), an
/// IPv6 address (its `/v6_prefix`), or an IPv6 prefix of exactly
/// `v6_prefix` bits. IPv4-mapped IPv6 is IPv4, as everywhere.
pub fn parse_key(addr: &str, v6_prefix: u8) -> Result<Key, String> {
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(Key::new(ip, v6_prefix));
    }
    let net: IpNet = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address or prefix"))?;
    let key = Key::new(net.addr(), v6_prefix);
    match (key, net) {
        (Key::V4(_), IpNet::V4(n)) if n.prefix_len() == 32 => Ok(key),
        (Key::V6(..), IpNet::V6(n)) if n.prefix_len() == v6_prefix => Ok(key),
        _ => Err(format!(
            "{addr}: refract bans IPv4 addresses and IPv6 /{v6_prefix} prefixes \
             (--ipv6-prefix); give one of those"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: &Value) -> Option<&str> {
        v.get("code").and_then(Value::as_str)
    }

    #[test]
    fn every_command_parses() {
        let cases: &[(&str, Request)] = &[
            (r#"{"cmd":"status"}"#, Request::Status),
            (r#"{"cmd":"reload","x":1}"#, Request::Reload),
            (
                r#"{"cmd":"user","email":"alice@example.com"}"#,
                Request::User("alice@example.com".into()),
            ),
            (
                r#"{"cmd":"ban","addr":"192.0.2.7","for_s":3600,"reason":"ticket 17"}"#,
                Request::Ban {
                    addr: "192.0.2.7".into(),
                    for_s: Some(3600),
                    reason: Some("ticket 17".into()),
                },
            ),
            (
                r#"{"cmd":"ban","addr":"2001:db8::1"}"#,
                Request::Ban {
                    addr: "2001:db8::1".into(),
                    for_s: None,
                    reason: None,
                },
            ),
            (
                r#"{"cmd":"unban","addrs":["192.0.2.7","2001:db8:1::/64"]}"#,
                Request::Unban(Unban::Addrs(vec![
                    "192.0.2.7".into(),
                    "2001:db8:1::/64".into(),
                ])),
            ),
            (
                r#"{"cmd":"unban","user":"bob"}"#,
                Request::Unban(Unban::User("bob".into())),
            ),
            (r#"{"cmd":"unban","all":true}"#, Request::Unban(Unban::All)),
        ];
        for (line, want) in cases {
            assert_eq!(parse_request(line.as_bytes()).as_ref(), Ok(want), "{line}");
        }
    }

    #[test]
    fn what_the_client_sends_is_what_the_server_reads() {
        for req in [
            Request::Status,
            Request::Reload,
            Request::User("älice".into()),
            Request::Ban {
                addr: "192.0.2.7".into(),
                for_s: Some(60),
                reason: Some("x \"y\"".into()),
            },
            Request::Ban {
                addr: "2001:db8::/64".into(),
                for_s: None,
                reason: None,
            },
            Request::Unban(Unban::Addrs(vec!["192.0.2.7".into()])),
            Request::Unban(Unban::User("bob".into())),
            Request::Unban(Unban::All),
        ] {
            let line = req.to_value().to_line();
            assert_eq!(parse_request(line.as_bytes()), Ok(req), "{line}");
        }
    }

    #[test]
    fn bad_requests_say_why() {
        for line in [
            "",
            "[]",
            r#"{"cmd":"halt"}"#,
            r#"{"cmd":"user"}"#,
            r#"{"cmd":"user","email":""}"#,
            r#"{"cmd":"ban","addr":"192.0.2.7","for_s":-1}"#,
            r#"{"cmd":"ban","addr":"192.0.2.7","for_s":1.5}"#,
            r#"{"cmd":"unban"}"#,
            r#"{"cmd":"unban","addrs":[]}"#,
            r#"{"cmd":"unban","addrs":[1]}"#,
        ] {
            let e = parse_request(line.as_bytes()).unwrap_err();
            assert_eq!(code(&e), Some("invalid"), "{line}: {e:?}");
            assert!(e.get("error").and_then(Value::as_str).is_some());
        }
    }

    #[test]
    fn addresses_name_keys() {
        let k = |s: &str| parse_key(s, 64);
        assert_eq!(k("192.0.2.7"), Ok(Key::V4("192.0.2.7".parse().unwrap())));
        assert_eq!(k("192.0.2.7/32"), k("192.0.2.7"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        let v6 = Key::new("2001:db8:1::".parse().unwrap(), 64);
        assert_eq!(k("2001:db8:1::99"), Ok(v6));
        assert_eq!(k("2001:db8:1::/64"), Ok(v6));
        assert!(k("2001:db8:1::/48").is_err());
        assert!(k("192.0.2.0/24").is_err());
        assert!(k("example.com").is_err());
    }

    #[test]
    fn replies_have_their_shape() {
        assert_eq!(
            hello().to_line(),
            format!(
                "{{\"refract\":\"{}\",\"protocol\":1}}",
                env!("CARGO_PKG_VERSION")
            )
        );
        let e = error(Code::NotFound, "no user bob");
        assert_eq!(
            e.to_line(),
            r#"{"ok":false,"code":"not_found","error":"no user bob"}"#
        );
        let o = ok(vec![("limits".into(), 3u64.into())]);
        assert_eq!(o.to_line(), r#"{"ok":true,"limits":3}"#);
    }
}
