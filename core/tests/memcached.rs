//! The memcached backend against real servers started by testkit: what is specific to
//! memcached (keys on a ketama ring of three servers, a fourth server joining, TTLs over 30
//! days, the item size limit, its counters, flush and namespaces, replies outside the
//! protocol) and servers that die under load and come back. Every operation of the backend
//! contract runs in `contract.rs`, on two servers, a unix socket and with namespaces.
#![cfg(feature = "memcached")]

mod memcached_common;

use memcached_common::{answering, backend, open, policy, raw, servers, silent, url_of};
use polycache::{Backend, Cache, ErrorKind, Expiry};
use polycache_testkit::{free_loopback_port, MemcachedServer};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const DAY: u64 = 86_400;

#[test]
fn keys_spread_over_three_servers_under_their_plain_full_keys() {
    let mc = servers(3);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    let c = open(&url_of(&refs, ""));
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    assert_eq!(
        c.set_many(&items, Expiry::Default, None).unwrap(),
        Vec::<usize>::new()
    );
    // Each server holds its share, under the plain full key.
    let b = backend(&url_of(&refs, ""));
    let mut per_server = [0usize; 3];
    for k in &keys {
        let full = c.make_key(k.as_str()).unwrap();
        let holder = b.server_of(&full).unwrap();
        let index = refs.iter().position(|s| s.addr() == holder).unwrap();
        per_server[index] += 1;
        let line = raw(
            refs[index].port().unwrap(),
            &format!("mg {} s\r\n", String::from_utf8(full).unwrap()),
        );
        assert!(line.starts_with("HD"), "{k} on {holder}: {line}");
    }
    for n in per_server {
        assert!(n > 50, "{per_server:?}");
    }
    // One multi-get answers from all three.
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.get_many(&names, None).unwrap();
    assert!(got
        .iter()
        .zip(&keys)
        .all(|(v, k)| v.as_deref() == Some(k.as_bytes())));
}

#[test]
fn a_fourth_server_moves_about_a_quarter_of_the_keys() {
    let mc = servers(4);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    let three = open(&url_of(&refs[..3], ""));
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}")).collect();
    for chunk in keys.chunks(500) {
        let items: Vec<(&str, &[u8])> = chunk.iter().map(|k| (k.as_str(), &b"x"[..])).collect();
        assert!(three
            .set_many(&items, Expiry::Never, None)
            .unwrap()
            .is_empty());
    }
    let four = open(&url_of(&refs, ""));
    let mut still_found = 0;
    for chunk in keys.chunks(500) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        still_found += four
            .get_many(&names, None)
            .unwrap()
            .iter()
            .filter(|v| v.is_some())
            .count();
    }
    let moved = 1.0 - still_found as f64 / keys.len() as f64;
    assert!(
        (0.15..=0.35).contains(&moved),
        "{:.1}% of the keys moved to another server",
        moved * 100.0
    );
}

#[test]
fn ttls_over_thirty_days_are_absolute_and_short_ones_expire() {
    let mc = MemcachedServer::start().unwrap();
    let c = open(&mc.url());
    let month = Expiry::After(Duration::from_secs(31 * DAY));
    c.set("long", b"kept", month).unwrap();
    c.set_many(&[("long2", b"kept".as_slice())], month, None)
        .unwrap();
    c.add("long3", b"kept", month).unwrap();
    c.set("touched", b"kept", Expiry::After(Duration::from_secs(60)))
        .unwrap();
    assert!(c.touch("touched", month).unwrap());
    c.set(
        "year",
        b"kept",
        Expiry::After(Duration::from_secs(365 * DAY)),
    )
    .unwrap();
    c.set(
        "exact",
        b"kept",
        Expiry::After(Duration::from_secs(30 * DAY)),
    )
    .unwrap();
    c.set("short", b"gone", Expiry::After(Duration::from_millis(200)))
        .unwrap();
    c.set("never", b"kept", Expiry::Never).unwrap();
    // memcached counts whole seconds: a 200 ms TTL is rounded up to 1 s.
    thread::sleep(Duration::from_millis(2_500));
    for k in [
        "long", "long2", "long3", "touched", "year", "exact", "never",
    ] {
        assert_eq!(c.get(k).unwrap().as_deref(), Some(&b"kept"[..]), "{k}");
    }
    assert_eq!(c.get("short").unwrap(), None);
    // The server agrees the entry lives about 31 days.
    let line = raw(mc.port().unwrap(), "mg :1:long t\r\n");
    let left: u64 = line.trim().strip_prefix("HD t").unwrap().parse().unwrap();
    assert!((31 * DAY - 60..=31 * DAY).contains(&left), "{line}");
}

#[test]
fn oversized_values_are_refused_and_store_nothing() {
    let mc = servers(2);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    let c = open(&url_of(&refs, ""));
    c.set("big", b"old", Expiry::Default).unwrap();
    let too_big = vec![b'x'; 1 << 20];
    let err = c.set("big", &too_big, Expiry::Default).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");
    assert!(err.to_string().contains("item size limit"), "{err}");
    assert_eq!(
        c.get("big").unwrap().as_deref(),
        Some(&b"old"[..]),
        "the old value is untouched"
    );
    assert_eq!(
        c.add("big2", &too_big, Expiry::Default).unwrap_err().kind(),
        ErrorKind::ValueTooLarge
    );
    assert!(!c.has_key("big2").unwrap());

    // Just under the limit learned from `stats settings` (1 MiB) fits.
    let fits = vec![b'y'; (1 << 20) - 200];
    c.set("fits", &fits, Expiry::Default).unwrap();
    assert_eq!(c.get("fits").unwrap().unwrap().len(), fits.len());

    let items: Vec<(&str, &[u8])> = vec![("a", b"1"), ("b", &too_big), ("c", &fits)];
    assert_eq!(c.set_many(&items, Expiry::Default, None).unwrap(), vec![1]);
    assert!(c.has_key("a").unwrap() && c.has_key("c").unwrap() && !c.has_key("b").unwrap());

    let small = open(&url_of(&refs, "?max_item_size=1000"));
    let err = small.set("k", &[0u8; 1000], Expiry::Default).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");
    small.set("k", &[0u8; 900], Expiry::Default).unwrap();
}

#[test]
fn big_pipelines_to_several_servers_do_not_stall() {
    let mc = servers(3);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    let c = open(&url_of(&refs, "?socket_timeout=5"));
    let keys: Vec<String> = (0..1_500).map(|i| format!("bulk-{i}")).collect();
    let value = vec![b'v'; 20_000];
    let items: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.as_str(), value.as_slice()))
        .collect();
    assert!(c
        .set_many(&items, Expiry::Default, None)
        .unwrap()
        .is_empty());
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.get_many(&names, None).unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some(value.as_slice())));
}

#[test]
fn incr_and_decr_follow_memcached_counters() {
    let mc = MemcachedServer::start().unwrap();
    let c = open(&mc.url());
    c.set("n", b"5", Expiry::After(Duration::from_secs(100)))
        .unwrap();
    assert_eq!(c.incr("n", 0).unwrap(), 5);
    assert_eq!(c.decr("n", 3).unwrap(), 2);
    // memcached clamps at zero instead of going negative.
    assert_eq!(c.decr("n", 10).unwrap(), 0);
    let line = raw(mc.port().unwrap(), "mg :1:n t\r\n");
    let left: u64 = line.trim().strip_prefix("HD t").unwrap().parse().unwrap();
    assert!((90..=100).contains(&left), "incr keeps the TTL: {line}");

    c.set("neg", b"-5", Expiry::Default).unwrap();
    let err = c.incr("neg", 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAnInteger, "{err}");
    assert!(err.to_string().contains("negative"), "{err}");
    c.set("text", b"abc", Expiry::Default).unwrap();
    assert_eq!(
        c.incr("text", 1).unwrap_err().kind(),
        ErrorKind::NotAnInteger
    );
    assert_eq!(c.get("text").unwrap().as_deref(), Some(&b"abc"[..]));

    c.set("max", i64::MAX.to_string().as_bytes(), Expiry::Default)
        .unwrap();
    assert_eq!(c.incr("max", 1).unwrap_err().kind(), ErrorKind::Overflow);
    let missing = c.decr("nothing", 1).unwrap_err();
    assert!(
        missing.is_not_found() && missing.to_string().contains("nothing"),
        "{missing}"
    );
}

#[test]
fn clear_flushes_only_with_an_empty_prefix() {
    let mc = servers(2);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    let url = url_of(&refs, "");
    let plain = open(&url);
    let prefixed = Cache::builder(&url).key_prefix("app").build().unwrap();
    plain.set("a", b"1", Expiry::Default).unwrap();
    prefixed.set("b", b"2", Expiry::Default).unwrap();

    let err = prefixed.clear().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("namespace=true"), "{err}");
    assert!(plain.has_key("a").unwrap() && prefixed.has_key("b").unwrap());

    plain.clear().unwrap();
    assert!(!plain.has_key("a").unwrap());
    assert!(
        !prefixed.has_key("b").unwrap(),
        "flush_all empties the servers"
    );
}

#[test]
fn namespaces_scope_clear_to_a_prefix() {
    let mc = servers(3);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    let url = url_of(&refs, "?namespace=true&namespace_refresh=0");
    let app = Cache::builder(&url).key_prefix("app").build().unwrap();
    let app_elsewhere = Cache::builder(&url).key_prefix("app").build().unwrap();
    let other = Cache::builder(&url).key_prefix("other").build().unwrap();
    for c in [&app, &other] {
        c.set("k", b"v", Expiry::Default).unwrap();
        c.set_many(
            &[("m1", b"1".as_slice()), ("m2", b"2")],
            Expiry::Default,
            None,
        )
        .unwrap();
        c.set("n", b"1", Expiry::Default).unwrap();
    }
    assert_eq!(app_elsewhere.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(app.incr("n", 1).unwrap(), 2);

    app.clear().unwrap();
    for c in [&app, &app_elsewhere] {
        assert_eq!(c.get("k").unwrap(), None);
        assert_eq!(c.get_many(&["m1", "m2"], None).unwrap(), vec![None, None]);
        assert!(c.incr("n", 1).unwrap_err().is_not_found());
    }
    assert_eq!(other.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        other.get_many(&["m1"], None).unwrap()[0].as_deref(),
        Some(&b"1"[..])
    );

    app.set("k", b"fresh", Expiry::Default).unwrap();
    assert_eq!(
        app_elsewhere.get("k").unwrap().as_deref(),
        Some(&b"fresh"[..])
    );

    // The counter lives in memcached under `{prefix}:__ns__`.
    let b = backend(&url_of(&refs, ""));
    assert!(b.get(b"app:__ns__").unwrap().is_some());
}

#[test]
fn fail_open_breaker_and_reconnect_on_one_server() {
    let mut mc = MemcachedServer::start().unwrap();
    let url = format!("{}?socket_timeout=0.5&connect_timeout=0.5", mc.url());
    let closed = Cache::builder(&url)
        .failure_policy(policy(false, 0, Duration::ZERO))
        .build()
        .unwrap();
    let open_ = Cache::builder(&url)
        .failure_policy(policy(true, 3, Duration::from_millis(300)))
        .build()
        .unwrap();
    closed.set("k", b"v", Expiry::Default).unwrap();
    assert!(open_.get("k").unwrap().is_some());

    mc.kill().unwrap();
    let t = Instant::now();
    let err = closed.get("k").unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(err.to_string().contains(&mc.addr()), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(closed
        .set("k", b"v", Expiry::Default)
        .unwrap_err()
        .is_connection());

    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(open_.get("k").unwrap(), None);
        assert!(!open_.set("k", b"v", Expiry::Default).unwrap());
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(open_.stats().errors >= 400);

    mc.restart().unwrap();
    // The pooled connection of `closed` died with the server: it reconnects by itself.
    assert_eq!(closed.get("k").unwrap(), None);
    closed.set("k", b"back", Expiry::Default).unwrap();
    thread::sleep(Duration::from_millis(400));
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_.get("k").unwrap().is_none() {
        assert!(Instant::now() < deadline, "the breaker never closed");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_.get("k").unwrap().as_deref(), Some(&b"back"[..]));
}

#[test]
fn a_server_that_does_not_answer_times_out() {
    let port = silent();
    let c = Cache::builder(&format!(
        "memcached://127.0.0.1:{port}?socket_timeout=0.2&max_item_size=1048576"
    ))
    .failure_policy(policy(false, 0, Duration::ZERO))
    .build()
    .unwrap();
    let t = Instant::now();
    let err = c.get("k").unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Nobody listens at all: a connection error, fast.
    let dead = free_loopback_port().unwrap();
    let c = Cache::builder(&format!("memcached://127.0.0.1:{dead}"))
        .failure_policy(policy(false, 0, Duration::ZERO))
        .build()
        .unwrap();
    let t = Instant::now();
    assert!(c.get("k").unwrap_err().is_connection());
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    for reply in [
        &b"HELLO\r\n"[..],
        b"VA 99999999999\r\n",
        b"VA 3\r\nabcdef\r\n",
        b"VA -1\r\n\r\n",
        b"EN trailing\r\n",
    ] {
        let port = answering(reply);
        let c = Cache::builder(&format!(
            "memcached://127.0.0.1:{port}?max_item_size=1048576&socket_timeout=0.5"
        ))
        .failure_policy(policy(false, 0, Duration::ZERO))
        .build()
        .unwrap();
        let err = c.get("k").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend, "{reply:?}: {err}");
        assert!(err.to_string().contains("outside the protocol"), "{err}");
        assert!(c.get_many(&["a", "b"], None).is_err());
    }
    // An error of the server's own is a backend error on a connection that stays usable.
    let port = answering(b"SERVER_ERROR out of memory storing object\r\n");
    let c = Cache::open(&format!(
        "memcached://127.0.0.1:{port}?max_item_size=1048576"
    ))
    .unwrap();
    let err = c.set("k", b"v", Expiry::Default).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("out of memory"), "{err}");
}

/// Which of `servers` holds each key of `keys`, as indices.
fn holders(url: &str, servers: &[&MemcachedServer], c: &Cache, keys: &[String]) -> Vec<usize> {
    let b = backend(url);
    keys.iter()
        .map(|k| {
            let full = c.make_key(k.as_str()).unwrap();
            let addr = b.server_of(&full).unwrap();
            servers.iter().position(|s| s.addr() == addr).unwrap()
        })
        .collect()
}

#[test]
fn killing_one_of_three_servers_under_load() {
    let mut mc = servers(3);
    let refs: Vec<&MemcachedServer> = mc.iter().collect();
    // The cache-wide breaker is off: with several servers, one dead server must not stop the
    // calls for the others' keys (the backend takes the dead server out of the ring itself).
    let url = url_of(
        &refs,
        "?dead_retry=1&socket_timeout=0.5&connect_timeout=0.5",
    );
    let keys: Vec<String> = (0..300).map(|i| format!("load-{i}")).collect();
    let setup = open(&url);
    let holder = holders(&url, &refs, &setup, &keys);
    drop(refs);
    for k in &keys {
        setup.set(k, k.as_bytes(), Expiry::Never).unwrap();
    }
    let victim = 1;
    let cache = Cache::builder(&url)
        .failure_policy(policy(true, 0, Duration::ZERO))
        .build()
        .unwrap();
    let strict = Cache::builder(&url)
        .failure_policy(policy(false, 0, Duration::ZERO))
        .build()
        .unwrap();

    let killed = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(keys);
    let holder = Arc::new(holder);
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (cache, killed, progress, keys, holder) = (
                cache.clone(),
                killed.clone(),
                progress.clone(),
                keys.clone(),
                holder.clone(),
            );
            thread::spawn(move || {
                let mut after_kill = 0;
                let started = Instant::now();
                let mut i = t * 37;
                // Bounded in count and in time.
                while after_kill < 3_000 && started.elapsed() < Duration::from_secs(20) {
                    let was_killed = killed.load(Ordering::SeqCst);
                    let k = &keys[i % keys.len()];
                    let on_victim = holder[i % keys.len()] == victim;
                    let got = cache.get(k).expect("fail_open never raises on get");
                    if !on_victim {
                        assert_eq!(got.as_deref(), Some(k.as_bytes()), "{k} on a live server");
                    } else if was_killed {
                        assert_eq!(got, None, "{k} on the dead server is a miss");
                    }
                    if i % 10 == 0 {
                        let names: Vec<&str> = (0..5)
                            .map(|j| keys[(i + j) % keys.len()].as_str())
                            .collect();
                        let many = cache.get_many(&names, None).unwrap();
                        assert_eq!(many.len(), 5);
                    }
                    if was_killed {
                        after_kill += 1;
                    }
                    progress.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                after_kill
            })
        })
        .collect();
    while progress.load(Ordering::SeqCst) < 2_000 {
        thread::sleep(Duration::from_millis(5));
    }
    mc[victim].kill().unwrap();
    killed.store(true, Ordering::SeqCst);
    for w in workers {
        assert!(w.join().unwrap() >= 3_000, "a worker ran out of time");
    }

    // Failing closed: the dead server's keys raise at once, the others' keys answer.
    let victim_key = keys
        .iter()
        .zip(holder.iter())
        .find(|(_, &h)| h == victim)
        .unwrap()
        .0;
    let live_key = keys
        .iter()
        .zip(holder.iter())
        .find(|(_, &h)| h != victim)
        .unwrap()
        .0;
    let t = Instant::now();
    let err = strict.get(victim_key).unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        strict.get(live_key).unwrap().as_deref(),
        Some(live_key.as_bytes())
    );
    // Once it is out of the ring, its keys fail without a connection attempt.
    let _ = strict.get(victim_key);
    let err = strict.get(victim_key).unwrap_err();
    assert!(err.to_string().contains("out of the ring"), "{err}");
    let many_items: Vec<(&str, &[u8])> = vec![(victim_key, b"x"), (live_key, live_key.as_bytes())];
    assert_eq!(
        strict.set_many(&many_items, Expiry::Never, None).unwrap(),
        vec![0]
    );

    // It comes back (empty) and, after dead_retry, is in the ring again.
    mc[victim].restart().unwrap();
    thread::sleep(Duration::from_millis(1_200));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match strict.set(victim_key, b"again", Expiry::Never) {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never came back: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(
        cache.get(victim_key).unwrap().as_deref(),
        Some(&b"again"[..])
    );
}
