//! Starts real `redis-server`, `memcached` and PostgreSQL servers for tests.
//!
//! Each server listens on a free port on `127.0.0.1` only (or on a unix socket), keeps all
//! its files in a fresh temporary directory, writes its output to a log file there, and is
//! stopped when its handle is dropped: the process is killed, waited for, and the directory
//! removed. A server that fails to start yields a [`TestkitError`] that carries the last
//! lines of its log; a missing program yields one that names the package to install
//! (`scripts/install-system-deps.sh` installs them all).
//!
//! Every handle is `Send` and `Sync`, so a test may share one server between threads.
//! A handle kept in a `static` is never dropped, so its server outlives the test binary:
//! prefer one server per test, or stop a shared one explicitly.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//!
//! let redis = polycache_testkit::RedisServer::start()?;
//! let mut conn = TcpStream::connect(("127.0.0.1", redis.port()))?;
//! conn.write_all(b"PING\r\n")?;
//! let mut reply = [0u8; 7];
//! conn.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"+PONG\r\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

mod certs;
mod memcached;
mod postgres;
mod process;
mod proxy;
mod redis;
mod sentinel;
mod tempdir;

pub use certs::TestCertificates;
pub use memcached::MemcachedServer;
pub use postgres::PostgresServer;
pub use proxy::FaultProxy;
pub use redis::{
    command_calls, info_field, redis_command, RedisCluster, RedisOver, RedisReplicaSet,
    RedisServer, Transport,
};
pub use sentinel::{
    RedisSentinelSet, SentinelAuth, SentinelServer, SENTINEL_DOWN_AFTER, SENTINEL_MASTER_NAME,
};
pub use tempdir::TempDir;

/// How long `redis-server` and `memcached` get to answer after they are spawned.
const QUICK_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long PostgreSQL gets to accept connections after `postgres` is spawned.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many times a start is tried with a fresh port when the server exits early.
const START_ATTEMPTS: usize = 3;
/// How many lines of a server's log an error carries.
const LOG_TAIL_LINES: usize = 30;
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Connect and read timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a test server could not be started or controlled.
///
/// `Send` and `Sync`. Its `Display` text is meant for a test failure message: it names the
/// package to install, or quotes the end of the server's log.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestkitError {
    /// A program the server needs is not installed.
    MissingBinary {
        /// The program that was looked for, e.g. `redis-server`.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// An operating-system call failed (temporary directory, log file, spawn, signal…).
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The server was spawned but did not become ready.
    StartFailed {
        /// Which server: `redis-server`, `memcached`, `initdb` or `postgres`.
        server: &'static str,
        /// Why it is considered failed (exit status, timeout).
        reason: String,
        /// The last lines of the server's log file.
        log_tail: String,
    },
}

impl TestkitError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestkitError::MissingBinary { program, package } => write!(
                f,
                "`{program}` was not found; install the `{package}` package \
                 (scripts/install-system-deps.sh installs every test server)"
            ),
            TestkitError::Io { context, source } => write!(f, "{context}: {source}"),
            TestkitError::StartFailed {
                server,
                reason,
                log_tail,
            } => {
                write!(f, "{server} failed to start: {reason}")?;
                if !log_tail.is_empty() {
                    write!(f, "\n--- last lines of its log ---\n{log_tail}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TestkitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestkitError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Returns a TCP port on `127.0.0.1` that nothing listened on a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and closing the listener, so another process
/// may take it before the caller does; the servers here retry with a new port when that
/// happens. Also useful to get an address where no server answers (connection refused).
pub fn free_loopback_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("reading the address of a bound listener", e))?
        .port();
    Ok(port)
}

/// Polls `cond` every millisecond until it holds or `within` passes; true when it held.
///
/// For tests of things that happen in the background (an invalidation on a bus, a refresh):
/// give a generous `within` and assert on the result, never on the time it took.
///
/// ```
/// use std::time::Duration;
/// assert!(polycache_testkit::eventually(Duration::from_secs(1), || true));
/// ```
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Percent-encodes `url` for use as the value of a URL option (`tiered://?l2=<this>`):
/// everything but letters, digits and `-_.~`.
///
/// ```
/// let inner = polycache_testkit::url_option("redis://127.0.0.1:6379/0");
/// assert_eq!(inner, "redis%3A%2F%2F127.0.0.1%3A6379%2F0");
/// ```
pub fn url_option(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// This test binary run again as another process, running only the ignored test `test`, with
/// `env` set (the test returns at once without it). The child talks back in lines that start
/// with `@` (libtest's own output never does); requests go to its stdin, one per line.
/// Dropping it writes `quit`, waits up to 10 s for it to end, then kills it.
///
/// A parent test: `let mut child = TestChild::spawn("other_process", ("MY_ENV", url));` then
/// `child.ask("get k")`. The child, `#[ignore]`d: reads `std::env::var("MY_ENV")`, writes
/// `\n@ready`, then answers each stdin line with one `@…` line.
pub struct TestChild {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl TestChild {
    /// Starts the child and waits for its `@ready` line.
    ///
    /// # Panics
    /// If the child cannot start or ends before it is ready (a test helper: the test fails).
    pub fn spawn(test: &str, env: (&str, &str)) -> TestChild {
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env.0, env.1)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test binary again");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut me = TestChild {
            child,
            stdin,
            stdout,
        };
        assert_eq!(me.line(), "ready", "the child process did not start");
        me
    }

    /// The child's next `@` line, without the `@`.
    ///
    /// # Panics
    /// If the child ended.
    pub fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read the child");
            assert!(read > 0, "the child process ended");
            if let Some(reply) = line.trim_end().strip_prefix('@') {
                return reply.to_owned();
            }
        }
    }

    /// Writes `request` as one line to the child's stdin.
    ///
    /// # Panics
    /// If the child's stdin is closed.
    pub fn send(&mut self, request: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{request}").expect("write to the child");
        self.stdin.flush().expect("write to the child");
    }

    /// [`TestChild::send`], then the child's next `@` line.
    pub fn ask(&mut self, request: &str) -> String {
        self.send(request);
        self.line()
    }

    /// Waits for the child to end (after it was asked to) and returns whether it succeeded.
    pub fn wait(&mut self) -> bool {
        self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        use std::io::Write;
        // Closing stdin ends the child's loop; it exits by itself.
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
