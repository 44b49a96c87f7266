//! `memcached://`: one or several memcached servers on a ketama ring, spoken to with the
//! meta protocol (and the classic multi-key `get` for `get_many`) over TCP or a unix socket.
//!
//! Why an own protocol module rather than a client crate, and why the meta protocol: see
//! `docs/backends/memcached.md`. In short: no maintained blocking Rust client offers ketama
//! placement compatible with libmemcached, pipelined multi-server multi-get and per-server
//! failure isolation together, and the meta commands give `add`, `touch`, `has_key` and
//! get-or-create counters in one round trip each with replies that are easy to parse strictly.

pub(crate) mod protocol;
mod ring;

use super::{not_found, Backend};
use crate::error::{Error, ErrorKind, Result};
use crate::location::{Location, Options};
use crate::policy::is_outage;
use crate::value::Value;
use protocol::{Kind, Parse, Reply};
use ring::Ring;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The port a host without one is given.
pub const DEFAULT_PORT: u16 = 11211;
/// The item size limit assumed until a server says otherwise: memcached's default (`-I 1m`).
pub const DEFAULT_ITEM_SIZE_MAX: usize = 1 << 20;
/// What memcached adds to key and value bytes when it sizes an item (item header, CAS,
/// terminators): 59 bytes on 64-bit builds; rounded up so the check errs on the safe side.
const ITEM_OVERHEAD: usize = 64;
/// Bytes of requests written to one server before its replies are read: small enough for
/// the socket buffers to hold them while the server waits for us to read its replies, so a
/// pipeline never deadlocks.
const BATCH_BYTES: usize = 64 * 1024;
/// The size of a connection's read buffer, and the size it shrinks back to after a big value.
const READ_BUFFER: usize = 16 * 1024;
/// The suffix of the key that holds a namespace's generation (`namespace=true`).
const NAMESPACE_SUFFIX: &[u8] = b":__ns__";

/// The backend behind `memcached://h1:11211,h2:11211` and `memcached:///path/to/mc.sock`.
///
/// Keys are placed on the servers by libmemcached-compatible ketama hashing (documented in
/// `docs/backends/memcached.md`), so adding a fourth server to three moves about a quarter
/// of the keys. Each server has a small pool of connections shared by all threads; a
/// multi-key call sends one pipelined batch to every server involved before it reads any
/// reply. Keys memcached cannot carry (over 250 bytes, spaces, control characters,
/// non-ASCII) are replaced by `h:` and the hex SHA-256 of the key.
///
/// With several servers, a server that fails `failure_limit` times in a row is taken out
/// for `dead_retry` seconds: calls for its keys fail at once with a connection error (a miss
/// when the cache fails open) while the other servers go on serving theirs; then one call
/// probes it, and its success brings it back.
///
/// `Send + Sync`; clones share the pools. No method panics.
///
/// ```no_run
/// use polycache::{Cache, Expiry};
/// let cache = Cache::open("memcached://127.0.0.1:11211,127.0.0.1:11212?socket_timeout=0.5")?;
/// cache.set("greeting", b"hello", Expiry::Default)?;
/// assert_eq!(cache.get("greeting")?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), polycache::Error>(())
/// ```
#[derive(Clone)]
pub struct MemcachedBackend {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Box<[Server]>,
    ring: Ring,
    settings: Settings,
    /// `namespace=true`: generation per namespace, and when it was read (coarse ticks).
    generations: Mutex<HashMap<Vec<u8>, (u64, u64)>>,
}

#[derive(Debug, Clone)]
struct Settings {
    connect_timeout: Option<Duration>,
    socket_timeout: Option<Duration>,
    /// Coarse-clock ticks a failed server stays out; 0 when servers are never taken out.
    dead_ticks: u64,
    dead_retry: Duration,
    failure_limit: u32,
    pool_size: usize,
    namespace: bool,
    namespace_refresh_ticks: u64,
}

#[derive(Debug, Clone)]
enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

struct Server {
    /// As written in the URL: `host:port` or the socket path; for errors and logs.
    label: String,
    endpoint: Endpoint,
    pool: Mutex<Vec<Conn>>,
    /// The server's `item_size_max`, learned when a connection opens (or given).
    item_size_max: AtomicUsize,
    learn_item_size: bool,
    failures: AtomicU32,
    /// Coarse-clock deadline while the server is out of the ring; 0 while it is in.
    dead_until: AtomicU64,
    /// Set once the server was ever reached, for the first error's wording.
    reached: AtomicBool,
}

fn now_ticks() -> u64 {
    coarsetime::Instant::now_without_cache_update().as_ticks()
}

fn ticks(d: Duration) -> u64 {
    coarsetime::Duration::from(d.min(Duration::from_secs(86_400 * 365))).as_ticks()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
        }
    }
}

/// Why a call on a connection failed in a way that leaves the connection unusable.
#[derive(Debug)]
enum Fault {
    /// Reading or writing failed, or timed out.
    Io(io::Error),
    /// The server answered something outside the protocol: we may be out of step.
    Protocol(String),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        Fault::Io(e)
    }
}

impl Fault {
    /// True when the peer had closed or reset the connection: a pooled connection to a
    /// restarted server fails this way before the request reaches anyone.
    fn is_stale_connection(&self) -> bool {
        matches!(self, Fault::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
        ))
    }
}

type Io<T> = std::result::Result<T, Fault>;

/// One connection: the stream, a read buffer with the unread bytes in `start..end`, and the
/// requests being assembled in `out`.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// The longest reply accepted: a value block over the server's `item_size_max` (once
    /// learned) is a protocol error, the connection is dropped.
    max_reply: usize,
    /// The fork generation it was opened in: a parent's connection is never used by a
    /// child of `fork()` (two processes' requests would interleave on one socket).
    fork: u64,
}

/// The longest reply holding a value of `item_size` bytes: the VALUE/VA line and the block.
fn reply_limit(item_size: usize) -> usize {
    item_size
        .min(protocol::MAX_VALUE)
        .saturating_add(protocol::MAX_LINE + 4)
}

impl Conn {
    fn open(endpoint: &Endpoint, settings: &Settings) -> io::Result<Conn> {
        let stream = match endpoint {
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                let mut found = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    let attempt = match settings.connect_timeout {
                        Some(t) => TcpStream::connect_timeout(&addr, t),
                        None => TcpStream::connect(addr),
                    };
                    match attempt {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = match found {
                    Some(s) => s,
                    None => {
                        return Err(last.unwrap_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::NotFound,
                                format!("{host} resolves to no address"),
                            )
                        }))
                    }
                };
                s.set_nodelay(true)?;
                s.set_read_timeout(settings.socket_timeout)?;
                s.set_write_timeout(settings.socket_timeout)?;
                Stream::Tcp(s)
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(settings.socket_timeout)?;
                s.set_write_timeout(settings.socket_timeout)?;
                Stream::Unix(s)
            }
        };
        Ok(Conn {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            out: Vec::with_capacity(READ_BUFFER),
            max_reply: reply_limit(protocol::MAX_VALUE),
            fork: crate::fork::generation(),
        })
    }

    /// Writes the assembled requests.
    fn send(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        if self.out.capacity() > 4 * BATCH_BYTES {
            self.out = Vec::with_capacity(READ_BUFFER);
        }
        result
    }

    /// Reads the next reply; its ranges index [`Conn::bytes`] until the next call.
    fn reply(&mut self) -> Io<Reply> {
        loop {
            match protocol::parse(&self.buf[self.start..self.end]) {
                Ok(Parse::Complete(mut r)) => {
                    let base = self.start;
                    r.data = r.data.start + base..r.data.end + base;
                    r.name = r.name.start + base..r.name.end + base;
                    self.start += r.consumed;
                    return Ok(r);
                }
                Ok(Parse::Incomplete(need)) if need > self.max_reply => {
                    return Err(Fault::Protocol(format!(
                        "a reply announces {need} bytes, more than the server's item size \
                         limit allows ({} bytes)",
                        self.max_reply
                    )))
                }
                Ok(Parse::Incomplete(need)) => self.fill(need)?,
                Err(e) => return Err(Fault::Protocol(e.0)),
            }
        }
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// Reads at least one more byte, towards `need` unread bytes in all. The buffer grows by
    /// doubling when it is full, never to more than twice what arrived: a reply announcing a
    /// huge value costs memory only as its bytes come in.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 64 * READ_BUFFER && need <= READ_BUFFER {
                self.buf = vec![0; READ_BUFFER];
            }
        }
        if self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                let doubled = self.buf.len().saturating_mul(2).max(READ_BUFFER);
                self.buf.resize(doubled.min(need.max(self.end + 1)), 0);
            }
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks for `stats settings` and returns `item_size_max`, if the server tells it.
    fn item_size_max(&mut self) -> Io<Option<usize>> {
        self.out.extend_from_slice(b"stats settings\r\n");
        self.send()?;
        let mut found = None;
        loop {
            let r = self.reply()?;
            match r.kind {
                Kind::Stat => {
                    if self.bytes(r.name.clone()) == b"item_size_max" {
                        found = protocol::parse_counter(self.bytes(r.data))
                            .and_then(|n| usize::try_from(n).ok());
                    }
                }
                Kind::End => return Ok(found),
                // A proxy that does not know the command: keep the default.
                Kind::Error | Kind::ClientError | Kind::ServerError => return Ok(None),
                _ => return Err(Fault::Protocol("unexpected reply to stats settings".into())),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------

/// Splits `host[:port]` / `[v6]:port` into a host to resolve, a port and a ketama name.
fn parse_host(text: &str, location: &Location) -> Result<(String, u16)> {
    let invalid = |why: &str| {
        Error::config(format!(
            "invalid memcached server {text:?} in {}: {why}",
            location.redacted()
        ))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid("unclosed '[' around an IPv6 address"))?;
        match after {
            "" => (addr, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return Err(invalid("expected ':PORT' after ']'")),
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(invalid("write IPv6 addresses in brackets: [::1]:11211"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(invalid("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

/// A timeout option: seconds > 0, or `none` for no timeout.
fn timeout_option(options: &mut Options, name: &str, default: f64) -> Result<Option<Duration>> {
    match options.seconds(name)? {
        None => Ok(Some(Duration::from_secs_f64(default))),
        Some(None) => Ok(None),
        Some(Some(d)) if d.is_zero() => Err(Error::config(format!(
            "invalid value 0 for option '{name}' of memcached://: expected a number of \
             seconds > 0, or none for no timeout"
        ))),
        Some(Some(d)) => Ok(Some(d)),
    }
}

impl MemcachedBackend {
    /// Opens `memcached://HOST[:PORT][,HOST[:PORT]…]` or `memcached:///path/to/socket`.
    ///
    /// Options (defaults in brackets): `connect_timeout` [1.0 s], `socket_timeout` [1.0 s]
    /// (either may be `none`), `dead_retry` [30 s; 0 never takes a server out],
    /// `failure_limit` [2], `pool_size` [16 idle connections kept per server],
    /// `max_item_size` [learned from each server's `stats settings`, else 1 MiB],
    /// `namespace` [false] and `namespace_refresh` [1.0 s]. Connections open on first use:
    /// opening never fails because a server is down.
    pub fn open(location: &Location, options: &mut Options) -> Result<MemcachedBackend> {
        if location.username().is_some() || location.password().is_some() {
            return Err(Error::config(format!(
                "memcached:// takes no user name or password (memcached's text protocol has no \
                 authentication): {}",
                location.redacted()
            )));
        }
        let mut endpoints = Vec::new();
        match (location.hosts(), location.path()) {
            ([], "" | "/") => {
                return Err(Error::config(format!(
                    "{} names no memcached server: expected memcached://HOST:PORT[,HOST:PORT…] \
                     or memcached:///path/to/memcached.sock",
                    location.redacted()
                )))
            }
            ([], path) => endpoints.push((
                path.to_owned(),
                format!("{path}:0"),
                Endpoint::Unix(PathBuf::from(path)),
            )),
            (hosts, "" | "/") => {
                for text in hosts {
                    let (host, port) = parse_host(text, location)?;
                    let name = ring::ketama_name(&host, port);
                    endpoints.push((text.clone(), name, Endpoint::Tcp { host, port }));
                }
            }
            (_, path) => {
                return Err(Error::config(format!(
                    "{} has both servers and a path ({path:?}): give either HOST:PORT list or \
                     one socket path (memcached:///path/to/memcached.sock)",
                    location.redacted()
                )))
            }
        }
        for (i, (label, ..)) in endpoints.iter().enumerate() {
            if endpoints[..i].iter().any(|(l, ..)| l == label) {
                return Err(Error::config(format!(
                    "{} lists the memcached server {label} twice",
                    location.redacted()
                )));
            }
        }

        let connect_timeout = timeout_option(options, "connect_timeout", 1.0)?;
        let socket_timeout = timeout_option(options, "socket_timeout", 1.0)?;
        let dead_retry = match options.seconds("dead_retry")? {
            None => Duration::from_secs(30),
            Some(Some(d)) => d,
            Some(None) => {
                return Err(Error::config(
                    "invalid value none for option 'dead_retry' of memcached://: expected a \
                     number of seconds (0 never takes a failed server out of the ring)",
                ))
            }
        };
        let failure_limit = options.positive_u64("failure_limit")?.unwrap_or(2);
        let pool_size = options.positive_u64("pool_size")?.unwrap_or(16);
        let max_item_size = options.positive_u64("max_item_size")?;
        let namespace = options.bool("namespace")?.unwrap_or(false);
        let namespace_refresh =
            match options.seconds("namespace_refresh")? {
                None => Duration::from_secs(1),
                Some(Some(d)) => d,
                Some(None) => return Err(Error::config(
                    "invalid value none for option 'namespace_refresh' of memcached://: expected \
                     a number of seconds (0 reads the generation on every call)",
                )),
            };
        let several = endpoints.len() > 1;
        let settings = Settings {
            connect_timeout,
            socket_timeout,
            dead_ticks: if several && !dead_retry.is_zero() {
                ticks(dead_retry).max(1)
            } else {
                0
            },
            dead_retry,
            failure_limit: u32::try_from(failure_limit).unwrap_or(u32::MAX),
            pool_size: usize::try_from(pool_size).unwrap_or(usize::MAX),
            namespace,
            namespace_refresh_ticks: ticks(namespace_refresh),
        };
        let item_size = max_item_size
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_ITEM_SIZE_MAX);
        let names: Vec<&str> = endpoints.iter().map(|(_, n, _)| n.as_str()).collect();
        let ring = Ring::new(&names);
        let servers = endpoints
            .into_iter()
            .map(|(label, _, endpoint)| Server {
                label,
                endpoint,
                pool: Mutex::new(Vec::new()),
                item_size_max: AtomicUsize::new(item_size),
                learn_item_size: max_item_size.is_none(),
                failures: AtomicU32::new(0),
                dead_until: AtomicU64::new(0),
                reached: AtomicBool::new(false),
            })
            .collect();
        Ok(MemcachedBackend {
            inner: Arc::new(Inner {
                servers,
                ring,
                settings,
                generations: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The servers, as written in the URL (`host:port` or the socket path), in ring order.
    pub fn servers(&self) -> Vec<&str> {
        self.inner
            .servers
            .iter()
            .map(|s| s.label.as_str())
            .collect()
    }

    /// The server (as written in the URL) that holds the full key `key`.
    ///
    /// With `namespace=true` this reads the namespace's generation, so it may fail.
    pub fn server_of(&self, key: &[u8]) -> Result<&str> {
        let wire = self.inner.wire_key(key)?;
        Ok(&self.inner.server(&wire).label)
    }
}

// ---------------------------------------------------------------------------------------
// Keys, expiry, failure bookkeeping
// ---------------------------------------------------------------------------------------

/// `h:` and the hex SHA-256 of `key`: what a key memcached cannot carry is stored under.
fn hashed_key(key: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key);
    let mut out = Vec::with_capacity(2 + 64);
    out.extend_from_slice(b"h:");
    for b in digest.iter() {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out
}

/// The key as sent: unchanged when memcached can carry it, else hashed.
#[inline]
fn safe_key(key: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if protocol::is_plain_key(&key) {
        key
    } else {
        Cow::Owned(hashed_key(&key))
    }
}

/// The namespace of a full key `{key_prefix}:{version}:{key}`: the text before its first `:`.
fn namespace_of(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|&b| b == b':')
        .map_or(key, |i| &key[..i])
}

/// memcached's exptime for a TTL: 0 never expires; whole seconds, rounded up; over 30 days,
/// an absolute unix time (memcached reads larger numbers that way).
fn exptime(ttl: Option<Duration>) -> u64 {
    let Some(d) = ttl else { return 0 };
    let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
    if secs <= protocol::REALTIME_MAXDELTA {
        return secs;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // memcached keeps exptime in 32 bits: past 2038 it is 2038.
    now.saturating_add(secs).min(i32::MAX as u64)
}

/// A fresh generation for a namespace: microseconds since the epoch, so that a counter that
/// was evicted (or lost with a restart) never comes back at a value it had before.
fn initial_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

fn io_error(server: &Server, what: &str, err: io::Error) -> Error {
    let kind = match err.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
        _ => ErrorKind::Connection,
    };
    Error::new(kind, format!("memcached server {}: {what}", server.label)).with_source(err)
}

fn fault_error(server: &Server, fault: Fault) -> Error {
    match fault {
        Fault::Io(e) => io_error(server, "the connection failed", e),
        Fault::Protocol(msg) => Error::new(
            ErrorKind::Backend,
            format!(
                "memcached server {} sent a reply outside the protocol ({msg}); the connection \
                 was dropped",
                server.label
            ),
        ),
    }
}

/// An error for a reply that answers the command with an error of the server's own, or a
/// fault when the reply makes no sense for the command.
fn unexpected(server: &Server, conn: &Conn, r: &Reply, command: &str) -> Io<Error> {
    let msg = String::from_utf8_lossy(conn.bytes(r.data.clone())).into_owned();
    match r.kind {
        Kind::ServerError if msg.contains("too large") => Ok(Error::new(
            ErrorKind::ValueTooLarge,
            format!(
                "memcached server {} refused the value as too large for its item size limit \
                 ({msg}); any old value under the key is gone",
                server.label
            ),
        )),
        Kind::ClientError | Kind::ServerError => Ok(Error::new(
            ErrorKind::Backend,
            format!(
                "memcached server {} answered {command}: {msg}",
                server.label
            ),
        )),
        Kind::Error => Ok(Error::new(
            ErrorKind::Backend,
            format!(
                "memcached server {} does not know the {command} command (the meta protocol \
                 needs memcached 1.6 or later)",
                server.label
            ),
        )),
        other => Err(Fault::Protocol(format!(
            "unexpected {other:?} reply to {command}"
        ))),
    }
}

/// What the item-size check needs: the limit and the key length.
fn too_large(server: &Server, key: &[u8], value: &[u8]) -> Option<Error> {
    let limit = server.item_size_max.load(Ordering::Relaxed);
    let room = limit.saturating_sub(ITEM_OVERHEAD + key.len());
    (value.len() > room).then(|| {
        Error::new(
            ErrorKind::ValueTooLarge,
            format!(
                "value of {} bytes is too large for memcached server {}: its item size limit \
                 is {limit} bytes (item_size_max, memcached -I), which leaves {room} bytes \
                 for a value under this key; nothing was stored",
                value.len(),
                server.label
            ),
        )
    })
}

/// One server's share of a multi-key call.
struct Job {
    server: usize,
    /// The items (indices into the call's keys) this server holds, in call order.
    items: Vec<usize>,
    /// How many of `items` were encoded into commands.
    written: usize,
    /// The commands sent and not yet answered: ranges of `items`, in order.
    sent: Vec<Range<usize>>,
    /// How many of `sent` were answered.
    read: usize,
    conn: Option<Conn>,
    reused: bool,
    retried: bool,
    error: Option<Error>,
}

/// What an encoder did with the items at the front of a job.
struct Encoded {
    /// How many items the command covers (at least 1).
    items: usize,
    /// False when nothing was sent for them, so no reply is due.
    sent: bool,
}

impl Inner {
    #[inline]
    fn server(&self, wire_key: &[u8]) -> &Server {
        &self.servers[self.ring.server_of(wire_key)]
    }

    /// The key as sent to memcached: folded with its namespace generation, then made safe.
    #[inline]
    fn wire_key<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        if !self.settings.namespace {
            return Ok(safe_key(Cow::Borrowed(key)));
        }
        let generation = self.generation(namespace_of(key))?;
        Ok(safe_key(Cow::Owned(folded(key, generation))))
    }

    fn wire_keys<'k>(&self, keys: &[&'k [u8]]) -> Result<Vec<Cow<'k, [u8]>>> {
        if !self.settings.namespace {
            return Ok(keys.iter().map(|k| safe_key(Cow::Borrowed(*k))).collect());
        }
        let mut known: Vec<(&[u8], u64)> = Vec::new();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let ns = namespace_of(key);
            let generation = match known.iter().find(|(n, _)| *n == ns) {
                Some(&(_, g)) => g,
                None => {
                    let g = self.generation(ns)?;
                    known.push((ns, g));
                    g
                }
            };
            out.push(safe_key(Cow::Owned(folded(key, generation))));
        }
        Ok(out)
    }

    /// The current generation of namespace `ns`, creating it when it does not exist.
    fn generation(&self, ns: &[u8]) -> Result<u64> {
        let refresh = self.settings.namespace_refresh_ticks;
        if refresh > 0 {
            if let Some(&(g, at)) = lock(&self.generations).get(ns) {
                if now_ticks().saturating_sub(at) < refresh {
                    return Ok(g);
                }
            }
        }
        let g = self.bump_generation(ns, 0)?;
        Ok(g)
    }

    /// Adds `delta` to namespace `ns`'s generation (creating it) and remembers the result.
    fn bump_generation(&self, ns: &[u8], delta: u64) -> Result<u64> {
        let mut counter = ns.to_vec();
        counter.extend_from_slice(NAMESPACE_SUFFIX);
        let wire = safe_key(Cow::Borrowed(&counter));
        let server = self.server(&wire);
        let g = self
            .call(server, delta == 0, |c| {
                protocol::arithmetic_or_create(&mut c.out, &wire, initial_generation(), delta);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Value => match protocol::parse_counter(c.bytes(r.data.clone())) {
                        Some(g) => Ok(Ok(g)),
                        None => Ok(Err(Error::new(
                            ErrorKind::Backend,
                            format!(
                                "the namespace generation {:?} on memcached server {} is not a \
                                 number",
                                String::from_utf8_lossy(&counter),
                                server.label
                            ),
                        ))),
                    },
                    _ => unexpected(server, c, &r, "ma").map(Err),
                }
            })
            .and_then(|r| r)?;
        lock(&self.generations).insert(ns.to_vec(), (g, now_ticks()));
        Ok(g)
    }

    /// Fails at once while `server` is out of the ring, except for the one call that
    /// probes it once `dead_retry` has passed.
    fn check_alive(&self, server: &Server) -> Result<()> {
        let until = server.dead_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = now_ticks();
        if now >= until
            && server
                .dead_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.settings.dead_ticks).max(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Connection,
            format!(
                "memcached server {} is out of the ring after {} failures in a row; it is tried \
                 again {} s after the last failure (dead_retry)",
                server.label,
                server.failures.load(Ordering::Relaxed),
                self.settings.dead_retry.as_secs_f64()
            ),
        ))
    }

    fn failed(&self, server: &Server) {
        let n = server
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if self.settings.dead_ticks > 0 && n >= self.settings.failure_limit {
            let until = now_ticks().saturating_add(self.settings.dead_ticks).max(1);
            if server.dead_until.swap(until, Ordering::AcqRel) == 0 {
                log::warn!(
                    "polycache: memcached server {} failed {n} times in a row; its keys fail for \
                     {} s (dead_retry)",
                    server.label,
                    self.settings.dead_retry.as_secs_f64()
                );
            }
        }
    }

    #[inline]
    fn succeeded(&self, server: &Server) {
        if server.failures.load(Ordering::Relaxed) != 0 {
            server.failures.store(0, Ordering::Release);
        }
        if server.dead_until.load(Ordering::Relaxed) != 0 {
            server.dead_until.store(0, Ordering::Release);
            log::info!(
                "polycache: memcached server {} answers again; back in the ring",
                server.label
            );
        }
    }

    /// Opens a connection and learns the server's item size limit on it.
    fn connect(&self, server: &Server) -> Result<Conn> {
        let mut conn = Conn::open(&server.endpoint, &self.settings).map_err(|e| {
            let what = if server.reached.load(Ordering::Relaxed) {
                "cannot reconnect"
            } else {
                "cannot connect"
            };
            io_error(server, what, e)
        })?;
        if server.learn_item_size {
            match conn.item_size_max() {
                Ok(Some(n)) => {
                    server.item_size_max.store(n, Ordering::Relaxed);
                    conn.max_reply = reply_limit(n);
                }
                Ok(None) => {}
                Err(fault) => return Err(fault_error(server, fault)),
            }
        }
        server.reached.store(true, Ordering::Relaxed);
        Ok(conn)
    }

    /// A pooled connection (`true`) or a new one (`false`).
    #[inline]
    fn checkout(&self, server: &Server) -> Result<(Conn, bool)> {
        let current = crate::fork::generation();
        let mut pool = lock(&server.pool);
        while let Some(conn) = pool.pop() {
            if conn.fork == current {
                return Ok((conn, true));
            }
            // Inherited through fork(): the parent's; not used, not closed.
            std::mem::forget(conn);
        }
        drop(pool);
        self.connect(server).map(|c| (c, false))
    }

    #[inline]
    fn checkin(&self, server: &Server, conn: Conn) {
        if conn.fork != crate::fork::generation() {
            std::mem::forget(conn); // the parent's (see checkout)
            return;
        }
        let mut pool = lock(&server.pool);
        if pool.len() < self.settings.pool_size {
            pool.push(conn);
        }
    }

    /// Runs `op` on a connection to `server`. A pooled connection the server had closed is
    /// replaced and `op` run again once, when `retry` says that is safe. Outages count
    /// towards taking the server out of the ring.
    fn call<T>(
        &self,
        server: &Server,
        retry: bool,
        mut op: impl FnMut(&mut Conn) -> Io<T>,
    ) -> Result<T> {
        self.check_alive(server)?;
        let (mut conn, mut reused) = match self.checkout(server) {
            Ok(c) => c,
            Err(e) => {
                self.failed(server);
                return Err(e);
            }
        };
        loop {
            conn.out.clear();
            match op(&mut conn) {
                Ok(v) => {
                    self.checkin(server, conn);
                    self.succeeded(server);
                    return Ok(v);
                }
                Err(fault) => {
                    drop(conn);
                    if reused && retry && fault.is_stale_connection() {
                        // The server restarted or dropped idle connections: so did the others.
                        lock(&server.pool).clear();
                        conn = match self.connect(server) {
                            Ok(c) => c,
                            Err(e) => {
                                self.failed(server);
                                return Err(e);
                            }
                        };
                        reused = false;
                        continue;
                    }
                    let err = fault_error(server, fault);
                    if matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout) {
                        self.failed(server);
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Sends one pipelined batch of commands per server for `keys` (already wire keys), to
    /// all servers before any reply is read, then reads every server's replies.
    ///
    /// `encode(items, server, out)` writes one command for the items at the front of
    /// `items` (the ones not yet encoded) and says how many it covered; `decode(items,
    /// server, conn)` reads the whole reply to the command for `items`. Returns one job per
    /// server involved, each with its items and its error, if it failed.
    fn pipeline(
        &self,
        keys: &[Cow<'_, [u8]>],
        mut encode: impl FnMut(&[usize], &Server, &mut Vec<u8>) -> Encoded,
        mut decode: impl FnMut(&[usize], &Server, &mut Conn) -> Io<()>,
    ) -> Vec<Job> {
        let mut by_server: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (i, key) in keys.iter().enumerate() {
            by_server[self.ring.server_of(key)].push(i);
        }
        let mut jobs: Vec<Job> = by_server
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(server, items)| Job {
                server,
                items,
                written: 0,
                sent: Vec::new(),
                read: 0,
                conn: None,
                reused: false,
                retried: false,
                error: None,
            })
            .collect();
        for job in &mut jobs {
            let server = &self.servers[job.server];
            if let Err(e) = self.check_alive(server) {
                job.error = Some(e);
                continue;
            }
            match self.checkout(server) {
                Ok((conn, reused)) => {
                    job.conn = Some(conn);
                    job.reused = reused;
                }
                Err(e) => {
                    self.failed(server);
                    job.error = Some(e);
                }
            }
        }
        loop {
            let mut busy = false;
            for job in jobs.iter_mut() {
                let server = &self.servers[job.server];
                let Some(conn) = job.conn.as_mut() else {
                    continue;
                };
                if job.written == job.items.len() {
                    continue;
                }
                busy = true;
                conn.out.clear();
                while job.written < job.items.len() && conn.out.len() < BATCH_BYTES {
                    let start = job.written;
                    let done = encode(&job.items[start..], server, &mut conn.out);
                    job.written = (start + done.items.max(1)).min(job.items.len());
                    if done.sent {
                        job.sent.push(start..job.written);
                    }
                }
                if let Err(e) = conn.send() {
                    self.job_fault(job, Fault::Io(e));
                }
            }
            for job in jobs.iter_mut() {
                let server = &self.servers[job.server];
                let mut fault = None;
                if let Some(conn) = job.conn.as_mut() {
                    while job.read < job.sent.len() {
                        let unit = &job.items[job.sent[job.read].clone()];
                        match decode(unit, server, conn) {
                            Ok(()) => job.read += 1,
                            Err(f) => {
                                fault = Some(f);
                                break;
                            }
                        }
                    }
                }
                if let Some(f) = fault {
                    self.job_fault(job, f);
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        for job in &mut jobs {
            if let Some(conn) = job.conn.take() {
                let server = &self.servers[job.server];
                self.checkin(server, conn);
                self.succeeded(server);
            }
        }
        jobs
    }

    /// A job's connection failed: retry it once on a fresh connection when the pooled one
    /// was stale and no reply was consumed yet, else record the error.
    fn job_fault(&self, job: &mut Job, fault: Fault) {
        let server = &self.servers[job.server];
        job.conn = None;
        if job.reused && !job.retried && job.read == 0 && fault.is_stale_connection() {
            job.retried = true;
            job.reused = false;
            job.written = 0;
            job.sent.clear();
            lock(&server.pool).clear();
            match self.connect(server) {
                Ok(conn) => job.conn = Some(conn),
                Err(e) => {
                    self.failed(server);
                    job.error = Some(e);
                }
            }
            return;
        }
        let err = fault_error(server, fault);
        if is_outage(&err) {
            self.failed(server);
        }
        job.error = Some(err);
    }
}

/// `ns{generation}:` and the key.
fn folded(key: &[u8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 24);
    out.extend_from_slice(b"ns");
    protocol::push_u64(&mut out, generation);
    out.push(b':');
    out.extend_from_slice(key);
    out
}

// ---------------------------------------------------------------------------------------
// The Backend contract
// ---------------------------------------------------------------------------------------

impl Backend for MemcachedBackend {
    fn name(&self) -> &'static str {
        "memcached"
    }

    /// With several servers and `dead_retry`, each server has its own health: a dead one is
    /// taken out while the others keep answering, so no cache-wide breaker goes in front.
    fn isolates_failures(&self) -> bool {
        self.inner.settings.dead_ticks > 0
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let inner = &*self.inner;
        let wire = inner.wire_key(key)?;
        let server = inner.server(&wire);
        inner
            .call(server, true, |c| {
                protocol::get(&mut c.out, &wire);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Value => Ok(Ok(Some(Value::from(c.bytes(r.data).to_vec())))),
                    Kind::Miss => Ok(Ok(None)),
                    _ => unexpected(server, c, &r, "mg").map(Err),
                }
            })
            .and_then(|r| r)
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.store(key, value, ttl, false).map(|_| ())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.store(key, value, ttl, true)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let inner = &*self.inner;
        let wire = inner.wire_key(key)?;
        let server = inner.server(&wire);
        inner
            .call(server, true, |c| {
                protocol::delete(&mut c.out, &wire);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Hit => Ok(Ok(true)),
                    Kind::NotFound => Ok(Ok(false)),
                    _ => unexpected(server, c, &r, "md").map(Err),
                }
            })
            .and_then(|r| r)
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        let inner = &*self.inner;
        let wire = inner.wire_key(key)?;
        let server = inner.server(&wire);
        inner
            .call(server, true, |c| {
                protocol::exists(&mut c.out, &wire);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Hit => Ok(Ok(true)),
                    Kind::Miss => Ok(Ok(false)),
                    _ => unexpected(server, c, &r, "mg").map(Err),
                }
            })
            .and_then(|r| r)
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let inner = &*self.inner;
        let wire = inner.wire_key(key)?;
        let server = inner.server(&wire);
        let exp = exptime(ttl);
        inner
            .call(server, true, |c| {
                protocol::touch(&mut c.out, &wire, exp);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Hit => Ok(Ok(true)),
                    Kind::Miss => Ok(Ok(false)),
                    _ => unexpected(server, c, &r, "mg").map(Err),
                }
            })
            .and_then(|r| r)
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let inner = &*self.inner;
        let wire = inner.wire_key(key)?;
        let server = inner.server(&wire);
        // Not retried on a fresh connection: an increment must not be applied twice.
        inner
            .call(server, false, |c| {
                protocol::arithmetic(&mut c.out, &wire, delta);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Value => {
                        let digits = c.bytes(r.data.clone());
                        let Some(n) = protocol::parse_counter(digits) else {
                            return Err(Fault::Protocol(format!(
                                "ma answered a value that is not a counter: {:?}",
                                String::from_utf8_lossy(digits)
                            )));
                        };
                        Ok(i64::try_from(n).map_err(|_| {
                            Error::new(
                                ErrorKind::Overflow,
                                format!(
                                    "the counter on memcached server {} is now {n}, past the \
                                     64-bit signed range (memcached counts in unsigned 64 bits)",
                                    server.label
                                ),
                            )
                        }))
                    }
                    Kind::NotFound => Ok(Err(not_found(key))),
                    Kind::ClientError
                        if c.bytes(r.data.clone())
                            .windows(11)
                            .any(|w| w == b"non-numeric") =>
                    {
                        Ok(Err(Error::new(
                            ErrorKind::NotAnInteger,
                            "the cached value is not an integer memcached can increment: \
                             memcached's incr/decr work only on unsigned decimal numbers (a \
                             negative number cannot be incremented natively)",
                        )))
                    }
                    _ => unexpected(server, c, &r, "ma").map(Err),
                }
            })
            .and_then(|r| r)
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let inner = &*self.inner;
        let wire = inner.wire_keys(keys)?;
        let mut values: Vec<Option<Value>> = vec![None; keys.len()];
        let jobs = inner.pipeline(
            &wire,
            |items, _, out| Encoded {
                items: protocol::multi_get(out, items.iter().map(|&i| &*wire[i])),
                sent: true,
            },
            |items, server, c| {
                // Hits come back in the order asked; misses are left out.
                let mut next = 0;
                loop {
                    let r = c.reply()?;
                    match r.kind {
                        Kind::Item => {
                            let key = c.bytes(r.name.clone());
                            while next < items.len() && *wire[items[next]] != *key {
                                next += 1;
                            }
                            let Some(&i) = items.get(next) else {
                                return Err(Fault::Protocol(format!(
                                    "get answered a key that was not asked for: {:?}",
                                    String::from_utf8_lossy(key)
                                )));
                            };
                            values[i] = Some(Value::from(c.bytes(r.data).to_vec()));
                            next += 1;
                        }
                        Kind::End => return Ok(()),
                        _ => {
                            let err = unexpected(server, c, &r, "get")?;
                            // The rest of the reply is unknown: drop the connection.
                            return Err(Fault::Protocol(err.to_string()));
                        }
                    }
                }
            },
        );
        if let Some(e) = jobs.into_iter().find_map(|j| j.error) {
            return Err(e);
        }
        Ok(values)
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        let inner = &*self.inner;
        let keys: Vec<&[u8]> = items.iter().map(|(k, _)| *k).collect();
        let wire = inner.wire_keys(&keys)?;
        let exp = exptime(ttl);
        let failed: Vec<Cell<bool>> = vec![Cell::new(false); items.len()];
        let jobs = inner.pipeline(
            &wire,
            |todo, server, out| {
                let i = todo[0];
                // Too large for this server: not sent (nothing stored), reported as failed.
                if too_large(server, &wire[i], items[i].1).is_some() {
                    failed[i].set(true);
                    return Encoded {
                        items: 1,
                        sent: false,
                    };
                }
                protocol::store(out, &wire[i], items[i].1, exp, false);
                Encoded {
                    items: 1,
                    sent: true,
                }
            },
            |unit, server, c| {
                let r = c.reply()?;
                if r.kind != Kind::Hit {
                    unexpected(server, c, &r, "ms")?;
                    failed[unit[0]].set(true);
                }
                Ok(())
            },
        );
        let mut first_error = None;
        let mut any_ok = false;
        for job in jobs {
            match job.error {
                Some(e) => {
                    for &i in &job.items {
                        failed[i].set(true);
                    }
                    first_error.get_or_insert(e);
                }
                None => any_ok = true,
            }
        }
        if let Some(e) = first_error {
            if !any_ok {
                // Nothing reached a server: the failure policy applies to the whole call.
                return Err(e);
            }
        }
        Ok(failed
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.get().then_some(i))
            .collect())
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let inner = &*self.inner;
        let wire = inner.wire_keys(keys)?;
        let mut deleted = 0;
        let mut errors: Vec<Error> = Vec::new();
        let jobs = inner.pipeline(
            &wire,
            |todo, _, out| {
                protocol::delete(out, &wire[todo[0]]);
                Encoded {
                    items: 1,
                    sent: true,
                }
            },
            |_, server, c| {
                let r = c.reply()?;
                match r.kind {
                    Kind::Hit => deleted += 1,
                    Kind::NotFound => {}
                    _ => errors.push(unexpected(server, c, &r, "md")?),
                }
                Ok(())
            },
        );
        if let Some(e) = jobs.into_iter().find_map(|j| j.error) {
            return Err(e);
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        Ok(deleted)
    }

    /// With `namespace=true`, moves the namespace of `prefix` to a new generation. Otherwise
    /// an empty prefix runs `flush_all` on every server (which empties the whole servers,
    /// whoever wrote there), and any other prefix is [`ErrorKind::Unsupported`].
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let inner = &*self.inner;
        if inner.settings.namespace {
            inner.bump_generation(namespace_of(prefix), 1)?;
            return Ok(());
        }
        if !prefix.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "memcached cannot delete the keys under a prefix ({:?}); clear() on \
                     memcached:// works only with an empty key_prefix, where it runs flush_all \
                     and empties every server. For a clear scoped to this cache, open it with \
                     namespace=true: a generation number per key prefix, kept in memcached and \
                     folded into every key, that clear() increments",
                    String::from_utf8_lossy(prefix)
                ),
            ));
        }
        let mut first_error = None;
        for server in inner.servers.iter() {
            let result = inner
                .call(server, true, |c| {
                    c.out.extend_from_slice(b"flush_all\r\n");
                    c.send()?;
                    let r = c.reply()?;
                    match r.kind {
                        Kind::Ok => Ok(Ok(())),
                        _ => unexpected(server, c, &r, "flush_all").map(Err),
                    }
                })
                .and_then(|r| r);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl MemcachedBackend {
    fn store(&self, key: &[u8], value: &[u8], ttl: Option<Duration>, add: bool) -> Result<bool> {
        let inner = &*self.inner;
        let wire = inner.wire_key(key)?;
        let server = inner.server(&wire);
        let exp = exptime(ttl);
        let command = if add { "ms (add)" } else { "ms" };
        inner
            .call(server, true, |c| {
                // Checked here, after the connection taught us the server's limit.
                if let Some(e) = too_large(server, &wire, value) {
                    return Ok(Err(e));
                }
                protocol::store(&mut c.out, &wire, value, exp, add);
                c.send()?;
                let r = c.reply()?;
                match r.kind {
                    Kind::Hit => Ok(Ok(true)),
                    Kind::NotStored if add => Ok(Ok(false)),
                    _ => unexpected(server, c, &r, command).map(Err),
                }
            })
            .and_then(|r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose server side is the returned socket.
    fn conn_pair(max_reply: usize) -> (Conn, UnixStream) {
        let (client, server) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let conn = Conn {
            stream: Stream::Unix(client),
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            out: Vec::new(),
            max_reply,
            fork: crate::fork::generation(),
        };
        (conn, server)
    }

    #[test]
    fn a_huge_announced_value_costs_memory_only_as_it_arrives() {
        // Under the 1 GiB protocol ceiling, the server's limit unknown: the client reads on,
        // but its buffer follows the bytes that came, not the size the line announced.
        let (mut conn, mut server) = conn_pair(reply_limit(protocol::MAX_VALUE));
        server.write_all(b"VA 900000000 f0\r\n").unwrap();
        server.write_all(&[b'x'; 100_000]).unwrap();
        drop(server);
        let Err(Fault::Io(e)) = conn.reply() else {
            panic!("a cut reply must be an I/O error")
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            conn.buf.len() <= 4 * 100_000,
            "{} bytes held for 100,000 received",
            conn.buf.len()
        );
    }

    #[test]
    fn a_value_over_the_servers_item_size_is_a_protocol_error_before_any_read() {
        let (mut conn, mut server) = conn_pair(reply_limit(1024 * 1024));
        // Only the line: the client must not wait for the block (the socket stays open).
        server.write_all(b"VALUE k 0 2000000\r\n").unwrap();
        let Err(Fault::Protocol(msg)) = conn.reply() else {
            panic!("an oversized reply must be a protocol error")
        };
        assert!(msg.contains("item size limit"), "{msg}");
        assert!(conn.buf.len() <= READ_BUFFER);
        // And a legal one of the same size limit still reads, after the buffer grew.
        let (mut conn, mut server) = conn_pair(reply_limit(1024 * 1024));
        let block = vec![b'v'; 1024 * 1024];
        let writer = std::thread::spawn(move || {
            server.write_all(b"VA 1048576\r\n").unwrap();
            server.write_all(&block).unwrap();
            server.write_all(b"\r\n").unwrap();
        });
        let reply = conn.reply().unwrap();
        assert_eq!(reply.data.len(), 1024 * 1024);
        assert!(conn.bytes(reply.data).iter().all(|&b| b == b'v'));
        writer.join().unwrap();
    }

    #[test]
    fn odd_keys_are_hashed_and_plain_ones_kept() {
        assert_eq!(&*safe_key(Cow::Borrowed(b":1:user/42")), b":1:user/42");
        for odd in [
            &b":1:with space"[..],
            b":1:tab\t",
            b":1:nl\n",
            ":1:caf\u{e9}".as_bytes(),
            &[b'k'; 251],
        ] {
            let safe = safe_key(Cow::Borrowed(odd));
            assert_eq!(safe.len(), 66, "{odd:?}");
            assert!(safe.starts_with(b"h:") && protocol::is_plain_key(&safe));
        }
        assert_ne!(hashed_key(b"a b"), hashed_key(b"a  b"));
    }

    #[test]
    fn ttls_become_memcached_exptimes() {
        assert_eq!(exptime(None), 0);
        assert_eq!(exptime(Some(Duration::from_millis(1))), 1);
        assert_eq!(exptime(Some(Duration::from_millis(1500))), 2);
        assert_eq!(exptime(Some(Duration::from_secs(2_592_000))), 2_592_000);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let abs = exptime(Some(Duration::from_secs(31 * 86_400)));
        assert!(
            abs >= now + 31 * 86_400 && abs <= now + 31 * 86_400 + 5,
            "{abs}"
        );
        assert_eq!(
            exptime(Some(Duration::from_secs(200 * 365 * 86_400))),
            i32::MAX as u64
        );
    }

    #[test]
    fn namespaces_are_the_text_before_the_first_colon() {
        assert_eq!(namespace_of(b"app:1:k"), b"app");
        assert_eq!(namespace_of(b":1:k"), b"");
        assert_eq!(namespace_of(b"app:"), b"app");
        assert_eq!(namespace_of(b"plain"), b"plain");
        assert_eq!(folded(b"app:1:k", 42), b"ns42:app:1:k");
    }

    fn open(url: &str) -> Result<MemcachedBackend> {
        let loc = Location::parse(url)?;
        let mut opts = Options::new(&loc);
        let b = MemcachedBackend::open(&loc, &mut opts)?;
        opts.finish()?;
        Ok(b)
    }

    #[test]
    fn urls_name_servers_or_a_socket() {
        let b = open("memcached://h1:11211,h2:11300,[::1]:11211,h4").unwrap();
        assert_eq!(b.servers(), ["h1:11211", "h2:11300", "[::1]:11211", "h4"]);
        let b = open("memcached:///run/mc.sock").unwrap();
        assert_eq!(b.servers(), ["/run/mc.sock"]);
        for (url, needle) in [
            ("memcached://", "names no memcached server"),
            ("memcached://h:0", "port"),
            ("memcached://h:x", "port"),
            ("memcached://::1:11211", "brackets"),
            ("memcached://h1,h1", "twice"),
            ("memcached://h1/db", "both servers and a path"),
            ("memcached://u:secret@h1", "no user name"),
            ("memcached://h?socket_timeout=0", "socket_timeout"),
            ("memcached://h?dead_retry=none", "dead_retry"),
            ("memcached://h?pool_size=0", "pool_size"),
            ("memcached://h?namespace=maybe", "namespace"),
            ("memcached://h?nope=1", "nope"),
        ] {
            let err = open(url).err().unwrap_or_else(|| panic!("{url} opened"));
            assert!(err.is_configuration(), "{url}: {err}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
            assert!(!err.to_string().contains("secret"), "{url}: {err}");
        }
    }

    #[test]
    fn ketama_names_drop_the_default_port() {
        let a = open("memcached://10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11212").unwrap();
        let b = Ring::new(&["10.0.0.1", "10.0.0.2", "10.0.0.3:11212"]);
        for k in 0..200 {
            let key = format!(":1:k{k}");
            assert_eq!(
                a.inner.ring.server_of(key.as_bytes()),
                b.server_of(key.as_bytes())
            );
        }
    }
}
