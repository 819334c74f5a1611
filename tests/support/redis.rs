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
        Redis::launch(dir, "redis.sock", &["--port".into(), "0".into()])
    }

    /// On 127.0.0.1:`port` with the ACL of the README: the default user
    /// off, user `refract` (password `s3cret`) allowed the fleet's keys and
    /// the commands the admission script runs, nothing else.
    pub fn start_with_acl(dir: &TempDir, port: u16) -> Option<Redis> {
        let acl = dir.path("users.acl");
        std::fs::write(
            &acl,
            format!("user default off\nuser refract on >s3cret {ACL}\n"),
        )
        .unwrap();
        let args: Vec<std::ffi::OsString> = vec![
            "--port".into(),
            port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--aclfile".into(),
            acl.into(),
        ];
        Redis::launch(dir, "redis-acl.sock", &args)
    }

    /// Starts the server with `args` besides a unix socket `dir/sock`, no
    /// persistence, `dir` as its working directory; waits (bounded) for
    /// the socket.
    fn launch(dir: &TempDir, sock: &str, args: &[std::ffi::OsString]) -> Option<Redis> {
        let bin = which("redis-server").or_else(|| which("redis-check-rdb"));
        let Some(bin) = bin else {
            skip("no redis-server (scripts/deps.sh test installs redis-tools)");
            return None;
        };
        // Debian's server binary is redis-check-rdb; it acts by its name.
        let link = dir.path("redis-server");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let sock = dir.path(sock);
        let child = Command::new(&link)
            .args(args)
            .arg("--unixsocket")
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
