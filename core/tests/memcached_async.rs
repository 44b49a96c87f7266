//! The memcached backend's native async side against real servers: every topology, many
//! tasks at once on one pipelined connection per server, dropped futures, and servers that
//! die, freeze and come back. (The synchronous side is `memcached.rs`.)
#![cfg(feature = "memcached")]

use polycache::backend::memcached::MemcachedBackend;
use polycache::{AsyncAccess, Backend, Cache, ErrorKind, Expiry, FailurePolicy, Location, Options};
use polycache_testkit::MemcachedServer;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn servers(n: usize) -> Vec<MemcachedServer> {
    (0..n)
        .map(|_| MemcachedServer::start().expect("start memcached"))
        .collect()
}

fn url_of(servers: &[MemcachedServer], query: &str) -> String {
    let hosts: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    format!("memcached://{}{query}", hosts.join(","))
}

fn open(url: &str) -> Cache {
    Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn strict(url: &str) -> Cache {
    let mut p = FailurePolicy::default();
    p.fail_open = false;
    p.breaker_threshold = 0;
    Cache::builder(url).failure_policy(p).build().unwrap()
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

/// A `stats` field of the TCP server on `port`.
fn stat(port: u16, name: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"stats\r\n").unwrap();
    let prefix = format!("STAT {name} ");
    for line in BufReader::new(s).lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix(&prefix) {
            return v.trim().parse().unwrap();
        }
        assert_ne!(line.trim(), "END", "no {name} in stats");
    }
    panic!("stats ended early")
}

/// 256 tasks, each with its own key, write and read back through one cache; `incr` from
/// all of them on one key adds up exactly; then the bulk operations over all their keys.
async fn many_tasks(cache: &Cache) {
    let mut tasks = Vec::new();
    for i in 0..256 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("task:{i}");
            let value = format!("value-{i}").into_bytes();
            assert!(c.set_async(&key, &value, Expiry::Default).await.unwrap());
            let got = c.get_async(&key).await.unwrap();
            assert_eq!(got.as_deref(), Some(value.as_slice()), "{key}");
            assert!(c.has_key_async(&key).await.unwrap());
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
            if i % 2 == 0 {
                c.incr_async("total", 3).await.unwrap()
            } else {
                c.decr_async("total", 1).await.unwrap()
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        cache.get_async("total").await.unwrap().as_deref(),
        Some(&b"256"[..]),
        "128 × 3 − 128 × 1"
    );
    let keys: Vec<String> = (0..256).map(|i| format!("task:{i}")).collect();
    let mut refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    refs.push("absent");
    let values = cache.get_many_async(&refs, None).await.unwrap();
    for (i, v) in values.iter().take(256).enumerate() {
        assert_eq!(v.as_deref(), Some(format!("value-{i}").as_bytes()));
    }
    assert_eq!(values[256], None);
    let items: Vec<(&str, &[u8])> = refs.iter().map(|k| (*k, &b"new"[..])).collect();
    assert!(cache
        .set_many_async(&items, Expiry::Default, None)
        .await
        .unwrap()
        .is_empty());
    let values = cache.get_many_async(&refs, None).await.unwrap();
    assert!(values.iter().all(|v| v.as_deref() == Some(&b"new"[..])));
    assert_eq!(cache.delete_many_async(&refs, None).await.unwrap(), 257);
    assert!(cache
        .get_many_async(&refs, None)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));
}

/// The single-key operations, odd keys, long TTLs and a value over the server's limit.
async fn every_operation(c: &Cache) {
    assert_eq!(c.get_async("a").await.unwrap(), None);
    assert!(c
        .set_async("a", b"1\0two\xff\r\n", Expiry::Default)
        .await
        .unwrap());
    assert_eq!(
        c.get_async("a").await.unwrap().as_deref(),
        Some(&b"1\0two\xff\r\n"[..])
    );
    assert!(c.set_async("empty", b"", Expiry::Default).await.unwrap());
    assert_eq!(
        c.get_async("empty").await.unwrap().as_deref(),
        Some(&b""[..])
    );
    assert!(c.delete_async("a").await.unwrap());
    assert!(!c.delete_async("a").await.unwrap());
    assert!(!c.has_key_async("a").await.unwrap());
    assert!(c.add_async("n", b"1", Expiry::Default).await.unwrap());
    assert!(!c.add_async("n", b"2", Expiry::Default).await.unwrap());
    assert_eq!(c.incr_async("n", 41).await.unwrap(), 42);
    assert!(c.incr_async("missing", 1).await.unwrap_err().is_not_found());
    c.set_async("text", b"abc", Expiry::Default).await.unwrap();
    assert_eq!(
        c.incr_async("text", 1).await.unwrap_err().kind(),
        ErrorKind::NotAnInteger
    );
    assert!(c.touch_async("n", Expiry::Never).await.unwrap());
    assert!(!c.touch_async("missing", Expiry::Never).await.unwrap());
    assert!(c.touch_async("n", Expiry::Expired).await.unwrap());
    assert!(!c.has_key_async("n").await.unwrap());
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
    let loc = Location::parse("memcached://127.0.0.1:1").unwrap();
    let mut opts = Options::new(&loc);
    let b = MemcachedBackend::open(&loc, &mut opts).unwrap();
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
                every_operation(&cache).await;
                many_tasks(&cache).await;
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
    runtime(true).block_on(many_tasks(&cache));
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
                let many = c.get_many_async(&[key.as_str(), "k0"], None).await.unwrap();
                (key, v, many)
            });
            if round % 2 == 0 {
                task.abort();
            } else {
                kept.push(task);
            }
        }
        for t in kept {
            if let Ok((key, v, many)) = t.await {
                assert_eq!(v.as_deref(), Some(key.as_bytes()), "a reply went astray");
                assert_eq!(many[0].as_deref(), Some(key.as_bytes()));
                assert_eq!(many[1].as_deref(), Some(&b"k0"[..]));
            }
        }
        // A future dropped after its first poll, mid-request.
        for i in 0..64 {
            let key = format!("k{i}");
            let fut = cache.get_async(&key);
            let _ = tokio::time::timeout(Duration::from_micros(1), fut).await;
            let fut = cache.incr_async("counter", 1);
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
    let mut p = FailurePolicy::default();
    p.fail_open = true;
    p.breaker_threshold = 0;
    let lenient = Cache::builder(&url).failure_policy(p).build().unwrap();
    let rt = runtime(true);
    rt.block_on(async {
        strict.set_async("k", b"1", Expiry::Default).await.unwrap();
        lenient.get_async("k").await.unwrap();
    });
    mc[0].freeze().unwrap();
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
        assert_eq!(lenient.get_async("k").await.unwrap(), None);
        assert!(!lenient
            .set_async("other", b"2", Expiry::Default)
            .await
            .unwrap());
    });
    mc[0].thaw().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while strict.get_async("k").await.is_err() {
            assert!(Instant::now() < deadline, "never recovered after the thaw");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The timed-out connection was dropped: late replies never reach new requests.
        assert_eq!(
            strict.get_async("k").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(strict.incr_async("k", 1).await.unwrap(), 2);
    });
}

#[test]
fn one_dead_server_of_three_fails_alone_and_comes_back() {
    let mut mc = servers(3);
    let url = url_of(&mc, "?dead_retry=1&socket_timeout=0.5&connect_timeout=0.5");
    let cache = strict(&url);
    let b = {
        let loc = Location::parse(&url).unwrap();
        let mut opts = Options::new(&loc);
        MemcachedBackend::open(&loc, &mut opts).unwrap()
    };
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

/// A fake server that answers every request with `reply`.
fn answering(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
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
    let cache = open(&url_of(&mc, ""));
    runtime(false).block_on(async {
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
