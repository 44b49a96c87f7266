//! `memory://`: the embedded in-process store, on quick_cache, or an exact LRU on request.
//!
//! Why quick_cache and not moka: see `docs/backends/memory.md`. In short, a moka `get` costs
//! about three times a quick_cache `get` from Python, which alone would miss the latency
//! target, while quick_cache's CLOCK-PRO policy keeps a hit ratio within a point of moka's
//! TinyLFU on skewed traces and is scan resistant too.
//!
//! The default store is our own shards (`store.rs`), each a `quick_cache::unsync::Cache`
//! behind a `parking_lot::RwLock`, sharded as quick_cache's `sync::Cache` is: holding the
//! lock ourselves, `get_with` lends a hit's bytes to its closure under the read lock without
//! counting a reference, where `sync::Cache::get` could only clone the entry.
//!
//! `eviction=lru` (or any `cull_frequency`) selects an exact least-recently-used order
//! behind one lock instead, with Django's cull: what `LocMemCache` does, for callers whose
//! programs or tests rely on that order and those counts.

use super::{apply_delta, not_found, Backend, CollectedKeys, KeyScan};
use crate::cache::KeyParts;
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::pattern::KeyPattern;
use crate::value::{Value, ValueSpan};
use hashlink::LinkedHashMap;
use quick_cache::DefaultHashBuilder;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// Entries a `memory://` cache holds when neither bound is given.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

mod entry;
use entry::{
    deadline, Entry, EntryWeighter, EvictionCounter, KeyHash, KeyRef, Probe, StoreKey,
    ENTRY_OVERHEAD,
};

mod store;
use store::ClockStore;

type LruMap = LinkedHashMap<StoreKey, Entry, DefaultHashBuilder>;

/// The exact LRU store: one map in use order (least recent first) behind one lock.
struct LruStore {
    map: Mutex<LruMap>,
    max_entries: usize,
    /// Django's `CULL_FREQUENCY`: a full store drops 1/N of its entries, 0 empties it;
    /// `None` drops the one least recently used entry.
    cull_frequency: Option<u64>,
}

impl LruStore {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, LruMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one new key in a full store; returns how many entries went.
    ///
    /// With a cull frequency N, len/N entries go (at least one): the expired ones first, then
    /// the least recently used. The scan for expired entries runs once per cull, so it costs
    /// about N steps per write; with no cull frequency only the least recently used goes.
    fn make_room(&self, map: &mut LruMap) -> u64 {
        let len = map.len();
        if len < self.max_entries {
            return 0;
        }
        let share = match self.cull_frequency {
            Some(0) => {
                map.clear();
                return len as u64;
            }
            Some(n) => {
                map.retain(|_, e| e.live());
                (len as u64 / n).max(1)
            }
            None => 1,
        };
        let mut removed = (len - map.len()) as u64;
        while removed < share && map.pop_front().is_some() {
            removed += 1;
        }
        removed
    }
}

enum Store {
    Clock(ClockStore),
    Lru(LruStore),
}

/// How a memory store chooses what to evict when it is full.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// quick_cache's CLOCK-PRO (the default): sharded, scan resistant, the fastest.
    Clock,
    /// Exact least-recently-used order behind one lock, with Django's cull
    /// ([`MemoryOptions::cull_frequency`]); bounded by entries only.
    Lru,
}

/// The bounds and eviction policy of a memory store.
///
/// ```
/// use polycache::backend::memory::{MemoryBackend, MemoryOptions};
/// let opts = MemoryOptions::default().max_bytes(64 << 20);
/// let backend = MemoryBackend::new(&opts).unwrap();
/// // Django's LocMemCache: exact LRU, 300 entries, a third culled when full.
/// let locmem = MemoryOptions::default().max_entries(300).cull_frequency(3);
/// let backend = MemoryBackend::new(&locmem).unwrap();
/// # let _ = backend;
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryOptions {
    /// At most this many entries (the default bound).
    pub max_entries: Option<u64>,
    /// At most this many bytes of keys, values and per-entry bookkeeping.
    pub max_bytes: Option<u64>,
    /// The eviction policy; `None` is [`Eviction::Clock`] unless a cull frequency is given.
    pub eviction: Option<Eviction>,
    /// Django's `CULL_FREQUENCY`: a write of a new key into a full store first removes
    /// 1/N of the entries (expired ones first, then the least recently used; at least one),
    /// and 0 empties the store. Implies [`Eviction::Lru`].
    pub cull_frequency: Option<u64>,
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
    /// Chooses the eviction policy.
    pub fn eviction(mut self, eviction: Eviction) -> Self {
        self.eviction = Some(eviction);
        self
    }
    /// Culls 1/`n` of a full store (0: all of it) before a new key goes in; exact LRU.
    pub fn cull_frequency(mut self, n: u64) -> Self {
        self.cull_frequency = Some(n);
        self
    }

    /// The policy these options select, or why they contradict each other.
    fn policy(&self) -> Result<Eviction> {
        match (self.eviction, self.cull_frequency, self.max_bytes) {
            (Some(Eviction::Clock), Some(_), _) => Err(Error::config(
                "memory:// culls (cull_frequency) only with eviction=lru",
            )),
            (Some(Eviction::Lru), _, Some(_)) | (None, Some(_), Some(_)) => Err(Error::config(
                "memory:// with eviction=lru or cull_frequency is bounded by max_entries, \
                 not max_bytes",
            )),
            (Some(policy), _, _) => Ok(policy),
            (None, Some(_), None) => Ok(Eviction::Lru),
            (None, None, _) => Ok(Eviction::Clock),
        }
    }
}

/// The in-process backend behind `memory://`.
///
/// A bounded concurrent map (quick_cache, sharded, CLOCK-PRO eviction: frequently used
/// entries survive a scan of one-off keys) with a per-entry deadline checked lazily on read.
/// `incr`, `decr`, `add` and `touch` each run under the shard's write lock, so they are
/// atomic. With [`Eviction::Lru`] the store is one map in exact use order behind one lock
/// (Django's `LocMemCache` order and cull). `Send + Sync`; cloning shares the store.
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
    /// The seed of the default store's [`KeyHash`] ([`Probe::hash`]), random per store.
    seed: u64,
    /// The weight one shard of the default store holds, which no entry may exceed: fixed
    /// when the store is made, kept here so that a write checks it without taking a shard's
    /// lock (0 for the LRU store, which does not check it).
    shard_capacity: u64,
    /// Tests: every key of one length gets the same [`KeyHash`].
    #[cfg(test)]
    colliding: bool,
}

impl MemoryBackend {
    /// A new private store with `options`.
    pub fn new(options: &MemoryOptions) -> Result<MemoryBackend> {
        if options.max_entries == Some(0) || options.max_bytes == Some(0) {
            return Err(Error::config("memory:// bounds must be positive"));
        }
        if options.policy()? == Eviction::Lru {
            let max_entries = options.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
            let max_entries = usize::try_from(max_entries).unwrap_or(usize::MAX);
            let map = LruMap::with_capacity_and_hasher(
                max_entries.min(1 << 16),
                DefaultHashBuilder::default(),
            );
            let store = Store::Lru(LruStore {
                map: Mutex::new(map),
                max_entries,
                cull_frequency: options.cull_frequency,
            });
            let weighter = EntryWeighter { by_bytes: false };
            return Ok(MemoryBackend::with_store(store, weighter, Arc::default()));
        }
        let (by_bytes, capacity, items) = match (options.max_entries, options.max_bytes) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "memory:// takes max_entries or max_bytes, not both",
                ))
            }
            (None, Some(bytes)) => (true, bytes, (bytes / 256).max(64) as usize),
            (entries, None) => {
                let n = entries.unwrap_or(DEFAULT_MAX_ENTRIES);
                (false, n, n as usize)
            }
        };
        let evictions = EvictionCounter::default();
        let weighter = EntryWeighter { by_bytes };
        let counter = evictions.0.clone();
        let store = ClockStore::new(items, capacity, weighter, evictions)
            .map_err(|e| Error::config(format!("memory:// bounds rejected: {e}")))?;
        Ok(MemoryBackend::with_store(
            Store::Clock(store),
            weighter,
            counter,
        ))
    }

    fn with_store(
        store: Store,
        weighter: EntryWeighter,
        evictions: Arc<AtomicU64>,
    ) -> MemoryBackend {
        let shard_capacity = match &store {
            Store::Clock(store) => store.shard_capacity(),
            Store::Lru(_) => 0,
        };
        MemoryBackend {
            inner: Arc::new(Inner {
                store,
                shard_capacity,
                weighter,
                evictions,
                seed: DefaultHashBuilder::default().hash_one(0_u64),
                #[cfg(test)]
                colliding: false,
            }),
        }
    }

    /// Opens `memory://[NAME]?max_entries=N|max_bytes=N`.
    pub fn open(location: &Location, options: &mut Options) -> Result<MemoryBackend> {
        if !location.path().is_empty() && location.path() != "/" {
            return Err(Error::config(format!(
                "memory:// takes a store name as its host, not a path: {}",
                location.redacted()
            )));
        }
        let eviction = match options.take("eviction").as_deref().map(str::trim) {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("lru") => Some(Eviction::Lru),
            Some(v) if v.eq_ignore_ascii_case("clock") => Some(Eviction::Clock),
            Some(v) => {
                return Err(options.error(
                    "eviction",
                    format!(
                        "invalid value {v:?} for option 'eviction' of memory://: expected \
                         clock or lru"
                    ),
                ))
            }
        };
        let opts = MemoryOptions {
            max_entries: options.positive_u64("max_entries")?,
            max_bytes: options.positive_u64("max_bytes")?,
            eviction,
            cull_frequency: options.u64("cull_frequency")?,
        };
        // Options that contradict each other: the error names where one of them came from.
        if let Err(e) = opts.policy() {
            let culprit = if opts.max_bytes.is_some() && opts.eviction != Some(Eviction::Clock) {
                "max_bytes"
            } else {
                "cull_frequency"
            };
            return Err(options.blame(culprit, e));
        }
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
        match &self.inner.store {
            Store::Clock(c) => c.len(),
            Store::Lru(l) => l.lock().len(),
        }
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store's own view of its size in its bound's unit (entries or bytes).
    pub fn weight(&self) -> u64 {
        match &self.inner.store {
            Store::Clock(c) => c.weight(),
            Store::Lru(l) => l.lock().len() as u64,
        }
    }

    /// The eviction policy this store runs.
    pub fn eviction(&self) -> Eviction {
        match &self.inner.store {
            Store::Clock(_) => Eviction::Clock,
            Store::Lru(_) => Eviction::Lru,
        }
    }

    #[inline]
    fn check_size(&self, store: &ClockStore, key: &[u8], value: &[u8]) -> Result<()> {
        let weight = self.inner.weighter.weigh(key.len(), value.len());
        if weight > self.inner.shard_capacity {
            return Err(self.too_large(store, key, value));
        }
        Ok(())
    }

    #[cold]
    fn too_large(&self, store: &ClockStore, key: &[u8], value: &[u8]) -> Error {
        let limit = self.inner.shard_capacity;
        Error::new(
            ErrorKind::ValueTooLarge,
            format!(
                "value of {} bytes is too large for this memory:// cache (at most {} bytes \
                 per entry with max_bytes={})",
                value.len(),
                limit.saturating_sub(ENTRY_OVERHEAD + key.len() as u64),
                store.capacity()
            ),
        )
    }

    /// The default store's index of `key`.
    #[inline]
    fn hash(&self, key: &[u8]) -> KeyHash {
        self.hash_parts(KeyParts::whole(key))
    }

    /// The default store's index of the key `key` joins to (the same as of the joined key).
    #[inline(always)]
    fn hash_parts(&self, key: KeyParts<'_>) -> KeyHash {
        self.hash_probe(&Probe::new(key))
    }

    /// The default store's index of `probe`'s key.
    #[inline(always)]
    fn hash_probe(&self, probe: &Probe<'_>) -> KeyHash {
        #[cfg(test)]
        if self.inner.colliding {
            return probe.key.len() as KeyHash;
        }
        probe.hash(self.inner.seed)
    }

    /// Removes the entry of `key` at `h` if it is (still) expired: a read found it so, and
    /// let go of the read lock first.
    #[cold]
    fn remove_expired(&self, store: &ClockStore, h: KeyHash, key: Probe<'_>) {
        store
            .write(h)
            .remove_if(&h, |e| key.matches(e.key()) && !e.live());
    }

    /// Runs `found` on the live entry of `key` under its store's lock, as a read (the entry
    /// gets hotter, or the most recent in the LRU store); `None` on a miss. An expired entry
    /// is removed: from the default store after the read lock is let go.
    ///
    /// `found` also gets where the entry's value lies (read from the buffer's header with
    /// the key that was compared), so that handing the value out reads no header again.
    #[inline(always)]
    fn read<T>(&self, key: KeyParts<'_>, found: impl FnOnce(&Entry, ValueSpan) -> T) -> Option<T> {
        match &self.inner.store {
            Store::Clock(store) => {
                let probe = Probe::new(key);
                let h = self.hash_probe(&probe);
                let shard = store.read(h);
                let e = shard.get(&h)?;
                let (stored, span) = e.bytes.key_and_span();
                if !probe.matches(stored) {
                    return None;
                }
                if e.live() {
                    return Some(found(e, span));
                }
                drop(shard);
                self.remove_expired(store, h, probe);
                None
            }
            Store::Lru(lru) => key.joined(|key| self.read_lru(lru, key, found)),
        }
    }

    /// [`MemoryBackend::read`] of the LRU store: a call of its own, so that the default
    /// store's read stays small where it is inlined.
    #[inline(never)]
    fn read_lru<T>(
        &self,
        lru: &LruStore,
        key: &[u8],
        found: impl FnOnce(&Entry, ValueSpan) -> T,
    ) -> Option<T> {
        let k = KeyRef::new(key);
        let mut map = lru.lock();
        match map.to_back(k) {
            Some(e) if e.live() => Some(found(e, e.bytes.key_and_span().1)),
            Some(_) => {
                map.remove(k);
                None
            }
            None => None,
        }
    }

    /// [`Backend::get`] without its `Result` (the store never fails): inlined into
    /// [`crate::Cache`]'s reads of a `memory://` cache.
    #[inline(always)]
    pub(crate) fn get_value(&self, key: KeyParts<'_>) -> Option<Value> {
        self.read(key, |e, span| {
            // SAFETY: `read` found `span` in this entry's buffer, under the store's lock.
            unsafe { Value::of_entry_span(&e.bytes, span) }
        })
    }

    /// [`Backend::get_with`] without its `Result` or `dyn` closure: `visit` sees the stored
    /// bytes under the store's lock, with no reference count taken (`Value::lent`), and its
    /// answer is returned; `None` on a miss. Inlined into [`crate::Cache`]'s lent reads.
    #[inline(always)]
    pub(crate) fn read_lent<T>(
        &self,
        key: KeyParts<'_>,
        visit: impl FnOnce(&Value) -> T,
    ) -> Option<T> {
        self.read(key, |e, span| {
            // SAFETY: `read` found `span` in this entry's buffer, under the store's lock.
            let lent = unsafe { Value::lent(&e.bytes, span) };
            visit(&lent)
        })
    }

    /// Runs `found` on the live entry of `key` under its store's lock, without making it
    /// hotter or more recent (as `has_key` looks); `None` when absent or expired.
    fn peek<T>(&self, key: &[u8], found: impl FnOnce(&Entry) -> T) -> Option<T> {
        let live = |e: &&Entry| e.key() == key && e.live();
        match &self.inner.store {
            Store::Clock(store) => {
                let h = self.hash(key);
                store.read(h).peek(&h).filter(live).map(found)
            }
            Store::Lru(lru) => lru.lock().get(KeyRef::new(key)).filter(live).map(found),
        }
    }

    /// Counts the entries a cull removed.
    #[inline]
    fn evicted(&self, n: u64) {
        if n > 0 {
            self.inner.evictions.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Stores `entry` under a key that is not in the LRU map, culling first when it is full.
    fn lru_insert(&self, lru: &LruStore, map: &mut LruMap, key: &[u8], entry: Entry) {
        let culled = lru.make_room(map);
        map.insert(StoreKey(key.into()), entry);
        self.evicted(culled);
    }
}

/// `stored == key`: keys of 8 to 32 bytes (most keys) compared as two overlapping
/// fixed-size words each, in registers, instead of a call to `memcmp`.
#[inline(always)]
fn same_key(stored: &[u8], key: &[u8]) -> bool {
    let len = key.len();
    if stored.len() != len {
        return false;
    }
    /// The first and the last `N` bytes of `b` (`N <= b.len()`), as two words.
    #[inline(always)]
    fn ends<const N: usize>(b: &[u8]) -> ([u8; N], [u8; N]) {
        let mut first = [0; N];
        let mut last = [0; N];
        first.copy_from_slice(&b[..N]);
        last.copy_from_slice(&b[b.len() - N..]);
        (first, last)
    }
    match len {
        16..=32 => {
            let ((a, b), (c, d)) = (ends::<16>(stored), ends::<16>(key));
            (u128::from_ne_bytes(a) ^ u128::from_ne_bytes(c))
                | (u128::from_ne_bytes(b) ^ u128::from_ne_bytes(d))
                == 0
        }
        8..=15 => {
            let ((a, b), (c, d)) = (ends::<8>(stored), ends::<8>(key));
            (u64::from_ne_bytes(a) ^ u64::from_ne_bytes(c))
                | (u64::from_ne_bytes(b) ^ u64::from_ne_bytes(d))
                == 0
        }
        _ => stored == key,
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
        self.get_parts(&KeyParts::whole(key))
    }

    fn as_memory(&self) -> Option<&MemoryBackend> {
        Some(self)
    }

    /// Lends the stored bytes: under the shard's read lock (the default store) or the LRU
    /// store's lock, `visit` sees the entry's value without a reference count being taken
    /// (`Value::lent`); a clone it makes counts one and outlives the entry.
    #[inline]
    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        self.get_parts_with(&KeyParts::whole(key), visit)
    }

    #[inline]
    fn get_parts(&self, key: &KeyParts<'_>) -> Result<Option<Value>> {
        Ok(self.get_value(*key))
    }

    #[inline]
    fn get_parts_with(&self, key: &KeyParts<'_>, visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        Ok(self.read_lent(*key, visit).is_some())
    }

    #[inline]
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let (expires_at, weighter) = (deadline(ttl), self.inner.weighter);
        match &self.inner.store {
            Store::Clock(store) => {
                self.check_size(store, key, value)?;
                let h = self.hash(key);
                // A buffer the write replaces is freed after the lock is let go (declared
                // before the guard, it drops after it).
                let mut replaced = None;
                // A present entry under `h` is overwritten under the shard's write lock (in
                // place when it can be); a new key, or a heavier entry, is inserted. Either
                // way the entry replaced is not counted as evicted.
                let mut shard = store.write(h);
                if let Some(mut old) = shard.get_mut(&h) {
                    if old.overwrite(key, value, expires_at, weighter, &mut replaced) {
                        return Ok(());
                    }
                }
                let entry = Entry::new(key, value, expires_at);
                shard.insert_with_lifecycle(h, entry, &mut Some(h));
            }
            Store::Lru(lru) => {
                let mut replaced = None;
                let mut map = lru.lock();
                match map.to_back(KeyRef::new(key)) {
                    Some(old) => _ = old.overwrite(key, value, expires_at, weighter, &mut replaced),
                    None => self.lru_insert(lru, &mut map, key, Entry::new(key, value, expires_at)),
                }
            }
        }
        Ok(())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        Ok(self.add_marked(key, value, ttl, &[])?.is_none())
    }

    /// One lookup: the live entry that keeps `add` from storing is looked at in place.
    #[inline]
    fn add_marked(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        marks: &[[u8; 8]],
    ) -> Result<Option<super::Marked>> {
        let taken = |old: &Entry| {
            if super::is_marked(old.value(), marks) {
                super::Marked::Value(old.shared_value())
            } else {
                super::Marked::Unmarked
            }
        };
        let new = Entry::new(key, value, deadline(ttl));
        let store = match &self.inner.store {
            Store::Clock(store) => store,
            Store::Lru(lru) => {
                let k = KeyRef::new(key);
                let mut map = lru.lock();
                match map.get_mut(k) {
                    Some(old) if old.live() => return Ok(Some(taken(old))),
                    Some(old) => {
                        *old = new;
                        map.to_back(k);
                    }
                    None => self.lru_insert(lru, &mut map, key, new),
                }
                return Ok(None);
            }
        };
        self.check_size(store, key, value)?;
        let h = self.hash(key);
        let mut shard = store.write(h);
        // A look at the entry is a read of it (it gets hotter), and an absent key is filled
        // through a placeholder, as quick_cache's `entry` did (which also leaves `set` the
        // one caller of the shard's `insert`, so that it stays inlined there).
        let added = match shard.get_mut_or_guard(&h) {
            Ok(Some(old)) if old.key() == key && old.live() => Some(taken(&old)),
            // Expired, or another key that shares the hash: replaced in place.
            Ok(Some(mut old)) => {
                *old = new;
                None
            }
            Ok(None) => Some(super::Marked::Unmarked),
            Err(vacant) => {
                vacant.insert_with_lifecycle(new, &mut None);
                None
            }
        };
        Ok(added)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let k = KeyRef::new(key);
        Ok(match &self.inner.store {
            Store::Clock(store) => {
                let h = self.hash(key);
                store
                    .write(h)
                    .remove_if(&h, |e| e.key() == key)
                    .is_some_and(|(_, e)| e.live())
            }
            Store::Lru(lru) => lru.lock().remove(k).is_some_and(|e| e.live()),
        })
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.peek(key, |_| ()).is_some())
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let expires_at = deadline(ttl);
        let k = KeyRef::new(key);
        let store = match &self.inner.store {
            Store::Clock(store) => store,
            Store::Lru(lru) => {
                let mut map = lru.lock();
                return Ok(match map.get_mut(k) {
                    Some(e) if e.live() => {
                        e.expires_at = expires_at;
                        true
                    }
                    Some(_) => {
                        map.remove(k);
                        false
                    }
                    None => false,
                });
            }
        };
        let touched = store.update(self.hash(key), key, |e| {
            e.expires_at = expires_at;
            (true, false)
        });
        Ok(touched.is_some())
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let k = KeyRef::new(key);
        let store = match &self.inner.store {
            Store::Clock(store) => store,
            Store::Lru(lru) => {
                let mut map = lru.lock();
                // A failed incr leaves the entry where it was in the use order.
                return match map.get_mut(k) {
                    Some(e) if e.live() => {
                        let n = apply_delta(e.value(), delta)?;
                        *e = e.with_value(itoa_buf(n).as_bytes_mut());
                        map.to_back(k);
                        Ok(n)
                    }
                    Some(_) => {
                        map.remove(k);
                        Err(not_found(key))
                    }
                    None => Err(not_found(key)),
                };
            }
        };
        let result = store.update(self.hash(key), key, |e| {
            let result = apply_delta(e.value(), delta);
            if let Ok(n) = result {
                let mut buf = itoa_buf(n);
                *e = e.with_value(buf.as_bytes_mut());
            }
            (result, false)
        });
        result.unwrap_or_else(|| Err(not_found(key)))
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        match &self.inner.store {
            Store::Clock(store) if prefix.is_empty() => store.clear(),
            Store::Clock(store) => store.retain(|e| !e.key().starts_with(prefix)),
            Store::Lru(lru) if prefix.is_empty() => lru.lock().clear(),
            Store::Lru(lru) => lru.lock().retain(|k, _| !k.0.starts_with(prefix)),
        }
        Ok(())
    }

    fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        let deadline = self.peek(key, |e| e.expires_at);
        Ok(match deadline {
            None => TimeToLive::Missing,
            Some(0) => TimeToLive::Forever,
            Some(at) => TimeToLive::until(
                Duration::from_nanos(at),
                Duration::from_nanos(clock::precise_now_ns()),
            ),
        })
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let new = Entry::new(key, value, deadline(ttl));
        let k = KeyRef::new(key);
        let store = match &self.inner.store {
            Store::Clock(store) => store,
            Store::Lru(lru) => {
                let mut map = lru.lock();
                return Ok(match map.get_mut(k) {
                    Some(old) if old.live() => {
                        *old = new;
                        map.to_back(k);
                        true
                    }
                    Some(_) => {
                        map.remove(k);
                        false
                    }
                    None => false,
                });
            }
        };
        self.check_size(store, key, value)?;
        let replaced = store.update(self.hash(key), key, |old| {
            *old = new;
            (true, false)
        });
        Ok(replaced.is_some())
    }

    /// The default store is read a shard at a time (`ClockScan`: one shard's matching live
    /// keys copied under one hold of its read lock, then handed out a page at a time). The
    /// exact LRU store, whose every read moves a key in its one ordered map, has no position
    /// a scan could resume from: its matching live keys (not their values) are collected in
    /// one pass under its one lock, as Django's `LocMemCache` sizes allow, then handed out a
    /// page at a time. Either way every key present for the whole scan is returned, once.
    fn scan_keys(self: Arc<Self>, pattern: &KeyPattern, count: usize) -> Result<Box<dyn KeyScan>> {
        let lru = match &self.inner.store {
            Store::Clock(_) => {
                let inner = Arc::clone(&self.inner);
                return Ok(Box::new(ClockScan::new(inner, pattern, count)));
            }
            Store::Lru(lru) => lru,
        };
        let keys = lru
            .lock()
            .values()
            .filter(|e| e.live() && pattern.matches(e.key()))
            .map(|e| e.key().to_vec())
            .collect();
        Ok(Box::new(CollectedKeys::new(keys, count)))
    }

    /// One step under the entry's lock (its shard's write lock, or the LRU map's lock).
    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        self.change_if_equals(key, expected, |_| None)
    }

    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        self.change_if_equals(key, expected, |e| {
            let remaining = (e.expires_at != 0).then(|| {
                Duration::from_nanos(e.expires_at.saturating_sub(clock::precise_now_ns()))
            });
            Some(super::extended_ttl(remaining, ttl, replace).map(|t| deadline(Some(t))))
        })
    }

    /// A look at the entry in place, as `has_key` does (no recency or frequency bump): only a
    /// marked value's bytes are handed out, sharing the entry's buffer.
    fn get_marked(&self, key: &[u8], marks: &[[u8; 8]]) -> Result<super::Marked> {
        let marked = self.peek(key, |e| {
            if super::is_marked(e.value(), marks) {
                super::Marked::Value(e.shared_value())
            } else {
                super::Marked::Unmarked
            }
        });
        Ok(marked.unwrap_or(super::Marked::Missing))
    }
}

impl MemoryBackend {
    /// Applies `change` to the live entry of `key` if its value is `expected`, under the
    /// entry's lock: `None` removes the entry, `Some(Some(deadline))` gives it a new
    /// deadline, `Some(None)` leaves it (and answers false).
    fn change_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        change: impl FnOnce(&Entry) -> Option<Option<u64>>,
    ) -> Result<bool> {
        let k = KeyRef::new(key);
        // (changed, remove): an expired entry is removed on the way.
        let apply = |e: &mut Entry| -> (bool, bool) {
            if e.key() != key {
                return (false, false);
            }
            if !e.live() || e.value() != expected {
                return (false, !e.live());
            }
            match change(e) {
                None => (true, true),
                Some(Some(expires_at)) => {
                    e.expires_at = expires_at;
                    (true, false)
                }
                Some(None) => (false, false),
            }
        };
        match &self.inner.store {
            Store::Clock(store) => {
                let h = self.hash(key);
                let mut shard = store.write(h);
                let Some(mut e) = shard.get_mut(&h) else {
                    return Ok(false);
                };
                let (changed, remove) = apply(&mut e);
                drop(e);
                if remove {
                    shard.remove(&h);
                }
                Ok(changed)
            }
            Store::Lru(lru) => {
                let mut map = lru.lock();
                let Some(e) = map.get_mut(k) else {
                    return Ok(false);
                };
                let (changed, remove) = apply(e);
                if remove {
                    map.remove(k);
                }
                Ok(changed)
            }
        }
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

mod scan;
use scan::ClockScan;

#[cfg(test)]
mod tests;
