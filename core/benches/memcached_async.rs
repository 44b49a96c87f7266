//! memcached:// awaited natively (one pipelined connection per server) against the same
//! backend's blocking calls and against awaiting it through the blocking pool (what
//! `Cache::*_async` did before the native side), all in one run on one local memcached.
//!
//! Prints µs per `get` for one caller at a time, and `get`s per second for 256 concurrent
//! callers (async tasks on a 2-worker runtime; 16 threads for the blocking calls), with the
//! ratios. `cargo bench -p polycache --bench memcached_async`.

use polycache::backend::memcached::MemcachedBackend;
use polycache::backend::OnBlockingPool;
use polycache::{AsyncBackend, Backend, Location, Options};
use polycache_testkit::MemcachedServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &[u8] = b":1:bench:key";
const VALUE: &[u8] = &[b'v'; 100];
const SEQUENTIAL: usize = 20_000;
const CONCURRENT_TASKS: usize = 256;
const PER_TASK: usize = 200;
const THREADS: usize = 16;

fn backend(url: &str) -> Arc<MemcachedBackend> {
    let loc = Location::parse(url).unwrap();
    let mut opts = Options::new(&loc);
    let b = MemcachedBackend::open(&loc, &mut opts).unwrap();
    opts.finish().unwrap();
    Arc::new(b)
}

fn per_call(elapsed: Duration, calls: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / calls as f64
}

fn per_second(elapsed: Duration, calls: usize) -> f64 {
    calls as f64 / elapsed.as_secs_f64()
}

/// `get`s from `CONCURRENT_TASKS` tasks at once through `backend`; the time they took.
async fn concurrent(backend: Arc<dyn AsyncBackend>) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|_| {
            let b = Arc::clone(&backend);
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    assert!(b.get(KEY).await.unwrap().is_some());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn main() {
    let server = MemcachedServer::start().expect("start memcached");
    let native = backend(&server.url());
    let pooled: Arc<dyn AsyncBackend> = Arc::new(OnBlockingPool(native.clone()));
    Backend::set(&*native, KEY, VALUE, None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Warm up every path (connections, the runtime, the blocking pool's threads).
    rt.block_on(async {
        for _ in 0..1_000 {
            AsyncBackend::get(&*native, KEY).await.unwrap();
            pooled.get(KEY).await.unwrap();
        }
    });

    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        assert!(Backend::get(&*native, KEY).unwrap().is_some());
    }
    let sync_one = per_call(started.elapsed(), SEQUENTIAL);
    let (native_one, pooled_one) = rt.block_on(async {
        let started = Instant::now();
        for _ in 0..SEQUENTIAL {
            assert!(AsyncBackend::get(&*native, KEY).await.unwrap().is_some());
        }
        let native_one = per_call(started.elapsed(), SEQUENTIAL);
        let started = Instant::now();
        for _ in 0..SEQUENTIAL {
            assert!(pooled.get(KEY).await.unwrap().is_some());
        }
        (native_one, per_call(started.elapsed(), SEQUENTIAL))
    });

    let calls = CONCURRENT_TASKS * PER_TASK;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..calls / THREADS {
                    assert!(Backend::get(&*native, KEY).unwrap().is_some());
                }
            });
        }
    });
    let sync_many = per_second(started.elapsed(), calls);
    let native_dyn: Arc<dyn AsyncBackend> = native.clone();
    let native_many = per_second(rt.block_on(concurrent(native_dyn)), calls);
    let pooled_many = per_second(rt.block_on(concurrent(pooled)), calls);

    println!("memcached:// get, 100-byte value, one local memcached");
    println!("one caller, µs per get:");
    println!("  blocking call          {sync_one:8.1}");
    println!(
        "  awaited, native        {native_one:8.1}   ({:.2}x the blocking call)",
        native_one / sync_one
    );
    println!(
        "  awaited, blocking pool {pooled_one:8.1}   (native is {:.2}x of it)",
        native_one / pooled_one
    );
    println!("{CONCURRENT_TASKS} concurrent callers, gets per second:");
    println!("  blocking calls, {THREADS} threads {sync_many:10.0}");
    println!(
        "  awaited, native          {native_many:10.0}   ({:.2}x the blocking calls)",
        native_many / sync_many
    );
    println!(
        "  awaited, blocking pool   {pooled_many:10.0}   (native is {:.2}x of it)",
        native_many / pooled_many
    );
}
