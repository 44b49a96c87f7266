//! What a postgres:// `get` (hit) and `set` of a 16-byte value cost, sync and awaited.
//!
//! Rows, in µs per call (best of 5 rounds of 2,000 calls, one connection's worth of keys
//! cycling through 1,000 of 10,000 present entries):
//! - `sync`: the blocking API, as Django and C callers use it;
//! - `sync via runtime`: the same call submitted to polycache's runtime as an awaited
//!   operation, the calling thread waiting for its result (what the sync API would cost if
//!   it rode on the async implementation);
//! - `awaited`: the async API awaited on a current-thread runtime.
//!
//! Each row also prints its ratio to `sync` measured in the same run. Against the server
//! in `POLYCACHE_BENCH_PG_URL`, else a private one started on a free loopback port.
//!
//! Run: `cargo bench -p polycache --bench postgres`

use polycache::{Cache, Expiry};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PRESENT: usize = 10_000;
const CYCLE: usize = 1_000;
const CALLS: usize = 2_000;
const ROUNDS: usize = 5;
const VALUE: &[u8] = b"abcdefghijklmnop";

/// µs per call of `call(i)` for `CALLS` calls, best of `ROUNDS`.
fn best(mut call: impl FnMut(usize)) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for i in 0..CALLS {
                call(i);
            }
            started.elapsed()
        })
        .min()
        .map_or(0.0, |d: Duration| d.as_secs_f64() * 1e6 / CALLS as f64)
}

/// Runs `future` on polycache's runtime and waits for it on this thread.
fn via_runtime<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    polycache::runtime::handle().unwrap().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server;
    let base = match std::env::var("POLYCACHE_BENCH_PG_URL") {
        Ok(url) => url,
        Err(_) => {
            server = polycache_testkit::PostgresServer::start().unwrap();
            server.url()
        }
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let cache = Cache::open(&format!("{base}{sep}table=bench_pg&pool_size=4")).unwrap();
    let keys: Vec<String> = (0..PRESENT).map(|i| format!("key-{i:05}")).collect();
    for k in &keys {
        cache.set(k, VALUE, Expiry::Never).unwrap();
    }
    let key = |i: usize| keys[(i * 7) % CYCLE].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (op, is_get) in [("get", true), ("set", false)] {
        let sync = best(|i| {
            if is_get {
                black_box(cache.get(&key(i)).unwrap());
            } else {
                black_box(cache.set(&key(i), VALUE, Expiry::Never).unwrap());
            }
        });
        let via = best(|i| {
            let (c, k) = (cache.clone(), key(i));
            if is_get {
                black_box(via_runtime(async move { c.get_async(&k).await.unwrap() }));
            } else {
                black_box(via_runtime(async move {
                    c.set_async(&k, VALUE, Expiry::Never).await.unwrap()
                }));
            }
        });
        let awaited = best(|i| {
            let k = key(i);
            if is_get {
                black_box(rt.block_on(cache.get_async(&k)).unwrap());
            } else {
                black_box(
                    rt.block_on(cache.set_async(&k, VALUE, Expiry::Never))
                        .unwrap(),
                );
            }
        });
        println!("{op:>4} sync              {sync:8.1} µs  1.00");
        println!("{op:>4} sync via runtime  {via:8.1} µs  {:.2}", via / sync);
        println!(
            "{op:>4} awaited           {awaited:8.1} µs  {:.2}",
            awaited / sync
        );
    }
}
