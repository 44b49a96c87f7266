//! Refresh without stampedes: single-flight `get_or_set_with`, the cross-process lease,
//! XFetch early refresh, cacheback-style jobs, tiered caches and their statistics.

use polycache::{
    Cache, CacheStatus, Envelope, Error, ErrorKind, Expiry, Fetched, Job, JobOptions, LocalBus,
    RefreshPolicy,
};
use polycache_testkit::eventually;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn mem() -> Cache {
    Cache::open("memory://?max_entries=10000").unwrap()
}

#[test]
fn sixty_four_threads_on_an_expired_key_cause_one_fetch() {
    let cache = mem();
    cache
        .set("hot", b"old", Expiry::After(Duration::from_millis(20)))
        .unwrap();
    thread::sleep(Duration::from_millis(40));
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_set_with(
                        "hot",
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(100));
                            Ok(b"new".to_vec())
                        },
                        Expiry::Default,
                    )
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(&*h.join().unwrap(), b"new");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let s = cache.stats();
    assert_eq!(s.refreshes, 1);
    assert_eq!(s.misses, 64, "each caller counts one lookup");
    assert_eq!(s.hits, 0);
    assert_eq!(s.sets, 2, "the first set and the computed value");
    assert_eq!(cache.flights_in_progress(), 0);
    // Stored as a plain value: readable by a plain get (no early refresh configured).
    assert_eq!(cache.get("hot").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn get_or_set_stays_djangos_and_computes_in_every_caller() {
    // The documented difference: get_or_set is not single-flight.
    let cache = mem();
    let calls = AtomicUsize::new(0);
    let barrier = Barrier::new(4);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                barrier.wait();
                cache
                    .get_or_set(
                        "k",
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(50));
                            Ok(b"v".to_vec())
                        },
                        Expiry::Default,
                    )
                    .unwrap();
            });
        }
    });
    assert!(calls.load(Ordering::SeqCst) > 1);
}

#[test]
fn a_failing_loader_stores_nothing_and_waiters_retry() {
    let cache = mem();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                cache.get_or_set_with(
                    "k",
                    || {
                        // The first computation fails; the retry by a waiter succeeds.
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(50));
                        if n == 0 {
                            Err(Error::new(ErrorKind::Backend, "upstream down"))
                        } else {
                            Ok(b"v".to_vec())
                        }
                    },
                    Expiry::Default,
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let errors = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(errors, 1, "only the failing caller sees its error");
    assert!(results
        .iter()
        .flatten()
        .all(|v| v.as_bytes() == b"v".as_slice()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().refreshes, 1);

    let err = cache
        .get_or_set_with(
            "other",
            || Err(Error::new(ErrorKind::Backend, "no")),
            Expiry::Default,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(cache.get("other").unwrap().is_none(), "nothing stored");
}

#[test]
fn a_loader_that_reenters_its_own_key_does_not_deadlock() {
    let cache = mem();
    let v = cache
        .get_or_set_with(
            "k",
            || {
                let inner =
                    cache.get_or_set_with("k", || Ok(b"inner".to_vec()), Expiry::Default)?;
                Ok([&inner[..], b"+outer"].concat())
            },
            Expiry::Default,
        )
        .unwrap();
    assert_eq!(&*v, b"inner+outer");
}

#[test]
fn a_waiter_computes_itself_after_the_flight_timeout() {
    let cache = Cache::builder("memory://")
        .refresh_policy(RefreshPolicy::default().flight_timeout(Duration::from_millis(50)))
        .build()
        .unwrap();
    let slow = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.get_or_set_with(
                "k",
                || {
                    thread::sleep(Duration::from_millis(600));
                    Ok(b"slow".to_vec())
                },
                Expiry::Default,
            )
        })
    };
    assert!(eventually(Duration::from_secs(1), || cache
        .flights_in_progress()
        == 1));
    let started = Instant::now();
    let v = cache
        .get_or_set_with("k", || Ok(b"fast".to_vec()), Expiry::Default)
        .unwrap();
    assert_eq!(&*v, b"fast");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the waiter gave up on the slow caller"
    );
    assert_eq!(&*slow.join().unwrap().unwrap(), b"slow");
}

#[test]
fn the_lease_makes_separate_caches_share_one_fetch() {
    // Four caches over one named store stand for four processes over one server: they share
    // no in-process flight map, only the backend, so only the lease can keep them to one fetch.
    let url = "memory://lease-four?lease=true";
    let caches: Vec<Cache> = (0..4).map(|_| Cache::open(url).unwrap()).collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (cache, calls, barrier) = (caches[i % 4].clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_set_with(
                        "report",
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(100));
                            Ok(b"r".to_vec())
                        },
                        Expiry::Default,
                    )
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(&*h.join().unwrap(), b"r");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        caches[0].get("report:__lock__").unwrap().is_none(),
        "the lease is released"
    );
}

#[test]
fn a_lease_left_by_a_dead_process_expires_and_is_taken_over() {
    let cache = Cache::builder("memory://lease-dead")
        .refresh_policy(
            RefreshPolicy::default()
                .lease(true)
                .lease_ttl(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    // A "process" took the lease and died without releasing it.
    cache
        .add(
            "k:__lock__",
            b"dead",
            Expiry::After(Duration::from_millis(200)),
        )
        .unwrap();
    let started = Instant::now();
    let v = cache
        .get_or_set_with("k", || Ok(b"v".to_vec()), Expiry::Default)
        .unwrap();
    assert_eq!(&*v, b"v");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "it waited for the lease: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "and took it over: {waited:?}"
    );
}

#[test]
fn xfetch_refreshes_a_value_before_it_expires() {
    let cache = Cache::builder("memory://")
        .refresh_policy(RefreshPolicy::default().xfetch_beta(20_000.0))
        .build()
        .unwrap();
    let calls = AtomicUsize::new(0);
    let loader = || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(20));
        Ok(format!("v{n}").into_bytes())
    };
    let ttl = Expiry::After(Duration::from_secs(60));
    assert_eq!(&*cache.get_or_set_with("k", loader, ttl).unwrap(), b"v0");
    // Stored in an envelope that records the expiry and the ~20 ms compute time.
    let raw = cache.get("k").unwrap().unwrap();
    let (env, payload) = Envelope::decode(&raw).unwrap();
    assert_eq!(payload, b"v0");
    assert!(env.delta_us >= 15_000, "{env:?}");
    assert!(env.expires_at > 0);
    // With beta = 20,000 the expected head start (20 ms x 20,000 = 400 s) dwarfs the 60 s
    // TTL: each read recomputes with probability e^(-60/400) ~ 0.86 (0.82 if the compute
    // time is measured at the 15 ms floor asserted above), so 50 reads all missing it is
    // out of reach. With beta = 1,000 the probability was e^-3 a read and the test failed
    // about one run in thirteen.
    let mut refreshed = false;
    for _ in 0..50 {
        if &*cache.get_or_set_with("k", loader, ttl).unwrap() != b"v0" {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "XFetch never refreshed early");
    assert!(cache.stats().refreshes >= 2);
    assert_eq!(cache.stats().misses, 1, "the key never went missing");
}

#[test]
fn xfetch_off_stores_plain_values_and_never_refreshes_early() {
    let cache = mem();
    let calls = AtomicUsize::new(0);
    let loader = || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(b"v".to_vec())
    };
    for _ in 0..100 {
        cache
            .get_or_set_with("k", loader, Expiry::After(Duration::from_secs(60)))
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn refresh_policy_options_are_parsed_and_checked() {
    let c = Cache::open(
        "memory://?single_flight=false&lease=yes&lease_ttl=2.5&flight_timeout=3&xfetch_beta=0.5",
    )
    .unwrap();
    let p = c.refresh_policy();
    assert!(!p.single_flight && p.lease);
    assert_eq!(p.lease_ttl, Duration::from_millis(2500));
    assert_eq!(p.flight_timeout, Duration::from_secs(3));
    assert_eq!(p.xfetch_beta, 0.5);
    for bad in [
        "xfetch_beta=-1",
        "xfetch_beta=x",
        "lease_ttl=0",
        "lease=maybe",
    ] {
        let e = Cache::open(&format!("memory://?{bad}")).unwrap_err();
        assert!(e.is_configuration(), "{bad}: {e}");
        let name = bad.split('=').next().unwrap();
        assert!(e.to_string().contains(name), "{bad}: {e}");
    }
}

// --- jobs ------------------------------------------------------------------------------------

/// A fetch that counts its calls, takes `delay`, and fails while `failing` is set.
#[derive(Clone)]
struct Counted {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    delay: Duration,
}

impl Counted {
    fn new(delay: Duration) -> Counted {
        Counted {
            calls: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
            delay,
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl polycache::Fetch for Counted {
    fn fetch(&self) -> polycache::Result<Fetched> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        thread::sleep(self.delay);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Backend, "fetch failed"));
        }
        Ok(format!("v{n}").into_bytes().into())
    }
}

fn job(lifetime_ms: u64) -> Job {
    Job::new(
        mem(),
        JobOptions::default().lifetime(Duration::from_millis(lifetime_ms)),
    )
}

#[test]
fn a_stale_value_is_returned_at_once_while_the_refresh_runs() {
    let job = job(30);
    let fetch = Counted::new(Duration::from_millis(300));
    let first = job.get("k", fetch.clone()).unwrap();
    assert_eq!(
        (first.status, first.fetched),
        (CacheStatus::Miss, true),
        "fetched on a miss"
    );
    assert_eq!(first.value.as_deref(), Some(&b"v0"[..]));
    thread::sleep(Duration::from_millis(50));

    let stale = job.get("k", fetch.clone()).unwrap();
    assert_eq!(stale.status, CacheStatus::Stale);
    assert_eq!(stale.value.as_deref(), Some(&b"v0"[..]));
    assert!(!stale.fetched);
    // It returned while the refresh (300 ms) was still running in the pool.
    assert!(job.is_refreshing("k").unwrap());
    // More reads meanwhile neither wait nor start a second refresh.
    for _ in 0..20 {
        assert_eq!(
            job.get("k", fetch.clone()).unwrap().status,
            CacheStatus::Stale
        );
    }
    assert!(eventually(Duration::from_secs(5), || !job
        .is_refreshing("k")
        .unwrap()));
    assert_eq!(fetch.calls(), 2);
    let fresh = job.get("k", fetch.clone()).unwrap();
    assert_eq!(fresh.status, CacheStatus::Hit);
    assert_eq!(fresh.value.as_deref(), Some(&b"v1"[..]));
    let s = job.cache().stats();
    assert_eq!(s.stale_hits, 21);
    assert_eq!(s.refreshes, 2);
    assert_eq!((s.hits, s.misses), (1, 1));
}

#[test]
fn a_raising_fetch_keeps_the_stale_value_and_is_retried() {
    let job = job(20);
    let fetch = Counted::new(Duration::ZERO);
    job.get("k", fetch.clone()).unwrap();
    thread::sleep(Duration::from_millis(40));
    fetch.failing.store(true, Ordering::SeqCst);
    for attempt in 1..=3 {
        let r = job.get("k", fetch.clone()).unwrap();
        assert_eq!(r.status, CacheStatus::Stale);
        assert_eq!(
            r.value.as_deref(),
            Some(&b"v0"[..]),
            "stale-while-error, attempt {attempt}"
        );
        // Each read after a failed refresh schedules another one.
        assert!(eventually(Duration::from_secs(5), || fetch.calls()
            == 1 + attempt
            && !job.is_refreshing("k").unwrap()));
    }
    fetch.failing.store(false, Ordering::SeqCst);
    job.get("k", fetch.clone()).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        job.get("k", fetch.clone()).unwrap().status == CacheStatus::Hit
    }));
    assert_eq!(
        job.get("k", fetch.clone()).unwrap().value.as_deref(),
        Some(&b"v4"[..])
    );
}

#[test]
fn the_staleness_bound_forces_a_synchronous_fetch() {
    let job = Job::new(
        mem(),
        JobOptions::default()
            .lifetime(Duration::from_millis(20))
            .max_stale(Some(Duration::from_millis(50))),
    );
    let fetch = Counted::new(Duration::ZERO);
    job.get("k", fetch.clone()).unwrap();
    thread::sleep(Duration::from_millis(30));
    // Within the bound: stale, refreshed behind.
    fetch.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        job.get("k", fetch.clone()).unwrap().status,
        CacheStatus::Stale
    );
    assert!(eventually(Duration::from_secs(5), || !job
        .is_refreshing("k")
        .unwrap()));
    thread::sleep(Duration::from_millis(60));
    // Past the bound with a failing fetch: the caller fetches, and sees the failure.
    let err = job.get("k", fetch.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    // Past the bound with a working fetch: the caller gets a fresh value, not the stale one.
    fetch.failing.store(false, Ordering::SeqCst);
    let r = job.get("k", fetch.clone()).unwrap();
    assert!(r.fetched);
    assert_eq!(r.status, CacheStatus::Stale);
    assert_ne!(r.value.as_deref(), Some(&b"v0"[..]));
    assert_eq!(
        job.get("k", fetch.clone()).unwrap().status,
        CacheStatus::Hit
    );
}

#[test]
fn should_fetch_synchronously_fetches_a_stale_value_in_the_caller() {
    struct Sync(Counted);
    impl polycache::Fetch for Sync {
        fn fetch(&self) -> polycache::Result<Fetched> {
            self.0.fetch()
        }
        fn should_fetch_synchronously(&self, stale_for: Duration) -> bool {
            // The value went stale 10 ms after it was fetched, and was read 20 ms after.
            assert!(stale_for > Duration::ZERO, "{stale_for:?}");
            true
        }
    }
    let job = job(10);
    let fetch = Counted::new(Duration::ZERO);
    job.get("k", Sync(fetch.clone())).unwrap();
    thread::sleep(Duration::from_millis(20));
    let r = job.get("k", Sync(fetch.clone())).unwrap();
    assert!(r.fetched);
    assert_eq!(r.value.as_deref(), Some(&b"v1"[..]));
}

#[test]
fn invalidate_marks_stale_and_refreshes_in_the_background() {
    let job = job(60_000);
    let fetch = Counted::new(Duration::from_millis(50));
    job.get("k", fetch.clone()).unwrap();
    assert_eq!(
        job.get("k", fetch.clone()).unwrap().status,
        CacheStatus::Hit
    );
    assert!(job.invalidate("k", fetch.clone()).unwrap());
    let r = job.get("k", fetch.clone()).unwrap();
    assert_eq!(r.status, CacheStatus::Stale);
    assert_eq!(r.value.as_deref(), Some(&b"v0"[..]));
    assert!(eventually(Duration::from_secs(5), || {
        job.get("k", fetch.clone()).unwrap().value.as_deref() == Some(&b"v1"[..])
    }));
    assert_eq!(fetch.calls(), 2, "one background refresh");
    assert!(!job.invalidate("absent", fetch.clone()).unwrap());
    assert!(job.delete("k").unwrap());
    assert!(!job.delete("k").unwrap());
}

#[test]
fn without_fetch_on_miss_a_miss_returns_none_and_schedules_a_refresh() {
    let job = Job::new(mem(), JobOptions::default().fetch_on_miss(false));
    let fetch = Counted::new(Duration::ZERO);
    let r = job.get("k", fetch.clone()).unwrap();
    assert_eq!(
        (r.value, r.status, r.fetched),
        (None, CacheStatus::Miss, false)
    );
    assert!(eventually(Duration::from_secs(5), || {
        job.get("k", fetch.clone()).unwrap().status == CacheStatus::Hit
    }));
    assert_eq!(fetch.calls(), 1);
}

#[test]
fn sixty_four_threads_on_a_job_miss_cause_one_fetch() {
    let job = job(60_000);
    let fetch = Counted::new(Duration::from_millis(100));
    let barrier = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (job, fetch, barrier) = (job.clone(), fetch.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                job.get("k", fetch).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().value.as_deref(), Some(&b"v0"[..]));
    }
    assert_eq!(fetch.calls(), 1);
}

#[test]
fn fetched_lifetime_overrides_the_jobs() {
    let job = job(60_000);
    let short = || Ok(Fetched::new(b"x".to_vec(), Some(Duration::from_millis(10))));
    job.get("k", short).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(job.get("k", short).unwrap().status, CacheStatus::Stale);
    // A plain value written by set is a fresh hit.
    job.cache().set("plain", b"p", Expiry::Default).unwrap();
    let r = job.get("plain", short).unwrap();
    assert_eq!(r.status, CacheStatus::Hit);
    assert_eq!(r.value.as_deref(), Some(&b"p"[..]));
}

// --- tiered ----------------------------------------------------------------------------------

fn tiered_pair(l2: &str) -> (Cache, Cache) {
    let bus = LocalBus::new();
    let a = Cache::builder_tiered("memory://", l2)
        .bus(bus.clone())
        .build()
        .unwrap();
    let b = Cache::builder_tiered("memory://", l2)
        .bus(bus)
        .build()
        .unwrap();
    (a, b)
}

#[test]
fn tiered_caches_on_one_bus_see_each_others_writes_within_100ms() {
    let (a, b) = tiered_pair("memory://tiered-pair");
    a.set("k", b"1", Expiry::Default).unwrap();
    assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"1"[..]));
    // b now holds "1" in its L1; a's write must reach it.
    a.set("k", b"2", Expiry::Default).unwrap();
    assert!(eventually(Duration::from_millis(100), || b
        .get("k")
        .unwrap()
        .as_deref()
        == Some(&b"2"[..])));
    a.delete("k").unwrap();
    assert!(eventually(Duration::from_millis(100), || b
        .get("k")
        .unwrap()
        .is_none()));
    b.set("n", b"5", Expiry::Default).unwrap();
    assert_eq!(a.get("n").unwrap().as_deref(), Some(&b"5"[..]));
    assert_eq!(b.incr("n", 1).unwrap(), 6);
    assert_eq!(a.get("n").unwrap().as_deref(), Some(&b"6"[..]));
    a.set("c", b"x", Expiry::Default).unwrap();
    b.get("c").unwrap();
    a.clear().unwrap();
    assert!(b.get("c").unwrap().is_none());
}

#[test]
fn without_a_bus_l1_copies_live_at_most_l1_timeout() {
    let a = Cache::builder_tiered("memory://", "memory://tiered-nobus")
        .l1_timeout(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let b = Cache::builder_tiered("memory://", "memory://tiered-nobus")
        .build()
        .unwrap();
    a.set("k", b"old", Expiry::Default).unwrap();
    b.set("k", b"new", Expiry::Default).unwrap();
    assert_eq!(
        a.get("k").unwrap().as_deref(),
        Some(&b"old"[..]),
        "a's L1 copy"
    );
    assert!(eventually(Duration::from_secs(2), || a
        .get("k")
        .unwrap()
        .as_deref()
        == Some(&b"new"[..])));
}

#[test]
fn tiered_urls_are_parsed_checked_and_redacted() {
    let url = "tiered://?l1=memory%3A%2F%2F%3Fmax_entries%3D100&l2=memory%3A%2F%2Ftiered-url&bus=local%3Aurl-bus&l1_timeout=5&key_prefix=app";
    let c = Cache::open(url).unwrap();
    assert_eq!(c.key_prefix(), "app");
    assert_eq!(c.backend().name(), "tiered");
    assert!(c
        .location()
        .starts_with("tiered://?l1=memory://?max_entries=100&l2=memory://tiered-url"));
    c.set("k", b"v", Expiry::Default).unwrap();
    let l2 = Cache::builder("memory://tiered-url")
        .key_prefix("app")
        .build()
        .unwrap();
    assert_eq!(
        l2.get("k").unwrap().as_deref(),
        Some(&b"v"[..]),
        "written through to L2"
    );

    for (bad, needle) in [
        ("tiered://", "l2"),
        ("tiered://?l2=memory%3A%2F%2F&bus=carrier-pigeon", "bus"),
        ("tiered://?l1=dummy%3A%2F%2F&l2=memory%3A%2F%2F", "l1"),
        ("tiered://?l2=tiered%3A%2F%2F", "tiered"),
        (
            "tiered://?l2=memory%3A%2F%2F%3Fmax_entires%3D1",
            "max_entires",
        ),
        ("tiered://host?l2=memory%3A%2F%2F", "options"),
        ("tiered://?l2=memory%3A%2F%2F&l1_timeout=-1", "l1_timeout"),
    ] {
        let e = Cache::open(bad).unwrap_err();
        assert!(e.is_configuration(), "{bad}: {e}");
        assert!(e.to_string().contains(needle), "{bad}: {e}");
    }
    let e = Cache::builder("memory://")
        .bus(LocalBus::new())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("tiered"), "{e}");
    // A password in the L2 URL never shows.
    let e = Cache::open("tiered://?l2=nosuch%3A%2F%2F%3As3cret%40host").unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[test]
fn tiered_get_many_and_stats() {
    let (a, b) = tiered_pair("memory://tiered-many");
    a.set_many(&[("x", b"1"), ("y", b"2")], Expiry::Default, None)
        .unwrap();
    let got = b.get_many(&["x", "y", "z"], None).unwrap();
    assert_eq!(
        got.iter().map(|v| v.as_deref()).collect::<Vec<_>>(),
        vec![Some(&b"1"[..]), Some(&b"2"[..]), None]
    );
    a.delete_many(&["x"], None).unwrap();
    assert!(b.get("x").unwrap().is_none());
    let s = b.stats();
    assert_eq!((s.hits, s.misses), (2, 2));
}

// --- stats -----------------------------------------------------------------------------------

#[test]
fn stats_count_exactly_under_concurrency() {
    let cache = mem();
    let threads = 48; // beyond the 32 per-thread counter slots
    let per = 200;
    thread::scope(|s| {
        for t in 0..threads {
            let cache = &cache;
            s.spawn(move || {
                for i in 0..per {
                    let key = format!("k{}", (t * per + i) % 500);
                    cache
                        .get_or_set_with(&key, || Ok(b"v".to_vec()), Expiry::Never)
                        .unwrap();
                }
            });
        }
    });
    let s = cache.stats();
    assert_eq!(s.hits + s.misses, (threads * per) as u64);
    assert_eq!(s.refreshes, 500, "one computation per key");
    assert_eq!(s.sets, 500);
    let text = cache.stats_prometheus("main");
    for (name, value) in [
        ("hits", s.hits),
        ("misses", s.misses),
        ("stale_hits", 0),
        ("refreshes", 500),
        ("sets", 500),
        ("deletes", 0),
        ("errors", 0),
        ("evictions", 0),
    ] {
        assert!(
            text.contains(&format!("# TYPE polycache_{name}_total counter\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "polycache_{name}_total{{cache=\"main\"}} {value}\n"
            )),
            "{name}: {text}"
        );
    }
    let escaped = cache.stats_prometheus("a\"b\\c\nd");
    assert!(escaped.contains(r#"cache="a\"b\\c\nd""#), "{escaped}");
}
