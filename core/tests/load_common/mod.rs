//! Mixed load from several threads with the invariants the fault and load suites check.
//!
//! Every writer stores the same value for a key ([`value_for`]), so any value a read
//! returns must be exactly that one: a reply delivered to the wrong request, a torn entry or
//! a stale encoding shows up as a *wrong value*. One counter key is only ever incremented;
//! each `incr` is counted as acknowledged (it answered a number) or ambiguous (it failed with
//! a connection error or a timeout, so it may or may not have been applied), and the final
//! count must lie in `[acknowledged, acknowledged + ambiguous]`.
#![allow(dead_code)] // each test crate uses its own part of this module

use polycache::{Cache, ErrorKind, Expiry};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Keys the load spreads over (beyond the counter).
pub const KEYS: u64 = 512;
/// The key every `incr` of the load goes to.
pub const COUNTER: &str = "load:counter";

/// The one value ever stored under key number `k`: its name, then filler of a size that
/// depends on `k` (1 byte to ~2 KiB), so that truncated values cannot pass for whole ones.
pub fn value_for(k: u64) -> Vec<u8> {
    let mut v = format!("value-of-{k}:").into_bytes();
    let filler = (k * 37) % 2048;
    v.extend((0..filler).map(|i| b'a' + ((i + k) % 26) as u8));
    v
}

fn key_name(k: u64) -> String {
    format!("load:{k}")
}

/// What one run of the load saw, summed over its threads.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Operations that returned (with a value or an error).
    pub ops: u64,
    /// Errors returned, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// The first message of each kind of error, for failure messages.
    pub error_examples: BTreeMap<&'static str, String>,
    /// Reads that returned a value other than the one ever stored under that key.
    pub wrong: u64,
    /// The first few wrong values, for the failure message.
    pub wrong_examples: Vec<String>,
    /// `incr`s that answered a number.
    pub incr_acked: u64,
    /// `incr`s that failed with a connection error or a timeout (applied or not).
    pub incr_ambiguous: u64,
    /// `incr`s that found no counter (it was lost with the server's memory).
    pub incr_not_found: u64,
    /// Errors other than connection errors and timeouts from operations other than `incr`.
    pub outage_errors_non_incr: u64,
    /// The slowest operation.
    pub worst: Duration,
    /// Which operation was the slowest.
    pub worst_op: &'static str,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, m) in other.error_examples {
            self.error_examples.entry(k).or_insert(m);
        }
        self.wrong += other.wrong;
        for w in other.wrong_examples {
            if self.wrong_examples.len() < 5 {
                self.wrong_examples.push(w);
            }
        }
        self.incr_acked += other.incr_acked;
        self.incr_ambiguous += other.incr_ambiguous;
        self.incr_not_found += other.incr_not_found;
        self.outage_errors_non_incr += other.outage_errors_non_incr;
        if other.worst > self.worst {
            self.worst = other.worst;
            self.worst_op = other.worst_op;
        }
    }

    /// Errors of every kind, summed.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors other than connection errors and timeouts (and `incr`'s "not found").
    pub fn other_errors(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(k, _)| !matches!(**k, "connection" | "timeout" | "not_found"))
            .map(|(_, n)| n)
            .sum()
    }

    /// `errors` as `kind=n, …` for the results table.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Asserts that the counter's final value `total` is what the acknowledged and
    /// ambiguous increments allow.
    pub fn check_counter(&self, what: &str, total: i64) {
        let low = self.incr_acked as i64;
        let high = low + self.incr_ambiguous as i64;
        assert!(
            (low..=high).contains(&total),
            "{what}: counter is {total}, expected {low}..={high} \
             ({} acknowledged, {} ambiguous incr)",
            self.incr_acked,
            self.incr_ambiguous
        );
    }
}

/// When the load threads stop.
#[derive(Clone, Copy)]
pub enum Until<'a> {
    /// After this many operations per thread.
    Ops(u64),
    /// When the flag is set.
    Flag(&'a AtomicBool),
}

/// Stores the counter at 0 (never expiring); the load only increments it.
pub fn seed_counter(cache: &Cache) {
    assert!(
        cache.set(COUNTER, b"0", Expiry::Never).unwrap(),
        "seeding the counter"
    );
}

/// Runs the mixed load on `threads` threads until `until`, and sums what they saw.
///
/// The mix: 40% `get`, 20% `set`, 10% `incr` of the counter, 5% each `get_many` (8 keys),
/// `set_many` (4 keys), `delete`, `add`, `has_key` and `touch`. Keys expire after 5 minutes.
pub fn run(cache: &Cache, threads: usize, until: Until<'_>) -> Tally {
    run_with_counter(cache, cache, threads, until)
}

/// As [`run`], with the counter in `counter` (a cache whose bound cannot evict it).
pub fn run_with_counter(cache: &Cache, counter: &Cache, threads: usize, until: Until<'_>) -> Tally {
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || worker(cache, counter, t as u64, until)))
            .collect();
        let mut total = Tally::default();
        for w in workers {
            total.merge(w.join().expect("a load thread panicked"));
        }
        total
    })
}

fn worker(cache: &Cache, counter: &Cache, t: u64, until: Until<'_>) -> Tally {
    let mut rng = SmallRng::seed_from_u64(t);
    let mut tally = Tally::default();
    let ttl = Expiry::After(Duration::from_secs(300));
    let mut done = 0u64;
    loop {
        match until {
            Until::Ops(n) if done >= n => break,
            Until::Flag(flag) if flag.load(Ordering::Relaxed) => break,
            _ => {}
        }
        done += 1;
        let k = rng.random_range(0..KEYS);
        let key = key_name(k);
        let pick = rng.random_range(0..100);
        let started = Instant::now();
        let (op, outcome): (&'static str, Result<(), polycache::Error>) = match pick {
            0..=39 => (
                "get",
                cache.get(key.as_str()).map(|v| {
                    if let Some(v) = v {
                        check_value(&mut tally, k, &v);
                    }
                }),
            ),
            40..=59 => ("set", cache.set(key.as_str(), &value_for(k), ttl).map(drop)),
            60..=69 => ("incr", incr(counter, &mut tally)),
            70..=74 => {
                let ks: Vec<u64> = (0..8).map(|_| rng.random_range(0..KEYS)).collect();
                let names: Vec<String> = ks.iter().map(|&k| key_name(k)).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                (
                    "get_many",
                    cache.get_many(&refs, None).map(|vals| {
                        for (k, v) in ks.iter().zip(vals) {
                            if let Some(v) = v {
                                check_value(&mut tally, *k, &v);
                            }
                        }
                    }),
                )
            }
            75..=79 => {
                let ks: Vec<u64> = (0..4).map(|_| rng.random_range(0..KEYS)).collect();
                let names: Vec<String> = ks.iter().map(|&k| key_name(k)).collect();
                let values: Vec<Vec<u8>> = ks.iter().map(|&k| value_for(k)).collect();
                let items: Vec<(&str, &[u8])> = names
                    .iter()
                    .zip(&values)
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                ("set_many", cache.set_many(&items, ttl, None).map(drop))
            }
            80..=84 => ("delete", cache.delete(key.as_str()).map(drop)),
            85..=89 => ("add", cache.add(key.as_str(), &value_for(k), ttl).map(drop)),
            90..=94 => ("has_key", cache.has_key(key.as_str()).map(drop)),
            _ => ("touch", cache.touch(key.as_str(), ttl).map(drop)),
        };
        let took = started.elapsed();
        tally.ops += 1;
        if took > tally.worst {
            tally.worst = took;
            tally.worst_op = op;
        }
        if let Err(e) = outcome {
            *tally.errors.entry(e.kind().as_str()).or_default() += 1;
            tally
                .error_examples
                .entry(e.kind().as_str())
                .or_insert_with(|| format!("{op}: {e}"));
            if op != "incr" && matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout) {
                tally.outage_errors_non_incr += 1;
            }
        }
    }
    tally
}

fn incr(cache: &Cache, tally: &mut Tally) -> Result<(), polycache::Error> {
    match cache.incr(COUNTER, 1) {
        Ok(n) => {
            assert!(n >= 1, "incr of a counter that only grows answered {n}");
            tally.incr_acked += 1;
            Ok(())
        }
        Err(e) => {
            match e.kind() {
                ErrorKind::Connection | ErrorKind::Timeout => tally.incr_ambiguous += 1,
                ErrorKind::NotFound => tally.incr_not_found += 1,
                _ => {}
            }
            Err(e)
        }
    }
}

fn check_value(tally: &mut Tally, k: u64, got: &[u8]) {
    if got != value_for(k).as_slice() {
        tally.wrong += 1;
        if tally.wrong_examples.len() < 5 {
            let shown = String::from_utf8_lossy(&got[..got.len().min(40)]).into_owned();
            tally
                .wrong_examples
                .push(format!("key {k}: {} bytes starting {shown:?}", got.len()));
        }
    }
}

/// Reads the counter, retrying for up to `patience` while the backend fails or (failing
/// open) answers a miss; `None` if it stays missing.
pub fn read_counter(cache: &Cache, patience: Duration) -> Option<i64> {
    let deadline = Instant::now() + patience;
    loop {
        match cache.get(COUNTER) {
            Ok(Some(v)) => {
                let n = v.as_i64();
                return Some(n.unwrap_or_else(|| panic!("the counter holds {:?}", v.as_ref())));
            }
            Err(e) if Instant::now() >= deadline => panic!("reading the counter: {e}"),
            Ok(None) if Instant::now() >= deadline => return None,
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits until a write and a read of a probe key succeed (the backend is back), up to
/// `patience`; returns how long that took.
pub fn wait_until_healthy(cache: &Cache, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let ok = matches!(cache.set("load:probe", b"1", Expiry::Never), Ok(true))
            && matches!(cache.get("load:probe"), Ok(Some(_)));
        if ok {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "the backend did not answer again within {patience:?} after the fault cleared"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The async twin of [`run`]: `tasks` tasks on a multi-thread tokio runtime, each running
/// the awaitable operations (`get`, `set`, `incr` of the counter, `get_many`, `delete`)
/// until `until`. With `cancel_half`, every other operation is abandoned mid-flight (its
/// future dropped after a moment), and the invariants hold for everything that answered.
pub fn run_async(cache: &Cache, tasks: usize, until: Until<'_>, cancel_half: bool) -> Tally {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let ops = match until {
        Until::Ops(n) => Some(n),
        Until::Flag(_) => None,
    };
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (cache, stop) = (cache.clone(), stop.clone());
            rt.spawn(async move { async_worker(cache, t as u64, ops, &stop, cancel_half).await })
        })
        .collect();
    if let Until::Flag(flag) = until {
        while !flag.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    }
    rt.block_on(async {
        let mut total = Tally::default();
        for h in handles {
            total.merge(h.await.expect("a load task panicked"));
        }
        total
    })
}

async fn async_worker(
    cache: Cache,
    t: u64,
    ops: Option<u64>,
    stop: &AtomicBool,
    cancel_half: bool,
) -> Tally {
    let mut rng = SmallRng::seed_from_u64(1000 + t);
    let mut tally = Tally::default();
    let ttl = Expiry::After(Duration::from_secs(300));
    let mut done = 0u64;
    while ops.map_or(!stop.load(Ordering::Relaxed), |n| done < n) {
        done += 1;
        let k = rng.random_range(0..KEYS);
        let key = key_name(k);
        let pick = rng.random_range(0..100);
        let abandon = cancel_half && done % 2 == 0;
        let started = Instant::now();
        let op = async {
            match pick {
                0..=44 => (
                    "get",
                    cache
                        .get_async(key.as_str())
                        .await
                        .map(|v| v.map(|v| vec![(k, v)])),
                ),
                45..=69 => (
                    "set",
                    cache
                        .set_async(key.as_str(), &value_for(k), ttl)
                        .await
                        .map(|_| None),
                ),
                70..=79 => (
                    "incr",
                    cache.incr_async(COUNTER, 1).await.map(|n| {
                        assert!(n >= 1, "incr of a counter that only grows answered {n}");
                        None
                    }),
                ),
                80..=89 => {
                    let ks: Vec<u64> = (0..8).map(|i| (k + i * 61) % KEYS).collect();
                    let names: Vec<String> = ks.iter().map(|&k| key_name(k)).collect();
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let got = cache.get_many_async(&refs, None).await;
                    (
                        "get_many",
                        got.map(|vals| {
                            Some(
                                ks.iter()
                                    .zip(vals)
                                    .filter_map(|(k, v)| v.map(|v| (*k, v)))
                                    .collect(),
                            )
                        }),
                    )
                }
                _ => (
                    "delete",
                    cache.delete_async(key.as_str()).await.map(|_| None),
                ),
            }
        };
        let (name, outcome) = if abandon {
            // Dropped after its first steps: the request may be on the wire already.
            match tokio::time::timeout(Duration::from_micros(50), op).await {
                Ok(answered) => answered,
                Err(_) => {
                    tally.ops += 1;
                    if (70..80).contains(&pick) {
                        // An abandoned incr may or may not have been applied.
                        tally.incr_ambiguous += 1;
                    }
                    continue;
                }
            }
        } else {
            op.await
        };
        let took = started.elapsed();
        tally.ops += 1;
        if took > tally.worst {
            tally.worst = took;
            tally.worst_op = name;
        }
        match outcome {
            Ok(Some(values)) => {
                for (k, v) in values {
                    check_value(&mut tally, k, &v);
                }
            }
            Ok(None) if name == "incr" => tally.incr_acked += 1,
            Ok(None) => {}
            Err(e) => {
                if name == "incr" {
                    match e.kind() {
                        ErrorKind::Connection | ErrorKind::Timeout => tally.incr_ambiguous += 1,
                        ErrorKind::NotFound => tally.incr_not_found += 1,
                        _ => {}
                    }
                } else if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout) {
                    tally.outage_errors_non_incr += 1;
                }
                *tally.errors.entry(e.kind().as_str()).or_default() += 1;
                tally
                    .error_examples
                    .entry(e.kind().as_str())
                    .or_insert_with(|| format!("{name}: {e}"));
            }
        }
    }
    tally
}
