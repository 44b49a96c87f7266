//! Client-side instructions per `get`+`set` pair on one scheme, sync and awaited, for
//! comparing two revisions of the connection layer without a quiet machine:
//!
//! ```text
//! cargo build --release -p polycache --features full --example path_cost
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='path_cost::sync_pairs' \
//!     target/release/examples/path_cost redis 2000
//! ```
//!
//! (`async_pairs` for the awaited twin). The count covers the calling thread's code only:
//! the server is another process, and the time spent waiting for it is not an instruction.
//! Schemes: `redis`, `memcached`, `postgres` (each a private server started by testkit),
//! `sqlite` (a temporary file), `memory`. docs/architecture.md has the figures.

use polycache::{Cache, Expiry};
use std::hint::black_box;

/// `n` gets and `n` sets, alternating between two keys.
#[inline(never)]
fn sync_pairs(cache: &Cache, n: usize) {
    for i in 0..n {
        let key = if i % 2 == 0 { "a" } else { "b" };
        black_box(cache.get(key).unwrap());
        black_box(cache.set(key, &[b'x'; 100], Expiry::Never).unwrap());
    }
}

/// As [`sync_pairs`], awaited on a current-thread runtime.
#[inline(never)]
fn async_pairs(rt: &tokio::runtime::Runtime, cache: &Cache, n: usize) {
    rt.block_on(async {
        for i in 0..n {
            let key = if i % 2 == 0 { "a" } else { "b" };
            black_box(cache.get_async(key).await.unwrap());
            black_box(
                cache
                    .set_async(key, &[b'x'; 100], Expiry::Never)
                    .await
                    .unwrap(),
            );
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let scheme = args.next().unwrap_or_else(|| "memory".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let dir = std::env::temp_dir().join(format!("polycache-path-cost-{}", std::process::id()));
    let (mut redis, mut memcached, mut postgres) = (None, None, None);
    let url = match scheme.as_str() {
        "redis" => redis
            .insert(polycache_testkit::RedisServer::start().unwrap())
            .url(),
        "memcached" => memcached
            .insert(polycache_testkit::MemcachedServer::start().unwrap())
            .url(),
        "postgres" => postgres
            .insert(polycache_testkit::PostgresServer::start().unwrap())
            .url(),
        "sqlite" => format!("sqlite://{}", dir.join("cache.db").display()),
        "memory" => "memory://".into(),
        other => panic!("unknown scheme {other}: redis, memcached, postgres, sqlite, memory"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let cache = Cache::open(&url).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Connections opened and statements prepared before counting.
    sync_pairs(&cache, 3);
    async_pairs(&rt, &cache, 3);
    sync_pairs(&cache, n);
    async_pairs(&rt, &cache, n);
    drop(cache);
    let _ = std::fs::remove_dir_all(&dir);
    drop((redis, memcached, postgres));
}
