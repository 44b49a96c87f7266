//! Tags across cache handles that share a store (as processes do), on tiered caches whose
//! L1s share an L2 and a bus, and under a real race between a loader and an invalidation.
//! The per-scheme behaviour (sync and async) is in the contract suite (`contract/tags.rs`).
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

use polycache::{Cache, Expiry, LocalBus};
use polycache_testkit::{eventually, TempDir};
use std::sync::mpsc;
use std::time::Duration;

/// Generous: a loaded shared machine may be slow, and a test never asserts on time.
const PATIENCE: Duration = Duration::from_secs(5);

fn text(v: Option<polycache::Value>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Two handles on one store: what one invalidates, the other no longer serves.
fn two_handles(url: &str) {
    let a = Cache::builder(url).key_prefix("xh").build().unwrap();
    let b = Cache::builder(url).key_prefix("xh").build().unwrap();
    a.set_tagged("page", b"v1", Expiry::Never, &["product:42"])
        .unwrap();
    a.set("plain", b"p", Expiry::Never).unwrap();
    assert_eq!(text(b.get("page").unwrap()).as_deref(), Some("v1"), "{url}");
    // The lent read checks the tags as `get` does.
    let lent = |c: &Cache| c.get_with("page", |v| v.to_vec()).unwrap();
    assert_eq!(lent(&b).as_deref(), Some(&b"v1"[..]), "{url}");
    assert!(b.invalidate_tags(&["product:42"]).unwrap());
    assert_eq!(a.get("page").unwrap(), None, "{url}");
    assert_eq!(lent(&a), None, "{url}");
    assert_eq!(b.get("page").unwrap(), None, "{url}");
    assert_eq!(text(a.get("plain").unwrap()).as_deref(), Some("p"), "{url}");
    // A handle that stamps after the invalidation stores a value both serve.
    b.set_tagged("page", b"v2", Expiry::Never, &["product:42"])
        .unwrap();
    assert_eq!(text(a.get("page").unwrap()).as_deref(), Some("v2"), "{url}");
}

#[cfg(feature = "sqlite")]
#[test]
fn handles_sharing_sqlite() {
    let dir = TempDir::new("tags-sqlite");
    two_handles(&format!("sqlite://{}/c.db", dir.path().display()));
}

#[cfg(feature = "file")]
#[test]
fn handles_sharing_a_directory() {
    let dir = TempDir::new("tags-file");
    two_handles(&format!("file://{}", dir.path().display()));
}

#[cfg(feature = "redis")]
#[test]
fn handles_sharing_redis() {
    let redis = polycache_testkit::RedisServer::start().unwrap();
    two_handles(&redis.url());
}

#[cfg(feature = "memcached")]
#[test]
fn handles_sharing_memcached() {
    let mc = polycache_testkit::MemcachedServer::start().unwrap();
    two_handles(&mc.url());
}

/// Two tiered caches whose L1s share an L2 and a bus: an invalidation made through one
/// reaches the other's L1, which would otherwise keep serving its copy for `l1_timeout`.
#[cfg(feature = "memory")]
#[test]
fn tiered_l1s_drop_invalidated_entries() {
    let bus = LocalBus::new();
    let open = || {
        Cache::builder_tiered("memory://", "memory://tags-tiered-l2")
            .bus(bus.clone())
            .l1_timeout(Some(Duration::from_secs(600)))
            .key_prefix("tt")
            .build()
            .unwrap()
    };
    let (a, b) = (open(), open());
    a.set_tagged("page", b"v1", Expiry::Never, &["t"]).unwrap();
    // Now in both L1s, with the tag's version.
    assert_eq!(text(a.get("page").unwrap()).as_deref(), Some("v1"));
    assert_eq!(text(b.get("page").unwrap()).as_deref(), Some("v1"));
    b.invalidate_tags(&["t"]).unwrap();
    assert_eq!(a.get("page").unwrap(), None);
    assert_eq!(b.get("page").unwrap(), None);
}

/// The same over Redis pub/sub, the bus processes use.
#[cfg(feature = "redis")]
#[test]
fn tiered_l1s_over_redis_drop_invalidated_entries() {
    let redis = polycache_testkit::RedisServer::start().unwrap();
    let open = || {
        let bus = polycache::RedisBus::open(&redis.url(), "tags").unwrap();
        Cache::builder_tiered("memory://", &redis.url())
            .bus(bus)
            .l1_timeout(Some(Duration::from_secs(600)))
            .key_prefix("tr")
            .build()
            .unwrap()
    };
    let (a, b) = (open(), open());
    a.set_tagged("page", b"v1", Expiry::Never, &["t"]).unwrap();
    assert_eq!(text(a.get("page").unwrap()).as_deref(), Some("v1"));
    assert_eq!(text(b.get("page").unwrap()).as_deref(), Some("v1"));
    // a's own invalidations of its write may reach b after b's first read and drop that
    // copy: wait until b reads from its L1.
    assert!(eventually(PATIENCE, || {
        let before = redis_reads(&redis);
        text(b.get("page").unwrap()).as_deref() == Some("v1") && redis_reads(&redis) == before
    }));
    // Now b's L1 holds the entry and its tag's version: its hits read nothing from Redis.
    let before = redis_reads(&redis);
    for _ in 0..3 {
        assert_eq!(text(b.get("page").unwrap()).as_deref(), Some("v1"));
    }
    assert_eq!(
        redis_reads(&redis),
        before,
        "an L1 hit of a tagged entry made a round trip"
    );
    // A cache without L1 reads the entry and the version from Redis: the count sees them.
    let plain = Cache::builder(&redis.url())
        .key_prefix("tr")
        .build()
        .unwrap();
    assert_eq!(text(plain.get("page").unwrap()).as_deref(), Some("v1"));
    assert!(redis_reads(&redis) >= before + 2);
    a.invalidate_tags(&["t"]).unwrap();
    assert_eq!(a.get("page").unwrap(), None);
    assert!(
        eventually(PATIENCE, || b.get("page").unwrap().is_none()),
        "b's L1 still serves an invalidated entry"
    );
}

/// How many read commands the Redis server has run (`INFO commandstats`).
#[cfg(feature = "redis")]
fn redis_reads(redis: &polycache_testkit::RedisServer) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]).unwrap();
    [
        "cmdstat_get",
        "cmdstat_mget",
        "cmdstat_evalsha",
        "cmdstat_eval",
    ]
    .iter()
    .filter_map(|name| polycache_testkit::info_field(&info, name))
    .filter_map(|stats| {
        let calls = stats.split(',').next()?.strip_prefix("calls=")?;
        calls.parse::<u64>().ok()
    })
    .sum()
}

/// A loader running on one thread while another invalidates the tag: the stored entry
/// carries the version read before the loader ran, and reads as a miss.
#[cfg(feature = "memory")]
#[test]
fn an_entry_computed_across_an_invalidation_is_never_served() {
    let cache = Cache::open("memory://").unwrap();
    cache
        .set_tagged("warm", b"x", Expiry::Never, &["t"])
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let cache = &cache;
        let loader = s.spawn(move || {
            cache.get_or_set_with_tags(
                "page",
                move || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Ok(b"computed from old data".to_vec())
                },
                Expiry::Never,
                &["t"],
            )
        });
        started_rx.recv().unwrap();
        cache.invalidate_tags(&["t"]).unwrap();
        go_tx.send(()).unwrap();
        assert_eq!(
            text(Some(loader.join().unwrap().unwrap())).as_deref(),
            Some("computed from old data")
        );
    });
    assert_eq!(cache.get("page").unwrap(), None);
    assert_eq!(cache.get("warm").unwrap(), None);
    // The next caller computes afresh, and that value is served.
    let v = cache
        .get_or_set_with_tags("page", || Ok(b"new".to_vec()), Expiry::Never, &["t"])
        .unwrap();
    assert_eq!(&*v, b"new");
    assert_eq!(text(cache.get("page").unwrap()).as_deref(), Some("new"));
}

/// A signed cache signs tagged entries and tag versions alike, and still checks tags.
#[cfg(feature = "memory")]
#[test]
fn signed_and_compressed_tagged_entries() {
    let cache = Cache::builder("memory://")
        .signing_key("k")
        .compress_min_size(Some(16))
        .build()
        .unwrap();
    let big = vec![b'z'; 4096];
    cache
        .set_tagged("big", &big, Expiry::Never, &["t"])
        .unwrap();
    assert_eq!(cache.get("big").unwrap().as_deref(), Some(&big[..]));
    cache.invalidate_tags(&["t"]).unwrap();
    assert_eq!(cache.get("big").unwrap(), None);
}

/// An evicted tag version reads as an invalidation: the safe direction.
#[cfg(feature = "memory")]
#[test]
fn a_lost_tag_version_makes_its_entries_misses() {
    let cache = Cache::builder("memory://")
        .key_prefix("lost")
        .build()
        .unwrap();
    cache
        .set_tagged("page", b"v", Expiry::Never, &["t"])
        .unwrap();
    assert!(cache
        .delete(polycache::Key::full("lost:__tag__:t"))
        .unwrap());
    assert_eq!(cache.get("page").unwrap(), None);
}

/// A job's values carry the job's tags: an invalidation makes the next `get` fetch again.
#[cfg(feature = "memory")]
#[test]
fn job_values_carry_the_jobs_tags() {
    use polycache::{CacheStatus, Job, JobOptions};
    let job = Job::new(
        Cache::open("memory://").unwrap(),
        JobOptions::default().tags(["report"]),
    );
    static FETCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let fetch = || {
        let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(format!("v{n}").into_bytes())
    };
    assert_eq!(job.get("r", fetch).unwrap().status, CacheStatus::Miss);
    let hit = job.get("r", fetch).unwrap();
    assert_eq!(
        (hit.status, hit.value.as_deref()),
        (CacheStatus::Hit, Some(&b"v0"[..]))
    );
    job.cache().invalidate_tags(&["report"]).unwrap();
    let again = job.get("r", fetch).unwrap();
    assert_eq!(
        (again.status, again.value.as_deref()),
        (CacheStatus::Miss, Some(&b"v1"[..]))
    );
    assert!(job.set("s", b"set", None).unwrap());
    job.cache().invalidate_tags(&["report"]).unwrap();
    assert_eq!(job.cache().get("s").unwrap(), None);
}

/// [`polycache::Job`]'s async side stamps its values too.
#[cfg(feature = "memory")]
#[tokio::test(flavor = "current_thread")]
async fn async_job_values_carry_the_jobs_tags() {
    use polycache::{CacheStatus, Job, JobOptions};
    let job = Job::new(
        Cache::open("memory://").unwrap(),
        JobOptions::default().tags(["report"]),
    );
    let fetch = || async { Ok(b"v".to_vec()) };
    assert_eq!(
        job.get_async("r", fetch).await.unwrap().status,
        CacheStatus::Miss
    );
    assert_eq!(
        job.get_async("r", fetch).await.unwrap().status,
        CacheStatus::Hit
    );
    job.cache()
        .invalidate_tags_async(&["report"])
        .await
        .unwrap();
    assert_eq!(
        job.get_async("r", fetch).await.unwrap().status,
        CacheStatus::Miss
    );
}

/// The read commands a call makes, counted by the Redis server itself (`INFO commandstats`,
/// reset first): what is asked is how many requests, never how long they take.
#[cfg(feature = "redis")]
fn reads_of(redis: &polycache_testkit::RedisServer, call: impl FnOnce()) -> u64 {
    redis.command(&["CONFIG", "RESETSTAT"]).unwrap();
    call();
    redis_reads(redis)
}

/// A read whose caller names the tags (get_or_set with tags, jobs) is one request for the
/// value and the tags' versions; a plain `get` of a tagged entry is two; sync and async.
#[cfg(feature = "redis")]
#[test]
fn a_tagged_read_with_known_tags_is_one_redis_request() {
    let redis = polycache_testkit::RedisServer::start().unwrap();
    let cache = Cache::builder(&redis.url())
        .key_prefix("rt")
        .build()
        .unwrap();
    let tags: &[&str] = &["product:42", "home"];
    cache
        .set_tagged("page", b"v1", Expiry::Never, tags)
        .unwrap();
    let never_called = || -> polycache::Result<Vec<u8>> { panic!("a hit computed") };
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let n = reads_of(&redis, || {
        let v = cache.get_tagged("page", tags).unwrap();
        assert_eq!(text(v).as_deref(), Some("v1"));
    });
    assert_eq!(n, 1, "get_tagged");
    let n = reads_of(&redis, || {
        let v = cache.get_or_set_with_tags("page", never_called, Expiry::Never, tags);
        assert_eq!(&*v.unwrap(), b"v1");
    });
    assert_eq!(n, 1, "get_or_set_with_tags");
    let n = reads_of(&redis, || {
        let v = cache.get_or_set_tagged("page", never_called, Expiry::Never, tags);
        assert_eq!(&*v.unwrap(), b"v1");
    });
    assert_eq!(n, 1, "get_or_set_tagged");
    let n = reads_of(&redis, || {
        runtime.block_on(async {
            let v = cache.get_tagged_async("page", tags).await.unwrap();
            assert_eq!(text(v).as_deref(), Some("v1"));
            let v = cache
                .get_or_set_with_tags_async(
                    "page",
                    || async { never_called() },
                    Expiry::Never,
                    tags,
                )
                .await;
            assert_eq!(&*v.unwrap(), b"v1");
        })
    });
    assert_eq!(n, 2, "get_tagged_async, get_or_set_with_tags_async");

    // A job's read names the job's tags.
    let job = polycache::Job::new(
        cache.clone(),
        polycache::JobOptions::default()
            .lifetime(Duration::from_secs(600))
            .tags(["reports"]),
    );
    job.get("report", || Ok(b"numbers".to_vec())).unwrap();
    let n = reads_of(&redis, || {
        let got = job
            .get("report", || -> polycache::Result<Vec<u8>> {
                panic!("a hit fetched")
            })
            .unwrap();
        assert_eq!(got.status, polycache::CacheStatus::Hit);
    });
    assert_eq!(n, 1, "Job::get");

    // This handle wrote the entry: a plain get reads its tags' versions with it.
    let n = reads_of(&redis, || {
        assert_eq!(text(cache.get("page").unwrap()).as_deref(), Some("v1"));
    });
    assert_eq!(n, 1, "get of a tagged entry this handle wrote");
    let n = reads_of(&redis, || {
        cache.set("plain", b"p", Expiry::Never).unwrap();
        assert_eq!(text(cache.get("plain").unwrap()).as_deref(), Some("p"));
    });
    assert_eq!(n, 1, "get of an untagged entry");

    // Still right after an invalidation, in one request.
    cache.invalidate_tags(&["home"]).unwrap();
    let n = reads_of(&redis, || {
        assert_eq!(cache.get_tagged("page", tags).unwrap(), None);
    });
    assert_eq!(n, 1);
}

/// A plain read of a tagged entry (`get`, `get_many`, their awaitable twins, `get_or_set`)
/// is one request once the handle has written or read the entry (the hint, see
/// docs/refresh.md); a handle that never saw it makes two, once. A hint that turned wrong
/// (the entry rewritten untagged or with other tags by another handle) never serves a
/// stale value and is corrected. Counted by the Redis server (`INFO commandstats`).
#[cfg(feature = "redis")]
#[test]
fn a_plain_read_of_a_tagged_entry_is_one_redis_request() {
    let redis = polycache_testkit::RedisServer::start().unwrap();
    let open = || {
        Cache::builder(&redis.url())
            .key_prefix("pr")
            .build()
            .unwrap()
    };
    let (writer, reader) = (open(), open());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tags: &[&str] = &["product:42", "home"];
    writer
        .set_tagged("page", b"v1", Expiry::Never, tags)
        .unwrap();
    writer
        .set_tagged("side", b"s1", Expiry::Never, &["home"])
        .unwrap();
    writer.set("plain", b"p", Expiry::Never).unwrap();

    // Untagged keys never read tag versions: one GET, one MGET, as before tags.
    let n = reads_of(&redis, || {
        assert_eq!(text(reader.get("plain").unwrap()).as_deref(), Some("p"));
    });
    assert_eq!(n, 1, "get of an untagged entry");

    // The reader never saw "page": the first read learns its tags (two requests), the next
    // ones read the versions with the value.
    let n = reads_of(&redis, || {
        assert_eq!(text(reader.get("page").unwrap()).as_deref(), Some("v1"));
    });
    assert_eq!(n, 2, "first get of a tagged entry this handle never saw");
    let n = reads_of(&redis, || {
        assert_eq!(text(reader.get("page").unwrap()).as_deref(), Some("v1"));
    });
    assert_eq!(n, 1, "get");
    let n = reads_of(&redis, || {
        let v = reader.get_or_set("page", || panic!("a hit computed"), Expiry::Never);
        let v = v.unwrap();
        assert_eq!(&*v, b"v1");
    });
    assert_eq!(n, 1, "get_or_set");
    let n = reads_of(&redis, || {
        runtime.block_on(async {
            let v = reader.get_async("page").await.unwrap();
            assert_eq!(text(v).as_deref(), Some("v1"));
        })
    });
    assert_eq!(n, 1, "get_async");

    // get_many: "side" carries a tag ("home") that "page"'s hint names, "third" one that no
    // hint names (one more request, once); then one request.
    writer
        .set_tagged("third", b"t1", Expiry::Never, &["extra"])
        .unwrap();
    let keys = ["page", "side", "third", "plain", "absent"];
    let want = [Some("v1"), Some("s1"), Some("t1"), Some("p"), None];
    let get_many = || {
        let got = reader.get_many(&keys, None).unwrap();
        let got: Vec<_> = got.into_iter().map(text).collect();
        assert_eq!(got, want.map(|s| s.map(String::from)));
    };
    assert_eq!(reads_of(&redis, get_many), 2, "first get_many");
    assert_eq!(reads_of(&redis, get_many), 1, "get_many");
    let n = reads_of(&redis, || {
        runtime.block_on(async {
            let got: Vec<_> = reader.get_many_async(&keys, None).await.unwrap();
            let got: Vec<_> = got.into_iter().map(text).collect();
            assert_eq!(got, want.map(|s| s.map(String::from)));
        })
    });
    assert_eq!(n, 1, "get_many_async");

    // An invalidation by another handle is seen in the same one request.
    writer.invalidate_tags(&["home"]).unwrap();
    let n = reads_of(&redis, || {
        assert_eq!(reader.get("page").unwrap(), None);
        runtime.block_on(async {
            assert_eq!(reader.get_async("page").await.unwrap(), None);
            let got = reader.get_many_async(&keys, None).await.unwrap();
            assert_eq!(
                got.into_iter().map(text).collect::<Vec<_>>()[..2],
                [None, None]
            );
        });
    });
    assert_eq!(n, 3, "reads after an invalidation");

    // Another handle rewrites the entries: untagged (the hint's versions are read for
    // nothing, once) and with another tag (its versions are read in a second request, once).
    writer.set("page", b"v2", Expiry::Never).unwrap();
    writer
        .set_tagged("side", b"s2", Expiry::Never, &["other"])
        .unwrap();
    let n = reads_of(&redis, || {
        assert_eq!(text(reader.get("page").unwrap()).as_deref(), Some("v2"));
        assert_eq!(text(reader.get("side").unwrap()).as_deref(), Some("s2"));
    });
    assert_eq!(n, 3, "reads after the entries changed their tags");
    let n = reads_of(&redis, || {
        assert_eq!(text(reader.get("page").unwrap()).as_deref(), Some("v2"));
        assert_eq!(text(reader.get("side").unwrap()).as_deref(), Some("s2"));
    });
    assert_eq!(n, 2, "reads once the hints are corrected");
    writer.invalidate_tags(&["other"]).unwrap();
    assert_eq!(reader.get("side").unwrap(), None);
}

/// The same on Memcached, counted at a loopback proxy: each retrieval request is one line
/// (`mg key v`, `get k1 k2 …`).
#[cfg(feature = "memcached")]
#[test]
fn a_plain_read_of_a_tagged_entry_is_one_memcached_request() {
    let server = polycache_testkit::MemcachedServer::start().unwrap();
    let proxy = polycache_testkit::FaultProxy::start(server.addr().parse().unwrap()).unwrap();
    let url = format!("memcached://127.0.0.1:{}", proxy.port());
    let open = || Cache::builder(&url).key_prefix("pm").build().unwrap();
    let (writer, reader) = (open(), open());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let requests = |call: &dyn Fn()| {
        let before = proxy.lines_sent();
        call();
        proxy.lines_sent() - before
    };
    writer
        .set_tagged("page", b"v1", Expiry::Never, &["a", "b"])
        .unwrap();
    writer.set("plain", b"p", Expiry::Never).unwrap();
    // The reader's connections are opened (and set up) before anything is counted.
    assert_eq!(reader.get("absent").unwrap(), None);
    runtime.block_on(async { assert_eq!(reader.get_async("absent").await.unwrap(), None) });

    let n = requests(&|| assert_eq!(text(reader.get("plain").unwrap()).as_deref(), Some("p")));
    assert_eq!(n, 1, "get of an untagged entry");
    let n = requests(&|| assert_eq!(text(reader.get("page").unwrap()).as_deref(), Some("v1")));
    assert_eq!(n, 2, "first get of a tagged entry this handle never saw");
    let n = requests(&|| assert_eq!(text(reader.get("page").unwrap()).as_deref(), Some("v1")));
    assert_eq!(n, 1, "get");
    let n = requests(&|| assert_eq!(text(writer.get("page").unwrap()).as_deref(), Some("v1")));
    assert_eq!(n, 1, "get by the handle that wrote it");
    let n = requests(&|| {
        runtime.block_on(async {
            let v = reader.get_async("page").await.unwrap();
            assert_eq!(text(v).as_deref(), Some("v1"));
        })
    });
    assert_eq!(n, 1, "get_async");
    let n = requests(&|| {
        let got = reader.get_many(&["page", "plain"], None).unwrap();
        assert_eq!(text(got[0].clone()).as_deref(), Some("v1"));
    });
    assert_eq!(n, 1, "get_many");
    writer.invalidate_tags(&["b"]).unwrap();
    let n = requests(&|| {
        assert_eq!(reader.get("page").unwrap(), None);
        runtime.block_on(async {
            assert_eq!(reader.get_async("page").await.unwrap(), None);
        });
    });
    assert_eq!(n, 2, "reads after an invalidation");
}
