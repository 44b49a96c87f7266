//! The schemes the contract runs on: how each opens its store, what it is expected to do
//! where backends may differ, and the servers it needs.
//!
//! Each server is started once per test binary, by the first test that needs it, and shared
//! by every later one (the three modes of a scheme, the schemes over one Redis). It is
//! stopped when the binary exits: testkit stops a server when its handle is dropped, and a
//! handle in a `static` is never dropped by itself, so an exit handler drops them.

use super::body::{Caches, Deviation, Expect};
use super::ops::{Mode, Settle};
use polycache::backend::{apply_delta, not_found};
use polycache::{Backend, Cache, CacheBuilder, Result, Value};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scheme, ready to open caches.
pub struct Fixture {
    pub name: &'static str,
    pub expect: Expect,
    pub builder: Box<dyn Fn() -> CacheBuilder + Send + Sync>,
    pub settle: Settle,
    /// The servers and directories the caches use, kept until the run ends.
    pub _keep: Vec<Arc<dyn Any + Send + Sync>>,
}

impl Fixture {
    fn url(name: &'static str, expect: Expect, url: String) -> Fixture {
        Fixture {
            name,
            expect,
            builder: Box::new(move || Cache::builder(&url)),
            settle: None,
            _keep: Vec::new(),
        }
    }

    /// [`Fixture::url`] for a scheme over the network, with [`patient`] timeouts.
    fn remote(name: &'static str, expect: Expect, url: String) -> Fixture {
        Fixture::url(name, expect, patient(url))
    }

    /// The caches of one run of the body through `mode`.
    pub fn caches(&self, mode: Mode) -> Caches {
        let expect = self.expect.clone();
        Caches::open(self.name, mode, expect, &*self.builder, &self.settle)
    }

    fn keep(mut self, thing: Arc<dyn Any + Send + Sync>) -> Fixture {
        self._keep.push(thing);
        self
    }
}

/// A server of this test binary: `Slot` holds it from its first use until the binary exits.
type Slot<T> = Mutex<Option<Arc<T>>>;

/// What the exit handler drops: every slot that holds a server.
static STOPS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

extern "C" fn stop_servers() {
    let stops = std::mem::take(&mut *STOPS.lock().unwrap_or_else(|e| e.into_inner()));
    for stop in stops {
        stop();
    }
}

/// The server in `slot`, started by `start` on first use; `stop` empties `slot` at exit.
fn shared<T: Send + Sync + 'static>(
    slot: &'static Slot<T>,
    stop: fn(),
    start: impl FnOnce() -> T,
) -> Arc<T> {
    let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = &*held {
        return Arc::clone(running);
    }
    let started = Arc::new(start());
    *held = Some(Arc::clone(&started));
    let mut stops = STOPS.lock().unwrap_or_else(|e| e.into_inner());
    if stops.is_empty() {
        // SAFETY: `stop_servers` is an `extern "C" fn()` that neither unwinds nor returns
        // early; `atexit` keeps the pointer, which is valid for the whole program.
        unsafe { libc::atexit(stop_servers) };
    }
    stops.push(stop);
    started
}

/// [`shared`] for the slot `$name`, emptied at exit.
macro_rules! shared {
    ($name:ident, $start:expr) => {
        shared(
            &$name,
            || drop($name.lock().unwrap_or_else(|e| e.into_inner()).take()),
            $start,
        )
    };
}

/// How long the network schemes wait for a connection and for each reply (their
/// `connect_timeout` and `socket_timeout`), seconds. The contract checks answers, not
/// speed: with the defaults (1 s on Redis and memcached) a machine at load average 18 made
/// a memcached read give up (`EAGAIN`, a `Timeout`) in a run that had nothing wrong. A
/// server that never answers still fails the run, later.
const PATIENCE_S: u32 = 30;

/// `url` with [`PATIENCE_S`] as its connect and socket timeouts.
fn patient(url: String) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout={PATIENCE_S}&socket_timeout={PATIENCE_S}")
}

fn or_panic<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

pub fn memory() -> Fixture {
    // A named store, so that caches with other prefixes share it (clear is scoped).
    Fixture::url("memory", Expect::FULL, "memory://contract-clock".into())
}

pub fn memory_lru() -> Fixture {
    let url = "memory://contract-lru?eviction=lru&max_entries=100000";
    Fixture::url("memory_lru", Expect::FULL, url.into())
}

pub fn dummy() -> Fixture {
    let expect = Expect {
        stores: false,
        ..Expect::FULL
    };
    Fixture::url("dummy", expect, "dummy://".into())
}

pub fn file() -> Fixture {
    let dir = Arc::new(polycache_testkit::TempDir::new("contract-file"));
    let url = format!("file://{}/cache", dir.path().display());
    Fixture::url("file", Expect::FULL, url).keep(dir)
}

pub fn sqlite() -> Fixture {
    let dir = Arc::new(polycache_testkit::TempDir::new("contract-sqlite"));
    let url = format!("sqlite://{}/contract.db", dir.path().display());
    Fixture::url("sqlite", Expect::FULL, url).keep(dir)
}

/// Each `sqlite://:memory:` cache is a database of its own: the caches of a run share one
/// backend, as caches with other prefixes share a table.
pub fn sqlite_memory() -> Fixture {
    let backend = Arc::clone(or_panic(Cache::open("sqlite://:memory:")).backend());
    Fixture {
        name: "sqlite_memory",
        expect: Expect::FULL,
        builder: Box::new(move || Cache::with_backend(Arc::clone(&backend))),
        settle: None,
        _keep: Vec::new(),
    }
}

pub fn postgres() -> Fixture {
    static SERVER: Slot<polycache_testkit::PostgresServer> = Mutex::new(None);
    let pg = shared!(SERVER, || {
        or_panic(polycache_testkit::PostgresServer::start())
    });
    Fixture::remote(
        "postgres",
        Expect::FULL,
        format!("{}?table=contract", pg.url()),
    )
    .keep(pg)
}

static REDIS: Slot<polycache_testkit::RedisServer> = Mutex::new(None);

fn redis_server() -> Arc<polycache_testkit::RedisServer> {
    shared!(REDIS, || or_panic(polycache_testkit::RedisServer::start()))
}

/// Redis' known deviations (see [`Deviation`]).
const REDIS_EXPECT: Expect = Expect {
    deviations: &[Deviation::PlusSignIsNotAnInteger],
    ..Expect::FULL
};

pub fn redis() -> Fixture {
    let redis = redis_server();
    Fixture::remote("redis", REDIS_EXPECT, redis.url()).keep(redis)
}

/// `rediss://` with a private CA; `None` when this `redis-server` was built without TLS.
pub fn redis_tls() -> Option<Fixture> {
    use polycache_testkit::{RedisOver, Transport};
    static TLS: Slot<Option<RedisOver>> = Mutex::new(None);
    let tls = shared!(TLS, || or_panic(RedisOver::start(Transport::Tls)));
    let url = tls.as_ref().as_ref()?.url();
    Some(Fixture::remote("redis_tls", REDIS_EXPECT, url).keep(tls))
}

pub fn redis_unix() -> Fixture {
    let redis = redis_server();
    Fixture::remote(
        "redis_unix",
        REDIS_EXPECT,
        format!("{}?db=1", redis.unix_url()),
    )
    .keep(redis)
}

/// A leader and a replica: writes go to the leader and reads to the replica, so every write
/// waits until the replica has it (replication is asynchronous; the contract is not).
pub fn redis_replicas() -> Fixture {
    static SET: Slot<polycache_testkit::RedisReplicaSet> = Mutex::new(None);
    let set = shared!(SET, || {
        or_panic(polycache_testkit::RedisReplicaSet::start())
    });
    let synced = Arc::clone(&set);
    let mut fixture = Fixture::remote("redis_replicas", REDIS_EXPECT, set.url()).keep(set);
    fixture.settle = Some(Arc::new(move || or_panic(synced.sync())));
    fixture
}

pub fn redis_cluster() -> Fixture {
    static CLUSTER: Slot<polycache_testkit::RedisCluster> = Mutex::new(None);
    let cluster = shared!(CLUSTER, || {
        or_panic(polycache_testkit::RedisCluster::start())
    });
    Fixture::remote("redis_cluster", REDIS_EXPECT, cluster.url()).keep(cluster)
}

/// A master found through three sentinels (`redis+sentinel://`), database 3.
pub fn redis_sentinel() -> Fixture {
    static SET: Slot<polycache_testkit::RedisSentinelSet> = Mutex::new(None);
    let set = shared!(SET, || {
        or_panic(polycache_testkit::RedisSentinelSet::start())
    });
    let url = set.url().replace("/mymaster/0", "/mymaster/3");
    Fixture::remote("redis_sentinel", REDIS_EXPECT, url).keep(set)
}

/// A tiered cache: a memory:// L1 over redis://, L1 copies dropped over Redis pub/sub.
pub fn tiered_redis() -> Fixture {
    tiered_over_redis("tiered_redis", "redis", 2)
}

/// A tiered cache whose L1 the Redis server keeps coherent (`bus=tracking`, RESP3
/// client-side caching).
pub fn tiered_tracking() -> Fixture {
    tiered_over_redis("tiered_tracking", "tracking", 4)
}

/// A memory:// L1 over database `db` of the shared redis://, with `bus`.
fn tiered_over_redis(name: &'static str, bus: &str, db: u8) -> Fixture {
    let redis = redis_server();
    let url = format!(
        "tiered://?l2={}&bus={bus}&l1_timeout=600",
        percent_encoding::utf8_percent_encode(
            &patient(format!("redis://127.0.0.1:{}/{db}", redis.port())),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    Fixture::url(name, REDIS_EXPECT, url).keep(redis)
}

static MEMCACHED: Slot<Vec<polycache_testkit::MemcachedServer>> = Mutex::new(None);

/// Two servers on a ketama ring, so many-key operations span servers.
fn memcached_servers() -> (Arc<Vec<polycache_testkit::MemcachedServer>>, String) {
    let servers = shared!(MEMCACHED, || {
        (0..2)
            .map(|_| or_panic(polycache_testkit::MemcachedServer::start()))
            .collect()
    });
    let hosts: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let url = format!("memcached://{}", hosts.join(","));
    (servers, url)
}

/// memcached: TTLs in whole seconds, items up to its item size (1 MiB), no `clear` of one
/// prefix without namespaces (documented), and two known deviations.
///
/// The short TTL is 2 s: memcached's clock ticks once a second, so an entry of TTL 1 s
/// lapses at the next tick, which may come at once (a 1 s lock that the next call no
/// longer owns); one of 2 s lives at least 1 s.
const MEMCACHED_EXPECT: Expect = Expect {
    stores: true,
    prefix_clear: false,
    ttl: Duration::from_secs(2),
    large: (1 << 20) - 1024,
    deviations: &[
        Deviation::UnsignedCounters,
        Deviation::OverflowStores,
        Deviation::LenientCounters,
        Deviation::PaddedCounters,
        Deviation::NoKeyListing,
    ],
    lifetime: true,
    extends: true,
};

pub fn memcached() -> Fixture {
    let (servers, url) = memcached_servers();
    Fixture::remote("memcached", MEMCACHED_EXPECT, url).keep(servers)
}

/// A server on a unix socket.
pub fn memcached_unix() -> Fixture {
    static SERVER: Slot<polycache_testkit::MemcachedServer> = Mutex::new(None);
    let mc = shared!(SERVER, || {
        or_panic(polycache_testkit::MemcachedServer::start_unix())
    });
    Fixture::remote("memcached_unix", MEMCACHED_EXPECT, mc.url()).keep(mc)
}

/// With `namespace=true`, `clear` is scoped to the prefix.
pub fn memcached_namespace() -> Fixture {
    let (servers, url) = memcached_servers();
    let expect = Expect {
        prefix_clear: true,
        ..MEMCACHED_EXPECT
    };
    Fixture::remote(
        "memcached_namespace",
        expect,
        format!("{url}?namespace=true"),
    )
    .keep(servers)
}

/// A custom backend: the trait's required methods over a map, its many-key operations left
/// to the trait's defaults; awaited through the blocking pool.
pub fn custom() -> Fixture {
    let backend = Arc::new(MapBackend::default());
    Fixture {
        name: "custom",
        expect: Expect {
            lifetime: false,
            deviations: &[Deviation::NoKeyListing],

            extends: false,
            ..Expect::FULL
        },
        builder: Box::new(move || Cache::with_backend(backend.clone())),
        settle: None,
        _keep: Vec::new(),
    }
}

type Entries = HashMap<Vec<u8>, (Vec<u8>, Option<Instant>)>;

/// The smallest useful custom backend: entries with optional deadlines in a map.
#[derive(Default)]
pub struct MapBackend(Mutex<Entries>);

impl MapBackend {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, deadline)| deadline.map_or(true, |d| d > now));
        entries
    }
}

fn deadline(ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|d| Instant::now() + d)
}

impl Backend for MapBackend {
    fn name(&self) -> &'static str {
        "map"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        Ok(self
            .entries()
            .get(key)
            .map(|(v, _)| Value::from(v.as_slice())))
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.entries()
            .insert(key.to_vec(), (value.to_vec(), deadline(ttl)));
        Ok(())
    }
    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let mut entries = self.entries();
        if entries.contains_key(key) {
            return Ok(false);
        }
        entries.insert(key.to_vec(), (value.to_vec(), deadline(ttl)));
        Ok(true)
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.entries().remove(key).is_some())
    }
    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        Ok(self
            .entries()
            .get_mut(key)
            .map(|(_, d)| *d = deadline(ttl))
            .is_some())
    }
    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let mut entries = self.entries();
        let (value, _) = entries.get_mut(key).ok_or_else(|| not_found(key))?;
        let n = apply_delta(value, delta)?;
        *value = n.to_string().into_bytes();
        Ok(n)
    }
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.entries().retain(|k, _| !k.starts_with(prefix));
        Ok(())
    }
}
