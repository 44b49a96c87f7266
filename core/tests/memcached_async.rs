//! The memcached backend's native async side against real servers: every topology, many
//! tasks at once on one pipelined connection per server, dropped futures, and servers that
//! die, freeze and come back. (The synchronous side is `memcached.rs`; the operations
//! themselves are checked on every scheme, sync and async, by the contract suite.)
#![cfg(feature = "memcached")]

mod async_common;
mod memcached_common;

use async_common::{
    dropped_futures, frozen_server, many_tasks, runtime, sync_and_async_share_one_cache, Reads,
};
use memcached_common::{answering, backend, open, policy, servers, silent, stat, url_of};
use polycache::{AsyncAccess, Backend, Cache, ErrorKind, Expiry};
use polycache_testkit::MemcachedServer;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn strict(url: &str) -> Cache {
    let p = policy(false, 0, Duration::ZERO);
    Cache::builder(url).failure_policy(p).build().unwrap()
}

/// What is memcached's own (the operations themselves are checked on every scheme, sync
/// and async, by the contract suite): odd keys, long TTLs, a value over the server's limit.
async fn memcached_specifics(c: &Cache) {
    // Keys memcached cannot carry are hashed, on the same server as the sync side puts them.
    let long = "k".repeat(400);
    for key in ["with space", "tab\there", "caf\u{e9}", long.as_str()] {
        assert!(c
            .set_async(key, key.as_bytes(), Expiry::Default)
            .await
            .unwrap());
        assert_eq!(
            c.get(key).unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key:?}"
        );
        assert_eq!(
            c.get_async(key).await.unwrap().as_deref(),
            Some(key.as_bytes())
        );
    }
    // Over 30 days: sent as an absolute time, so the entry is there (not already expired).
    let month = Expiry::After(Duration::from_secs(45 * 86_400));
    assert!(c.set_async("long-ttl", b"v", month).await.unwrap());
    assert!(c.has_key_async("long-ttl").await.unwrap());
    // Over the server's item_size_max (learned on connect): refused, nothing stored.
    c.set_async("big", b"old", Expiry::Default).await.unwrap();
    let big = vec![b'x'; 2 << 20];
    let err = c.set_async("big", &big, Expiry::Default).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");
    let refused = c
        .set_many_async(&[("big", &big[..]), ("small", b"s")], Expiry::Default, None)
        .await
        .unwrap();
    assert_eq!(refused, vec![0]);
    assert_eq!(
        c.get_async("small").await.unwrap().as_deref(),
        Some(&b"s"[..])
    );
    let v = c
        .get_or_set_async("lazy", async { Ok(b"computed".to_vec()) }, Expiry::Default)
        .await
        .unwrap();
    assert_eq!(&*v, b"computed");
}

#[test]
fn the_backend_answers_async_callers_natively() {
    let b = backend("memcached://127.0.0.1:1");
    assert!(matches!(Arc::new(b).async_access(), AsyncAccess::Native(_)));
}

#[test]
fn every_topology_serves_many_tasks_on_both_runtimes() {
    let three = servers(3);
    let sock = MemcachedServer::start_unix().unwrap();
    for url in [
        url_of(&three, "?key_prefix=many"),
        url_of(&three[..1], "?key_prefix=one"),
        format!("{}?key_prefix=sock", sock.url()),
        url_of(&three, "?key_prefix=ns&namespace=true"),
    ] {
        for multi in [false, true] {
            let cache = open(&url);
            runtime(multi).block_on(async {
                memcached_specifics(&cache).await;
                many_tasks(&cache, Reads::OwnWrites).await;
            });
        }
    }
}

#[test]
fn concurrent_requests_share_one_connection_per_server() {
    let mc = servers(1);
    let port = mc[0].port().unwrap();
    let cache = open(&url_of(&mc, ""));
    let before = stat(port, "total_connections");
    runtime(true).block_on(many_tasks(&cache, Reads::OwnWrites));
    // One for the cache's async calls, one for the `stats` call itself.
    assert_eq!(stat(port, "total_connections") - before, 2);
}

#[test]
fn namespaces_clear_from_async_calls() {
    let mc = servers(2);
    let url = url_of(&mc, "?namespace=true&namespace_refresh=0");
    let app = Cache::builder(&url).key_prefix("app").build().unwrap();
    let other = Cache::builder(&url).key_prefix("other").build().unwrap();
    runtime(false).block_on(async {
        app.set_async("k", b"v", Expiry::Default).await.unwrap();
        other.set_async("k", b"v", Expiry::Default).await.unwrap();
        app.clear_async().await.unwrap();
        assert_eq!(app.get_async("k").await.unwrap(), None);
        assert_eq!(
            app.get("k").unwrap(),
            None,
            "the sync side sees the new generation"
        );
        assert_eq!(
            other.get_async("k").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    });
    // Without namespaces, only an empty prefix clears (flush_all on every server).
    let plain = Cache::builder(&url_of(&mc, ""))
        .key_prefix("")
        .build()
        .unwrap();
    runtime(false).block_on(async {
        plain.set_async("k", b"v", Expiry::Default).await.unwrap();
        plain.clear_async().await.unwrap();
        assert_eq!(plain.get_async("k").await.unwrap(), None);
        let scoped = open(&url_of(&mc, "?key_prefix=p"));
        let err = scoped.clear_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    });
}

#[test]
fn dropped_futures_leave_the_connection_usable() {
    let mc = servers(2);
    let cache = open(&url_of(&mc, ""));
    runtime(true).block_on(dropped_futures(&cache));
}

#[test]
fn a_killed_server_is_an_error_and_a_restarted_one_is_used_again() {
    let mut mc = servers(1);
    let cache = strict(&url_of(&mc, "?socket_timeout=0.5&connect_timeout=0.5"));
    let rt = runtime(true);
    rt.block_on(async { cache.set_async("k", b"1", Expiry::Default).await.unwrap() });
    mc[0].kill().unwrap();
    rt.block_on(async {
        let err = cache.get_async("k").await.unwrap_err();
        assert!(err.is_connection(), "{err}");
        assert!(err.to_string().contains(&mc[0].addr()), "{err}");
        let err = cache
            .set_async("k", b"2", Expiry::Default)
            .await
            .unwrap_err();
        assert!(err.is_connection(), "{err}");
    });
    mc[0].restart().unwrap();
    rt.block_on(async {
        // The old connection died with the server: the next call opens a new one.
        assert_eq!(cache.get_async("k").await.unwrap(), None);
        cache
            .set_async("k", b"back", Expiry::Default)
            .await
            .unwrap();
        assert_eq!(
            cache.get_async("k").await.unwrap().as_deref(),
            Some(&b"back"[..])
        );
    });
    // Restarted under an open, idle connection: the request is sent again on a new one.
    mc[0].restart().unwrap();
    rt.block_on(async {
        assert_eq!(cache.get_async("k").await.unwrap(), None);
    });
}

#[test]
fn a_frozen_server_is_a_timeout_not_a_hang_and_fail_open_answers_misses() {
    let mut mc = servers(1);
    let url = url_of(&mc, "?socket_timeout=0.3");
    let strict = strict(&url);
    let lenient = Cache::builder(&url)
        .failure_policy(policy(true, 0, Duration::ZERO))
        .build()
        .unwrap();
    frozen_server(&runtime(true), &strict, &lenient, |frozen| {
        if frozen {
            mc[0].freeze().unwrap()
        } else {
            mc[0].thaw().unwrap()
        }
    });
}

#[test]
fn one_dead_server_of_three_fails_alone_and_comes_back() {
    let mut mc = servers(3);
    let url = url_of(&mc, "?dead_retry=1&socket_timeout=0.5&connect_timeout=0.5");
    let cache = strict(&url);
    let b = backend(&url);
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let victim = mc[1].addr();
    let on_victim = |k: &str| b.server_of(&cache.make_key(k).unwrap()).unwrap() == victim;
    let victim_key = keys.iter().find(|k| on_victim(k)).unwrap().clone();
    let live_key = keys.iter().find(|k| !on_victim(k)).unwrap().clone();
    let rt = runtime(false);
    rt.block_on(async {
        for k in &keys {
            cache
                .set_async(k, k.as_bytes(), Expiry::Never)
                .await
                .unwrap();
        }
    });
    mc[1].kill().unwrap();
    rt.block_on(async {
        let err = cache.get_async(&victim_key).await.unwrap_err();
        assert!(err.is_connection(), "{err}");
        assert_eq!(
            cache.get_async(&live_key).await.unwrap().as_deref(),
            Some(live_key.as_bytes())
        );
        // After failure_limit (2) failures it is out of the ring: no connection attempt.
        let _ = cache.get_async(&victim_key).await;
        let err = cache.get_async(&victim_key).await.unwrap_err();
        assert!(err.to_string().contains("out of the ring"), "{err}");
        // The bulk calls serve the live servers' keys.
        let items = [(victim_key.as_str(), &b"x"[..]), (live_key.as_str(), b"y")];
        assert_eq!(
            cache
                .set_many_async(&items, Expiry::Never, None)
                .await
                .unwrap(),
            vec![0]
        );
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(cache.get_many_async(&refs, None).await.is_err());
    });
    mc[1].restart().unwrap();
    thread::sleep(Duration::from_millis(1_200));
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = cache.set_async(&victim_key, b"again", Expiry::Never).await {
            assert!(Instant::now() < deadline, "never came back: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            cache.get_async(&victim_key).await.unwrap().as_deref(),
            Some(&b"again"[..])
        );
    });
}

#[test]
fn replies_out_of_step_or_outside_the_protocol_are_errors_not_panics() {
    for reply in [
        // The opaque of another request: the connection is out of step.
        &b"HD O999999\r\n"[..],
        b"EN O1x\r\n",
        b"HELLO\r\n",
        b"VA 99999999999\r\n",
        b"VA 3\r\nabcdef\r\n",
    ] {
        let port = answering(reply);
        let c = strict(&format!(
            "memcached://127.0.0.1:{port}?max_item_size=1048576&socket_timeout=0.5"
        ));
        runtime(false).block_on(async {
            let err = c.get_async("k").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Backend, "{reply:?}: {err}");
            assert!(err.to_string().contains("outside the protocol"), "{err}");
            assert!(c.get_many_async(&["a", "b"], None).await.is_err());
        });
    }
    // Accepts connections and never says a word: a timeout.
    let port = silent();
    let c = strict(&format!(
        "memcached://127.0.0.1:{port}?socket_timeout=0.2&max_item_size=1048576"
    ));
    runtime(true).block_on(async {
        let err = c.get_async("k").await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    });
}

#[test]
fn sync_and_async_share_one_cache_from_inside_a_runtime() {
    let mc = servers(2);
    sync_and_async_share_one_cache(&open(&url_of(&mc, "")));
}

#[test]
fn the_breaker_opens_for_async_calls_on_one_server() {
    let mut mc = servers(1);
    let url = url_of(&mc, "?socket_timeout=0.3&connect_timeout=0.3");
    let cache = Cache::builder(&url)
        .failure_policy(policy(false, 2, Duration::from_secs(60)))
        .build()
        .unwrap();
    let rt = runtime(false);
    rt.block_on(async { cache.set_async("k", b"1", Expiry::Default).await.unwrap() });
    mc[0].kill().unwrap();
    rt.block_on(async {
        for _ in 0..2 {
            assert!(cache.get_async("k").await.unwrap_err().is_connection());
        }
        let err = cache.get_async("k").await.unwrap_err();
        assert!(err.to_string().contains("circuit breaker"), "{err}");
    });
}
