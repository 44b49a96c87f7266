//! `tiered://` with `bus=tracking` (Redis client-side caching), on a private server that
//! testkit starts on a free loopback port. Prints, in one run:
//!
//! 1. the cost of an L1 hit of a tracked tiered cache beside a plain `memory://` get and a
//!    `bus=redis` tiered L1 hit (ns per call, ratios; target ≤ 1.2× the memory get);
//! 2. the server side: connections, `INFO` tracking counters and memory, for one process that
//!    opens 10 tiered caches with and without tracking, and for the default (non-broadcast)
//!    mode on 10,000 read keys, the alternative that the broadcast mode was chosen over;
//! 3. the consistency bound: 4 reader processes spin on `get` of one key held in their L1
//!    while a plain client (a raw redis-rs connection, as redis-cli or redis-py would) `SET`s
//!    a new value every 10 ms; for each write, the time from its acknowledgement to the start
//!    of the last read, in any of the 4 processes, that still returned the previous value
//!    (0 when none did), as p50 / p99 / max; then the same over a three-primary Redis
//!    Cluster (one tracking connection per primary in each process);
//! 4. the latency side of the tracking modes (`tiered_tracking/modes.rs`): a GET's round
//!    trip and an invalidation's delivery in the default mode (push on the reading
//!    connection, or REDIRECT to another one) and in broadcast mode.
//!
//! `cargo bench -p polycache --bench tiered_tracking`. Under `cargo test --benches` it runs
//! with tiny counts, to check that it works.

use polycache::{Cache, Expiry};
use polycache_testkit::{command_calls, info_field, url_option, RedisCluster, RedisServer};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "tiered_tracking/modes.rs"]
mod modes;

const READER_ENV: &str = "POLYCACHE_BENCH_TRACKING_READER";
const READERS: usize = 4;

fn tiered(l2: &str, bus: &str, prefix: &str) -> String {
    format!(
        "tiered://?l2={}&bus={bus}&l1_timeout=600&key_prefix={prefix}",
        url_option(l2)
    )
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Nanoseconds per `get` of a key the cache holds, over `calls` calls.
fn ns_per_get(cache: &Cache, calls: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(cache.get(std::hint::black_box("hit")).unwrap());
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn hit_cost(server: &RedisServer, calls: u32) {
    let memory = Cache::open("memory://").unwrap();
    // Over the unix socket: the next part counts the TCP tracking connection it opens.
    let tracked = Cache::open(&tiered(&server.unix_url(), "tracking", "hit")).unwrap();
    let bus = Cache::open(&tiered(&server.unix_url(), "redis", "hitbus")).unwrap();
    let caches = [&memory, &tracked, &bus];
    for c in caches {
        c.set("hit", &[b'x'; 100], Expiry::Never).unwrap();
    }
    // A tracked cache's own write drops its L1 copy: the read after it fills L1 (and the
    // server's notice of the write may drop that copy once more).
    std::thread::sleep(Duration::from_millis(50));
    for c in caches {
        assert!(c.get("hit").unwrap().is_some());
    }
    // Rounds interleaved, so that a busy machine slows every contender alike; the median
    // of the per-round ratios.
    const ROUNDS: usize = 11;
    let mut ns = [Vec::new(), Vec::new(), Vec::new()];
    let mut ratios = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let round: Vec<f64> = caches.iter().map(|c| ns_per_get(c, calls)).collect();
        ratios[0].push(round[1] / round[0]);
        ratios[1].push(round[2] / round[0]);
        for (all, one) in ns.iter_mut().zip(round) {
            all.push(one);
        }
    }
    let [m, t, b] = ns.map(median);
    let [rt, rb] = ratios.map(median);
    println!("L1 hit cost ({ROUNDS} interleaved rounds of {calls} calls, medians):");
    println!("  memory:// get                 {m:8.1} ns  1.00x");
    println!("  tiered bus=tracking L1 hit    {t:8.1} ns  {rt:.2}x");
    println!("  tiered bus=redis L1 hit       {b:8.1} ns  {rb:.2}x");
}

fn info(server: &RedisServer, section: &str, field: &str) -> i64 {
    let text = server.command(&["INFO", section]).unwrap();
    info_field(&text, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

fn server_side(server: &RedisServer, keys: usize) {
    let clients = |s: &RedisServer| info(s, "clients", "connected_clients");
    let memory = |s: &RedisServer| info(s, "memory", "used_memory");
    // Compared with the same caches without a bus: what tracking itself adds.
    let open = |bus: &str| -> (i64, i64, Vec<Cache>) {
        let (c0, m0) = (clients(server), memory(server));
        let caches: Vec<Cache> = (0..10)
            .map(|i| {
                let c = Cache::open(&tiered(&server.url(), bus, &format!("srv{i}"))).unwrap();
                c.set("k", b"v", Expiry::Never).unwrap();
                c
            })
            .collect();
        (clients(server) - c0, memory(server) - m0, caches)
    };
    let (plain_clients, plain_memory, plain) = open("none");
    drop(plain);
    std::thread::sleep(Duration::from_millis(200));
    let (clients_added, memory_added, caches) = open("tracking");
    println!("Server side, one process opening 10 tiered caches with distinct key prefixes:");
    println!(
        "  bus=none: connections +{plain_clients}, used_memory +{plain_memory} bytes; \
         bus=tracking: connections +{clients_added}, used_memory +{memory_added} bytes"
    );
    println!(
        "  tracking_clients {}, tracking_total_prefixes {}, tracking_total_keys {}",
        info(server, "clients", "tracking_clients"),
        info(server, "stats", "tracking_total_prefixes"),
        info(server, "stats", "tracking_total_keys"),
    );
    for c in &caches {
        for k in 0..keys / 10 {
            c.set(&format!("k{k}"), b"v", Expiry::Never).unwrap();
        }
    }
    drop(caches);

    // The default mode, for comparison: one connection that tracks what it reads.
    let client = redis::Client::open(format!("{}?protocol=resp3", server.url())).unwrap();
    let mut conn = client.get_connection().unwrap();
    let m2 = memory(server);
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query::<()>(&mut conn)
        .unwrap();
    for c in 0..10 {
        for k in 0..keys / 10 {
            let _: Option<Vec<u8>> = redis::cmd("GET")
                .arg(format!("srv{c}:1:k{k}"))
                .query(&mut conn)
                .unwrap();
        }
    }
    let m3 = memory(server);
    println!(
        "Default mode instead, one connection that reads {keys} keys: \
         tracking_total_keys {}, used_memory +{} bytes (the tracking table)",
        info(server, "stats", "tracking_total_keys"),
        m3 - m2
    );
}

/// One reader process: spins on `get("k")` and reports, per value seen, the start of the
/// last read that returned it.
fn reader(url: &str) {
    let cache = Cache::open(url).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    let mut out = std::io::stdout();
    while cache.get("k").unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    writeln!(out, "@ready").unwrap();
    out.flush().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        stopper.store(true, Ordering::Relaxed);
    });
    let mut last: std::collections::BTreeMap<u64, u128> = Default::default();
    let mut reads = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let start = now_ns();
        if let Some(v) = cache.get("k").unwrap() {
            let v: u64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
            last.insert(v, start);
        }
        reads += 1;
        std::thread::yield_now();
    }
    for (v, t) in last {
        writeln!(out, "@{v} {t}").unwrap();
    }
    writeln!(out, "@reads {reads}").unwrap();
    writeln!(out, "@end").unwrap();
    out.flush().unwrap();
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The consistency bound of tracked caches over `l2`, written by a plain client on
/// `writer_url` (the server that owns the key); `gets` counts the `GET`s the servers answered.
fn staleness(l2: &str, writer_url: &str, gets: &dyn Fn() -> u64, writes: u64) {
    let url = tiered(l2, "tracking", "stale");
    let client = redis::Client::open(writer_url).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("SET")
        .arg("stale:1:k")
        .arg(0)
        .query::<()>(&mut conn)
        .unwrap();
    let mut children: Vec<_> = (0..READERS)
        .map(|_| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env(READER_ENV, &url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            (child, stdout)
        })
        .collect();
    let next = |r: &mut BufReader<_>| -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "a reader ended");
            if let Some(l) = line.trim_end().strip_prefix('@') {
                return l.to_owned();
            }
        }
    };
    for (_, out) in &mut children {
        assert_eq!(next(out), "ready");
    }
    let gets_before = gets();
    let mut acked = vec![0u128; writes as usize + 1];
    for v in 1..=writes {
        std::thread::sleep(Duration::from_millis(10));
        redis::cmd("SET")
            .arg("stale:1:k")
            .arg(v)
            .query::<()>(&mut conn)
            .unwrap();
        acked[v as usize] = now_ns();
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut last_read = vec![vec![0u128; writes as usize + 1]; READERS];
    let mut reads = 0u64;
    for (i, (child, out)) in children.iter_mut().enumerate() {
        writeln!(child.stdin.as_mut().unwrap(), "quit").unwrap();
        loop {
            let line = next(out);
            if line == "end" {
                break;
            }
            let (a, b) = line.split_once(' ').unwrap();
            if a == "reads" {
                reads += b.parse::<u64>().unwrap();
            } else {
                last_read[i][a.parse::<usize>().unwrap()] = b.parse().unwrap();
            }
        }
        child.wait().unwrap();
    }
    let gets = gets() - gets_before;
    // For write v: the last read of v-1 that started after v was acknowledged.
    let mut delays: Vec<u128> = (1..=writes as usize)
        .map(|v| {
            last_read
                .iter()
                .map(|r| r[v - 1].saturating_sub(acked[v]))
                .max()
                .unwrap_or(0)
        })
        .collect();
    delays.sort();
    let stale = delays.iter().filter(|d| **d > 0).count();
    let scheme = l2.split("://").next().unwrap_or("");
    println!(
        "Consistency bound over {scheme}://, {READERS} reader processes, {writes} external \
         SETs 10 ms apart \
         ({reads} reads, {:.1}% served by L1):",
        100.0 * (1.0 - gets as f64 / reads.max(1) as f64)
    );
    println!(
        "  write ack -> last stale read: p50 {} µs, p99 {} µs, max {} µs ({stale} of {writes} \
         writes had a stale read after their ack)",
        percentile(&delays, 0.5) / 1000,
        percentile(&delays, 0.99) / 1000,
        delays.last().unwrap() / 1000
    );
}

fn info_gets(server: &RedisServer) -> u64 {
    command_calls(&server.command(&["INFO", "commandstats"]).unwrap(), "get")
}

fn main() {
    if let Ok(url) = std::env::var(READER_ENV) {
        reader(&url);
        return;
    }
    // `cargo bench` passes `--bench`; anything else (cargo test --benches) just checks it runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (calls, keys, writes) = if quick {
        (1_000, 100, 5)
    } else {
        (500_000, 10_000, 500)
    };
    let server = RedisServer::start().expect("start redis-server");
    hit_cost(&server, calls);
    server_side(&server, keys);
    staleness(&server.url(), &server.url(), &|| info_gets(&server), writes);
    let (rounds, per_round) = if quick { (2, 5) } else { (10, 500) };
    modes::latency(&server.url(), rounds, per_round);
    drop(server);

    let cluster = RedisCluster::start().expect("start a redis cluster");
    let owner = cluster
        .owner_of_slot(cluster.slot_of("stale:1:k").unwrap())
        .unwrap();
    let cluster_gets = || cluster.nodes().iter().map(info_gets).sum();
    staleness(
        &cluster.url(),
        &cluster.nodes()[owner].url(),
        &cluster_gets,
        writes,
    );
}
