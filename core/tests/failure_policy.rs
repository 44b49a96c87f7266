//! Failing open and the circuit breaker, on a custom backend that can be taken down.
//! (The custom backend wraps `MemoryBackend`, so this file needs the `memory` feature.)
#![cfg(feature = "memory")]

use polycache::backend::memory::{MemoryBackend, MemoryOptions};
use polycache::{
    Backend, Cache, Error, ErrorKind, Expiry, FailurePolicy, Result, TimeToLive, Value,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A memory store that answers with connection errors while `down` is set, counting calls.
struct Switchable {
    store: MemoryBackend,
    down: AtomicBool,
    calls: AtomicUsize,
}

impl Switchable {
    fn new() -> Arc<Switchable> {
        Arc::new(Switchable {
            store: MemoryBackend::new(&MemoryOptions::default()).unwrap(),
            down: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        })
    }
    fn check(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(Error::new(ErrorKind::Connection, "connection refused"))
        } else {
            Ok(())
        }
    }
}

impl Backend for Switchable {
    fn name(&self) -> &'static str {
        "switchable"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.check()?;
        self.store.get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.check()?;
        self.store.set(key, value, ttl)
    }
    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check()?;
        self.store.add(key, value, ttl)
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.check()?;
        self.store.delete(key)
    }
    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check()?;
        self.store.touch(key, ttl)
    }
    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.check()?;
        self.store.incr(key, delta)
    }
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.check()?;
        self.store.clear(prefix)
    }
    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        self.check()?;
        self.store.ttl(key)
    }
    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check()?;
        self.store.replace(key, value, ttl)
    }
}

fn cache(backend: &Arc<Switchable>, policy: FailurePolicy) -> Cache {
    Cache::with_backend(backend.clone() as Arc<dyn Backend>)
        .failure_policy(policy)
        .build()
        .unwrap()
}

fn policy(fail_open: bool, threshold: u32, cooldown_ms: u64) -> FailurePolicy {
    let mut p = FailurePolicy::default();
    p.fail_open = fail_open;
    p.breaker_threshold = threshold;
    p.breaker_cooldown = Duration::from_millis(cooldown_ms);
    p
}

#[test]
fn failing_closed_raises_connection_errors() {
    let b = Switchable::new();
    let c = cache(&b, policy(false, 0, 0));
    c.set("k", b"v", Expiry::Default).unwrap();
    b.down.store(true, Ordering::SeqCst);
    assert!(c.get("k").unwrap_err().is_connection());
    assert!(c
        .set("k", b"v", Expiry::Default)
        .unwrap_err()
        .is_connection());
    assert_eq!(c.stats().errors, 2);
}

#[test]
fn failing_open_answers_misses_and_reports_unstored_writes() {
    let b = Switchable::new();
    let c = cache(&b, policy(true, 0, 0));
    c.set("k", b"v", Expiry::Default).unwrap();
    b.down.store(true, Ordering::SeqCst);
    assert_eq!(c.get("k").unwrap(), None);
    assert!(
        !c.set("k", b"v2", Expiry::Default).unwrap(),
        "a write reports that it did not store"
    );
    assert!(!c.add("n", b"1", Expiry::Default).unwrap());
    assert!(!c.delete("k").unwrap());
    assert!(!c.has_key("k").unwrap());
    assert!(!c.touch("k", Expiry::Never).unwrap());
    assert_eq!(c.get_many(&["k", "x"], None).unwrap(), vec![None, None]);
    assert_eq!(
        c.set_many(
            &[("a", b"1".as_slice()), ("b", b"2".as_slice())],
            Expiry::Default,
            None
        )
        .unwrap(),
        vec![0, 1]
    );
    assert_eq!(c.delete_many(&["a"], None).unwrap(), 0);
    c.clear().unwrap();
    // incr has no answer that is not a lie, so it still raises.
    assert!(c.incr("k", 1).unwrap_err().is_connection());
    let s = c.stats();
    assert_eq!(s.errors, 11);
    assert_eq!(s.misses, 3);
    b.down.store(false, Ordering::SeqCst);
    assert_eq!(
        c.get("k").unwrap().as_deref(),
        Some(&b"v"[..]),
        "nothing was lost while down"
    );
}

#[test]
fn breaker_stops_calling_a_dead_backend_and_recovers() {
    let b = Switchable::new();
    let c = cache(&b, policy(true, 3, 100));
    b.down.store(true, Ordering::SeqCst);
    for _ in 0..1000 {
        assert_eq!(c.get("k").unwrap(), None);
    }
    assert_eq!(
        b.calls.load(Ordering::SeqCst),
        3,
        "only the calls before the breaker opened reached the backend"
    );
    b.down.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(150));
    assert!(c.set("k", b"back", Expiry::Default).unwrap());
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"back"[..]));
}

#[test]
fn policy_options_come_from_the_url() {
    let c =
        Cache::open("dummy://?fail_open=true&breaker_threshold=0&breaker_cooldown=2.5").unwrap();
    assert!(c.get("k").unwrap().is_none());
    for (url, needle) in [
        ("dummy://?fail_open=maybe", "fail_open"),
        ("dummy://?breaker_threshold=-1", "breaker_threshold"),
        ("dummy://?breaker_cooldown=-3", "breaker_cooldown"),
    ] {
        let err = Cache::open(url).unwrap_err();
        assert!(
            err.is_configuration() && err.to_string().contains(needle),
            "{url}: {err}"
        );
    }
}

#[test]
fn lifetime_operations_fail_closed_or_open_like_the_others() {
    let b = Switchable::new();
    let closed = cache(&b, policy(false, 0, 0));
    let open = cache(&b, policy(true, 0, 0));
    closed.set("k", b"1", Expiry::Never).unwrap();
    b.down.store(true, Ordering::SeqCst);
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    assert!(closed.ttl("k").unwrap_err().is_connection());
    assert!(closed.persist("k").unwrap_err().is_connection());
    assert!(closed.expire_at("k", later).unwrap_err().is_connection());
    let err = closed.replace("k", b"2", Expiry::Never).unwrap_err();
    assert!(err.is_connection());
    assert!(closed.incr_or_create("k", 1).unwrap_err().is_connection());
    // Failing open: a read answers "missing", a write "not done"; a counter still raises.
    assert_eq!(open.ttl("k").unwrap(), TimeToLive::Missing);
    assert!(!open.persist("k").unwrap());
    assert!(!open.expire_at("k", later).unwrap());
    assert!(!open.replace("k", b"2", Expiry::Never).unwrap());
    assert!(open.incr_or_create("k", 1).unwrap_err().is_connection());
    b.down.store(false, Ordering::SeqCst);
    assert_eq!(closed.ttl("k").unwrap(), TimeToLive::Forever);
    assert_eq!(closed.get("k").unwrap().as_deref(), Some(&b"1"[..]));
}

/// Tags follow the policy: failing open, a tagged write and an invalidation report false,
/// a tagged read misses; failing closed, they raise.
#[test]
fn tagged_operations_fail_open_or_raise_as_the_policy_says() {
    let b = Switchable::new();
    let open = cache(&b, policy(true, 0, 0));
    let closed = cache(&b, policy(false, 0, 0));
    open.set_tagged("k", b"v", Expiry::Default, &["t"]).unwrap();
    assert_eq!(open.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    b.down.store(true, Ordering::SeqCst);
    assert_eq!(open.get("k").unwrap(), None);
    assert!(!open
        .set_tagged("k2", b"v", Expiry::Default, &["t"])
        .unwrap());
    assert!(!open.invalidate_tags(&["t"]).unwrap());
    assert!(closed.get("k").unwrap_err().is_connection());
    assert!(closed
        .set_tagged("k2", b"v", Expiry::Default, &["t"])
        .unwrap_err()
        .is_connection());
    assert!(closed.invalidate_tags(&["t"]).unwrap_err().is_connection());
    b.down.store(false, Ordering::SeqCst);
    assert_eq!(open.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}
