//! [`Cache`]: a backend plus the key policy, default TTL, size limit and statistics.

use crate::backend::{AsyncBackend, Backend};
use crate::codec::{Codec, Opened};
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::{Expiry, Ttl};
use crate::flight::{Flights, RefreshPolicy};
use crate::policy::{is_outage, FailurePolicy};
use crate::stats::{Operation, Outcome, Stats, StatsSnapshot, Timer};
use crate::value::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod asynchronous;
mod builder;
mod compute;
mod compute_async;
pub(crate) mod key;

pub use builder::{CacheBuilder, SERIALIZERS};
pub use key::Key;
pub use key::KeyParts;
use key::{key_too_long, HEAD_CHUNK};
mod lifetime;
mod scan;
mod server;
mod structures;

pub use scan::{AsyncKeyIter, KeyIter, DEFAULT_ITERSIZE, MAX_ITERSIZE};

mod lock;

pub use lock::{Lock, LockGuard, LockOptions};

mod tags;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use tags::fuzz_tag_header;
pub use tags::{check_tags, TagStamp, MAX_TAGS, MAX_TAG_LEN, TAG_MAGIC};
use tags::{ready, Via};

/// The default TTL of a cache when none is configured: 300 seconds, Django's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest value a cache stores unless configured otherwise: 64 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 << 20;
/// The longest key (before prefix and version) a cache accepts: 64 KiB.
pub const MAX_KEY_LEN: usize = 64 << 10;

/// A cache: one backend plus key prefix, version, default TTL, value size limit and stats.
///
/// Open one from a URL with [`Cache::open`] or configure it with [`Cache::builder`]. The
/// full key of every entry is `{key_prefix}:{version}:{key}`, Django's default, so polycache
/// and Django address the same entries. Values are bytes; integers are stored as ASCII
/// decimal so `incr` works natively everywhere.
///
/// `Cache` is `Send + Sync` and cheap to clone (clones share the backend and statistics).
/// No method panics.
///
/// ```
/// use polycache::{Cache, Expiry};
/// use std::time::Duration;
///
/// let cache = Cache::builder("memory://?max_entries=1000").key_prefix("app").build().unwrap();
/// cache.set("greeting", b"hello", Expiry::After(Duration::from_secs(60))).unwrap();
/// assert_eq!(cache.get("greeting").unwrap().as_deref(), Some(&b"hello"[..]));
/// cache.set("hits", b"1", Expiry::Never).unwrap();
/// assert_eq!(cache.incr("hits", 5).unwrap(), 6);
/// assert!(cache.incr("absent", 1).unwrap_err().is_not_found());
/// assert_eq!(cache.stats().hits, 1);
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    /// `backend` itself when it is a `memory://` store: reads call the store's own lookup,
    /// inlined, instead of going through the vtable and a `Result<Option<Value>>` returned
    /// in memory (the same code as the store's `Backend::get`, so one behaviour).
    #[cfg(feature = "memory")]
    memory: Option<crate::backend::memory::MemoryBackend>,
    /// How async calls reach the backend; `None` for a backend that answers in memory,
    /// whose async calls run the synchronous call in place.
    awaited: Option<Arc<dyn AsyncBackend>>,
    key_prefix: String,
    version: i64,
    /// `{key_prefix}:{version}:`, pre-rendered for the common case.
    head: Box<[u8]>,
    /// `head` zero-padded to [`HEAD_CHUNK`] bytes, when it fits.
    head_chunk: Option<[u8; HEAD_CHUNK]>,
    default_expiry: Expiry,
    max_value_size: usize,
    stats: Stats,
    location: String,
    policy: FailurePolicy,
    /// Coarse-clock ticks of the last fail-open warning.
    last_warning: AtomicU64,
    /// How `get_or_set_with`, decorators and jobs compute missing values.
    refresh: RefreshPolicy,
    /// The keys being computed now (single-flight).
    flights: Arc<Flights>,
    /// Signing and compression of values (see `codec.rs`).
    codec: Codec,
    /// The tags of entries this process read or wrote, to read a tagged entry and its tag
    /// versions in one request (`tags/hints.rs`); `None` where calls answer in memory.
    hints: Option<tags::TagHints>,
    /// Coarse-clock ticks of the last warning about a rejected (unsigned, forged) value.
    last_rejection: AtomicU64,
    /// The serializer the bindings use for this cache's values (`pickle`, `json`, `raw`).
    serializer: &'static str,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("location", &self.inner.location)
            .field("key_prefix", &self.inner.key_prefix)
            .field("version", &self.inner.version)
            .field("default_expiry", &self.inner.default_expiry)
            .field("codec", &self.inner.codec)
            .field("serializer", &self.inner.serializer)
            .finish()
    }
}

/// True at most once a second per `slot` (coarse-clock ticks of the last time it was true):
/// the rate of a warning that a dead server or a forger could otherwise repeat at will.
fn once_a_second(slot: &AtomicU64) -> bool {
    let now = crate::clock::ticks();
    let last = slot.load(Ordering::Relaxed);
    let second = crate::clock::ticks_of(Duration::from_secs(1));
    // `last == 0`: never warned yet.
    (last == 0 || now.saturating_sub(last) >= second)
        && slot
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

fn counts_as_error(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Connection
            | ErrorKind::Timeout
            | ErrorKind::Io
            | ErrorKind::Backend
            | ErrorKind::Serialization
    )
}

impl Cache {
    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }
    /// The default version.
    pub fn version(&self) -> i64 {
        self.inner.version
    }
    /// What [`Expiry::Default`] means for this cache (`Never`, `After` or `Expired`).
    pub fn default_expiry(&self) -> Expiry {
        self.inner.default_expiry
    }
    /// The location, with any password redacted.
    pub fn location(&self) -> &str {
        &self.inner.location
    }
    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }
    /// How `get_or_set_with`, the decorators and jobs compute missing values.
    pub fn refresh_policy(&self) -> &RefreshPolicy {
        &self.inner.refresh
    }
    /// The serializer the Python binding uses for this cache: `pickle`, `json` or `raw`.
    pub fn serializer(&self) -> &'static str {
        self.inner.serializer
    }
    /// True when this cache signs its values (a `signing_key` is set).
    pub fn signs_values(&self) -> bool {
        self.inner.codec.signs()
    }

    /// The bytes stored for `value` under the full key `full`: signed and compressed as this
    /// cache is configured, else `value` itself.
    #[inline]
    fn seal_value<'v>(&self, full: &[u8], value: &'v [u8]) -> Cow<'v, [u8]> {
        self.learn_written(full, value);
        self.inner.codec.seal(full, value)
    }

    /// The value a writer stored under the full key `full`, from what the backend returned:
    /// the reverse of `seal_value`. A value whose signature fails is `None` and a
    /// logged warning; a compressed value that cannot be expanded is a
    /// [`ErrorKind::Serialization`] error.
    #[inline]
    fn open_value(&self, full: &[u8], stored: Option<Value>) -> Result<Option<Value>> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        match self
            .inner
            .codec
            .open(full, stored, self.inner.max_value_size)?
        {
            Opened::Value(v) => Ok(Some(v)),
            Opened::Rejected(why) => {
                self.warn_rejected(full, why);
                Ok(None)
            }
        }
    }

    #[cold]
    fn warn_rejected(&self, full: &[u8], why: &str) {
        if once_a_second(&self.inner.last_rejection) {
            log::warn!(
                "polycache: {}: ignoring the value under {:?}, answering a miss: {why}",
                self.inner.location,
                String::from_utf8_lossy(full)
            );
        }
    }

    /// Counts a failure; errors pass through unchanged.
    #[inline]
    fn track<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if counts_as_error(e) {
                self.inner.stats.error(1);
            }
        }
        result
    }

    /// Counts a failure and, when the cache fails open and the backend is unreachable or too
    /// slow, logs a warning and answers `fallback()` instead of the error.
    #[inline]
    fn apply_fail_open<T>(&self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        match self.track(result) {
            Err(e) if self.inner.policy.fail_open && is_outage(&e) => {
                self.warn_fail_open(&e);
                Ok(fallback())
            }
            other => other,
        }
    }

    #[cold]
    fn warn_fail_open(&self, err: &Error) {
        // At most one warning a second per cache: a dead server must not flood the log.
        if once_a_second(&self.inner.last_warning) {
            log::warn!(
                "polycache: {} failed, answering as a miss (fail_open): {err}",
                self.inner.location
            );
        }
    }

    /// [`Expiry`] resolved against this cache's default.
    #[inline]
    pub(crate) fn resolve_expiry(&self, expiry: Expiry) -> Ttl {
        expiry.resolve(self.inner.default_expiry)
    }

    pub(crate) fn stats_ref(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) fn flights(&self) -> &Arc<Flights> {
        &self.inner.flights
    }

    /// `get` of a full key: fail-open applies, not counted as a hit or miss.
    pub(crate) fn full_get(&self, full: &[u8]) -> Result<Option<Value>> {
        let found = self.read(KeyParts::whole(full));
        self.apply_fail_open(found, || None)
    }

    /// The value under the full key `full`, opened and checked against its tags: with the
    /// versions of the tags it is hinted to carry in the same request (`tags/hints.rs`).
    ///
    /// Only the plain case (no hint, a value stored as it is read, or none) is inlined into
    /// the callers; the others are calls of their own, so that the plain read keeps a small
    /// frame and few saved registers.
    ///
    /// A `memory://` store reads the key's parts unjoined ([`KeyParts`]); the other paths
    /// join them.
    #[inline]
    fn read(&self, key: KeyParts<'_>) -> Result<Option<Value>> {
        #[cfg(feature = "memory")]
        if let Some(memory) = &self.inner.memory {
            // A memory store never fails, and keeps no tag hints (its calls answer in place).
            return match memory.get_value(key) {
                Some(v) if self.inner.codec.passes_as_stored(&v) => Ok(Some(v)),
                None => Ok(None),
                found => self.open_read_parts(key, found),
            };
        }
        self.read_from_backend(key)
    }

    /// [`Cache::open_read`] of a key's parts, joined.
    #[cfg(feature = "memory")]
    #[inline(never)]
    fn open_read_parts(&self, key: KeyParts<'_>, found: Option<Value>) -> Result<Option<Value>> {
        key.joined(|full| self.open_read(full, found))
    }

    /// [`Cache::read`] through the backend's vtable: every backend but `memory://`. The
    /// key goes as its parts ([`Backend::get_parts`]): a tiered cache's `memory://` L1
    /// reads them unjoined.
    #[inline(never)]
    fn read_from_backend(&self, key: KeyParts<'_>) -> Result<Option<Value>> {
        if self.inner.hints.is_some() {
            return key.joined(|full| self.read_maybe_hinted(full));
        }
        let found = self.inner.backend.get_parts(&key);
        match &found {
            // A value to open (signed, compressed or tagged).
            Ok(Some(v)) if !self.inner.codec.passes_as_stored(v) => {
                key.joined(|full| self.open_read(full, found?))
            }
            // Anything else is the answer as the backend gave it, so that it is built in
            // place, not moved field by field through each frame.
            _ => found,
        }
    }

    /// [`Cache::read`] of a cache that keeps tag hints (one whose calls do not answer in
    /// memory).
    #[inline(never)]
    fn read_maybe_hinted(&self, full: &[u8]) -> Result<Option<Value>> {
        if let Some(tags) = self.hint(full) {
            return ready(self.read_hinted(Via::Blocking, full, &tags));
        }
        match self.inner.backend.get(full)? {
            Some(v) if self.inner.codec.passes_as_stored(&v) => Ok(Some(v)),
            found => self.open_read(full, found),
        }
    }

    /// The rest of [`Cache::read`] for a value to open (signed, compressed or tagged).
    #[inline(never)]
    fn open_read(&self, full: &[u8], found: Option<Value>) -> Result<Option<Value>> {
        self.check_tags_at(full, self.open_value(full, found)?)
    }

    /// `set` of a full key with a resolved TTL: size limit, fail-open and `sets` apply.
    pub(crate) fn full_set(&self, full: &[u8], value: &[u8], ttl: Ttl) -> Result<bool> {
        self.check_value(value)?;
        self.store(full, value, ttl)
    }

    /// Writes a checked value under a full key: the one write path of `set` and `full_set`.
    #[inline]
    fn store(&self, full: &[u8], value: &[u8], ttl: Ttl) -> Result<bool> {
        self.answer_store(self.write(full, value, ttl), ttl)
    }

    /// The backend's write of a checked value (a delete for [`Ttl::Expired`]).
    #[inline]
    fn write(&self, full: &[u8], value: &[u8], ttl: Ttl) -> Result<()> {
        match ttl {
            Ttl::Expired => self.inner.backend.delete(full).map(|_| ()),
            ttl => self
                .inner
                .backend
                .set(full, &self.seal_value(full, value), ttl.as_option()),
        }
    }

    /// What a write answers for the backend's result: fail-open and `sets`.
    #[inline]
    fn answer_store(&self, result: Result<()>, ttl: Ttl) -> Result<bool> {
        let result = self.apply_fail_open(result.map(|()| true), || false);
        if let Ok(true) = result {
            if ttl != Ttl::Expired {
                self.inner.stats.set(1);
            }
        }
        result
    }

    /// `add` of a full key (leases): errors pass through (counted), nothing else counted.
    /// Stored as given, never signed: a lease token is a random lock owner's name that
    /// [`Cache::full_delete_if_equals`] compares byte for byte, and no reader deserializes it.
    pub(crate) fn full_add(&self, full: &[u8], value: &[u8], ttl: Duration) -> Result<bool> {
        self.track(self.inner.backend.add(full, value, Some(ttl)))
    }

    /// `delete_if_equals` of a full key (lease release): fail-open applies, not counted.
    pub(crate) fn full_delete_if_equals(&self, full: &[u8], expected: &[u8]) -> Result<bool> {
        self.apply_fail_open(self.inner.backend.delete_if_equals(full, expected), || {
            false
        })
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.inner.max_value_size {
            return Err(Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "value of {} bytes is larger than this cache's max_value_size ({} bytes)",
                    value.len(),
                    self.inner.max_value_size
                ),
            ));
        }
        Ok(())
    }

    /// The value under `key`, or `None` on a miss.
    #[inline]
    pub fn get<'k>(&self, key: impl Into<Key<'k>>) -> Result<Option<Value>> {
        let start = self.inner.stats.start(Operation::Get);
        let mut found = self.with_key_parts(key.into(), |k| self.read(k));
        match &found {
            Ok(value) => {
                let size = value.as_ref().map(|v| v.len());
                self.inner.stats.record_read(Operation::Get, start, size);
            }
            Err(_) => self.answer_failed_get(start, &mut found),
        }
        // Every path answers `found` itself, so it can be built where the caller wants it.
        found
    }

    /// [`Cache::answer_get`] of a `get` that failed, in place.
    #[inline(never)]
    fn answer_failed_get(&self, start: Timer, found: &mut Result<Option<Value>>) {
        let failed = std::mem::replace(found, Ok(None));
        *found = self.answer_get(start, failed);
    }

    /// [`Cache::get`], lending the value to `visit` instead of returning it; the answer is
    /// what `visit` returned, or `None` on a miss.
    ///
    /// A `memory://` hit lends the stored bytes themselves: no copy, and no reference count
    /// taken and dropped. Counted, opened (signed, compressed and tagged values) and failing
    /// open exactly as [`Cache::get`]. `visit` may run under a lock of the store, so it must
    /// not call this cache (or any cache sharing its store) and should be short: look at
    /// the bytes, copy them, or clone the [`Value`] to keep it.
    ///
    /// ```
    /// # fn main() -> polycache::Result<()> {
    /// use polycache::{Cache, Expiry};
    /// let cache = Cache::open("memory://")?;
    /// cache.set("greeting", b"hello", Expiry::Default)?;
    /// assert_eq!(cache.get_with("greeting", |v| v.len())?, Some(5));
    /// assert_eq!(cache.get_with("absent", |v| v.len())?, None);
    /// # Ok(())
    /// # }
    /// ```
    // Built into its caller (every Python `get`): called, it copied the caller's `Key` into
    // its frame with 16-byte loads over the 8- and 1-byte stores that had just written it,
    // loads that wait for those stores to reach the cache, about 12 ns of a 57 ns Python hit
    // (docs/backends/memory.md, "The key copied into `get_with`").
    #[inline(always)]
    pub fn get_with<'k, R>(
        &self,
        key: impl Into<Key<'k>>,
        visit: impl FnOnce(&Value) -> R,
    ) -> Result<Option<R>> {
        let start = self.inner.stats.start(Operation::Get);
        let mut visit = Some(visit);
        let mut answer = None;
        let mut lend = |value: &Value| {
            if let Some(visit) = visit.take() {
                answer = Some((value.len(), visit(value)));
            }
        };
        match self.with_key_parts(key.into(), |k| self.read_with(k, &mut lend)) {
            Ok(()) => {
                let size = answer.as_ref().map(|(size, _)| *size);
                self.inner.stats.record_read(Operation::Get, start, size);
                Ok(answer.map(|(_, r)| r))
            }
            Err(e) => self.answer_get(start, Err(e)).map(|_| None),
        }
    }

    /// [`Cache::read`], lending the value: a value stored as it is read is lent as the
    /// backend lends it; one to open (signed, compressed, tagged) is taken out, opened and
    /// checked, then lent. Generic over `visit`, so that the one `dyn` call is the
    /// backend's; the hinted and the sealed reads are calls of their own.
    #[inline]
    fn read_with(&self, key: KeyParts<'_>, visit: &mut impl FnMut(&Value)) -> Result<()> {
        #[cfg(feature = "memory")]
        if let Some(memory) = &self.inner.memory {
            // The store's lookup inlined, `visit` with it: no `dyn` closure between them.
            let codec = &self.inner.codec;
            let sealed = memory.read_lent(key, |value| {
                if codec.passes_as_stored(value) {
                    visit(value);
                    None
                } else {
                    Some(value.clone())
                }
            });
            return match sealed.flatten() {
                Some(sealed) => key.joined(|full| self.open_lent(full, sealed, visit)),
                None => Ok(()),
            };
        }
        self.read_with_backend(key, visit)
    }

    /// [`Cache::read_with`] through the backend's vtable: every backend but `memory://`;
    /// the key goes as its parts, as in [`Cache::read_from_backend`].
    #[inline]
    fn read_with_backend(&self, key: KeyParts<'_>, visit: &mut impl FnMut(&Value)) -> Result<()> {
        if self.inner.hints.is_some() {
            let hinted = key.joined(|full| {
                let tags = self.hint(full)?;
                Some(self.read_hinted_lent(full, &tags, visit))
            });
            if let Some(read) = hinted {
                return read;
            }
        }
        let codec = &self.inner.codec;
        let mut sealed = None;
        self.inner.backend.get_parts_with(&key, &mut |value| {
            if codec.passes_as_stored(value) {
                visit(value);
            } else {
                sealed = Some(value.clone());
            }
        })?;
        match sealed {
            Some(sealed) => key.joined(|full| self.open_lent(full, sealed, visit)),
            None => Ok(()),
        }
    }

    /// [`Cache::read_with`] of a value hinted to carry `tags`.
    #[inline(never)]
    fn read_hinted_lent(
        &self,
        full: &[u8],
        tags: &[Vec<u8>],
        visit: &mut dyn FnMut(&Value),
    ) -> Result<()> {
        if let Some(value) = ready(self.read_hinted(Via::Blocking, full, tags))? {
            visit(&value);
        }
        Ok(())
    }

    /// [`Cache::read_with`] of a value to open (signed, compressed or tagged).
    #[inline(never)]
    fn open_lent(&self, full: &[u8], sealed: Value, visit: &mut dyn FnMut(&Value)) -> Result<()> {
        if let Some(value) = self.check_tags_at(full, self.open_value(full, Some(sealed))?)? {
            visit(&value);
        }
        Ok(())
    }

    /// What `get` answers for what the backend found (fail-open), counted in one record.
    ///
    /// The cache-wide hits and misses are the operation's (`Stats::snapshot` adds them up),
    /// so a hit costs no counter of its own; only a failure answered as a miss (fail-open)
    /// adds a miss there.
    #[inline]
    fn answer_get(&self, start: Timer, found: Result<Option<Value>>) -> Result<Option<Value>> {
        self.record(Operation::Get, start, &found, 0);
        let failed = found.is_err();
        let result = self.apply_fail_open(found, || None);
        if failed && result.is_ok() {
            self.inner.stats.miss(1);
        }
        result
    }

    /// Stores `value` under `key`. [`Expiry::Expired`] stores nothing and removes the old value.
    ///
    /// Returns true when the write reached the backend; false only when the cache fails open
    /// and the backend was unreachable (see [`FailurePolicy`]).
    #[inline]
    pub fn set<'k>(&self, key: impl Into<Key<'k>>, value: &[u8], expiry: Expiry) -> Result<bool> {
        self.check_value(value)?;
        let ttl = self.resolve_expiry(expiry);
        let start = self.inner.stats.start(Operation::Set);
        let written = self.with_key(key.into(), |k| self.write(k, value, ttl));
        self.finish_set(start, ttl, value, written)
    }

    /// Records a `set` of `value` and answers it (fail-open, `sets`); shared by
    /// [`Cache::set`] and its awaitable twin.
    ///
    /// The key it stored counts in `sets` from the same record (as [`Cache::answer_store`]
    /// would count it: a write that succeeded, not a delete), which saves the thread-local
    /// read of a counter of its own ([`Stats::record_set`]).
    #[inline]
    fn finish_set(
        &self,
        start: Timer,
        ttl: Ttl,
        value: &[u8],
        written: Result<()>,
    ) -> Result<bool> {
        if written.is_ok() && ttl != Ttl::Expired {
            // The common answer, counted without an `Outcome` (`Stats::record_stored`).
            self.inner.stats.record_stored(start, value.len());
            return Ok(true);
        }
        // Here the write failed, or it was a delete (`Ttl::Expired`): no bytes stored, and
        // nothing counted in `sets`.
        self.inner
            .stats
            .record_set(start, outcome(&written, 0), false);
        self.apply_fail_open(written.map(|()| true), || false)
    }

    /// Stores `value` only if `key` is absent; true when it stored.
    ///
    /// With [`Expiry::Expired`] nothing is stored and the answer is whether the key was
    /// absent, as Django's backends do.
    pub fn add<'k>(&self, key: impl Into<Key<'k>>, value: &[u8], expiry: Expiry) -> Result<bool> {
        self.check_value(value)?;
        let start = self.inner.stats.start(Operation::Add);
        let ttl = self.resolve_expiry(expiry);
        let result = self.with_key(key.into(), |k| match ttl {
            Ttl::Expired => self.is_present(k).map(|present| !present),
            ttl => self.add_over_invalidated(k, &self.seal_value(k, value), ttl.as_option()),
        });
        self.finish_add(start, ttl, value, result)
    }

    /// Records an `add` of `value` (its bytes count as written when it stored) and answers
    /// it; shared by [`Cache::add`] and its awaitable twin.
    fn finish_add(
        &self,
        start: Timer,
        ttl: Ttl,
        value: &[u8],
        result: Result<bool>,
    ) -> Result<bool> {
        let written = match result {
            Ok(true) => stored_bytes(ttl, value),
            _ => 0,
        };
        self.record(Operation::Add, start, &result, written);
        self.answer_add(result)
    }

    fn answer_add(&self, result: Result<bool>) -> Result<bool> {
        let result = self.apply_fail_open(result, || false);
        if let Ok(true) = result {
            self.inner.stats.set(1);
        }
        result
    }

    /// Removes `key`; true when it was present.
    pub fn delete<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool> {
        let start = self.inner.stats.start(Operation::Delete);
        let result = self.with_key(key.into(), |k| self.inner.backend.delete(k));
        self.record(Operation::Delete, start, &result, 0);
        self.answer_delete(result)
    }

    fn answer_delete(&self, result: Result<bool>) -> Result<bool> {
        let result = self.apply_fail_open(result, || false);
        if let Ok(true) = result {
            self.inner.stats.delete(1);
        }
        result
    }

    /// True when `key` is present and not expired. Not counted as a hit or miss.
    ///
    /// A tagged entry whose tags were invalidated is absent (as for `ttl`, `touch`, `add`).
    pub fn has_key<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool> {
        let start = self.inner.stats.start(Operation::HasKey);
        let result = self.with_key(key.into(), |k| self.is_present(k));
        self.record(Operation::HasKey, start, &result, 0);
        self.apply_fail_open(result, || false)
    }

    /// Gives `key` a new expiry; true when the key was present. [`Expiry::Expired`] removes it.
    pub fn touch<'k>(&self, key: impl Into<Key<'k>>, expiry: Expiry) -> Result<bool> {
        let start = self.inner.stats.start(Operation::Touch);
        let result = self.with_key(key.into(), |k| {
            if !self.is_present(k)? {
                return Ok(false);
            }
            match self.resolve_expiry(expiry) {
                Ttl::Expired => self.inner.backend.delete(k),
                ttl => self.inner.backend.touch(k, ttl.as_option()),
            }
        });
        self.record(Operation::Touch, start, &result, 0);
        self.apply_fail_open(result, || false)
    }

    /// Adds `delta` to the integer under `key`, atomically, and returns the new value.
    ///
    /// Fails with [`ErrorKind::NotFound`] on a missing key (as Django does),
    /// [`ErrorKind::NotAnInteger`] on a value that is not decimal, and
    /// [`ErrorKind::Overflow`] past the 64-bit range. The entry keeps its expiry.
    pub fn incr<'k>(&self, key: impl Into<Key<'k>>, delta: i64) -> Result<i64> {
        let key = key.into();
        let start = self.inner.stats.start(Operation::Incr);
        let result = self.with_key(key, |k| ready(self.incr_live(Via::Blocking, k, delta)));
        self.record(Operation::Incr, start, &result, 0);
        self.answer_incr(key, result)
    }

    fn answer_incr(&self, key: Key<'_>, result: Result<i64>) -> Result<i64> {
        // Name the caller's key, not the full one the backend saw.
        let result = result.map_err(|e| {
            if e.is_not_found() {
                crate::backend::not_found(key.name().as_bytes())
            } else {
                e
            }
        });
        if result.is_ok() {
            self.inner.stats.set(1);
        }
        self.track(result)
    }

    fn negated(delta: i64) -> Result<i64> {
        delta
            .checked_neg()
            .ok_or_else(|| Error::new(ErrorKind::Overflow, "decr delta is out of the 64-bit range"))
    }

    /// Subtracts `delta`; see [`Cache::incr`].
    pub fn decr<'k>(&self, key: impl Into<Key<'k>>, delta: i64) -> Result<i64> {
        self.incr(key, Self::negated(delta)?)
    }

    /// The values of `keys`, in order, `None` for each miss; one bulk call to the backend.
    pub fn get_many(&self, keys: &[&str], version: Option<i64>) -> Result<Vec<Option<Value>>> {
        self.get_many_keys(&Self::versioned(keys, version))
    }

    /// [`Cache::get_many`] of keys that each carry their own version, or are full keys
    /// ([`Key::full`]).
    pub fn get_many_keys(&self, keys: &[Key<'_>]) -> Result<Vec<Option<Value>>> {
        let (bytes, ends) = self.full_keys(keys)?;
        let full = Self::split_keys(&bytes, &ends);
        let start = self.inner.stats.start(Operation::GetMany);
        let found = match self.hinted_many_keys(&full) {
            Some(extra) => ready(self.read_many_hinted(Via::Blocking, &full, &extra)),
            None => self
                .open_many(&full, self.inner.backend.get_many(&full))
                .and_then(|values| self.check_tags_many_at(&full, values)),
        };
        self.answer_get_many(&full, found, start)
    }

    /// The values a bulk read found, opened (signature, compression).
    fn open_many(
        &self,
        full: &[&[u8]],
        found: Result<Vec<Option<Value>>>,
    ) -> Result<Vec<Option<Value>>> {
        found.and_then(|values| {
            full.iter()
                .zip(values)
                .map(|(k, v)| self.open_value(k, v))
                .collect()
        })
    }

    fn answer_get_many(
        &self,
        full: &[&[u8]],
        found: Result<Vec<Option<Value>>>,
        start: Timer,
    ) -> Result<Vec<Option<Value>>> {
        self.record(Operation::GetMany, start, &found, 0);
        let failed = found.is_err();
        let result = self.apply_fail_open(found, || vec![None; full.len()]);
        if failed && result.is_ok() {
            // The keys of a failed read answered as misses (fail-open); see `answer_get`.
            self.inner.stats.miss(full.len() as u64);
        }
        result
    }

    /// Stores every pair with one expiry; returns the positions in `items` that failed.
    pub fn set_many(
        &self,
        items: &[(&str, &[u8])],
        expiry: Expiry,
        version: Option<i64>,
    ) -> Result<Vec<usize>> {
        let items = Self::versioned_items(items, version);
        self.set_many_keys(&items, expiry)
    }

    /// [`Cache::set_many`] of keys that each carry their own version, or are full keys
    /// ([`Key::full`]).
    pub fn set_many_keys(&self, items: &[(Key<'_>, &[u8])], expiry: Expiry) -> Result<Vec<usize>> {
        let (bytes, ends) = self.set_many_full_keys(items)?;
        let full = Self::split_keys(&bytes, &ends);
        let start = self.inner.stats.start(Operation::SetMany);
        let ttl = self.resolve_expiry(expiry);
        let result = match ttl {
            Ttl::Expired => self.inner.backend.delete_many(&full).map(|_| Vec::new()),
            ttl => {
                let sealed = self.seal_many(&full, items);
                let r = self
                    .inner
                    .backend
                    .set_many(&pairs(&full, &sealed), ttl.as_option());
                self.count_set_many(items.len(), &r);
                r
            }
        };
        self.finish_set_many(start, items, ttl, result)
    }

    /// Records a `set_many` and answers it (fail-open: every item failed); shared by
    /// [`Cache::set_many_keys`] and its awaitable twin.
    fn finish_set_many(
        &self,
        start: Timer,
        items: &[(Key<'_>, &[u8])],
        ttl: Ttl,
        result: Result<Vec<usize>>,
    ) -> Result<Vec<usize>> {
        self.record_set_many(start, items, ttl, &result);
        self.apply_fail_open(result, || (0..items.len()).collect())
    }

    /// Checks every value of a `set_many` and builds the full keys.
    fn set_many_full_keys(&self, items: &[(Key<'_>, &[u8])]) -> Result<(Vec<u8>, Vec<usize>)> {
        for (_, v) in items {
            self.check_value(v)?;
        }
        let names: Vec<Key<'_>> = items.iter().map(|(k, _)| *k).collect();
        self.full_keys(&names)
    }

    fn seal_many<'v>(&self, full: &[&[u8]], items: &[(Key<'_>, &'v [u8])]) -> Vec<Cow<'v, [u8]>> {
        full.iter()
            .zip(items)
            .map(|(k, (_, v))| self.seal_value(k, v))
            .collect()
    }

    fn count_set_many(&self, items: usize, result: &Result<Vec<usize>>) {
        if let Ok(failed) = result {
            self.inner.stats.set((items - failed.len()) as u64);
        }
    }

    /// Removes every key; returns how many were present.
    pub fn delete_many(&self, keys: &[&str], version: Option<i64>) -> Result<usize> {
        self.delete_many_keys(&Self::versioned(keys, version))
    }

    /// [`Cache::delete_many`] of keys that each carry their own version, or are full keys
    /// ([`Key::full`]).
    pub fn delete_many_keys(&self, keys: &[Key<'_>]) -> Result<usize> {
        let (bytes, ends) = self.full_keys(keys)?;
        let full = Self::split_keys(&bytes, &ends);
        let start = self.inner.stats.start(Operation::DeleteMany);
        let result = self.inner.backend.delete_many(&full);
        self.record(Operation::DeleteMany, start, &result, 0);
        self.answer_delete_many(result)
    }

    fn answer_delete_many(&self, result: Result<usize>) -> Result<usize> {
        let result = self.apply_fail_open(result, || 0);
        if let Ok(n) = result {
            self.inner.stats.delete(n as u64);
        }
        result
    }

    /// The value under `key`; on a miss, calls `compute`, stores its result with `add` and
    /// returns what the cache then holds (another writer's value if it won the race).
    pub fn get_or_set<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        compute: F,
        expiry: Expiry,
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        let key = key.into();
        if let Some(v) = self.get(key)? {
            return Ok(v);
        }
        let value = compute()?;
        if self.add(key, &value, expiry)? {
            return Ok(Value::from(value));
        }
        // Another writer stored first: answer with what the cache holds, as Django does.
        match self.get(key)? {
            Some(v) => Ok(v),
            None => Ok(Value::from(value)),
        }
    }

    /// Removes this cache's entries: every key under `{key_prefix}:`, or everything the
    /// backend holds when the prefix is empty.
    pub fn clear(&self) -> Result<()> {
        let start = self.inner.stats.start(Operation::Clear);
        let result = self.inner.backend.clear(&self.clear_prefix());
        self.record(Operation::Clear, start, &result, 0);
        self.apply_fail_open(result, || ())
    }

    /// What `clear` removes: `{key_prefix}:`, or everything for an empty prefix.
    fn clear_prefix(&self) -> Vec<u8> {
        if self.inner.key_prefix.is_empty() {
            Vec::new()
        } else {
            format!("{}:", self.inner.key_prefix).into_bytes()
        }
    }

    /// Moves `key` from `version` (default: the cache's) to `version + delta` and returns the
    /// new version; fails with [`ErrorKind::NotFound`] when the key is missing.
    pub fn incr_version(&self, key: &str, delta: i64, version: Option<i64>) -> Result<i64> {
        let (version, new_version) = self.versions(delta, version)?;
        let old = Key::new(key).version(version);
        let value = self
            .get(old)?
            .ok_or_else(|| crate::backend::not_found(key.as_bytes()))?;
        self.set(Key::new(key).version(new_version), &value, Expiry::Default)?;
        self.delete(old)?;
        Ok(new_version)
    }

    /// The version `incr_version` moves from, and the one it moves to.
    fn versions(&self, delta: i64, version: Option<i64>) -> Result<(i64, i64)> {
        let version = version.unwrap_or(self.inner.version);
        let new_version = version
            .checked_add(delta)
            .ok_or_else(|| Error::new(ErrorKind::Overflow, "version out of the 64-bit range"))?;
        Ok((version, new_version))
    }

    /// The counters of this cache.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot(self.inner.backend.evictions())
    }

    /// The counters of this cache in the Prometheus text format, labelled `cache="{name}"`
    /// (see [`StatsSnapshot::to_prometheus`]).
    pub fn stats_prometheus(&self, name: &str) -> String {
        self.stats().to_prometheus(name)
    }
}

/// The `(full key, sealed value)` pairs a backend's `set_many` takes.
fn pairs<'a>(full: &[&'a [u8]], sealed: &'a [Cow<'_, [u8]>]) -> Vec<(&'a [u8], &'a [u8])> {
    full.iter().zip(sealed).map(|(k, v)| (*k, &**v)).collect()
}

/// The bytes a write of `value` with `ttl` stores: none for an already-expired one.
#[inline]
fn stored_bytes(ttl: Ttl, value: &[u8]) -> usize {
    if ttl == Ttl::Expired {
        0
    } else {
        value.len()
    }
}

/// What a backend's answer adds to an operation's counters (hits, misses, bytes read).
trait Tally {
    #[inline]
    fn tally(&self, _outcome: &mut Outcome) {}
}

impl Tally for Option<Value> {
    #[inline]
    fn tally(&self, outcome: &mut Outcome) {
        match self {
            Some(v) => {
                outcome.hits = 1;
                outcome.bytes_read = v.len() as u64;
            }
            None => outcome.misses = 1,
        }
    }
}

impl Tally for Vec<Option<Value>> {
    fn tally(&self, outcome: &mut Outcome) {
        for v in self {
            match v {
                Some(v) => {
                    outcome.hits += 1;
                    outcome.bytes_read += v.len() as u64;
                }
                None => outcome.misses += 1,
            }
        }
    }
}

impl Tally for () {}
impl Tally for bool {}
impl Tally for i64 {}
impl Tally for usize {}
impl Tally for Vec<usize> {}

/// An operation's counters for the backend's answer before fail-open replaced an error:
/// outcome, bytes read, and `written` bytes when it succeeded.
#[inline]
fn outcome<T: Tally>(result: &Result<T>, written: usize) -> Outcome {
    let mut outcome = Outcome::default();
    match result {
        Ok(answer) => {
            answer.tally(&mut outcome);
            outcome.bytes_written = written as u64;
        }
        Err(e) => {
            outcome.error = counts_as_error(e);
            outcome.timeout = e.is_timeout();
            #[cfg(feature = "otel")]
            {
                outcome.failure = Some(e.kind());
            }
        }
    }
    outcome
}

impl Cache {
    /// Counts one call of `op` (started at `start`) with the backend's answer before
    /// fail-open replaced an error: outcome, bytes read, and `written` bytes when it succeeded.
    #[inline]
    fn record<T: Tally>(&self, op: Operation, start: Timer, result: &Result<T>, written: usize) {
        self.inner.stats.record(op, start, outcome(result, written));
    }

    /// Counts a `set_many`: the bytes of the values the backend stored.
    fn record_set_many(
        &self,
        start: Timer,
        items: &[(Key<'_>, &[u8])],
        ttl: Ttl,
        result: &Result<Vec<usize>>,
    ) {
        let written = match result {
            Ok(failed) if ttl != Ttl::Expired => items
                .iter()
                .enumerate()
                .filter(|(i, _)| !failed.contains(i))
                .map(|(_, (_, v))| v.len())
                .sum(),
            _ => 0,
        };
        self.record(Operation::SetMany, start, result, written);
    }
}
