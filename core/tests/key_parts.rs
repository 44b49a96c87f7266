//! How a `Cache` hands a read's key to its backend: as its parts (`Backend::get_parts`,
//! `Backend::get_parts_with`), which a tiered cache passes on to its L1 unjoined and joins
//! for L2 only, and which the trait's defaults join for a backend that reads full keys.
//! (The stores are `MemoryBackend`s, so this file needs the `memory` feature.)
#![cfg(feature = "memory")]

use polycache::backend::memory::{MemoryBackend, MemoryOptions};
use polycache::backend::KeyParts;
use polycache::{Backend, Cache, Expiry, Result, TieredBackend, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `memory://` store that notes how each read gave it the key: as its parts
/// (`get_parts`, `get_parts_with`: `head|name`) or joined (`get`, `get_with`).
struct Recorder {
    store: MemoryBackend,
    reads: Mutex<Vec<String>>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            store: MemoryBackend::new(&MemoryOptions::default()).unwrap(),
            reads: Mutex::new(Vec::new()),
        })
    }
    fn note(&self, how: &str, key: &[u8]) {
        let key = String::from_utf8_lossy(key);
        self.reads.lock().unwrap().push(format!("{how} {key}"));
    }
    fn note_parts(&self, how: &str, key: &KeyParts<'_>) {
        let (head, name) = (key.head(), key.name());
        self.note(how, &[head, b"|", name].concat());
    }
    /// The reads noted since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

impl Backend for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn is_local(&self) -> bool {
        true
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.note("joined", key);
        self.store.get(key)
    }
    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        self.note("joined-lent", key);
        self.store.get_with(key, visit)
    }
    fn get_parts(&self, key: &KeyParts<'_>) -> Result<Option<Value>> {
        self.note_parts("parts", key);
        self.store.get_parts(key)
    }
    fn get_parts_with(&self, key: &KeyParts<'_>, visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        self.note_parts("parts-lent", key);
        self.store.get_parts_with(key, visit)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.store.set(key, value, ttl)
    }
    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.store.add(key, value, ttl)
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.store.delete(key)
    }
    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.store.touch(key, ttl)
    }
    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.store.incr(key, delta)
    }
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.store.clear(prefix)
    }
}

#[test]
fn a_cache_reads_its_backend_by_the_keys_parts_and_a_tiered_one_joins_them_for_l2_only() {
    let (l1, l2) = (Recorder::new(), Recorder::new());
    let tiered = TieredBackend::new(l1.clone(), l2.clone(), None, None).unwrap();
    let cache = Cache::with_backend(Arc::new(tiered))
        .key_prefix("app")
        .build()
        .unwrap();
    cache.set("k", b"v", Expiry::Default).unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        cache.get_with("k", |v| v.to_vec()).unwrap(),
        Some(b"v".to_vec())
    );
    // L1 holds the key: it gets the parts, unjoined, and L2 is not read.
    assert_eq!(l1.take(), ["parts app:1:|k", "parts-lent app:1:|k"]);
    assert_eq!(l2.take(), Vec::<String>::new());

    // Gone from L1 only: L2 answers, given the joined key, and L1 holds it again.
    l1.store.delete(b"app:1:k").unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    l1.store.delete(b"app:1:k").unwrap();
    assert_eq!(
        cache.get_with("k", |v| v.to_vec()).unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(l2.take(), ["joined app:1:k", "joined app:1:k"]);
    assert_eq!(l1.take(), ["parts app:1:|k", "parts-lent app:1:|k"]);
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(l2.take(), Vec::<String>::new());

    // A backend that reads only joined keys (the trait's defaults) gets them joined.
    let plain = Recorder::new();
    let direct = Arc::new(JoinedOnly(plain.clone()));
    let cache = Cache::with_backend(direct)
        .key_prefix("app")
        .build()
        .unwrap();
    cache.set("k", b"v", Expiry::Default).unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(cache.get_with("k", |v| v.len()).unwrap(), Some(1));
    assert_eq!(plain.take(), ["joined app:1:k", "joined app:1:k"]);
}

/// A [`Recorder`] read through the trait's default `get_parts` and `get_parts_with`.
struct JoinedOnly(Arc<Recorder>);

impl Backend for JoinedOnly {
    fn name(&self) -> &'static str {
        "joined-only"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.0.get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.0.set(key, value, ttl)
    }
    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.0.add(key, value, ttl)
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.0.delete(key)
    }
    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.0.touch(key, ttl)
    }
    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.0.incr(key, delta)
    }
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.0.clear(prefix)
    }
}
