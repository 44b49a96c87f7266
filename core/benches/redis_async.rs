//! Awaited `get` on redis:// against raw redis-rs `MultiplexedConnection`, both on one
//! private server that testkit starts on a free loopback port, in the same run.
//!
//! Latency: one task awaiting one `GET` after another (µs per call). Throughput: 256 tasks
//! each awaiting `GET`s in a loop for a fixed count (calls per second). Also the sync `get`
//! of the same cache, for the decision recorded in docs/architecture.md, and the `get_async`
//! of a tagged entry against the untagged one (docs/refresh.md, Tags). Prints one table
//! with ratios; targets: latency ≤ 1.2× redis-rs, throughput ≥ 0.8× redis-rs.

use polycache::{Cache, Expiry};
use polycache_testkit::RedisServer;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const LATENCY_CALLS: usize = 5_000;
const TASKS: usize = 256;
const CALLS_PER_TASK: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The median of `ROUNDS` runs of `f` (seconds each).
fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut runs: Vec<Duration> = (0..ROUNDS).map(|_| f()).collect();
    runs.sort();
    runs[ROUNDS / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (cargo test --benches) just checks it runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (latency_calls, calls_per_task) = if quick {
        (50, 2)
    } else {
        (LATENCY_CALLS, CALLS_PER_TASK)
    };
    let server = RedisServer::start().expect("start redis-server");
    let rt = runtime();
    let cache = Cache::open(&server.url()).unwrap();
    cache.set("bench:key", &[b'x'; 100], Expiry::Never).unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let raw = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let full_key = String::from_utf8(cache.make_key("bench:key").unwrap()).unwrap();

    let ours_latency = median(|| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..latency_calls {
                std::hint::black_box(cache.get_async("bench:key").await.unwrap());
            }
            started.elapsed()
        })
    });
    let raw_latency = median(|| {
        let mut conn = raw.clone();
        let key = full_key.clone();
        rt.block_on(async move {
            let started = Instant::now();
            for _ in 0..latency_calls {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                std::hint::black_box(v);
            }
            started.elapsed()
        })
    });
    let sync_latency = median(|| {
        let started = Instant::now();
        for _ in 0..latency_calls {
            std::hint::black_box(cache.get("bench:key").unwrap());
        }
        started.elapsed()
    });

    // A tagged entry this handle wrote: its tag's version comes in the same request
    // (docs/refresh.md, Tags); the ratio to the untagged get is the cost of the tag.
    cache
        .set_tagged("bench:tagged", &[b'x'; 100], Expiry::Never, &["bench-tag"])
        .unwrap();
    let tagged_latency = median(|| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..latency_calls {
                std::hint::black_box(cache.get_async("bench:tagged").await.unwrap());
            }
            started.elapsed()
        })
    });
    // The floor of a one-request tagged read: one MGET of the entry and one more key.
    cache.set("bench:other", b"1", Expiry::Never).unwrap();
    let mget_latency = median(|| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..latency_calls {
                let keys = ["bench:key", "bench:other"];
                std::hint::black_box(cache.get_many_async(&keys, None).await.unwrap());
            }
            started.elapsed()
        })
    });

    let ours_throughput = median(|| {
        rt.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        for _ in 0..calls_per_task {
                            std::hint::black_box(cache.get_async("bench:key").await.unwrap());
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            started.elapsed()
        })
    });
    let raw_throughput = median(|| {
        rt.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let mut conn = raw.clone();
                    let key = full_key.clone();
                    tokio::spawn(async move {
                        for _ in 0..calls_per_task {
                            let v: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(&key)
                                .query_async(&mut conn)
                                .await
                                .unwrap();
                            std::hint::black_box(v);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            started.elapsed()
        })
    });

    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / latency_calls as f64;
    let per_sec = |d: Duration| (TASKS * calls_per_task) as f64 / d.as_secs_f64();
    println!("redis:// async get, 100-byte value, one local server (median of {ROUNDS} runs)");
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "", "polycache", "redis-rs", "ratio"
    );
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>7.2}x   (target <= 1.2x)",
        "1 task, µs per get_async",
        per_call(ours_latency),
        per_call(raw_latency),
        per_call(ours_latency) / per_call(raw_latency)
    );
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>7.2}x   (target >= 0.8x)",
        format!("{TASKS} tasks, gets per second"),
        per_sec(ours_throughput),
        per_sec(raw_throughput),
        per_sec(ours_throughput) / per_sec(raw_throughput)
    );
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>7.2}x   (sync get / async get)",
        "1 thread, µs per sync get vs get_async",
        per_call(sync_latency),
        per_call(ours_latency),
        per_call(sync_latency) / per_call(ours_latency)
    );
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>7.2}x   (tagged / untagged get_async)",
        "1 task, µs per get_async of a tagged entry",
        per_call(tagged_latency),
        per_call(ours_latency),
        per_call(tagged_latency) / per_call(ours_latency)
    );
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>7.2}x   (get_many_async / get_async)",
        "1 task, µs per get_many_async of 2 keys",
        per_call(mget_latency),
        per_call(ours_latency),
        per_call(mget_latency) / per_call(ours_latency)
    );
}
