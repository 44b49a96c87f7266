use polycache::{Cache, Expiry, Key};
use std::time::Duration;

fn main() -> polycache::Result<()> {
    // Open a cache from a URL; the builder adds a key prefix, version and default TTL.
    let cache = Cache::builder("memory://?max_entries=10000")
        .key_prefix("app")
        .default_timeout(Some(Duration::from_secs(300)))
        .build()?;

    cache.set("greeting", b"hello", Expiry::Default)?;
    assert_eq!(cache.get("greeting")?.as_deref(), Some(&b"hello"[..]));
    // Or lend the value to a closure: memory:// hands over its own bytes, with no copy.
    assert_eq!(cache.get_with("greeting", |v| v.len())?, Some(5));

    // Integers are ASCII decimal, so incr is atomic and native on every backend.
    cache.set("visits", b"41", Expiry::Never)?;
    assert_eq!(cache.incr("visits", 1)?, 42);

    // Compute on a miss only.
    let report = cache.get_or_set(
        "report",
        || Ok(b"expensive".to_vec()),
        Expiry::After(Duration::from_secs(60)),
    )?;
    assert_eq!(&*report, b"expensive");

    // A per-call version, as Django's `version=` argument.
    cache.set(Key::new("greeting").version(2), b"bonjour", Expiry::Default)?;

    let stats = cache.stats();
    println!(
        "hits={} misses={} sets={}",
        stats.hits, stats.misses, stats.sets
    );
    Ok(())
}
