//! The cost of signed and compressed values on memory:// `get` and `set`.
//!
//! Groups `security_get` and `security_set`, peers `plain` (the baseline: values stored as
//! given), `signed` (HMAC-SHA256), `compressed` (zstd level 3, values of 64 bytes and more)
//! and `signed+compressed`, each on a 100-byte and a 10 KiB value of repetitive text. `make
//! bench` prints each row's ratio to `plain` in the same run.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use polycache::{Cache, Expiry};
use std::hint::black_box;
use std::time::Duration;

fn caches() -> [(&'static str, Cache); 4] {
    let url = "memory://?max_entries=100000";
    let b = || Cache::builder(url);
    [
        ("plain", b().build().unwrap()),
        ("signed", b().signing_key("bench-key").build().unwrap()),
        (
            "compressed",
            b().compress_min_size(Some(64)).build().unwrap(),
        ),
        (
            "signed+compressed",
            b().signing_key("bench-key")
                .compress_min_size(Some(64))
                .build()
                .unwrap(),
        ),
    ]
}

fn values() -> [(&'static str, Vec<u8>); 2] {
    let text = b"polycache keeps values of every size; ".repeat(300);
    [
        ("100 B", text[..100].to_vec()),
        ("10 KiB", text[..10_240].to_vec()),
    ]
}

fn bench_get(c: &mut Criterion) {
    let mut g = c.benchmark_group("security_get");
    for (size, value) in values() {
        for (peer, cache) in caches() {
            cache.set("k", &value, Expiry::Never).unwrap();
            g.bench_function(BenchmarkId::new(peer, size), |b| {
                b.iter(|| black_box(cache.get(black_box("k")).unwrap()))
            });
        }
    }
    g.finish();
}

fn bench_set(c: &mut Criterion) {
    let mut g = c.benchmark_group("security_set");
    for (size, value) in values() {
        for (peer, cache) in caches() {
            g.bench_function(BenchmarkId::new(peer, size), |b| {
                b.iter(|| black_box(cache.set(black_box("k"), &value, Expiry::Never).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    targets = bench_get, bench_set
}
criterion_main!(benches);
