//! Key scans under load: a 10,000-key scan while other threads write, on every backend that
//! can list its keys. Each key present for the whole scan is returned exactly once (Redis:
//! at least once, since `SCAN` may return a key twice while its table is rehashed, as the
//! Redis documentation says).

use polycache::{Cache, Expiry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const KEYS: usize = 10_000;

fn scan_under_writers(cache: Cache, exactly_once: bool) {
    let names: Vec<String> = (0..KEYS).map(|i| format!("stay:{i}")).collect();
    for chunk in names.chunks(1000) {
        let items: Vec<(&str, &[u8])> = chunk.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        assert!(cache
            .set_many(&items, Expiry::Never, None)
            .unwrap()
            .is_empty());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (cache, stop, writes) = (cache.clone(), stop.clone(), writes.clone());
            thread::spawn(move || {
                let mut j: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    // New keys that match the pattern come and go; kept keys are overwritten.
                    cache
                        .set(format!("churn:{w}:{j}").as_str(), b"c", Expiry::Never)
                        .unwrap();
                    if j >= 20 {
                        cache
                            .delete(format!("churn:{w}:{}", j - 20).as_str())
                            .unwrap();
                    }
                    let kept = format!("stay:{}", (j * 7919 + w) % KEYS as u64);
                    cache
                        .set(kept.as_str(), b"overwritten", Expiry::Never)
                        .unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                    j += 1;
                }
            })
        })
        .collect();
    // The writers are running before the scan starts.
    while writes.load(Ordering::Relaxed) < 50 {
        thread::yield_now();
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for key in cache.iter_keys("*", None, 100).unwrap() {
        *seen.entry(key.unwrap()).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    for name in &names {
        let n = seen.get(name).copied().unwrap_or(0);
        if exactly_once {
            assert_eq!(n, 1, "{name} was returned {n} times");
        } else {
            assert!(n >= 1, "{name} was missed");
        }
    }
    assert!(seen
        .keys()
        .all(|k| k.starts_with("stay:") || k.starts_with("churn:")));
    assert!(cache.delete_pattern("*", None, 500).unwrap() >= KEYS);
    assert_eq!(cache.keys("stay:*", None).unwrap(), Vec::<String>::new());
}

fn prefixed(url: &str) -> Cache {
    Cache::builder(url).key_prefix("load[*]").build().unwrap()
}

#[cfg(feature = "memory")]
#[test]
fn memory() {
    scan_under_writers(prefixed("memory://?max_entries=1000000"), true);
}

#[cfg(feature = "memory")]
#[test]
fn memory_lru() {
    scan_under_writers(prefixed("memory://?eviction=lru&max_entries=1000000"), true);
}

/// A store in a temporary directory: `url` makes its URL from the directory.
#[cfg(any(feature = "file", feature = "sqlite"))]
fn on_disk(url: impl Fn(&std::path::Path) -> String) {
    let dir = polycache_testkit::TempDir::new("key-scans");
    scan_under_writers(prefixed(&url(dir.path())), true);
}

#[cfg(feature = "file")]
#[test]
fn file() {
    on_disk(|dir| format!("file://{}/c?max_entries=1000000", dir.display()));
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite() {
    on_disk(|dir| format!("sqlite://{}/c.db?max_entries=1000000", dir.display()));
}

#[cfg(feature = "postgres")]
#[test]
fn postgres() {
    let pg = polycache_testkit::PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}?max_entries=1000000", pg.url());
    scan_under_writers(prefixed(&url), true);
}

#[cfg(feature = "redis")]
#[test]
fn redis() {
    let server = polycache_testkit::RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    scan_under_writers(prefixed(&server.url()), false);
}

/// A store of your own that does not implement `scan_keys`.
struct NoListing;

impl polycache::Backend for NoListing {
    fn name(&self) -> &'static str {
        "no-listing"
    }
    fn get(&self, _: &[u8]) -> polycache::Result<Option<polycache::Value>> {
        Ok(None)
    }
    fn set(&self, _: &[u8], _: &[u8], _: Option<std::time::Duration>) -> polycache::Result<()> {
        Ok(())
    }
    fn add(&self, _: &[u8], _: &[u8], _: Option<std::time::Duration>) -> polycache::Result<bool> {
        Ok(true)
    }
    fn delete(&self, _: &[u8]) -> polycache::Result<bool> {
        Ok(false)
    }
    fn touch(&self, _: &[u8], _: Option<std::time::Duration>) -> polycache::Result<bool> {
        Ok(false)
    }
    fn incr(&self, key: &[u8], _: i64) -> polycache::Result<i64> {
        Err(polycache::backend::not_found(key))
    }
    fn clear(&self, _: &[u8]) -> polycache::Result<()> {
        Ok(())
    }
}

#[test]
fn a_custom_backend_refuses_by_default_and_says_why() {
    let cache = Cache::with_backend(Arc::new(NoListing)).build().unwrap();
    for err in [
        cache.keys("*", None).unwrap_err(),
        cache.delete_pattern("*", None, 10).unwrap_err(),
    ] {
        assert_eq!(err.kind(), polycache::ErrorKind::Unsupported);
        assert!(
            err.to_string()
                .contains("no-listing backend cannot list its keys"),
            "{err}"
        );
    }
}

#[cfg(feature = "memory")]
#[test]
fn bad_patterns_and_itersizes_are_clear_errors() {
    let cache = prefixed("memory://");
    let long = "k".repeat(polycache::MAX_KEY_LEN + 1);
    assert_eq!(
        cache.keys(&long, None).unwrap_err().kind(),
        polycache::ErrorKind::InvalidKey
    );
    for n in [0, polycache::MAX_ITERSIZE + 1] {
        let err = cache.iter_keys("*", None, n).err().unwrap();
        assert!(err.to_string().contains("itersize"), "{err}");
    }
    // Unclosed classes and trailing escapes are patterns like any other, never a panic.
    for odd in ["[", "[^", "\\", "a[b-", "[]", "**?*"] {
        cache.keys(odd, None).unwrap();
    }
}
