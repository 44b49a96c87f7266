//! `redis+sentinel://` against real sentinels started by testkit: the URL's parts (master
//! name, database, the master's and the sentinels' passwords, TLS), reads from replicas, a
//! master demoted under an open connection, and bad input. The failover under load (master
//! killed, sync and async, both failure policies) is in `faults.rs`; every operation of the
//! backend contract runs in `contract.rs`.
#![cfg(feature = "redis")]

use polycache::{Cache, ErrorKind, Expiry};
use polycache_testkit::{
    eventually, free_loopback_port, info_field, RedisSentinelSet, SentinelAuth, TestCertificates,
    SENTINEL_MASTER_NAME,
};
use std::net::TcpListener;
use std::time::Duration;

fn open(url: &str) -> Cache {
    Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// A multi-thread runtime, where the awaited calls run beside the blocking ones.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn passwords_and_database_reach_the_master_sync_and_async() {
    let set = RedisSentinelSet::start_with(1, &SentinelAuth::new(Some("m-pw"), Some("s-pw")))
        .unwrap_or_else(|e| panic!("{e}"));
    let url = set.url();
    assert!(
        url.contains(":m-pw@") && url.contains("sentinel_password=s-pw"),
        "{url}"
    );
    let db3 = open(&url.replace("/mymaster/0", "/mymaster/3"));
    let db0 = open(&url);
    assert!(db3.set("k", b"three", Expiry::Never).unwrap());
    assert_eq!(db3.get("k").unwrap().as_deref(), Some(&b"three"[..]));
    assert_eq!(db0.get("k").unwrap(), None, "another database");
    let master = set.master_port().unwrap();
    assert_eq!(
        set.data_command(master, &["INFO", "keyspace"])
            .map(|i| info_field(&i, "db3").is_some())
            .ok(),
        Some(true)
    );
    runtime().block_on(async {
        assert_eq!(
            db3.get_async("k").await.unwrap().as_deref(),
            Some(&b"three"[..])
        );
        assert!(db0.set_async("n", b"1", Expiry::Never).await.unwrap());
        assert_eq!(db0.incr_async("n", 41).await.unwrap(), 42);
    });
    assert_eq!(db0.get("n").unwrap().as_deref(), Some(&b"42"[..]));

    // A wrong or missing password of either kind is a configuration error, never an outage.
    for bad in [
        url.replace("sentinel_password=s-pw", "sentinel_password=nope"),
        url.replace("?sentinel_password=s-pw", ""),
        url.replace(":m-pw@", ":nope@"),
    ] {
        let cache = open(&bad);
        let err = cache.get("k").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{bad}: {err}");
        assert!(!err.to_string().contains("nope"), "{err}");
        let err = runtime().block_on(cache.get_async("k")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{bad}: {err}");
    }
}

#[test]
fn reads_go_to_a_replica_when_asked() {
    let set = RedisSentinelSet::start().unwrap_or_else(|e| panic!("{e}"));
    let master = set.master_port().unwrap();
    let replica = set.replica_port().unwrap();
    let hits = |port| -> u64 {
        let info = set.data_command(port, &["INFO", "stats"]).unwrap();
        info_field(&info, "keyspace_hits").unwrap().parse().unwrap()
    };
    let cache = open(&format!("{}?read_from_replicas=true", set.url()));
    cache.set("k", b"v", Expiry::Never).unwrap();
    assert!(eventually(Duration::from_secs(10), || cache
        .get("k")
        .unwrap()
        .is_some()));
    let before = (hits(master), hits(replica));
    for _ in 0..10 {
        assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }
    runtime().block_on(async {
        for _ in 0..10 {
            assert_eq!(
                cache.get_async("k").await.unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
    });
    assert_eq!(hits(master), before.0, "no read reached the master");
    assert_eq!(hits(replica), before.1 + 20);
    // Writes still go to the master.
    assert_eq!(
        cache.incr("missing", 1).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A master turned into a replica while the cache's connections to it stay open answers
/// writes with READONLY: that call fails as an outage, and the next one asks the sentinels
/// and reaches the new master.
#[test]
fn a_demoted_master_leads_to_rediscovery_sync_and_async() {
    let set = RedisSentinelSet::start().unwrap_or_else(|e| panic!("{e}"));
    let cache = open(&set.url());
    let rt = runtime();
    cache.set("k", b"1", Expiry::Never).unwrap();
    rt.block_on(cache.set_async("k", b"1", Expiry::Never))
        .unwrap();

    let (old, new) = (set.master_port().unwrap(), set.replica_port().unwrap());
    // Swap the roles by hand (REPLICAOF keeps client connections open), then point the
    // sentinels at the new master.
    set.data_command(new, &["REPLICAOF", "NO", "ONE"]).unwrap();
    set.data_command(old, &["REPLICAOF", "127.0.0.1", &new.to_string()])
        .unwrap();
    for s in set.sentinels() {
        let port = s.port();
        set.sentinel_command(port, &["SENTINEL", "REMOVE", SENTINEL_MASTER_NAME])
            .unwrap();
        set.sentinel_command(
            port,
            &[
                "SENTINEL",
                "MONITOR",
                SENTINEL_MASTER_NAME,
                "127.0.0.1",
                &new.to_string(),
                "2",
            ],
        )
        .unwrap();
    }

    let err = cache.set("k", b"2", Expiry::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.to_string().contains("READONLY"), "{err}");
    assert!(cache.set("k", b"2", Expiry::Never).unwrap());

    let err = rt
        .block_on(cache.set_async("k", b"3", Expiry::Never))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(rt
        .block_on(cache.set_async("k", b"3", Expiry::Never))
        .unwrap());
    assert_eq!(set.data_command(new, &["GET", ":1:k"]).unwrap(), "3");
}

#[test]
fn urls_naming_no_master_or_no_sentinel_are_refused() {
    for (url, expected) in [
        ("redis+sentinel://127.0.0.1:26379", "names no master"),
        ("redis+sentinel://127.0.0.1:26379/", "names no master"),
        ("redis+sentinel://127.0.0.1:26379//0", "names no master"),
        ("redis+sentinel:///mymaster/0", "names no sentinel"),
        ("redis+sentinel://h/m/x", "invalid database"),
        (
            "redis+sentinel://h/m/1?db=2",
            "database 1 and the db option 2",
        ),
        ("redis+sentinel://h:0/m", "invalid port"),
        (
            "redis+sentinel://h/m?tls_ca=/etc/hosts",
            "apply only to rediss",
        ),
        (
            "redis+sentinel://h/m?read_from_replicas=maybe",
            "read_from_replicas",
        ),
        (
            "redis+sentinel://h/m?sentinel_pasword=x",
            "sentinel_pasword",
        ),
    ] {
        let err = Cache::open(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{url}: {err}");
        assert!(err.to_string().contains(expected), "{url}: {err}");
    }
    // Opening connects to nothing; the password of the sentinels is never shown.
    let err = Cache::open("redis+sentinel://h/?sentinel_password=hunter2").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn an_unknown_master_name_is_a_configuration_error() {
    let set = RedisSentinelSet::start().unwrap_or_else(|e| panic!("{e}"));
    let cache = open(&set.url().replace("/mymaster/", "/nosuch/"));
    let err = cache.get("k").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(
        err.to_string().contains("no master named 'nosuch'"),
        "{err}"
    );
    let err = runtime().block_on(cache.get_async("k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    // Failing open does not hide a misconfiguration.
    let lenient = open(&format!(
        "{}?fail_open=true",
        set.url().replace("/mymaster/", "/nosuch/")
    ));
    assert!(lenient.get("k").is_err());
}

#[test]
fn unreachable_sentinels_fail_fast_and_fail_open() {
    // Two closed ports, and one that accepts connections but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let hosts = format!(
        "127.0.0.1:{},127.0.0.1:{},{}",
        free_loopback_port().unwrap(),
        free_loopback_port().unwrap(),
        silent.local_addr().unwrap()
    );
    let url = format!(
        "redis+sentinel://{hosts}/mymaster?connect_timeout=0.2&socket_timeout=0.2&breaker_threshold=0"
    );
    let cache = open(&url);
    let err = cache.get("k").unwrap_err();
    assert!(err.is_connection() || err.is_timeout(), "{err}");
    assert!(
        err.to_string()
            .contains("no sentinel of 'mymaster' answered"),
        "{err}"
    );
    let err = runtime().block_on(cache.get_async("k")).unwrap_err();
    assert!(err.is_connection() || err.is_timeout(), "{err}");

    let lenient = open(&format!("{url}&fail_open=true"));
    assert_eq!(lenient.get("k").unwrap(), None);
    assert!(!lenient.set("k", b"v", Expiry::Never).unwrap());
    runtime().block_on(async {
        assert_eq!(lenient.get_async("k").await.unwrap(), None);
    });
}

/// Sentinels, master and replica all on TLS: `rediss+sentinel://` with the private CA
/// reaches the master the sentinels name, sync and async.
#[test]
fn rediss_sentinel_end_to_end() {
    let certs = TestCertificates::generate().unwrap_or_else(|e| panic!("{e}"));
    let set = match RedisSentinelSet::start_tls(&certs) {
        Ok(set) => set,
        // A redis-server built without TLS rejects the tls-* directives.
        Err(e) if e.to_string().contains("Bad directive") => {
            eprintln!("skipped: this redis-server has no TLS: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let url = set.url();
    assert!(
        url.starts_with("rediss+sentinel://") && url.contains("tls_ca="),
        "{url}"
    );
    let cache = open(&url);
    assert!(cache.set("k", b"over tls", Expiry::Never).unwrap());
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"over tls"[..]));
    let got = runtime().block_on(cache.get_async("k")).unwrap();
    assert_eq!(got.as_deref(), Some(&b"over tls"[..]));
    let master = &set.servers()[set.master_index().unwrap()];
    assert_eq!(
        set.data_command(master.port(), &["GET", ":1:k"]).unwrap(),
        "over tls"
    );
}
