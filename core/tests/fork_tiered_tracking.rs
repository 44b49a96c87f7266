//! A tracked tiered cache (`bus=tracking`) opened before `fork()` keeps its L1 coherent in
//! the child: the parent's tracking thread does not exist there, so the child's first read
//! drops the inherited L1 and subscribes again on a connection of its own. One test in this
//! binary, so no other test thread is running when it forks.
#![cfg(feature = "redis")]

mod async_common;

use async_common::in_forked_child;
use polycache::Cache;
use polycache_testkit::{eventually, url_option, RedisServer};
use std::time::Duration;

fn read(cache: &Cache, key: &str) -> Option<String> {
    let v = cache.get(key).ok()??;
    Some(String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn a_forked_child_tracks_its_keys_again() {
    let redis = RedisServer::start().unwrap();
    let url = format!(
        "tiered://?l2={}&bus=tracking&l1_timeout=600&key_prefix=fk",
        url_option(&redis.url())
    );
    let cache = Cache::open(&url).unwrap();
    redis.command(&["SET", "fk:1:k", "parent"]).unwrap();
    assert_eq!(read(&cache, "k").as_deref(), Some("parent"));
    let ok = in_forked_child(|| {
        // The inherited L1 holds "parent"; nothing would drop it without a new subscription.
        redis.command(&["SET", "fk:1:k", "child"]).unwrap();
        let patience = Duration::from_secs(10);
        assert!(eventually(patience, || read(&cache, "k").as_deref() == Some("child")));
        // And the child's own tracking connection delivers later writes.
        redis.command(&["SET", "fk:1:k", "later"]).unwrap();
        assert!(eventually(patience, || read(&cache, "k").as_deref() == Some("later")));
    });
    assert!(ok, "the child read a stale L1 copy");
    // The parent's own tracking goes on.
    redis.command(&["SET", "fk:1:k", "parent again"]).unwrap();
    let patience = Duration::from_secs(10);
    assert!(eventually(patience, || {
        read(&cache, "k").as_deref() == Some("parent again")
    }));
}
