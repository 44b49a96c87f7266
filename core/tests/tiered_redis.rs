//! Tiered caches with the Redis pub/sub invalidation bus, against a Redis that the tests
//! start: two processes (this test binary runs itself again as the other one), a Redis
//! restart, an L2 without pub/sub, and the URL forms.
#![cfg(feature = "redis")]

use polycache::{Cache, Expiry, RedisBus};
use polycache_testkit::{eventually, url_option, RedisServer, TestChild};
use std::io::{BufRead, Write};
use std::time::Duration;

/// Generous: a loaded shared machine may be slow, and a test never asserts on time.
const PATIENCE: Duration = Duration::from_secs(5);
const CHILD_ENV: &str = "POLYCACHE_TIERED_CHILD_URL";

/// A `tiered://` URL over `l2` with `bus`, a 10-minute L1 (so only an invalidation can
/// refresh an L1 copy within a test) and the key prefix `prefix`.
fn tiered_url(l2: &str, bus: &str, prefix: &str) -> String {
    format!(
        "tiered://?l2={}&bus={}&l1_timeout=600&key_prefix={prefix}",
        url_option(l2),
        url_option(bus)
    )
}

fn text(v: Option<polycache::Value>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// True once `cache` answers `want` for `key` (polled for up to [`PATIENCE`]).
fn converges(cache: &Cache, key: &str, want: &str) -> bool {
    eventually(PATIENCE, || {
        text(cache.get(key).unwrap()).as_deref() == Some(want)
    })
}

/// The other process: this test binary run again, answering `get KEY` and `set KEY VALUE`
/// lines on its stdin from its own tiered cache.
struct Other(TestChild);

impl Other {
    fn spawn(url: &str) -> Other {
        Other(TestChild::spawn("other_process", (CHILD_ENV, url)))
    }

    fn ask(&mut self, request: &str) -> String {
        self.0.ask(request)
    }

    fn get(&mut self, key: &str) -> Option<String> {
        let r = self.ask(&format!("get {key}"));
        r.strip_prefix("value ").map(str::to_owned)
    }
}

#[test]
#[ignore = "the other process of writes_in_one_process_drop_l1_copies_in_another"]
fn other_process() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cache = Cache::open(&url).unwrap();
    let mut out = std::io::stdout();
    // On a line of its own: libtest has just written "test other_process ... ".
    writeln!(out, "\n@ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("get"), Some(k), None) => match text(cache.get(k).unwrap()) {
                Some(v) => format!("value {v}"),
                None => "miss".to_owned(),
            },
            (Some("set"), Some(k), Some(v)) => {
                cache.set(k, v.as_bytes(), Expiry::Default).unwrap();
                "ok".to_owned()
            }
            _ => break,
        };
        writeln!(out, "@{reply}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn writes_in_one_process_drop_l1_copies_in_another() {
    let redis = RedisServer::start().unwrap();
    let url = tiered_url(&redis.url(), "redis", "xp");
    let bus = RedisBus::open(&redis.url(), "xp").unwrap();
    assert_eq!(bus.channel(), "polycache:l1:xp");
    let a = Cache::builder_tiered("memory://", &redis.url())
        .key_prefix("xp")
        .bus(bus.clone())
        .l1_timeout(Some(Duration::from_secs(600)))
        .build()
        .unwrap();
    let mut b = Other::spawn(&url);
    // Writes straight to L2, publishing nothing: what B then answers comes from its L1.
    let plain = Cache::builder(&redis.url())
        .key_prefix("xp")
        .build()
        .unwrap();

    // (Written by `plain`: an invalidation still on its way could drop B's fresh copy.)
    plain.set("k", b"old", Expiry::Default).unwrap();
    assert_eq!(b.get("k").as_deref(), Some("old"));
    plain.set("k", b"behind its back", Expiry::Default).unwrap();
    assert_eq!(b.get("k").as_deref(), Some("old"), "B answers from its L1");

    a.set("k", b"new", Expiry::Default).unwrap();
    assert!(
        eventually(PATIENCE, || b.get("k").as_deref() == Some("new")),
        "B still answers {:?} after A's set",
        b.get("k")
    );

    a.delete("k").unwrap();
    assert!(eventually(PATIENCE, || b.get("k").is_none()), "delete");

    a.set("n", b"1", Expiry::Never).unwrap();
    assert_eq!(b.get("n").as_deref(), Some("1"));
    assert_eq!(a.incr("n", 5).unwrap(), 6);
    assert!(
        eventually(PATIENCE, || b.get("n").as_deref() == Some("6")),
        "incr"
    );

    a.set_many(&[("m1", b"1"), ("m2", b"2")], Expiry::Default, None)
        .unwrap();
    assert_eq!(
        (b.get("m1"), b.get("m2")),
        (Some("1".into()), Some("2".into()))
    );
    a.set_many(&[("m1", b"10"), ("m2", b"20")], Expiry::Default, None)
        .unwrap();
    assert!(
        eventually(PATIENCE, || b.get("m1").as_deref() == Some("10")
            && b.get("m2").as_deref() == Some("20")),
        "set_many"
    );

    a.set("c", b"x", Expiry::Default).unwrap();
    assert_eq!(b.get("c").as_deref(), Some("x"));
    a.clear().unwrap();
    plain.set("c", b"after the clear", Expiry::Default).unwrap();
    assert!(
        eventually(PATIENCE, || b.get("c").as_deref()
            == Some("after the clear")),
        "clear drops B's L1"
    );

    // The other way round: B's write reaches A's L1.
    a.set("w", b"from a", Expiry::Default).unwrap();
    assert_eq!(b.ask("set w from-b"), "ok");
    assert!(converges(&a, "w", "from-b"), "A sees B's write");

    // A's own messages come back to it and are ignored: its fresh L1 write stays. (Redis
    // delivers in publish order, so once A has seen B's write it has every earlier message:
    // the next one counted is A's own.)
    let seen = bus.messages_received();
    a.set("own", b"mine", Expiry::Default).unwrap();
    assert!(
        eventually(PATIENCE, || bus.messages_received() > seen),
        "A's subscriber got its own message"
    );
    plain
        .set("own", b"behind its back", Expiry::Default)
        .unwrap();
    assert_eq!(text(a.get("own").unwrap()).as_deref(), Some("mine"));
}

#[test]
fn after_a_redis_restart_the_subscriber_reconnects_and_drops_l1() {
    let mut redis = RedisServer::start().unwrap();
    let bus = RedisBus::open(&redis.url(), "rs").unwrap();
    let open = || {
        Cache::builder_tiered("memory://", &redis.url())
            .key_prefix("rs")
            .bus(bus.clone())
            .l1_timeout(Some(Duration::from_secs(600)))
            .build()
            .unwrap()
    };
    let (a, b) = (open(), open());
    a.set("k", b"old", Expiry::Default).unwrap();
    assert_eq!(text(b.get("k").unwrap()).as_deref(), Some("old"));
    let before = bus.connections();
    assert!(before >= 1, "the subscriber is connected");

    // The restart loses Redis' data and every message published meanwhile.
    redis.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || bus.connections() > before),
        "the subscriber did not reconnect"
    );
    assert_eq!(
        b.get("k").unwrap(),
        None,
        "the reconnection dropped B's L1 (and L2 lost the value in the restart)"
    );

    // Invalidations flow again over the new connection.
    a.set("k", b"again", Expiry::Default).unwrap();
    assert_eq!(text(b.get("k").unwrap()).as_deref(), Some("again"));
    a.set("k", b"newer", Expiry::Default).unwrap();
    assert!(converges(&b, "k", "newer"));
}

#[test]
fn an_l2_without_pub_sub_can_use_a_redis_bus_of_its_own() {
    let redis = RedisServer::start().unwrap();
    let dir = std::env::temp_dir().join(format!("polycache-tiered-bus-{}", std::process::id()));
    let l2 = format!("file://{}", dir.display());
    let url = tiered_url(&l2, &redis.url(), "fb");
    let (a, b) = (Cache::open(&url).unwrap(), Cache::open(&url).unwrap());
    a.set("k", b"old", Expiry::Default).unwrap();
    assert_eq!(text(b.get("k").unwrap()).as_deref(), Some("old"));
    a.set("k", b"new", Expiry::Default).unwrap();
    assert!(converges(&b, "k", "new"));
    a.clear().unwrap();
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_bus_urls_are_checked_and_redacted() {
    // bus=redis needs a Redis L2.
    let e = Cache::open(&tiered_url("memory://", "redis", "x")).unwrap_err();
    assert!(e.is_configuration(), "{e}");
    assert!(e.to_string().contains("bus=redis"), "{e}");
    // A Cluster has no single subscriber connection yet.
    let e = RedisBus::open("redis+cluster://127.0.0.1:7000", "x").unwrap_err();
    assert!(e.is_configuration(), "{e}");
    let e = RedisBus::open("memcached://127.0.0.1:11211", "x").unwrap_err();
    assert!(e.to_string().contains("redis://"), "{e}");
    // A bad option of the bus's URL is named.
    let e = Cache::open(&tiered_url(
        "memory://",
        "redis://127.0.0.1:1/0?max_conections=2",
        "x",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("max_conections"), "{e}");
    // The bus's password never shows; opening connects to nothing, and a cache whose bus
    // server is down still works on its L1 and L2.
    let port = polycache_testkit::free_loopback_port().unwrap();
    let c = Cache::open(&tiered_url(
        "memory://bus-down",
        &format!("redis://:s3cret@127.0.0.1:{port}/0?connect_timeout=0.2"),
        "x",
    ))
    .unwrap();
    assert!(!c.location().contains("s3cret"), "{}", c.location());
    c.set("k", b"v", Expiry::Default).unwrap();
    assert_eq!(text(c.get("k").unwrap()).as_deref(), Some("v"));
}

#[test]
fn leases_are_released_by_one_compare_and_delete_on_redis() {
    use polycache::backend::redis::RedisBackend;
    use polycache::Backend;
    let redis = RedisServer::start().unwrap();
    let backend = RedisBackend::from_url(&redis.url()).unwrap();
    backend.set(b"lock", b"token-a", None).unwrap();
    assert!(!backend.delete_if_equals(b"lock", b"token-b").unwrap());
    assert_eq!(
        backend.get(b"lock").unwrap().as_deref(),
        Some(&b"token-a"[..]),
        "another holder's lease stays"
    );
    assert!(backend.delete_if_equals(b"lock", b"token-a").unwrap());
    assert_eq!(backend.get(b"lock").unwrap(), None);
    assert!(!backend.delete_if_equals(b"lock", b"token-a").unwrap());

    // Through a cache with the lease on: the lock is gone once the value is stored.
    let cache = Cache::open(&format!("{}?lease=true&key_prefix=ls", redis.url())).unwrap();
    let v = cache
        .get_or_set_with("k", || Ok(b"v".to_vec()), Expiry::Default)
        .unwrap();
    assert_eq!(&*v, b"v");
    assert_eq!(backend.get(b"ls:1:k:__lock__").unwrap(), None);
    assert_eq!(backend.get(b"ls:1:k").unwrap().as_deref(), Some(&b"v"[..]));
}
