//! The memory backend against the bare map it is built on and against moka.
//!
//! Speed: criterion groups `get_hit`, `get_miss`, `set`, `incr`, `get_many`, each with `polycache` (the
//! full `Cache` call: key building, expiry check, stats), `quick_cache` (the bare map with
//! the same full key) and `moka` (the alternative DESIGN.md names). `get_hit` also times a
//! tiered cache whose L1 holds the key (target: at most 1.5x the plain `Cache::get`), and
//! every group times the exact LRU mode (`eviction=lru`, one lock) too. `make bench` prints the
//! ratios from criterion's estimates. Hit ratio: printed first, on a Zipf(0.9) trace with the
//! cache at 10% of the key space, and on the same trace interleaved with a one-off scan.

use criterion::{criterion_group, BenchmarkId, Criterion};
use polycache::backend::memory::{Eviction, MemoryBackend, MemoryOptions};
use polycache::{Backend, Cache, Expiry};
use rand::{rngs::SmallRng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "bench:key";
const FULL_KEY: &[u8] = b":1:bench:key";
const VALUE: &[u8] = b"0123456789abcdef";

fn polycache() -> Cache {
    Cache::open("memory://?max_entries=100000").unwrap()
}

/// The exact LRU mode with Django's cull.
fn polycache_lru() -> Cache {
    Cache::open("memory://?max_entries=100000&cull_frequency=3").unwrap()
}

type Bare = quick_cache::sync::Cache<Box<[u8]>, Arc<[u8]>>;

fn bare() -> Bare {
    Bare::new(100_000)
}

fn moka_cache() -> moka::sync::Cache<Box<[u8]>, Arc<[u8]>> {
    moka::sync::Cache::new(100_000)
}

fn bench_get_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_hit");
    let p = polycache();
    p.set(KEY, VALUE, Expiry::Default).unwrap();
    g.bench_function(BenchmarkId::new("polycache", "Cache::get"), |b| {
        b.iter(|| black_box(p.get(black_box(KEY)).unwrap()))
    });
    // The lent read: the closure sees the stored bytes (here, their length).
    g.bench_function(BenchmarkId::new("polycache", "Cache::get_with"), |b| {
        b.iter(|| black_box(p.get_with(black_box(KEY), |v| v.len()).unwrap()))
    });
    let lru = polycache_lru();
    lru.set(KEY, VALUE, Expiry::Default).unwrap();
    g.bench_function(BenchmarkId::new("polycache", "Cache::get lru"), |b| {
        b.iter(|| black_box(lru.get(black_box(KEY)).unwrap()))
    });
    // A tiered cache whose L1 holds the key: the target is at most 1.5x a plain memory get.
    let t = Cache::builder_tiered("memory://?max_entries=100000", "memory://bench-tiered-l2")
        .build()
        .unwrap();
    t.set(KEY, VALUE, Expiry::Default).unwrap();
    g.bench_function(BenchmarkId::new("polycache", "tiered L1 hit"), |b| {
        b.iter(|| black_box(t.get(black_box(KEY)).unwrap()))
    });
    let q = bare();
    q.insert(FULL_KEY.into(), VALUE.into());
    g.bench_function(BenchmarkId::new("quick_cache", "bare get"), |b| {
        b.iter(|| black_box(q.get(black_box(FULL_KEY))))
    });
    let m = moka_cache();
    m.insert(FULL_KEY.into(), VALUE.into());
    g.bench_function(BenchmarkId::new("moka", "bare get"), |b| {
        b.iter(|| black_box(m.get(black_box(FULL_KEY))))
    });
    g.finish();
}

fn bench_get_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_miss");
    let p = polycache();
    g.bench_function(BenchmarkId::new("polycache", "Cache::get"), |b| {
        b.iter(|| black_box(p.get(black_box(KEY)).unwrap()))
    });
    let lru = polycache_lru();
    g.bench_function(BenchmarkId::new("polycache", "Cache::get lru"), |b| {
        b.iter(|| black_box(lru.get(black_box(KEY)).unwrap()))
    });
    let q = bare();
    g.bench_function(BenchmarkId::new("quick_cache", "bare get"), |b| {
        b.iter(|| black_box(q.get(black_box(FULL_KEY))))
    });
    let m = moka_cache();
    g.bench_function(BenchmarkId::new("moka", "bare get"), |b| {
        b.iter(|| black_box(m.get(black_box(FULL_KEY))))
    });
    g.finish();
}

fn bench_set(c: &mut Criterion) {
    let mut g = c.benchmark_group("set");
    let p = polycache();
    g.bench_function(BenchmarkId::new("polycache", "Cache::set"), |b| {
        b.iter(|| {
            p.set(black_box(KEY), black_box(VALUE), Expiry::Default)
                .unwrap()
        })
    });
    let lru = polycache_lru();
    g.bench_function(BenchmarkId::new("polycache", "Cache::set lru"), |b| {
        b.iter(|| {
            lru.set(black_box(KEY), black_box(VALUE), Expiry::Default)
                .unwrap()
        })
    });
    let q = bare();
    g.bench_function(BenchmarkId::new("quick_cache", "bare insert"), |b| {
        b.iter(|| q.insert(black_box(FULL_KEY).into(), black_box(VALUE).into()))
    });
    let m = moka_cache();
    g.bench_function(BenchmarkId::new("moka", "bare insert"), |b| {
        b.iter(|| m.insert(black_box(FULL_KEY).into(), black_box(VALUE).into()))
    });
    g.finish();
}

fn bench_incr(c: &mut Criterion) {
    let mut g = c.benchmark_group("incr");
    let p = polycache();
    p.set(KEY, b"0", Expiry::Never).unwrap();
    g.bench_function(BenchmarkId::new("polycache", "Cache::incr"), |b| {
        b.iter(|| black_box(p.incr(black_box(KEY), 1).unwrap()))
    });
    let lru = polycache_lru();
    lru.set(KEY, b"0", Expiry::Never).unwrap();
    g.bench_function(BenchmarkId::new("polycache", "Cache::incr lru"), |b| {
        b.iter(|| black_box(lru.incr(black_box(KEY), 1).unwrap()))
    });
    // The bare equivalent: parse, add and re-render the decimal under the shard lock.
    let q: quick_cache::sync::Cache<Vec<u8>, Arc<[u8]>> = quick_cache::sync::Cache::new(100_000);
    q.insert(FULL_KEY.to_vec(), b"0".as_slice().into());
    g.bench_function(BenchmarkId::new("quick_cache", "bare entry+parse"), |b| {
        b.iter(|| {
            q.entry(black_box(FULL_KEY), None, |_, v| {
                let n: i64 = std::str::from_utf8(v).unwrap().parse::<i64>().unwrap() + 1;
                *v = n.to_string().as_bytes().into();
                quick_cache::sync::EntryAction::Retain(n)
            })
        })
    });
    g.finish();
}

fn bench_get_many(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_many");
    let names: Vec<String> = (0..100).map(|i| format!("bench:key-{i}")).collect();
    let keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = polycache();
    for k in &keys {
        p.set(*k, VALUE, Expiry::Default).unwrap();
    }
    g.bench_function(BenchmarkId::new("polycache", "Cache::get_many 100"), |b| {
        b.iter(|| black_box(p.get_many(black_box(&keys), None).unwrap()))
    });
    // The bare equivalent: each full key (built beforehand) looked up.
    let q = bare();
    let full: Vec<Box<[u8]>> = keys
        .iter()
        .map(|k| format!(":1:{k}").into_bytes().into())
        .collect();
    for k in &full {
        q.insert(k.clone(), VALUE.into());
    }
    g.bench_function(BenchmarkId::new("quick_cache", "bare get 100"), |b| {
        b.iter(|| {
            let found: Vec<Option<Arc<[u8]>>> = black_box(&full).iter().map(|k| q.get(k)).collect();
            black_box(found)
        })
    });
    g.finish();
}

/// Hit ratios of quick_cache (through polycache's memory backend) and moka on a Zipf trace.
fn print_hit_ratios() {
    const KEYS: usize = 100_000;
    const ACCESSES: usize = 1_000_000;
    let capacity = (KEYS / 10) as u64;
    let zipf = Zipf::new(KEYS as f64, 0.9).unwrap();
    let mut rng = SmallRng::seed_from_u64(42);
    let trace: Vec<u64> = (0..ACCESSES)
        .map(|_| zipf.sample(&mut rng) as u64)
        .collect();
    // The same trace with a one-off scan of never-repeated keys every 10th access.
    let mut scan_id = KEYS as u64 * 10;
    let scanned: Vec<u64> = trace
        .iter()
        .enumerate()
        .flat_map(|(i, &k)| {
            let extra = if i % 10 == 0 {
                scan_id += 1;
                Some(scan_id)
            } else {
                None
            };
            std::iter::once(k).chain(extra)
        })
        .collect();

    let run_poly = |trace: &[u64], options: MemoryOptions| {
        let m = MemoryBackend::new(&options.max_entries(capacity)).unwrap();
        let mut hits = 0usize;
        for k in trace {
            let key = k.to_le_bytes();
            if m.get(&key).unwrap().is_some() {
                hits += 1;
            } else {
                m.set(&key, b"v", None).unwrap();
            }
        }
        hits as f64 / trace.len() as f64
    };
    let run_moka = |trace: &[u64]| {
        let m: moka::sync::Cache<u64, ()> = moka::sync::Cache::new(capacity);
        let mut hits = 0usize;
        for k in trace {
            if m.get(k).is_some() {
                hits += 1;
            } else {
                m.insert(*k, ());
            }
        }
        hits as f64 / trace.len() as f64
    };
    println!("hit ratio, Zipf(s=0.9) over {KEYS} keys, {ACCESSES} accesses, cache of {capacity} entries:");
    let lru = || MemoryOptions::default().eviction(Eviction::Lru);
    for (name, trace) in [("zipf     ", &trace), ("zipf+scan", &scanned)] {
        let (p, m) = (run_poly(trace, MemoryOptions::default()), run_moka(trace));
        let l = run_poly(trace, lru());
        println!("  {name}  polycache(quick_cache) {:6.2}%   moka(TinyLFU) {:6.2}%   difference {:+.2} points   polycache eviction=lru {:6.2}%", p * 100.0, m * 100.0, (p - m) * 100.0, l * 100.0);
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = speed;
    config = config();
    targets = bench_get_hit, bench_get_miss, bench_set, bench_incr, bench_get_many
}

fn main() {
    print_hit_ratios();
    speed();
    Criterion::default().configure_from_args().final_summary();
}
