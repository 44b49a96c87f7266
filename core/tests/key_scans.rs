//! Key scans under load: a 10,000-key scan while other threads write, on every backend that
//! can list its keys. Each key present for the whole scan is returned exactly once (Redis:
//! at least once, since `SCAN` may return a key twice while its table is rehashed, as the
//! Redis documentation says). The same scan is also awaited (`iter_keys_async`), and the
//! awaited scans of the native backends are shown to stay off polycache's blocking pool.
// Built with fewer backends (`make test` runs a memory://-only build), the helpers of the
// left-out backends' tests lie idle.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "memcached",
        feature = "file",
        feature = "sqlite",
        feature = "postgres"
    )),
    allow(unused)
)]

use polycache::{Cache, Expiry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const KEYS: usize = 10_000;
/// Names each writer of [`scan_under_writers_read`] reuses for the keys it adds and removes.
const CHURN: u64 = 64;

/// How a test reads a scan: through `iter_keys`, or `iter_keys_async` awaited on a
/// current-thread runtime.
#[derive(Clone, Copy)]
enum Read {
    Sync,
    Awaited,
}

impl Read {
    /// How many times each key of `cache` that matches `*` was returned, `itersize` a page.
    fn count(self, cache: &Cache, itersize: usize) -> HashMap<String, usize> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        match self {
            Read::Sync => {
                for key in cache.iter_keys("*", None, itersize).unwrap() {
                    *seen.entry(key.unwrap()).or_default() += 1;
                }
            }
            Read::Awaited => current_thread().block_on(async {
                let mut scan = cache.iter_keys_async("*", None, itersize).await.unwrap();
                while let Some(page) = scan.next_page().await.unwrap() {
                    for key in page {
                        *seen.entry(key).or_default() += 1;
                    }
                }
            }),
        }
        seen
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Held by every test that awaits a scan, so that [`polycache::runtime::blocking_calls`]
/// counts one test's calls only.
static POOL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pool() -> std::sync::MutexGuard<'static, ()> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scan_under_writers(cache: Cache, exactly_once: bool) {
    scan_under_writers_read(cache, exactly_once, Read::Sync);
}

fn scan_under_writers_read(cache: Cache, exactly_once: bool, read: Read) {
    let _pool = matches!(read, Read::Awaited).then(pool);
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
                    // Keys that match the pattern come and go; kept keys are overwritten.
                    // The churning keys are CHURN names reused in turn, not new ones: in
                    // memory://, whose index is a 32-bit hash, a write of a key that shares
                    // a kept key's index replaces it (docs/backends/memory.md), and each new
                    // name is one more chance of that (10,000 kept keys against a hundred
                    // thousand new names made about one run in twenty miss a kept key).
                    cache
                        .set(
                            format!("churn:{w}:{}", j % CHURN).as_str(),
                            b"c",
                            Expiry::Never,
                        )
                        .unwrap();
                    if j >= 20 {
                        cache
                            .delete(format!("churn:{w}:{}", (j - 20) % CHURN).as_str())
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
    let seen = read.count(&cache, 100);
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
    on_disk_read(url, Read::Sync);
}

#[cfg(any(feature = "file", feature = "sqlite"))]
fn on_disk_read(url: impl Fn(&std::path::Path) -> String, read: Read) {
    let dir = polycache_testkit::TempDir::new("key-scans");
    scan_under_writers_read(prefixed(&url(dir.path())), true, read);
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

/// The scan of every scheme awaited while writers run, with the same promise as the
/// synchronous scan.
fn awaited_under_writers(url: &str, exactly_once: bool) {
    scan_under_writers_read(prefixed(url), exactly_once, Read::Awaited);
}

#[cfg(feature = "memory")]
#[test]
fn memory_awaited() {
    awaited_under_writers("memory://?max_entries=1000000", true);
}

#[cfg(feature = "memory")]
#[test]
fn memory_lru_awaited() {
    awaited_under_writers("memory://?eviction=lru&max_entries=1000000", true);
}

#[cfg(feature = "file")]
#[test]
fn file_awaited() {
    on_disk_read(
        |dir| format!("file://{}/c?max_entries=1000000", dir.display()),
        Read::Awaited,
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_awaited() {
    on_disk_read(
        |dir| format!("sqlite://{}/c.db?max_entries=1000000", dir.display()),
        Read::Awaited,
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_awaited() {
    let pg = polycache_testkit::PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    awaited_under_writers(&format!("{}?max_entries=1000000", pg.url()), true);
}

#[cfg(feature = "redis")]
#[test]
fn redis_awaited() {
    let server = polycache_testkit::RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    awaited_under_writers(&server.url(), false);
}

/// Stores `{name}:0` … `{name}:{n - 1}` in `cache`; returns their names.
fn fill(cache: &Cache, name: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{name}:{i}")).collect();
    let items: Vec<(&str, &[u8])> = names.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    assert!(cache
        .set_many(&items, Expiry::Never, None)
        .unwrap()
        .is_empty());
    names
}

/// Writes 300 keys, then awaits `keys`, a paged scan (7 a page) and `delete_pattern` on a
/// current-thread runtime; returns how many calls polycache's blocking pool ran meanwhile.
fn pool_calls_of_awaited_scans(cache: &Cache) -> u64 {
    let names = fill(cache, "user", 300);
    let before = polycache::runtime::blocking_calls();
    current_thread().block_on(async {
        let mut found = cache.keys_async("user:*", None).await.unwrap();
        found.sort();
        let mut expected = names.clone();
        expected.sort();
        assert_eq!(found, expected);
        let mut scan = cache.iter_keys_async("user:1*", None, 7).await.unwrap();
        let mut paged = std::collections::HashSet::new();
        while let Some(page) = scan.next_page().await.unwrap() {
            paged.extend(page);
        }
        assert_eq!(paged.len(), 111, "user:1, user:10..19, user:100..199");
        let removed = cache.delete_pattern_async("user:*", None, 50).await;
        assert_eq!(removed.unwrap(), 300);
        assert!(cache.keys_async("*", None).await.unwrap().is_empty());
    });
    polycache::runtime::blocking_calls() - before
}

/// The URLs of the stores with an async side of their own (`memory://` in place, Redis —
/// with a Cluster when `cluster` —, PostgreSQL), each with the server it needs.
#[cfg_attr(not(feature = "redis"), allow(unused_variables))]
// Each push depends on a feature: with one backend alone the vector has one push.
#[allow(clippy::vec_init_then_push)]
fn native_stores(cluster: bool) -> Vec<(String, Box<dyn std::any::Any>)> {
    let mut native: Vec<(String, Box<dyn std::any::Any>)> = Vec::new();
    #[cfg(feature = "memory")]
    native.push(("memory://".into(), Box::new(())));
    #[cfg(feature = "redis")]
    {
        let redis = polycache_testkit::RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        native.push((redis.url(), Box::new(redis)));
        if cluster {
            let nodes = polycache_testkit::RedisCluster::start().unwrap_or_else(|e| panic!("{e}"));
            native.push((nodes.url(), Box::new(nodes)));
        }
    }
    #[cfg(feature = "postgres")]
    {
        let pg = polycache_testkit::PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
        native.push((pg.url(), Box::new(pg)));
    }
    native
}

/// Native backends scan on their own async I/O (Redis' multiplexed connection, Cluster
/// included; tokio-postgres) or in place (`memory://`): no call reaches the blocking pool.
/// `file://`, which has no async I/O, shows that the count sees the pool when it is used.
#[test]
fn awaited_scans_of_native_backends_stay_off_the_blocking_pool() {
    let _pool = pool();
    for (url, _server) in &native_stores(true) {
        let calls = pool_calls_of_awaited_scans(&prefixed(url));
        assert_eq!(calls, 0, "{url}: {calls} calls on the blocking pool");
    }
    #[cfg(feature = "file")]
    {
        let dir = polycache_testkit::TempDir::new("key-scans");
        let cache = prefixed(&format!("file://{}/c", dir.path().display()));
        assert!(
            pool_calls_of_awaited_scans(&cache) > 0,
            "file:// pages run on the pool"
        );
    }
}

/// `memory://` reads its store a shard at a time: a scan of 10,000 keys whose store is
/// emptied after its first page returns only the rest of the one shard it had copied (the
/// store has at least four shards), where a scan that copied every key before its first
/// page would still return all 10,000.
#[cfg(feature = "memory")]
#[test]
fn a_memory_scan_reads_the_store_shard_by_shard() {
    let _pool = pool();
    let cache = prefixed("memory://?max_entries=1000000");
    fill(&cache, "k", KEYS);
    let mut scan = cache.iter_keys("k:*", None, 10).unwrap();
    let first = scan.next_page().unwrap().expect("a first page");
    assert_eq!(first.len(), 10);
    cache.clear().unwrap();
    let mut seen = first.len();
    while let Some(page) = scan.next_page().unwrap() {
        seen += page.len();
    }
    assert!(
        seen < KEYS / 2,
        "the scan returned {seen} keys, most of them removed before it copied their shard"
    );

    // Awaited, the same: its pages are produced in place, from the live store.
    fill(&cache, "k", KEYS);
    let before = polycache::runtime::blocking_calls();
    current_thread().block_on(async {
        let mut scan = cache.iter_keys_async("k:*", None, 10).await.unwrap();
        let first = scan.next_page().await.unwrap().expect("a first page");
        assert_eq!(first.len(), 10);
        cache.clear_async().await.unwrap();
        let mut seen = first.len();
        while let Some(page) = scan.next_page().await.unwrap() {
            seen += page.len();
        }
        assert!(seen < KEYS / 2, "awaited: {seen} keys");
    });
    assert_eq!(polycache::runtime::blocking_calls(), before);
}

/// One scan read by turns on the calling thread (`next_page_blocking`, what a binding's
/// synchronous iteration does) and awaited: every key comes out exactly once (Redis: the
/// cursor is the server's, whichever connection sends it).
#[test]
fn a_scan_read_by_turns_blocking_and_awaited() {
    let _pool = pool();
    let mut urls = native_stores(false);
    #[cfg(feature = "file")]
    let dir = polycache_testkit::TempDir::new("key-scans");
    #[cfg(feature = "file")]
    urls.push((format!("file://{}/c", dir.path().display()), Box::new(())));
    for (url, _server) in &urls {
        let cache = prefixed(url);
        let names = fill(&cache, "turn", 500);
        let mut seen: HashMap<String, usize> = HashMap::new();
        let rt = current_thread();
        let mut scan = rt
            .block_on(cache.iter_keys_async("turn:*", None, 20))
            .unwrap();
        for turn in 0.. {
            let page = if turn % 2 == 0 {
                scan.next_page_blocking()
            } else {
                rt.block_on(scan.next_page())
            };
            let Some(page) = page.unwrap() else { break };
            for key in page {
                *seen.entry(key).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), names.len(), "{url}");
        assert!(seen.values().all(|n| *n == 1), "{url}: a key came twice");
        assert_eq!(cache.delete_pattern("turn:*", None, 100).unwrap(), 500);
    }
}
