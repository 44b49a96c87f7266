//! The redis backend's native async side against real servers: every topology, many tasks
//! at once, dropped futures, and servers that die, freeze and come back. (The operations
//! themselves are checked on every scheme by the contract suite; this file keeps what is
//! specific to Redis' multiplexed connections.)
#![cfg(feature = "redis")]

mod async_common;

use async_common::{
    dropped_futures, frozen_server, many_tasks, runtime, sync_and_async_share_one_cache, Reads,
};
use polycache::{Cache, Expiry};
use polycache_testkit::{RedisCluster, RedisOver, RedisReplicaSet, RedisServer, Transport};
use std::time::{Duration, Instant};

fn open(url: &str) -> Cache {
    Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

#[test]
fn every_topology_serves_many_tasks_on_both_runtimes() {
    let singles: Vec<RedisOver> = Transport::ALL
        .into_iter()
        .filter_map(|transport| RedisOver::start(transport).unwrap())
        .collect();
    let set = RedisReplicaSet::start().unwrap();
    let cluster = RedisCluster::start().unwrap();
    let urls = singles
        .iter()
        .map(|single| (single.url_with("key_prefix=many"), Reads::OwnWrites))
        .chain([
            (format!("{}?key_prefix=many", set.url()), Reads::Replicas),
            (
                format!("{}?key_prefix=many", cluster.url()),
                Reads::OwnWrites,
            ),
        ]);
    for (url, reads) in urls {
        for multi in [false, true] {
            runtime(multi).block_on(many_tasks(&open(&url), reads));
        }
    }
}

#[test]
fn dropped_futures_leave_the_connection_usable() {
    let server = RedisServer::start().unwrap();
    let cache = open(&server.url());
    runtime(true).block_on(dropped_futures(&cache));
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
    let lenient = open(&format!(
        "{}?socket_timeout=0.3&fail_open=true&breaker_threshold=0",
        server.url()
    ));
    let rt = runtime(true);
    frozen_server(&rt, &strict, &lenient, |frozen| {
        if frozen {
            server.freeze().unwrap()
        } else {
            server.thaw().unwrap()
        }
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
    sync_and_async_share_one_cache(&open(&server.url()));
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
        // Once in b's L1, a read does not reach Redis. (The invalidation of a's own write
        // may reach b after b's first fill and drop it once: try a few times.)
        let hits = || {
            polycache_testkit::info_field(
                &server.command(&["INFO", "stats"]).unwrap(),
                "keyspace_hits",
            )
        };
        let mut served_from_l1 = false;
        for _ in 0..50 {
            let before = hits();
            assert_eq!(b.get_async("k").await.unwrap().as_deref(), Some(&b"1"[..]));
            if hits() == before {
                served_from_l1 = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served_from_l1, "b never answered from its L1");
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
