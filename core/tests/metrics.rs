//! Per-operation counters and latency histograms after known operations: on `memory://`
//! (with histograms on and off) and on a real Redis server that times out, fails and
//! comes back (errors, timeouts and circuit breaker transitions).
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

use polycache::{Cache, Expiry, Operation, LATENCY_BOUNDS_NS, LATENCY_BUCKETS};

/// The same known operations on any cache.
fn known_ops(cache: &Cache) {
    cache.set("a", b"hello", Expiry::Default).unwrap();
    cache.set("n", b"1", Expiry::Default).unwrap();
    assert!(!cache.add("a", b"other", Expiry::Default).unwrap());
    assert!(cache.add("b", b"xy", Expiry::Default).unwrap());
    assert_eq!(cache.get("a").unwrap().as_deref(), Some(&b"hello"[..]));
    assert!(cache.get("absent").unwrap().is_none());
    let many = cache.get_many(&["a", "b", "absent"], None).unwrap();
    assert_eq!(many.iter().filter(|v| v.is_some()).count(), 2);
    assert_eq!(cache.incr("n", 2).unwrap(), 3);
    assert_eq!(cache.decr("n", 1).unwrap(), 2);
    assert!(cache.has_key("a").unwrap());
    assert!(cache.touch("a", Expiry::Default).unwrap());
    assert!(cache.delete("b").unwrap());
    assert_eq!(
        cache
            .set_many(
                &[("c", &b"123"[..]), ("d", &b"4567"[..])],
                Expiry::Default,
                None
            )
            .unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(cache.delete_many(&["c", "d", "absent"], None).unwrap(), 2);
}

/// Checks the counters `known_ops` leaves (plus `extra_gets` further `get` calls).
fn check_known(cache: &Cache, histograms: bool) {
    let s = cache.stats();
    assert_eq!(s.latency_histograms, histograms);
    let calls: Vec<(Operation, u64)> = Operation::ALL
        .into_iter()
        .map(|op| (op, s.op(op).calls))
        .collect();
    use Operation::*;
    assert_eq!(
        calls,
        [
            (Get, 2),
            (Set, 2),
            (Add, 2),
            (Delete, 1),
            (HasKey, 1),
            (Touch, 1),
            (Incr, 2),
            (GetMany, 1),
            (SetMany, 1),
            (DeleteMany, 1),
            (Clear, 0)
        ]
    );
    let get = s.op(Get);
    assert_eq!((get.hits, get.misses, get.bytes_read), (1, 1, 5));
    let many = s.op(GetMany);
    assert_eq!((many.hits, many.misses, many.bytes_read), (2, 1, 7));
    assert_eq!(s.op(Set).bytes_written, 6);
    assert_eq!(s.op(Add).bytes_written, 2, "only the add that stored");
    assert_eq!(s.op(SetMany).bytes_written, 7);
    assert_eq!((s.bytes_read, s.bytes_written), (12, 15));
    // The per-operation hits and misses agree with the cache's totals.
    assert_eq!((s.hits, s.misses), (3, 2));
    assert_eq!((s.errors, s.timeouts), (0, 0));
    for op in Operation::ALL {
        let o = s.op(op);
        assert_eq!((o.errors, o.timeouts), (0, 0), "{op:?}");
        let timed = if histograms { o.calls } else { 0 };
        assert_eq!(o.latency_count, timed, "{op:?}");
        assert_eq!(o.latency_buckets.iter().sum::<u64>(), timed, "{op:?}");
        assert_eq!(o.cumulative_buckets()[LATENCY_BUCKETS - 1], timed, "{op:?}");
        if !histograms {
            assert_eq!(o.latency_sum_ns, 0);
        }
    }
}

#[test]
fn memory_counts_every_operation_and_times_it() {
    let cache = Cache::open("memory://?latency_sampling=1").unwrap();
    known_ops(&cache);
    check_known(&cache, true);
    let text = cache.stats_prometheus("mem");
    assert!(text.contains("# TYPE polycache_operation_duration_seconds histogram\n"));
    assert!(text.contains(
        "polycache_operation_duration_seconds_bucket{cache=\"mem\",op=\"get\",le=\"+Inf\"} 2\n"
    ));
    assert!(
        text.contains("polycache_operation_duration_seconds_count{cache=\"mem\",op=\"get\"} 2\n")
    );
    assert!(text.contains("le=\"0.0000001\"") && text.contains("le=\"10\""));
    assert!(
        !text.contains("op=\"clear\""),
        "an unused operation adds no series"
    );
    cache.clear().unwrap();
    assert_eq!(cache.stats().op(Operation::Clear).calls, 1);
}

#[test]
fn memory_times_one_call_in_sixteen_by_default() {
    let cache = Cache::open("memory://").unwrap();
    for _ in 0..100 {
        cache.get("k").unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.latency_sampling, 16);
    let get = s.op(Operation::Get);
    // Calls 0, 16, …, 96 of this thread are timed; every call is counted.
    assert_eq!((get.calls, get.misses, get.latency_count), (100, 100, 7));
    let every = Cache::builder("memory://")
        .latency_sampling(4)
        .build()
        .unwrap();
    for _ in 0..10 {
        every.get("k").unwrap();
    }
    assert_eq!(every.stats().op(Operation::Get).latency_count, 3);
    for bad in ["0", "3", "2048", "x"] {
        let err = Cache::open(&format!("memory://?latency_sampling={bad}")).unwrap_err();
        assert!(err.to_string().contains("latency_sampling"), "{err}");
    }
}

#[test]
fn memory_with_histograms_off_keeps_the_counters() {
    for cache in [
        Cache::open("memory://?latency_histograms=off").unwrap(),
        Cache::builder("memory://")
            .latency_histograms(false)
            .build()
            .unwrap(),
    ] {
        known_ops(&cache);
        check_known(&cache, false);
        let text = cache.stats_prometheus("off");
        assert!(
            !text.contains("polycache_operation_duration_seconds"),
            "{text}"
        );
        assert!(text.contains("polycache_operations_total{cache=\"off\",op=\"get\"} 2\n"));
    }
    let err = Cache::open("memory://?latency_histograms=sometimes").unwrap_err();
    assert!(err.to_string().contains("latency_histograms"), "{err}");
}

#[test]
fn async_calls_count_as_their_operations() {
    let cache = Cache::open("memory://").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        cache.set_async("k", b"v", Expiry::Default).await.unwrap();
        cache.get_async("k").await.unwrap();
        cache.get_async("absent").await.unwrap();
    });
    let s = cache.stats();
    assert_eq!(s.op(Operation::Get).calls, 2);
    assert_eq!(
        (s.op(Operation::Get).hits, s.op(Operation::Get).misses),
        (1, 1)
    );
    assert_eq!(s.op(Operation::Set).calls, 1);
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use polycache_testkit::{eventually, RedisServer};
    use std::time::Duration;

    /// Index of the first bucket above 200 ms.
    fn above_200ms() -> usize {
        LATENCY_BOUNDS_NS
            .iter()
            .position(|&b| b == 200_000_000)
            .unwrap()
            + 1
    }

    #[test]
    fn redis_counts_timeouts_errors_and_breaker_changes() {
        let mut server = RedisServer::start().unwrap();
        let url = format!(
            "{}?socket_timeout=0.3&connect_timeout=0.3&breaker_threshold=2&breaker_cooldown=0.2",
            server.url()
        );
        let cache = Cache::open(&url).unwrap();
        known_ops(&cache);
        check_known(&cache, true);

        // Two timeouts open the breaker; the next call fails at once (an error, no timeout).
        server.freeze().unwrap();
        for _ in 0..2 {
            assert!(cache.get("a").unwrap_err().is_timeout());
        }
        let err = cache.get("a").unwrap_err();
        assert!(err.is_connection() && !err.is_timeout(), "{err}");
        server.thaw().unwrap();
        // After the cooldown one probe goes through and closes the breaker.
        assert!(eventually(Duration::from_secs(20), || cache
            .get("a")
            .is_ok()));

        let s = cache.stats();
        let get = s.op(Operation::Get);
        assert_eq!(get.timeouts, 2);
        assert!(get.errors >= 3, "{get:?}");
        assert_eq!(get.errors, s.errors);
        assert_eq!(s.timeouts, 2);
        assert_eq!(get.hits, 2, "the read before and the one after");
        assert_eq!(get.calls, get.latency_count);
        // A timed-out call lasts at least its timeout (0.3 s).
        let slow: u64 = get.latency_buckets[above_200ms()..].iter().sum();
        assert!(slow >= 2, "{:?}", get.latency_buckets);
        assert!(get.latency_sum_ns >= 600_000_000);
        // Opened once by the timeouts, and again by each probe that failed.
        assert_eq!(s.breaker_opened, s.breaker_half_opened);
        assert!(s.breaker_half_opened >= 1);
        assert_eq!(s.breaker_closed, 1);

        let text = cache.stats_prometheus("r");
        assert!(text.contains(
            "polycache_operation_outcomes_total{cache=\"r\",op=\"get\",outcome=\"timeout\"} 2\n"
        ));
        assert!(text.contains("polycache_breaker_transitions_total{cache=\"r\",to=\"closed\"} 1\n"));
    }

    #[test]
    fn a_tiered_cache_counts_the_changes_of_its_l2_breaker() {
        let mut server = RedisServer::start().unwrap();
        let l2 = format!("{}?connect_timeout=0.3&socket_timeout=0.3", server.url());
        let mut policy = polycache::FailurePolicy::default();
        policy.breaker_threshold = 1;
        let cache = Cache::builder_tiered("memory://", &l2)
            .failure_policy(policy)
            .build()
            .unwrap();
        cache.set("k", b"v", Expiry::Default).unwrap();
        server.kill().unwrap();
        // An L1 miss goes to the dead L2: the failure opens its breaker.
        assert!(cache.get("absent").is_err());
        let s = cache.stats();
        assert_eq!(
            (s.breaker_opened, s.breaker_half_opened, s.breaker_closed),
            (1, 0, 0)
        );
        assert_eq!(s.op(Operation::Get).errors, 1);
    }

    #[test]
    fn redis_async_calls_are_timed_too() {
        let server = RedisServer::start().unwrap();
        let cache = Cache::open(&server.url()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            cache.set_async("k", b"abc", Expiry::Default).await.unwrap();
            cache.get_async("k").await.unwrap();
            cache.get_many_async(&["k", "x"], None).await.unwrap();
            cache.incr_async("k", 1).await.unwrap_err();
        });
        let s = cache.stats();
        assert!(!cache.completes_inline());
        assert_eq!(s.op(Operation::Set).bytes_written, 3);
        assert_eq!(s.op(Operation::Get).bytes_read, 3);
        assert_eq!(
            (
                s.op(Operation::GetMany).hits,
                s.op(Operation::GetMany).misses
            ),
            (1, 1)
        );
        let incr = s.op(Operation::Incr);
        assert_eq!((incr.calls, incr.latency_count), (1, 1));
        assert_eq!(
            incr.errors, 0,
            "not an integer is the caller's error, not the backend's"
        );
        for op in [Operation::Set, Operation::Get, Operation::GetMany] {
            assert_eq!(s.op(op).latency_count, 1, "{op:?}");
        }
    }
}
