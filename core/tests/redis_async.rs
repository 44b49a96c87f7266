//! The redis backend's native async side against real servers: every topology, many tasks
//! at once, dropped futures, and servers that die, freeze and come back. (The operations
//! themselves are checked on every scheme by the contract suite; this file keeps what is
//! specific to Redis' multiplexed connections.)
#![cfg(feature = "redis")]

use polycache::{Cache, ErrorKind, Expiry};
use polycache_testkit::{RedisCluster, RedisReplicaSet, RedisServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// 256 tasks, each with its own key, write and read back through one cache; then `incr`
/// from all of them on one key adds up exactly.
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
    for _ in 0..256 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            c.incr_async("total", 1).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        cache.get_async("total").await.unwrap().as_deref(),
        Some(&b"256"[..])
    );
    let keys: Vec<String> = (0..256).map(|i| format!("task:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = cache.get_many_async(&refs, None).await.unwrap();
    assert!(values.iter().all(Option::is_some));
    assert_eq!(cache.delete_many_async(&refs, None).await.unwrap(), 256);
}

#[test]
fn every_topology_serves_many_tasks_on_both_runtimes() {
    let single = RedisServer::start().unwrap();
    let set = RedisReplicaSet::start().unwrap();
    let cluster = RedisCluster::start().unwrap();
    for url in [single.url(), single.unix_url(), set.url(), cluster.url()] {
        for multi in [false, true] {
            let cache = open(&format!("{url}?key_prefix=many"));
            runtime(multi).block_on(many_tasks(&cache));
        }
    }
}

#[test]
fn dropped_futures_leave_the_connection_usable() {
    let server = RedisServer::start().unwrap();
    let cache = open(&server.url());
    runtime(true).block_on(async {
        for i in 0..64 {
            let key = format!("k{i}");
            cache
                .set_async(&key, key.as_bytes(), Expiry::Default)
                .await
                .unwrap();
        }
        // Start 256 reads and drop every other one before it completes.
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
            if let Ok((key, v)) = t.await {
                assert_eq!(
                    v.as_deref(),
                    Some(key.as_bytes()),
                    "a reply went to the wrong request"
                );
            }
        }
        // A future dropped after its first poll, mid-request.
        for i in 0..64 {
            let key = format!("k{i}");
            let fut = cache.get_async(&key);
            let _ = tokio::time::timeout(Duration::from_micros(1), fut).await;
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

#[test]
fn a_dead_server_is_an_error_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start().unwrap();
    let url = format!(
        "{}?socket_timeout=0.5&connect_timeout=0.5&breaker_threshold=0",
        server.url()
    );
    let cache = open(&url);
    let rt = runtime(true);
    rt.block_on(async {
        cache.set_async("k", b"1", Expiry::Default).await.unwrap();
    });
    server.kill().unwrap();
    rt.block_on(async {
        let err = cache.get_async("k").await.unwrap_err();
        assert!(err.is_connection() || err.is_timeout(), "{err}");
    });
    server.restart().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match cache.set_async("k", b"2", Expiry::Default).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    assert!(e.is_connection() || e.is_timeout(), "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("never reconnected: {e}"),
            }
        }
        assert_eq!(
            cache.get_async("k").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
    });
}

#[test]
fn a_frozen_server_is_a_timeout_not_a_hang_and_fail_open_answers_misses() {
    let mut server = RedisServer::start().unwrap();
    let strict = open(&format!(
        "{}?socket_timeout=0.3&breaker_threshold=0",
        server.url()
    ));
    let open_cache = open(&format!(
        "{}?socket_timeout=0.3&fail_open=true&breaker_threshold=0",
        server.url()
    ));
    let rt = runtime(true);
    rt.block_on(async {
        strict.set_async("k", b"1", Expiry::Default).await.unwrap();
        open_cache.get_async("k").await.unwrap();
    });
    server.freeze().unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..256 {
            let c = strict.clone();
            tasks.push(tokio::spawn(async move { c.get_async("k").await }));
        }
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        }
        // Bounded by the timeout, not by a hang (a generous bound for a loaded machine).
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(open_cache.get_async("k").await.unwrap(), None);
        // (A write that timed out may still be applied once the server runs again: another
        // key, so the value checked below is the one acknowledged before the freeze.)
        assert!(!open_cache
            .set_async("other", b"2", Expiry::Default)
            .await
            .unwrap());
    });
    server.thaw().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while strict.get_async("k").await.is_err() {
            assert!(Instant::now() < deadline, "never recovered after the thaw");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            strict.get_async("k").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
    });
}

#[test]
fn the_breaker_opens_for_async_calls_too() {
    let mut server = RedisServer::start().unwrap();
    let cache = open(&format!(
        "{}?socket_timeout=0.3&connect_timeout=0.3&breaker_threshold=2&breaker_cooldown=60",
        server.url()
    ));
    let rt = runtime(false);
    rt.block_on(async { cache.set_async("k", b"1", Expiry::Default).await.unwrap() });
    server.kill().unwrap();
    rt.block_on(async {
        for _ in 0..2 {
            assert!(cache.get_async("k").await.is_err());
        }
        let err = cache.get_async("k").await.unwrap_err();
        assert!(err.to_string().contains("circuit breaker"), "{err}");
    });
}

#[test]
fn sync_and_async_share_one_cache_from_inside_a_runtime() {
    let server = RedisServer::start().unwrap();
    let cache = Arc::new(open(&server.url()));
    runtime(false).block_on(async {
        // A synchronous call inside a runtime works (it blocks this thread, as sync calls do).
        assert!(cache.set("k", b"sync", Expiry::Default).unwrap());
        assert_eq!(
            cache.get_async("k").await.unwrap().as_deref(),
            Some(&b"sync"[..])
        );
        cache
            .set_async("k", b"async", Expiry::Default)
            .await
            .unwrap();
        assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"async"[..]));
    });
}

/// A tiered cache awaited: reads hit L1 in place, writes reach L2 and invalidate the other
/// caches' L1 copies over the Redis bus, as its synchronous calls do.
#[test]
fn tiered_over_redis_awaited_invalidates_other_l1s() {
    let server = RedisServer::start().unwrap();
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let url = format!(
        "tiered://?l2={}&bus=redis&l1_timeout=600&key_prefix=t",
        enc(&server.url())
    );
    let (a, b) = (open(&url), open(&url));
    runtime(true).block_on(async {
        a.set_async("k", b"1", Expiry::Default).await.unwrap();
        assert_eq!(b.get_async("k").await.unwrap().as_deref(), Some(&b"1"[..]));
        let l2_reads = server.command(&["INFO", "stats"]).unwrap();
        // Now in b's L1: a second read does not reach Redis.
        assert_eq!(b.get_async("k").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(
            polycache_testkit::info_field(
                &server.command(&["INFO", "stats"]).unwrap(),
                "keyspace_hits"
            ),
            polycache_testkit::info_field(&l2_reads, "keyspace_hits"),
        );
        a.set_async("k", b"2", Expiry::Default).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.get_async("k").await.unwrap().as_deref() != Some(&b"2"[..]) {
            assert!(Instant::now() < deadline, "b's L1 was never invalidated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = b.get_many_async(&["k", "absent"], None).await.unwrap();
        assert_eq!(got[0].as_deref(), Some(&b"2"[..]));
        assert_eq!(got[1], None);
    });
}
