//! What `Cache` adds over any backend that the backend contract (`contract.rs`, which runs
//! every operation on every scheme) does not cover: full keys' counting, default timeouts
//! from the URL, statistics under concurrency, configuration errors, the service, and
//! memory://'s deadlines.

use polycache::{Cache, CacheConfig, Caches, ErrorKind, Expiry, Key};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn mem() -> Cache {
    Cache::open("memory://?max_entries=10000").unwrap()
}

#[test]
fn full_keys_are_stored_as_they_are_and_counted() {
    let c = Cache::builder("memory://")
        .key_prefix("p")
        .max_value_size(8)
        .build()
        .unwrap();
    c.set(Key::full("made:by:caller"), b"v", Expiry::Never)
        .unwrap();
    assert_eq!(
        c.make_key(Key::full("made:by:caller")).unwrap(),
        b"made:by:caller"
    );
    // A version on a full key changes nothing: the caller made the whole key.
    let v = c.get(Key::full("made:by:caller").version(7)).unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    assert!(
        c.get("made:by:caller").unwrap().is_none(),
        "p:1:made:by:caller is another key"
    );
    let items = [(Key::full("a"), &b"1"[..]), (Key::full("b"), &b"2"[..])];
    assert_eq!(
        c.set_many_keys(&items, Expiry::Never).unwrap(),
        Vec::<usize>::new()
    );
    let got = c.get_many_keys(&[Key::full("a"), Key::full("b"), Key::full("c")]);
    assert_eq!(got.unwrap().iter().filter(|v| v.is_some()).count(), 2);
    assert_eq!(
        c.delete_many_keys(&[Key::full("a"), Key::full("zz")])
            .unwrap(),
        1
    );
    assert_eq!(c.incr(Key::full("b"), 5).unwrap(), 7);
    let err = c
        .set(Key::full("big"), b"123456789", Expiry::Never)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.sets, s.deletes), (3, 2, 4, 1));
}

#[test]
fn default_timeout_applies_and_zero_default_stores_nothing() {
    let c = Cache::builder("memory://")
        .default_timeout(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    c.set("k", b"v", Expiry::Default).unwrap();
    assert!(c.get("k").unwrap().is_some());
    thread::sleep(Duration::from_millis(120));
    assert!(c.get("k").unwrap().is_none());

    let z = Cache::open("memory://?timeout=0").unwrap();
    z.set("k", b"v", Expiry::Default).unwrap();
    assert!(z.get("k").unwrap().is_none());
    let n = Cache::open("memory://?timeout=none").unwrap();
    assert_eq!(n.default_expiry(), Expiry::Never);
}

#[test]
fn hit_ratio_and_evictions() {
    let c = mem();
    c.set("a", b"1", Expiry::Default).unwrap();
    c.get("a").unwrap();
    c.get("b").unwrap();
    c.get_many(&["a", "b", "c"], None).unwrap();
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (2, 3));
    assert!((s.hit_ratio() - 0.4).abs() < 1e-9);
    let small = Cache::open("memory://?max_entries=10").unwrap();
    for i in 0..100 {
        small.set(&format!("k{i}"), b"v", Expiry::Default).unwrap();
    }
    assert!(small.stats().evictions >= 90, "{:?}", small.stats());
}

#[test]
fn bad_input_is_a_clear_error() {
    for (url, needle) in [
        ("nosuch://x", "nosuch"),
        ("memory://?max_entries=-1", "max_entries"),
        ("memory://?max_entries=abc", "max_entries"),
        ("memory://?bogus=1", "bogus"),
        ("memory://?max_entries=5&max_bytes=5", "not both"),
        ("memory://?version=x", "version"),
        ("no-scheme-here", "scheme"),
    ] {
        let err = Cache::open(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{url}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
    let err = Cache::open("nosuch://user:hunter2@host/").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn service_from_config_and_json() {
    let mut cfg = CacheConfig::new("memory://");
    cfg.key_prefix = Some("p".into());
    cfg.options.insert("max_entries".into(), "50".into());
    let caches = Caches::from_config([
        ("default", cfg.clone()),
        ("other", CacheConfig::new("dummy://")),
    ])
    .unwrap();
    assert_eq!(caches.default().key_prefix(), "p");
    assert_eq!(caches.names().collect::<Vec<_>>(), ["default", "other"]);
    assert!(Caches::from_config([("x", cfg)])
        .unwrap_err()
        .to_string()
        .contains("default"));

    let caches = Caches::from_json(
        r#"{"default": {"LOCATION": "memory://", "TIMEOUT": null, "VERSION": 4}}"#,
    )
    .unwrap();
    assert_eq!(caches.default().default_expiry(), Expiry::Never);
    assert_eq!(caches.default().version(), 4);
    for (text, needle) in [
        (
            r#"{"default": {"LOCATION": "memory://", "OPTIONS": {"max_entries": -3}}}"#,
            "max_entries",
        ),
        (r#"{"default": {"LOCATIO": "memory://"}}"#, "LOCATIO"),
        (r#"{"default": {"LOCATION": 5}}"#, "LOCATION"),
        ("not json", "JSON"),
    ] {
        let err = Caches::from_json(text).unwrap_err();
        assert!(
            err.is_configuration() && err.to_string().contains(needle),
            "{text}: {err}"
        );
    }
}

#[test]
fn stats_are_exact_under_concurrency_beyond_the_slot_count() {
    // More threads than counter slots, so some share the overflow stripe.
    let c = Arc::new(mem());
    c.set("k", b"v", Expiry::Never).unwrap();
    let handles: Vec<_> = (0..48)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || {
                for _ in 0..2_000 {
                    c.get("k").unwrap();
                    c.get("absent").unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (96_000, 96_000));
}

#[test]
fn memory_entries_never_outlive_their_ttl() {
    // The coarse clock lags real time; deadlines must fire early rather than late.
    let c = mem();
    for i in 0..20 {
        let key = format!("k{i}");
        c.set(key.as_str(), b"v", Expiry::After(Duration::from_millis(30)))
            .unwrap();
        thread::sleep(Duration::from_millis(30));
        assert_eq!(c.get(key.as_str()).unwrap(), None, "round {i}");
    }
}
