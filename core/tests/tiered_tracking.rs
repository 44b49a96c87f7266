//! Tiered caches kept coherent by Redis itself (`bus=tracking`: RESP3 client-side caching
//! in broadcast mode), against Redis servers that the tests start: writes by plain clients
//! and Lua scripts, `FLUSHALL`, a killed and restarted server, replicas, Sentinel, a Redis
//! Cluster (every primary, a moved slot, a killed primary), refusals.
#![cfg(feature = "redis")]

use polycache::{Cache, ErrorKind, Expiry, TrackingBus};
use polycache_testkit::{
    command_calls, eventually, url_option, RedisCluster, RedisReplicaSet, RedisSentinelSet,
    RedisServer, SENTINEL_MASTER_NAME,
};
use std::time::Duration;

/// Generous: a loaded shared machine may be slow, and a test never asserts on time.
const PATIENCE: Duration = Duration::from_secs(10);

/// A tracked `tiered://` URL over `l2` with a 10-minute L1 (so only an invalidation can
/// refresh an L1 copy within a test) and the key prefix `prefix`.
fn tracked_url(l2: &str, prefix: &str) -> String {
    format!(
        "tiered://?l2={}&bus=tracking&l1_timeout=600&key_prefix={prefix}",
        url_option(l2)
    )
}

fn text(v: Option<polycache::Value>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn read(cache: &Cache, key: &str) -> Option<String> {
    text(cache.get(key).unwrap())
}

/// True once `cache` answers `want` for `key` (polled for up to [`PATIENCE`]).
fn converges(cache: &Cache, key: &str, want: Option<&str>) -> bool {
    eventually(PATIENCE, || {
        cache.get(key).is_ok_and(|v| text(v).as_deref() == want)
    })
}

/// How many `GET`s the server has answered.
fn server_gets(redis: &RedisServer) -> u64 {
    command_calls(&redis.command(&["INFO", "commandstats"]).unwrap(), "get")
}

#[test]
fn writes_by_other_clients_drop_the_l1_copies_of_every_cache() {
    let redis = RedisServer::start().unwrap();
    let url = tracked_url(&redis.url(), "tr");
    // Written before the caches track: no notice of it can drop a first L1 copy.
    redis.command(&["SET", "tr:1:k", "old"]).unwrap();
    let (a, b) = (Cache::open(&url).unwrap(), Cache::open(&url).unwrap());

    assert_eq!(read(&a, "k").as_deref(), Some("old"));
    assert_eq!(read(&b, "k").as_deref(), Some("old"));
    // Served from L1 now: the server sees no more GETs.
    let before = server_gets(&redis);
    for _ in 0..20 {
        assert_eq!(read(&a, "k").as_deref(), Some("old"));
        assert_eq!(read(&b, "k").as_deref(), Some("old"));
    }
    assert_eq!(server_gets(&redis), before, "reads come from L1");

    // A plain client (standing in for redis-cli, redis-py, django-redis).
    redis.command(&["SET", "tr:1:k", "plain"]).unwrap();
    assert!(converges(&a, "k", Some("plain")), "a after a plain SET");
    assert!(converges(&b, "k", Some("plain")), "b after a plain SET");

    // A Lua script.
    redis
        .command(&[
            "EVAL",
            "redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            "tr:1:k",
            "lua",
        ])
        .unwrap();
    assert!(converges(&a, "k", Some("lua")), "a after EVAL");
    assert!(converges(&b, "k", Some("lua")), "b after EVAL");

    // Deletes and expiries are writes too.
    redis.command(&["DEL", "tr:1:k"]).unwrap();
    assert!(converges(&a, "k", None), "a after DEL");
    assert!(converges(&b, "k", None), "b after DEL");

    // Another cache's own writes reach the first one (nothing is published: the server
    // reports them).
    a.set("own", b"1", Expiry::Default).unwrap();
    assert_eq!(read(&b, "own").as_deref(), Some("1"));
    a.set("own", b"2", Expiry::Default).unwrap();
    assert!(converges(&b, "own", Some("2")), "b after a's set");
    assert_eq!(a.incr("own", 3).unwrap(), 5);
    assert!(converges(&b, "own", Some("5")), "b after a's incr");

    // Keys outside the prefix are not the caches' business.
    let bus = TrackingBus::open(&redis.url(), "tr").unwrap();
    assert_eq!(bus.prefix(), "tr:");
}

#[test]
fn flushall_and_flushdb_drop_every_l1() {
    let redis = RedisServer::start().unwrap();
    let url = tracked_url(&redis.url(), "fl");
    let (a, b) = (Cache::open(&url).unwrap(), Cache::open(&url).unwrap());
    for cmd in ["FLUSHALL", "FLUSHDB"] {
        redis.command(&["SET", "fl:1:k", "v"]).unwrap();
        assert_eq!(read(&a, "k").as_deref(), Some("v"));
        assert_eq!(read(&b, "k").as_deref(), Some("v"));
        redis.command(&[cmd]).unwrap();
        assert!(converges(&a, "k", None), "a after {cmd}");
        assert!(converges(&b, "k", None), "b after {cmd}");
    }
}

#[test]
fn a_lost_tracking_link_empties_l1_until_it_is_back() {
    let mut redis = RedisServer::start().unwrap();
    let url = tracked_url(&redis.url(), "rs");
    let bus = TrackingBus::open(&redis.url(), "rs").unwrap();
    let a = Cache::open(&url).unwrap();
    assert_eq!(bus.connections(), 1, "one tracking connection per process");
    let b = Cache::open(&url).unwrap();
    assert_eq!(bus.connections(), 1, "shared by the caches of the process");

    redis.command(&["SET", "rs:1:k", "before"]).unwrap();
    assert_eq!(read(&a, "k").as_deref(), Some("before"));
    assert_eq!(read(&b, "k").as_deref(), Some("before"));

    redis.kill().unwrap();
    // Once the link is known lost, nothing is served from L1: reads go to the (dead) L2.
    assert!(
        eventually(PATIENCE, || a.get("k").is_err() && b.get("k").is_err()),
        "L1 still answers while the server is down"
    );
    redis.restart().unwrap();
    // The restarted server lost its data; a plain client writes a new value.
    redis.command(&["SET", "rs:1:k", "after"]).unwrap();
    assert!(converges(&a, "k", Some("after")), "a after the restart");
    assert!(converges(&b, "k", Some("after")), "b after the restart");
    assert!(
        eventually(PATIENCE, || bus.connections() == 2),
        "the tracking connection reconnected"
    );
    // L1 is used again (once the notice of the SET has come: a fill racing with it is
    // dropped), and invalidations work again.
    assert!(
        eventually(PATIENCE, || {
            let before = server_gets(&redis);
            read(&a, "k").as_deref() == Some("after") && server_gets(&redis) == before
        }),
        "L1 does not serve again after the restart"
    );
    redis.command(&["SET", "rs:1:k", "again"]).unwrap();
    assert!(converges(&a, "k", Some("again")), "a after a write");
    assert!(converges(&b, "k", Some("again")), "b after a write");
}

#[test]
fn a_frozen_server_is_noticed_and_nothing_stale_is_served_after() {
    let mut redis = RedisServer::start().unwrap();
    let url = format!("{}&fail_open=false", tracked_url(&redis.url(), "fz"));
    let a = Cache::open(&url).unwrap();
    redis.command(&["SET", "fz:1:k", "v1"]).unwrap();
    assert_eq!(read(&a, "k").as_deref(), Some("v1"));
    redis.freeze().unwrap();
    // The tracking link notices the silence (its PING times out): L1 is dropped.
    assert!(
        eventually(PATIENCE, || a.get("k").is_err()),
        "L1 still answers while the server is frozen"
    );
    redis.thaw().unwrap();
    redis.command(&["SET", "fz:1:k", "v2"]).unwrap();
    assert!(converges(&a, "k", Some("v2")), "after the thaw");
    redis.command(&["SET", "fz:1:k", "v3"]).unwrap();
    assert!(
        converges(&a, "k", Some("v3")),
        "invalidations after the thaw"
    );
}

#[test]
fn async_reads_see_invalidations_too() {
    let redis = RedisServer::start().unwrap();
    let a = Cache::open(&tracked_url(&redis.url(), "as")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    redis.command(&["SET", "as:1:k", "old"]).unwrap();
    let got = rt.block_on(a.get_async("k")).unwrap();
    assert_eq!(text(got).as_deref(), Some("old"));
    redis.command(&["SET", "as:1:k", "new"]).unwrap();
    let fresh = eventually(PATIENCE, || {
        text(rt.block_on(a.get_async("k")).unwrap()).as_deref() == Some("new")
    });
    assert!(fresh, "the async read still answers the old value");
}

#[test]
fn replicas_are_tracked_where_reads_go() {
    let set = RedisReplicaSet::start().unwrap();
    let url = tracked_url(&set.url(), "rp");
    let a = Cache::open(&url).unwrap();
    set.leader().command(&["SET", "rp:1:k", "old"]).unwrap();
    set.sync().unwrap();
    assert!(converges(&a, "k", Some("old")));
    set.leader().command(&["SET", "rp:1:k", "new"]).unwrap();
    assert!(
        converges(&a, "k", Some("new")),
        "after a write on the leader"
    );
    set.leader().command(&["DEL", "rp:1:k"]).unwrap();
    assert!(converges(&a, "k", None), "after a delete on the leader");
}

#[test]
fn behind_sentinel_the_tracking_follows_the_master() {
    let set = RedisSentinelSet::start().unwrap();
    let url = tracked_url(&set.url(), "sn");
    let a = Cache::open(&url).unwrap();
    let old = set.master_port().unwrap();
    set.data_command(old, &["SET", "sn:1:k", "old"]).unwrap();
    assert!(converges(&a, "k", Some("old")));
    set.data_command(old, &["SET", "sn:1:k", "new"]).unwrap();
    assert!(converges(&a, "k", Some("new")), "before the failover");

    // A graceful failover: the old master stays up, demoted under the open connection.
    set.wait_discovered().unwrap();
    let sentinel = set.sentinels()[0].port();
    set.sentinel_command(sentinel, &["SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME])
        .unwrap();
    let new = set.wait_failover(old, Duration::from_secs(60)).unwrap();
    // Until the sentinels turn the old master into a replica (seconds later), it still
    // answers as a master: the cache's own L2 reads and the tracking link are on it then.
    assert!(
        eventually(Duration::from_secs(60), || {
            set.data_command(new, &["SET", "sn:1:k", "after"]).is_ok()
                && a.get("k")
                    .is_ok_and(|v| text(v).as_deref() == Some("after"))
        }),
        "after the failover: {:?}",
        a.get("k").map(text)
    );
    set.data_command(new, &["SET", "sn:1:k", "again"]).unwrap();
    assert!(
        converges(&a, "k", Some("again")),
        "a write on the new master"
    );
}

#[test]
fn caches_with_nested_prefixes_share_the_connection() {
    let redis = RedisServer::start().unwrap();
    // "ab:" is tracked first, then "a:"; then "a:b" — whose full prefix "a:b:" the
    // server would refuse beside "a:" (overlapping prefixes), so it is covered by "a:".
    let ab = Cache::open(&tracked_url(&redis.url(), "ab")).unwrap();
    let a = Cache::open(&tracked_url(&redis.url(), "a")).unwrap();
    let nested = Cache::open(&tracked_url(&redis.url(), "a:b")).unwrap();
    for (cache, key) in [(&ab, "ab:1:k"), (&a, "a:1:k"), (&nested, "a:b:1:k")] {
        redis.command(&["SET", key, "old"]).unwrap();
        assert!(converges(cache, "k", Some("old")), "{key}");
        redis.command(&["SET", key, "new"]).unwrap();
        assert!(converges(cache, "k", Some("new")), "{key}");
    }
    // A shorter prefix than one already tracked ("" covers "ab:"): the link starts over.
    let all = Cache::open(&tracked_url(&redis.url(), "")).unwrap();
    redis.command(&["SET", ":1:k", "old"]).unwrap();
    assert!(converges(&all, "k", Some("old")));
    redis.command(&["SET", ":1:k", "new"]).unwrap();
    assert!(converges(&all, "k", Some("new")));
    redis.command(&["SET", "ab:1:k", "newer"]).unwrap();
    assert!(converges(&ab, "k", Some("newer")), "ab after the restart");
}

#[test]
fn a_server_without_client_side_caching_is_refused_at_open() {
    for renamed in ["HELLO", "CLIENT"] {
        let rename = format!("rename-command {renamed} \"\"");
        let redis = RedisServer::start_with_config(&[rename.as_str()]).unwrap();
        let err = Cache::open(&tracked_url(&redis.url(), "old")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("client-side caching"), "{msg}");
        assert!(msg.contains("Redis 6"), "{msg}");
        // The plain pub/sub bus still works there.
        let url = format!(
            "tiered://?l2={}&bus=redis&key_prefix=old",
            url_option(&redis.url())
        );
        if renamed == "HELLO" {
            Cache::open(&url).unwrap();
        }
    }
}

#[test]
fn tracking_needs_a_redis_l2() {
    for (l2, named) in [
        ("memory://", "memory://"),
        ("memcached://127.0.0.1:1", "memcached://127.0.0.1:1"),
        ("sqlite:///none.db", "sqlite://"),
    ] {
        let err = Cache::open(&tracked_url(l2, "x")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("needs a Redis l2") && msg.contains(named),
            "{msg}"
        );
    }
    let sentinel = "redis+sentinel://127.0.0.1:1/m?read_from_replicas=true";
    let err = Cache::open(&tracked_url(sentinel, "x")).unwrap_err();
    assert!(err.to_string().contains("read_from_replicas"), "{err}");
}

/// One cache key name per node of `cluster` (all primaries), for the cache with key prefix
/// `prefix`: the `i`-th lives on node `i`.
fn one_key_per_node(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; cluster.nodes().len()];
    for i in 0.. {
        let name = format!("k{i}");
        let slot = cluster.slot_of(&format!("{prefix}:1:{name}")).unwrap();
        let owner = cluster.owner_of_slot(slot).unwrap();
        found[owner].get_or_insert(name);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().flatten().collect()
}

/// [`one_key_per_node`], each key written with `value` by a plain client on its node.
fn one_key_per_node_holding(cluster: &RedisCluster, prefix: &str, value: &str) -> Vec<String> {
    let keys = one_key_per_node(cluster, prefix);
    for (node, key) in keys.iter().enumerate() {
        let full = format!("{prefix}:1:{key}");
        cluster.nodes()[node]
            .command(&["SET", &full, value])
            .unwrap();
    }
    keys
}

/// How many `GET`s every node of `cluster` has answered.
fn cluster_gets(cluster: &RedisCluster) -> Vec<u64> {
    cluster.nodes().iter().map(server_gets).collect()
}

#[test]
fn in_a_cluster_writes_on_every_primary_drop_the_l1_copies() {
    let cluster = RedisCluster::start().unwrap();
    let url = tracked_url(&cluster.url(), "cl");
    let keys = one_key_per_node_holding(&cluster, "cl", "old");
    let (a, b) = (Cache::open(&url).unwrap(), Cache::open(&url).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read_async = |key: &str| text(rt.block_on(b.get_async(key)).unwrap());
    for key in &keys {
        assert_eq!(read(&a, key).as_deref(), Some("old"));
        assert_eq!(read_async(key).as_deref(), Some("old"));
    }
    // Served from L1 now: no node sees another GET.
    let before = cluster_gets(&cluster);
    for key in &keys {
        assert_eq!(read(&a, key).as_deref(), Some("old"));
        assert_eq!(read_async(key).as_deref(), Some("old"));
    }
    assert_eq!(cluster_gets(&cluster), before, "reads come from L1");

    // A plain client writes on each primary: each reports the write to its own keys.
    for (node, key) in keys.iter().enumerate() {
        let full = format!("cl:1:{key}");
        cluster.nodes()[node]
            .command(&["SET", &full, "new"])
            .unwrap();
        assert!(converges(&a, key, Some("new")), "a, key on node {node}");
        let fresh = eventually(PATIENCE, || read_async(key).as_deref() == Some("new"));
        assert!(fresh, "b (async), key on node {node}");
    }
    // A cache's own write reaches the other cache through the server too.
    a.set(&keys[1], b"own", Expiry::Default).unwrap();
    let fresh = eventually(PATIENCE, || read_async(&keys[1]).as_deref() == Some("own"));
    assert!(fresh, "b after a's set");
}

#[test]
fn in_a_cluster_a_moved_slot_keeps_l1_correct() {
    let cluster = RedisCluster::start().unwrap();
    let url = tracked_url(&cluster.url(), "mv");
    let bus = TrackingBus::open(&cluster.url(), "mv").unwrap();
    let key = one_key_per_node(&cluster, "mv").remove(0);
    let full = format!("mv:1:{key}");
    cluster.nodes()[0].command(&["SET", &full, "v1"]).unwrap();
    let a = Cache::open(&url).unwrap();
    assert_eq!(read(&a, &key).as_deref(), Some("v1"));
    let connections = bus.connections();
    assert_eq!(connections, 1, "one tracking session for the cluster");

    // The slot and its key move from node 0 to node 1 (as `redis-cli --cluster reshard`).
    let slot = cluster.slot_of(&full).unwrap();
    cluster.move_slot(slot, 1).unwrap();
    assert_eq!(cluster.owner_of_slot(slot), Some(1));
    assert_eq!(read(&a, &key).as_deref(), Some("v1"), "the moved value");
    // The new topology is noticed: the session starts over (L1 emptied, then used again).
    assert!(
        eventually(PATIENCE, || bus.connections() > connections),
        "the tracking session did not follow the moved slot"
    );
    cluster.nodes()[1].command(&["SET", &full, "v2"]).unwrap();
    assert!(converges(&a, &key, Some("v2")), "a write on the new owner");
    assert!(
        eventually(PATIENCE, || {
            let before = server_gets(&cluster.nodes()[1]);
            read(&a, &key).as_deref() == Some("v2") && server_gets(&cluster.nodes()[1]) == before
        }),
        "L1 does not serve again after the move"
    );
    cluster.nodes()[1].command(&["SET", &full, "v3"]).unwrap();
    assert!(
        converges(&a, &key, Some("v3")),
        "a later write on the new owner"
    );
}

#[test]
fn in_a_cluster_a_killed_primary_empties_l1_until_it_is_back() {
    let mut cluster = RedisCluster::start().unwrap();
    let url = format!("{}&fail_open=false", tracked_url(&cluster.url(), "kl"));
    let keys = one_key_per_node_holding(&cluster, "kl", "before");
    let a = Cache::open(&url).unwrap();
    for key in &keys {
        assert_eq!(read(&a, key).as_deref(), Some("before"));
    }
    let served_by_node0 = |cluster: &RedisCluster| {
        let before = server_gets(&cluster.nodes()[0]);
        let value = a.get(&keys[0]).ok().and_then(text);
        (value, server_gets(&cluster.nodes()[0]) > before)
    };
    assert_eq!(
        served_by_node0(&cluster),
        (Some("before".into()), false),
        "from L1"
    );

    cluster.nodes_mut()[2].kill().unwrap();
    // The lost primary's writes could no longer be reported: L1 is emptied and bypassed,
    // for the keys of the live primaries too.
    assert!(
        eventually(PATIENCE, || served_by_node0(&cluster)
            == (Some("before".into()), true)),
        "L1 still answers while a primary is down"
    );
    cluster.nodes_mut()[2].restart().unwrap();
    cluster.wait_ok().unwrap();
    // The restarted primary lost its data; a plain client writes a new value there.
    let full = format!("kl:1:{}", keys[2]);
    cluster.nodes()[2]
        .command(&["SET", &full, "after"])
        .unwrap();
    assert!(converges(&a, &keys[2], Some("after")), "after the restart");
    assert!(
        eventually(PATIENCE, || served_by_node0(&cluster)
            == (Some("before".into()), false)),
        "L1 is not used again once every primary tracks"
    );
    cluster.nodes()[2]
        .command(&["SET", &full, "again"])
        .unwrap();
    assert!(
        converges(&a, &keys[2], Some("again")),
        "invalidations after the restart"
    );
}

#[test]
fn in_a_cluster_a_failover_is_followed() {
    let mut cluster = RedisCluster::start().unwrap();
    let key = one_key_per_node(&cluster, "fo").remove(0);
    let replica = cluster.add_replica(0).unwrap();
    let url = tracked_url(&cluster.url(), "fo");
    let full = format!("fo:1:{key}");
    cluster.nodes()[0].command(&["SET", &full, "v1"]).unwrap();
    let a = Cache::open(&url).unwrap();
    assert_eq!(read(&a, &key).as_deref(), Some("v1"));
    let bus = TrackingBus::open(&cluster.url(), "fo").unwrap();
    assert_eq!(bus.connections(), 1);

    // A graceful failover: the old primary stays up, a replica now, under its tracking
    // connection; the writes to its slots are the promoted replica's.
    cluster.failover(replica).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            cluster.nodes()[replica]
                .command(&["SET", &full, "v2"])
                .is_ok()
                && read(&a, &key).as_deref() == Some("v2")
        }),
        "a write on the promoted replica"
    );
    // The session started over on the new topology: the promoted replica is tracked.
    assert!(
        eventually(PATIENCE, || bus.connections() > 1),
        "the tracking session did not follow the failover"
    );
    assert!(
        eventually(PATIENCE, || {
            let before = server_gets(&cluster.nodes()[replica]);
            read(&a, &key).as_deref() == Some("v2")
                && server_gets(&cluster.nodes()[replica]) == before
        }),
        "L1 does not serve again after the failover"
    );
    cluster.nodes()[replica]
        .command(&["SET", &full, "v3"])
        .unwrap();
    assert!(
        converges(&a, &key, Some("v3")),
        "a later write on the new primary"
    );
}

#[test]
fn a_cluster_without_client_side_caching_is_refused_at_open() {
    let cluster = RedisCluster::start_with_config(&["rename-command HELLO \"\""]).unwrap();
    let err = Cache::open(&tracked_url(&cluster.url(), "old")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("client-side caching"), "{msg}");
    assert!(msg.contains("127.0.0.1:"), "names the node: {msg}");
    // The cluster itself serves a plain cache.
    let plain = Cache::open(&format!("{}?key_prefix=old", cluster.url())).unwrap();
    plain.set("k", b"v", Expiry::Default).unwrap();
    assert_eq!(read(&plain, "k").as_deref(), Some("v"));
}
