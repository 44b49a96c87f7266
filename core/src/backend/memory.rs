//! `memory://`: the embedded in-process store, on quick_cache.
//!
//! Why quick_cache and not moka: see `docs/backends/memory.md`. In short, a moka `get` costs
//! about three times a quick_cache `get` from Python, which alone would miss the latency
//! target, while quick_cache's CLOCK-PRO policy keeps a hit ratio within a point of moka's
//! TinyLFU on skewed traces and is scan resistant too.

use super::{apply_delta, not_found, Backend};
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::location::{Location, Options};
use crate::value::Value;
use quick_cache::sync::{Cache as QuickCache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Entries a `memory://` cache holds when neither bound is given.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// What the byte weigher adds to key and value bytes for one entry's bookkeeping, so that
/// `max_bytes` bounds real memory rather than payload alone (measured; see the docs).
const ENTRY_OVERHEAD: u64 = 96;

/// A stored key: boxed bytes (16 bytes inline, unlike `Vec`'s 24).
#[derive(Clone, PartialEq, Eq, Hash)]
struct StoreKey(Box<[u8]>);

/// A borrowed key, so that lookups by `&[u8]` need no allocation and `entry` can own a copy.
#[derive(PartialEq, Eq, Hash)]
#[repr(transparent)]
struct KeyRef([u8]);

impl KeyRef {
    #[inline]
    fn new(bytes: &[u8]) -> &KeyRef {
        // SAFETY: KeyRef is a #[repr(transparent)] wrapper of [u8], so the layouts and the
        // pointer metadata (the length) are identical.
        unsafe { &*(bytes as *const [u8] as *const KeyRef) }
    }
}

impl std::borrow::Borrow<KeyRef> for StoreKey {
    #[inline]
    fn borrow(&self) -> &KeyRef {
        KeyRef::new(&self.0)
    }
}

impl ToOwned for KeyRef {
    type Owned = StoreKey;
    fn to_owned(&self) -> StoreKey {
        StoreKey(self.0.into())
    }
}

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    /// Deadline in nanoseconds of the monotonic clock; 0 = never expires.
    expires_at: u64,
}

impl Entry {
    #[inline]
    fn live(&self) -> bool {
        self.expires_at == 0 || clock::before_deadline(self.expires_at)
    }
}

/// The deadline of an entry written now with `ttl`, in monotonic nanoseconds.
///
/// Taken on the coarse clock, which never runs ahead of real time: the entry expires at its
/// TTL or up to a few milliseconds before it, never after (reads near the deadline ask the
/// precise clock, see [`clock::before_deadline`]).
fn deadline(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(d) => {
            let ttl = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
            clock::coarse_now_ns().saturating_add(ttl).max(1)
        }
    }
}

#[derive(Clone, Copy)]
struct EntryWeighter {
    by_bytes: bool,
}

impl EntryWeighter {
    #[inline]
    fn weigh(self, key_len: usize, value_len: usize) -> u64 {
        if self.by_bytes {
            key_len as u64 + value_len as u64 + ENTRY_OVERHEAD
        } else {
            1
        }
    }
}

impl Weighter<StoreKey, Entry> for EntryWeighter {
    #[inline]
    fn weight(&self, key: &StoreKey, val: &Entry) -> u64 {
        self.weigh(key.0.len(), val.value.len())
    }
}

/// Counts evictions; quick_cache calls it under the shard lock.
#[derive(Clone, Default)]
struct EvictionCounter(Arc<AtomicU64>);

impl Lifecycle<StoreKey, Entry> for EvictionCounter {
    type RequestState = ();

    #[inline]
    fn on_evict(&self, _state: &mut (), _key: StoreKey, _val: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Store = QuickCache<StoreKey, Entry, EntryWeighter, DefaultHashBuilder, EvictionCounter>;

/// The bounds of a memory store.
///
/// ```
/// use polycache::backend::memory::{MemoryBackend, MemoryOptions};
/// let opts = MemoryOptions::default().max_bytes(64 << 20);
/// let backend = MemoryBackend::new(&opts).unwrap();
/// # let _ = backend;
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryOptions {
    /// At most this many entries (the default bound).
    pub max_entries: Option<u64>,
    /// At most this many bytes of keys, values and per-entry bookkeeping.
    pub max_bytes: Option<u64>,
}

impl MemoryOptions {
    /// Bounds the store by entry count.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }
    /// Bounds the store by bytes.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }
}

/// The in-process backend behind `memory://`.
///
/// A bounded concurrent map (quick_cache, sharded, CLOCK-PRO eviction: frequently used
/// entries survive a scan of one-off keys) with a per-entry deadline checked lazily on read.
/// `incr`, `decr`, `add` and `touch` each run under the shard's write lock, so they are
/// atomic. `Send + Sync`; cloning shares the store.
///
/// `memory://NAME` shares one store between every cache of the process opened with that
/// name, as Django's `LocMemCache` does with its `LOCATION`; the bounds of the first opener
/// apply. `memory://` with no name is private to the cache that opened it.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    weighter: EntryWeighter,
    evictions: Arc<AtomicU64>,
}

impl MemoryBackend {
    /// A new private store with `options`.
    pub fn new(options: &MemoryOptions) -> Result<MemoryBackend> {
        let (by_bytes, capacity, items) = match (options.max_entries, options.max_bytes) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "memory:// takes max_entries or max_bytes, not both",
                ))
            }
            (Some(0), None) | (None, Some(0)) => {
                return Err(Error::config("memory:// bounds must be positive"))
            }
            (None, Some(bytes)) => (true, bytes, (bytes / 256).max(64) as usize),
            (entries, None) => {
                let n = entries.unwrap_or(DEFAULT_MAX_ENTRIES);
                (false, n, n as usize)
            }
        };
        let opts = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .build()
            .map_err(|e| Error::config(format!("memory:// bounds rejected: {e:?}")))?;
        let evictions = EvictionCounter::default();
        let weighter = EntryWeighter { by_bytes };
        let counter = evictions.0.clone();
        let store = Store::with_options(opts, weighter, DefaultHashBuilder::default(), evictions);
        Ok(MemoryBackend {
            inner: Arc::new(Inner {
                store,
                weighter,
                evictions: counter,
            }),
        })
    }

    /// Opens `memory://[NAME]?max_entries=N|max_bytes=N`.
    pub fn open(location: &Location, options: &mut Options) -> Result<MemoryBackend> {
        if !location.path().is_empty() && location.path() != "/" {
            return Err(Error::config(format!(
                "memory:// takes a store name as its host, not a path: {}",
                location.redacted()
            )));
        }
        let opts = MemoryOptions {
            max_entries: options.positive_u64("max_entries")?,
            max_bytes: options.positive_u64("max_bytes")?,
        };
        match location.hosts() {
            [] => MemoryBackend::new(&opts),
            [name] => MemoryBackend::named(name, &opts),
            _ => Err(Error::config("memory:// takes at most one store name")),
        }
    }

    /// The process-wide store called `name`, created with `options` if it does not exist.
    pub fn named(name: &str, options: &MemoryOptions) -> Result<MemoryBackend> {
        static NAMED: OnceLock<Mutex<HashMap<String, Weak<Inner>>>> = OnceLock::new();
        let mut map = NAMED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = map.get(name).and_then(Weak::upgrade) {
            return Ok(MemoryBackend { inner });
        }
        let backend = MemoryBackend::new(options)?;
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(name.to_owned(), Arc::downgrade(&backend.inner));
        Ok(backend)
    }

    /// Entries held now (expired ones not yet noticed included).
    pub fn len(&self) -> usize {
        self.inner.store.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.inner.store.is_empty()
    }

    /// The store's own view of its size in its bound's unit (entries or bytes).
    pub fn weight(&self) -> u64 {
        self.inner.store.weight()
    }

    fn check_size(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let weight = self.inner.weighter.weigh(key.len(), value.len());
        let limit = self.inner.store.shard_capacity();
        if weight > limit {
            return Err(Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "value of {} bytes is too large for this memory:// cache (at most {} bytes \
                     per entry with max_bytes={})",
                    value.len(),
                    limit.saturating_sub(ENTRY_OVERHEAD + key.len() as u64),
                    self.inner.store.capacity()
                ),
            ));
        }
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn is_local(&self) -> bool {
        true
    }

    #[inline]
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        match self.inner.store.get(KeyRef::new(key)) {
            Some(e) if e.live() => Ok(Some(Value::from(e.value))),
            Some(_) => {
                self.inner.store.remove_if(KeyRef::new(key), |e| !e.live());
                Ok(None)
            }
            None => Ok(None),
        }
    }

    #[inline]
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.check_size(key, value)?;
        let entry = Entry {
            value: Arc::from(value),
            expires_at: deadline(ttl),
        };
        self.inner.store.insert(StoreKey(key.into()), entry);
        Ok(())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check_size(key, value)?;
        let new = Entry {
            value: Arc::from(value),
            expires_at: deadline(ttl),
        };
        let mut pending = Some(new);
        let result = self.inner.store.entry(KeyRef::new(key), None, |_, old| {
            if old.live() {
                EntryAction::Retain(false)
            } else {
                *old = pending.take().expect("callback runs once");
                EntryAction::Retain(true)
            }
        });
        match result {
            EntryResult::Retained(stored) => Ok(stored),
            EntryResult::Vacant(guard) => {
                let entry = pending.take().expect("callback did not run");
                Ok(guard.insert(entry).is_ok())
            }
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                Ok(false)
            }
        }
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .inner
            .store
            .remove(KeyRef::new(key))
            .is_some_and(|(_, e)| e.live()))
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .inner
            .store
            .peek(KeyRef::new(key))
            .is_some_and(|e| e.live()))
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let expires_at = deadline(ttl);
        let result = self.inner.store.entry(KeyRef::new(key), None, |_, e| {
            if e.live() {
                e.expires_at = expires_at;
                EntryAction::Retain(true)
            } else {
                EntryAction::Remove
            }
        });
        Ok(matches!(result, EntryResult::Retained(true)))
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let result = self.inner.store.entry(KeyRef::new(key), None, |_, e| {
            if !e.live() {
                return EntryAction::Remove;
            }
            match apply_delta(&e.value, delta) {
                Ok(n) => {
                    let mut buf = itoa_buf(n);
                    e.value = Arc::from(buf.as_bytes_mut());
                    EntryAction::Retain(Ok(n))
                }
                Err(err) => EntryAction::Retain(Err(err)),
            }
        });
        match result {
            EntryResult::Retained(r) => r,
            _ => Err(not_found(key)),
        }
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        if prefix.is_empty() {
            self.inner.store.clear();
        } else {
            self.inner.store.retain(|k, _| !k.0.starts_with(prefix));
        }
        Ok(())
    }

    fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }
}

/// A decimal rendering of an integer on the stack.
struct ItoaBuf {
    buf: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(n: i64) -> ItoaBuf {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    ItoaBuf { buf, start: i }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa_matches_to_string() {
        for n in [0, 1, -1, 42, i64::MAX, i64::MIN, -1234567890] {
            assert_eq!(itoa_buf(n).as_bytes_mut(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn entry_bound_evicts_and_counts() {
        let m = MemoryBackend::new(&MemoryOptions::default().max_entries(100)).unwrap();
        for i in 0..1000 {
            m.set(format!("k{i}").as_bytes(), b"v", None).unwrap();
        }
        assert!(m.len() <= 100, "len {}", m.len());
        assert!(m.evictions() >= 900, "evictions {}", m.evictions());
    }

    #[test]
    fn byte_bound_holds_and_rejects_oversized() {
        let m = MemoryBackend::new(&MemoryOptions::default().max_bytes(64 * 1024)).unwrap();
        for i in 0..1000 {
            m.set(format!("k{i}").as_bytes(), &[7u8; 500], None)
                .unwrap();
        }
        assert!(m.weight() <= 64 * 1024, "weight {}", m.weight());
        let err = m.set(b"big", &vec![0u8; 128 * 1024], None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
        assert!(m.get(b"big").unwrap().is_none());
    }

    #[test]
    fn named_stores_are_shared_and_unnamed_are_not() {
        let a = MemoryBackend::named("shared-test", &MemoryOptions::default()).unwrap();
        let b = MemoryBackend::named("shared-test", &MemoryOptions::default()).unwrap();
        a.set(b"k", b"v", None).unwrap();
        assert_eq!(b.get(b"k").unwrap().unwrap(), *b"v".as_slice());
        let c = MemoryBackend::new(&MemoryOptions::default()).unwrap();
        assert!(c.get(b"k").unwrap().is_none());
    }
}
