//! `get_or_set_with_async`: single-flight among tasks, the lease across caches, and what
//! happens when a computing task fails or is dropped.

use polycache::{Cache, Error, ErrorKind, Expiry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn runtime(multi: bool) -> tokio::runtime::Runtime {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().unwrap()
}

/// 64 tasks miss one key at once: the loader runs once and every task gets its value.
async fn one_loader_for_many_tasks(cache: Cache) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (cache, calls) = (cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_set_with_async(
                    "report",
                    || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(b"expensive".to_vec())
                    },
                    Expiry::Default,
                )
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(&*t.await.unwrap(), b"expensive");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().refreshes, 1);
}

#[test]
fn single_flight_among_tasks_on_both_runtimes() {
    for multi in [false, true] {
        let cache = Cache::open("memory://").unwrap();
        runtime(multi).block_on(one_loader_for_many_tasks(cache));
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn single_flight_on_the_blocking_pool_backends() {
    let dir = std::env::temp_dir().join(format!("polycache-refresh-async-{}", std::process::id()));
    let url = format!("sqlite://{}/c.db", dir.display());
    std::fs::create_dir_all(&dir).unwrap();
    let cache = Cache::open(&url).unwrap();
    runtime(true).block_on(one_loader_for_many_tasks(cache));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_loader_lets_a_follower_compute() {
    runtime(true).block_on(async {
        let cache = Cache::open("memory://").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_set_with_async(
                        "k",
                        || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err(Error::new(ErrorKind::Backend, "the loader failed"))
                        },
                        Expiry::Default,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = cache
            .get_or_set_with_async("k", || async { Ok(b"second".to_vec()) }, Expiry::Default)
            .await
            .unwrap();
        assert_eq!(&*follower, b"second");
        assert!(leader.await.unwrap().is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_dropped_leader_does_not_strand_its_followers() {
    runtime(true).block_on(async {
        let cache = Cache::open("memory://").unwrap();
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_set_with_async(
                        "k",
                        || async {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Ok(b"never".to_vec())
                        },
                        Expiry::Default,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let follower = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_set_with_async("k", || async { Ok(b"mine".to_vec()) }, Expiry::Default)
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower was left waiting")
            .unwrap();
        assert_eq!(&*got, b"mine");
        assert_eq!(cache.flights_in_progress(), 0);
    });
}

#[test]
fn the_lease_holds_off_another_cache_sharing_the_backend() {
    // Two caches over one shared in-process store stand in for two processes.
    let url = "memory://lease-async?lease=true&lease_ttl=5&single_flight=true";
    let (a, b) = (Cache::open(url).unwrap(), Cache::open(url).unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    runtime(true).block_on(async {
        let mut tasks = Vec::new();
        for cache in [a, b] {
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_set_with_async(
                        "k",
                        || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok(b"leased".to_vec())
                        },
                        Expiry::Default,
                    )
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(&*t.await.unwrap(), b"leased");
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_async_job_serves_stale_values_while_one_background_refresh_runs() {
    use polycache::{CacheStatus, Job, JobOptions};
    runtime(false).block_on(async {
        let job = Job::new(
            Cache::open("memory://").unwrap(),
            JobOptions::default().lifetime(Duration::from_millis(30)),
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(format!("v{n}").into_bytes())
                }
            }
        };
        let first = job.get_async("r", fetch.clone()).await.unwrap();
        assert_eq!(
            (first.status, first.value.as_deref()),
            (CacheStatus::Miss, Some(&b"v1"[..]))
        );
        assert_eq!(
            job.get_async("r", fetch.clone()).await.unwrap().status,
            CacheStatus::Hit
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Stale: answered at once with the old value; one refresh starts behind.
        for _ in 0..8 {
            let stale = job.get_async("r", fetch.clone()).await.unwrap();
            assert_eq!(
                (stale.status, stale.value.as_deref()),
                (CacheStatus::Stale, Some(&b"v1"[..]))
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = job.get_async("r", fetch.clone()).await.unwrap();
            if r.value.as_deref() == Some(&b"v2"[..]) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the refresh never landed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one background refresh for eight stale reads"
        );
        // invalidate marks it stale and refreshes behind.
        assert!(job.invalidate_async("r", fetch.clone()).await.unwrap());
        assert_eq!(
            job.get_async("r", fetch.clone()).await.unwrap().status,
            CacheStatus::Stale
        );
        assert!(job.delete_async("r").await.unwrap());
    });
}

#[test]
fn an_async_job_keeps_the_stale_value_when_a_wanted_fetch_fails() {
    use polycache::{AsyncFetch, BoxFuture, CacheStatus, Fetched, Job, JobOptions};
    struct Failing;
    impl AsyncFetch for Failing {
        fn fetch(&self) -> BoxFuture<'_, polycache::Result<Fetched>> {
            Box::pin(async { Err(Error::new(ErrorKind::Backend, "the origin is down")) })
        }
        fn should_fetch_synchronously(&self, _stale_for: Duration) -> bool {
            true
        }
    }
    runtime(true).block_on(async {
        let job = Job::new(
            Cache::open("memory://").unwrap(),
            JobOptions::default().lifetime(Duration::from_millis(10)),
        );
        job.set_async("r", b"old", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = job.get_async("r", Failing).await.unwrap();
        assert_eq!(
            (r.status, r.value.as_deref(), r.fetched),
            (CacheStatus::Stale, Some(&b"old"[..]), false)
        );
        // A miss has nothing to fall back on: the error is the caller's.
        assert!(job.get_async("absent", Failing).await.is_err());
    });
}
