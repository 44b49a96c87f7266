//! Instructions of one `memory://` get hit, with each thing the cache adds over the bare map
//! turned off in turn, so that callgrind can split the difference by feature:
//!
//! ```text
//! cargo build --release -p polycache --example get_cost
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='get_cost::gets' \
//!     target/release/examples/get_cost default 100000
//! ```
//!
//! and the same with each other variant; the total divided by the count is one get.
//! `get_cost time 200000` runs every variant natively instead, 200,000 gets at a time, in
//! turn for 15 rounds, and prints the best round's nanoseconds per get of each: what each
//! feature costs in time, which is not always what it costs in instructions.
//! Variants:
//!
//! - `default`: `Cache::get` of a name, the entry under the cache's default TTL (the
//!   `get_hit` bench row);
//! - `no-ttl`: the same, the entry stored without a deadline (`Expiry::Never`);
//! - `no-histograms`: the same with `latency_histograms=off` (the counters stay);
//! - `fail-open`: the same with `fail_open=true`;
//! - `long-value`: the default with a 64-byte value, which a `Value` shares with the entry
//!   (a reference counted and given back) instead of copying it as it does the default's
//!   16 bytes ([`polycache::Value::INLINE_MAX`]);
//! - `lent`: the default through `Cache::get_with` (the value lent to a closure, as every
//!   Python `get` reads), not `Cache::get`;
//! - `tiered`: the default on a tiered cache whose `memory://` L1 holds the key (L2 another
//!   `memory://`), the `get_hit/tiered L1 hit` bench row; `tiered-lent` the same lent;
//! - `full-key`: the default with a [`Key::full`] key, so no prefix or version is joined;
//! - `dyn-backend`: the store's `get` through `&dyn Backend` with the full key (no `Cache`;
//!   the path of callers that hold the trait object, such as a tiered cache's L1);
//! - `backend`: the store's `get` called directly (a `memory://` `Cache` reads its store
//!   this way, with the lookup inlined into `Cache::get`);
//! - `bare`: `quick_cache::sync::Cache<Box<[u8]>, Arc<[u8]>>`, the bench's bare map.
//!
//! docs/backends/memory.md ("What the cache adds over the bare map") has the figures.

use polycache::backend::memory::{MemoryBackend, MemoryOptions};
use polycache::{Backend, Cache, Expiry, Key};
use std::hint::black_box;
use std::sync::Arc;

const NAME: &str = "bench:key";
const FULL_KEY: &[u8] = b":1:bench:key";
const VALUE: &[u8] = b"0123456789abcdef";
const LONG_VALUE: &[u8] = &[b'v'; 64];

/// What one iteration reads.
enum Reader {
    Cache(Cache, bool),
    Lent(Cache),
    Dyn(Arc<dyn Backend>),
    Direct(MemoryBackend),
    Bare(quick_cache::sync::Cache<Box<[u8]>, Arc<[u8]>>),
}

/// `n` hits of one key.
#[inline(never)]
fn gets(reader: &Reader, n: usize) {
    match reader {
        Reader::Cache(cache, false) => (0..n).for_each(|_| {
            black_box(cache.get(black_box(NAME)).unwrap());
        }),
        Reader::Cache(cache, true) => (0..n).for_each(|_| {
            black_box(cache.get(Key::full(black_box(NAME))).unwrap());
        }),
        Reader::Lent(cache) => (0..n).for_each(|_| {
            black_box(cache.get_with(black_box(NAME), |v| v.len()).unwrap());
        }),
        Reader::Dyn(backend) => (0..n).for_each(|_| {
            black_box(backend.get(black_box(FULL_KEY)).unwrap());
        }),
        Reader::Direct(backend) => (0..n).for_each(|_| {
            black_box(backend.get(black_box(FULL_KEY)).unwrap());
        }),
        Reader::Bare(map) => (0..n).for_each(|_| {
            black_box(map.get(black_box(FULL_KEY)));
        }),
    }
}

fn cache(query: &str, expiry: Expiry, key: Key<'_>) -> Cache {
    cache_of(query, expiry, key, VALUE)
}

fn cache_of(query: &str, expiry: Expiry, key: Key<'_>, value: &[u8]) -> Cache {
    let cache = Cache::open(&format!("memory://?max_entries=100000{query}")).unwrap();
    cache.set(key, value, expiry).unwrap();
    cache
}

/// A tiered cache whose `memory://` L1 holds the default's entry, over the L2 at `l2`.
fn tiered(l2: &str) -> Cache {
    let cache = Cache::builder_tiered("memory://?max_entries=100000", l2)
        .build()
        .unwrap();
    cache.set(NAME, VALUE, Expiry::Default).unwrap();
    cache
}

/// The variants, in the order `time` prints them.
const VARIANTS: [&str; 12] = [
    "bare",
    "backend",
    "dyn-backend",
    "full-key",
    "no-histograms",
    "no-ttl",
    "fail-open",
    "default",
    "long-value",
    "tiered",
    "lent",
    "tiered-lent",
];

fn reader(variant: &str) -> Option<Reader> {
    let name = Key::new(NAME);
    Some(match variant {
        "default" => Reader::Cache(cache("", Expiry::Default, name), false),
        "no-ttl" => Reader::Cache(cache("", Expiry::Never, name), false),
        "no-histograms" => Reader::Cache(
            cache("&latency_histograms=off", Expiry::Default, name),
            false,
        ),
        "fail-open" => Reader::Cache(cache("&fail_open=true", Expiry::Default, name), false),
        "long-value" => Reader::Cache(cache_of("", Expiry::Default, name, LONG_VALUE), false),
        "full-key" => Reader::Cache(cache("", Expiry::Default, Key::full(NAME)), true),
        "tiered" => Reader::Cache(tiered("memory://get-cost-l2"), false),
        "lent" => Reader::Lent(cache("", Expiry::Default, name)),
        "tiered-lent" => Reader::Lent(tiered("memory://get-cost-l2-lent")),
        "dyn-backend" | "backend" => {
            let backend =
                MemoryBackend::new(&MemoryOptions::default().max_entries(100_000)).unwrap();
            let ttl = Some(polycache::DEFAULT_TIMEOUT);
            backend.set(FULL_KEY, VALUE, ttl).unwrap();
            if variant == "backend" {
                Reader::Direct(backend)
            } else {
                Reader::Dyn(Arc::new(backend))
            }
        }
        "bare" => {
            let map = quick_cache::sync::Cache::new(100_000);
            map.insert(FULL_KEY.into(), VALUE.into());
            Reader::Bare(map)
        }
        _ => return None,
    })
}

/// `time N`: every variant, `n` gets at a time, in turn for 15 rounds; the best round's
/// nanoseconds per get of each, and its ratio to `bare`.
fn time_all(n: usize) {
    let readers: Vec<(&str, Reader)> = VARIANTS
        .iter()
        .map(|&v| (v, reader(v).expect("a known variant")))
        .collect();
    let mut best = vec![f64::INFINITY; readers.len()];
    for _ in 0..15 {
        for ((_, reader), best) in readers.iter().zip(&mut best) {
            let start = std::time::Instant::now();
            gets(reader, n);
            *best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    for ((variant, _), ns) in readers.iter().zip(&best) {
        println!(
            "{variant:14} {ns:6.1} ns per get  {:.2}x bare",
            ns / best[0]
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "default".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    if variant == "time" {
        return time_all(n);
    }
    let Some(reader) = reader(&variant) else {
        eprintln!("unknown variant {variant:?}: time, {}", VARIANTS.join(", "));
        std::process::exit(2);
    };
    gets(&reader, n);
    println!("{variant}: {n} gets");
}
