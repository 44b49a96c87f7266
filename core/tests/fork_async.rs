//! A cache awaited before `fork()` keeps working in the child: the child neither uses its
//! parent's multiplexed connections nor waits on its parent's runtime threads (which do not
//! exist in it); it starts a runtime and connections of its own. One test in this binary, so
//! no other test thread is running when it forks.
#![cfg(feature = "redis")]

mod async_common;

use async_common::in_forked_child;
use polycache::{Cache, Expiry};
use polycache_testkit::RedisServer;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_forked_child_awaits_on_its_own_runtime_and_connections() {
    let server = RedisServer::start().unwrap();
    let cache = Cache::open(&format!("{}?key_prefix=fork", server.url())).unwrap();
    let dir = std::env::temp_dir().join(format!("polycache-fork-async-{}", std::process::id()));
    let file = Cache::open(&format!("file://{}", dir.display())).unwrap();
    runtime().block_on(async {
        // The parent's multiplexed connection and blocking-pool threads exist before fork.
        cache
            .set_async("parent", b"1", Expiry::Never)
            .await
            .unwrap();
        file.set_async("parent", b"1", Expiry::Never).await.unwrap();
    });
    let ok = in_forked_child(|| {
        runtime().block_on(async {
            for i in 0..100 {
                let key = format!("child:{i}");
                cache
                    .set_async(&key, key.as_bytes(), Expiry::Never)
                    .await
                    .unwrap();
                assert_eq!(
                    cache.get_async(&key).await.unwrap().as_deref(),
                    Some(key.as_bytes())
                );
            }
            assert_eq!(
                cache.get_async("parent").await.unwrap().as_deref(),
                Some(&b"1"[..])
            );
            assert_eq!(
                file.get_async("parent").await.unwrap().as_deref(),
                Some(&b"1"[..])
            );
            file.set_async("child", b"2", Expiry::Never).await.unwrap();
        })
    });
    assert!(ok, "the child failed");
    // The parent's connections were left alone: they still answer here.
    runtime().block_on(async {
        assert_eq!(
            cache.get_async("child:99").await.unwrap().as_deref(),
            Some(&b"child:99"[..])
        );
        assert_eq!(
            file.get_async("child").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    });
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
}
