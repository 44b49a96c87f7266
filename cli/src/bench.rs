//! `bench`: the latency (p50, p99) and throughput of one caller's gets and sets.

use crate::{show, Console, Outcome};
use polycache::{Cache, Expiry, Key};
use serde_json::json;
use std::time::{Duration, Instant};

/// The latencies of one kind of call.
struct Figures {
    p50: Duration,
    p99: Duration,
    ops_per_sec: f64,
}

impl Figures {
    fn of(mut latencies: Vec<Duration>, total: Duration) -> Figures {
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
            latencies[i - 1]
        };
        Figures {
            p50: at(0.50),
            p99: at(0.99),
            ops_per_sec: latencies.len() as f64 / total.as_secs_f64().max(1e-9),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "p50_ms": self.p50.as_secs_f64() * 1000.0,
            "p99_ms": self.p99.as_secs_f64() * 1000.0,
            "ops_per_sec": self.ops_per_sec.round(),
        })
    }
}

/// Times `op` on each key, one call at a time.
fn measure(
    keys: &[String],
    mut op: impl FnMut(&str) -> polycache::Result<()>,
) -> polycache::Result<Figures> {
    let mut latencies = Vec::with_capacity(keys.len());
    let start = Instant::now();
    for key in keys {
        let t = Instant::now();
        op(key)?;
        latencies.push(t.elapsed());
    }
    Ok(Figures::of(latencies, start.elapsed()))
}

pub(crate) fn run(cache: &Cache, ops: u32, size: u32, c: &mut Console<'_>) -> Outcome {
    let keys: Vec<String> = (0..ops)
        .map(|i| format!("polycache-bench:{}:{i}", std::process::id()))
        .collect();
    let value = vec![b'x'; size as usize];
    let result = (|| {
        let set = measure(&keys, |k| {
            cache.set(k, &value, Expiry::After(Duration::from_secs(600)))?;
            Ok(())
        })?;
        let get = measure(&keys, |k| cache.get(k).map(drop))?;
        Ok::<_, polycache::Error>((set, get))
    })();
    // The keys go whatever happened.
    for chunk in keys.chunks(1000) {
        let chunk: Vec<Key<'_>> = chunk.iter().map(|k| Key::new(k)).collect();
        let _ = cache.delete_many_keys(&chunk);
    }
    let (set, get) = result?;
    let url = polycache::redact(cache.location());
    if c.json {
        c.json(&json!({
            "url": url,
            "ops": ops,
            "value_bytes": size,
            "set": set.json(),
            "get": get.json(),
        }))?;
        return Ok(());
    }
    writeln!(
        c.out,
        "{url}: {ops} sets then {ops} gets of {size}-byte values, one call at a time"
    )?;
    writeln!(c.out, "op   {:>12}  {:>12}  {:>10}", "p50", "p99", "ops/s")?;
    for (name, f) in [("set", &set), ("get", &get)] {
        writeln!(
            c.out,
            "{name}  {:>12}  {:>12}  {:>10.0}",
            show::ms(f.p50),
            show::ms(f.p99),
            f.ops_per_sec
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let f = Figures::of(l, Duration::from_secs(1));
        assert_eq!(f.p50, Duration::from_millis(50));
        assert_eq!(f.p99, Duration::from_millis(99));
        assert_eq!(f.ops_per_sec, 100.0);
        let one = Figures::of(vec![Duration::from_millis(7)], Duration::from_secs(2));
        assert_eq!(
            (one.p50, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }
}
