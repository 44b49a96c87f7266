//! The Cache contract on the embedded backends.

use polycache::{Cache, CacheConfig, Caches, ErrorKind, Expiry, Key};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn mem() -> Cache {
    Cache::open("memory://?max_entries=10000").unwrap()
}

const MS50: Expiry = Expiry::After(Duration::from_millis(50));

#[test]
fn get_set_delete_has_key() {
    let c = mem();
    assert_eq!(c.get("a").unwrap(), None);
    c.set("a", b"1\0two", Expiry::Default).unwrap();
    assert_eq!(c.get("a").unwrap().as_deref(), Some(&b"1\0two"[..]));
    assert!(c.has_key("a").unwrap());
    assert!(c.delete("a").unwrap());
    assert!(!c.delete("a").unwrap());
    assert!(!c.has_key("a").unwrap());
}

#[test]
fn full_key_is_djangos() {
    let c = Cache::builder("memory://")
        .key_prefix("site")
        .version(3)
        .build()
        .unwrap();
    assert_eq!(c.make_key("k").unwrap(), b"site:3:k");
    assert_eq!(c.make_key(Key::new("k").version(7)).unwrap(), b"site:7:k");
    let plain = mem();
    assert_eq!(plain.make_key("k").unwrap(), b":1:k");
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
fn expiry_words() {
    let c = mem();
    c.set("never", b"x", Expiry::Never).unwrap();
    c.set("short", b"x", MS50).unwrap();
    c.set("gone", b"old", Expiry::Never).unwrap();
    c.set("gone", b"new", Expiry::Expired).unwrap();
    assert_eq!(
        c.get("gone").unwrap(),
        None,
        "an expired set removes the old value"
    );
    c.set("zero", b"x", Expiry::After(Duration::ZERO)).unwrap();
    assert_eq!(c.get("zero").unwrap(), None);
    assert!(c.get("short").unwrap().is_some());
    thread::sleep(Duration::from_millis(120));
    assert_eq!(c.get("short").unwrap(), None);
    assert!(!c.has_key("short").unwrap());
    assert!(c.get("never").unwrap().is_some());
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
fn add_only_when_absent_or_expired() {
    let c = mem();
    assert!(c.add("k", b"1", Expiry::Default).unwrap());
    assert!(!c.add("k", b"2", Expiry::Default).unwrap());
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"1"[..]));
    c.set("e", b"old", MS50).unwrap();
    thread::sleep(Duration::from_millis(120));
    assert!(c.add("e", b"new", Expiry::Default).unwrap());
    assert_eq!(c.get("e").unwrap().as_deref(), Some(&b"new"[..]));
    // Expired add: reports absence, stores nothing.
    assert!(c.add("z", b"x", Expiry::Expired).unwrap());
    assert!(c.get("z").unwrap().is_none());
    assert!(!c.add("k", b"x", Expiry::Expired).unwrap());
}

#[test]
fn touch_changes_expiry() {
    let c = mem();
    c.set("k", b"v", MS50).unwrap();
    assert!(c.touch("k", Expiry::Never).unwrap());
    thread::sleep(Duration::from_millis(120));
    assert!(c.get("k").unwrap().is_some());
    assert!(c.touch("k", Expiry::Expired).unwrap());
    assert!(c.get("k").unwrap().is_none());
    assert!(!c.touch("missing", Expiry::Never).unwrap());
}

#[test]
fn incr_decr_semantics() {
    let c = mem();
    c.set("n", b"10", Expiry::Never).unwrap();
    assert_eq!(c.incr("n", 5).unwrap(), 15);
    assert_eq!(c.decr("n", 20).unwrap(), -5);
    assert_eq!(c.get("n").unwrap().unwrap().as_i64(), Some(-5));
    assert_eq!(
        c.incr("missing", 1).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    c.set("s", b"abc", Expiry::Never).unwrap();
    assert_eq!(c.incr("s", 1).unwrap_err().kind(), ErrorKind::NotAnInteger);
    c.set("max", i64::MAX.to_string().as_bytes(), Expiry::Never)
        .unwrap();
    assert_eq!(c.incr("max", 1).unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(
        c.decr("n", i64::MIN).unwrap_err().kind(),
        ErrorKind::Overflow
    );
    // incr keeps the expiry.
    c.set("t", b"1", MS50).unwrap();
    c.incr("t", 1).unwrap();
    thread::sleep(Duration::from_millis(120));
    assert_eq!(c.incr("t", 1).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn incr_is_atomic_across_threads() {
    let c = Arc::new(mem());
    c.set("ctr", b"0", Expiry::Never).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || {
                for _ in 0..10_000 {
                    c.incr("ctr", 1).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(c.get("ctr").unwrap().unwrap().as_i64(), Some(80_000));
}

#[test]
fn many_key_operations() {
    let c = mem();
    let failed = c
        .set_many(
            &[
                ("a", b"1".as_slice()),
                ("b", b"2".as_slice()),
                ("c", b"3".as_slice()),
            ],
            Expiry::Default,
            None,
        )
        .unwrap();
    assert!(failed.is_empty());
    let got = c.get_many(&["a", "x", "c"], None).unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"1"[..]));
    assert!(got[1].is_none());
    assert_eq!(got[2].as_deref(), Some(&b"3"[..]));
    assert_eq!(c.delete_many(&["a", "b", "x"], None).unwrap(), 2);
    assert!(c.get("a").unwrap().is_none());
    assert!(c.get("c").unwrap().is_some());
    c.set_many(&[("v", b"9".as_slice())], Expiry::Default, Some(2))
        .unwrap();
    assert!(c.get("v").unwrap().is_none());
    assert!(c.get(Key::new("v").version(2)).unwrap().is_some());
}

#[test]
fn get_or_set_computes_only_on_miss() {
    let c = mem();
    let mut calls = 0;
    let v = c
        .get_or_set(
            "k",
            || {
                calls += 1;
                Ok(b"computed".to_vec())
            },
            Expiry::Default,
        )
        .unwrap();
    assert_eq!(&*v, b"computed");
    let v = c
        .get_or_set(
            "k",
            || {
                calls += 1;
                Ok(b"other".to_vec())
            },
            Expiry::Default,
        )
        .unwrap();
    assert_eq!(&*v, b"computed");
    assert_eq!(calls, 1);
    let err = c
        .get_or_set(
            "e",
            || Err(polycache::Error::new(ErrorKind::Backend, "loader failed")),
            Expiry::Default,
        )
        .unwrap_err();
    assert_eq!(err.message(), "loader failed");
    assert!(c.get("e").unwrap().is_none());
}

#[test]
fn clear_is_scoped_to_the_prefix_on_a_shared_store() {
    let a = Cache::builder("memory://clear-scope")
        .key_prefix("a")
        .build()
        .unwrap();
    let b = Cache::builder("memory://clear-scope")
        .key_prefix("b")
        .build()
        .unwrap();
    a.set("k", b"1", Expiry::Default).unwrap();
    b.set("k", b"2", Expiry::Default).unwrap();
    a.clear().unwrap();
    assert!(a.get("k").unwrap().is_none());
    assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn versions_and_incr_version() {
    let c = mem();
    c.set("k", b"v", Expiry::Default).unwrap();
    assert_eq!(c.incr_version("k", 1, None).unwrap(), 2);
    assert!(c.get("k").unwrap().is_none());
    assert_eq!(
        c.get(Key::new("k").version(2)).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(c
        .incr_version("missing", 1, None)
        .unwrap_err()
        .is_not_found());
}

#[test]
fn stats_count_operations() {
    let c = mem();
    c.set("a", b"1", Expiry::Default).unwrap();
    c.get("a").unwrap();
    c.get("b").unwrap();
    c.get_many(&["a", "b", "c"], None).unwrap();
    c.delete("a").unwrap();
    let s = c.stats();
    assert_eq!(
        (s.hits, s.misses, s.sets, s.deletes, s.errors),
        (2, 3, 1, 1, 0)
    );
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

    let c = Cache::open("memory://?max_value_size=4").unwrap();
    c.set("k", b"old", Expiry::Default).unwrap();
    assert_eq!(
        c.set("k", b"12345", Expiry::Default).unwrap_err().kind(),
        ErrorKind::ValueTooLarge
    );
    assert_eq!(
        c.get("k").unwrap().as_deref(),
        Some(&b"old"[..]),
        "the old value survives"
    );
    let long = "x".repeat(polycache::MAX_KEY_LEN + 1);
    assert_eq!(
        c.get(long.as_str()).unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
}

#[test]
fn dummy_always_misses() {
    let c = Cache::open("dummy://").unwrap();
    c.set("k", b"v", Expiry::Default).unwrap();
    assert!(c.get("k").unwrap().is_none());
    assert!(c.add("k", b"v", Expiry::Default).unwrap());
    assert!(c.incr("k", 1).unwrap_err().is_not_found());
    assert_eq!(c.get_many(&["a", "b"], None).unwrap(), vec![None, None]);
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
