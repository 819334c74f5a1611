//! Prometheus metrics: the text exposition format (version 0.0.4, what
//! `GET /metrics` answers and what `--metrics-file` holds) and the small
//! HTTP listener the daemon's loop serves it from.
//!
//! Conventions (prometheus.io, "Metric and label naming"): every name
//! starts with `refract_`, is in base units (seconds, bytes), counters end
//! in `_total`; labels never carry a user, an email or an address, so the
//! number of series is fixed by the code, not by the customers.
//!
//! The listener ([`Http`]) takes at most [`MAX_CONNS`] connections, reads
//! at most [`MAX_REQUEST`] bytes of a request, answers `GET /metrics` (200),
//! any other path 404, any other method 405, and closes; a client that does
//! not finish its request within [`IDLE`] is dropped. Nothing waits.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::clock::{Micros, SECOND};

/// One exposition, built metric by metric.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// A metric's labels: `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(l: Labels<'_>, extra: Option<(&str, &str)>, out: &mut String) {
    if l.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in l.iter().copied().chain(extra).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    out.push('}');
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, l: Labels<'_>, extra: Option<(&str, &str)>, v: f64) {
        self.out.push_str(name);
        labels(l, extra, &mut self.out);
        if v.fract() == 0.0 && v.abs() < 1e15 {
            let _ = writeln!(self.out, " {}", v as i64);
        } else {
            let _ = writeln!(self.out, " {v}");
        }
    }

    /// A counter family (`name` ends in `_total`): one sample per label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, u64)]) {
        debug_assert!(name.ends_with("_total"), "{name}");
        self.head(name, "counter", help);
        for (l, v) in samples {
            self.sample(name, l, None, *v as f64);
        }
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.head(name, "gauge", help);
        for (l, v) in samples {
            self.sample(name, l, None, *v);
        }
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cum = 0;
        for (i, &le) in h.bounds.iter().enumerate() {
            cum += h.counts[i];
            let le = format_le(le);
            self.sample(&bucket, &[], Some(("le", &le)), cum as f64);
        }
        self.sample(&bucket, &[], Some(("le", "+Inf")), h.count as f64);
        self.sample(&format!("{name}_sum"), &[], None, h.sum);
        self.sample(&format!("{name}_count"), &[], None, h.count as f64);
    }

    pub fn into_text(self) -> String {
        self.out
    }
}

fn format_le(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Seconds-valued histogram with fixed upper bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last bucket is
    /// `+Inf`, counted in `count` only.
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// Bounds for latencies from 50 µs to 1 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Records one observation of `us` microseconds.
    pub fn observe_micros(&mut self, us: Micros) {
        let secs = us as f64 / SECOND as f64;
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `other`'s observations (same bounds).
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// Most scrape connections at once.
pub const MAX_CONNS: usize = 8;
/// Longest request read (headers included).
pub const MAX_REQUEST: usize = 8 << 10;
/// A connection that has not sent its request in this long is closed.
pub const IDLE: Micros = 10 * SECOND;
/// Tokens the listener takes: itself and one per connection.
pub const TOKENS: usize = 1 + MAX_CONNS;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    rx: Vec<u8>,
    tx: Vec<u8>,
    sent: usize,
    since: Micros,
}

/// What a request asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

/// The route of one request head (`GET /metrics HTTP/1.1` …); `None` until
/// the head is complete (`\r\n\r\n`).
pub fn route(req: &[u8]) -> Option<Route> {
    let end = req.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&req[..end]).ok();
    let line = head.and_then(|h| h.lines().next()).unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Route::Bad);
    };
    if !version.starts_with("HTTP/1.") {
        return Some(Route::Bad);
    }
    let path = target.split('?').next().unwrap_or("");
    Some(match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics,
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::BadMethod,
    })
}

fn response(status: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// The scrape listener (module docs).
#[derive(Debug)]
pub struct Http {
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    first: usize,
    pub served: u64,
    pub refused: u64,
}

impl Http {
    pub fn bind(addr: SocketAddr) -> io::Result<Http> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics: listen on {addr}: {e}")))?;
        Ok(Http {
            listener,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            first: 0,
            served: 0,
            refused: 0,
        })
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn register(&mut self, registry: &Registry, first: usize) -> io::Result<()> {
        self.first = first;
        registry.register(&mut self.listener, Token(first), Interest::READABLE)
    }

    pub fn owns(&self, token: Token) -> bool {
        (self.first..self.first + TOKENS).contains(&token.0)
    }

    /// A readiness event; `render` makes the body when a scrape is due.
    pub fn event(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Micros,
        render: &mut dyn FnMut() -> String,
    ) {
        if token.0 == self.first {
            loop {
                let mut stream = match self.listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let Some(i) = self.conns.iter().position(Option::is_none) else {
                    self.refused += 1;
                    continue; // dropped: closed at once
                };
                let interest = Interest::READABLE | Interest::WRITABLE;
                if registry
                    .register(&mut stream, Token(self.first + 1 + i), interest)
                    .is_err()
                {
                    continue;
                }
                self.conns[i] = Some(Conn {
                    stream,
                    rx: Vec::new(),
                    tx: Vec::new(),
                    sent: 0,
                    since: now,
                });
                self.pump(registry, i, render);
            }
        } else {
            self.pump(registry, token.0 - self.first - 1, render);
        }
    }

    fn pump(&mut self, registry: &Registry, i: usize, render: &mut dyn FnMut() -> String) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut done = false;
        if c.tx.is_empty() {
            let mut buf = [0u8; 2048];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        c.rx.extend_from_slice(&buf[..n]);
                        if c.rx.len() > MAX_REQUEST {
                            c.tx = response("431 Request Header Fields Too Large", "", false);
                            break;
                        }
                        let head_only = c.rx.starts_with(b"HEAD ");
                        if let Some(r) = route(&c.rx) {
                            c.tx = match r {
                                Route::Metrics => {
                                    self.served += 1;
                                    response("200 OK", &render(), head_only)
                                }
                                Route::NotFound => {
                                    response("404 Not Found", "not found\n", head_only)
                                }
                                Route::BadMethod => {
                                    response("405 Method Not Allowed", "GET /metrics\n", false)
                                }
                                Route::Bad => response("400 Bad Request", "", false),
                            };
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
        }
        while !done && c.sent < c.tx.len() {
            match c.stream.write(&c.tx[c.sent..]) {
                Ok(0) => done = true,
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => done = true,
            }
        }
        if done || (!c.tx.is_empty() && c.sent == c.tx.len()) {
            if let Some(mut c) = self.conns[i].take() {
                let _ = registry.deregister(&mut c.stream);
            }
        }
    }

    /// When the oldest connection times out.
    pub fn deadline(&self) -> Option<Micros> {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.since.saturating_add(IDLE))
            .min()
    }

    /// Drops connections older than [`IDLE`].
    pub fn tick(&mut self, registry: &Registry, now: Micros) {
        for slot in &mut self.conns {
            if slot
                .as_ref()
                .is_some_and(|c| c.since.saturating_add(IDLE) <= now)
            {
                if let Some(mut c) = slot.take() {
                    let _ = registry.deregister(&mut c.stream);
                }
            }
        }
    }
}

/// Writes `text` to `path` atomically (a temporary file in the same
/// directory, then `rename`), so node_exporter's textfile collector never
/// reads half a file.
pub fn write_file(path: &std::path::Path, text: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format() {
        let mut e = Exposition::new();
        e.gauge(
            "refract_build_info",
            "Version.",
            &[(&[("version", "0.3.0")], 1.0)],
        );
        e.counter(
            "refract_bans_total",
            "Bans by reason.",
            &[(&[("reason", "limit")], 3), (&[("reason", "manual")], 0)],
        );
        let mut h = Histogram::new(&[0.001, 0.01]);
        h.observe_micros(500);
        h.observe_micros(5_000);
        h.observe_micros(2_000_000);
        e.histogram("refract_decision_latency_seconds", "Latency.", &h);
        let text = e.into_text();
        assert_eq!(
            text,
            "# HELP refract_build_info Version.\n\
             # TYPE refract_build_info gauge\n\
             refract_build_info{version=\"0.3.0\"} 1\n\
             # HELP refract_bans_total Bans by reason.\n\
             # TYPE refract_bans_total counter\n\
             refract_bans_total{reason=\"limit\"} 3\n\
             refract_bans_total{reason=\"manual\"} 0\n\
             # HELP refract_decision_latency_seconds Latency.\n\
             # TYPE refract_decision_latency_seconds histogram\n\
             refract_decision_latency_seconds_bucket{le=\"0.001\"} 1\n\
             refract_decision_latency_seconds_bucket{le=\"0.01\"} 2\n\
             refract_decision_latency_seconds_bucket{le=\"+Inf\"} 3\n\
             refract_decision_latency_seconds_sum 2.0055\n\
             refract_decision_latency_seconds_count 3\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.gauge("refract_x", "X.", &[(&[("v", "a\"b\\c\nd")], 1.0)]);
        assert!(e
            .into_text()
            .contains("refract_x{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::BadMethod)
        );
        assert_eq!(route(b"GET /metrics SPDY\r\n\r\n"), Some(Route::Bad));
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost"), None);
    }
}
