//! The Rust face of locks: the guard (release on drop, also inside a runtime), and the
//! errors of bad input. The semantics on every backend are in the contract suite
//! (`contract/body.rs`, `locks`); processes sharing a lock are in tests/python/test_lock.py.
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

use polycache::{Cache, ErrorKind, LockOptions};
use std::time::{Duration, Instant};

fn timed(secs: u64) -> LockOptions {
    LockOptions::default()
        .timeout(Some(Duration::from_secs(secs)))
        .sleep(Duration::from_millis(5))
}

#[test]
fn a_guard_releases_on_drop_and_reports_a_lost_lock_on_release() {
    let cache = Cache::open("memory://").unwrap();
    let lock = cache.lock("job", timed(30)).unwrap();
    {
        let guard = lock.acquire().unwrap().expect("blocking acquire");
        assert!(guard.owned().unwrap());
        assert!(lock.locked().unwrap());
    }
    assert!(!lock.locked().unwrap(), "dropped: released");

    let brief = LockOptions::default().timeout(Some(Duration::from_millis(50)));
    let lapsing = cache.lock("lapsing", brief).unwrap();
    let guard = lapsing.acquire().unwrap().unwrap();
    let wait = timed(30).blocking_timeout(Some(Duration::from_secs(30)));
    assert!(lapsing.acquire_token(b"next", &wait).unwrap());
    assert!(!guard.owned().unwrap());
    assert_eq!(guard.release().unwrap_err().kind(), ErrorKind::LockNotOwned);
    assert!(lapsing.owned_by(b"next").unwrap(), "untouched");
}

/// On sqlite://, whose release runs on polycache's blocking pool (memory:// would release
/// inline and prove nothing).
#[cfg(feature = "sqlite")]
#[test]
fn a_guard_dropped_inside_a_runtime_releases_without_blocking_it() {
    let dir = polycache_testkit::TempDir::new("lock-drop");
    let url = format!("sqlite://{}/locks.db", dir.path().display());
    let cache = Cache::open(&url).unwrap();
    let lock = cache.lock("job", timed(30)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let guard = lock.acquire_async().await.unwrap().unwrap();
        assert!(guard.owned_async().await.unwrap());
        drop(guard);
        // The release runs on polycache's runtime: poll for it, with a generous bound.
        let until = Instant::now() + Duration::from_secs(30);
        while lock.locked_async().await.unwrap() {
            assert!(
                Instant::now() < until,
                "the dropped guard never released the lock"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let guard = lock.acquire_async().await.unwrap().unwrap();
        guard
            .extend_async(Duration::from_secs(5), false)
            .await
            .unwrap();
        guard.reacquire_async().await.unwrap();
        guard.release_async().await.unwrap();
        assert!(!lock.locked_async().await.unwrap());
    });
}

#[test]
fn bad_input_is_a_clear_error() {
    let cache = Cache::open("memory://").unwrap();
    let zero = LockOptions::default().timeout(Some(Duration::ZERO));
    let err = cache.lock("job", zero).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("timeout"), "{err}");
    let long = "k".repeat(polycache::MAX_KEY_LEN + 1);
    let err = cache
        .lock(long.as_str(), LockOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    let forever = cache.lock("forever", LockOptions::default()).unwrap();
    let guard = forever.acquire().unwrap().unwrap();
    let err = guard.extend(Duration::from_secs(1), false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Lock);
    assert!(err.to_string().contains("no timeout"), "{err}");
}
