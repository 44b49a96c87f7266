//! Load: mixed operations from 8 threads on every backend, with invariants checked at the
//! end — no lost `incr`, no wrong value, no error, bounded memory on `memory://`, size
//! bounds held on `file://` and SQL.
//!
//! The short form (`make test`) runs 20,000 operations per backend; `POLYCACHE_LOAD_OPS`
//! sets another total (`make load` runs 1,000,000 per backend). Each backend prints one
//! `LOAD-ROW` line with its throughput.
#![cfg(all(
    feature = "memory",
    feature = "redis",
    feature = "memcached",
    feature = "postgres",
    feature = "sqlite",
    feature = "file"
))]

mod load_common;

use load_common::{read_counter, run_with_counter, seed_counter, Until, KEYS};
use polycache::Cache;
use polycache_testkit::TempDir;
use polycache_testkit::{MemcachedServer, PostgresServer, RedisServer};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const THREADS: usize = 8;

/// One backend at a time: they share two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Operations per backend: `POLYCACHE_LOAD_OPS`, 20,000 by default.
fn total_ops() -> u64 {
    std::env::var("POLYCACHE_LOAD_OPS")
        .ok()
        .map(|v| v.parse().expect("POLYCACHE_LOAD_OPS is a number"))
        .unwrap_or(20_000)
}

/// Runs the load on `url` and checks the invariants every backend keeps.
///
/// The counter lives in a second cache on `counter_url` when given: a bounded cache may
/// rightly evict it (SQL trims the oldest rows first, and the counter is the oldest).
fn load(backend: &str, url: &str, counter_url: Option<&str>) -> Cache {
    let open = |url: &str| Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"));
    let cache = open(url);
    cache.clear().unwrap();
    let counter = counter_url.map(open);
    let counter = counter.as_ref().unwrap_or(&cache);
    seed_counter(counter);
    let per_thread = total_ops().div_ceil(THREADS as u64);
    let started = Instant::now();
    let tally = run_with_counter(&cache, counter, THREADS, Until::Ops(per_thread));
    let took = started.elapsed();
    let counter = read_counter(counter, Duration::ZERO);
    println!(
        "LOAD-ROW | {backend} | {} | {THREADS} | {:.1} s | {:.0} ops/s | {} ms ({}) |",
        tally.ops,
        took.as_secs_f64(),
        tally.ops as f64 / took.as_secs_f64(),
        tally.worst.as_millis(),
        tally.worst_op,
    );
    assert_eq!(tally.ops, per_thread * THREADS as u64);
    assert_eq!(
        tally.error_count(),
        0,
        "{backend}: errors {:?}: {:?}",
        tally.errors,
        tally.error_examples
    );
    assert_eq!(
        tally.wrong, 0,
        "{backend}: wrong values {:?}",
        tally.wrong_examples
    );
    assert_eq!(
        counter,
        Some(tally.incr_acked as i64),
        "{backend}: the counter lost increments"
    );
    cache
}

#[test]
fn memory_load_keeps_memory_bounded() {
    let _serial = serial();
    // A bound far below what the load would store unbounded: many more keys than fit.
    let url = "memory://load?max_bytes=262144";
    let rss_before = rss_bytes();
    let cache = load("memory", url, Some("memory://load-counter"));
    // The load's keyspace holds ~0.5 MiB of values; the bound keeps at most 256 KiB.
    let stored: usize = (0..KEYS)
        .filter_map(|k| cache.get(format!("load:{k}").as_str()).unwrap())
        .map(|v| v.len())
        .sum();
    assert!(
        stored <= 262_144 + 64 * 1024,
        "memory:// holds {stored} bytes of values over its 256 KiB bound"
    );
    // RSS may grow by allocator slack and thread stacks, not by what was stored: a
    // generous 64 MiB catches a leak of the 1,000,000-operation run (~1 GiB of values).
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        let growth = after.saturating_sub(before);
        assert!(
            growth < 64 << 20,
            "RSS grew by {} MiB during the memory:// load",
            growth >> 20
        );
    }
}

/// The resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[test]
fn redis_load() {
    let _serial = serial();
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    load("redis", &server.url(), None);
}

#[test]
fn memcached_load() {
    let _serial = serial();
    let server = MemcachedServer::start().unwrap_or_else(|e| panic!("{e}"));
    load("memcached", &server.url(), None);
}

#[test]
fn postgres_load_holds_its_bound() {
    let _serial = serial();
    let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}?max_entries=200", server.url());
    let counter = format!("{}?table=load_counter", server.url());
    let cache = load("postgres", &url, Some(&counter));
    let mut client = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port()
        ),
        postgres::NoTls,
    )
    .unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM polycache_cache", &[])
        .unwrap()
        .get(0);
    assert_bound("postgres", rows as u64, 200);
    drop(cache);
}

#[test]
fn sqlite_load_holds_its_bound() {
    let _serial = serial();
    let dir = TempDir::new("sqlite");
    let db = dir.path().join("cache.db");
    let cache = load(
        "sqlite",
        &format!("sqlite://{}?max_entries=200", db.display()),
        Some(&format!("sqlite://{}?table=load_counter", db.display())),
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM polycache_cache", [], |r| r.get(0))
        .unwrap();
    assert_bound("sqlite", rows as u64, 200);
    drop(cache);
}

#[test]
fn file_load_holds_its_bound() {
    let _serial = serial();
    let dir = TempDir::new("file");
    let root = dir.path().join("cache");
    let cache = load(
        "file",
        &format!("file://{}?max_bytes=262144", root.display()),
        Some(&format!("file://{}", dir.path().join("counter").display())),
    );
    let on_disk = dir_bytes(&root);
    // `max_bytes` bounds the live entries (headers, keys, values). On top of them the disk
    // holds what docs/backends/file.md (*Disk usage*) allows: the index slots, and up to
    // 64 KiB or half the records of dead space in each of the 16 pack files between rebuilds.
    const PACKS: u64 = 16;
    let allowed = 262_144 + 262_144 / 2 + PACKS * 64 * 1024 + 64 * 1024;
    assert!(
        on_disk <= allowed,
        "file:// uses {on_disk} bytes on disk with a 256 KiB bound (at most {allowed} allowed)"
    );
    drop(cache);
}

/// The SQL backends trim in the background of writes, within a documented slack.
fn assert_bound(backend: &str, rows: u64, max: u64) {
    assert!(
        rows <= max + max / 2,
        "{backend}: {rows} rows after the load, bound {max} (+50% slack)"
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}
