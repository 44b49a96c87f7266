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

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod proxy;
mod sentinel;
pub use proxy::FaultProxy;
pub use sentinel::{
    RedisSentinelSet, SentinelAuth, SentinelServer, SENTINEL_DOWN_AFTER, SENTINEL_MASTER_NAME,
};

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

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// A `redis-server` on a free port of `127.0.0.1` and on a unix socket, in a temporary
/// directory, stopped when dropped.
///
/// Persistence is off (`save ""`, `appendonly no`). `Send` and `Sync`; the methods that
/// change the process (`kill`, `stop`, `restart`) take `&mut self`.
///
/// ```no_run
/// let redis = polycache_testkit::RedisServer::start()?;
/// assert!(redis.url().starts_with("redis://127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir` so the process is killed before the directory is removed.
    process: ServerProcess,
    port: u16,
    tls_port: Option<u16>,
    socket_path: PathBuf,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server and waits (up to 10 s) until it answers `PING`.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `redis-server` is not installed;
    /// [`TestkitError::StartFailed`] (with the end of its log) when it does not answer.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with_config(&[])
    }

    /// Starts a server with extra `redis.conf` lines appended to the defaults.
    ///
    /// For example `&["requirepass secret"]` or `&["replicaof 127.0.0.1 6390"]`. The
    /// server counts as ready when it answers `PING`, with `+PONG` or with an
    /// authentication error.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with_config(extra_config: &[&str]) -> Result<Self, TestkitError> {
        Self::start_inner(extra_config, None)
    }

    /// Starts a server that also speaks TLS on a second free port, with the server
    /// certificate of `certs`; clients need no certificate of their own.
    ///
    /// The plain port stays open (the readiness probe uses it); [`RedisServer::tls_url`]
    /// names the TLS one.
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`TestkitError::StartFailed`] also when this
    /// `redis-server` was built without TLS.
    pub fn start_tls(certs: &TestCertificates) -> Result<Self, TestkitError> {
        Self::start_inner(&[], Some(certs))
    }

    /// [`RedisServer::start_tls`] with extra `redis.conf` lines.
    ///
    /// # Errors
    /// As [`RedisServer::start_tls`].
    pub fn start_tls_with_config(
        extra_config: &[&str],
        certs: &TestCertificates,
    ) -> Result<Self, TestkitError> {
        Self::start_inner(extra_config, Some(certs))
    }

    fn start_inner(
        extra_config: &[&str],
        certs: Option<&TestCertificates>,
    ) -> Result<Self, TestkitError> {
        let program = find_program("redis-server", "redis-server")?;
        let dir = TempDir::create("redis", None)?;
        let socket_path = dir.path().join("redis.sock");
        let conf_path = dir.path().join("redis.conf");
        let log_path = dir.path().join("redis.log");
        let extra: Vec<String> = extra_config.iter().map(|s| s.to_string()).collect();
        let launch = Launch::new(program, [conf_path.clone().into_os_string()], dir.path());
        let mut process = ServerProcess::new("redis-server", launch, log_path, libc::SIGTERM);

        let mut tls_port = None;
        let port = start_on_free_port(
            &mut process,
            QUICK_START_TIMEOUT,
            PortIn::ConfigFile,
            |port| {
                let mut lines = extra.clone();
                if let Some(certs) = certs {
                    let tls = free_loopback_port()?;
                    tls_port = Some(tls);
                    lines.extend(tls_config(tls, certs));
                }
                let conf = redis_config(port, dir.path(), &socket_path, &lines);
                fs::write(&conf_path, conf)
                    .map_err(|e| TestkitError::io(format!("writing {}", conf_path.display()), e))?;
                Ok(Box::new(move || redis_answers_ping(port)))
            },
        )?;
        Ok(RedisServer {
            process,
            port,
            tls_port,
            socket_path,
            dir,
        })
    }

    /// The TLS port on `127.0.0.1`, for a server started with [`RedisServer::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The `rediss://127.0.0.1:PORT/0` URL of a server started with
    /// [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://127.0.0.1:{port}/0"))
    }

    /// Sends one command to the server over a fresh connection and returns its reply as
    /// text; see [`redis_command`].
    ///
    /// # Errors
    /// As [`redis_command`].
    pub fn command(&self, args: &[&str]) -> Result<String, TestkitError> {
        redis_command(self.port, args)
    }

    /// The TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The URL of database 0 over TCP: `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The path of the server's unix socket (mode 700, in its temporary directory).
    pub fn unix_socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The URL of the unix socket: `unix:///…/redis.sock`.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    /// The server's temporary directory, which holds `redis.conf` and `redis.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, or `None` once it was killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with `SIGKILL` and waits for it, as a crash would; for fault tests.
    ///
    /// When this returns the port is closed. Does nothing if the server is not running.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the signal cannot be sent or the process not waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.process.kill()
    }

    /// Stops the server with `SIGTERM` and waits for it (killing it after 10 s).
    ///
    /// Does nothing if the server is not running.
    ///
    /// # Errors
    /// As [`RedisServer::kill`].
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.process.stop()
    }

    /// Stops the server if it runs, then starts it again on the same port and socket.
    ///
    /// The data is lost (persistence is off). For reconnection tests.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] if it does not answer within 10 s (for example when
    /// another process took the port meanwhile).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let port = self.port;
        self.process
            .restart(QUICK_START_TIMEOUT, &mut || redis_answers_ping(port))
    }

    /// Freezes the server with `SIGSTOP`: connections stay open and the kernel still
    /// accepts new ones, but nothing is answered until [`RedisServer::thaw`] — a server stuck in
    /// a long pause. For fault tests of timeouts. Dropping, stopping or restarting a frozen
    /// server thaws it first.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the server is not running or cannot be signalled.
    pub fn freeze(&mut self) -> Result<(), TestkitError> {
        self.process.freeze()
    }

    /// Lets a frozen server run again (`SIGCONT`); does nothing if it is not frozen.
    ///
    /// # Errors
    /// As [`RedisServer::freeze`].
    pub fn thaw(&mut self) -> Result<(), TestkitError> {
        self.process.thaw()
    }
}

fn redis_config(port: u16, dir: &Path, socket: &Path, extra: &[String]) -> String {
    let mut conf = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         protected-mode yes\n\
         daemonize no\n\
         save \"\"\n\
         appendonly no\n\
         dir {}\n\
         unixsocket {}\n\
         unixsocketperm 700\n\
         logfile \"\"\n",
        redis_quote(dir),
        redis_quote(socket),
    );
    for line in extra {
        conf.push_str(line);
        conf.push('\n');
    }
    conf
}

/// The `redis.conf` lines of a TLS port with the server certificate of `certs`, clients
/// needing no certificate of their own.
fn tls_config(tls_port: u16, certs: &TestCertificates) -> [String; 5] {
    [
        format!("tls-port {tls_port}"),
        format!("tls-cert-file {}", redis_quote(&certs.server_cert())),
        format!("tls-key-file {}", redis_quote(&certs.server_key())),
        format!("tls-ca-cert-file {}", redis_quote(&certs.ca_cert())),
        "tls-auth-clients no".to_string(),
    ]
}

/// Quotes a path for `redis.conf`, which splits arguments on spaces.
fn redis_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn redis_answers_ping(port: u16) -> bool {
    let Some(mut stream) = connect_probe(port) else {
        return false;
    };
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    match read_line(&mut stream) {
        Some(line) => line.starts_with("+PONG") || line.starts_with("-NOAUTH"),
        None => false,
    }
}

/// Sends one command to the `redis-server` on `127.0.0.1:port` and returns the reply as text.
///
/// Simple strings, bulk strings and integers come back as their text, a nil reply as an
/// empty string, an array as its elements' texts joined by newlines. For test set-up and
/// checks (`INFO`, `WAIT`, `CLUSTER INFO`…) that must not go through the code under test.
///
/// # Errors
/// [`TestkitError::Io`] when the server cannot be reached, does not answer within 5 s, or
/// answers with an error (whose text it carries).
pub fn redis_command(port: u16, args: &[&str]) -> Result<String, TestkitError> {
    redis_command_as(port, None, args)
}

/// [`redis_command`], preceded by `AUTH password` on the same connection when a password
/// is given (the reply of `AUTH` must be `OK`).
fn redis_command_as(
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> Result<String, TestkitError> {
    let context = || {
        format!(
            "redis command {:?} on port {port}",
            args.first().unwrap_or(&"")
        )
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(5);
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| TestkitError::io(context(), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| TestkitError::io(context(), e))?;
    let mut request = Vec::new();
    if let Some(password) = password {
        encode_command(&mut request, &["AUTH", password]);
    }
    encode_command(&mut request, args);
    (&stream)
        .write_all(&request)
        .map_err(|e| TestkitError::io(context(), e))?;
    let mut reader = BufReader::new(&stream);
    if password.is_some() {
        read_redis_reply(&mut reader).map_err(|e| TestkitError::io(context(), e))?;
    }
    read_redis_reply(&mut reader).map_err(|e| TestkitError::io(context(), e))
}

/// Appends `args` to `request` as one RESP command.
fn encode_command(request: &mut Vec<u8>, args: &[&str]) {
    request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
}

fn read_redis_reply(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}")))
    };
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(io::Error::other(rest.to_string())),
        "$" => {
            let len = number()?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len as usize);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        "*" => {
            let len = number()?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(read_redis_reply(reader)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {line:?}"),
        )),
    }
}

/// The value of `field` in the text of an `INFO` or `CLUSTER INFO` reply.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
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

/// Polls `check` every 20 ms until it is true or `timeout` passes.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<(), TestkitError> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return Err(TestkitError::StartFailed {
                server: "redis-server",
                reason: format!("{what} within {} s", timeout.as_secs()),
                log_tail: String::new(),
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// A `redis-server` leader with one replica (`replicaof`), each on its own free port,
/// stopped when dropped.
///
/// `start` returns once the replica's link to the leader is up. `Send` and `Sync`.
///
/// ```no_run
/// let set = polycache_testkit::RedisReplicaSet::start()?;
/// assert!(set.url().contains(','));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct RedisReplicaSet {
    leader: RedisServer,
    replica: RedisServer,
}

impl RedisReplicaSet {
    /// Starts the leader, then the replica, and waits (up to 10 s) for replication.
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`TestkitError::StartFailed`] when the replica does not
    /// report `master_link_status:up` in time.
    pub fn start() -> Result<Self, TestkitError> {
        let leader = RedisServer::start()?;
        let replica =
            RedisServer::start_with_config(&[&format!("replicaof 127.0.0.1 {}", leader.port())])?;
        wait_until(QUICK_START_TIMEOUT, "the replica did not sync", || {
            replica
                .command(&["INFO", "replication"])
                .ok()
                .and_then(|info| info_field(&info, "master_link_status"))
                .as_deref()
                == Some("up")
        })?;
        Ok(RedisReplicaSet { leader, replica })
    }

    /// The leader, which takes the writes.
    pub fn leader(&self) -> &RedisServer {
        &self.leader
    }

    /// The replica.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The leader, to kill or restart it.
    pub fn leader_mut(&mut self) -> &mut RedisServer {
        &mut self.leader
    }

    /// The replica, to kill or restart it.
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// `redis://127.0.0.1:LEADER,127.0.0.1:REPLICA/0`: the leader first, as Django lists it.
    pub fn url(&self) -> String {
        format!(
            "redis://127.0.0.1:{},127.0.0.1:{}/0",
            self.leader.port(),
            self.replica.port()
        )
    }

    /// Waits until the replica has applied every write the leader took so far.
    ///
    /// Compares the leader's `master_repl_offset` with the replica's `slave_repl_offset`
    /// (`WAIT` would not do: it counts only the writes of its own connection).
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] when the replica has not caught up within 10 s.
    pub fn sync(&self) -> Result<(), TestkitError> {
        let offset = |server: &RedisServer, field: &str| -> Option<u64> {
            let info = server.command(&["INFO", "replication"]).ok()?;
            info_field(&info, field)?.parse().ok()
        };
        let target = offset(&self.leader, "master_repl_offset").ok_or_else(|| {
            TestkitError::io(
                "reading the leader's replication offset",
                io::Error::new(io::ErrorKind::InvalidData, "no master_repl_offset"),
            )
        })?;
        wait_until(QUICK_START_TIMEOUT, "the replica did not catch up", || {
            offset(&self.replica, "slave_repl_offset").is_some_and(|o| o >= target)
        })
    }
}

/// A three-node Redis Cluster (three primaries, no replicas) on free ports of `127.0.0.1`,
/// stopped when dropped.
///
/// The 16384 hash slots are split evenly by `CLUSTER ADDSLOTS`, the nodes introduced by
/// `CLUSTER MEET`; `start` returns once every node reports `cluster_state:ok`. `Send` and
/// `Sync`.
///
/// ```no_run
/// let cluster = polycache_testkit::RedisCluster::start()?;
/// assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, assigns the slots, joins them and waits (up to
    /// 30 s) until the cluster is up.
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`TestkitError::StartFailed`] when the cluster does not
    /// converge in time.
    pub fn start() -> Result<Self, TestkitError> {
        const NODES: u16 = 3;
        const SLOTS: u16 = 16384;
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            nodes.push(RedisServer::start_with_config(&[
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 5000",
            ])?);
        }
        for (i, node) in nodes.iter().enumerate() {
            let i = i as u16;
            let first = SLOTS / NODES * i;
            let last = if i + 1 == NODES {
                SLOTS
            } else {
                SLOTS / NODES * (i + 1)
            };
            let slots: Vec<String> = (first..last).map(|s| s.to_string()).collect();
            let mut args = vec!["CLUSTER", "ADDSLOTS"];
            args.extend(slots.iter().map(String::as_str));
            node.command(&args)?;
            node.command(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])?;
        }
        for node in &nodes[1..] {
            nodes[0].command(&["CLUSTER", "MEET", "127.0.0.1", &node.port().to_string()])?;
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// Waits (up to 30 s) until every node reports `cluster_state:ok`, knows every other
    /// node and sees all 16384 slots served: after [`RedisCluster::start`], or after a node
    /// was restarted (a restarted primary refuses its slots for its first ~2 s).
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] when the cluster does not converge in time.
    pub fn wait_ok(&self) -> Result<(), TestkitError> {
        let nodes = self.nodes.len().to_string();
        wait_until(
            Duration::from_secs(30),
            "the cluster did not converge",
            || {
                self.nodes.iter().all(|node| {
                    node.command(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                        info_field(&info, "cluster_state").as_deref() == Some("ok")
                            && info_field(&info, "cluster_known_nodes").as_deref()
                                == Some(nodes.as_str())
                            && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384")
                    })
                })
            },
        )
    }

    /// The nodes, each a primary serving a third of the slots.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to kill or restart one (a restarted node rejoins from its `nodes.conf`).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// A throw-away certificate authority and a server certificate it signed, for
/// `127.0.0.1` and `localhost`, made with `openssl` in a temporary directory removed on drop.
///
/// ```no_run
/// let certs = polycache_testkit::TestCertificates::generate()?;
/// let redis = polycache_testkit::RedisServer::start_tls(&certs)?;
/// assert!(redis.tls_url().is_some());
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct TestCertificates {
    dir: TempDir,
}

impl TestCertificates {
    /// Makes `ca.crt`, `server.crt` and `server.key` (EC P-256, valid for two days).
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] without `openssl`; [`TestkitError::StartFailed`]
    /// (with its output) when a step fails.
    pub fn generate() -> Result<Self, TestkitError> {
        let openssl = find_program("openssl", "openssl")?;
        let dir = TempDir::create("certs", None)?;
        let ext = dir.path().join("server.ext");
        fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| TestkitError::io(format!("writing {}", ext.display()), e))?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=polycache test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        let log = dir.path().join("openssl.log");
        for args in steps {
            let launch = Launch::new(openssl.clone(), args.iter().copied(), dir.path());
            run_to_completion("openssl", &launch, &log)?;
        }
        Ok(TestCertificates { dir })
    }

    /// The certificate authority's certificate (PEM): what clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

// ---------------------------------------------------------------------------------------
// Memcached
// ---------------------------------------------------------------------------------------

/// A `memcached` on a free port of `127.0.0.1` or on a unix socket, in a temporary
/// directory, stopped when dropped.
///
/// UDP is off and the memory limit is 64 MiB. When the tests run as root it runs as
/// `nobody` (memcached refuses root). `Send` and `Sync`.
///
/// ```no_run
/// let mc = polycache_testkit::MemcachedServer::start()?;
/// assert!(mc.url().starts_with("memcached://127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct MemcachedServer {
    // Declared before `dir` so the process is killed before the directory is removed.
    process: ServerProcess,
    endpoint: MemcachedEndpoint,
    dir: TempDir,
}

#[derive(Debug, Clone)]
enum MemcachedEndpoint {
    Tcp(u16),
    Unix(PathBuf),
}

impl MemcachedEndpoint {
    fn answers_version(&self) -> bool {
        match self {
            MemcachedEndpoint::Tcp(port) => match connect_probe(*port) {
                Some(stream) => memcached_answers_version(stream),
                None => false,
            },
            MemcachedEndpoint::Unix(path) => match UnixStream::connect(path) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
                    memcached_answers_version(stream)
                }
                Err(_) => false,
            },
        }
    }
}

impl MemcachedServer {
    /// Starts a server on a free TCP port and waits (up to 10 s) until it answers `version`.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `memcached` is not installed;
    /// [`TestkitError::StartFailed`] (with the end of its log) when it does not answer.
    pub fn start() -> Result<Self, TestkitError> {
        let (mut process, dir) = Self::prepare(Vec::new())?;
        let port = start_on_free_port(&mut process, QUICK_START_TIMEOUT, PortIn::Flag, |port| {
            Ok(Box::new(move || {
                MemcachedEndpoint::Tcp(port).answers_version()
            }))
        })?;
        Ok(MemcachedServer {
            process,
            endpoint: MemcachedEndpoint::Tcp(port),
            dir,
        })
    }

    /// Starts a server that listens only on the unix socket `<tmpdir>/mc.sock`.
    ///
    /// # Errors
    /// As [`MemcachedServer::start`].
    pub fn start_unix() -> Result<Self, TestkitError> {
        // The directory is not known before it is made; `prepare` appends the socket path.
        let (mut process, dir) = Self::prepare(vec![OsString::from("-s")])?;
        let socket = dir.path().join("mc.sock");
        process.launch.args.push(socket.clone().into_os_string());
        let endpoint = MemcachedEndpoint::Unix(socket);
        let probe_endpoint = endpoint.clone();
        process.spawn()?;
        process.wait_ready(QUICK_START_TIMEOUT, &mut || {
            probe_endpoint.answers_version()
        })?;
        Ok(MemcachedServer {
            process,
            endpoint,
            dir,
        })
    }

    /// Finds the program, makes the directory and the launch description (without a port).
    fn prepare(args: Vec<OsString>) -> Result<(ServerProcess, TempDir), TestkitError> {
        let program = find_program("memcached", "memcached")?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = TempDir::create("memcached", run_as.as_ref())?;
        let mut all_args: Vec<OsString> = ["-U", "0", "-m", "64"].map(OsString::from).to_vec();
        if let Some(user) = &run_as {
            all_args.push("-u".into());
            all_args.push(user.name.clone().into());
        }
        all_args.extend(args);
        let launch = Launch::new(program, all_args, dir.path());
        let log_path = dir.path().join("memcached.log");
        let process = ServerProcess::new("memcached", launch, log_path, libc::SIGTERM);
        Ok((process, dir))
    }

    /// The TCP port on `127.0.0.1`, or `None` for a unix-socket server.
    pub fn port(&self) -> Option<u16> {
        match &self.endpoint {
            MemcachedEndpoint::Tcp(port) => Some(*port),
            MemcachedEndpoint::Unix(_) => None,
        }
    }

    /// The unix socket's path, or `None` for a TCP server.
    pub fn unix_socket_path(&self) -> Option<&Path> {
        match &self.endpoint {
            MemcachedEndpoint::Tcp(_) => None,
            MemcachedEndpoint::Unix(path) => Some(path),
        }
    }

    /// The address as memcached clients write it: `127.0.0.1:PORT` or the socket path.
    pub fn addr(&self) -> String {
        match &self.endpoint {
            MemcachedEndpoint::Tcp(port) => format!("127.0.0.1:{port}"),
            MemcachedEndpoint::Unix(path) => path.display().to_string(),
        }
    }

    /// The URL: `memcached://127.0.0.1:PORT` or `memcached:///…/mc.sock`.
    pub fn url(&self) -> String {
        format!("memcached://{}", self.addr())
    }

    /// The server's temporary directory, which holds `memcached.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, or `None` once it was killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with `SIGKILL` and waits for it; for fault tests.
    ///
    /// When this returns the port (or socket) no longer accepts connections. Does nothing
    /// if the server is not running.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the signal cannot be sent or the process not waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.process.kill()
    }

    /// Stops the server with `SIGTERM` and waits for it (killing it after 10 s).
    ///
    /// # Errors
    /// As [`MemcachedServer::kill`].
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.process.stop()
    }

    /// Stops the server if it runs, then starts it again, empty, on the same address.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] if it does not answer within 10 s.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let endpoint = self.endpoint.clone();
        self.process
            .restart(QUICK_START_TIMEOUT, &mut || endpoint.answers_version())
    }

    /// Freezes the server with `SIGSTOP`: connections stay open and the kernel still
    /// accepts new ones, but nothing is answered until [`MemcachedServer::thaw`] — a server stuck in
    /// a long pause. For fault tests of timeouts. Dropping, stopping or restarting a frozen
    /// server thaws it first.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the server is not running or cannot be signalled.
    pub fn freeze(&mut self) -> Result<(), TestkitError> {
        self.process.freeze()
    }

    /// Lets a frozen server run again (`SIGCONT`); does nothing if it is not frozen.
    ///
    /// # Errors
    /// As [`MemcachedServer::freeze`].
    pub fn thaw(&mut self) -> Result<(), TestkitError> {
        self.process.thaw()
    }
}

fn memcached_answers_version(mut stream: impl Read + Write) -> bool {
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    matches!(read_line(&mut stream), Some(line) if line.starts_with("VERSION"))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// A PostgreSQL server on a free port of `127.0.0.1`, with a fresh cluster in a temporary
/// directory, stopped when dropped.
///
/// The cluster has one superuser, `postgres`, with `trust` authentication, and durability
/// is off (`fsync`, `synchronous_commit`, `full_page_writes`). When the tests run as root,
/// `initdb` and `postgres` run as `nobody` (PostgreSQL refuses root) and the directory is
/// owned by that user. `Send` and `Sync`.
///
/// ```no_run
/// let pg = polycache_testkit::PostgresServer::start()?;
/// assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    // Declared before `dir` so the process is killed before the directory is removed.
    process: ServerProcess,
    port: u16,
    bin_dir: PathBuf,
    dir: TempDir,
}

impl PostgresServer {
    /// Runs `initdb`, starts `postgres` and waits (up to 30 s) until it accepts a login.
    ///
    /// The binaries are looked for on `PATH`, then under `/usr/lib/postgresql/*/bin`
    /// (the highest version).
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when PostgreSQL is not installed;
    /// [`TestkitError::StartFailed`] (with the end of the log) when `initdb` fails or the
    /// server does not accept connections in time.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_inner(None)
    }

    /// Starts a server with `ssl=on` and the server certificate of `certs`; it accepts both
    /// TLS and plain connections on its one port (clients choose with `sslmode`).
    ///
    /// # Errors
    /// As [`PostgresServer::start`], and [`TestkitError::Io`] when the key cannot be copied.
    pub fn start_tls(certs: &TestCertificates) -> Result<Self, TestkitError> {
        Self::start_inner(Some(certs))
    }

    fn start_inner(certs: Option<&TestCertificates>) -> Result<Self, TestkitError> {
        let bin_dir = find_postgres_bin_dir()?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = TempDir::create("postgres", run_as.as_ref())?;
        let data_dir = dir.path().join("data");

        let initdb_log = dir.path().join("initdb.log");
        let mut initdb = Launch::new(
            bin_dir.join("initdb"),
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--no-sync"),
                OsStr::new("--locale=C"),
                OsStr::new("--encoding=UTF8"),
            ],
            dir.path(),
        );
        initdb.run_as = run_as.as_ref().map(|u| (u.uid, u.gid));
        run_to_completion("initdb", &initdb, &initdb_log)?;

        let mut launch = Launch::new(
            bin_dir.join("postgres"),
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("-k"),
                dir.path().as_os_str(),
                OsStr::new("-c"),
                OsStr::new("listen_addresses=127.0.0.1"),
                OsStr::new("-c"),
                OsStr::new("fsync=off"),
                OsStr::new("-c"),
                OsStr::new("synchronous_commit=off"),
                OsStr::new("-c"),
                OsStr::new("full_page_writes=off"),
            ],
            dir.path(),
        );
        launch.run_as = initdb.run_as;
        if let Some(certs) = certs {
            // PostgreSQL refuses a key that others can read or that another user owns.
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            for (from, to) in [(certs.server_cert(), &cert), (certs.server_key(), &key)] {
                fs::copy(&from, to)
                    .map_err(|e| TestkitError::io(format!("copying {}", from.display()), e))?;
                fs::set_permissions(to, fs::Permissions::from_mode(0o600))
                    .map_err(|e| TestkitError::io(format!("chmod {}", to.display()), e))?;
                if let Some(account) = &run_as {
                    std::os::unix::fs::chown(to, Some(account.uid), Some(account.gid))
                        .map_err(|e| TestkitError::io(format!("chown {}", to.display()), e))?;
                }
            }
            launch.args.extend([
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert.display()).into(),
                "-c".into(),
                format!("ssl_key_file={}", key.display()).into(),
            ]);
        }
        // SIGINT is PostgreSQL's "fast" shutdown: it ends sessions instead of waiting for them.
        let mut process = ServerProcess::new(
            "postgres",
            launch,
            dir.path().join("postgres.log"),
            libc::SIGINT,
        );
        // SIGQUIT ("immediate") makes the postmaster take its children down with it, which
        // a SIGKILL would not.
        process.drop_signal = libc::SIGQUIT;
        let port =
            start_on_free_port(&mut process, POSTGRES_START_TIMEOUT, PortIn::Flag, |port| {
                Ok(Box::new(move || postgres_accepts_login(port)))
            })?;
        Ok(PostgresServer {
            process,
            port,
            bin_dir,
            dir,
        })
    }

    /// The TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database as user `postgres`:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory that holds the server's unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the PostgreSQL programs used (`psql` is usually there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's temporary directory: `data/`, `initdb.log`, `postgres.log`, the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The postmaster's process id, or `None` once it was killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops the server at once (`SIGQUIT`, "immediate" shutdown) and waits for it; for
    /// fault tests.
    ///
    /// Unlike `SIGKILL` this lets the postmaster take its child processes down too. When
    /// this returns the port is closed.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the signal cannot be sent or the process not waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.process.terminate(libc::SIGQUIT)
    }

    /// Stops the server with a "fast" shutdown (`SIGINT`) and waits for it.
    ///
    /// # Errors
    /// As [`PostgresServer::kill`].
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.process.stop()
    }

    /// Stops the server if it runs, then starts it again on the same port, keeping its data.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] if it does not accept connections within 30 s.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let port = self.port;
        self.process
            .restart(POSTGRES_START_TIMEOUT, &mut || postgres_accepts_login(port))
    }

    /// Freezes the server with `SIGSTOP` (the postmaster and every backend process): connections stay open and the kernel still
    /// accepts new ones, but nothing is answered until [`PostgresServer::thaw`] — a server stuck in
    /// a long pause. For fault tests of timeouts. Dropping, stopping or restarting a frozen
    /// server thaws it first.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the server is not running or cannot be signalled.
    pub fn freeze(&mut self) -> Result<(), TestkitError> {
        self.process.freeze()
    }

    /// Lets a frozen server run again (`SIGCONT`); does nothing if it is not frozen.
    ///
    /// # Errors
    /// As [`PostgresServer::freeze`].
    pub fn thaw(&mut self) -> Result<(), TestkitError> {
        self.process.thaw()
    }
}

/// Whether the server completes a login as `postgres` (trust) to database `postgres`.
///
/// Speaks just enough of the v3 protocol: a StartupMessage, then the first reply must be
/// `AuthenticationOk`; while starting up the server answers with an `ErrorResponse` instead.
fn postgres_accepts_login(port: u16) -> bool {
    let Some(mut stream) = connect_probe(port) else {
        return false;
    };
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for part in ["user", "postgres", "database", "postgres"] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    if stream.write_all(&message).is_err() {
        return false;
    }
    let mut reply = [0u8; 9];
    if stream.read_exact(&mut reply).is_err() {
        return false;
    }
    let ok = reply == [b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    // Terminate, so the server does not log an unexpected EOF.
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    ok
}

fn find_postgres_bin_dir() -> Result<PathBuf, TestkitError> {
    let usable =
        |dir: &Path| is_executable(&dir.join("postgres")) && is_executable(&dir.join("initdb"));
    if let Some(postgres) = search_path("postgres") {
        // initdb finds its matching `postgres` next to its own resolved path.
        let resolved = fs::canonicalize(&postgres).unwrap_or(postgres);
        if let Some(dir) = resolved.parent().filter(|d| usable(d)) {
            return Ok(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            match version {
                Some(v) if usable(&bin) => Some((v, bin)),
                _ => None,
            }
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(TestkitError::MissingBinary {
            program: "postgres",
            package: "postgresql",
        })
}

fn run_to_completion(
    name: &'static str,
    launch: &Launch,
    log_path: &Path,
) -> Result<(), TestkitError> {
    let log = open_log(log_path)?;
    let status = launch
        .command(log)?
        .status()
        .map_err(|e| TestkitError::io(format!("running {}", launch.program.display()), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(TestkitError::StartFailed {
            server: name,
            reason: format!("it exited with {status}"),
            log_tail: log_tail(log_path),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Process management shared by the servers
// ---------------------------------------------------------------------------------------

/// A readiness check: true once the server answers.
type Probe = Box<dyn FnMut() -> bool>;

/// What to run: the program, its arguments, its directory and the user to run it as.
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl Launch {
    fn new<I, S>(program: PathBuf, args: I, cwd: &Path) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Launch {
            program,
            args: args.into_iter().map(Into::into).collect(),
            cwd: cwd.to_path_buf(),
            run_as: None,
        }
    }

    /// A command with stdin closed and stdout and stderr going to `log`.
    fn command(&self, log: File) -> Result<Command, TestkitError> {
        let log_err = log
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some((uid, gid)) = self.run_as {
            // std also clears the supplementary groups when it drops root.
            cmd.uid(uid).gid(gid);
        }
        Ok(cmd)
    }
}

/// One server process, respawnable, killed and reaped on drop.
#[derive(Debug)]
struct ServerProcess {
    name: &'static str,
    launch: Launch,
    log_path: PathBuf,
    child: Option<Child>,
    /// Signal of a graceful stop.
    stop_signal: libc::c_int,
    /// Signal sent on drop; the process is killed if it has not exited shortly after.
    drop_signal: libc::c_int,
    /// Whether [`ServerProcess::freeze`] stopped it (and its children) with `SIGSTOP`.
    frozen: bool,
}

/// Why a spawned server did not become ready.
enum NotReady {
    /// It exited: most often because another process took the port.
    Exited(TestkitError),
    /// It did not answer in time, or it could not be spawned.
    Failed(TestkitError),
}

impl ServerProcess {
    fn new(
        name: &'static str,
        launch: Launch,
        log_path: PathBuf,
        stop_signal: libc::c_int,
    ) -> Self {
        ServerProcess {
            name,
            launch,
            log_path,
            child: None,
            stop_signal,
            drop_signal: libc::SIGKILL,
            frozen: false,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), TestkitError> {
        let log = open_log(&self.log_path)?;
        let child = self.launch.command(log)?.spawn().map_err(|e| {
            TestkitError::io(format!("starting {}", self.launch.program.display()), e)
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes.
    fn wait_ready(
        &mut self,
        timeout: Duration,
        probe: &mut dyn FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        self.wait_ready_detailed(timeout, probe)
            .map_err(|e| match e {
                NotReady::Exited(e) | NotReady::Failed(e) => e,
            })
    }

    fn wait_ready_detailed(
        &mut self,
        timeout: Duration,
        probe: &mut dyn FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(NotReady::Failed(
                    self.start_failed("it is not running".into()),
                ));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(NotReady::Exited(self.start_failed(describe_exit(status))));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(NotReady::Failed(TestkitError::io(
                        format!("checking on {}", self.name),
                        e,
                    )))
                }
            }
            if probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.terminate(libc::SIGKILL);
                return Err(NotReady::Failed(self.start_failed(format!(
                    "it did not answer within {} s",
                    timeout.as_secs()
                ))));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn start_failed(&self, reason: String) -> TestkitError {
        TestkitError::StartFailed {
            server: self.name,
            reason,
            log_tail: log_tail(&self.log_path),
        }
    }

    fn kill(&mut self) -> Result<(), TestkitError> {
        self.terminate(libc::SIGKILL)
    }

    /// Stops the process and its direct children (PostgreSQL's per-connection backends)
    /// with `SIGSTOP`: they keep their sockets open but answer nothing, as a server stuck in
    /// swap or a long pause would. The kernel still accepts connections on its port.
    fn freeze(&mut self) -> Result<(), TestkitError> {
        self.signal_tree(libc::SIGSTOP)?;
        self.frozen = true;
        Ok(())
    }

    /// Lets a frozen process and its children run again (`SIGCONT`).
    fn thaw(&mut self) -> Result<(), TestkitError> {
        if !self.frozen {
            return Ok(());
        }
        self.signal_tree(libc::SIGCONT)?;
        self.frozen = false;
        Ok(())
    }

    fn signal_tree(&self, signal: libc::c_int) -> Result<(), TestkitError> {
        let context = || format!("signalling {} ({signal})", self.name);
        let Some(pid) = self.pid() else {
            return Err(TestkitError::io(
                context(),
                io::Error::new(io::ErrorKind::NotFound, "the server is not running"),
            ));
        };
        // The parent first: once stopped it forks no backend we would miss.
        signal_pid(pid, signal).map_err(|e| TestkitError::io(context(), e))?;
        for child in child_pids(pid) {
            signal_pid(child, signal).map_err(|e| TestkitError::io(context(), e))?;
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), TestkitError> {
        self.terminate(self.stop_signal)
    }

    /// Sends `signal`, waits up to [`STOP_GRACE`] for the exit, then kills; always reaps.
    fn terminate(&mut self, signal: libc::c_int) -> Result<(), TestkitError> {
        // A stopped process would sit on a catchable signal until the grace ran out.
        let _ = self.thaw();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let result = signal_and_reap(&mut child, signal, STOP_GRACE);
        if result.is_err() {
            // Keep the handle so that Drop tries again.
            self.child = Some(child);
        }
        result.map_err(|e| TestkitError::io(format!("stopping {}", self.name), e))
    }

    fn restart(
        &mut self,
        timeout: Duration,
        probe: &mut dyn FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        self.stop()?;
        // The old process may need a moment to release the port; a fresh spawn that exits
        // early is tried again until the deadline.
        let deadline = Instant::now() + timeout;
        loop {
            self.spawn()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_ready_detailed(left, probe) {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited(e))
                    if Instant::now() + Duration::from_millis(200) >= deadline =>
                {
                    return Err(e)
                }
                Err(NotReady::Exited(_)) => thread::sleep(Duration::from_millis(100)),
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Frozen children (PostgreSQL backends) must run to notice their parent is gone.
        let _ = self.thaw();
        if let Some(mut child) = self.child.take() {
            // Errors cannot be reported from Drop; SIGKILL and a blocking wait are the
            // fallback inside `signal_and_reap`.
            let _ = signal_and_reap(&mut child, self.drop_signal, Duration::from_secs(5));
        }
    }
}

/// Sends `signal` to `child`, waits up to `grace` for it to exit, then SIGKILLs and reaps it.
fn signal_and_reap(child: &mut Child, signal: libc::c_int, grace: Duration) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if signal == libc::SIGKILL {
        child.kill()?;
        child.wait()?;
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: `pid` is our own child, not yet reaped (try_wait above saw it running, and
    // only this function waits on it), so the id cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Where a server is told its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortIn {
    /// `prepare` writes it into a config file.
    ConfigFile,
    /// `-p PORT` is appended to the command line.
    Flag,
}

/// Spawns the process on a fresh free port up to [`START_ATTEMPTS`] times.
///
/// `prepare(port)` writes the port where the server reads it, if that is a file, and
/// returns the readiness probe. Only an early exit of the server (most often: another
/// process took the port) leads to another attempt; a timeout does not.
fn start_on_free_port<F>(
    process: &mut ServerProcess,
    timeout: Duration,
    port_in: PortIn,
    mut prepare: F,
) -> Result<u16, TestkitError>
where
    F: FnMut(u16) -> Result<Probe, TestkitError>,
{
    let base_args = process.launch.args.clone();
    let takes_port_flag = port_in == PortIn::Flag;
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_loopback_port()?;
        process.launch.args = base_args.clone();
        if takes_port_flag {
            process.launch.args.push("-p".into());
            process.launch.args.push(port.to_string().into());
        }
        let mut probe = prepare(port)?;
        process.spawn()?;
        match process.wait_ready_detailed(timeout, &mut probe) {
            Ok(()) => return Ok(port),
            Err(NotReady::Exited(e)) => last_error = Some(e),
            Err(NotReady::Failed(e)) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| process.start_failed("no attempt was made".into())))
}

fn describe_exit(status: ExitStatus) -> String {
    format!("it exited before answering ({status})")
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

fn connect_probe(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    Some(stream)
}

/// Reads one `\n`-terminated line (at most 1 KiB); `None` on error or end of stream.
fn read_line(stream: &mut impl Read) -> Option<String> {
    let mut reader = BufReader::new(stream.take(1024));
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

fn open_log(path: &Path) -> Result<File, TestkitError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TestkitError::io(format!("opening log file {}", path.display()), e))
}

/// The last [`LOG_TAIL_LINES`] lines of a log file, or a note that it cannot be read.
fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

fn search_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds `program` on `PATH`, or else in `/usr/sbin` and `/usr/bin` (often missing from a
/// non-root `PATH`).
fn find_program(program: &'static str, package: &'static str) -> Result<PathBuf, TestkitError> {
    search_path(program)
        .or_else(|| {
            ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(program))
                .find(|candidate| is_executable(candidate))
        })
        .ok_or(TestkitError::MissingBinary { program, package })
}

/// Sends `signal` to `pid`; a process that exited meanwhile is not an error.
fn signal_pid(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions; `pid` is our server or one of its
    // children, listed from /proc just now.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// The processes whose parent is `pid`, read from `/proc/*/stat`.
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let candidate: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(candidate)
        })
        .collect()
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The account servers run as when the tests run as root.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

fn unprivileged_user() -> Result<Account, TestkitError> {
    const NAME: &str = "nobody";
    let c_name = CString::new(NAME).expect("no NUL in a literal");
    // SAFETY: `passwd` is plain old data; all-zero is a valid value that getpwnam_r overwrites.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: a NUL-terminated name, an owned `passwd`,
    // a buffer of the length passed, and an out-pointer; getpwnam_r is thread-safe.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        let source = if rc != 0 {
            io::Error::from_raw_os_error(rc)
        } else {
            io::Error::new(io::ErrorKind::NotFound, "no such user")
        };
        return Err(TestkitError::io(
            format!("looking up user `{NAME}` to run servers as when root"),
            source,
        ));
    }
    Ok(Account {
        name: NAME.to_string(),
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

/// A directory removed, with everything in it, when dropped: the servers' data directories,
/// and the scratch directories of the tests.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Makes `polycache-<what>-<unique>` (mode 700) in the temporary directory, owned by
    /// `owner` when given.
    ///
    /// A directory for another owner is made under the system temporary directory only if
    /// that user can reach it, else under `/tmp`.
    fn create(what: &str, owner: Option<&Account>) -> Result<Self, TestkitError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut base = std::env::temp_dir();
        if owner.is_some() && !traversable_by_others(&base) {
            base = PathBuf::from("/tmp");
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("polycache-{what}-{}-{n}-{nanos:x}", std::process::id());
            let path = base.join(name);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = TempDir { path };
                    if let Some(account) = owner {
                        std::os::unix::fs::chown(&dir.path, Some(account.uid), Some(account.gid))
                            .map_err(|e| {
                            TestkitError::io(
                                format!("giving {} to user {}", dir.path.display(), account.name),
                                e,
                            )
                        })?;
                    }
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(TestkitError::io(
                        format!("creating a temporary directory in {}", base.display()),
                        e,
                    ))
                }
            }
        }
        Err(TestkitError::io(
            format!("creating a temporary directory in {}", base.display()),
            io::Error::new(io::ErrorKind::AlreadyExists, "every name tried exists"),
        ))
    }

    /// A fresh `polycache-<what>-<unique>` directory (mode 700) of the current user, for a
    /// test's files. Panics when it cannot be made: a test cannot go on without it.
    pub fn new(what: &str) -> Self {
        Self::create(what, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Whether every directory from `/` down to `dir` lets other users through (`o+x`).
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_its_package() {
        let err = find_program("polycache-no-such-program", "some-package").unwrap_err();
        assert!(matches!(err, TestkitError::MissingBinary { .. }));
        let text = err.to_string();
        assert!(text.contains("polycache-no-such-program"), "{text}");
        assert!(text.contains("`some-package` package"), "{text}");
    }

    #[test]
    fn redis_quote_escapes_quotes_and_backslashes() {
        assert_eq!(redis_quote(Path::new("/tmp/a b")), "\"/tmp/a b\"");
        assert_eq!(redis_quote(Path::new("/x\"y\\z")), "\"/x\\\"y\\\\z\"");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = TempDir::create("logtail", None).unwrap();
        let log = dir.path().join("x.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 99"));
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
