//! What the sqlite:// and postgres:// tests share: self-checking values, the worker processes
//! of the multi-process tests, and raw SQL access to break rows. (Every operation of the
//! backend contract runs in `contract.rs`.)

#![allow(dead_code)]

use polycache::backend::sql::key_hash;
use polycache::{Cache, ErrorKind, Expiry};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The environment variables that turn the test binary into a worker.
pub const ROLE_VAR: &str = "POLYCACHE_SQL_WORKER";
pub const URL_VAR: &str = "POLYCACHE_SQL_URL";
pub const ARG_VAR: &str = "POLYCACHE_SQL_ARG";

/// Raw SQL on the database under a cache, to inspect and corrupt rows.
pub trait RawSql {
    fn exec(&mut self, sql: &str);
    fn scalar(&mut self, sql: &str) -> i64;
}

/// A small deterministic PRNG (xorshift64*), so workers need no shared state.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A value that names its key, generation and length, with a checksum at the end: any mix
/// of two writes, or a cut, fails [`check_value`].
pub fn make_value(key: &str, gen: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{key}|{gen}|{len}|").into_bytes();
    v.extend((0..len).map(|i| ((gen as usize).wrapping_mul(31) + i * 7 + key.len()) as u8));
    let sum = fnv(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The generation of a value made by [`make_value`] for `key`, or why it is not whole.
pub fn check_value(key: &str, v: &[u8]) -> Result<u64, String> {
    if v.len() < 8 {
        return Err(format!("{key}: {} bytes, shorter than a checksum", v.len()));
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if fnv(body).to_le_bytes() != sum {
        return Err(format!("{key}: checksum mismatch over {} bytes", v.len()));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    let mut parts = text.splitn(4, '|');
    let (k, gen, len) = (parts.next(), parts.next(), parts.next());
    if k != Some(key) {
        return Err(format!("{key}: value of another key {k:?}"));
    }
    let gen: u64 = gen.and_then(|g| g.parse().ok()).ok_or("bad generation")?;
    let len: usize = len.and_then(|l| l.parse().ok()).ok_or("bad length")?;
    if body.len() != format!("{key}|{gen}|{len}|").len() + len {
        return Err(format!("{key}: length mismatch"));
    }
    Ok(gen)
}

/// Several caches on one table see each other's writes; a hash collision never returns
/// another key's value. `raw` reaches the same table (named `table`).
pub fn collisions_and_sharing(url: &str, raw: &mut dyn RawSql, table: &str) {
    let a = Cache::open(url).unwrap();
    let b = Cache::open(url).unwrap();
    a.clear().unwrap();
    a.set("shared", b"from a", Expiry::Never).unwrap();
    assert_eq!(b.get("shared").unwrap().as_deref(), Some(&b"from a"[..]));

    // Make the row of "x" sit under the hash of "y": a collision between x and y.
    a.set("x", b"x's value", Expiry::Never).unwrap();
    let hx = key_hash(&a.make_key("x").unwrap());
    let hy = key_hash(&a.make_key("y").unwrap());
    raw.exec(&format!(
        "UPDATE {table} SET key_hash = {hy} WHERE key_hash = {hx}"
    ));
    assert_eq!(a.get("y").unwrap(), None, "y must not read x's row");
    assert!(!a.has_key("y").unwrap());
    assert_eq!(a.get_many(&["y"], None).unwrap(), vec![None]);
    assert_eq!(a.incr("y", 1).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!a.touch("y", Expiry::Never).unwrap());
    assert!(!a.delete("y").unwrap());
    assert_eq!(a.delete_many(&["y"], None).unwrap(), 0);
    assert_eq!(
        raw.scalar(&format!(
            "SELECT count(*) FROM {table} WHERE key_hash = {hy}"
        )),
        1,
        "x's row is still there"
    );
    // y is absent, so add stores it (the colliding row gives way: a cache may forget).
    assert!(a.add("y", b"y's value", Expiry::Never).unwrap());
    assert_eq!(a.get("y").unwrap().as_deref(), Some(&b"y's value"[..]));
    assert_eq!(a.get("x").unwrap(), None);

    // A cache without a key prefix owns the table: its clear empties it.
    let prefixed = Cache::builder(url).key_prefix("app").build().unwrap();
    prefixed.set("k", b"v", Expiry::Never).unwrap();
    a.clear().unwrap();
    assert_eq!(raw.scalar(&format!("SELECT count(*) FROM {table}")), 0);
    assert!(!prefixed.has_key("k").unwrap());
}

/// Each way of breaking a row makes it read as a miss (and go away), and nothing else.
/// `breakers` are SQL statements with `{table}` and `{hash}` placeholders.
pub fn corrupt_rows_read_as_misses(
    url: &str,
    raw: &mut dyn RawSql,
    table: &str,
    breakers: &[&str],
) {
    let c = Cache::open(url).unwrap();
    c.clear().unwrap();
    c.set("fine", b"untouched", Expiry::Never).unwrap();
    for (i, sql) in breakers.iter().enumerate() {
        let key = format!("broken{i}");
        c.set(&key, b"12345", Expiry::Never).unwrap();
        let hash = key_hash(&c.make_key(&key).unwrap());
        raw.exec(
            &sql.replace("{table}", table)
                .replace("{hash}", &hash.to_string()),
        );
        assert_eq!(c.get(&key).unwrap(), None, "{sql}");
        assert_eq!(
            raw.scalar(&format!(
                "SELECT count(*) FROM {table} WHERE key_hash = {hash}"
            )),
            0,
            "the corrupt row was removed: {sql}"
        );
        // Break it again for the other reads.
        c.set(&key, b"12345", Expiry::Never).unwrap();
        raw.exec(
            &sql.replace("{table}", table)
                .replace("{hash}", &hash.to_string()),
        );
        assert!(!c.has_key(&key).unwrap(), "{sql}");
        assert_eq!(c.get_many(&[key.as_str(), "fine"], None).unwrap()[0], None);
        c.set(&key, b"12345", Expiry::Never).unwrap();
        raw.exec(
            &sql.replace("{table}", table)
                .replace("{hash}", &hash.to_string()),
        );
        assert_eq!(
            c.incr(&key, 1).unwrap_err().kind(),
            ErrorKind::NotFound,
            "{sql}"
        );
        assert!(!c.touch(&key, Expiry::Never).unwrap());
        assert!(
            c.add(&key, b"again", Expiry::Never).unwrap(),
            "add replaces it"
        );
        assert_eq!(c.get(&key).unwrap().as_deref(), Some(&b"again"[..]));
    }
    assert_eq!(c.get("fine").unwrap().as_deref(), Some(&b"untouched"[..]));
}

/// The table stays within 10% of `max_entries` and of `max_bytes` while much more is
/// written, one key at a time and in bulk; the oldest entries go first.
pub fn bounds_hold(
    entries_url: &str,
    bytes_url: &str,
    raw: &mut dyn RawSql,
    entries_table: &str,
    bytes_table: &str,
) {
    let c = Cache::open(entries_url).unwrap();
    c.clear().unwrap();
    let value = [7u8; 100];
    for i in 0..5000 {
        c.set(&format!("e{i}"), &value, Expiry::Never).unwrap();
    }
    let n = raw.scalar(&format!("SELECT count(*) FROM {entries_table}"));
    assert!((900..=1100).contains(&n), "{n} rows for max_entries=1000");
    assert!(c.get("e0").unwrap().is_none(), "the oldest went first");
    assert!(c.get("e4999").unwrap().is_some(), "the newest stayed");
    assert!(c.stats().evictions >= 3900, "{:?}", c.stats());
    // One bulk write far past the bound.
    let bulk: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| (format!("b{i}"), vec![1u8; 50]))
        .collect();
    let items: Vec<(&str, &[u8])> = bulk.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    c.set_many(&items, Expiry::Never, None).unwrap();
    let n = raw.scalar(&format!("SELECT count(*) FROM {entries_table}"));
    assert!((900..=1100).contains(&n), "{n} rows after set_many");

    let c = Cache::open(bytes_url).unwrap();
    c.clear().unwrap();
    let value = vec![9u8; 1000];
    for i in 0..4000 {
        c.set(&format!("k{i}"), &value, Expiry::Never).unwrap();
    }
    let bytes = raw.scalar(&format!(
        "SELECT sum(length(key) + length(value)) FROM {bytes_table}"
    ));
    assert!(
        (900_000..=1_100_000).contains(&bytes),
        "{bytes} bytes for max_bytes=1000000"
    );
}

/// With `cull_frequency`, the entry bound is Django's, exactly: `url(table, query)` gives the
/// cache URL of `table` with extra `query` options.
pub fn django_cull(url: &dyn Fn(&str, &str) -> String, raw: &mut dyn RawSql) {
    let present = |c: &Cache, keys: std::ops::Range<u32>| -> Vec<u32> {
        keys.filter(|i| c.has_key(&format!("cull{i}")).unwrap())
            .collect()
    };
    // Django's test_cull and test_zero_cull: 49 sets into max_entries=30.
    for (table, frequency, left) in [("cull3", 3, 21..50), ("cull0", 0, 31..50)] {
        let c = Cache::open(&url(
            table,
            &format!("max_entries=30&cull_frequency={frequency}"),
        ))
        .unwrap();
        for i in 1..50 {
            c.set(&format!("cull{i}"), b"value", Expiry::Never).unwrap();
        }
        assert_eq!(present(&c, 1..50), left.collect::<Vec<_>>(), "{table}");
        let n = raw.scalar(&format!("SELECT count(*) FROM {table}"));
        assert_eq!(
            raw.scalar(&format!("SELECT n FROM {table}_count")),
            n,
            "the counter is exact"
        );
        assert_eq!(c.stats().evictions, if frequency == 3 { 20 } else { 30 });
    }

    // Expired rows go first; overwriting a present key culls nothing; set_many culls.
    let c = Cache::open(&url("cull_exp", "max_entries=6&cull_frequency=3")).unwrap();
    for i in 0..4 {
        c.set(&format!("cull{i}"), b"v", Expiry::Never).unwrap();
    }
    for i in 10..12 {
        let ttl = Expiry::After(Duration::from_millis(1));
        c.set(&format!("cull{i}"), b"v", ttl).unwrap();
    }
    thread::sleep(Duration::from_millis(20));
    c.set("cull3", b"again", Expiry::Never).unwrap();
    assert_eq!(raw.scalar("SELECT count(*) FROM cull_exp"), 6, "no cull");
    c.set("cull4", b"v", Expiry::Never).unwrap();
    assert_eq!(present(&c, 0..5), vec![0, 1, 2, 3, 4]);
    assert_eq!(raw.scalar("SELECT count(*) FROM cull_exp"), 5);
    let bulk: Vec<(String, Vec<u8>)> = (20..30).map(|i| (format!("cull{i}"), vec![1])).collect();
    let items: Vec<(&str, &[u8])> = bulk.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    c.set_many(&items, Expiry::Never, None).unwrap();
    assert!(raw.scalar("SELECT count(*) FROM cull_exp") <= 6);
    assert_eq!(present(&c, 26..30), vec![26, 27, 28, 29], "the newest stay");

    // A cache of the same table without cull_frequency keeps the counter exact too.
    let plain = Cache::open(&url("cull_exp", "")).unwrap();
    plain.delete("cull29").unwrap();
    plain.set("plain", b"v", Expiry::Never).unwrap();
    plain.delete_many(&["cull28", "cull27"], None).unwrap();
    assert_eq!(
        raw.scalar("SELECT n FROM cull_exp_count"),
        raw.scalar("SELECT count(*) FROM cull_exp")
    );
    plain.clear().unwrap();
    assert_eq!(raw.scalar("SELECT n FROM cull_exp_count"), 0);

    let err = Cache::open(&url("cull_bad", "cull_frequency=3")).unwrap_err();
    assert!(
        err.is_configuration() && err.to_string().contains("max_entries"),
        "{err}"
    );
    let err = Cache::open(&url("cull_bad", "max_entries=3&cull_frequency=-1")).unwrap_err();
    assert!(err.is_configuration(), "{err}");
}

/// Starts `n` copies of this test binary as workers of `role` on `url`.
pub fn spawn_workers(role: &str, url: &str, args: &[String]) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    args.iter()
        .map(|arg| {
            Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "worker",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(ROLE_VAR, role)
                .env(URL_VAR, url)
                .env(ARG_VAR, arg)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Waits for every worker; fails the test if one failed or outlived `limit`.
pub fn join_workers(children: Vec<Child>, limit: Duration) {
    let deadline = Instant::now() + limit;
    for mut child in children {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a worker failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a worker ran longer than {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Four processes each add 1 to one key 1,000 times: exactly 4,000.
pub fn four_processes_incr(url: &str) {
    let c = Cache::open(url).unwrap();
    c.set("counter", b"0", Expiry::Never).unwrap();
    let workers = spawn_workers("incr", url, &vec!["1000".to_owned(); 4]);
    join_workers(workers, Duration::from_secs(300));
    assert_eq!(c.get("counter").unwrap().as_deref(), Some(&b"4000"[..]));
}

/// Four processes write and read random keys; every value read is whole.
pub fn four_processes_never_see_torn_values(url: &str) {
    let c = Cache::open(url).unwrap();
    c.clear().unwrap();
    let workers = spawn_workers(
        "torn",
        url,
        &(1..=4).map(|i| i.to_string()).collect::<Vec<_>>(),
    );
    join_workers(workers, Duration::from_secs(300));
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let mut seen = 0;
    for k in &keys {
        if let Some(v) = c.get(k).unwrap() {
            check_value(k, &v).unwrap();
            seen += 1;
        }
    }
    assert!(seen > 20, "only {seen} keys were written");
}

/// A writer killed with SIGKILL in the middle of its sets leaves only whole values.
pub fn sigkill_leaves_whole_values(url: &str) {
    let c = Cache::open(url).unwrap();
    c.clear().unwrap();
    let mut children = spawn_workers("writer", url, &["0".to_owned()]);
    let mut child = children.pop().unwrap();
    // Let it complete a few rounds, then kill it at a moment it does not choose.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rounds = c.get("progress").unwrap().and_then(|v| v.as_i64());
        if rounds.is_some_and(|r| r >= 3) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer exited early"
        );
        assert!(Instant::now() < deadline, "the writer made no progress");
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(37));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    let c = Cache::open(url).unwrap();
    let mut whole = 0;
    for k in 0..WRITER_KEYS {
        let key = format!("big{k}");
        if let Some(v) = c.get(&key).unwrap() {
            check_value(&key, &v).unwrap_or_else(|e| panic!("after SIGKILL: {e}"));
            whole += 1;
        }
    }
    assert_eq!(whole, WRITER_KEYS, "every key was written at least once");
}

const WRITER_KEYS: usize = 16;

/// The body of a worker process, chosen by [`ROLE_VAR`]; returns false when this process is
/// not a worker.
pub fn worker_main() -> bool {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return false;
    };
    let url = std::env::var(URL_VAR).unwrap();
    let arg: u64 = std::env::var(ARG_VAR).unwrap().parse().unwrap();
    let c = Cache::open(&url).unwrap();
    match role.as_str() {
        "race" => {
            // `url` ends with a file's stem: each round opens a new database, as the other
            // workers do at about the same moment.
            let (stem, query) = url.split_once('?').unwrap_or((&url, ""));
            for round in 0..arg {
                let c = Cache::open(&format!("{stem}{round}.db?{query}")).unwrap();
                c.set("k", b"v", Expiry::Never).unwrap();
                assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
            }
        }
        "incr" => {
            for _ in 0..arg {
                c.incr("counter", 1).unwrap();
            }
        }
        "torn" => {
            let mut rng = Rng::new(arg);
            for i in 0..400u64 {
                let key = format!("k{}", rng.below(40));
                match rng.below(4) {
                    0 | 1 => {
                        let len = rng.below(30_000) as usize;
                        c.set(
                            &key,
                            &make_value(&key, arg * 1_000_000 + i, len),
                            Expiry::Never,
                        )
                        .unwrap();
                    }
                    2 => {
                        if let Some(v) = c.get(&key).unwrap() {
                            check_value(&key, &v).unwrap();
                        }
                    }
                    _ => {
                        let other = format!("k{}", rng.below(40));
                        let got = c.get_many(&[key.as_str(), other.as_str()], None).unwrap();
                        for (k, v) in [&key, &other].iter().zip(got) {
                            if let Some(v) = v {
                                check_value(k, &v).unwrap();
                            }
                        }
                    }
                }
            }
        }
        "writer" => {
            let start = Instant::now();
            let mut gen = 0u64;
            // Bounded: the parent kills it long before.
            while start.elapsed() < Duration::from_secs(120) {
                for k in 0..WRITER_KEYS {
                    let key = format!("big{k}");
                    let len = 100_000 + (gen as usize * 7919 + k * 104_729) % 400_000;
                    c.set(&key, &make_value(&key, gen, len), Expiry::Never)
                        .unwrap();
                }
                gen += 1;
                c.set("progress", gen.to_string().as_bytes(), Expiry::Never)
                    .unwrap();
            }
        }
        other => panic!("unknown worker role {other}"),
    }
    true
}
