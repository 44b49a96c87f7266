//! What the tests of the native async backends (redis_async.rs, memcached_async.rs) share:
//! the runtimes, and the scenarios every pipelined or multiplexed connection must pass —
//! many tasks at once, dropped futures, a frozen server.

#![allow(dead_code)]

use polycache::{Cache, ErrorKind, Expiry};
use std::time::{Duration, Instant};

/// A current-thread runtime, or a multi-thread one with two workers.
pub fn runtime(multi: bool) -> tokio::runtime::Runtime {
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

/// Whether a cache's reads see its own writes at once, or go to replicas that see them
/// after a while: replication is asynchronous, so a read right after a write may miss it on
/// a replica (docs/backends/redis.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reads {
    OwnWrites,
    Replicas,
}

/// `read` once, or, when `reads` go to replicas, again until `settled` holds of its answer
/// (at most 10 s: the caller's assertion then fails on the last answer).
pub async fn read_back<T, F: std::future::Future<Output = T>>(
    reads: Reads,
    mut read: impl FnMut() -> F,
    settled: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = read().await;
        if reads == Reads::OwnWrites || settled(&answer) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 256 tasks, each with its own key, write and read back through one cache; `incr` and
/// `decr` from all of them on one key add up exactly; then the bulk operations over all
/// their keys. With `Reads::Replicas`, each read back waits for the replica to have the
/// write ([`read_back`]).
///
/// The counter starts at 1000: on a multi-thread runtime a `decr` may run before any
/// `incr`, and memcached's counters stop at zero.
pub async fn many_tasks(cache: &Cache, reads: Reads) {
    let mut tasks = Vec::new();
    for i in 0..256 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("task:{i}");
            let value = format!("value-{i}").into_bytes();
            assert!(c.set_async(&key, &value, Expiry::Default).await.unwrap());
            let got = read_back(
                reads,
                || c.get_async(&key),
                |got| got.as_ref().is_ok_and(Option::is_some),
            )
            .await;
            assert_eq!(got.unwrap().as_deref(), Some(value.as_slice()), "{key}");
            assert!(c.has_key_async(&key).await.unwrap());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(cache
        .set_async("total", b"1000", Expiry::Never)
        .await
        .unwrap());
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
    let total = read_back(
        reads,
        || cache.get_async("total"),
        |got| got.as_ref().is_ok_and(|v| v.as_deref() == Some(b"1256")),
    )
    .await;
    assert_eq!(
        total.unwrap().as_deref(),
        Some(&b"1256"[..]),
        "1000 + 128 × 3 − 128 × 1"
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
    let all_new = |got: &polycache::Result<Vec<Option<polycache::Value>>>| {
        got.as_ref()
            .is_ok_and(|vs| vs.iter().all(|v| v.as_deref() == Some(&b"new"[..])))
    };
    let values = read_back(reads, || cache.get_many_async(&refs, None), all_new).await;
    assert!(all_new(&values));
    assert_eq!(cache.delete_many_async(&refs, None).await.unwrap(), 257);
    let all_gone = |got: &polycache::Result<Vec<Option<polycache::Value>>>| {
        got.as_ref().is_ok_and(|vs| vs.iter().all(Option::is_none))
    };
    let values = read_back(reads, || cache.get_many_async(&refs, None), all_gone).await;
    assert!(all_gone(&values));
}

/// Futures dropped before they complete (aborted tasks, and futures dropped after their
/// first poll, mid-request) never leave a reply for a later request.
pub async fn dropped_futures(cache: &Cache) {
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
}

/// A server frozen by `pause(true)` (and thawed by `pause(false)`): 256 reads through `strict` (fails
/// closed, no breaker) time out rather than hang, `lenient` (fails open) answers a miss and
/// an unstored write, and both answer again once it runs.
pub fn frozen_server(
    rt: &tokio::runtime::Runtime,
    strict: &Cache,
    lenient: &Cache,
    mut pause: impl FnMut(bool),
) {
    rt.block_on(async {
        strict.set_async("k", b"1", Expiry::Default).await.unwrap();
        lenient.get_async("k").await.unwrap();
    });
    pause(true);
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
        // (A write that timed out may still be applied once the server runs again: another
        // key, so the value checked below is the one acknowledged before the freeze.)
        assert!(!lenient
            .set_async("other", b"2", Expiry::Default)
            .await
            .unwrap());
    });
    pause(false);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while strict.get_async("k").await.is_err() {
            assert!(Instant::now() < deadline, "never recovered after the thaw");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // No late reply reaches a new request.
        assert_eq!(
            strict.get_async("k").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(strict.incr_async("k", 1).await.unwrap(), 2);
    });
}

/// Synchronous and async calls on one cache, from inside a current-thread runtime: a
/// synchronous call there works (it blocks the thread, as synchronous calls do), and each
/// side reads what the other wrote.
pub fn sync_and_async_share_one_cache(cache: &Cache) {
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

/// Runs `child` in a forked child process and waits for it: true when it returned (false
/// when it panicked). For a test binary with one test, so that no other test thread is
/// running when it forks.
pub fn in_forked_child(child: impl FnOnce()) -> bool {
    // SAFETY: fork in a test binary with one test; the child only runs Rust code that
    // allocates (glibc's malloc is fork-safe) and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked, with a live status out-parameter.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}
