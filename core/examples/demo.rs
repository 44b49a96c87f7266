//! `make demo`: a slow function memoized through a `memory://` cache, then the statistics.

use polycache::{Cache, Expiry};
use std::time::{Duration, Instant};

/// Pretends to be an expensive computation (a report, a remote call).
fn slow_square(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    n * n
}

fn main() -> Result<(), polycache::Error> {
    let cache = Cache::builder("memory://?max_entries=10000")
        .key_prefix("demo")
        .build()?;
    println!(
        "polycache demo on {} (key prefix {:?})\n",
        cache.location(),
        cache.key_prefix()
    );

    for round in 1..=2 {
        let started = Instant::now();
        for n in [3u64, 4, 5, 3, 4] {
            let key = format!("square:{n}");
            let value = cache.get_or_set(
                key.as_str(),
                || Ok(slow_square(n).to_string().into_bytes()),
                Expiry::After(Duration::from_secs(60)),
            )?;
            print!("{n}² = {}  ", String::from_utf8_lossy(&value));
        }
        println!("\nround {round}: {:?}", started.elapsed());
    }

    cache.set("visits", b"0", Expiry::Never)?;
    for _ in 0..10 {
        cache.incr("visits", 1)?;
    }
    println!("visits counted with incr: {}", cache.incr("visits", 0)?);

    let s = cache.stats();
    println!(
        "\nstats: hits={} misses={} sets={} deletes={} errors={} evictions={} (hit ratio {:.0}%)",
        s.hits,
        s.misses,
        s.sets,
        s.deletes,
        s.errors,
        s.evictions,
        s.hit_ratio() * 100.0
    );
    Ok(())
}
