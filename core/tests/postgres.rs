//! The postgres:// backend against private PostgreSQL servers the tests start themselves.
#![cfg(feature = "postgres")]

mod sql_common;

use polycache::backend::sql::PostgresBackend;
use polycache::create_table;
use polycache::{Backend, Cache, ErrorKind, Expiry, Location, Options};
use polycache_testkit::{free_loopback_port, PostgresServer};
use sql_common::*;
use std::thread;
use std::time::{Duration, Instant};

fn server() -> PostgresServer {
    PostgresServer::start().unwrap_or_else(|e| panic!("{e}"))
}

struct Raw(postgres::Client);

impl Raw {
    fn connect(pg: &PostgresServer) -> Raw {
        let params = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port()
        );
        Raw(postgres::Client::connect(&params, postgres::NoTls).unwrap())
    }
}

impl RawSql for Raw {
    fn exec(&mut self, sql: &str) {
        self.0.batch_execute(sql).unwrap();
    }
    fn scalar(&mut self, sql: &str) -> i64 {
        self.0.query_one(sql, &[]).unwrap().get(0)
    }
}

/// Runs the worker processes the multi-process tests start; a no-op otherwise.
#[test]
#[ignore = "a worker process of the multi-process tests, which start it themselves"]
fn worker() {
    assert!(worker_main(), "run only by the multi-process tests");
}

#[test]
fn unlogged_tables_and_hash_collisions() {
    let pg = server();
    let mut raw = Raw::connect(&pg);
    let unlogged = Cache::open(&format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?table=ops_unlogged&unlogged=true",
        pg.port()
    ))
    .unwrap();
    unlogged.set("n", b"41", Expiry::Never).unwrap();
    assert_eq!(unlogged.incr("n", 1).unwrap(), 42);
    assert_eq!(
        raw.scalar(
            "SELECT count(*) FROM pg_class WHERE relname = 'ops_unlogged' AND relpersistence = 'u'"
        ),
        1
    );
    collisions_and_sharing(&format!("{}?table=c", pg.url()), &mut raw, "c");
}

#[test]
fn corrupt_rows_read_as_misses_and_expired_rows_are_purged() {
    let pg = server();
    let mut raw = Raw::connect(&pg);
    corrupt_rows_read_as_misses(
        &format!("{}?table=t", pg.url()),
        &mut raw,
        "t",
        &[
            "UPDATE {table} SET byte_size = byte_size + 1 WHERE key_hash = {hash}",
            "UPDATE {table} SET value = substring(value FROM 1 FOR 2) WHERE key_hash = {hash}",
            "ALTER TABLE {table} ALTER COLUMN value DROP NOT NULL; \
             UPDATE {table} SET value = NULL WHERE key_hash = {hash}",
        ],
    );

    let loc = Location::parse(&format!("{}?table=purge", pg.url())).unwrap();
    let backend = PostgresBackend::open(&loc, &mut Options::new(&loc)).unwrap();
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
}

#[test]
fn size_bounds_hold_within_ten_percent() {
    let pg = server();
    let mut raw = Raw::connect(&pg);
    bounds_hold(
        &format!("{}?table=by_entries&max_entries=1000", pg.url()),
        &format!(
            "{}?table=by_bytes&max_bytes=1000000&unlogged=true",
            pg.url()
        ),
        &mut raw,
        "by_entries",
        "by_bytes",
    );
}

#[test]
fn cull_frequency_culls_as_djangos_database_cache() {
    let pg = server();
    let mut raw = Raw::connect(&pg);
    django_cull(
        &|table, query| format!("{}?table={table}&{query}", pg.url()),
        &mut raw,
    );
}

/// Django's cull skips rows another session holds instead of waiting for them: the culling
/// writer holds the entry counter, and waiting for a row whose holder then needs the
/// counter would deadlock (or, as here, wait until statement_timeout).
#[test]
fn culling_skips_rows_other_sessions_hold() {
    let pg = server();
    let c = Cache::open(&format!(
        "{}?table=skip&max_entries=10&cull_frequency=2&statement_timeout=5",
        pg.url()
    ))
    .unwrap();
    for i in 0..10 {
        c.set(&format!("k{i}"), b"v", Expiry::Never).unwrap();
    }
    let mut holder = Raw::connect(&pg);
    holder.exec("BEGIN; SELECT 1 FROM skip WHERE id = (SELECT min(id) FROM skip) FOR UPDATE");
    // The table is full: this set culls half of it, the oldest rows but the held one.
    c.set("new", b"v", Expiry::Never).unwrap();
    assert!(c.has_key("k0").unwrap(), "the held (oldest) row was culled");
    assert!(c.has_key("new").unwrap());
    holder.exec("ROLLBACK");
    let mut raw = Raw::connect(&pg);
    assert_eq!(raw.scalar("SELECT count(*) FROM skip"), 6);
    let kept = (0..10)
        .filter(|i| c.has_key(&format!("k{i}")).unwrap())
        .count();
    assert_eq!(kept, 5, "k0 and the four newest stay");
}

#[test]
fn the_table_is_created_on_first_use_or_ahead_of_time() {
    let pg = server();
    let mut raw = Raw::connect(&pg);
    let persistence = |raw: &mut Raw, schema: &str, table: &str| -> String {
        let row = raw
            .0
            .query_one(
                "SELECT c.relpersistence::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &table],
            )
            .unwrap();
        row.get(0)
    };

    // First use.
    let c = Cache::open(&format!("{}?table=lazy", pg.url())).unwrap();
    c.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(persistence(&mut raw, "public", "lazy"), "p");
    // Dropped behind its back: created again, and the call still succeeds.
    raw.exec("DROP TABLE lazy");
    c.set("k", b"again", Expiry::Never).unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"again"[..]));

    // Ahead of time, in a schema, unlogged, from several threads at once.
    raw.exec("CREATE SCHEMA app");
    let url = format!("{}?table=app.cache&unlogged=true", pg.url());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || create_table(&url).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(persistence(&mut raw, "app", "cache"), "u");
    assert_eq!(
        raw.scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app' AND \
             indexname = 'cache_key_hash' AND indexdef LIKE 'CREATE UNIQUE INDEX%'"
        ),
        1
    );
    let c = Cache::open(&url).unwrap();
    c.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(raw.scalar("SELECT count(*) FROM app.cache"), 1);
    let loc = Location::parse(&url).unwrap();
    let backend = PostgresBackend::open(&loc, &mut Options::new(&loc)).unwrap();
    backend.create_table().unwrap();
    assert_eq!(backend.entry_count().unwrap(), 1);
}

/// Reads of a cache whose table does not exist yet answer misses and write nothing: the
/// database has no table until the first write.
#[test]
fn reads_before_the_first_write_create_no_table() {
    let pg = server();
    let mut raw = Raw::connect(&pg);
    let tables = |raw: &mut Raw| {
        raw.scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'untouched%'",
        )
    };
    let c = Cache::open(&format!(
        "{}?table=untouched&max_entries=100&cull_frequency=3",
        pg.url()
    ))
    .unwrap();
    assert_eq!(c.get("k").unwrap(), None);
    assert!(!c.has_key("k").unwrap());
    assert_eq!(c.get_many(&["a", "b"], None).unwrap(), [None, None]);
    assert!(!c.touch("k", Expiry::Never).unwrap());
    assert!(!c.delete("k").unwrap());
    assert_eq!(c.delete_many(&["a", "b"], None).unwrap(), 0);
    assert_eq!(c.incr("n", 1).unwrap_err().kind(), ErrorKind::NotFound);
    c.clear().unwrap();
    assert_eq!(c.ttl("k").unwrap(), polycache::TimeToLive::Missing);
    assert!(!c.persist("k").unwrap());
    assert!(!c.replace("k", b"v", Expiry::Never).unwrap());
    assert_eq!(tables(&mut raw), 0, "a read created a table");
    c.set("k", b"v", Expiry::Never).unwrap();
    assert!(tables(&mut raw) >= 1, "the first write creates the table");
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    // A table dropped behind the cache's back reads as empty, and the next write makes it again.
    raw.exec("DROP TABLE untouched CASCADE");
    assert_eq!(c.get("k").unwrap(), None);
    c.set("k", b"w", Expiry::Never).unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"w"[..]));
}

#[test]
fn four_processes_incr_exactly_and_never_read_torn_values() {
    let pg = server();
    four_processes_incr(&format!("{}?table=incr", pg.url()));
    four_processes_never_see_torn_values(&format!("{}?table=torn", pg.url()));
}

#[test]
fn sigkill_during_sets_leaves_only_whole_values() {
    let pg = server();
    sigkill_leaves_whole_values(&format!("{}?table=kill", pg.url()));
}

#[test]
fn a_restarted_server_is_used_again_and_a_dead_one_fails_fast() {
    let mut pg = server();
    let url = format!("{}?table=r&breaker_threshold=0", pg.url());
    let c = Cache::open(&url).unwrap();
    c.set("k", b"v", Expiry::Never).unwrap();
    c.set("n", b"1", Expiry::Never).unwrap();

    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    // The pooled connection broke; reads and idempotent writes retry on a new one.
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    c.set("k2", b"v2", Expiry::Never).unwrap();

    // incr must not run twice, so it is not retried: on a broken pooled connection it
    // reports the outage once, and the next call reconnects.
    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    let mut result = c.incr("n", 1);
    if let Err(e) = &result {
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        result = c.incr("n", 1);
    }
    assert_eq!(result.unwrap(), 2);
    assert_eq!(c.get("k2").unwrap().as_deref(), Some(&b"v2"[..]));

    // Down: every call fails at once with a connection error, or misses when failing open.
    pg.kill().unwrap();
    let fail_open = Cache::open(&format!("{url}&fail_open=true")).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = c.get("k").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(fail_open.get("k").unwrap(), None);
        assert!(!fail_open.set("k", b"x", Expiry::Never).unwrap());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(c.incr("n", 1).unwrap_err().kind(), ErrorKind::Connection);

    // Back after crash recovery: both caches answer again.
    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(fail_open.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(c.incr("n", 1).unwrap() >= 2);

    // A database that does not exist is a configuration error.
    let err = Cache::open(&format!(
        "postgres://postgres@127.0.0.1:{}/no_such_db",
        pg.port()
    ))
    .unwrap()
    .get("k")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
}

#[test]
fn statement_timeout_is_a_timeout() {
    let pg = server();
    let url = format!(
        "{}?table=st&statement_timeout=0.2&connect_timeout=2&breaker_threshold=0",
        pg.url()
    );
    let c = Cache::open(&url).unwrap();
    c.set("n", b"1", Expiry::Never).unwrap();
    let mut raw = Raw::connect(&pg);
    let mut tx = raw.0.transaction().unwrap();
    tx.execute("SELECT * FROM st FOR UPDATE", &[]).unwrap();
    let started = Instant::now();
    let err = c.incr("n", 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tx.rollback().unwrap();
    assert_eq!(c.incr("n", 1).unwrap(), 2, "the connection is still good");
}

/// A server that answers nothing (SIGSTOP) ends a call after `socket_timeout` with a
/// timeout, drops the connection that still owes the reply, and is used again once it runs.
#[test]
fn a_frozen_server_is_a_timeout_not_a_hang() {
    let mut pg = server();
    let url = format!(
        "{}?table=frozen&socket_timeout=0.3&connect_timeout=0.5&breaker_threshold=0",
        pg.url()
    );
    let c = Cache::open(&url).unwrap();
    c.set("n", b"1", Expiry::Never).unwrap();
    pg.freeze().unwrap();
    let started = Instant::now();
    let read = c.get("n").unwrap_err();
    let incr = c.incr("n", 1).unwrap_err();
    // Bounds a hang (the client waited for the thaw before), not speed: a read may retry
    // once on a new connection, so 0.3 + 0.5 s each, with a wide margin.
    assert!(started.elapsed() < Duration::from_secs(10));
    pg.thaw().unwrap();
    assert!(
        matches!(read.kind(), ErrorKind::Timeout | ErrorKind::Connection),
        "{read}"
    );
    assert!(
        matches!(incr.kind(), ErrorKind::Timeout | ErrorKind::Connection),
        "{incr}"
    );
    assert!(read.to_string().contains("frozen"), "names the URL: {read}");
    // The timed-out incr waited in the frozen server's socket buffer and may still run
    // when the server wakes up; never twice.
    let n = c.incr("n", 1).unwrap();
    assert!(n == 2 || n == 3, "{n}");
    assert_eq!(
        c.get("n").unwrap().as_deref(),
        Some(n.to_string().as_bytes())
    );
}

#[test]
fn bad_urls_are_configuration_errors_without_the_password() {
    let port = free_loopback_port().unwrap();
    let base = format!("postgres://app:s3cret@127.0.0.1:{port}/db");
    for (url, needle) in [
        ("postgres://app:s3cret@/db".to_owned(), "host"),
        (
            "postgres://app:s3cret@127.0.0.1:notaport/db".to_owned(),
            "host",
        ),
        ("postgres://app:s3cret@[::1/db".to_owned(), "host"),
        (format!("{base}/extra"), "database"),
        (format!("{base}?table=x;y"), "table"),
        (format!("{base}?table=a.b.c"), "table"),
        (format!("{base}?unlogged=maybe"), "unlogged"),
        (format!("{base}?connect_timeout=-1"), "connect_timeout"),
        (
            format!("{base}?statement_timeout=soon"),
            "statement_timeout",
        ),
        (format!("{base}?socket_timeout=-2"), "socket_timeout"),
        (format!("{base}?max_entries=0"), "max_entries"),
        (format!("{base}?busy_timeout=1"), "busy_timeout"),
        (format!("{base}?sslmode=maybe"), "sslmode"),
    ] {
        let err = Cache::open(&url).unwrap_err();
        assert!(err.is_configuration(), "{url}: {err:?}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
        assert!(!err.to_string().contains("s3cret"), "{url}: {err}");
        assert!(!format!("{err:?}").contains("s3cret"), "{url}: {err:?}");
    }
    // Nothing listens there: a connection error at once, naming the URL without the password.
    let c = Cache::open(&format!("{base}?breaker_threshold=0")).unwrap();
    let started = Instant::now();
    let err = c.set("k", b"v", Expiry::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("app:***@"), "{err}");
}

/// The synchronous API inside a tokio runtime (an axum handler calling it directly) works,
/// on a current-thread and a multi-thread runtime, and so do the awaitable twins.
#[test]
fn sync_and_async_calls_from_inside_a_runtime() {
    let pg = server();
    let url = format!("{}?table=in_runtime", pg.url());
    for multi in [false, true] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        }
        .enable_all()
        .build()
        .unwrap();
        let url = url.clone();
        rt.block_on(async move {
            let cache = Cache::open(&url).unwrap();
            assert!(cache.set("k", b"sync", Expiry::Default).unwrap());
            assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"sync"[..]));
            assert!(cache
                .set_async("k", b"async", Expiry::Default)
                .await
                .unwrap());
            assert_eq!(
                cache.get_async("k").await.unwrap().as_deref(),
                Some(&b"async"[..])
            );
            assert_eq!(cache.incr("n", 1).unwrap_err().kind(), ErrorKind::NotFound);
        });
    }
}
