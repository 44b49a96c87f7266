//! A memcached cache awaited before `fork()` keeps working in the child: the child opens a
//! pipelined connection of its own (its parent's connection tasks do not exist in it) and
//! leaves its parent's alone. One test in this binary, so no other test thread is running
//! when it forks.
#![cfg(feature = "memcached")]

mod async_common;

use async_common::{in_forked_child, runtime};
use polycache::{Cache, Expiry};
use polycache_testkit::MemcachedServer;

#[test]
fn a_forked_child_opens_its_own_memcached_connection() {
    let server = MemcachedServer::start().unwrap();
    let cache = Cache::open(&server.url()).unwrap();
    let rt = runtime(false);
    rt.block_on(async {
        // The parent's pipelined connection exists before the fork.
        cache
            .set_async("fork", b"parent", Expiry::Never)
            .await
            .unwrap();
        cache.set_async("count", b"0", Expiry::Never).await.unwrap();
    });
    let ok = in_forked_child(|| {
        runtime(false).block_on(async {
            assert_eq!(
                cache.get_async("fork").await.unwrap().as_deref(),
                Some(&b"parent"[..])
            );
            assert_eq!(cache.incr_async("count", 1).await.unwrap(), 1);
            cache
                .set_async("fork", b"child", Expiry::Never)
                .await
                .unwrap();
        })
    });
    assert!(ok, "the child failed");
    // The parent's connection was left alone: it answers here, in step.
    rt.block_on(async {
        assert_eq!(
            cache.get_async("fork").await.unwrap().as_deref(),
            Some(&b"child"[..])
        );
        assert_eq!(cache.incr_async("count", 1).await.unwrap(), 2);
    });
}
