//! The contract every backend keeps, and the backends themselves (one module each).
//!
//! A backend stores bytes under full keys (`{key_prefix}:{version}:{key}`, already built by
//! [`crate::Cache`]) with an optional time to live. It knows nothing of versions, default
//! TTLs, serializers or statistics: those live once, in [`crate::Cache`].

use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::pattern::KeyPattern;
use crate::value::Value;
use std::sync::Arc;
use std::time::Duration;

pub use crate::cache::KeyParts;
pub use asynchronous::{AsyncAccess, AsyncBackend, BoxFuture, OnBlockingPool};
pub use scan::{AsyncKeyScan, BlockingPoolScan, CollectedKeys, KeyScan};

mod asynchronous;
mod scan;
#[cfg(feature = "postgres")]
pub(crate) use scan::AsyncIdScan;
pub(crate) use scan::InlineScan;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use scan::{IdRows, IdScan};
pub(crate) mod server;
pub use server::ServerInfo;
pub mod dummy;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "memcached")]
pub mod memcached;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;

/// The largest certificate file a URL option may name (`tls_ca`, `sslrootcert`).
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Reads the PEM file a URL option (`option`) names: a regular file of at most
/// [`MAX_PEM_FILE`] bytes. Anything else (a directory, `/dev/zero`, a FIFO with no writer, a
/// huge file) is a configuration error at once, never a read that does not end.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn read_pem_file(option: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |why: String| {
        Error::config(format!(
            "cannot use the {option} file {}: {why}",
            path.display()
        ))
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the
    // opened file, so it cannot change between the check and the read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_PEM_FILE {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_PEM_FILE} bytes a certificate file may have",
            meta.len()
        )));
    }
    let mut pem = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| bad(e.to_string()))?;
    if pem.len() as u64 > MAX_PEM_FILE {
        return Err(bad(format!(
            "it grew past the {MAX_PEM_FILE} bytes a certificate file may have"
        )));
    }
    Ok(pem)
}

/// A store of bytes under byte keys: what each cache URL scheme opens.
///
/// Implement this trait to plug your own store under a [`crate::Cache`] (the custom
/// backend). Implementations must be `Send + Sync`: one backend serves every thread.
/// `ttl` is `None` for "never expires"; the cache never passes a zero TTL.
///
/// The many-key operations have default implementations that loop over the single-key ones;
/// backends with native bulk commands (MGET, multi-get, one SQL statement) replace them.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and errors (`"memory"`, `"redis"`, …).
    fn name(&self) -> &'static str;

    /// True when every call answers in memory, without I/O or waiting (memory, dummy).
    ///
    /// Bindings use it to decide whether releasing the GIL or a thread hop is worth its
    /// cost: for a lookup of tens of nanoseconds it is not.
    fn is_local(&self) -> bool {
        false
    }

    /// How this backend answers async callers: in place when it [is local](Backend::is_local),
    /// else on polycache's blocking pool, unless it overrides this with its own
    /// [`AsyncBackend`] (see [`AsyncAccess`]).
    fn async_access(self: Arc<Self>) -> AsyncAccess {
        if self.is_local() {
            AsyncAccess::Inline
        } else {
            AsyncAccess::Blocking
        }
    }

    /// True when the backend takes failed servers out of service by itself (several
    /// servers, each with its own health), so the cache must not put one circuit breaker in
    /// front of all its keys: one dead server would otherwise shut off every key.
    fn isolates_failures(&self) -> bool {
        false
    }

    /// The value stored under `key`, or `None` when it is missing or expired.
    fn get(&self, key: &[u8]) -> Result<Option<Value>>;

    /// This backend as the `memory://` store it is, if it is one: a [`crate::Cache`] over
    /// it reads the store directly (inlined, without this trait's vtable). Only
    /// [`memory::MemoryBackend`] answers `Some`; a wrapper of one must not.
    #[doc(hidden)]
    #[cfg(feature = "memory")]
    fn as_memory(&self) -> Option<&memory::MemoryBackend> {
        None
    }

    /// [`Backend::get`], lending the value to `visit` instead of returning it: `visit` is
    /// called once when `key` has a value, and the answer says whether it had one.
    ///
    /// A store in this process may lend its own bytes, without a copy or a reference count
    /// (`memory://`), and call `visit` under a lock of its own: `visit` must not call back
    /// into the backend, and should only look at the value or clone it. The default hands
    /// over the value [`Backend::get`] returns.
    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        lend(self.get(key), visit)
    }

    /// [`Backend::get`] of a key given as its parts, as a [`crate::Cache`] reads: its
    /// `{key_prefix}:{version}:` head and the caller's name. The default joins them (on the
    /// stack) for [`Backend::get`]; a store in this process hashes and compares the parts
    /// where they lie instead (`memory://`, whose hit would otherwise wait on the join's
    /// copy, see [`KeyParts`]), and a tiered cache hands them to its L1.
    ///
    /// The parts come by reference, as they lie in the caller's frame: a copy of them made
    /// at each call through the vtable costs more than the read of a hit.
    fn get_parts(&self, key: &KeyParts<'_>) -> Result<Option<Value>> {
        key.joined(|full| self.get(full))
    }

    /// [`Backend::get_with`] of a key given as its parts (see [`Backend::get_parts`]).
    fn get_parts_with(&self, key: &KeyParts<'_>, visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        key.joined(|full| self.get_with(full, visit))
    }

    /// Stores `value` under `key`, replacing any old value.
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Stores `value` only if `key` is absent (or expired); true when it stored. Atomic.
    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool>;

    /// Removes `key`; true when it was present.
    fn delete(&self, key: &[u8]) -> Result<bool>;

    /// Removes `key` if its value is exactly `expected`; true when it did.
    ///
    /// Releases a lease only while it is still the caller's. Backends that can make it one
    /// atomic step do (Redis: a script); this default reads, compares and deletes, so a
    /// write landing between the read and the delete is deleted with it.
    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        match self.get(key)? {
            Some(v) if &*v == expected => self.delete(key),
            _ => Ok(false),
        }
    }

    /// True when `key` is present and not expired.
    fn has_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Gives `key` a new TTL; true when the key was present.
    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool>;

    /// Adds `delta` to the integer stored under `key` and returns the new value, atomically.
    ///
    /// Fails with [`ErrorKind::NotFound`] when the key is missing, [`ErrorKind::NotAnInteger`]
    /// when the value is not ASCII decimal, [`ErrorKind::Overflow`] past the `i64` range.
    /// The entry keeps its TTL.
    fn incr(&self, key: &[u8], delta: i64) -> Result<i64>;

    /// The values of `keys`, in order; `None` for each miss.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Stores every `(key, value)` pair with one TTL; returns the positions that failed.
    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        for (k, v) in items {
            self.set(k, v, ttl)?;
        }
        Ok(Vec::new())
    }

    /// Removes every key; returns how many were present.
    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let mut n = 0;
        for k in keys {
            n += usize::from(self.delete(k)?);
        }
        Ok(n)
    }

    /// Removes every key that starts with `prefix`; an empty prefix removes everything the
    /// backend holds.
    fn clear(&self, prefix: &[u8]) -> Result<()>;

    /// How many entries the backend evicted to stay within its bounds, if it knows.
    fn evictions(&self) -> u64 {
        0
    }

    /// How long `key` has left: missing, never expiring, or the time until it expires.
    ///
    /// The default is an [`ErrorKind::Unsupported`] error: a store that keeps no expiry it
    /// can read back cannot answer, and guessing would be wrong.
    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        let _ = key;
        Err(unsupported(
            self.name(),
            "ttl",
            "it does not report a key's remaining lifetime",
        ))
    }

    /// Stores `value` only if `key` is present (and not expired); true when it stored.
    /// Atomic (Redis `SET XX`, memcached `replace`, one SQL `UPDATE`).
    ///
    /// The default is an [`ErrorKind::Unsupported`] error: a read followed by a write could
    /// store a value after another caller deleted the key.
    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let _ = (key, value, ttl);
        Err(unsupported(
            self.name(),
            "set(xx=True) / replace",
            "it has no atomic replace",
        ))
    }

    /// Runs one allow-listed Redis data-structure command (hashes, sets, sorted sets; see
    /// [`crate::RedisCall`]). Only the Redis backend has these types: the default answers
    /// [`ErrorKind::Unsupported`], never a silent no-op.
    fn redis_command(&self, call: &crate::RedisCall) -> Result<crate::RedisReply> {
        let _ = call;
        Err(crate::structures::unsupported(Some(self.name())))
    }

    /// Starts a scan of the live keys that match `pattern`, about `count` keys a page (see
    /// [`KeyScan`]). A key that is present and unexpired for the whole scan is returned;
    /// keys written or removed meanwhile may or may not be.
    ///
    /// The default refuses with [`ErrorKind::Unsupported`]: a store that cannot list its
    /// keys (memcached) must say so rather than answer an empty list.
    fn scan_keys(self: Arc<Self>, pattern: &KeyPattern, count: usize) -> Result<Box<dyn KeyScan>> {
        let _ = (pattern, count);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the {} backend cannot list its keys, so keys, iter_keys and delete_pattern \
                 are not available on it",
                self.name()
            ),
        ))
    }

    /// Gives `key` more time if its value is exactly `expected`, atomically; true when it did.
    ///
    /// With `replace` the remaining lifetime becomes `ttl`; without it `ttl` is added to the
    /// remaining lifetime, and a key that never expires is left as it is (false). A lock's
    /// `extend` and `reacquire` are built on it (redis-py's scripts). The default refuses:
    /// a read, a compare and a touch would extend whatever another writer stored between
    /// them, so a backend must make it one step of its own.
    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        let _ = (key, expected, ttl, replace);
        Err(unsupported_extend(self.name()))
    }

    /// What the server (or embedded engine) says about itself, for diagnostics: version,
    /// clock, TLS, a few figures, problems such as a cache table of the wrong shape (see
    /// [`ServerInfo`]). Never on an operation's path; may take a round trip or two. The
    /// default answers [`ErrorKind::Unsupported`] (nothing to ask: memory, files, custom).
    fn server_info(&self) -> Result<ServerInfo> {
        Err(unsupported(
            self.name(),
            "server_info",
            "there is no server to ask",
        ))
    }

    /// The stored bytes under `key` when they start with one of `marks` (8-byte headers:
    /// a tagged, signed or compressed value), else only whether `key` is present.
    ///
    /// `has_key`, `ttl`, `touch` and `add` use it to tell an invalidated tagged entry from
    /// a live one without copying every value they look at. The default reads the value
    /// with [`Backend::get`]; a store that can look at a value in place (`memory://`) does.
    fn get_marked(&self, key: &[u8], marks: &[[u8; 8]]) -> Result<Marked> {
        Ok(Marked::of(self.get(key)?, marks))
    }

    /// [`Backend::add`] that, when `key` is taken, also says what holds it, as
    /// [`Backend::get_marked`] does: `None` when it stored.
    ///
    /// `add` uses it to replace an invalidated tagged entry. The default is `add` then
    /// `get_marked`; `memory://` answers from the one lookup its `add` makes.
    fn add_marked(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        marks: &[[u8; 8]],
    ) -> Result<Option<Marked>> {
        if self.add(key, value, ttl)? {
            return Ok(None);
        }
        self.get_marked(key, marks).map(Some)
    }
}

/// What [`Backend::get_marked`] found under a key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Marked {
    /// Nothing (or an expired entry).
    Missing,
    /// A value whose first bytes are none of the marks asked about.
    Unmarked,
    /// A value that starts with one of the marks: its stored bytes.
    Value(Value),
}

impl Marked {
    /// What a read that found `value` answers.
    pub fn of(value: Option<Value>, marks: &[[u8; 8]]) -> Marked {
        match value {
            None => Marked::Missing,
            Some(v) if is_marked(&v, marks) => Marked::Value(v),
            Some(_) => Marked::Unmarked,
        }
    }
}

/// A read's answer as [`Backend::get_with`] gives it: the value, if any, lent to `visit`;
/// true when there was one.
pub(crate) fn lend(found: Result<Option<Value>>, visit: &mut dyn FnMut(&Value)) -> Result<bool> {
    Ok(found?.map(|value| visit(&value)).is_some())
}

/// True when `bytes` start with one of `marks`.
#[inline]
pub fn is_marked(bytes: &[u8], marks: &[[u8; 8]]) -> bool {
    bytes.len() >= 8 && marks.iter().any(|m| bytes[..8] == m[..])
}

/// The error of a backend without an atomic [`Backend::extend_if_equals`].
pub fn unsupported_extend(backend: &str) -> Error {
    unsupported(
        backend,
        "a lock's extend and reacquire (extend_if_equals)",
        "it has no atomic compare-and-extend (implement Backend::extend_if_equals)",
    )
}

/// The new remaining lifetime of an [`Backend::extend_if_equals`]: `ttl`, or `ttl` added to
/// what is left (`None` when the key never expires: nothing to add to).
pub fn extended_ttl(remaining: Option<Duration>, ttl: Duration, replace: bool) -> Option<Duration> {
    if replace {
        return Some(ttl);
    }
    remaining.map(|left| left.saturating_add(ttl))
}

/// The error of an operation a backend does not offer, saying which and why.
pub fn unsupported(backend: &str, operation: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("the {backend} backend does not support {operation}: {why}"),
    )
}

/// Parses ASCII decimal as `incr` reads it: an optional `-` and digits, nothing else.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (neg, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = i64::from(b - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// The new value of an `incr`, with the errors every backend reports the same way.
pub fn apply_delta(current: &[u8], delta: i64) -> Result<i64> {
    let n = parse_i64(current).ok_or_else(|| {
        Error::new(
            ErrorKind::NotAnInteger,
            "the cached value is not an integer",
        )
    })?;
    n.checked_add(delta).ok_or_else(|| {
        Error::new(
            ErrorKind::Overflow,
            "incr/decr would overflow a 64-bit integer",
        )
    })
}

/// The error `incr` gives on a missing key.
pub fn not_found(key: &[u8]) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("key {:?} not found", String::from_utf8_lossy(key)),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn parse_i64_accepts_only_plain_decimal() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"1.5", b" 1", b"1e3", b"abc", b"\x80\x05"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }
}
