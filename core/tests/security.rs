//! Signed values, compression and secrets: what a cache does so that a forged value is never
//! served and a password never shows.
// Built with fewer backends (`make test` runs a memory://-only build), the helpers of the
// left-out backends' tests lie idle.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "memcached",
        feature = "file",
        feature = "sqlite",
        feature = "postgres"
    )),
    allow(unused)
)]

use polycache::{Cache, CacheConfig, Expiry, COMPRESSED_MAGIC, SIGNED_MAGIC};
use polycache_testkit::{free_loopback_port, PostgresServer, RedisServer, TestCertificates};
use std::sync::{Mutex, Once};

/// Every log record of the test process, rendered.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOG.lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The warnings logged so far that mention `needle`.
fn warnings_about(needle: &str) -> usize {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains(needle))
        .count()
}

/// The backend of `url`, to read and write stored bytes under full keys.
fn store(url: &str) -> std::sync::Arc<dyn polycache::Backend> {
    Cache::open(url).unwrap().backend().clone()
}

#[test]
fn rotation_accepts_old_keys_and_rejects_strangers() {
    capture_logs();
    let old = Cache::builder("memory://sec-rotation")
        .signing_key("key-2025")
        .build()
        .unwrap();
    old.set("session", b"alice", Expiry::Never).unwrap();
    let stored = store("memory://sec-rotation")
        .get(b":1:session")
        .unwrap()
        .unwrap();
    assert!(stored.starts_with(&SIGNED_MAGIC), "{stored:?}");
    assert!(stored.ends_with(b"alice"));

    let rotated = Cache::builder("memory://sec-rotation")
        .signing_key("key-2026")
        .old_signing_keys(["key-2024", "key-2025"])
        .build()
        .unwrap();
    assert_eq!(
        rotated.get("session").unwrap().as_deref(),
        Some(&b"alice"[..])
    );
    // New writes use the new key only.
    rotated.set("new", b"bob", Expiry::Never).unwrap();
    assert!(old.get("new").unwrap().is_none());

    let stranger = Cache::builder("memory://sec-rotation")
        .key_prefix("")
        .signing_key("wrong-key")
        .build()
        .unwrap();
    let before = warnings_about("memory://sec-rotation");
    assert!(stranger.get("session").unwrap().is_none());
    assert_eq!(stranger.stats().misses, 1);
    assert_eq!(warnings_about("memory://sec-rotation"), before + 1);
}

#[test]
fn a_tampered_byte_or_a_moved_value_is_a_miss() {
    capture_logs();
    let signed = Cache::builder("memory://sec-tamper")
        .signing_key("k")
        .build()
        .unwrap();
    let plain = Cache::open("memory://sec-tamper").unwrap();
    let backend = plain.backend();
    signed.set("a", b"payload", Expiry::Never).unwrap();
    assert_eq!(signed.get("a").unwrap().as_deref(), Some(&b"payload"[..]));
    // The lent read opens and checks the value as `get` does.
    let lent = |c: &Cache, key| c.get_with(key, |v| v.to_vec()).unwrap();
    assert_eq!(lent(&signed, "a").as_deref(), Some(&b"payload"[..]));
    let good = backend.get(b":1:a").unwrap().unwrap().into_vec();
    for i in [8, 20, 39, 40, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        backend.set(b":1:a", &bad, None).unwrap();
        assert!(signed.get("a").unwrap().is_none(), "byte {i} flipped");
        assert!(lent(&signed, "a").is_none(), "byte {i} flipped");
    }
    // A genuine value copied under another key does not verify there.
    backend.set(b":1:b", &good, None).unwrap();
    assert!(signed.get("b").unwrap().is_none());
    // A value written without a signature (a pickle a forger put there) is never served...
    backend
        .set(b":1:c", b"\x80\x05cos\nsystem\n.", None)
        .unwrap();
    assert!(signed.get("c").unwrap().is_none());
    assert!(signed.get_many(&["c", "b"], None).unwrap() == vec![None, None]);
    // ...but a plain decimal integer is: it cannot deserialize to anything but an int.
    backend.set(b":1:n", b"41", None).unwrap();
    assert_eq!(signed.incr("n", 1).unwrap(), 42);
    assert_eq!(signed.get("n").unwrap().as_deref(), Some(&b"42"[..]));
    // A reader without the key does not hand out signed bytes as if they were the value.
    signed.set("d", b"x", Expiry::Never).unwrap();
    assert!(plain.get("d").unwrap().is_none());
    assert!(lent(&plain, "d").is_none());
}

#[test]
fn signed_integers_stay_native_for_incr() {
    let c = Cache::builder("memory://?signing_key=k&compress_min_size=1")
        .build()
        .unwrap();
    c.set("visits", b"10", Expiry::Never).unwrap();
    assert_eq!(c.incr("visits", 5).unwrap(), 15);
    c.set("word", b"ten", Expiry::Never).unwrap();
    assert!(c.incr("word", 1).is_err());
    assert_eq!(c.get("word").unwrap().as_deref(), Some(&b"ten"[..]));
    assert_eq!(
        c.get_with("word", |v| v.to_vec()).unwrap().as_deref(),
        Some(&b"ten"[..])
    );
    // incr_version re-signs the value for its new full key.
    assert_eq!(c.incr_version("word", 1, None).unwrap(), 2);
    assert_eq!(
        c.get(polycache::Key::new("word").version(2))
            .unwrap()
            .as_deref(),
        Some(&b"ten"[..])
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn compression_is_marked_and_every_reader_expands_it() {
    let dir = std::env::temp_dir().join(format!("polycache-sec-{}", std::process::id()));
    let url = format!("sqlite://{}/c.db", dir.display());
    std::fs::create_dir_all(&dir).unwrap();
    let writer = Cache::builder(&url)
        .compress_min_size(Some(1024))
        .compress_level(5)
        .build()
        .unwrap();
    let big: Vec<u8> = b"a fairly repetitive value; ".repeat(400);
    writer.set("big", &big, Expiry::Never).unwrap();
    writer.set("small", b"tiny", Expiry::Never).unwrap();
    writer
        .set_many(&[("m1", &big[..]), ("m2", b"x")], Expiry::Never, None)
        .unwrap();
    // Stored compressed: the backend holds far fewer bytes, with the marker.
    let stored = writer.backend().get(b":1:big").unwrap().unwrap();
    assert!(stored.starts_with(&COMPRESSED_MAGIC) && stored.len() < big.len() / 10);
    // A reader that does not compress still reads it.
    let reader = Cache::open(&url).unwrap();
    assert_eq!(reader.get("big").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(reader.get("small").unwrap().as_deref(), Some(&b"tiny"[..]));
    let many = reader.get_many(&["m1", "m2"], None).unwrap();
    assert_eq!(many[0].as_deref(), Some(&big[..]));
    assert_eq!(many[1].as_deref(), Some(&b"x"[..]));
    // Signing and compression together; a reader with a too small max_value_size refuses.
    let both = Cache::builder(&url)
        .key_prefix("both")
        .signing_key("k")
        .compress_min_size(Some(1))
        .build()
        .unwrap();
    both.set("big", &big, Expiry::Never).unwrap();
    assert_eq!(both.get("big").unwrap().as_deref(), Some(&big[..]));
    let small = Cache::builder(&format!("{url}?max_value_size=100"))
        .build()
        .unwrap();
    let err = small.get("big").unwrap_err();
    assert_eq!(err.kind(), polycache::ErrorKind::Serialization, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_value_options_are_configuration_errors() {
    for url in [
        "memory://?compress_level=99&compress_min_size=10",
        "memory://?compress_min_size=0",
        "memory://?old_signing_keys=a",
        "memory://?signing_key=",
        "memory://?serializer=yaml",
    ] {
        let err = Cache::open(url).unwrap_err();
        assert!(err.is_configuration(), "{url}: {err}");
    }
    assert_eq!(Cache::open("memory://").unwrap().serializer(), "pickle");
    assert_eq!(
        Cache::open("memory://?serializer=JSON")
            .unwrap()
            .serializer(),
        "json"
    );
    let mut config = CacheConfig::new("memory://");
    config.options.insert("serializer".into(), "raw".into());
    config.options.insert("signing_key".into(), "s3".into());
    let c = config.build().unwrap();
    assert_eq!(c.serializer(), "raw");
    assert!(c.signs_values());
}

const SECRET: &str = "Pw-7xQ9-distinctive";

/// Everything a user could see of `cache` and of the errors of a few operations on it.
fn visible_text(cache: &Cache) -> String {
    let mut seen = format!(
        "{cache:?}\n{}\n{}\n",
        cache.location(),
        cache.stats_prometheus("x")
    );
    for err in [
        cache.get("k").err(),
        cache.set("k", b"v", Expiry::Default).err(),
        cache.incr("k", 1).err(),
        cache.clear().err(),
    ]
    .into_iter()
    .flatten()
    {
        seen.push_str(&format!("{err}\n{err:?}\n"));
    }
    seen
}

#[test]
fn passwords_and_signing_keys_never_show() {
    capture_logs();
    let dead = free_loopback_port().unwrap();
    let mut redis = RedisServer::start_with_config(&["requirepass the-right-one"]).unwrap();
    let urls = vec![
        format!("redis://:{SECRET}@127.0.0.1:{dead}/0?connect_timeout=1"),
        format!("redis://:{SECRET}@127.0.0.1:{dead}/0?fail_open=true"),
        format!("rediss://user:{SECRET}@127.0.0.1:{dead}/0"),
        format!("redis://:{SECRET}@127.0.0.1:{}/0", redis.port()),
        format!("memcached://user:{SECRET}@127.0.0.1:{dead}"),
        format!("postgres://user:{SECRET}@127.0.0.1:{dead}/db"),
        format!("postgres://user@127.0.0.1:{dead}/db?password={SECRET}"),
        format!(
            "tiered://?l2={}",
            percent_encode(&format!("redis://:{SECRET}@127.0.0.1:{dead}/0"))
        ),
        format!("memory://?signing_key={SECRET}&old_signing_keys=a,{SECRET}"),
        format!("memory://?signing_key={SECRET}&no_such_option=1"),
        format!("redis://:{SECRET}@127.0.0.1:{dead}/0?no_such_option=1"),
        format!("nosuch://:{SECRET}@host"),
        format!("redis://:{SECRET}@[::1"),
    ];
    let mut seen = String::new();
    for url in &urls {
        match Cache::open(url) {
            Ok(cache) => seen.push_str(&visible_text(&cache)),
            Err(err) => seen.push_str(&format!("{err}\n{err:?}\n")),
        }
        let mut config = CacheConfig::new(url.as_str());
        config.options.insert("signing_key".into(), SECRET.into());
        if let Err(err) = polycache::Caches::from_config([("default", config)]) {
            seen.push_str(&format!("{err}\n{err:?}\n"));
        }
    }
    seen.push_str(&LOG.lock().unwrap().join("\n"));
    assert!(seen.contains("***"), "nothing was redacted:\n{seen}");
    assert!(!seen.contains(SECRET), "the secret leaked:\n{seen}");
    redis.stop().unwrap();
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `psql -tAc sql` against `pg` as the superuser, over plain TCP.
fn psql(pg: &PostgresServer, sql: &str) -> String {
    let out = std::process::Command::new(pg.bin_dir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "postgres", "-tAc", sql])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_over_tls_checks_the_server_certificate() {
    let certs = TestCertificates::generate().unwrap();
    let mut pg = PostgresServer::start_tls(&certs).unwrap();
    let ca = certs.ca_cert();
    let base = format!("{}?table=tls_cache", pg.url());
    let mut open = Vec::new();
    for (i, mode) in [
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
        "sslmode=require".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let cache = Cache::open(&format!("{base}&{mode}")).unwrap();
        let key = format!("k{i}");
        cache.set(&*key, b"over tls", Expiry::Never).unwrap();
        assert_eq!(
            cache.get(&*key).unwrap().as_deref(),
            Some(&b"over tls"[..]),
            "{mode}"
        );
        // Awaited calls use connections of their own, encrypted the same way.
        let awaited = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cache.get_async(&*key))
            .unwrap();
        assert_eq!(awaited.as_deref(), Some(&b"over tls"[..]), "{mode}");
        open.push(cache); // keeps its pooled connections open for the check below
    }
    // The server sees every polycache connection encrypted.
    let plain_and_tls = psql(
        &pg,
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'polycache'",
    );
    let (tls, plain) = plain_and_tls.split_once('|').unwrap();
    assert!(tls.parse::<u32>().unwrap() >= 6, "{plain_and_tls}");
    assert_eq!(plain, "0", "{plain_and_tls}");

    // A certificate from another authority is refused, with a connection error that says so.
    let strangers = TestCertificates::generate().unwrap();
    for mode in ["verify-full", "verify-ca"] {
        let url = format!(
            "{base}&sslmode={mode}&sslrootcert={}&connect_timeout=5",
            strangers.ca_cert().display()
        );
        let err = Cache::open(&url).unwrap().get("k0").unwrap_err();
        assert!(
            err.is_connection() || err.is_configuration(),
            "{mode}: {err}"
        );
    }
    // Bad TLS options are configuration errors that name the option.
    for (opts, needle) in [
        ("sslmode=verify-full", "sslrootcert"),
        ("sslmode=maybe", "sslmode"),
        ("sslrootcert=/nonexistent.pem", "sslmode"),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent.pem",
            "sslrootcert",
        ),
    ] {
        let err = Cache::open(&format!("{base}&{opts}")).unwrap_err();
        assert!(
            err.is_configuration() && err.to_string().contains(needle),
            "{opts}: {err}"
        );
    }
    pg.stop().unwrap();
}

#[test]
fn signed_caches_release_their_leases_and_sign_computed_values() {
    let url = "memory://sec-lease?signing_key=k&lease=true";
    let cache = Cache::open(url).unwrap();
    let v = cache
        .get_or_set_with("report", || Ok(b"computed".to_vec()), Expiry::Never)
        .unwrap();
    assert_eq!(&*v, b"computed");
    let backend = cache.backend();
    // The lease was released (its token is compared byte for byte, so it is never signed)...
    assert!(backend.get(b":1:report:__lock__").unwrap().is_none());
    // ...and the computed value is signed like any other.
    let stored = backend.get(b":1:report").unwrap().unwrap();
    assert!(stored.starts_with(&SIGNED_MAGIC));
    assert_eq!(
        cache.get("report").unwrap().as_deref(),
        Some(&b"computed"[..])
    );
}
