//! `memcached://`: one or several memcached servers on a ketama ring, spoken to with the
//! meta protocol (and the classic multi-key `get` for `get_many`) over TCP or a unix socket.
//!
//! Why an own protocol module rather than a client crate, and why the meta protocol: see
//! `docs/backends/memcached.md`. In short: no maintained blocking Rust client offers ketama
//! placement compatible with libmemcached, pipelined multi-server multi-get and per-server
//! failure isolation together, and the meta commands give `add`, `touch`, `has_key` and
//! get-or-create counters in one round trip each with replies that are easy to parse strictly.

mod aio;
mod blocking;
mod commands;
mod conn;
mod keys;
pub(crate) mod protocol;
mod ring;

use super::{not_found, AsyncAccess, Backend};
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::policy::Breaker;
use crate::pool::{Limits, Pool};
use crate::value::Value;
use commands::{DeleteMany, GetMany, Request, SetMany};
use conn::{Conn, Fault};
use keys::exptime;
use ring::Ring;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The port a host without one is given.
pub const DEFAULT_PORT: u16 = 11211;
/// The item size limit assumed until a server says otherwise: memcached's default (`-I 1m`).
pub const DEFAULT_ITEM_SIZE_MAX: usize = 1 << 20;
/// What memcached adds to key and value bytes when it sizes an item (item header, CAS,
/// terminators): 59 bytes on 64-bit builds; rounded up so the check errs on the safe side.
const ITEM_OVERHEAD: usize = 64;
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
/// With several servers, each server has its own circuit breaker: a server that fails
/// `breaker_threshold` times in a row is taken out for `breaker_cooldown` seconds: calls for its keys fail at once with a connection error (a miss
/// when the cache fails open) while the other servers go on serving theirs; then one call
/// probes it, and its success brings it back.
///
/// Awaited (`Cache::*_async`), it does its I/O natively: each server has one connection
/// that every async call shares, with many requests in flight on it at once (see
/// `docs/backends/memcached.md`).
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
    /// The blocking connections: as many open as threads ask for, `pool_size` kept idle.
    pool: Pool<Conn>,
    /// The server's `item_size_max`, learned when a connection opens (or given).
    item_size_max: AtomicUsize,
    learn_item_size: bool,
    /// The server's health: out of the ring while this breaker is open.
    health: Breaker,
    /// Set once the server was ever reached, for the first error's wording.
    reached: AtomicBool,
    /// The pipelined connection async calls share (see `aio.rs`).
    aio: aio::Slot,
}

impl Server {
    /// How a failed connection attempt is worded.
    fn connect_failure(&self) -> &'static str {
        if self.reached.load(Ordering::Relaxed) {
            "cannot reconnect"
        } else {
            "cannot connect"
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
        Some(Some(d)) if d.is_zero() => Err(options.error(
            name,
            format!(
                "invalid value 0 for option '{name}' of memcached://: expected a number of \
                 seconds > 0, or none for no timeout"
            ),
        )),
        Some(Some(d)) => Ok(Some(d)),
    }
}

/// An option given under its name and its alias at once.
fn both_names(name: &str, alias: &str) -> String {
    format!("memcached:// takes '{name}' or its alias '{alias}', not both")
}

impl MemcachedBackend {
    /// Opens `memcached://HOST[:PORT][,HOST[:PORT]…]` or `memcached:///path/to/socket`.
    ///
    /// Options (defaults in brackets): `connect_timeout` [1.0 s], `socket_timeout` [1.0 s]
    /// (either may be `none`), `breaker_cooldown` or its alias `dead_retry` [30 s; 0 never
    /// takes a server out], `breaker_threshold` or its alias `failure_limit` [2; 0 never takes
    /// a server out] (with several servers, each server's breaker), `pool_size` [16 idle
    /// connections kept per server],
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
        // Each server's breaker takes the options of the cache's breaker, which the cache
        // has read (and removed) already: read them again. The memcached names
        // `failure_limit` and `dead_retry` are their aliases.
        let mut breaker = options.again();
        let dead_retry = match (
            options.seconds("dead_retry")?,
            breaker.seconds("breaker_cooldown")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(
                    options.error("dead_retry", both_names("breaker_cooldown", "dead_retry"))
                )
            }
            (None, None) => Duration::from_secs(30),
            (Some(Some(d)), None) => d,
            (None, Some(d)) => d.unwrap_or(Duration::MAX),
            (Some(None), None) => {
                return Err(options.error(
                    "dead_retry",
                    "invalid value none for option 'dead_retry' of memcached://: expected a \
                     number of seconds (0 never takes a failed server out of the ring)",
                ))
            }
        };
        let failure_limit = match (
            options.positive_u64("failure_limit")?,
            breaker.u64("breaker_threshold")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(options.error(
                    "failure_limit",
                    both_names("breaker_threshold", "failure_limit"),
                ))
            }
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => 2,
        };
        let pool_size = options.positive_u64("pool_size")?.unwrap_or(16);
        let max_item_size = options.positive_u64("max_item_size")?;
        let namespace = options.bool("namespace")?.unwrap_or(false);
        let namespace_refresh =
            match options.seconds("namespace_refresh")? {
                None => Duration::from_secs(1),
                Some(Some(d)) => d,
                Some(None) => return Err(options.error(
                    "namespace_refresh",
                    "invalid value none for option 'namespace_refresh' of memcached://: expected \
                     a number of seconds (0 reads the generation on every call)",
                )),
            };
        let several = endpoints.len() > 1;
        let settings = Settings {
            connect_timeout,
            socket_timeout,
            dead_ticks: if several && !dead_retry.is_zero() && failure_limit > 0 {
                clock::ticks_of(dead_retry).max(1)
            } else {
                0
            },
            dead_retry,
            failure_limit: u32::try_from(failure_limit).unwrap_or(u32::MAX),
            pool_size: usize::try_from(pool_size).unwrap_or(usize::MAX),
            namespace,
            namespace_refresh_ticks: clock::ticks_of(namespace_refresh),
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
                pool: Pool::new(
                    Limits {
                        max_open: usize::MAX,
                        max_idle: settings.pool_size,
                        wait: None,
                    },
                    // Never called: there is always room for one more connection.
                    |max, _| Error::new(ErrorKind::Connection, format!("{max} connections open")),
                ),
                item_size_max: AtomicUsize::new(item_size),
                learn_item_size: max_item_size.is_none(),
                health: Breaker::with_limits(
                    if settings.dead_ticks > 0 {
                        settings.failure_limit
                    } else {
                        0
                    },
                    settings.dead_ticks,
                ),
                reached: AtomicBool::new(false),
                aio: aio::Slot::new(),
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

impl Inner {
    /// Fails at once while `server` is out of the ring, except for the one call that
    /// probes it once `dead_retry` has passed.
    fn check_alive(&self, server: &Server) -> Result<()> {
        if server.health.pass() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Connection,
            format!(
                "memcached server {} is out of the ring after {} failures in a row; it is tried \
                 again {} s after the last failure (breaker_cooldown)",
                server.label,
                server.health.failures(),
                self.settings.dead_retry.as_secs_f64()
            ),
        ))
    }

    fn failed(&self, server: &Server) {
        if let Some(n) = server.health.failed() {
            log::warn!(
                "polycache: memcached server {} failed {n} times in a row; its keys fail for \
                 {} s (breaker_cooldown)",
                server.label,
                self.settings.dead_retry.as_secs_f64()
            );
        }
    }

    #[inline]
    fn succeeded(&self, server: &Server) {
        if server.health.succeeded() {
            log::info!(
                "polycache: memcached server {} answers again; back in the ring",
                server.label
            );
        }
    }
}

/// What `clear(prefix)` does on memcached.
enum Clearing<'p> {
    /// `namespace=true`: move the prefix's namespace to a new generation.
    Namespace(&'p [u8]),
    /// An empty prefix: `flush_all` on every server.
    FlushAll,
}

/// With `namespace=true`, `clear` moves the namespace of `prefix` to a new generation.
/// Otherwise an empty prefix runs `flush_all` on every server (which empties the whole
/// servers, whoever wrote there), and any other prefix is [`ErrorKind::Unsupported`].
fn clearing<'p>(settings: &Settings, prefix: &'p [u8]) -> Result<Clearing<'p>> {
    if settings.namespace {
        return Ok(Clearing::Namespace(keys::namespace_of(prefix)));
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
    Ok(Clearing::FlushAll)
}

/// The first error of a call made on every server, if any.
fn first_error(results: impl IntoIterator<Item = Result<()>>) -> Result<()> {
    let results: Vec<Result<()>> = results.into_iter().collect();
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

fn store_request(value: &[u8], ttl: Option<Duration>, add: bool) -> Request<'_> {
    Request::Store {
        value,
        exptime: exptime(ttl),
        add,
    }
}

fn set_many<'k, 'v>(
    wire: Vec<std::borrow::Cow<'k, [u8]>>,
    items: &'v [(&'v [u8], &'v [u8])],
    ttl: Option<Duration>,
) -> SetMany<'k, 'v> {
    SetMany {
        wire,
        items,
        exptime: exptime(ttl),
        failed: items.iter().map(|_| AtomicBool::new(false)).collect(),
    }
}

/// The counter `incr` answered, as the signed number the contract returns.
/// The compare-and-set that extends what `GetCas` found, or `None` when there is nothing to
/// extend (absent, another value, or no TTL to add to).
fn cas_extension<'v>(
    found: &'v Option<(Value, u64, Option<u64>)>,
    expected: &[u8],
    ttl: Duration,
    replace: bool,
) -> Option<Request<'v>> {
    let (value, cas, left) = found.as_ref()?;
    if &**value != expected {
        return None;
    }
    let new = super::extended_ttl(left.map(Duration::from_secs), ttl, replace)?;
    Some(Request::StoreCas {
        value,
        exptime: exptime(Some(new)),
        cas: *cas,
    })
}

fn counter(n: u64) -> i64 {
    // `Request::decode` turned a counter past `i64::MAX` into an overflow error.
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Backend for MemcachedBackend {
    fn name(&self) -> &'static str {
        "memcached"
    }

    /// With several servers and `dead_retry`, each server has its own health: a dead one is
    /// taken out while the others keep answering, so no cache-wide breaker goes in front.
    fn isolates_failures(&self) -> bool {
        self.inner.settings.dead_ticks > 0
    }

    fn async_access(self: Arc<Self>) -> AsyncAccess {
        AsyncAccess::Native(self)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.inner.single(key, Request::Get).map(|a| a.value())
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner
            .single(key, store_request(value, ttl, false))
            .map(|_| ())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner
            .single(key, store_request(value, ttl, true))
            .map(|a| a.flag())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.inner.single(key, Request::Delete).map(|a| a.flag())
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        self.inner.single(key, Request::Exists).map(|a| a.flag())
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner
            .single(key, Request::Touch(exptime(ttl)))
            .map(|a| a.flag())
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.inner
            .single(key, Request::Arithmetic { delta, key })
            .map(|a| counter(a.count()))
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let wire = self.inner.wire_keys(keys)?;
        self.inner.pipeline(GetMany {
            wire,
            values: vec![None; keys.len()],
        })
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        let keys: Vec<&[u8]> = items.iter().map(|(k, _)| *k).collect();
        let wire = self.inner.wire_keys(&keys)?;
        self.inner.pipeline(set_many(wire, items, ttl))
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let wire = self.inner.wire_keys(keys)?;
        self.inner.pipeline(DeleteMany {
            wire,
            deleted: 0,
            errors: Vec::new(),
        })
    }

    /// Reads the value with its CAS token, then deletes only if the item is unchanged.
    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        match self.inner.single(key, Request::GetCas)?.cas() {
            Some((v, cas, _)) if &*v == expected => {
                Ok(self.inner.single(key, Request::DeleteCas(cas))?.flag())
            }
            _ => Ok(false),
        }
    }

    /// Reads the value with its CAS token and TTL, then stores it again with the new TTL
    /// only if the item is unchanged (memcached counts TTLs in whole seconds).
    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        let found = self.inner.single(key, Request::GetCas)?.cas();
        match cas_extension(&found, expected, ttl, replace) {
            Some(request) => Ok(self.inner.single(key, request)?.flag()),
            None => Ok(false),
        }
    }

    /// See `clearing`.
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let inner = &*self.inner;
        match clearing(&inner.settings, prefix)? {
            Clearing::Namespace(ns) => inner.bump_generation(ns, 1).map(|_| ()),
            Clearing::FlushAll => first_error(
                inner
                    .servers
                    .iter()
                    .map(|s| inner.single_on(s, b"", Request::FlushAll).map(|_| ())),
            ),
        }
    }

    /// `mg <key> t`: whole seconds, as memcached keeps them.
    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        self.inner.single(key, Request::Ttl).map(|a| a.lifetime())
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let exptime = exptime(ttl);
        self.inner
            .single(key, Request::Replace { value, exptime })
            .map(|a| a.flag())
    }

    fn scan_keys(
        self: Arc<Self>,
        _pattern: &crate::KeyPattern,
        _count: usize,
    ) -> Result<Box<dyn crate::KeyScan>> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "memcached cannot list its keys (its protocol has no key listing, and keys \
             may be hashed), so keys, iter_keys and delete_pattern are not available on \
             memcached://; use a versioned key prefix and clear() or incr_version instead",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn breaker_options_take_the_cache_names_and_the_memcached_aliases() {
        // As a cache opens it: the failure policy takes its options first.
        let limits = |url: &str| -> Result<(u32, Duration, bool)> {
            let loc = Location::parse(url)?;
            let mut opts = Options::new(&loc);
            crate::policy::FailurePolicy::take(&mut opts)?;
            let b = MemcachedBackend::open(&loc, &mut opts)?;
            opts.finish()?;
            let s = &b.inner.settings;
            Ok((s.failure_limit, s.dead_retry, b.isolates_failures()))
        };
        let secs = Duration::from_secs;
        assert_eq!(limits("memcached://h1,h2").unwrap(), (2, secs(30), true));
        assert_eq!(
            limits("memcached://h1,h2?breaker_threshold=5&breaker_cooldown=7").unwrap(),
            (5, secs(7), true)
        );
        assert_eq!(
            limits("memcached://h1,h2?failure_limit=4&dead_retry=3").unwrap(),
            (4, secs(3), true)
        );
        // 0 under either name: no server is taken out (the cache-wide breaker applies).
        assert!(!limits("memcached://h1,h2?breaker_threshold=0").unwrap().2);
        assert!(!limits("memcached://h1,h2?breaker_cooldown=0").unwrap().2);
        assert!(!limits("memcached://h1,h2?dead_retry=0").unwrap().2);
        // One server: no per-server breaker, whatever the options.
        assert!(!limits("memcached://h1?breaker_threshold=5").unwrap().2);
        for url in [
            "memcached://h1,h2?breaker_threshold=5&failure_limit=4",
            "memcached://h1,h2?breaker_cooldown=5&dead_retry=4",
        ] {
            let err = limits(url).unwrap_err();
            assert!(err.is_configuration(), "{url}: {err}");
            assert!(err.to_string().contains("alias"), "{url}: {err}");
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
