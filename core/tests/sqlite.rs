//! The sqlite:// backend against real SQLite database files.
#![cfg(feature = "sqlite")]

mod sql_common;

use polycache::backend::sql::SqliteBackend;
use polycache::create_table;
use polycache::{Backend, Cache, ErrorKind, Expiry, Location, Options};
use polycache_testkit::TempDir;
use sql_common::*;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Raw(rusqlite::Connection);

impl Raw {
    fn open(path: &Path) -> Raw {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        Raw(conn)
    }
}

impl RawSql for Raw {
    fn exec(&mut self, sql: &str) {
        self.0.execute_batch(sql).unwrap();
    }
    fn scalar(&mut self, sql: &str) -> i64 {
        self.0.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn url(dir: &TempDir, file: &str, query: &str) -> String {
    format!("sqlite://{}/{file}?{query}", dir.path().display())
}

/// Runs the worker processes the multi-process tests start; a no-op otherwise.
#[test]
#[ignore = "a worker process of the multi-process tests, which start it themselves"]
fn worker() {
    assert!(worker_main(), "run only by the multi-process tests");
}

#[test]
fn each_in_memory_cache_is_its_own_database_shared_by_threads() {
    // Each :memory: cache is its own database.
    let a = Cache::open("sqlite://:memory:").unwrap();
    let b = Cache::open("sqlite://:memory:").unwrap();
    a.set("k", b"v", Expiry::Never).unwrap();
    assert!(b.get("k").unwrap().is_none());
    // One connection, shared safely by many threads.
    let a = Arc::new(a);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let a = a.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    a.set(&format!("t{t}-{i}"), b"x", Expiry::Never).unwrap();
                    assert!(a.get(&format!("t{t}-{i}")).unwrap().is_some());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn opening_and_reading_write_nothing_the_first_write_creates_the_database() {
    let dir = TempDir::new("sqlite-lazy");
    let path = dir.path().join("var/cache/site/cache.db");
    let cache = Cache::open(&format!("sqlite://{}?max_entries=10", path.display())).unwrap();
    assert!(!dir.path().join("var").exists());
    assert!(cache.get("k").unwrap().is_none());
    assert!(!cache.has_key("k").unwrap());
    assert!(!cache.delete("k").unwrap());
    assert!(!cache.touch("k", Expiry::Never).unwrap());
    assert!(cache
        .get_many(&["a", "b"], None)
        .unwrap()
        .iter()
        .all(Option::is_none));
    assert_eq!(cache.delete_many(&["a"], None).unwrap(), 0);
    assert_eq!(cache.incr("n", 1).unwrap_err().kind(), ErrorKind::NotFound);
    cache.clear().unwrap();
    assert!(
        !dir.path().join("var").exists(),
        "a read created the database"
    );
    // The first write creates the directories (0700, as file:// does), the file and table.
    cache.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    use std::os::unix::fs::PermissionsExt;
    for d in ["var", "var/cache", "var/cache/site"] {
        let mode = std::fs::metadata(dir.path().join(d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{d}");
    }
    // An existing database without the table: opening it does not add the table.
    let other = format!("sqlite://{}?table=later", path.display());
    let later = Cache::open(&other).unwrap();
    let mut raw = Raw::open(&path);
    let tables = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'later'";
    assert_eq!(raw.scalar(tables), 0);
    assert!(later.get("k").unwrap().is_none());
    assert_eq!(raw.scalar(tables), 0);
    later.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(raw.scalar(tables), 1);
    // A database whose directory cannot be created is refused at open, clearly.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Cache::open(&format!("sqlite://{}/sub/cache.db", file.display())).unwrap_err();
    assert!(err.is_configuration(), "{err}");
    assert!(err.to_string().contains("is not a directory"), "{err}");
}

#[test]
fn the_database_is_in_wal_mode_and_the_table_exists_after_the_first_write() {
    let dir = TempDir::new("sqlite-wal");
    let path = dir.path().join("wal.db");
    let cache = Cache::open(&format!("sqlite://{}", path.display())).unwrap();
    cache.set("warm", b"", Expiry::Never).unwrap();
    cache.delete("warm").unwrap();
    let mut raw = Raw::open(&path);
    let mode: String = raw
        .0
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(
        raw.scalar(
            "SELECT count(*) FROM sqlite_master WHERE name IN \
             ('polycache_cache', 'polycache_cache_key_hash')"
        ),
        2
    );
    cache.set("k", b"v", Expiry::Never).unwrap();
    // ":1:k" and "v".
    assert_eq!(raw.scalar("SELECT byte_size FROM polycache_cache"), 4 + 1);
}

#[test]
fn create_table_ahead_of_time() {
    let dir = TempDir::new("sqlite-create");
    let path = dir.path().join("deploy.db");
    let u = format!("sqlite://{}?table=deployed&max_entries=10", path.display());
    create_table(&u).unwrap();
    create_table(&u).unwrap(); // idempotent
    let mut raw = Raw::open(&path);
    assert_eq!(
        raw.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'deployed'"),
        1
    );
    let err = create_table(&format!("{u}&bogus=1")).unwrap_err();
    assert!(
        err.is_configuration() && err.to_string().contains("bogus"),
        "{err}"
    );
    let err = create_table("memory://").unwrap_err();
    assert!(err.is_configuration(), "{err}");
    // The backend's own method does the same.
    let loc = Location::parse(&format!("sqlite://{}?table=other", path.display())).unwrap();
    let backend = SqliteBackend::open(&loc, &mut Options::new(&loc)).unwrap();
    backend.create_table().unwrap();
    raw.exec("DROP TABLE other");
    backend.create_table().unwrap();
    assert_eq!(backend.entry_count().unwrap(), 0);
}

#[test]
fn hash_collisions_never_return_another_keys_value() {
    let dir = TempDir::new("sqlite-collide");
    let u = url(&dir, "c.db", "table=c");
    let mut raw = Raw::open(&dir.path().join("c.db"));
    collisions_and_sharing(&u, &mut raw, "c");
}

#[test]
fn corrupt_rows_read_as_misses_and_are_removed() {
    let dir = TempDir::new("sqlite-corrupt");
    let u = url(&dir, "bad.db", "table=t");
    let mut raw = Raw::open(&dir.path().join("bad.db"));
    corrupt_rows_read_as_misses(
        &u,
        &mut raw,
        "t",
        &[
            "UPDATE {table} SET byte_size = byte_size + 1 WHERE key_hash = {hash}",
            "UPDATE {table} SET value = substr(value, 1, 2) WHERE key_hash = {hash}",
            "UPDATE {table} SET value = 12345 WHERE key_hash = {hash}",
            "UPDATE {table} SET expires_at = 'soon' WHERE key_hash = {hash}",
            "UPDATE {table} SET byte_size = 'big' WHERE key_hash = {hash}",
        ],
    );
}

#[test]
fn size_bounds_hold_within_ten_percent() {
    let dir = TempDir::new("sqlite-bounds");
    let mut raw = Raw::open(&dir.path().join("b.db"));
    bounds_hold(
        &url(&dir, "b.db", "table=by_entries&max_entries=1000"),
        &url(&dir, "b.db", "table=by_bytes&max_bytes=1000000"),
        &mut raw,
        "by_entries",
        "by_bytes",
    );
}

#[test]
fn cull_frequency_culls_as_djangos_database_cache() {
    let dir = TempDir::new("sqlite-cull");
    let mut raw = Raw::open(&dir.path().join("c.db"));
    django_cull(
        &|table, query| url(&dir, "c.db", &format!("table={table}&{query}")),
        &mut raw,
    );
}

#[test]
fn expired_rows_are_purged_by_trimming() {
    let dir = TempDir::new("sqlite-purge");
    let loc = Location::parse(&url(&dir, "p.db", "")).unwrap();
    let backend = SqliteBackend::open(&loc, &mut Options::new(&loc)).unwrap();
    for i in 0..300 {
        backend
            .set(
                format!("old{i}").as_bytes(),
                b"x",
                Some(Duration::from_millis(50)),
            )
            .unwrap();
    }
    backend.set(b"keeper", b"x", None).unwrap();
    thread::sleep(Duration::from_millis(120));
    assert_eq!(backend.entry_count().unwrap(), 301);
    backend.trim().unwrap();
    assert_eq!(backend.entry_count().unwrap(), 1);
    assert!(backend.get(b"keeper").unwrap().is_some());
    assert_eq!(backend.evictions(), 0, "expiry is not eviction");
}

#[test]
fn four_processes_incr_one_key_to_exactly_4000() {
    let dir = TempDir::new("sqlite-incr");
    four_processes_incr(&url(&dir, "incr.db", ""));
}

#[test]
fn four_processes_never_read_a_torn_value() {
    let dir = TempDir::new("sqlite-torn");
    four_processes_never_see_torn_values(&url(&dir, "torn.db", ""));
}

#[test]
fn sigkill_during_sets_leaves_only_whole_values() {
    let dir = TempDir::new("sqlite-kill");
    sigkill_leaves_whole_values(&url(&dir, "kill.db", ""));
}

#[test]
fn a_lock_held_beyond_busy_timeout_is_a_timeout() {
    let dir = TempDir::new("sqlite-busy");
    let path = dir.path().join("busy.db");
    let cache = Cache::open(&format!(
        "sqlite://{}?busy_timeout=0.2&breaker_threshold=0",
        path.display()
    ))
    .unwrap();
    cache.set("k", b"before", Expiry::Never).unwrap();
    let raw = Raw::open(&path);
    raw.0.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let err = cache.set("k", b"during", Expiry::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("busy_timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    raw.0.execute_batch("COMMIT").unwrap();
    cache.set("k", b"after", Expiry::Never).unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"after"[..]));
    // Failing open, the same lock reads as a miss instead.
    let open = Cache::open(&format!(
        "sqlite://{}?busy_timeout=0.1&fail_open=true",
        path.display()
    ))
    .unwrap();
    raw.0.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(!open.set("k", b"x", Expiry::Never).unwrap());
    raw.0.execute_batch("COMMIT").unwrap();
}

#[test]
fn bad_urls_and_options_are_configuration_errors() {
    let dir = TempDir::new("sqlite-bad");
    let d = dir.path().display();
    for (u, needle) in [
        ("sqlite://relative.db".to_owned(), "absolute"),
        ("sqlite://".to_owned(), "absolute"),
        ("sqlite:///".to_owned(), "absolute"),
        (format!("sqlite://user:s3cret@/{d}/x.db"), "user"),
        (format!("sqlite://{d}/x.db?table=no;drop"), "table"),
        (format!("sqlite://{d}/x.db?table=1x"), "table"),
        (format!("sqlite://{d}/x.db?busy_timeout=-1"), "busy_timeout"),
        (
            format!("sqlite://{d}/x.db?busy_timeout=none"),
            "busy_timeout",
        ),
        (
            format!("sqlite://{d}/x.db?synchronous=sometimes"),
            "synchronous",
        ),
        (format!("sqlite://{d}/x.db?max_entries=0"), "max_entries"),
        (format!("sqlite://{d}/x.db?max_bytes=lots"), "max_bytes"),
        (format!("sqlite://{d}/x.db?pool_size=0"), "pool_size"),
        (format!("sqlite://{d}/x.db?unlogged=true"), "unlogged"),
        (format!("sqlite://{d}"), "cannot open"),
    ] {
        let err = Cache::open(&u).unwrap_err();
        assert!(err.is_configuration(), "{u}: {err:?}");
        assert!(err.to_string().contains(needle), "{u}: {err}");
        assert!(!err.to_string().contains("s3cret"), "{u}: {err}");
    }
    // Not a database: refused, and left as it was.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'j'; 4096]).unwrap();
    let err = Cache::open(&format!("sqlite://{}", junk.display())).unwrap_err();
    assert!(err.is_configuration(), "{err}");
    assert_eq!(std::fs::read(&junk).unwrap(), vec![b'j'; 4096]);
}

#[test]
fn options_are_accepted() {
    let dir = TempDir::new("sqlite-opts");
    for q in [
        "synchronous=full&busy_timeout=1.5&pool_size=2",
        "synchronous=OFF&max_entries=10&max_bytes=100000",
        "table=Custom_Table_1&timeout=none&key_prefix=p",
    ] {
        let c = Cache::open(&url(&dir, "o.db", q)).unwrap();
        c.set("k", b"v", Expiry::Never).unwrap();
        assert!(c.get("k").unwrap().is_some(), "{q}");
    }
}

/// The first write creates the table and its unique index in one transaction: a reader on
/// another thread that found the table between the two statements marked it ready, and the
/// next write's upsert failed ("ON CONFLICT clause does not match any PRIMARY KEY or UNIQUE
/// constraint"; found by the load test on a fresh database).
#[test]
fn readers_and_writers_racing_on_a_fresh_database_see_no_error() {
    let dir = TempDir::new("sqlite-race");
    for round in 0..150 {
        // The file exists in WAL mode already, without the table: what is raced here is the
        // table's creation. (Threads racing the very first switch of a new file to WAL can
        // wait out busy_timeout: a separate, known problem.)
        let file = dir.path().join(format!("race{round}.db"));
        let raw = rusqlite::Connection::open(&file).unwrap();
        let _: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        drop(raw);
        let cache = Arc::new(Cache::open(&url(&dir, &format!("race{round}.db"), "")).unwrap());
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let cache = Arc::clone(&cache);
                thread::spawn(move || {
                    for n in 0..30 {
                        let key = format!("k{i}-{n}");
                        if i % 2 == 0 {
                            cache.has_key(key.as_str()).unwrap();
                        } else {
                            cache.set(key.as_str(), b"v", Expiry::Default).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .unwrap_or_else(|_| panic!("round {round}: a call failed"));
        }
    }
}

/// Processes that open their first connections to brand-new database files at once (a
/// web server's worker processes, each with its own cache on one file): each switches the
/// file to WAL, and SQLite answers all but the one switching "database is locked" at once,
/// busy_timeout or not. The switch is retried until busy_timeout, so every call succeeds.
#[test]
fn processes_opening_a_new_database_at_once_all_succeed() {
    let dir = TempDir::new("sqlite-wal-race-processes");
    let workers = spawn_workers("race", &url(&dir, "race", ""), &vec!["200".to_owned(); 6]);
    join_workers(workers, Duration::from_secs(300));
}

/// Threads that all open their first connections to a brand-new database file at once (a
/// web server's threads, each with its own cache on one file, as Django's caches are): each
/// connection used to switch the file to WAL itself, and a connection that tried while
/// another one switched failed with "database is locked". Every call must succeed, however
/// the threads interleave.
#[test]
fn threads_opening_a_new_database_at_once_all_succeed() {
    const THREADS: usize = 16;
    let dir = TempDir::new("sqlite-wal-race");
    for round in 0..120 {
        let url = url(&dir, &format!("race{round}.db"), "");
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (url, start) = (url.clone(), Arc::clone(&start));
                thread::spawn(move || {
                    let cache = Cache::open(&url)?;
                    start.wait();
                    let key = format!("k{t}");
                    cache.set(&key, b"v", Expiry::Never)?;
                    cache.get(&key)
                })
            })
            .collect();
        for (t, w) in workers.into_iter().enumerate() {
            let got = w.join().unwrap();
            assert_eq!(
                got.unwrap_or_else(|e| panic!("round {round}, thread {t}: {e}"))
                    .as_deref(),
                Some(&b"v"[..])
            );
        }
    }
}
