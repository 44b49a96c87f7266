//! `memory://` get hits in a loop, for counting instructions per call under valgrind:
//! `valgrind --tool=callgrind target/release/examples/get_loop 200000`, built with and
//! without `--features otel` (docs/observability.md has the figures).

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let cache = polycache::Cache::open("memory://").unwrap();
    cache
        .set("key", b"0123456789abcdef", polycache::Expiry::Never)
        .unwrap();
    let mut found = 0usize;
    for _ in 0..n {
        found += cache
            .get(std::hint::black_box("key"))
            .unwrap()
            .map_or(0, |v| v.len());
    }
    assert_eq!(found as u64, 16 * n);
}
