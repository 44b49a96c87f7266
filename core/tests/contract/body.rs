//! The contract's body: every operation of DESIGN.md's "The contract every backend keeps",
//! written once over [`Ops`].
//!
//! Where a backend may differ by design (dummy:// stores nothing, memcached:// cannot scope
//! `clear` to a prefix without namespaces, memcached counts TTLs in whole seconds and limits
//! items to its item size), [`Expect`] says so. Where a backend differs from the contract
//! today, [`Deviation`] names it and the one assertion it changes; each is a known bug.

use super::ops::{Mode, Ops, Settle};
use polycache::{
    CacheBuilder, ErrorKind, Expiry, Key, LockOptions, Result, TimeToLive, Value, MAX_KEY_LEN,
};
use std::time::{Duration, Instant, SystemTime};

/// Known departures from the contract (docs/architecture.md, "The contract suite"):
/// memcached's native counters, as docs/backends/memcached.md documents them, and bugs of
/// the Redis `incr` script. An assertion changed by one names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deviation {
    /// memcached's native `decr` stops at 0, and a negative value is not a counter it can
    /// change (`core/src/backend/memcached/commands.rs`, `Request::decode`): counters are
    /// unsigned there.
    UnsignedCounters,
    /// memcached's native `incr` stores the result past `i64::MAX` before the backend
    /// reports the overflow: the value is not left untouched.
    OverflowStores,
    /// The Redis `incr` script (`INCR_SCRIPT`, Redis' own `INCRBY`) refuses `+7`, which the
    /// shared `parse_i64` (every other backend) reads as 7.
    PlusSignIsNotAnInteger,
    /// memcached's counters take a number with spaces around it (`" 1"`, `"1 "`).
    LenientCounters,
    /// memcached's `decr` keeps the length of the stored number, padding it with spaces:
    /// after `10` minus 1 a `get` answers `"9 "`, which `Value::as_i64` cannot read.
    PaddedCounters,
    /// The backend cannot list keys: `keys`, `iter_keys` and `delete_pattern` are
    /// `Unsupported` errors there. memcached by design (docs/backends/memcached.md); a custom
    /// backend that leaves `Backend::scan_keys` to the trait's default.
    NoKeyListing,
}

/// What a scheme is expected to do where the contract lets backends differ.
#[derive(Debug, Clone)]
pub struct Expect {
    /// False for dummy://, which stores nothing and answers every read with a miss.
    pub stores: bool,
    /// False where `clear` with a key prefix is an `Unsupported` error and removes nothing
    /// (memcached:// without `namespace=true`, as documented).
    pub prefix_clear: bool,
    /// A short TTL the backend keeps to: milliseconds on most, whole seconds on memcached.
    /// An entry set with it must be there for the calls that follow at once (a `touch`, an
    /// `incr`): on memcached, whose clock ticks once a second, an entry of TTL n s lapses
    /// after between n − 1 and n s, so its `ttl` is 2 s there.
    pub ttl: Duration,
    /// The size of the large value the body round-trips: beyond every small-value path
    /// (file packs, SQL inline storage), within the backend's own item limit.
    pub large: usize,
    /// This backend's known deviations (see [`Deviation`]).
    pub deviations: &'static [Deviation],
    /// False where `ttl` and `replace` are the trait's `Unsupported` defaults (a custom
    /// backend that does not implement them).
    pub lifetime: bool,
    /// False where a lock cannot be extended or reacquired (`Unsupported`): a custom
    /// backend that keeps `Backend::extend_if_equals`'s default, by design.
    pub extends: bool,
}

impl Expect {
    /// A backend that keeps the whole contract, with millisecond TTLs.
    pub const FULL: Expect = Expect {
        stores: true,
        prefix_clear: true,
        ttl: Duration::from_millis(400),
        large: 3 << 20,
        deviations: &[],
        lifetime: true,
        extends: true,
    };

    fn has(&self, d: Deviation) -> bool {
        self.deviations.contains(&d)
    }

    /// How long to wait for an entry of TTL [`Expect::ttl`] to be gone.
    fn ttl_wait(&self) -> Duration {
        wait_out(self.ttl)
    }
}

/// How long after its write an entry of TTL `ttl` is surely gone.
fn wait_out(ttl: Duration) -> Duration {
    ttl * 2 + Duration::from_millis(500)
}

/// How long the body waits for something that must happen (a dead holder's lock lapsing):
/// the wait ends as soon as it happens, so only a bug waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `attempt` with the TTL [`Expect::ttl`], and again with it doubled (up to 16×)
/// while `attempt` answers `false`; returns the TTL of the attempt that answered `true`.
///
/// For a check whose premise is that an entry (or a lock) of a short TTL is still there
/// for the call right after its write: on a loaded machine the TTL may pass in between.
/// `attempt` answers `false` only when it has seen that the entry lapsed (it is gone, no
/// one holds the lock), never on a wrong answer, which it asserts against as usual.
async fn with_room<'a>(
    x: &Expect,
    what: &str,
    mut attempt: impl FnMut(Duration) -> polycache::BoxFuture<'a, bool>,
) -> Duration {
    let mut ttl = x.ttl;
    for _ in 0..5 {
        if attempt(ttl).await {
            return ttl;
        }
        ttl *= 2;
    }
    panic!("{what}: lapsed before the next call five times, up to a TTL of {ttl:?}")
}

/// The `max_value_size` of [`Caches::small`].
const LIMIT: usize = 1000;

/// Every cache one run of the body uses, each with a key prefix of its own so that the
/// three runs of a scheme (and several instances of an L1 cache) never share an entry.
pub struct Caches {
    pub x: Expect,
    /// The prefix of `main`, with the characters SQL LIKE and Redis globs treat specially.
    pub prefix: String,
    pub main: Ops,
    /// Prefixes that an unescaped LIKE pattern (`%`, `_`) or glob (`*`, `?`) of `main`'s
    /// prefix would match.
    pub like: Ops,
    pub glob: Ops,
    /// `main`'s prefix in capitals: case matters.
    pub upper: Ops,
    pub other: Ops,
    /// `max_value_size` [`LIMIT`].
    pub small: Ops,
    /// Version 3.
    pub v3: Ops,
    /// Default timeouts: [`Expect::ttl`], zero, none.
    pub short_default: Ops,
    pub zero_default: Ops,
    pub never_default: Ops,
    /// Untouched by every other section: its counters are exact.
    pub stats: Ops,
}

impl Caches {
    /// Opens the caches of one run: `builder` opens the scheme's store.
    pub fn open(
        scheme: &str,
        mode: Mode,
        x: Expect,
        builder: &dyn Fn() -> CacheBuilder,
        settle: &Settle,
    ) -> Caches {
        let base = format!("{scheme}.{}.", mode.tag());
        let open = |prefix: String, b: &dyn Fn(CacheBuilder) -> CacheBuilder| -> Ops {
            let cache = b(builder().key_prefix(&prefix))
                .build()
                .unwrap_or_else(|e| panic!("{scheme}: opening the cache {prefix:?}: {e}"));
            Ops::new(cache, settle.clone(), mode)
        };
        let same = |b: CacheBuilder| b;
        let ttl = x.ttl;
        let prefix = format!("{base}%_*?");
        Caches {
            x,
            main: open(prefix.clone(), &same),
            like: open(format!("{base}XY*?"), &same),
            glob: open(format!("{base}%_ab"), &same),
            upper: open(prefix.to_uppercase(), &same),
            prefix,
            other: open(format!("{base}other"), &same),
            small: open(format!("{base}small"), &|b| b.max_value_size(LIMIT)),
            v3: open(format!("{base}v3"), &|b| b.version(3)),
            short_default: open(format!("{base}short"), &|b| b.default_timeout(Some(ttl))),
            zero_default: open(format!("{base}zero"), &|b| {
                b.default_timeout(Some(Duration::ZERO))
            }),
            never_default: open(format!("{base}never"), &|b| b.default_timeout(None)),
            stats: open(format!("{base}stats"), &same),
        }
    }
}

fn bytes(v: Option<Value>) -> Option<Vec<u8>> {
    v.map(Value::into_vec)
}

fn all(v: Vec<Option<Value>>) -> Vec<Option<Vec<u8>>> {
    v.into_iter().map(bytes).collect()
}

fn some(v: &[u8]) -> Option<Vec<u8>> {
    Some(v.to_vec())
}

fn kind<T: std::fmt::Debug>(r: Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}

/// The whole contract, section by section.
pub async fn contract(c: Caches) {
    super::structures::structures(&c).await;
    key_scans(&c).await;
    super::tags::tags(&c).await;
    if !c.x.stores {
        return always_misses(&c).await;
    }
    // The entries with short TTLs lapse while the other sections run.
    let lapsing = expiry_and_ttl_start(&c).await;
    basics(&c).await;
    odd_and_invalid_keys(&c).await;
    add(&c).await;
    incr_decr(&c).await;
    many_keys(&c).await;
    get_or_set(&c).await;
    versions_and_prefixes(&c).await;
    values(&c).await;
    lifetime(&c).await;
    expiry_and_ttl_end(&c, lapsing).await;
    locks(&c).await;
    clear(&c).await;
    stats(&c).await;
}

async fn basics(c: &Caches) {
    let m = &c.main;
    assert_eq!(bytes(m.get("a").await.unwrap()), None);
    assert!(m
        .set("a", b"1\0two\xff\r\n", Expiry::Default)
        .await
        .unwrap());
    assert_eq!(bytes(m.get("a").await.unwrap()), some(b"1\0two\xff\r\n"));
    assert_eq!(m.get_lent("a").await.unwrap(), some(b"1\0two\xff\r\n"));
    assert!(m.set("a", b"replaced", Expiry::Never).await.unwrap());
    assert_eq!(m.get_lent("a").await.unwrap(), some(b"replaced"));
    assert_eq!(bytes(m.get("a").await.unwrap()), some(b"replaced"));
    assert!(m.has_key("a").await.unwrap());
    assert!(!m.has_key("nope").await.unwrap());
    assert!(m.delete("a").await.unwrap());
    assert!(
        !m.delete("a").await.unwrap(),
        "a second delete finds nothing"
    );
    assert!(!m.has_key("a").await.unwrap());
    assert_eq!(bytes(m.get("a").await.unwrap()), None);
    assert_eq!(m.get_lent("a").await.unwrap(), None);
    // The value of 0 bytes is a value, not a miss.
    assert!(m.set("empty", b"", Expiry::Never).await.unwrap());
    assert_eq!(bytes(m.get("empty").await.unwrap()), some(b""));
    assert_eq!(m.get_lent("empty").await.unwrap(), some(b""));
    assert!(m.has_key("empty").await.unwrap());
    assert_eq!(
        all(m.get_many(&["empty"], None).await.unwrap()),
        [some(b"")]
    );
}

async fn odd_and_invalid_keys(c: &Caches) {
    let m = &c.main;
    // Keys a backend cannot store as they are are hashed to a safe form, never rejected.
    let long = "x".repeat(300);
    let longest = "y".repeat(MAX_KEY_LEN);
    let odd = [
        "with space",
        "tab\there",
        "new\nline",
        "cr\r\nlf",
        "nul\0byte",
        "\u{7f}del",
        "café",
        "ключ/ü",
        "日本語のキー",
        "emoji 🎉",
        "%_*?[]\\",
        "../../etc/passwd",
        "h:0123",
        long.as_str(),
        longest.as_str(),
        "",
    ];
    for (i, k) in odd.iter().enumerate() {
        let v = format!("v{i}");
        assert!(m.set(*k, v.as_bytes(), Expiry::Never).await.unwrap(), "{i}");
    }
    for (i, k) in odd.iter().enumerate() {
        let v = format!("v{i}");
        assert_eq!(
            bytes(m.get(*k).await.unwrap()),
            some(v.as_bytes()),
            "key {i}"
        );
        assert!(m.has_key(*k).await.unwrap(), "key {i}");
        assert!(
            !m.add(*k, b"again", Expiry::Never).await.unwrap(),
            "key {i}"
        );
    }
    let got = all(m.get_many(&odd, None).await.unwrap());
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v, &some(format!("v{i}").as_bytes()), "key {i}");
    }
    m.set("compteur à espaces", b"10", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(m.incr("compteur à espaces", 5).await.unwrap(), 15);
    assert!(m.touch("日本語のキー", Expiry::Never).await.unwrap());
    assert_eq!(m.delete_many(&odd, None).await.unwrap(), odd.len());
    assert!(m
        .get_many(&odd, None)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));

    // A key past MAX_KEY_LEN is an InvalidKey error on every operation, and reaches nothing.
    let too_long = "z".repeat(MAX_KEY_LEN + 1);
    let k = too_long.as_str();
    let invalid = ErrorKind::InvalidKey;
    assert_eq!(kind(m.get(k).await), invalid);
    assert_eq!(kind(m.set(k, b"v", Expiry::Never).await), invalid);
    assert_eq!(kind(m.add(k, b"v", Expiry::Never).await), invalid);
    assert_eq!(kind(m.delete(k).await), invalid);
    assert_eq!(kind(m.has_key(k).await), invalid);
    assert_eq!(kind(m.touch(k, Expiry::Never).await), invalid);
    assert_eq!(kind(m.incr(k, 1).await), invalid);
    assert_eq!(kind(m.decr(k, 1).await), invalid);
    assert_eq!(kind(m.get_many(&["ok", k], None).await), invalid);
    let items: [(&str, &[u8]); 2] = [("ok", b"v"), (k, b"v")];
    assert_eq!(kind(m.set_many(&items, Expiry::Never, None).await), invalid);
    assert!(
        !m.has_key("ok").await.unwrap(),
        "a rejected set_many stores nothing"
    );
    assert_eq!(kind(m.delete_many(&[k], None).await), invalid);
    let err = m.get_or_set(k, || Ok(b"v".to_vec()), Expiry::Never).await;
    assert_eq!(kind(err), invalid);
    assert_eq!(
        m.cache().stats().errors,
        0,
        "bad input is not a backend error"
    );
}

async fn add(c: &Caches) {
    let m = &c.main;
    assert!(m.add("n", b"1", Expiry::Default).await.unwrap());
    assert!(!m.add("n", b"2", Expiry::Default).await.unwrap());
    assert_eq!(bytes(m.get("n").await.unwrap()), some(b"1"));
    // An expired add stores nothing and answers whether the key was absent.
    assert!(m.add("z", b"x", Expiry::Expired).await.unwrap());
    assert!(!m.has_key("z").await.unwrap());
    assert!(!m.add("n", b"x", Expiry::Expired).await.unwrap());
    assert_eq!(bytes(m.get("n").await.unwrap()), some(b"1"));
    // After a delete the key is absent again.
    assert!(m.delete("n").await.unwrap());
    assert!(m.add("n", b"3", Expiry::Never).await.unwrap());
    assert_eq!(bytes(m.get("n").await.unwrap()), some(b"3"));
}

async fn incr_decr(c: &Caches) {
    let (m, x) = (&c.main, &c.x);
    let unsigned = x.has(Deviation::UnsignedCounters);
    m.set("ctr", b"41", Expiry::Never).await.unwrap();
    assert_eq!(m.incr("ctr", 1).await.unwrap(), 42);
    assert_eq!(m.incr("ctr", 0).await.unwrap(), 42);
    assert_eq!(m.decr("ctr", 2).await.unwrap(), 40);
    // Integers are stored as ASCII decimal.
    assert_eq!(bytes(m.get("ctr").await.unwrap()), some(b"40"));
    assert_eq!(m.decr("ctr", 31).await.unwrap(), 9);
    let nine = m.get("ctr").await.unwrap().unwrap();
    if x.has(Deviation::PaddedCounters) {
        assert_eq!(&*nine, b"9 ");
    } else {
        assert_eq!(&*nine, b"9");
        assert_eq!(nine.as_i64(), Some(9));
    }
    if unsigned {
        // Deviation::UnsignedCounters: memcached stops at zero.
        assert_eq!(m.decr("ctr", 50).await.unwrap(), 0);
    } else {
        assert_eq!(m.decr("ctr", 19).await.unwrap(), -10);
        assert_eq!(bytes(m.get("ctr").await.unwrap()), some(b"-10"));
        assert_eq!(m.incr("ctr", -5).await.unwrap(), -15);
    }
    // Counters past 2^53 (where a double loses integers) stay exact.
    let past_double = 1_i64 << 53;
    m.set("wide", past_double.to_string().as_bytes(), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(m.incr("wide", 1).await.unwrap(), past_double + 1);
    let stored = bytes(m.get("wide").await.unwrap());
    assert_eq!(stored, some((past_double + 1).to_string().as_bytes()));

    // A missing key is NotFound, naming the caller's key, and creates nothing.
    let err = m.incr("missing", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(
        !err.to_string().contains(&c.prefix),
        "the caller's key: {err}"
    );
    assert_eq!(kind(m.decr("missing", 1).await), ErrorKind::NotFound);
    assert!(!m.has_key("missing").await.unwrap(), "incr creates nothing");

    // A value that is not ASCII decimal is NotAnInteger, and is left as it is.
    for bad in [
        &b"abc"[..],
        b" 1",
        b"1 ",
        b"1.5",
        b"0x10",
        b"1_000",
        b"",
        b"+",
        b"-",
        b"1e3",
    ] {
        if x.has(Deviation::LenientCounters) && bad.trim_ascii() == b"1" {
            continue;
        }
        m.set("word", bad, Expiry::Never).await.unwrap();
        let err = m.incr("word", 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAnInteger, "{bad:?}: {err}");
        assert_eq!(bytes(m.get("word").await.unwrap()), some(bad), "{bad:?}");
    }
    // A decimal number past the 64-bit range is not a counter `incr` can read.
    m.set("huge", b"99999999999999999999", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(kind(m.incr("huge", 1).await), ErrorKind::NotAnInteger);
    // A leading `+` is read as Python's int() and Django's database cache read it.
    m.set("plus", b"+7", Expiry::Never).await.unwrap();
    if x.has(Deviation::PlusSignIsNotAnInteger) {
        assert_eq!(kind(m.incr("plus", 1).await), ErrorKind::NotAnInteger);
    } else {
        assert_eq!(m.incr("plus", 1).await.unwrap(), 8);
    }

    // Past the 64-bit range: Overflow, and the value is left as it is.
    let max = i64::MAX.to_string();
    m.set("max", max.as_bytes(), Expiry::Never).await.unwrap();
    assert_eq!(kind(m.incr("max", 1).await), ErrorKind::Overflow);
    if !x.has(Deviation::OverflowStores) {
        assert_eq!(bytes(m.get("max").await.unwrap()), some(max.as_bytes()));
        assert_eq!(m.incr("max", -1).await.unwrap(), i64::MAX - 1);
        let stored = bytes(m.get("max").await.unwrap());
        assert_eq!(stored, some((i64::MAX - 1).to_string().as_bytes()));
    }
    // decr by i64::MIN cannot be negated: Overflow before the backend is asked.
    m.set("one", b"1", Expiry::Never).await.unwrap();
    assert_eq!(kind(m.decr("one", i64::MIN).await), ErrorKind::Overflow);
    assert_eq!(bytes(m.get("one").await.unwrap()), some(b"1"));
    if !unsigned {
        let min = i64::MIN.to_string();
        m.set("min", min.as_bytes(), Expiry::Never).await.unwrap();
        assert_eq!(kind(m.decr("min", 1).await), ErrorKind::Overflow);
        assert_eq!(bytes(m.get("min").await.unwrap()), some(min.as_bytes()));
    }
    assert_eq!(
        m.cache().stats().errors,
        0,
        "refused increments are not backend errors"
    );

    // Atomic: concurrent increments all count.
    m.set("shared-counter", b"0", Expiry::Never).await.unwrap();
    m.incr_concurrently("shared-counter", 4, 50).await.unwrap();
    let total = m.get("shared-counter").await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&total).unwrap().trim_end(), "200");
}

async fn many_keys(c: &Caches) {
    let m = &c.main;
    assert_eq!(m.get_many(&[], None).await.unwrap(), vec![]);
    assert_eq!(
        m.set_many(&[], Expiry::Never, None).await.unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(m.delete_many(&[], None).await.unwrap(), 0);
    // Duplicates: the last write wins; a key is counted once by delete_many.
    let items: [(&str, &[u8]); 4] = [("m1", b"v1"), ("m2", b"v2"), ("m1", b"v1b"), ("m3", b"")];
    assert_eq!(
        m.set_many(&items, Expiry::Never, None).await.unwrap(),
        Vec::<usize>::new()
    );
    let got = all(m
        .get_many(&["m1", "nope", "m2", "m1", "m3"], None)
        .await
        .unwrap());
    assert_eq!(
        got,
        [some(b"v1b"), None, some(b"v2"), some(b"v1b"), some(b"")]
    );
    assert_eq!(
        m.delete_many(&["m1", "m1", "nope", "m3"], None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(bytes(m.get("m1").await.unwrap()), None);
    assert_eq!(bytes(m.get("m2").await.unwrap()), some(b"v2"));

    // Enough keys to span every server, shard and statement batch.
    let keys: Vec<String> = (0..1200).map(|i| format!("bulk{i}")).collect();
    let values: Vec<Vec<u8>> = (0..1200)
        .map(|i| format!("value {i}").into_bytes())
        .collect();
    let items: Vec<(&str, &[u8])> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert!(m
        .set_many(&items, Expiry::Never, None)
        .await
        .unwrap()
        .is_empty());
    let mut names: Vec<&str> = keys.iter().map(String::as_str).collect();
    names.insert(3, "not-there");
    let got = all(m.get_many(&names, None).await.unwrap());
    assert_eq!(got.len(), 1201);
    assert_eq!(got[3], None);
    for (i, v) in got.iter().enumerate().filter(|(i, _)| *i != 3) {
        let n = if i < 3 { i } else { i - 1 };
        assert_eq!(v.as_deref(), Some(values[n].as_slice()), "position {i}");
    }
    assert_eq!(m.delete_many(&names, None).await.unwrap(), 1200);
    assert!(m
        .get_many(&names, None)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));

    // set_many with an expired TTL removes the old values.
    m.set_many(&[("x1", b"1"), ("x2", b"2")], Expiry::Never, None)
        .await
        .unwrap();
    assert!(m
        .set_many(&[("x1", b"new")], Expiry::Expired, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        all(m.get_many(&["x1", "x2"], None).await.unwrap()),
        [None, some(b"2")]
    );
}

async fn get_or_set(c: &Caches) {
    let m = &c.main;
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let compute = |v: &'static [u8]| {
        let calls = &calls;
        move || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(v.to_vec())
        }
    };
    let v = m
        .get_or_set("lazy", compute(b"computed"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(&*v, b"computed");
    let v = m
        .get_or_set("lazy", compute(b"again"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(&*v, b"computed", "a hit does not compute");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(bytes(m.get("lazy").await.unwrap()), some(b"computed"));
    // A failing computation stores nothing and its error reaches the caller.
    let err = m
        .get_or_set(
            "failing",
            || Err(polycache::Error::new(ErrorKind::Backend, "loader failed")),
            Expiry::Never,
        )
        .await
        .unwrap_err();
    assert_eq!(err.message(), "loader failed");
    assert!(!m.has_key("failing").await.unwrap());
    // A computed value past max_value_size is refused like any write.
    let err = c
        .small
        .get_or_set("big", || Ok(vec![0; LIMIT + 1]), Expiry::Never)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
}

async fn versions_and_prefixes(c: &Caches) {
    let m = &c.main;
    let at = |v: i64| Key::new("v").version(v);
    // The full key is Django's {key_prefix}:{version}:{key}.
    assert_eq!(
        m.cache().make_key("k").unwrap(),
        format!("{}:1:k", c.prefix).into_bytes()
    );
    assert_eq!(
        c.v3.cache().make_key(Key::new("k").version(7)).unwrap(),
        format!("{}:7:k", c.v3.cache().key_prefix()).into_bytes()
    );
    assert!(m.set(at(2), b"two", Expiry::Never).await.unwrap());
    assert_eq!(
        bytes(m.get("v").await.unwrap()),
        None,
        "version 1 is another key"
    );
    assert_eq!(bytes(m.get(at(2)).await.unwrap()), some(b"two"));
    assert!(m.has_key(at(2)).await.unwrap());
    assert_eq!(m.incr_version("v", 1, Some(2)).await.unwrap(), 3);
    assert_eq!(
        bytes(m.get(at(2)).await.unwrap()),
        None,
        "the old version is gone"
    );
    assert_eq!(bytes(m.get(at(3)).await.unwrap()), some(b"two"));
    assert_eq!(
        kind(m.incr_version("v", 1, Some(2)).await),
        ErrorKind::NotFound
    );
    m.set("w", b"one", Expiry::Never).await.unwrap();
    assert_eq!(m.incr_version("w", 1, None).await.unwrap(), 2);
    assert_eq!(bytes(m.get("w").await.unwrap()), None);
    assert_eq!(
        bytes(m.get(Key::new("w").version(2)).await.unwrap()),
        some(b"one")
    );
    assert_eq!(
        kind(m.incr_version("w", i64::MAX, None).await),
        ErrorKind::Overflow
    );

    // Many-key operations at a version.
    m.set_many(&[("a", b"1"), ("b", b"2")], Expiry::Never, Some(5))
        .await
        .unwrap();
    assert_eq!(
        all(m.get_many(&["a", "b"], None).await.unwrap()),
        [None, None]
    );
    assert_eq!(
        all(m.get_many(&["a", "b"], Some(5)).await.unwrap()),
        [some(b"1"), some(b"2")]
    );
    assert_eq!(m.delete_many(&["a", "b"], None).await.unwrap(), 0);
    assert_eq!(m.delete_many(&["a", "b"], Some(5)).await.unwrap(), 2);

    // A cache's own version is its default.
    c.v3.set("k", b"three", Expiry::Never).await.unwrap();
    assert_eq!(
        bytes(c.v3.get(Key::new("k").version(3)).await.unwrap()),
        some(b"three")
    );
    assert_eq!(
        bytes(c.v3.get(Key::new("k").version(1)).await.unwrap()),
        None
    );

    // Prefixes separate caches on one store.
    m.set("shared-name", b"main", Expiry::Never).await.unwrap();
    c.other
        .set("shared-name", b"other", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(bytes(m.get("shared-name").await.unwrap()), some(b"main"));
    assert_eq!(
        bytes(c.other.get("shared-name").await.unwrap()),
        some(b"other")
    );
    assert!(!c.other.has_key("w").await.unwrap());

    // A full key is stored as it is: another cache's full key reaches its entry.
    let full = String::from_utf8(c.other.cache().make_key("by-full-key").unwrap()).unwrap();
    m.set(Key::full(&full), b"written by main", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        bytes(c.other.get("by-full-key").await.unwrap()),
        some(b"written by main")
    );
    // A version on a full key changes nothing: the caller made the whole key.
    let versioned = Key::full(&full).version(7);
    assert_eq!(
        bytes(m.get(versioned).await.unwrap()),
        some(b"written by main")
    );
    let items = [
        (Key::full(&full), &b"again"[..]),
        (Key::new("own"), &b"own"[..]),
    ];
    assert!(m
        .set_many_keys(&items, Expiry::Never)
        .await
        .unwrap()
        .is_empty());
    let got = all(m
        .get_many_keys(&[Key::full(&full), Key::new("own")])
        .await
        .unwrap());
    assert_eq!(got, [some(b"again"), some(b"own")]);
    assert_eq!(
        m.delete_many_keys(&[Key::full(&full), Key::new("own")])
            .await
            .unwrap(),
        2
    );
    assert!(!m.has_key(Key::full(&full)).await.unwrap());
}

async fn values(c: &Caches) {
    let (m, s) = (&c.main, &c.small);
    // Large values round-trip through every path.
    let big: Vec<u8> = (0..c.x.large as u32).map(|i| (i % 251) as u8).collect();
    assert!(m.set("big", &big, Expiry::Never).await.unwrap());
    assert_eq!(
        bytes(m.get("big").await.unwrap()).as_deref(),
        Some(&big[..])
    );
    assert_eq!(m.get_lent("big").await.unwrap().as_deref(), Some(&big[..]));
    m.set_many(&[("big2", &big), ("small", b"s")], Expiry::Never, None)
        .await
        .unwrap();
    let got = all(m.get_many(&["big2", "small"], None).await.unwrap());
    assert_eq!(got[0].as_deref(), Some(&big[..]));
    assert!(m.add("big3", &big, Expiry::Never).await.unwrap());
    assert_eq!(
        bytes(m.get("big3").await.unwrap()).as_deref(),
        Some(&big[..])
    );
    // A key that changes between a small and a large value keeps exactly one.
    m.set("flip", b"small", Expiry::Never).await.unwrap();
    assert_eq!(bytes(m.get("flip").await.unwrap()), some(b"small"));
    m.set("big", b"small now", Expiry::Never).await.unwrap();
    assert_eq!(bytes(m.get("big").await.unwrap()), some(b"small now"));

    // max_value_size: up to the limit is stored; past it is a ValueTooLarge error that
    // stores nothing and leaves the old value.
    assert!(s.set("k", &[7; LIMIT], Expiry::Never).await.unwrap());
    assert_eq!(
        bytes(s.get("k").await.unwrap()).map(|v| v.len()),
        Some(LIMIT)
    );
    let err = s
        .set("k", &[8; LIMIT + 1], Expiry::Never)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert!(err.to_string().contains(&(LIMIT + 1).to_string()), "{err}");
    assert_eq!(bytes(s.get("k").await.unwrap()), Some(vec![7; LIMIT]));
    assert_eq!(
        kind(s.add("new", &[8; LIMIT + 1], Expiry::Never).await),
        ErrorKind::ValueTooLarge
    );
    assert!(!s.has_key("new").await.unwrap());
    let too_big = vec![8; LIMIT + 1];
    let items: [(&str, &[u8]); 2] = [("a", b"ok"), ("b", &too_big)];
    assert_eq!(
        kind(s.set_many(&items, Expiry::Never, None).await),
        ErrorKind::ValueTooLarge
    );
    assert!(
        !s.has_key("a").await.unwrap(),
        "a rejected set_many stores nothing"
    );
    // The default bound is 64 MiB.
    let huge = vec![0u8; polycache::DEFAULT_MAX_VALUE_SIZE + 1];
    assert_eq!(
        kind(m.set("huge", &huge, Expiry::Never).await),
        ErrorKind::ValueTooLarge
    );
    assert_eq!(
        s.cache().stats().errors,
        0,
        "a refused value is not a backend error"
    );
}

/// Sets entries with every expiry word and returns when it did: see
/// [`expiry_and_ttl_end`].
async fn expiry_and_ttl_start(c: &Caches) -> Lapsing {
    let (m, x) = (&c.main, &c.x);
    let short = Expiry::After(x.ttl);
    let long = Expiry::After(Duration::from_secs(600));
    // Already expired: stores nothing and removes the old value.
    for expired in [Expiry::Expired, Expiry::After(Duration::ZERO)] {
        m.set("gone", b"old", Expiry::Never).await.unwrap();
        assert!(m.set("gone", b"new", expired).await.unwrap());
        assert_eq!(bytes(m.get("gone").await.unwrap()), None, "{expired:?}");
    }
    m.set("touched-away", b"v", Expiry::Never).await.unwrap();
    assert!(m.touch("touched-away", Expiry::Expired).await.unwrap());
    assert!(!m.has_key("touched-away").await.unwrap());
    // Default is the cache's default timeout: none, zero (stores nothing), or a duration.
    assert!(c
        .zero_default
        .set("k", b"v", Expiry::Default)
        .await
        .unwrap());
    assert_eq!(bytes(c.zero_default.get("k").await.unwrap()), None);
    assert!(c
        .zero_default
        .add("k", b"v", Expiry::Default)
        .await
        .unwrap());
    assert!(!c.zero_default.has_key("k").await.unwrap());
    c.never_default
        .set("k", b"kept", Expiry::Default)
        .await
        .unwrap();
    c.short_default
        .set("k", b"lapses", Expiry::Default)
        .await
        .unwrap();
    c.short_default
        .set("forever", b"kept", Expiry::Never)
        .await
        .unwrap();
    // touch and set_many resolve Default the same way.
    let (zero, short_d, never_d) = (&c.zero_default, &c.short_default, &c.never_default);
    zero.set("t", b"v", Expiry::Never).await.unwrap();
    assert!(zero.touch("t", Expiry::Default).await.unwrap());
    assert!(
        !zero.has_key("t").await.unwrap(),
        "touch(Default) with a zero default"
    );
    zero.set_many(&[("m", b"v")], Expiry::Default, None)
        .await
        .unwrap();
    assert!(!zero.has_key("m").await.unwrap());
    short_d.set("t", b"v", Expiry::Never).await.unwrap();
    assert!(short_d.touch("t", Expiry::Default).await.unwrap());
    short_d
        .set_many(&[("m", b"v")], Expiry::Default, None)
        .await
        .unwrap();
    with_room(x, "never_default's t", |ttl| {
        Box::pin(async move {
            never_d.set("t", b"v", Expiry::After(ttl)).await.unwrap();
            never_d.touch("t", Expiry::Default).await.unwrap() || lapsed(never_d, "t").await
        })
    })
    .await;

    // Entries with a short TTL, and entries whose TTL a touch or an incr changes.
    m.set("short", b"x", short).await.unwrap();
    m.set_many(&[("short-many", b"x")], short, None)
        .await
        .unwrap();
    m.set("stale", b"old", short).await.unwrap();
    with_room(x, "extended", |ttl| {
        Box::pin(async move {
            m.set("extended", b"v", Expiry::After(ttl)).await.unwrap();
            m.touch("extended", Expiry::Never).await.unwrap() || lapsed(m, "extended").await
        })
    })
    .await;
    m.set("shortened", b"v", long).await.unwrap();
    assert!(m.touch("shortened", short).await.unwrap());
    // incr keeps the TTL, so the counter lapses by the end: after the TTL it was set with.
    let counter_ttl = with_room(x, "counter", |ttl| {
        Box::pin(async move {
            m.set("counter", b"1", Expiry::After(ttl)).await.unwrap();
            match m.incr("counter", 1).await {
                Ok(n) => assert_eq!(n, 2),
                Err(e) if e.kind() == ErrorKind::NotFound => return lapsed(m, "counter").await,
                Err(e) => panic!("incr: {e}"),
            }
            true
        })
    })
    .await;
    m.set("never", b"x", Expiry::Never).await.unwrap();
    m.set("long", b"x", long).await.unwrap();
    assert!(!m.touch("absent", Expiry::Never).await.unwrap());
    assert!(!m.touch("absent", long).await.unwrap());
    assert!(!m.has_key("absent").await.unwrap(), "touch creates nothing");
    // Every short TTL above was written before now.
    Lapsing {
        written: Instant::now(),
        ttl: counter_ttl,
    }
}

/// When the last entry of a short TTL was written, and the longest such TTL.
struct Lapsing {
    written: Instant,
    ttl: Duration,
}

/// Answers `false` (the premise failed: try a longer TTL) when `key` lapsed; fails when it
/// is still there, since the call that answered "absent" was then wrong.
async fn lapsed(ops: &Ops, key: &str) -> bool {
    assert!(
        !ops.has_key(key).await.unwrap(),
        "{key} is there, yet the call on it answered that it was absent"
    );
    false
}

/// Once the short TTLs set before `lapsing.written` have surely passed, checks what lapsed
/// and what stayed.
async fn expiry_and_ttl_end(c: &Caches, lapsing: Lapsing) {
    let m = &c.main;
    if let Some(rest) = wait_out(lapsing.ttl).checked_sub(lapsing.written.elapsed()) {
        m.sleep(rest).await;
    }

    for k in ["short", "short-many", "stale", "shortened", "counter"] {
        assert_eq!(bytes(m.get(k).await.unwrap()), None, "{k} expired");
        assert!(!m.has_key(k).await.unwrap(), "{k}");
    }
    assert_eq!(
        all(m.get_many(&["short", "never"], None).await.unwrap()),
        [None, some(b"x")]
    );
    assert_eq!(
        kind(m.incr("counter", 1).await),
        ErrorKind::NotFound,
        "incr kept the TTL"
    );
    assert!(
        !m.touch("short", Expiry::Never).await.unwrap(),
        "an expired entry is absent"
    );
    assert!(
        !m.delete("short-many").await.unwrap(),
        "an expired entry is absent"
    );
    assert!(
        m.add("stale", b"fresh", Expiry::Never).await.unwrap(),
        "add replaces expired"
    );
    assert_eq!(bytes(m.get("stale").await.unwrap()), some(b"fresh"));
    assert_eq!(
        bytes(m.get("extended").await.unwrap()),
        some(b"v"),
        "touch(Never) kept it"
    );
    assert!(m.has_key("long").await.unwrap());
    assert_eq!(
        bytes(c.never_default.get("k").await.unwrap()),
        some(b"kept")
    );
    assert_eq!(
        bytes(c.short_default.get("k").await.unwrap()),
        None,
        "the default TTL lapsed"
    );
    assert_eq!(
        bytes(c.short_default.get("forever").await.unwrap()),
        some(b"kept")
    );
    let lapsed = all(c.short_default.get_many(&["t", "m"], None).await.unwrap());
    assert_eq!(
        lapsed,
        [None, None],
        "touch and set_many took the default TTL"
    );
    assert!(
        c.never_default.has_key("t").await.unwrap(),
        "touch(Default): never"
    );
}

async fn clear(c: &Caches) {
    let big = vec![3u8; c.x.large];
    let mine = ["c1", "c2", "big"];
    for o in [&c.main, &c.like, &c.glob, &c.upper, &c.other] {
        o.set("c1", b"1", Expiry::Never).await.unwrap();
        o.set_many(&[("c2", b"2"), ("big", &big)], Expiry::Never, None)
            .await
            .unwrap();
    }
    let result = c.main.clear().await;
    let kept = if c.x.prefix_clear {
        result.unwrap();
        assert!(c
            .main
            .get_many(&mine, None)
            .await
            .unwrap()
            .iter()
            .all(Option::is_none));
        for k in mine {
            assert!(!c.main.has_key(k).await.unwrap(), "{k}");
        }
        // Cleared entries are absent to every operation.
        assert_eq!(kind(c.main.incr("c1", 1).await), ErrorKind::NotFound);
        assert!(c.main.add("c1", b"new", Expiry::Never).await.unwrap());
        [&c.like, &c.glob, &c.upper]
    } else {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        [&c.main, &c.like, &c.glob]
    };
    for o in kept.into_iter().chain([&c.upper, &c.other]) {
        let got = all(o.get_many(&mine, None).await.unwrap());
        assert_eq!(
            got[..2],
            [some(b"1"), some(b"2")],
            "{}",
            o.cache().key_prefix()
        );
        assert_eq!(got[2].as_deref().map(<[u8]>::len), Some(big.len()));
    }
}

async fn stats(c: &Caches) {
    let s = &c.stats;
    s.set("a", b"1", Expiry::Never).await.unwrap(); // set
    s.get("a").await.unwrap(); // hit
    s.get("b").await.unwrap(); // miss
    s.get_lent("a").await.unwrap(); // hit
    s.get_lent("b").await.unwrap(); // miss
    s.get_many(&["a", "b", "c"], None).await.unwrap(); // 1 hit, 2 misses
    s.add("a", b"2", Expiry::Never).await.unwrap(); // not stored: nothing
    s.add("n", b"1", Expiry::Never).await.unwrap(); // set
    s.incr("n", 1).await.unwrap(); // set
    s.incr("absent", 1).await.unwrap_err(); // not a backend error
    s.set_many(&[("x", b"1"), ("y", b"2")], Expiry::Never, None)
        .await
        .unwrap(); // 2 sets
    s.has_key("a").await.unwrap(); // not counted
    s.delete("a").await.unwrap(); // delete
    s.delete("a").await.unwrap(); // nothing
    s.delete_many(&["x", "y", "z"], None).await.unwrap(); // 2 deletes
    s.set("e", b"1", Expiry::Expired).await.unwrap(); // removes, not a set
    let st = s.cache().stats();
    assert_eq!(
        (st.hits, st.misses, st.sets, st.deletes, st.errors),
        (3, 4, 5, 3, 0),
        "{st:?}"
    );
}

/// dummy://: every write is accepted and stores nothing; every read misses.
async fn always_misses(c: &Caches) {
    let m = &c.main;
    assert!(m.set("k", b"v", Expiry::Never).await.unwrap());
    assert_eq!(bytes(m.get("k").await.unwrap()), None);
    assert!(!m.has_key("k").await.unwrap());
    assert!(
        m.add("k", b"v", Expiry::Never).await.unwrap(),
        "always absent"
    );
    assert!(!m.delete("k").await.unwrap());
    assert!(!m.touch("k", Expiry::Never).await.unwrap());
    assert_eq!(kind(m.incr("k", 1).await), ErrorKind::NotFound);
    assert_eq!(kind(m.decr("k", 1).await), ErrorKind::NotFound);
    assert!(m
        .set_many(&[("a", b"1"), ("b", b"2")], Expiry::Never, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        all(m.get_many(&["a", "b"], None).await.unwrap()),
        [None, None]
    );
    assert_eq!(m.delete_many(&["a", "b"], None).await.unwrap(), 0);
    for _ in 0..2 {
        let v = m
            .get_or_set("lazy", || Ok(b"computed".to_vec()), Expiry::Never)
            .await;
        assert_eq!(&*v.unwrap(), b"computed", "computed on every call");
    }
    m.clear().await.unwrap();
    assert_eq!(
        kind(m.incr_version("k", 1, None).await),
        ErrorKind::NotFound
    );
    assert_eq!(m.ttl("k").await.unwrap(), TimeToLive::Missing);
    assert!(!m.replace("k", b"v", Expiry::Never).await.unwrap());
    assert!(!m.persist("k").await.unwrap());
    // `add` always succeeds here, so a missing counter is created (and dropped).
    assert_eq!(m.incr_or_create("k", 3).await.unwrap(), 3);
    // Bad input is refused as everywhere.
    let too_long = "z".repeat(MAX_KEY_LEN + 1);
    assert_eq!(kind(m.get(too_long.as_str()).await), ErrorKind::InvalidKey);
    let err = c.small.set("k", &[0; LIMIT + 1], Expiry::Never).await;
    assert_eq!(kind(err), ErrorKind::ValueTooLarge);
    let s = &c.stats;
    s.set("a", b"1", Expiry::Never).await.unwrap();
    s.get("a").await.unwrap();
    s.get_many(&["a", "b"], None).await.unwrap();
    let st = s.cache().stats();
    assert_eq!(
        (st.hits, st.misses, st.sets, st.errors),
        (0, 3, 1, 0),
        "{st:?}"
    );
}

/// django-redis' lifetime operations: `ttl`, `persist`, `expire_at`, `set(xx=True)`
/// (`replace`) and `incr(ignore_key_check=True)` (`incr_or_create`).
async fn lifetime(c: &Caches) {
    let m = &c.main;
    let long = Duration::from_secs(600);
    let too_long = "z".repeat(MAX_KEY_LEN + 1);
    let too_long = too_long.as_str();
    if c.x.lifetime {
        assert_eq!(m.ttl("lt-missing").await.unwrap(), TimeToLive::Missing);
        m.set("lt", b"v", Expiry::Never).await.unwrap();
        assert_eq!(m.ttl("lt").await.unwrap(), TimeToLive::Forever);
        m.set("lt", b"v", Expiry::After(long)).await.unwrap();
        let left = |t: TimeToLive| match t {
            TimeToLive::Left(d) => d,
            other => panic!("expected a remaining lifetime, got {other:?}"),
        };
        let d = left(m.ttl("lt").await.unwrap());
        assert!(d <= long && d > long / 2, "{d:?}");
        // persist: never expires; false for a missing key.
        assert!(m.persist("lt").await.unwrap());
        assert_eq!(m.ttl("lt").await.unwrap(), TimeToLive::Forever);
        assert!(!m.persist("lt-missing").await.unwrap());
        // expire_at: a time ahead sets the TTL; a time past removes the key (EXPIREAT).
        assert!(m.expire_at("lt", SystemTime::now() + long).await.unwrap());
        let d = left(m.ttl("lt").await.unwrap());
        assert!(d <= long && d > long / 2, "{d:?}");
        let past = SystemTime::now() - Duration::from_secs(10);
        assert!(m.expire_at("lt", past).await.unwrap(), "was present");
        assert!(!m.has_key("lt").await.unwrap());
        assert_eq!(m.ttl("lt").await.unwrap(), TimeToLive::Missing);
        assert!(!m.expire_at("lt", SystemTime::now() + long).await.unwrap());
        assert!(!m.expire_at("lt", past).await.unwrap());

        // replace stores only over a present key, with its own expiry.
        assert!(!m.replace("r", b"x", Expiry::Never).await.unwrap());
        assert_eq!(
            bytes(m.get("r").await.unwrap()),
            None,
            "replace created nothing"
        );
        m.set("r", b"1", Expiry::After(long)).await.unwrap();
        assert!(m.replace("r", b"2", Expiry::Never).await.unwrap());
        assert_eq!(bytes(m.get("r").await.unwrap()), some(b"2"));
        assert_eq!(m.ttl("r").await.unwrap(), TimeToLive::Forever);
        assert!(m.replace("r", b"3", Expiry::After(long)).await.unwrap());
        assert_eq!(bytes(m.get("r").await.unwrap()), some(b"3"));
        left(m.ttl("r").await.unwrap());
        // Already expired: removes the key; the answer is whether it was there.
        assert!(m.replace("r", b"4", Expiry::Expired).await.unwrap());
        assert!(!m.has_key("r").await.unwrap());
        assert!(!m.replace("r", b"4", Expiry::Expired).await.unwrap());
        c.small.set("r", b"small", Expiry::Never).await.unwrap();
        let err = c.small.replace("r", &[0; LIMIT + 1], Expiry::Never).await;
        assert_eq!(kind(err), ErrorKind::ValueTooLarge);
        assert_eq!(bytes(c.small.get("r").await.unwrap()), some(b"small"));
        assert_eq!(kind(m.ttl(too_long).await), ErrorKind::InvalidKey);
        assert_eq!(
            kind(m.replace(too_long, b"v", Expiry::Never).await),
            ErrorKind::InvalidKey
        );
        // Versions address other entries.
        c.v3.set("vr", b"v3", Expiry::Never).await.unwrap();
        assert_eq!(
            m.ttl(Key::new("vr").version(3)).await.unwrap(),
            TimeToLive::Missing
        );
        assert_eq!(c.v3.ttl("vr").await.unwrap(), TimeToLive::Forever);
    } else {
        // The trait's defaults: a clear Unsupported error, and nothing changes.
        m.set("lt", b"v", Expiry::Never).await.unwrap();
        assert_eq!(kind(m.ttl("lt").await), ErrorKind::Unsupported);
        assert_eq!(
            kind(m.replace("lt", b"w", Expiry::Never).await),
            ErrorKind::Unsupported
        );
        assert_eq!(bytes(m.get("lt").await.unwrap()), some(b"v"));
        // persist and expire_at are touch, which every backend has.
        assert!(m.persist("lt").await.unwrap());
        assert!(m
            .expire_at("lt", SystemTime::now() - Duration::from_secs(1))
            .await
            .unwrap());
        assert!(!m.has_key("lt").await.unwrap());
    }

    // incr_or_create: a missing key starts from 0 and never expires; a present one counts.
    assert_eq!(m.incr_or_create("ioc", 5).await.unwrap(), 5);
    assert_eq!(m.incr_or_create("ioc", 1).await.unwrap(), 6);
    assert_eq!(m.incr("ioc", 1).await.unwrap(), 7);
    assert_eq!(bytes(m.get("ioc").await.unwrap()), some(b"7"));
    if c.x.lifetime {
        assert_eq!(m.ttl("ioc").await.unwrap(), TimeToLive::Forever);
    }
    m.set("ioc-text", b"abc", Expiry::Never).await.unwrap();
    assert_eq!(
        kind(m.incr_or_create("ioc-text", 1).await),
        ErrorKind::NotAnInteger
    );
    assert_eq!(bytes(m.get("ioc-text").await.unwrap()), some(b"abc"));
    assert_eq!(
        kind(m.incr_or_create(too_long, 1).await),
        ErrorKind::InvalidKey
    );
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// `keys`, `iter_keys` and `delete_pattern`: Redis glob rules on the caller's keys, the
/// prefix and version applied and escaped, expired keys left out.
async fn key_scans(c: &Caches) {
    let m = &c.main;
    if c.x.has(Deviation::NoKeyListing) {
        assert_eq!(kind(m.keys("*", None).await), ErrorKind::Unsupported);
        assert_eq!(kind(m.iter_keys("*", 10).await), ErrorKind::Unsupported);
        assert_eq!(
            kind(m.delete_pattern("*", 10).await),
            ErrorKind::Unsupported
        );
        return;
    }
    assert_eq!(kind(m.iter_keys("*", 0).await), ErrorKind::InvalidKey);
    if !c.x.stores {
        m.set("scan:1", b"1", Expiry::Never).await.unwrap();
        assert_eq!(m.keys("*", None).await.unwrap(), Vec::<String>::new());
        assert_eq!(m.delete_pattern("*", 10).await.unwrap(), 0);
        return;
    }
    let mine = [
        "scan:1", "scan:2", "scan:10", "scan:a*b", "scan:x", "scan:%_",
    ];
    for k in mine {
        m.set(k, b"v", Expiry::Never).await.unwrap();
    }
    // The same keys under prefixes that an unescaped pattern of main's would match.
    for o in [&c.like, &c.glob, &c.upper, &c.other, &c.v3] {
        o.set("scan:1", b"o", Expiry::Never).await.unwrap();
    }
    m.set(Key::new("scan:v2").version(2), b"2", Expiry::Never)
        .await
        .unwrap();
    m.set("scan:lapsing", b"l", Expiry::After(c.x.ttl))
        .await
        .unwrap();
    m.sleep(c.x.ttl_wait()).await;

    let all = sorted(mine.iter().map(|k| k.to_string()).collect());
    assert_eq!(sorted(m.keys("scan:*", None).await.unwrap()), all);
    assert_eq!(sorted(m.keys("*", None).await.unwrap()), all);
    // No key missed. A Redis SCAN may return a key twice while the server rehashes (other
    // runs share the server), so repeats are checked in tests/key_scans.rs, per backend.
    let mut iterated = m.iter_keys("scan:*", 2).await.unwrap();
    iterated.sort();
    iterated.dedup();
    assert_eq!(iterated, all, "no key missed");
    let expect =
        |ks: &[&str]| -> Vec<String> { sorted(ks.iter().map(|k| k.to_string()).collect()) };
    assert_eq!(
        sorted(m.keys("scan:?", None).await.unwrap()),
        expect(&["scan:1", "scan:2", "scan:x"])
    );
    assert_eq!(
        sorted(m.keys("scan:[0-9]*", None).await.unwrap()),
        expect(&["scan:1", "scan:10", "scan:2"])
    );
    assert_eq!(
        sorted(m.keys("scan:[^0-9]*", None).await.unwrap()),
        expect(&["scan:%_", "scan:a*b", "scan:x"])
    );
    assert_eq!(
        m.keys("scan:a\\*b", None).await.unwrap(),
        expect(&["scan:a*b"])
    );
    assert_eq!(
        m.keys("scan:a[*]b", None).await.unwrap(),
        expect(&["scan:a*b"])
    );
    // SQL LIKE's metacharacters are literals in a glob.
    assert_eq!(m.keys("scan:%_", None).await.unwrap(), expect(&["scan:%_"]));
    assert_eq!(m.keys("scan:%", None).await.unwrap(), Vec::<String>::new());
    assert_eq!(m.keys("scan_1", None).await.unwrap(), Vec::<String>::new());
    assert_eq!(
        m.keys("SCAN:*", None).await.unwrap(),
        Vec::<String>::new(),
        "case matters"
    );
    // Another version of the same keys, and the other caches' own view.
    assert_eq!(
        m.keys("scan:*", Some(2)).await.unwrap(),
        expect(&["scan:v2"])
    );
    for o in [&c.like, &c.glob, &c.upper, &c.other, &c.v3] {
        assert_eq!(o.keys("scan:*", None).await.unwrap(), expect(&["scan:1"]));
    }

    assert_eq!(m.delete_pattern("scan:[0-9]*", 2).await.unwrap(), 3);
    assert_eq!(
        sorted(m.keys("scan:*", None).await.unwrap()),
        expect(&["scan:%_", "scan:a*b", "scan:x"])
    );
    assert_eq!(m.delete_pattern("scan:*", 1000).await.unwrap(), 3);
    assert_eq!(m.delete_pattern("scan:*", 1000).await.unwrap(), 0);
    assert!(m.has_key(Key::new("scan:v2").version(2)).await.unwrap());
    for o in [&c.like, &c.glob, &c.upper, &c.other, &c.v3] {
        assert!(
            o.has_key("scan:1").await.unwrap(),
            "another prefix's key survives"
        );
        assert_eq!(o.delete_pattern("scan:*", 10).await.unwrap(), 1);
    }
    m.delete(Key::new("scan:v2").version(2)).await.unwrap();
}

/// Locks (redis-py's semantics): one owner at a time, non-owners refused with the lock
/// untouched, extend and reacquire, and a dead holder's lock lapsing after its timeout.
async fn locks(c: &Caches) {
    let (m, x) = (&c.main, &c.x);
    let long = Duration::from_secs(600);
    let once = LockOptions::default().blocking(false);
    let short = LockOptions::default()
        .timeout(Some(x.ttl))
        .sleep(Duration::from_millis(20));
    // Held across the calls below, which a loaded machine may spread over more than a
    // short timeout: this part is about owners, not lapsing.
    let held = short.timeout(Some(long));
    let lock = m.cache().lock("lock", held).unwrap();
    assert!(!m.lock_locked(&lock).await.unwrap());
    assert!(m.lock_acquire(&lock, b"a", &once).await.unwrap());
    assert!(m.lock_locked(&lock).await.unwrap());
    assert!(m.lock_owned(&lock, b"a").await.unwrap());
    assert!(!m.lock_owned(&lock, b"b").await.unwrap());
    assert!(!m.lock_acquire(&lock, b"b", &once).await.unwrap());
    // A blocking acquire whose next try would come after its deadline gives up.
    let brief = held.blocking_timeout(Some(Duration::from_millis(1)));
    assert!(!m.lock_acquire(&lock, b"b", &brief).await.unwrap());
    // Non-owners: refused, the lock untouched.
    let kind_of = |r: Result<()>| kind(r);
    assert_eq!(
        kind_of(m.lock_release(&lock, b"b").await),
        ErrorKind::LockNotOwned
    );
    if x.extends {
        let refused = m.lock_extend(&lock, b"b", long, true).await;
        assert_eq!(kind_of(refused), ErrorKind::LockNotOwned);
        let refused = m.lock_reacquire(&lock, b"b").await;
        assert_eq!(kind_of(refused), ErrorKind::LockNotOwned);
    }
    assert!(m.lock_owned(&lock, b"a").await.unwrap(), "untouched");
    m.lock_release(&lock, b"a").await.unwrap();
    assert!(!m.lock_locked(&lock).await.unwrap());
    let again = m.lock_release(&lock, b"a").await;
    assert_eq!(kind_of(again), ErrorKind::LockNotOwned);

    // A lock without a timeout never lapses and cannot be extended.
    let forever = m.cache().lock("forever", LockOptions::default()).unwrap();
    assert!(m.lock_acquire(&forever, b"n", &once).await.unwrap());
    assert_eq!(
        kind_of(m.lock_extend(&forever, b"n", long, false).await),
        ErrorKind::Lock
    );
    assert_eq!(
        kind_of(m.lock_reacquire(&forever, b"n").await),
        ErrorKind::Lock
    );

    // Holders that die: one lapses, one extended (added time), one reacquired with a longer
    // timeout, one extended (replaced) are still held once the short timeout has passed.
    let lapsing = m.cache().lock("lapsing", short).unwrap();
    assert!(m.lock_acquire(&lapsing, b"dead", &once).await.unwrap());
    // The extended ones must still be held when extended: tried again with a longer
    // timeout when a loaded machine let one lapse first.
    let mut extended = Vec::new();
    for (name, replace) in [("added", false), ("replaced", true)] {
        let ttl = with_room(x, name, |ttl| {
            Box::pin(async move {
                let l = m.cache().lock(name, short.timeout(Some(ttl))).unwrap();
                assert!(m.lock_acquire(&l, b"dead", &once).await.unwrap());
                match m.lock_extend(&l, b"dead", long, replace).await {
                    Ok(()) => true,
                    Err(e) if x.extends && e.kind() == ErrorKind::LockNotOwned => {
                        assert!(!m.lock_locked(&l).await.unwrap(), "{name}: {e}");
                        false
                    }
                    Err(e) => {
                        assert!(!x.extends, "{name}: {e}");
                        assert_eq!(e.kind(), ErrorKind::Unsupported);
                        true
                    }
                }
            })
        })
        .await;
        extended.push(m.cache().lock(name, short.timeout(Some(ttl))).unwrap());
    }
    let started = Instant::now();
    let ttl = extended.iter().map(|l| l.options().timeout).max().flatten();
    let (added, replaced) = (&extended[0], &extended[1]);
    if x.extends {
        // Time can only be added to a lock that lapses (redis-py: not to one without a TTL).
        let timed = m.cache().lock("forever", short).unwrap();
        let refused = m.lock_extend(&timed, b"n", long, false).await;
        assert_eq!(kind_of(refused), ErrorKind::LockNotOwned);
    }
    // Waits for the event; the bound is only there to fail, not hang, if it never comes.
    let wait = short.blocking_timeout(Some(PATIENCE));
    assert!(
        m.lock_acquire(&lapsing, b"next", &wait).await.unwrap(),
        "a dead holder's lock lapses"
    );
    assert!(m.lock_owned(&lapsing, b"next").await.unwrap());
    let dead = m.lock_release(&lapsing, b"dead").await;
    assert_eq!(kind_of(dead), ErrorKind::LockNotOwned, "a lapsed holder");
    assert!(m.lock_owned(&lapsing, b"next").await.unwrap(), "untouched");
    if x.extends {
        // Past the timeouts the extended locks were acquired with.
        let ttl = ttl.unwrap_or(x.ttl);
        if let Some(rest) = wait_out(ttl).checked_sub(started.elapsed()) {
            m.sleep(rest).await;
        }
        assert!(m.lock_owned(added, b"dead").await.unwrap(), "extended");
        assert!(m.lock_owned(replaced, b"dead").await.unwrap(), "extended");
        m.lock_reacquire(added, b"dead").await.unwrap();
    }
    m.lock_release(&forever, b"n").await.unwrap();
}
