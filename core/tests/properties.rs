//! Property tests of what polycache encodes and decodes: full keys, envelopes, URLs, the
//! expiry mapping and the integers `incr` reads. The fuzz targets (docs/fuzzing.md) look for
//! crashes on arbitrary bytes; these check that well-formed input round-trips exactly.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use polycache::{
    parse_i64, Cache, Caches, Envelope, ErrorKind, Expiry, Key, Location, ENVELOPE_HEADER,
    ENVELOPE_MAGIC,
};
use proptest::prelude::*;
use std::time::Duration;

fn config() -> ProptestConfig {
    // Generous enough to find a bug, small enough for a loaded shared machine.
    ProptestConfig::with_cases(256)
}

proptest! {
    #![proptest_config(config())]

    /// `{key_prefix}:{version}:{key}`, Django's layout, for any prefix, version and key, and
    /// the value stored under it reads back.
    #[test]
    fn full_key_is_djangos_layout(
        prefix in ".{0,16}",
        default_version in any::<i64>(),
        version in proptest::option::of(any::<i64>()),
        key in ".{0,64}",
        value in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let cache = Cache::builder("memory://")
            .key_prefix(prefix.clone())
            .version(default_version)
            .build()
            .unwrap();
        let full = cache.make_key(Key::new(&key).maybe_version(version)).unwrap();
        let expected = format!("{prefix}:{}:{key}", version.unwrap_or(default_version));
        prop_assert_eq!(full, expected.into_bytes());
        cache.set(Key::new(&key).maybe_version(version), &value, Expiry::Never).unwrap();
        let back = cache.get(Key::new(&key).maybe_version(version)).unwrap();
        prop_assert_eq!(back.as_deref(), Some(&value[..]));
        // Another version is another entry.
        let other = version.unwrap_or(default_version).wrapping_add(1);
        prop_assert_eq!(cache.get(Key::new(&key).version(other)).unwrap(), None);
    }

    /// Every envelope decodes to its fields and payload; the bytes are exactly the layout.
    #[test]
    fn envelope_round_trips(
        fresh in any::<u64>(),
        expires in any::<u64>(),
        delta in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let env = Envelope::new(fresh, expires, delta);
        let bytes = env.encode(&payload);
        prop_assert_eq!(bytes.len(), ENVELOPE_HEADER + payload.len());
        prop_assert_eq!(&bytes[..8], &ENVELOPE_MAGIC[..]);
        let (back, rest) = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(back, env);
        prop_assert_eq!(rest, &payload[..]);
        prop_assert_eq!(env.is_stale(fresh), true);
        if expires != 0 {
            prop_assert_eq!(env.remaining(expires), Some(Duration::ZERO));
        }
    }

    /// Bytes that do not start with the magic are plain values, never envelopes.
    #[test]
    fn plain_values_are_not_envelopes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assume!(!bytes.starts_with(&ENVELOPE_MAGIC));
        prop_assert!(Envelope::decode(&bytes).is_none());
    }

    /// Seconds map onto Expiry as Django counts them, for every f64 (no panic either).
    #[test]
    fn expiry_from_seconds(secs in any::<f64>()) {
        match Expiry::from_secs_f64(secs) {
            Expiry::Expired => prop_assert!(secs.is_nan() || secs <= 0.0),
            Expiry::Never => prop_assert!(secs >= u64::MAX as f64),
            Expiry::After(d) => {
                prop_assert!(secs > 0.0);
                let err = (d.as_secs_f64() - secs).abs();
                prop_assert!(err <= secs * 1e-9 + 1e-9, "{secs} -> {d:?}");
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    /// The same mapping through a URL's `timeout` option: no panic for any number, a
    /// configuration error or the cache's default expiry.
    #[test]
    fn timeout_option_never_panics(secs in any::<f64>()) {
        match Cache::open(&format!("memory://?timeout={secs}")) {
            Ok(cache) => {
                prop_assert!(secs >= 0.0);
                // A timeout that rounds to zero nanoseconds stores nothing, as 0 does.
                let expected = match Expiry::from_secs_f64(secs) {
                    Expiry::After(d) if d.is_zero() => Expiry::Expired,
                    other => other,
                };
                prop_assert_eq!(cache.default_expiry(), expected);
            }
            Err(e) => prop_assert!(e.is_configuration()),
        }
    }

    /// A URL assembled from percent-encoded parts parses back into those parts, and its
    /// password appears neither in `redacted()` nor in `Debug`.
    #[test]
    fn location_round_trips(
        scheme in "[a-z][a-z0-9+.-]{0,8}",
        user in ".{0,8}",
        password in "[A-Za-z0-9]{12,20}",
        hosts in proptest::collection::vec("[a-z0-9.-]{1,12}(:[0-9]{1,5})?", 1..4),
        path in "(/[^?#]{0,12})?",
        // Distinct names: a name given twice is a configuration error (checked below).
        options in proptest::collection::btree_map("[a-z_]{1,10}", ".{0,10}", 0..4),
    ) {
        let options: Vec<(String, String)> = options.into_iter().collect();
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let query: Vec<String> = options.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let url = format!(
            "{scheme}://{}:{password}@{}{}{}{}",
            enc(&user),
            hosts.join(","),
            enc(&path).replace("%2F", "/"),
            if query.is_empty() { "" } else { "?" },
            query.join("&"),
        );
        let loc = Location::parse(&url).unwrap();
        prop_assert_eq!(loc.scheme(), scheme.as_str());
        prop_assert_eq!(loc.username(), (!user.is_empty()).then_some(user.as_str()));
        prop_assert_eq!(loc.password(), Some(password.as_str()));
        prop_assert_eq!(loc.hosts(), &hosts[..]);
        prop_assert_eq!(loc.path(), path.as_str());
        prop_assert_eq!(loc.options(), &options[..]);
        prop_assert!(!loc.redacted().contains(&password), "{}", loc.redacted());
        let debug = format!("{loc:?}");
        prop_assert!(!debug.contains(&password));
        if let Some((name, value)) = options.first() {
            let again = format!("{url}&{name}={}", enc(value));
            let err = Location::parse(&again).unwrap_err();
            prop_assert!(err.is_configuration() && err.to_string().contains("more than once"), "{err}");
            prop_assert!(!err.to_string().contains(&password));
        }
    }

    /// `incr` reads exactly the ASCII decimal it writes, for every i64.
    #[test]
    fn decimal_round_trips(n in any::<i64>(), delta in any::<i64>()) {
        prop_assert_eq!(parse_i64(n.to_string().as_bytes()), Some(n));
        let cache = Cache::open("memory://").unwrap();
        cache.set("n", n.to_string().as_bytes(), Expiry::Never).unwrap();
        match n.checked_add(delta) {
            Some(sum) => {
                prop_assert_eq!(cache.incr("n", delta).unwrap(), sum);
                let stored = cache.get("n").unwrap().unwrap();
                prop_assert_eq!(stored.to_vec(), sum.to_string().into_bytes());
            }
            None => {
                prop_assert_eq!(cache.incr("n", delta).unwrap_err().kind(), ErrorKind::Overflow);
                // The value is unchanged after the failed incr.
                let stored = cache.get("n").unwrap().unwrap();
                prop_assert_eq!(stored.to_vec(), n.to_string().into_bytes());
            }
        }
    }
}

/// Found by the `config` fuzz target: a TIMEOUT past `u64::MAX` seconds panicked in
/// `Duration::from_secs_f64`; it is now a configuration error naming the setting.
#[test]
fn config_timeout_too_large_is_an_error() {
    let Err(err) = Caches::from_json(r#"{"default": {"LOCATION": "memory://", "TIMEOUT": 1e300}}"#)
    else {
        panic!("TIMEOUT 1e300 is accepted");
    };
    assert!(
        err.is_configuration() && err.to_string().contains("TIMEOUT"),
        "{err}"
    );
    let caches =
        Caches::from_json(r#"{"default": {"LOCATION": "memory://", "TIMEOUT": 1e18}}"#).unwrap();
    assert_eq!(
        caches.default().default_expiry(),
        Expiry::After(Duration::from_secs(1_000_000_000_000_000_000))
    );
}
