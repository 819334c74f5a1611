//! A Redis server of the test's own (the Debian binary), on a unix socket
//! in the test's temp dir, always stopped: for the fleet tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{skip, which, TempDir, PROMPT};

/// The minimal ACL of the README (after `user refract on >PASSWORD`):
/// the fleet's keys, the script commands, and what the script calls (Redis
/// checks a script's own calls against the caller's ACL too).
pub const ACL: &str = "~refract:* +evalsha +script|load +select +ping +zadd +zrange \
                       +zremrangebyscore +pexpire +time";

/// A redis-server of its own on `dir/redis.sock`.
pub struct Redis {
    child: Child,
    pub sock: PathBuf,
}

impl Redis {
    /// `None` (skipped, with the reason) without the binary.
    pub fn start(dir: &TempDir) -> Option<Redis> {
        let bin = which("redis-server").or_else(|| which("redis-check-rdb"));
        let Some(bin) = bin else {
            skip("no redis-server (scripts/deps.sh test installs redis-tools)");
            return None;
        };
        // Debian's server binary is redis-check-rdb; it acts by its name.
        let link = dir.path("redis-server");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let sock = dir.path("redis.sock");
        let child = Command::new(&link)
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.root())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !sock.exists() {
            assert!(start.elapsed() < PROMPT, "redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { child, sock })
    }

    /// On 127.0.0.1:`port` with the ACL of the README: the default user
    /// off, user `refract` (password `s3cret`) allowed the fleet's keys and
    /// the commands the admission script runs, nothing else.
    pub fn start_with_acl(dir: &TempDir, port: u16) -> Option<Redis> {
        let bin = which("redis-server").or_else(|| which("redis-check-rdb"));
        let Some(bin) = bin else {
            skip("no redis-server (scripts/deps.sh test installs redis-tools)");
            return None;
        };
        let link = dir.path("redis-server");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let acl = dir.path("users.acl");
        std::fs::write(
            &acl,
            format!("user default off\nuser refract on >s3cret {ACL}\n"),
        )
        .unwrap();
        let sock = dir.path("redis-acl.sock");
        let child = Command::new(&link)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
            ])
            .arg(&sock)
            .args(["--save", "", "--appendonly", "no", "--aclfile"])
            .arg(&acl)
            .args(["--dir"])
            .arg(dir.root())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !sock.exists() {
            assert!(start.elapsed() < PROMPT, "redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { child, sock })
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
