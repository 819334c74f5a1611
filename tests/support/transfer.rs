//! A real TCP transfer between two namespaces, measured at the receiver:
//! what the bandwidth tests shape and police.
//!
//! The listener is opened inside the server's namespace and the client's
//! socket inside the client's (a socket stays in the namespace it was
//! created in), then plain threads move the bytes: the sender writes as
//! fast as the kernel takes them, the receiver counts. [`Flow::rate_bps`]
//! samples the count over an interval. Dropping the flow shuts both
//! sockets down and joins the threads (every loop ends when its socket
//! does).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Netns;

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Server to client (a download, shaped on the server's egress).
    Down,
    /// Client to server (an upload).
    Up,
}

/// A running transfer.
pub struct Flow {
    /// The client's end (address and port), as the proxy's log names it.
    pub client: SocketAddr,
    received: Arc<AtomicU64>,
    socks: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

fn pump_out(mut s: TcpStream, pace: Option<Duration>) {
    match pace {
        None => {
            let chunk = vec![0x5a_u8; 64 * 1024];
            while s.write_all(&chunk).is_ok() {}
        }
        // A trickle: a small write every `every` (a packet each), so the
        // connection always has a packet coming without loading the CPU.
        Some(every) => {
            let _ = s.set_nodelay(true);
            while s.write_all(&[0x5a; 64]).is_ok() {
                std::thread::sleep(every);
            }
        }
    }
}

fn pump_in(mut s: TcpStream, count: Arc<AtomicU64>) {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Starts a transfer: a listener on `listen` in `server` (port 0: any), a
/// client in `client` connecting to it (the kernel picks its source
/// address and port), bytes flowing `dir`.
pub fn start(server: &Netns, listen: SocketAddr, client: &Netns, dir: Dir) -> Flow {
    start_paced(server, listen, client, dir, None)
}

/// [`start`], the sender writing 64 bytes every `pace` when given (a
/// connection that always has a next packet within `pace`, at almost no
/// CPU: for measuring how soon something applies to it).
pub fn start_paced(
    server: &Netns,
    listen: SocketAddr,
    client: &Netns,
    dir: Dir,
    pace: Option<Duration>,
) -> Flow {
    let listener = server.in_netns(|| TcpListener::bind(listen).expect("bind the server"));
    let port = listener.local_addr().unwrap().port();
    let target = SocketAddr::new(listen.ip(), port);
    let c = client.in_netns(|| {
        TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {target}: {e}"))
    });
    let (s, _) = listener.accept().expect("accept");
    let client_addr = c.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = match dir {
        Dir::Down => (s.try_clone().unwrap(), c.try_clone().unwrap()),
        Dir::Up => (c.try_clone().unwrap(), s.try_clone().unwrap()),
    };
    let count = received.clone();
    let threads = vec![
        std::thread::spawn(move || pump_out(tx, pace)),
        std::thread::spawn(move || pump_in(rx, count)),
    ];
    Flow {
        client: client_addr,
        received,
        socks: vec![s, c],
        threads,
    }
}

impl Flow {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The receiver's rate over the next `over`, in bits per second.
    pub fn rate_bps(&self, over: Duration) -> f64 {
        let (b0, t0) = (self.received(), Instant::now());
        std::thread::sleep(over);
        let (b1, t1) = (self.received(), Instant::now());
        (b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        for s in &self.socks {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `rate` is within `tolerance` (a fraction, 0.15 for ±15%) of `target`.
pub fn within(rate: f64, target: f64, tolerance: f64) -> bool {
    (rate - target).abs() <= target * tolerance
}
