//! Opening a cache: [`Cache::open`], [`Cache::builder`], [`Cache::builder_tiered`],
//! [`Cache::with_backend`] and the [`CacheBuilder`] they return, which reads the URL's
//! cache-wide options (key prefix, version, timeout, value options, failure and refresh
//! policies, metrics) and opens the backend.

use super::{Cache, Inner, DEFAULT_MAX_VALUE_SIZE, DEFAULT_TIMEOUT, HEAD_CHUNK};
use crate::backend::{dummy::DummyBackend, AsyncAccess, AsyncBackend, Backend, OnBlockingPool};
use crate::bus::InvalidationBus;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::flight::RefreshPolicy;
use crate::location::{Location, Options};
use crate::options::{CacheOptions, OptionSource, OptionValue};
use crate::policy::{FailurePolicy, Guarded};
use crate::stats::{BreakerCounts, Stats};
use crate::tiered::TieredConfig;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Configures a [`Cache`]. Settings made here win over the same options in the URL.
///
/// ```
/// use polycache::Cache;
/// use std::time::Duration;
/// let cache = Cache::builder("memory://")
///     .key_prefix("site")
///     .version(3)
///     .default_timeout(Some(Duration::from_secs(60)))
///     .build()
///     .unwrap();
/// assert_eq!(cache.key_prefix(), "site");
/// ```
#[must_use]
pub struct CacheBuilder {
    location: Option<String>,
    backend: Option<Arc<dyn Backend>>,
    key_prefix: Option<String>,
    version: Option<i64>,
    timeout: Option<Option<Duration>>,
    max_value_size: Option<usize>,
    policy: Option<FailurePolicy>,
    refresh: Option<RefreshPolicy>,
    tiered: Option<TieredConfig>,
    /// The query-string options of a cache over a custom backend ([`CacheBuilder::options`]).
    query: Option<String>,
    values: ValueOptions,
    /// Whether the cache keeps latency histograms (default: yes).
    latency_histograms: Option<bool>,
    /// The histograms time one call in this many (default: 16 in memory, else 1).
    latency_sampling: Option<u64>,
    /// Options given as typed values ([`CacheBuilder::option`], [`CacheBuilder::options_from`]),
    /// read with the URL's.
    typed: CacheOptions,
}

/// How values are protected and packed: set by the builder or by URL options.
#[derive(Default, Clone)]
struct ValueOptions {
    signing_key: Option<Vec<u8>>,
    old_signing_keys: Option<Vec<Vec<u8>>>,
    compress_min_size: Option<Option<usize>>,
    compress_level: Option<i32>,
    serializer: Option<String>,
}

impl ValueOptions {
    /// Settings made here win; the rest come from `url`.
    fn or(self, url: ValueOptions) -> ValueOptions {
        ValueOptions {
            signing_key: self.signing_key.or(url.signing_key),
            old_signing_keys: self.old_signing_keys.or(url.old_signing_keys),
            compress_min_size: self.compress_min_size.or(url.compress_min_size),
            compress_level: self.compress_level.or(url.compress_level),
            serializer: self.serializer.or(url.serializer),
        }
    }

    fn take(options: &mut Options) -> Result<ValueOptions> {
        Ok(ValueOptions {
            signing_key: options.take("signing_key").map(String::into_bytes),
            old_signing_keys: options.take("old_signing_keys").map(|list| {
                list.split(',')
                    .filter(|k| !k.is_empty())
                    .map(|k| k.as_bytes().to_vec())
                    .collect()
            }),
            compress_min_size: options
                .positive_u64("compress_min_size")?
                .map(|n| Some(n as usize)),
            compress_level: options
                .i64("compress_level")?
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            serializer: options.take("serializer"),
        })
    }

    fn codec(&self) -> Result<Codec> {
        Codec::new(
            self.signing_key.as_deref(),
            self.old_signing_keys.as_deref().unwrap_or_default(),
            self.compress_min_size.flatten(),
            self.compress_level,
        )
    }
}

/// The serializers the bindings know; the core stores bytes and only checks the name.
pub const SERIALIZERS: &[&str] = &["pickle", "json", "raw"];

fn serializer_name(name: &str) -> Result<&'static str> {
    SERIALIZERS
        .iter()
        .find(|s| s.eq_ignore_ascii_case(name.trim()))
        .copied()
        .ok_or_else(|| {
            Error::config(format!(
                "unknown serializer {name:?}: expected one of {}",
                SERIALIZERS.join(", ")
            ))
        })
}

impl CacheBuilder {
    /// The key prefix (default: empty).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }
    /// The version (default: 1).
    pub fn version(mut self, version: i64) -> Self {
        self.version = Some(version);
        self
    }
    /// The TTL of [`Expiry::Default`]: `None` never expires (default: 300 s).
    /// A zero duration makes every default `set` store nothing, as in Django.
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// The largest value stored, in bytes (default: 64 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// What the cache does when its backend fails (default: raise, breaker after 3 failures).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// How `get_or_set_with`, the decorators and jobs compute missing values (default:
    /// single-flight, no lease, no early refresh).
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.refresh = Some(policy);
        self
    }

    /// For a tiered cache: the bus that carries L1 invalidations between caches (default:
    /// the URL's `bus` option, else none).
    pub fn bus(mut self, bus: Arc<dyn InvalidationBus>) -> Self {
        self.tiered.get_or_insert_with(TieredConfig::default).bus = Some(bus);
        self
    }

    /// For a tiered cache: the longest an entry lives in L1 (default 60 s; `None`: as long
    /// as the write's own TTL). It bounds staleness when an invalidation is lost.
    pub fn l1_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.tiered
            .get_or_insert_with(TieredConfig::default)
            .l1_timeout = Some(timeout);
        self
    }

    /// For a cache over your own backend ([`Cache::with_backend`]): the options every URL
    /// takes (`key_prefix`, `version`, `timeout`, `max_value_size`, `fail_open`, …), as a
    /// URL's query string. An unknown option is an error; settings made in the builder win.
    ///
    /// ```
    /// use polycache::{backend::dummy::DummyBackend, Cache, Expiry};
    /// use std::sync::Arc;
    /// let cache = Cache::with_backend(Arc::new(DummyBackend))
    ///     .options("key_prefix=app&timeout=none")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!((cache.key_prefix(), cache.default_expiry()), ("app", Expiry::Never));
    /// ```
    pub fn options(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Signs every stored value with HMAC-SHA256 under `key` (default: values are stored
    /// as given). Reads then accept only values signed with this key or one of the
    /// [old keys](CacheBuilder::old_signing_keys), and plain decimal integers (kept unsigned
    /// so `incr` stays native); anything else is a miss and a logged warning.
    /// URL option: `signing_key`.
    pub fn signing_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.values.signing_key = Some(key.into());
        self
    }

    /// Keys whose signatures reads still accept, for rotating the signing key.
    /// URL option: `old_signing_keys` (comma-separated).
    pub fn old_signing_keys<K: Into<Vec<u8>>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.values.old_signing_keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Compresses (zstd) values of at least `min_size` bytes; `None` never compresses
    /// (default). Every reader decompresses, whether or not it compresses.
    /// URL option: `compress_min_size`.
    pub fn compress_min_size(mut self, min_size: Option<usize>) -> Self {
        self.values.compress_min_size = Some(min_size);
        self
    }

    /// The zstd level of compressed values (default 3). URL option: `compress_level`.
    pub fn compress_level(mut self, level: i32) -> Self {
        self.values.compress_level = Some(level);
        self
    }

    /// The serializer the Python binding uses for this cache (`pickle`, `json` or `raw`;
    /// default `pickle`). Rust and C store bytes as given. URL option: `serializer`.
    pub fn serializer(mut self, name: &str) -> Self {
        self.values.serializer = Some(name.to_owned());
        self
    }

    /// Whether the cache keeps a latency histogram per operation (default: true). Off, an
    /// operation reads no clock; the per-operation counters stay. URL option:
    /// `latency_histograms` (`on`/`off`).
    pub fn latency_histograms(mut self, on: bool) -> Self {
        self.latency_histograms = Some(on);
        self
    }

    /// The latency histograms time one call in `every` of each operation on each thread, a
    /// power of two from 1 (every call) to 1024 (default: 16 on `memory://` and `dummy://`,
    /// whose calls take less than the two clock reads, and 1 elsewhere). The counters
    /// count every call whatever this says. URL option: `latency_sampling`.
    pub fn latency_sampling(mut self, every: u64) -> Self {
        self.latency_sampling = Some(every);
        self
    }

    /// Sets the URL option `name` (`max_entries`, `socket_timeout`, `fail_open`, …) to a
    /// typed value, read as the same option in the URL would be. Giving it in the URL too
    /// is an error; an error about it names the builder.
    ///
    /// ```
    /// use polycache::Cache;
    /// let cache = Cache::builder("memory://").option("max_entries", 10).build().unwrap();
    /// assert_eq!(cache.location(), "memory://?max_entries=10");
    /// let err = Cache::builder("memory://").option("max_entries", 0).build().unwrap_err();
    /// assert!(err.to_string().starts_with("option max_entries of the builder: "), "{err}");
    /// ```
    pub fn option(mut self, name: &str, value: impl Into<OptionValue>) -> Self {
        let source = OptionSource::Builder {
            name: name.to_owned(),
        };
        self.typed.insert_from(name, value, source);
        self
    }

    /// Adds typed options, each with where it came from (see [`CacheOptions`]); one set
    /// before under the same name is replaced.
    pub fn options_from(mut self, options: CacheOptions) -> Self {
        for o in options {
            self.typed.insert_from(o.name, o.value, o.source);
        }
        self
    }

    /// Opens the backend and builds the cache.
    pub fn build(mut self) -> Result<Cache> {
        // A tiered backend guards its L2 itself: L1 hits must not pay for a breaker.
        let mut guards_itself = false;
        // The circuit breaker's state changes (of the backend, or of a tiered cache's L2).
        let breaker = Arc::new(BreakerCounts::default());
        let (backend, location, url_opts) = match (self.backend, &self.location) {
            (Some(backend), _) => {
                let location = format!("custom:{}", backend.name());
                let url_opts = match &self.query {
                    None if !self.typed.is_empty() => {
                        let mut options = Options::new(&Location::parse("custom://")?);
                        options.add(std::mem::take(&mut self.typed))?;
                        let url_opts = UrlCacheOptions::take(&mut options)?;
                        options.finish()?;
                        url_opts
                    }
                    None => UrlCacheOptions::default(),
                    Some(query) => {
                        let parsed = Location::parse(&format!("custom://?{query}"))?;
                        let mut options = Options::new(&parsed);
                        options.add(std::mem::take(&mut self.typed))?;
                        let url_opts = UrlCacheOptions::take(&mut options)?;
                        options.finish()?;
                        url_opts
                    }
                };
                (backend, location, url_opts)
            }
            (None, Some(url)) => {
                let location = Location::parse(url)?;
                if location.scheme() == "tiered" {
                    guards_itself = true;
                    let mut options = Options::new(&location);
                    options.add(std::mem::take(&mut self.typed))?;
                    let url_opts = UrlCacheOptions::take(&mut options)?;
                    let policy = self
                        .policy
                        .clone()
                        .or(url_opts.policy.clone())
                        .unwrap_or_default();
                    let mut config = self.tiered.take().unwrap_or_default();
                    config.key_prefix = self.key_prefix.clone().or(url_opts.key_prefix.clone());
                    config.breaker = Some(Arc::clone(&breaker));
                    let (backend, shown) =
                        crate::tiered::open(&location, &mut options, config, &policy)?;
                    options.finish()?;
                    (backend, shown, url_opts)
                } else {
                    let shown = self.typed.shown_with(url.trim());
                    let mut options = Options::new(&location);
                    options.add(std::mem::take(&mut self.typed))?;
                    let url_opts = UrlCacheOptions::take(&mut options)?;
                    let backend = crate::open_backend(&location, &mut options)?;
                    options.finish()?;
                    (backend, shown, url_opts)
                }
            }
            (None, None) => (
                Arc::new(DummyBackend) as Arc<dyn Backend>,
                "dummy://".into(),
                UrlCacheOptions::default(),
            ),
        };
        let key_prefix = self.key_prefix.or(url_opts.key_prefix).unwrap_or_default();
        let version = self.version.or(url_opts.version).unwrap_or(1);
        let timeout = self
            .timeout
            .or(url_opts.timeout)
            .unwrap_or(Some(DEFAULT_TIMEOUT));
        let max_value_size = self
            .max_value_size
            .or(url_opts.max_value_size)
            .unwrap_or(DEFAULT_MAX_VALUE_SIZE);
        let default_expiry = match timeout {
            None => Expiry::Never,
            Some(d) if d.is_zero() => Expiry::Expired,
            Some(d) => Expiry::After(d),
        };
        let policy = self.policy.or(url_opts.policy).unwrap_or_default();
        let refresh = self.refresh.or(url_opts.refresh).unwrap_or_default();
        // A value option given besides the builder's own calls is charged to its source.
        let blame = |name: &str, given_here: bool, e: Error| match url_opts
            .sources
            .iter()
            .find(|(n, _)| n == name)
        {
            Some((_, source)) if !given_here => e.about_option(source),
            _ => e,
        };
        let here = self.values.clone();
        let values = self.values.or(url_opts.values);
        let codec = values.codec().map_err(|e| {
            let level_bad = values
                .compress_level
                .is_some_and(|l| !zstd::compression_level_range().contains(&l));
            if level_bad {
                blame("compress_level", here.compress_level.is_some(), e)
            } else if values.signing_key.as_deref() == Some(&[][..]) {
                blame("signing_key", here.signing_key.is_some(), e)
            } else {
                blame("old_signing_keys", here.old_signing_keys.is_some(), e)
            }
        })?;
        let serializer = match &values.serializer {
            Some(name) => serializer_name(name)
                .map_err(|e| blame("serializer", here.serializer.is_some(), e))?,
            None => "pickle",
        };
        // A tiered backend guards its L2 itself: L1 hits must not pay for a breaker.
        if self.tiered.is_some() {
            return Err(Error::config(
                "bus and l1_timeout apply only to tiered caches (tiered:// or Cache::builder_tiered)",
            ));
        }
        let latency = self
            .latency_histograms
            .or(url_opts.latency_histograms)
            .unwrap_or(true);
        if let Some(n) = self.latency_sampling {
            check_latency_sampling(n)?;
        }
        let sampling = self.latency_sampling.or(url_opts.latency_sampling);
        let backend: Arc<dyn Backend> = if backend.is_local()
            || backend.isolates_failures()
            || policy.breaker_threshold == 0
            || guards_itself
        {
            backend
        } else {
            Arc::new(Guarded::counted(backend, &policy, Arc::clone(&breaker)))
        };
        let head = format!("{key_prefix}:{version}:")
            .into_bytes()
            .into_boxed_slice();
        let awaited: Option<Arc<dyn AsyncBackend>> = match Arc::clone(&backend).async_access() {
            AsyncAccess::Inline => None,
            AsyncAccess::Blocking => Some(Arc::new(OnBlockingPool(Arc::clone(&backend)))),
            AsyncAccess::Native(native) => Some(native),
        };
        // A call answered in memory takes less than the clock reads that would time it.
        let in_memory = if awaited.is_none() { 16 } else { 1 };
        let stats = Stats::new(latency, sampling.unwrap_or(in_memory));
        stats.watch_breaker(breaker);
        #[cfg(feature = "otel")]
        stats.trace_as(crate::otel::SpanTarget::new(&location));
        let head_chunk = (head.len() <= HEAD_CHUNK).then(|| {
            let mut chunk = [0; HEAD_CHUNK];
            chunk[..head.len()].copy_from_slice(&head);
            chunk
        });
        let hints = awaited.is_some().then(Default::default);
        #[cfg(feature = "memory")]
        let memory = backend.as_memory().cloned();
        Ok(Cache {
            inner: Arc::new(Inner {
                #[cfg(feature = "memory")]
                memory,
                backend,
                awaited,
                key_prefix,
                version,
                head,
                head_chunk,
                default_expiry,
                max_value_size,
                stats,
                location,
                policy,
                last_warning: AtomicU64::new(0),
                refresh,
                flights: Arc::default(),
                codec,
                hints,
                last_rejection: AtomicU64::new(0),
                serializer,
            }),
        })
    }
}

/// The options every URL may carry, whatever its backend.
#[derive(Default)]
struct UrlCacheOptions {
    key_prefix: Option<String>,
    version: Option<i64>,
    timeout: Option<Option<Duration>>,
    max_value_size: Option<usize>,
    policy: Option<FailurePolicy>,
    refresh: Option<RefreshPolicy>,
    values: ValueOptions,
    latency_histograms: Option<bool>,
    latency_sampling: Option<u64>,
    /// Where each option read here came from.
    sources: Vec<(String, OptionSource)>,
}

/// The largest `latency_sampling`.
const MAX_LATENCY_SAMPLING: u64 = 1024;

impl UrlCacheOptions {
    fn take(options: &mut Options) -> Result<Self> {
        let mut read = UrlCacheOptions {
            key_prefix: options.take("key_prefix"),
            version: options.i64("version")?,
            timeout: options.seconds("timeout")?,
            max_value_size: options.positive_u64("max_value_size")?.map(|n| n as usize),
            policy: Some(FailurePolicy::take(options)?),
            refresh: Some(RefreshPolicy::take(options)?),
            values: ValueOptions::take(options)?,
            latency_histograms: options.bool("latency_histograms")?,
            latency_sampling: match options.positive_u64("latency_sampling")? {
                Some(n) => Some(
                    check_latency_sampling(n).map_err(|e| options.blame("latency_sampling", e))?,
                ),
                None => None,
            },
            sources: Vec::new(),
        };
        read.sources = options.taken().to_vec();
        Ok(read)
    }
}

/// `n` if it is a valid `latency_sampling`.
fn check_latency_sampling(n: u64) -> Result<u64> {
    if !n.is_power_of_two() || n > MAX_LATENCY_SAMPLING {
        return Err(Error::config(format!(
            "invalid value {n} for option 'latency_sampling': expected a power of two from 1 \
             to {MAX_LATENCY_SAMPLING}"
        )));
    }
    Ok(n)
}

impl Cache {
    /// Opens the cache at `url` with default settings (see [`Cache::builder`]).
    ///
    /// Schemes: `memory://[name]?max_entries=N|max_bytes=N` and `dummy://`; more as their
    /// backends are enabled. Every URL also takes `key_prefix`, `version`, `timeout`
    /// (seconds or `none`) and `max_value_size` options.
    pub fn open(url: &str) -> Result<Cache> {
        Cache::builder(url).build()
    }

    /// A builder for the cache at `url`.
    pub fn builder(url: &str) -> CacheBuilder {
        CacheBuilder {
            location: Some(url.to_owned()),
            backend: None,
            key_prefix: None,
            version: None,
            timeout: None,
            max_value_size: None,
            policy: None,
            refresh: None,
            tiered: None,
            query: None,
            values: ValueOptions::default(),
            latency_histograms: None,
            latency_sampling: None,
            typed: CacheOptions::new(),
        }
    }

    /// A builder for a tiered cache: an L1 `memory://` store (`l1_url`) in front of the
    /// cache at `l2_url`.
    ///
    /// Reads hit L1 first and fill it from L2; writes and deletes go to L2, then L1, then
    /// are published on the bus (see [`CacheBuilder::bus`]) so that other caches drop their
    /// L1 copy. The same cache as a URL: `tiered://?l1=<url-encoded l1>&l2=<url-encoded l2>`.
    ///
    /// ```
    /// use polycache::{Cache, Expiry, LocalBus};
    /// let bus = LocalBus::new();
    /// let a = Cache::builder_tiered("memory://", "memory://doc-l2").bus(bus.clone()).build().unwrap();
    /// let b = Cache::builder_tiered("memory://", "memory://doc-l2").bus(bus).build().unwrap();
    /// a.set("k", b"1", Expiry::Default).unwrap();
    /// assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"1"[..])); // now in b's L1 too
    /// a.set("k", b"2", Expiry::Default).unwrap();                  // invalidates b's L1
    /// assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"2"[..]));
    /// ```
    pub fn builder_tiered(l1_url: &str, l2_url: &str) -> CacheBuilder {
        let mut b = Cache::builder("tiered://");
        b.tiered = Some(TieredConfig {
            l1: Some(l1_url.to_owned()),
            l2: Some(l2_url.to_owned()),
            ..TieredConfig::default()
        });
        b
    }

    /// A builder for a cache over your own [`Backend`].
    pub fn with_backend(backend: Arc<dyn Backend>) -> CacheBuilder {
        CacheBuilder {
            location: None,
            backend: Some(backend),
            key_prefix: None,
            version: None,
            timeout: None,
            max_value_size: None,
            policy: None,
            refresh: None,
            tiered: None,
            query: None,
            values: ValueOptions::default(),
            latency_histograms: None,
            latency_sampling: None,
            typed: CacheOptions::new(),
        }
    }
}
