//! A forked child's tracked tiered cache does not wait for its new tracking connection: its
//! first read, awaited or not, answers from L2 at once, and L1 stays unused (never stale)
//! until the child's connection tracks. The leader is frozen in the child, so that
//! connection cannot come up (with `connect_timeout=600`, a read that waited for it would
//! hang); reads go to the replica. One test in this binary, so no other test thread is
//! running when it forks.
#![cfg(feature = "redis")]

mod async_common;

use async_common::in_forked_child;
use polycache::Cache;
use polycache_testkit::{command_calls, eventually, url_option, RedisReplicaSet, RedisServer};
use std::time::Duration;

fn text(v: Option<polycache::Value>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// How many `GET`s `redis` has answered.
fn gets(redis: &RedisServer) -> u64 {
    command_calls(&redis.command(&["INFO", "commandstats"]).unwrap(), "get")
}

#[test]
fn a_forked_childs_first_read_does_not_wait_for_its_tracking_connection() {
    let mut set = RedisReplicaSet::start().unwrap();
    let l2 = format!("{}?connect_timeout=600", set.url());
    let url = format!(
        "tiered://?l2={}&bus=tracking&l1_timeout=600&key_prefix=fu",
        url_option(&l2)
    );
    let cache = Cache::open(&url).unwrap();
    set.leader().command(&["SET", "fu:1:k", "v1"]).unwrap();
    set.sync().unwrap();
    let patience = Duration::from_secs(10);
    assert!(eventually(patience, || {
        cache
            .get("k")
            .is_ok_and(|v| text(v).as_deref() == Some("v1"))
    }));

    let ok = in_forked_child(|| {
        set.leader_mut().freeze().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The first read is awaited: it must not wait for the child's tracking connection.
        let before = gets(set.replica());
        let got = rt.block_on(cache.get_async("k")).unwrap();
        assert_eq!(text(got).as_deref(), Some("v1"));
        assert_eq!(text(cache.get("k").unwrap()).as_deref(), Some("v1"));
        // Both reads went to L2: L1 is bypassed while the child does not track.
        assert_eq!(gets(set.replica()), before + 2, "L1 answered untracked");

        set.leader_mut().thaw().unwrap();
        set.leader().command(&["SET", "fu:1:k", "v2"]).unwrap();
        set.sync().unwrap();
        assert!(eventually(patience, || {
            cache
                .get("k")
                .is_ok_and(|v| text(v).as_deref() == Some("v2"))
        }));
        // The child's connection tracks now: L1 serves, and later writes still reach it.
        assert!(
            eventually(patience, || {
                let before = gets(set.replica());
                text(cache.get("k").unwrap()).as_deref() == Some("v2")
                    && gets(set.replica()) == before
            }),
            "L1 is not used once the child tracks"
        );
        set.leader().command(&["SET", "fu:1:k", "v3"]).unwrap();
        assert!(eventually(patience, || {
            cache
                .get("k")
                .is_ok_and(|v| text(v).as_deref() == Some("v3"))
        }));
    });
    set.leader_mut().thaw().unwrap();
    assert!(
        ok,
        "the forked child's reads were wrong (see its output above)"
    );
}
