//! The redis backend against real servers started by testkit: what is specific to Redis (the
//! entries as the server holds them, databases, authentication, where reads go among
//! replicas, how a Cluster spreads keys, TLS certificates) and servers that die and come
//! back. Every operation of the backend contract runs in `contract.rs`, on one server, a
//! unix socket, TLS, a leader with a replica and a Cluster.
#![cfg(feature = "redis")]

use polycache::backend::redis::RedisBackend;
use polycache::{Backend, Cache, ErrorKind, Expiry, FailurePolicy};
use polycache_testkit::{
    eventually, free_loopback_port, info_field, redis_command, RedisCluster, RedisReplicaSet,
    RedisServer, TestCertificates,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn open(url: &str) -> Cache {
    Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn policy(fail_open: bool, threshold: u32, cooldown: Duration) -> FailurePolicy {
    let mut p = FailurePolicy::default();
    p.fail_open = fail_open;
    p.breaker_threshold = threshold;
    p.breaker_cooldown = cooldown;
    p
}

/// The keyspace counter `name` (`keyspace_hits`, …) of the server on `port`.
fn stat(port: u16, name: &str) -> u64 {
    let info = redis_command(port, &["INFO", "stats"]).unwrap();
    info_field(&info, name).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// One server
// ---------------------------------------------------------------------------------------

#[test]
fn entries_are_raw_bytes_under_djangos_keys_and_keep_their_ttl() {
    let redis = RedisServer::start().unwrap();
    let c = Cache::builder(&redis.url())
        .key_prefix("site")
        .version(2)
        .build()
        .unwrap();
    c.set("k", b"plain bytes", Expiry::After(Duration::from_secs(100)))
        .unwrap();
    c.set("n", b"5", Expiry::After(Duration::from_secs(100)))
        .unwrap();
    assert_eq!(redis.command(&["GET", "site:2:k"]).unwrap(), "plain bytes");
    let pttl: i64 = redis
        .command(&["PTTL", "site:2:k"])
        .unwrap()
        .parse()
        .unwrap();
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(c.incr("n", 10).unwrap(), 15);
    assert_eq!(redis.command(&["GET", "site:2:n"]).unwrap(), "15");
    let pttl: i64 = redis
        .command(&["PTTL", "site:2:n"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(pttl > 90_000, "incr keeps the TTL: {pttl}");
    c.set("forever", b"x", Expiry::Never).unwrap();
    assert_eq!(redis.command(&["PTTL", "site:2:forever"]).unwrap(), "-1");
    c.set("forever", b"x", Expiry::After(Duration::from_secs(9)))
        .unwrap();
    assert!(c.touch("forever", Expiry::Never).unwrap());
    assert_eq!(redis.command(&["PTTL", "site:2:forever"]).unwrap(), "-1");
    // An entry written by someone else is read as is.
    redis.command(&["SET", "site:2:theirs", "42"]).unwrap();
    assert_eq!(c.incr("theirs", 1).unwrap(), 43);
}

/// Redis counts expiry in whole milliseconds from the truncated time of the write, so `PX
/// 1000` kept a key alive for up to 1,001 ms: a read one second after the write found it about
/// half the time (Django's `test_cache_page_timeout` saw it). The time here is a lower bound
/// the test waits out, not a measurement.
#[test]
fn an_entry_is_gone_once_its_ttl_has_passed_since_the_write() {
    let redis = RedisServer::start().unwrap();
    let c = open(&redis.url());
    for round in 0..4 {
        c.set("brief", b"x", Expiry::After(Duration::from_millis(300)))
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        assert_eq!(c.get("brief").unwrap(), None, "round {round}");
    }
}

#[test]
fn clear_removes_only_the_prefix_and_flush_db_everything() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    // A prefix with glob characters must match literally.
    let mine = Cache::builder(&url).key_prefix("a*[b]?").build().unwrap();
    let similar = Cache::builder(&url).key_prefix("aX[b]?").build().unwrap();
    let other = Cache::builder(&url).key_prefix("other").build().unwrap();
    let keys: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    mine.set_many(&items, Expiry::Never, None).unwrap();
    similar.set("k1", b"v", Expiry::Never).unwrap();
    other.set("k1", b"v", Expiry::Never).unwrap();
    redis.command(&["SET", "foreign", "x"]).unwrap();
    mine.clear().unwrap();
    assert_eq!(mine.get("k1").unwrap(), None);
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "3");
    assert!(similar.has_key("k1").unwrap());
    assert!(other.has_key("k1").unwrap());

    let backend = RedisBackend::from_url(&url).unwrap();
    backend.flush_db().unwrap();
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "0");

    // With no key prefix the cache owns the database: clear is FLUSHDB.
    other.set("k1", b"v", Expiry::Never).unwrap();
    open(&url).clear().unwrap();
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "0");
}

#[test]
fn database_number_from_the_path_or_option() {
    let redis = RedisServer::start().unwrap();
    let c = open(&format!("redis://127.0.0.1:{}/3", redis.port()));
    c.set("k", b"v", Expiry::Never).unwrap();
    let keyspace = redis.command(&["INFO", "keyspace"]).unwrap();
    assert!(
        keyspace.contains("db3:keys=1") && !keyspace.contains("db0:"),
        "{keyspace}"
    );
    let same = open(&format!("redis://127.0.0.1:{}?db=3", redis.port()));
    assert!(same.has_key("k").unwrap());
    assert!(!open(&redis.url()).has_key("k").unwrap());
}

#[test]
fn unix_socket() {
    let redis = RedisServer::start().unwrap();
    let c = open(&format!("{}?db=1", redis.unix_url()));
    c.set("k", b"v", Expiry::Never).unwrap();
    let keyspace = redis.command(&["INFO", "keyspace"]).unwrap();
    assert!(
        keyspace.contains("db1:") && !keyspace.contains("db0:"),
        "{keyspace}"
    );
}

#[test]
fn passwords_and_users_work_and_never_show() {
    let redis = RedisServer::start_with_config(&[
        "requirepass s3cret-pw",
        "user alice on >alice-pw ~* &* +@all",
    ])
    .unwrap();
    let port = redis.port();
    let c = open(&format!("redis://:s3cret-pw@127.0.0.1:{port}/0"));
    c.set("k", b"v", Expiry::Never).unwrap();
    let alice = open(&format!("redis://alice:alice-pw@127.0.0.1:{port}/0"));
    assert!(alice.has_key("k").unwrap());
    for url in [
        format!("redis://:wrong-pw@127.0.0.1:{port}/0"),
        format!("redis://alice:wrong-pw@127.0.0.1:{port}/0"),
    ] {
        let c = open(&url);
        assert!(!c.location().contains("wrong-pw"));
        let err = c.get("k").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
        assert!(!err.to_string().contains("wrong-pw"), "{err}");
        assert!(!format!("{err:?}").contains("wrong-pw"), "{err:?}");
    }
    let err = open(&redis.url()).get("k").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "no password: {err}");
}

#[test]
fn bad_urls_are_configuration_errors_without_the_password() {
    let cases = [
        ("redis://:pw-1@127.0.0.1:6379/0?bogus=1", "bogus"),
        ("redis://:pw-1@127.0.0.1:99999/0", "99999"),
        ("redis://:pw-1@127.0.0.1:port/0", "port"),
        ("redis://:pw-1@127.0.0.1:6379/x", "database"),
        ("redis://:pw-1@127.0.0.1:6379/-1", "database"),
        ("redis://:pw-1@127.0.0.1:6379/1?db=2", "db"),
        ("redis://:pw-1@/0", "host"),
        (
            "redis://:pw-1@127.0.0.1/0?connect_timeout=soon",
            "connect_timeout",
        ),
        (
            "redis://:pw-1@127.0.0.1/0?socket_timeout=0",
            "socket_timeout",
        ),
        (
            "redis://:pw-1@127.0.0.1/0?max_connections=0",
            "max_connections",
        ),
        ("redis://:pw-1@127.0.0.1/0?tls_ca=/x.pem", "rediss"),
        (
            "rediss://:pw-1@127.0.0.1/0?tls_ca=/no/such/ca.pem",
            "tls_ca",
        ),
        ("unix://:pw-1@host/path.sock", "socket"),
        ("unix://:pw-1@", "path"),
        ("redis+cluster://:pw-1@127.0.0.1:7000/2", "database 0"),
    ];
    for (url, needle) in cases {
        let err = Cache::open(url).unwrap_err();
        assert!(err.is_configuration(), "{url}: {err}");
        let text = format!("{err} {err:?}");
        assert!(text.contains(needle), "{url}: {text}");
        assert!(!text.contains("pw-1"), "{url}: {text}");
    }
}

#[test]
fn server_errors_are_backend_errors_with_the_servers_message() {
    let redis =
        RedisServer::start_with_config(&["maxmemory 4mb", "maxmemory-policy noeviction"]).unwrap();
    let c = open(&redis.url());
    redis.command(&["LPUSH", ":1:list", "x"]).unwrap();
    let err = c.get("list").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert_eq!(c.incr("list", 1).unwrap_err().kind(), ErrorKind::Backend);
    // The connection stays usable after a server error.
    c.set("k", b"v", Expiry::Never).unwrap();

    let chunk = vec![b'x'; 512 * 1024];
    let mut oom = None;
    for i in 0..40 {
        if let Err(e) = c.set(&format!("fill{i}"), &chunk, Expiry::Never) {
            oom = Some(e);
            break;
        }
    }
    let err = oom.expect("a 4 MB server refuses 20 MB");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("OOM"), "{err}");
    let err = c
        .set_many(
            &[("m1", &chunk[..]), ("m2", &chunk[..])],
            Expiry::Never,
            None,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(c.get("k").unwrap().is_some(), "reads still work when full");
}

// ---------------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------------

#[test]
fn reads_go_to_the_replica_and_writes_to_the_leader() {
    let mut set = RedisReplicaSet::start().unwrap();
    let c = open(&set.url());
    // Replication is asynchronous: every read below waits for the replica first.
    c.set("k", b"v", Expiry::Never).unwrap();
    c.set_many(&[("a", b"1"), ("b", b"2")], Expiry::Never, None)
        .unwrap();
    assert_eq!(c.incr("a", 1).unwrap(), 2);
    assert!(c.add("c", b"3", Expiry::Never).unwrap());
    assert_eq!(c.delete_many(&["b"], None).unwrap(), 1);
    set.sync().unwrap();
    let got = c.get_many(&["a", "b", "c"], None).unwrap();
    assert_eq!(
        got,
        vec![
            Some(b"2".as_slice().into()),
            None,
            Some(b"3".as_slice().into())
        ],
        "replica keys {:?}, leader keys {:?}, replication {:?}",
        set.replica().command(&["DBSIZE"]),
        set.leader().command(&["DBSIZE"]),
        set.replica().command(&["INFO", "replication"]),
    );
    assert!(c.has_key("c").unwrap() && !c.has_key("b").unwrap());
    let (leader, replica) = (set.leader().port(), set.replica().port());
    let (leader_hits, replica_hits) = (
        stat(leader, "keyspace_hits"),
        stat(replica, "keyspace_hits"),
    );
    for _ in 0..50 {
        assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }
    let got = c.get_many(&["k", "k"], None).unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(
        stat(leader, "keyspace_hits"),
        leader_hits,
        "no read reached the leader"
    );
    assert_eq!(stat(replica, "keyspace_hits"), replica_hits + 52);
    // The replica refuses writes; they all went to the leader.
    assert_eq!(set.replica().command(&["GET", ":1:k"]).unwrap(), "v");

    // A dead replica: reads fall back to the leader.
    set.replica_mut().kill().unwrap();
    for _ in 0..5 {
        assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }
    assert!(stat(leader, "keyspace_hits") >= leader_hits + 5);
}

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

#[test]
fn cluster_operations_span_slots_and_nodes() {
    let cluster = RedisCluster::start().unwrap();
    let url = cluster.url();
    let c = Cache::builder(&url).key_prefix("app").build().unwrap();

    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    c.set_many(&items, Expiry::Never, None).unwrap();
    for node in cluster.nodes() {
        let n: u64 = node.command(&["DBSIZE"]).unwrap().parse().unwrap();
        assert!(n > 50, "every node holds a share of the keys: {n}");
    }
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.get_many(&names, None).unwrap();
    for (k, v) in keys.iter().zip(&got) {
        assert_eq!(v.as_deref(), Some(k.as_bytes()));
    }
    let other = Cache::builder(&url).key_prefix("other").build().unwrap();
    other.set("keep", b"1", Expiry::Never).unwrap();
    assert_eq!(c.delete_many(&names[..100], None).unwrap(), 100);
    c.clear().unwrap();
    assert!(c
        .get_many(&names, None)
        .unwrap()
        .iter()
        .all(Option::is_none));
    assert!(
        other.has_key("keep").unwrap(),
        "clear kept the other prefix"
    );

    let backend = RedisBackend::from_url(&url).unwrap();
    assert!(backend.is_cluster());
    backend.flush_db().unwrap();
    assert!(!other.has_key("keep").unwrap());
    for node in cluster.nodes() {
        assert_eq!(node.command(&["DBSIZE"]).unwrap(), "0");
    }
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[test]
fn tls_with_a_private_ca_or_insecure() {
    let certs = TestCertificates::generate().unwrap();
    let redis = match RedisServer::start_tls(&certs) {
        Ok(r) => r,
        // A redis-server built without TLS rejects the tls-* directives.
        Err(e) if e.to_string().contains("Bad directive") => {
            eprintln!("skipped: this redis-server has no TLS support: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let url = redis.tls_url().unwrap();
    let c = open(&format!("{url}?tls_ca={}", certs.ca_cert().display()));
    c.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    let c = open(&format!("{url}?insecure=true"));
    c.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    // Without the private CA the certificate is refused.
    let err = open(&url).get("k").unwrap_err();
    assert!(err.is_connection(), "{err}");
    // Plain text to the TLS port fails rather than hangs.
    let started = Instant::now();
    let plain = open(&format!(
        "redis://127.0.0.1:{}/0?socket_timeout=0.5",
        redis.tls_port().unwrap()
    ));
    assert!(plain.get("k").is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------

#[test]
fn a_dead_server_fails_fast_with_a_connection_error() {
    let port = free_loopback_port().unwrap();
    let c = Cache::builder(&format!("redis://127.0.0.1:{port}/0"))
        .failure_policy(policy(false, 0, Duration::ZERO))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = c.get("k").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(err.is_connection(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    for url in [
        format!("redis+cluster://127.0.0.1:{port}"),
        "unix:///nonexistent/polycache/redis.sock".to_string(),
    ] {
        let c = Cache::builder(&url)
            .failure_policy(policy(false, 0, Duration::ZERO))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = c.set("k", b"v", Expiry::Never).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{url}");
        assert!(err.is_connection(), "{url}: {err}");
    }
}

#[test]
fn a_silent_server_times_out() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let keeper = {
        let stop = stop.clone();
        thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let c = Cache::builder(&format!(
        "redis://127.0.0.1:{port}/0?connect_timeout=0.3&socket_timeout=0.3"
    ))
    .failure_policy(policy(false, 0, Duration::ZERO))
    .build()
    .unwrap();
    let started = Instant::now();
    let err = c.get("k").unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    keeper.join().unwrap();
}

#[test]
fn reconnects_when_the_server_comes_back() {
    let mut redis = RedisServer::start().unwrap();
    let c = open(&redis.url());
    c.set("k", b"v", Expiry::Never).unwrap();
    // Several pooled connections, all of which the restart will close.
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    c.get("k").unwrap();
                }
            });
        }
    });
    redis.kill().unwrap();
    let err = c.get("k").unwrap_err();
    assert!(err.is_connection(), "{err}");
    redis.restart().unwrap();
    let back = Instant::now();
    loop {
        match c.set("k", b"again", Expiry::Never) {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_connection(), "{e}");
                assert!(
                    back.elapsed() < Duration::from_secs(2),
                    "still failing 2 s after the restart: {e}"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Every call works again, on every pooled connection.
    for _ in 0..20 {
        assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"again"[..]));
    }
}

/// Eight threads work while the server is killed, then restarted.
fn kill_under_load(fail_open: bool) {
    let mut redis = RedisServer::start().unwrap();
    let c = Cache::builder(&redis.url())
        .failure_policy(policy(fail_open, 3, Duration::from_millis(200)))
        .build()
        .unwrap();
    c.set("shared", b"1", Expiry::Never).unwrap();
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let (c, stop, ok, failed) = (&c, &stop, &ok, &failed);
                s.spawn(move || {
                    let started = Instant::now();
                    let mut i = 0u64;
                    // Bounded in count and time.
                    while !stop.load(Ordering::SeqCst)
                        && i < 1_000_000
                        && started.elapsed() < Duration::from_secs(20)
                    {
                        i += 1;
                        let key = format!("t{t}-{}", i % 50);
                        let results = [
                            c.set(&key, b"value", Expiry::Never).map(|_| ()),
                            c.get(&key).map(|_| ()),
                            c.get_many(&[&key, "shared"], None).map(|_| ()),
                        ];
                        for r in results {
                            match r {
                                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    assert!(!fail_open, "fail_open raised {e}");
                                    assert!(
                                        matches!(
                                            e.kind(),
                                            ErrorKind::Connection | ErrorKind::Timeout
                                        ),
                                        "{e}"
                                    );
                                    failed.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        redis.kill().unwrap();
        let killed = Instant::now();
        thread::sleep(Duration::from_millis(500));
        let before_restart = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        redis.restart().unwrap();
        thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("a worker panicked");
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no worker hung");
        assert!(before_restart > 0);
    });
    if !fail_open {
        assert!(failed.load(Ordering::Relaxed) > 0, "the outage was seen");
    }
    // Working again after the restart.
    c.set("after", b"x", Expiry::Never).unwrap();
    assert_eq!(c.get("after").unwrap().as_deref(), Some(&b"x"[..]));
}

#[test]
fn kill_while_eight_threads_work_failing_closed() {
    kill_under_load(false);
}

#[test]
fn kill_while_eight_threads_work_failing_open() {
    kill_under_load(true);
}

#[test]
fn fail_open_on_a_dead_server_answers_misses_in_microseconds_once_the_breaker_is_open() {
    let port = free_loopback_port().unwrap();
    let c = Cache::open(&format!(
        "redis://127.0.0.1:{port}/0?fail_open=true&breaker_threshold=3&breaker_cooldown=60"
    ))
    .unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("k").unwrap(), None);
    }
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(c.get("k").unwrap(), None);
            started.elapsed()
        })
        .collect();
    times.sort();
    assert!(
        times[50] < Duration::from_millis(5),
        "median {:?} with the breaker open",
        times[50]
    );
    assert!(
        !c.set("k", b"v", Expiry::Never).unwrap(),
        "writes report failure"
    );
    assert!(c.stats().errors >= 103);
}

#[test]
fn the_pool_is_bounded_and_shared_by_threads() {
    let redis = RedisServer::start().unwrap();
    let c = open(&format!("{}?max_connections=2", redis.url()));
    thread::scope(|s| {
        for t in 0..8 {
            let c = &c;
            s.spawn(move || {
                for i in 0..200 {
                    let key = format!("{t}-{i}");
                    c.set(&key, b"v", Expiry::Never).unwrap();
                    assert!(c.get(&key).unwrap().is_some());
                }
            });
        }
    });
    let clients = redis.command(&["INFO", "clients"]).unwrap();
    let connected: u32 = info_field(&clients, "connected_clients")
        .unwrap()
        .parse()
        .unwrap();
    // Two pooled connections plus the one asking.
    assert!(connected <= 3, "{connected} connections");
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "1600");
}

#[test]
fn the_backend_opens_without_a_server() {
    let port = free_loopback_port().unwrap();
    let backend = RedisBackend::from_url(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    assert_eq!(backend.name(), "redis");
    assert!(!backend.is_local());
    assert!(backend.get(b"k").unwrap_err().is_connection());
}

#[test]
fn a_dead_cluster_node_fails_its_keys_and_the_cluster_recovers() {
    let mut cluster = RedisCluster::start().unwrap();
    let c = Cache::builder(&cluster.url())
        .failure_policy(policy(false, 0, Duration::ZERO))
        .build()
        .unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for k in &keys {
        c.set(k, b"v", Expiry::Never).unwrap();
    }
    let owner = |k: &str| -> usize {
        let full = format!(":1:{k}");
        cluster
            .nodes()
            .iter()
            .position(|n| n.command(&["EXISTS", &full]).is_ok_and(|r| r == "1"))
            .unwrap()
    };
    let on_dead: Vec<&String> = keys.iter().filter(|k| owner(k) == 2).collect();
    let on_live: Vec<&String> = keys.iter().filter(|k| owner(k) == 0).collect();
    assert!(!on_dead.is_empty() && !on_live.is_empty());
    cluster.nodes_mut()[2].kill().unwrap();
    let started = Instant::now();
    let err = c.get(on_dead[0]).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Before the other nodes declare it failed (cluster-node-timeout 5 s) they still serve.
    assert!(c.get(on_live[0]).unwrap().is_some());

    cluster.nodes_mut()[2].restart().unwrap();
    let back = Instant::now();
    // Bounded: the node rejoins from its nodes.conf, the cluster converges again.
    while c.get(on_dead[0]).is_err() {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the cluster did not recover"
        );
        thread::sleep(Duration::from_millis(100));
    }
    c.set(on_dead[0], b"again", Expiry::Never).unwrap();
    assert_eq!(c.get(on_dead[0]).unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn a_cluster_incr_that_timed_out_is_not_sent_again() {
    // redis-rs' cluster client re-sends a command after a timeout or a broken connection;
    // `incr` and `add` must go out once, or a frozen node applies them several times.
    let mut cluster = RedisCluster::start().unwrap();
    let c = Cache::builder(&format!(
        "{}?socket_timeout=0.2&connect_timeout=0.2",
        cluster.url()
    ))
    .failure_policy(policy(false, 0, Duration::ZERO))
    .build()
    .unwrap();
    c.set("n", b"0", Expiry::Never).unwrap();
    // Opens the connection the timed-out incr then goes out on.
    assert_eq!(c.incr("n", 1).unwrap(), 1);
    let node = cluster
        .nodes()
        .iter()
        .position(|n| n.command(&["EXISTS", ":1:n"]).is_ok_and(|r| r == "1"))
        .unwrap();
    cluster.nodes_mut()[node].freeze().unwrap();
    let err = c.incr("n", 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    cluster.nodes_mut()[node].thaw().unwrap();
    // The frozen node applies what it was sent once it runs again (maybe after it answered
    // a newer connection): one increment, not three. Bounded, in case it never does.
    let mut n = Some(1);
    assert!(eventually(Duration::from_secs(10), || {
        n = c.get("n").unwrap().and_then(|v| v.as_i64());
        n != Some(1)
    }));
    assert_eq!(n, Some(2));
    assert_eq!(c.incr("n", 1).unwrap(), 3);
}

/// A signal handler installed without `SA_RESTART` (as Python installs its own) interrupts
/// the calling thread's system calls with `EINTR`. That is not an outage: the connect, the
/// write and the read it interrupted are retried, and no call fails for it.
#[test]
fn signals_that_interrupt_system_calls_fail_no_call() {
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: a handler that does nothing is async-signal-safe; `sa_flags` 0 leaves out
    // SA_RESTART on purpose, so that blocked calls return EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    let redis = RedisServer::start().unwrap();
    let url = format!("{}?max_connections=1", redis.url());
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let done = done.clone();
        thread::spawn(move || {
            let mut failures = Vec::new();
            for round in 0..150 {
                // A fresh cache is a fresh connection: each round connects again.
                let c = open(&url);
                let value = vec![b'x'; 64 * 1024];
                for i in 0..10 {
                    let key = format!("{round}-{i}");
                    if let Err(e) = c.set(&key, &value, Expiry::Never) {
                        failures.push(format!("set {key}: {e}"));
                    }
                    match c.get(&key) {
                        Ok(Some(v)) if v.len() == value.len() => {}
                        other => failures.push(format!("get {key}: {other:?}")),
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
            failures
        })
    };
    let target = {
        use std::os::unix::thread::JoinHandleExt;
        worker.as_pthread_t()
    };
    let mut sent = 0u64;
    while !done.load(Ordering::SeqCst) {
        // SAFETY: the worker thread is alive until `done` is set, and joined below.
        unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
        sent += 1;
        thread::sleep(Duration::from_micros(50));
    }
    let failures = worker.join().unwrap();
    assert!(sent > 100, "only {sent} signals were sent");
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
