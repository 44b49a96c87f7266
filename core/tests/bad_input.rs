//! Bad input on every backend: keys and values at and past each limit, NUL bytes, huge
//! many-key calls, malformed URLs. Each is a clear error of the right kind; nothing is
//! stored that should not be, and a failed write leaves the old value in place.
#![cfg(all(
    feature = "memory",
    feature = "redis",
    feature = "memcached",
    feature = "postgres",
    feature = "sqlite",
    feature = "file"
))]

mod load_common;

use polycache::{Cache, ErrorKind, Expiry, MAX_KEY_LEN};
use polycache_testkit::TempDir;
use polycache_testkit::{MemcachedServer, PostgresServer, RedisServer};

/// The backends, each opened with `max_value_size=65536`.
fn each_backend(check: impl Fn(&str, &Cache)) {
    let dir = TempDir::new("bad-input");
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let memcached = MemcachedServer::start().unwrap_or_else(|e| panic!("{e}"));
    let postgres = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let urls = [
        "memory://?max_entries=1000000".to_string(),
        format!("file://{}/files", dir.path().display()),
        format!("sqlite://{}/cache.db", dir.path().display()),
        redis.url(),
        memcached.url(),
        postgres.url(),
    ];
    for url in urls {
        let sep = if url.contains('?') { '&' } else { '?' };
        let cache = Cache::open(&format!("{url}{sep}max_value_size=65536"))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        cache.clear().unwrap();
        check(&url, &cache);
    }
}

#[test]
fn limits_nul_bytes_and_huge_many_key_calls_on_every_backend() {
    each_backend(|url, c| {
        // The longest key works; one byte more is an invalid key for every operation,
        // and stores nothing.
        let longest = "k".repeat(MAX_KEY_LEN);
        assert!(
            c.set(longest.as_str(), b"long", Expiry::Never).unwrap(),
            "{url}"
        );
        assert_eq!(
            c.get(longest.as_str()).unwrap().as_deref(),
            Some(&b"long"[..]),
            "{url}: the longest key"
        );
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        for (op, result) in [
            (
                "set",
                c.set(too_long.as_str(), b"x", Expiry::Never).map(drop),
            ),
            ("get", c.get(too_long.as_str()).map(drop)),
            (
                "add",
                c.add(too_long.as_str(), b"x", Expiry::Never).map(drop),
            ),
            ("incr", c.incr(too_long.as_str(), 1).map(drop)),
            ("get_many", c.get_many(&[too_long.as_str()], None).map(drop)),
            (
                "set_many",
                c.set_many(
                    &[("ok", b"1".as_slice()), (too_long.as_str(), b"2")],
                    Expiry::Never,
                    None,
                )
                .map(drop),
            ),
        ] {
            match result {
                Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidKey, "{url}: {op}: {e}"),
                Ok(()) => panic!("{url}: {op} of a key over the limit succeeded"),
            }
        }
        assert_eq!(
            c.get("ok").unwrap(),
            None,
            "{url}: a failed set_many stored nothing"
        );

        // NUL bytes, control characters and spaces are ordinary key bytes: distinct keys.
        let odd = ["a\0b", "a\0c", "a b", "a\nb", "a\u{7f}", "\0"];
        for (i, k) in odd.iter().enumerate() {
            assert!(c.set(*k, i.to_string().as_bytes(), Expiry::Never).unwrap());
        }
        for (i, k) in odd.iter().enumerate() {
            assert_eq!(
                c.get(*k).unwrap().as_deref(),
                Some(i.to_string().as_bytes()),
                "{url}: key {k:?}"
            );
        }

        // A value at the limit is stored; one byte more fails and the old value survives.
        let at_limit = vec![b'v'; 65536];
        assert!(c.set("big", &at_limit, Expiry::Never).unwrap(), "{url}");
        assert_eq!(c.get("big").unwrap().as_deref(), Some(at_limit.as_slice()));
        assert!(c.set("big", b"old", Expiry::Never).unwrap());
        let over = vec![b'v'; 65537];
        for result in [
            c.set("big", &over, Expiry::Never).map(drop),
            c.add("fresh", &over, Expiry::Never).map(drop),
            c.set_many(
                &[("a1", b"1".as_slice()), ("big", &over)],
                Expiry::Never,
                None,
            )
            .map(drop),
        ] {
            assert_eq!(
                result.unwrap_err().kind(),
                ErrorKind::ValueTooLarge,
                "{url}"
            );
        }
        assert_eq!(
            c.get("big").unwrap().as_deref(),
            Some(&b"old"[..]),
            "{url}: the old value survives"
        );
        assert!(!c.has_key("fresh").unwrap(), "{url}");
        assert!(
            !c.has_key("a1").unwrap(),
            "{url}: set_many is checked before it writes"
        );

        // 100,000 keys in one get_many: an answer for each, in order.
        c.set("k-77777", b"found", Expiry::Never).unwrap();
        let names: Vec<String> = (0..100_000).map(|i| format!("k-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let got = c
            .get_many(&refs, None)
            .unwrap_or_else(|e| panic!("{url}: get_many of 100,000 keys: {e}"));
        assert_eq!(got.len(), 100_000, "{url}");
        assert_eq!(got[77_777].as_deref(), Some(&b"found"[..]), "{url}");
        assert_eq!(got.iter().filter(|v| v.is_some()).count(), 1, "{url}");
        assert_eq!(c.delete_many(&refs, None).unwrap(), 1, "{url}");
    });
}

#[test]
fn memcached_item_limit_and_long_keys() {
    let server = MemcachedServer::start().unwrap_or_else(|e| panic!("{e}"));
    // The cache allows more than memcached's 1 MiB items: the server's refusal is the error.
    let c = Cache::open(&format!("{}?max_value_size=4194304", server.url())).unwrap();
    c.set("item", b"old", Expiry::Never).unwrap();
    let err = c
        .set("item", &vec![b'x'; 2 << 20], Expiry::Never)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");
    assert_eq!(
        c.get("item").unwrap().as_deref(),
        Some(&b"old"[..]),
        "memcached keeps the old item when it refuses a new one"
    );
    // Keys past memcached's 250 bytes are hashed, not refused, and stay distinct.
    let a = format!("{}a", "k".repeat(300));
    let b = format!("{}b", "k".repeat(300));
    c.set(a.as_str(), b"A", Expiry::Never).unwrap();
    c.set(b.as_str(), b"B", Expiry::Never).unwrap();
    assert_eq!(c.get(a.as_str()).unwrap().as_deref(), Some(&b"A"[..]));
    assert_eq!(c.get(b.as_str()).unwrap().as_deref(), Some(&b"B"[..]));
}

#[test]
fn a_certificate_option_naming_no_regular_small_file_is_refused_at_once() {
    let dir = TempDir::new("pem-files");
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let huge = dir.path().join("huge.pem");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let cases = [
        ("/dev/zero".to_owned(), "not a regular file"),
        (dir.path().display().to_string(), "not a regular file"),
        (fifo.display().to_string(), "not a regular file"),
        (huge.display().to_string(), "more than the 1048576 bytes"),
    ];
    for (path, why) in &cases {
        for (url, option) in [
            (format!("rediss://127.0.0.1:1/0?tls_ca={path}"), "tls_ca"),
            (
                format!("postgres://u@127.0.0.1:1/db?sslmode=verify-full&sslrootcert={path}"),
                "sslrootcert",
            ),
        ] {
            // Each returns at once (a read of /dev/zero or of a FIFO would never end).
            let err = Cache::open(&url).map(|_| ()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration, "{url}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(option) && msg.contains(why), "{url}: {msg}");
            // The error says which option it is about, and where that option was set.
            assert!(
                msg.starts_with(&format!("query parameter {option} in the URL: ")),
                "{url}: {msg}"
            );
            assert!(err.option_source().is_some(), "{url}");
        }
    }
}

#[test]
fn option_errors_found_after_the_option_was_read_name_it() {
    let dir = TempDir::new("late-option-errors");
    let l2 = |url: &str| {
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let cases = [
        (
            "postgres://u@127.0.0.1:1/db?sslmode=verify-full".to_owned(),
            "sslmode",
        ),
        (
            format!("file://{}/files?cull_frequency=2", dir.path().display()),
            "cull_frequency",
        ),
        (
            format!("tiered://?l1={}&l2={}", l2("dummy://"), l2("memory://late")),
            "l1",
        ),
        (format!("tiered://?l2={}", l2("tiered://")), "l2"),
        (
            format!("tiered://?l2={}", l2("memory://late?max_entries=0")),
            "max_entries",
        ),
        (
            format!("tiered://?l2={}&bus=nowhere", l2("memory://late")),
            "bus",
        ),
    ];
    for (url, option) in &cases {
        let err = Cache::open(url).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{url}: {err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("query parameter {option} in the URL: ")),
            "{url}: {msg}"
        );
        assert!(err.option_source().is_some(), "{url}");
    }
}

#[test]
fn malformed_urls_are_configuration_errors() {
    let mut wrong = Vec::new();
    for url in [
        "",
        "://",
        "redis://",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:port/0",
        "redis://127.0.0.1:6379/notadb",
        "redis://[::1/0",
        "rediss://127.0.0.1/0?tls_ca=/no/such/file.pem",
        "memcached://",
        "memcached://h:70000",
        "memcached://h:11211?socket_timeout=-1",
        "postgres://[bad/db",
        "postgres://h:5432/a/b",
        "postgres://h/db?table=drop%20table",
        "sqlite://",
        "sqlite:///tmp/x.db?busy_timeout=abc",
        "file://",
        "memory://?max_entries=1e99",
        "memory://?%zz=1",
        "memory://?timeout=nan",
        "memory://?max_value_size=0",
        "redis://h/0?fail_open=yes please",
    ] {
        match Cache::open(url) {
            Err(e) if e.kind() == ErrorKind::Configuration => {}
            Err(e) => wrong.push(format!("{url:.60}: {e} is not a configuration error")),
            Ok(_) => wrong.push(format!("{url:.60}: opened")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
