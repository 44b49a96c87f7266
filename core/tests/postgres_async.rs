//! The postgres:// backend's native async side against private servers: many tasks at
//! once, dropped futures, servers that freeze and restart, Django's cull and trimming
//! awaited, and a forked child. (The synchronous side is tests/postgres.rs.)
#![cfg(feature = "postgres")]

use polycache::{Cache, ErrorKind, Expiry};
use polycache_testkit::PostgresServer;
use std::time::{Duration, Instant};

fn server() -> PostgresServer {
    PostgresServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn open(url: &str) -> Cache {
    Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn runtime(multi: bool) -> tokio::runtime::Runtime {
    if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}

/// Raw SQL on the server, to look at the table behind the cache.
fn scalar(pg: &PostgresServer, sql: &str) -> i64 {
    let params = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port()
    );
    let mut client = postgres::Client::connect(&params, postgres::NoTls).unwrap();
    client.query_one(sql, &[]).unwrap().get(0)
}

/// Awaited reads of a cache whose table does not exist yet answer misses and write
/// nothing; the first awaited write creates the table.
#[test]
fn awaited_reads_before_the_first_write_create_no_table() {
    let pg = server();
    let tables = || {
        scalar(
            &pg,
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'untouched%'",
        )
    };
    for multi in [false, true] {
        let c = open(&format!("{}?table=untouched", pg.url()));
        runtime(multi).block_on(async {
            assert_eq!(c.get_async("k").await.unwrap(), None);
            assert!(!c.has_key_async("k").await.unwrap());
            assert_eq!(
                c.get_many_async(&["a", "b"], None).await.unwrap(),
                [None, None]
            );
            assert!(!c.touch_async("k", Expiry::Never).await.unwrap());
            assert!(!c.delete_async("k").await.unwrap());
            assert_eq!(c.delete_many_async(&["a", "b"], None).await.unwrap(), 0);
            let err = c.incr_async("n", 1).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            c.clear_async().await.unwrap();
            let ttl = c.ttl_async("k").await.unwrap();
            assert_eq!(ttl, polycache::TimeToLive::Missing);
            assert!(!c.replace_async("k", b"v", Expiry::Never).await.unwrap());
        });
        assert_eq!(tables(), 0, "an awaited read created a table");
    }
    let c = open(&format!("{}?table=untouched", pg.url()));
    runtime(false).block_on(async {
        c.set_async("k", b"v", Expiry::Never).await.unwrap();
        assert_eq!(c.get_async("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    });
    assert_eq!(tables(), 1, "the first awaited write creates the table");
}

/// 256 tasks, each with its own key, write and read back through one cache (more tasks
/// than connections: they wait for one another's); `incr` from all of them on one key adds
/// up exactly, and `add` of one key from all of them stores once.
async fn many_tasks(cache: &Cache) {
    cache.clear_async().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..256 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("task:{i}");
            let value = format!("value-{i}").into_bytes();
            assert!(c.set_async(&key, &value, Expiry::Default).await.unwrap());
            let got = c.get_async(&key).await.unwrap();
            assert_eq!(got.as_deref(), Some(value.as_slice()), "{key}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(cache.set_async("total", b"0", Expiry::Never).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..256 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            c.incr_async("total", 1).await.unwrap();
            c.add_async("once", format!("{i}").as_bytes(), Expiry::Never)
                .await
                .unwrap()
        }));
    }
    let mut added = 0;
    for t in tasks {
        added += usize::from(t.await.unwrap());
    }
    assert_eq!(added, 1, "add stored more than once");
    assert_eq!(
        cache.get_async("total").await.unwrap().as_deref(),
        Some(&b"256"[..])
    );
    let keys: Vec<String> = (0..256).map(|i| format!("task:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = cache.get_many_async(&refs, None).await.unwrap();
    assert!(values.iter().all(Option::is_some));
    assert_eq!(cache.delete_many_async(&refs, None).await.unwrap(), 256);
    assert!(!cache.has_key_async("task:0").await.unwrap());
}

#[test]
fn many_tasks_on_both_runtimes() {
    let pg = server();
    for multi in [false, true] {
        let cache = open(&format!("{}?table=many&pool_size=4", pg.url()));
        runtime(multi).block_on(many_tasks(&cache));
    }
    // No more connections than the pool allows (plus the one of this query).
    assert!(
        scalar(
            &pg,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'polycache'"
        ) <= 4
    );
}

#[test]
fn dropped_futures_leave_connections_usable() {
    let pg = server();
    // Two connections for many tasks: a connection a dropped future used serves the next.
    let cache = open(&format!("{}?table=dropped&pool_size=2", pg.url()));
    runtime(true).block_on(async {
        for i in 0..64 {
            let key = format!("k{i}");
            cache
                .set_async(&key, key.as_bytes(), Expiry::Default)
                .await
                .unwrap();
        }
        // Start 256 reads and abort every other one wherever it is.
        let mut kept = Vec::new();
        for round in 0..256 {
            let c = cache.clone();
            let key = format!("k{}", round % 64);
            let task = tokio::spawn(async move {
                let v = c.get_async(&key).await.unwrap();
                (key, v)
            });
            if round % 2 == 0 {
                task.abort();
            } else {
                kept.push(task);
            }
        }
        for t in kept {
            let (key, v) = t.await.unwrap();
            assert_eq!(
                v.as_deref(),
                Some(key.as_bytes()),
                "a reply went to the wrong request"
            );
        }
        // Futures dropped after a first poll, mid-statement.
        for i in 0..64 {
            let key = format!("k{i}");
            let _ = tokio::time::timeout(Duration::from_micros(50), cache.get_async(&key)).await;
            let _ = tokio::time::timeout(
                Duration::from_micros(50),
                cache.set_async(&key, b"torn?", Expiry::Default),
            )
            .await;
            // A set either happened whole or not at all.
            let v = cache.get_async(&key).await.unwrap().unwrap();
            assert!(
                v.as_ref() == key.as_bytes() || v.as_ref() == b"torn?",
                "{v:?}"
            );
            cache
                .set_async(&key, key.as_bytes(), Expiry::Default)
                .await
                .unwrap();
        }
        for i in 0..64 {
            let key = format!("k{i}");
            assert_eq!(
                cache.get_async(&key).await.unwrap().as_deref(),
                Some(key.as_bytes()),
                "later requests get their own replies"
            );
        }
    });
}

/// Culling writes run in a transaction; dropped mid-transaction, it rolls back and the row
/// counter stays exact.
#[test]
fn dropped_culling_transactions_roll_back() {
    let pg = server();
    let cache = open(&format!(
        "{}?table=cull_drop&max_entries=20&cull_frequency=2&pool_size=2",
        pg.url()
    ));
    runtime(false).block_on(async {
        for i in 0..200 {
            let key = format!("k{i}");
            let wait = Duration::from_micros(20 * (i % 10));
            let _ = tokio::time::timeout(wait, cache.set_async(&key, b"v", Expiry::Never)).await;
        }
        // The connections still work, and the bound held.
        cache.set_async("last", b"v", Expiry::Never).await.unwrap();
        assert!(cache.has_key_async("last").await.unwrap());
    });
    let rows = scalar(&pg, "SELECT count(*) FROM cull_drop");
    assert!(rows <= 20, "{rows} rows");
    assert_eq!(scalar(&pg, "SELECT n FROM cull_drop_count"), rows);
}

/// A server that answers nothing (SIGSTOP): every awaited call ends with a timeout after
/// `socket_timeout`, the connections that owe replies are dropped, and the server is used
/// again once it runs.
#[test]
fn a_frozen_server_is_a_timeout_not_a_hang() {
    let mut pg = server();
    let url = format!(
        "{}?table=frozen&socket_timeout=0.3&connect_timeout=0.5&breaker_threshold=0&pool_size=4",
        pg.url()
    );
    let strict = open(&url);
    let fail_open = open(&format!("{url}&fail_open=true"));
    let rt = runtime(true);
    rt.block_on(async {
        strict.set_async("k", b"1", Expiry::Never).await.unwrap();
        fail_open.get_async("k").await.unwrap();
    });
    pg.freeze().unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let c = strict.clone();
            tasks.push(tokio::spawn(async move { c.get_async("k").await }));
        }
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Connection),
                "{err}"
            );
            assert!(err.to_string().contains("frozen"), "names the URL: {err}");
        }
        // Bounds a hang, not speed (a generous bound for a loaded machine).
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(fail_open.get_async("k").await.unwrap(), None);
    });
    pg.thaw().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while strict.get_async("k").await.is_err() {
            assert!(Instant::now() < deadline, "never recovered after the thaw");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            strict.get_async("k").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(strict.incr_async("k", 1).await.unwrap(), 2);
    });
}

#[test]
fn a_restarted_server_is_used_again() {
    let mut pg = server();
    let cache = open(&format!("{}?table=restart&breaker_threshold=0", pg.url()));
    let rt = runtime(false);
    rt.block_on(async {
        cache.set_async("k", b"v", Expiry::Never).await.unwrap();
        cache.set_async("n", b"1", Expiry::Never).await.unwrap();
    });
    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        // The pooled connection broke; reads and idempotent writes retry on a new one.
        assert_eq!(
            cache.get_async("k").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        cache.set_async("k2", b"v2", Expiry::Never).await.unwrap();
    });
    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        // incr is never run twice: on a broken pooled connection it reports the outage
        // once, and the next call reconnects.
        let mut result = cache.incr_async("n", 1).await;
        if let Err(e) = &result {
            assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
            result = cache.incr_async("n", 1).await;
        }
        assert_eq!(result.unwrap(), 2);
    });
    pg.kill().unwrap();
    rt.block_on(async {
        let err = cache.get_async("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    });
    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        assert_eq!(
            cache.get_async("k2").await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
    });
}

/// Django's cull (test_cull: 49 sets into max_entries=30, cull_frequency=3) and the
/// estimated bounds, written through the async API.
#[test]
fn django_cull_and_trimming_through_the_async_path() {
    let pg = server();
    let culled = open(&format!(
        "{}?table=acull&max_entries=30&cull_frequency=3",
        pg.url()
    ));
    let trimmed = open(&format!("{}?table=atrim&max_entries=1000", pg.url()));
    runtime(true).block_on(async {
        for i in 1..50 {
            culled
                .set_async(&format!("cull{i}"), b"value", Expiry::Never)
                .await
                .unwrap();
        }
        let mut present = Vec::new();
        for i in 1..50 {
            if culled.has_key_async(&format!("cull{i}")).await.unwrap() {
                present.push(i);
            }
        }
        assert_eq!(present, (21..50).collect::<Vec<_>>());
        assert_eq!(culled.stats().evictions, 20);

        for i in 0..3000 {
            trimmed
                .set_async(&format!("t{i}"), b"0123456789", Expiry::Never)
                .await
                .unwrap();
        }
        let bulk: Vec<(String, Vec<u8>)> =
            (0..2000).map(|i| (format!("b{i}"), vec![7; 10])).collect();
        for chunk in bulk.chunks(100) {
            let items: Vec<(&str, &[u8])> =
                chunk.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
            trimmed
                .set_many_async(&items, Expiry::Never, None)
                .await
                .unwrap();
        }
        assert!(trimmed.stats().evictions > 0);
        // The newest entries stay.
        assert!(trimmed.has_key_async("b1999").await.unwrap());
        assert!(!trimmed.has_key_async("t0").await.unwrap());
    });
    assert_eq!(scalar(&pg, "SELECT count(*) FROM acull"), 29);
    assert_eq!(scalar(&pg, "SELECT n FROM acull_count"), 29);
    let rows = scalar(&pg, "SELECT count(*) FROM atrim");
    assert!(rows <= 1100, "{rows} rows for max_entries=1000");
}

/// A child of fork() (a pre-forking server) awaits the cache its parent used: it opens
/// connections and a runtime of its own, and increments by both add up exactly.
#[test]
fn a_forked_child_uses_connections_of_its_own() {
    const ROUNDS: i64 = 200;
    let pg = server();
    let cache = open(&format!("{}?table=forked", pg.url()));
    runtime(false).block_on(async {
        cache.set_async("n", b"0", Expiry::Never).await.unwrap();
        // The parent has idle async connections when it forks.
        assert_eq!(
            cache.get_async("n").await.unwrap().as_deref(),
            Some(&b"0"[..])
        );
    });
    let work = |cache: &Cache| -> Result<(), String> {
        runtime(false).block_on(async {
            for _ in 0..ROUNDS {
                cache.incr_async("n", 1).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    };
    // SAFETY: the child only runs polycache and tokio code and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match work(&cache) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    work(&cache).unwrap();
    let mut status = 0;
    // SAFETY: waits for the child started above; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed ({status})"
    );
    let total = runtime(false)
        .block_on(cache.get_async("n"))
        .unwrap()
        .unwrap();
    assert_eq!(total.as_ref(), (2 * ROUNDS).to_string().as_bytes());
}
