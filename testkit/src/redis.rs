//! `redis-server`: one server ([`RedisServer`], over TCP, TLS and a unix socket), a leader
//! with a replica ([`RedisReplicaSet`]) and a Cluster ([`RedisCluster`]); and the small RESP
//! client the tests use to talk to them ([`redis_command`]).

use crate::certs::TestCertificates;
use crate::process::{
    connect_probe, find_program, read_line, start_on_free_port, Launch, PortIn, ServerProcess,
};
use crate::tempdir::TempDir;
use crate::{free_loopback_port, TestkitError, POLL_INTERVAL, QUICK_START_TIMEOUT};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

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

/// How a test reaches a `redis-server`, so that one test body runs over each (as redis-rs'
/// own tests do with their `ServerType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `redis://127.0.0.1:PORT/0`.
    Tcp,
    /// `rediss://127.0.0.1:PORT/0?tls_ca=…`: TLS with a private CA.
    Tls,
    /// `unix:///…/redis.sock`.
    Unix,
}

impl Transport {
    /// Every transport, in the order a test goes through them.
    pub const ALL: [Transport; 3] = [Transport::Tcp, Transport::Tls, Transport::Unix];
}

/// A `redis-server` reached over one [`Transport`], with the certificates a TLS one needs;
/// stopped when dropped.
///
/// ```no_run
/// use polycache_testkit::{RedisOver, Transport};
/// for transport in Transport::ALL {
///     let Some(redis) = RedisOver::start(transport)? else {
///         continue; // this redis-server was built without TLS
///     };
///     assert!(redis.url_with("key_prefix=app").contains("key_prefix=app"));
/// }
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct RedisOver {
    // Declared first: the server stops before its certificates' directory goes.
    server: RedisServer,
    certs: Option<TestCertificates>,
    transport: Transport,
}

impl RedisOver {
    /// Starts a server for `transport`; `None` for [`Transport::Tls`] when this
    /// `redis-server` was built without TLS (it rejects the `tls-*` directives).
    ///
    /// # Errors
    /// As [`RedisServer::start`] and [`TestCertificates::generate`].
    pub fn start(transport: Transport) -> Result<Option<Self>, TestkitError> {
        let (server, certs) = match transport {
            Transport::Tcp | Transport::Unix => (RedisServer::start()?, None),
            Transport::Tls => {
                let certs = TestCertificates::generate()?;
                match RedisServer::start_tls(&certs) {
                    Ok(server) => (server, Some(certs)),
                    Err(e) if e.to_string().contains("Bad directive") => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Some(RedisOver {
            server,
            certs,
            transport,
        }))
    }

    /// The cache URL that reaches the server over this transport.
    pub fn url(&self) -> String {
        match (self.transport, &self.certs) {
            (Transport::Tls, Some(certs)) => format!(
                "{}?tls_ca={}",
                self.server.tls_url().expect("a TLS server has a TLS port"),
                certs.ca_cert().display()
            ),
            (Transport::Unix, _) => self.server.unix_url(),
            _ => self.server.url(),
        }
    }

    /// [`RedisOver::url`] with the query options `options` (`a=1&b=2`) added.
    pub fn url_with(&self, options: &str) -> String {
        let url = self.url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{options}")
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The server, to send it commands or inject a fault.
    pub fn server(&self) -> &RedisServer {
        &self.server
    }
}

pub(crate) fn redis_config(port: u16, dir: &Path, socket: &Path, extra: &[String]) -> String {
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
pub(crate) fn tls_config(tls_port: u16, certs: &TestCertificates) -> [String; 5] {
    [
        format!("tls-port {tls_port}"),
        format!("tls-cert-file {}", redis_quote(&certs.server_cert())),
        format!("tls-key-file {}", redis_quote(&certs.server_key())),
        format!("tls-ca-cert-file {}", redis_quote(&certs.ca_cert())),
        "tls-auth-clients no".to_string(),
    ]
}

/// Quotes a path for `redis.conf`, which splits arguments on spaces.
pub(crate) fn redis_quote(path: &Path) -> String {
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

pub(crate) fn redis_answers_ping(port: u16) -> bool {
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
pub(crate) fn redis_command_as(
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
pub(crate) fn encode_command(request: &mut Vec<u8>, args: &[&str]) {
    request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
}

pub(crate) fn read_redis_reply(reader: &mut impl BufRead) -> io::Result<String> {
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

/// How many times the server answered `command` (lower case, as `INFO commandstats` names
/// it), from the text of an `INFO commandstats` reply; 0 when it never ran.
///
/// ```
/// let info = "# Commandstats\r\ncmdstat_get:calls=7,usec=10,usec_per_call=1.43\r\n";
/// assert_eq!(polycache_testkit::command_calls(info, "get"), 7);
/// assert_eq!(polycache_testkit::command_calls(info, "set"), 0);
/// ```
pub fn command_calls(info: &str, command: &str) -> u64 {
    info_field(info, &format!("cmdstat_{command}"))
        .and_then(|v| v.strip_prefix("calls=")?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Polls `check` every 20 ms until it is true or `timeout` passes.
pub(crate) fn wait_until(
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

/// The configuration lines of every node of a [`RedisCluster`].
const CLUSTER_CONFIG: [&str; 3] = [
    "cluster-enabled yes",
    "cluster-config-file nodes.conf",
    "cluster-node-timeout 5000",
];

/// A three-node Redis Cluster (three primaries, no replicas unless added) on free ports of `127.0.0.1`,
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
        RedisCluster::start_with_config(&[])
    }

    /// [`RedisCluster::start`] with extra lines in every node's configuration (as
    /// [`RedisServer::start_with_config`]).
    ///
    /// # Errors
    /// As [`RedisCluster::start`].
    pub fn start_with_config(extra_config: &[&str]) -> Result<Self, TestkitError> {
        const NODES: u16 = 3;
        const SLOTS: u16 = 16384;
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            let mut config = CLUSTER_CONFIG.to_vec();
            config.extend_from_slice(extra_config);
            nodes.push(RedisServer::start_with_config(&config)?);
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

    /// The hash slot of `key` (a full key, as stored), from `CLUSTER KEYSLOT`.
    ///
    /// # Errors
    /// [`TestkitError::Io`] when the first node does not answer.
    pub fn slot_of(&self, key: &str) -> Result<u16, TestkitError> {
        let reply = self.nodes[0].command(&["CLUSTER", "KEYSLOT", key])?;
        reply.parse().map_err(|_| {
            TestkitError::io(
                "CLUSTER KEYSLOT",
                io::Error::new(io::ErrorKind::InvalidData, reply.clone()),
            )
        })
    }

    /// The index of the node that serves `slot` now, as that node itself says (the
    /// `myself` line of its `CLUSTER NODES`); `None` when no live node claims it.
    pub fn owner_of_slot(&self, slot: u16) -> Option<usize> {
        self.nodes.iter().position(|node| {
            let Ok(text) = node.command(&["CLUSTER", "NODES"]) else {
                return false;
            };
            text.lines()
                .find(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|f| f.contains("myself"))
                })
                .is_some_and(|line| serves_slot(line, slot))
        })
    }

    /// Moves `slot` with its keys to node `to` as `redis-cli --cluster reshard` does:
    /// `SETSLOT IMPORTING` / `MIGRATING`, `MIGRATE` of every key, then `SETSLOT NODE` on
    /// every node; returns once every node agrees on the new owner (up to 30 s).
    ///
    /// # Errors
    /// [`TestkitError::Io`] when a node refuses a step; [`TestkitError::StartFailed`] when
    /// the nodes do not agree in time.
    pub fn move_slot(&self, slot: u16, to: usize) -> Result<(), TestkitError> {
        let from = self.owner_of_slot(slot).ok_or_else(|| {
            TestkitError::io(
                "move_slot",
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no node serves slot {slot}"),
                ),
            )
        })?;
        if from == to {
            return Ok(());
        }
        let slot_text = slot.to_string();
        let id = |i: usize| self.nodes[i].command(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from)?, id(to)?);
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        target.command(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id])?;
        source.command(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id])?;
        loop {
            let keys = source.command(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])?;
            if keys.is_empty() {
                break;
            }
            let port = target.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.lines());
            source.command(&args)?;
        }
        let others = (0..self.nodes.len()).filter(|i| ![to, from].contains(i));
        for node in [to, from].into_iter().chain(others) {
            self.nodes[node].command(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])?;
        }
        let agreed = |node: &RedisServer| {
            node.command(&["CLUSTER", "NODES"]).is_ok_and(|text| {
                text.lines()
                    .any(|l| l.starts_with(to_id.as_str()) && serves_slot(l, slot))
            })
        };
        wait_until(
            Duration::from_secs(30),
            "the nodes did not agree on the slot's owner",
            || self.nodes.iter().all(agreed),
        )
    }
}

impl RedisCluster {
    /// Starts a new node, joins it to the cluster as a replica of node `of` and waits (up to
    /// 30 s) until it has synced and every node knows it; returns its index in
    /// [`RedisCluster::nodes`].
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`TestkitError::StartFailed`] when it does not sync in
    /// time.
    pub fn add_replica(&mut self, of: usize) -> Result<usize, TestkitError> {
        let node = RedisServer::start_with_config(&CLUSTER_CONFIG)?;
        let port = node.port().to_string();
        self.nodes[0].command(&["CLUSTER", "MEET", "127.0.0.1", &port])?;
        let primary = self.nodes[of].command(&["CLUSTER", "MYID"])?;
        wait_until(Duration::from_secs(30), "the new node did not join", || {
            node.command(&["CLUSTER", "NODES"])
                .is_ok_and(|t| t.contains(primary.as_str()))
        })?;
        node.command(&["CLUSTER", "REPLICATE", &primary])?;
        wait_until(
            Duration::from_secs(30),
            "the new replica did not sync",
            || {
                node.command(&["INFO", "replication"]).is_ok_and(|info| {
                    info_field(&info, "master_link_status").as_deref() == Some("up")
                })
            },
        )?;
        self.nodes.push(node);
        self.wait_ok()?;
        Ok(self.nodes.len() - 1)
    }

    /// Promotes the replica `replica` with `CLUSTER FAILOVER` (its primary, still up, becomes
    /// its replica) and waits (up to 30 s) until every node sees it as a primary.
    ///
    /// # Errors
    /// [`TestkitError::Io`] when the replica refuses; [`TestkitError::StartFailed`] when the
    /// nodes do not agree in time.
    pub fn failover(&self, replica: usize) -> Result<(), TestkitError> {
        let node = &self.nodes[replica];
        let id = node.command(&["CLUSTER", "MYID"])?;
        node.command(&["CLUSTER", "FAILOVER"])?;
        let promoted = |other: &RedisServer| {
            other.command(&["CLUSTER", "NODES"]).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.starts_with(id.as_str())
                        && l.split_whitespace()
                            .nth(2)
                            .is_some_and(|f| f.contains("master"))
                })
            })
        };
        wait_until(
            Duration::from_secs(30),
            "the replica was not promoted",
            || self.nodes.iter().all(promoted),
        )?;
        self.wait_ok()
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among the slots its node serves.
fn serves_slot(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        match (first.parse::<u16>(), last.parse::<u16>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&slot),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_quote_escapes_quotes_and_backslashes() {
        assert_eq!(redis_quote(Path::new("/tmp/a b")), "\"/tmp/a b\"");
        assert_eq!(redis_quote(Path::new("/x\"y\\z")), "\"/x\\\"y\\\\z\"");
    }
}
