//! The Redis tests talk to, found or started once per test process.
//!
//! `FLOWLET_TEST_REDIS_URL` when set; else the server on 127.0.0.1:6379 when one answers PING;
//! else a private `redis-server` (the system's binary) that this process starts on a free
//! loopback port, keeping nothing on disk. The private server is watched by a small `sh` that
//! holds a pipe from this process: when the test process ends, however it ends (even SIGKILL),
//! the pipe closes and the server is stopped, so nothing outlives the run.
//!
//! Compiled into both test binaries (the library's unit tests and `tests/api`) with `#[path]`,
//! so there is one copy of it and it is not part of the library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where a developer's Redis usually is.
const LOCAL: &str = "127.0.0.1:6379";
/// How long a private server gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried before giving up (another process may take a free port before the server binds).
const START_ATTEMPTS: usize = 3;

/// Runs redis-server ("$0", with "$@") and stops it when stdin reaches end of file, which
/// happens when the test process (the only writer) exits.
const WATCHDOG: &str = r#""$0" "$@" </dev/null & pid=$!
cat >/dev/null
kill "$pid" 2>/dev/null
wait "$pid""#;

/// The URL of the Redis the tests use.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("FLOWLET_TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
        {
            return url;
        }
        if answers_ping(LOCAL) {
            return format!("redis://{LOCAL}");
        }
        start_private()
    })
}

/// Starts a private server and returns its URL; the server (and its watchdog) stay for the
/// life of this process.
fn start_private() -> String {
    static SERVER: OnceLock<Child> = OnceLock::new();
    let binary = find_redis_server().unwrap_or_else(|| {
        panic!(
            "no Redis for the tests: FLOWLET_TEST_REDIS_URL is unset, nothing answers on {LOCAL}, \
             and no redis-server binary is installed (apt-get install redis-server, or brew \
             install redis), or set FLOWLET_TEST_REDIS_URL"
        )
    });
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run sh to start {}: {e}", binary.display()));
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if answers_ping(&address) {
                // Kept for the life of the process: its stdin is the watchdog's lifeline.
                let _ = SERVER.set(child);
                return format!("redis://{address}");
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(child.kill());
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            drop(pipe.read_to_string(&mut stderr));
        }
        drop(child.wait());
        failures.push(format!("port {port}: {}", stderr.trim()));
    }
    panic!(
        "{} did not start for the tests: {}",
        binary.display(),
        failures.join("; ")
    )
}

/// Whether a Redis answers PING at `address` (host:port) within a second.
fn answers_ping(address: &str) -> bool {
    let Ok(address) = address.parse::<SocketAddr>() else {
        return false;
    };
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// `redis-server` on PATH, or where distributions install it.
fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/opt/homebrew/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}
