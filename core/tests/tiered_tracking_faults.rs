//! Faults under tracked tiered caches (`bus=tracking`): Redis is killed and restarted,
//! frozen and thawed, and restarted cleanly while 4 processes read one key through their L1
//! and a plain client (a raw redis-rs connection) writes an increasing version to it; over a
//! Redis Cluster, the key's primary and another primary are killed and restarted, and the
//! key's primary frozen and thawed.
//!
//! Checked, without timing anything: every value read is one the writer wrote; no process
//! ever reads an older version after a newer one; after each fault, a new write reaches
//! every process's reads (invalidations work again). Printed (`TRACKING-FAULT` lines, not
//! asserted): for each fault, the longest time from a write's acknowledgement to the start
//! of the last read, in any process, that still returned an older version.
#![cfg(feature = "redis")]

use polycache::Cache;
use polycache_testkit::{eventually, url_option, RedisCluster, RedisServer, TestChild};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PATIENCE: Duration = Duration::from_secs(20);
const CHILD_ENV: &str = "POLYCACHE_TRACKING_FAULT_READER";
const READERS: usize = 4;
const KEY: &str = "tf:1:k";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// What one reader process saw.
#[derive(Default)]
struct Seen {
    /// Per version, the start of the last read that returned it.
    last_read: BTreeMap<u64, u128>,
    highest: u64,
    /// Reads that returned an older version than one read before.
    backwards: u64,
    /// Values that are not a version the writer wrote.
    wrong: u64,
    errors: u64,
    reads: u64,
}

#[test]
#[ignore = "a reader process of the tests below"]
fn reader_process() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cache = Cache::open(&url).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (seen, stop) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let start = now_ns();
                let got = cache.get("k");
                let mut s = seen.lock().unwrap();
                s.reads += 1;
                match got {
                    Err(_) => s.errors += 1,
                    Ok(None) => {}
                    Ok(Some(v)) => {
                        match std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()) {
                            None => s.wrong += 1,
                            Some(v) => {
                                if v < s.highest {
                                    s.backwards += 1;
                                }
                                s.highest = s.highest.max(v);
                                s.last_read.insert(v, start);
                            }
                        }
                    }
                }
                drop(s);
                thread::yield_now();
            }
        })
    };
    let mut out = std::io::stdout();
    writeln!(out, "\n@ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().as_str() {
            "highest" => {
                let h = seen.lock().unwrap().highest;
                writeln!(out, "@{h}").unwrap();
            }
            _ => break,
        }
        out.flush().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    let s = seen.lock().unwrap();
    for (v, t) in &s.last_read {
        writeln!(out, "@read {v} {t}").unwrap();
    }
    writeln!(
        out,
        "@totals {} {} {} {} {}",
        s.reads, s.errors, s.backwards, s.wrong, s.highest
    )
    .unwrap();
    out.flush().unwrap();
}

/// A reader process ([`reader_process`]).
struct Reader(TestChild);

impl Reader {
    fn spawn(url: &str) -> Reader {
        Reader(TestChild::spawn("reader_process", (CHILD_ENV, url)))
    }

    fn line(&mut self) -> String {
        self.0.line()
    }

    fn highest(&mut self) -> u64 {
        self.0.ask("highest").parse().unwrap()
    }
}

/// The writer: `SET`s versions 1, 2, … about every 2 ms over a raw connection, reconnecting
/// after errors; records each acknowledged version's time.
struct Writer {
    acked: Arc<Mutex<BTreeMap<u64, u128>>>,
    last_acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let last_acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acked, last_acked, stop) = (acked.clone(), last_acked.clone(), stop.clone());
            thread::spawn(move || {
                let client = redis::Client::open(url).unwrap();
                let mut conn = None;
                let mut version = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(2));
                    if conn.is_none() {
                        conn = client
                            .get_connection_with_timeout(Duration::from_millis(250))
                            .ok();
                        if let Some(c) = &conn {
                            let t = Some(Duration::from_millis(250));
                            let _ = c.set_read_timeout(t);
                            let _ = c.set_write_timeout(t);
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    version += 1;
                    match redis::cmd("SET").arg(KEY).arg(version).query::<()>(c) {
                        Ok(()) => {
                            acked.lock().unwrap().insert(version, now_ns());
                            last_acked.store(version, Ordering::SeqCst);
                        }
                        Err(_) => conn = None,
                    }
                }
            })
        };
        Writer {
            acked,
            last_acked,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Waits until every reader has read a version acknowledged after this call.
fn all_catch_up(writer: &Writer, readers: &mut [Reader], what: &str) {
    let target = eventually(PATIENCE, || writer.last_acked.load(Ordering::SeqCst) > 0)
        .then(|| writer.last_acked.load(Ordering::SeqCst) + 1);
    let target = target.unwrap_or_else(|| panic!("no write is acknowledged {what}"));
    assert!(
        eventually(PATIENCE, || writer.last_acked.load(Ordering::SeqCst)
            >= target),
        "no write is acknowledged {what}"
    );
    for (i, r) in readers.iter_mut().enumerate() {
        assert!(
            eventually(PATIENCE, || r.highest() >= target),
            "reader {i} never reads version {target} {what}: invalidations do not arrive"
        );
    }
}

/// The longest time (ns) from a write's acknowledgement to the start of a read that still
/// returned an older version, over every reader.
fn worst_stale(acked: &BTreeMap<u64, u128>, reads: &[BTreeMap<u64, u128>]) -> u128 {
    let mut worst = 0;
    for r in reads {
        for (v, read_at) in r {
            // The first acknowledged write after version v.
            if let Some((_, ack)) = acked.range(v + 1..).next() {
                worst = worst.max(read_at.saturating_sub(*ack));
            }
        }
    }
    worst
}

/// The tracked `tiered://` URL of the readers over `l2`, with short timeouts.
fn readers_url(l2: &str) -> String {
    let sep = if l2.contains('?') { '&' } else { '?' };
    format!(
        "tiered://?l2={}&bus=tracking&l1_timeout=600&key_prefix=tf",
        url_option(&format!(
            "{l2}{sep}connect_timeout=0.25&socket_timeout=0.25"
        ))
    )
}

/// A fault on a server: applies and clears itself.
fn kill_restart(r: &mut RedisServer) {
    r.kill().unwrap();
    thread::sleep(Duration::from_millis(500));
    r.restart().unwrap();
}

fn freeze_thaw(r: &mut RedisServer) {
    r.freeze().unwrap();
    thread::sleep(Duration::from_secs(3));
    r.thaw().unwrap();
}

#[test]
fn kill_freeze_restart_while_four_processes_read() {
    let mut redis = RedisServer::start().unwrap();
    let faults = ["kill, restart", "freeze 3 s, thaw", "clean restart"];
    four_readers_through(&redis.url(), redis.url(), &faults, |i| match i {
        0 => kill_restart(&mut redis),
        1 => freeze_thaw(&mut redis),
        _ => redis.restart().unwrap(),
    });
}

#[test]
fn cluster_primaries_killed_and_frozen_while_four_processes_read() {
    let mut cluster = RedisCluster::start().unwrap();
    let slot = cluster.slot_of(KEY).unwrap();
    let owner = cluster.owner_of_slot(slot).unwrap();
    let other = (owner + 1) % cluster.nodes().len();
    let writer_url = cluster.nodes()[owner].url();
    let faults = [
        "kill the key's primary, restart",
        "kill another primary, restart",
        "freeze the key's primary 3 s, thaw",
    ];
    four_readers_through(&cluster.url(), writer_url, &faults, |i| {
        match i {
            0 => kill_restart(&mut cluster.nodes_mut()[owner]),
            1 => kill_restart(&mut cluster.nodes_mut()[other]),
            _ => freeze_thaw(&mut cluster.nodes_mut()[owner]),
        }
        cluster.wait_ok().unwrap();
    });
}

/// 4 reader processes read `KEY` through a tracked cache over `l2` while a plain client
/// writes it on `writer_url`; `fault(i)` applies and clears `faults[i]` in turn.
fn four_readers_through(
    l2: &str,
    writer_url: String,
    faults: &[&str],
    mut fault: impl FnMut(usize),
) {
    let url = readers_url(l2);
    let mut writer = Writer::start(writer_url);
    let mut readers: Vec<Reader> = (0..READERS).map(|_| Reader::spawn(&url)).collect();
    all_catch_up(&writer, &mut readers, "before any fault");

    for (i, name) in faults.iter().enumerate() {
        fault(i);
        let cleared = std::time::Instant::now();
        all_catch_up(&writer, &mut readers, &format!("after {name}"));
        println!(
            "TRACKING-FAULT {l2} {name}: every reader read a write acknowledged after the \
             fault cleared within {} ms",
            cleared.elapsed().as_millis()
        );
    }
    writer.stop();

    let mut reads = Vec::new();
    for (i, r) in readers.iter_mut().enumerate() {
        r.0.send("quit");
        let mut last = BTreeMap::new();
        loop {
            let line = r.line();
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["read", v, t] => {
                    last.insert(v.parse::<u64>().unwrap(), t.parse::<u128>().unwrap());
                }
                ["totals", n, errors, backwards, wrong, highest] => {
                    println!(
                        "TRACKING-FAULT {l2} reader {i}: {n} reads, {errors} errors, highest \
                         version {highest}"
                    );
                    assert_eq!(
                        backwards, "0",
                        "reader {i} read an older version after a newer"
                    );
                    assert_eq!(wrong, "0", "reader {i} read a value nobody wrote");
                    break;
                }
                _ => panic!("unexpected line from reader {i}: {line}"),
            }
        }
        assert!(r.0.wait(), "reader {i} failed");
        reads.push(last);
    }
    let acked = writer.acked.lock().unwrap();
    println!(
        "TRACKING-FAULT {l2} {} writes acknowledged; longest from an acknowledged write to the \
         start of a read of an older version: {} µs",
        acked.len(),
        worst_stale(&acked, &reads) / 1000
    );
}
