//! Bytes of memory per entry beyond key and value bytes, for 1,000,000 entries in memory://.
//!
//! Run by `make bench`; reads the resident set size from /proc/self/statm (Linux).

use polycache::{Cache, Expiry};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> polycache::Result<()> {
    const N: usize = 1_000_000;
    let cache = Cache::open("memory://?max_entries=1100000")?;
    let keys: Vec<String> = (0..N).map(|i| format!("key:{i:08}")).collect();
    let value = [b'v'; 16];
    let full_key_len = cache.make_key(keys[0].as_str())?.len();
    let before = rss_bytes();
    for k in &keys {
        cache.set(k.as_str(), &value, Expiry::Never)?;
    }
    let after = rss_bytes();
    let payload = (full_key_len + value.len()) as u64;
    let per_entry = (after - before) as f64 / N as f64;
    println!(
        "memory:// with {N} entries: {per_entry:.0} bytes/entry resident, {:.0} beyond the {payload} key+value bytes",
        per_entry - payload as f64
    );
    Ok(())
}
