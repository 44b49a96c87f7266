//! The Rust side of `bench/c/run.sh`: the same loop as `bench/c/bench_get.c`, through
//! `polycache::Cache` directly, so the table shows what the C ABI adds per call.
//!
//! `cargo run -p polycache-ffi --release --example bench_get [N]` prints `op ns_per_op` lines.

use polycache::{Cache, Expiry};
use std::hint::black_box;
use std::time::Instant;

const KEY: &str = "bench:key";
const VALUE: &[u8; 16] = b"0123456789abcdef";
const ROUNDS: usize = 3;

/// The best of `ROUNDS` timings of `n` calls of `op`, in nanoseconds per call.
fn best_ns_per_op(n: u64, mut op: impl FnMut() -> usize) -> f64 {
    let mut best = f64::INFINITY;
    let mut sink = 0usize;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..n {
            sink = sink.wrapping_add(op());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    black_box(sink);
    best
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let cache = Cache::open("memory://").expect("open memory://");
    cache.set(KEY, VALUE, Expiry::Default).expect("set");

    // Warm up caches and the branch predictor.
    best_ns_per_op(n / 10, || {
        cache.get(black_box(KEY)).unwrap().map_or(0, |v| v.len())
    });

    let get = best_ns_per_op(n, || {
        cache.get(black_box(KEY)).unwrap().map_or(0, |v| v.len())
    });
    let set = best_ns_per_op(n, || {
        cache
            .set(black_box(KEY), black_box(VALUE), Expiry::Default)
            .unwrap();
        1
    });
    println!("get {get:.1}");
    println!("set {set:.1}");
}
